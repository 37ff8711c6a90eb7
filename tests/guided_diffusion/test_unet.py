"""The TFG network: released layout, numerics of its parts, loading and saving."""

import math

import pytest
import torch

from common.errors import CheckpointError
from guided_diffusion.checkpoint_format import load_model_weights
from guided_diffusion.nn import timestep_embedding
from guided_diffusion.script_util import tfg_create_model_and_diffusion
from guided_diffusion.unet import AttentionBlock, AudioEncoder
from helpers import TINY_FLAGS, randomize_zero_init, read_manifest

MANIFEST = "diff2lip_official_tfgmodel.tsv"


@pytest.fixture(scope="module")
def official_model():
    torch.manual_seed(0)
    model, _ = tfg_create_model_and_diffusion()
    return model.eval()


def test_official_flags_give_exactly_the_released_tensor_names_and_shapes_in_order(official_model):
    manifest = read_manifest(MANIFEST)
    ours = [(k, tuple(v.shape)) for k, v in official_model.state_dict().items()]
    assert len(manifest) == 632
    assert ours == manifest
    assert sum(math.prod(s) for _, s in ours) == 101_670_630


def test_state_dict_built_from_manifest_loads_with_weights_only(official_model, tmp_path):
    g = torch.Generator().manual_seed(1)
    state = {name: torch.randn(shape, generator=g) for name, shape in read_manifest(MANIFEST)}
    path = tmp_path / "checkpoint.pt"
    torch.save(state, path)
    original = {k: v.clone() for k, v in official_model.state_dict().items()}
    try:
        load_model_weights(official_model, str(path))
        loaded = official_model.state_dict()
        assert all(torch.equal(loaded[k], state[k]) for k in state)
    finally:
        official_model.load_state_dict(original)


def test_official_forward_shapes(official_model):
    x = torch.randn(2, 3, 128, 128)
    mask = torch.zeros(2, 1, 128, 128)
    mask[:, :, 64:] = 1
    with torch.no_grad():
        out = official_model(
            x, torch.tensor([0, 999]), cond_img=x, mask=mask, ref_img=torch.randn_like(x), indiv_mels=torch.randn(2, 80, 16)
        )
    assert out.shape == (2, 6, 128, 128)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "flags, in_ch",
    [
        (dict(image_size=64, num_channels=32, num_head_channels=16, attention_resolutions="16,8"), 9),
        (dict(image_size=256, num_channels=32, num_head_channels=32, num_res_blocks=1, attention_resolutions="16"), 9),
        (dict(TINY_FLAGS, use_ref=False), 6),
        (dict(TINY_FLAGS, nrefer=2), 12),
    ],
)
def test_other_sizes_build_and_run(flags, in_ch):
    model, _ = tfg_create_model_and_diffusion(**flags)
    size = flags["image_size"]
    assert model.input_blocks[0][0].in_channels == in_ch
    x = torch.randn(1, 3, size, size)
    kwargs = dict(cond_img=x, mask=torch.ones(1, 1, size, size), indiv_mels=torch.randn(1, 80, 16))
    if flags.get("use_ref", True):
        kwargs["ref_img"] = torch.randn(1, in_ch - 6, size, size)
    with torch.no_grad():
        out = model(x, torch.tensor([3]), **kwargs)
    assert out.shape == (1, 6, size, size)


def test_timestep_embedding_matches_closed_form():
    t = torch.tensor([0.0, 1.0, 37.0, 999.0])
    dim = 128
    emb = timestep_embedding(t, dim)
    half = dim // 2
    expected = torch.zeros(4, dim, dtype=torch.float64)
    for i, tv in enumerate(t.tolist()):
        for j in range(half):
            freq = math.exp(-math.log(10000) * j / half)
            expected[i, j] = math.cos(tv * freq)
            expected[i, half + j] = math.sin(tv * freq)
    assert emb.shape == (4, dim)
    torch.testing.assert_close(emb.double(), expected, atol=2e-4, rtol=0)
    assert torch.equal(emb[0, :half], torch.ones(half)) and torch.equal(emb[0, half:], torch.zeros(half))


def test_fused_attention_equals_legacy_einsum():
    torch.manual_seed(0)
    block = AttentionBlock(256, num_head_channels=64)
    randomize_zero_init(block)
    x = torch.randn(3, 256, 16, 16)
    block.attention.fused = False
    legacy = block(x)
    block.attention.fused = True
    fused = block(x)
    torch.testing.assert_close(fused, legacy, atol=1e-5, rtol=1e-5)
    assert (legacy - x).abs().max() > 1e-3  # the attention branch is really on


def test_audio_encoder_downsamples_64x16_to_8x8():
    enc = AudioEncoder()
    shapes = []
    h = enc.input_block(torch.randn(2, 80, 16)).unsqueeze(1)
    emb = torch.zeros(2, 32)
    for block in enc.encoder_blocks:
        h = block(h, emb)
        shapes.append(tuple(h.shape[2:]))
    assert shapes[0] == (64, 16)
    # after the down-sampling blocks of levels 0, 1, 2
    assert [shapes[i] for i in (3, 6, 9)] == [(32, 16), (16, 16), (8, 8)]
    assert enc(torch.randn(2, 80, 16)).shape == (2, 128, 8, 8)
    assert enc(torch.randn(2, 1, 80, 16)).shape == (2, 128, 8, 8)


