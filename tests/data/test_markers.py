"""SPAR-7M question markers (hatch_vlm.data.spar7m.markers): pixels checked against values worked out by hand
from fudan-zvg/spar datasets/draw_marker.py (coord / 1000 * size, int(); PIL ellipse of radius 20; PIL
rectangle of width 20 on the box pushed out by 17.5 px; cv2 rectangle bands of +-10 px around the box
pushed out by 20 px), never against the function's own output."""
import numpy as np
import pytest

from hatch_vlm.data.common import RecordError
from hatch_vlm.data.spar7m.markers import MARKER_KEYS, cv_text_size, draw_markers, has_markers

RED, BLUE, PIL_GREEN, YELLOW = (255, 0, 0), (0, 0, 255), (0, 128, 0), (255, 255, 0)
CV_GREEN, BLACK = (0, 255, 0), (0, 0, 0)


def black(w, h, n=1):
    return [np.zeros((h, w, 3), np.uint8) for _ in range(n)]


def px(img, row, col):
    return tuple(int(v) for v in img[row, col])


def test_points_on_their_views_depth_prediction_oc_mv():
    images = black(200, 100, 2)
    rec = {"type": "depth_prediction_oc_mv", "point_img_idx": [[1, 0]],
           "red_point": [[500, 250]], "blue_point": [[100, 900]]}
    out, drawn = draw_markers(images, rec, rec["type"])
    # red: 500/1000*200 = 100, 250/1000*100 = 25 on view 1; blue: (20, 90) on view 0
    assert px(out[1], 25, 100) == RED
    assert px(out[0], 90, 20) == BLUE
    # radius 20: the ellipse's box [x-20, y-20, x+20, y+20] is inclusive
    assert px(out[1], 25, 120) == RED and px(out[1], 25, 80) == RED and px(out[1], 45, 100) == RED
    assert px(out[1], 25, 121) == BLACK and px(out[1], 46, 100) == BLACK
    # 25 px from the centres: untouched
    for r, c in ((25, 125), (25, 75), (50, 100), (0, 100)):
        assert px(out[1], r, c) == BLACK
    for r, c in ((90, 45), (65, 20)):
        assert px(out[0], r, c) == BLACK
    # each colour only on its own view
    assert not (out[0] == RED).all(-1).any() and not (out[1] == BLUE).all(-1).any()
    assert drawn == [{"kind": "point", "color": "red", "view": 1, "xy": [100, 25]},
                     {"kind": "point", "color": "blue", "view": 0, "xy": [20, 90]}]


def test_truncation_not_rounding():
    images = black(200, 100)
    rec = {"red_point": [[999, 999]]}          # 199.8, 99.9 -> (199, 99)
    out, drawn = draw_markers(images, rec, "distance_prediction_oc")
    assert drawn[0]["xy"] == [199, 99]
    assert px(out[0], 99, 199) == RED and px(out[0], 79, 199) == RED and px(out[0], 78, 199) == BLACK


def test_bbox_outline_position_matching():
    images = black(400, 400, 2)
    rec = {"type": "position_matching", "red_bbox": [[250, 250, 750, 750]], "bbox_img_idx": [[1]]}
    out, drawn = draw_markers(images, rec, rec["type"])
    img = out[0]                                # position_matching always draws on images[0]
    # box (100, 100, 300, 300) pushed out by 17.5 -> int: (82, 82, 317, 317); 20 px outline inward
    assert px(img, 200, 82) == RED              # outer edge of the outline
    assert px(img, 200, 101) == RED             # last pixel of the stroke (82 + 19)
    assert px(img, 200, 102) == BLACK           # just inside the stroke
    assert px(img, 200, 81) == BLACK            # just outside
    assert px(img, 200, 200) == BLACK           # interior untouched
    assert px(img, 82, 82) == RED and px(img, 317, 317) == RED and px(img, 298, 200) == RED
    assert px(img, 297, 200) == BLACK and px(img, 318, 200) == BLACK
    assert drawn == [{"kind": "bbox", "color": "red", "view": 0, "box": [100, 100, 300, 300]}]
    assert out[1] is images[1]                  # the other view is not drawn on


