"""The fast inference path gives the float32 result; precision choices and their errors."""

import json
import os

import pytest
import torch

from common.errors import Diff2LipError
from guided_diffusion.nn import GroupNorm32
from guided_diffusion.precision import (
    PROBE_FRAMES,
    PROBE_MARGIN,
    autocast,
    choose_precision,
    cpu_bf16_units,
    fast_cpu_precision,
    prepare_for_inference,
    prepare_with_precision,
    probe_choice,
    probe_frames,
    probe_key,
    resolve_precision,
)
from guided_diffusion.unet import AttentionBlock
from helpers import randomize_zero_init


def test_resolve_precision_follows_the_released_use_fp16_meaning():
    assert resolve_precision(None, torch.device("cpu")) == "fp32"
    assert resolve_precision(None, torch.device("cpu"), use_fp16=True) == "bf16"
    assert resolve_precision(None, torch.device("cuda"), use_fp16=True) == "fp16"
    assert resolve_precision("bf16", torch.device("cpu"), use_fp16=True) == "bf16"


def test_resolve_precision_errors_name_the_flag():
    with pytest.raises(Diff2LipError, match="--precision fp16 needs a GPU"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(Diff2LipError, match="--precision 'half'"):
        resolve_precision("half", torch.device("cpu"))


@pytest.mark.parametrize("shape", [(3, 64, 16, 16), (2, 128, 8, 8), (4, 32, 5, 7)])
def test_bf16_groupnorm_equals_upcast_computation(shape):
    torch.manual_seed(0)
    norm = GroupNorm32(32, shape[1])
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(shape).bfloat16().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fast = norm(x)
        upcast = torch.nn.functional.group_norm(x.float(), 32, norm.weight, norm.bias, norm.eps).bfloat16()
    assert fast.dtype == torch.bfloat16
    # Both round the same float32 result; allow one bfloat16 step for accumulation order.
    assert ((fast.float() - upcast.float()).abs() <= upcast.float().abs() * 2**-7 + 1e-6).all()


@pytest.mark.parametrize("new_order", [False, True])
def test_fused_attention_equals_einsum_in_both_orders(new_order):
    torch.manual_seed(0)
    block = AttentionBlock(128, num_head_channels=32, use_new_attention_order=new_order)
    randomize_zero_init(block)
    x = torch.randn(2, 128, 8, 8)
    with torch.no_grad():
        block.attention.fused = False
        reference = block(x)
        block.attention.fused = True
        fused = block(x)
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)


def test_bf16_channels_last_path_is_close_to_float32(tiny_model_and_diffusion):
    model, _ = tiny_model_and_diffusion
    torch.manual_seed(3)
    x = torch.randn(4, 3, 32, 32)
    mask = torch.zeros(4, 1, 32, 32)
    mask[:, :, 16:] = 1
    kw = dict(cond_img=torch.randn_like(x), mask=mask, ref_img=torch.randn_like(x), indiv_mels=torch.randn(4, 80, 16))
    t = torch.tensor([10, 200, 500, 900])
    with torch.no_grad():
        reference = model(x, t, **kw)[:, :3]
        fast = prepare_for_inference(model, "cpu", "bf16", channels_last=True)
        with autocast("cpu", "bf16"):
            cached = fast.precompute_conditioning(kw)
            out = fast(x.contiguous(memory_format=torch.channels_last), t, **cached)[:, :3]
    assert out.dtype == torch.float32  # the output head runs in float32
    rel = ((out - reference).norm() / reference.norm()).item()
    assert 0 < rel < 0.02


def test_autocast_fp16_is_float16_autocast_only_in_training():
    """fp16 at inference: the torso was converted, no autocast; in training: float16 autocast."""
    for precision, training, dtype in [("bf16", False, torch.bfloat16), ("bf16", True, torch.bfloat16),
                                       ("fp16", True, torch.float16)]:
        with autocast("cpu", precision, fp16_autocast=training):
            assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == dtype
    for precision, training in [("fp16", False), ("fp32", False), ("fp32", True)]:
        with autocast("cpu", precision, fp16_autocast=training):
            assert not torch.is_autocast_enabled("cpu")


