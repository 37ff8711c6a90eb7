"""Small building blocks shared by the UNet, the audio encoder and the training code."""

import math
from typing import Iterable

import torch as th
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as _torch_checkpoint


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype, as the released network was trained."""

    def forward(self, x: th.Tensor) -> th.Tensor:
        # Outside autocast, so that the float32 statistics are not cast back down.
        with th.autocast(device_type=x.device.type, enabled=False):
            if x.dtype == th.bfloat16 and x.device.type == "cpu":
                # The CPU kernel accumulates bfloat16 input in float32 with float32 affine
                # parameters: the same result as upcasting, without the two copies.
                return F.group_norm(x, self.num_groups, self.weight.float(), self.bias.float(), self.eps)
            return super().forward(x.float()).type(x.dtype)


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    """A 1D, 2D or 3D convolution."""
    if dims == 1:
        return nn.Conv1d(*args, **kwargs)
    if dims == 2:
        return nn.Conv2d(*args, **kwargs)
    if dims == 3:
        return nn.Conv3d(*args, **kwargs)
    raise ValueError(f"unsupported dimensions: {dims}")


def linear(*args, **kwargs) -> nn.Linear:
    return nn.Linear(*args, **kwargs)


def avg_pool_nd(dims: int, *args, **kwargs) -> nn.Module:
    """A 1D, 2D or 3D average pooling."""
    if dims == 1:
        return nn.AvgPool1d(*args, **kwargs)
    if dims == 2:
        return nn.AvgPool2d(*args, **kwargs)
    if dims == 3:
        return nn.AvgPool3d(*args, **kwargs)
    raise ValueError(f"unsupported dimensions: {dims}")


def normalization(channels: int) -> GroupNorm32:
    """The UNet's normalisation layer: 32 groups, float32."""
    return GroupNorm32(32, channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero the parameters of `module` (the last conv of every block starts as identity) and return it."""
    for p in module.parameters():
        p.detach().zero_()
    return module


def update_ema(target_params: Iterable[th.Tensor], source_params: Iterable[th.Tensor], rate: float = 0.99) -> None:
    """target = rate * target + (1 - rate) * source, in place."""
    for targ, src in zip(target_params, source_params):
        targ.detach().mul_(rate).add_(src.detach(), alpha=1 - rate)


def mean_flat(tensor: th.Tensor) -> th.Tensor:
    """Mean over every dimension but the batch one."""
    return tensor.mean(dim=list(range(1, len(tensor.shape))))


def timestep_embedding(timesteps: th.Tensor, dim: int, max_period: int = 10000) -> th.Tensor:
    """Sinusoidal embeddings `[N, dim]` of (possibly fractional) timesteps `[N]`, cosine half first."""
    half = dim // 2
    freqs = th.exp(-math.log(max_period) * th.arange(start=0, end=half, dtype=th.float32) / half).to(
        device=timesteps.device
    )
    args = timesteps[:, None].float() * freqs[None]
    embedding = th.cat([th.cos(args), th.sin(args)], dim=-1)
    if dim % 2:
        embedding = th.cat([embedding, th.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def checkpoint(func, inputs: tuple, flag: bool):
    """Run `func(*inputs)`, with gradient checkpointing (recompute in backward) when `flag` is set."""
    if flag and th.is_grad_enabled():
        return _torch_checkpoint(func, *inputs, use_reentrant=False)
    return func(*inputs)
