"""Same-run A/B of torch.ops.hatch.patch_overlap (CPU, 2 threads): the portable loop (as before this
change; HATCH_CPU_PORTABLE_OVERLAP=1) vs the AVX2 kernel, alternating, median of reps; core-ns per
pixel-pair = wall time x threads / (B V (V-1) H W).

    python benchmarks/results/overlap_ab_cpu.py [paper_reps] [large_reps]
"""
import os, sys, time, statistics, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from benchmarks import cases as C
import hatch_ext
torch.set_num_threads(2)
def run(label, B, V, H, W, grid, reps):
    s = C.scene(C.Case("patch_overlap", label, B=B, V=V, H=H, W=W, grid=grid), None)
    d, K, T = s["depth"], s["K"], s["cam_to_world"]
    f = lambda: torch.ops.hatch.patch_overlap(d, K, T, grid, grid, 0.05, 0.05, 1)
    res = {}
    ts = {"portable": [], "avx2": []}
    for rep in range(reps + 1):
        for mode in ("portable", "avx2"):
            os.environ["HATCH_CPU_PORTABLE_OVERLAP"] = "1" if mode == "portable" else "0"
            t = time.perf_counter(); out = f(); dt = time.perf_counter() - t
            if rep: ts[mode].append(dt)
            res[mode] = out
    assert torch.equal(res["portable"], res["avx2"])
    pp = B * V * (V - 1) * H * W
    ratios = [a / b for a, b in zip(ts["portable"], ts["avx2"])]
    line = f"{label} (B{B} V{V} {H}x{W} n{grid}, {d.dtype}, {reps} reps): "
    for m in ts:
        med = statistics.median(ts[m])
        line += f"{m} {med*1e3:.1f} ms = {med*2/pp*1e9:.2f} core-ns/pp; "
    line += f"speed-up median {statistics.median(ratios):.2f}x (per-rep ratios {min(ratios):.2f}-{max(ratios):.2f}); outputs identical"
    print(line, flush=True)
run("paper", 8, 4, 448, 448, 4, int(sys.argv[1]) if len(sys.argv) > 1 else 11)
run("large", 4, 8, 672, 672, 4, int(sys.argv[2]) if len(sys.argv) > 2 else 5)
