"""The PaStA stage's schedule: warm-up + cosine over steps or seconds, whichever runs out first."""
import math

import pytest
import torch

from hatch_vlm.pasta.trainer import time_aware_cosine


def test_time_aware_cosine():
    def factors(max_seconds, n=6):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = time_aware_cosine(opt, warmup_steps=2, max_steps=6, max_seconds=max_seconds)
        out = []
        for _ in range(n):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    slow = factors(1e9)                         # the step count runs out first: plain warm-up + cosine
    want = [1 / 3, 2 / 3] + [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert all(math.isclose(a, b, abs_tol=1e-9) for a, b in zip(slow, want)), slow
    fast = factors(1e-9)                        # the clock runs out first: decayed right after warm-up
    assert fast[:2] == pytest.approx([1 / 3, 2 / 3]) and max(fast[2:]) < 1e-6
