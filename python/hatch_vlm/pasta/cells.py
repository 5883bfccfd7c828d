"""Cell embeddings of the vision tower, pooled to the PaStA grid (docs/design.md), for every supported family.

The model's adapter (`hatch_vlm.models.adapters`, docs/adapters.md) gives, per image, its merged tokens in
raster order over an h x w grid that covers the whole image (Qwen2.5-VL: 28-px tokens of the resized image;
Qwen3-VL: 32-px; InternVL: the tiles' grids stitched, thumbnail left out). Token (r, c) belongs to cell
(floor(r*n_h/h), floor(c*n_w/w)); a cell's embedding is the mean of its tokens. Cells are fractions of the
image, so the same grid on the depth map (at its own resolution) covers the same part of the scene.

Image inputs are `pixel_values` plus the adapter's per-image layout (`image_grid_thw` for the Qwen families,
`image_tiles` for InternVL; the functions below take it as `image_grid_thw` / `layout`).

`cell_embeddings` (samples) and `cell_embeddings_from_pixels` (processor outputs) call the vision tower
directly; `cell_embeddings_for_training` goes through a distributed wrapper's own call, as a training loss
must (DDP / DeepSpeed / FSDP).
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from hatch_vlm.data.record import Sample
from hatch_vlm.models.adapters import ADAPTERS, adapter_for_model, adapter_for_processor


@lru_cache(maxsize=64)
def _pooling_matrix(h: int, w: int, grid_h: int, grid_w: int) -> Tensor:
    """[P, h*w] float32: row i averages the tokens of cell i."""
    rows = torch.arange(h) * grid_h // h
    cols = torch.arange(w) * grid_w // w
    cell = (rows[:, None] * grid_w + cols[None, :]).reshape(-1)
    A = torch.zeros(grid_h * grid_w, h * w)
    A[cell, torch.arange(h * w)] = 1.0
    return A / A.sum(1, keepdim=True)


def pool_tokens(tokens: Tensor, h: int, w: int, grid_h: int, grid_w: int | None = None) -> Tensor:
    """Mean-pool one image's merged tokens `[h*w, D]` (raster order) to cells `[grid_h*grid_w, D]`."""
    grid_w = grid_h if grid_w is None else grid_w
    if tokens.dim() != 2 or tokens.shape[0] != h * w:
        raise ValueError(f"tokens must be [h*w, D] = [{h * w}, D] for a {h}x{w} token grid, "
                         f"got {tuple(tokens.shape)}")
    if not (1 <= grid_h <= h and 1 <= grid_w <= w):
        raise ValueError(f"a {grid_h}x{grid_w} grid needs at least one merged token per cell, but the image "
                         f"has a {h}x{w} token grid; use larger images (processor min_pixels) or a coarser grid")
    A = _pooling_matrix(h, w, grid_h, grid_w).to(device=tokens.device, dtype=tokens.dtype)
    return A @ tokens


# Every function taking a model also takes its `adapter` (hatch_vlm.models.adapters): a stage resolves it once
# and hands it down; left out, it is looked up from the model.
def _adapter(model, adapter):
    return adapter if adapter is not None else adapter_for_model(model)


def core_model(model, adapter=None):
    """The inner `*Model` (vision tower + LLM) inside a ForConditionalGeneration, possibly wrapped by peft."""
    return _adapter(model, adapter).core(model)


def vision_parameters(model, adapter=None) -> list[torch.nn.Parameter]:
    """The parameters that make the cell embeddings (what PaStA trains; see the family's adapter)."""
    return _adapter(model, adapter).vision_parameters(model)


def merged_tokens(model, pixel_values: Tensor, image_grid_thw: Tensor, adapter=None) -> list[Tensor]:
    """Per image, its merged tokens `[h*w, D_out]` in raster order (D_out = LLM hidden size)."""
    return [g.tokens for g in _adapter(model, adapter).token_grids(model, pixel_values, image_grid_thw)]


def processor_inputs(processor, samples: Sequence[Sample], adapter=None) -> dict[str, Tensor]:
    """pixel_values and the per-image layout (Qwen: `image_grid_thw`, InternVL: `image_tiles`) for every view
    of every sample (sample-major, view order)."""
    images = [Image.fromarray(np.asarray(img, dtype=np.uint8)) for s in samples for img in s.images]
    if not images:
        raise ValueError("no images: samples is empty or has no views")
    return (adapter if adapter is not None else adapter_for_processor(processor)).image_inputs(processor, images)


