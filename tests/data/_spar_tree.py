"""A generated SPAR-7M tree in the real layout for selection / scale tests (many QA lines sharing a few
scenes' frames), written with numpy + PIL + json only (not hatch's writer). The hand-written fixture for
the reader's field-level behaviour is tests/data/fixtures/spar7m."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

K_DEPTH = np.array([[40.0, 0, 31.5, 0], [0, 40.0, 23.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])


def write_scene(images: Path, scene: str, frames=(0, 10, 20), size=(64, 48), depth_mm=1500, seed=0) -> None:
    rng = np.random.default_rng(seed)
    d = images / scene
    for sub in ("image_color", "image_depth", "pose", "intrinsic"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    w, h = size
    for k, f in enumerate(frames):
        Image.fromarray(rng.integers(0, 255, (h * 2, w * 2, 3), dtype=np.uint8)).save(d / f"image_color/{f}.jpg")
        depth = np.full((h, w), depth_mm, np.uint16)
        depth[:, : w // 4] += depth_mm // 3
        Image.fromarray(depth).save(d / f"image_depth/{f}.png")
        pose = np.eye(4)
        pose[0, 3] = 0.1 * k
        np.savetxt(d / f"pose/{f}.txt", pose, fmt="%f")
    np.savetxt(d / "intrinsic/intrinsic_depth.txt", K_DEPTH, fmt="%f")
    K_color = K_DEPTH.copy()
    K_color[:2] *= 2
    np.savetxt(d / "intrinsic/intrinsic_color.txt", K_color, fmt="%f")


def record(i: int, scene: str, task: str, frames=(0, 10), kind: str = "select") -> dict:
    imgs = [f"{scene}/image_color/{f}.jpg" for f in frames]
    if kind == "select":
        q = ("<image>\n" * len(imgs) + f"Question {i}: which point is closer to the camera?\n"
             "A. red\nB. blue\nC. same\nD. unknown\nYour answer can only include one of options A, B, C or D")
        a = "AB"[i % 2]
    else:
        q, a = "<image>\n" * len(imgs) + f"Question {i}: how far (m)?", f"{1 + i % 7 * 0.5}"
    markers = {"depth_prediction_oo_mv": {"point_img_idx": [[0, 1, 1]], "red_point": [[500, 500]],
                                          "blue_point": [[200, 300]], "green_point": [[800, 700]]},
               "depth_prediction_oc": {"red_point": [[400, 400]], "blue_point": [[600, 600]]},
               "position_matching": {"bbox_img_idx": [[0]], "red_bbox": [[100, 200, 400, 600]]}}.get(task, {})
    return {**markers, "id": f"{scene}_{task}_{i}", "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}],
            "image": imgs, "type": task, "depth": [p.replace("image_color", "image_depth").replace(".jpg", ".png")
                                                    for p in imgs]}


def write_tree(root: Path, counts: dict[tuple[str, str, str], int], scenes=("scene0000_00", "scene0001_00"),
               frames_size=(64, 48), depth_mm=1500) -> Path:
    """root = spar/; counts: {(source, task, kind): number of records}. Returns root."""
    sources = {s for s, _, _ in counts}
    for src in sources:
        for k, sc in enumerate(scenes):
            write_scene(root / src / "images", sc, size=frames_size, depth_mm=depth_mm, seed=k)
    for (src, task, kind), n in counts.items():
        d = root / src / "qa_jsonl" / "train" / task / kind
        d.mkdir(parents=True, exist_ok=True)
        frames = {"depth_prediction_oo_mv": (0, 10, 20), "position_matching": (0, 10)}.get(task, (0,))
        with open(d / f"{kind}_{n}.jsonl", "w") as fh:
            for i in range(n):
                fh.write(json.dumps(record(i, scenes[i % len(scenes)], task, frames, kind)) + "\n")
    return root
