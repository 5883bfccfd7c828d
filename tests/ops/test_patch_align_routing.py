"""hatch_ext.ops.patch_align keeps the dense overlap for backward when it is small (a gradient is needed,
B*V*V*P*P float32 <= DENSE_OVERLAP_MAX_BYTES) and uses the fused op otherwise: same loss, same gradient."""
import pytest
import torch

import hatch_ext.ops as ops
from hatch_ext.testing import room_scene


def _scene_and_emb(grid, dtype=torch.float64, seed=0):
    s = room_scene(B=2, V=3, H=24, W=28, seed=seed, dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(2, 3, grid * grid, 8, generator=g, dtype=dtype, requires_grad=True)
    return s, emb


@pytest.mark.parametrize("grid", [2, 4])
def test_both_paths_give_the_same_loss_and_gradient(grid, monkeypatch):
    s, emb = _scene_and_emb(grid)
    args = (s.depth, s.K, s.cam_to_world, grid)
    assert ops.keeps_dense_overlap(emb, s.depth, grid, grid)
    kept, n_kept = ops.patch_align(emb, *args, return_num_valid=True)
    (g_kept,) = torch.autograd.grad(kept, emb)
    monkeypatch.setattr(ops, "DENSE_OVERLAP_MAX_BYTES", 0)            # force the fused op
    assert not ops.keeps_dense_overlap(emb, s.depth, grid, grid)
    fused, n_fused = ops.patch_align(emb, *args, return_num_valid=True)
    (g_fused,) = torch.autograd.grad(fused, emb)
    assert int(n_kept) == int(n_fused) > 0
    torch.testing.assert_close(kept, fused, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_kept, g_fused, rtol=1e-10, atol=1e-12)


def test_the_kept_path_passes_gradcheck():
    s, emb = _scene_and_emb(2)
    assert ops.keeps_dense_overlap(emb, s.depth, 2, 2)
    torch.autograd.gradcheck(lambda e: ops.patch_align(e, s.depth, s.K, s.cam_to_world, 2), (emb,))


def test_when_the_overlap_is_kept():
    s, emb = _scene_and_emb(4)
    assert ops.keeps_dense_overlap(emb, s.depth, 4, 4)
    assert not ops.keeps_dense_overlap(emb.detach(), s.depth, 4, 4)       # no gradient: fused forward
    with torch.no_grad():
        assert not ops.keeps_dense_overlap(emb, s.depth, 4, 4)
    assert not ops.keeps_dense_overlap(emb, s.depth, 3, 3)                 # bad shapes: the fused op's checks
    assert not ops.keeps_dense_overlap(emb[:1], s.depth, 4, 4)
    big = torch.zeros(2, 4, 32 * 32, 8, requires_grad=True)               # P = 1024: 128 MiB dense
    assert not ops.keeps_dense_overlap(big, torch.zeros(2, 4, 64, 64), 32, 32)
    with pytest.raises(ValueError, match="emb"):                          # errors still name the argument
        ops.patch_align(emb[:1], s.depth, s.K, s.cam_to_world, 4)
