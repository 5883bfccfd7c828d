"""Cross-view correspondence metric of cell embeddings against the depth geometry.

For every valid row (view a, other view c, cell i of a; valid iff sum_j S[a,c,i,j] > min_overlap, with
S = (M + M^T)/2 the symmetric overlap of docs/design.md), the prediction is argmax_j cos(e[a,i], e[c,j]) and the
geometric match is argmax_j S[a,c,i,j]. Reported:

* top1: fraction of valid rows whose predicted cell is a geometric best match (S[pred] equals the row max,
  so exact ties in S count either way);
* mean_rank: mean 1-based rank of the geometric match among the P cells sorted by decreasing cosine
  (1 = perfect, (P+1)/2 = chance);
* chance_top1 = mean over valid rows of (#cells tied at the row max)/P, the top-1 of a uniformly random
  choice; chance_rank = (P+1)/2; num_rows.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from hatch_vlm.data.record import Sample
from hatch_ext.ops import ABS_TOL, GRID, MIN_OVERLAP, REL_TOL, STRIDE

from .cells import cell_embeddings
from .loss import patch_overlap


def symmetric_overlap(overlap: Tensor) -> Tensor:
    """S[a, c] = (M[a, c] + M[c, a]^T) / 2 of an overlap M `[B, V, V, P, P]` (docs/design.md step 3).

    The ops fuse this step into the loss and expose no op for it, so production code forms it here, from
    `hatch_ext.ops.patch_overlap`'s M (the naive reference is a test oracle, never imported by production);
    the same expression as the reference's, so the values are identical (tests/test_layers.py checks it)."""
    return 0.5 * (overlap + overlap.transpose(1, 2).transpose(-1, -2))


def geometry_tensors(samples: Sequence[Sample]) -> tuple[Tensor, Tensor, Tensor]:
    """Stack the samples' depth [B, V, Hd, Wd] (float32), K [B, V, 3, 3], cam_to_world [B, V, 4, 4] (float64)."""
    missing = [s.id or i for i, s in enumerate(samples) if not s.has_geometry]
    if missing:
        raise ValueError(f"PaStA needs depth, K and cam_to_world; samples {missing[:5]} have none")
    shapes = {tuple(s.depth.shape) for s in samples}
    if len(shapes) != 1:
        raise ValueError(f"samples of one batch need depth maps of one shape [V, Hd, Wd], got {sorted(shapes)}")
    depth = torch.stack([torch.as_tensor(s.depth, dtype=torch.float32) for s in samples])
    K = torch.stack([torch.as_tensor(s.K, dtype=torch.float64) for s in samples])
    T = torch.stack([torch.as_tensor(s.cam_to_world, dtype=torch.float64) for s in samples])
    return depth, K, T


def geometry_groups(samples: Sequence[Sample]) -> list[list[int]]:
    """Indices of the samples grouped by (view count, depth-map size), in first-seen order: the shapes one
    patch_overlap / patch_align call can stack (real data mixes 2- to 5-view records and sources' depth sizes)."""
    groups: dict[tuple, list[int]] = {}
    for k, s in enumerate(samples):
        groups.setdefault((s.num_views, None if s.depth is None else tuple(s.depth.shape)), []).append(k)
    return list(groups.values())


def match_statistics(emb: Tensor, overlap: Tensor, min_overlap: float = MIN_OVERLAP) -> dict[str, Tensor]:
    """Per valid row: `hit` (bool), `rank` (1-based), `chance` (tie fraction), from emb [B, V, P, D] and
    overlap M [B, V, V, P, P]."""
    B, V, P, _ = emb.shape
    S = symmetric_overlap(overlap.to(torch.float64))
    off = ~torch.eye(V, dtype=torch.bool, device=S.device)[None, :, :, None]
    valid = (S.sum(-1) > min_overlap) & off                                  # [B, V, V, P]
    e = F.normalize(emb.detach().to(torch.float64), dim=-1)
    cos = torch.einsum("bapd,bcqd->bacpq", e, e)
    pred = cos.argmax(-1, keepdim=True)
    row_max = S.amax(-1, keepdim=True)
    hit = (S.gather(-1, pred) >= row_max).squeeze(-1)
    best = S.argmax(-1, keepdim=True)
    rank = 1 + (cos > cos.gather(-1, best)).sum(-1)
    ties = (S >= row_max).sum(-1).to(torch.float64) / P
    return {"hit": hit[valid], "rank": rank[valid], "chance": ties[valid]}


def correspondence_metrics(model, processor, samples: Sequence[Sample], grid: int = GRID,
                           batch_size: int = 8, abs_tol: float = ABS_TOL, rel_tol: float = REL_TOL,
                           stride: int = STRIDE, min_overlap: float = MIN_OVERLAP, adapter=None) -> dict[str, float]:
    """Top-1 accuracy, mean rank and their chance levels of the model's cell matches on `samples`.

    Args:
        model: a Qwen2.5-VL model (possibly peft-wrapped); run without gradients in eval mode.
        processor: its processor (image sizes follow the processor's bounds).
        samples: samples with geometry (a list or a lazily decoding sequence), `batch_size` at a time;
            samples of different view counts or depth sizes are measured in separate groups.
        grid: n (n x n cells per image).
        adapter: the model's family adapter, when the caller has resolved it.

    Returns:
        {"top1", "mean_rank", "chance_top1", "chance_rank", "num_rows"} (floats; top1 in [0, 1]).
    """
    if not samples:
        raise ValueError("correspondence_metrics needs at least one sample")
    was_training = model.training
    model.eval()
    stats: dict[str, list[Tensor]] = {"hit": [], "rank": [], "chance": []}
    try:
        with torch.no_grad():
            for start in range(0, len(samples), batch_size):
                # decoded once here (samples may decode lazily); mixed view counts / depth sizes in groups
                loaded = list(samples[start:start + batch_size])
                for batch in ([loaded[k] for k in g] for g in geometry_groups(loaded)):
                    emb = cell_embeddings(model, processor, batch, grid, adapter=adapter)
                    depth, K, T = geometry_tensors(batch)
                    M = patch_overlap(depth, K, T, grid, grid, abs_tol, rel_tol, stride)
                    for k, v in match_statistics(emb.cpu(), M.cpu(), min_overlap).items():
                        stats[k].append(v)
    finally:
        model.train(was_training)
    hit, rank, chance = (torch.cat(stats[k]) for k in ("hit", "rank", "chance"))
    n = hit.numel()
    P = grid * grid
    if n == 0:
        return {"top1": float("nan"), "mean_rank": float("nan"), "chance_top1": float("nan"),
                "chance_rank": (P + 1) / 2, "num_rows": 0.0}
    return {"top1": hit.double().mean().item(), "mean_rank": rank.double().mean().item(),
            "chance_top1": chance.mean().item(), "chance_rank": (P + 1) / 2, "num_rows": float(n)}
