"""`hatch-vlm sweep`: one config key over a list of values (e.g. PaStA's grid size n, the paper's Figure 4), over
one or more seeds, with the stages before the first stage the key touches run once and shared.

    hatch-vlm sweep --config FILE --set pasta.grid=1,2,3,4,5,6 [--seeds 0 1 2] [--out DIR]

It is the ablation's machinery (hatch_vlm.pipeline.ablate): one ordinary resumable run directory per seed
(`<out>/seed<s>/`, `hatch_vlm.pipeline.runner`) whose stage keys name the stages leading to a stage, so that
values share what they have in common. A stage the key touches, and every stage after it, is keyed with the
value too:

    --set grpo.learning_rate=1e-5,3e-5 over [pasta, qa_sft, actor_sft, grpo, eval]:
        pasta, pasta+qa_sft, pasta+qa_sft+actor_sft                     once (shared)
        pasta+qa_sft+actor_sft+grpo@grpo.learning_rate=1e-05, ...+eval@grpo.learning_rate=1e-05, and the same
        for 3e-05

Which stage a key touches: its section's stage (pasta, qa_sft, actor_sft, grpo, eval); `data.*` and `threads`
touch every stage (the data are rebuilt for each value); `eval.max_new_tokens` / `eval.batch_size` also
set the held-out measure of the ActoR stages (actor_sft). Keys that change the initial model or the run's
identity (`model.*`, `seed`, `output_dir`, `stages`, a stage's `seed`) are refused: `--seeds` is the seed axis.

Everything is checked before anything runs: the key must exist (else "did you mean"), every value must pass
the config's checks. `<out>/sweep.json` records what was asked; a rerun with other values or seeds refuses.
Results: `<out>/sweep.md` (+ `sweep.png`, `sweep_table.json`): each benchmark's Avg, mean ± std over the
seeds, against the value (for `pasta.grid`, the paper's finding beside it).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

import yaml

from hatch_vlm.utils import distributed as dist
from hatch_vlm.utils.config import ConfigError, from_dict
from hatch_vlm.utils.io import atomic_write_json, atomic_write_text, read_json

from .ablate import _cell, collect, seeded
from .config import HatchConfig
from .runner import Run, run_chain, start_run

# The paper's statement for a key, printed beside the sweep's table.
PAPER_FINDINGS = {
    "pasta.grid": "The paper's Figure 4 (SPAR-Bench, Qwen2.5-VL-3B): n = 4 is best; accuracy drops for n >= 5 "
                  "(cells too small to hold a reliable cross-view correspondence).",
}
REFUSED = {
    "model": "changes the initial model (run one `hatch-vlm train` per model instead)",
    "seed": "is the seed axis: use --seeds",
    "output_dir": "is set by the sweep (<out>/seed<s>)",
    "stages": "is the recipe the sweep runs; sweep a stage's options instead",
}
WHOLE_RUN = ("data", "threads")          # every stage (and the data) depends on them
ALSO_ACTOR = {"eval.max_new_tokens", "eval.batch_size"}     # the ActoR stages' held-out measure reads them


@dataclasses.dataclass(frozen=True)
class Setting:
    key: str                  # dotted, e.g. "pasta.grid"
    values: tuple             # parsed (YAML scalars)


def parse_set(text: str) -> Setting:
    """"pasta.grid=1,2,3" -> Setting("pasta.grid", (1, 2, 3)); each value is read as YAML ("1e-4" a number,
    "true" a bool, "x" a string)."""
    key, sep, rest = text.partition("=")
    key = key.strip()
    if not sep or not key or not rest.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=V1,V2,... (e.g. pasta.grid=2,3,4)")
    values = tuple(_value(v.strip()) for v in rest.split(","))
    if len(values) < 2:
        raise ConfigError(f"--set {text!r}: give at least two values to compare")
    if len({repr(v) for v in values}) != len(values):
        raise ConfigError(f"--set {text!r}: a value is given twice")
    return Setting(key, values)


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _value(text: str) -> Any:
    """A value as YAML reads it, except that "1e-5" is a number (YAML 1.1, PyYAML's, wants "1.0e-5")."""
    value = yaml.safe_load(text)
    return float(text) if isinstance(value, str) and _NUMBER.fullmatch(text) else value


# ----------------------------------------------------------------------------------------- the key
def _section_types() -> dict[str, type]:
    made = {f.name: f.default_factory() for f in dataclasses.fields(HatchConfig)
            if f.default_factory is not dataclasses.MISSING}
    return {name: type(v) for name, v in made.items() if dataclasses.is_dataclass(v)}


def _section_keys(cls) -> list[str]:
    """The keys a section takes: its fields, and for a TRL stage section every field of its TRL config."""
    own = [f.name for f in dataclasses.fields(cls) if f.init and f.name != getattr(cls, "__unknown_keys_into__", None)]
    if getattr(cls, "__unknown_keys_into__", None):
        own += [f.name for f in dataclasses.fields(cls.config_class()) if f.init]
    return own


def known_keys() -> list[str]:
    """Every dotted key of a config (sections' keys as "section.key")."""
    sections = _section_types()
    top = [f.name for f in dataclasses.fields(HatchConfig) if f.name not in sections]
    return top + [f"{s}.{k}" for s, cls in sections.items() for k in _section_keys(cls)]


def check_key(key: str) -> None:
    """ConfigError unless `key` is a sweepable key of a config (with "did you mean" for a near miss)."""
    parts = key.split(".")
    head = parts[0]
    refused = REFUSED.get(head) or ("is the stage's seed: use --seeds" if parts[-1] == "seed" else None)
    if refused:
        raise ConfigError(f"--set {key}: not sweepable: {head if head in REFUSED else key} {refused}")
    known = known_keys()
    if key not in known:
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.75)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"--set {key}: no such config key{hint} (top-level keys: "
                          f"{', '.join(f.name for f in dataclasses.fields(HatchConfig))})")


