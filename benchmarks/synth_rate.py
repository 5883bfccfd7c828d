"""`hatch-vlm data synth` throughput, start-up included: the command a user runs, timed end to end.

    python benchmarks/synth_rate.py [--num 60] [--views 2] [--size 224] [--repeat 3]

Runs the command with --workers 1 and with the default (this machine's cores), `--repeat` times each, in a
fresh directory each time; prints and writes benchmarks/results/synth_rate.md (median wall seconds and
samples/s; the 60 benchmark samples the command also writes by default are not counted as samples).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one(num: int, views: int, size: int, workers: int | None) -> float:
    out = Path(tempfile.mkdtemp(prefix="synth-rate-"))
    shutil.rmtree(out)
    cmd = [sys.executable, "-m", "hatch_vlm", "data", "synth", "--out", str(out), "--num", str(num), "--views",
           str(views), "--size", str(size)] + ([] if workers is None else ["--workers", str(workers)])
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    seconds = time.perf_counter() - t
    shutil.rmtree(out)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num", type=int, default=60)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "synth_rate.md"))
    a = ap.parse_args()
    rows = []
    for label, workers in (("--workers 1", 1), (f"default ({min(8, os.cpu_count() or 1)} workers)", None)):
        times = [one(a.num, a.views, a.size, workers) for _ in range(a.repeat)]
        med = statistics.median(times)
        rows.append((label, med, a.num / med, times))
        print(f"{label}: {med:.2f} s median of {a.repeat} -> {a.num / med:.1f} samples/s")
    lines = [f"# `hatch-vlm data synth --num {a.num} --views {a.views} --size {a.size}`: samples per second",
             "", f"Start-up included (a fresh process each run); {os.cpu_count()} cores, "
             f"{platform.processor() or platform.machine()}, Python {platform.python_version()}; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
             "Target: 20 samples/s (issue #26).", "",
             "| setting | median s | samples/s | runs (s) |", "|---|---|---|---|"]
    lines += [f"| {lab} | {med:.2f} | {rate:.1f} | {', '.join(f'{t:.2f}' for t in ts)} |"
              for lab, med, rate, ts in rows]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
