"""Fake (meta) and autograd registrations for every hatch op, so the ops work under torch.compile and
in training. The kernels (csrc/) compute; this file only describes shapes and wires backward ops."""
from __future__ import annotations

import math

import torch
from torch.library import register_autograd, register_fake


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------------------- fakes
# Every kernel returns freshly allocated contiguous tensors, whatever the strides of its inputs, so
# every fake does too: `new_empty` (contiguous, the input's dtype and device), never `empty_like`
# (which keeps a non-contiguous input's strides and so disagrees with the kernel under torch.compile).
def _contiguous_like(t):
    return t.new_empty(t.shape)


def _check_one_device(op, ref_name, ref, **tensors):
    """The kernels check this too, but a mix with a meta tensor dispatches here, not to them."""
    for name, t in tensors.items():
        torch._check_value(
            t.device == ref.device,
            lambda: f"hatch.{op}: argument '{name}' is on {t.device} but '{ref_name}' is on "  # noqa: B023
                    f"{ref.device}; all tensors must be on one device")


@register_fake("hatch::patch_overlap")
def _patch_overlap_fake(depth, K, cam_to_world, grid_h, grid_w, abs_tol, rel_tol, stride):
    torch._check(depth.dim() == 4, lambda: "hatch.patch_overlap: 'depth' must be [B, V, H, W]")
    _check_one_device("patch_overlap", "depth", depth, K=K, cam_to_world=cam_to_world)
    B, V = depth.shape[0], depth.shape[1]
    P = grid_h * grid_w
    return depth.new_empty((B, V, V, P, P))


@register_fake("hatch::cell_similarity")
def _cell_similarity_fake(emb):
    torch._check(emb.dim() == 4, lambda: "hatch.cell_similarity: 'emb' must be [B, V, P, D]")
    B, V, P, _ = emb.shape
    return emb.new_empty((B, V, V, P, P))


@register_fake("hatch::cell_similarity_backward")
def _cell_similarity_backward_fake(grad, emb):
    _check_one_device("cell_similarity_backward", "emb", emb, grad=grad)
    return _contiguous_like(emb)


def _loss_outputs(emb):
    torch._check(emb.dim() == 4, lambda: "hatch: 'emb' must be [B, V, P, D]")
    B, V, P, _ = emb.shape
    loss = emb.new_empty(())
    row_lse = emb.new_empty((B, V, V, P), dtype=_acc(emb.dtype))
    num_valid = emb.new_empty((), dtype=torch.long)
    return loss, row_lse, num_valid


def _check_loss_params(op, tau_t, tau_p, min_overlap):
    """As the kernels' check_loss_params (csrc/common/checks.cpp), for meta / fake tensors."""
    torch._check_value(math.isfinite(tau_t) and tau_t > 0,
                       lambda: f"hatch.{op}: tau_t (target temperature) must be finite and > 0, got {tau_t}")
    torch._check_value(math.isfinite(tau_p) and tau_p > 0,
                       lambda: f"hatch.{op}: tau_p (prediction temperature) must be finite and > 0, "
                               f"got {tau_p}")
    torch._check_value(math.isfinite(min_overlap) and min_overlap >= 0,
                       lambda: f"hatch.{op}: min_overlap must be finite and >= 0, got {min_overlap}")


@register_fake("hatch::soft_infonce")
def _soft_infonce_fake(emb, overlap, tau_t, tau_p, min_overlap):
    _check_one_device("soft_infonce", "emb", emb, overlap=overlap)
    _check_loss_params("soft_infonce", tau_t, tau_p, min_overlap)
    return _loss_outputs(emb)


@register_fake("hatch::soft_infonce_backward")
def _soft_infonce_backward_fake(grad_loss, emb, overlap, row_lse, num_valid, tau_t, tau_p, min_overlap):
    _check_one_device("soft_infonce_backward", "emb", emb, grad_loss=grad_loss, overlap=overlap,
                      row_lse=row_lse, num_valid=num_valid)
    _check_loss_params("soft_infonce_backward", tau_t, tau_p, min_overlap)
    return _contiguous_like(emb)


@register_fake("hatch::patch_align")
def _patch_align_fake(emb, depth, K, cam_to_world, grid_h, grid_w, tau_t, tau_p, abs_tol, rel_tol,
                      stride, min_overlap):
    _check_one_device("patch_align", "depth", depth, emb=emb, K=K, cam_to_world=cam_to_world)
    _check_loss_params("patch_align", tau_t, tau_p, min_overlap)
    return _loss_outputs(emb)


@register_fake("hatch::patch_align_backward")
def _patch_align_backward_fake(grad_loss, emb, depth, K, cam_to_world, row_lse, num_valid, grid_h,
                               grid_w, tau_t, tau_p, abs_tol, rel_tol, stride, min_overlap):
    _check_one_device("patch_align_backward", "depth", depth, emb=emb, K=K,
                      cam_to_world=cam_to_world, grad_loss=grad_loss, row_lse=row_lse,
                      num_valid=num_valid)
    _check_loss_params("patch_align_backward", tau_t, tau_p, min_overlap)
    return _contiguous_like(emb)


# -------------------------------------------------------------------------------------- autograd
def _cell_similarity_setup(ctx, inputs, output):
    (emb,) = inputs
    ctx.save_for_backward(emb)


def _cell_similarity_backward(ctx, grad):
    (emb,) = ctx.saved_tensors
    return torch.ops.hatch.cell_similarity_backward(grad.contiguous(), emb)


register_autograd("hatch::cell_similarity", _cell_similarity_backward,
                  setup_context=_cell_similarity_setup)


def _soft_infonce_setup(ctx, inputs, output):
    emb, overlap, tau_t, tau_p, min_overlap = inputs
    _, row_lse, num_valid = output
    ctx.save_for_backward(emb, overlap, row_lse, num_valid)
    ctx.params = (tau_t, tau_p, min_overlap)


def _soft_infonce_backward(ctx, grad_loss, _grad_lse, _grad_num_valid):
    emb, overlap, row_lse, num_valid = ctx.saved_tensors
    grad_emb = torch.ops.hatch.soft_infonce_backward(
        grad_loss, emb, overlap, row_lse, num_valid, *ctx.params)
    # The overlap is geometry-derived supervision: not differentiated.
    return grad_emb, None, None, None, None


register_autograd("hatch::soft_infonce", _soft_infonce_backward, setup_context=_soft_infonce_setup)


def _patch_align_setup(ctx, inputs, output):
    (emb, depth, K, cam_to_world, grid_h, grid_w, tau_t, tau_p, abs_tol, rel_tol, stride,
     min_overlap) = inputs
    _, row_lse, num_valid = output
    ctx.save_for_backward(emb, depth, K, cam_to_world, row_lse, num_valid)
    ctx.params = (grid_h, grid_w, tau_t, tau_p, abs_tol, rel_tol, stride, min_overlap)


def _patch_align_backward(ctx, grad_loss, _grad_lse, _grad_num_valid):
    emb, depth, K, cam_to_world, row_lse, num_valid = ctx.saved_tensors
    grad_emb = torch.ops.hatch.patch_align_backward(
        grad_loss, emb, depth, K, cam_to_world, row_lse, num_valid, *ctx.params)
    return (grad_emb,) + (None,) * 11


register_autograd("hatch::patch_align", _patch_align_backward, setup_context=_patch_align_setup)
