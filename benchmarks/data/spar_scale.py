"""SPAR-7M at real scale: index a generated 1M-record tree, and start `hatch-vlm train` on it.

    python -m benchmarks.data.spar_scale --out /tmp/spar_scale [--records 1000000] [--num-train 1000 10000 100000]

1. Writes a tree in the real layout (spar/scannet/{images,qa_jsonl}): a few scenes of real-size ScanNet frames
   (colour 1296x968 JPEG, depth 640x480 uint16 mm PNG, poses, intrinsics), shared by `--records` QA lines in
   the real record format (markers, `<image>` prefixes, option trailers) spread over multi-view and
   single-view tasks and answer folders, ~100k lines per file as in the release.
2. Indexes it: `select_records(num_train=10000, num_eval=256)` cold (no offset cache) and warm (cache), in a
   fresh process each, reporting records/s and the process's peak RSS.
3. For each `--num-train`: `hatch-vlm train` with the tiny model, `stages: [pasta]`, tasks [multi_view],
   `model.max_pixels` = 128*28*28, 2 DataLoader workers, a few steps: wall time from launch to the end of
   the first optimizer step, and the peak RSS of the main process and of the whole process tree (workers
   included), sampled every 50 ms.

Writes benchmarks/results/spar_scale.json and .md (or --results DIR). Targets (issue 12, 2-core CPU):
index >= 50k records/s, first step <= 60 s, peak RSS <= 3 GiB and not growing with num_train.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
TASKS = {  # task -> (kind, views, markers)
    "depth_prediction_oo_mv": ("select", 3, {"point_img_idx": [[0, 1, 2]], "red_point": [[420, 380]],
                                             "blue_point": [[610, 540]], "green_point": [[300, 700]]}),
    "depth_prediction_oc_mv": ("fill", 2, {"point_img_idx": [[0, 1]], "red_point": [[500, 500]],
                                           "blue_point": [[350, 620]]}),
    "position_matching": ("select", 2, {"bbox_img_idx": [[0]], "red_bbox": [[210, 240, 480, 610]]}),
    "view_change_infer": ("fill", 2, {}),
    "obj_spatial_relation_oo_mv": ("judge", 2, {"bbox_img_idx": [[0, 1]], "red_bbox": [[100, 150, 300, 400]],
                                                "blue_bbox": [[500, 420, 760, 800]]}),
    "depth_prediction_oc": ("sentence", 1, {"red_point": [[553, 397]], "blue_point": [[641, 838]]}),
}
FRAMES_PER_SCENE = 6
SCENES = [f"scene{k:04d}_00" for k in range(4)]


def _frames(images: Path) -> None:
    """Real-size ScanNet-like frames: a textured room (plane depth with structure), cameras a step apart."""
    from PIL import Image

    rng = np.random.default_rng(0)
    K_depth = np.array([[577.6, 0, 319.5, 0], [0, 577.6, 239.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    K_color = np.array([[1170.2, 0, 647.8, 0], [0, 1170.2, 483.8, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    yy, xx = np.mgrid[0:480, 0:640]
    for scene in SCENES:
        d = images / scene
        for sub in ("image_color", "image_depth", "pose", "intrinsic"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        np.savetxt(d / "intrinsic/intrinsic_depth.txt", K_depth, fmt="%f")
        np.savetxt(d / "intrinsic/intrinsic_color.txt", K_color, fmt="%f")
        for f in range(FRAMES_PER_SCENE):
            frame = 20 * f
            small = rng.integers(0, 255, (121, 162, 3), dtype=np.uint8)
            Image.fromarray(small).resize((1296, 968), Image.NEAREST).save(d / f"image_color/{frame}.jpg", quality=90)
            depth_m = 2.5 + 0.4 * np.sin(xx / 60.0 + f) + 0.002 * yy
            Image.fromarray((depth_m * 1000).astype(np.uint16)).save(d / f"image_depth/{frame}.png")
            pose = np.eye(4)
            a = 0.08 * f
            pose[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
            pose[:3, 3] = [0.15 * f, 0.0, 0.0]
            np.savetxt(d / f"pose/{frame}.txt", pose, fmt="%f")


def _record(i: int, task: str) -> str:
    kind, views, markers = TASKS[task]
    scene = SCENES[i % len(SCENES)]
    start = (i // len(SCENES)) % (FRAMES_PER_SCENE - views + 1)
    imgs = [f"{scene}/image_color/{20 * (start + v)}.jpg" for v in range(views)]
    q = "<image>\n" * views + f"[{i}] Considering the marked points, which is closer to the camera of image 1?"
    if kind == "select":
        q += "\nA. red point\nB. blue point\nC. green point\nD. same distance\n" \
             "Your answer can only include one of options A, B, C or D"
        a = "ABCD"[i % 4]
    elif kind == "fill":
        a = f"{1 + (i % 40) / 10:.1f}" if task != "view_change_infer" else "move_right:0.4,rotate_left:30"
    elif kind == "judge":
        a = "yes" if i % 2 else "no"
    else:
        a = f"The towel's central depth is estimated to be about {1 + i % 30 / 10:.1f} meters."
    rec = {"id": f"scannet_{task}_{kind}_{i}", "conversations": [{"from": "human", "value": q},
                                                                  {"from": "gpt", "value": a}],
           "image": imgs, "type": task,
           "depth": [p.replace("image_color", "image_depth").replace(".jpg", ".png") for p in imgs], **markers}
    return json.dumps(rec)


def build_tree(root: Path, records: int, per_file: int = 100_000) -> Path:
    marker = root / ".complete"
    if marker.is_file() and json.loads(marker.read_text())["records"] == records:
        return root
    images = root / "scannet" / "images"
    _frames(images)
    tasks = list(TASKS)
    qa = root / "scannet" / "qa_jsonl" / "train"
    written, t = 0, 0
    while written < records:
        task = tasks[t % len(tasks)]
        kind = TASKS[task][0]
        n = min(per_file, records - written)
        d = qa / task / kind
        d.mkdir(parents=True, exist_ok=True)
        with open(d / f"{kind}_{n}_{t}.jsonl", "w") as fh:
            fh.write("\n".join(_record(written + k, task) for k in range(n)) + "\n")
        written += n
        t += 1
    marker.write_text(json.dumps({"records": records}))
    return root


# --------------------------------------------------------------------------------------- measuring
def _tree_rss(pid: int) -> tuple[int, int]:
    """(RSS of pid, RSS summed over pid and its descendants), bytes."""
    kids: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p.name))

    def rss(q: int) -> int:
        try:
            for line in Path(f"/proc/{q}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    total, stack = 0, [pid]
    while stack:
        q = stack.pop()
        total += rss(q)
        stack.extend(kids.get(q, []))
    return rss(pid), total


def run_measured(cmd: list[str], env=None) -> dict:
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    peak = {"main": 0, "tree": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            main, tree = _tree_rss(proc.pid)
            peak["main"] = max(peak["main"], main)
            peak["tree"] = max(peak["tree"], tree)
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, _ = proc.communicate()
    done.set()
    th.join()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-4000:]}")
    return {"launch_unix": start, "wall_s": time.time() - start, "peak_rss_main": peak["main"],
            "peak_rss_tree": peak["tree"], "output": out}


INDEX_SNIPPET = """
import json, sys, time
from hatch_vlm.data.spar7m import select_records
t = time.perf_counter()
sel = select_records(sys.argv[1], num_train=10000, num_eval=256, cache_dir=sys.argv[2] or None, progress=False)
dt = time.perf_counter() - t
print("RESULT " + json.dumps({"seconds": dt, "records": sel.num_records, "train": len(sel.train),
      "held_out": len(sel.held_out), "cached_files": sel.cached_files, "skipped": sel.summary.skipped}))
