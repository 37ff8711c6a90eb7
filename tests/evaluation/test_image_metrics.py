"""PSNR / SSIM against scikit-image's implementations with the documented settings."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dataset.synthetic import draw_face
from evaluation.image_metrics import psnr, psnr_batch, ssim, ssim_batch


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def sk_ssim(a, b):
    return structural_similarity(
        a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )


def frame_pairs(n=4, h=52, w=45, noise=12.0, seed=0):
    """Drawn faces (edges, flat areas) and noisy copies of them: `[n, h, w, 3]` uint8 twice."""
    rng = np.random.default_rng(seed)
    real = np.stack([draw_face(i, h, w, seed) for i in range(n)])
    gen = np.clip(real + rng.normal(0, noise, real.shape) + 5 * np.arange(n)[:, None, None, None], 0, 255)
    return real, gen.astype(np.uint8)


@pytest.mark.parametrize("hw", [(52, 45), (11, 11), (96, 64)])
def test_match_scikit_image(hw):
    real, gen = frame_pairs(4, *hw)
    want_ssim = np.array([sk_ssim(r, g) for r, g in zip(real, gen)])
    want_psnr = np.array([peak_signal_noise_ratio(r, g, data_range=255) for r, g in zip(real, gen)])
    got_ssim = ssim_batch(real, gen).numpy()
    got_psnr = psnr_batch(real, gen).numpy()
    assert got_ssim.shape == got_psnr.shape == (4,)
    # SSIM filters in float32 (centred pixels, for speed): agreement ~1e-7, far inside the 1e-4
    # the metric needs (it is reported to 2 decimals). PSNR is float64 throughout.
    np.testing.assert_allclose(got_ssim, want_ssim, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got_psnr, want_psnr, rtol=0, atol=1e-9)
    assert abs(ssim(real[1], gen[1]) - want_ssim[1]) < 1e-6
    assert abs(psnr(real[1], gen[1]) - want_psnr[1]) < 1e-9
    assert 0.0 < want_ssim.min() < want_ssim.max() < 1.0  # the cases are not degenerate


def test_torch_input_and_known_psnr():
    a = np.full((2, 16, 16, 3), 100, np.uint8)
    b = a.copy()
    b[0] += 5  # MSE 25 -> 10 log10(65025 / 25) dB
    b[1, :8] += 10  # MSE 50 over half of the values equal to 100 -> 10 log10(65025 / 50)
    got = psnr_batch(torch.from_numpy(a), torch.from_numpy(b))
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), [10 * math.log10(65025 / 25), 10 * math.log10(65025 / 50)], atol=1e-12)


def test_identical_frames():
    real, gen = frame_pairs(3)
    gen[1] = real[1]
    p = psnr_batch(real, gen).numpy()
    assert p[1] == math.inf and np.isfinite(p[[0, 2]]).all()
    assert psnr(real[0], real[0]) == math.inf
    s = ssim_batch(real, gen).numpy()
    assert abs(s[1] - 1.0) < 1e-12 and s[0] < 1.0
    assert abs(ssim(real[2], real[2]) - 1.0) < 1e-12


def test_bad_inputs():
    a = np.zeros((1, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        psnr_batch(a.astype(np.float32), a)
    with pytest.raises(ValueError, match="one shape"):
        ssim_batch(a, np.zeros((1, 16, 17, 3), np.uint8))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim_batch(np.zeros((1, 10, 16, 3), np.uint8), np.zeros((1, 10, 16, 3), np.uint8))


def test_a_batch_of_several_steps_scores_each_frame_as_alone():
    """224 x 224 frames go SSIM_CHUNK_PIXELS // 224^2 = 5 at a time: 12 frames take three steps,
    the last one short, and each frame's value is the one it has alone and scikit-image's."""
    real, gen = frame_pairs(12, 224, 224)
    got = ssim_batch(real, gen).numpy()
    assert got.shape == (12,)
    np.testing.assert_allclose(got, [ssim(r, g) for r, g in zip(real, gen)], rtol=0, atol=1e-12)
    # float32 filtering over these larger frames: about 1e-6 from scikit-image, still far inside 1e-4.
    np.testing.assert_allclose(got[[0, 4, 5, 11]], [sk_ssim(real[k], gen[k]) for k in (0, 4, 5, 11)], rtol=0, atol=3e-6)
