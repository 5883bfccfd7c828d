"""Finding the checkpoint a training stage resumes from.

transformers' Trainer writes `checkpoint-N/` file by file and `trainer_state.json` last, so a
checkpoint is complete iff that file exists and parses; anything newer that is incomplete (a kill -9
in the middle of a save) is removed so that it is never loaded.
"""
from __future__ import annotations

import json
import logging
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
