"""LMD: the mean distance between the mouth landmarks of generated and real frames.

Landmarks are face-alignment's 2D FAN (68-point iBUG layout, (x, y) pixels of the frame) with
its own preprocessing (crop around the box, horizontal-flip averaging); the mouth is points
48..67 (0-based: 12 outer-lip and 8 inner-lip points). Faces are located by boxes: given ones,
or the S3FD detector of `face_detection` on the REAL frames. Either way the real frame's box
is used for the generated frame too, so LMD measures the lips and not detector jitter (the
generator pastes its face back into the real frame, so the face is where the real box says).

Convention (`lmd`'s `normalise`): by default raw pixel distances at the evaluated resolution,
as Wav2Lip / PC-AVS-style evaluations report LMD: evaluate frames at the resolution you want
the number in (resize both sets the same way beforehand). `normalise` divides each frame's
distances by a length of that frame instead, e.g. the real face box width, for numbers that do
not depend on the resolution.
"""

import os
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from common.errors import MediaError
from face_detection import Box

from . import loading_weights

FAN_FILENAME = "2DFAN4-11f355bf06.pth.tar"  # face-alignment 1.5's models_urls["2DFAN-4"]
MOUTH = slice(48, 68)

# (RGB uint8 frame [H, W, 3], face box (x1, y1, x2, y2)) -> 68 landmarks [68, 2] (x, y).
LandmarkFn = Callable[[np.ndarray, Tuple[int, int, int, int]], np.ndarray]


