"""Reward curves of a GRPO run against the training step (the paper's Figure 3: action and answer reward)."""
from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Sequence

CURVES = {"action": "rewards/action_reward/mean", "answer": "rewards/answer_reward/mean",
          "format": "rewards/format_reward/mean"}


def reward_series(log_history: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one logged metric, in step order, skipping log entries without it."""
    pts = sorted((int(e["step"]), float(e[key])) for e in log_history if key in e and "step" in e)
    return [s for s, _ in pts], [v for _, v in pts]


def plot_rewards(log_history: Sequence[dict] | str | Path, out_path: str | Path,
                 curves: Sequence[str] = ("action", "answer", "format"), smooth: int = 1) -> Path:
    """Plot the mean rewards against step and save a PNG; returns its path.

    Args:
        log_history: `trainer.state.log_history`, or the path of a `reward_log.json` written by `run_grpo`.
        out_path: PNG path.
        curves: which of "action", "answer", "format" to draw (Figure 3 draws action and answer).
        smooth: moving-average window in logged points (1 = raw).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(log_history, (str, Path)):
        log_history = json.loads(Path(log_history).read_text())
    unknown = set(curves) - set(CURVES)
    if unknown:
        raise ValueError(f"curves must be among {sorted(CURVES)}, got {sorted(unknown)}")
    if smooth < 1:
        raise ValueError(f"smooth must be >= 1, got {smooth}")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    drawn = 0
    for name in curves:
        steps, vals = reward_series(log_history, CURVES[name])
        if not steps:
            continue
        if smooth > 1:
            vals = [sum(vals[max(0, k - smooth + 1):k + 1]) / len(vals[max(0, k - smooth + 1):k + 1])
                    for k in range(len(vals))]
        ax.plot(steps, vals, label=f"{name} reward", marker="." if len(steps) < 60 else None)
        drawn += 1
    if not drawn:
        raise ValueError(f"no reward entries ({', '.join(CURVES[c] for c in curves)}) in the log history")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("ActoR rewards during GRPO")
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path
