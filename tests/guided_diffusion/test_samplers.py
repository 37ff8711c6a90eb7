"""The fast samplers against closed forms: DPM-Solver++ on Gaussian data (whose probability-flow
ODE is solved exactly), order 1 = the released DDIM, and deep-feature reuse."""

import numpy as np
import pytest
import torch

from guided_diffusion.samplers import Denoiser, dpm_solver_pp, solver_sample, solver_timesteps
from guided_diffusion.script_util import create_gaussian_diffusion, tfg_create_model_and_diffusion
from guided_diffusion.tfg_data_util import tfg_process_batch
from guided_diffusion.unet import DeepFeatureCache
from helpers import TINY_FLAGS, randomize_zero_init

ABAR = create_gaussian_diffusion().alphas_cumprod  # the released linear schedule, T = 1000


def test_trailing_and_ddim_spacings():
    assert solver_timesteps(1000, 8, "trailing") == [999, 874, 749, 624, 499, 374, 249, 124]
    assert solver_timesteps(1000, 1, "trailing") == [999]
    assert solver_timesteps(1000, 25) == list(range(960, -1, -40))  # ddim, the default
    assert solver_timesteps(1000, 8) == list(range(875, -1, -125))
    for n in (1, 2, 3, 7, 20):
        steps = solver_timesteps(1000, n, "trailing")
        assert len(steps) == n and steps[0] == 999 and all(a > b for a, b in zip(steps, steps[1:]))
    with pytest.raises(ValueError):
        solver_timesteps(1000, 0)
    with pytest.raises(ValueError):
        solver_timesteps(1000, 4, "log")


class GaussianData:
    """Data x0 ~ N(mu, s^2) per pixel: the exact denoiser and the exact probability-flow ODE."""

    def __init__(self, mu, s):
        self.mu, self.s = mu, s
        self.calls = 0

    def spread(self, t):
        return np.sqrt(ABAR[t] * self.s**2 + 1 - ABAR[t])

    def denoise(self, x, t):
        self.calls += 1
        a = np.sqrt(ABAR[t])
        return self.mu + a * self.s**2 / self.spread(t) ** 2 * (x - a * self.mu)

    def exact(self, x_T, t_first, t_last):
        """D(x_{t_last}) where x_{t_last} is the exact ODE solution from x_T at t_first:
        (x_t - alpha_t mu) / spread_t is constant along the probability-flow ODE."""
        z = (x_T - np.sqrt(ABAR[t_first]) * self.mu) / self.spread(t_first)
        x_last = np.sqrt(ABAR[t_last]) * self.mu + self.spread(t_last) * z
        return self.denoise(x_last, t_last)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_constant_prediction_is_recovered_exactly(order):
    target = torch.linspace(-1, 1, 48).reshape(1, 3, 4, 4)
    out = dpm_solver_pp(lambda x, t: target, torch.randn(1, 3, 4, 4), solver_timesteps(1000, 5, "trailing"), ABAR, order)
    torch.testing.assert_close(out, target, rtol=0, atol=0)


def test_solver_converges_to_the_exact_ode_solution_with_its_order():
    data = GaussianData(mu=0.3, s=0.5)
    x_T = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errors = {}
    for order in (1, 2, 3):
        for stride in (90, 30, 15):  # 11, 31 and 61 evaluations from t = 999 to t = 99
            steps = list(range(999, 98, -stride))
            out = dpm_solver_pp(data.denoise, x_T.clone(), steps, ABAR, order)
            errors[order, len(steps)] = (out - data.exact(x_T, 999, 99)).abs().max().item()
    # Halving the step: order 1 (DDIM) halves its error, 3M divides it by 8, 2M by at least 4.
    assert 1.8 < errors[1, 31] / errors[1, 61] < 2.2
    assert errors[2, 31] / errors[2, 61] > 4.0
    assert 7.0 < errors[3, 31] / errors[3, 61] < 9.0
    assert max(errors[2, 61], errors[3, 61]) < errors[1, 61] / 100
    assert errors[2, 11] < errors[1, 11] * 0.8  # at 11 steps too, with its order-1 final update


def test_few_steps_use_order_one_into_the_last_evaluation():
    """Below 15 steps the update into the last evaluation is order 1 (lower_order_final): with
    3 evaluations every update of 2M and 3M is order 1 (= DDIM); with 4 the middle one is not."""
    data = GaussianData(mu=0.3, s=0.5)
    x_T = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for n, same in ((3, True), (4, False)):
        steps = solver_timesteps(1000, n, "trailing")
        ddim = dpm_solver_pp(data.denoise, x_T.clone(), steps, ABAR, 1)
        for order in (2, 3):
            out = dpm_solver_pp(data.denoise, x_T.clone(), steps, ABAR, order)
            assert torch.equal(out, ddim) == same