def test_bbox_extension_applied_before_int():
    images = black(400, 400)
    rec = {"red_bbox": [[252, 250, 750, 750]]}  # x1 = 100.8: int(100.8 - 17.5) = 83, not int(100) - 17.5
    out, drawn = draw_markers(images, rec, "spatial_volume_infer")
    assert px(out[0], 200, 83) == RED and px(out[0], 200, 82) == BLACK and px(out[0], 200, 102) == RED
    assert px(out[0], 200, 103) == BLACK
    assert drawn[0]["box"] == [100, 100, 300, 300]


def test_obj_spatial_relation_oc_mv_draws_present_boxes_on_one_view():
    images = black(400, 400, 3)
    rec = {"bbox_img_idx": [[2, 0]], "red_bbox": [[250, 250, 750, 750]], "green_bbox": [[0, 0, 100, 100]],
           "blue_bbox": []}
    out, drawn = draw_markers(images, rec, "obj_spatial_relation_oc_mv")
    assert px(out[2], 200, 82) == RED and px(out[2], 200, 102) == BLACK
    # green (0, 0, 40, 40) -> int(-17.5) = -17 .. int(57.5) = 57: the outline's inner edge is 57 - 19 = 38
    assert px(out[2], 20, 38) == PIL_GREEN and px(out[2], 20, 37) == BLACK and px(out[2], 20, 2) == PIL_GREEN
    assert out[0] is images[0] and out[1] is images[1]
    assert [(d["color"], d["view"]) for d in drawn] == [("red", 2), ("green", 2)]


def test_spatial_imagination_oc_mv_view_order():
    images = black(100, 100, 3)
    box = [[400, 400, 600, 600]]                # (40, 40, 60, 60) -> outline from int(22.5) = 22
    rec = {"bbox_img_idx": [[1, 2, 0]], "red_bbox": box, "green_bbox": box, "blue_bbox": box}
    out, drawn = draw_markers(images, rec, "spatial_imagination_oc_mv")
    # red -> bbox_img_idx[0][2] = 0, green -> [0][0] = 1, blue -> [0][1] = 2
    assert px(out[0], 50, 22) == RED
    assert px(out[1], 50, 22) == PIL_GREEN
    assert px(out[2], 50, 22) == BLUE
    assert [(d["color"], d["view"]) for d in drawn] == [("red", 0), ("green", 1), ("blue", 2)]


def test_spatial_imagination_oo_mv_yellow_on_fourth_index():
    images = black(100, 100, 4)
    box = [[400, 400, 600, 600]]
    rec = {"bbox_img_idx": [[3, 2, 1, 0]], "red_bbox": box, "green_bbox": box, "blue_bbox": box,
           "yellow_bbox": box}
    out, drawn = draw_markers(images, rec, "spatial_imagination_oo_mv")
    assert [px(out[v], 50, 22) for v in range(4)] == [YELLOW, RED, BLUE, PIL_GREEN]
    assert [d["color"] for d in drawn] == ["red", "green", "blue", "yellow"]


@pytest.mark.parametrize("absent, first, second", [("red", "blue", "green"), ("blue", "red", "green"),
                                                   ("green", "red", "blue")])
def test_obj_spatial_relation_oo_mv_cases(absent, first, second):
    images = black(100, 100, 2)
    box = [[400, 400, 600, 600]]
    rec = {"bbox_img_idx": [[1, 0]], **{f"{c}_bbox": box for c in ("red", "blue", "green") if c != absent}}
    out, drawn = draw_markers(images, rec, "obj_spatial_relation_oo_mv")
    colours = {"red": RED, "blue": BLUE, "green": PIL_GREEN}
    assert px(out[1], 50, 22) == colours[first]      # bbox_img_idx[0][0]
    assert px(out[0], 50, 22) == colours[second]     # bbox_img_idx[0][1]
    assert [(d["color"], d["view"]) for d in drawn] == [(first, 1), (second, 0)]


def test_obj_spatial_relation_oo_mv_all_three_is_bad():
    box = [[400, 400, 600, 600]]
    rec = {"bbox_img_idx": [[1, 0]], "red_bbox": box, "blue_bbox": box, "green_bbox": box}
    with pytest.raises(RecordError) as e:
        draw_markers(black(100, 100, 2), rec, "obj_spatial_relation_oo_mv")
    assert e.value.kind == "bad marker"


