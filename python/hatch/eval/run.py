"""`hatch eval`: generate answers for a benchmark with the model's processor, score them (answers.py)
and write per-category accuracy as JSON + a markdown table laid out like the paper's Table 1."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hatch.data.record import Sample
from hatch.utils.io import atomic_write_json, atomic_write_text

from .answers import answer_span, score_answer
from .table import TITLES, Scored, category_of, markdown_table, summarise

log = logging.getLogger(__name__)


def load_benchmark(benchmark: str, path: str | Path, limit: int | None = None) -> list[Sample]:
    """Samples of a benchmark in its own format (DESIGN.md "Benchmarks"); `synthetic` reads a
    SPAR-7M-RGBD root written by `hatch data synth`."""
    from hatch.data import mindcube, mmsi, spar

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"hatch eval: --data {path} does not exist (benchmark {benchmark})")
    if benchmark == "spar-mv":
        samples, _ = spar.read_spar_bench(path)
        samples = [s for s in samples if s.num_views >= 2]  # the multi-view subset
    elif benchmark == "mindcube":
        samples, _ = mindcube.read_mindcube(path)
    elif benchmark == "mmsi":
        samples, _ = mmsi.read_mmsi(path)
    elif benchmark == "synthetic":
        from hatch.data.spar7m import read_spar_rgbd

        samples, _ = read_spar_rgbd(path, require_geometry=False)
    else:
        raise ValueError(f"hatch eval: unknown benchmark {benchmark!r} "
                         "(expected spar-mv, mindcube, mmsi or synthetic)")
    if not samples:
        raise ValueError(f"hatch eval: no readable {benchmark} records under {path}")
    return samples[:limit] if limit else samples


@dataclass
class EvalRecord:
    id: str
    benchmark: str
    category: str | None
    answer_type: str
    gold: str
    completion: str
    extracted: str
    score: float


def evaluate_samples(model, processor, samples: Sequence[Sample], benchmark: str, actor: bool = False,
                     max_new_tokens: int = 128, batch_size: int = 8,
                     progress: bool = True) -> list[EvalRecord]:
    """Greedy generation for every sample (ActoR prompt when `actor`), scored against the gold."""
    from hatch.actor.formatting import to_pil, user_message
    from hatch.actor.generation import generate_completions

    rows = [{"prompt": [user_message(s, actor=actor)], "images": to_pil(s.images)} for s in samples]
    completions = generate_completions(model, processor, rows, max_new_tokens=max_new_tokens,
                                       batch_size=batch_size, progress=progress)
    records = []
    for s, c in zip(samples, completions):
        raw = s.category if benchmark != "synthetic" else (s.task or s.category)
        records.append(EvalRecord(
            id=s.id, benchmark=benchmark, category=category_of(benchmark, raw),
            answer_type=s.answer_type, gold=str(s.answer), completion=c, extracted=answer_span(c),
            score=score_answer(c, s.answer, s.answer_type, num_options=len(s.options) or 26)))
    return records


def evaluate_split(model, processor, samples: Sequence[Sample], benchmark: str, actor: bool = False,
                   max_new_tokens: int = 128, batch_size: int = 8) -> list[EvalRecord]:
    """`evaluate_samples` with the questions split across the ranks of a multi-process launch: each rank
    answers its share, and every rank gets all the records back in the samples' order. A collective under a
    launch (every rank must call it); with one process, the same as `evaluate_samples`."""
    from hatch.utils import distributed as dist

    local = evaluate_samples(model, processor, dist.shard(samples), benchmark, actor=actor,
                             max_new_tokens=max_new_tokens, batch_size=batch_size, progress=dist.is_main())
    return dist.gather_list(local, len(samples))


def write_results(out_dir: str | Path, model_name: str, records: Sequence[EvalRecord]) -> dict:
    """results.json (summary + every record) and results.md (the table beside the paper's rows)."""
    out = Path(out_dir)
    summary = summarise([Scored(r.benchmark, r.category, r.score) for r in records])
    atomic_write_json(out / "results.json", {"model": model_name, "summary": summary,
                                             "records": [r.__dict__ for r in records]})
    lines = [f"# Evaluation of {model_name}", "", markdown_table({model_name: summary}), ""]
    for bench, row in summary.items():
        if bench == "Overall":
            continue
        cats = ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k not in ("Avg", "n"))
        lines.append(f"* {TITLES.get(bench, bench)}: {row['Avg']:.1f}% over {row['n']} questions ({cats})")
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    return summary


def evaluate_cli(args) -> dict:
    """`hatch eval`: on this rank's GPU when there is one; under `accelerate launch` the questions are split
    across the processes and rank 0 writes the results."""
    from hatch.models.loading import load_model_and_processor
    from hatch.utils import distributed as dist

    dist.init_distributed()
    model, processor = load_model_and_processor(args.model, device=dist.local_device(),
                                                min_pixels=getattr(args, "min_pixels", None),
                                                max_pixels=getattr(args, "max_pixels", None))
    records: list[EvalRecord] = []
    for bench, data in zip(args.benchmark, args.data):
        samples = load_benchmark(bench, data, args.limit)
        if dist.is_main():
            print(f"hatch eval: {len(samples)} {TITLES.get(bench, bench)} questions from {data}")
        records += evaluate_split(model, processor, samples, bench, actor=args.actor,
                                  max_new_tokens=args.max_new_tokens)
    out = Path(args.out) if args.out else Path(args.model) / "eval"

    def write() -> dict:
        summary = write_results(out, Path(args.model).name, records)
        print((out / "results.md").read_text())
        return summary

    summary = dist.on_main(write)
    dist.shutdown()
    return summary
