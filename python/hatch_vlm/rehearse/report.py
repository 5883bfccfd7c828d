"""The rehearsal's report: `<out>/rehearsal_<name>.md` and `.json`, and `<out>/rehearsal_<name>_plan.png`.

Every number is marked: (m) measured on this machine at the config's size, (e) extrapolated from reduced
variants (fit.py), (x) exact accounting (no measurement needed: bytes of parameters and optimizer state).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import platform
from pathlib import Path

from .accounting import ENGINES, per_gpu
from .plan import HEADROOM_GIB, activations_at, plan_stage, smallest_change

GIB = 1024 ** 3
MARK = {"measured": "m", "extrapolated": "e", "not measured": "-"}
LORA_ALTERNATIVE = {"r": 64, "lora_alpha": 128, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def machine() -> dict:
    import torch
    import transformers
    import trl
    import peft

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import os

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem / GIB, 1),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "trl": trl.__version__, "peft": peft.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _gib(x) -> str:
    return "—" if x is None else f"{x / GIB:.2f}"


def _v(d, fmt="{:.1f}", scale=1.0) -> str:
    if not d or d.get("value") is None:
        return "—"
    return fmt.format(d["value"] / scale) + f" ({MARK.get(d.get('how'), '?')})"


def lora_state(rehearsal, stage: str):
    """The stage's exact state with LoRA (r 64 on q/k/v/o) instead of full fine-tuning, or None."""
    from .stages import stage_state, uses_lora

    if stage not in ("pasta", "qa_sft", "actor_sft") or uses_lora(rehearsal.cfg, stage):
        return None
    cfg = dataclasses.replace(rehearsal.cfg)
    if stage == "pasta":            # vision-only LoRA (the pasta section's lora_r, the family's tower targets)
        cfg.pasta = dataclasses.replace(cfg.pasta, tune="lora")
    else:
        # LoRA instead of full fine-tuning: parts the config freezes are frozen by LoRA anyway
        setattr(cfg, stage, dataclasses.replace(getattr(cfg, stage), lora=dict(LORA_ALTERNATIVE), freeze=[]))
    return stage_state(rehearsal.hf, cfg, stage)


def build_plan(summaries: list[dict], gpus: int, gpu_mem_gib: float, engine: str) -> dict:
    """The plan of every stage from the rehearsal's summaries alone (so a saved report can be planned again
    for other hardware: `hatch-vlm rehearse --replan REPORT.json`)."""
    from .accounting import ModelState

    plans = {}
    for s in summaries:
        if s["rest"].get("value") is None:
            plans[s["stage"]] = {"error": "no measurement"}
            continue
        alt = s.get("lora_alternative")
        lora = ModelState(**{k: v for k, v in alt.items() if k != "total"}) if alt else None
        plans[s["stage"]] = {
            "chosen": plan_stage(s, engine, gpus, gpu_mem_gib).to_dict(),
            "engines": {e: plan_stage(s, e, gpus, gpu_mem_gib).to_dict() for e in ENGINES},
            "smallest_change": smallest_change(s, engine, gpus, gpu_mem_gib, lora),
            "single_80": smallest_change(s, "ddp", 1, 80.0, lora) or {"change": "fits as configured"},
            "single_24": smallest_change(s, "ddp", 1, 24.0, lora) or {"change": "fits as configured"},
        }
    return plans


def accelerate_check(rehearsal) -> dict:
    """Our exact accounting against accelerate's memory estimator where they overlap: the model's bytes
    (`calculate_maximum_sizes`) and its float32 Adam training total (`estimate_training_usage`: 4 x the
    float32 size) against every parameter trained in float32 under ddp on one GPU."""
    from accelerate.commands.estimate import estimate_training_usage
    from accelerate.utils import calculate_maximum_sizes

    from .accounting import model_state
    from .architecture import meta_model

    model = meta_model(rehearsal.hf).float()
    total, _ = calculate_maximum_sizes(model)
    ours = model_state(model)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    usage = estimate_training_usage(total, "float32")
    return {"accelerate_model_bytes": int(total), "ours_weight_bytes": ours.weights, "buffer_bytes": buffers,
            "accelerate_fp32_adam_bytes": int(max(usage.values())),
            "ours_fp32_adam_bytes": ours.weights + ours.grads + ours.optimizer - 4 * ours.trainable_tensors,
            "note": "ours also counts AdamW's float32 step scalar per tensor (4 B each), left out here"}


