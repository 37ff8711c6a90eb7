"""The SyncNet of syncnet_python (Joon Son Chung), the network the field scores LSE-C / LSE-D with.

`SyncNetEval` is syncnet_python's `SyncNetModel.S` layer for layer, so its `syncnet_v2.model` (a
plain state dict: 4 Sequentials, BatchNorm buffers included, see `tests/data/syncnet_python_eval.tsv`)
loads with no renaming. It is only an evaluator here; nothing trains it.

Inputs, as `SyncNetInstance.evaluate` builds them:

- lips `[B, 3, 5, 224, 224]`: five consecutive 224 x 224 face-track crops in **BGR** channel order
  (as cv2 reads frames) with raw 0..255 float values, no normalisation. syncnet_python's issue text
  calls this input grayscale, but the released weights' first Conv3d takes 3 channels, and the code
  feeds colour frames: we follow the weights.
- audio `[B, 1, 13, 20]`: 13 MFCC coefficients x 20 steps (0.2 s at 100 steps per second) of
  `python_speech_features.mfcc` on 16 kHz int16 samples.

Both streams end in a 1024-d embedding (not normalised); scores are Euclidean distances between them.
"""

from __future__ import annotations

import os
from typing import Union

import torch
from torch import nn

from common.errors import CheckpointError
from guided_diffusion import dist_util
from training.syncnet import _fitting_state

SYNCNET_EVAL_FILENAME = "syncnet_v2.model"
DEFAULT_SYNCNET_EVAL_PATH = os.path.join("checkpoints", SYNCNET_EVAL_FILENAME)
EMBEDDING_DIM = 1024


class SyncNetEval(nn.Module):
    """syncnet_python's `S`: audio and lip towers, each a conv stack then two Linear layers.

    Module indices (`netcnnaud.18`, ...) count the ReLU and pooling layers too, as in the
    released `nn.Sequential`s; the definition order (netcnnaud, netfcaud, netfclip, netcnnlip)
    is the state-dict order of `syncnet_v2.model`.
    """

    def __init__(self, embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        # [B, 1, 13, 20] -> [B, 512, 1, 1]; the 1x1 max-pool is a no-op kept for the indices.
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),
            nn.Conv2d(64, 192, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
            nn.BatchNorm2d(192),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),  # 13 x 20 -> 11 x 9
            nn.Conv2d(192, 384, kernel_size=(3, 3), padding=(1, 1)),
            nn.BatchNorm2d(384),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=(3, 3), padding=(1, 1)),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=(3, 3), padding=(1, 1)),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),  # 11 x 9 -> 5 x 4
            nn.Conv2d(256, 512, kernel_size=(5, 4), padding=(0, 0)),  # 5 x 4 -> 1 x 1
            nn.BatchNorm2d(512),
            nn.ReLU(),
        )
        self.netfcaud = nn.Sequential(
            nn.Linear(512, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(),
            nn.Linear(512, embedding_dim),
        )
        self.netfclip = nn.Sequential(
            nn.Linear(512, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(),
            nn.Linear(512, embedding_dim),
        )
        # [B, 3, 5, 224, 224] -> [B, 512, 1, 1, 1]: the first conv spans all 5 frames, the rest are 2-D.
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=0),  # -> 1 x 109 x 109
            nn.BatchNorm3d(96),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),  # -> 54 x 54
            nn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),  # -> 26 x 26
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),  # -> 13 x 13
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),  # -> 6 x 6
            nn.Conv3d(256, 512, kernel_size=(1, 6, 6), padding=0),  # -> 1 x 1
            nn.BatchNorm3d(512),
            nn.ReLU(inplace=True),
        )

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        """MFCC windows `[B, 1, 13, 20]` -> audio embeddings `[B, 1024]`."""
        mid = self.netcnnaud(x)
        return self.netfcaud(mid.reshape(mid.shape[0], -1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        """BGR 0..255 crops `[B, 3, 5, 224, 224]` -> lip embeddings `[B, 1024]`."""
        mid = self.netcnnlip(x)
        return self.netfclip(mid.reshape(mid.shape[0], -1))


def load_syncnet_eval(
    path: Union[str, "os.PathLike[str]"] = DEFAULT_SYNCNET_EVAL_PATH, device: Union[str, torch.device] = "cpu"
) -> SyncNetEval:
    """syncnet_python's `syncnet_v2.model` (a plain state dict) in a frozen `SyncNetEval` on `device`, eval mode.

    Loaded with `weights_only=True`; the names and shapes must match exactly (syncnet_python copies
    them by name, so a file it accepts fits), except for the BatchNorm counters an old PyTorch did
    not save. Raises a one-line `CheckpointError` naming the file
    when it is missing, unreadable, or of another network.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(
            f"SyncNet evaluation weights {path!r} not found; download {SYNCNET_EVAL_FILENAME} "
            f"(`python -m scripts.fetch_weights syncnet_v2`, or syncnet_python's download_model.sh) to {DEFAULT_SYNCNET_EVAL_PATH} or pass its path"
        )
    state = dist_util.load_state_dict(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path!r} is not a plain state dict of tensors as {SYNCNET_EVAL_FILENAME} is; "
            f"download syncnet_python's {SYNCNET_EVAL_FILENAME} to {DEFAULT_SYNCNET_EVAL_PATH}"
        )
    net = SyncNetEval()
    net.load_state_dict(_fitting_state(net, state, path, f"syncnet_python's SyncNet ({SYNCNET_EVAL_FILENAME})"))
    return net.to(device).eval().requires_grad_(False)
