"""Lip-sync experts: Wav2Lip's SyncNet (for its released `lipsync_expert.pth`), our SyncNet128
for Diff2Lip's 128 px crops and the light SyncNet64 for small models (the synthetic demo), behind
one calling convention for the training code.

The networks embed 5 consecutive lower-half face crops and the 16-step mel window of those frames
(0.2 s) into L2-normalised vectors (512-d; 256-d for SyncNet64); their cosine similarity is read
as the probability that face and audio are in sync, and trained (or used as a loss) with binary
cross-entropy, as in Wav2Lip.

    expert = load_sync_expert("checkpoints/lipsync_expert.pth").to(device)
    audio_emb, video_emb = expert(frames, mel)       # frames [B, 5, 3, H, W] in [-1, 1] RGB
    loss = sync_bce(audio_emb, video_emb, 1.0)       # gradients reach `frames`
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from common.errors import CheckpointError
from common.files import atomic_save
from dataset.sync_pairs import SYNC_FRAMES
from guided_diffusion import dist_util

MEL_SHAPE = (80, 16)
IntPair = Union[int, Tuple[int, int]]
WAV2LIP_HINT = "download Wav2Lip's lipsync_expert.pth into checkpoints/ (`python -m scripts.fetch_weights lipsync_expert`) or train one with `python -m scripts.train_syncnet`"


class ConvBlock(nn.Module):
    """Wav2Lip's `Conv2d`: conv, BatchNorm, optional identity shortcut, ReLU.

    The parameter names (`conv_block.0` conv, `conv_block.1` BatchNorm) are the released checkpoint's.
    """

    def __init__(self, cin: int, cout: int, kernel_size: IntPair, stride: IntPair, padding: IntPair,
                 residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


def _res(channels: int, count: int) -> List[ConvBlock]:
    """`count` shape-preserving residual 3x3 blocks."""
    return [ConvBlock(channels, channels, 3, 1, 1, residual=True) for _ in range(count)]


def _wav2lip_audio_encoder(width: int = 32) -> nn.Sequential:
    """Wav2Lip's audio encoder (width 32): mel [B, 1, 80, 16] -> [B, 16 * width, 1, 1]."""
    c1, c2, c3, c4, c5 = (width * m for m in (1, 2, 4, 8, 16))
    return nn.Sequential(
        ConvBlock(1, c1, 3, 1, 1), *_res(c1, 2),
        ConvBlock(c1, c2, 3, (3, 1), 1), *_res(c2, 2),      # 80x16 -> 27x16
        ConvBlock(c2, c3, 3, 3, 1), *_res(c3, 2),           # -> 9x6
        ConvBlock(c3, c4, 3, (3, 2), 1), *_res(c4, 2),      # -> 3x3
        ConvBlock(c4, c5, 3, 1, 0),                         # -> 1x1
        ConvBlock(c5, c5, 1, 1, 0),
    )


