"""`hatch-vlm ablate`: the paper's ablation (full, without PaStA, without ActoR, QA fine-tuning only) from one
config, over one or more seeds, sharing the stages that variants have in common.

The variants are the config's stages with some left out (the config's `stages` is the full recipe):

    full          pasta, qa_sft, actor_sft, grpo, eval
    no_pasta            qa_sft, actor_sft, grpo, eval
    no_actor      pasta, qa_sft,                  eval      (plain QA prompts at evaluation: no ActoR)
    qa_only             qa_sft,                   eval      (plain QA prompts)

A stage's result depends only on the stages before it, so each distinct prefix runs once: `pasta → qa_sft`
is shared by full and no_actor, `qa_sft` by no_pasta and qa_only (7 training stages and 4 evaluations instead
of 10 and 4). Layout:

    <out>/ablation.json                 what was asked (variants, seeds); a rerun with others refuses
    <out>/seed<s>/                      one run directory per seed (`hatch_vlm.pipeline.runner`), whose
        stages/<prefix>/                stage keys are their prefixes, e.g. stages/pasta+qa_sft+eval/
    <out>/ablation.md, .json, .png      the table (mean ± std over seeds) beside the paper's figures

Killed at any point, the same command resumes like `hatch-vlm train`: finished stages are skipped, an
interrupted one resumes from its last checkpoint. A seed s sets the run's `seed` (the tiny model's weights)
and every training stage's `seed`; the data (`data.seed`) stays the same, so the spread is over training.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

from hatch_vlm.utils import distributed as dist
from hatch_vlm.utils.config import ConfigError, from_dict
from hatch_vlm.utils.io import atomic_write_json, atomic_write_text, read_json

from .config import HatchConfig
from .runner import run_chain, start_run


@dataclass(frozen=True)
class Variant:
    name: str
    title: str                  # as the paper's ablation names it
    drop: tuple[str, ...]       # stages of the full recipe left out
    actor_eval: bool            # evaluate with ActoR prompts (actions, then the answer)


VARIANTS = (
    Variant("full", "HATCH (full)", (), True),
    Variant("no_pasta", "w/o PaStA", ("pasta",), True),
    Variant("no_actor", "w/o ActoR", ("actor_sft", "grpo"), False),
    Variant("qa_only", "QA fine-tuning only", ("pasta", "actor_sft", "grpo"), False),
)
TRAINING_SECTIONS = ("pasta", "qa_sft", "actor_sft", "grpo")


def variant_stages(full: Sequence[str], variant: Variant) -> list[str]:
    return [s for s in full if s not in variant.drop]


def stage_keys(stages: Sequence[str]) -> list[tuple[str, str]]:
    """(key, stage) per stage: the key names the stage and every stage before it, e.g. 'pasta+qa_sft'."""
    return [("+".join(stages[:k + 1]), s) for k, s in enumerate(stages)]


def seeded(raw: dict, seed: int, out: Path) -> dict:
    """The config mapping of one seed: run seed and every training stage's seed set to `seed`."""
    raw = copy.deepcopy(raw)
    raw["seed"] = seed
    raw["output_dir"] = str(out / f"seed{seed}")
    for name in TRAINING_SECTIONS:
        raw[name] = {**(raw.get(name) or {}), "seed": seed}
    return raw


def plan(cfg: HatchConfig, variants: Sequence[Variant] = VARIANTS) -> dict[str, list[tuple[str, str]]]:
    """{variant name: its chain of (key, stage)}; a variant equal to an earlier one (the config lacks the
    stages it drops) is left out."""
    if "eval" not in cfg.stages:
        raise ConfigError("stages: an ablation compares evaluations: the config's stages must include eval")
    if "qa_sft" not in cfg.stages:
        raise ConfigError("stages: every variant of the ablation fine-tunes on QA: include qa_sft")
    chains: dict[str, list[tuple[str, str]]] = {}
    for v in variants:
        chain = stage_keys(variant_stages(cfg.stages, v))
        if chain not in chains.values():
            chains[v.name] = chain
    return chains


def _variant_config(cfg: HatchConfig, variant: Variant) -> HatchConfig:
    return replace(cfg, stages=variant_stages(cfg.stages, variant),
                   eval=replace(cfg.eval, actor=cfg.eval.actor and variant.actor_eval))


def _check_same_ablation(out: Path, asked: dict) -> None:
    saved = read_json(out / "ablation.json")
    if saved is not None and saved != asked:
        raise ConfigError(f"{out} holds an ablation of other variants or seeds ({saved['variants']}, seeds "
                          f"{saved['seeds']}); use another --out or delete it")
    if saved is None:
        atomic_write_json(out / "ablation.json", asked)


