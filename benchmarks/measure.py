"""Timing and peak-memory primitives for one phase of work (a forward, a backward, ...).

Peak memory is the extra memory at the high-water mark of the phase, above what was live when it began
(inputs, and for a backward the saved forward graph):

* CUDA: `torch.cuda.max_memory_allocated() - torch.cuda.memory_allocated()` around the phase, after
  `torch.cuda.reset_peak_memory_stats()`; time from CUDA events.
* CPU: the process's resident set (Linux /proc/self/status). Before the phase, `malloc_trim(0)` hands
  freed heap pages back to the OS (so a cached free page cannot hide a new allocation) and writing "5" to
  /proc/self/clear_refs resets the high-water mark VmHWM to the current VmRSS; after it, VmHWM - VmRSS(before)
  is the peak. Every page the phase touches counts (torch's CPU allocator has no cache of its own), so
  this sees all allocations, including those of MKL/oneDNN and compiled (inductor) code. Each
  (case, provider) runs in its own process (benchmarks.harness), so nothing from another case is live.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import statistics
import time
from dataclasses import dataclass
from collections.abc import Callable

import torch

_PAGE_KIB = 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _load_libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None


class CpuMemory:
    """Resident-set peak of this process, resettable (Linux >= 4.0)."""

    method = "cpu: VmHWM-VmRSS after malloc_trim + clear_refs reset, own process per case"

    def __init__(self) -> None:
        self._libc = _load_libc()

    @staticmethod
    def supported() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            _status_kib("VmHWM")
            return True
        except OSError:
            return False
        except RuntimeError:
            return False

    def reset(self) -> int:
        """Return freed memory to the OS, reset the high-water mark; returns the baseline in bytes."""
        if self._libc is not None and hasattr(self._libc, "malloc_trim"):
            self._libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmRSS") * _PAGE_KIB

    def peak(self) -> int:
        return _status_kib("VmHWM") * _PAGE_KIB

    def current(self) -> int:
        return _status_kib("VmRSS") * _PAGE_KIB


class CudaMemory:
    method = "cuda: max_memory_allocated - memory_allocated, reset_peak_memory_stats per phase"

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset(self) -> int:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        return torch.cuda.memory_allocated(self.device)

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated(self.device)

    def current(self) -> int:
        return torch.cuda.memory_allocated(self.device)


def memory_tracker(device: torch.device):
    if device.type == "cuda":
        return CudaMemory(device)
    if not CpuMemory.supported():
        raise RuntimeError("CPU peak memory needs Linux /proc/self/clear_refs (kernel >= 4.0); "
                           "not available here")
    return CpuMemory()


@dataclass
class PhaseResult:
    seconds: float
    peak_bytes: int     # peak extra bytes above `base`
    base: int           # bytes live when the phase began
    output: object


def run_phase(fn: Callable[[], object], device: torch.device, memory) -> PhaseResult:
    """Run fn once, timed (CUDA events on GPU, perf_counter on CPU), with its peak extra memory."""
    base = memory.reset()
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        torch.cuda.synchronize(device)
        seconds = start.elapsed_time(end) / 1e3
    else:
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
    return PhaseResult(seconds, max(0, memory.peak() - base), base, out)


def summarize(values: list[float]) -> dict:
    """Median, quartiles and IQR of a sample (needs at least one value)."""
    if not values:
        raise ValueError("summarize: no values")
    if len(values) == 1:
        q25 = q75 = values[0]
    else:
        q = statistics.quantiles(values, n=4, method="inclusive")
        q25, q75 = q[0], q[2]
    return {"median": statistics.median(values), "q25": q25, "q75": q75, "iqr": q75 - q25,
            "min": min(values), "max": max(values), "n": len(values)}


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 28, reps: int = 20) -> float:
    """Measured device-to-device copy bandwidth in bytes/s (read + write counted), median of reps."""
    n = nbytes // 4
    src = torch.empty(n, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            dst.copy_(src)
            e.record()
            torch.cuda.synchronize(device)
            times.append(s.elapsed_time(e) / 1e3)
        else:
            t0 = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - t0)
    return 2 * n * 4 / statistics.median(times)
