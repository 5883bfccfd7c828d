"""Reward curves of GRPO runs against the training step (the paper's Figure 3: action and answer reward; HATCH
against "w/o PaStA" with `plot_reward_variants`)."""
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
            vals = moving_average(vals, smooth)
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
    return _save(fig, out_path)


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over `window` points (fewer at the start)."""
    return [sum(values[max(0, k - window + 1):k + 1]) / len(values[max(0, k - window + 1):k + 1])
            for k in range(len(values))]


def plot_reward_seeds(logs: dict[str, Sequence[dict]], out_path: str | Path,
                      curves: Sequence[str] = ("action", "answer"), smooth: int = 10) -> Path:
    """Figure 3 style over several GRPO runs: per reward one panel, each run's logged mean reward as a thin
    line, and the across-run mean smoothed over `smooth` logged points as a thick line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not logs:
        raise ValueError("no GRPO runs to plot")
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for ax, name in zip(axes[0], curves):
        series = {run: reward_series(log, CURVES[name]) for run, log in logs.items()}
        series = {run: sv for run, sv in series.items() if sv[0]}
        for run, (steps, vals) in series.items():
            ax.plot(steps, vals, lw=0.8, alpha=0.45, label=run)
        if series:
            common, means = mean_curve(list(series.values()), smooth)
            ax.plot(common, means, lw=2.2, color="black", label=f"mean, smoothed ({smooth})")
        ax.set_title(f"{name} reward")
        ax.set_xlabel("GRPO step")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean reward (training batch)")
    axes[0][-1].legend(fontsize=7)
    return _save(fig, out_path)


def mean_curve(series: Sequence[tuple[list[int], list[float]]], smooth: int) -> tuple[list[int], list[float]]:
    """The across-run mean at the steps every run logged, then its trailing mean over `smooth` points."""
    if not series:
        return [], []
    common = sorted(set.intersection(*(set(steps) for steps, _ in series)))
    means = [sum(dict(zip(steps, vals))[x] for steps, vals in series) / len(series) for x in common]
    return common, moving_average(means, smooth)


def plot_reward_variants(variants: dict[str, dict[str, Sequence[dict]]], out_path: str | Path,
                         curves: Sequence[str] = ("action", "answer"), smooth: int = 10) -> Path:
    """The paper's Figure 3: GRPO reward curves of several variants (e.g. HATCH against "w/o PaStA") on one
    figure, one panel per reward; per variant each seed's logged mean reward as a thin line and the across-seed
    mean smoothed over `smooth` logged points as a thick line of the same colour.

    variants: {variant title: {seed name: log history (or reward_log.json contents)}}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(variants.values()):
        raise ValueError("no GRPO reward logs to plot")
    fig, axes = plt.subplots(1, len(curves), figsize=(4.4 * len(curves), 3.4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, name in zip(axes[0], curves):
        for k, (variant, logs) in enumerate(variants.items()):
            colour = colours[k % len(colours)]
            series = [sv for sv in (reward_series(log, CURVES[name]) for log in logs.values()) if sv[0]]
            for steps, vals in series:
                ax.plot(steps, vals, lw=0.7, alpha=0.3, color=colour)
            steps, means = mean_curve(series, smooth)
            if steps:
                ax.plot(steps, means, lw=2.2, color=colour, label=f"{variant} ({len(series)} seed(s))")
        ax.set_title(f"{name} reward")
        ax.set_xlabel("GRPO step")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"mean reward (smoothed over {smooth})")
    axes[0][-1].legend(fontsize=7)
    return _save(fig, out_path)


def _save(fig, out_path: str | Path) -> Path:
    """Lay out, write as PNG (making its folder) and close a figure; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path
