"""A stage's numbers at the config's size from its measured variants: each value measured (a run at full
depth and the config's micro-batch) or extrapolated (fit.py), and the fit checked against the measurement
where both exist.

Step time at the config: generation (GRPO, fitted over depth) + the config's micro-batches per optimizer step x
one micro-batch's seconds (data wait, forward, backward; fitted over depth and micro-batch) + the optimizer's
own seconds (fitted over depth). The rehearsal runs one micro-batch per optimizer step (GRPO: one generation
round of the config's size), so a config with gradient accumulation A gets A micro-batches: marked
extrapolated when A > 1.
"""
from __future__ import annotations

import math

from .fit import extrapolate, fit_cost
from .stages import accumulation, generation_batch, micro_batch, uses_lora


def _steps(result: dict, warmup: int) -> list[dict]:
    steps = [s for s in result["steps"] if s.get("op_seconds") is None]
    return steps[warmup:] or steps


def steady_state(result: dict, warmup: int) -> dict:
    """One variant's steady-state numbers: the median over the steps after the warm-up (the profiled step
    excluded), the peak over every step (the warm-up's included: memory is not a steady-state quantity)."""
    steady = _steps(result, warmup)
    med = {key: _median([s[key] for s in steady]) for key in
           ("seconds", "generate_seconds", "optimizer_seconds", "data_seconds", "generated_tokens")}
    peak = max([s["peak_bytes"] for s in result["steps"]] or [result["after_peak"]])
    return {"step_seconds": med["seconds"], "generate_seconds": med["generate_seconds"],
            "optimizer_seconds": med["optimizer_seconds"], "data_seconds": med["data_seconds"],
            "generated_tokens": med["generated_tokens"], "peak": peak, "steady_steps": len(steady)}


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    if not xs:
        return math.nan
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def variant_row(v, warmup: int) -> dict:
    """One measured variant's steady-state numbers."""
    r = v.result
    st = steady_state(r, warmup)
    steady = st["steady_steps"]
    n_micro = r.get("n_micro", 1)
    peak, step, gen = st["peak"], st["step_seconds"], st["generate_seconds"]
    opt, data, tokens = st["optimizer_seconds"], st["data_seconds"], st["generated_tokens"]
    if not steady:                     # eval: one batch of generation, no trainer
        step = r["stage_seconds"]
        gen, opt, data, tokens = r["stage_seconds"], 0.0, 0.0, math.nan
    micro = (step - gen - opt) / n_micro if steady else 0.0
    profiled = [s for s in r["steps"] if s.get("op_seconds") is not None]
    op_share = profiled[-1]["op_seconds"] / profiled[-1]["seconds"] if profiled else None
    return {"label": v.label, "depth": [v.depth.text, v.depth.vision], "x": v.x, "micro_batch": v.micro_batch,
            "n_micro": n_micro, "peak": peak, "model_state": v.state_total, "rest": peak - v.state_total,
            "load_peak": r.get("load_peak"), "step_seconds": step, "micro_seconds": micro,
            "optimizer_seconds": opt, "generate_seconds": gen, "data_seconds": data,
            "generated_tokens": tokens,
            "generation_tokens_per_s": tokens / gen if gen and tokens == tokens and tokens else None,
            "op_share": op_share, "data_share": data / step if step else None,
            "visual_tokens": r.get("visual_tokens"), "text_tokens": r.get("text_tokens"),
            "loader_samples_per_s": r.get("loader_samples_per_s"),
            "baseline": r.get("peak_baseline", r.get("start_rss")),       # older results: the start's RSS
            "steady_steps": steady, "wall_seconds": r.get("wall_seconds"), "reused": bool(r.get("reused")),
            "probe_state": r.get("predicted"), "live_state": r.get("measured"), "bf16": r.get("bf16"),
            "threads": r.get("threads")}


def _value(rows, full_rows, key: str, b: int, default_x: float = 1.0) -> dict:
    """{value, how, fit} of `key` at (x = 1, b): measured when a full-depth row at b exists (the fit's value
    beside it, with its error), else extrapolated from the reduced rows."""
    pts = [(r["x"], r["micro_batch"], r[key]) for r in rows if r.get(key) is not None and r[key] == r[key]]
    out: dict = {}
    if pts:
        try:
            value, fit = extrapolate(pts, default_x, b)
            out.update(extrapolated=value, fit=fit.to_dict())
            # a deeper model does not use less memory or time than a shallower one at the same micro-batch: a
            # slope made negative by measurement noise is not extrapolated below what was measured
            floor = max((p[2] for p in pts if p[1] == b), default=None)
            if floor is not None and value < floor:
                out.update(extrapolated=floor, floored=f"fit gave {value:.4g}, below the measured {floor:.4g}")
        except ValueError as e:
            out["fit_error"] = str(e)
    measured = [r[key] for r in full_rows if r["micro_batch"] == b and r.get(key) is not None]
    if measured:
        out.update(value=measured[0], how="measured")
        if "extrapolated" in out and measured[0]:
            out["fit_error_pct"] = 100 * (out["extrapolated"] - measured[0]) / measured[0]
    elif "extrapolated" in out:
        out.update(value=out["extrapolated"], how="extrapolated")
    else:
        out.update(value=None, how="not measured")
    return out