def write_report(rehearsal, results, seconds: float) -> dict:
    o = rehearsal.opts
    name = o.name or rehearsal.source.name
    summaries = [r.summary for r in results]
    for s in summaries:
        alt = lora_state(rehearsal, s["stage"])
        s["lora_alternative"] = alt.to_dict() if alt is not None else None
    plans = build_plan(summaries, o.gpus, o.gpu_mem_gib, o.engine)
    report = {"name": name, "config": str(o.config), "model": str(rehearsal.source),
              "weights": "real" if rehearsal.real_weights else "random (architecture-only directory)",
              "tokenizer": "checkpoint" if (rehearsal.source / "tokenizer_config.json").is_file()
              else "stand-in (hatch_vlm.rehearse.architecture.stand_in_tokenizer)",
              "depth": [rehearsal.full.text, rehearsal.full.vision], "budget_bytes": rehearsal.budget,
              "steps": o.steps, "warmup": o.warmup, "long_step_s": o.long_step_s, "machine": machine(),
              "notes": rehearsal.notes,
              "rehearsal_seconds": seconds, "stages": summaries, "plan": plans,
              "plan_setting": {"gpus": o.gpus, "gpu_mem_gib": o.gpu_mem_gib, "engine": o.engine,
                               "headroom_gib": HEADROOM_GIB},
              "accelerate_check": accelerate_check(rehearsal)}
    out = Path(o.out)
    (out / f"rehearsal_{name}.json").write_text(json.dumps(report, indent=1, default=str))
    png = out / f"rehearsal_{name}_plan.png"
    plot_plan(report, png)
    (out / f"rehearsal_{name}.md").write_text(render_markdown(report, png.name))
    rehearsal.say(f"rehearse: report {out / f'rehearsal_{name}.md'} ({seconds / 60:.1f} min)")
    return report


def replan(report_path: str | Path, gpus: int, gpu_mem_gib: float, engine: str, say=print) -> Path:
    """The plan of a saved rehearsal for other hardware, without running anything: writes
    `<report>_<gpus>x<mem>gib_<engine>.md` (+ `.json`, `_plan.png`) beside it; returns the markdown's path."""
    from hatch_vlm.utils.config import ConfigError

    from .accounting import ENGINES as _ENGINES

    path = Path(report_path)
    if not path.is_file():
        raise ConfigError(f"--replan: no such report {path} (a rehearsal_<name>.json)")
    if engine not in _ENGINES:
        raise ConfigError(f"--engine: must be one of {', '.join(_ENGINES)}, got {engine!r}")
    rep = json.loads(path.read_text())
    if "stages" not in rep or "plan_setting" not in rep:
        raise ConfigError(f"--replan: {path} is not a rehearsal report (no stages / plan_setting)")
    rep["plan"] = build_plan(rep["stages"], gpus, gpu_mem_gib, engine)
    rep["plan_setting"] = {"gpus": gpus, "gpu_mem_gib": gpu_mem_gib, "engine": engine, "headroom_gib": HEADROOM_GIB}
    stem = f"{path.stem}_{gpus}x{gpu_mem_gib:g}gib_{engine}"
    (path.parent / f"{stem}.json").write_text(json.dumps(rep, indent=1, default=str))
    png = path.parent / f"{stem}_plan.png"
    plot_plan(rep, png)
    md = path.parent / f"{stem}.md"
    md.write_text(render_markdown(rep, png.name))
    say(f"rehearse: plan for {gpus} x {gpu_mem_gib:g} GiB, {engine}: {md}")
    return md


def _reuse_note(rep: dict) -> str:
    """Variants measured by an earlier rehearsal into the same OUT were reused (runner.run_variant): the
    whole time above is then not what measuring took, so say what it did."""
    rows = [r for s in rep["stages"] for r in s["variants"]]
    reused = [r for r in rows if r.get("reused")]
    if not reused:
        return ""
    took = sum(r["wall_seconds"] for r in rows if r.get("wall_seconds"))
    unknown = sum(1 for r in rows if not r.get("wall_seconds"))
    return (f" ({len(reused)} of {len(rows)} variants measured by an earlier run into the same directory and reused;"
            f" measuring all of them took {took / 60:.1f} min" + (f", {unknown} not timed" if unknown else "") + ")")


def _long_note(rep: dict) -> str:
    long = rep.get("long_step_s")
    if not long or not rep.get("warmup"):
        return ""
    return f" (1 where the warm-up step took over {long:g} s: 'steady steps' below)"


