"""--paste feather: only the mouth and jaw change, no seam along the box, optional colour match."""

import cv2
import numpy as np
from skimage.data import astronaut

from face_detection import border_gradient, crop_face, feather_mask, paste_face

BOX = (50, 190, 170, 280)  # (y1, y2, x1, x2): the astronaut's face, padded a little


def drifted_face(frame, size=128, shift=(18, -8, 6)):
    """A stand-in for a generated crop: the real crop, blurred and colour-shifted as a diffusion
    sample at 128 px tends to be."""
    crop = crop_face(frame, BOX, size).astype(np.int16)
    return np.clip(cv2.GaussianBlur(crop, (0, 0), 1.5) + np.array(shift), 0, 255).astype(np.uint8)


def test_feather_changes_only_inside_the_ellipse_of_the_lower_face():
    frame = astronaut()
    face = drifted_face(frame)
    out = paste_face(frame, face, BOX, mode="feather")
    y1, y2, x1, x2 = BOX
    mid = y1 + (y2 - y1) // 2
    assert np.array_equal(out[:mid], frame[:mid])  # upper face and above untouched
    outside = np.ones(frame.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(out[outside], frame[outside])
    # The box's bottom corners and edges keep the source (up to a rounding level).
    assert np.abs(out[y2 - 1, x1:x2].astype(int) - frame[y2 - 1, x1:x2]).max() <= 1
    assert np.abs(out[mid:y2, x1].astype(int) - frame[mid:y2, x1]).max() <= 1
    # The mouth (centre of the lower half) is the generated face.
    mouth = (slice(y1 + 95, y1 + 110), slice(x1 + 45, x1 + 65))
    resized = cv2.resize(face, (x2 - x1, y2 - y1))
    assert np.abs(out[mouth].astype(int) - resized[y1 + 95 - y1 : y1 + 110 - y1, 45:65]).max() <= 1


def test_feather_mask_is_one_at_the_mouth_and_vanishes_at_the_edges():
    mask = feather_mask(140, 110, 70)
    assert mask.shape == (140, 110) and mask[105, 55] == 1.0
    assert mask[:70].max() == 0 and mask[-1].max() < 0.01 and mask[:, 0].max() < 0.01 and mask[:, -1].max() < 0.01


def test_seam_gradient_full_paste_against_feather_and_colour_match():
    frame = astronaut()
    face = drifted_face(frame)
    source = border_gradient(frame, BOX)
    full = border_gradient(paste_face(frame, face, BOX, mode="full"), BOX)
    lower = border_gradient(paste_face(frame, face, BOX, mode="lower"), BOX)
    feather = border_gradient(paste_face(frame, face, BOX, mode="feather"), BOX)
    assert full > 1.5 * source and lower > 1.5 * source  # 18.2 and 17.1 against 10.4
    assert abs(feather - source) < 0.02 * source
    # Colour match: inside the mouth region the drift is taken out.
    y1, y2, x1, x2 = BOX
    matched = paste_face(frame, face, BOX, mode="feather", color_match=True)
    plain = paste_face(frame, face, BOX, mode="feather")
    region = (slice(y1 + 80, y2 - 10), slice(x1 + 20, x2 - 20))
    drift = lambda img: np.abs(img[region].astype(float).mean((0, 1)) - frame[region].astype(float).mean((0, 1))).max()
    assert drift(plain) > 8 and drift(matched) < 3
