"""`hatch-vlm data ...` commands: `register(subparsers)` adds them to the top-level `hatch-vlm` parser.

    hatch-vlm data synth --out DIR --num N [--views V] [--size S] [--seed K] [--bench-num M]
        N synthetic samples in the SPAR-7M-RGBD layout with DIR as spar/ (DIR/synthetic/images/<scene>/...,
        DIR/synthetic/qa_jsonl/train/<task>/<kind>/<kind>_<N>.jsonl), plus M further samples (a disjoint part
        of the same seeded stream) as benchmark files under DIR/benchmarks/, laid out as the downloads are
        (the places are the benchmark registry's: hatch_vlm.eval.benchmarks, `stand_in`).
    hatch-vlm data stats ROOT [--split S] [--check-files] [--json FILE]
        What a SPAR-7M download holds: records per source / task / answer folder, views per record,
        geometry and markers present, skipped records by reason.
    hatch-vlm data build --from nerfstudio|scannet|arkitscenes SRC --out DIR [--band LO HI] [--views 2 3] ...
        A posed RGB-D capture -> the SPAR-7M-RGBD layout under DIR (DIR/<source>/...): views chosen by
        measured cell overlap, label-free questions with SPAR's markers, a summary and a contact sheet
        (hatch_vlm.data.captures; docs/own_data.md).
    hatch-vlm data show SAMPLE --out PNG [--index I] [--grid G] [--top T]
        SAMPLE: a SPAR-7M-RGBD root (e.g. DIR above; --index picks the record) or "synth[:SEED]"
        (generates sample --index of that seed). Draws views, depth and the PaStA overlap lines.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# This module is a command-line front end: it belongs to the cli layer (tests/test_layers.py), above
# evaluation, whose benchmark registry says where each benchmark file goes.


def _workers(args) -> int:
    """--workers, else this machine's cores (at most 8); 1 where torch is loaded already (a process that
    imported it is not forked: hatch_vlm.data.synthetic.iter_samples)."""
    import os

    if args.workers is not None:
        return args.workers
    return 1 if "torch" in sys.modules else max(1, min(8, os.cpu_count() or 1))


def _synth(args) -> int:
    from tqdm import tqdm

    from hatch_vlm.eval.benchmarks import write_stand_ins

    from hatch_vlm.data.spar7m.writer import SparWriter, scene_files
    from hatch_vlm.data.synthetic import SceneConfig, iter_samples

    cfg = SceneConfig(views=args.views, size=args.size).validate()
    out = Path(args.out)
    if (out / "synthetic" / "qa_jsonl" / "train").exists():
        print(f"hatch-vlm data synth: {out / 'synthetic' / 'qa_jsonl' / 'train'} exists already; use a new --out",
              file=sys.stderr)
        return 2
    with SparWriter(out, source="synthetic", split="train") as writer:
        # rendered and encoded in `--workers` processes, written here in order (the same files whatever the
        # count): the image encoders were half of this process's time
        for s, files in tqdm(iter_samples(args.num, seed=args.seed, config=cfg, workers=_workers(args),
                                          then=scene_files), total=args.num, desc="synth", unit="sample",
                             disable=None):
            writer.add(s, files=files)
    if args.bench_num > 0:
        bench = list(tqdm(iter_samples(args.bench_num, seed=args.seed, config=cfg, start=args.num,
                                       workers=_workers(args)),
                          total=args.bench_num, desc="benchmarks", unit="sample", disable=None))
        write_stand_ins(bench, out / "benchmarks", workers=_workers(args))     # laid out as the downloads are
    print(f"hatch-vlm data synth: {args.num} samples under {out} (+{args.bench_num} benchmark samples)")
    return 0


def _show(args) -> int:
    from hatch_vlm.data.show import draw_sample

    src = str(args.sample)
    if src.startswith("synth"):
        from hatch_vlm.data.synthetic import SceneConfig, generate_sample

        seed = int(src.split(":", 1)[1]) if ":" in src else 0
        sample = generate_sample(args.index, seed, SceneConfig(views=args.views, size=args.size))
    else:
        from hatch_vlm.data.spar7m import iter_spar_rgbd

        sample = next((s for k, s in enumerate(iter_spar_rgbd(src, strict=True)) if k == args.index), None)
        if sample is None:
            print(f"hatch-vlm data show: {src} has no record {args.index}", file=sys.stderr)
            return 2
    out = draw_sample(sample, args.out, grid=args.grid, top=args.top)
    print(f"hatch-vlm data show: {sample.id} -> {out}")
    return 0


def _stats(args) -> int:
    from hatch_vlm.data.common import DataError
    from hatch_vlm.data.spar7m.stats import dataset_stats, format_stats, write_stats

    try:
        st = dataset_stats(args.root, split=args.split, tasks=args.tasks, check_files=args.check_files,
                           limit=args.limit, strict=args.strict)
    except DataError as e:
        print(f"hatch-vlm data stats: {e}", file=sys.stderr)
        return 2
    print(format_stats(st))
    if args.json:
        print(f"hatch-vlm data stats: wrote {write_stats(st, args.json)}")
    return 0


def _build(args) -> int:
    from hatch_vlm.data.captures.build import BuildConfig, build, format_summary
    from hatch_vlm.data.captures.select import SelectConfig
    from hatch_vlm.data.common import DataError

    try:
        sel = SelectConfig(band=tuple(args.band), sizes=tuple(args.views), max_tuples=args.max_tuples,
                           window=args.window, frame_step=args.frame_step, grid=args.grid, seed=args.seed).check()
        cfg = BuildConfig(fmt=args.fmt, src=args.src, out=args.out, source=args.source, scene=args.scene,
                          split=args.split, tasks=tuple(args.tasks), up=args.up,
                          ignore_distortion=args.ignore_distortion, overwrite=args.overwrite,
                          contact_sheet=args.contact_sheet, select=sel)
        summary = build(cfg, progress=not args.no_progress)
    except (DataError, ValueError) as e:
        print(f"hatch-vlm data build: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


def _add_build(sub) -> None:
    from hatch_vlm.data.captures.questions import TASKS
    from hatch_vlm.data.captures.select import SelectConfig

    d = SelectConfig()
    b = sub.add_parser("build", help="a posed RGB-D capture -> SPAR-7M-RGBD training data (docs/own_data.md)")
    b.add_argument("--from", dest="fmt", required=True, choices=["nerfstudio", "scannet", "arkitscenes"])
    b.add_argument("src", help="the capture: transforms.json's folder, a SensReader export, an ARKitScenes video")
    b.add_argument("--out", required=True, help="output directory (the spar/ level: DIR/<source>/...)")
    b.add_argument("--source", default="captures", help="source folder name under --out")
    b.add_argument("--scene", default=None, help="scene name (default: the capture folder's name)")
    b.add_argument("--split", default="train")
    b.add_argument("--tasks", nargs="+", default=list(TASKS), help="question tasks")
    b.add_argument("--band", nargs=2, type=float, default=list(d.band), metavar=("LOW", "HIGH"),
                   help="kept pairs' overlap, fraction of cells matched")
    b.add_argument("--views", nargs="+", type=int, default=list(d.sizes), help="views per tuple (2-4)")
    b.add_argument("--max-tuples", type=int, default=d.max_tuples, help="tuples kept per capture")
    b.add_argument("--window", type=int, default=d.window, help="sampled frames each frame is compared with")
    b.add_argument("--frame-step", type=int, default=d.frame_step, help="sample every k-th usable frame")
    b.add_argument("--grid", type=int, default=d.grid, help="cells per side for the overlap")
    b.add_argument("--seed", type=int, default=d.seed)
    b.add_argument("--up", default="default", help="world up: default (the format's), auto, +x -x +y -y +z -z")
    b.add_argument("--ignore-distortion", action="store_true", help="(nerfstudio) use distorted images as pinhole")
    b.add_argument("--overwrite", action="store_true", help="replace an earlier build of the same scene")
    b.add_argument("--contact-sheet", type=int, default=6, help="records on the contact sheet PNG (0: none)")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(func=_build)


def _positive(x: str) -> int:
    v = int(x)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {x}")
    return v


def register(subparsers) -> argparse.ArgumentParser:
    """Add `data synth`, `data build`, `data show` and `data stats` to a top-level `hatch-vlm` subparsers object."""
    p = subparsers.add_parser("data", help="synthetic data and dataset tools")
    sub = p.add_subparsers(dest="data_command", required=True)

    s = sub.add_parser("synth", help="generate synthetic multi-view samples (SPAR-7M-RGBD layout)")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--num", type=_positive, required=True, help="training samples")
    s.add_argument("--views", type=int, default=2, help="cameras per sample (2-4)")
    s.add_argument("--size", type=int, default=224, help="image side in pixels")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--bench-num", type=_positive, default=None,
                   help="extra samples written as benchmark files (default min(num, 100))")
    s.add_argument("--workers", type=_positive, default=None,
                   help="processes rendering scenes (default: the machine's cores, at most 8); the output is the "
                        "same for any count")
    s.set_defaults(func=lambda a: _synth(_fill_bench(a)))

    _add_build(sub)

    w = sub.add_parser("show", help="draw a sample's views, depth and cell overlaps to a PNG")
    w.add_argument("sample", help='a SPAR-7M-RGBD root directory, or "synth[:SEED]"')
    w.add_argument("--out", required=True, help="PNG to write")
    w.add_argument("--index", type=_positive, default=0, help="which record / synthetic index")
    w.add_argument("--grid", type=int, default=4, help="cells per side")
    w.add_argument("--top", type=int, default=8, help="overlap lines per view pair")
    w.add_argument("--views", type=int, default=2, help="(synth) cameras")
    w.add_argument("--size", type=int, default=224, help="(synth) image side")
    w.set_defaults(func=_show)

    t = sub.add_parser("stats", help="what a SPAR-7M(-RGBD) download holds, and which records are unusable")
    t.add_argument("root", help="the spar/ directory of the download, or one spar/<source>/")
    t.add_argument("--split", default=None, help="one qa_jsonl split (default: all)")
    t.add_argument("--tasks", nargs="+", default=None, help="task names and/or groups (multi_view, ...)")
    t.add_argument("--check-files", action="store_true", help="also check that every frame file exists")
    t.add_argument("--limit", type=_positive, default=None, help="stop after this many records")
    t.add_argument("--json", default=None, help="also write the statistics as JSON here")
    t.add_argument("--strict", action="store_true", help="stop at the first bad record, naming it")
    t.set_defaults(func=_stats)
    return p


def _fill_bench(args):
    if args.bench_num is None:
        args.bench_num = min(args.num, 100)
    return args


def main(argv=None) -> int:
    """Stand-alone entry (`python -m hatch_vlm.commands.data data synth ...`) for trying the commands."""
    parser = argparse.ArgumentParser(prog="hatch-vlm")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
