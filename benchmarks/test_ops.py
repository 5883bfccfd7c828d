"""pytest-benchmark suite: every provider x case x pass, timed by pytest-benchmark.

    pytest benchmarks/ --benchmark-only                         # paper + dense cases on CPU
    HATCH_BENCH_QUICK=1 pytest benchmarks/ --benchmark-only     # shrunk shapes (seconds)
    HATCH_BENCH_DEVICE=cuda pytest benchmarks/ --benchmark-only # on the GPU (synchronised timing)
    HATCH_BENCH_SUITES="paper dense sweep_P" ...                 # which suites (default: paper dense)

Time only (in this process); peak memory, ratios and targets come from `python -m benchmarks.report`,
which runs each case in its own process. Cases whose naive run is estimated above the memory limit
(HATCH_BENCH_NAIVE_LIMIT_GIB, default 12) are skipped with that reason, as are ops not implemented yet.
Before timing, the hatch and kornia outputs are checked against the naive reference on a small shape,
so a benchmark of wrong code fails instead of reporting a speed.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from benchmarks import providers
from benchmarks.cases import build_inputs, full_cases, naive_peak_estimate, quick_cases, select

GIB = 1024 ** 3
DEVICE = torch.device(os.environ.get("HATCH_BENCH_DEVICE", "cpu"))
QUICK = os.environ.get("HATCH_BENCH_QUICK", "") not in ("", "0")
SUITES = os.environ.get("HATCH_BENCH_SUITES", "paper dense").split()
NAIVE_LIMIT = float(os.environ.get("HATCH_BENCH_NAIVE_LIMIT_GIB", "12")) * GIB
CACHE = Path(__file__).resolve().parent / "results" / ".cache" / ("quick" if QUICK else "full")

CASES = [c for c in select(quick_cases() if QUICK else full_cases(), suites=SUITES) if not c.cuda_only]
PARAMS = [pytest.param(c, p, s, id=f"{c.op}-{c.label.replace(' ', '_')}-{p}-{s}")
          for c in CASES for p in c.providers for s in c.passes]


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _backward(out, grad_out):
    out.backward() if out.dim() == 0 else out.backward(grad_out)


def _check_against_naive(case, fn):
    """The provider's output equals the naive reference on a small version of the case."""
    small = replace(case, B=1, V=min(case.V, 3), D=min(case.D, 16),
                    H=min(case.H, 48), W=min(case.W, 48), grid=min(case.grid, 8))
    inputs = build_inputs(small, DEVICE, CACHE)
    got = fn(*inputs.args)
    want = providers.get("naive").make(small)(*inputs.args)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case,provider,pass_", PARAMS)
def test_op(benchmark, case, provider, pass_):
    prov = providers.get(provider)
    reason = prov.skip_reason(case, DEVICE)
    if reason:
        pytest.skip(reason)
    est = naive_peak_estimate(case)
    if prov.naive_memory and est and est > NAIVE_LIMIT:
        pytest.skip(f"naive needs ~{est / GIB:.1f} GiB > limit {NAIVE_LIMIT / GIB:g} GiB")
    fn = prov.make(case)
    try:
        if provider in ("hatch", "kornia"):
            _check_against_naive(case, fn)
        inputs = build_inputs(case, DEVICE, CACHE)
        out = fn(*inputs.args)  # warm-up (and the compile, for naive_compiled)
        if pass_ != "forward":
            _backward(out, inputs.grad_out)
    except NotImplementedError as e:
        pytest.skip(f"not implemented: {e}")
    benchmark.extra_info.update(op=case.op, shape=case.shape, provider=provider, pass_=pass_,
                                device=str(DEVICE))
    rounds = 3 if not QUICK else 2

    if pass_ == "forward":
        def forward():
            fn(*inputs.args)
            _sync()
        benchmark.pedantic(forward, rounds=rounds, warmup_rounds=1)
    elif pass_ == "backward":
        def setup():
            inputs.leaf.grad = None
            out = fn(*inputs.args)
            _sync()
            return (out,), {}

        def backward(out):
            _backward(out, inputs.grad_out)
            _sync()
        benchmark.pedantic(backward, setup=setup, rounds=rounds, warmup_rounds=1)
    else:
        def forward_backward():
            inputs.leaf.grad = None
            _backward(fn(*inputs.args), inputs.grad_out)
            _sync()
        benchmark.pedantic(forward_backward, rounds=rounds, warmup_rounds=1)
