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


def rehearsal_device() -> str:
    """Where the rehearsal's variants run: "cuda" on a host with a CUDA GPU (the trainers put the model
    there, so that is the memory to measure and to budget), else "cpu": the trainers' own rule."""
    from hatch_vlm.utils.distributed import local_device

    return local_device().type


def _cuda_free_bytes() -> int:
    """Free memory of GPU 0, read in a child process: the orchestrator itself never holds a CUDA context,
    which would take memory from every variant for the whole rehearsal."""
    import subprocess
    import sys

    code = "import torch; print(torch.cuda.mem_get_info(0)[0])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"could not read the GPU's free memory: {out.stderr.strip()[-500:]}")
    return int(out.stdout.split()[-1])


def available_bytes(device: str = "cpu") -> int:
    """Memory the machine can still give the variants, for the never-crash-the-machine estimate: the GPU's
    free memory on "cuda", else the host's MemAvailable."""
    if device == "cuda":
        return _cuda_free_bytes()
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable line")


GIB = 1024 ** 3
