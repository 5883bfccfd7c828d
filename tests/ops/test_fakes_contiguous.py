"""The fakes (hatch_ext/_registration.py) describe what the kernels return for NON-contiguous inputs:
contiguous tensors of the right shape, dtype and device, whatever the strides of emb, depth, overlap or
the gradients. The old fakes used `empty_like(emb)`, which keeps emb's strides: opcheck's fake-tensor
test failed and torch.compile planned for the wrong layout of the backward ops' outputs. The fake and
opcheck tests run on every device (CPU, and CUDA where built); torch.compile on the CPU."""
from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import hatch_ext
from hatch_ext import reference as R
from hatch_ext import testing

OPS = torch.ops.hatch
TAU_T, TAU_P, ABS_TOL, REL_TOL = 0.1, 0.07, 0.05, 0.05
GH, GW = 2, 3
P = GH * GW


def transposed(t: torch.Tensor, d0: int = -2, d1: int = -1) -> torch.Tensor:
    """The same values with other strides (transpose of a contiguous transpose)."""
    out = t.transpose(d0, d1).contiguous().transpose(d0, d1)
    assert not out.is_contiguous() and torch.equal(out, t)
    return out


def sliced(t: torch.Tensor) -> torch.Tensor:
    """The same values as every second element of a twice-as-wide last dimension."""
    wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    wide[..., ::2] = t
    out = wide[..., ::2]
    assert not out.is_contiguous() and torch.equal(out, t)
    return out


def _inputs(layout: str, dtype=torch.float64, device="cpu"):
    s = testing.room_scene(1, 3, 13, 17, seed=16, dtype=dtype).to(device)
    d, K, T = s.depth, s.K, s.cam_to_world
    emb = torch.randn(1, 3, P, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(17))
    emb = emb.to(dtype).to(device)
    M = OPS.patch_overlap(d, K, T, GH, GW, ABS_TOL, REL_TOL, 1)
    _, lse, nv = OPS.soft_infonce(emb, M, TAU_T, TAU_P, 0.0)
    _, lse_a, nv_a = OPS.patch_align(emb, d, K, T, GH, GW, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1, 0.0)
    grad_sim = torch.randn(1, 3, 3, P, P, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(18)).to(dtype).to(device)
    if layout == "transposed":
        emb, d, M, grad_sim = transposed(emb), transposed(d), transposed(M), transposed(grad_sim)
        lse, lse_a = transposed(lse, 1, 2), transposed(lse_a, 1, 2)
        K, T = transposed(K), transposed(T)
    elif layout == "sliced":
        emb, d, M, grad_sim, lse, lse_a = (sliced(x) for x in (emb, d, M, grad_sim, lse, lse_a))
    g = torch.ones((), dtype=dtype, device=device)
    return dict(emb=emb, d=d, K=K, T=T, M=M, lse=lse, nv=nv, lse_a=lse_a, nv_a=nv_a, g=g,
                grad_sim=grad_sim)


def _cases(layout: str, dtype=torch.float64, device="cpu"):
    x = _inputs(layout, dtype, device)
    emb, d, K, T, M = x["emb"], x["d"], x["K"], x["T"], x["M"]
    return {
        "patch_overlap": (OPS.patch_overlap.default, (d, K, T, GH, GW, ABS_TOL, REL_TOL, 1)),
        "cell_similarity": (OPS.cell_similarity.default, (emb,)),
        "cell_similarity_backward": (OPS.cell_similarity_backward.default, (x["grad_sim"], emb)),
        "soft_infonce": (OPS.soft_infonce.default, (emb, M, TAU_T, TAU_P, 0.0)),
        "soft_infonce_backward": (OPS.soft_infonce_backward.default,
                                  (x["g"], emb, M, x["lse"], x["nv"], TAU_T, TAU_P, 0.0)),
        "patch_align": (OPS.patch_align.default,
                        (emb, d, K, T, GH, GW, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1, 0.0)),
        "patch_align_backward": (OPS.patch_align_backward.default,
                                 (x["g"], emb, d, K, T, x["lse_a"], x["nv_a"], GH, GW, TAU_T, TAU_P,
                                  ABS_TOL, REL_TOL, 1, 0.0)),
    }


