"""PSNR and SSIM of generated against real RGB uint8 frames, batched in torch on any device.

Definitions (frames `a`, `b` of shape `[H, W, 3]`, values 0..255, computed in float64):

- PSNR = 10 * log10(255^2 / MSE), MSE the mean of (a - b)^2 over all H * W * 3 values: one number
  over the three channels together (scikit-image's `peak_signal_noise_ratio(a, b,
  data_range=255)`). Identical frames have MSE 0 and PSNR `inf`, returned as such (no cap), so
  average PSNR over frames only after deciding what an exact copy should count as.
- SSIM is scikit-image's `structural_similarity(a, b, channel_axis=-1, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=255)`: per channel, local means, variances
  and the covariance are weighted by a normalised 11 x 11 Gaussian (sigma 1.5, the separable
  kernel exp(-x^2 / (2 sigma^2)) for x = -5..5 that scipy's `gaussian_filter` with truncate 3.5
  uses), with population (not sample) normalisation;
  S = (2 mu_a mu_b + C1)(2 cov_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(var_a + var_b + C2)),
  C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2. SSIM is the mean of S over the positions where the
  window lies fully inside the frame (scikit-image computes S everywhere with reflected borders
  and then crops 5 pixels on each side, which is the same set of values), then the mean over the
  three channels. Frames must be at least 11 x 11.
"""

from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

Frames = Union[np.ndarray, torch.Tensor]

DATA_RANGE = 255.0
SSIM_SIGMA = 1.5
SSIM_WIN = 11  # 2 * int(3.5 * sigma + 0.5) + 1, scikit-image's window for gaussian_weights=True
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _as_batch(x: Frames, device: Union[str, torch.device], name: str) -> torch.Tensor:
    """`[N, H, W, 3]` uint8 (numpy or torch) -> float64 `[N, 3, H, W]` on `device`."""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if t.dtype != torch.uint8 or t.dim() != 4 or t.shape[-1] != 3:
        raise ValueError(f"{name} must be RGB uint8 frames [N, H, W, 3], got {t.dtype} {tuple(t.shape)}")
    # uint8 travels to the device (4x less than float64), the cast happens there.
    return t.to(device).permute(0, 3, 1, 2).to(torch.float64)


def _pair(a: Frames, b: Frames, device: Union[str, torch.device]):
    ta, tb = _as_batch(a, device, "a"), _as_batch(b, device, "b")
    if ta.shape != tb.shape:
        raise ValueError(f"a and b must have one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return ta, tb


def psnr_batch(a: Frames, b: Frames, device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    """PSNR in dB of each frame pair: `[N, H, W, 3]` uint8 twice -> float64 `[N]` on `device`
    (`inf` where the frames are identical)."""
    ta, tb = _pair(a, b, device)
    mse = (ta - tb).square().mean(dim=(1, 2, 3))
    # 255^2 / 0 is inf in float64 and log10(inf) is inf: identical frames give inf, no warning.
    return 10.0 * torch.log10(DATA_RANGE**2 / mse)


def _gaussian_kernel(device: Union[str, torch.device]) -> torch.Tensor:
    """The 1-D normalised Gaussian `[SSIM_WIN]` float64 (sigma 1.5), as scipy's gaussian_filter builds it."""
    x = torch.arange(SSIM_WIN, dtype=torch.float64, device=device) - SSIM_WIN // 2
    w = torch.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return w / w.sum()


# Frames per SSIM step: about this many pixels. The statistics of a whole clip at once are maps of
# hundreds of MB each, which every elementwise step allocates (page faults) and streams through
# memory; a few frames at a time stay in the allocator's reused blocks and in cache.
SSIM_CHUNK_PIXELS = 1 << 18


def ssim_batch(a: Frames, b: Frames, device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    """SSIM of each frame pair (module docstring): `[N, H, W, 3]` uint8 twice -> float64 `[N]` on
    `device`. Memory: about 15 float64 maps of a few frames (SSIM_CHUNK_PIXELS) at once."""
    ta, tb = _pair(a, b, device)
    n, c, h, w = ta.shape
    if h < SSIM_WIN or w < SSIM_WIN:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WIN}x{SSIM_WIN}, got {h}x{w}")
    g = _gaussian_kernel(ta.device).float()
    step = max(1, SSIM_CHUNK_PIXELS // (h * w))
    return torch.cat([_ssim_frames(ta[i:i + step], tb[i:i + step], g) for i in range(0, n, step)])


def _ssim_frames(ta: torch.Tensor, tb: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """`ssim_batch` of float64 `[n, C, H, W]` frames with the 1-D Gaussian `g`."""
    c = ta.shape[1]
    # The five local statistics of every channel filtered in one grouped, separable valid
    # convolution, in float32 (CPU kernels for float64 grouped convolutions are slow). Pixels are
    # centred at mid-range first, so that E[x^2] - E[x]^2 does not cancel away float32 precision.
    ca, cb = (ta - DATA_RANGE / 2).float(), (tb - DATA_RANGE / 2).float()
    stats = torch.cat([ca, cb, ca * ca, cb * cb, ca * cb], dim=1)  # [n, 5C, H, W]
    groups = stats.shape[1]
    stats = F.conv2d(stats, g.view(1, 1, 1, -1).expand(groups, 1, 1, SSIM_WIN), groups=groups)
    stats = F.conv2d(stats, g.view(1, 1, -1, 1).expand(groups, 1, SSIM_WIN, 1), groups=groups).double()
    mu_ca, mu_cb, e_aa, e_bb, e_ab = stats.split(c, dim=1)
    var_a = e_aa - mu_ca * mu_ca
    var_b = e_bb - mu_cb * mu_cb
    cov = e_ab - mu_ca * mu_cb
    mu_a, mu_b = mu_ca + DATA_RANGE / 2, mu_cb + DATA_RANGE / 2
    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    c2 = (SSIM_K2 * DATA_RANGE) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
    # Every channel has the same number of valid positions, so one mean equals the mean of channel means.
    return s.mean(dim=(1, 2, 3))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two RGB uint8 frames `[H, W, 3]` (`inf` if identical)."""
    return float(psnr_batch(a[None], b[None])[0])


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two RGB uint8 frames `[H, W, 3]` (module docstring for the definition)."""
    return float(ssim_batch(a[None], b[None])[0])
