"""One face box per frame of a streamed clip, in the order of Wav2Lip's `face_detect`.

The steps are separate so that several processes can each detect a range of frames and join
their raw detections before the clip-wide steps (nearest fill, pads, smoothing):
`detect_faces` -> `boxes_from_detections`, or `fixed_boxes` when no detector is needed.
`face_boxes` chains them for one process.
"""

from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from guided_diffusion.errors import Diff2LipError, MediaError

from .boxes import Box, check_box, fill_missing, pad_boxes, smooth_boxes, voxceleb2_box
from .detector import XYXY


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


def detect_faces(frames: Iterable[np.ndarray], detector, source_name: str = "the video") -> Tuple[List[Optional[XYXY]], Tuple[int, int]]:
    """Raw first detections `(x1, y1, x2, y2)` or None per frame, and the frame size.

    :param frames: RGB uint8 `[H, W, 3]` frames of one size; only a detector batch of them is
        held at a time.
    :param detector: a `FaceDetector`, or anything with `batch_size` and
        `detect(list of frames) -> [(x1, y1, x2, y2) or None]`.
    """
    raw: List[Optional[XYXY]] = []
    pending: List[np.ndarray] = []
    sized = _one_size(frames, source_name)
    for frame in sized:
        pending.append(frame)
        if len(pending) >= detector.batch_size:
            raw.extend(detector.detect(pending))
            pending = []
    if pending:
        raw.extend(detector.detect(pending))
    return raw, sized.frame_hw


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
    xyxy, n_missing = fill_missing(raw, source_name)
    boxes = pad_boxes(xyxy, pads, frame_hw)
    if smooth:
        boxes = smooth_boxes(boxes, T=5)
    empty = np.flatnonzero((boxes[:, 1] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 2]))
    if len(empty):
        raise Diff2LipError(
            f"--pads {','.join(str(int(p)) for p in pads)} leave no face in frame {empty[0]} "
            f"of '{source_name}'; use smaller negative pads"
        )
    return boxes, n_missing


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
