"""The guided-diffusion UNet and Diff2Lip's TFG model built on it.

Parameter names and shapes follow the released checkpoint exactly (see
tests/data/diff2lip_official_tfgmodel.tsv), so `model.load_state_dict(torch.load(...))` works
on the released `checkpoint.pt`.
"""

import math
from abc import abstractmethod
from typing import Optional, Sequence, Tuple, Union

import torch as th
import torch.nn as nn
import torch.nn.functional as F

from .nn import (
    avg_pool_nd,
    checkpoint,
    conv_nd,
    linear,
    normalization,
    timestep_embedding,
    zero_module,
)


def _full_precision(like: th.Tensor):
    """Autocast off: the embeddings, the input conv and the output head run in float32 (the
    released `--use_fp16` also kept the embeddings and the head in float32)."""
    return th.autocast(device_type=like.device.type, enabled=False)


class TimestepBlock(nn.Module):
    """A module whose forward takes the timestep (and audio) embedding as a second argument."""

    @abstractmethod
    def forward(self, x: th.Tensor, emb: th.Tensor) -> th.Tensor:
        """Apply the module to `x` given the embedding `emb` `[N, emb_channels]`."""


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    """A sequential container that hands the embedding to the children that take it."""

    def forward(self, x: th.Tensor, emb: th.Tensor) -> th.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling, optionally followed by a 3x3 conv."""

    def __init__(self, channels: int, use_conv: bool, dims: int = 2, out_channels: Optional[int] = None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        self.dims = dims
        if use_conv:
            self.conv = conv_nd(dims, self.channels, self.out_channels, 3, padding=1)

    def forward(self, x: th.Tensor) -> th.Tensor:
        assert x.shape[1] == self.channels
        if self.dims == 3:
            x = F.interpolate(x, (x.shape[2], x.shape[3] * 2, x.shape[4] * 2), mode="nearest")
        else:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        if self.use_conv:
            x = self.conv(x)
        return x


class Downsample(nn.Module):
    """Strided 3x3 conv or average pooling; `stride` defaults to 2 in every spatial dimension."""

    def __init__(
        self,
        channels: int,
        use_conv: bool,
        dims: int = 2,
        out_channels: Optional[int] = None,
        stride: Union[int, Tuple[int, ...], None] = None,
    ):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        self.dims = dims
        if stride is None:
            stride = 2 if dims != 3 else (1, 2, 2)
        if use_conv:
            self.op = conv_nd(dims, self.channels, self.out_channels, 3, stride=stride, padding=1)
        else:
            assert self.channels == self.out_channels
            self.op = avg_pool_nd(dims, kernel_size=stride, stride=stride)

    def forward(self, x: th.Tensor) -> th.Tensor:
        assert x.shape[1] == self.channels
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block; the embedding is projected and added per channel before the second norm.

    `up` / `down` resample inside the block (nearest / average pooling, `down_stride` for the
    audio encoder's non-square pooling).
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: Optional[int] = None,
        use_conv: bool = False,
        use_scale_shift_norm: bool = False,
        dims: int = 2,
        use_checkpoint: bool = False,
        up: bool = False,
        down: bool = False,
        down_stride: Union[int, Tuple[int, ...], None] = None,
    ):
        super().__init__()
        self.channels = channels
        self.emb_channels = emb_channels
        self.dropout = dropout
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        self.use_checkpoint = use_checkpoint
        self.use_scale_shift_norm = use_scale_shift_norm

        self.in_layers = nn.Sequential(
            normalization(channels),
            nn.SiLU(),
            conv_nd(dims, channels, self.out_channels, 3, padding=1),
        )

        self.updown = up or down
        if up:
            self.h_upd = Upsample(channels, False, dims)
            self.x_upd = Upsample(channels, False, dims)
        elif down:
            self.h_upd = Downsample(channels, False, dims, stride=down_stride)
            self.x_upd = Downsample(channels, False, dims, stride=down_stride)
        else:
            self.h_upd = self.x_upd = nn.Identity()

        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            linear(emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels),
        )
        self.out_layers = nn.Sequential(
            normalization(self.out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(conv_nd(dims, self.out_channels, self.out_channels, 3, padding=1)),
        )

        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        elif use_conv:
            self.skip_connection = conv_nd(dims, channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = conv_nd(dims, channels, self.out_channels, 1)

    def forward(self, x: th.Tensor, emb: th.Tensor) -> th.Tensor:
        return checkpoint(self._forward, (x, emb), self.use_checkpoint)

    def _forward(self, x: th.Tensor, emb: th.Tensor) -> th.Tensor:
        if self.updown:
            in_rest, in_conv = self.in_layers[:-1], self.in_layers[-1]
            h = in_rest(x)
            h = self.h_upd(h)
            x = self.x_upd(x)
            h = in_conv(h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)
        while len(emb_out.shape) < len(h.shape):
            emb_out = emb_out[..., None]
        if self.use_scale_shift_norm:
            out_norm, out_rest = self.out_layers[0], self.out_layers[1:]
            scale, shift = th.chunk(emb_out, 2, dim=1)
            h = out_norm(h) * (1 + scale) + shift
            h = out_rest(h)
        else:
            h = h + emb_out
            h = self.out_layers(h)
        return self.skip_connection(x) + h


def _fused_attention(q: th.Tensor, k: th.Tensor, v: th.Tensor, bs: int, length: int) -> th.Tensor:
    """softmax(q k^T / sqrt(C)) v for `[N*H, T, C]` inputs -> `[N, H*C, T]`."""
    a = F.scaled_dot_product_attention(q, k, v)
    return a.transpose(1, 2).reshape(bs, -1, length)


def _einsum_attention(q: th.Tensor, k: th.Tensor, v: th.Tensor, bs: int, length: int) -> th.Tensor:
    """The released computation for `[N*H, C, T]` inputs -> `[N, H*C, T]`: q and k each scaled
    by C**-0.25 (more stable in float16 than scaling after), softmax in float32."""
    scale = 1 / math.sqrt(math.sqrt(q.shape[1]))
    weight = th.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = th.softmax(weight.float(), dim=-1).type(weight.dtype)
    a = th.einsum("bts,bcs->bct", weight, v)
    return a.reshape(bs, -1, length)


class QKVAttentionLegacy(nn.Module):
    """Multi-head attention in the released "legacy" order: split heads first, then q, k, v.

    `fused=True` runs torch's `scaled_dot_product_attention`, which computes the same
    softmax(q k^T / sqrt(ch)) v (the legacy code scales q and k by ch**-0.25 each) without
    materialising the attention matrix in float32; `fused=False` is the released einsum code.
    """

    def __init__(self, n_heads: int, fused: bool = True):
        super().__init__()
        self.n_heads = n_heads
        self.fused = fused

    def forward(self, qkv: th.Tensor) -> th.Tensor:
        """`[N, 3*H*C, T]` -> `[N, H*C, T]`."""
        bs, width, length = qkv.shape
        assert width % (3 * self.n_heads) == 0
        ch = width // (3 * self.n_heads)
        if self.fused:
            # [N*H, T, 3C] contiguous: the fused CPU kernel needs unit stride on the channels.
            q, k, v = qkv.reshape(bs * self.n_heads, ch * 3, length).transpose(1, 2).contiguous().split(ch, dim=-1)
            return _fused_attention(q, k, v, bs, length)
        q, k, v = qkv.reshape(bs * self.n_heads, ch * 3, length).split(ch, dim=1)
        return _einsum_attention(q, k, v, bs, length)


class QKVAttention(nn.Module):
    """Multi-head attention in the "new" order (split q, k, v first, then heads)."""

    def __init__(self, n_heads: int, fused: bool = True):
        super().__init__()
        self.n_heads = n_heads
        self.fused = fused

    def forward(self, qkv: th.Tensor) -> th.Tensor:
        """`[N, 3*H*C, T]` -> `[N, H*C, T]`."""
        bs, width, length = qkv.shape
        assert width % (3 * self.n_heads) == 0
        ch = width // (3 * self.n_heads)
        if self.fused:
            qkv_t = qkv.reshape(bs, 3, self.n_heads, ch, length).permute(1, 0, 2, 4, 3).contiguous()
            q, k, v = qkv_t.reshape(3, bs * self.n_heads, length, ch)
            return _fused_attention(q, k, v, bs, length)
        q, k, v = (t.reshape(bs * self.n_heads, ch, length) for t in qkv.chunk(3, dim=1))
        return _einsum_attention(q, k, v, bs, length)


class AttentionBlock(nn.Module):
    """Spatial self-attention with a residual connection."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_checkpoint: bool = False,
        use_new_attention_order: bool = False,
        fused_attention: bool = True,
    ):
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            assert channels % num_head_channels == 0, (
                f"channels {channels} not divisible by num_head_channels {num_head_channels}"
            )
            self.num_heads = channels // num_head_channels
        self.use_checkpoint = use_checkpoint
        self.norm = normalization(channels)
        self.qkv = conv_nd(1, channels, channels * 3, 1)
        attention_cls = QKVAttention if use_new_attention_order else QKVAttentionLegacy
        self.attention = attention_cls(self.num_heads, fused=fused_attention)
        self.proj_out = zero_module(conv_nd(1, channels, channels, 1))

    def forward(self, x: th.Tensor) -> th.Tensor:
        return checkpoint(self._forward, (x,), self.use_checkpoint)

    def _forward(self, x: th.Tensor) -> th.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        h = self.attention(qkv)
        h = self.proj_out(h)
        return (x + h).reshape(b, c, *spatial)


