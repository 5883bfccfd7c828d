"""Multi-process helpers for code that runs under `accelerate launch` / `torchrun` outside a Trainer.

The stages train with transformers / TRL Trainers, which handle the distribution themselves; what is left
to hatch is the bookkeeping around them (the pipeline's state file, model directories, evaluation). The
rules, used by `hatch_vlm.pipeline.runner`:

* every rank runs every stage's training (the Trainer's collectives need all of them);
* only the main process writes shared files, inside `on_main`, which hands its result (or its error)
  to the other ranks, so a failure on rank 0 stops every rank with the same message instead of leaving
  them blocked in the next collective;
* evaluation is split across ranks (`shard`) and the results are gathered (`gather_list`);
* a loss that is a mean over valid rows becomes the mean over every rank's rows (`global_mean_loss`).

The collectives are accelerate's (`split_between_processes`, `gather_object`, `broadcast_object_list`,
`wait_for_everyone`), called only once the process group exists; what is kept here is what accelerate
lacks: `on_main`'s hand-over of rank 0's error, and the cross-rank mean of a loss.

With a single process (no launcher, or WORLD_SIZE=1) every function is a no-op or the identity.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TypeVar

import torch
from torch import Tensor

from .errors import MainProcessError  # noqa: F401  (raised here; importable without torch from .errors)

T = TypeVar("T")

# How long a collective waits for a rank that went silent (frozen or dead) before the job ends. GPUs: the
# default of transformers' `TrainingArguments.ddp_timeout` (rank 0 may save a large model alone while the
# others wait in a barrier). CPUs (gloo): 90 s, so that a frozen node does not hold the others for half an
# hour (with a launcher's teardown, ~30 s more for torchrun, the job ends within 2 minutes).
# `dist_timeout_s` in a config (or HATCH_DIST_TIMEOUT_S) sets it.
DEFAULT_TIMEOUT_S = 1800
CPU_TIMEOUT_S = 90
# The heartbeat is opt-in (HATCH_HEARTBEAT_S=5): its thread in the launch's store made a rank abort at exit
# now and then in CI ("terminate called without an active exception"), even when stopped first.
HEARTBEAT_S = float(os.environ.get("HATCH_HEARTBEAT_S", "0") or 0)


def default_timeout_s() -> int:
    env = os.environ.get("HATCH_DIST_TIMEOUT_S")
    if env:
        return int(env)
    return DEFAULT_TIMEOUT_S if torch.cuda.is_available() else CPU_TIMEOUT_S


def launched_world_size() -> int:
    """WORLD_SIZE as set by the launcher (1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def init_distributed(timeout_s: int | None = None) -> bool:
    """Joins the process group of a multi-process launch (no-op otherwise); returns whether distributed.

    Goes through accelerate's `PartialState`, as transformers' Trainer does (gloo on CPU, NCCL on GPUs,
    each rank on its local GPU); the Trainer created later reuses the initialized process group.
    """
    check_launch()
    if launched_world_size() <= 1:
        return False
    watch_parent()
    timeout_s = timeout_s or default_timeout_s()
    if _dist() is None:
        from accelerate import PartialState

        state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=timeout_s))
        if state.num_processes != launched_world_size():
            from .config import ConfigError

            raise ConfigError(
                f"launch: WORLD_SIZE={launched_world_size()} but accelerate joined {state.num_processes} "
                "process(es): every rank would train alone and believe it writes the run directory")
    if HEARTBEAT_S > 0:
        start_heartbeat()
    return True


# ------------------------------------------------------------------------------ who went silent
# Every rank stamps the time into the launch's key-value store (the TCPStore the process group rendezvoused
# through) every HEARTBEAT_S seconds from a daemon thread. When a collective times out, gloo / NCCL say only
# that it timed out; `silent_ranks` reads the stamps and names the ranks that stopped stamping (a frozen or
# dead process). If rank 0, which hosts the store, is the silent one, reading fails: that is said instead.
_HEARTBEAT = False
_HEARTBEAT_STOP = None          # threading.Event of the running heartbeat
_HEARTBEAT_THREAD = None


def _store():
    from torch.distributed import distributed_c10d

    return distributed_c10d._get_default_store()


