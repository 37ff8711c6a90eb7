"""Face detection on keyframes only, the frames between filled from the keyframes' boxes.

The detector is the costliest step outside the network: on a CPU a 720p frame takes longer
than a whole frame of the 2-step student. Talking-head faces move smoothly, so `scan_keyframes`
runs the detector on every `every`-th frame, on both sides of every scene cut and on the last
frame, and gives each frame in between the boxes interpolated linearly between the two
keyframes around it. Where the two keyframes do not show the same faces (another count, or a
face that moved so far that its boxes overlap by less than `min_iou`: a fast turn, someone
entering), the frames in between are detected after all. So a fill never spans a cut, a change
of faces, or a large motion, and `every=1` is per-frame detection.

With `min_face` > 0 the keyframes after the first are detected on frames scaled so that the
smallest face the last keyframe held keeps about `min_face` pixels a side (never above the
detector's own first scale): a 400 px face in a 720p frame is found as well at a quarter of the
pixels. A keyframe where that finds fewer faces than its predecessor is detected again at the
detector's scales.

Frames are held only from one keyframe batch to the next (`frames_per_call` keyframes, `every`
frames apart), so memory does not grow with the clip.

Hand-written, not a tracker library's: what is needed is box interpolation between detections
and the rule for when not to trust it, over the repository's own detections and cut rule;
OpenCV's trackers follow one box with per-frame image work, which is what this avoids.
"""

from typing import Iterable, List, Optional, Tuple

import numpy as np

from .tracking import as_detections, colour_histogram, histogram_distance, iou

# Two keyframes' faces are the same people when each box overlaps its partner's by this IoU;
# below it the motion between them is too large to interpolate: fast nods (30 px at 2 Hz) are
# then detected frame by frame, which kept every frame's box at IoU >= 0.8 with per-frame
# detection at --detect_every 5 (benchmarks/bench_detect.py).
KEYFRAME_MIN_IOU = 0.6
# The smallest scale a keyframe is detected at, whatever the face size.
MIN_KEYFRAME_SCALE = 0.125


def match_faces(a: np.ndarray, b: np.ndarray, min_iou: float = KEYFRAME_MIN_IOU) -> Optional[List[int]]:
    """For each face of keyframe `a` `[K, 5]`, the index of the face of keyframe `b` it continues,
    or None when the two do not show the same faces (another count, or a face whose best partner
    overlaps it by less than `min_iou`). Greedy by IoU, each face of `b` used once."""
    if len(a) != len(b):
        return None
    free = np.ones(len(b), dtype=bool)
    order = []
    for face in a:
        overlap = np.where(free, iou(face[:4], b[:, :4]), -1.0)
        j = int(np.argmax(overlap))
        if overlap[j] < min_iou:
            return None
        free[j] = False
        order.append(j)
    return order


def interpolate_faces(a: np.ndarray, b: np.ndarray, order: List[int], fraction: float) -> np.ndarray:
    """The faces `fraction` (0..1) of the way from keyframe `a` to `b` (`order` from `match_faces`):
    boxes linear in time, rounded to integers as the detectors give them; the lower score."""
    if len(a) == 0:
        return np.zeros((0, 5), dtype=np.float64)
    b = b[order]
    boxes = np.round((1 - fraction) * a[:, :4] + fraction * b[:, :4])
    return np.concatenate([boxes, np.minimum(a[:, 4:5], b[:, 4:5])], axis=1)


class _Frame:
    __slots__ = ("index", "image", "key")

    def __init__(self, index: int, image: np.ndarray, key: bool):
        self.index, self.image, self.key = index, image, key


