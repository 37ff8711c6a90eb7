"""Cut the face out of a frame and put a generated one back, as Wav2Lip's inference does.

Frames and faces are RGB uint8 `[H, W, 3]`; a box is `(y1, y2, x1, x2)`. Resizing is
`cv2.resize` with its default bilinear interpolation, as released.
"""

from typing import Sequence

import cv2
import numpy as np

PASTE_MODES = ("full", "lower", "feather")


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


def _generated_start(h: int, size: int, face_hide_percentage: float) -> int:
    """First row of an `h`-row box that holds only generated pixels (the crop's masked rows
    from `int(size * (1 - face_hide_percentage))` down)."""
    if not 0.0 < face_hide_percentage <= 1.0:
        raise ValueError(f"face_hide_percentage must be in (0, 1], got {face_hide_percentage}")
    mask_row = int(size * (1.0 - face_hide_percentage))
    # cv2.resize maps pixel edges proportionally, so the mask edge lands at mask_row * h / S;
    # rounding up keeps every box row above it (and its bilinear mix with ungenerated rows) out.
    return -(-mask_row * h // size)


def feather_mask(h: int, w: int, start: int) -> np.ndarray:
    """The weight of the generated face in an `h x w` box, `[h, w]` float32 in [0, 1]: an ellipse
    filling rows `start..h-1` (mouth and jaw), shrunk by four blur sigmas and blurred, so it
    is 1 around the mouth and below 0.01 at the box's edges and above `start` (set to 0 there)."""
    sigma = max(1.0, 0.03 * min(h - start, w))
    margin = 4 * sigma
    mask = np.zeros((h, w), dtype=np.float32)
    centre = (w / 2, start + (h - start) / 2)
    axes = (max(1.0, w / 2 - margin), max(1.0, (h - start) / 2 - margin))
    cv2.ellipse(mask, (round(centre[0]), round(centre[1])), (round(axes[0]), round(axes[1])), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    mask[:start] = 0
    return mask


def match_colour(generated: np.ndarray, source: np.ndarray, where: np.ndarray) -> np.ndarray:
    """`generated` `[h, w, 3]` float shifted and scaled per channel so that its mean and std over
    the pixels `where` (`[h, w]` bool) equal those of `source` there (std ratio kept in 0.5..2)."""
    if where.sum() < 16:
        return generated
    g, s = generated[where], source[where]
    scale = np.clip(s.std(0) / np.maximum(g.std(0), 1e-3), 0.5, 2.0)
    return (generated - g.mean(0)) * scale + s.mean(0)


def border_gradient(frame: np.ndarray, box: Sequence[int]) -> float:
    """Mean gradient magnitude across the edges of `box` in an RGB uint8 frame: the absolute
    grey-level step between each pixel just inside the box and its neighbour just outside, over
    the four sides (where the frame goes on). How visible a seam along the box is: compare with
    the source frame's value, which is the image's own texture there."""
    y1, y2, x1, x2 = (int(v) for v in box)
    grey = frame.astype(np.float32).mean(axis=2)
    h, w = grey.shape
    steps = []
    if y1 > 0:
        steps.append(grey[y1, x1:x2] - grey[y1 - 1, x1:x2])
    if y2 < h:
        steps.append(grey[y2 - 1, x1:x2] - grey[y2, x1:x2])
    if x1 > 0:
        steps.append(grey[y1:y2, x1] - grey[y1:y2, x1 - 1])
    if x2 < w:
        steps.append(grey[y1:y2, x2 - 1] - grey[y1:y2, x2])
    return float(np.abs(np.concatenate(steps)).mean()) if steps else 0.0


def paste_face(
    frame: np.ndarray,
    face: np.ndarray,
    box: Sequence[int],
    mode: str = "full",
    face_hide_percentage: float = 0.5,
    seam: float = 0.125,
    color_match: bool = False,
) -> np.ndarray:
    """A copy of `frame` with the generated `face` `[S, S, 3]` resized into `box`.

    "full" (released): the resized face replaces the whole box. "lower": only the part the
    model generated, the box rows from crop row `int(S * (1 - face_hide_percentage))` down
    (the mask of the diffusion inputs), so the upper face stays pixel-identical to `frame`;
    the first `seam` fraction of those rows ramps linearly from frame to face to hide the
    edge (0: a hard edge). "feather": only the mouth and jaw, through `feather_mask` (an
    ellipse inside those rows, blurred), so no edge of the box is left in the frame; with
    `color_match` the generated pixels first take the colour mean and std per channel of the
    source in the mask's soft band, where the two should agree. Pixels outside the box are
    never changed.
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

    start = _generated_start(h, face.shape[0], face_hide_percentage)
    rows = h - start
    if rows <= 0:
        return out
    if mode == "feather":
        mask = feather_mask(h, x2 - x1, start)[:, :, None]
        source = out[y1:y2, x1:x2].astype(np.float32)
        generated = resized.astype(np.float32)
        if color_match:
            generated = match_colour(generated, source, (mask[:, :, 0] > 0.05) & (mask[:, :, 0] < 0.95))
        blended = source + mask * (generated - source)
        out[y1:y2, x1:x2] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        return out
    ramp = int(round(seam * rows))
    weight = np.ones(rows, dtype=np.float32)
    weight[:ramp] = np.arange(1, ramp + 1, dtype=np.float32) / (ramp + 1)
    weight = weight[:, None, None]
    original = out[y1 + start : y2, x1:x2].astype(np.float32)
    blended = original * (1.0 - weight) + resized[start:].astype(np.float32) * weight
    out[y1 + start : y2, x1:x2] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
