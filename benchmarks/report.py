"""Benchmark report: every provider on the same inputs, forward / backward / forward+backward, as data.

    python -m benchmarks.report [--device cpu|cuda] [--quick] [--out benchmarks/results]
    python -m benchmarks.report --from-data benchmarks/results/results_cpu.json   # table + plots only

Writes, under --out: results_<device>.json (rows + run metadata) and results_<device>.csv (one row per
(op, provider, shape, pass, device)), report_<device>.md (targets with PASS/MISS and the measured ratios,
the results table with ratios against naive eager from the same run), plots/<device>_<suite>.png.
`--quick` shrinks every shape and the repetitions (checks the harness; its numbers mean nothing) and
writes *_quick files. `--update-readme` puts the table into benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import time
from pathlib import Path

from . import harness
from .cases import full_cases, quick_cases, select
from .harness import ROW_FIELDS, Settings

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
MARK_START, MARK_END = "<!-- results:start -->", "<!-- results:end -->"
NUMERIC = {"B", "V", "H", "W", "P", "D", "reps", "warmup_reps", "num_threads", "peak_mem_bytes",
           "peak_mem_median_bytes", "naive_est_peak_bytes", "time_median_ms", "time_q25_ms", "time_q75_ms",
           "time_iqr_ms", "time_min_ms", "first_call_s"}


def write_data(rows: list[dict], meta: dict, out: Path, stem: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    with open(out / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=ROW_FIELDS)
        w.writeheader()
        w.writerows(rows)
    return path


def read_data(path: Path) -> tuple[list[dict], dict]:
    """Rows and metadata from a results .json (or a .csv: rows only, numbers parsed back)."""
    path = Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        return data["rows"], data.get("meta", {})
    with open(path, newline="") as f:
        rows = []
        for r in csv.DictReader(f):
            for k in NUMERIC & r.keys():
                r[k] = None if r[k] in ("", None) else float(r[k])
            rows.append(r)
    return rows, {"device": rows[0]["device"] if rows else "cpu"}


def render(rows: list[dict], meta: dict, out: Path, stem: str, plots: bool = True) -> Path:
    from .render import markdown, plot_sweeps

    device = meta.get("device") or (rows[0]["device"] if rows else "cpu")
    prefix = device + ("_quick" if meta.get("quick") else "")
    paths = plot_sweeps(rows, out / "plots", device, prefix) if plots else []
    md = out / f"report_{stem.removeprefix('results_')}.md"
    md.write_text(markdown(rows, meta, paths, rel_to=out))
    return md


def update_readme(md_text: str, readme: Path = README) -> None:
    text = readme.read_text()
    if MARK_START not in text or MARK_END not in text:
        raise SystemExit(f"{readme} has no {MARK_START} ... {MARK_END} section to replace")
    head, rest = text.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    body = md_text.replace("](plots/", "](results/plots/")
    # Nest the report's headings under the README's "Latest results" (##).
    body = "\n".join("##" + line if line.startswith("#") else line for line in body.splitlines())
    readme.write_text(f"{head}{MARK_START}\n{body}\n{MARK_END}{tail}")


def gpu_memory_gib() -> float:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to torch")
    return torch.cuda.get_device_properties(0).total_memory / 1024 ** 3


def measure_bandwidth(device: str) -> float | None:
    if device != "cuda":
        return None
    import torch

    from .measure import copy_bandwidth

    return copy_bandwidth(torch.device("cuda"))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--quick", action="store_true", help="small shapes, few repetitions (harness check)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--from-data", type=Path, metavar="FILE",
                    help="regenerate the table and plots from a results .json/.csv; runs nothing")
    ap.add_argument("--ops", nargs="*", help="only these ops")
    ap.add_argument("--suites", nargs="*", help="only cases of these suites (paper dense sweep_image ...)")
    ap.add_argument("--providers", nargs="*", help="only these providers")
    ap.add_argument("--naive-limit-gib", type=float, help="never start naive above this estimated peak "
                    "(default: 12 GiB on CPU, 80%% of the GPU's memory on CUDA; quick: 1 GiB)")
    ap.add_argument("--target-s", type=float, help="seconds of counted repetitions per (case, provider)")
    ap.add_argument("--threads", type=int, help="torch threads per worker (default: all cores; quick: 1)")
    ap.add_argument("--notes", type=Path, metavar="FILE", help="markdown for the closing note (why targets "
                    "were missed); stored in the data file")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--update-readme", action="store_true", help="put the table into benchmarks/README.md")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_data:
        rows, meta = read_data(args.from_data)
        if args.notes:
            meta["notes"] = args.notes.read_text()
        out = args.out if "--out" in (argv or sys.argv) else args.from_data.parent
        md = render(rows, meta, out, args.from_data.stem, plots=not args.no_plots)
        print(md.read_text())
        if args.update_readme:
            update_readme(md.read_text())
        return 0

    if args.device == "cuda":
        gpu_memory_gib()  # exits with a clear message when no GPU is visible
    settings = Settings.quick() if args.quick else Settings()
    if args.naive_limit_gib is not None:
        settings.naive_limit_gib = args.naive_limit_gib
    elif args.device == "cuda" and not args.quick:
        settings.naive_limit_gib = 0.8 * gpu_memory_gib()
    if args.threads is not None:
        settings.threads = args.threads
    if args.target_s is not None:
        settings.target_s = args.target_s
    cases = select(quick_cases() if args.quick else full_cases(), args.ops, args.suites, args.providers)
    if not cases:
        raise SystemExit("no benchmark case matches --ops/--suites/--providers")

    t0 = time.time()
    cache = args.out / ".cache" / ("quick" if args.quick else "full")
    naive_k = harness.calibrate(args.device, settings, cache) \
        if any(p.startswith("naive") for c in cases for p in c.providers) else None
    rows = harness.run_cases(cases, args.device, settings, cache, naive_k)
    from dataclasses import asdict

    meta = {"device": args.device, "quick": args.quick, "settings": asdict(settings),
            "naive_k": {k: round(v, 2) for k, v in (naive_k or {}).items()},
            "copy_bandwidth_Bps": measure_bandwidth(args.device),
            "command": "python -m benchmarks.report " + " ".join(shlex.quote(a) for a in
                                                                   (argv if argv is not None else sys.argv[1:])),
            "duration_s": time.time() - t0,
            "notes": args.notes.read_text() if args.notes else ""}
    stem = f"results_{args.device}" + ("_quick" if args.quick else "")
    data = write_data(rows, meta, args.out, stem)
    md = render(rows, meta, args.out, stem, plots=not args.no_plots)
    print(md.read_text())
    print(f"\ndata: {data} (+ .csv); report: {md}")
    if args.update_readme:
        update_readme(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
