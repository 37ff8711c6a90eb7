"""Whose lips move in a clip with several faces, cut into shots: selection, IoU track, scene cuts.

Pure functions over detections as data, so that a clip's track and cut list can be computed
once from the detections and histograms every process gathered. A frame's detections are an
array `[K, 5]` of `(x1, y1, x2, y2, score)`, in the detector's order (best score first).
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from common.errors import Diff2LipError

from .boxes import Box, parse_box

XYXY = Tuple[int, int, int, int]

FACE_SELECT_RULES = ("first", "largest", "central", "left:N", "nearest:top,bottom,left,right")
# A face continues the track when its box overlaps the last tracked box by at least this IoU.
# Faces of a talking-head video move a few pixels per frame (IoU > 0.8); two people's faces
# side by side do not overlap at all.
TRACK_MIN_IOU = 0.3
# Joint colour histogram: 8 levels per channel (512 bins) of every 8th pixel in each direction.
HIST_LEVELS = 8
HIST_STRIDE = 8


@dataclass(frozen=True)
class FaceSelect:
    """`--face_select`: `rule` one of first, largest, central, left, nearest; `index` the N of
    left:N (1 = leftmost); `box` the `(y1, y2, x1, x2)` of nearest:..."""

    rule: str
    index: int = 1
    box: Optional[Box] = None


def parse_face_select(text: str) -> FaceSelect:
    """`--face_select` text -> FaceSelect, or a one-line error naming the valid values."""
    text = str(text).strip()
    usage = f"--face_select {text!r}: expected one of {', '.join(FACE_SELECT_RULES)}"
    rule, _, arg = text.partition(":")
    if rule in ("first", "largest", "central") and not arg:
        return FaceSelect(rule)
    if rule == "left" and arg.strip().isdigit() and int(arg) >= 1:
        return FaceSelect("left", index=int(arg))
    if rule == "nearest" and arg:
        try:
            return FaceSelect("nearest", box=parse_box(arg))
        except Diff2LipError:
            raise Diff2LipError(usage + " (a box with 0 <= top < bottom, 0 <= left < right)") from None
    raise Diff2LipError(usage)


def as_detections(entry) -> np.ndarray:
    """One frame's detector output -> `[K, 5]` float64 `(x1, y1, x2, y2, score)`.

    Accepts None (no face), one `(x1, y1, x2, y2)` box (score 1), or rows of 4 or 5 numbers.
    """
    if entry is None:
        return np.zeros((0, 5))
    rows = np.asarray(entry, dtype=np.float64)
    rows = rows.reshape(-1, rows.shape[-1]) if rows.size else np.zeros((0, 5))
    if rows.shape[1] == 4:
        rows = np.concatenate([rows, np.ones((len(rows), 1))], axis=1)
    if rows.shape[1] != 5:
        raise ValueError(f"detections must be rows of 4 or 5 numbers, got shape {rows.shape}")
    return rows


def iou(box: Sequence[float], boxes: np.ndarray) -> np.ndarray:
    """IoU of one `(x1, y1, x2, y2)` box with each row of `boxes` `[K, >=4]` -> `[K]`."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, np.shape(boxes)[-1] if len(boxes) else 4)
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def select_face(dets: np.ndarray, select: FaceSelect, frame_hw: Tuple[int, int]) -> Optional[int]:
    """Row of `dets` `[K, 5]` that `select` chooses in one frame, or None (no face, or fewer than
    N faces for left:N). Ties go to the detector's order."""
    if len(dets) == 0:
        return None
    cx = (dets[:, 0] + dets[:, 2]) / 2
    cy = (dets[:, 1] + dets[:, 3]) / 2
    if select.rule == "first":
        return 0
    if select.rule == "largest":
        return int(np.argmax((dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1])))
    if select.rule == "central":
        h, w = frame_hw
        return int(np.argmin((cx - w / 2) ** 2 + (cy - h / 2) ** 2))
    if select.rule == "left":
        if len(dets) < select.index:
            return None
        return int(np.argsort(cx, kind="stable")[select.index - 1])
    if select.rule == "nearest":
        y1, y2, x1, x2 = select.box
        return int(np.argmin((cx - (x1 + x2) / 2) ** 2 + (cy - (y1 + y2) / 2) ** 2))
    raise ValueError(f"unknown face selection rule {select.rule!r}")


def shot_ranges(n: int, cuts: Sequence[int]) -> List[Tuple[int, int]]:
    """The shots `[(start, stop), ...]` of `n` frames split at `cuts` (frames that start a shot)."""
    edges = [0] + sorted(c for c in set(cuts) if 0 < c < n) + [n]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:])]