def render_markdown(rep: dict, png: str) -> str:
    m = rep["machine"]
    ps = rep["plan_setting"]
    lines = [f"# Rehearsal: {rep['name']}", "",
             f"`hatch-vlm rehearse --config {rep['config']}` — model `{rep['model']}` "
             f"({rep['depth'][0]} decoder layers, {rep['depth'][1]} vision blocks), {rep['weights']} weights, "
             f"tokenizer: {rep['tokenizer']}.", "",
             f"Machine: {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB){', ' + m['gpu'] if m['gpu'] else ''}; "
             f"Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, trl {m['trl']}, "
             f"peft {m['peft']}; {m['date']}. Memory budget {rep['budget_bytes'] / GIB:.1f} GiB; "
             f"{rep['warmup']} warm-up + {rep['steps']} measured optimizer steps per variant{_long_note(rep)}; "
             f"whole rehearsal "
             f"{rep['rehearsal_seconds'] / 60:.1f} min{_reuse_note(rep)}.", "",
             "Marks: (m) measured here at the config's size, (e) extrapolated from reduced-depth / smaller "
             "micro-batch variants, (x) exact accounting. Peaks are this process's (CPU: resident set, "
             "libraries included).", ""]
    for n in rep["notes"]:
        lines.append(f"* {n}")
    lines += ["", "## Per stage, at the config's size", "",
              "| stage | micro-batch × per step | peak here GiB | weights (x) | grads (x) | optimizer (x) | rest GiB | "
              "s / optimizer step | visual / text tokens per sample | generation tok/s | hatch ops share | "
              "data wait share | loader samples/s per worker (needed) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in rep["stages"]:
        st = s["state_full"]
        gen = s.get("generation_tokens_per_s")
        op = s.get("op_share")
        lines.append(
            f"| {s['stage']}{' (LoRA)' if s['lora'] else ''} | {s['micro_batch']} × {s['micro_batches_per_step']} | "
            f"{_v(s['peak'], '{:.2f}', GIB)} | {_gib(st['weights'])} | {_gib(st['grads'])} | "
            f"{_gib(st['optimizer'])} | {_v(s['rest'], '{:.2f}', GIB)} | {_v(s['step_seconds'])} | "
            f"{_num(s.get('visual_tokens'))} / {_num(s.get('text_tokens'))} | "
            f"{_v(gen) if gen else '—'} | "
            f"{'%.1f %%' % (100 * op['value']) + ' (m, ' + op['at'] + ')' if op else '—'} | "
            f"{_pct(s.get('data_share'))} | {_num(s.get('loader_samples_per_s_per_worker'), '{:.2f}')} "
            f"({_num(s.get('samples_per_s_needed'), '{:.2f}')}) |")
    lines += ["", "## Fit checks (extrapolated from reduced variants vs measured at full size)", "",
              "| stage | quantity | extrapolated | measured | error |", "|---|---|---|---|---|"]
    any_check = False
    for s in rep["stages"]:
        for key, scale, unit in (("peak", GIB, "GiB"), ("micro_seconds", 1, "s")):
            d = s.get(key) or {}
            if d.get("fit_error_pct") is not None:
                any_check = True
                lines.append(f"| {s['stage']} | {key} | {d['extrapolated'] / scale:.2f} {unit} | "
                             f"{d['value'] / scale:.2f} {unit} | {d['fit_error_pct']:+.1f} % |")
    if not any_check:
        lines.append("| — | no stage ran at full size here | | | |")
    lines += ["", "## Variants run", "",
              "| stage | variant (layers / vision blocks, micro-batch) | depth fraction | peak GiB | model state GiB | "
              "rest GiB | s / step | micro-batch s | optimizer s | generation s | steady steps | "
              "model state: trainer = prediction |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in rep["stages"]:
        mirror = {m_["label"]: m_ for m_ in s["mirror_check"]}
        for r in s["variants"]:
            mc = mirror.get(r["label"], {})
            lines.append(f"| {s['stage']} | {r['label']} | {r['x']:.3f} | {r['peak'] / GIB:.2f} | "
                         f"{r['model_state'] / GIB:.2f} | {r['rest'] / GIB:.2f} | {r['step_seconds']:.1f} | "
                         f"{r['micro_seconds']:.1f} | {r['optimizer_seconds']:.1f} | {r['generate_seconds']:.1f} | "
                         f"{r['steady_steps']} | {mc.get('equal', '—')} |")
        for sk in s["skipped"]:
            lines.append(f"| {s['stage']} | {sk['label']} | | not run: {sk['why']} | | | | | | | | |")
    lines += ["", f"## GPU plan: {ps['gpus']} × {ps['gpu_mem_gib']:g} GiB, {ps['engine']}", "",
              f"Per-GPU peak = model state under the engine (x) + activations / workspace (the rest above less "
              f"this process's library baseline) + {ps['headroom_gib']:g} GiB headroom (CUDA context, "
              "NCCL / cuBLAS workspaces, fragmentation: not measured here).", "",
              f"![plan]({png})", "",
              "| stage | weights | grads | optimizer | activations | total GiB | verdict | smallest change that fits |",
              "|---|---|---|---|---|---|---|---|"]
    for stage, p in rep["plan"].items():
        if "error" in p:
            lines.append(f"| {stage} | | | | | | {p['error']} | |")
            continue
        c = p["chosen"]
        change = p["smallest_change"]
        text = "—" if change is None else (change.get("change") or change.get("why"))
        lines.append(f"| {stage} | {_gib(c['weights'])} | {_gib(c['grads'])} | {_gib(c['optimizer'])} | "
                     f"{_gib(c['activations'])} | {c['total'] / GIB:.1f} | {'FITS' if c['fits'] else 'OVER'} | "
                     f"{text} |")
    lines += ["", "Every engine (total GiB per GPU, at the config's micro-batch):", "",
              "| stage | " + " | ".join(ENGINES) + " |", "|---|" + "---|" * len(ENGINES)]
    for stage, p in rep["plan"].items():
        if "error" in p:
            continue
        cells = [f"{p['engines'][e]['total'] / GIB:.1f} {'FITS' if p['engines'][e]['fits'] else 'OVER'}"
                 for e in ENGINES]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines += ["", "One GPU (DDP engine = plain single-process training):", "",
              "| stage | 1 × 80 GiB | 1 × 24 GiB |", "|---|---|---|"]
    for stage, p in rep["plan"].items():
        if "error" in p:
            continue
        lines.append(f"| {stage} | {_change(p['single_80'])} | {_change(p['single_24'])} |")
    ac = rep["accelerate_check"]
    lines += ["", "## Model state against accelerate's estimator", "",
              f"Model bytes in float32: accelerate {ac['accelerate_model_bytes']:,}, ours {ac['ours_weight_bytes']:,} "
              f"parameters + {ac['buffer_bytes']:,} buffers (accelerate counts the buffers too). "
              f"Float32 Adam training: accelerate {ac['accelerate_fp32_adam_bytes']:,}, ours "
              f"{ac['ours_fp32_adam_bytes']:,} ({ac['note']}).", ""]
    return "\n".join(lines) + "\n"


def _change(c: dict) -> str:
    return c.get("change") or c.get("why") or "—"


def _num(x, fmt="{:.0f}") -> str:
    return "—" if x is None or x != x else fmt.format(x)


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f} % (m)"


def plot_plan(rep: dict, path: Path) -> None:
    """Stacked per-GPU bars (weights / grads / optimizer / activations + headroom) per stage and engine, the
    GPU's memory as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s, p in rep["plan"].items() if "error" not in p]
    if not stages:
        return
    fig, ax = plt.subplots(figsize=(max(6, 1.9 * len(stages) * 1.2), 4.2))
    width = 0.2
    parts = (("weights", "#4c72b0"), ("grads", "#dd8452"), ("optimizer", "#55a868"), ("activations", "#c44e52"),
             ("headroom", "#bbbbbb"))
    for i, stage in enumerate(stages):
        for j, e in enumerate(ENGINES):
            p = rep["plan"][stage]["engines"][e]
            bottom = 0.0
            for key, color in parts:
                h = p[key] / GIB
                ax.bar(i + (j - 1.5) * width, h, width * 0.9, bottom=bottom, color=color,
                       label=key if (i == 0 and j == 0) else None)
                bottom += h
            ax.text(i + (j - 1.5) * width, bottom + 0.5, e, ha="center", va="bottom", fontsize=6, rotation=90)
    gpu = rep["plan_setting"]["gpu_mem_gib"]
    ax.axhline(gpu, color="k", ls="--", lw=1, label=f"{gpu:g} GiB GPU")
    ax.set_xticks(range(len(stages)))
    ax.set_xticklabels(stages)
    ax.set_ylabel("per-GPU memory, GiB")
    ax.set_title(f"{rep['name']}: {rep['plan_setting']['gpus']} GPUs — bars: ddp, zero2, zero3, fsdp")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["write_report", "render_markdown", "build_plan", "per_gpu", "activations_at"]
