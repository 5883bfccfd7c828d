"""The results tables laid out like the HATCH paper's:

* Table 1 (`markdown_table`): per multi-image benchmark its category columns and Avg (each benchmark's own
  official aggregation, hatch_vlm.eval.run.summarise), "Overall" = the mean of the three benchmark averages
  (given only when all three are present), the paper's rows beside ours;
* Table 4 (`markdown_table_si`): the single-image benchmarks (SPAR-Bench-SI Low / High / Avg, CV-Bench 2D / 3D /
  Avg), the paper's rows beside ours, and our change against a baseline run when one is given (Table 4 asks
  whether single-image ability dropped).
"""
from __future__ import annotations

from .benchmarks import BENCHMARKS, OVERALL, PAPER_ROWS, PAPER_ROWS_SI, SINGLE_IMAGE

# Table 4's columns: (benchmark, summary key, header). SPAR-Bench-SI gives both averages, each named; the
# paper's SI Avg is the question-weighted one (hatch_vlm.scoring.official.spar_bench_si).
SI_COLUMNS = (
    ("spar-si", "Low", "SPAR-Bench-SI Low"), ("spar-si", "High", "SPAR-Bench-SI High"),
    ("spar-si", "Avg", "SPAR-Bench-SI Avg (task mean, official)"),
    ("spar-si", "Avg (question-weighted)", "SPAR-Bench-SI Avg (question-weighted, as the paper)"),
    ("cv-bench", "2D", "CV-Bench 2D"), ("cv-bench", "3D", "CV-Bench 3D"),
    ("cv-bench", "Avg", "CV-Bench Avg (official: (2D + 3D) / 2)"),
)


def _fmt(x) -> str:
    return "–" if not isinstance(x, (int, float)) or x != x else f"{x:.1f}"


def markdown_table(results: dict[str, dict], paper: bool = True) -> str:
    """results: {row name: summary} — ours (beside the paper's rows unless `paper=False`)."""
    rows = dict(results)
    if paper:
        rows.update(PAPER_ROWS)
    benches = [b for b in OVERALL if any(b in r for r in results.values())] or list(OVERALL)
    extra = sorted({b for r in results.values() for b in r
                    if b not in OVERALL and b not in SINGLE_IMAGE and b != "Overall"})
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


def _si_value(row: dict, bench: str, key: str):
    br = row.get(bench) or {}
    return br[key] if key in br else (br.get("also") or {}).get(key)


def markdown_table_si(results: dict[str, dict], baseline: tuple[str, dict] | None = None, paper: bool = True) -> str:
    """Table 4. results: {row name: summary} (ours); baseline: (its name, its summary), which adds a row of
    ours minus the baseline per column (of the first row of `results`)."""
    rows = dict(results)
    if baseline is not None:
        rows[baseline[0]] = baseline[1]
    if paper:
        rows.update(PAPER_ROWS_SI)
    header = ["model"] + [h for _, _, h in SI_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in rows.items():
        lines.append("| " + " | ".join([name] + [_fmt(_si_value(r, b, k)) for b, k, _ in SI_COLUMNS]) + " |")
    if baseline is not None and results:
        ours_name, ours = next(iter(results.items()))
        cells = [f"{ours_name} − {baseline[0]}"]
        for b, k, _ in SI_COLUMNS:
            x, y = _si_value(ours, b, k), _si_value(baseline[1], b, k)
            ok = all(isinstance(v, (int, float)) and v == v for v in (x, y))
            cells.append(f"{x - y:+.1f}" if ok else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