def test_audio_changes_output_and_precomputed_style_matches(tiny_model_and_diffusion):
    model, _ = tiny_model_and_diffusion
    x = torch.randn(2, 3, 32, 32)
    kw = dict(cond_img=torch.randn_like(x), mask=torch.ones(2, 1, 32, 32), ref_img=torch.randn_like(x))
    mels = torch.randn(2, 80, 16)
    t = torch.tensor([5, 700])
    with torch.no_grad():
        out = model(x, t, indiv_mels=mels, **kw)
        out_other_audio = model(x, t, indiv_mels=torch.randn(2, 80, 16), **kw)
        cached = model.precompute_conditioning(dict(kw, indiv_mels=mels))
        out_cached = model(x, t, **cached)
    assert "indiv_mels" not in cached and cached["audio_style"].shape == (2, 128)
    torch.testing.assert_close(out_cached, out)
    assert (out - out_other_audio).abs().max() > 1e-4


def test_network_sees_condition_outside_mask_not_x_t(tiny_model_and_diffusion):
    model, _ = tiny_model_and_diffusion
    mask = torch.zeros(1, 1, 32, 32)
    mask[:, :, 16:] = 1
    cond = torch.randn(1, 3, 32, 32)
    kw = dict(cond_img=cond, mask=mask, ref_img=torch.randn(1, 3, 32, 32), indiv_mels=torch.randn(1, 80, 16))
    x1 = torch.randn(1, 3, 32, 32)
    x2 = x1.clone()
    x2[:, :, :16] = torch.randn(1, 3, 16, 32)  # differs only outside the mask
    x3 = x1.clone()
    x3[:, :, 16:] = torch.randn(1, 3, 16, 32)  # differs inside the mask
    t = torch.tensor([100])
    with torch.no_grad():
        o1, o2, o3 = (model(x, t, **kw) for x in (x1, x2, x3))
    torch.testing.assert_close(o1, o2)
    assert (o1 - o3).abs().max() > 1e-4


def test_save_load_gives_same_output(tiny_model_and_diffusion, tmp_path):
    model, _ = tiny_model_and_diffusion
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    torch.manual_seed(123)
    fresh, _ = tfg_create_model_and_diffusion(**TINY_FLAGS)
    fresh.eval()
    x = torch.randn(2, 3, 32, 32)
    kw = dict(cond_img=x, mask=torch.ones(2, 1, 32, 32), ref_img=x.flip(0), indiv_mels=torch.randn(2, 80, 16))
    t = torch.tensor([1, 2])
    with torch.no_grad():
        before = fresh(x, t, **kw)
        load_model_weights(fresh, str(path))
        after = fresh(x, t, **kw)
        expected = model(x, t, **kw)
    assert torch.equal(after, expected)
    assert not torch.allclose(before, expected)


def test_missing_checkpoint_is_one_line_error(tiny_model_and_diffusion, tmp_path):
    model, _ = tiny_model_and_diffusion
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError) as err:
        load_model_weights(model, str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_checkpoint_is_one_line_error(tiny_model_and_diffusion, tmp_path):
    model, _ = tiny_model_and_diffusion
    path = tmp_path / "cut.pt"
    torch.save(model.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        load_model_weights(model, str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_mismatched_checkpoint_lists_keys_and_likely_flags(tmp_path):
    with_ref, _ = tfg_create_model_and_diffusion(**TINY_FLAGS)
    path = tmp_path / "noaudio.pt"
    no_audio, _ = tfg_create_model_and_diffusion(**dict(TINY_FLAGS, use_audio=False, learn_sigma=False))
    torch.save(no_audio.state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_model_weights(with_ref, str(path))
    msg = str(err.value)
    assert "\n" not in msg
    n_audio = sum(k.startswith("audio_encoder") for k in with_ref.state_dict())
    assert f"{n_audio} missing" in msg  # the audio encoder and audio_encoder_to_style
    assert "out.2.weight: checkpoint (3, 32, 3, 3) vs model (6, 32, 3, 3)" in msg
    assert "--use_audio" in msg and "--learn_sigma" in msg


def test_training_checkpoint_dict_loads_its_ema_weights(tiny_model_and_diffusion, tmp_path):
    model, _ = tiny_model_and_diffusion
    ema = {k: v + 1.0 for k, v in model.state_dict().items()}
    path = tmp_path / "train.pt"
    torch.save({"model": model.state_dict(), "ema": ema, "step": 3}, path)
    fresh, _ = tfg_create_model_and_diffusion(**TINY_FLAGS)
    load_model_weights(fresh, str(path))
    assert all(torch.equal(fresh.state_dict()[k], ema[k]) for k in ema)


def test_use_fp16_flag_converts_only_when_asked(tiny_flags):
    model, _ = tfg_create_model_and_diffusion(**dict(tiny_flags, use_fp16=True))
    assert model.dtype == torch.float32  # weights are float32 until the conversion
    assert model.input_blocks[1][0].in_layers[2].weight.dtype == torch.float32
    model.convert_to_fp16()
    assert model.dtype == torch.float16
    assert model.input_blocks[1][0].in_layers[2].weight.dtype == torch.float16
    # the embeddings and the head stay float32, as released
    assert model.time_embed[0].weight.dtype == torch.float32 and model.out[2].weight.dtype == torch.float32