OP_NAMES = ["patch_overlap", "cell_similarity", "cell_similarity_backward", "soft_infonce",
            "soft_infonce_backward", "patch_align", "patch_align_backward"]
LAYOUTS = ["transposed", "sliced"]


def _outputs(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", OP_NAMES)
def test_fake_matches_kernel_for_non_contiguous_inputs(device, name, layout):
    """Shape, dtype, device and strides of every output of the fake equal the kernel's, and both are
    contiguous (on every device: the `device` fixture, tests/ops/conftest.py)."""
    op, args = _cases(layout, device=device)[name]
    real = _outputs(op(*args))
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        fake = _outputs(op(*fake_args))
    assert len(fake) == len(real)
    for k, (f, r) in enumerate(zip(fake, real)):
        assert r.is_contiguous(), f"{name} output {k}: the kernel returned strides {r.stride()}"
        assert f.is_contiguous(), f"{name} output {k}: the fake has strides {f.stride()}"
        assert (f.shape, f.dtype, f.device, f.stride()) == (r.shape, r.dtype, r.device, r.stride())


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", OP_NAMES)
def test_opcheck_with_non_contiguous_inputs(device, name, layout):
    op, args = _cases(layout, device=device)[name]
    if name in ("cell_similarity", "soft_infonce", "patch_align"):
        args = (args[0].detach().requires_grad_(),) + tuple(args[1:])  # the autograd registration too
    torch.library.opcheck(op, args)


def _compile_case(kind: str):
    """(fn of a leaf x, the leaf) where fn feeds a NON-contiguous view to the op inside the graph:
    x is [B, V, D, P] and the op sees (2x).transpose(2, 3) (or a slice of a wider 2x). With the old
    fakes, Inductor's stride assertion on the backward op's output failed."""
    s = testing.room_scene(2, 3, 13, 17, seed=19, dtype=torch.float32)
    d, K, T = s.depth, s.K, s.cam_to_world
    base = torch.randn(2, 3, P, 6, generator=torch.Generator().manual_seed(20))
    M = R.patch_overlap(d, K, T, GH, GW)
    w = torch.randn(2, 3, 3, P, P, generator=torch.Generator().manual_seed(21))
    if kind.endswith("_sliced"):
        leaf = torch.zeros(2, 3, P, 12)
        leaf[..., ::2] = base

        def view(x):
            return (2 * x)[..., ::2]
    else:
        leaf = base.transpose(2, 3).contiguous()

        def view(x):  # the pointwise op makes backward read the op's gradient through its layout
            return (2 * x).transpose(2, 3)

    op = kind.removesuffix("_sliced")
    dt, Mt = transposed(d), transposed(M)  # depth and overlap non-contiguous too
    if op == "cell_similarity":
        return (lambda x: (hatch_ext.cell_similarity(view(x)) * w).sum()), leaf
    if op == "soft_infonce":
        return (lambda x: hatch_ext.soft_infonce(view(x), Mt)), leaf
    return (lambda x: hatch_ext.patch_align(view(x), dt, K, T, GH, GW)), leaf


@pytest.mark.parametrize("kind", ["cell_similarity", "soft_infonce", "patch_align",
                                  "cell_similarity_sliced", "patch_align_sliced"])
def test_torch_compile_fullgraph_with_non_contiguous_inputs(kind):
    # No compile caches: a graph compiled under other fakes (an older checkout) would be reused.
    with torch._inductor.config.patch(fx_graph_cache=False), \
            torch._functorch.config.patch(enable_autograd_cache=False):
        _compile_and_compare(kind)


def _compile_and_compare(kind):
    torch._dynamo.reset()
    fn, leaf = _compile_case(kind)
    x_eager = leaf.clone().requires_grad_()
    loss_eager = fn(x_eager)
    loss_eager.backward()
    x_comp = leaf.clone().requires_grad_()
    loss_comp = torch.compile(fn, fullgraph=True)(x_comp)
    loss_comp.backward()
    torch.testing.assert_close(loss_comp.detach(), loss_eager.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x_comp.grad, x_eager.grad, rtol=1e-5, atol=1e-6)
    assert x_eager.grad.abs().sum() > 0