class _SyncNet(nn.Module):
    """Two encoders to 1x1 and L2 normalisation; subclasses build `face_encoder` and `audio_encoder`."""

    face_encoder: nn.Sequential
    audio_encoder: nn.Sequential
    #: (height, width) of the lower-half face crops the face encoder takes.
    face_size: Tuple[int, int]

    def forward(self, audio: torch.Tensor, faces: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """audio `[B, 1, 80, 16]`, faces `[B, 15, h, w]` -> (audio_emb `[B, D]`, face_emb `[B, D]`),
        unit norm (D = 512; 256 for SyncNet64)."""
        face_emb = self.face_encoder(faces).flatten(1)
        audio_emb = self.audio_encoder(audio).flatten(1)
        return F.normalize(audio_emb, p=2, dim=1), F.normalize(face_emb, p=2, dim=1)


class Wav2LipSyncNet(_SyncNet):
    """Wav2Lip's `SyncNet_color`, the network of its released `lipsync_expert.pth`.

    Faces: 5 lower-half crops of 96x96 faces, BGR in [0, 1], stacked on channels `[B, 15, 48, 96]`.
    """

    face_size = (48, 96)

    def __init__(self):
        super().__init__()
        self.face_encoder = nn.Sequential(
            ConvBlock(15, 32, 7, 1, 3),                         # 48x96
            ConvBlock(32, 64, 5, (1, 2), 1), *_res(64, 2),      # -> 46x47
            ConvBlock(64, 128, 3, 2, 1), *_res(128, 3),         # -> 23x24
            ConvBlock(128, 256, 3, 2, 1), *_res(256, 2),        # -> 12x12
            ConvBlock(256, 512, 3, 2, 1), *_res(512, 2),        # -> 6x6
            ConvBlock(512, 512, 3, 2, 1),                       # -> 3x3
            ConvBlock(512, 512, 3, 1, 0),                       # -> 1x1
            ConvBlock(512, 512, 1, 1, 0),
        )
        self.audio_encoder = _wav2lip_audio_encoder()


class SyncNet128(_SyncNet):
    """Our expert for 128 px crops, in Wav2Lip's style, with Wav2Lip's audio encoder.

    Faces: 5 lower-half crops of 128x128 faces, RGB in [0, 1], stacked on channels `[B, 15, 64, 128]`.
    """

    face_size = (64, 128)

    def __init__(self):
        super().__init__()
        self.face_encoder = nn.Sequential(
            ConvBlock(15, 32, 7, 1, 3),                         # 64x128
            ConvBlock(32, 64, 5, (1, 2), 2), *_res(64, 2),      # -> 64x64: square from here on
            ConvBlock(64, 128, 3, 2, 1), *_res(128, 3),         # -> 32x32
            ConvBlock(128, 256, 3, 2, 1), *_res(256, 2),        # -> 16x16
            ConvBlock(256, 512, 3, 2, 1), *_res(512, 2),        # -> 8x8
            ConvBlock(512, 512, 3, 2, 1),                       # -> 4x4
            ConvBlock(512, 512, 4, 1, 0),                       # -> 1x1
            ConvBlock(512, 512, 1, 1, 0),
        )
        self.audio_encoder = _wav2lip_audio_encoder()


class SyncNet64(_SyncNet):
    """A light expert for small crops (the 64 px synthetic demo): SyncNet128's design with one
    residual block per level and half the channels (2.6M parameters instead of 18.3M), 256-d
    embeddings.

    Faces: 5 lower-half crops of 64x64 faces, RGB in [0, 1], stacked on channels `[B, 15, 32, 64]`.
    """

    face_size = (32, 64)

    def __init__(self):
        super().__init__()
        self.face_encoder = nn.Sequential(
            ConvBlock(15, 16, 7, 1, 3),                         # 32x64
            ConvBlock(16, 32, 5, (1, 2), 2), *_res(32, 1),      # -> 32x32
            ConvBlock(32, 64, 3, 2, 1), *_res(64, 1),           # -> 16x16
            ConvBlock(64, 128, 3, 2, 1), *_res(128, 1),         # -> 8x8
            ConvBlock(128, 256, 3, 2, 1),                       # -> 4x4
            ConvBlock(256, 256, 4, 1, 0),                       # -> 1x1
            ConvBlock(256, 256, 1, 1, 0),
        )
        self.audio_encoder = _wav2lip_audio_encoder(width=16)


NETWORKS = {"wav2lip": Wav2LipSyncNet, "syncnet128": SyncNet128, "syncnet64": SyncNet64}
#: The networks scripts.train_syncnet trains (Wav2Lip's is only loaded from its release).
TRAINABLE = ("syncnet128", "syncnet64")


class SyncExpert(nn.Module):
    """A SyncNet behind one convention: `expert(frames, mel) -> (audio_emb, video_emb)`.

    It turns full face crops in the diffusion model's range into what the wrapped network was
    trained on: the lower half of each frame, resized to the network's size, in its channel order
    and range, the 5 frames stacked on channels in time order. Every step is differentiable.

    A frozen expert (as `load_sync_expert` returns) stays in eval mode even when a parent module
    calls `.train()`, so its BatchNorm keeps the running statistics it was trained with.
    """

    def __init__(self, kind: str = "syncnet128", frozen: bool = False):
        super().__init__()
        if kind not in NETWORKS:
            raise ValueError(f"unknown SyncNet kind {kind!r}; use one of {', '.join(NETWORKS)}")
        self.kind = kind
        self.net: _SyncNet = NETWORKS[kind]()
        self.frozen = frozen
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> "SyncExpert":
        return super().train(mode and not self.frozen)

    def faces(self, frames: torch.Tensor) -> torch.Tensor:
        """Full crops `[B, 5, 3, H, W]` in [-1, 1] RGB -> the network's face input `[B, 15, h, w]`."""
        if frames.dim() != 5 or frames.shape[1:3] != (SYNC_FRAMES, 3):
            raise ValueError(f"frames must be [B, {SYNC_FRAMES}, 3, H, W], got {tuple(frames.shape)}")
        b, t, c, height, width = frames.shape
        x = frames.reshape(b * t, c, height, width)
        h, w = self.net.face_size
        if self.kind == "wav2lip":
            # Wav2Lip cut the lower half of 96x96 faces and read them with cv2 (BGR) / 255.
            if (height, width) != (2 * h, w):
                x = F.interpolate(x, size=(2 * h, w), mode="bilinear", align_corners=False, antialias=True)
            x = x[:, [2, 1, 0], h:, :]
        else:
            x = x[:, :, height // 2 :, :]
            if x.shape[-2:] != (h, w):
                x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        x = (x + 1) / 2
        return x.reshape(b, t * c, h, w)

    def forward(self, frames: torch.Tensor, mel: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """frames `[B, 5, 3, H, W]` in [-1, 1] RGB, mel `[B, 80, 16]` or `[B, 1, 80, 16]`
        -> (audio_emb `[B, D]`, video_emb `[B, D]`), unit norm (D = 512; 256 for SyncNet64)."""
        if mel.dim() == 3:
            mel = mel.unsqueeze(1)
        if mel.dim() != 4 or mel.shape[1:] != (1, *MEL_SHAPE):
            raise ValueError(f"mel must be [B, 80, 16] or [B, 1, 80, 16], got {tuple(mel.shape)}")
        # Callers may hold frames in another precision (e.g. bf16 samples); the cast keeps the graph.
        dtype = next(self.net.parameters()).dtype
        return self.net(mel.to(dtype), self.faces(frames).to(dtype))


def sync_probability(audio_emb: torch.Tensor, video_emb: torch.Tensor) -> torch.Tensor:
    """Wav2Lip's sync probability: cosine similarity `[B]`, clamped to [0, 1].

    The experts' ReLU outputs make it >= 0 already; the clamp only catches rounding past 1,
    which binary cross-entropy would reject.
    """
    return F.cosine_similarity(audio_emb, video_emb).clamp(0.0, 1.0)


def sync_bce(audio_emb: torch.Tensor, video_emb: torch.Tensor, target: Union[torch.Tensor, float]) -> torch.Tensor:
    """Binary cross-entropy of `sync_probability` against `target` (1 in sync, 0 off), mean over the batch.

    :param target: `[B]` (or `[B, 1]`) labels, or one number for the whole batch.
    """
    prob = sync_probability(audio_emb, video_emb)
    target = torch.as_tensor(target, dtype=prob.dtype, device=prob.device).reshape(-1).expand_as(prob)
    return F.binary_cross_entropy(prob, target)


@torch.no_grad()
def expert_accuracy(expert: SyncExpert, pairs: Dataset, batch_size: int, num_workers: int) -> Tuple[float, float]:
    """(mean BCE, accuracy of `probability > 0.5`) of `expert` over all of `pairs` (a
    `dataset.sync_pairs.SyncPairs`: frames, mel, label), each rank taking a share."""
    device = next(expert.parameters()).device
    expert.eval()
    shard = range(dist_util.rank(), len(pairs), dist_util.world_size())
    loader = DataLoader(pairs, batch_size=batch_size, sampler=shard, num_workers=num_workers)
    loss_sum, correct, count = 0.0, 0, 0
    for frames, mel, label in loader:
        frames, mel, label = frames.to(device), mel.to(device), label.to(device)
        audio_emb, video_emb = expert(frames, mel)
        loss_sum += sync_bce(audio_emb, video_emb, label).item() * len(label)
        correct += int(((sync_probability(audio_emb, video_emb) > 0.5) == (label > 0.5)).sum())
        count += len(label)
    totals = np.sum(dist_util.all_gather_object((loss_sum, correct, count)), axis=0)
    return float(totals[0] / totals[2]), float(totals[1] / totals[2])


def _fitting_state(net: nn.Module, state: Dict[str, Any], path: str, what: str) -> Dict[str, Any]:
    """`state` ready for `net.load_state_dict`; raises one line naming the differences when it does
    not fit `net` exactly.

    One gap is accepted: BatchNorm's `num_batches_tracked` counters, which PyTorch before 0.4.1 did
    not save (syncnet_python's `syncnet_v2.model`, Wav2Lip's `lipsync_expert.pth` may be that old).
    They matter only to training with `momentum=None`; they are set to 0, as PyTorch itself does
    for files of that age.
    """
    def shape(value: Any) -> Any:
        return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__

    own = net.state_dict()
    counters = {k: torch.zeros_like(v) for k, v in own.items() if k not in state and k.endswith(".num_batches_tracked")}
    state = {**state, **counters}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: checkpoint {shape(state[k])} vs model {shape(own[k])}"
        for k in own
        if k in state and shape(state[k]) != shape(own[k])
    ]
    problems = []
    for keys, label in ((missing, "missing"), (unexpected, "unexpected"), (mismatched, "mis-shaped")):
        if keys:
            problems.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
    if problems:
        raise CheckpointError(f"checkpoint {path!r} does not fit {what}: {'; '.join(problems)}")
    return state


def load_sync_expert(path: Union[str, "os.PathLike[str]"], map_location: Any = "cpu") -> SyncExpert:
    """A frozen expert (eval mode, no gradients for its weights) from a checkpoint file.

    Accepts Wav2Lip's `lipsync_expert.pth` (`{"state_dict": ...}`, keys possibly prefixed `module.`)
    and `scripts.train_syncnet`'s checkpoints (`{"kind": "syncnet128" | "syncnet64", "model": ...}`, `ema` preferred if
    present). Rank 0 reads the file and broadcasts it. Raises `CheckpointError` naming the path.
    """
    path = os.fspath(path)
    # Only rank 0 may be able to see the file, so it alone checks and tells the others. Remote
    # paths (gs://, az://) are left to the reader.
    missing = None
    if dist_util.rank() == 0:
        missing = "://" not in path and not os.path.isfile(path)
    if dist_util.broadcast_object(missing):
        raise CheckpointError(f"sync expert checkpoint {path!r} not found; {WAV2LIP_HINT}")
    ckpt = dist_util.load_state_dict(path, map_location=map_location, weights_only=True)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        kind = "wav2lip"
        state = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
    elif isinstance(ckpt, dict) and ckpt.get("kind") in NETWORKS and isinstance(ckpt.get("model"), dict):
        kind = ckpt["kind"]
        state = ckpt.get("ema") or ckpt["model"]
    else:
        raise CheckpointError(
            f"{path!r} is not a SyncNet checkpoint (expected Wav2Lip's {{'state_dict': ...}} or "
            f"scripts.train_syncnet's {{'kind': 'syncnet128', 'model': ...}}); {WAV2LIP_HINT}"
        )
    expert = SyncExpert(kind, frozen=True)
    expert.net.load_state_dict(_fitting_state(expert.net, state, path, f"the {kind} SyncNet"))
    return expert


def save_syncnet_checkpoint(path: Union[str, "os.PathLike[str]"], net: nn.Module, kind: str = "syncnet128",
                            **extra: Any) -> None:
    """Write `{"kind": kind, "model": net.state_dict(), **extra}` atomically.

    The file is written under a temporary name in the same folder and renamed, so an interrupted
    save never leaves a truncated checkpoint under the final name.
    """
    if kind not in TRAINABLE:
        raise ValueError(f"unknown SyncNet kind {kind!r}; use one of {', '.join(TRAINABLE)}")
    atomic_save({"kind": kind, "model": net.state_dict(), **extra}, path)

