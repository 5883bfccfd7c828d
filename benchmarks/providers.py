"""Who computes each op. Every provider takes the very same positional arguments as `hatch_ext.ops`.

    hatch           the fused hatch kernels (`hatch_ext.ops.*`)
    naive           the naive vectorised PyTorch reference (`hatch_ext.reference.*`), eager: the baseline
                    every ratio is taken against
    naive_compiled  the same reference under `torch.compile` (inductor, dynamic=False: compiled once per
                    shape, in the warm-up)
    kornia          patch_overlap only: what a user reaches for instead, kornia's depth unprojection,
                    rigid transform and pinhole projection, then the depth test and the cell histogram in
                    PyTorch (optional extra: `pip install kornia`)
    transformers    vision_tower only: a Qwen2.5-VL-3B-sized vision tower (random weights), the yardstick
                    of the GPU target "PaStA loss <= 5% of the vision tower's fwd+bwd"
"""
from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable

import torch

from .cases import Case, Inputs


class Provider:
    name = ""
    ops: tuple[str, ...] = ("patch_overlap", "cell_similarity", "soft_infonce", "patch_align")
    naive_memory = False    # runs the naive reference: subject to the naive memory limit

    def skip_reason(self, case: Case, device: torch.device) -> str | None:
        """Why this provider cannot run the case here (None: it can)."""
        if case.op not in self.ops:
            return f"{self.name} has no {case.op}"
        return None

    def make(self, case: Case) -> Callable:
        raise NotImplementedError


class Hatch(Provider):
    name = "hatch"

    def skip_reason(self, case, device):
        reason = super().skip_reason(case, device)
        if reason is None and device.type == "cuda":
            import hatch_ext

            if not hatch_ext.has_cuda_kernels():
                return "hatch_ext was built without CUDA kernels"
        return reason

    def make(self, case):
        import hatch_ext.ops

        return getattr(hatch_ext.ops, case.op)


class Naive(Provider):
    name = "naive"
    naive_memory = True

    def make(self, case):
        from hatch_ext import reference

        return getattr(reference, case.op)


class NaiveCompiled(Naive):
    name = "naive_compiled"

    def skip_reason(self, case, device):
        reason = super().skip_reason(case, device)
        if reason is None and device.type == "cpu" and not (shutil.which("c++") or shutil.which("g++")):
            return "torch.compile (inductor) on CPU needs a C++ compiler; none found"
        return reason

    def make(self, case):
        return torch.compile(super().make(case), dynamic=False)


def kornia_patch_overlap(depth, K, cam_to_world, grid_h=4, grid_w=None, abs_tol=0.05, rel_tol=0.05,
                         stride=1):
    """patch_overlap written with kornia's geometry functions, the way a kornia user would: unproject
    every pixel (depth_to_3d_v2), move it into every other camera (transform_points with
    T_c^-1 T_a), project (project_points), then nearest-pixel depth test and cell histogram in PyTorch.
    Same math and output as `hatch_ext.reference.patch_overlap` (docs/design.md)."""
    from kornia.geometry.camera.perspective import project_points
    from kornia.geometry.depth import depth_to_3d_v2
    from kornia.geometry.linalg import inverse_transformation, transform_points

    from hatch_ext.reference import overlap_from_projection, taking_part

    grid_w = grid_h if grid_w is None else grid_w
    B, V, H, W = depth.shape
    N, dt = H * W, depth.dtype
    K, T = K.to(dt), cam_to_world.to(dt)
    valid = taking_part(depth, stride)
    d = torch.where(valid, depth, torch.zeros_like(depth))

    # kornia wants one batch dim: (B*V, H, W) depth with (B*V, 3, 3) intrinsics.
    pts = depth_to_3d_v2(d.reshape(B * V, H, W), K.reshape(B * V, 3, 3))            # camera a frame
    pts = pts.reshape(B, V, 1, N, 3).expand(B, V, V, N, 3)
    T_inv = inverse_transformation(T.reshape(B * V, 4, 4)).reshape(B, V, 4, 4)
    T_ca = T_inv[:, None] @ T[:, :, None]                                           # [B, V(a), V(c), 4, 4]
    X_c = transform_points(T_ca.reshape(-1, 4, 4), pts.reshape(-1, N, 3)).reshape(B, V, V, N, 3)
    uv = project_points(X_c, K[:, None, :, None].expand(B, V, V, 1, 3, 3))         # [B, V, V, N, 2]
    return overlap_from_projection(depth, valid, X_c[..., 2], uv[..., 0], uv[..., 1], grid_h, grid_w,
                                   abs_tol, rel_tol)


class Kornia(Provider):
    name = "kornia"
    ops = ("patch_overlap",)

    def skip_reason(self, case, device):
        reason = super().skip_reason(case, device)
        if reason is None and importlib.util.find_spec("kornia") is None:
            return "kornia is not installed (optional extra: pip install kornia)"
        return reason

    def make(self, case):
        return kornia_patch_overlap


# Qwen2.5-VL-3B's vision tower (its config.json "vision_config").
QWEN25_VL_3B_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                           out_hidden_size=2048, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
                           hidden_act="silu", in_channels=3)


class Transformers(Provider):
    name = "transformers"
    ops = ("vision_tower",)

    def skip_reason(self, case, device):
        reason = super().skip_reason(case, device)
        if reason is None and device.type != "cuda":
            return "the vision tower yardstick runs on CUDA only (too slow for CPU)"
        return reason

    def make_with_inputs(self, case: Case, device: torch.device) -> tuple[Callable, Inputs]:
        """The tower in bf16 on `device` and its input: B*V images of H x W pixels (patchified)."""
        from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
            Qwen2_5_VisionTransformerPretrainedModel,
        )

        cfg = Qwen2_5_VLVisionConfig(**QWEN25_VL_3B_VISION)
        model = Qwen2_5_VisionTransformerPretrainedModel(cfg).to(device=device, dtype=torch.bfloat16)
        model.train()
        n_img, gh, gw = case.B * case.V, case.H // cfg.patch_size, case.W // cfg.patch_size
        per_patch = cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size ** 2
        g = torch.Generator().manual_seed(0)
        pixels = torch.randn(n_img * gh * gw, per_patch, generator=g).to(device, torch.bfloat16)
        grid_thw = torch.tensor([[1, gh, gw]] * n_img, device=device)

        def tower(x, thw):
            out = model(x, grid_thw=thw)
            hidden = out.pooler_output if getattr(out, "pooler_output", None) is not None else out[0]
            if isinstance(hidden, (tuple, list)):
                hidden = torch.cat(list(hidden))
            return hidden.float().mean()

        # All parameters are leaves: their grads are dropped before every repetition, so each backward
        # allocates them (as the first step of a training run does) and the peak counts them.
        return tower, Inputs((pixels, grid_thw), list(model.parameters()), None)


PROVIDERS: dict[str, Provider] = {p.name: p for p in (Hatch(), Naive(), NaiveCompiled(), Kornia(),
                                                       Transformers())}
BASELINE = "naive"


def get(name: str) -> Provider:
    if name not in PROVIDERS:
        raise ValueError(f"unknown provider {name!r}; expected one of {sorted(PROVIDERS)}")
    return PROVIDERS[name]
