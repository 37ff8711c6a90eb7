"""Turn batches of face-crop sequences into the TFG network's inputs.

A batch holds B sequences of F = nframes frames: `[B, F, C, H, W]`. The network works on
single frames, so everything is flattened to `[B*F, ...]` in sequence order (frame f of
sequence b is row b*F + f); sequence losses fold it back.
"""

from dataclasses import dataclass
from typing import Optional

import torch as th


def lower_face_mask(image_size: int, face_hide_percentage: float, device=None, dtype=th.float32) -> th.Tensor:
    """`[1, 1, H, W]`: 1 on rows `int(H*(1-face_hide_percentage))..H-1` (the part we generate), else 0."""
    mask = th.zeros(1, 1, image_size, image_size, device=device, dtype=dtype)
    mask[:, :, int(image_size * (1.0 - face_hide_percentage)):, :] = 1.0
    return mask


def mask_frames(frames: th.Tensor, mask: th.Tensor, noise: th.Tensor) -> th.Tensor:
    """The masked frame: real pixels outside the mask, `noise` inside it (shapes broadcast)."""
    return frames * (1.0 - mask) + noise * mask


def shared_noise(image_size: int, seed: Optional[int] = None, device=None, channels: int = 3) -> th.Tensor:
    """One noise image `[1, C, H, W]`, as the released sampler draws it: from torch's global
    generator, after `torch.manual_seed(seed)` when a seed is given. It is repeated for every frame.
    """
    if seed is not None:
        th.manual_seed(seed)
    return th.randn(1, channels, image_size, image_size).to(device)


@dataclass
class TFGBatch:
    """The network inputs of one batch, flattened to `N = B*F` frames."""

    x_start: th.Tensor  # [N, 3, H, W] clean frames in [-1, 1]
    noise: th.Tensor  # [N, 3, H, W] the noise inside the mask (and x_T when sampling)
    mask: th.Tensor  # [N, 1, H, W]
    model_kwargs: dict  # cond_img, mask, ref_img, indiv_mels as TFGModel.forward takes them


def _flatten(t: th.Tensor) -> th.Tensor:
    return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])


def tfg_process_batch(
    frames: th.Tensor,
    face_hide_percentage: float = 0.5,
    ref_frames: Optional[th.Tensor] = None,
    mels: Optional[th.Tensor] = None,
    noise: Optional[th.Tensor] = None,
    use_ref: bool = True,
    use_audio: bool = True,
) -> TFGBatch:
    """Build mask, masked frame, reference and mel inputs.

    :param frames: `[B, F, 3, H, W]` in [-1, 1].
    :param ref_frames: `[B, F, 3*nrefer, H, W]` (or `[B, F, nrefer, 3, H, W]`), the reference
        frame(s) of every frame.
    :param mels: `[B, F, 80, 16]` (or `[B, F, 1, 80, 16]`), the mel window of every frame.
    :param noise: noise for the masked region: `[B*F, 3, H, W]`, or `[1, 3, H, W]` shared by
        every frame (the released sampler); drawn fresh per frame when None.
    """
    if frames.dim() != 5:
        raise ValueError(f"frames must be [B, F, C, H, W], got {tuple(frames.shape)}")
    B, F, C, H, W = frames.shape
    x_start = _flatten(frames)
    if noise is None:
        noise = th.randn_like(x_start)
    elif noise.shape[0] == 1:
        noise = noise.to(x_start).expand(B * F, -1, -1, -1)
    if tuple(noise.shape) != tuple(x_start.shape):
        raise ValueError(f"noise must be [1 or {B * F}, {C}, {H}, {W}], got {tuple(noise.shape)}")

    mask = lower_face_mask(H, face_hide_percentage, device=x_start.device, dtype=x_start.dtype).expand(B * F, -1, -1, -1)
    model_kwargs = {"cond_img": mask_frames(x_start, mask, noise), "mask": mask}
    if use_ref:
        if ref_frames is None:
            raise ValueError("use_ref is set but no ref_frames were given")
        if ref_frames.dim() == 6:
            ref_frames = ref_frames.reshape(B, F, -1, H, W)
        model_kwargs["ref_img"] = _flatten(ref_frames)
    if use_audio:
        if mels is None:
            raise ValueError("use_audio is set but no mels were given")
        if mels.dim() == 5:
            mels = mels.squeeze(2)
        model_kwargs["indiv_mels"] = _flatten(mels)
    return TFGBatch(x_start=x_start, noise=noise, mask=mask, model_kwargs=model_kwargs)
