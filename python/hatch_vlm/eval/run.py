"""`hatch-vlm eval`: answer a benchmark's questions with a model, score them as the benchmark's official code
does, and write results.json / results.md in the paper's Table 1 layout.

Per question two scores are kept (hatch_vlm.eval.benchmarks):

* `official`: the benchmark's own rule (hatch_vlm.scoring.official.<benchmark>) on the raw reply;
* `answer_span`: the same rule on the reply's `<answer>…</answer>` span, what an ActoR completion
  (`<action>{…}</action><answer>C</answer>`) means: its action block breaks several official extractors.

The paper-style table uses `answer_span` for ActoR prompts (`--actor`) and `official` otherwise; both
tables are written. Prompts: ActoR's instruction with `--actor`, else the question with the benchmark's
official post-prompt.

Runs are resumable: every completion is appended (and flushed) to `<out>/completions/<benchmark>.jsonl` as
it is produced, after a first line recording the decoding settings; a rerun with the same settings skips
what is there, so a killed `hatch-vlm eval` resumes without regenerating and ends with the same results.
Decoding is greedy, with `max_new_tokens` and `repetition_penalty = 1.0` set explicitly (a checkpoint's
generation_config may carry another; it is reported). Under `accelerate launch` the missing questions are
split across the ranks (each appends to its own file) and rank 0 scores and writes.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Sequence

from hatch_vlm.data.record import Sample
from hatch_vlm.scoring.answers import answer_span, score_answer
from hatch_vlm.utils.io import atomic_write_json, atomic_write_text

from .benchmarks import BENCHMARKS, OVERALL, SINGLE_IMAGE, get
from .table import markdown_table, markdown_table_si

log = logging.getLogger(__name__)


def load_benchmark(benchmark: str, path: str | Path, limit: int | None = None, image_root=None) -> Sequence[Sample]:
    """A benchmark's questions in its own published format (lazily decoded), see hatch_vlm.eval.benchmarks."""
    return get(benchmark).read(path, image_root=image_root, limit=limit)


@dataclass
class EvalRecord:
    id: str
    benchmark: str
    index: int
    category: str | None          # the table's column (None: not counted, e.g. MindCube translation)
    answer_type: str
    gold: str
    completion: str
    extracted: str                # the <answer> span
    official: float               # the official rule on the raw reply
    answer_span: float            # the official rule on the <answer> span
    score: float                  # what the paper-style table uses (answer_span with ActoR prompts)
    row: dict | None = None       # the benchmark's record (no images), for the aggregation


# ------------------------------------------------------------------------------------------ prompts
def prompt_message(sample: Sample, benchmark: str, actor: bool) -> dict:
    """The user turn: the images, then the ActoR instruction (actor) or the question with the benchmark's
    official post-prompt."""
    from hatch_vlm.actor.formatting import question_text, user_message

    if actor:
        return user_message(sample, actor=True)
    rules = get(benchmark).rules
    if rules is None:
        return user_message(sample, actor=False)
    row = sample.meta.get("row") or {}
    if hasattr(rules, "build_prompt") and isinstance(row.get("question"), str):
        question = rules.build_prompt(row)      # a benchmark whose instruction is not a post-prompt (MindCube)
    else:
        question = row.get("question") if isinstance(row.get("question"), str) else question_text(sample)
        if rules.POST_PROMPT:
            question = f"{question}\n{rules.POST_PROMPT}"
    return {"role": "user", "content": [{"type": "image"} for _ in range(sample.num_views)] +
            [{"type": "text", "text": question}]}


# ------------------------------------------------------------------------------------------ scoring
def score_reply(benchmark: str, sample: Sample, completion: str) -> tuple[float, float, str | None]:
    """(official, answer_span, category) of one reply; never raises."""
    bench = get(benchmark)
    rules = bench.rules
    if rules is None:
        s = score_answer(completion, sample.answer, sample.answer_type, num_options=len(sample.options) or 26)
        return s, s, sample.task or sample.category or "all"
    row = _row(sample)
    official = _safe(rules.score, completion, row)
    # Ours: the official rule on the <answer> span, but no answer is never right (SPAR-Bench's select rule
    # counts an empty reply as a substring of every gold; the official column keeps that).
    text = answer_span(completion)
    span = _safe(rules.score, text, row) if text.strip() else 0.0
    try:
        category = bench.column(rules.category(row))
    except Exception:  # a malformed row is not counted rather than crashing the table
        category = None
    return official, span, category


