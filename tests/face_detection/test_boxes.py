"""Box arithmetic of Wav2Lip's face_detect: flags, fill, pads, smoothing, VoxCeleb2 crop."""

import numpy as np
import pytest

from common.errors import Diff2LipError, MediaError
from face_detection import (
    fill_missing,
    pad_boxes,
    parse_box,
    parse_pads,
    smooth_boxes,
    voxceleb2_box,
)


def reference_smooth(rows, T=5):
    """Wav2Lip's get_smoothened_boxes re-done on lists of Python ints (in place, int() truncation)."""
    boxes = [list(map(int, r)) for r in rows]
    n = len(boxes)
    for i in range(n):
        window = boxes[n - T :] if i + T > n else boxes[i : i + T]
        boxes[i] = [int(sum(col) / len(window)) for col in zip(*window)]
    return boxes


# ---------------------------------------------------------------- smoothing


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 11, 40])
def test_smooth_matches_reference(n):
    rng = np.random.RandomState(n)
    y1 = rng.randint(0, 300, n)
    x1 = rng.randint(0, 300, n)
    boxes = np.stack([y1, y1 + rng.randint(1, 200, n), x1, x1 + rng.randint(1, 200, n)], axis=1)
    before = boxes.copy()
    out = smooth_boxes(boxes)
    assert out.dtype == np.int64 and out.shape == (n, 4)
    assert out.tolist() == reference_smooth(before.tolist())
    np.testing.assert_array_equal(boxes, before)  # works on a copy


def test_smooth_hand_computed():
    # One column 0,10,...,50 (all four columns alike), T=5, N=6:
    # i=0: mean(0,10,20,30,40)=20; i=1: mean(10..50)=30;
    # i>=2 use the last 5 boxes, already partly smoothed:
    # i=2: (30+20+30+40+50)/5=34; i=3: (30+34+30+40+50)/5=36.8->36;
    # i=4: (30+34+36+40+50)/5=38; i=5: (30+34+36+38+50)/5=37.6->37.
    col = np.array([0, 10, 20, 30, 40, 50])
    out = smooth_boxes(np.stack([col] * 4, axis=1))
    assert out[:, 0].tolist() == [20, 30, 34, 36, 38, 37]
    assert (out == out[:, :1]).all()


def test_smooth_short_clips_use_negative_slice():
    # N=4: boxes[4-5:] is boxes[-1:], the last box alone, for every i.
    out = smooth_boxes(np.array([[0] * 4, [8] * 4, [3] * 4, [5] * 4]))
    assert out[:, 0].tolist() == [5, 5, 5, 5]
    # N=3: boxes[-2:]; i=0: (10+21)/2=15; i=1: (10+21)/2=15; i=2: (15+21)/2=18.
    out = smooth_boxes(np.array([[0] * 4, [10] * 4, [21] * 4]))
    assert out[:, 0].tolist() == [15, 15, 18]


# ---------------------------------------------------------------- fill / pads / flags


def test_fill_missing_nearest_and_count():
    a, b, c = (1, 2, 3, 4), (10, 20, 30, 40), (5, 6, 7, 8)
    raw = [None, None, a, None, None, None, b, None, c, None]
    xyxy, n_missing = fill_missing(raw, "clip.mp4")
    # frame 4 is 2 from a and 2 from b: the earlier wins; frame 7 ties b/c: b.
    expected = [a, a, a, a, a, b, b, b, c, c]
    assert xyxy.dtype == np.int64
    assert xyxy.tolist() == [list(e) for e in expected]
    assert n_missing == 7  # frames 0, 1, 3, 4, 5, 7, 9


def test_fill_missing_none_missing():
    raw = [(0, 0, 5, 5), (1, 1, 6, 6)]
    xyxy, n_missing = fill_missing(raw, "clip.mp4")
    assert xyxy.tolist() == [[0, 0, 5, 5], [1, 1, 6, 6]] and n_missing == 0


def test_fill_missing_all_missing_raises():
    with pytest.raises(MediaError, match=r"no face found in any of the 3 frames of 'some/clip\.mp4'.*--box"):
        fill_missing([None, None, None], "some/clip.mp4")


def test_pad_boxes_clamps_to_frame():
    xyxy = np.array([[5, 3, 50, 40], [20, 15, 30, 25]])
    out = pad_boxes(xyxy, (10, 10, 2, 20), (45, 60))
    # row 0: y1=max(0,3-10)=0, y2=min(45,40+10)=45, x1=max(0,5-2)=3, x2=min(60,50+20)=60
    # row 1: y1=5, y2=35, x1=18, x2=50
    assert out.tolist() == [[0, 45, 3, 60], [5, 35, 18, 50]]


def test_parse_pads_and_box():
    assert parse_pads("0,10,0,0") == (0, 10, 0, 0)
    assert parse_pads(" 1, -2 ,3,4") == (1, -2, 3, 4)
    assert parse_box("10,100,20,120") == (10, 100, 20, 120)


@pytest.mark.parametrize("text", ["0,10,0", "0,10,0,0,1", "a,b,c,d", "", "0.5,1,2,3"])
def test_parse_pads_bad(text):
    with pytest.raises(Diff2LipError, match="--pads"):
        parse_pads(text)


@pytest.mark.parametrize("text", ["1,2,3", "x,2,3,4", "10,5,0,4", "0,5,4,4", "-1,5,0,4"])
def test_parse_box_bad(text):
    with pytest.raises(Diff2LipError, match="--box"):
        parse_box(text)


def test_voxceleb2_box():
    # 224x224: bottom cut int(224*2.36/8)=int(66.08)=66 -> rows [0, 158);
    # side cut int(224*1.8/8)=int(50.4)=50 -> columns [50, 174).
    assert voxceleb2_box(224, 224) == (0, 158, 50, 174)
    # 256x320: int(256*2.36/8)=int(75.52)=75 -> 181; int(320*1.8/8)=72 -> 248.
    assert voxceleb2_box(256, 320) == (0, 181, 72, 248)
