"""The depth / micro-batch fits: exact on linear data, refusing what they cannot reach, and recovering a
held-out depth's measured activation peak within 5 % on a full-width sweep of a real transformer stack."""
from __future__ import annotations

import subprocess
import sys

import pytest

from hatch_vlm.rehearse.fit import extrapolate, fit_cost


def test_linear_and_bilinear_fits_are_exact():
    pts = [(x, 1, 3.0 + 2.0 * x) for x in (0.1, 0.2)]
    assert extrapolate(pts, 1.0, 1)[0] == pytest.approx(5.0)
    f = lambda x, b: 1.0 + 2.0 * x + 3.0 * b + 4.0 * x * b  # noqa: E731
    pts = [(x, b, f(x, b)) for x in (0.1, 0.2) for b in (1, 2)]
    value, fit = extrapolate(pts, 1.0, 8)
    assert fit.terms == ("1", "x", "b", "xb") and value == pytest.approx(f(1.0, 8))


def test_the_bilinear_term_needs_a_complete_grid():
    """From an incomplete grid, four points would fix four coefficients exactly and the x*b term would be their
    noise: Qwen3-VL-4B's qa_sft rests (3L at b4 / b1, 4L at b2 / b1; GiB, measured) put the full model's rest at
    31.8 GiB with it; without it, near what the 3B's (4.6 GiB) suggests."""
    pts = [(0.0865, 4, 3.48), (0.1122, 2, 3.19), (0.0865, 1, 2.57), (0.1122, 1, 2.65)]
    value, fit = extrapolate(pts, 1.0, 4)
    assert fit.terms == ("1", "x", "b") and fit.max_residual > 0     # over-determined: 4 points, 3 terms
    assert 3.0 < value < 8.0, value
    assert fit_cost(pts + [(0.1122, 4, 3.6)]).terms == ("1", "x", "b", "xb")      # now a 2 x 2 grid


def test_refuses_without_a_slope():
    with pytest.raises(ValueError, match="cannot extrapolate to depth fraction 1: every run had depth 0.1"):
        extrapolate([(0.1, 4, 2.0)], 1.0, 4)
    with pytest.raises(ValueError, match="cannot extrapolate to micro-batch 8: every run had micro-batch 4"):
        extrapolate([(0.1, 4, 2.0), (0.2, 4, 3.0)], 1.0, 8)
    with pytest.raises(ValueError, match="no measured points"):
        fit_cost([])


# One process per depth (a clean peak): a stack of `layers` full-width blocks (width 1024, 4x MLP), a
# forward and backward on 512 tokens; prints the resident-set peak of that step above the one before it.
_SWEEP = r"""
import sys, torch
from hatch_vlm.rehearse import memory
torch.manual_seed(0)
layers = int(sys.argv[1])
d, t = 1024, 512
blocks = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.LayerNorm(d), torch.nn.Linear(d, 4 * d),
                                                   torch.nn.GELU(), torch.nn.Linear(4 * d, d))
                               for _ in range(layers)])
x = torch.randn(t, d, requires_grad=True)
blocks(x).sum().backward()          # warm-up: allocator and gradients in place
for p in blocks.parameters():
    p.grad = None
x.grad = None
before = memory.rss_bytes()
memory.reset_peak()
blocks(x).sum().backward()
print(memory.peak_bytes() - before)
"""


def _peak(layers: int) -> int:
    # a fixed mmap threshold: glibc's adaptive one lets freed activations stay in the heap by chance, so the
    # resident set's peak would depend on the allocation history rather than on what is live
    out = subprocess.run([sys.executable, "-c", _SWEEP, str(layers)], capture_output=True, text=True, check=True,
                         env={"OMP_NUM_THREADS": "1", "PATH": "", "MALLOC_MMAP_THRESHOLD_": "131072"})
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_depth_fit_recovers_a_held_out_depth():
    """Fit on 2 and 4 layers, predict 8 (the held-out depth), measure 8: within 5 %."""
    full = 8
    pts = [(n / full, 1, float(_peak(n))) for n in (2, 4)]
    predicted, _ = extrapolate(pts, 1.0, 1)
    measured = _peak(full)
    assert measured > 2 * pts[0][2]            # the activations grow with depth: the fit has something to fit
    assert abs(predicted - measured) / measured < 0.05, (pts, predicted, measured)
