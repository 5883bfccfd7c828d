"""The rehearsal probe's early end: a variant whose warm-up step was long measures one step, not --steps."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from transformers import TrainerControl

from hatch_vlm.rehearse.probe import StageProbe, StepRecord, _Callback


def _probe(seconds: list[float], **kw) -> StageProbe:
    p = StageProbe(**kw)
    p.steps = [StepRecord(step=i + 1, seconds=s, optimizer_seconds=0.0, data_seconds=0.0, generate_seconds=0.0,
                          generated_tokens=0, peak_bytes=0, samples=1) for i, s in enumerate(seconds)]
    return p


@pytest.mark.parametrize("seconds, kw, planned, last", [
    ([90.0], dict(warmup=1, long_step_s=60.0), 4, 2),                         # long: one measured step
    ([90.0], dict(warmup=1, long_step_s=60.0, profile_last=True), 5, 3),      # ... and PaStA's profiled one
    ([30.0], dict(warmup=1, long_step_s=60.0), 4, 4),                         # short: as planned
    ([90.0], dict(warmup=1, long_step_s=None), 4, 4),                         # --long-step 0: as planned
    ([90.0], dict(warmup=0, long_step_s=60.0), 4, 4),                         # no warm-up: nothing to judge by
    ([90.0, 30.0], dict(warmup=2, long_step_s=60.0), 5, 5),                   # every warm-up step must be long
    ([90.0], dict(warmup=1, long_step_s=60.0), 1, 1),                         # never more than planned
])
def test_last_step(seconds, kw, planned, last):
    assert _probe(seconds, **kw).last_step(planned) == last


def test_the_callback_stops_training_after_the_one_measured_step():
    probe = _probe([], warmup=1, long_step_s=60.0)
    durations = iter([100.0, 10.0])                  # a 100 s warm-up step, then a 10 s one
    probe.end_step = lambda step, op=None: probe.steps.append(_probe([next(durations)]).steps[0])
    cb = _Callback(probe)
    stops = []
    for step in (1, 2):
        control = TrainerControl()
        cb.on_step_end(None, SimpleNamespace(global_step=step, max_steps=3), control)
        stops.append(control.should_training_stop)
    assert stops == [False, True] and probe.cut_short
