"""guided_diffusion.lift: a trained network lifted to twice its image size (train.py --init_from
net.pt --image_size 2N): every small tensor carried byte for byte, the new ones counted, the new
level a pass-through at the start, the lifted network trains."""

import pytest
import torch

import train
from guided_diffusion.lift import key_map, lift_flags, lift_network, lift_state_dict, lifted_channel_mult
from guided_diffusion.script_util import tfg_create_model_and_diffusion, tfg_model_and_diffusion_defaults
from helpers import TINY_FLAGS, make_preprocessed_root, randomize_zero_init

SMALL = {**tfg_model_and_diffusion_defaults(), **TINY_FLAGS}  # 32 px, levels (1, 2), 1 res block


def new_tensor_count(num_res_blocks: int) -> int:
    """Counted from the blocks the lift adds, not from the networks: a residual block holds 10
    tensors (in: norm w, b, conv w, b; embedding linear w, b; out: norm w, b, conv w, b), 12 with
    a skip projection. New: the front level's num_res_blocks blocks and its downsampler (10 each),
    the upsampler ending the old first decoder level (10), the front decoder's num_res_blocks + 1
    blocks, which read [h, skip] and so project their skip (12 each)."""
    return (num_res_blocks + 1) * 10 + 10 + (num_res_blocks + 1) * 12


def small_network(seed: int = 0):
    torch.manual_seed(seed)
    model, _ = tfg_create_model_and_diffusion(**SMALL)
    randomize_zero_init(model, seed)
    return model


def test_the_lifted_architecture_repeats_the_first_multiplier():
    assert lifted_channel_mult("", 128) == (1, 1, 1, 2, 3, 4)  # the released 128 px network
    assert lifted_channel_mult("", 256) == (1, 1, 1, 2, 3, 4, 4)
    flags = lift_flags(SMALL)
    assert (flags["image_size"], flags["channel_mult"], flags["attention_resolutions"]) == (64, "1,1,2", "16")


def test_every_small_tensor_is_carried_byte_for_byte():
    small = small_network()
    large, _ = tfg_create_model_and_diffusion(**lift_flags(SMALL))
    report = lift_state_dict(small.state_dict(), SMALL, large)
    small_state, large_state = small.state_dict(), large.state_dict()
    assert len(report.carried) == len(small_state)
    for key, target in report.carried.items():
        assert large_state[target].numpy().tobytes() == small_state[key].numpy().tobytes(), key
    assert report.carried["input_blocks.1.0.in_layers.2.weight"] == "input_blocks.3.0.in_layers.2.weight"
    assert report.carried["output_blocks.0.0.skip_connection.weight"] == "output_blocks.0.0.skip_connection.weight"
    assert len(report.new) == new_tensor_count(1) == len(large_state) - len(small_state) == 54
    assert not set(report.new) & set(report.carried.values())
    assert report.new_parameters == sum(large_state[k].numel() for k in report.new)
    assert "carried 284 tensors" in report.summary() and "54 new tensors" in report.summary()


def test_the_released_network_lifts_whole_to_256_px():
    """The released 128 px configuration (shapes only, on the meta device: no 100M weights)."""
    released = tfg_model_and_diffusion_defaults()
    with torch.device("meta"):
        small, _ = tfg_create_model_and_diffusion(**released)
        large, _ = tfg_create_model_and_diffusion(**lift_flags(released))
    small_state, large_state = small.state_dict(), large.state_dict()
    mapping = key_map(list(small_state), released["num_res_blocks"])
    assert all(large_state[t].shape == small_state[k].shape for k, t in mapping.items())
    assert len(set(mapping.values())) == len(small_state) == 632
    assert len(large_state) - len(small_state) == new_tensor_count(2) == 76
    assert large.image_size == 256 and lift_flags(released)["channel_mult"] == "1,1,1,2,3,4"


