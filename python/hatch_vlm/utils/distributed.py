"""Multi-process helpers for code that runs under `accelerate launch` / `torchrun` outside a Trainer.

The stages train with transformers / TRL Trainers, which handle the distribution themselves; what is left
to hatch is the bookkeeping around them (the pipeline's state file, model directories, evaluation). The
rules, used by `hatch_vlm.pipeline.runner`:

* every rank runs every stage's training (the Trainer's collectives need all of them);
* only the main process writes shared files, inside `on_main`, which hands its result (or its error)
  to the other ranks, so a failure on rank 0 stops every rank with the same message instead of leaving
  them blocked in the next collective;
* evaluation is split across ranks (`shard`) and the results are gathered (`gather_list`).

With a single process (no launcher, or WORLD_SIZE=1) every function is a no-op or the identity.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Callable, Sequence, TypeVar

import torch

T = TypeVar("T")

# The same default as transformers' `TrainingArguments.ddp_timeout`: rank 0 may work alone (saving a
# model) while the others wait in a barrier.
DEFAULT_TIMEOUT_S = 1800


def launched_world_size() -> int:
    """WORLD_SIZE as set by the launcher (1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def init_distributed(timeout_s: int = DEFAULT_TIMEOUT_S) -> bool:
    """Joins the process group of a multi-process launch (no-op otherwise); returns whether distributed.

    Goes through accelerate's `PartialState`, as transformers' Trainer does (gloo on CPU, NCCL on GPUs,
    each rank on its local GPU); the Trainer created later reuses the initialized process group.
    """
    if launched_world_size() <= 1:
        return False
    if _dist() is None:
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=timeout_s))
    return True


def rank() -> int:
    d = _dist()
    return d.get_rank() if d else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    d = _dist()
    return d.get_world_size() if d else 1


def is_main() -> bool:
    return rank() == 0


def local_device() -> torch.device:
    """This rank's device: its local GPU when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def barrier() -> None:
    d = _dist()
    if d:
        d.barrier()


def shutdown() -> None:
    """Waits for every rank, then leaves the process group (no-op without one).

    Call it at the end of a multi-process program: a rank that exits while the others still work, with its
    gloo / NCCL threads alive, can abort in teardown ("terminate called without an active exception",
    SIGABRT), and the launcher then reports a finished run as failed. (Gloo's worker threads may still
    hold tensors while the interpreter finalizes: pytorch/pytorch#190489; seen here in CI, about one 2-process
    run in ten under load, before every script called this.)
    """
    d = _dist()
    if d:
        d.barrier()
        d.destroy_process_group()


class MainProcessError(RuntimeError):
    """Raised on the other ranks when the main process failed inside `on_main`."""


def broadcast(obj: T) -> T:
    """Rank 0's `obj` on every rank (picklable objects)."""
    d = _dist()
    if not d:
        return obj
    box = [obj if d.get_rank() == 0 else None]
    d.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], T]) -> T:
    """Runs `fn` on the main process only and returns its result on every rank.

    If `fn` raises on the main process, it re-raises there and the other ranks raise `MainProcessError`
    with its message (instead of waiting forever for a collective rank 0 will never reach).
    """
    d = _dist()
    if not d:
        return fn()
    if d.get_rank() == 0:
        try:
            result = fn()
        except BaseException as exc:
            broadcast(("error", f"{type(exc).__name__}: {exc}"))
            raise
        broadcast(("ok", result))
        return result
    status, value = broadcast(None)
    if status == "error":
        raise MainProcessError(f"the main process (rank 0) failed: {value}")
    return value


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of `items`: items[rank::world] (every item on exactly one rank)."""
    return list(items[rank()::world_size()])


def gather_list(local: Sequence[T], total: int) -> list[T]:
    """Inverse of `shard`: every rank's local results, back in the original order, on every rank.

    `local` must hold this rank's results for `shard(items)` in order; `total` = len(items).
    """
    d = _dist()
    if not d:
        return list(local)
    parts: list[Any] = [None] * d.get_world_size()
    d.all_gather_object(parts, list(local))
    out: list[Any] = [None] * total
    for r, part in enumerate(parts):
        out[r::len(parts)] = part
    return out
