"""Runs providers x cases and returns one row per (op, provider, shape, pass, device).

Each (case, provider) runs in its own Python process (`python -m benchmarks.harness --worker SPEC OUT`):
peak memory is then that case's alone (see benchmarks.measure), and a crash, an out-of-memory kill or a
hang of one case becomes an error row instead of ending the run.

Inside a worker, one repetition is a forward (timed, with its own peak memory) followed, for
differentiable ops, by a backward of its output (timed separately, its own peak): the forward row is the
forward time, the backward row the backward time, and the forward+backward row their sum per
repetition, with the peak above the state before the forward. Warm-up repetitions (the first one also
compiles, for naive_compiled) come first and are not counted; then `reps` repetitions, chosen so a case
takes about `target_s` seconds (within [min_reps, max_reps]); the median and the IQR are reported.

The naive reference is never started on a size whose estimated peak exceeds the memory limit
(`cases.naive_peak_estimate`, k calibrated by `calibrate` from small measured runs): such rows say
"skipped: naive needs ~X GiB > limit Y GiB".
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GIB = 1024 ** 3

ROW_FIELDS = [
    "op", "provider", "shape", "case", "suites", "pass", "device", "dtype", "status", "detail",
    "B", "V", "H", "W", "P", "D",
    "time_median_ms", "time_q25_ms", "time_q75_ms", "time_iqr_ms", "time_min_ms", "reps", "warmup_reps",
    "first_call_s", "peak_mem_bytes", "peak_mem_median_bytes", "naive_est_peak_bytes", "mem_method",
    "machine", "cpu", "gpu", "num_threads", "torch", "cuda", "hatch_commit", "python", "timestamp",
]


@dataclass
class Settings:
    """How hard to measure. `quick` is for checking the harness, not for numbers."""
    target_s: float = 4.0          # time budget of the counted repetitions of one (case, provider)
    min_reps: int = 3
    max_reps: int = 25
    warmup: int = 1                # warm-up repetitions (naive_compiled gets one more: the compile)
    naive_limit_gib: float = 12.0  # never start naive on a size estimated above this
    case_timeout_s: float = 900.0  # a worker running longer is killed and reported as an error
    threads: int = 0               # torch intra-op threads in the workers (0: torch's default, all cores)

    @staticmethod
    def quick() -> Settings:
        # One thread: on a busy shared machine, OpenMP threads of tiny ops wait on each other
        # (measured: 3 ms ops taking 1.2 s with 2 threads at load 11).
        return Settings(target_s=0.3, min_reps=2, max_reps=5, warmup=1, naive_limit_gib=1.0,
                        case_timeout_s=300.0, threads=1)


# ------------------------------------------------------------------------------------- environment
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("-dirty" if dirty else "") if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device: str) -> dict:
    """Machine, CPU/GPU, versions and commit: attached to every row."""
    import torch

    gpu = ""
    if device == "cuda" and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    return {
        "machine": platform.node(),
        "cpu": f"{_cpu_name()} ({len(os.sched_getaffinity(0))} cores usable)",
        "gpu": gpu,
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
        "hatch_commit": _git_commit(),
        "python": platform.python_version(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ------------------------------------------------------------------------------------------ worker
def _status_of(exc: BaseException) -> tuple[str, str]:
    detail = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    if isinstance(exc, NotImplementedError):
        return "error: not implemented", detail[:300]
    if "out of memory" in str(exc).lower():
        return "error: out of memory", detail[:300]
    return f"error: {type(exc).__name__}", detail[:300]


def _backward(out, grad_out):
    if out.dim() == 0:
        out.backward()
    else:
        out.backward(grad_out)


def _measure(fn, inputs, case, device, memory, settings: Settings, extra_warmup: int) -> dict:
    """Warm-up, then timed repetitions; returns per-pass lists of seconds and peak bytes."""
    from .measure import run_phase

    differentiable = "backward" in case.passes or "forward+backward" in case.passes
    leaves = inputs.leaf if isinstance(inputs.leaf, list) else [inputs.leaf] if inputs.leaf is not None else []

    def one_rep():
        for leaf in leaves:
            leaf.grad = None
        fw = run_phase(lambda: fn(*inputs.args), device, memory)
        rec = {"forward": (fw.seconds, fw.peak_bytes)}
        out = fw.output
        if differentiable:
            b = run_phase(lambda: _backward(out, inputs.grad_out), device, memory)
            live_after_forward = b.base - fw.base      # saved graph + output
            rec["backward"] = (b.seconds, b.peak_bytes)
            rec["forward+backward"] = (fw.seconds + b.seconds,
                                       max(fw.peak_bytes, live_after_forward + b.peak_bytes))
        return rec

    t0 = time.perf_counter()
    first = None
    warm = (settings.warmup if case.warmup is None else case.warmup) + extra_warmup
    for i in range(warm):
        rec = one_rep()
        if i == 0:
            first = time.perf_counter() - t0
    if warm:
        per_rep = rec["forward+backward" if differentiable else "forward"][0]
        reps = max(settings.min_reps,
                   min(settings.max_reps, math.ceil(settings.target_s / max(per_rep, 1e-6))))
    else:
        reps = settings.min_reps
    runs = [one_rep() for _ in range(reps)]
    return {"first_call_s": first, "warmup_reps": warm, "reps": reps, "runs": runs}


def run_worker(spec: dict) -> list[dict]:
    """Measure one (case, provider) in this process; returns its rows (one per pass)."""
    import torch

    import hatch_ext  # noqa: F401  (loads the ops; an import failure is reported per row below)

    from . import providers
    from .cases import Case, build_inputs
    from .measure import memory_tracker, summarize

    case = Case.from_dict(spec["case"])
    provider = providers.get(spec["provider"])
    device = torch.device(spec["device"])
    settings = Settings(**spec["settings"])
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(0)
    base = {"status": "ok", "detail": "", "mem_method": "", "num_threads": torch.get_num_threads()}
    try:
        memory = memory_tracker(device)
        base["mem_method"] = memory.method
        if case.op == "vision_tower":
            fn, inputs = provider.make_with_inputs(case, device)
        else:
            inputs = build_inputs(case, device, spec.get("cache_dir"))
            fn = provider.make(case)
        extra = 1 if provider.name == "naive_compiled" else 0
        m = _measure(fn, inputs, case, device, memory, settings, extra)
    except Exception as exc:  # noqa: BLE001  (every failure becomes a row, never a crash)
        status, detail = _status_of(exc)
        if os.environ.get("HATCH_BENCH_TRACEBACK"):
            traceback.print_exc()
        return [{**base, "pass": p, "status": status, "detail": detail} for p in case.passes]

    rows = []
    for p in case.passes:
        secs = [r[p][0] for r in m["runs"]]
        mems = [r[p][1] for r in m["runs"]]
        t, mm = summarize(secs), summarize(mems)
        rows.append({**base, "pass": p,
                     "time_median_ms": t["median"] * 1e3, "time_q25_ms": t["q25"] * 1e3,
                     "time_q75_ms": t["q75"] * 1e3, "time_iqr_ms": t["iqr"] * 1e3,
                     "time_min_ms": t["min"] * 1e3, "reps": m["reps"], "warmup_reps": m["warmup_reps"],
                     "first_call_s": m["first_call_s"],
                     # the largest peak over the repetitions: what must fit in memory
                     "peak_mem_bytes": int(mm["max"]), "peak_mem_median_bytes": int(mm["median"])})
    return rows


# ------------------------------------------------------------------------------------ orchestration
def _case_fields(case, device: str) -> dict:
    return {"op": case.op, "shape": case.shape, "case": case.label, "suites": ",".join(case.suites),
            "device": device, "dtype": "float32" if case.op != "vision_tower" else "bfloat16",
            "B": case.B, "V": case.V, "H": case.H, "W": case.W, "P": case.P, "D": case.D}


def spawn(case, provider: str, device: str, settings: Settings, cache_dir: Path | None) -> list[dict]:
    """Run one (case, provider) in a fresh process; failures of the process become error rows."""
    spec = {"case": case.to_dict(), "provider": provider, "device": device,
            "settings": asdict(settings), "cache_dir": str(cache_dir) if cache_dir else None}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "python"), env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory(prefix="hatch-bench-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "rows.json"
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "benchmarks.harness", "--worker", str(spec_path), str(out_path)]
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                                  timeout=settings.case_timeout_s)
        except subprocess.TimeoutExpired:
            return [{"pass": p, "status": "error: timeout",
                     "detail": f"worker ran over {settings.case_timeout_s:.0f} s"} for p in case.passes]
        if proc.returncode != 0 or not out_path.exists():
            why = "killed (out of memory?)" if proc.returncode in (-9, 137) else f"rc={proc.returncode}"
            tail = (proc.stderr or "").strip().splitlines()[-1:] or [""]
            return [{"pass": p, "status": "error: worker died", "detail": f"{why} {tail[0]}"[:300]}
                    for p in case.passes]
        return json.loads(out_path.read_text())


def calibrate(device: str, settings: Settings, cache_dir: Path | None) -> dict:
    """Fit the naive memory model's k from small measured naive runs (fwd+bwd peak / unit size), with
    a 10% margin; falls back to cases.DEFAULT_K for a term whose run failed."""
    from .cases import CALIBRATION, DEFAULT_K, naive_units, prepare_inputs

    cal = Settings(target_s=0.0, min_reps=1, max_reps=1, warmup=1, case_timeout_s=settings.case_timeout_s,
                   threads=settings.threads)
    k = dict(DEFAULT_K)
    for term, case in CALIBRATION.items():
        if cache_dir:
            prepare_inputs(case, cache_dir)
        rows = spawn(case, "naive", device, cal, cache_dir)
        row = next((r for r in rows if r["pass"] == case.passes[-1] and r["status"] == "ok"), None)
        if row is None:
            continue
        u = naive_units(case)
        peak = row["peak_mem_bytes"]
        k[term] = 1.1 * ((peak - 2 * u["blk"]) / u["pix"] if term == "pix" else peak / u["blk"])
    return k


def run_cases(cases, device: str, settings: Settings, cache_dir: Path, naive_k: dict | None = None,
              progress: bool = True) -> list[dict]:
    """Every provider of every case on `device`; returns the rows (env fields included)."""
    from tqdm import tqdm

    from . import providers
    from .cases import naive_peak_estimate, prepare_inputs

    import torch

    env = environment(device)
    dev = torch.device(device)
    rows = []
    jobs = [(c, p) for c in cases for p in c.providers]
    bar = tqdm(jobs, desc=f"benchmarks ({device})", unit="run", disable=not progress)
    prepared = set()
    for case, name in bar:
        bar.set_postfix_str(f"{case.op} {case.label} {name}"[:60])
        fields = {**_case_fields(case, device), "provider": name, **env}
        est = naive_peak_estimate(case, naive_k)
        fields["naive_est_peak_bytes"] = est
        provider = providers.get(name)
        reason = provider.skip_reason(case, dev)
        if reason is None and case.cuda_only and device != "cuda":
            reason = "CUDA only"
        if reason is None and provider.naive_memory and est is not None and \
                est > settings.naive_limit_gib * GIB:
            reason = f"naive needs ~{est / GIB:.1f} GiB > limit {settings.naive_limit_gib:g} GiB"
        if reason is not None:
            rows += [{**fields, "pass": p, "status": f"skipped: {reason}"} for p in case.passes]
            continue
        if (case.op, case.label) not in prepared:
            prepare_inputs(case, cache_dir)
            prepared.add((case.op, case.label))
        rows += [{**fields, **r} for r in spawn(case, name, device, settings, cache_dir)]
    return [{f: r.get(f) for f in ROW_FIELDS} for r in rows]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="benchmark worker (internal; use python -m benchmarks.report)")
    ap.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), required=True)
    args = ap.parse_args(argv)
    spec = json.loads(Path(args.worker[0]).read_text())
    rows = run_worker(spec)
    Path(args.worker[1]).write_text(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