def _row(sample: Sample) -> dict:
    row = dict(sample.meta.get("row") or {})
    row.setdefault("id", sample.id)
    return row


def _safe(fn, reply, row) -> float:
    try:
        v = float(fn(reply if isinstance(reply, str) else "", row))
        return v if 0.0 <= v <= 1.0 else 0.0
    except Exception:  # an official rule must never stop an evaluation
        return 0.0


def make_record(benchmark: str, index: int, sample: Sample, completion: str, actor: bool) -> EvalRecord:
    official, span, category = score_reply(benchmark, sample, completion)
    return EvalRecord(id=sample.id, benchmark=benchmark, index=index, category=category,
                      answer_type=sample.answer_type, gold=str(sample.answer), completion=completion,
                      extracted=answer_span(completion), official=official, answer_span=span,
                      score=span if actor else official, row=_row(sample))


# ------------------------------------------------------------------------------ resumable generation
def decoding_settings(processor, model, actor: bool, max_new_tokens: int) -> dict:
    ip = getattr(processor, "image_processor", None)
    size = getattr(ip, "size", None) or {}
    gc = getattr(model, "generation_config", None)
    return {"do_sample": False, "max_new_tokens": int(max_new_tokens), "repetition_penalty": 1.0,
            "actor": bool(actor), "min_pixels": size.get("shortest_edge"), "max_pixels": size.get("longest_edge"),
            "checkpoint_repetition_penalty": getattr(gc, "repetition_penalty", None)}


class CompletionLog:
    """`<dir>/<benchmark>[.rank<r>].jsonl`: a settings line, then {"index", "id", "completion"} per line."""

    def __init__(self, directory: Path, benchmark: str, settings: dict):
        self.dir = Path(directory)
        self.benchmark = benchmark
        self.settings = settings

    def files(self) -> list[Path]:
        return sorted(self.dir.glob(f"{self.benchmark}.jsonl")) + sorted(self.dir.glob(f"{self.benchmark}.rank*.jsonl"))

    def done(self) -> dict[int, dict]:
        """Completions already written (a torn last line, from a kill, is ignored)."""
        out: dict[int, dict] = {}
        for f in self.files():
            with open(f) as fh:
                lines = fh.read().split("\n")
            for n, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue        # the line a kill cut short: regenerated
                if n == 0 and "settings" in rec:
                    if rec["settings"] != self.settings:
                        raise ValueError(f"hatch-vlm eval: {f} was written with other settings ({rec['settings']}, "
                                         f"now {self.settings}); use another --out or delete it")
                    continue
                out[int(rec["index"])] = rec
        return out

    def writer(self, rank: int, world: int):
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / (f"{self.benchmark}.jsonl" if world == 1 else f"{self.benchmark}.rank{rank}.jsonl")
        new = not path.exists() or path.stat().st_size == 0
        fh = open(path, "a")
        if not new:
            fh.write("\n")          # a torn last line stays torn on its own line
        if new:
            fh.write(json.dumps({"settings": self.settings}) + "\n")
        return fh


