"""Turns the rows of a run (the data file) into the markdown report and the plots. Needs nothing but the
data, so `python -m benchmarks.report --from-data FILE` regenerates both without rerunning."""
from __future__ import annotations

import math
from pathlib import Path

from .targets import BASELINE, evaluate, find, mem_ratio, ok, time_ratio

MIB, GIB = 1024 ** 2, 1024 ** 3
PROVIDER_ORDER = ("hatch", "naive", "naive_compiled", "kornia", "transformers")
PASS_ORDER = ("forward", "backward", "forward+backward")
SWEEPS = {  # suite -> (op, pass, x label, x from row)
    "sweep_image": ("patch_overlap", "forward", "depth pixels per view (H x W)", lambda r: r["H"] * r["W"]),
    "sweep_P": ("patch_align", "forward+backward", "cells per view P", lambda r: r["P"]),
}


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each row plus `speedup` (naive time / its time) and `mem_saving` (naive peak / its peak), both
    against the naive eager row of the same op, case, pass and device in the same run (None where
    either is missing or not ok)."""
    out = []
    for r in rows:
        base = find(rows, r["op"], r["case"], BASELINE, r["pass"], r["device"])
        both = ok(r) and ok(base)
        out.append({**r, "speedup": time_ratio(base, r) if both else None,
                    "mem_saving": mem_ratio(base, r) if both else None})
    return out


def _bytes(b) -> str:
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return ""
    return f"{b / GIB:.2f} GiB" if b >= GIB else f"{b / MIB:.1f} MiB"


def _ms(x) -> str:
    if x is None:
        return ""
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def _sort_key(r):
    return (r["op"], r["case"], PASS_ORDER.index(r["pass"]) if r["pass"] in PASS_ORDER else 9,
            PROVIDER_ORDER.index(r["provider"]) if r["provider"] in PROVIDER_ORDER else 9)


def results_table(rows: list[dict]) -> list[str]:
    lines = []
    rows = sorted(with_ratios(rows), key=_sort_key)
    for op in dict.fromkeys(r["op"] for r in rows):
        lines += [f"### {op}", "",
                  "| case | shape | pass | provider | time median (ms) | IQR (ms) | speed vs naive | "
                  "peak mem | mem vs naive | status |",
                  "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
        for r in (r for r in rows if r["op"] == op):
            sp = f"{r['speedup']:.2f}x" if r["speedup"] is not None else ""
            ms = f"{r['mem_saving']:.2f}x less" if r["mem_saving"] is not None else ""
            if r["provider"] == BASELINE and ok(r):
                sp = ms = "baseline"
            status = "" if ok(r) else r["status"]
            if r["provider"] == BASELINE and not ok(r) and r.get("naive_est_peak_bytes"):
                status += f" (estimate {_bytes(r['naive_est_peak_bytes'])})" if "naive needs" not in status \
                    else ""
            lines.append(f"| {r['case']} | {r['shape']} | {r['pass']} | {r['provider']} | "
                         f"{_ms(r['time_median_ms'])} | {_ms(r['time_iqr_ms'])} | {sp} | "
                         f"{_bytes(r['peak_mem_bytes'])} | {ms} | {status} |")
        lines.append("")
    return lines


def targets_table(rows: list[dict], meta: dict, device: str) -> list[str]:
    lines = [f"## Targets ({device})", ""]
    if meta.get("quick"):
        lines += ["*Quick run: the shapes are shrunk, so these verdicts say nothing about the targets; "
                  "they only show that the checks run.*", ""]
    lines += ["| target | verdict | measured |", "|---|---|---|"]
    for t, v in evaluate(rows, meta, device):
        lines.append(f"| {t.text} | **{v.verdict}** | {v.measured} |")
    return lines + [""]


def markdown(rows: list[dict], meta: dict, plots: list[Path] | None = None,
             rel_to: Path | None = None) -> str:
    device = meta.get("device") or (rows[0]["device"] if rows else "cpu")
    env = next((r for r in rows if ok(r)), rows[0] if rows else {})
    lines = [f"# hatch op benchmarks ({device}{', quick' if meta.get('quick') else ''})", "",
             f"* machine: `{env.get('machine', '')}`; CPU: {env.get('cpu', '')}; "
             f"torch threads: {env.get('num_threads', '')}" + (f"; GPU: {env['gpu']}" if env.get("gpu") else ""),
             f"* torch {env.get('torch', '')}" + (f", CUDA {env['cuda']}" if env.get("cuda") else "") +
             f", Python {env.get('python', '')}; hatch commit `{env.get('hatch_commit', '')}`; "
             f"{env.get('timestamp', '')}",
             f"* command: `{meta.get('command', '')}`"
             + (f"; took {meta['duration_s'] / 60:.1f} min" if meta.get("duration_s") else ""),
             f"* timing: median of `reps` repetitions after warm-up (CUDA events on GPU), spread = IQR; "
             f"peak memory: {env.get('mem_method', '') or 'see benchmarks/measure.py'}",
             f"* naive memory model k (calibrated this run): {meta.get('naive_k', {})}; naive runs skipped "
             f"above {meta.get('settings', {}).get('naive_limit_gib', '?')} GiB estimated",
             ""]
    if meta.get("copy_bandwidth_Bps"):
        lines += [f"* device-to-device copy bandwidth: {meta['copy_bandwidth_Bps'] / 1e9:.0f} GB/s", ""]
    lines += targets_table(rows, meta, device)
    lines += ["## Results", ""] + results_table(rows)
    missed = [t.text for t, v in evaluate(rows, meta, device) if v.verdict == "MISS"]
    if missed or meta.get("notes"):
        lines += ["## Closing note", ""]
        lines += [f"* missed: {m}" for m in missed] + [""]
        lines += [meta.get("notes") or "*Why: not written yet (`--notes FILE` adds it).*", ""]
    if plots:
        lines += ["## Plots", ""]
        for p in plots:
            rel = p.relative_to(rel_to) if rel_to else p
            lines.append(f"![{p.stem}]({rel.as_posix()})")
        lines.append("")
    return "\n".join(lines)


def plot_sweeps(rows: list[dict], out_dir: Path, device: str, prefix: str | None = None) -> list[Path]:
    """Time and peak memory against problem size, one line per provider, for each sweep suite; the
    naive memory estimate is drawn dotted (it is what skipped sizes are judged by)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suite, (op, pass_, xlabel, xof) in SWEEPS.items():
        sel = [r for r in rows if suite in (r.get("suites") or "").split(",") and r["op"] == op
               and r["pass"] == pass_ and r["device"] == device]
        if not sel:
            continue
        fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
        for prov in [p for p in PROVIDER_ORDER if any(r["provider"] == p for r in sel)]:
            pts = sorted(((xof(r), r) for r in sel if r["provider"] == prov and ok(r)), key=lambda t: t[0])
            if pts:
                xs = [x for x, _ in pts]
                ax_t.plot(xs, [r["time_median_ms"] for _, r in pts], "o-", label=prov)
                ax_t.fill_between(xs, [r["time_q25_ms"] for _, r in pts], [r["time_q75_ms"] for _, r in pts],
                                  alpha=0.2)
                ax_m.plot(xs, [r["peak_mem_bytes"] / MIB for _, r in pts], "o-", label=prov)
        est = sorted({(xof(r), r["naive_est_peak_bytes"]) for r in sel if r.get("naive_est_peak_bytes")})
        if est:
            ax_m.plot([x for x, _ in est], [e / MIB for _, e in est], "k:", label="naive (estimate)")
        for ax, ylabel in ((ax_t, f"{pass_} time (ms)"), (ax_m, "peak memory (MiB)")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor log labels overlap
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.set_xticks(sorted({xof(r) for r in sel}))
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        shape = sel[0]
        fig.suptitle(f"{op} ({suite}, B{shape['B']} V{shape['V']}, {device})")
        fig.tight_layout()
        path = out_dir / f"{prefix or device}_{suite}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
