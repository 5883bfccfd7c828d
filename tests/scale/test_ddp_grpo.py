"""GRPO (`hatch_vlm.actor.grpo.run_grpo`, TRL's GRPOTrainer) under `accelerate launch` with 2 CPU processes (gloo)
logs the same per-step loss, gradient norm and rewards and trains the same weights as 1 process on the same
global batch, with TRL's default loss ("dapo": token sum over the global number of completion tokens).

Generation is made independent of the split in grpo_run.py (each completion sampled under a seed of its
global row); completions end at random lengths, so the ranks hold different numbers of completion tokens.
"""
from pathlib import Path

import pytest

from scale_launch import ROOT, needs_gloo, run_ranks
from _ddp_weights import max_weight_diff

RUN = ROOT / "tests" / "scale" / "grpo_run.py"
STEPS, GLOBAL_BATCH, GENERATIONS = 3, 8, 4
COMPARED = ("loss", "grad_norm", "reward", "reward_std", "rewards/dense_test_reward/mean",
            "completions/mean_length", "entropy")

pytestmark = [pytest.mark.slow, needs_gloo]


def _run(out: Path, tiny_dir, procs: int, *extra: str) -> list[dict]:
    """grpo_run.py on `procs` processes; returns each rank's record."""
    return run_ranks(RUN, out, tiny_dir, procs, STEPS, GLOBAL_BATCH, "--num-generations", str(GENERATIONS), *extra)


def _steps(record: dict) -> list[dict]:
    return [e for e in record["log_history"] if "loss" in e and "step" in e]


def _completions(records: list[dict]) -> dict[tuple[int, int], list[int]]:
    """{(step, global row): token ids} over all ranks."""
    return {(c["step"], c["row"]): c["completion"] for r in records for c in r["completions"]}