def generate_missing(model, processor, samples: Sequence[Sample], benchmark: str, log_: CompletionLog,
                     actor: bool, max_new_tokens: int, batch_size: int) -> None:
    """Generates every question's reply that `log_` does not hold yet, appending as it goes (this rank's share
    under a multi-process launch)."""
    from tqdm.auto import tqdm

    from hatch_vlm.actor.formatting import to_pil
    from hatch_vlm.actor.generation import generate_completions
    from hatch_vlm.utils import distributed as dist

    done = log_.done()
    missing = [i for i in range(len(samples)) if i not in done]
    mine = missing[dist.rank()::dist.world_size()]
    if not mine:
        return
    # a live bar on a terminal (rank 0), nothing on a pipe or a file (disable=None: tqdm's "not a TTY")
    bar = tqdm(total=len(mine), desc=f"eval {benchmark}", unit="q", disable=None if dist.is_main() else True,
               leave=False)
    with log_.writer(dist.rank(), dist.world_size()) as fh:
        for start in range(0, len(mine), batch_size):
            idx = mine[start:start + batch_size]
            batch = [samples[i] for i in idx]          # decoded here, a batch at a time
            rows = [{"prompt": [prompt_message(s, benchmark, actor)], "images": to_pil(s.images)} for s in batch]
            texts = generate_completions(model, processor, rows, max_new_tokens=max_new_tokens,
                                         batch_size=len(rows), repetition_penalty=1.0)
            for i, s, t in zip(idx, batch, texts):
                fh.write(json.dumps({"index": i, "id": s.id, "completion": t}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(len(idx))
    bar.close()


def evaluate_benchmark(model, processor, samples: Sequence[Sample], benchmark: str, out_dir: str | Path,
                       actor: bool = False, max_new_tokens: int = 128, batch_size: int = 8) -> list[EvalRecord]:
    """Every question of `samples` answered (resuming from `<out_dir>/completions/`) and scored; records in
    question order, on every rank. A collective under a multi-process launch."""
    from hatch_vlm.utils import distributed as dist

    settings = decoding_settings(processor, model, actor, max_new_tokens)
    log_ = CompletionLog(Path(out_dir) / "completions", benchmark, settings)
    # every rank must see the same log before splitting what is missing (a fast rank would otherwise write
    # its share before a slow one reads, and the slow one would split a different remainder)
    dist.barrier()
    generate_missing(model, processor, samples, benchmark, log_, actor, max_new_tokens, batch_size)
    dist.barrier()
    done = log_.done()
    missing = [i for i in range(len(samples)) if i not in done]
    if missing:
        raise RuntimeError(f"hatch-vlm eval: {len(missing)} {benchmark} questions have no completion after "
                           f"generation (e.g. index {missing[0]})")
    records = []
    for i in range(len(samples)):
        s = samples.stub(i) if hasattr(samples, "stub") else samples[i]   # the scorers need no images
        records.append(make_record(benchmark, i, s, done[i]["completion"], actor))
    return records


# ------------------------------------------------------------------------------------------ results
def summarise(records: Sequence[EvalRecord], column: str = "score") -> dict:
    """{benchmark: {column: %, "Avg": %, "per_question": %, "n": int}, "Overall": %} with each benchmark's
    official aggregation (e.g. SPAR-Bench's Avg is the mean of its task means)."""
    by_bench: dict[str, list[EvalRecord]] = {}
    for r in records:
        by_bench.setdefault(r.benchmark, []).append(r)
    out: dict = {}
    for name, recs in by_bench.items():
        bench = BENCHMARKS.get(name)
        rules = bench.rules if bench else None
        counted = [r for r in recs if r.category is not None]
        if rules is not None:
            agg = rules.aggregate([(r.row or {}, getattr(r, column)) for r in recs])
            row = {bench.column(k): v for k, v in agg.get("categories", {}).items()}
            row.update({"Avg": agg["Avg"], "per_question": agg.get("per_question"), "n": agg.get("n", len(counted))})
            if agg.get("also"):         # other named scores (e.g. CV-Bench's flat row accuracy), reported beside
                row["also"] = dict(agg["also"])
        else:
            cats: dict[str, list[float]] = {}
            for r in counted:
                cats.setdefault(r.category, []).append(getattr(r, column))
            every = [x for v in cats.values() for x in v]
            row = {c: 100.0 * sum(v) / len(v) for c, v in cats.items()}
            mean = 100.0 * sum(every) / len(every) if every else float("nan")
            row.update({"Avg": mean, "per_question": mean, "n": len(every)})
        out[name] = row
    if all(b in out and isinstance(out[b].get("Avg"), (int, float)) for b in OVERALL):
        out["Overall"] = sum(out[b]["Avg"] for b in OVERALL) / len(OVERALL)
    return out


def write_results(out_dir: str | Path, model_name: str, records: Sequence[EvalRecord], actor: bool = False,
                  settings: dict | None = None, baseline: str | Path | None = None) -> dict:
    """results.json (both summaries, the decoding settings, every record) and results.md (the paper-style
    tables: Table 1 for the multi-image benchmarks, Table 4 for the single-image ones, then the official rule
    on the raw replies). `baseline`: another run's results.json; Table 4 then shows our change against it."""
    out = Path(out_dir)
    summary = summarise(records, "score")
    official = summarise(records, "official")
    used = "answer_span" if actor else "official"
    atomic_write_json(out / "results.json", {
        "model": model_name, "table_uses": used, "summary": summary, "summary_official_raw": official,
        "summary_answer_span": summarise(records, "answer_span"), "decoding": settings or {},
        "records": [asdict(r) for r in records]})
    note = ("ActoR prompts: each benchmark's official rule applied to the `<answer>` span of the reply"
            if actor else "each benchmark's official rule on the raw reply")
    lines = [f"# Evaluation of {model_name}", "", f"Scores: {note}.", ""]
    multi = any(b not in SINGLE_IMAGE for b in summary)
    if multi:
        lines += [markdown_table({model_name: summary}), ""]
    if any(b in summary for b in SINGLE_IMAGE):
        lines += table4_section(model_name, summary, baseline)
    if actor:
        lines += ["The official rules on the raw ActoR replies (the action block included), for comparison:", ""]
        if multi:
            lines += [markdown_table({f"{model_name} (official rule, raw reply)": official}, paper=False), ""]
        if any(b in official for b in SINGLE_IMAGE):
            lines += [markdown_table_si({f"{model_name} (official rule, raw reply)": official}, paper=False), ""]
    for bench, row in summary.items():
        if bench == "Overall":
            continue
        title = BENCHMARKS[bench].title if bench in BENCHMARKS else bench
        cats = ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k not in ("Avg", "n", "per_question")
                         and isinstance(v, float))
        cats += "".join(f"; {k} {v:.1f}" for k, v in (row.get("also") or {}).items() if isinstance(v, float))
        pq = row.get("per_question")
        avg = (f"{row['Avg']:.1f}" if isinstance(row.get("Avg"), (int, float))
               else "– (no question the official rules count)")
        lines.append(f"* {title}: Avg {avg} over {row['n']} questions"
                     + (f" (per-question mean {pq:.1f})" if isinstance(pq, float) else "")
                     + (f"; {cats}" if cats else ""))
    if settings:
        lines += ["", "Decoding: " + ", ".join(f"{k}={v}" for k, v in settings.items())]
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    return summary


def table4_section(model_name: str, summary: dict, baseline: str | Path | None) -> list[str]:
    """The Table 4 block of results.md; `baseline`: a results.json whose summary gives the delta row."""
    base = None
    if baseline is not None:
        path = Path(baseline)
        if not path.is_file():
            raise FileNotFoundError(f"hatch-vlm eval: --baseline {path} does not exist (a results.json of "
                                    "another `hatch-vlm eval` run)")
        data = json.loads(path.read_text())
        if "summary" not in data:
            raise ValueError(f"hatch-vlm eval: --baseline {path} has no 'summary' (not a results.json)")
        base = (f"baseline ({data.get('model', path.parent.name)})", data["summary"])
    return ["Single-image ability, laid out like the paper's Table 4"
            + (" (with our change against the baseline)" if base else "") + ":", "",
            markdown_table_si({model_name: summary}, baseline=base), ""]


def evaluate_split(model, processor, samples: Sequence[Sample], benchmark: str, out_dir: str | Path,
                   actor: bool = False, max_new_tokens: int = 128, batch_size: int = 8) -> list[EvalRecord]:
    """`evaluate_benchmark` (kept under this name for the pipeline's eval stage)."""
    return evaluate_benchmark(model, processor, samples, benchmark, out_dir, actor=actor,
                              max_new_tokens=max_new_tokens, batch_size=batch_size)


def evaluate_cli(args) -> dict:
    """`hatch-vlm eval`: on this rank's GPU when there is one; under `accelerate launch` the questions are split
    across the processes and rank 0 writes the results."""
    from hatch_vlm.models.loading import load_model_and_processor
    from hatch_vlm.utils import distributed as dist

    dist.init_distributed()
    model, processor = load_model_and_processor(args.model, device=dist.local_device(),
                                                min_pixels=getattr(args, "min_pixels", None),
                                                max_pixels=getattr(args, "max_pixels", None))
    out = Path(args.out) if args.out else Path(args.model) / "eval"
    roots = list(getattr(args, "image_root", None) or [])
    records: list[EvalRecord] = []
    for k, (bench, data) in enumerate(zip(args.benchmark, args.data)):
        root = (roots[k] or None) if k < len(roots) else None      # "" keeps that benchmark's own rule
        samples = load_benchmark(bench, data, args.limit, image_root=root)
        if dist.is_main():
            print(f"hatch-vlm eval: {len(samples)} {BENCHMARKS[bench].title} questions from {data}")
        records += evaluate_benchmark(model, processor, samples, bench, out, actor=args.actor,
                                      max_new_tokens=args.max_new_tokens, batch_size=getattr(args, "batch_size", 8))
    settings = decoding_settings(processor, model, args.actor, args.max_new_tokens)

    def write() -> dict:
        summary = write_results(out, Path(args.model).name, records, actor=args.actor, settings=settings,
                                baseline=getattr(args, "baseline", None))
        print((out / "results.md").read_text())
        return summary

    summary = dist.on_main(write)
    dist.shutdown()
    return summary
