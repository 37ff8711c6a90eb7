"""guided_diffusion/nn.py: the building blocks against independent computations."""

import math

import pytest
import torch

from guided_diffusion.nn import GroupNorm32, checkpoint, mean_flat, timestep_embedding, update_ema, zero_module


def test_timestep_embedding_is_cos_then_sin_of_geometric_frequencies():
    t = torch.tensor([0.0, 1.0, 37.5, 999.0])
    emb = timestep_embedding(t, 8)
    freqs = [10000 ** (-i / 4) for i in range(4)]
    expected = torch.tensor([[math.cos(v * f) for f in freqs] + [math.sin(v * f) for f in freqs] for v in t.tolist()])
    torch.testing.assert_close(emb, expected, rtol=1e-5, atol=1e-5)
    assert timestep_embedding(t, 7).shape == (4, 7) and torch.all(timestep_embedding(t, 7)[:, -1] == 0)


def test_update_ema_moves_the_target_toward_the_source_by_one_minus_rate():
    target, source = [torch.ones(3), torch.zeros(2)], [torch.full((3,), 3.0), torch.ones(2)]
    update_ema(target, source, rate=0.9)
    torch.testing.assert_close(target[0], torch.full((3,), 0.9 * 1 + 0.1 * 3))
    torch.testing.assert_close(target[1], torch.full((2,), 0.1))


def test_groupnorm32_normalises_in_float32_and_returns_the_input_dtype():
    torch.manual_seed(0)
    norm = GroupNorm32(4, 8)
    x = torch.randn(2, 8, 5, 5) * 30 + 100
    expected = torch.nn.functional.group_norm(x, 4, norm.weight, norm.bias, norm.eps)
    out = norm(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    # The statistics are float32 ones: the only error left is bfloat16's rounding of input and output.
    torch.testing.assert_close(out.float(), expected, rtol=0.02, atol=0.05)
    groups = norm(x).reshape(2, 4, -1)
    torch.testing.assert_close(groups.mean(-1), torch.zeros(2, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(groups.std(-1, unbiased=False), torch.ones(2, 4), atol=1e-3, rtol=0)


def test_zero_module_zeroes_every_parameter():
    conv = zero_module(torch.nn.Conv2d(3, 4, 3))
    assert all(torch.count_nonzero(p) == 0 for p in conv.parameters())


def test_mean_flat_keeps_the_batch_dimension():
    x = torch.arange(24.0).reshape(2, 3, 4)
    torch.testing.assert_close(mean_flat(x), torch.tensor([5.5, 17.5]))


@pytest.mark.parametrize("flag", [False, True])
def test_checkpoint_gives_the_same_values_and_gradients(flag):
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(3, 4, requires_grad=True)
    out = checkpoint(lambda v: torch.tanh(layer(v)), (x,), flag)
    out.sum().backward()
    grad = x.grad.clone()
    x.grad = None
    torch.tanh(layer(x)).sum().backward()
    torch.testing.assert_close(out, torch.tanh(layer(x)))
    torch.testing.assert_close(grad, x.grad)