def track_face(
    detections: Sequence[np.ndarray],
    select: FaceSelect,
    frame_hw: Tuple[int, int],
    cuts: Sequence[int] = (),
    min_iou: float = TRACK_MIN_IOU,
) -> List[Optional[XYXY]]:
    """The chosen person's box in every frame, or None where that person is not seen.

    `first` is the released rule: each frame's first detection, no track. Otherwise, per shot:
    the face `select` chooses in the shot's first frame where it can choose, then in each frame
    the face overlapping the last tracked box most (IoU >= `min_iou`). When the person is lost
    (left the frame, or missed by the detector), a face is taken up again by the rule only if it
    did not continue a face of the previous frame, so the track never moves to someone who
    was in the picture all along. The track restarts at every cut.

    :param detections: per frame `[K, 5]` (see `as_detections`).
    :return: per frame int `(x1, y1, x2, y2)` or None.
    """
    dets = [as_detections(d) for d in detections]
    out: List[Optional[XYXY]] = [None] * len(dets)
    for start, stop in shot_ranges(len(dets), cuts):
        last: Optional[np.ndarray] = None  # the person's last seen box
        previous = np.zeros((0, 5))  # every face of the previous frame
        for i in range(start, stop):
            faces = dets[i]
            chosen = None
            if select.rule == "first" or last is None:
                chosen = select_face(faces, select, frame_hw)
            elif len(faces):
                overlap = iou(last, faces)
                if overlap.max() >= min_iou:
                    chosen = int(np.argmax(overlap))
                else:
                    new = [k for k in range(len(faces)) if len(previous) == 0 or iou(faces[k], previous).max() < min_iou]
                    pick = select_face(faces[new], select, frame_hw) if new else None
                    chosen = None if pick is None else new[pick]
            if chosen is not None:
                last = faces[chosen, :4]
                out[i] = tuple(int(v) for v in last)
            previous = faces
    return out


def colour_histogram(frame: np.ndarray, levels: int = HIST_LEVELS, stride: int = HIST_STRIDE) -> np.ndarray:
    """Joint RGB histogram of every `stride`-th pixel of an RGB uint8 `[H, W, 3]` frame:
    `[levels**3]` float32 summing to 1."""
    pixels = frame[::stride, ::stride].reshape(-1, 3)
    shift = 8 - int(np.log2(levels))
    q = (pixels >> shift).astype(np.int32)
    index = (q[:, 0] * levels + q[:, 1]) * levels + q[:, 2]
    counts = np.bincount(index, minlength=levels**3).astype(np.float32)
    return counts / max(len(index), 1)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total-variation distance (half the L1) between two colour histograms: 0 same colours, 1 none shared."""
    return float(0.5 * np.abs(np.asarray(b, dtype=np.float32) - np.asarray(a, dtype=np.float32)).sum())


def scene_cuts(histograms: np.ndarray, threshold: float) -> List[int]:
    """Frames that start a new shot: where the total-variation distance (half the L1) between
    consecutive frames' colour histograms `[N, B]` exceeds `threshold` (0: no cuts).

    Head motion and speech move a few percent of the colour mass between frames; a cut to
    another scene moves most of it.
    """
    if threshold <= 0 or len(histograms) < 2:
        return []
    h = np.asarray(histograms, dtype=np.float32)
    distance = 0.5 * np.abs(h[1:] - h[:-1]).sum(axis=1)
    return [int(i) + 1 for i in np.flatnonzero(distance > threshold)]


def fade_weights(generated: np.ndarray, fade: int) -> np.ndarray:
    """Per frame the share of the generated face in the output `[N]` float32 in [0, 1]: 0 for
    frames passed through, ramping up over the `fade` generated frames next to them (a
    cross-fade at the boundaries of every generated run), 1 elsewhere.

    :param generated: `[N]` bool, frames that get a generated face.
    """
    generated = np.asarray(generated, dtype=bool)
    n = len(generated)
    passed = np.flatnonzero(~generated)
    if len(passed) == 0:
        return np.ones(n, dtype=np.float32)
    idx = np.arange(n)
    after = np.clip(np.searchsorted(passed, idx), 0, len(passed) - 1)
    before = np.clip(after - 1, 0, len(passed) - 1)
    distance = np.minimum(np.abs(idx - passed[after]), np.abs(idx - passed[before]))
    return np.minimum(1.0, distance / (fade + 1)).astype(np.float32)