class DeepFeatureCache:
    """Deep-feature reuse across sampling steps (the idea of DeepCache, Ma et al. 2024).

    Consecutive denoising steps change the UNet's deep, low-resolution features little. Every
    `interval`-th call runs the whole network and keeps the input of decoder block L-depth;
    the calls in between run only the first `depth` encoder blocks (the input conv and the
    full-resolution blocks for depth 3 of the released network) and the last `depth` decoder
    blocks, reusing the kept features. The last of `steps` calls is always a full pass: it
    makes the final prediction, and stale deep features there cost the most (docs/figures.md
    has the measured difference). One cache serves one sampling loop of one batch.
    """

    def __init__(self, interval: int, depth: int, steps: Optional[int] = None):
        if interval < 1:
            raise ValueError(f"cache interval must be >= 1, got {interval}")
        if depth < 1:
            raise ValueError(f"cache depth must be >= 1, got {depth}")
        self.interval = interval
        self.depth = depth
        self.steps = steps
        self.features: Optional[th.Tensor] = None
        self.calls = 0

    # Outside torch.compile's graph: a compiled network would otherwise guard on the call count
    # and recompile at every step; this way it compiles one graph per answer.
    @th.compiler.disable
    def reuse(self) -> bool:
        """Whether this call may reuse the deep features (counts the call)."""
        last = self.steps is not None and self.calls == self.steps - 1
        reuse = self.features is not None and self.calls % self.interval != 0 and not last
        self.calls += 1
        return reuse


