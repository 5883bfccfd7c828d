"""Cell embeddings of the Qwen2.5-VL vision tower, pooled to the PaStA grid (docs/design.md).

`get_image_features` gives, per image, its merged tokens (28 px each) in raster order over an h x w grid
(h = H'/28, w = W'/28 for the processor's resized size H' x W'). Token (r, c) belongs to cell
(floor(r*n_h/h), floor(c*n_w/w)); a cell's embedding is the mean of its tokens. Cells are fractions of the
image, so the same grid on the depth map (at its own resolution) covers the same part of the scene.

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
                         f"has a {h}x{w} token grid (resized {28 * h}x{28 * w} px); use larger images "
                         "(processor min_pixels) or a coarser grid")
    A = _pooling_matrix(h, w, grid_h, grid_w).to(device=tokens.device, dtype=tokens.dtype)
    return A @ tokens


def core_model(model):
    """The `Qwen2_5_VLModel` inside a ForConditionalGeneration, possibly wrapped by peft."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    inner = getattr(model, "model", model)
    if not hasattr(inner, "get_image_features"):
        raise TypeError(f"{type(model).__name__} has no get_image_features: expected a Qwen2.5-VL model")
    return inner


def merged_tokens(model, pixel_values: Tensor, image_grid_thw: Tensor) -> list[Tensor]:
    """Per image, its merged tokens `[h*w, D_out]` in raster order (D_out = LLM hidden size)."""
    core = core_model(model)
    param = next(core.visual.parameters())
    pixel_values = pixel_values.to(device=param.device, dtype=param.dtype)
    out = core.get_image_features(pixel_values=pixel_values, image_grid_thw=image_grid_thw.to(param.device))
    feats = out.pooler_output if hasattr(out, "pooler_output") else out
    if isinstance(feats, Tensor):   # older transformers: one concatenated tensor
        merge = core.visual.spatial_merge_size
        counts = (image_grid_thw.prod(-1) // merge**2).tolist()
        feats = torch.split(feats, counts)
    return list(feats)


def processor_inputs(processor, samples: Sequence[Sample]) -> dict[str, Tensor]:
    """pixel_values / image_grid_thw for every view of every sample (sample-major, view order)."""
    images = [Image.fromarray(np.asarray(img, dtype=np.uint8)) for s in samples for img in s.images]
    if not images:
        raise ValueError("no images: samples is empty or has no views")
    out = processor.image_processor(images=images, return_tensors="pt")
    return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}


def cell_embeddings_from_pixels(model, pixel_values: Tensor, image_grid_thw: Tensor, num_views: int,
                                grid_h: int, grid_w: int | None = None) -> Tensor:
    """Cell embeddings `[B, V, P, D_out]` from processor outputs of B*V images (sample-major).

    Images may differ in size (each has its own token grid); all samples must have num_views views.
    """
    grid_w = grid_h if grid_w is None else grid_w
    n_img = image_grid_thw.shape[0]
    if num_views < 1 or n_img % num_views:
        raise ValueError(f"{n_img} images cannot be split into samples of num_views={num_views} views")
    merge = core_model(model).visual.spatial_merge_size
    tokens = merged_tokens(model, pixel_values, image_grid_thw)
    cells = []
    for tok, (t, gh, gw) in zip(tokens, image_grid_thw.tolist()):
        if t != 1:
            raise ValueError(f"expected still images (grid t = 1), got image_grid_thw t = {t}")
        cells.append(pool_tokens(tok, gh // merge, gw // merge, grid_h, grid_w))
    emb = torch.stack(cells)
    return emb.reshape(n_img // num_views, num_views, grid_h * grid_w, emb.shape[-1])


def cell_embeddings(model, processor, samples: Sequence[Sample], grid_h: int,
                    grid_w: int | None = None) -> Tensor:
    """Cell embeddings `[B, V, P, D_out]` of B samples with V views each, any image size."""
    views = {s.num_views for s in samples}
    if len(views) != 1:
        raise ValueError(f"all samples of a batch must have the same number of views, got {sorted(views)}")
    inputs = processor_inputs(processor, samples)
    return cell_embeddings_from_pixels(model, inputs["pixel_values"], inputs["image_grid_thw"],
                                       views.pop(), grid_h, grid_w)


def _unwrap(model):
    """The model inside distributed wrappers (DDP's and DeepSpeed's engine keep it in `.module`)."""
    while isinstance(model, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel) or (
            type(model).__name__ == "DeepSpeedEngine"):
        model = model.module
    return model


def cell_embeddings_for_training(model, pixel_values: Tensor, image_grid_thw: Tensor, num_views: int,
                                 grid_h: int, grid_w: int | None = None) -> Tensor:
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
        return cell_embeddings_from_pixels(model, pixel_values, image_grid_thw, num_views, grid_h, grid_w)

    def embed(pixel_values, image_grid_thw):
        return cell_embeddings_from_pixels(inner, pixel_values, image_grid_thw, num_views, grid_h, grid_w)

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
