"""guided_diffusion/losses.py: the variational term's KL and discretised likelihood against closed forms."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from guided_diffusion.losses import approx_standard_normal_cdf, discretized_gaussian_log_likelihood, normal_kl


def test_normal_kl_equals_torch_distributions_kl():
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
    lv1, lv2 = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, torch.exp(0.5 * lv1)), torch.distributions.Normal(m2, torch.exp(0.5 * lv2))
    )
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), expected, rtol=1e-12, atol=1e-12)


def test_normal_kl_is_zero_for_equal_gaussians_and_broadcasts_python_numbers():
    mean = torch.tensor([0.3, -1.0])
    assert torch.equal(normal_kl(mean, 0.0, mean, 0.0), torch.zeros(2))
    # KL(N(0,1) || N(1,1)) = 1/2
    assert normal_kl(torch.zeros(1), 0.0, 1.0, 0.0).item() == pytest.approx(0.5)


def test_the_approximate_normal_cdf_is_within_2e_4_of_the_exact_one():
    x = torch.linspace(-6, 6, 2001, dtype=torch.float64)
    err = (approx_standard_normal_cdf(x) - torch.from_numpy(norm.cdf(x.numpy()))).abs().max().item()
    assert err < 2e-4


def test_the_discretised_likelihood_is_the_mass_of_the_pixel_bin():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.25, 1.0], dtype=torch.float64)
    means = torch.tensor([-0.9, -0.4, 0.1, 0.3, 0.9], dtype=torch.float64)
    log_scales = torch.full_like(x, math.log(0.1))
    got = discretized_gaussian_log_likelihood(x, means=means, log_scales=log_scales).numpy()
    cdf = lambda v, m: norm.cdf((v - m) / 0.1)  # noqa: E731
    m, v = means.numpy(), x.numpy()
    expected = np.log(cdf(v + 1 / 255, m) - cdf(v - 1 / 255, m))
    expected[0] = np.log(cdf(v[0] + 1 / 255, m[0]))  # the lowest bin takes everything below it
    expected[-1] = np.log(1 - cdf(v[-1] - 1 / 255, m[-1]))  # the highest everything above
    np.testing.assert_allclose(got, expected, rtol=2e-3)


def test_the_bins_of_all_256_levels_sum_to_one():
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    mean, log_scale = torch.full_like(levels, 0.2), torch.full_like(levels, math.log(0.3))
    mass = discretized_gaussian_log_likelihood(levels, means=mean, log_scales=log_scale).exp().sum().item()
    assert mass == pytest.approx(1.0, abs=1e-3)
