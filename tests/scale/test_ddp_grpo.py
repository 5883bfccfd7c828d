"""GRPO (`hatch.actor.grpo.run_grpo`, TRL's GRPOTrainer) under `accelerate launch` with 2 CPU processes (gloo)
logs the same per-step loss, gradient norm and rewards and trains the same weights as 1 process on the same
global batch, with TRL's default loss ("dapo": token sum over the global number of completion tokens).

Generation is made independent of the split in grpo_run.py (each completion sampled under a seed of its
global row); completions end at random lengths, so the ranks hold different numbers of completion tokens.
"""
import json
from pathlib import Path

import pytest
from _ddp_launch import ROOT, launch, needs_gloo
from _ddp_weights import max_weight_diff

RUN = ROOT / "tests" / "scale" / "grpo_run.py"
STEPS, GLOBAL_BATCH, GENERATIONS = 3, 8, 4
COMPARED = ("loss", "grad_norm", "reward", "reward_std", "rewards/dense_test_reward/mean",
            "completions/mean_length", "entropy")

pytestmark = [pytest.mark.slow, needs_gloo]


def _run(out: Path, tiny_dir, procs: int, *extra: str) -> list[dict]:
    """grpo_run.py on `procs` processes; returns each rank's record."""
    launch(RUN, ["--model-dir", str(tiny_dir), "--output-dir", str(out), "--steps", str(STEPS),
                 "--global-batch", str(GLOBAL_BATCH), "--batch-size", str(GLOBAL_BATCH // procs),
                 "--num-generations", str(GENERATIONS), *extra], procs)
    return [json.loads((out / f"rank{k}.json").read_text()) for k in range(procs)]


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
