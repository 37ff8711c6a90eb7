"""crop_face / paste_face: the released full-box paste and the lower-face paste with a seam."""

import cv2
import numpy as np
import pytest

from face_detection import crop_face, paste_face


@pytest.fixture
def frame():
    rng = np.random.RandomState(0)
    return rng.randint(0, 256, (120, 160, 3), dtype=np.uint8)


BOX = (30, 80, 40, 100)  # y1, y2, x1, x2: 50 rows, 60 columns


def outside(img, box):
    y1, y2, x1, x2 = box
    keep = np.ones(img.shape[:2], bool)
    keep[y1:y2, x1:x2] = False
    return img[keep]


def test_crop_face(frame):
    face = crop_face(frame, BOX, 32)
    assert face.shape == (32, 32, 3) and face.dtype == np.uint8
    np.testing.assert_array_equal(face, cv2.resize(frame[30:80, 40:100], (32, 32)))
    with pytest.raises(ValueError):
        crop_face(frame, (30, 130, 40, 100), 32)


def test_full_round_trip(frame):
    face = crop_face(frame, BOX, 32)
    out = paste_face(frame, face, BOX, mode="full")
    np.testing.assert_array_equal(outside(out, BOX), outside(frame, BOX))
    np.testing.assert_array_equal(out[30:80, 40:100], cv2.resize(face, (60, 50)))
    assert out is not frame and not np.shares_memory(out, frame)
    # a smooth image survives crop -> paste closely
    smooth = cv2.GaussianBlur(frame, (0, 0), 8)
    back = paste_face(smooth, crop_face(smooth, BOX, 64), BOX)
    assert np.abs(back.astype(int) - smooth.astype(int)).max() <= 3


def test_lower_keeps_upper_face_and_outside(frame):
    face = np.full((32, 32, 3), 255, np.uint8)
    out = paste_face(frame, face, BOX, mode="lower", face_hide_percentage=0.5)
    # mask row int(32*0.5)=16 -> box row 16*50/32 = 25: frame rows 30..54 untouched
    np.testing.assert_array_equal(out[:55], frame[:55])
    np.testing.assert_array_equal(outside(out, BOX), outside(frame, BOX))
    lower = out[55:80, 40:100]
    assert (lower != frame[55:80, 40:100]).any(axis=-1).mean() > 0.99
    # seam: 25 lower rows, round(25/8)=3 ramp rows with weights 1/4, 2/4, 3/4, then the face
    for k, wgt in enumerate([0.25, 0.5, 0.75]):
        expected = np.rint(frame[55 + k, 40:100] * (1 - wgt) + 255 * wgt)
        np.testing.assert_array_equal(out[55 + k, 40:100], expected.astype(np.uint8))
    assert (out[58:80, 40:100] == 255).all()


def test_lower_edge_rounds_down_the_box_and_hard_seam(frame):
    box = (10, 55, 20, 70)  # 45 rows: 16*45/32 = 22.5 -> first pasted box row 23
    face = np.zeros((32, 32, 3), np.uint8)
    out = paste_face(frame, face, box, mode="lower", face_hide_percentage=0.5, seam=0.0)
    np.testing.assert_array_equal(out[:33], frame[:33])
    assert (out[33:55, 20:70] == 0).all()
    np.testing.assert_array_equal(outside(out, box), outside(frame, box))
    # face_hide_percentage 0.25: mask row int(32*0.75)=24 -> 24*45/32=33.75 -> box row 34
    out = paste_face(frame, face, box, mode="lower", face_hide_percentage=0.25, seam=0.0)
    np.testing.assert_array_equal(out[:44], frame[:44])
    assert (out[44:55, 20:70] == 0).all()


def test_paste_rejects_bad_arguments(frame):
    face = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="mode"):
        paste_face(frame, face, BOX, mode="upper")
    with pytest.raises(ValueError, match="face"):
        paste_face(frame, np.zeros((32, 16, 3), np.uint8), BOX)
    with pytest.raises(ValueError, match="box"):
        paste_face(frame, face, (0, 10, 150, 170))