def test_auto_keeps_the_released_use_fp16_meaning_and_an_explicit_precision_wins(tiny_model_and_diffusion):
    model, _ = tiny_model_and_diffusion
    assert choose_precision("auto", "cpu", False, model, 32) == ("fp32", "--use_fp16 False")
    assert choose_precision("auto", "cuda", True, model, 32) == ("fp16", "--use_fp16 True on a GPU")
    assert choose_precision("bf16", "cpu", False, model, 32) == ("bf16", "--precision bf16")
    assert choose_precision("fp32", "cpu", True, model, 32) == ("fp32", "--precision fp32")
    with pytest.raises(Diff2LipError, match="--precision fp16 needs a GPU"):
        choose_precision("fp16", "cpu", True, model, 32)


def test_probe_picks_bf16_only_when_clearly_faster():
    assert probe_choice(1.0, 0.5) == "bf16"
    assert probe_choice(1.0, 1.0 / PROBE_MARGIN) == "bf16"
    assert probe_choice(1.0, 0.95) == "fp32"  # within the noise margin: float32 is never slower
    assert probe_choice(1.0, 5.0) == "fp32"  # AVX-512 bf16 without AMX, as measured on an AMD EPYC


def test_cpu_units_decide_without_a_probe(tiny_model_and_diffusion, tmp_path):
    model, _ = tiny_model_and_diffusion
    cache = str(tmp_path / "probe.json")
    assert fast_cpu_precision(model, 32, cache, units="amx")[0] == "bf16"
    assert fast_cpu_precision(model, 32, cache, units="none")[0] == "fp32"
    assert not os.path.exists(cache)  # nothing measured, nothing cached


def test_probe_measures_once_then_follows_its_cache(tiny_model_and_diffusion, tmp_path):
    model, _ = tiny_model_and_diffusion
    model = prepare_for_inference(model, "cpu", "fp32")
    cache = str(tmp_path / "probe.json")
    chosen, why = fast_cpu_precision(model, 32, cache, units="bf16")
    stored = json.load(open(cache))
    key = probe_key(model, 32)
    assert list(stored) == [key] and all(s > 0 for s in stored[key])
    assert chosen == probe_choice(*stored[key]) and "measured now" in why
    # The cached figures decide from now on: a file saying bf16 is 5x slower gives fp32, 2x faster bf16.
    json.dump({key: [1.0, 5.0]}, open(cache, "w"))
    chosen, why = fast_cpu_precision(model, 32, cache, units="bf16")
    assert chosen == "fp32" and "0.20x float32's speed" in why and "cached in" in why
    json.dump({key: [1.0, 0.5]}, open(cache, "w"))
    assert fast_cpu_precision(model, 32, cache, units="bf16")[0] == "bf16"
    # Another network shape is measured anew; a damaged file is measured again, not an error.
    assert probe_key(model, 64) != key
    # A run of one frame per call is probed at one frame: a key of its own.
    choose_precision("auto", "cpu", True, model, 32, cache, batch_size=1)
    assert probe_key(model, 32, frames=1) in json.load(open(cache)) or cpu_bf16_units() != "bf16"
    assert probe_frames(model, 32, 2) == 2 and PROBE_FRAMES <= probe_frames(model, 32, 64) <= 64
    open(cache, "w").write("{not json")
    assert "measured now" in fast_cpu_precision(model, 32, cache, units="bf16")[1]
    assert key in json.load(open(cache))


def test_prepare_with_precision_converts_only_for_fp16(tiny_model_and_diffusion, tmp_path):
    model, _ = tiny_model_and_diffusion
    prepared, precision, why = prepare_with_precision(model, "cpu", "auto", False, 32, cache_path=str(tmp_path / "p.json"))
    assert (precision, why) == ("fp32", "--use_fp16 False")
    assert all(p.dtype == torch.float32 for p in prepared.parameters())
