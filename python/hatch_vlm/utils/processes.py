"""Forked worker pools for CPU-bound work that needs no torch (rendering, encoding files).

One rule, kept in one place: a process that has imported torch is never forked. OpenMP's thread pool does not
survive a fork, and the child hangs at its first parallel region; the caller must then run with one worker."""
from __future__ import annotations

import sys


def fork_pool(workers: int, jobs: int, hint: str = ""):
    """A `multiprocessing` fork-context Pool of min(workers, jobs) processes (use it as a context manager).
    Raises ValueError, naming `workers`, when this process has imported torch; `hint` says what to do instead."""
    import multiprocessing as mp

    if "torch" in sys.modules:
        raise ValueError("workers > 1: this process has imported torch, and forking it would hang OpenMP"
                         + (f"; {hint}" if hint else ""))
    return mp.get_context("fork").Pool(max(1, min(workers, jobs)))
