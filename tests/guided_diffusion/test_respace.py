"""guided_diffusion/respace.py: the kept timesteps of a respaced process and the released ddimN."""

import numpy as np
import pytest
import torch

from common.errors import Diff2LipError
from guided_diffusion.respace import ddim_strides, nearest_ddim_count, space_timesteps
from guided_diffusion.script_util import create_gaussian_diffusion


def test_ddim25_keeps_steps_0_40_to_960_and_calls_model_with_original_indices():
    assert sorted(space_timesteps(1000, "ddim25")) == list(range(0, 1000, 40))
    diffusion = create_gaussian_diffusion(timestep_respacing="ddim25")
    assert diffusion.timestep_map == list(range(0, 1000, 40))
    base = create_gaussian_diffusion()
    # alpha_bar at each kept step is the base process's
    np.testing.assert_allclose(diffusion.alphas_cumprod, base.alphas_cumprod[::40], rtol=1e-12)

    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, t, **kw):
            seen.append(int(t[0]))
            return torch.zeros(x.shape[0], 6, *x.shape[2:])

    diffusion.ddim_sample_loop(Recorder(), (1, 3, 4, 4), noise=torch.randn(1, 3, 4, 4))
    assert seen == list(range(960, -1, -40))


@pytest.mark.parametrize("spec, count", [("10", 10), ("10,15,20", 45), ("ddim50", 50), ("1000", 1000)])
def test_space_timesteps_counts(spec, count):
    steps = space_timesteps(1000, spec)
    assert len(steps) == count and min(steps) == 0 and max(steps) <= 999


def test_space_timesteps_rejects_bad_specs():
    with pytest.raises(Diff2LipError):
        space_timesteps(1000, "ddim7000")
    with pytest.raises(Diff2LipError):
        space_timesteps(1000, "fast")


def test_ddim_strides_give_exactly_the_counts_they_name():
    strides = ddim_strides(1000)
    assert strides[25] == 40 and strides[10] == 100 and strides[2] == 500
    for count, stride in strides.items():
        assert len(range(0, 1000, stride)) == count
    assert strides[1000] == 1 and strides[500] == 2
    assert 37 not in strides  # no stride s gives len(range(0, 1000, s)) == 37 (27 gives 38, 28 gives 36)


def test_an_unreachable_ddim_count_names_the_nearest_reachable_one():
    assert nearest_ddim_count(1000, 37) == 36  # 36 and 38 are as near: the smaller wins
    assert nearest_ddim_count(1000, 25) == 25
    with pytest.raises(Diff2LipError, match="ddim37.*36"):
        space_timesteps(1000, "ddim37")


def test_ddim1_is_one_pass_at_ddim2s_top_step_and_returns_its_x0():
    """The one-step student's process: the model is called once, at timestep 500 (ddim2's top),
    and DDIM's step from there lands on the predicted clean frame itself."""
    assert space_timesteps(1000, "ddim1") == {500} and max(space_timesteps(1000, "ddim2")) == 500
    assert space_timesteps(999, "ddim1") == {max(space_timesteps(999, "ddim2"))}
    diffusion = create_gaussian_diffusion(timestep_respacing="ddim1", predict_xstart=True, learn_sigma=True)
    assert diffusion.num_timesteps == 1 and diffusion.timestep_map == [500]
    np.testing.assert_allclose(diffusion.alphas_cumprod, create_gaussian_diffusion().alphas_cumprod[[500]], rtol=1e-12)
    assert np.isfinite(diffusion.posterior_log_variance_clipped).all()
    x0 = torch.rand(2, 3, 4, 4) * 1.6 - 0.8
    seen = []

    class CleanFrame(torch.nn.Module):
        def forward(self, x, t, **kw):
            seen.append(t.tolist())
            return torch.cat([x0, torch.zeros_like(x0)], 1)

    for sample in (diffusion.ddim_sample_loop(CleanFrame(), x0.shape, noise=torch.randn(x0.shape), device="cpu"),
                   diffusion.p_sample_loop(CleanFrame(), x0.shape, noise=torch.randn(x0.shape), device="cpu")):
        torch.testing.assert_close(sample, x0, rtol=0, atol=1e-6)
    assert seen == [[500, 500], [500, 500]]


def test_the_multi_step_posterior_is_unchanged_by_the_one_step_case():
    """A process of more than one step clips the log variance at t = 0 to the posterior's at t = 1,
    as the released code does."""
    diffusion = create_gaussian_diffusion(timestep_respacing="ddim25")
    assert diffusion.posterior_log_variance_clipped[0] == np.log(diffusion.posterior_variance[1])
    np.testing.assert_array_equal(diffusion.posterior_log_variance_clipped[1:], np.log(diffusion.posterior_variance[1:]))
