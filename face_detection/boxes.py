"""Face boxes as Wav2Lip's inference makes them: flags, missing-face fill, pads, smoothing.

A box is `(y1, y2, x1, x2)` in pixels (Wav2Lip's "coords"), its crop `frame[y1:y2, x1:x2]`.
Raw detections are `(x1, y1, x2, y2)`, the order the S3FD detector gives them.
"""

from typing import Optional, Sequence, Tuple

import numpy as np

from common.errors import Diff2LipError, MediaError

Box = Tuple[int, int, int, int]


def _parse_four_ints(text: str, flag: str, meaning: str) -> Box:
    parts = [p.strip() for p in str(text).split(",")]
    try:
        if len(parts) != 4:
            raise ValueError
        a, b, c, d = (int(p) for p in parts)
    except ValueError:
        raise Diff2LipError(f"{flag} {text!r} must be four comma-separated integers {meaning}") from None
    return a, b, c, d


def parse_pads(text: str) -> Box:
    """`--pads "top,bottom,left,right"` -> the pixels added to each side of a detected box.

    Negative values shrink the box, as Wav2Lip's integer `--pads` allowed.
    """
    return _parse_four_ints(text, "--pads", "top,bottom,left,right (e.g. 0,10,0,0)")


def parse_box(text: str) -> Box:
    """`--box "top,bottom,left,right"` -> a fixed `(y1, y2, x1, x2)` (checked against the frame
    size later, by `check_box`, once it is known)."""
    y1, y2, x1, x2 = _parse_four_ints(text, "--box", "top,bottom,left,right in pixels")
    if not (0 <= y1 < y2 and 0 <= x1 < x2):
        raise Diff2LipError(f"--box {text!r} needs 0 <= top < bottom and 0 <= left < right")
    return y1, y2, x1, x2


def check_box(box: Box, frame_hw: Tuple[int, int], source_name: str) -> None:
    """Raise if the `--box` `(y1, y2, x1, x2)` does not lie inside `frame_hw` frames."""
    y1, y2, x1, x2 = box
    h, w = frame_hw
    if not (0 <= y1 < y2 <= h and 0 <= x1 < x2 <= w):
        raise Diff2LipError(
            f"--box {y1},{y2},{x1},{x2} is not inside the {h}x{w} (HxW) frames of '{source_name}'; "
            f"give 0 <= top < bottom <= {h} and 0 <= left < right <= {w}"
        )


def check_pads(pads: Sequence[int], frame_hw: Tuple[int, int], source_name: str) -> None:
    """Raise if `--pads` `(top, bottom, left, right)` would stretch every detected box over the
    frame's whole height or width (then the clamped box is the frame, repainted at the crop size,
    whatever face was found), as an out-of-frame `--box` is refused."""
    top, bottom, left, right = (int(p) for p in pads)
    h, w = frame_hw
    if top + bottom >= h or left + right >= w:
        raise Diff2LipError(
            f"--pads {top},{bottom},{left},{right} would stretch every face box over the whole {h}x{w} (HxW) "
            f"frames of '{source_name}'; pads add a few pixels to the detected box: give top + bottom < {h} "
            f"and left + right < {w} (e.g. 0,10,0,0)"
        )


