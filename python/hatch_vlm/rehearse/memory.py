"""The peak memory of this process, per phase.

CPU: the kernel's high-water mark of the resident set (`VmHWM` in /proc/self/status), reset by writing "5" to
/proc/self/clear_refs, so each optimizer step gets its own peak (the process's, model and library included).
CUDA: `torch.cuda.max_memory_allocated` (the caching allocator's view: tensors, not the CUDA context).
"""
from __future__ import annotations

from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _status_kib(key: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{_STATUS} has no {key} line: this platform cannot measure peak memory")


def rss_bytes() -> int:
    """The resident set now."""
    return _status_kib("VmRSS") * 1024


def cpu_peak_bytes() -> int:
    """The resident set's high-water mark since the last `reset_peak`."""
    return _status_kib("VmHWM") * 1024


def reset_peak(device: torch.device | str = "cpu") -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        _CLEAR.write_text("5")


def peak_bytes(device: torch.device | str = "cpu") -> int:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())
    return cpu_peak_bytes()


def available_bytes() -> int:
    """Memory the machine can still give (MemAvailable), for the never-crash-the-machine estimate."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable line")


GIB = 1024 ** 3
