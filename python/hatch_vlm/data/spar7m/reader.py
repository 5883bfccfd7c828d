"""Reading a (small) SPAR-7M tree record by record: for tools, tests and `hatch-vlm data show`.

Training does not read this way: it selects records with `hatch_vlm.data.spar7m.index.select_records` and
decodes them lazily (`hatch_vlm.data.spar7m.dataset.SparSamples`).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from ..common import ReadSummary, RecordError, handle
from ..record import Sample
from .frames import load_sample
from .layout import qa_files
from .records import parse_record


def iter_spar_rgbd(root, split: str | None = None, tasks: Iterable[str] | None = None, strict: bool = False,
                   require_geometry: bool = True, depth_scale: float | Mapping[str, float] | None = None,
                   summary: ReadSummary | None = None, draw_markers: bool = True) -> Iterator[Sample]:
    """Every record under `root` (spar/ or spar/<source>/) as a decoded Sample, in file order.

    Bad records are skipped and counted in `summary` by reason (or raise DataError with `strict`)."""
    summary = summary if summary is not None else ReadSummary(f"SPAR-7M {root}")
    for qa in qa_files(root, split, tasks):
        with open(qa.path, "rb") as fh:
            for n, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    rec = parse_record(raw, qa, n)
                    sample = load_sample(rec, depth_scale, require_geometry, draw_markers)
                except RecordError as e:
                    handle(e, summary, strict)
                    continue
                summary.read += 1
                yield sample


def read_spar_rgbd(root, split: str | None = None, tasks: Iterable[str] | None = None, strict: bool = False,
                   require_geometry: bool = True, depth_scale: float | Mapping[str, float] | None = None,
                   draw_markers: bool = True) -> tuple[list[Sample], ReadSummary]:
    """All of :func:`iter_spar_rgbd` in a list, with the summary (small trees only: every frame is decoded)."""
    summary = ReadSummary(f"SPAR-7M {root}")
    samples = list(iter_spar_rgbd(root, split, tasks, strict, require_geometry, depth_scale, summary,
                                  draw_markers))
    return samples, summary.log()


__all__ = ["iter_spar_rgbd", "read_spar_rgbd"]
