"""What a pipeline run shows a person: one live line per training stage, its log kept in a file.

A stage's Trainer would print its progress bar and every log dict (`{'loss': ..., 'grad_norm': ...}`) to the
terminal: hundreds of lines in which the few that matter (`[1/5] pasta: finished ...`) are lost. Within
`stage_console(...)` every hatch trainer built (through `hatch_vlm.utils.probes`) instead
  * appends each log dict, with its step, to `<stage dir>/log.jsonl` (rank 0; `report_to` still gets them);
  * shows one live line on a terminal -- `[1/5] pasta: step 40/1000 loss 2.31, 1.2 steps/s, ETA 13:20` --
    rewritten in place and cleared when the stage ends (the runner prints the finished line); on a pipe or
    a file nothing at all, so a log of a run holds only the runner's lines.
`set_verbose(True)` (`--verbose`) keeps the Trainer's own printing, as a library user gets it.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from hatch_vlm.utils.probes import trainer_probe

_VERBOSE = False
# the metric a stage's live line shows, first found in its latest log
KEY_METRICS = ("reward", "loss", "train_loss")


def set_verbose(flag: bool) -> None:
    """`--verbose`: the Trainers print their log dicts and progress bars as transformers does."""
    global _VERBOSE
    _VERBOSE = bool(flag)


def verbose() -> bool:
    return _VERBOSE


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class StageConsole(TrainerCallback):
    """The live line and the log file of one stage's trainer (see the module doc)."""

    def __init__(self, head: str, log_path: Path | None, live: bool, stream=None):
        self.head, self.log_path, self.live = head, log_path, live
        self.stream = stream or sys.stdout
        self.metric: str = ""
        self._t0 = 0.0
        self._width = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()
        if self.log_path is not None and state.is_world_process_zero:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        if self.log_path is not None:
            with open(self.log_path, "a") as fh:
                fh.write(json.dumps({"step": state.global_step, **logs}, default=str) + "\n")
        for key in KEY_METRICS:
            if isinstance(logs.get(key), (int, float)):
                self.metric = f"{key} {logs[key]:.4g}"
                break

    def on_step_end(self, args, state, control, **kwargs):
        if not (self.live and state.is_world_process_zero):
            return
        done, total = state.global_step, state.max_steps or 0
        elapsed = time.perf_counter() - self._t0
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.head}: step {done}/{total}" + (f" {self.metric}" if self.metric else "")]
        if rate > 0:
            parts.append(f"{rate:.2f} steps/s" if rate >= 0.1 else f"{1 / rate:.0f} s/step")
            if total > done:
                parts.append(f"ETA {_clock((total - done) / rate)}")
        self._show(", ".join(parts))

    def on_train_end(self, args, state, control, **kwargs):
        if self.live and self._width:
            self._show("")

    def _show(self, text: str) -> None:
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad + ("\r" if not text else ""))
        self.stream.flush()
        self._width = len(text)


def console_probe(head: str, log_path: Path | None, live: bool | None = None, stream=None):
    """A probe (`hatch_vlm.utils.probes`) giving a trainer the stage console instead of its own printing."""
    stream = stream or sys.stdout
    live = stream.isatty() if live is None else live

    def attach(trainer) -> None:
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(StageConsole(head, log_path, live, stream))

    return attach


@contextmanager
def stage_console(head: str, log_path: Path | None) -> Iterator[None]:
    """Within the block, hatch trainers show `head`'s live line and log to `log_path` (nothing changes in
    verbose mode)."""
    if _VERBOSE:
        yield
        return
    with trainer_probe(console_probe(head, log_path)):
        yield