class KeyframeScan:
    """The state of one pass (see the module docstring); `scan_keyframes` drives it."""

    def __init__(self, detector, every: int, cut_threshold: float, min_face: float, min_iou: float):
        self.detector, self.every, self.cut_threshold = detector, max(1, int(every)), cut_threshold
        self.min_face, self.min_iou = float(min_face), min_iou
        self.detections: List[np.ndarray] = []
        self.histograms: List[np.ndarray] = []
        self.window: List[_Frame] = []
        self.anchor: Optional[Tuple[int, np.ndarray]] = None  # the last detected keyframe: (index, faces)
        self.detected = 0  # frames the detector saw
        self.frame_hw: Optional[Tuple[int, int]] = None

    def add(self, frame: np.ndarray) -> None:
        i = len(self.histograms)
        if self.frame_hw is None:
            self.frame_hw = tuple(frame.shape[:2])
        histogram = colour_histogram(frame)
        cut = (self.cut_threshold > 0 and i > 0
               and histogram_distance(self.histograms[-1], histogram) > self.cut_threshold)
        self.histograms.append(histogram)
        self.detections.append(np.zeros((0, 5)))
        if cut and self.window:
            self.window[-1].key = True  # the last frame of the old shot: no fill across the cut
        self.window.append(_Frame(i, frame, key=cut or i % self.every == 0))
        keys = sum(f.key for f in self.window)
        per_call = getattr(self.detector, "frames_per_call", lambda hw: self.detector.batch_size)
        if self.window[-1].key and keys >= per_call(frame.shape[:2]):
            self.resolve()

    def finish(self) -> None:
        if self.window:
            self.window[-1].key = True
            self.resolve()

    def _keyframe_scale(self, frame_hw: Tuple[int, int]) -> Optional[float]:
        """The scale for the next keyframes from the last keyframe's smallest face, or None."""
        if self.min_face <= 0 or self.anchor is None or len(self.anchor[1]) == 0:
            return None
        faces = self.anchor[1]
        side = float(np.min(np.minimum(faces[:, 2] - faces[:, 0], faces[:, 3] - faces[:, 1])))
        first = self.detector.scales(frame_hw)[0]
        return float(np.clip(self.min_face / max(side, 1.0), MIN_KEYFRAME_SCALE, first))

    def _detect(self, frames: List[_Frame], scale: Optional[float] = None) -> List[np.ndarray]:
        self.detected += len(frames)
        images = [f.image for f in frames]
        if scale is None:
            return [as_detections(d) for d in self.detector.detect_all(images)]
        return [as_detections(d) for d in self.detector.detect_all(images, first_scale=scale)]

    def resolve(self) -> None:
        """Detect the window's keyframes, fill or detect the frames between them, drop the window."""
        keys = [f for f in self.window if f.key]
        scale = self._keyframe_scale(keys[0].image.shape[:2])
        found = self._detect(keys, scale)
        if scale is not None:
            # Fewer faces than the keyframe before (a face shrank or turned away): the detector's
            # own scales again for those keyframes.
            expected = len(self.anchor[1])
            again = [k for k, faces in enumerate(found) if len(faces) < expected]
            for k, faces in zip(again, self._detect([keys[k] for k in again])):
                found[k] = faces
        for frame, faces in zip(keys, found):
            self.detections[frame.index] = faces
        between: List[_Frame] = []
        redetect: List[_Frame] = []
        previous = self.anchor
        for frame in self.window:
            if not frame.key:
                between.append(frame)
                continue
            faces = self.detections[frame.index]
            if between:
                order = None if previous is None else match_faces(previous[1], faces, self.min_iou)
                if order is None:
                    redetect.extend(between)
                else:
                    span = frame.index - previous[0]
                    for f in between:
                        self.detections[f.index] = interpolate_faces(previous[1], faces, order,
                                                                     (f.index - previous[0]) / span)
                between = []
            previous = (frame.index, faces)
        for frame, faces in zip(redetect, self._detect(redetect) if redetect else []):
            self.detections[frame.index] = faces
        self.anchor = previous
        self.window = []


def scan_keyframes(frames: Iterable[np.ndarray], detector, every: int, cut_threshold: float = 0.0,
                   min_face: float = 0.0, min_iou: float = KEYFRAME_MIN_IOU) -> KeyframeScan:
    """One pass over `frames` (see the module docstring): per frame its faces `[K, 5]` and colour
    histogram. `detector` has `scales`, `frames_per_call` and `detect_all(frames, first_scale=)`."""
    scan = KeyframeScan(detector, every, cut_threshold, min_face, min_iou)
    for frame in frames:
        scan.add(frame)
    scan.finish()
    return scan
