"""hatch_vlm.data.synthetic: determinism, conventions, exact geometry, overlap, speed."""
import time

import numpy as np
import pytest
import torch

from hatch_vlm import geometry as geo
from hatch_vlm.data import questions as qs
from hatch_vlm.data.render import cast_rays
from hatch_vlm.data.scene import Scene
from hatch_vlm.data.synthetic import SceneConfig, generate, generate_sample, iter_samples


@pytest.fixture(scope="module")
def samples3():
    return generate(6, views=3, size=64, seed=3)


def test_deterministic_and_independent_of_num():
    cfg = SceneConfig(size=40)
    a = generate_sample(2, seed=7, config=cfg)
    b = list(iter_samples(3, seed=7, config=cfg))[2]
    assert a.id == b.id and a.question == b.question and a.answer == b.answer
    for x, y in zip(a.images, b.images):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.cam_to_world, b.cam_to_world)
    c = generate_sample(2, seed=8, config=cfg)
    assert not np.array_equal(a.depth, c.depth)


def test_sample_conventions(samples3):
    for s in samples3:
        V, S = 3, 64
        assert s.num_views == V and s.has_geometry and s.source == "synthetic"
        assert all(im.shape == (S, S, 3) and im.dtype == np.uint8 for im in s.images)
        assert s.depth.shape == (V, S, S) and s.depth.dtype == np.float32
        assert np.isfinite(s.depth).all() and (s.depth > 0).all()
        assert s.K.shape == (V, 3, 3) and s.cam_to_world.shape == (V, 4, 4)
        geo.validate_poses(s.cam_to_world)
        for v in range(V):
            geo.validate_intrinsics(s.K[v])
            assert s.K[v, 0, 2] == pytest.approx((S - 1) / 2)
            assert abs(s.cam_to_world[v, :3, 0] @ np.array([0, 0, 1.0])) < 1e-9   # no roll
        assert s.task in qs.FAMILIES and s.answer
        if s.answer_type == "mc":
            assert s.answer in [o[0] for o in s.options]
        else:
            float(s.answer)


def test_geometry_is_exact(samples3):
    """Every pixel of view a, unprojected with its depth and re-cast from camera b, is either the
    first surface b sees (same depth to 1e-4) or hidden behind a nearer one; and b's depth map agrees
    (docs/design.md nearest-pixel test) on those visible points."""
    for s in samples3:
        scene = Scene.from_dict(s.meta["scene"])
        S = s.depth.shape[-1]
        for a in range(3):
            for b in range(3):
                if a == b:
                    continue
                Xw = geo.transform_points(s.cam_to_world[a], geo.unproject_depth(s.depth[a], s.K[a])).reshape(-1, 3)
                Xb = geo.transform_points(np.linalg.inv(s.cam_to_world[b]), Xw)
                uv, z = geo.project_points(s.K[b], Xb)
                with np.errstate(invalid="ignore"):
                    land = (z > 1e-3) & (uv[:, 0] > -0.5) & (uv[:, 0] < S - 0.5) & (uv[:, 1] > -0.5) & (uv[:, 1] < S - 0.5)
                if land.sum() < 50:
                    continue
                ray = (Xb[land] / z[land, None]) @ s.cam_to_world[b][:3, :3].T
                hit = cast_rays(scene, s.cam_to_world[b][:3, 3], ray[:, 0], ray[:, 1], ray[:, 2])
                rel = (hit.t - z[land]) / z[land]
                assert (rel > 1e-3).mean() < 0.003            # not passing through a surface (grazing only)
                seen = np.abs(rel) < 1e-4
                col = np.floor(uv[land, 0] + 0.5).astype(int)
                row = np.floor(uv[land, 1] + 0.5).astype(int)
                D = s.depth[b][row, col]
                agree = np.abs(z[land] - D) <= 0.05 + 0.05 * D
                assert agree[seen].mean() > 0.95


def test_matches_reference_overlap(samples3):
    """hatch_ext.reference.patch_overlap on the samples agrees with our numpy visibility per cell
    (same conventions for K, poses and depth)."""
    from hatch_ext.reference import patch_overlap

    s = samples3[0]
    M = patch_overlap(torch.tensor(s.depth[None], dtype=torch.float64), torch.tensor(s.K[None]),
                      torch.tensor(s.cam_to_world[None]), 4)[0].numpy()
    S, n = s.depth.shape[-1], 4
    cell = (np.arange(S)[:, None] * n // S) * n + (np.arange(S)[None] * n // S)
    for a, b in [(0, 1), (1, 0), (1, 2)]:
        vis = geo.visible_in(s.depth[a], s.K[a], s.cam_to_world[a], s.depth[b], s.K[b], s.cam_to_world[b])[0]
        frac = np.bincount(cell.ravel(), weights=vis.ravel(), minlength=16) / np.bincount(cell.ravel())
        np.testing.assert_allclose(M[a, b].sum(-1), frac, atol=1e-9)
        assert M[a, b].sum() > 0


def test_near_views_overlap():
    cfg = SceneConfig(size=64, tasks=("camera_motion",), min_overlap=0.25)
    for s in generate(4, seed=1, config=cfg):
        vis = geo.visible_in(s.depth[0], s.K[0], s.cam_to_world[0], s.depth[1], s.K[1], s.cam_to_world[1])[0]
        assert vis.mean() > 0.15                            # checked at 48 px, so a little slack
        yaw = abs(geo.relative_motion(s.cam_to_world[0], s.cam_to_world[1]).yaw_deg)
        assert cfg.yaw_step_deg[0] - 1e-6 <= yaw <= cfg.yaw_step_deg[1] + 1e-6


@pytest.mark.parametrize("task", qs.TASKS)
def test_every_family_generates(task):
    for s in generate(2, views=3, size=48, seed=11, config=SceneConfig(tasks=(task,))):
        assert s.task == task and s.category == qs.FAMILIES[task].category
        assert s.meta["mode"] == qs.FAMILIES[task].mode


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="views"):
        generate(1, views=5)
    with pytest.raises(ValueError, match="tasks"):
        generate(1, config=SceneConfig(tasks=("nope",)))
    with pytest.raises(ValueError, match="num"):
        generate(-1)


def test_generation_rate():
    generate(1, size=224, seed=99)                          # warm caches
    n = 10
    t = time.perf_counter()
    generate(n, views=2, size=224, seed=5)
    rate = n / (time.perf_counter() - t)
    print(f"synthetic generation: {rate:.1f} samples/s (2 views, 224x224)")
    assert rate >= 5
