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


@pytest.fixture
def one_thread():
    """One intra-op thread: on a busy 2-core machine two threads are many times slower, not faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
