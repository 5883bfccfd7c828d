"""The report of a run: markdown + JSON + pictures gathered from the stages' outputs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from hatch_vlm.utils.io import atomic_write_json, atomic_write_text, read_json


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{100 * v:.1f}%" if pct else f"{v:.3f}"
    return str(v)


def _examples(results_path: Path, k: int = 4) -> list[dict]:
    """A few completions with their parsed actions and rewards."""
    data = read_json(results_path, default={})
    from hatch_vlm.actor.actions import parse_completion

    out = []
    for r in data.get("records", [])[:k]:
        parsed = parse_completion(r["completion"])
        out.append({"id": r["id"], "gold": r["gold"], "completion": r["completion"],
                    "answer_score": r["score"], "parses": parsed.ok,
                    "why_not": None if parsed.ok else parsed.error})
    return out


HELD_OUT = ("action", "action_partial", "answer", "format")     # "action": the product shape
TRAINED = ("action", "answer", "format")                         # as GRPO logs them (its action shape)


def _grpo_runs(stages: dict) -> dict[str, dict]:
    """{"seed <s>": metrics} of the GRPO stage ("grpo") and its repeats with other seeds ("grpo_seed<s>")."""
    runs = {}
    for name, s in stages.items():
        if name == "grpo" or name.startswith("grpo_seed"):
            seed = name.removeprefix("grpo_seed") if name != "grpo" else "0 (evaluated)"
            runs[f"seed {seed}"] = s.get("metrics", {})
    return runs


def _mean_std(values: list) -> str:
    vals = [v for v in values if isinstance(v, (int, float))]
    if not vals:
        return "–"
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{mean:.3f}"
    std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
    return f"{mean:.3f} ± {std:.3f} (min {min(vals):.3f}, max {max(vals):.3f})"


def _grpo_section(stages: dict, cold: dict) -> list[str]:
    """Held-out rewards after the cold start and after GRPO per seed, the training rewards' first and last
    fifth, and how many seeds improved on the cold start."""
    runs = _grpo_runs(stages)
    n = cold.get("held_out_n")
    head = ("| run | " + " | ".join(f"held-out {r}" for r in HELD_OUT) + " | "
            + " | ".join(f"train {r} first→last fifth" for r in TRAINED) + " |")
    lines = ["Greedy completions on the held-out samples (the cold start's measure; `action` is R_act's product "
             "shape, `action_partial` the partial-credit one), and the mean training reward of the sampled "
             "completions in the first and last fifth of the steps (R_act in the shape GRPO trains with). The "
             "training curves follow the prompts each step happens to draw (a few per step): a GRPO run whose "
             "policy never changes rises and falls as much (docs/grpo_study.md), so the held-out columns are the "
             "measure" + (f" ({n} samples)" if n else "") + ".", "",
             head, "|" + "---|" * (1 + len(HELD_OUT) + len(TRAINED)),
             "| cold start | " + " | ".join(_fmt(cold.get(f"held_out_{r}")) for r in HELD_OUT) + " |"
             + " |" * len(TRAINED)]
    for name, m in runs.items():
        lines.append(f"| GRPO {name} | " + " | ".join(_fmt(m.get(f"held_out_{r}")) for r in HELD_OUT) + " | "
                     + " | ".join(f"{_fmt(m.get(f'{r}_reward_first'))} → {_fmt(m.get(f'{r}_reward_last'))}"
                                  for r in TRAINED) + " |")
    lines.append("")
    for r in HELD_OUT:
        after = [m.get(f"held_out_{r}") for m in runs.values()]
        before = cold.get(f"held_out_{r}")
        better = sum(1 for a in after if isinstance(a, (int, float)) and isinstance(before, (int, float))
                     and a >= before)
        if not isinstance(before, (int, float)):
            continue                            # not measured (a run from before this reward was reported)
        lines.append(f"* held-out {r} after GRPO over {len(runs)} seed(s): {_mean_std(after)}; "
                     f">= the cold start ({_fmt(before)}) in {better} of {len(runs)}")
    return lines


def write_report(run_dir: str | Path, report_dir: str | Path | None = None) -> Path:
    """Writes <report_dir>/report.md, report.json and the PNGs; returns the markdown path."""
    run_dir = Path(run_dir)
    report = Path(report_dir) if report_dir else run_dir / "report"
    report.mkdir(parents=True, exist_ok=True)
    state = read_json(run_dir / "state.json", default={"stages": {}})
    stages = state["stages"]
    lines = ["# HATCH run report", "", f"Run directory: `{run_dir}`", ""]
    lines += ["## Stages", "", "| stage | seconds | key results |", "|---|---|---|"]
    from .config import STAGES

    for name in sorted(stages, key=lambda n: STAGES.index(n) if n in STAGES else len(STAGES)):
        s = stages[name]
        m = s.get("metrics", {})
        keys = [k for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)][:6]
        lines.append(f"| {name} | {s.get('seconds')} | " + ", ".join(f"{k}={_fmt(m[k])}" for k in keys) + " |")
    pictures = {}

    pasta = stages.get("pasta", {}).get("metrics")
    if pasta:
        lines += ["", "## PaStA: cross-view correspondence (held-out scenes)", "",
                  "| | top-1 accuracy | mean rank |", "|---|---|---|",
                  f"| before | {_fmt(pasta.get('before_top1'), True)} | {_fmt(pasta.get('before_mean_rank'))} |",
                  f"| after | {_fmt(pasta.get('after_top1'), True)} | {_fmt(pasta.get('after_mean_rank'))} |",
                  f"| chance | {_fmt(pasta.get('chance_top1'), True)} | {_fmt(pasta.get('chance_rank'))} |",
                  "", f"LLM weights unchanged by the stage: {pasta.get('llm_unchanged')}"]
        for png in sorted((run_dir / "stages" / "pasta" / "work").glob("*.png")):
            pictures[f"pasta_{png.name}"] = png

    actor = stages.get("actor_sft", {}).get("metrics")
    if actor:
        lines += ["", "## ActoR cold start: held-out rewards (greedy)", "",
                  ", ".join(f"{k.removeprefix('held_out_')} {_fmt(v)}" for k, v in actor.items()
                            if k.startswith("held_out_"))]
    grpo = stages.get("grpo", {}).get("metrics")
    if grpo:
        lines += ["", "## GRPO", ""]
        lines += _grpo_section(stages, actor or {})
        runs = _grpo_runs(stages)
        logs = {name: read_json(Path(m["reward_log"]), default=[]) for name, m in runs.items()
                if m.get("reward_log") and Path(m["reward_log"]).exists()}
        if logs:
            from hatch_vlm.actor.plot import plot_reward_seeds

            pictures["grpo_rewards.png"] = plot_reward_seeds(logs, report / "grpo_rewards.png")

    ev = stages.get("eval", {}).get("metrics")
    examples = []
    if ev:
        results_md = Path(ev["results"]).with_suffix(".md")
        lines += ["", "## Results", ""]
        if results_md.exists():
            lines += results_md.read_text().splitlines()[2:]
        examples = _examples(Path(ev["results"]))
        if examples:
            lines += ["", "## Example completions", ""]
            for e in examples:
                lines += [f"**{e['id']}** (gold {e['gold']}, answer score {e['answer_score']}, "
                          f"format {'ok' if e['parses'] else 'broken: ' + str(e['why_not'])})", "",
                          "```", e["completion"].strip()[:600], "```", ""]
    for name, src in pictures.items():
        if Path(src) != report / name:      # drawn elsewhere (a stage's work directory)
            shutil.copyfile(src, report / name)
        lines += ["", f"![{name}]({name})"]
    atomic_write_json(report / "report.json", {"state": state, "examples": examples,
                                               "pictures": sorted(pictures)})
    atomic_write_text(report / "report.md", "\n".join(lines) + "\n")
    return report / "report.md"


def load_report(report_dir: str | Path) -> dict:
    return json.loads((Path(report_dir) / "report.json").read_text())
