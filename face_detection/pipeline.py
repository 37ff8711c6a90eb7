"""One face box per frame of a streamed clip, in the order of Wav2Lip's `face_detect`.

The steps are separate so that several processes can each detect a range of frames and join
their raw detections before the clip-wide steps (nearest fill, pads, smoothing):
`detect_faces` -> `boxes_from_detections`, or `fixed_boxes` when no detector is needed.
`face_boxes` chains them for one process.

For in-the-wild clips, `scan_faces` keeps every face of every frame and a colour histogram per
frame, and `track_boxes` turns the joined scans into the chosen person's boxes with scene cuts,
gap rules and the frames to pass through (`FaceTrack`).
"""

from dataclasses import dataclass, field
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from common.errors import Diff2LipError, MediaError

from .boxes import Box, check_box, check_pads, fill_missing, pad_boxes, smooth_boxes, voxceleb2_box
from .detector import XYXY
from .tracking import FaceSelect, as_detections, colour_histogram, fade_weights, scene_cuts, track_face

NO_FACE_MODES = ("passthrough", "nearest", "fail")
# Generated frames next to a frame passed through cross-fade over this many frames (0.12 s).
FADE_FRAMES = 3


class _one_size:
    """Iterate frames, checking they share one size (`frame_hw`, known after the first) and
    that there is at least one."""

    def __init__(self, frames: Iterable[np.ndarray], source_name: str):
        self._frames = frames
        self._source_name = source_name
        self.frame_hw: Optional[Tuple[int, int]] = None

    def __iter__(self) -> Iterator[np.ndarray]:
        n_frames = 0
        for frame in self._frames:
            hw = tuple(frame.shape[:2])
            if self.frame_hw is None:
                self.frame_hw = hw
            elif hw != self.frame_hw:
                raise MediaError(
                    f"frame {n_frames} of '{self._source_name}' is {hw[0]}x{hw[1]}, the first was "
                    f"{self.frame_hw[0]}x{self.frame_hw[1]}; re-encode the clip at one size"
                )
            n_frames += 1
            yield frame
        if n_frames == 0:
            raise MediaError(f"'{self._source_name}' has no video frames; give a clip with at least one frame")


def fixed_boxes(
    n_frames: int, frame_hw: Tuple[int, int], box: Optional[Box], is_voxceleb2: bool, source_name: str = "the video"
) -> Optional[np.ndarray]:
    """`[N, 4]` copies of `--box` or of the VoxCeleb2 crop (neither padded nor smoothed, as
    released), or None when the detector must find the faces."""
    if box is not None and is_voxceleb2:
        raise Diff2LipError("--box and --is_voxceleb2 True both fix the face box; pass only one")
    if box is not None:
        check_box(box, frame_hw, source_name)
        fixed = box
    elif is_voxceleb2:
        fixed = voxceleb2_box(*frame_hw)
    else:
        return None
    return np.tile(np.asarray(fixed, dtype=np.int64), (n_frames, 1))


def _detector_batches(frames: Iterable[np.ndarray], detector, source_name: str, call, on_frame=None):
    """`(results of call(batch) per frame, frame size)` over `frames`, one detector call's worth
    of frames held at a time (`detector.frames_per_call`, else `batch_size`: on the CPU a few
    720p frames, whatever the clip's length); `on_frame(frame)` sees every frame as it passes."""
    results: list = []
    pending: List[np.ndarray] = []
    sized = _one_size(frames, source_name)
    per_call = getattr(detector, "frames_per_call", lambda hw: detector.batch_size)
    for frame in sized:
        if on_frame is not None:
            on_frame(frame)
        pending.append(frame)
        if len(pending) >= per_call(sized.frame_hw):
            results.extend(call(pending))
            pending = []
    if pending:
        results.extend(call(pending))
    return results, sized.frame_hw


def detect_faces(frames: Iterable[np.ndarray], detector, source_name: str = "the video") -> Tuple[List[Optional[XYXY]], Tuple[int, int]]:
    """Raw first detections `(x1, y1, x2, y2)` or None per frame, and the frame size.

    :param frames: RGB uint8 `[H, W, 3]` frames of one size; only a detector batch of them is
        held at a time.
    :param detector: a `FaceDetector`, or anything with `batch_size` and
        `detect(list of frames) -> [(x1, y1, x2, y2) or None]`.
    """
    return _detector_batches(frames, detector, source_name, detector.detect)