def fill_missing(
    raw: Sequence[Optional[Sequence[int]]],
    source_name: str,
    max_gap: Optional[int] = None,
    cuts: Sequence[int] = (),
    require_face: bool = True,
) -> Tuple[np.ndarray, int]:
    """Give each frame without a face the box of the nearest frame with one (ties: the earlier).

    With the defaults, every frame gets a box (the released rule). `cuts` (frames that start a
    new shot) keep each frame to boxes of its own shot; `max_gap` fills only the runs of at
    most that many frames without a face. Frames left without a box get `(-1, -1, -1, -1)`.

    :param raw: per frame, `(x1, y1, x2, y2)` or None.
    :param require_face: raise when no frame has a face (else all rows are -1).
    :return: `([N, 4] int64 (x1, y1, x2, y2), number of frames that were filled)`.
    """
    out = np.full((len(raw), 4), -1, dtype=np.int64)
    n_filled = 0
    edges = [0] + sorted(c for c in set(cuts) if 0 < c < len(raw)) + [len(raw)]
    for start, stop in zip(edges[:-1], edges[1:]):
        found = np.array([i for i in range(start, stop) if raw[i] is not None], dtype=np.int64)
        if len(found) == 0:
            continue
        known = np.array([raw[i] for i in found], dtype=np.int64).reshape(-1, 4)
        idx = np.arange(start, stop)
        # For every frame: the first detected frame at or after it, and the one before that.
        after = np.clip(np.searchsorted(found, idx), 0, len(found) - 1)
        before = np.clip(after - 1, 0, len(found) - 1)
        take_before = np.abs(idx - found[before]) <= np.abs(found[after] - idx)
        nearest = np.where(take_before, before, after)
        keep = np.ones(len(idx), dtype=bool)
        if max_gap is not None:
            # The length of the faceless run each frame lies in (runs at a shot's edge too).
            gap = np.where(
                idx < found[0], found[0] - start,
                np.where(idx > found[-1], stop - 1 - found[-1], found[after] - found[before] - 1),
            )
            keep = (gap <= max_gap) | np.isin(idx, found)
        out[idx[keep]] = known[nearest[keep]]
        n_filled += int(keep.sum()) - len(found)
    if require_face and not (out[:, 0] >= 0).any():
        raise MediaError(
            f"no face found in any of the {len(raw)} frames of '{source_name}'; "
            "give a clip with a visible face or pass --box top,bottom,left,right"
        )
    return out, n_filled


def pad_boxes(xyxy: np.ndarray, pads: Sequence[int], frame_hw: Tuple[int, int]) -> np.ndarray:
    """Wav2Lip's pads, clamped to the frame.

    :param xyxy: `[N, 4]` `(x1, y1, x2, y2)`.
    :param pads: `(top, bottom, left, right)`.
    :return: `[N, 4]` int64 `(y1, y2, x1, x2)`.
    """
    top, bottom, left, right = pads
    h, w = frame_hw
    xyxy = np.asarray(xyxy, dtype=np.int64).reshape(-1, 4)
    y1 = np.maximum(0, xyxy[:, 1] - top)
    y2 = np.minimum(h, xyxy[:, 3] + bottom)
    x1 = np.maximum(0, xyxy[:, 0] - left)
    x2 = np.minimum(w, xyxy[:, 2] + right)
    return np.stack([y1, y2, x1, x2], axis=1)


def smooth_boxes(boxes: np.ndarray, T: int = 5, cuts: Sequence[int] = ()) -> np.ndarray:
    """Wav2Lip's `get_smoothened_boxes`, exactly, on a copy; with `cuts`, on each run apart.

    In place on an integer array, so means truncate and the last windows read boxes that were
    already smoothed; with N < T every window is `boxes[N - T:]`, Python's negative slice (for
    N = 4 and T = 5 that is the last box alone). Column-wise, so the box order does not matter.
    `cuts` (indices that start a new run: scene cuts, the edges of frames without a box) split
    the rows into runs smoothed independently, so no window reaches across a cut.

    :param boxes: `[N, 4]` integers.
    :return: `[N, 4]` int64.
    """
    boxes = np.array(boxes, dtype=np.int64).reshape(-1, 4)
    edges = [0] + sorted(c for c in set(cuts) if 0 < c < len(boxes)) + [len(boxes)]
    for start, stop in zip(edges[:-1], edges[1:]):
        run = boxes[start:stop]  # a view: smoothed in place, as released
        for i in range(len(run)):
            window = run[len(run) - T :] if i + T > len(run) else run[i : i + T]
            run[i] = np.mean(window, axis=0)
    return boxes


def voxceleb2_box(height: int, width: int) -> Box:
    """The released VoxCeleb2 crop `(y1, y2, x1, x2)` of a `height x width` frame (no detector)."""
    # The released formula, term for term (int() truncates each cut).
    side = int(width * 1.8 / 8)
    return 0, height - int(height * 2.36 / 8), side, width - side

