"""A SPAR-7M-RGBD tree at real frame sizes, for rehearsing a config whose `data.path` is not on this machine.

Synthetic rooms (hatch_vlm.data.synthetic) rendered small and resized to ScanNet's frame sizes: colour
1296 x 968, depth 640 x 480 with K in depth-map pixels (as SPAR-7M ships ScanNet), written by the same
writer `hatch-vlm data synth` uses, so the data pipeline (selection, lazy decoding, markers, the processor's
resizing to `model.max_pixels`) runs at the cost of real frames. The questions are the synthetic ones, filed
under one SPAR multi-view task (`TASK`, which draws no markers: the synthetic records carry none); the
rehearsal measures cost, not accuracy.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

COLOR = (968, 1296)        # H, W of a ScanNet colour frame in SPAR-7M
DEPTH = (480, 640)         # H, W of its depth map
SOURCE = "scannet"         # depth written in millimetres: the recipe's depth_scale {scannet: 0.001} applies
TASK = "view_change_infer"  # a SPAR multi-view task (data.tasks: [multi_view]) that draws no markers


def upsample(sample, color=COLOR, depth=DEPTH):
    """The sample at the given frame sizes: colour bilinear, depth nearest, K scaled to the depth map."""
    from PIL import Image

    h0, w0 = sample.depth.shape[1:]
    images = [np.asarray(Image.fromarray(np.asarray(im, np.uint8)).resize((color[1], color[0]), Image.BILINEAR))
              for im in sample.images]
    rows = (np.arange(depth[0]) * h0 // depth[0])
    cols = (np.arange(depth[1]) * w0 // depth[1])
    d = sample.depth[:, rows][:, :, cols].astype(np.float32)
    K = np.array(sample.K, dtype=np.float64)
    sx, sy = depth[1] / w0, depth[0] / h0
    K[:, 0, :] *= sx
    K[:, 1, :] *= sy
    return replace(sample, images=images, depth=d, K=K, source=SOURCE, task=TASK)


def write_stand_in(root: str | Path, num: int, views: int, seed: int = 0, split: str = "train") -> Path:
    """`num` samples of `views` views under root/scannet/ (the spar/ layout); returns root. Reuses a complete
    tree with the same settings."""
    import json

    from hatch_vlm.data.spar7m.writer import SparWriter
    from hatch_vlm.data.synthetic import SceneConfig, iter_samples
    from hatch_vlm.utils.io import atomic_directory

    root = Path(root)
    stamp = {"num": num, "views": views, "seed": seed, "split": split, "color": COLOR, "depth": DEPTH}
    marker = root / "stand_in.json"
    if marker.is_file() and json.loads(marker.read_text()) == json.loads(json.dumps(stamp)):
        return root
    if root.exists():
        import shutil

        shutil.rmtree(root)
    with atomic_directory(root) as tmp:
        with SparWriter(tmp, source=SOURCE, split=split) as writer:
            for s in iter_samples(num, seed=seed, config=SceneConfig(views=views, size=224)):
                writer.add(upsample(s))
        (tmp / "stand_in.json").write_text(json.dumps(stamp))
    return root