def test_the_new_decoder_blocks_start_as_pass_throughs():
    """A new decoder block reads [h, encoder skip] and gives h back; the upsampler ending the old
    first level is a nearest-neighbour upsampling: the old decoder's output reaches the head unchanged."""
    small = small_network()
    large, _ = tfg_create_model_and_diffusion(**lift_flags(SMALL))
    lift_state_dict(small.state_dict(), SMALL, large)
    g = torch.Generator().manual_seed(1)
    h, skip, emb = torch.randn(2, 32, 64, 64, generator=g), torch.randn(2, 32, 64, 64, generator=g), torch.randn(2, 128, generator=g)
    for block in large.output_blocks[4:]:
        assert torch.allclose(block(torch.cat([h, skip], 1), emb), h, atol=1e-6)
    up = large.output_blocks[3][1]
    low = torch.randn(2, 32, 32, 32, generator=g)
    assert torch.equal(up(low, emb), low.repeat_interleave(2, 2).repeat_interleave(2, 3))


def test_a_file_that_does_not_fit_the_lifted_widths_is_one_error(tmp_path):
    from common.errors import CheckpointError
    from guided_diffusion.checkpoint_format import network_flags, save_network

    path = tmp_path / "small.pt"
    save_network(str(path), small_network().state_dict(), network_flags(SMALL))
    wrong, _ = tfg_create_model_and_diffusion(**{**SMALL, "image_size": 64, "channel_mult": "2,2,4"})
    with pytest.raises(CheckpointError, match="lifting needs --channel_mult 1,1,2"):
        lift_network(wrong, str(path))


