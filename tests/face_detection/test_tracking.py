"""Whose face, frame by frame: selection, the IoU track, scene cuts, gap rules (detections as data)."""

import cv2
import numpy as np
import pytest
from skimage.data import astronaut

from common.errors import Diff2LipError, MediaError
from dataset.synthetic import draw_face
from face_detection import colour_histogram, fill_missing, parse_face_select, scene_cuts, smooth_boxes
from face_detection.tracking import FaceSelect, fade_weights, select_face, track_face

HW = (360, 640)
# Two people: A on the left (large), B on the right (small), x1, y1, x2, y2, score.
A = (100, 80, 260, 280, 0.9)
B = (420, 120, 520, 240, 0.99)
C = (300, 100, 380, 200, 0.95)  # a third face, central


def moved(box, dx=0, dy=0):
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy, box[4])


def test_selection_rules_pick_the_right_face():
    dets = np.array([B, A, C], dtype=float)  # the detector's order: best score first
    assert select_face(dets, parse_face_select("first"), HW) == 0
    assert select_face(dets, parse_face_select("largest"), HW) == 1
    assert select_face(dets, parse_face_select("central"), HW) == 2
    assert select_face(dets, parse_face_select("left:1"), HW) == 1
    assert select_face(dets, parse_face_select("left:2"), HW) == 2
    assert select_face(dets, parse_face_select("left:3"), HW) == 0
    assert select_face(dets, parse_face_select("left:4"), HW) is None
    assert select_face(dets, parse_face_select("nearest:100,200,400,500"), HW) == 0  # B's centre (470, 180)


@pytest.mark.parametrize("bad", ["biggest", "left:0", "left:x", "nearest:1,2", "nearest:5,1,0,9", "largest:2"])
def test_bad_face_select_is_one_line_naming_the_flag_and_values(bad):
    with pytest.raises(Diff2LipError) as err:
        parse_face_select(bad)
    msg = str(err.value)
    assert msg.startswith(f"--face_select {bad!r}") and "largest" in msg and "left:N" in msg and "\n" not in msg


def test_two_faces_the_track_stays_on_the_chosen_person():
    # A drifts right by 4 px a frame; B, the detector's first, stays. "first" would edit B.
    dets = [np.array([B, moved(A, 4 * i)]) for i in range(10)]
    got = track_face(dets, FaceSelect("largest"), HW)
    assert got == [tuple(int(v) for v in moved(A, 4 * i)[:4]) for i in range(10)]
    assert track_face(dets, FaceSelect("first"), HW) == [B[:4]] * 10
    # The N-th from the left waits for a frame with N faces, then follows that person.
    one_then_two = [np.array([A])] * 2 + dets[2:]
    assert track_face(one_then_two, parse_face_select("left:2"), HW) == [None, None] + [B[:4]] * 8


def test_a_face_leaving_and_coming_back_never_hands_the_box_to_the_other_face():
    # A (chosen: largest) is seen in 0-3, gone in 4-7 while B stays, back at another place in 8-9.
    back = moved(A, dx=20, dy=30)
    dets = [np.array([B, A])] * 4 + [np.array([B])] * 4 + [np.array([B, back])] * 2
    got = track_face(dets, FaceSelect("largest"), HW)
    assert got == [A[:4]] * 4 + [None] * 4 + [tuple(back[:4])] * 2
    # A face entering while the person is away is taken up (it continues no face seen before).
    newcomer = [np.array([B, A])] * 2 + [np.array([B])] + [np.array([B, C])] * 2
    assert track_face(newcomer, FaceSelect("largest"), HW) == [A[:4]] * 2 + [None] + [C[:4]] * 2


def test_the_track_restarts_at_a_cut():
    # Shot 1: B alone is followed. Shot 2 (from frame 3): only A, far from B; without the cut the
    # track would have to re-acquire; with it the rule picks again at once.
    dets = [np.array([B])] * 3 + [np.array([A, C])] * 3
    got = track_face(dets, FaceSelect("largest"), HW, cuts=[3])
    assert got == [B[:4]] * 3 + [A[:4]] * 3
    # Without the cut, C and A are both new to the lost track: still the rule, by design.
    assert track_face(dets, FaceSelect("central"), HW, cuts=[3])[3:] == [C[:4]] * 3


def test_fill_respects_max_gap_and_cuts_and_keeps_the_released_rule_by_default():
    a, b = (0, 0, 10, 10), (50, 50, 60, 60)
    raw = [a, None, None, a, None, None, None, None, b, None]
    released, n = fill_missing(raw, "x")
    assert n == 7 and released[:, 0].tolist() == [0, 0, 0, 0, 0, 0, 50, 50, 50, 50]
    short, n = fill_missing(raw, "x", max_gap=2)
    assert short[:, 0].tolist() == [0, 0, 0, 0, -1, -1, -1, -1, 50, 50] and n == 3
    cut, n = fill_missing(raw, "x", cuts=[5])  # frames 5.. may not take box a
    assert cut[:, 0].tolist() == [0, 0, 0, 0, 0, 50, 50, 50, 50, 50] and n == 7
    none, n = fill_missing([None, None], "x", require_face=False)
    assert (none == -1).all() and n == 0
    with pytest.raises(MediaError, match="no face found in any of the 2 frames"):
        fill_missing([None, None], "x")


def test_no_box_is_smoothed_across_a_cut():
    boxes = np.array([[0] * 4] * 5 + [[100] * 4] * 5)
    assert smooth_boxes(boxes, cuts=[5])[:, 0].tolist() == [0] * 5 + [100] * 5
    # The released smoothing, without the cut, mixes the shots' boxes.
    assert smooth_boxes(boxes)[:, 0].tolist() == [0, 20, 40, 60, 80, 100, 100, 100, 100, 100]


def test_fade_weights_cross_fade_into_frames_passed_through():
    generated = np.array([1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1], dtype=bool)
    assert fade_weights(generated, 3).tolist() == [1, 1, 0.75, 0.5, 0.25, 0, 0, 0.25, 0.5, 0.75, 1, 1]
    assert fade_weights(np.ones(4, bool), 3).tolist() == [1, 1, 1, 1]


def test_histogram_cuts_find_the_cut_and_not_the_motion():
    # Shot 1: a drawn talking face; shot 2: a photograph, panning 3 px a frame.
    photo = cv2.resize(astronaut(), (700, 360))
    shot1 = [draw_face(i, 360, 640, seed=0) for i in range(6)]
    shot2 = [np.ascontiguousarray(photo[:, 3 * i : 3 * i + 640]) for i in range(6)]
    hists = np.stack([colour_histogram(f) for f in shot1 + shot2])
    assert hists.shape == (12, 512) and np.allclose(hists.sum(1), 1)
    distance = 0.5 * np.abs(np.diff(hists, axis=0)).sum(1)
    assert distance[:5].max() < 0.05 and distance[6:].max() < 0.1 and distance[5] > 0.9
    assert scene_cuts(hists, 0.5) == [6]
    assert scene_cuts(hists, 0) == []
