"""The 224 x 224 face track that syncnet_python's `run_pipeline.py` cuts from a talking-head clip.

Reference protocol (`inference_video` -> `track_shot` -> `crop_video`), for one face per clip:

1. S3FD on every frame downscaled by `facedet_scale` 0.25 (cv2 bilinear), the boxes mapped back
   to full-frame pixels; syncnet_python keeps detections scoring >= 0.9.
2. The track runs from the first to the last frame with a face; frames between without one get a
   box linearly interpolated per coordinate (`interp1d` over frame numbers). Frames before the
   first / after the last detection are not in the track, and the audio is cut to the track.
3. Per frame, the half size `s = max(w, h) / 2` and the centre `(x, y)` of the box, each smoothed
   over time with `scipy.signal.medfilt(kernel_size=13)` (zero-padded at the ends, as released).
4. `crop_video`'s crop with `crop_scale` cs = 0.4: the frame is padded by `bsi = int(s * (1 + 2 cs))`
   with the constant 110, then rows `y - s .. y + s (1 + 2 cs)` and columns
   `x - s (1 + cs) .. x + s (1 + cs)` (shifted by `bsi`, int() truncation) are resized to 224 x 224.
   Crops are BGR, as cv2 reads the frames syncnet_python crops.

Simplifications, all moot for a clip of one steadily visible face: no scene detection, one track
(the highest-scoring face per frame; no IoU / 25-missed-frame track breaks), and no `min_track`
(100 frames) or `min_face_size` (100 px) gates, so short clips still get a score. Frames are
neither JPEG- nor XVID-compressed between the steps as they are in syncnet_python.

`fixed_track` instead takes one box for every frame (a known `--box`, or the VoxCeleb2 crop): not
the reference protocol, for clips whose face position is known. The box stands in for the S3FD
detection, so it goes through the same crop geometry.
"""

import os
import warnings
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from scipy import signal

from common.errors import MediaError
from dataset.video_io import iter_frames
from face_detection import Box, detect_faces

PathLike = Union[str, "os.PathLike[str]"]
XYXYF = Tuple[float, float, float, float]

FACEDET_SCALE = 0.25
CROP_SCALE = 0.4
MEDFILT_KERNEL = 13
PAD_VALUE = 110
CROP_SIZE = 224
# medfilt's zero padding makes the median of a track shorter than this 0 at its ends.
MIN_TRACK_FRAMES = MEDFILT_KERNEL // 2 + 1


@dataclass(frozen=True)
class FaceTrack:
    """Smoothed crop geometry of frames `start .. start + n_frames - 1` of a clip (full-frame pixels)."""

    start: int
    cx: np.ndarray  # [M] float box centre x
    cy: np.ndarray  # [M] float box centre y
    half_size: np.ndarray  # [M] float max(w, h) / 2 of the box

    @property
    def n_frames(self) -> int:
        return len(self.cx)