def test_one_network_call_per_step_and_no_random_numbers():
    data = GaussianData(mu=0.0, s=0.7)
    state = torch.random.get_rng_state()
    dpm_solver_pp(data.denoise, torch.ones(1, 3, 2, 2, dtype=torch.float64), solver_timesteps(1000, 7), ABAR, 2)
    assert data.calls == 7
    assert torch.equal(torch.random.get_rng_state(), state)


def _tiny(predict_xstart: bool, learn_sigma: bool):
    torch.manual_seed(0)
    model, _ = tfg_create_model_and_diffusion(**TINY_FLAGS, predict_xstart=predict_xstart, learn_sigma=learn_sigma)
    randomize_zero_init(model, std=0.05)
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(1, 4, 3, 32, 32, generator=g) * 2 - 1
    batch = tfg_process_batch(
        frames, ref_frames=frames.flip(1), mels=torch.randn(1, 4, 80, 16, generator=g), noise=torch.randn(1, 3, 32, 32, generator=g)
    )
    return model.eval(), batch


@pytest.mark.parametrize("predict_xstart, learn_sigma", [(False, True), (True, False)])
def test_order_one_on_ddim_timesteps_is_the_released_ddim(predict_xstart, learn_sigma, one_thread):
    model, batch = _tiny(predict_xstart, learn_sigma)
    flags = dict(predict_xstart=predict_xstart, learn_sigma=learn_sigma)
    released = create_gaussian_diffusion(timestep_respacing="ddim10", **flags)
    shape = tuple(batch.x_start.shape)
    with torch.no_grad():
        expected = released.ddim_sample_loop(model, shape, noise=batch.noise, model_kwargs=batch.model_kwargs)
    out = solver_sample(released, model, batch.noise, batch.model_kwargs, solver="dpm++1", steps=10, spacing="ddim")
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)  # float32 arithmetic in another order
    # The solver reads the full schedule from a respaced diffusion: a plain one gives the same frames.
    plain = create_gaussian_diffusion(**flags)
    again = solver_sample(plain, model, batch.noise, batch.model_kwargs, solver="dpm++1", steps=10, spacing="ddim")
    torch.testing.assert_close(again, out, rtol=0, atol=0)


def test_denoiser_reads_the_noise_channels_of_a_learned_sigma_network(one_thread):
    model, batch = _tiny(False, True)
    diffusion = create_gaussian_diffusion()
    x = torch.randn_like(batch.x_start)
    t = 500
    with torch.no_grad():
        out = model(x, torch.full((x.shape[0],), t), **batch.model_kwargs)
        x0 = Denoiser.for_diffusion(diffusion, model, batch.model_kwargs, clip=False)(x, t)
    eps = out[:, :3]
    expected = (x - np.sqrt(1 - ABAR[t]) * eps) / np.sqrt(ABAR[t])
    torch.testing.assert_close(x0, expected, rtol=1e-5, atol=1e-5)


def test_feature_reuse_with_unchanged_inputs_gives_the_full_output(one_thread):
    """A reusing call on the same inputs as the full call that filled the cache must give the
    same output: this pins the wiring of the shallow blocks to the cached deep features."""
    model, batch = _tiny(False, True)
    x = torch.randn_like(batch.x_start)
    t = torch.full((x.shape[0],), 300)
    depth_max = len(model.input_blocks)
    for depth in (1, 2, depth_max):
        cache = DeepFeatureCache(interval=2, depth=depth)
        with torch.no_grad():
            full = model(x, t, **batch.model_kwargs, feature_cache=cache)
            reused = model(x, t, **batch.model_kwargs, feature_cache=cache)
            plain = model(x, t, **batch.model_kwargs)
        assert cache.calls == 2
        torch.testing.assert_close(full, plain, rtol=0, atol=0)
        torch.testing.assert_close(reused, full, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        model(x, t, **batch.model_kwargs, feature_cache=DeepFeatureCache(2, depth_max + 1))


def test_feature_reuse_skips_the_deep_blocks_on_the_cached_steps(one_thread):
    model, batch = _tiny(False, True)
    middle_calls = []
    model.middle_block.register_forward_hook(lambda *_: middle_calls.append(1))
    cache = DeepFeatureCache(interval=3, depth=2, steps=9)
    out = solver_sample(
        create_gaussian_diffusion(), model, batch.noise, {**batch.model_kwargs, "feature_cache": cache}, steps=9
    )
    assert cache.calls == 9 and len(middle_calls) == 4  # full passes at steps 0, 3, 6 and the last, 8
    exact = solver_sample(create_gaussian_diffusion(), model, batch.noise, batch.model_kwargs, steps=9)
    assert 0 < (out - exact).abs().mean() < 0.05  # reused steps differ, slightly


def test_solver_rejects_bad_arguments():
    with pytest.raises(ValueError):
        dpm_solver_pp(lambda x, t: x, torch.zeros(1), [10, 20], ABAR)
    with pytest.raises(ValueError):
        dpm_solver_pp(lambda x, t: x, torch.zeros(1), [20, 10], ABAR, order=4)
    with pytest.raises(ValueError):
        DeepFeatureCache(interval=0, depth=2)
