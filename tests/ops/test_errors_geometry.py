"""Bad input to patch_overlap and cell_similarity(_backward) gets a specific error that names the
argument (ValueError / TypeError from the C++ checks), never a crash, a hang or a silent NaN."""
import math

import pytest
import torch

import hatch_ext
from hatch_ext import testing

ERRORS = (ValueError, TypeError, RuntimeError)
CPU_ONLY = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)


@pytest.fixture(scope="module")
def scene():
    return testing.room_scene(2, 3, 12, 14, seed=0)


def call_overlap(depth, K, T, grid_h=3, grid_w=2, abs_tol=0.05, rel_tol=0.05, stride=1):
    return torch.ops.hatch.patch_overlap(depth, K, T, grid_h, grid_w, abs_tol, rel_tol, stride)


def test_good_input_runs(scene):
    M = call_overlap(scene.depth, scene.K, scene.cam_to_world)
    assert M.shape == (2, 3, 3, 6, 6) and torch.isfinite(M).all()


def _singular_K(s):
    K = s.K.clone()
    K[1, 2, 0, 0] = 0.0  # focal length 0
    return K


def _repeated_row_K(s):
    K = s.K.clone()
    K[0, 1, 1] = K[0, 1, 0]
    return K


def _with(t, index, value):
    t = t.clone()
    t[index] = value
    return t


# (name, builder(scene) -> kwargs for call_overlap, message regex)
BAD_OVERLAP = [
    ("depth rank 3", lambda s: dict(depth=s.depth[0]), r"'depth'.*\[B, V, H, W\]"),
    ("depth rank 5", lambda s: dict(depth=s.depth[None]), r"'depth'.*\[B, V, H, W\]"),
    ("depth int", lambda s: dict(depth=s.depth.long()), r"'depth'.*float32 or float64"),
    ("depth bool", lambda s: dict(depth=s.depth > 1), r"'depth'.*float32 or float64"),
    ("depth complex", lambda s: dict(depth=s.depth.to(torch.complex128)), r"'depth'.*float32 or float64"),
    ("depth float16", lambda s: dict(depth=s.depth.half()), r"'depth'.*float32 or float64"),
    ("empty batch", lambda s: dict(depth=s.depth[:0], K=s.K[:0], T=s.cam_to_world[:0]),
     r"'depth' must be non-empty"),
    ("zero-width image", lambda s: dict(depth=s.depth[..., :0]), r"'depth' must be non-empty"),
    ("K rank", lambda s: dict(K=s.K[0]), r"'K'.*\[B, V, 3, 3\]"),
    ("K 4x4", lambda s: dict(K=s.cam_to_world), r"'K'.*rows"),
    ("K wrong B", lambda s: dict(K=s.K[:1]), r"'K'.*B \(samples"),
    ("K wrong V", lambda s: dict(K=s.K[:, :2]), r"'K'.*V \(views"),
    ("K int", lambda s: dict(K=s.K.int()), r"'K' must be a floating-point"),
    ("K complex", lambda s: dict(K=s.K.to(torch.complex64)), r"'K' must be a floating-point"),
    ("K singular", lambda s: dict(K=_singular_K(s)), r"'K' is singular at sample 1, view 2"),
    ("K repeated row", lambda s: dict(K=_repeated_row_K(s)), r"'K' is singular at sample 0, view 1"),
    ("K nan", lambda s: dict(K=_with(s.K, (0, 0, 0, 2), math.nan)), r"'K' has non-finite"),
    ("pose rank", lambda s: dict(T=s.cam_to_world[0]), r"'cam_to_world'.*\[B, V, 4, 4\]"),
    ("pose 3x4", lambda s: dict(T=s.cam_to_world[..., :3, :]), r"'cam_to_world'.*rows"),
    ("pose wrong B", lambda s: dict(T=torch.cat([s.cam_to_world] * 2)), r"'cam_to_world'.*B \(samples"),
    ("pose wrong V", lambda s: dict(T=s.cam_to_world[:, :1]), r"'cam_to_world'.*V \(views"),
    ("pose int", lambda s: dict(T=s.cam_to_world.long()), r"'cam_to_world' must be a floating-point"),
    ("pose complex", lambda s: dict(T=s.cam_to_world.to(torch.complex128)),
     r"'cam_to_world' must be a floating-point"),
    ("pose nan", lambda s: dict(T=_with(s.cam_to_world, (1, 0, 0, 3), math.nan)),
     r"'cam_to_world' has non-finite"),
    ("pose inf", lambda s: dict(T=_with(s.cam_to_world, (0, 2, 1, 1), math.inf)),
     r"'cam_to_world' has non-finite"),
    ("pose singular", lambda s: dict(T=_with(s.cam_to_world, (0, 1, slice(0, 3), 0), 0.0)),
     r"'cam_to_world' has a singular rotation"),
    ("grid taller than image", lambda s: dict(grid_h=13), r"grid.*larger than the depth image"),
    ("grid wider than image", lambda s: dict(grid_w=15), r"grid.*larger than the depth image"),
    ("grid 0", lambda s: dict(grid_h=0), r"grid_h and grid_w must be >= 1"),
    ("grid negative", lambda s: dict(grid_w=-2), r"grid_h and grid_w must be >= 1"),
    ("abs_tol negative", lambda s: dict(abs_tol=-0.01), r"abs_tol must be finite and >= 0"),
    ("abs_tol nan", lambda s: dict(abs_tol=math.nan), r"abs_tol must be finite and >= 0"),
    ("rel_tol negative", lambda s: dict(rel_tol=-1.0), r"rel_tol must be finite and >= 0"),
    ("rel_tol inf", lambda s: dict(rel_tol=math.inf), r"rel_tol must be finite and >= 0"),
    ("stride 0", lambda s: dict(stride=0), r"stride must be >= 1"),
    ("stride negative", lambda s: dict(stride=-3), r"stride must be >= 1"),
]