def track_from_boxes(xyxy: np.ndarray, start: int = 0, smooth: bool = True) -> FaceTrack:
    """`crop_video`'s per-frame size and centre of boxes `[M, 4]` `(x1, y1, x2, y2)`, median-filtered
    over time (kernel 13) when `smooth`."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    half_size = np.maximum(xyxy[:, 3] - xyxy[:, 1], xyxy[:, 2] - xyxy[:, 0]) / 2
    cy = (xyxy[:, 1] + xyxy[:, 3]) / 2
    cx = (xyxy[:, 0] + xyxy[:, 2]) / 2
    if smooth:
        with warnings.catch_warnings():
            # Tracks shorter than the kernel are zero-padded, as syncnet_python's would be; scipy
            # warns about exactly that.
            warnings.simplefilter("ignore", UserWarning)
            half_size, cx, cy = (signal.medfilt(v, kernel_size=MEDFILT_KERNEL) for v in (half_size, cx, cy))
    return FaceTrack(start=int(start), cx=cx, cy=cy, half_size=half_size)


def track_from_detections(raw: Sequence[Optional[Sequence[float]]], source_name: str) -> FaceTrack:
    """`track_shot` + `crop_video`'s smoothing for one face: per-frame `(x1, y1, x2, y2)` or None ->
    the track from the first to the last frame with a face, gaps linearly interpolated.

    Raises MediaError naming `source_name` when no frame has a face, or when the track is shorter
    than `MIN_TRACK_FRAMES` (the median filter would zero its boxes).
    """
    found = np.array([i for i, r in enumerate(raw) if r is not None], dtype=np.int64)
    if len(found) == 0:
        raise MediaError(
            f"no face found in any of the {len(raw)} frames of '{source_name}'; LSE needs a visible face "
            "(or pass a fixed face box / the VoxCeleb2 crop instead of S3FD)"
        )
    first, last = int(found[0]), int(found[-1])
    if last - first + 1 < MIN_TRACK_FRAMES:
        raise MediaError(
            f"the face of '{source_name}' is found only in frames {first}..{last}; the face track needs "
            f"at least {MIN_TRACK_FRAMES} frames (syncnet_python's {MEDFILT_KERNEL}-frame median filter)"
        )
    known = np.array([raw[i] for i in found], dtype=np.float64).reshape(-1, 4)
    frames = np.arange(first, last + 1)
    # np.interp is interp1d's linear interpolation inside the detected range (the only range used).
    boxes = np.stack([np.interp(frames, found, known[:, j]) for j in range(4)], axis=1)
    return track_from_boxes(boxes, start=first)


def fixed_track(n_frames: int, box: Box) -> FaceTrack:
    """Every frame of an `n_frames` clip with the same `(y1, y2, x1, x2)` box (not smoothed: the
    median of a constant is itself, except where the zero padding would shrink short clips)."""
    y1, y2, x1, x2 = box
    return track_from_boxes(np.tile(np.array([x1, y1, x2, y2], dtype=np.float64), (n_frames, 1)), smooth=False)


def detect_track(
    path: PathLike, detector, facedet_scale: float = FACEDET_SCALE, fps: float = 25.0
) -> FaceTrack:
    """S3FD face track of the clip at `path` (frames resampled to `fps`), as `run_pipeline.py` makes it.

    :param detector: a `FaceDetector` (syncnet_python keeps faces scoring >= 0.9), or anything with
        `batch_size` and `detect(list of RGB frames) -> [(x1, y1, x2, y2) or None]`. It sees the
        frames downscaled by `facedet_scale`; only a detector batch of them is held at a time.
    """
    path = os.fspath(path)
    full_hw: List[Tuple[int, int]] = []

    def downscaled() -> Iterator[np.ndarray]:
        for frame in iter_frames(path, fps):
            if not full_hw:
                full_hw.append(frame.shape[:2])
            # S3FD.detect_faces' own resize (cv2 bilinear, size rounded by cv2).
            yield cv2.resize(frame, (0, 0), fx=facedet_scale, fy=facedet_scale, interpolation=cv2.INTER_LINEAR)

    raw, small_hw = detect_faces(downscaled(), detector, source_name=path)
    # S3FD scales its normalised boxes by the full frame's size, i.e. by full / small pixels.
    ry, rx = full_hw[0][0] / small_hw[0], full_hw[0][1] / small_hw[1]
    scaled: List[Optional[XYXYF]] = [
        None if r is None else (r[0] * rx, r[1] * ry, r[2] * rx, r[3] * ry) for r in raw
    ]
    return track_from_detections(scaled, path)


def crop_window(cx: float, cy: float, half_size: float, crop_scale: float = CROP_SCALE) -> Tuple[int, int, int, int, int]:
    """`crop_video`'s pad and crop for one frame: `(bsi, row0, row1, col0, col1)`, the crop being
    `padded[row0:row1, col0:col1]` of the frame padded by `bsi` on every side."""
    cs, bs = crop_scale, half_size
    bsi = int(bs * (1 + 2 * cs))
    my, mx = cy + bsi, cx + bsi
    return bsi, int(my - bs), int(my + bs * (1 + 2 * cs)), int(mx - bs * (1 + cs)), int(mx + bs * (1 + cs))


def crop_frame(
    frame: np.ndarray, cx: float, cy: float, half_size: float, crop_scale: float = CROP_SCALE, size: int = CROP_SIZE
) -> np.ndarray:
    """One face-track crop: RGB uint8 `[H, W, 3]` -> BGR uint8 `[size, size, 3]` (cv2 bilinear resize)."""
    bsi, r0, r1, c0, c1 = crop_window(cx, cy, half_size, crop_scale)
    padded = np.pad(frame, ((bsi, bsi), (bsi, bsi), (0, 0)), mode="constant", constant_values=PAD_VALUE)
    face = padded[r0:r1, c0:c1]
    if face.size == 0:
        raise MediaError(f"face box of half size {half_size:.1f} px at ({cx:.1f}, {cy:.1f}) gives an empty crop")
    return np.ascontiguousarray(cv2.resize(face, (size, size))[:, :, ::-1])


def iter_track_crops(
    path: PathLike, track: FaceTrack, crop_scale: float = CROP_SCALE, fps: float = 25.0
) -> Iterator[np.ndarray]:
    """Stream the BGR uint8 `[224, 224, 3]` crops of the track's frames of the clip at `path`."""
    frames = iter_frames(path, fps, start=track.start, stop=track.start + track.n_frames)
    for i, frame in enumerate(frames):
        yield crop_frame(frame, track.cx[i], track.cy[i], track.half_size[i], crop_scale)
