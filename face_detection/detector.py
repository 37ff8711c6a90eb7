"""The S3FD face detector of Wav2Lip's inference, through face-alignment's `SFDDetector`.

face-alignment's `detect_from_batch` takes a tensor `[B, 3, H, W]` of RGB values 0..255 (its
`batch_detect` flips the channels to BGR and subtracts the BGR means itself), so RGB frames
go in as they are, only transposed. Wav2Lip's own copy of S3FD took BGR images instead; the
network sees the same BGR input either way.
"""

import os
import pickle
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from guided_diffusion.errors import CheckpointError, Diff2LipError

S3FD_FILENAME = "s3fd-619a316812.pth"

XYXY = Tuple[int, int, int, int]


def s3fd_weights_path() -> str:
    """Where face-alignment's download puts the S3FD weights: `<torch hub>/checkpoints/`."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", S3FD_FILENAME)


def is_oom_error(err: BaseException) -> bool:
    """True for an out-of-memory error of a device (CUDA names it in the message)."""
    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err)
    )


def _not_found_message() -> str:
    return (
        f"S3FD face-detector weights not found: put {S3FD_FILENAME} in "
        f"{os.path.dirname(s3fd_weights_path())} (face-alignment downloads it there on a "
        "connected machine), or use --is_voxceleb2 True / --box to skip detection"
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


class FaceDetector:
    """S3FD faces of RGB frames, batched as Wav2Lip's `face_detect`.

    :param device: "cpu", "cuda", "cuda:1", ...
    :param weights_path: the S3FD state dict; default `s3fd_weights_path()`, downloaded by
        face-alignment when missing there.
    :param batch_size: frames per detector call (`--face_det_batch_size`); halved on
        out-of-memory errors, and the settled value kept for later calls.
    :param filter_threshold: minimum score of a detection (face-alignment's default 0.5).
    """

    def __init__(
        self,
        device: Union[str, torch.device] = "cpu",
        weights_path: Optional[str] = None,
        batch_size: int = 64,
        filter_threshold: float = 0.5,
        scale: float = 1.0,
    ) -> None:
        if batch_size < 1:
            raise Diff2LipError(f"--face_det_batch_size must be at least 1, got {batch_size}")
        if not 0 < scale <= 1:
            raise Diff2LipError(f"--face_det_scale must be in (0, 1], got {scale}")
        self.scale = float(scale)
        # Imported here: face-alignment pulls in numba and scikit-image, which the
        # --box / --is_voxceleb2 paths never need.
        from face_alignment.detection.sfd import sfd_detector

        self.device = str(device)
        self.batch_size = int(batch_size)
        if weights_path is None and os.path.isfile(s3fd_weights_path()):
            weights_path = s3fd_weights_path()
        if weights_path is None:
            try:
                self._sfd = sfd_detector.SFDDetector(self.device, filter_threshold=filter_threshold)
            except OSError as e:  # URLError, HTTPError, timeouts: no network or no file there
                raise CheckpointError(_not_found_message()) from e
        else:
            if not os.path.isfile(weights_path):
                raise CheckpointError(
                    f"S3FD weights file '{weights_path}' does not exist; give the path of "
                    f"{S3FD_FILENAME}, or use --is_voxceleb2 True / --box to skip detection"
                )
            try:
                self._sfd = sfd_detector.SFDDetector(
                    self.device, path_to_detector=weights_path, filter_threshold=filter_threshold
                )
            except (RuntimeError, OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError) as e:
                if is_oom_error(e):  # the device is full, the file may be fine
                    raise
                # torch.load of a truncated / foreign file, or a state dict of another network.
                raise CheckpointError(
                    f"'{weights_path}' is not a readable S3FD state dict ({_first_line(e)}); "
                    f"replace it with {S3FD_FILENAME} from face-alignment"
                ) from e

    def detect(self, frames: Union[Sequence[np.ndarray], np.ndarray]) -> List[Optional[XYXY]]:
        """The first (highest-scoring) face of each frame as int `(x1, y1, x2, y2)`, or None.

        :param frames: RGB uint8 `[H, W, 3]` frames of one size, or an array `[N, H, W, 3]`.
        """
        results: List[Optional[XYXY]] = []
        start = 0
        while start < len(frames):
            batch = np.stack(frames[start : start + self.batch_size])
            try:
                results.extend(self._detect_scaled(batch))
            except RuntimeError as e:
                if not is_oom_error(e):
                    raise
                if self.batch_size == 1:
                    raise Diff2LipError(
                        f"face detection ran out of memory on a single {batch.shape[1]}x"
                        f"{batch.shape[2]} frame; use a lower-resolution video or the CPU"
                    ) from e
                # Released recovery: halve and retry the same frames with the smaller batch.
                self.batch_size //= 2
                if self.device.startswith("cuda"):
                    torch.cuda.empty_cache()
                continue
            start += len(batch)
        return results

    def _detect_scaled(self, batch: np.ndarray) -> List[Optional[XYXY]]:
        """`_detect_batch` on frames downscaled by `scale` (faces of talking-head videos are large:
        detecting at half size costs a quarter), boxes mapped back to the full frame."""
        if self.scale == 1.0:
            return self._detect_batch(batch)
        _, h, w, _ = batch.shape
        small = np.stack([cv2.resize(f, (0, 0), fx=self.scale, fy=self.scale, interpolation=cv2.INTER_AREA) for f in batch])
        sy, sx = h / small.shape[1], w / small.shape[2]
        return [
            None if box is None else (int(box[0] * sx), int(box[1] * sy), min(w, int(box[2] * sx)), min(h, int(box[3] * sy)))
            for box in self._detect_batch(small)
        ]

    def _detect_batch(self, batch: np.ndarray) -> List[Optional[XYXY]]:
        """One detector call on `[B, H, W, 3]` RGB uint8 frames: per frame its first box or None."""
        _, h, w, _ = batch.shape
        # uint8 goes to the device as is; batch_detect casts to float32 and flips RGB to BGR.
        tensor = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)
        results: List[Optional[XYXY]] = []
        for dets in self._sfd.detect_from_batch(tensor):
            if len(dets) == 0:
                results.append(None)
                continue
            # Wav2Lip's get_detections_for_batch: the first detection (face-alignment's NMS
            # orders them by score), negatives clipped to 0, then int() truncation.
            x1, y1, x2, y2 = map(int, np.clip(dets[0], 0, None)[:-1])
            # Also keep it inside the frame; with non-negative pads the padded box is the same.
            x1, x2 = min(x1, w), min(x2, w)
            y1, y2 = min(y1, h), min(y2, h)
            results.append((x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None)
        return results
