"""hatch_vlm.data.spar7m against a hand-written SPAR-7M-RGBD fixture shaped like the published dataset
(tests/data/fixtures/spar7m; its README lists what each record exercises and the expected counts).

Nothing here is produced by hatch: the JSONL lines are typed by hand, the frames come from
tests/data/fixtures/make_spar7m_frames.py (numpy + PIL only), and every expected value below (texts,
counts, pixels, matrices) is typed from the fixture, not computed by hatch code.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hatch_vlm.data.common import DataError
from hatch_vlm.data.spar7m import find_sources, iter_spar_rgbd, qa_files, read_spar_rgbd

SPAR = Path(__file__).resolve().parent / "fixtures" / "spar7m" / "spar"
SCANNET = SPAR / "scannet"
S3D = SPAR / "structured3d"
IMAGES = SCANNET / "images"

# SPAR draws with PIL colour names: "red", "blue", "green" (PIL's "green" is (0, 128, 0))
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 128, 0)

# -------------------------------------------------------------------------------------------------
# What the fixture holds (typed by hand from the JSONL files; see the fixture README)
# -------------------------------------------------------------------------------------------------
SCANNET_TRAIN_READ = {
    "scene0261_00_16",      # depth_prediction_oc/fill, the readme example (numeric 1.5)
    "scene0012_01_7",       # depth_prediction_oc/fill, no <image> prefix, no "depth" key
    "scene0261_00_17",      # depth_prediction_oc/sentence
    "scene0261_00_mv_3",    # depth_prediction_oo_mv/fill, point_img_idx [[2, 0, 1]]
    "scene0261_00_mv_8",    # obj_spatial_relation_oc_mv/select, bbox_img_idx [[1, 0]]
    "scene0012_01_21",      # obj_spatial_relation_oo/judge, no "type" key
    "scene0261_00_vc_2",    # view_change_infer/fill (descriptive)
    "scene0012_01_pm_5",    # position_matching/fill (descriptive: a bbox)
    "scene0012_01_33",      # distance_prediction_oc/sentence
    "scene0261_00_mv_12",   # distance_prediction_oc_mv/fill
    "scene0012_01_mv_13",   # distance_prediction_oc_mv/fill
    "scene0261_00_mv_20",   # distance_infer_center_oo_mv/select, two options
}
SCANNET_VAL_READ = {"scene0012_01_41"}          # val/depth_prediction_oo/fill
S3D_IDS = {"scene_00021_485142_3", "scene_00021_485142_mv_6"}   # depth in 1/10 mm
SCANNET_SKIPS = Counter({
    "missing image file": 1,    # scene0261_00_99: image_color/999.jpg absent
    "bad marker": 1,            # scene0012_01_mv_4: point_img_idx names view 2 of 2 images
    "no options": 1,            # scene0012_01_mv_9: select without option lines
    "bad answer": 1,            # scene0012_01_mv_10: select answered "E" (options A-D)
    "bad conversations": 1,     # scene0012_01_34: no gpt turn
    "missing pose file": 1,     # scene0012_01_35: pose/90.txt absent
    "bad json": 1,              # distance_prediction_oc_mv/fill/fill_3.jsonl line 3, cut mid-record
})
MULTI_VIEW_READ = {"scene0261_00_mv_3", "scene0261_00_mv_8", "scene0261_00_vc_2", "scene0012_01_pm_5",
                   "scene0261_00_mv_12", "scene0012_01_mv_13", "scene0261_00_mv_20"}

K_0261 = np.array([[72.25, 0.0, 39.5], [0.0, 72.5, 29.75], [0.0, 0.0, 1.0]])
K_0012 = np.array([[71.875, 0.0, 40.25], [0.0, 72.125, 30.125], [0.0, 0.0, 1.0]])
K_S3D = np.array([[80.0, 0.0, 79.5], [0.0, 80.0, 44.5], [0.0, 0.0, 1.0]])
POSE_0261_543 = np.array([[0.500000, -0.150384, 0.852869, 2.000000],
                          [-0.866025, -0.086824, 0.492404, 1.500000],
                          [0.000000, -0.984808, -0.173648, 1.400000],
                          [0.0, 0.0, 0.0, 1.0]])
POSE_0261_561 = np.array([[0.573576, -0.142244, 0.806707, 2.100000],
                          [-0.819152, -0.099601, 0.564863, 1.550000],
                          [0.000000, -0.984808, -0.173648, 1.400000],
                          [0.0, 0.0, 0.0, 1.0]])
POSE_0261_579 = np.array([[0.642788, -0.133022, 0.754407, 2.200000],
                          [-0.766044, -0.111619, 0.633022, 1.600000],
                          [0.000000, -0.984808, -0.173648, 1.400000],
                          [0.0, 0.0, 0.0, 1.0]])
POSE_0012_30 = np.array([[0.000000, 0.087156, -0.996195, 4.000000],
                         [1.000000, -0.000000, 0.000000, 2.500000],
                         [-0.000000, -0.996195, -0.087156, 1.300000],
                         [0.0, 0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def all_default():
    return read_spar_rgbd(SPAR)


@pytest.fixture(scope="module")
def by_id(all_default):
    samples, _ = all_default
    return {s.id: s for s in samples}


def ids(samples):
    return {s.id for s in samples}


def original(rel: str) -> np.ndarray:
    """The colour frame as stored (decoded with PIL), relative to spar/scannet/images."""
    with Image.open(IMAGES / rel) as im:
        return np.asarray(im.convert("RGB"))


def px(img: np.ndarray, x: int, y: int) -> tuple:
    return tuple(int(c) for c in img[y, x])


def same_outside(img: np.ndarray, ref: np.ndarray, discs=(), rects=()) -> None:
    """img equals ref (up to JPEG-decoder noise) everywhere outside the given marker areas:
    discs (x, y) of radius 20 (+2 px slack), rects (x0, y0, x1, y1) outer bounds (+2 px slack)."""
    assert img.shape == ref.shape and img.dtype == np.uint8
    h, w = ref.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    keep = np.ones((h, w), bool)
    for x, y in discs:
        keep &= (xx - x) ** 2 + (yy - y) ** 2 > 22 ** 2
    for x0, y0, x1, y1 in rects:
        keep &= ~((xx >= x0 - 2) & (xx <= x1 + 2) & (yy >= y0 - 2) & (yy <= y1 + 2))
    diff = np.abs(img.astype(int) - ref.astype(int)).max(-1)
    assert diff[keep].max() <= 3, f"{int((diff[keep] > 3).sum())} pixels changed outside the markers"


# -------------------------------------------------------------------------------------------------
# Counts
# -------------------------------------------------------------------------------------------------
def test_counts_every_source(all_default):
    samples, summary = all_default
    assert ids(samples) == SCANNET_TRAIN_READ | SCANNET_VAL_READ
    assert summary.read == 13 and len(samples) == 13
    assert summary.skipped == 9
    assert dict(summary.reasons) == dict(SCANNET_SKIPS + Counter({"implausible depth": 2}))


def test_counts_one_source_root():
    samples, summary = read_spar_rgbd(SCANNET)
    assert ids(samples) == SCANNET_TRAIN_READ | SCANNET_VAL_READ
    assert summary.read == 13 and summary.skipped == 7
    assert dict(summary.reasons) == dict(SCANNET_SKIPS)


def test_common_fields(by_id):
    for s in by_id.values():
        v = len(s.images)
        assert s.source == "spar7m"
        assert s.meta["spar_source"] == "scannet"
        assert s.meta["split"] == ("val" if s.id in SCANNET_VAL_READ else "train")
        for img in s.images:
            assert img.dtype == np.uint8 and img.shape == (120, 160, 3)
        assert s.depth.dtype == np.float32 and s.depth.shape == (v, 60, 80)
        assert s.K.shape == (v, 3, 3) and s.cam_to_world.shape == (v, 4, 4)
        assert len(s.meta["image_paths"]) == v
        assert "<image>" not in s.question
        assert "Your answer can only include" not in s.question


# -------------------------------------------------------------------------------------------------
# Questions, options, answers
# -------------------------------------------------------------------------------------------------
def test_select_one_option_per_line_and_trailer(by_id):
    s = by_id["scene0261_00_mv_8"]
    assert s.task == "obj_spatial_relation_oc_mv"
    assert s.meta["answer_kind"] == "select"
    assert s.answer_type == "mc" and s.answer == "C"
    assert s.question == ("From the camera of the first image, where is the trash can (red bbox) shown in the "
                          "second image? Consider left or right, above or below, and closer or farther.")
    assert s.options == ["A. left, above, closer", "B. right, below, farther",
                         "C. left, below, closer", "D. right, above, farther"]   # trailer not glued to D


def test_select_two_options_trailer_variant(by_id):
    s = by_id["scene0261_00_mv_20"]
    assert s.task == "distance_infer_center_oo_mv" and s.meta["answer_kind"] == "select"
    assert s.answer_type == "mc" and s.answer == "B"
    assert s.options == ["A. lamp (green point)", "B. shelf (blue point)"]
    assert s.question == ("Which object is closer to the bed (red point) in the first image: the lamp (green "
                          "point) in the second image or the shelf (blue point) in the third image? Calculate or "
                          "judge based on the 3D center points of these objects.")


def test_image_prefixes_stripped(by_id):
    # the readme example, one "<image>\n"; text kept as is (double space included)
    assert by_id["scene0261_00_16"].question == (
        "With the counter (red point) having a depth of 1.6 meters, determine the depth of towel (blue point) "
        "in the same frame.  Calculate or judge based on the 3D center points of these objects. The unit is meter.")
    # three "<image>\n"
    assert by_id["scene0261_00_mv_3"].question.startswith("The cabinet (red point) in the third image is 2.1")
    # none at all
    assert by_id["scene0012_01_7"].question == (
        "Given that the sofa (red point) is 2.1 meters away from the camera, estimate the depth of the lamp "
        "(blue point) in this image. Calculate or judge based on the 3D center points of these objects. "
        "The unit is meter.")


@pytest.mark.parametrize("rid,answer,task", [
    ("scene0261_00_16", "1.5", "depth_prediction_oc"),
    ("scene0012_01_7", "2.4", "depth_prediction_oc"),
    ("scene0261_00_mv_3", "0.7", "depth_prediction_oo_mv"),
    ("scene0261_00_mv_12", "2.6", "distance_prediction_oc_mv"),
    ("scene0012_01_mv_13", "3.1", "distance_prediction_oc_mv"),
    ("scene0012_01_41", "0.9", "depth_prediction_oo"),
])
def test_numeric_fill(by_id, rid, answer, task):
    s = by_id[rid]
    assert (s.answer, s.answer_type, s.task, s.meta["answer_kind"]) == (answer, "numeric", task, "fill")
    assert s.options == []


@pytest.mark.parametrize("rid,answer,task", [
    ("scene0261_00_vc_2", "move_forward:0.2,rotate_left:10", "view_change_infer"),
    ("scene0012_01_pm_5", "[520, 310, 760, 590]", "position_matching"),
])
def test_descriptive_fill_is_open(by_id, rid, answer, task):
    s = by_id[rid]
    assert (s.answer, s.answer_type, s.task, s.meta["answer_kind"]) == (answer, "open", task, "fill")


def test_sentence_is_open_even_with_a_number(by_id):
    s = by_id["scene0261_00_17"]
    assert s.answer == "The desk's central depth is estimated to be about 2.0 meters."
    assert (s.answer_type, s.meta["answer_kind"], s.task) == ("open", "sentence", "depth_prediction_oc")
    s = by_id["scene0012_01_33"]
    assert s.answer == "The sofa is about 2.2 meters away from the camera."
    assert (s.answer_type, s.meta["answer_kind"]) == ("open", "sentence")


def test_judge_is_open_and_task_from_folder(by_id):
    s = by_id["scene0012_01_21"]       # the record has no "type": the task is its folder
    assert s.answer == "Yes"
    assert (s.answer_type, s.meta["answer_kind"]) == ("open", "judge")
    assert s.task == "obj_spatial_relation_oo"
    assert s.question == ("Is the pillow (red bbox) to the left of the lamp (blue bbox) from the camera's "
                          "perspective? Answer yes or no.")


# -------------------------------------------------------------------------------------------------
# Geometry
# -------------------------------------------------------------------------------------------------
def test_depth_in_metres(by_id):
    s = by_id["scene0261_00_16"]
    assert s.depth[0, 30, 40] == pytest.approx(1.5)          # stored 1500 (mm)
    assert not (s.depth[0, 0, 0] > 0)                         # stored 0: invalid stays invalid
    valid = s.depth[0][s.depth[0] > 0]
    assert 0.8 <= float(np.median(valid)) <= 4.0
    # views in the order of "image": 543, 561, 579 stored 1500, 1625, 1750
    np.testing.assert_allclose(by_id["scene0261_00_mv_3"].depth[:, 30, 40], [1.5, 1.625, 1.75], atol=1e-6)
    # a record without a "depth" key: the depth map is found next to the colour frame
    assert by_id["scene0012_01_7"].depth[0, 30, 40] == pytest.approx(2.0)
    np.testing.assert_allclose(by_id["scene0012_01_mv_13"].depth[:, 30, 40], [2.1, 2.0], atol=1e-6)


def test_K_from_intrinsic_depth(by_id):
    np.testing.assert_allclose(by_id["scene0261_00_16"].K[0], K_0261)
    np.testing.assert_allclose(by_id["scene0261_00_mv_3"].K, np.stack([K_0261] * 3))
    np.testing.assert_allclose(by_id["scene0012_01_7"].K[0], K_0012)


def test_pose_camera_to_world(by_id):
    np.testing.assert_allclose(by_id["scene0261_00_mv_3"].cam_to_world,
                               np.stack([POSE_0261_543, POSE_0261_561, POSE_0261_579]), atol=1e-9)
    np.testing.assert_allclose(by_id["scene0012_01_7"].cam_to_world[0], POSE_0012_30, atol=1e-9)


@pytest.mark.parametrize("root", [SPAR, SCANNET], ids=["spar", "spar-scannet"])
def test_image_paths_resolve_against_source_images(root):
    samples, _ = read_spar_rgbd(root, tasks=["depth_prediction_oo_mv"])
    (s,) = [x for x in samples if x.id == "scene0261_00_mv_3"]
    want = [IMAGES / "scene0261_00/image_color" / f for f in ("543.jpg", "561.jpg", "579.jpg")]
    assert len(s.meta["image_paths"]) == 3
    for got, exp in zip(s.meta["image_paths"], want):
        assert os.path.isabs(str(got))
        assert os.path.samefile(got, exp)


# -------------------------------------------------------------------------------------------------
# Markers (SPAR draw_marker.py: filled radius-20 discs; 20 px rectangles grown by 17.5 px)
# -------------------------------------------------------------------------------------------------
def test_single_view_points(by_id):
    s = by_id["scene0261_00_16"]       # red [553, 397], blue [641, 838] of 1000 on 160x120
    img = s.images[0]
    assert px(img, 88, 47) == RED and px(img, 100, 47) == RED
    assert px(img, 102, 100) == BLUE and px(img, 102, 85) == BLUE
    same_outside(img, original("scene0261_00/image_color/543.jpg"), discs=[(88, 47), (102, 100)])


def test_multi_view_points_on_the_views_point_img_idx_names(by_id):
    s = by_id["scene0261_00_mv_3"]     # point_img_idx [[2, 0, 1]]: red -> view 2, blue -> 0, green -> 1
    v0, v1, v2 = s.images
    assert px(v2, 40, 60) == RED
    assert px(v0, 112, 36) == BLUE
    assert px(v1, 80, 90) == GREEN
    # each view carries only its own marker
    same_outside(v0, original("scene0261_00/image_color/543.jpg"), discs=[(112, 36)])
    same_outside(v1, original("scene0261_00/image_color/561.jpg"), discs=[(80, 90)])
    same_outside(v2, original("scene0261_00/image_color/579.jpg"), discs=[(40, 60)])


def test_distance_infer_center_mv_point_order_is_red_green_blue(by_id):
    s = by_id["scene0261_00_mv_20"]    # point_img_idx [[0, 1, 2]]: SPAR puts red, GREEN, blue on 0, 1, 2
    v0, v1, v2 = s.images
    assert px(v0, 80, 60) == RED
    assert px(v1, 40, 30) == GREEN
    assert px(v2, 120, 90) == BLUE
    same_outside(v0, original("scene0261_00/image_color/543.jpg"), discs=[(80, 60)])
    same_outside(v1, original("scene0261_00/image_color/561.jpg"), discs=[(40, 30)])
    same_outside(v2, original("scene0261_00/image_color/579.jpg"), discs=[(120, 90)])


def test_distance_prediction_oc_mv_point_on_named_view(by_id):
    s = by_id["scene0261_00_mv_12"]    # point_img_idx [[1]]
    assert px(s.images[1], 96, 48) == RED
    same_outside(s.images[0], original("scene0261_00/image_color/561.jpg"))
    s = by_id["scene0012_01_mv_13"]    # point_img_idx [[0]]
    assert px(s.images[0], 72, 66) == RED
    same_outside(s.images[1], original("scene0012_01/image_color/30.jpg"))


def test_bbox_on_the_view_bbox_img_idx_names(by_id):
    s = by_id["scene0261_00_mv_8"]     # red_bbox [300, 350, 700, 650] -> px [48, 42, 112, 78], on view 1
    v0, v1 = s.images
    # outer rectangle (30, 24)-(129, 95), 20 px band drawn inwards
    for x, y in [(40, 60), (120, 60), (80, 33), (80, 86)]:
        assert px(v1, x, y) == RED, (x, y)
    ref1 = original("scene0261_00/image_color/579.jpg")
    assert np.abs(v1[60, 80].astype(int) - ref1[60, 80]).max() <= 3        # inside the box: untouched
    same_outside(v1, ref1, rects=[(30, 24, 129, 95)])
    same_outside(v0, original("scene0261_00/image_color/543.jpg"))          # view 0: no marker at all


def test_position_matching_bbox_on_first_view(by_id):
    s = by_id["scene0012_01_pm_5"]     # red_bbox [200, 250, 500, 600] -> px [32, 30, 80, 72], on images[0]
    v0, v1 = s.images
    assert px(v0, 24, 50) == RED
    ref0 = original("scene0012_01/image_color/30.jpg")
    assert np.abs(v0[50, 56].astype(int) - ref0[50, 56]).max() <= 3
    same_outside(v0, ref0, rects=[(14, 12, 97, 89)])
    same_outside(v1, original("scene0012_01/image_color/60.jpg"))


def test_single_view_bboxes(by_id):
    s = by_id["scene0012_01_21"]       # red [16, 18, 64, 66] px, blue [88, 24, 144, 84] px
    img = s.images[0]
    assert px(img, 8, 40) == RED and px(img, 40, 8) == RED
    assert px(img, 86, 50) == BLUE and px(img, 120, 92) == BLUE
    same_outside(img, original("scene0012_01/image_color/60.jpg"), rects=[(-1, 0, 81, 83), (70, 6, 161, 101)])


def test_no_markers_no_drawing(by_id):
    s = by_id["scene0261_00_vc_2"]
    assert s.meta["markers"] == []
    same_outside(s.images[0], original("scene0261_00/image_color/543.jpg"))
    same_outside(s.images[1], original("scene0261_00/image_color/579.jpg"))


def test_marker_meta(by_id):
    def find(s, color):
        got = [m for m in s.meta["markers"] if m["color"] == color]
        assert len(got) == 1, s.meta["markers"]
        return got[0]

    s = by_id["scene0261_00_mv_3"]
    assert len(s.meta["markers"]) == 3
    for color, view, xy in [("red", 2, (40, 60)), ("blue", 0, (112, 36)), ("green", 1, (80, 90))]:
        m = find(s, color)
        assert m["kind"] == "point" and m["view"] == view
        assert abs(m["xy"][0] - xy[0]) <= 1 and abs(m["xy"][1] - xy[1]) <= 1
    m = find(by_id["scene0261_00_16"], "red")
    assert (m["kind"], m["view"]) == ("point", 0)
    assert abs(m["xy"][0] - 88) <= 1 and abs(m["xy"][1] - 47) <= 1
    m = find(by_id["scene0261_00_mv_8"], "red")
    assert m["kind"] != "point" and m["view"] == 1


# -------------------------------------------------------------------------------------------------
# Selection
# -------------------------------------------------------------------------------------------------
def test_tasks_filter_by_name():
    samples, summary = read_spar_rgbd(SPAR, tasks=["depth_prediction_oc"])
    assert ids(samples) == {"scene0261_00_16", "scene0012_01_7", "scene0261_00_17"}
    assert summary.read == 3 and summary.skipped == 2
    assert dict(summary.reasons) == {"missing image file": 1, "implausible depth": 1}


def test_tasks_filter_multi_view_group():
    samples, summary = read_spar_rgbd(SPAR, tasks=["multi_view"])
    assert ids(samples) == MULTI_VIEW_READ
    assert summary.skipped == 5
    assert dict(summary.reasons) == {"bad marker": 1, "no options": 1, "bad answer": 1, "bad json": 1,
                                     "implausible depth": 1}
    samples, _ = read_spar_rgbd(SCANNET, tasks=["multi_view", "depth_prediction_oo"])
    assert ids(samples) == MULTI_VIEW_READ | {"scene0012_01_41"}


def test_split_filter():
    samples, summary = read_spar_rgbd(SPAR, split="val")
    assert ids(samples) == SCANNET_VAL_READ and summary.skipped == 0
    assert samples[0].meta["split"] == "val"
    samples, summary = read_spar_rgbd(SPAR, split="train")
    assert ids(samples) == SCANNET_TRAIN_READ
    assert summary.read == 12 and summary.skipped == 9
    assert all(s.meta["split"] == "train" for s in samples)


def test_find_sources_and_qa_files():
    names = {Path(str(x)).name for x in find_sources(SPAR)}
    assert names == {"scannet", "structured3d"}
    files = list(qa_files(SPAR))
    assert len(files) == 13 and all(".jsonl" in str(f) for f in files)
    assert len(list(qa_files(SPAR, split="val"))) == 1


def test_iter_matches_read():
    assert {s.id for s in iter_spar_rgbd(SCANNET)} == SCANNET_TRAIN_READ | SCANNET_VAL_READ


# -------------------------------------------------------------------------------------------------
# Errors, strict mode, geometry requirements, depth units
# -------------------------------------------------------------------------------------------------
def _line_number_named(message: str, path: Path, line: int) -> bool:
    assert path.name in message, message
    rest = message.replace(str(path), " ").replace(path.name, " ")
    return re.search(rf"(?<![\d.]){line}(?![\d.])", rest) is not None


def test_strict_raises_at_the_truncated_line():
    with pytest.raises(DataError) as e:
        read_spar_rgbd(SCANNET, tasks=["distance_prediction_oc_mv"], strict=True)
    bad = SCANNET / "qa_jsonl/train/distance_prediction_oc_mv/fill/fill_3.jsonl"
    assert _line_number_named(str(e.value), bad, 3), str(e.value)


def test_strict_names_file_and_line_of_a_bad_record():
    with pytest.raises(DataError) as e:
        read_spar_rgbd(SCANNET, tasks=["obj_spatial_relation_oc_mv"], strict=True)
    bad = SCANNET / "qa_jsonl/train/obj_spatial_relation_oc_mv/select/select_3.jsonl"
    assert _line_number_named(str(e.value), bad, 2), str(e.value)       # line 2: no options


def test_strict_on_clean_files_reads():
    samples, summary = read_spar_rgbd(SCANNET, tasks=["view_change_infer", "position_matching"], strict=True)
    assert ids(samples) == {"scene0261_00_vc_2", "scene0012_01_pm_5"} and summary.skipped == 0


def test_require_geometry():
    samples, summary = read_spar_rgbd(SCANNET, tasks=["distance_prediction_oc"])
    assert ids(samples) == {"scene0012_01_33"}
    assert dict(summary.reasons) == {"bad conversations": 1, "missing pose file": 1}
    samples, _ = read_spar_rgbd(SCANNET, tasks=["distance_prediction_oc"], require_geometry=False)
    got = {s.id: s for s in samples}
    assert "scene0012_01_35" in got and "scene0012_01_34" not in got
    assert len(got["scene0012_01_35"].images) == 1


def test_wrong_unit_source_is_skipped_as_implausible():
    samples, summary = read_spar_rgbd(S3D)
    assert samples == [] and summary.read == 0
    assert dict(summary.reasons) == {"implausible depth": 2}
    with pytest.raises(DataError):
        read_spar_rgbd(S3D, strict=True)


def test_wrong_unit_source_reads_with_its_scale():
    samples, summary = read_spar_rgbd(SPAR, depth_scale={"structured3d": 0.0001})
    assert summary.read == 15 and summary.skipped == 7
    assert "implausible depth" not in summary.reasons
    got = {s.id: s for s in samples}
    assert S3D_IDS <= set(got)
    s = got["scene_00021_485142_3"]
    assert s.meta["spar_source"] == "structured3d"
    assert s.depth.shape == (1, 90, 160) and s.images[0].shape == (90, 160, 3)
    assert s.depth[0, 20, 30] == pytest.approx(1.5, abs=1e-5)          # stored 15000 (1/10 mm)
    assert 1.0 <= float(np.median(s.depth[0][s.depth[0] > 0])) <= 4.0
    np.testing.assert_allclose(s.K[0], K_S3D)
    assert (s.answer, s.answer_type) == ("1.5", "numeric")
    s = got["scene_00021_485142_mv_6"]
    assert (s.answer, s.answer_type, s.meta["answer_kind"]) == ("No", "open", "judge")
    # the per-source scale leaves scannet in millimetres
    assert got["scene0261_00_16"].depth[0, 30, 40] == pytest.approx(1.5)
    # a plain float applies to every source read
    samples, summary = read_spar_rgbd(S3D, depth_scale=0.0001)
    assert ids(samples) == S3D_IDS and summary.skipped == 0


def test_root_without_qa_jsonl_is_a_clear_error(tmp_path):
    (tmp_path / "spar/scannet/images/scene0000_00/image_color").mkdir(parents=True)
    for root in (tmp_path / "spar", tmp_path / "spar/scannet", tmp_path):
        with pytest.raises(DataError) as e:
            read_spar_rgbd(root)
        assert "qa_jsonl" in str(e.value), str(e.value)
