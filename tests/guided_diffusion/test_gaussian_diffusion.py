"""The diffusion process against closed forms, and the samplers' invariants."""

import numpy as np
import pytest
import torch

from guided_diffusion import gaussian_diffusion as gd
from guided_diffusion.script_util import create_gaussian_diffusion


def test_linear_schedule_matches_closed_form():
    betas = gd.get_named_beta_schedule("linear", 1000)
    i = np.arange(1000)
    np.testing.assert_allclose(betas, 1e-4 + i * (0.02 - 1e-4) / 999, rtol=0, atol=1e-15)
    # other T keep the 1000-step endpoints scaled by 1000/T
    b500 = gd.get_named_beta_schedule("linear", 500)
    assert b500[0] == pytest.approx(2e-4) and b500[-1] == pytest.approx(0.04)


def test_cosine_schedule_matches_alpha_bar():
    T = 1000
    betas = gd.get_named_beta_schedule("cosine", T)
    abar = np.cumprod(1 - betas)
    f = lambda t: np.cos((t / T + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    expected = f(np.arange(1, T + 1)) / f(0)
    np.testing.assert_allclose(abar[:900], expected[:900], rtol=1e-6)  # max_beta clips only the tail
    with pytest.raises(ValueError):
        gd.get_named_beta_schedule("quadratic", 10)


def test_posterior_matches_bayes_rule():
    diffusion = create_gaussian_diffusion()
    torch.manual_seed(0)
    x0 = torch.randn(4, 3, 2, 2)
    xt = torch.randn(4, 3, 2, 2)
    t = torch.tensor([1, 10, 500, 999])
    mean, var, logvar = diffusion.q_posterior_mean_variance(x0, xt, t)
    betas = gd.get_named_beta_schedule("linear", 1000)
    abar = np.cumprod(1 - betas)
    for i, ti in enumerate(t.tolist()):
        alpha, beta, abar_prev = 1 - betas[ti], betas[ti], abar[ti - 1]
        # product of q(x_t | x_{t-1}) and q(x_{t-1} | x_0) as Gaussians in x_{t-1}
        precision = alpha / beta + 1 / (1 - abar_prev)
        exp_var = 1 / precision
        exp_mean = exp_var * (np.sqrt(alpha) * xt[i].double() / beta + np.sqrt(abar_prev) * x0[i].double() / (1 - abar_prev))
        torch.testing.assert_close(mean[i].double(), exp_mean, rtol=1e-5, atol=1e-5)
        assert var[i, 0, 0, 0].item() == pytest.approx(exp_var, rel=1e-5)
        assert logvar[i, 0, 0, 0].item() == pytest.approx(np.log(exp_var), rel=1e-5)


def test_q_sample_is_equation_2():
    diffusion = create_gaussian_diffusion()
    x0, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    t = torch.tensor([0, 700])
    abar = torch.tensor(np.cumprod(1 - gd.get_named_beta_schedule("linear", 1000))[[0, 700]], dtype=torch.float32)
    expected = abar.sqrt()[:, None, None, None] * x0 + (1 - abar).sqrt()[:, None, None, None] * eps
    torch.testing.assert_close(diffusion.q_sample(x0, t, noise=eps), expected)


class OracleEps(torch.nn.Module):
    """Returns the exact noise that turns the known x0 into x_t (variance channels: 0)."""

    def __init__(self, x0):
        super().__init__()
        self.x0 = x0
        self.abar = torch.tensor(np.cumprod(1 - gd.get_named_beta_schedule("linear", 1000)), dtype=torch.float64)
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t, **kw):
        a = self.abar[t].view(-1, 1, 1, 1)
        eps = (x.double() - a.sqrt() * self.x0.double()) / (1 - a).sqrt()
        return torch.cat([eps.float(), torch.zeros_like(x)], dim=1)


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_with_exact_noise_recovers_x0(eta):
    torch.manual_seed(0)
    x0 = torch.rand(2, 3, 8, 8) * 1.8 - 0.9
    diffusion = create_gaussian_diffusion(timestep_respacing="ddim25")
    sample = diffusion.ddim_sample_loop(OracleEps(x0), x0.shape, noise=torch.randn_like(x0), eta=eta)
    torch.testing.assert_close(sample, x0, atol=1e-4, rtol=0)


def test_ddpm_with_exact_noise_recovers_x0_and_calls_back_every_step():
    torch.manual_seed(0)
    x0 = torch.rand(1, 3, 8, 8) * 1.8 - 0.9
    diffusion = create_gaussian_diffusion(timestep_respacing="10")
    calls = []
    sample = diffusion.p_sample_loop(
        OracleEps(x0), x0.shape, callback=lambda i, t, out: calls.append((i, int(t[0]))), progress=True
    )
    assert [i for i, _ in calls] == list(range(10))
    assert [t for _, t in calls] == list(range(9, -1, -1))  # respaced indices, descending
    # The last step at t=0 adds no noise and its mean is x0 up to the posterior's coefficients.
    torch.testing.assert_close(sample, x0, atol=1e-3, rtol=0)


def test_ddim_eta0_is_deterministic_and_draws_no_random_numbers(tiny_model_and_diffusion):
    model, _ = tiny_model_and_diffusion
    diffusion = create_gaussian_diffusion(timestep_respacing="ddim5")
    noise = torch.randn(2, 3, 32, 32)
    kw = dict(cond_img=noise, mask=torch.ones(2, 1, 32, 32), ref_img=torch.randn(2, 3, 32, 32), indiv_mels=torch.randn(2, 80, 16))
    torch.manual_seed(5)
    a = diffusion.ddim_sample_loop(model, noise.shape, noise=noise, model_kwargs=kw)
    after_a = torch.randn(1)
    torch.manual_seed(5)
    b = diffusion.ddim_sample_loop(model, noise.shape, noise=noise, model_kwargs=kw)
    after_b = torch.randn(1)
    assert torch.equal(a, b)
    assert torch.equal(after_a, after_b)
    assert a.abs().max() <= 1.0 + 1e-6


def test_training_losses_mse_counts_only_inside_mask_and_returns_x0():
    diffusion = create_gaussian_diffusion()
    torch.manual_seed(0)
    x0 = torch.randn(2, 3, 8, 8)
    noise = torch.randn_like(x0)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 4:] = 1
    t = torch.tensor([100, 100])
    pred = torch.randn(2, 6, 8, 8)

    terms = diffusion.training_losses(lambda x, ts, **kw: pred, x0, t, noise=noise, loss_mask=mask)
    err = (pred[:, :3] - noise) ** 2
    expected = err[:, :, 4:].mean(dim=(1, 2, 3))
    torch.testing.assert_close(terms["mse"], expected)
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])

    pred_outside = pred.clone()
    pred_outside[:, :3, :4] += 5.0  # change the prediction only where the mask is 0
    terms2 = diffusion.training_losses(lambda x, ts, **kw: pred_outside, x0, t, noise=noise, loss_mask=mask)
    torch.testing.assert_close(terms2["mse"], terms["mse"])
    torch.testing.assert_close(terms2["vb"], terms["vb"])

    abar = float(np.cumprod(1 - gd.get_named_beta_schedule("linear", 1000))[100])
    x_t = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * noise
    torch.testing.assert_close(terms["x_t"], x_t)
    torch.testing.assert_close(terms["pred_xstart"], (x_t - np.sqrt(1 - abar) * pred[:, :3]) / np.sqrt(abar), atol=1e-4, rtol=1e-4)


def test_variational_term_trains_only_the_variance_channels():
    diffusion = create_gaussian_diffusion()
    x0 = torch.randn(2, 3, 8, 8)
    out = torch.randn(2, 6, 8, 8, requires_grad=True)
    terms = diffusion.training_losses(lambda x, ts, **kw: out, x0, torch.tensor([0, 500]))
    terms["vb"].sum().backward()
    assert out.grad[:, :3].abs().max() == 0
    assert out.grad[:, 3:].abs().max() > 0
    assert terms["vb"].shape == (2,) and torch.isfinite(terms["vb"]).all()


def test_learned_range_variance_interpolates_between_posterior_and_beta():
    diffusion = create_gaussian_diffusion()
    x = torch.randn(1, 3, 4, 4)
    t = torch.tensor([300])
    for v, expected in ((-1.0, diffusion.posterior_log_variance_clipped[300]), (1.0, np.log(diffusion.betas[300]))):
        out = diffusion.p_mean_variance(
            lambda x, ts, **kw: torch.cat([torch.zeros_like(x), torch.full_like(x, v)], 1), x, t
        )
        assert out["log_variance"].flatten()[0].item() == pytest.approx(expected, rel=1e-5)