@pytest.fixture(scope="module")
def root64(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre64")
    make_preprocessed_root(root, n_clips=2, n_frames=12, image_size=64, val_clips=0)
    return root


def lift_args(root, out, init, *extra):
    return ["--data_root", str(root), "--output_dir", str(out), "--init_from", str(init), "--image_size", "64",
            "--batch_size", "1", "--num_workers", "0", "--lambda_sync", "0", "--lambda_lpips", "0",
            "--log_every", "1", *extra]


@pytest.mark.slow
def test_a_released_format_file_lifts_whole_to_256_px(tmp_path):
    """Random weights in the released format (a plain state_dict of the released 128 px network,
    as checkpoint.pt) stand in for checkpoint.pt: lift_network carries every one of its tensors
    byte for byte into the 256 px network that train.py --init_from it --image_size 256 builds."""
    from guided_diffusion.lift import file_network_flags, lifts

    released = tfg_model_and_diffusion_defaults()
    torch.manual_seed(0)
    small, _ = tfg_create_model_and_diffusion(**released)
    path = tmp_path / "checkpoint.pt"
    torch.save(small.state_dict(), path)
    assert lifts(str(path), 256) and not lifts(str(path), 128)
    large, _ = tfg_create_model_and_diffusion(**lift_flags(file_network_flags(str(path))))
    report = lift_network(large, str(path))
    large_state = large.state_dict()
    assert len(report.carried) == 632 and len(report.new) == 76
    for key, value in small.state_dict().items():
        assert torch.equal(large_state[report.carried[key]], value), key


def test_train_py_lifts_a_network_file_and_trains(root64, tmp_path, capsys):
    """Our network file of the 32 px network (it carries its flags): --image_size 64 alone lifts
    it. One step at lr 0 keeps the lifted weights (the carried ones byte for byte); one at lr 1e-3
    trains, its losses finite; a --channel_mult that cannot hold it is one line."""
    from guided_diffusion.checkpoint_format import network_flags, save_network

    small = small_network()
    init = tmp_path / "small32.pt"
    save_network(str(init), small.state_dict(), network_flags(SMALL))
    assert train.main(lift_args(root64, tmp_path / "a", init, "--max_steps", "1", "--lr", "0")) == 0
    out = capsys.readouterr().out
    assert "lifted 32 px -> 64 px: carried 284 tensors" in out and "54 new tensors" in out
    saved = torch.load(tmp_path / "a" / "checkpoint_0000001.pt", weights_only=True)
    assert (saved["args"]["image_size"], saved["args"]["channel_mult"], saved["args"]["num_channels"]) == (64, "1,1,2", 32)
    mapping = key_map(list(small.state_dict()), 1)
    assert all(torch.equal(saved["model"][mapping[k]], v) for k, v in small.state_dict().items())

    assert train.main(lift_args(root64, tmp_path / "b", init, "--max_steps", "1", "--lr", "1e-3")) == 0
    trained = torch.load(tmp_path / "b" / "checkpoint_0000001.pt", weights_only=True)
    # The new level learns: its zero-initialised last convs get the first step's gradient.
    assert not torch.equal(trained["model"]["input_blocks.1.0.out_layers.3.weight"],
                           saved["model"]["input_blocks.1.0.out_layers.3.weight"])
    assert all(torch.isfinite(v).all() for v in trained["model"].values())
    capsys.readouterr()
    assert train.main(lift_args(root64, tmp_path / "c", init, "--channel_mult", "1,2,2", "--max_steps", "1")) == 1
    err = capsys.readouterr().err
    assert "--channel_mult 1,2,2 cannot hold the 32 px network" in err and len(err.strip().splitlines()) == 1


def test_freeze_carried_steps_trains_only_the_new_level_then_all(root64, tmp_path, capsys):
    """--freeze_carried_steps 2: after 2 steps at lr 1e-3 every carried tensor is the file's byte
    for byte and the new level has learnt; resumed to step 3, the carried tensors learn too. Without
    a lift the flag is one line."""
    from guided_diffusion.checkpoint_format import network_flags, save_network

    small = small_network()
    init = tmp_path / "small32.pt"
    save_network(str(init), small.state_dict(), network_flags(SMALL))
    mapping = key_map(list(small.state_dict()), 1)
    run = tmp_path / "run"
    frozen = lift_args(root64, run, init, "--lr", "1e-3", "--warmup_steps", "0", "--freeze_carried_steps", "2",
                       "--resume", "True", "--keep", "0")
    assert train.main([*frozen, "--max_steps", "2"]) == 0
    two = torch.load(run / "checkpoint_0000002.pt", weights_only=True)["model"]
    assert all(torch.equal(two[mapping[k]], v) for k, v in small.state_dict().items())
    new = set(two) - set(mapping.values())
    assert any(not torch.equal(two[k], torch.zeros_like(two[k])) for k in new if "out_layers.3" in k)  # zero-initialised, now learnt

    assert train.main([*frozen, "--max_steps", "3"]) == 0
    three = torch.load(run / "checkpoint_0000003.pt", weights_only=True)["model"]
    moved = [k for k, v in small.state_dict().items() if v.is_floating_point() and not torch.equal(three[mapping[k]], v)]
    assert len(moved) > 0.9 * len(mapping), f"{len(moved)} of {len(mapping)} carried tensors learnt at step 3"

    capsys.readouterr()
    same_size = run / "checkpoint_0000003.pt"  # a 64 px network fine-tuned at 64 px: nothing is lifted
    assert train.main(lift_args(root64, tmp_path / "d", same_size, "--max_steps", "1", "--freeze_carried_steps", "5")) == 1
    err = capsys.readouterr().err
    assert "--freeze_carried_steps 5 freezes what a lift carried" in err and len(err.strip().splitlines()) == 1


def test_a_512_px_network_trains_a_step_and_samples():
    """The released 512 px levels (1, 1, 2, 2, 4, 4) at a quarter of the width, one frame: a
    diffusion loss step has every parameter in its graph, and a 2-step DDIM sample comes out whole (the
    pipeline's paste-back is size-free: tests/test_resolution.py runs it at 256 px)."""
    from guided_diffusion.tfg_data_util import tfg_process_batch

    torch.manual_seed(0)
    flags = {**SMALL, "image_size": 512, "channel_mult": "", "num_res_blocks": 1, "timestep_respacing": "ddim2"}
    model, diffusion = tfg_create_model_and_diffusion(**flags)
    assert len(model.input_blocks) == 1 + 6 * 2 - 1  # 6 levels of 1 block, 5 downsamplers
    frames = torch.rand(1, 1, 3, 512, 512) * 2 - 1
    batch = tfg_process_batch(frames, 0.5, ref_frames=frames, mels=torch.randn(1, 1, 80, 16))
    terms = diffusion.training_losses(model, batch.x_start, torch.tensor([1]), batch.model_kwargs, loss_mask=batch.mask)
    terms["loss"].mean().backward()
    assert torch.isfinite(terms["loss"]).all()
    assert model.out[2].weight.grad.abs().sum() > 0  # the zero-initialised head gets its first gradient
    with torch.no_grad():
        sample = diffusion.ddim_sample_loop(model.eval(), (1, 3, 512, 512), model_kwargs=batch.model_kwargs)
    assert sample.shape == (1, 3, 512, 512)
    assert torch.isfinite(sample).all() and sample.abs().max() <= 1 and sample.std() > 0.1
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
