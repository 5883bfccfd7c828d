"""The GPU plan's arithmetic against hand-computed cases, and the order of the changes it proposes."""
from __future__ import annotations

from hatch_vlm.rehearse.plan import GIB, HEADROOM_GIB, plan_stage, smallest_change


def _summary(stage="qa_sft", trainable=1e9, frozen=0.0, rest_gib=10.0, b=4, per_step=8, baseline_gib=1.0,
             points=None):
    t, f = int(trainable), int(frozen)
    state = {"weights": 4 * t + 2 * f, "grads": 4 * t, "optimizer": 8 * t, "trainable": t, "frozen": f,
             "trainable_bytes": 4 * t, "frozen_bytes": 2 * f, "trainable_tensors": 0, "total": 16 * t + 2 * f}
    return {"stage": stage, "state_full": state, "largest_layer": 0, "micro_batch": b,
            "micro_batches_per_step": per_step, "process_baseline": baseline_gib * GIB,
            "gpu_rest": (rest_gib - baseline_gib) * GIB, "rest": {"value": rest_gib * GIB, "how": "extrapolated"},
            "rest_fit_points": points or []}


def test_ddp_total_by_hand():
    s = _summary()
    p = plan_stage(s, "ddp", 8, 80.0)
    # 1e9 trainable params: 4 + 4 (x2 DDP buckets) + 8 bytes each; 9 GiB activations; headroom
    assert p.total == 4e9 + 8e9 + 8e9 + 9 * GIB + HEADROOM_GIB * GIB
    assert p.fits == (p.total <= 80 * GIB)


def test_zero3_total_by_hand():
    s = _summary(frozen=2e9)
    p = plan_stage(s, "zero3", 8, 80.0)
    assert p.weights == (2e9 + 4e9) / 8 and p.grads == 2e9 / 8 and p.optimizer == 12e9 / 8


def test_eval_holds_weights_only():
    p = plan_stage(_summary(stage="eval"), "ddp", 1, 80.0)
    assert p.grads == 0 and p.optimizer == 0 and p.weights == 4e9


def test_smallest_change_prefers_the_micro_batch_then_the_engine():
    # ddp holds 20 B per trainable parameter (4 + 2 x 4 + 8); activations from the fit: 20 GiB at b=4, 14 at
    # b=2, 11.5 at b=1 (less the 1 GiB baseline), plus 3 GiB headroom
    pts = [(0.1, 2, 6.0 * GIB), (0.2, 2, 7.0 * GIB), (0.1, 4, 11.0 * GIB), (0.2, 4, 12.0 * GIB)]
    s = _summary(trainable=4e9, rest_gib=21.0, points=pts)            # 74.5 GiB of model state
    assert not plan_stage(s, "ddp", 8, 80.0).fits
    change = smallest_change(s, "ddp", 8, 80.0)
    assert change["change"].startswith("engine zero2"), change     # no micro-batch alone gets under 80 GiB
    s_small = _summary(trainable=3.2e9, rest_gib=21.0, points=pts)    # 59.6 GiB: 82.6 at b=4, 76.6 at b=2
    change = smallest_change(s_small, "ddp", 8, 80.0)
    assert change["change"].startswith("per_device_train_batch_size 2"), change
    assert smallest_change(_summary(trainable=1e8), "ddp", 8, 80.0) is None
    assert smallest_change(_summary(trainable=1e11), "ddp", 1, 24.0)["change"] is None
