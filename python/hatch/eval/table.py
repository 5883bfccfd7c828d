"""Benchmark categories and the results table laid out like Table 1 of the HATCH paper.

Each benchmark's average is over its questions (not over categories); "Overall" is the mean of the
three benchmark averages, given only when all three are present.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

BENCHMARKS = ("spar-mv", "mindcube", "mmsi")
TITLES = {"spar-mv": "SPAR-Bench-MV", "mindcube": "MindCube-Tiny", "mmsi": "MMSI-Bench",
          "synthetic": "Synthetic"}
CATEGORIES = {
    "spar-mv": ("Low", "Mid", "High"),
    "mindcube": ("Around", "Rotation", "Among"),
    "mmsi": ("Pos", "Att", "Mot", "MSR"),
}

# Table 1 of the paper (accuracy %).
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


def category_of(benchmark: str, raw: str) -> str | None:
    """Maps a record's raw category (SPAR level, MindCube setting, MMSI question_type) to the table's
    column; None for questions the table does not count (e.g. MindCube translation)."""
    text = (raw or "").strip().lower()
    if benchmark == "spar-mv":
        for key, col in (("low", "Low"), ("mid", "Mid"), ("high", "High")):
            if text.startswith(key):
                return col
        return None
    if benchmark == "mindcube":
        for key, col in (("around", "Around"), ("rotation", "Rotation"), ("among", "Among")):
            if key in text:
                return col
        return None  # translation and unknown settings are not counted in the overall
    if benchmark == "mmsi":
        if text.startswith("pos"):
            return "Pos"
        if text.startswith("att"):
            return "Att"
        if text.startswith("mot"):
            return "Mot"
        if text.startswith("msr") or "multi-step" in text:
            return "MSR"
        return None
    return raw or "all"


@dataclass
class Scored:
    benchmark: str
    category: str | None
    score: float


def summarise(scored: list[Scored]) -> dict:
    """{benchmark: {category: %, ..., "Avg": %, "n": count}} (+ "Overall" when all three are there)."""
    per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in scored:
        if s.category is None:
            continue
        per[s.benchmark][s.category].append(s.score)
    out: dict = {}
    for bench, cats in per.items():
        row = {c: 100.0 * sum(v) / len(v) for c, v in cats.items()}
        every = [x for v in cats.values() for x in v]
        row["Avg"] = 100.0 * sum(every) / len(every)
        row["n"] = len(every)
        out[bench] = row
    if all(b in out for b in BENCHMARKS):
        out["Overall"] = sum(out[b]["Avg"] for b in BENCHMARKS) / len(BENCHMARKS)
    return out


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.1f}"


def markdown_table(results: dict[str, dict]) -> str:
    """results: {row name: summary} — ours beside the paper's rows, one column per category."""
    rows = dict(results)
    rows.update(PAPER_ROWS)
    benches = [b for b in BENCHMARKS if any(b in r for r in results.values())] or list(BENCHMARKS)
    extra = sorted({b for r in results.values() for b in r if b not in BENCHMARKS and b != "Overall"})
    header = ["model"]
    for b in benches:
        header += [f"{TITLES[b]} {c}" for c in CATEGORIES[b]] + [f"{TITLES[b]} Avg"]
    for b in extra:
        header += [f"{TITLES.get(b, b)} Avg"]
    header.append("Overall")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in rows.items():
        cells = [name]
        for b in benches:
            br = r.get(b, {})
            cells += [_fmt(br.get(c)) for c in CATEGORIES[b]] + [_fmt(br.get("Avg"))]
        for b in extra:
            cells.append(_fmt(r.get(b, {}).get("Avg")))
        cells.append(_fmt(r.get("Overall")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