def start_heartbeat(interval_s: float = HEARTBEAT_S) -> None:
    global _HEARTBEAT, _HEARTBEAT_STOP, _HEARTBEAT_THREAD
    if _HEARTBEAT or not _dist():
        return
    _HEARTBEAT = True
    import atexit
    import threading
    import time

    store, me = _store(), rank()
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            try:
                store.set(f"hatch/heartbeat/{me}", repr(time.time()))
            except Exception:       # the store is gone (rank 0 ended): nothing left to tell
                return
            stop.wait(interval_s)

    _HEARTBEAT_STOP, _HEARTBEAT_THREAD = stop, threading.Thread(target=beat, name="hatch-heartbeat", daemon=True)
    _HEARTBEAT_THREAD.start()
    # a thread still inside the store's C++ code while the interpreter finalizes aborts the process
    atexit.register(stop_heartbeat)


def stop_heartbeat() -> None:
    """Stops the heartbeat thread and waits for it (before the process group and its store go away)."""
    global _HEARTBEAT_STOP, _HEARTBEAT_THREAD
    if _HEARTBEAT_STOP is not None:
        _HEARTBEAT_STOP.set()
        if _HEARTBEAT_THREAD is not None:
            _HEARTBEAT_THREAD.join(timeout=30)
    _HEARTBEAT_STOP = _HEARTBEAT_THREAD = None


def silent_ranks(stale_s: float = 3 * HEARTBEAT_S, world: int | None = None) -> str:
    """A sentence naming the ranks whose heartbeat is older than `stale_s` (or missing)."""
    import time

    if not _HEARTBEAT:
        return "which rank went silent is not known here (set HATCH_HEARTBEAT_S=5 to have it named)"
    world = world or launched_world_size()
    try:
        store = _store()
        store.set_timeout(timedelta(seconds=10))
        now, silent = time.time(), []
        for r in range(world):
            if r == rank():
                continue
            try:
                age = now - float(store.get(f"hatch/heartbeat/{r}").decode())
            except Exception:
                age = float("inf")
            if age > stale_s:
                silent.append(f"rank {r} ({'never' if age == float('inf') else f'last heard {age:.0f} s ago'})")
    except Exception as e:
        return f"the launch's store on rank 0 does not answer either ({type(e).__name__}): rank 0 went silent"
    return ("silent: " + ", ".join(silent)) if silent else "every other rank is still alive (a slow collective?)"


def describe_collective_failure(exc: BaseException) -> str | None:
    """For an error raised by a collective of a multi-process job (timeout, closed connection): which ranks
    went silent, else None (not a distributed failure)."""
    text = f"{type(exc).__name__}: {exc}"
    if not _dist() or not any(k in text for k in ("Timed out", "timed out", "Connection closed", "Connection reset",
                                                   "NCCL", "gloo")):
        return None
    return (f"rank {rank()}: a collective failed ({text.splitlines()[0][:200]}); {silent_ranks()}. The job "
            "stops here; rerun the same command to resume from the last checkpoint")


_WATCHING = False


def watch_parent(interval_s: float = 2.0) -> None:
    """Ends this process when the process that launched it is gone (a launcher killed with `kill -9` leaves
    its workers training as orphans otherwise, holding the GPUs and writing the run directory). A daemon
    thread compares the parent pid with the one at start; on a change it says so and exits (status 143, as
    SIGTERM). Once per process."""
    global _WATCHING
    if _WATCHING:
        return
    _WATCHING = True
    import sys
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                print(f"hatch: rank {os.environ.get('RANK', '?')} (pid {os.getpid()}): its launcher (pid {parent}) "
                      "is gone, stopping", file=sys.stderr, flush=True)
                os._exit(143)

    threading.Thread(target=watch, name="hatch-watch-parent", daemon=True).start()


def check_launch(env=None) -> None:
    """Refuses a launch that asked for several processes or machines but left this process alone.

    accelerate's plain launcher (`accelerate launch --num_machines 2 ...` without --multi_gpu, or a config
    whose distributed_type is NO) sets MASTER_ADDR / MASTER_PORT for a multi-process launch but no RANK /
    WORLD_SIZE: each process then trains alone as its own main, all into the same output directory."""
    env = os.environ if env is None else env
    if "ACCELERATE_USE_CPU" in env and ("MASTER_ADDR" in env or "MASTER_PORT" in env) and "WORLD_SIZE" not in env:
        from .config import ConfigError

        raise ConfigError(
            "launch: accelerate was asked for several processes or machines (MASTER_ADDR / MASTER_PORT are set) "
            "but started this one alone (no RANK / WORLD_SIZE): add --multi_gpu to `accelerate launch` (also on "
            "CPUs), or use a config with distributed_type MULTI_GPU / MULTI_CPU (configs/accelerate/)")


# rank() / world_size() read torch.distributed, not accelerate's PartialState: constructing that state
# before `init_distributed` would join the process group (under a launcher) with accelerate's defaults.
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


