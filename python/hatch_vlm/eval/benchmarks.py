"""The one list of benchmarks: everything that names, reads, writes, prompts, scores or tabulates a benchmark
reads this registry (the CLI's choices, the config's checks, the results table, the synthetic stand-in
files of `hatch-vlm data synth`).

    BENCHMARKS["spar-mv"].read(path, image_root=None, limit=None) -> Sequence[Sample]   (lazily decoded)
    BENCHMARKS["mindcube"].rules                     -> hatch_vlm.scoring.official.mindcube (official rules)
    BENCHMARKS["mmsi"].stand_in                      -> "mmsi/MMSI_bench.parquet" (where a download has it)
    SINGLE_IMAGE, PAPER_ROWS_SI                      -> the benchmarks of the paper's Table 4 and its rows
    write_stand_ins(samples, bench_dir)              -> [{"name", "path"}] synthetic files in those places

A benchmark with `rules` is scored twice (hatch_vlm.eval.run): the official rule on the raw reply, and the same
rule on the reply's `<answer>` span (what an ActoR completion means); the paper-style table uses the
second for ActoR prompts and the first otherwise. The synthetic benchmark has no official rules: our own
scorer (hatch_vlm.scoring.answers) gives both columns.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from collections.abc import Callable, Sequence

from hatch_vlm.data.record import Sample
from hatch_vlm.utils.processes import fork_pool

# Table 1 of the paper (accuracy %), per benchmark, in the table's column names.
# The paper's ablation, SPAR-Bench-MV Avg (Qwen2.5-VL-3B), by `hatch_vlm.pipeline.ablate` variant name.
PAPER_ABLATION = {"full": 53.6, "no_pasta": 52.0, "no_actor": 51.1, "qa_only": 51.5}
PAPER_ROWS = {
    "Qwen2.5-VL-3B (paper)": {
        "spar-mv": {"Low": 13.4, "Mid": 26.2, "High": 32.6, "Avg": 24.9},
        "mindcube": {"Around": 46.4, "Rotation": 34.5, "Among": 35.3, "Avg": 37.8},
        "mmsi": {"Pos": 27.8, "Att": 19.2, "Mot": 23.3, "MSR": 25.8, "Avg": 25.6},
        "Overall": 29.4,
    },
    "HATCH 3B (paper)": {
        "spar-mv": {"Low": 41.3, "Mid": 47.4, "High": 67.1, "Avg": 53.6},
        "mindcube": {"Around": 65.6, "Rotation": 31.0, "Among": 50.2, "Avg": 50.2},
        "mmsi": {"Pos": 30.5, "Att": 20.8, "Mot": 23.3, "MSR": 24.7, "Avg": 27.0},
        "Overall": 43.6,
    },
}
# The paper's "Overall" is the mean of these three benchmarks' averages.
OVERALL = ("spar-mv", "mindcube", "mmsi")
# Table 4 of the paper (accuracy %): single-image ability. SPAR-Bench-SI's Avg is the question-weighted mean
# (hatch_vlm.scoring.official.spar_bench_si), so it sits in that column; CV-Bench's Avg is the official overall.
SINGLE_IMAGE = ("spar-si", "cv-bench")
PAPER_ROWS_SI = {
    "Qwen2.5-VL-3B (paper)": {
        "spar-si": {"Low": 16.0, "High": 32.5, "Avg (question-weighted)": 23.9},
        "cv-bench": {"2D": 69.3, "3D": 72.2, "Avg": 70.7},
    },
    "HATCH 3B (paper)": {
        "spar-si": {"Low": 41.1, "High": 49.7, "Avg (question-weighted)": 45.2},
        "cv-bench": {"2D": 70.5, "3D": 78.4, "Avg": 74.5},
    },
}


@dataclass(frozen=True)
class Benchmark:
    name: str                               # the CLI / config name
    title: str                              # the table's name
    columns: tuple[str, ...]                # the table's category columns, in order
    rules_module: str | None                # hatch_vlm.scoring.official.<module> (None: our own scorer)
    reader: Callable[..., Sequence[Sample]]
    data_help: str                          # what --data points at
    image_root_help: str = ""
    aliases: dict[str, str] = field(default_factory=dict)   # official category name -> table column
    # Synthetic stand-ins (published benchmarks only): the file's place under a benchmarks directory, laid
    # out as the download is; which synthetic samples the format can hold; the writer of that format.
    stand_in: str = ""
    stand_in_select: Callable[[Sequence[Sample]], list[Sample]] | None = None
    stand_in_write: Callable[[Sequence[Sample], Path], object] | None = None

    @property
    def rules(self) -> ModuleType | None:
        return importlib.import_module(f"hatch_vlm.scoring.official.{self.rules_module}") if self.rules_module else None

    def read(self, path, image_root=None, limit: int | None = None) -> Sequence[Sample]:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"hatch-vlm eval: --data {path} does not exist (benchmark {self.name})")
        samples = self.reader(path, image_root)
        if len(samples) == 0:
            raise ValueError(f"hatch-vlm eval: no readable {self.name} records under {path}")
        return samples[:limit] if limit else samples

    def column(self, official_category: str | None) -> str | None:
        if official_category is None:
            return None
        return self.aliases.get(official_category, official_category)


def _read_spar_mv(path: Path, image_root):
    from hatch_vlm.data import spar

    samples, _ = spar.read_spar_bench(path, image_root=image_root)
    return samples.where(_is_multi_view) if hasattr(samples, "where") else [s for s in samples if _is_multi_view(s)]


def _is_multi_view(s: Sample) -> bool:
    from hatch_vlm.scoring.official import spar_bench

    row = s.meta.get("row") or {}
    if "img_type" in row:
        return spar_bench.is_multi_view(row)            # the published split (SPAR-Bench-MV)
    return s.num_views >= 2


def _read_spar_si(path: Path, image_root):
    from hatch_vlm.data import spar

    samples, _ = spar.read_spar_bench(path, image_root=image_root)
    return samples.where(_is_single_view)


def _is_single_view(s: Sample) -> bool:
    from hatch_vlm.scoring.official import spar_bench_si

    row = s.meta.get("row") or {}
    if "img_type" in row:
        return spar_bench_si.is_single_view(row)        # the published split (SPAR-Bench-SI)
    return s.num_views == 1


def _single_views(samples) -> list[Sample]:
    from hatch_vlm.data.synthetic import single_view

    return [v for v in (single_view(s) for s in samples) if v is not None]


def _spar_si_select(samples):
    return [s for s in _single_views(samples) if s.answer_type in ("mc", "numeric")]


def _read_cv_bench(path: Path, image_root):
    from hatch_vlm.data import cv_bench

    return cv_bench.read_cv_bench(path, image_root=image_root)[0]


def _cv_bench_select(samples):
    return [s for s in _single_views(samples) if s.answer_type == "mc" and 2 <= len(s.options) <= 6]


def _cv_bench_write(samples, path):
    from hatch_vlm.data import cv_bench

    return cv_bench.write_cv_bench(samples, path)


def _read_mindcube(path: Path, image_root):
    from hatch_vlm.data import mindcube

    return mindcube.read_mindcube(path, image_root=image_root)[0]


def _read_mmsi(path: Path, image_root):
    from hatch_vlm.data import mmsi

    return mmsi.read_mmsi(path)[0]


def _spar_select(samples):
    from hatch_vlm.data import spar

    return [s for s in samples if spar.bench_task(s)]     # the families it has a task for (spar.bench_task)


def _spar_write(samples, path):
    from hatch_vlm.data import spar

    return spar.write_spar_bench(samples, path)


def _mindcube_select(samples):
    from hatch_vlm.data import mindcube

    return [s for s in samples if s.category in mindcube.COUNTED]


def _mindcube_write(samples, path):
    from hatch_vlm.data import mindcube

    return mindcube.write_mindcube(samples, path)


def _mmsi_select(samples):
    return [s for s in samples if s.answer_type == "mc"]


def _mmsi_write(samples, path):
    from hatch_vlm.data import mmsi

    return mmsi.write_mmsi(samples, path)


def _read_synthetic(path: Path, image_root):
    from hatch_vlm.data.spar7m import read_spar_rgbd

    return read_spar_rgbd(path, require_geometry=False)[0]


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("spar-mv", "SPAR-Bench-MV", ("Low", "Mid", "High"), "spar_bench", _read_spar_mv,
              "SPAR-Bench as published (a directory with data/test-*.parquet, or one parquet / JSONL file); "
              "its multi_view rows", "images are embedded (or relative to this directory for JSONL)",
              aliases={"Middle": "Mid"}, stand_in="spar_bench/data/test-00000-of-00001.parquet",
              stand_in_select=_spar_select, stand_in_write=_spar_write),
    Benchmark("spar-si", "SPAR-Bench-SI", ("Low", "High"), "spar_bench_si", _read_spar_si,
              "SPAR-Bench as published (as for spar-mv); its single_view rows (the paper's Table 4)",
              "images are embedded (or relative to this directory for JSONL)",
              # the same file as spar-mv's: write_stand_ins writes both benchmarks' rows into it once
              stand_in="spar_bench/data/test-00000-of-00001.parquet",
              stand_in_select=_spar_si_select, stand_in_write=_spar_write),
    Benchmark("cv-bench", "CV-Bench", ("2D", "3D"), "cv_bench", _read_cv_bench,
              "the CV-Bench download directory (test_2d.parquet + test_3d.parquet, or test.parquet, or "
              "test_2d.jsonl + test_3d.jsonl with img/), or one of its files",
              "parquet: images are embedded; JSONL: `filename` is relative to the JSONL's directory",
              stand_in="cv_bench/test_2d.parquet", stand_in_select=_cv_bench_select,
              stand_in_write=_cv_bench_write),
    Benchmark("mindcube", "MindCube-Tiny", ("Around", "Rotation", "Among"), "mindcube", _read_mindcube,
              "MindCube_tinybench.jsonl (data/raw/ of the MindCube download)",
              "default: the JSONL's grandparent (data/), where other_all_image/ is",
              stand_in="mindcube/raw/MindCube_tinybench.jsonl",       # images under mindcube/other_all_image/
              stand_in_select=_mindcube_select, stand_in_write=_mindcube_write),
    Benchmark("mmsi", "MMSI-Bench", ("Pos", "Att", "Mot", "MSR"), "mmsi", _read_mmsi,
              "MMSI_bench.parquet (or a directory of parquet files)", "images are embedded",
              stand_in="mmsi/MMSI_bench.parquet", stand_in_select=_mmsi_select, stand_in_write=_mmsi_write),
    Benchmark("synthetic", "Synthetic", (), None, _read_synthetic,
              "a SPAR-7M-RGBD tree (e.g. from `hatch-vlm data synth`)"),
)}
NAMES = tuple(BENCHMARKS)


def write_stand_ins(samples: Sequence[Sample], bench_dir: str | Path, workers: int = 1) -> list[dict]:
    """Writes every published benchmark's format from synthetic `samples` (each gets the samples it can
    hold; one that gets none is not written) at its `stand_in` place under `bench_dir`, so the real readers
    and scorers can be run on them. Returns the written files as eval config entries {"name", "path"}.
    `workers` > 1: the files (independent of each other) are written by that many forked processes; a
    process that has imported torch is never forked (as synthetic.iter_samples)."""
    files, jobs, by_place = [], [], {}
    for b in BENCHMARKS.values():
        if b.stand_in:
            by_place.setdefault(b.stand_in, []).append(b)
    for place, benches in by_place.items():
        # Benchmarks that are splits of one published file (SPAR-Bench's MV and SI rows) share it: it is written
        # once with every split's rows, each benchmark's reader then takes its own.
        chosen = {b.name: b.stand_in_select(samples) for b in benches}
        rows = [s for b in benches for s in chosen[b.name]]
        if not rows:
            continue
        path = Path(bench_dir) / place
        jobs.append((benches[0].name, rows, path))
        files += [{"name": b.name, "path": str(path)} for b in benches if chosen[b.name]]
    if workers > 1 and len(jobs) > 1:
        with fork_pool(workers, len(jobs)) as pool:
            pool.map(_write_stand_in, jobs, chunksize=1)
    else:
        for job in jobs:
            _write_stand_in(job)
    return files


def _write_stand_in(job) -> None:
    name, rows, path = job
    BENCHMARKS[name].stand_in_write(rows, path)


def get(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r} (known: {', '.join(NAMES)})") from None
