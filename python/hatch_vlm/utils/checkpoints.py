"""Finding the checkpoint a training stage resumes from.

transformers' Trainer writes `checkpoint-N/` file by file and `trainer_state.json` last, so a
checkpoint is complete iff that file exists and parses; anything newer that is incomplete (a kill -9
in the middle of a save) is removed so that it is never loaded.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def is_complete(checkpoint: Path) -> bool:
    state = checkpoint / "trainer_state.json"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError):
        return False
    return any(checkpoint.glob("*.safetensors"))


def latest_complete_checkpoint(work_dir: str | Path, remove_incomplete: bool = True) -> Path | None:
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in work_dir.iterdir()
                    if p.is_dir() and (m := _CKPT.match(p.name))), reverse=True)
    for _, ckpt in found:
        if is_complete(ckpt):
            return ckpt
        if remove_incomplete:
            log.warning("removing incomplete checkpoint %s (interrupted while saving)", ckpt)
            shutil.rmtree(ckpt, ignore_errors=True)
    return None


def launched_engine(env=None) -> str:
    """How `accelerate launch` was told to train this process: "DeepSpeed ZeRO-N", "FSDP" or "DDP" (also one
    process without a launcher), read from the environment the launcher sets."""
    env = os.environ if env is None else env
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return f"DeepSpeed ZeRO-{env.get('ACCELERATE_DEEPSPEED_ZERO_STAGE', '?')}"
    if env.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "FSDP"
    return "DDP"


def checkpoint_engine(checkpoint: Path) -> tuple[str | None, int | None]:
    """(engine, processes) a Trainer checkpoint was written under, from its files: DeepSpeed keeps one
    optimizer shard per rank in `global_stepN/` (ZeRO-3 also one parameter shard per rank); FSDP writes
    `optimizer.bin` (or `optimizer_0/` sharded); DDP and one process `optimizer.pt`. Each rank saves its RNG
    state (`rng_state_R.pth`; `rng_state.pth` alone on one process). None where the files do not say."""
    checkpoint = Path(checkpoint)
    shards = sorted(checkpoint.glob("global_step*/zero_pp_rank_*_optim_states.pt"))
    if shards:
        ranks = {re.match(r"zero_pp_rank_(\d+)_", p.name).group(1) for p in shards}
        # ZeRO-1 and -2 write the same files (and load each other's)
        stage = "3" if any(checkpoint.glob("global_step*/zero_pp_rank_*_model_states.pt")) else "1/2"
        return f"DeepSpeed ZeRO-{stage}", len(ranks)
    rng = list(checkpoint.glob("rng_state_*.pth"))
    procs = len(rng) if rng else (1 if (checkpoint / "rng_state.pth").exists() else None)
    if (checkpoint / "optimizer.bin").exists() or any(checkpoint.glob("optimizer_*/")):
        return "FSDP", procs
    if (checkpoint / "optimizer.pt").exists():
        return "DDP", procs
    return None, procs


def check_resumable(checkpoint: Path, engine: str, processes: int, stage: str) -> None:
    """Refuses (ConfigError), before the stage trains, a checkpoint this launch would not resume faithfully.

    Why: transformers' Trainer loads a checkpoint's optimizer and scheduler only where it finds the files of
    the engine it runs under, and otherwise goes on *silently* with fresh ones (e.g. a ZeRO checkpoint resumed
    under DDP: no optimizer.pt, so AdamW restarts from zero moments and the schedule from step 0), or fails
    deep inside the engine (a DDP checkpoint under DeepSpeed or FSDP; a DeepSpeed one on another number of
    processes: its shards are per rank). DDP and FSDP (full state dicts) resume on another number of processes.
    """
    from .config import ConfigError

    written, procs = checkpoint_engine(checkpoint)
    if written is None:
        return
    if written != engine.replace("ZeRO-1", "ZeRO-1/2").replace("ZeRO-2", "ZeRO-1/2"):
        raise ConfigError(f"{stage}: {checkpoint} was written under {written}"
                          f"{f' on {procs} processes' if procs else ''} and this launch runs {engine}: its "
                          "optimizer state would not be restored (transformers' Trainer starts a fresh one "
                          "without a word, or fails inside the engine). Relaunch with the engine it was written "
                          "under, or move the stage's work/ directory away to train the stage afresh")
    if written.startswith("DeepSpeed") and procs is not None and procs != processes:
        raise ConfigError(f"{stage}: {checkpoint} was written under {written} on {procs} processes (one optimizer "
                          f"shard per rank) and this launch has {processes}: relaunch with {procs} processes, or "
                          "move the stage's work/ directory away to train the stage afresh")