@dataclass
class ClipScan:
    """What one pass over (a range of) a clip's frames gathers for `track_boxes`."""

    detections: List[np.ndarray] = field(default_factory=list)  # per frame [K, 5] (x1, y1, x2, y2, score)
    histograms: List[np.ndarray] = field(default_factory=list)  # per frame [64] colour histogram
    frame_hw: Optional[Tuple[int, int]] = None

    @staticmethod
    def join(parts: Sequence["ClipScan"]) -> "ClipScan":
        """The scans of consecutive frame ranges (processes' parts, in order) as one."""
        sizes = [p.frame_hw for p in parts if p.frame_hw is not None]
        return ClipScan(
            [d for p in parts for d in p.detections], [h for p in parts for h in p.histograms], sizes[0] if sizes else None
        )


def scan_faces(frames: Iterable[np.ndarray], detector, source_name: str = "the video", detect_every: int = 1,
               cut_threshold: float = 0.0, min_face: float = 0.0) -> ClipScan:
    """Every face `[K, 5]` and the colour histogram (for scene cuts) of each frame, in one pass.

    :param detector: anything with `batch_size` and `detect_all(list of frames) -> [[K, 5]]`.
    :param detect_every: 1: the detector sees every frame; k > 1: every k-th frame, both sides of
        each scene cut (`cut_threshold`) and the last frame, the others filled from them where
        they agree (`keyframes.scan_keyframes`, which `min_face` also goes to).
    """
    if detect_every > 1 or min_face > 0:
        from .keyframes import scan_keyframes

        scan = scan_keyframes(_one_size(frames, source_name), detector, detect_every, cut_threshold, min_face)
        return ClipScan(scan.detections, scan.histograms, scan.frame_hw)
    histograms: List[np.ndarray] = []
    detections, frame_hw = _detector_batches(
        frames, detector, source_name, detector.detect_all, lambda f: histograms.append(colour_histogram(f))
    )
    return ClipScan(detections, histograms, frame_hw)


def _check_not_empty(boxes: np.ndarray, pads: Sequence[int], source_name: str) -> None:
    empty = np.flatnonzero((boxes[:, 1] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 2]))
    if len(empty):
        raise Diff2LipError(
            f"--pads {','.join(str(int(p)) for p in pads)} leave no face in frame {empty[0]} "
            f"of '{source_name}'; use smaller negative pads"
        )


def boxes_from_detections(
    raw: Sequence[Optional[XYXY]],
    frame_hw: Tuple[int, int],
    pads: Sequence[int] = (0, 0, 0, 0),
    source_name: str = "the video",
    smooth: bool = True,
) -> Tuple[np.ndarray, int]:
    """The clip-wide steps: nearest-box fill, pads, Wav2Lip's 5-frame smoothing
    (`smooth=False` is Wav2Lip's `--nosmooth`).

    :return: `([N, 4] int64 (y1, y2, x1, x2), number of frames whose box was filled in)`.
    """
    check_pads(pads, frame_hw, source_name)
    xyxy, n_missing = fill_missing(raw, source_name)
    boxes = pad_boxes(xyxy, pads, frame_hw)
    if smooth:
        boxes = smooth_boxes(boxes, T=5)
    _check_not_empty(boxes, pads, source_name)
    return boxes, n_missing


@dataclass
class FaceTrack:
    """The boxes of a clip whose faces were tracked (`track_boxes`)."""

    boxes: np.ndarray  # [N, 4] int64 (y1, y2, x1, x2); a frame passed through holds its nearest box (unused)
    weights: np.ndarray  # [N] float32: share of the generated face per frame (0: passed through)
    cuts: List[int]  # frames that start a new shot
    n_missing: int  # frames where the chosen person was not detected
    n_filled: int  # of those, frames given the nearest box
    n_passed: int  # frames passed through unchanged
    max_faces: int = 0  # the most faces the detector saw in one frame

    @property
    def n_generated(self) -> int:
        return int((self.weights > 0).sum())

    def summary(self) -> str:
        return (
            f"no face in {self.n_missing} of {len(self.weights)} frames: {self.n_filled} filled with the nearest box, "
            f"{self.n_passed} passed through; {self.n_generated} generated, {len(self.cuts)} scene cut(s)"
        )


