"""The PaStA stage under `accelerate launch` with 2 CPU processes (gloo) trains the same weights as one
process on the same global batch: the loss is the mean over all valid rows of the global batch, also
when the ranks hold different numbers of valid rows."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scale_launch import ROOT, needs_gloo, run_ranks

RUN = ROOT / "tests" / "scale" / "pasta_run.py"
STEPS, GLOBAL_BATCH = 3, 4

pytestmark = [pytest.mark.slow, needs_gloo]


def _run(out: Path, tiny_dir, procs: int, *extra: str) -> list[dict]:
    """pasta_run.py on `procs` processes; returns each rank's record."""
    return run_ranks(RUN, out, tiny_dir, procs, STEPS, GLOBAL_BATCH, *extra)


def _vision(model_dir: Path) -> dict[str, torch.Tensor]:
    state = load_file(model_dir / "model.safetensors")
    return {k: v for k, v in state.items() if "visual." in k}


@pytest.fixture(scope="module")
def runs(tiny_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp_pasta")
    one = _run(base / "one", tiny_dir, 1)
    two = _run(base / "two", tiny_dir, 2)
    return base, one, two


def test_two_processes_train_the_same_weights_as_one(runs, tiny_dir):
    base, one, two = runs
    # the ranks saw different numbers of valid rows (the case a mean of per-rank means gets wrong) ...
    counts0, counts1 = two[0]["local_counts"], two[1]["local_counts"]
    assert len(counts0) == len(counts1) == STEPS and counts0 != counts1, (counts0, counts1)
    # ... that add up to the 1-process run's rows per step (same global batch per step)
    assert [a + b for a, b in zip(counts0, counts1)] == one[0]["local_counts"]
    assert two[0]["steps"] == two[1]["steps"] == one[0]["steps"] == STEPS
    # the logged loss is the global mean: the same as on one process
    assert abs(two[0]["train_loss"] - one[0]["train_loss"]) < 1e-5
    v1, v2, v0 = _vision(base / "one" / "final"), _vision(base / "two" / "final"), _vision(Path(tiny_dir))
    assert v1.keys() == v2.keys() and len(v1) > 10
    moved = max((v1[k] - v0[k]).abs().max().item() for k in v1)
    assert moved > 1e-3                                  # training changed the weights ...
    for k in v1:                                         # ... identically on 1 and 2 processes
        torch.testing.assert_close(v2[k], v1[k], atol=1e-5, rtol=0, msg=lambda m, k=k: f"{k}: {m}")


def test_mean_of_per_rank_means_differs(runs, tiny_dir):
    """Negative control: without the cross-rank count, the 2-process weights move away from the
    1-process ones (so the test above can fail)."""
    base, _, _ = runs
    _run(base / "naive", tiny_dir, 2, "--per-rank-mean")
    v1, vn = _vision(base / "one" / "final"), _vision(base / "naive" / "final")
    assert max((vn[k] - v1[k]).abs().max().item() for k in v1) > 1e-4


def test_gradient_accumulation_on_two_processes_matches_one(tiny_dir, tmp_path):
    """2 micro-steps per optimizer step: each micro-step's loss is its global mean (over both ranks), and
    Trainer averages the micro-steps, the same on 1 and 2 processes."""
    one = run_ranks(RUN, tmp_path / "one", tiny_dir, 1, STEPS, GLOBAL_BATCH, grad_accum=2)
    two = run_ranks(RUN, tmp_path / "two", tiny_dir, 2, STEPS, GLOBAL_BATCH, grad_accum=2)
    c1, c0a, c0b = one[0]["local_counts"], two[0]["local_counts"], two[1]["local_counts"]
    assert len(c1) == len(c0a) == 2 * STEPS and c0a != c0b
    assert [a + b for a, b in zip(c0a, c0b)] == c1
    assert abs(two[0]["train_loss"] - one[0]["train_loss"]) < 1e-5
    v1, v2 = _vision(tmp_path / "one" / "final"), _vision(tmp_path / "two" / "final")
    for k in v1:
        torch.testing.assert_close(v2[k], v1[k], atol=1e-5, rtol=0, msg=lambda m, k=k: f"{k}: {m}")