def test_distance_infer_center_oo_mv_order_red_green_blue():
    images = black(100, 100, 3)
    rec = {"point_img_idx": [[2, 0, 1]], "red_point": [[500, 500]], "blue_point": [[500, 500]],
           "green_point": [[500, 500]]}
    out, drawn = draw_markers(images, rec, "distance_infer_center_oo_mv")
    assert [px(out[v], 50, 50) for v in range(3)] == [PIL_GREEN, BLUE, RED]
    assert [d["color"] for d in drawn] == ["red", "green", "blue"]


def test_single_view_task_draws_on_the_only_image():
    images = black(200, 200)
    rec = {"red_point": [[100, 100]], "blue_point": [[500, 500]], "green_point": [[900, 900]],
           "point_img_idx": [[5, 7, 9]]}       # ignored by single-view tasks, as in the official code
    out, drawn = draw_markers(images, rec, "depth_prediction_oo")
    assert px(out[0], 20, 20) == RED and px(out[0], 100, 100) == BLUE and px(out[0], 180, 180) == PIL_GREEN
    assert [d["view"] for d in drawn] == [0, 0, 0]


def test_single_view_task_with_two_views_is_bad():
    with pytest.raises(RecordError) as e:
        draw_markers(black(50, 50, 2), {"red_bbox": [[0, 0, 10, 10]]}, "spatial_volume_infer")
    assert e.value.kind == "bad marker"


@pytest.mark.parametrize("task", ["view_change_infer", "distance_infer_center_oc", "camera_motion_infer",
                                  "appearance_order", "nav", "spatial_imagination_oo_video_hard"])
def test_pass_tasks_draw_nothing(task):
    images = black(50, 50, 2)
    rec = {"red_point": [[500, 500]], "red_bbox": [[0, 0, 500, 500]], "point_img_idx": [[0]]}
    out, drawn = draw_markers(images, rec, task)
    assert drawn == [] and all(o is i for o, i in zip(out, images)) and len(out) == 2
    assert all(not o.any() for o in out)


def test_index_out_of_range_is_bad_marker():
    rec = {"point_img_idx": [[1, 2]], "red_point": [[500, 250]], "blue_point": [[100, 900]]}
    with pytest.raises(RecordError) as e:
        draw_markers(black(20, 20, 2), rec, "depth_prediction_oc_mv")
    assert e.value.kind == "bad marker"
    msg = str(e.value)
    assert "point_img_idx" in msg and "[[1, 2]]" in msg and "2 views" in msg


@pytest.mark.parametrize("rec", [
    {"point_img_idx": [[-1]], "red_point": [[1, 1]]},          # negative: Python would wrap
    {"point_img_idx": [[0.0]], "red_point": [[1, 1]]},         # not an int
    {"point_img_idx": [[]], "red_point": [[1, 1]]},            # too few indices
    {"red_point": [[1, 1]]},                                   # no index at all
    {"point_img_idx": [[0]]},                                  # no marker
    {"point_img_idx": [[0]], "red_point": [[1]]},              # malformed point
    {"point_img_idx": [[0]], "red_point": [["1", "2"]]},       # not numbers
    {"point_img_idx": [[0]], "red_point": None},
])
def test_missing_or_malformed_is_bad_marker(rec):
    with pytest.raises(RecordError) as e:
        draw_markers(black(20, 20, 2), rec, "distance_prediction_oc_mv")
    assert e.value.kind == "bad marker"


def test_unknown_task():
    with pytest.raises(RecordError) as e:
        draw_markers(black(20, 20), {"red_point": [[1, 1]]}, "not_a_spar_task")
    assert e.value.kind == "unknown marker task" and "not_a_spar_task" in str(e.value)
    images = black(20, 20)
    out, drawn = draw_markers(images, {"id": "x", "red_point": [[]]}, "not_a_spar_task")
    assert drawn == [] and out[0] is images[0]
    out, drawn = draw_markers(images, {}, None)
    assert drawn == []


def test_inputs_not_modified():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (60, 80, 3), dtype=np.uint8) for _ in range(3)]
    before = [i.copy() for i in images]
    listed = list(images)
    rec = {"bbox_img_idx": [[1, 2, 0]], "red_bbox": [[100, 100, 500, 500]], "green_bbox": [[100, 100, 500, 500]],
           "blue_bbox": [[100, 100, 500, 500]]}
    out, _ = draw_markers(images, rec, "spatial_imagination_oc_mv")
    for a, b in zip(images, before):
        np.testing.assert_array_equal(a, b)
    assert images == listed or all(a is b for a, b in zip(images, listed))
    assert all(o is not i for o, i in zip(out, images)) and all(o.flags.writeable for o in out)
    assert all(o.dtype == np.uint8 and o.shape == (60, 80, 3) for o in out)


