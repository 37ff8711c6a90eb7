"""FID with pytorch-fid's network, on full frames or on mouth crops.

Features are pytorch-fid's: `InceptionV3([BLOCK_INDEX_BY_DIM[2048]])` (the TF-FID Inception
weights `pt_inception-2015-12-05-6726825d.pth`), fed RGB frames as float values in [0, 1]
exactly as its `ToTensor` makes them from uint8; the network itself resizes to 299 x 299
(bilinear) and scales to [-1, 1]. Its 2048-d pool3 output is the feature. The distance is
pytorch-fid's `calculate_frechet_distance` on the mean and covariance (`np.cov`, N - 1
normalisation) of each set, as its `calculate_activation_statistics` computes them.

Mouth FID runs the same functions on `mouth_region` crops: the lower half of the face box,
the half Diff2Lip inpaints (`lower_face_mask` with face_hide_percentage 0.5).
"""

import os
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from face_detection import crop_face, voxceleb2_box

from . import loading_weights

INCEPTION_FILENAME = "pt_inception-2015-12-05-6726825d.pth"


def inception_weights_path() -> str:
    """Where pytorch-fid's download (`load_state_dict_from_url`) keeps the weights: `<torch hub>/checkpoints/`."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", INCEPTION_FILENAME)


def load_inception(device: Union[str, torch.device] = "cpu") -> nn.Module:
    """pytorch-fid's 2048-d InceptionV3 in eval mode on `device`, loaded by pytorch-fid itself
    (from the torch hub cache; downloaded there when missing and a network is reachable)."""
    from pytorch_fid.inception import InceptionV3

    path = inception_weights_path()
    with loading_weights("FID Inception", INCEPTION_FILENAME, path, "pytorch-fid"):
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    return model.to(device).eval()


class FIDFeatures:
    """Inception features of RGB uint8 frames, computed in batches on a device.

    :param device: "cpu", "cuda", "cuda:1", ...
    :param batch_size: frames per forward pass.
    :param model: the network; default `load_inception(device)`. Anything called like
        pytorch-fid's `InceptionV3`: float `[B, 3, H, W]` in [0, 1] -> a list whose first
        element is `[B, D, h, w]` (spatially averaged when h or w > 1, as pytorch-fid does).
    """

    def __init__(self, device: Union[str, torch.device] = "cpu", batch_size: int = 32, model: Optional[nn.Module] = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.model = load_inception(self.device) if model is None else model.to(self.device).eval()

    @torch.no_grad()
    def _forward(self, batch: List[np.ndarray]) -> np.ndarray:
        """`B` frames `[H, W, 3]` uint8 of one size -> float64 `[B, D]`."""
        x = torch.from_numpy(np.stack(batch)).to(self.device)
        # pytorch-fid's ToTensor: uint8 / 255 as float32, channels first.
        x = x.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        pred = self.model(x)[0]
        if pred.shape[2] != 1 or pred.shape[3] != 1:
            pred = F.adaptive_avg_pool2d(pred, output_size=(1, 1))
        return pred.flatten(1).cpu().numpy().astype(np.float64)

    def features(self, frames: Union[Iterable[np.ndarray], np.ndarray]) -> np.ndarray:
        """Features of every frame, in order: float64 `[N, D]` (D = 2048 for the Inception).

        :param frames: RGB uint8 `[H, W, 3]` frames (any iterable, e.g. `iter_frames(path)`;
            only one batch is held), or an array `[N, H, W, 3]`. Frames may differ in size:
            a batch ends early where the size changes, since the network resizes each frame
            on its own and the features do not depend on how frames are batched.
        """
        out: List[np.ndarray] = []
        batch: List[np.ndarray] = []
        for i, frame in enumerate(frames):
            frame = np.asarray(frame)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"frame {i} must be RGB uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
            if batch and (len(batch) == self.batch_size or frame.shape != batch[0].shape):
                out.append(self._forward(batch))
                batch = []
            batch.append(frame)
        if batch:
            out.append(self._forward(batch))
        if not out:
            raise ValueError("no frames to compute FID features of")
        return np.concatenate(out)


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID between two feature sets `[N1, D]` and `[N2, D]` (each N >= 2): pytorch-fid's
    `calculate_frechet_distance` on their means and covariances. With the 2048-d Inception,
    fewer than 2049 frames per set give singular covariances: pytorch-fid then adds 1e-6 to
    the diagonals, and the value is biased upwards (compare sets of equal size)."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1] or min(len(f1), len(f2)) < 2:
        raise ValueError(f"need two feature sets [N, D] with one D and N >= 2, got {f1.shape} and {f2.shape}")
    return float(
        calculate_frechet_distance(
            f1.mean(axis=0), np.cov(f1, rowvar=False), f2.mean(axis=0), np.cov(f2, rowvar=False)
        )
    )


def mouth_region(frame: np.ndarray, face_box: Optional[Sequence[int]] = None, size: Optional[int] = None) -> np.ndarray:
    """The lower half of the face box of an RGB uint8 frame `[H, W, 3]`.

    :param face_box: `(y1, y2, x1, x2)` as `face_detection` gives it; default the VoxCeleb2
        crop `voxceleb2_box(H, W)`. Give generated and real frames the same box (the real
        frame's) so that both crops cover the same pixels.
    :param size: None: the rows `y1 + (y2 - y1) // 2 .. y2` of the box at frame resolution,
        `[(y2 - y1) - (y2 - y1) // 2, x2 - x1, 3]`. An int: the face crop as the network sees
        it (`crop_face(frame, box, size)`, `[size, size, 3]`) and its rows `size // 2 ..`,
        `[size - size // 2, size, 3]`, i.e. the inpainted half exactly.
    """
    box = voxceleb2_box(*frame.shape[:2]) if face_box is None else tuple(int(v) for v in face_box)
    if size is not None:
        return crop_face(frame, box, size)[size // 2 :]
    y1, y2, x1, x2 = box
    h, w = frame.shape[:2]
    if not (0 <= y1 < y2 <= h and 0 <= x1 < x2 <= w):
        raise ValueError(f"face box {box} (y1, y2, x1, x2) is empty or not inside a {h}x{w} frame")
    return np.ascontiguousarray(frame[y1 + (y2 - y1) // 2 : y2, x1:x2])
