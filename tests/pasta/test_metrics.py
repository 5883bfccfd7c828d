"""The correspondence metric against hand-built embeddings and overlaps."""
import math

import torch

from hatch_vlm.pasta.metrics import correspondence_metrics, match_statistics
from hatch_vlm.data.synthetic import generate
from hatch_vlm.pasta.scenes import textured_room_samples


def _diagonal_overlap(P, strength=0.6):
    """M for 2 views where cell i of either view mostly lands in cell i of the other (S argmax = i)."""
    M = torch.zeros(1, 2, 2, P, P, dtype=torch.float64)
    base = torch.full((P, P), (1 - strength) / (2 * P), dtype=torch.float64) + torch.eye(P) * strength
    M[0, 0, 1] = base
    M[0, 1, 0] = base.T
    return M


def test_perfect_and_permuted_matches():
    P = 9
    M = _diagonal_overlap(P)
    eye = torch.eye(P, dtype=torch.float64)
    perfect = torch.stack([eye, eye])[None]                      # e[a, i] = onehot(i)
    st = match_statistics(perfect, M)
    assert st["hit"].numel() == 2 * P and st["hit"].all()
    assert (st["rank"] == 1).all()
    torch.testing.assert_close(st["chance"], torch.full((2 * P,), 1 / P, dtype=torch.float64))

    # View 1's cell j gets the embedding of onehot(perm[j]): row (0->1, i) predicts j with perm[j] = i,
    # row (1->0, j) predicts perm[j]; a hit iff that is the diagonal, i.e. a fixed point of perm.
    perm = torch.tensor([0, 2, 1, 3, 5, 4, 6, 8, 7])
    emb = torch.stack([eye, eye[perm]])[None]
    st = match_statistics(emb, M)
    fixed = (perm == torch.arange(P)).sum().item()
    assert st["hit"].sum().item() == 2 * fixed
    # Ranks: the geometric match j = i has cosine 0 unless fixed, below the one cosine-1 cell: rank 2 with
    # ties at 0 not counted (strictly greater), so rank is 1 for fixed points and 2 otherwise.
    assert st["rank"].double().mean().item() == (2 * fixed * 1 + 2 * (P - fixed) * 2) / (2 * P)


def test_invalid_rows_are_skipped_and_ties_count():
    P = 4
    M = _diagonal_overlap(P)
    # Row (0->1, 2) of S = (M[0,1] + M[1,0]^T)/2 is empty when M[0,1,2,:] and M[1,0,:,2] are: invalid.
    M[0, 0, 1, 2] = 0
    M[0, 1, 0, :, 2] = 0
    # Row (0->1, 3) of S becomes [0, 0, 0.2, 0.2]: cells 2 and 3 tie for the geometric match.
    M[0, 0, 1, 3] = torch.tensor([0.0, 0.0, 0.4, 0.4], dtype=torch.float64)
    M[0, 1, 0, :, 3] = 0
    eye = torch.eye(P, dtype=torch.float64)
    emb = torch.stack([eye, eye[[0, 1, 3, 2]]])[None]   # view 1 cell 2 looks like view 0 cell 3
    st = match_statistics(emb, M)
    assert st["hit"].numel() == 2 * P - 1
    # Valid rows in order: (0->1, 0), (0->1, 1), (0->1, 3), then (1->0, 0..3).
    tie_row = 2
    assert st["hit"][tie_row]                            # predicted cell 2 is tied best: a hit
    assert math.isclose(st["chance"][tie_row].item(), 2 / P)
    # (1->0, j) predicts perm[j]: j = 2 -> 3 with S = (0 + 0.4)/2, the row max (hit); j = 3 -> 2 with
    # S = 0 while S[1,0,3,3] = 0.2 (miss).
    assert st["hit"].tolist() == [True, True, True, True, True, True, False]


def test_correspondence_metrics_on_tiny_model(tiny):
    model, processor = tiny
    for samples in (generate(3, views=2, size=112, seed=77), textured_room_samples(1, seed=77)):
        m = correspondence_metrics(model, processor, samples, grid=4, batch_size=2)
        assert m["num_rows"] > 0
        assert 0 <= m["top1"] <= 1 and 1 <= m["mean_rank"] <= 16
        assert m["chance_rank"] == 8.5 and 1 / 16 <= m["chance_top1"] < 0.2
        assert not model.training
