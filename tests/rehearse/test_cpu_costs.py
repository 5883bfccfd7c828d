"""The rehearsal worker's replacements of two CPU-only slow paths (hatch_vlm.rehearse.cpu_costs): the same
distribution, nearly the same numbers, installed only where asked."""
from __future__ import annotations

import pytest
import torch

from hatch_vlm.rehearse import cpu_costs


@pytest.fixture
def restored(monkeypatch):
    """What `apply()` replaces, put back after the test."""
    monkeypatch.setattr(torch, "multinomial", torch.multinomial)
    cl = pytest.importorskip("trl.kernels.chunked_logprob")
    monkeypatch.setattr(cl, "_addmm_fp32", cl._addmm_fp32)
    return cl


def test_inverse_cdf_sampling_has_multinomials_distribution():
    g = torch.Generator().manual_seed(0)
    w = torch.tensor([0.0, 1.0, 0.0, 3.0, 6.0, 0.0])     # unnormalised, zeros inside and at both ends
    draws = cpu_costs.sample_one(w.expand(40000, -1), g).flatten()
    freq = torch.bincount(draws, minlength=6).double() / draws.numel()
    expected = (w / w.sum()).double()
    assert freq[w == 0].sum() == 0                       # a zero weight is never drawn
    # 40k draws: the standard error of each frequency is <= 0.0025; 5 of them is a failure
    assert (freq - expected).abs().max() < 0.0125, freq
    assert draws.shape == (40000,) and draws.dtype == torch.int64


def test_a_draw_on_the_total_falls_on_the_last_weighted_token(monkeypatch):
    # u * total that rounds onto the total would search past the end: it is the last token with weight
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.ones(a[0], dtype=torch.float64))
    w = torch.tensor([[0.2, 0.8, 0.0, 0.0]])
    assert cpu_costs.sample_one(w).tolist() == [[1]]


def test_multinomial_is_replaced_only_for_one_draw_on_cpu(monkeypatch, restored):
    calls = []
    monkeypatch.setattr(cpu_costs, "sample_one", lambda p, g=None: calls.append(p.shape) or torch.zeros(
        p.shape[:-1] + (1,), dtype=torch.long))
    replaced = cpu_costs.apply()
    assert "torch.multinomial" in replaced
    p = torch.full((3, 10), 0.1)
    assert torch.multinomial(p, 1).shape == (3, 1) and calls == [(3, 10)]
    assert torch.multinomial(p, 4).shape == (3, 4) and calls == [(3, 10)]     # more draws: torch's own


def test_trls_chunked_logprob_backward_is_close_with_the_bf16_product(restored):
    cl = restored
    torch.manual_seed(0)
    # as in training: float32 master weights, the head's tiles in bf16 under autocast
    hidden = torch.randn(37, 64, requires_grad=True)
    weight = (torch.randn(1000, 64) * 0.05).requires_grad_()
    labels = torch.randint(0, 1000, (37,))

    def grads():
        hidden.grad = weight.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = cl.ChunkedLogProbFunction.apply(hidden, weight, None, labels, 1.0, 256, None, 1.0, ("log_probs",))
        out[0].sum().backward()
        return hidden.grad.float(), weight.grad.float()

    ref = grads()
    assert "trl.kernels.chunked_logprob._addmm_fp32" in cpu_costs.apply()
    new = grads()
    for a, b in zip(new, ref):
        # each tile's product rounded to bf16 (8 bits of mantissa): relative error ~ 2^-8 of the largest term
        torch.testing.assert_close(a, b, atol=4e-3 * b.abs().max().item(), rtol=0)
        assert not torch.equal(a, b)          # the replacement ran (a float32 product would be equal)
