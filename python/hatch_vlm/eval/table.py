"""The results table laid out like Table 1 of the HATCH paper: per benchmark its category columns and Avg
(each benchmark's own official aggregation, hatch_vlm.eval.run.summarise), "Overall" = the mean of the three
benchmark averages (given only when all three are present), the paper's rows beside ours."""
from __future__ import annotations

from .benchmarks import BENCHMARKS, OVERALL, PAPER_ROWS


def _fmt(x) -> str:
    return "–" if not isinstance(x, (int, float)) or x != x else f"{x:.1f}"


def markdown_table(results: dict[str, dict], paper: bool = True) -> str:
    """results: {row name: summary} — ours (beside the paper's rows unless `paper=False`)."""
    rows = dict(results)
    if paper:
        rows.update(PAPER_ROWS)
    benches = [b for b in OVERALL if any(b in r for r in results.values())] or list(OVERALL)
    extra = sorted({b for r in results.values() for b in r if b not in OVERALL and b != "Overall"})
    header = ["model"]
    for b in benches:
        header += [f"{BENCHMARKS[b].title} {c}" for c in BENCHMARKS[b].columns] + [f"{BENCHMARKS[b].title} Avg"]
    for b in extra:
        header += [f"{BENCHMARKS[b].title if b in BENCHMARKS else b} Avg"]
    header.append("Overall")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in rows.items():
        cells = [name]
        for b in benches:
            br = r.get(b, {})
            cells += [_fmt(br.get(c)) for c in BENCHMARKS[b].columns] + [_fmt(br.get("Avg"))]
        for b in extra:
            cells.append(_fmt(r.get(b, {}).get("Avg")))
        cells.append(_fmt(r.get("Overall")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