def fan_weights_path() -> str:
    """Where face-alignment's download (`load_file_from_url`) keeps the 2D FAN: `<torch hub>/checkpoints/`."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", FAN_FILENAME)


def mouth_points(landmarks: np.ndarray) -> np.ndarray:
    """The 20 mouth points of 68-point landmarks: `[..., 68, 2]` -> `[..., 20, 2]` (indices 48..67)."""
    landmarks = np.asarray(landmarks)
    if landmarks.shape[-2:] != (68, 2):
        raise ValueError(f"need 68-point 2D landmarks [..., 68, 2], got {landmarks.shape}")
    return landmarks[..., MOUTH, :]


def lmd(landmarks_gen: np.ndarray, landmarks_real: np.ndarray, normalise: Optional[Union[float, np.ndarray]] = None) -> float:
    """Landmark distance: mean over frames and points of the Euclidean distance.

    :param landmarks_gen: `[N, P, 2]` (x, y) points of the generated frames (P = 20 mouth points
        from `mouth_points`).
    :param landmarks_real: `[N, P, 2]` the same points of the real frames.
    :param normalise: None (default): pixel distances at the evaluated resolution. A length, or
        `[N]` lengths one per frame (e.g. the real face box widths): each frame's distances are
        divided by it before averaging.
    """
    gen, real = np.asarray(landmarks_gen, np.float64), np.asarray(landmarks_real, np.float64)
    if gen.shape != real.shape or gen.ndim != 3 or gen.shape[2] != 2 or gen.shape[0] == 0:
        raise ValueError(f"need two landmark arrays [N, P, 2] of one shape, N >= 1; got {gen.shape} and {real.shape}")
    dist = np.linalg.norm(gen - real, axis=2)  # [N, P]
    if normalise is not None:
        scale = np.broadcast_to(np.asarray(normalise, np.float64), (len(dist),))
        if not np.all(scale > 0):
            raise ValueError("normalise lengths must be > 0")
        dist = dist / scale[:, None]
    return float(dist.mean())


def _fan_landmark_fn(device: str, compile: bool) -> LandmarkFn:
    """face-alignment's 2D FAN, loaded by face-alignment itself from the torch hub cache
    (downloaded there when missing and a network is reachable)."""
    import face_alignment

    with loading_weights("2D FAN", FAN_FILENAME, fan_weights_path(), "face-alignment"):
        # The "folder" detector loads nothing: faces always come as boxes here, and its
        # reference scale (195) is the one S3FD uses, so the FAN crop is the same.
        fa = face_alignment.FaceAlignment(
            face_alignment.LandmarksType.TWO_D, device=device, face_detector="folder", compile=compile
        )

    def landmarks(frame: np.ndarray, xyxy: Tuple[int, int, int, int]) -> np.ndarray:
        # Python floats: face-alignment assigns the box scale into a torch tensor, which numpy float32 breaks.
        return fa.get_landmarks_from_image(frame, detected_faces=[[float(v) for v in xyxy]])[0]

    return landmarks


class MouthLandmarks:
    """Mouth landmarks `[20, 2]` of RGB uint8 frames.

    :param device: where the FAN (and the S3FD detector, when boxes are not given) runs.
    :param landmark_fn: `(frame [H, W, 3], (x1, y1, x2, y2)) -> [68, 2]`; default face-alignment's
        2D FAN from `<torch hub>/checkpoints/2DFAN4-11f355bf06.pth.tar`.
    :param detector: finds boxes when none are given: a `face_detection.FaceDetector` (default,
        built on first use) or anything with `batch_size` and `detect(frames) -> [xyxy or None]`.
    :param compile: torch.compile the FAN (face-alignment's option): faster on long runs, a
        one-time compilation first.
    """

    def __init__(
        self,
        device: str = "cpu",
        landmark_fn: Optional[LandmarkFn] = None,
        detector=None,
        compile: bool = False,
    ) -> None:
        self.device = str(device)
        self.landmark_fn = _fan_landmark_fn(self.device, compile) if landmark_fn is None else landmark_fn
        self._detector = detector

    @property
    def detector(self):
        """The face detector, built on first use: only runs without boxes need S3FD weights."""
        if self._detector is None:
            from face_detection import FaceDetector

            self._detector = FaceDetector(self.device)
        return self._detector

    def mouth(self, frame: np.ndarray, box: Box) -> np.ndarray:
        """Mouth points `[20, 2]` (x, y) of one frame `[H, W, 3]` whose face is in `box` `(y1, y2, x1, x2)`."""
        y1, y2, x1, x2 = (int(v) for v in box)
        return mouth_points(np.asarray(self.landmark_fn(frame, (x1, y1, x2, y2)), np.float64)[:, :2])

    def pairs(
        self,
        gen_frames: Iterable[np.ndarray],
        real_frames: Iterable[np.ndarray],
        boxes: Optional[Sequence[Box]] = None,
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mouth points of generated and real frames, both located by the real frame's box.

        :param gen_frames: RGB uint8 `[H, W, 3]` generated frames (any iterable, streamed: only
            a detector batch is held).
        :param real_frames: the real frames, as many and of the same size.
        :param boxes: `(y1, y2, x1, x2)` per frame; default S3FD on the real frames.
        :return: float64 `[N, 20, 2]` (x, y) pixels of the generated frames, the same of the real
            ones, and the int64 `[N, 4]` boxes `(y1, y2, x1, x2)` used.
        """
        gen_out: List[np.ndarray] = []
        real_out: List[np.ndarray] = []
        used: List[Box] = []
        pending: List[Tuple[np.ndarray, np.ndarray]] = []  # frame pairs waiting for detection

        def add(gen: np.ndarray, real: np.ndarray, box: Box) -> None:
            gen_out.append(self.mouth(gen, box))
            real_out.append(self.mouth(real, box))
            used.append(tuple(int(v) for v in box))

        def detect_pending() -> None:
            for gen_real, xyxy in zip(pending, self.detector.detect([real for _, real in pending])):
                if xyxy is None:
                    raise MediaError(f"no face found in real frame {len(used)}; pass the boxes instead")
                x1, y1, x2, y2 = xyxy
                add(*gen_real, (y1, y2, x1, x2))
            pending.clear()

        box_it = None if boxes is None else iter(boxes)
        # strict: a generated set shorter or longer than the real one is an error, not a truncation.
        for i, (gen, real) in enumerate(zip(gen_frames, real_frames, strict=True)):
            if gen.shape != real.shape:
                raise ValueError(f"generated frame {i} is {gen.shape}, the real one {real.shape}")
            if box_it is None:
                pending.append((gen, real))
                if len(pending) == self.detector.batch_size:
                    detect_pending()
            else:
                box = next(box_it, None)
                if box is None:
                    raise ValueError(f"boxes ends at {i} entries, before the frames do")
                add(gen, real, box)
        if pending:
            detect_pending()
        if box_it is not None and next(box_it, None) is not None:
            raise ValueError(f"boxes has more entries than the {len(used)} frames")
        if not used:
            raise ValueError("no frames to compute LMD on")
        return np.stack(gen_out), np.stack(real_out), np.asarray(used, np.int64)


def lmd_of_frames(
    gen_frames: Iterable[np.ndarray],
    real_frames: Iterable[np.ndarray],
    landmarks: MouthLandmarks,
    boxes: Optional[Sequence[Box]] = None,
    normalise_by_box_width: bool = False,
) -> float:
    """Mouth LMD of generated against real frames (module docstring for the conventions).

    :param landmarks: the landmark model (`MouthLandmarks()` for face-alignment's FAN).
    :param boxes: `(y1, y2, x1, x2)` per frame; default S3FD on the real frames.
    :param normalise_by_box_width: divide each frame's distances by its real face box width
        (`x2 - x1`) instead of reporting pixels.
    """
    gen, real, used = landmarks.pairs(gen_frames, real_frames, boxes)
    return lmd(gen, real, normalise=(used[:, 3] - used[:, 2]) if normalise_by_box_width else None)