def test_has_markers_and_keys():
    assert set(MARKER_KEYS) == {"red_point", "blue_point", "green_point", "red_bbox", "blue_bbox", "green_bbox",
                                "yellow_bbox", "bbox_list", "point_list", "point_img_idx", "bbox_img_idx"}
    assert has_markers({"red_bbox": [[1, 2, 3, 4]]})
    assert has_markers({"bbox_img_idx": [[0]]})
    assert not has_markers({"id": 1, "type": "nav"})
    assert not has_markers({"red_point": [], "bbox_list": [[]], "blue_point": None})


# ---------------------------------------------------------------- the cv2 tasks (reproduced with PIL/numpy)

def test_cv_text_size_matches_opencv():
    # cv2.getTextSize(label, FONT_HERSHEY_SIMPLEX, 2.0, 10): Hershey simplex advances o19 b19 j10 e18 c18
    # t12, digits 20, A 18 -> width round(sum * 2 + 10), height round(21 * 2 + 11 // 2)
    assert cv_text_size("object0") == (242, 47)
    assert cv_text_size("objectA") == (238, 47)
    assert cv_text_size("object12") == (282, 47)


def test_spatial_imagination_map_mv_box_and_label():
    images = black(400, 400)
    rec = {"bbox_list": [[[250, 250, 750, 750]]], "bbox_img_idx": [[0]]}
    out, drawn = draw_markers(images, rec, "spatial_imagination_map_mv")
    img = out[0]
    # cv2.rectangle((80, 80), (320, 320), thickness=20): 21 px bands centred on the edges, pure blue
    assert px(img, 200, 70) == BLUE and px(img, 200, 90) == BLUE
    assert px(img, 200, 69) == BLACK and px(img, 200, 91) == BLACK and px(img, 200, 200) == BLACK
    assert px(img, 200, 330) == BLUE and px(img, 200, 331) == BLACK
    assert px(img, 70, 80) == BLUE              # top band starts at the corner's x
    assert px(img, 70, 70) == BLACK             # rounded corner: radius-10 cap around (80, 80)
    assert px(img, 80, 70) == BLUE
    # label "object0" (242 x 47) in pure green with its origin at (300 - 242, 300 + 47) = (58, 347)
    green = (img == CV_GREEN).all(-1)
    ys, xs = np.nonzero(green)
    assert green.sum() > 1000
    assert xs.min() >= 55 and xs.max() <= 300 and ys.min() >= 295 and ys.max() <= 370
    assert drawn == [{"kind": "bbox", "color": "blue", "view": 0, "box": [100, 100, 300, 300], "label": "object0"}]


def test_spatial_imagination_map_mv_label_moves_up_at_the_bottom():
    images = black(400, 400, 2)
    rec = {"bbox_list": [[[250, 250, 750, 950], [0, 0, 500, 500]]], "bbox_img_idx": [[1, 1]]}
    out, drawn = draw_markers(images, rec, "spatial_imagination_map_mv")
    # y2 = 380: 380 + 47 > 400, so the origin is (58, 380 - 47 = 333); the second box labels "object1"
    green = (out[1] == CV_GREEN).all(-1)
    ys, _ = np.nonzero(green[250:, :])
    assert ys.min() + 250 < 333 - 30
    assert [(d["label"], d["view"], d["box"]) for d in drawn] == [("object0", 1, [100, 100, 300, 380]),
                                                                   ("object1", 1, [0, 0, 200, 200])]
    assert out[0] is images[0]


def test_distance_infer_center_oo_video_points_and_labels():
    images = black(300, 300, 2)
    rec = {"point_list": [[[500, 500], [100, 100]]], "point_img_idx": [[1, 0]]}
    out, drawn = draw_markers(images, rec, "distance_infer_center_oo_video")
    # cv2.circle((150, 150), 20, (0, 0, 255), -1) on the RGB array: pure blue, radius 20
    v = out[1]
    assert px(v, 150, 150) == BLUE and px(v, 150, 130) == BLUE and px(v, 130, 150) == BLUE
    assert px(v, 150, 129) == BLACK and px(v, 129, 150) == BLACK and px(v, 171, 150) == BLACK
    assert (v[120:200, 170:300] == CV_GREEN).all(-1).sum() > 500      # "objectA" from (170, 170)
    assert px(out[0], 30, 30) == BLUE and (out[0] == CV_GREEN).all(-1).any()   # "object0"
    assert drawn == [{"kind": "point", "color": "blue", "view": 1, "xy": [150, 150], "label": "objectA"},
                     {"kind": "point", "color": "blue", "view": 0, "xy": [30, 30], "label": "object0"}]


