"""Data of the PaStA stage: its scenes (`make_samples`) and the batches the loss reads (`PastaCollator`)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from hatch_vlm.data.record import Sample

from .cells import processor_inputs
from .config import PastaConfig
from .metrics import geometry_groups, geometry_tensors


def make_samples(config: PastaConfig, num: int, seed: int) -> list[Sample]:
    """Scenes for the stage from the configured source.

    `config.data` "auto" uses `hatch_vlm.data.synthetic` when it imports and falls back to the toy rooms of
    `hatch_vlm.pasta.scenes` otherwise; "synthetic" requires it (the ImportError propagates)."""
    source = config.data
    if source in ("auto", "synthetic"):
        try:
            from hatch_vlm.data import synthetic  # noqa: F401
        except ImportError:
            if source == "synthetic":
                raise
            source = "toy_room"
        else:
            source = "synthetic"
    if source == "synthetic":
        return _synthetic_samples(config, num, seed)
    from .scenes import textured_room_samples

    return textured_room_samples(num, views=config.views, size=config.image_size, seed=seed)


def near_tasks() -> tuple[str, ...]:
    """Question families whose camera layout ("near") guarantees overlapping views."""
    from hatch_vlm.data import questions

    return tuple(t for t, fam in questions.FAMILIES.items() if fam.mode == "near")


def _synthetic_samples(config: PastaConfig, num: int, seed: int) -> list[Sample]:
    from tqdm.auto import tqdm

    from hatch_vlm.data.synthetic import SceneConfig, iter_samples

    tasks = tuple(config.synthetic_tasks) if config.synthetic_tasks else near_tasks()
    scene_cfg = SceneConfig(views=config.views, size=config.image_size, tasks=tasks)
    return list(tqdm(iter_samples(num, seed=seed, config=scene_cfg), total=num,
                     desc=f"synthetic scenes (seed {seed})", leave=False, disable=None))


class PastaCollator:
    """Samples -> {pixel_values, image_grid_thw, depth, K, cam_to_world} (all views, sample-major).

    When the samples differ in view count or depth size, `depth` / `K` / `cam_to_world` are replaced by
    `geometry_groups`: one {"samples", "depth", "K", "cam_to_world"} per group (see `geometry_groups`) and
    `num_views` [B]; the loss is then the mean over the valid rows of all groups."""

    def __init__(self, processor, adapter=None):
        self.processor = processor
        self.adapter = adapter          # the model's family adapter, when the stage resolved it

    def __call__(self, samples: Sequence[Sample]) -> dict[str, Tensor]:
        samples = list(samples)
        batch = processor_inputs(self.processor, samples, self.adapter)
        groups = geometry_groups(samples)
        if len(groups) == 1:
            batch["depth"], batch["K"], batch["cam_to_world"] = geometry_tensors(samples)
            return batch
        batch["num_views"] = torch.tensor([s.num_views for s in samples])
        batch["geometry_groups"] = []
        for idx in groups:
            d, K, T = geometry_tensors([samples[k] for k in idx])
            batch["geometry_groups"].append({"samples": torch.tensor(idx), "depth": d, "K": K, "cam_to_world": T})
        return batch
