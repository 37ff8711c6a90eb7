"""Cut the face out of a frame and put a generated one back, as Wav2Lip's inference does.

Frames and faces are RGB uint8 `[H, W, 3]`; a box is `(y1, y2, x1, x2)`. Resizing is
`cv2.resize` with its default bilinear interpolation, as released.
"""

from typing import Sequence

import cv2
import numpy as np

PASTE_MODES = ("full", "lower")


def _check_box_in(frame: np.ndarray, box: Sequence[int]) -> None:
    y1, y2, x1, x2 = box
    h, w = frame.shape[:2]
    if not (0 <= y1 < y2 <= h and 0 <= x1 < x2 <= w):
        raise ValueError(f"box {tuple(box)} (y1, y2, x1, x2) is empty or not inside a {h}x{w} frame")


def crop_face(frame: np.ndarray, box: Sequence[int], size: int) -> np.ndarray:
    """`frame[y1:y2, x1:x2]` resized to `[size, size, 3]` uint8."""
    _check_box_in(frame, box)
    y1, y2, x1, x2 = (int(v) for v in box)
    return cv2.resize(frame[y1:y2, x1:x2], (size, size))


def paste_face(
    frame: np.ndarray,
    face: np.ndarray,
    box: Sequence[int],
    mode: str = "full",
    face_hide_percentage: float = 0.5,
    seam: float = 0.125,
) -> np.ndarray:
    """A copy of `frame` with the generated `face` `[S, S, 3]` resized into `box`.

    "full" (released): the resized face replaces the whole box. "lower": only the part the
    model generated, the box rows from crop row `int(S * (1 - face_hide_percentage))` down
    (the mask of the diffusion inputs), so the upper face stays pixel-identical to `frame`;
    the first `seam` fraction of those rows ramps linearly from frame to face to hide the
    edge (0: a hard edge). Pixels outside the box are never changed.
    """
    if mode not in PASTE_MODES:
        raise ValueError(f"paste mode {mode!r} is not one of {PASTE_MODES}")
    if face.ndim != 3 or face.shape[2] != 3 or face.shape[0] != face.shape[1]:
        raise ValueError(f"face must be [S, S, 3], got {face.shape}")
    _check_box_in(frame, box)
    y1, y2, x1, x2 = (int(v) for v in box)
    h = y2 - y1
    resized = cv2.resize(np.asarray(face, dtype=np.uint8), (x2 - x1, h))
    out = frame.copy()
    if mode == "full":
        out[y1:y2, x1:x2] = resized
        return out

    if not 0.0 < face_hide_percentage <= 1.0:
        raise ValueError(f"face_hide_percentage must be in (0, 1], got {face_hide_percentage}")
    size = face.shape[0]
    mask_row = int(size * (1.0 - face_hide_percentage))
    # cv2.resize maps pixel edges proportionally, so the mask edge lands at mask_row * h / S;
    # rounding up keeps every box row above it (and its bilinear mix with ungenerated rows) out.
    start = -(-mask_row * h // size)
    rows = h - start
    if rows <= 0:
        return out
    ramp = int(round(seam * rows))
    weight = np.ones(rows, dtype=np.float32)
    weight[:ramp] = np.arange(1, ramp + 1, dtype=np.float32) / (ramp + 1)
    weight = weight[:, None, None]
    original = out[y1 + start : y2, x1:x2].astype(np.float32)
    blended = original * (1.0 - weight) + resized[start:].astype(np.float32) * weight
    out[y1 + start : y2, x1:x2] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