def stage_summary(stage: str, cfg, hf_config, variants, warmup: int, state_full) -> dict:
    from .stages import largest_layer_bytes

    ran = [v for v in variants if v.result is not None]
    rows = [variant_row(v, warmup) for v in ran]
    reduced = [r for r, v in zip(rows, ran) if v.x < 1.0]
    full_rows = [r for r, v in zip(rows, ran) if v.x >= 1.0]
    b_cfg = micro_batch(cfg, stage)
    a_cfg = accumulation(cfg, stage)
    fit_rows = reduced or full_rows
    rest = _value(fit_rows, full_rows, "rest", b_cfg)
    micro = _value(fit_rows, full_rows, "micro_seconds", b_cfg)
    opt = _value(fit_rows, full_rows, "optimizer_seconds", b_cfg)
    gen = _value(fit_rows, full_rows, "generate_seconds", b_cfg)
    peak = {"value": None, "how": rest["how"]}
    if rest.get("value") is not None:
        peak["value"] = state_full.total + rest["value"]
        if "extrapolated" in rest:
            peak["extrapolated"] = state_full.total + rest["extrapolated"]
        measured = [r["peak"] for r in full_rows if r["micro_batch"] == b_cfg]
        if measured:
            peak.update(value=measured[0], how="measured")
            if "extrapolated" in peak:
                peak["fit_error_pct"] = 100 * (peak["extrapolated"] - measured[0]) / measured[0]
    n_micro_cfg = a_cfg if stage != "grpo" else max(1, generation_batch(cfg) // b_cfg)
    step = None
    if micro.get("value") is not None:
        step = (n_micro_cfg * micro["value"] + (opt.get("value") or 0.0) + (gen.get("value") or 0.0))
    how_step = "measured" if (micro["how"] == "measured" and n_micro_cfg == 1) else "extrapolated"
    tokens = [r for r in rows if r.get("generated_tokens") == r.get("generated_tokens") and r.get("generated_tokens")]
    gen_tokens = tokens[-1]["generated_tokens"] if tokens else None
    largest = (full_rows or rows)[-1] if rows else {}
    baseline = _median([r["baseline"] for r in rows if r.get("baseline") is not None])
    consume = (b_cfg * n_micro_cfg / step) if step else None
    loader = largest.get("loader_samples_per_s")
    workers = cfg.data.workers
    return {
        "stage": stage, "micro_batch": b_cfg, "accumulation": a_cfg, "micro_batches_per_step": n_micro_cfg,
        "lora": uses_lora(cfg, stage), "state_full": state_full.to_dict(),
        "largest_layer": largest_layer_bytes(hf_config),
        "peak": peak, "rest": rest, "micro_seconds": micro, "optimizer_seconds": opt, "generate_seconds": gen,
        "step_seconds": {"value": step, "how": how_step},
        "generation_tokens_per_s": ({"value": gen_tokens / gen["value"], "how": gen["how"]}
                                    if gen_tokens and gen.get("value") else None),
        "generated_tokens_per_round": gen_tokens,
        "visual_tokens": largest.get("visual_tokens"), "text_tokens": largest.get("text_tokens"),
        "op_share": {"value": largest.get("op_share"), "how": "measured", "at": largest.get("label")}
        if largest.get("op_share") is not None else None,
        "data_share": largest.get("data_share"),
        "loader_samples_per_s_per_worker": loader, "num_workers": workers,
        "samples_per_s_needed": consume,
        "process_baseline": baseline,
        "gpu_rest": (rest["value"] - baseline) if rest.get("value") is not None and baseline == baseline else None,
        "rest_fit_points": [(r["x"], r["micro_batch"], r["rest"]) for r in fit_rows],
        "variants": rows,
        "skipped": [{"label": v.label, "why": v.skipped or ("over budget" if v.over_budget else "")}
                    for v in variants if v.result is None],
        "mirror_check": [_mirror(r) for r in rows],
    }


def _mirror(row: dict) -> dict:
    """The stage's model state as the trainer held it (the probe, live tensors) against the meta-device
    prediction: equal to the byte when the prediction follows the code."""
    probe, live = row.get("probe_state"), row.get("live_state")
    out = {"label": row["label"], "predicted_total": row["model_state"]}
    if probe:
        out["trainer_total"] = probe["total"]
        out["equal"] = probe["total"] == row["model_state"]
    if live:
        out["live_total"] = sum(live.values())
    return out


__all__ = ["stage_summary", "steady_state", "variant_row", "fit_cost"]
