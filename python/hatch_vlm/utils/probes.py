"""Hooks that see every Trainer hatch makes, for measuring a stage without changing how it runs.

Our trainers (PaStA's, the SFT and GRPO ones) call `attach_probes(self)` at the end of `__init__`; a probe is
any callable that takes the trainer (it may add callbacks or wrap methods of that instance). With no probe
registered, nothing happens. `hatch-vlm rehearse` registers one (`hatch_vlm.rehearse.probe`) around the same
stage functions `hatch-vlm train` runs.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

_PROBES: list[Callable] = []


def attach_probes(trainer) -> None:
    for probe in _PROBES:
        probe(trainer)


@contextmanager
def trainer_probe(probe: Callable) -> Iterator[None]:
    """Within the block, every hatch trainer made is handed to `probe(trainer)` when built."""
    _PROBES.append(probe)
    try:
        yield
    finally:
        _PROBES.remove(probe)
