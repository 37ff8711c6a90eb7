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