"""


def bench_index(root: Path, cache: Path) -> list[dict]:
    rows = []
    for label, cache_dir in (("cold (text pass, writes the cache)", cache), ("warm (offsets from the cache)", cache),
                             ("no cache", "")):
        if label.startswith("cold") and cache.exists():
            import shutil

            shutil.rmtree(cache)
        r = run_measured([sys.executable, "-c", INDEX_SNIPPET, str(root), str(cache_dir)])
        res = json.loads(next(l for l in r["output"].splitlines() if l.startswith("RESULT "))[7:])
        rows.append({"case": label, **res, "records_per_s": res["records"] / res["seconds"],
                     "peak_rss_main": r["peak_rss_main"], "process_wall_s": r["wall_s"]})
        print(f"index {label}: {res['records']} records in {res['seconds']:.2f}s "
              f"({rows[-1]['records_per_s']:,.0f}/s), peak RSS {r['peak_rss_main'] / 2**20:.0f} MiB", flush=True)
    return rows


def bench_train(root: Path, out: Path, cache: Path, num_train: int, steps: int) -> dict:
    import yaml

    run_dir = out / f"train_{num_train}"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    cfg = {"model": {"path": "tiny", "max_pixels": 128 * 28 * 28}, "output_dir": str(run_dir), "stages": ["pasta"],
           "data": {"kind": "spar", "path": str(root), "tasks": ["multi_view"], "num_train": num_train,
                    "num_eval": 16, "index_cache": str(cache), "num_workers": 2},
           "pasta": {"max_steps": steps, "per_device_train_batch_size": 8, "logging_steps": 1, "plot": False,
                     "warmup_steps": 0}}
    path = out / f"train_{num_train}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    r = run_measured([sys.executable, "-m", "hatch_vlm.cli", "train", "--config", str(path)], env=env)
    metrics = json.loads((run_dir / "stages" / "pasta" / "work" / "metrics.json").read_text())
    row = {"num_train": num_train, "first_step_s": metrics["first_step_unix"] - r["launch_unix"],
           "steps": metrics["steps"], "wall_s": r["wall_s"], "peak_rss_main": r["peak_rss_main"],
           "peak_rss_tree": r["peak_rss_tree"], "before_top1": metrics.get("before_top1"),
           "after_top1": metrics.get("after_top1"), "train_seconds": metrics["train_seconds"]}
    print(f"train num_train={num_train}: first step {row['first_step_s']:.1f}s after launch, peak RSS main "
          f"{row['peak_rss_main'] / 2**30:.2f} GiB, tree {row['peak_rss_tree'] / 2**30:.2f} GiB", flush=True)
    return row


def render(res: dict) -> str:
    gib = 2**30
    lines = ["# SPAR-7M at scale (issue 12)", "",
             f"Measured {res['date']} on {res['machine']}; tree: {res['records']:,} QA records (real layout, "
             f"{len(SCENES)} scenes of real-size frames shared). Command: `{res['command']}`.", "",
             "## Index (select 10k train + 256 held-out; a fresh process each)", "",
             "| case | records | seconds | records/s | peak RSS | target |", "|---|---|---|---|---|---|"]
    for r in res["index"]:
        lines.append(f"| {r['case']} | {r['records']:,} | {r['seconds']:.2f} | {r['records_per_s']:,.0f} | "
                     f"{r['peak_rss_main'] / 2**20:.0f} MiB | >= 50,000/s: "
                     f"{'PASS' if r['records_per_s'] >= 50_000 else 'MISS'} |")
    lines += ["", "## `hatch-vlm train` (tiny model, stages [pasta], tasks [multi_view], max_pixels 128*28*28, "
              "2 workers)", "",
              "| num_train | first step after launch | peak RSS main | peak RSS with workers | targets |",
              "|---|---|---|---|---|"]
    for r in res["train"]:
        ok = r["first_step_s"] <= 60 and r["peak_rss_main"] <= 3 * gib
        lines.append(f"| {r['num_train']:,} | {r['first_step_s']:.1f} s | {r['peak_rss_main'] / gib:.2f} GiB | "
                     f"{r['peak_rss_tree'] / gib:.2f} GiB | {'PASS' if ok else 'MISS'} (<= 60 s, <= 3 GiB) |")
    rss = [r["peak_rss_main"] for r in res["train"]]
    if len(rss) > 1:
        lines += ["", f"Peak RSS spread over num_train: {(max(rss) - min(rss)) / 2**20:.0f} MiB "
                      f"({min(rss) / gib:.2f}-{max(rss) / gib:.2f} GiB)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="work directory (the tree is kept and reused)")
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--num-train", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    a = p.parse_args(argv)
    out = Path(a.out)
    root = out / "spar"
    t = time.time()
    build_tree(root, a.records)
    print(f"tree: {a.records:,} records under {root} ({time.time() - t:.0f}s)", flush=True)
    cache = out / "index_cache"
    res = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores, no GPU",
           "records": a.records, "command": "python -m benchmarks.data.spar_scale " + " ".join(argv or sys.argv[1:]),
           "index": bench_index(root, cache), "train": []}
    for n in a.num_train:
        res["train"].append(bench_train(root, out, cache, n, a.steps))
    rdir = Path(a.results)
    rdir.mkdir(parents=True, exist_ok=True)
    (rdir / "spar_scale.json").write_text(json.dumps(res, indent=1))
    (rdir / "spar_scale.md").write_text(render(res))
    print(render(res))
    return res


if __name__ == "__main__":
    main()