@pytest.mark.parametrize("name,build,match", BAD_OVERLAP, ids=[b[0] for b in BAD_OVERLAP])
def test_patch_overlap_bad_input(scene, name, build, match):
    kw = dict(depth=scene.depth, K=scene.K, T=scene.cam_to_world)
    kw.update(build(scene))
    with pytest.raises(ERRORS, match=match):
        call_overlap(**kw)


def test_patch_overlap_error_types(scene):
    """Shape/value problems are ValueError, dtype problems TypeError (as torch's own ops)."""
    with pytest.raises(ValueError, match="hatch.patch_overlap: argument 'K'"):
        call_overlap(scene.depth, scene.K[:1], scene.cam_to_world)
    with pytest.raises(TypeError, match="hatch.patch_overlap: argument 'depth'"):
        call_overlap(scene.depth.int(), scene.K, scene.cam_to_world)


def test_patch_overlap_public_wrapper_names_argument(scene):
    with pytest.raises(ValueError, match="stride must be >= 1"):
        hatch_ext.patch_overlap(scene.depth, scene.K, scene.cam_to_world, 3, stride=0)


@pytest.mark.parametrize("which", ["K", "cam_to_world"])
def test_patch_overlap_tensors_on_different_devices(scene, which):
    """A second device without a GPU: "meta". A meta argument routes the public call to the fake
    implementation, so the CPU kernel's own device check is reached by dispatching to it directly."""
    K = scene.K.to("meta") if which == "K" else scene.K
    T = scene.cam_to_world.to("meta") if which == "cam_to_world" else scene.cam_to_world
    with pytest.raises(ValueError, match=rf"'{which}' is on meta but 'depth' is on cpu"):
        torch.ops.hatch.patch_overlap.default.redispatch(CPU_ONLY, scene.depth, K, T, 3, 2, 0.05,
                                                         0.05, 1)


def test_patch_overlap_devices_checked_through_public_call(scene):
    with pytest.raises(ERRORS, match="device|meta"):
        hatch_ext.patch_overlap(scene.depth, scene.K.to("meta"), scene.cam_to_world, 3, 2)


# --------------------------------------------------------------------------- cell_similarity
EMB = torch.randn(2, 3, 4, 5, dtype=torch.float64)

BAD_EMB = [
    ("rank 3", EMB[0], r"'emb'.*\[B, V, P, D\]"),
    ("rank 5", EMB[None], r"'emb'.*\[B, V, P, D\]"),
    ("int", EMB.long(), r"'emb' must be float32, float64, float16 or bfloat16"),
    ("complex", EMB.to(torch.complex64), r"'emb' must be float32, float64, float16 or bfloat16"),
    ("bool", EMB > 0, r"'emb' must be float32, float64, float16 or bfloat16"),
    ("empty batch", EMB[:0], r"'emb' must be non-empty"),
    ("no channels", EMB[..., :0], r"'emb' must be non-empty"),
    ("no cells", EMB[:, :, :0], r"'emb' must be non-empty"),
]


@pytest.mark.parametrize("name,emb,match", BAD_EMB, ids=[b[0] for b in BAD_EMB])
def test_cell_similarity_bad_emb(name, emb, match):
    with pytest.raises(ERRORS, match=match):
        torch.ops.hatch.cell_similarity(emb)
    with pytest.raises(ERRORS, match=match):
        grad = torch.zeros(2, 3, 3, 4, 4, dtype=torch.float64)
        torch.ops.hatch.cell_similarity_backward(grad, emb)


BAD_GRAD = [
    ("rank 4", torch.zeros(2, 3, 4, 4, dtype=torch.float64), r"'grad'.*\[2, 3, 3, 4, 4\]"),
    ("wrong B", torch.zeros(1, 3, 3, 4, 4, dtype=torch.float64), r"'grad'.*\[2, 3, 3, 4, 4\]"),
    ("wrong V", torch.zeros(2, 3, 2, 4, 4, dtype=torch.float64), r"'grad'.*\[2, 3, 3, 4, 4\]"),
    ("wrong P", torch.zeros(2, 3, 3, 4, 5, dtype=torch.float64), r"'grad'.*\[2, 3, 3, 4, 4\]"),
    ("int", torch.zeros(2, 3, 3, 4, 4, dtype=torch.int32), r"'grad' must be a floating-point"),
    ("complex", torch.zeros(2, 3, 3, 4, 4, dtype=torch.complex128), r"'grad' must be a floating-point"),
]


@pytest.mark.parametrize("name,grad,match", BAD_GRAD, ids=[b[0] for b in BAD_GRAD])
def test_cell_similarity_backward_bad_grad(name, grad, match):
    with pytest.raises(ERRORS, match=match):
        torch.ops.hatch.cell_similarity_backward(grad, EMB)


def test_cell_similarity_backward_devices():
    grad = torch.zeros(2, 3, 3, 4, 4, dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match=r"'grad' is on meta but 'emb' is on cpu"):
        torch.ops.hatch.cell_similarity_backward.default.redispatch(CPU_ONLY, grad, EMB)


def test_cell_similarity_no_nan_from_zero_embeddings():
    """All-zero embeddings are normalised by eps (as F.normalize): similarity 0 and finite gradients."""
    emb = torch.zeros(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    out = hatch_ext.cell_similarity(emb)
    assert torch.all(out == 0)
    out.sum().backward()
    assert torch.isfinite(emb.grad).all()