def first_touched(stages: Sequence[str], key: str) -> int:
    """Index in `stages` of the first stage whose result depends on `key`."""
    head = key.split(".")[0]
    if head in WHOLE_RUN:
        return 0
    touched = {head} | ({"actor_sft", "grpo"} if key in ALSO_ACTOR else set())
    hits = [k for k, s in enumerate(stages) if s in touched]
    if not hits:
        raise ConfigError(f"--set {key}: touches no stage of this config (stages: {list(stages)})")
    return hits[0]


def _set(raw: dict, key: str, value: Any) -> dict:
    raw = copy.deepcopy(raw)
    parts = key.split(".")
    if len(parts) == 1:
        raw[key] = value
    else:
        section = raw.get(parts[0])
        raw[parts[0]] = {**(section if isinstance(section, dict) else {}), parts[1]: value}
    return raw


def label(key: str, value: Any) -> str:
    """The value's name in stage keys and directories: "pasta.grid=4" (characters a path cannot hold -> "_")."""
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", f"{key}={value}")


# ----------------------------------------------------------------------------------------- the plan
def configs(raw: dict, setting: Setting, seed: int, out: Path) -> list[HatchConfig]:
    """Each value's config for one seed, all checked (a ConfigError names the key and the value)."""
    out_cfgs = []
    for v in setting.values:
        try:
            out_cfgs.append(from_dict(HatchConfig, _set(seeded(raw, seed, out), setting.key, v), where="config"))
        except ConfigError as e:
            raise ConfigError(f"--set {setting.key}={v}: {e}") from None
    return out_cfgs


def plan(cfg: HatchConfig, setting: Setting) -> dict[str, list[tuple[str, str]]]:
    """{value label: its chain of (stage key, stage)}: the stages before the first touched one keyed as in the
    ablation (shared), the others with the value's label appended."""
    if "eval" not in cfg.stages:
        raise ConfigError("stages: a sweep compares evaluations: the config's stages must include eval")
    k = first_touched(cfg.stages, setting.key)
    chains = {}
    for v in setting.values:
        name = label(setting.key, v)
        chains[name] = [("+".join(cfg.stages[:i + 1]) + ("" if i < k else f"@{name}"), s)
                        for i, s in enumerate(cfg.stages)]
    if len(chains) != len(setting.values):
        raise ConfigError(f"--set {setting.key}: two values have the same name in paths ({list(chains)})")
    return chains


def _check_same_sweep(out: Path, asked: dict) -> None:
    saved = read_json(out / "sweep.json")
    if saved is not None and saved != asked:
        raise ConfigError(f"{out} holds a sweep of {saved['key']} over {saved['values']} (seeds {saved['seeds']}); "
                          "use another --out or delete it")
    if saved is None:
        atomic_write_json(out / "sweep.json", asked)