class UNetModel(nn.Module):
    """guided-diffusion's UNet with timestep embedding.

    :param attention_resolutions: downsample rates (not pixel sizes) at which to attend.
    :param fused_attention: use torch's fused attention kernel (same result as the released einsum).
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        dims: int = 2,
        num_classes: Optional[int] = None,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        fused_attention: bool = True,
    ):
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads

        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = attention_resolutions
        self.dropout = dropout
        self.channel_mult = channel_mult
        self.conv_resample = conv_resample
        self.num_classes = num_classes
        self.use_checkpoint = use_checkpoint
        self.use_fp16 = use_fp16
        # float16 only once `convert_to_fp16` has converted the torso (inference does it when the
        # precision resolves to fp16, i.e. on a GPU): until then the weights are float32.
        self.dtype = th.float32
        self.num_heads = num_heads
        self.num_head_channels = num_head_channels
        self.num_heads_upsample = num_heads_upsample

        time_embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(
            linear(model_channels, time_embed_dim),
            nn.SiLU(),
            linear(time_embed_dim, time_embed_dim),
        )
        if self.num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, time_embed_dim)

        def res_block(ch_in: int, ch_out: int, **kw) -> ResBlock:
            return ResBlock(
                ch_in,
                time_embed_dim,
                dropout,
                out_channels=ch_out,
                dims=dims,
                use_checkpoint=use_checkpoint,
                use_scale_shift_norm=use_scale_shift_norm,
                **kw,
            )

        def attention(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(
                ch,
                use_checkpoint=use_checkpoint,
                num_heads=heads,
                num_head_channels=num_head_channels,
                use_new_attention_order=use_new_attention_order,
                fused_attention=fused_attention,
            )

        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(conv_nd(dims, in_channels, ch, 3, padding=1))])
        input_block_chans = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res_block(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(attention(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                input_block_chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(
                    TimestepEmbedSequential(
                        res_block(ch, ch, down=True)
                        if resblock_updown
                        else Downsample(ch, conv_resample, dims=dims, out_channels=ch)
                    )
                )
                input_block_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(
            res_block(ch, ch),
            attention(ch, num_heads),
            res_block(ch, ch),
        )

        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                ich = input_block_chans.pop()
                layers = [res_block(ch + ich, int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(attention(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(
                        res_block(ch, ch, up=True)
                        if resblock_updown
                        else Upsample(ch, conv_resample, dims=dims, out_channels=ch)
                    )
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            normalization(ch),
            nn.SiLU(),
            zero_module(conv_nd(dims, input_ch, out_channels, 3, padding=1)),
        )

    def convert_to_fp16(self) -> None:
        """Run the torso (not the embeddings nor the output head) in float16, as `--use_fp16` did."""
        for blocks in (self.input_blocks, self.middle_block, self.output_blocks):
            blocks.apply(_convert_module_to_f16)
        self.dtype = th.float16

    def convert_to_fp32(self) -> None:
        for blocks in (self.input_blocks, self.middle_block, self.output_blocks):
            blocks.apply(_convert_module_to_f32)
        self.dtype = th.float32

    def embed(self, timesteps: th.Tensor, y: Optional[th.Tensor] = None) -> th.Tensor:
        """The timestep (and class) embedding `[N, 4*model_channels]`."""
        with _full_precision(timesteps):
            emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
            if self.num_classes is not None:
                assert y is not None and y.shape == (timesteps.shape[0],)
                emb = emb + self.label_emb(y)
        return emb

    def run_torso(self, x: th.Tensor, emb: th.Tensor, feature_cache: Optional["DeepFeatureCache"] = None) -> th.Tensor:
        """The encoder, middle and decoder blocks plus the output head.

        With a `feature_cache` whose `reuse()` says so, only the shallowest `depth` encoder
        blocks and their mirror decoder blocks run; the decoder's deep features come from the
        cache, filled at the last full call (DeepCache, Ma et al. 2024).
        """
        # The input conv stays in float32 under autocast: rounding the raw noisy frames to
        # bfloat16 costs more accuracy than any other layer, and the conv is ~0.1% of the FLOPs.
        # Its float32 output also keeps the residual stream of the first levels in float32
        # (identity skips add in float32): slower than all-bf16, but within 1% of float32.
        if feature_cache is not None and feature_cache.depth > len(self.input_blocks):
            raise ValueError(f"cache depth {feature_cache.depth} exceeds the network's {len(self.input_blocks)} encoder blocks")
        reuse = feature_cache is not None and feature_cache.reuse()
        n_encoder = feature_cache.depth if reuse else len(self.input_blocks)
        with _full_precision(x):
            h = self.input_blocks[0](x.type(self.dtype), emb)
        hs = [h]
        for module in self.input_blocks[1:n_encoder]:
            h = module(h, emb)
            hs.append(h)
        # Decoder block j takes the skip of encoder block L-1-j, so the last `depth` decoder
        # blocks need exactly the shallow encoder's features computed above.
        keep_at = len(self.output_blocks) - feature_cache.depth if feature_cache is not None else -1
        if reuse:
            h, first = feature_cache.features, keep_at
        else:
            h, first = self.middle_block(h, emb), 0
        for j in range(first, len(self.output_blocks)):
            if j == keep_at and not reuse:
                feature_cache.features = h
            h = th.cat([h, hs.pop()], dim=1)
            h = self.output_blocks[j](h, emb)
        with _full_precision(x):
            return self.out(h.type(x.dtype))

    def forward(self, x: th.Tensor, timesteps: th.Tensor, y: Optional[th.Tensor] = None) -> th.Tensor:
        """`[N, C, H, W]` noisy input and `[N]` timesteps -> `[N, out_channels, H, W]`."""
        return self.run_torso(x, self.embed(timesteps, y))


def _convert_module_to_f16(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        module.weight.data = module.weight.data.half()
        if module.bias is not None:
            module.bias.data = module.bias.data.half()


def _convert_module_to_f32(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        module.weight.data = module.weight.data.float()
        if module.bias is not None:
            module.bias.data = module.bias.data.float()


class AudioEncoder(nn.Module):
    """Diff2Lip's trainable audio encoder: a mel window `[N, 80, 16]` -> features `[N, 4*ch, 8, 8]`.

    Conv1d over time (80 mel bands -> 64), then the 64x16 map is treated as a one-channel image
    and encoded by residual blocks that get the embedding of timestep 0 from the encoder's own
    MLP. Down-sampling pools (2, 1) while the height is above 16 and (2, 2) after, so
    64x16 -> 32x16 -> 16x16 -> 8x8 at the official size.
    """

    def __init__(
        self,
        num_mels: int = 80,
        mel_steps: int = 16,
        hidden_mels: int = 64,
        model_channels: int = 32,
        channel_mult: Sequence[int] = (1, 2, 3, 4),
        num_res_blocks: int = 2,
        dropout: float = 0.0,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.num_mels = num_mels
        self.mel_steps = mel_steps
        self.model_channels = model_channels
        time_embed_dim = model_channels
        self.time_embed = nn.Sequential(
            linear(model_channels, time_embed_dim),
            nn.SiLU(),
            linear(time_embed_dim, time_embed_dim),
        )
        self.input_block = nn.Sequential(
            conv_nd(1, num_mels, hidden_mels, 3, padding=1),
            normalization(hidden_mels),
            nn.SiLU(),
        )

        ch = int(channel_mult[0] * model_channels)
        blocks = [TimestepEmbedSequential(conv_nd(2, 1, ch, 3, padding=1))]
        height, width = hidden_mels, mel_steps
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                out_ch = int(mult * model_channels)
                blocks.append(
                    TimestepEmbedSequential(
                        ResBlock(ch, time_embed_dim, dropout, out_channels=out_ch, use_checkpoint=use_checkpoint)
                    )
                )
                ch = out_ch
            if level != len(channel_mult) - 1:
                stride = (2, 1) if height > mel_steps else (2, 2)
                blocks.append(
                    TimestepEmbedSequential(
                        ResBlock(ch, time_embed_dim, dropout, use_checkpoint=use_checkpoint, down=True, down_stride=stride)
                    )
                )
                height, width = height // stride[0], width // stride[1]
        self.encoder_blocks = nn.ModuleList(blocks)
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, time_embed_dim, dropout, use_checkpoint=use_checkpoint)
        )
        self.out_channels = ch
        self.out_size = (height, width)

    def forward(self, mels: th.Tensor) -> th.Tensor:
        """`[N, 80, 16]` (or `[N, 1, 80, 16]`) mel windows -> `[N, out_channels, 8, 8]`."""
        if mels.dim() == 4:
            mels = mels.squeeze(1)
        n = mels.shape[0]
        timesteps = th.zeros(n, device=mels.device)
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        h = self.input_block(mels).unsqueeze(1)
        for module in self.encoder_blocks:
            h = module(h, emb)
        return self.middle_block(h, emb)


class TFGModel(UNetModel):
    """Diff2Lip's talking-face-generation model: the UNet inpaints the masked lower face.

    Per frame: the noisy frame `x_t`, the masked frame `cond_img` (real outside the mask, noise
    inside), the reference frame(s) `ref_img`, the mask and a mel window. The network forces
    its input to `x_t*M + cond*(1-M)` and reads `[that, cond, ref]`; the audio is encoded and
    added to the timestep embedding (`audio_as_style`), so it reaches every residual block.
    """

    def __init__(
        self,
        *args,
        nframes: int = 5,
        nrefer: int = 1,
        use_ref: bool = True,
        use_audio: bool = True,
        audio_as_style: bool = True,
        audio_as_style_encoder_mlp: bool = False,
        **kwargs,
    ):
        self.nframes = nframes
        self.nrefer = nrefer if use_ref else 0
        self.use_ref = use_ref
        self.use_audio = use_audio
        self.audio_as_style = audio_as_style
        base_channels = kwargs.pop("in_channels", 3)
        in_channels = base_channels * (2 + self.nrefer)
        super().__init__(*args, in_channels=in_channels, **kwargs)
        if use_audio:
            self.audio_encoder = AudioEncoder(dropout=self.dropout, use_checkpoint=self.use_checkpoint)
            time_embed_dim = self.model_channels * 4
            self.audio_encoder_to_style = nn.Sequential(
                normalization(self.audio_encoder.out_channels),
                nn.SiLU(),
                nn.AdaptiveAvgPool2d((1, 1)),
                zero_module(conv_nd(2, self.audio_encoder.out_channels, time_embed_dim, 1)),
                nn.Flatten(),
            )

    def audio_style(self, indiv_mels: th.Tensor) -> th.Tensor:
        """Mel windows `[N, 80, 16]` -> the vector `[N, 4*model_channels]` added to the timestep embedding.

        It does not depend on the diffusion step, so samplers compute it once per frame; it
        stays in float32 under autocast, like the timestep embedding it is added to.
        """
        with _full_precision(indiv_mels):
            return self.audio_encoder_to_style(self.audio_encoder(indiv_mels.float()))

    def precompute_conditioning(self, model_kwargs: dict) -> dict:
        """Replace `indiv_mels` by its `audio_style`, computed once for the whole sampling loop."""
        if not self.use_audio or "indiv_mels" not in model_kwargs:
            return model_kwargs
        kwargs = dict(model_kwargs)
        kwargs["audio_style"] = self.audio_style(kwargs.pop("indiv_mels"))
        return kwargs

    def forward(
        self,
        x: th.Tensor,
        timesteps: th.Tensor,
        cond_img: Optional[th.Tensor] = None,
        mask: Optional[th.Tensor] = None,
        ref_img: Optional[th.Tensor] = None,
        indiv_mels: Optional[th.Tensor] = None,
        audio_style: Optional[th.Tensor] = None,
        y: Optional[th.Tensor] = None,
        feature_cache: Optional[DeepFeatureCache] = None,
    ) -> th.Tensor:
        """`x`, `cond_img`: `[N, 3, H, W]`; `mask`: `[N, 1, H, W]` (1 = generate); `ref_img`:
        `[N, 3*nrefer, H, W]`; `indiv_mels`: `[N, 80, 16]` (or `audio_style` `[N, 4*ch]`
        from `precompute_conditioning`); `timesteps`: `[N]` -> `[N, out_channels, H, W]`;
        `feature_cache`: deep-feature reuse across sampling steps (see `DeepFeatureCache`).
        """
        if cond_img is None or mask is None:
            raise ValueError("TFGModel needs cond_img and mask")
        x = x * mask + cond_img * (1 - mask)
        inputs = [x, cond_img]
        if self.use_ref:
            if ref_img is None:
                raise ValueError("TFGModel was built with use_ref=True and needs ref_img")
            inputs.append(ref_img)
        emb = self.embed(timesteps, y)
        if self.use_audio:
            if audio_style is None:
                if indiv_mels is None:
                    raise ValueError("TFGModel was built with use_audio=True and needs indiv_mels")
                audio_style = self.audio_style(indiv_mels)
            emb = emb + audio_style.to(emb.dtype)
        return self.run_torso(th.cat(inputs, dim=1), emb, feature_cache)