def track_boxes(
    scan: ClipScan,
    select: FaceSelect,
    pads: Sequence[int] = (0, 0, 0, 0),
    no_face: str = "passthrough",
    max_gap: int = FADE_FRAMES,
    cut_threshold: float = 0.0,
    source_name: str = "the video",
    smooth: bool = True,
) -> FaceTrack:
    """The chosen person's boxes over a whole clip, from its joined scan.

    Scene cuts from the histograms; the track of `select` (restarting at each cut); gaps of at
    most `max_gap` frames filled with the nearest box of the same shot; then for longer gaps
    `no_face`: "passthrough" (the frames stay as they are, with a cross-fade of `FADE_FRAMES`
    into the generated runs), "nearest" (every gap filled, a shot without a face from the next
    shot: the rule of the release's fill), or "fail" (an error naming the first such frame).
    Pads, then the released 5-box smoothing along each run of boxes, never across a cut.
    """
    if no_face not in NO_FACE_MODES:
        raise ValueError(f"no_face {no_face!r} is not one of {NO_FACE_MODES}")
    n = len(scan.detections)
    if n:
        check_pads(pads, scan.frame_hw, source_name)
    max_faces = max((len(as_detections(d)) for d in scan.detections), default=0)
    if select.rule == "left" and 0 < max_faces < select.index:
        raise Diff2LipError(
            f"--face_select left:{select.index}: at most {max_faces} face{'s' if max_faces > 1 else ''} were seen in "
            f"one frame of '{source_name}'; give left:1 to left:{max_faces}, or another --face_select rule"
        )
    cuts = scene_cuts(np.stack(scan.histograms), cut_threshold) if scan.histograms else []
    raw = track_face(scan.detections, select, scan.frame_hw, cuts)
    n_missing = sum(1 for r in raw if r is None)
    if no_face == "nearest":
        within, _ = fill_missing(raw, source_name, cuts=cuts)
        rows = [tuple(r) if r[0] >= 0 else None for r in within]
        xyxy, _ = fill_missing(rows, source_name)  # shots without any face: the nearest shot's box
    else:
        xyxy, _ = fill_missing(raw, source_name, max_gap=max_gap, cuts=cuts, require_face=no_face == "fail")
    have = xyxy[:, 0] >= 0
    if no_face == "fail" and not have.all():
        first = int(np.flatnonzero(~have)[0])
        raise MediaError(
            f"no face in frame {first} ({first / 25:.2f} s) of '{source_name}' and the gap is longer than "
            f"--max_fill_gap {max_gap}; use --no_face passthrough or nearest, or a larger --max_fill_gap"
        )
    boxes = pad_boxes(np.where(have[:, None], xyxy, 0), pads, scan.frame_hw)
    if smooth:
        edges = [i for i in range(1, n) if have[i] != have[i - 1]]
        boxes = smooth_boxes(boxes, T=5, cuts=list(cuts) + edges)
    if have.any():
        _check_not_empty(boxes[have], pads, source_name)
        rows = [tuple(b) if h else None for b, h in zip(boxes, have)]
        boxes, _ = fill_missing(rows, source_name)  # placeholders for frames passed through
    else:
        h, w = scan.frame_hw
        boxes = np.tile(np.array([0, h, 0, w], dtype=np.int64), (n, 1))
    return FaceTrack(
        boxes=boxes,
        weights=fade_weights(have, FADE_FRAMES),
        cuts=cuts,
        n_missing=n_missing,
        n_filled=int(have.sum()) - (n - n_missing),
        n_passed=int((~have).sum()),
        max_faces=max_faces,
    )


def no_face_hint(detector, frame_hw: Tuple[int, int], n_frames: int, source_name: str = "the video") -> str:
    """The line to print when no frame of a clip had a face: what was tried, which flag to change."""
    tried = getattr(detector, "scales", lambda hw: [getattr(detector, "scale", 1.0)])(frame_hw)
    name = getattr(detector, "name", "the detector")
    h, w = frame_hw
    small = ", for a small one --face_det_scale 1" if tried[0] < 1 else ""  # 1 was tried already otherwise
    return (
        f"no face found in any of the {n_frames} frames of '{source_name}' ({w}x{h}) by {name} at scale "
        f"{', '.join(f'{s:.3g}' for s in tried)}: the clip passes through unchanged; for a face that fills most of "
        f"the frame try --face_det_scale {tried[-1] / 2:.3g}{small}, or another --face_detector, or give the face "
        f"as --box top,bottom,left,right with --is_voxceleb2 False"
    )


def face_boxes(
    frames: Iterable[np.ndarray],
    detector,
    pads: Sequence[int] = (0, 0, 0, 0),
    is_voxceleb2: bool = False,
    box: Optional[Box] = None,
    source_name: str = "the video",
    smooth: bool = True,
) -> Tuple[np.ndarray, int]:
    """Boxes `(y1, y2, x1, x2)` for every frame, reading `frames` once, a batch at a time.

    With `box` (`--box`) every frame gets that box; with `is_voxceleb2` the released VoxCeleb2
    crop; otherwise `detect_faces` then `boxes_from_detections`.

    :return: `([N, 4] int64 boxes, number of frames whose box was filled in)`.
    """
    if box is not None or is_voxceleb2:
        sized = _one_size(frames, source_name)
        count = sum(1 for _ in sized)
        return fixed_boxes(count, sized.frame_hw, box, is_voxceleb2, source_name), 0
    if detector is None:
        raise ValueError("face_boxes needs a detector unless box or is_voxceleb2 is given")
    raw, frame_hw = detect_faces(frames, detector, source_name)
    return boxes_from_detections(raw, frame_hw, pads, source_name, smooth)