def _state():
    from accelerate import PartialState

    return PartialState()       # a shared singleton: the state `init_distributed` (or a Trainer) made


def barrier() -> None:
    if _dist():
        _state().wait_for_everyone()


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
        stop_heartbeat()            # its thread uses the store that destroying the group frees
        d.barrier()
        d.destroy_process_group()


def broadcast(obj: T) -> T:
    """Rank 0's `obj` on every rank (picklable objects)."""
    if not _dist():
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj], from_process=0)[0]


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


def is_local_main() -> bool:
    """The first process of this node (LOCAL_RANK 0): where a node's own state (a cache on a disk only this
    node sees) is built."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


def on_node_mains(fn: Callable[[], T]) -> T | None:
    """Runs `fn` on the local main process of every node but the main process's own (after whatever the
    main process did before: call it after `on_main`), and returns its result there, None elsewhere.

    For node-local state: each node builds its own where its disk is its own, and finds rank 0's where the
    disk is shared. An exception on any of them stops every rank: it re-raises where it happened and the
    others raise `MainProcessError` naming the rank (a collective, so nobody waits for a failed node).
    """
    d = _dist()
    if not d:
        return None
    result, status = None, None
    if is_local_main() and d.get_rank() != 0:
        try:
            result = fn()
        except BaseException as exc:
            status = f"{type(exc).__name__}: {exc}"
            _gather_status(status)
            raise
    failed = _gather_status(status)
    if failed:
        r, msg = failed[0]
        raise MainProcessError(f"the local main process of another node (rank {r}) failed: {msg}")
    return result


def _gather_status(status: str | None) -> list[tuple[int, str]]:
    from accelerate.utils import gather_object

    return [(r, s) for r, s in enumerate(gather_object([status])) if s is not None]


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of `items`: a contiguous block (accelerate's `split_between_processes`: the first
    len % world ranks hold one item more), every item on exactly one rank, in order."""
    if not _dist():
        return list(items)
    # Split the indices, so a lazy sequence is read only where it is needed (and anything indexable works:
    # split_between_processes slices lists, tuples and tensors but hands other types back whole).
    with _state().split_between_processes(list(range(len(items)))) as mine:
        return [items[k] for k in mine]


def gather_list(local: Sequence[T], total: int) -> list[T]:
    """Inverse of `shard`: every rank's local results, back in the original order, on every rank.

    `local` must hold this rank's results for `shard(items)` in order; `total` = len(items).
    """
    if not _dist():
        return list(local)
    from accelerate.utils import gather_object

    # the ranks' lists concatenated in rank order: the order of shard's contiguous blocks
    out = list(gather_object(list(local)))
    if len(out) != total:
        raise ValueError(f"gather_list: the ranks returned {len(out)} results for {total} items "
                         "(each rank must give one result per item of its shard)")
    return out


def global_mean_loss(loss: Tensor, num_valid: Tensor | int) -> tuple[Tensor, Tensor | int]:
    """Turn this process's mean over its valid rows into its share of the mean over ALL processes' rows.

    `loss` = local_sum / max(local_count, 1) as `patch_align(..., return_num_valid=True)` returns it, and
    `num_valid` = local_count. Under torch.distributed (initialized, world size W > 1) the counts are
    all-reduced (SUM) and the loss becomes local_sum / max(global_count, 1) * W: DDP, FSDP and DeepSpeed
    average gradients over the W ranks, so the averaged gradient is that of global_sum / global_count, the
    gradient of a 1-process run on the whole global batch, even when ranks hold different numbers of valid
    rows (a mean of per-rank means would weight a rank's rows by 1 / its own count). Averaging the returned
    loss over ranks (as Trainer does for the logged `loss`) gives the global mean too.

    Returns (loss, count): with one process, the inputs unchanged; otherwise the rescaled loss and the
    global valid-row count (a tensor). The count carries no gradient; every rank must call this (a
    collective), in the same order.
    """
    d = _dist()
    if not d or d.get_world_size() == 1:
        return loss, num_valid
    from accelerate.utils import reduce

    world = d.get_world_size()
    local = torch.as_tensor(num_valid, device=loss.device).to(torch.float64)
    # gloo and NCCL both reduce float64; a count < 2^53 is exact. (`reduce` all-reduces a copy.)
    total = reduce(local, reduction="sum")
    local_sum = loss * local.to(loss.dtype)      # 0 (with a graph, zero gradient) when no local row is valid
    scale = world / total.clamp_min(1.0)
    return local_sum * scale.to(loss.dtype), total.to(torch.int64)
