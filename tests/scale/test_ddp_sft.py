"""Cold-start SFT (`hatch_vlm.actor.sft.run_sft`, TRL's SFTTrainer) under `accelerate launch` with 2 CPU processes
(gloo) logs the same per-step loss and gradient norm and trains the same weights as 1 process on the same
global batch: the loss is the mean over all completion tokens of the global batch, also when the ranks hold
different numbers of them (the teacher completions differ in length)."""
from pathlib import Path

import pytest

from scale_launch import ROOT, needs_gloo, run_ranks
from _ddp_weights import max_weight_diff

RUN = ROOT / "tests" / "scale" / "sft_run.py"
STEPS, GLOBAL_BATCH = 3, 4

pytestmark = [pytest.mark.slow, needs_gloo]


def _run(out: Path, tiny_dir, procs: int, *extra: str) -> list[dict]:
    """sft_run.py on `procs` processes; returns each rank's record."""
    return run_ranks(RUN, out, tiny_dir, procs, STEPS, GLOBAL_BATCH, *extra)


def _steps(record: dict) -> list[dict]:
    return [e for e in record["log_history"] if "loss" in e and "step" in e]


@pytest.fixture(scope="module")
def runs(tiny_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp_sft")
    return base, _run(base / "one", tiny_dir, 1), _run(base / "two", tiny_dir, 2)


def test_two_processes_train_the_same_weights_as_one(runs):
    base, one, two = runs
    # the ranks held different numbers of completion tokens ...
    t0, t1 = two[0]["local_tokens"], two[1]["local_tokens"]
    assert len(t0) == len(t1) == STEPS and t0 != t1, (t0, t1)
    # ... adding up to the 1-process run's per step, and the loss was divided by that global count
    assert [a + b for a, b in zip(t0, t1)] == one[0]["local_tokens"]
    assert two[0]["num_items_in_batch"] == two[1]["num_items_in_batch"] == one[0]["local_tokens"]
    s1, s2a, s2b = _steps(one[0]), _steps(two[0]), _steps(two[1])
    assert len(s1) == len(s2a) == len(s2b) == STEPS
    for e1, ea, eb in zip(s1, s2a, s2b):
        for key in ("loss", "grad_norm", "entropy", "mean_token_accuracy"):
            assert ea[key] == pytest.approx(eb[key], abs=1e-6), (e1["step"], key)
            assert ea[key] == pytest.approx(e1[key], abs=1e-5), (e1["step"], key, ea[key], e1[key])
    assert s1[-1]["loss"] < s1[0]["loss"] - 0.1                      # it learns ...
    moved = max_weight_diff(base / "one" / "final.safetensors", base / "one" / "start.safetensors")
    assert moved > 1e-2                                               # ... the weights changed ...
    diff = max_weight_diff(base / "two" / "final.safetensors", base / "one" / "final.safetensors")
    assert diff < 1e-6, (diff, moved)                                 # ... identically on 1 and 2 processes


def test_mean_of_per_rank_means_differs(runs, tiny_dir):
    """Negative control: with `average_tokens_across_devices=False` each rank divides by its own token count
    and DDP averages the per-rank means; the weights move away from the 1-process ones."""
    base, one, _ = runs
    naive = _run(base / "naive", tiny_dir, 2, "--per-rank-mean")
    assert naive[0]["num_items_in_batch"] == [float(t) for t in naive[0]["local_tokens"]]
    assert max_weight_diff(base / "naive" / "final.safetensors", base / "one" / "final.safetensors") > 1e-4


def test_gradient_accumulation_on_two_processes_matches_one(tiny_dir, tmp_path):
    """2 micro-steps per optimizer step: the loss is the token mean over both micro-steps of both ranks
    (Trainer sums the token count over the accumulation window and the ranks), as on 1 process."""
    one = run_ranks(RUN, tmp_path / "one", tiny_dir, 1, STEPS, GLOBAL_BATCH, grad_accum=2)
    two = run_ranks(RUN, tmp_path / "two", tiny_dir, 2, STEPS, GLOBAL_BATCH, grad_accum=2)
    t1, (t0a, t0b) = one[0]["local_tokens"], (two[0]["local_tokens"], two[1]["local_tokens"])
    assert len(t1) == len(t0a) == len(t0b) == 2 * STEPS and t0a != t0b
    assert [a + b for a, b in zip(t0a, t0b)] == t1                   # the same rows per micro-step
    window = [t1[k] + t1[k + 1] for k in range(0, len(t1), 2)]       # tokens of one optimizer step
    assert one[0]["num_items_in_batch"] == [float(w) for w in window for _ in range(2)]
    assert two[0]["num_items_in_batch"] == two[1]["num_items_in_batch"] == one[0]["num_items_in_batch"]
    for e1, e2 in zip(_steps(one[0]), _steps(two[0]), strict=True):
        for key in ("loss", "grad_norm"):
            assert e2[key] == pytest.approx(e1[key], abs=1e-5), (e1["step"], key, e2[key], e1[key])
    diff = max_weight_diff(tmp_path / "two" / "final.safetensors", tmp_path / "one" / "final.safetensors")
    assert diff < 1e-6, diff
