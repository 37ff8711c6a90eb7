"""Shared fixtures: tiny TFG networks (same code as the released one, fewer channels)."""

import pytest
import torch

from helpers import TINY_FLAGS, randomize_zero_init


@pytest.fixture
def tiny_flags():
    return dict(TINY_FLAGS)


@pytest.fixture
def tiny_model_and_diffusion():
    from guided_diffusion.script_util import tfg_create_model_and_diffusion

    torch.manual_seed(0)
    model, diffusion = tfg_create_model_and_diffusion(**TINY_FLAGS)
    randomize_zero_init(model)
    return model.eval(), diffusion
