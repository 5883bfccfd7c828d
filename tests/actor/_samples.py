"""Small multi-view Samples from random camera poses, for the ActoR training tests.

Stand-in until `hatch_vlm.data.synthetic` lands on main: random poses around a room centre, flat-coloured
images whose colour encodes the view, and a two-option question answerable from the poses.
"""
import numpy as np

from hatch_vlm.geometry import relative_motion
from hatch_vlm.data.record import Sample

from ._poses import look_pose


def random_sample(rng: np.random.Generator, num_views: int, size: int = 112, idx: int = 0) -> Sample:
    poses = []
    for _ in range(num_views):
        pos = [rng.uniform(-3, 3), rng.uniform(-3, 3), rng.uniform(1.2, 1.8)]
        yaw = float(np.degrees(np.arctan2(-pos[1], -pos[0])) + rng.uniform(-40, 40))   # roughly facing the centre
        poses.append(look_pose(pos, yaw, rng.uniform(-20, 10)))
    poses = np.stack(poses)
    images = [np.clip(rng.normal(40 + 60 * v, 30, size=(size, size, 3)), 0, 255).astype(np.uint8)
              for v in range(num_views)]
    rel = relative_motion(poses[0], poses[1])
    answer = "A" if rel.left > 0 else "B"
    return Sample(images=images, cam_to_world=poses, question="Is the camera of image 2 left or right of image 1?",
                  options=["A. Left", "B. Right"], answer=answer, answer_type="mc", task="camera_side",
                  id=f"rand-{idx}")


def random_samples(n: int, seed: int = 0, views=(2, 3)) -> list[Sample]:
    rng = np.random.default_rng(seed)
    return [random_sample(rng, int(rng.choice(views)), idx=k) for k in range(n)]