def run_sweep(raw: dict, setting: Setting, out: str | Path, seeds: Sequence[int] = (0,),
              progress: Callable[[str], None] = print) -> dict:
    """Checks everything, then runs every value for every seed (shared stages once) and writes the table."""
    out = Path(out)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds: give distinct seeds, got {list(seeds)}")
    check_key(setting.key)
    per_seed = {s: configs(raw, setting, s, out) for s in seeds}       # every value checked, for every seed
    chains = plan(per_seed[seeds[0]][0], setting)
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        _check_same_sweep(out, {"key": setting.key, "values": [repr(v) for v in setting.values],
                                "seeds": list(seeds)})
    start = time.time()
    data_varies = setting.key.split(".")[0] in WHOLE_RUN
    for seed, cfgs in per_seed.items():
        run, model_dir, say = start_run(cfgs[0], progress)
        for cfg, (name, chain) in zip(cfgs, chains.items()):
            # the data are built once per seed unless the key changes them
            value_run = Run(cfg) if data_varies else run.with_config(cfg)
            run_chain(value_run, chain, model_dir, say, title=f"seed {seed} {name} ")
    table = dist.on_main(lambda: write_sweep(out, setting, chains, seeds))
    if dist.is_main():
        progress(f"hatch-vlm sweep: {len(chains)} values x {len(seeds)} seed(s) in {time.time() - start:.0f}s; "
                 f"table in {out / 'sweep.md'}")
    return table


# ----------------------------------------------------------------------------------------- the table
def write_sweep(out: Path, setting: Setting, chains: dict[str, list[tuple[str, str]]], seeds: Sequence[int]) -> dict:
    """sweep.md, sweep_table.json and sweep.png from each seed's evaluations."""
    from hatch_vlm.eval.benchmarks import BENCHMARKS

    table = collect(out, chains, seeds)
    benches = sorted({b for row in table.values() for b in row}, key=lambda b: (b == "Overall", b))
    heads = [BENCHMARKS[b].title if b in BENCHMARKS else b for b in benches]
    shared = [key for key, _ in next(iter(chains.values())) if "@" not in key]
    lines = [f"# Sweep of `{setting.key}`", "",
             f"Each benchmark's Avg (accuracy %, its official aggregation), mean ± std over seeds {list(seeds)} "
             "(sample std; one seed: no spread).", "",
             f"| {setting.key} | " + " | ".join(heads) + " |", "|---|" + "---|" * len(benches)]
    for v, name in zip(setting.values, chains):
        lines.append(f"| {v} | " + " | ".join(_cell(table[name].get(b)) for b in benches) + " |")
    lines += ["", f"Stages shared by every value (each ran once per seed): {', '.join(shared) or 'none'}."]
    if setting.key in PAPER_FINDINGS:
        lines += ["", PAPER_FINDINGS[setting.key]]
    picture = _plot(out / "sweep.png", setting, table, list(chains), benches, heads)
    if picture:
        lines += ["", f"![sweep]({picture.name})"]
    atomic_write_json(out / "sweep_table.json", {"key": setting.key, "values": list(setting.values),
                                                 "seeds": list(seeds), "by_value": table, "shared": shared,
                                                 "chains": {k: [key for key, _ in c] for k, c in chains.items()}})
    atomic_write_text(out / "sweep.md", "\n".join(lines) + "\n")
    return table


def _plot(path: Path, setting: Setting, table: dict, names: list[str], benches: list[str],
          heads: list[str]) -> Path | None:
    """Avg against the value, one line per benchmark, error bars = std over seeds."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in setting.values)
    xs = list(setting.values) if numeric else list(range(len(names)))
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for b, head in zip(benches, heads):
        means = [table[n].get(b, {}).get("mean") for n in names]
        stds = [table[n].get(b, {}).get("std") or 0.0 for n in names]
        pts = [(x, m, s) for x, m, s in zip(xs, means, stds) if m is not None]
        if pts:
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o",
                        capsize=3, label=head)
    if not numeric:
        ax.set_xticks(xs, [str(v) for v in setting.values])
    ax.set_xlabel(setting.key)
    ax.set_ylabel("accuracy % (Avg)")
    ax.set_title(f"sweep of {setting.key} (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
