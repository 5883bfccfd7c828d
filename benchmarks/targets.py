"""The performance targets of issue 3, checked against the rows of one run (ratios side by side).

Each target names the rows it compares; the verdict is PASS or MISS with the measured ratio, or
"not measured" with the reason (a row skipped or failed, e.g. a kernel not implemented yet).
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable

from .cases import BIG

GIB = 1024 ** 3

BASELINE = "naive"


def find(rows: list[dict], op: str, case: str, provider: str, pass_: str, device: str) -> dict | None:
    for r in rows:
        if (r["op"], r["case"], r["provider"], r["pass"], r["device"]) == (op, case, provider, pass_, device):
            return r
    return None


def ok(r: dict | None) -> bool:
    return r is not None and r.get("status") == "ok"


def _why(name: str, r: dict | None) -> str:
    return f"{name}: {'no row' if r is None else r['status']}"


def time_ratio(base: dict, other: dict) -> float:
    """How many times faster `other` is than `base` (ratio of the medians)."""
    return base["time_median_ms"] / other["time_median_ms"]


# Peaks below this count as this much in ratios: the RSS method resolves a few hundred KiB at best (other
# small allocations of the process), so a 0.1 MiB peak must not make a 20000x "saving".
MEM_FLOOR = 1024 ** 2


def mem_ratio(base: dict, other: dict) -> float:
    """How many times less peak memory `other` needs than `base` (peaks floored at MEM_FLOOR)."""
    return max(base["peak_mem_bytes"], MEM_FLOOR) / max(other["peak_mem_bytes"], MEM_FLOOR)


@dataclass
class Verdict:
    verdict: str          # PASS | MISS | not measured
    measured: str         # the ratio (or the reason it could not be measured)


@dataclass
class Target:
    device: str
    text: str
    check: Callable[[list[dict], dict], Verdict]


def _ratio_target(op, case, pass_, other, kind, need, device) -> Callable:
    def check(rows, meta):
        h = find(rows, op, case, "hatch", pass_, device)
        b = find(rows, op, case, other, pass_, device)
        if not (ok(h) and ok(b)):
            return Verdict("not measured", "; ".join(_why(n, r) for n, r in (("hatch", h), (other, b))
                                                     if not ok(r)))
        x = time_ratio(b, h) if kind == "time" else mem_ratio(b, h)
        what = "faster" if kind == "time" else "less memory"
        return Verdict("PASS" if x >= need else "MISS", f"{x:.2f}x {what} (need >= {need:g}x)")
    return check


def _big_runs(device, need_gib) -> Callable:
    def check(rows, meta):
        h = find(rows, "patch_align", BIG, "hatch", "forward+backward", device)
        if not ok(h):
            return Verdict("not measured", _why("hatch", h))
        est = h.get("naive_est_peak_bytes") or 0
        good = est > need_gib * GIB
        return Verdict("PASS" if good else "MISS",
                       f"hatch ran ({h['shape']}, peak {h['peak_mem_bytes'] / GIB:.2f} GiB); naive estimated "
                       f"~{est / GIB:.1f} GiB (need > {need_gib} GiB)")
    return check


def overlap_bytes(row: dict) -> int:
    """Bytes patch_overlap must move at least: every depth map read once per target view (the V-1 other
    views) and the output M [B, V, V, P, P] written once (float32)."""
    B, V, H, W, P = row["B"], row["V"], row["H"], row["W"], row["P"]
    return 4 * (B * V * (V - 1) * H * W + B * V * V * P * P)


def _bandwidth_floor(device, within) -> Callable:
    def check(rows, meta):
        h = find(rows, "patch_overlap", "paper", "hatch", "forward", device)
        bw = meta.get("copy_bandwidth_Bps")
        if not ok(h) or not bw:
            return Verdict("not measured", _why("hatch", h) if not ok(h) else "no bandwidth measured")
        floor_ms = overlap_bytes(h) / bw * 1e3
        x = h["time_median_ms"] / floor_ms
        return Verdict("PASS" if x <= within else "MISS",
                       f"{x:.2f}x the floor ({floor_ms:.3f} ms = {overlap_bytes(h) / 1e6:.1f} MB at "
                       f"{bw / 1e9:.0f} GB/s copy bandwidth; need <= {within:g}x)")
    return check


def _tower_share(device, share) -> Callable:
    def check(rows, meta):
        h = find(rows, "patch_align", "paper", "hatch", "forward+backward", device)
        t = find(rows, "vision_tower", "qwen2.5-vl-3b", "transformers", "forward+backward", device)
        if not (ok(h) and ok(t)):
            return Verdict("not measured", "; ".join(_why(n, r) for n, r in (("hatch", h), ("tower", t))
                                                     if not ok(r)))
        x = h["time_median_ms"] / t["time_median_ms"]
        return Verdict("PASS" if x <= share else "MISS",
                       f"{100 * x:.2f}% of the tower's fwd+bwd ({h['time_median_ms']:.2f} ms vs "
                       f"{t['time_median_ms']:.1f} ms; need <= {100 * share:g}%)")
    return check


DENSE = "P1024 D1024"
TARGETS = [
    Target("cpu", "patch_overlap, paper scale: >= 20x faster than naive eager",
           _ratio_target("patch_overlap", "paper", "forward", "naive", "time", 20, "cpu")),
    Target("cpu", "patch_overlap, paper scale: >= 5x faster than compiled naive",
           _ratio_target("patch_overlap", "paper", "forward", "naive_compiled", "time", 5, "cpu")),
    Target("cpu", "patch_overlap, paper scale: <= 1/10 of naive's peak memory",
           _ratio_target("patch_overlap", "paper", "forward", "naive", "mem", 10, "cpu")),
    Target("cpu", "patch_align dense (B2 V4 P1024 D1024) fwd+bwd: >= 2x faster than naive eager",
           _ratio_target("patch_align", DENSE, "forward+backward", "naive", "time", 2, "cpu")),
    Target("cpu", "patch_align dense (B2 V4 P1024 D1024) fwd+bwd: <= 1/8 of naive's peak memory",
           _ratio_target("patch_align", DENSE, "forward+backward", "naive", "mem", 8, "cpu")),
    Target("cpu", "patch_align runs at a size where naive would exceed 24 GiB", _big_runs("cpu", 24)),
    Target("cuda", "patch_overlap, paper scale: within 3x of the memory-bandwidth floor",
           _bandwidth_floor("cuda", 3)),
    Target("cuda", "patch_align dense fwd+bwd: >= 3x faster than naive eager",
           _ratio_target("patch_align", DENSE, "forward+backward", "naive", "time", 3, "cuda")),
    Target("cuda", "patch_align dense fwd+bwd: faster than compiled naive",
           _ratio_target("patch_align", DENSE, "forward+backward", "naive_compiled", "time", 1, "cuda")),
    Target("cuda", "patch_align dense fwd+bwd: >= 10x less peak memory than naive eager",
           _ratio_target("patch_align", DENSE, "forward+backward", "naive", "mem", 10, "cuda")),
    Target("cuda", "PaStA loss (patch_align, paper scale) fwd+bwd <= 5% of a Qwen2.5-VL-3B vision tower's",
           _tower_share("cuda", 0.05)),
]


def evaluate(rows: list[dict], meta: dict, device: str) -> list[tuple[Target, Verdict]]:
    return [(t, t.check(rows, meta)) for t in TARGETS if t.device == device]
