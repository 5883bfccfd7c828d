"""The naive reference itself, on cases whose answer is known by hand (it is the ground truth for
every kernel test, so it must be right on its own)."""
import torch

from hatch_ext import reference as R
from hatch_ext import testing


def test_plane_pair_whole_cell_shift():
    s = testing.plane_pair(H=12, W=16, shift_px=4)
    M = R.patch_overlap(s.depth, s.K, s.cam_to_world, 3, 4)
    expected = torch.zeros(12, 12, dtype=torch.float64)
    for row in range(3):
        for col in range(1, 4):  # column 0 of view 0 falls off the left edge of view 1
            expected[row * 4 + col, row * 4 + col - 1] = 1
    torch.testing.assert_close(M[0, 0, 1], expected)
    torch.testing.assert_close(M[0, 1, 0], expected.T)
    assert M[0, 0, 0].abs().sum() == 0 and M[0, 1, 1].abs().sum() == 0


def test_plane_pair_half_cell_shift():
    s = testing.plane_pair(H=12, W=16, shift_px=2)
    M = R.patch_overlap(s.depth, s.K, s.cam_to_world, 3, 4)
    for row in range(3):
        assert M[0, 0, 1, row * 4 + 0, row * 4 + 0] == 0.5  # 2 of its 4 columns fall off the image
        for col in range(1, 4):
            assert M[0, 0, 1, row * 4 + col, row * 4 + col] == 0.5
            assert M[0, 0, 1, row * 4 + col, row * 4 + col - 1] == 0.5


def test_no_overlap_loss_is_zero_with_zero_grad():
    emb = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    overlap = torch.zeros(2, 3, 3, 6, 6, dtype=torch.float64)
    loss = R.soft_infonce(emb, overlap)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(emb.grad == 0)