def run_ablation(raw: dict, out: str | Path, seeds: Sequence[int] = (0,),
                 variants: Sequence[Variant] = VARIANTS, progress: Callable[[str], None] = print) -> dict:
    """Runs every variant for every seed (shared stages once), then writes the table; returns it.

    raw: the config as a mapping (its `stages` are the full recipe; `output_dir` is replaced by
    `<out>/seed<s>`)."""
    out = Path(out)
    if not seeds:
        raise ConfigError("seeds: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds: a seed is given twice: {list(seeds)}")
    base = from_dict(HatchConfig, seeded(raw, seeds[0], out), where="config")
    chains = plan(base, variants)
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        _check_same_ablation(out, {"variants": list(chains), "seeds": list(seeds)})
    start = time.time()
    for seed in seeds:
        cfg = from_dict(HatchConfig, seeded(raw, seed, out), where="config")
        run, model_dir, say = start_run(cfg, progress)
        for v in variants:
            if v.name not in chains:
                continue
            variant_run = run.with_config(_variant_config(cfg, v))
            run_chain(variant_run, chains[v.name], model_dir, say, title=f"seed {seed} {v.name} ")
    table = dist.on_main(lambda: write_ablation(out, chains, seeds, variants))
    if dist.is_main():
        progress(f"hatch-vlm ablate: {len(chains)} variants x {len(seeds)} seed(s) in {time.time() - start:.0f}s; "
                 f"table in {out / 'ablation.md'}")
    return table


# `--quick`: merged over the config's sections, key by key; sized for `hatch-vlm ablate --quick` (the demo's
# config) to finish within 15 minutes on 2 CPU cores: the ActoR cold start, run twice, dominates.
QUICK = {
    "pasta": {"max_steps": 300},
    "qa_sft": {"max_steps": 60},
    "actor_sft": {"max_steps": 250},
    "grpo": {"max_steps": 20},
    "eval": {"limit": 16},
}


def ablation_config(out: str | Path, config: str | Path | None = None, quick: bool = False) -> dict:
    """The config mapping the ablation runs: `config` (a `hatch-vlm train` config), or without one the
    demo's (synthetic scenes, the tiny model, the three benchmark formats written into `<out>/benchmarks`);
    `quick` merges QUICK over it."""
    from hatch_vlm.utils.config import load_mapping

    from .demo import benchmark_files, demo_config

    out = Path(out)
    if config is None:
        raw = demo_config(out)
        if dist.is_main():
            out.mkdir(parents=True, exist_ok=True)
        raw.setdefault("eval", {})["benchmarks"] = dist.on_main(lambda: benchmark_files(out, raw))
    else:
        raw = load_mapping(config)
    if quick:
        for key, values in QUICK.items():
            raw[key] = {**(raw.get(key) or {}), **values}
    return raw


# ----------------------------------------------------------------------------------------------- table
def _mean_std(values: list[float]) -> tuple[float | None, float | None, int]:
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        return None, None, 0
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return mean, std, len(vals)


def collect(out: Path, chains: dict[str, list[tuple[str, str]]], seeds: Sequence[int]) -> dict[str, Any]:
    """{variant: {benchmark: {"mean", "std", "n_seeds", "per_seed"}}} from each seed's eval summaries
    (the benchmark's Avg; "Overall" too when all three benchmarks were evaluated)."""
    table: dict[str, Any] = {}
    for name, chain in chains.items():
        eval_key = chain[-1][0]
        per_bench: dict[str, list[float]] = {}
        for seed in seeds:
            state = read_json(out / f"seed{seed}" / "state.json", default={"stages": {}})
            summary = state["stages"].get(eval_key, {}).get("metrics", {}).get("summary", {})
            for bench, row in summary.items():
                value = row if bench == "Overall" else (row or {}).get("Avg")
                per_bench.setdefault(bench, []).append(value)
        table[name] = {}
        for bench, values in per_bench.items():
            values = [v if isinstance(v, (int, float)) and math.isfinite(v) else None for v in values]
            mean, std, n = _mean_std(values)
            table[name][bench] = {"mean": mean, "std": std, "n_seeds": n, "per_seed": values}
    return table


def _cell(entry: dict | None) -> str:
    if not entry or entry["mean"] is None:
        return "–"
    return f"{entry['mean']:.1f}" + (f" ± {entry['std']:.1f}" if entry["std"] is not None else "")


