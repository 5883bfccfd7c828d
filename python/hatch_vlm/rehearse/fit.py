"""Fits of a stage's cost over the model's depth and the micro-batch, and extrapolation to the config's.

A rehearsal variant keeps the model's full width and a fraction `x` of its layers (`architecture.shrink`:
text decoder layers and vision blocks cut in the same proportion; `x` is the share of the per-layer parameters
kept, exact from the config) and runs at micro-batch `b`. A measured quantity y (the peak's part that is not
model state, seconds per step, ...) is fitted by least squares on the terms the runs vary:

    depths only:            y = c0 + c1 x
    micro-batches only:     y = c0 + c2 b
    both:                   y = c0 + c1 x + c2 b (+ c3 x b where two depths were each run at the same two
                            micro-batches: a complete 2 x 2 grid); without it, each slope from the
                            runs that differ in that alone (`_within_slopes`)

and evaluated at the target (x = 1, the config's b). Costs of transformer training are linear in the number of
layers and, at a fixed sequence length, in the micro-batch; the bilinear term carries the per-layer activations
that grow with the batch. A fit needs at least two distinct values of each term it extrapolates over. The
bilinear term needs the complete grid: from an incomplete one (Qwen3-VL-4B's qa_sft: 3 layers at micro-batches
4 and 1, 4 layers at 2 and 1) four points fix four coefficients exactly, and the term is then the points'
noise: it put that stage's rest at 31.8 GiB at full depth against 3.5 GiB measured at 3 layers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Fit:
    terms: tuple[str, ...]          # of "1", "x", "b", "xb"
    coef: tuple[float, ...]
    points: int
    max_residual: float             # largest |fit - measured| over the points it was fitted on

    def __call__(self, x: float, b: float) -> float:
        return float(sum(c * _term(t, x, b) for t, c in zip(self.terms, self.coef)))

    def to_dict(self) -> dict:
        return {"terms": list(self.terms), "coef": list(self.coef), "points": self.points,
                "max_residual": self.max_residual}


def _term(name: str, x: float, b: float) -> float:
    return {"1": 1.0, "x": x, "b": b, "xb": x * b}[name]


def fit_cost(points: list[tuple[float, float, float]]) -> Fit:
    """Least-squares fit of y over (x, b, y) points (see the module doc for the terms chosen)."""
    if not points:
        raise ValueError("fit_cost: no measured points")
    xs = sorted({round(p[0], 9) for p in points})
    bs = sorted({p[1] for p in points})
    terms = ["1"]
    if len(xs) >= 2:
        terms.append("x")
    if len(bs) >= 2:
        terms.append("b")
    if len(xs) >= 2 and len(bs) >= 2 and _complete_grid(points):
        terms.append("xb")
    a = np.array([[_term(t, x, b) for t in terms] for x, b, _ in points], dtype=np.float64)
    y = np.array([p[2] for p in points], dtype=np.float64)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    if terms == ["1", "x", "b"]:
        coef = _within_slopes(points, coef)
    resid = float(np.max(np.abs(a @ coef - y))) if len(points) else 0.0
    return Fit(tuple(terms), tuple(float(c) for c in coef), len(points), resid)


def _slope(pairs: list[tuple[float, float]]) -> float:
    u = np.array([p[0] for p in pairs], dtype=np.float64)
    v = np.array([p[1] for p in pairs], dtype=np.float64)
    return float(np.polyfit(u, v, 1)[0])


def _within_slopes(points: list[tuple[float, float, float]], coef) -> np.ndarray:
    """The additive fit's slopes from matched runs: over depth from runs at the same micro-batch, over the
    micro-batch from runs at the same depth (each the mean over the groups that have two), the intercept the
    mean of the rest. Plain least squares over an incomplete grid reads a depth step taken at another
    micro-batch as depth: on Qwen3-VL-4B's qa_sft (3L at b4 and b1, 4L at b2 and b1) it gave 11.4 GiB at full
    depth, the matched slopes 6.7. A slope with no matched pair keeps the least-squares value."""
    by_b: dict[float, list] = {}
    by_x: dict[float, list] = {}
    for x, b, y in points:
        by_b.setdefault(b, []).append((x, y))
        by_x.setdefault(round(x, 9), []).append((b, y))
    cx = [_slope(g) for g in by_b.values() if len({round(p[0], 9) for p in g}) >= 2]
    cb = [_slope(g) for g in by_x.values() if len({p[0] for p in g}) >= 2]
    c1 = float(np.mean(cx)) if cx else float(coef[1])
    c2 = float(np.mean(cb)) if cb else float(coef[2])
    c0 = float(np.mean([y - c1 * x - c2 * b for x, b, y in points]))
    return np.array([c0, c1, c2])


def _complete_grid(points: list[tuple[float, float, float]]) -> bool:
    """Whether two depths were each run at the same two micro-batches."""
    at: dict[float, set] = {}
    for x, b, _ in points:
        at.setdefault(round(x, 9), set()).add(b)
    depths = list(at.values())
    return any(len(depths[i] & depths[j]) >= 2 for i in range(len(depths)) for j in range(i + 1, len(depths)))


def extrapolate(points: list[tuple[float, float, float]], x: float, b: float) -> tuple[float, Fit]:
    """y at (x, b) from the measured points: the fit's value, refused where the fit cannot reach.

    Raises ValueError when the target's depth (or micro-batch) differs from every point's and the points hold
    a single depth (micro-batch): one point does not give a slope."""
    fit = fit_cost(points)
    if "x" not in fit.terms and all(abs(p[0] - x) > 1e-9 for p in points):
        raise ValueError(f"cannot extrapolate to depth fraction {x:g}: every run had depth {points[0][0]:g} "
                         "(need >= 2 depths)")
    if "b" not in fit.terms and all(p[1] != b for p in points):
        raise ValueError(f"cannot extrapolate to micro-batch {b}: every run had micro-batch {points[0][1]} "
                         "(need >= 2 micro-batches)")
    return fit(x, b), fit
