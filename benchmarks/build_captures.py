"""`hatch-vlm data build` on a generated Nerfstudio capture: frames per second and peak RSS, for two capture
lengths, to show memory does not grow with the number of frames (the build streams).

    OMP_NUM_THREADS=1 python -m benchmarks.build_captures --frames 500 2000 --out /tmp/captures_bench \
        --build-args "" --build-args "--frame-step 1" --md benchmarks/results/captures_build.md

The capture (the analytic room of tests/data/captures/_scene.py at 640x480, colour JPEG + uint16 mm depth
PNG, OpenGL poses walking around the room) is generated once for the largest count; smaller counts are
transforms.json files listing its first frames. Each build runs in its own process (the `hatch-vlm`
command), and its peak RSS is that process's own (os.wait4), so one run does not hide another.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def generate(root: Path, n: int, H: int, W: int) -> Path:
    from tests.data.captures._scene import orbit_poses, write_nerfstudio

    if (root / "transforms.json").is_file() and len(json.loads((root / "transforms.json").read_text())["frames"]) == n:
        return root
    return write_nerfstudio(root, orbit_poses(n, degrees_per_frame=1.5), H=H, W=W, color_scale=1)


def subset(full: Path, n: int, dest: Path) -> Path:
    meta = json.loads((full / "transforms.json").read_text())
    meta["frames"] = meta["frames"][:n]
    dest.mkdir(parents=True, exist_ok=True)
    for sub in ("images", "depth"):
        if not (dest / sub).exists():
            os.symlink(full / sub, dest / sub)
    (dest / "transforms.json").write_text(json.dumps(meta))
    return dest


def run_build(src: Path, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "hatch_vlm", "data", "build", "--from", "nerfstudio", str(src), "--out", str(out),
           "--overwrite", "--no-progress", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"build failed:\n{stdout}\n{stderr}")
    summary = json.loads((out / "captures" / f"build_{src.name}.json").read_text())
    return {"frames": summary["frames"]["seen"], "wall_s": wall, "frames_per_s": summary["frames"]["seen"] / wall,
            "peak_rss_mib": usage.ru_maxrss / 1024, "frames_sampled": summary["selection"]["frames_sampled"],
            "pairs_considered": summary["selection"]["pairs_considered"],
            "tuples_kept": summary["selection"]["tuples_kept"], "questions": summary["questions_total"],
            "frames_written": summary["frames_written"], "args": " ".join(extra) or "(defaults)"}


def markdown(rows: list[dict], H: int, W: int) -> str:
    import platform

    lines = ["# `hatch-vlm data build`: throughput and memory", "",
             f"Generated Nerfstudio capture, {W}x{H} colour JPEG + uint16 mm depth PNG per frame; "
             f"`python -m benchmarks.build_captures`; one process per build, `OMP_NUM_THREADS=1`; "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other jobs "
             f"(wall times are indicative).", "",
             "| frames | build args | wall (s) | frames/s | peak RSS (MiB) | frames sampled | pairs scored | "
             "tuples kept | questions | frames written |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['frames']} | {r['args']} | {r['wall_s']:.1f} | {r['frames_per_s']:.1f} | "
                     f"{r['peak_rss_mib']:.0f} | {r['frames_sampled']} | {r['pairs_considered']} | "
                     f"{r['tuples_kept']} | {r['questions']} | {r['frames_written']} |")
    lines += ["", "Frames/s counts every frame of the capture (frames passed over by `--frame-step` are read "
              "from transforms.json but never decoded). Peak RSS is the build process's own (interpreter, "
              "torch and the ops included); it stays flat as the capture grows because only a window of "
              "subsampled depth maps and the capped tuples are held."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", nargs="+", type=int, default=[500, 2000])
    ap.add_argument("--out", default="/tmp/captures_bench")
    ap.add_argument("--size", nargs=2, type=int, default=[480, 640], metavar=("H", "W"))
    ap.add_argument("--build-args", action="append", default=None,
                    help='extra `data build` arguments as one string ("--frame-step 1"); repeat for several; '
                         '"" = the defaults')
    ap.add_argument("--md", default=None)
    args = ap.parse_args(argv)
    H, W = args.size
    base = Path(args.out)
    t0 = time.perf_counter()
    full = generate(base / "full", max(args.frames), H, W)
    print(f"generated {max(args.frames)} frames in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for extra in [a.split() for a in args.build_args] if args.build_args else [[]]:
        for n in sorted(args.frames):
            src = full if n == max(args.frames) else subset(full, n, base / f"cap{n}")
            src_named = base / f"room{n}"
            if not src_named.exists():
                os.symlink(src, src_named)
            rows.append(run_build(src_named, base / "out", extra))
            print(json.dumps(rows[-1]), flush=True)
    text = markdown(rows, H, W)
    print(text)
    if args.md:
        Path(args.md).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
