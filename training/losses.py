"""Diff2Lip's training losses (Eq. 3-9), each a small object with one calling convention.

Every loss is called as `loss(batch) -> scalar` on the same `PredictedSequences`, and
`weighted_sum` adds them with their lambdas and reports every term, so the training loop does
not know which losses it runs. A lambda of 0 leaves its loss out (not even computed), which
makes each row of the paper's ablation one command.
"""

import os
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import CheckpointError
from guided_diffusion.gaussian_diffusion import masked_mean_flat

LPIPS_VGG_FILE = "vgg16-397923af.pth"
LPIPS_BACKBONES = ("pretrained", "random")


@dataclass
class PredictedSequences:
    """One batch after the diffusion forward pass: B sequences of F frames.

    `pred` is the predicted clean frame x0 (Eq. 2) inside the mask and the real frame outside
    it (what the sampler outputs), so image losses judge only the generated part.
    """

    pred: torch.Tensor  # [B, F, 3, H, W] in about [-1, 1], differentiable
    real: torch.Tensor  # [B, F, 3, H, W] in [-1, 1]
    mask: torch.Tensor  # [B, F, 1, H, W], 1 where generated
    sync_mel: torch.Tensor  # [B, 80, 16], the SyncNet window of each sequence
    # per frame [B*F]: "loss", "mse", optionally "vb"; distillation: "student" and "target"
    # [B*F, C, H, W], the student's output and its target in the network's parameterization
    diffusion_terms: Dict[str, torch.Tensor]

    @property
    def pred_frames(self) -> torch.Tensor:
        return self.pred.flatten(0, 1)

    @property
    def real_frames(self) -> torch.Tensor:
        return self.real.flatten(0, 1)


class DiffusionLoss:
    """L_simple (Eq. 3) on the noise inside the mask, plus the variational term of the learned
    variance: the mean of the diffusion's per-frame "loss"."""

    def __call__(self, batch: PredictedSequences) -> torch.Tensor:
        return batch.diffusion_terms["loss"].mean()


class L2Loss:
    """Eq. 5: mean squared error of the predicted clean frames, over the masked pixels only."""

    def __call__(self, batch: PredictedSequences) -> torch.Tensor:
        err = (batch.pred_frames - batch.real_frames) ** 2
        return masked_mean_flat(err, batch.mask.flatten(0, 1)).mean()


class DistillationLoss:
    """Progressive distillation (Salimans & Ho 2022): mean squared error between the student's
    output and the target that makes its one step land where the teacher's steps land, over the
    masked pixels only (outside the mask the frame is given)."""

    def __call__(self, batch: PredictedSequences) -> torch.Tensor:
        err = (batch.diffusion_terms["student"] - batch.diffusion_terms["target"]) ** 2
        return masked_mean_flat(err, batch.mask.flatten(0, 1)).mean()


class SyncLoss:
    """Eq. 6: the frozen lip-sync expert's BCE for "in sync" on the 5 predicted frames and their audio."""

    def __init__(self, expert: nn.Module):
        from training.syncnet import sync_bce

        self.expert = expert
        self._bce = sync_bce

    def __call__(self, batch: PredictedSequences) -> torch.Tensor:
        audio_emb, video_emb = self.expert(batch.pred, batch.sync_mel)
        return self._bce(audio_emb, video_emb, torch.ones(audio_emb.shape[0], device=audio_emb.device))


class LPIPSLoss:
    """Eq. 7: LPIPS (the `lpips` package, VGG features) between predicted and real frames."""

    def __init__(self, lpips_net: nn.Module):
        self.net = lpips_net

    def __call__(self, batch: PredictedSequences) -> torch.Tensor:
        return self.net(batch.pred_frames, batch.real_frames).mean()


def load_lpips(device, backbone: str = "pretrained") -> torch.nn.Module:
    """The `lpips` package's VGG LPIPS, frozen. Its VGG-16 weights come from torch's hub cache, or
    with `backbone="random"` are a fixed random draw (seed 0, the same in every run and on resume)."""
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's `pretrained=` deprecation inside lpips
        if backbone == "random":
            with torch.random.fork_rng(devices=[]):  # the training's random stream stays untouched
                torch.manual_seed(0)
                net = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)
        else:
            try:
                net = lpips.LPIPS(net="vgg", verbose=False)
            except Exception as exc:  # the download on a machine without internet
                cached = os.path.join(torch.hub.get_dir(), "checkpoints", LPIPS_VGG_FILE)
                raise CheckpointError(
                    f"LPIPS needs torchvision's VGG-16 weights: put {LPIPS_VGG_FILE} in {os.path.dirname(cached)} "
                    f"(`python -m scripts.fetch_weights vgg16` or torchvision downloads it there on a connected machine), or pass --lpips_backbone random "
                    f"or --lambda_lpips 0 ({exc})"
                ) from exc
    return net.to(device).eval().requires_grad_(False)


class SequencePatchGAN(nn.Module):
    """A PatchGAN discriminator (pix2pix's, with instance norm) that sees the frames of a
    sequence together, stacked on channels: `[B, F, 3, H, W]` -> patch logits `[B, 1, h, w]`."""

    def __init__(self, nframes: int = 5, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(3 * nframes, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        ch = ndf
        for i in range(1, n_layers + 1):
            out = ndf * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(ch, out, 4, stride, 1), nn.InstanceNorm2d(out, affine=True), nn.LeakyReLU(0.2, True)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        return self.net(sequences.flatten(1, 2))


class SequenceGANLoss:
    """Eq. 8, in the usual non-saturating form: the generator wants D(fake) -> "real"; the
    discriminator (own optimizer, alternating updates) wants D(real) -> 1 and D(fake) -> 0."""

    def __init__(self, discriminator: nn.Module):
        self.discriminator = discriminator

    def __call__(self, batch: PredictedSequences) -> torch.Tensor:
        logits = self.discriminator(batch.pred)
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor, discriminator: Optional[nn.Module] = None) -> torch.Tensor:
        """`real`, `fake`: `[B, F, 3, H, W]`; `fake` is detached from the generator.

        One forward over both halves (DistributedDataParallel allows one forward per backward;
        instance norm keeps the samples apart). `discriminator` may be the DDP-wrapped one.
        """
        logits = (discriminator or self.discriminator)(torch.cat([real, fake.detach()]))
        real_logits, fake_logits = logits.chunk(2)
        return F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)) + F.binary_cross_entropy_with_logits(
            fake_logits, torch.zeros_like(fake_logits)
        )


def weighted_sum(
    losses: Mapping[str, Callable[[PredictedSequences], torch.Tensor]],
    weights: Mapping[str, float],
    batch: PredictedSequences,
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Eq. 9: sum of `weights[name] * losses[name](batch)` over the losses with a non-zero weight.

    :return: the total (differentiable) and every computed term (unweighted) for the logs.
    """
    total = None
    terms: Dict[str, float] = {}
    for name, loss in losses.items():
        weight = weights.get(name, 0.0)
        if weight == 0:
            continue
        value = loss(batch)
        terms[name] = value.detach().item()
        total = weight * value if total is None else total + weight * value
    terms["total"] = total.detach().item()
    return total, terms