def test_spatial_imagination_video_bgr_colours_and_label_boxes():
    images = black(400, 400, 4)
    box = [[250, 250, 500, 500]]                # (100, 100, 200, 200); cv2 rectangle (80, 80)-(220, 220)
    rec = {"bbox_img_idx": [[0, 1, 2, 3]], "green_bbox": box, "blue_bbox": box, "red_bbox": box,
           "yellow_bbox": box}
    out, drawn = draw_markers(images, rec, "spatial_imagination_oo_video")
    # colours given in BGR: green (0,255,0), blue (255,0,0)->RGB (0,0,255), red (0,0,255)->(255,0,0),
    # "yellow" (225,225,0)->RGB (0,225,225)
    want = [CV_GREEN, BLUE, RED, (0, 225, 225)]
    for v, colour in enumerate(want):
        img = out[v]
        assert px(img, 150, 70) == colour and px(img, 150, 90) == colour and px(img, 150, 91) == BLACK
        # label background: cv2.rectangle((200 - 242, 247 - 47), (200, 247 + 5), FILLED)
        assert px(img, 252, 195) == colour and px(img, 252, 200) == colour
        assert px(img, 253, 195) == BLACK and px(img, 252, 201) == BLACK
        assert (img[200:253, 0:201] == (255, 255, 255)).all(-1).sum() > 500   # white label text
    assert [(d["color"], d["label"], d["view"]) for d in drawn] == [
        ("green", "object0", 0), ("blue", "object1", 1), ("red", "object2", 2), ("yellow", "object3", 3)]


def test_spatial_imagination_oc_video_three_boxes():
    images = black(400, 400, 2)
    box = [[250, 250, 500, 500]]
    rec = {"bbox_img_idx": [[1, 1, 0]], "green_bbox": box, "blue_bbox": box, "red_bbox": box}
    out, drawn = draw_markers(images, rec, "spatial_imagination_oc_video")
    assert px(out[0], 150, 70) == RED
    assert px(out[1], 150, 70) == BLUE          # blue drawn after green on the same view
    assert [d["label"] for d in drawn] == ["object0", "object1", "object2"]


def test_obj_frame_locate_and_distance_prediction_oo_video():
    images = black(100, 100, 3)
    out, drawn = draw_markers(images, {"bbox_img_idx": [[2]], "red_bbox": [[400, 400, 600, 600]]},
                              "obj_frame_locate")
    assert px(out[2], 50, 22) == RED and out[0] is images[0]
    out, drawn = draw_markers(images, {"point_img_idx": [[2, 1]], "red_point": [[500, 500]],
                                       "blue_point": [[500, 500]]}, "distance_prediction_oo_video")
    assert px(out[2], 50, 50) == RED and px(out[1], 50, 50) == BLUE


def test_check_markers_agrees_with_drawing():
    from hatch_vlm.data.spar7m.markers import check_markers

    good = {"point_img_idx": [[1, 0]], "red_point": [[500, 250]], "blue_point": [[100, 900]]}
    check_markers(good, "depth_prediction_oc_mv", 2)            # draws nothing, raises nothing
    for bad, views in (({**good, "point_img_idx": [[2, 0]]}, 2), ({"point_img_idx": [[1, 0]]}, 2),
                       ({**good, "red_point": [[500]]}, 2)):
        with pytest.raises(RecordError) as dry:
            check_markers(bad, "depth_prediction_oc_mv", views)
        with pytest.raises(RecordError) as real:
            draw_markers([np.zeros((100, 200, 3), np.uint8)] * views, bad, "depth_prediction_oc_mv")
        assert dry.value.kind == real.value.kind == "bad marker"
    with pytest.raises(RecordError, match="draw rule") as e:
        check_markers({"red_point": [[1, 2]]}, "no_such_task", 1)
    assert e.value.kind == "unknown marker task"