@pytest.fixture(scope="module")
def runs(tiny_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp_grpo")
    return base, _run(base / "one", tiny_dir, 1), _run(base / "two", tiny_dir, 2)


def test_two_processes_sample_the_same_completions(runs):
    _, one, two = runs
    c1, c2 = _completions(one), _completions(two)
    assert len(c1) == STEPS * GLOBAL_BATCH and c1 == c2
    # each rank sampled its own half of the global rows, and their completion tokens differ in number
    for step in range(STEPS):
        rows = [{c["row"] for c in r["completions"] if c["step"] == step} for r in two]
        assert rows == [set(range(GLOBAL_BATCH // 2)), set(range(GLOBAL_BATCH // 2, GLOBAL_BATCH))]
    half = GLOBAL_BATCH // 2
    tokens = [[sum(len(c2[step, row]) for row in range(k * half, (k + 1) * half)) for step in range(STEPS)]
              for k in (0, 1)]
    assert tokens[0] != tokens[1], tokens


def test_two_processes_log_and_train_as_one(runs, tiny_dir):
    base, one, two = runs
    s1, s2a, s2b = _steps(one[0]), _steps(two[0]), _steps(two[1])
    assert len(s1) == len(s2a) == len(s2b) == STEPS
    for e1, ea, eb in zip(s1, s2a, s2b):
        for key in COMPARED:       # logged values are aggregated over the ranks: same on both, same as 1 process
            assert ea[key] == pytest.approx(eb[key], abs=1e-6), (e1["step"], key)
            assert ea[key] == pytest.approx(e1[key], abs=2e-5), (e1["step"], key, ea[key], e1[key])
    assert any(abs(e["loss"]) > 1e-3 for e in s1)        # the loss is not trivially 0 ...
    assert all(e["grad_norm"] > 1e-2 for e in s1)        # ... and there is a gradient
    moved = max_weight_diff(base / "one" / "final.safetensors", base / "one" / "start.safetensors")
    assert moved > 1e-2                                    # training changed the weights ...
    diff = max_weight_diff(base / "two" / "final.safetensors", base / "one" / "final.safetensors")
    assert diff < 1e-6, (diff, moved)                      # ... identically on 1 and 2 processes


def test_per_rank_generation_seeds_differ(runs, tiny_dir):
    """Negative control: with generation seeded per local row (as each rank's own RNG would), the 2-process
    run samples other completions for rank 1's rows and logs and trains differently (so the tests above can
    fail)."""
    base, one, _ = runs
    naive = _run(base / "naive", tiny_dir, 2, "--local-row-seeds")
    assert _completions(naive) != _completions(one)
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(_steps(naive[0]), _steps(one[0]))) > 1e-3
    assert max_weight_diff(base / "naive" / "final.safetensors", base / "one" / "final.safetensors") > 1e-3


# ------------------------------------------------------------------ with the PaStA auxiliary loss
AUX = ("--image-size", "112")     # PaStA's 4 x 4 cells need 112 px views


@pytest.fixture(scope="module")
def aux_one(runs, tiny_dir):
    base = runs[0]
    return _run(base / "aux_one", tiny_dir, 1, "--aux", "global", *AUX)


def _assert_same_run(base: Path, a: str, b: str, recs_a: list[dict], recs_b: list[dict], keys) -> None:
    for ea, eb in zip(_steps(recs_a[0]), _steps(recs_b[0]), strict=True):
        for key in keys:
            assert ea[key] == pytest.approx(eb[key], abs=2e-5), (ea["step"], key, ea[key], eb[key])
    diff = max_weight_diff(base / a / "final.safetensors", base / b / "final.safetensors")
    assert diff < 1e-6, diff


def test_aux_loss_with_global_mean_trains_as_one_process(runs, aux_one, tiny_dir):
    """GRPO + λ·PaStA (`pasta_aux_loss`: mean over the global batch's valid rows) on 2 processes: the second
    forward through the DDP wrapper works, the logged `pasta_loss` is the mean over ranks, all as on 1 process."""
    base = runs[0]
    two = _run(base / "aux_two", tiny_dir, 2, "--aux", "global", *AUX)
    v0, v1 = two[0]["aux_valid_rows"], two[1]["aux_valid_rows"]
    assert len(v0) == STEPS and v0 != v1, (v0, v1)               # the ranks hold different valid-row counts
    assert [a + b for a, b in zip(v0, v1)] == aux_one[0]["aux_valid_rows"]
    assert all(e["pasta_loss"] > 0.05 for e in _steps(aux_one[0]))
    _assert_same_run(base, "aux_two", "aux_one", two, aux_one, COMPARED + ("pasta_loss",))


def test_aux_loss_per_rank_mean_differs(runs, aux_one, tiny_dir):
    """Negative control: each rank's own mean over its valid rows (DDP-averaged) logs another `pasta_loss`
    and trains other weights than 1 process."""
    base = runs[0]
    two = _run(base / "aux_rank", tiny_dir, 2, "--aux", "per-rank", *AUX)
    assert max(abs(a["pasta_loss"] - b["pasta_loss"]) for a, b in zip(_steps(two[0]), _steps(aux_one[0]))) > 1e-3
    assert max_weight_diff(base / "aux_rank" / "final.safetensors", base / "aux_one" / "final.safetensors") > 1e-3


def test_lora_on_two_processes_matches_one(tiny_dir, tmp_path):
    """LoRA (the GPU recipe's GRPO setting) under DDP: the same logs and adapter weights as 1 process."""
    one = _run(tmp_path / "one", tiny_dir, 1, "--lora-r", "4")
    two = _run(tmp_path / "two", tiny_dir, 2, "--lora-r", "4")
    for e1, e2 in zip(_steps(one[0]), _steps(two[0]), strict=True):
        for key in COMPARED:
            assert e2[key] == pytest.approx(e1[key], abs=2e-5), (e1["step"], key, e2[key], e1[key])
    from safetensors.torch import load_file

    w1, w2 = load_file(tmp_path / "one" / "final.safetensors"), load_file(tmp_path / "two" / "final.safetensors")
    lora = [k for k in w1 if "lora_" in k]
    assert lora and w1.keys() == w2.keys()
    assert max(w1[k].abs().max().item() for k in lora if "lora_B" in k) > 1e-3   # the adapters trained
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-6
