"""Predicted against measured on a GPU: a CPU rehearsal's plan for one GPU next to a rehearsal of the same
config run on that GPU (`hatch-vlm rehearse --compare PREDICTED.json MEASURED.json`).

What is compared, per stage: the tensors the plan puts on one GPU under plain single-process training (the
model state under ddp on 1 GPU + the activations; the plan's headroom is left out, as `max_memory_allocated`
does not see the CUDA context or the allocator's cache) against the GPU rehearsal's peak
(`torch.cuda.max_memory_allocated`, measured at the config's size or extrapolated there). A stage is compared
only where both reports ran it at the same micro-batch; otherwise the table says why it is not.
"""
from __future__ import annotations

import json
from pathlib import Path

from hatch_vlm.utils.config import ConfigError

from .plan import GIB, plan_stage


def _load(path: str | Path, role: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--compare: {role} report {p} does not exist (a rehearsal_<name>.json)")
    try:
        rep = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"--compare: {role} report {p} is not JSON ({e})") from None
    if not isinstance(rep, dict) or "stages" not in rep or "machine" not in rep:
        raise ConfigError(f"--compare: {role} report {p} is not a rehearsal report (no stages / machine)")
    return rep


def compare_reports(predicted: dict, measured: dict) -> list[dict]:
    """One row per stage of the predicted report: predicted bytes on one GPU, measured bytes, error, or why
    the stage is not compared. Refuses a `measured` report that was not made on a GPU."""
    gpu = (measured.get("machine") or {}).get("gpu")
    if not gpu:
        raise ConfigError("--compare: the measured report was not made on a GPU (its machine has no gpu): rerun "
                          "`hatch-vlm rehearse` with the same config on a CUDA host")
    by_stage = {s["stage"]: s for s in measured["stages"]}
    rows = []
    for s in predicted["stages"]:
        row = {"stage": s["stage"], "micro_batch": s["micro_batch"]}
        m = by_stage.get(s["stage"])
        if s["rest"].get("value") is None:
            row["why"] = "no prediction (the CPU rehearsal measured nothing for it)"
        elif m is None:
            row["why"] = "not in the measured report"
        elif m["micro_batch"] != s["micro_batch"]:
            row["why"] = f"micro-batch {s['micro_batch']} predicted, {m['micro_batch']} measured"
        elif (m.get("peak") or {}).get("value") is None:
            row["why"] = "no peak in the measured report"
        else:
            p = plan_stage(s, "ddp", 1, 0.0)
            row["predicted"] = p.total - p.headroom
            row["measured"] = m["peak"]["value"]
            row["measured_how"] = m["peak"].get("how", "?")
            row["error"] = row["predicted"] / row["measured"] - 1.0
        rows.append(row)
    return rows


def render(rows: list[dict], predicted: dict, measured: dict, names: tuple[str, str]) -> str:
    pm, mm = predicted["machine"], measured["machine"]
    lines = [f"# Predicted on {pm.get('cpu') or 'a CPU'} vs measured on {mm['gpu']}", "",
             f"Predicted: `{names[0]}` ({pm.get('date', '?')}, torch {pm.get('torch', '?')}); measured: "
             f"`{names[1]}` ({mm.get('date', '?')}, torch {mm.get('torch', '?')}).", "",
             "Per stage, one GPU, plain single-process training: the plan's model state + activations (its "
             "headroom left out) against `torch.cuda.max_memory_allocated` at the config's size ((m) measured, "
             "(e) extrapolated on the GPU too).", "",
             "| stage | micro-batch | predicted GiB | measured GiB | error |", "|---|---|---|---|---|"]
    for r in rows:
        if "why" in r:
            lines.append(f"| {r['stage']} | {r['micro_batch']} | — | — | not compared: {r['why']} |")
        else:
            mark = {"measured": "m", "extrapolated": "e"}.get(r["measured_how"], "?")
            lines.append(f"| {r['stage']} | {r['micro_batch']} | {r['predicted'] / GIB:.2f} | "
                         f"{r['measured'] / GIB:.2f} ({mark}) | {100 * r['error']:+.1f} % |")
    return "\n".join(lines) + "\n"


def compare(predicted_path: str | Path, measured_path: str | Path, say=print) -> Path:
    """Writes `compare_<predicted>_vs_<measured>.md` (+ `.json`) beside the measured report; returns the
    markdown's path."""
    pred, meas = _load(predicted_path, "predicted"), _load(measured_path, "measured")
    rows = compare_reports(pred, meas)
    mp = Path(measured_path)
    stem = f"compare_{Path(predicted_path).stem}_vs_{mp.stem}"
    (mp.parent / f"{stem}.json").write_text(json.dumps(rows, indent=1))
    md = mp.parent / f"{stem}.md"
    md.write_text(render(rows, pred, meas, (str(predicted_path), str(measured_path))))
    done = [r for r in rows if "error" in r]
    worst = max(done, key=lambda r: abs(r["error"]), default=None)
    say(f"rehearse: {len(done)} of {len(rows)} stages compared" +
        (f", largest error {100 * worst['error']:+.1f} % ({worst['stage']})" if worst else "") + f": {md}")
    return md
