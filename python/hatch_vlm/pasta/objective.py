"""The PaStA objective on a collated batch: `pasta_loss` (the stage's loss) and `pasta_aux_loss` (λ · that
loss, the auxiliary term of the SFT / GRPO stages).

The loss is `patch_align` (`hatch_vlm.pasta.loss`, the compiled `hatch_ext` op) on the cell embeddings of
`hatch_vlm.pasta.cells.cell_embeddings_for_training`; batches come from `hatch_vlm.pasta.data.PastaCollator`.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from hatch_vlm.utils.distributed import global_mean_loss

from .cells import cell_embeddings_for_training, layout_of
from .config import PastaConfig
from .loss import patch_align


def pasta_loss(model, batch: dict[str, Tensor], config: PastaConfig | None = None,
               return_num_valid: bool = False, adapter=None):
    """The PaStA loss of a collated batch (see `PastaCollator`), differentiable in the vision tower.

    The cell embeddings are cast to float32 for the loss (tiny [B, V, P, D]; keeps bf16 runs exact).
    Mixed batches (`geometry_groups`, see `PastaCollator`) give the mean over the valid rows of all groups.
    With `return_num_valid`: (loss, number of valid rows). This process's rows only: see `global_mean_loss`.
    `adapter`: the model's family adapter, when the caller has resolved it (else looked up per call).
    """
    c = config or PastaConfig(model_dir="", output_dir="")
    if "geometry_groups" in batch:
        return _grouped_pasta_loss(model, batch, c, return_num_valid, adapter)
    depth = batch["depth"]
    emb = cell_embeddings_for_training(model, batch["pixel_values"], layout_of(batch), depth.shape[1],
                                       c.grid, adapter=adapter)
    return _align(emb, depth, batch["K"], batch["cam_to_world"], c, return_num_valid)


def _align(emb: Tensor, depth: Tensor, K: Tensor, T: Tensor, c: PastaConfig, return_num_valid: bool):
    dev = emb.device
    # Outside autocast: under bf16 mixed precision the similarity would otherwise be formed in bf16.
    with torch.autocast(device_type=dev.type, enabled=False):
        return patch_align(emb.float(), depth.to(dev), K.to(dev), T.to(dev), c.grid, c.grid, c.tau_t, c.tau_p,
                           c.abs_tol, c.rel_tol, c.stride, c.min_overlap, return_num_valid=return_num_valid)


def _grouped_pasta_loss(model, batch: dict, c: PastaConfig, return_num_valid: bool, adapter=None):
    """The mean over the valid rows of every (view count, depth size) group of a mixed batch: one vision
    forward for all images, one `patch_align` per group, sums and counts combined."""
    cells = cell_embeddings_for_training(model, batch["pixel_values"], layout_of(batch), 1, c.grid,
                                         adapter=adapter)[:, 0]
    starts = torch.cumsum(batch["num_views"].cpu(), 0) - batch["num_views"].cpu()     # first image per sample
    total, count = None, 0
    for g in batch["geometry_groups"]:
        V = g["depth"].shape[1]
        rows = (starts[g["samples"].cpu()][:, None] + torch.arange(V)).reshape(-1).to(cells.device)
        emb = cells[rows].reshape(len(g["samples"]), V, *cells.shape[1:])
        loss, n = _align(emb, g["depth"], g["K"], g["cam_to_world"], c, True)
        part = loss * n                                   # this group's sum over its valid rows
        total = part if total is None else total + part
        count = count + n
    loss = total / max(float(count), 1.0)
    return (loss, count) if return_num_valid else loss


def pasta_aux_loss(model, batch: dict[str, Tensor], weight: float, config: PastaConfig | None = None,
                   adapter=None) -> Tensor:
    """λ_pasta · PaStA loss, the auxiliary term for the SFT / GRPO stages (paper default λ = 0).

    `batch` holds `pixel_values` and the layout (`image_grid_thw`; InternVL: `image_tiles`) of all the
    batch's images (sample-major, as the processor returns them for the prompts) and the geometry `depth`
    [B, V, Hd, Wd], `K`, `cam_to_world`. With weight 0 nothing is computed and a zero scalar (no graph) is
    returned. Under a multi-process launch it is a collective (see
    `hatch_vlm.utils.distributed.global_mean_loss`): every rank must call it in the same step.
    """
    if weight == 0:
        return torch.zeros((), device=batch["pixel_values"].device)
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"pasta_aux_loss: weight must be a finite number >= 0, got {weight}")
    needed = ("pixel_values", "num_views") if "geometry_groups" in batch else (
        "pixel_values", "depth", "K", "cam_to_world")
    missing = [k for k in needed if k not in batch]
    if "image_grid_thw" not in batch and "image_tiles" not in batch:       # the adapter's layout
        missing.append("image_grid_thw (or image_tiles)")
    if missing:
        raise KeyError(f"pasta_aux_loss: batch lacks {missing} (needs the images' processor outputs and "
                       "the samples' depth, K, cam_to_world)")
    loss, num_valid = pasta_loss(model, batch, config, return_num_valid=True, adapter=adapter)
    # Under several processes: the mean over the valid rows of the global batch (every rank calls this in
    # the same micro-step, as the SFT / GRPO trainers' compute_loss does).
    loss, _ = global_mean_loss(loss, num_valid)
    return weight * loss