def write_ablation(out: Path, chains: dict[str, list[tuple[str, str]]], seeds: Sequence[int],
                   variants: Sequence[Variant] = VARIANTS) -> dict:
    """ablation.json, ablation.md (our table beside the paper's SPAR-Bench-MV averages) and ablation.png."""
    from hatch_vlm.eval.benchmarks import BENCHMARKS, PAPER_ABLATION

    table = collect(out, chains, seeds)
    titles = {v.name: v.title for v in variants}
    benches = [b for b in ("spar-mv", "mindcube", "mmsi", "synthetic", "Overall")
               if any(b in row for row in table.values())]
    benches += sorted({b for row in table.values() for b in row} - set(benches))
    heads = [BENCHMARKS[b].title if b in BENCHMARKS else b for b in benches]
    lines = ["# HATCH ablation", "",
             f"Accuracy % (each benchmark's official aggregation), mean ± std over seeds {list(seeds)} "
             "(sample std; one seed: no spread). Variants without ActoR are evaluated with plain QA prompts. "
             "The paper's column is its SPAR-Bench-MV Avg (Qwen2.5-VL-3B on SPAR-7M; not comparable with a "
             "tiny model on synthetic scenes).", "",
             "| variant | stages | " + " | ".join(heads) + " | paper SPAR-Bench-MV Avg |",
             "|---|---|" + "---|" * (len(benches) + 1)]
    for name, chain in chains.items():
        stages = " → ".join(s for _, s in chain)
        paper = PAPER_ABLATION.get(name)
        lines.append(f"| {titles.get(name, name)} | {stages} | "
                     + " | ".join(_cell(table[name].get(b)) for b in benches)
                     + f" | {paper if paper is not None else '–'} |")
    shared = _shared_stages(chains)
    lines += ["", f"Stages shared between variants (each ran once per seed): "
                  f"{', '.join(shared) if shared else 'none'}."]
    picture = _plot(out / "ablation.png", table, benches, heads, titles)
    if picture:
        lines += ["", f"![ablation]({picture.name})"]
    curves = reward_curves(out, chains, seeds, variants)
    if curves:
        lines += ["", "GRPO's action and answer rewards during training, HATCH against w/o PaStA (the paper's "
                      "Figure 3): each seed thin, the mean over seeds smoothed thick.", "",
                  f"![rewards]({curves.name})"]
    atomic_write_json(out / "ablation_table.json", {"seeds": list(seeds), "variants": table,
                                                     "paper_spar_mv_avg": PAPER_ABLATION,
                                                     "chains": {k: [key for key, _ in c] for k, c in chains.items()}})
    atomic_write_text(out / "ablation.md", "\n".join(lines) + "\n")
    return table


# The paper's Figure 3 compares these variants' GRPO rewards.
FIGURE3 = ("full", "no_pasta")


def reward_logs(out: Path, chains: dict[str, list[tuple[str, str]]], seeds: Sequence[int]) -> dict[str, dict]:
    """{variant: {"seed <s>": GRPO reward log}} of the FIGURE3 variants, from each seed's state.json (a seed
    whose GRPO stage has no log yet is left out)."""
    logs: dict[str, dict] = {}
    for name in FIGURE3:
        grpo_key = next((key for key, stage in chains.get(name, []) if stage == "grpo"), None)
        if grpo_key is None:
            continue
        for seed in seeds:
            state = read_json(out / f"seed{seed}" / "state.json", default={"stages": {}})
            path = state["stages"].get(grpo_key, {}).get("metrics", {}).get("reward_log")
            log = read_json(Path(path), default=None) if path else None
            if log:
                logs.setdefault(name, {})[f"seed {seed}"] = log
    return logs


def reward_curves(out: Path, chains: dict[str, list[tuple[str, str]]], seeds: Sequence[int],
                  variants: Sequence[Variant] = VARIANTS) -> Path | None:
    """ablation_rewards.png (Figure 3) when both FIGURE3 variants have GRPO reward logs, else None."""
    from hatch_vlm.actor.plot import plot_reward_variants

    logs = reward_logs(out, chains, seeds)
    if set(logs) != set(FIGURE3):
        return None
    titles = {v.name: v.title for v in variants}
    return plot_reward_variants({titles.get(n, n): logs[n] for n in FIGURE3}, out / "ablation_rewards.png")


def _shared_stages(chains: dict[str, list[tuple[str, str]]]) -> list[str]:
    users: dict[str, int] = {}
    for chain in chains.values():
        for key, _ in chain:
            users[key] = users.get(key, 0) + 1
    return [k for k, n in users.items() if n > 1]


def _plot(path: Path, table: dict, benches: list[str], heads: list[str], titles: dict) -> Path | None:
    """Grouped bars: one group per benchmark, one bar per variant, error bars = std over seeds."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = list(table)
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(benches), 3.6))
    for k, name in enumerate(names):
        means = [table[name].get(b, {}).get("mean") or 0.0 for b in benches]
        stds = [table[name].get(b, {}).get("std") or 0.0 for b in benches]
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(benches))]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=titles.get(name, name))
    ax.set_xticks(range(len(benches)), heads)
    ax.set_ylabel("accuracy %")
    ax.set_title("HATCH ablation (mean ± std over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