def layout_of(batch: dict) -> Tensor:
    """The per-image layout tensor of a batch made by `processor_inputs` (whatever the family)."""
    keys = list(dict.fromkeys(a.layout_key for a in ADAPTERS))      # image_grid_thw, image_tiles
    for key in keys:
        if key in batch:
            return batch[key]
    raise KeyError(f"batch has no image layout (one of {keys})")


def cell_embeddings_from_pixels(model, pixel_values: Tensor, image_grid_thw: Tensor, num_views: int,
                                grid_h: int, grid_w: int | None = None, adapter=None) -> Tensor:
    """Cell embeddings `[B, V, P, D_out]` from processor outputs of B*V images (sample-major);
    `image_grid_thw` is the adapter's per-image layout (`image_tiles` for InternVL).

    Images may differ in size (each has its own token grid); all samples must have num_views views.
    """
    grid_w = grid_h if grid_w is None else grid_w
    n_img = image_grid_thw.shape[0]
    if num_views < 1 or n_img % num_views:
        raise ValueError(f"{n_img} images cannot be split into samples of num_views={num_views} views")
    grids = _adapter(model, adapter).token_grids(model, pixel_values, image_grid_thw)
    emb = torch.stack([pool_tokens(g.tokens, g.h, g.w, grid_h, grid_w) for g in grids])
    return emb.reshape(n_img // num_views, num_views, grid_h * grid_w, emb.shape[-1])


def cell_embeddings(model, processor, samples: Sequence[Sample], grid_h: int,
                    grid_w: int | None = None, adapter=None) -> Tensor:
    """Cell embeddings `[B, V, P, D_out]` of B samples with V views each, any image size."""
    views = {s.num_views for s in samples}
    if len(views) != 1:
        raise ValueError(f"all samples of a batch must have the same number of views, got {sorted(views)}")
    inputs = processor_inputs(processor, samples, adapter)
    return cell_embeddings_from_pixels(model, inputs["pixel_values"], layout_of(inputs), views.pop(), grid_h,
                                       grid_w, adapter)


def _unwrap(model):
    """The model inside distributed wrappers (DDP's and DeepSpeed's engine keep it in `.module`)."""
    while isinstance(model, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel) or (
            type(model).__name__ == "DeepSpeedEngine"):
        model = model.module
    return model


def cell_embeddings_for_training(model, pixel_values: Tensor, image_grid_thw: Tensor, num_views: int,
                                 grid_h: int, grid_w: int | None = None, adapter=None) -> Tensor:
    """Cell embeddings `[B, V, P, D_out]` (see `cell_embeddings_from_pixels`) of a possibly wrapped model,
    through the model's own call when training is distributed.

    DDP syncs gradients only for a forward that went through its wrapper, DeepSpeed's engine likewise, and
    FSDP gathers sharded parameters in hooks of the modules' calls. The embeddings are not the model's
    `forward`, so for this one call the inner model's `forward` is shadowed by an instance attribute that
    computes them, and the outermost module (the wrapper, or the FSDP root) is called.
    """
    import torch.distributed as dist

    grid_w = grid_h if grid_w is None else grid_w
    inner = _unwrap(model)
    if inner is model and not (dist.is_available() and dist.is_initialized()):
        return cell_embeddings_from_pixels(model, pixel_values, image_grid_thw, num_views, grid_h, grid_w, adapter)

    def embed(pixel_values, image_grid_thw):
        return cell_embeddings_from_pixels(inner, pixel_values, image_grid_thw, num_views, grid_h, grid_w, adapter)

    # Someone may have installed an instance `forward` already (TRL's GRPOTrainer does, for its fused LM
    # head): put it back afterwards rather than deleting ours.
    shadowed = inner.__dict__.get("forward")
    inner.forward = embed
    try:
        return model(pixel_values=pixel_values, image_grid_thw=image_grid_thw)
    finally:
        if shadowed is None:
            del inner.forward
        else:
            inner.forward = shadowed
