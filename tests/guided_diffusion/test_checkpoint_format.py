"""Checkpoints that carry their flags: read back, applied where the command line is silent."""

import pytest
import torch

from common.errors import CheckpointError
from guided_diffusion.checkpoint_format import (
    apply_checkpoint_flags,
    given_flags,
    infer_flags_from_shapes,
    load_model_weights,
    network_flags,
    read_metadata,
    save_network,
)
from guided_diffusion.script_util import tfg_create_model_and_diffusion, tfg_model_and_diffusion_defaults
from helpers import TINY_CLI_FLAGS, TINY_FLAGS, read_manifest
from inference.options import create_parser

STUDENT_FLAGS = {**TINY_FLAGS, "predict_xstart": True, "learn_sigma": False, "timestep_respacing": "ddim2", "use_ddim": True}


def read_flags(path):
    return read_metadata(path)[0]


def test_flags_round_trip_through_a_saved_checkpoint(tmp_path):
    model, _ = tfg_create_model_and_diffusion(**TINY_FLAGS, predict_xstart=True, learn_sigma=False)
    path = tmp_path / "student.pt"
    torch.save({"model": model.state_dict(), "flags": STUDENT_FLAGS}, path)
    assert read_flags(str(path)) == STUDENT_FLAGS
    torch.save(model.state_dict(), tmp_path / "plain.pt")  # the released format holds no flags
    assert read_flags(str(tmp_path / "plain.pt")) == {}
    assert read_flags(str(tmp_path / "missing.pt")) == {}


def test_given_flags_reads_both_spellings():
    assert given_flags(["--a", "1", "--b=2", "x", "-c"]) == {"a", "b"}


def test_stored_flags_fill_what_the_command_line_left_out():
    argv = ["--model_path", "student.pt"]
    args = create_parser().parse_args(argv)
    taken = apply_checkpoint_flags(args, argv, STUDENT_FLAGS, "student.pt")
    assert args.image_size == 32 and args.num_channels == 32 and args.predict_xstart is True
    assert args.learn_sigma is False and args.timestep_respacing == "ddim2"
    assert "--image_size 32" in taken and "--use_ddim True" not in taken  # already the value: not listed


def test_a_contradicting_network_flag_names_both_values():
    argv = ["--model_path", "student.pt", "--num_channels", "64"]
    args = create_parser().parse_args(argv)
    with pytest.raises(CheckpointError, match=r"--num_channels 64 contradicts .*--num_channels 32"):
        apply_checkpoint_flags(args, argv, STUDENT_FLAGS, "student.pt")


def test_a_given_sampling_flag_wins_and_agreeing_flags_pass():
    argv = [*TINY_CLI_FLAGS, "--timestep_respacing", "ddim4", "--model_path", "student.pt"]
    args = create_parser().parse_args(argv)
    apply_checkpoint_flags(args, argv, STUDENT_FLAGS, "student.pt")
    assert args.timestep_respacing == "ddim4" and args.predict_xstart is True


# ----------------------------------------------------------------------------------------------
# Network files in both formats, and the architecture read off tensor shapes

RELEASED = tfg_model_and_diffusion_defaults()


def test_the_released_manifest_gives_the_released_flags():
    flags = infer_flags_from_shapes(dict(read_manifest("diff2lip_official_tfgmodel.tsv")))
    expected = {k: RELEASED[k] for k in ("num_channels", "num_res_blocks", "learn_sigma", "resblock_updown", "image_size",
                                          "channel_mult", "attention_resolutions", "use_scale_shift_norm", "use_ref",
                                          "nrefer", "use_audio", "audio_as_style", "class_cond")}
    assert expected["image_size"] == 128 and expected["attention_resolutions"] == "32,16,8"
    assert flags == expected


@pytest.mark.parametrize("variant", [
    dict(num_channels=64, learn_sigma=False),
    dict(num_res_blocks=2, channel_mult="1,3", attention_resolutions="32,16"),
    dict(image_size=64, channel_mult="", attention_resolutions="16,8", use_scale_shift_norm=True, resblock_updown=False),
    dict(use_ref=False, use_audio=False),
    dict(nrefer=2),
])
def test_flags_from_shapes_recover_how_a_network_was_built(variant):
    flags = {**TINY_FLAGS, **variant}
    model, _ = tfg_create_model_and_diffusion(**flags)
    found = infer_flags_from_shapes({k: tuple(v.shape) for k, v in model.state_dict().items()}, flags["image_size"])
    for key, value in variant.items():
        if key == "channel_mult" and value == "":
            assert found["channel_mult"] == "" and found["image_size"] == flags["image_size"]
        else:
            assert str(found[key]) == str(value), (key, found)


def test_a_plain_file_that_does_not_fit_names_the_flags_its_shapes_give(tmp_path):
    wide, _ = tfg_create_model_and_diffusion(**dict(TINY_FLAGS, num_channels=64, learn_sigma=False))
    path = tmp_path / "plain.pt"
    torch.save(wide.state_dict(), path)
    model, _ = tfg_create_model_and_diffusion(**TINY_FLAGS)
    with pytest.raises(CheckpointError) as err:
        load_model_weights(model, str(path))
    message = str(err.value)
    assert "\n" not in message
    assert "its tensor shapes say --num_channels 64 (the flags give 32), --learn_sigma False (the flags give True)" in message
    # nothing that the shapes agree on is named
    hint = message.split("its tensor shapes say ")[1]
    assert hint == ("--num_channels 64 (the flags give 32), --learn_sigma False (the flags give True), and --image_size "
                    "is not in the shapes (--attention_resolutions assumes 32)")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_network_files_round_trip_weights_flags_and_what_they_were_trained_on(tmp_path, suffix):
    model, _ = tfg_create_model_and_diffusion(**TINY_FLAGS)
    flags = network_flags({**RELEASED, **TINY_FLAGS, "use_fp16": True, "data_root": "data/x"})
    assert "use_fp16" not in flags and "timestep_respacing" not in flags and "data_root" not in flags
    assert flags["num_channels"] == 32 and flags["predict_xstart"] is False
    path = tmp_path / f"net{suffix}"
    save_network(str(path), model.state_dict(), flags, {"data_root": "data/x", "steps": 10})
    assert read_metadata(str(path)) == (flags, {"data_root": "data/x", "steps": 10})
    assert read_flags(str(path)) == flags
    fresh, _ = tfg_create_model_and_diffusion(**dict(TINY_FLAGS, num_head_channels=8))
    torch.manual_seed(3)
    for p in fresh.parameters():
        p.data.normal_()
    load_model_weights(fresh, str(path))
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())


def test_a_train_py_checkpoint_reports_its_command_line_flags(tmp_path):
    model, _ = tfg_create_model_and_diffusion(**TINY_FLAGS)
    args = {**RELEASED, **TINY_FLAGS, "data_root": "data/vox", "timestep_respacing": "", "lr": 1e-4}
    path = tmp_path / "checkpoint_0000010.pt"
    torch.save({"model": model.state_dict(), "ema": model.state_dict(), "step": 10, "args": args}, path)
    flags, trained_on = read_metadata(str(path))
    assert flags == network_flags(args) and trained_on == {"data_root": "data/vox", "steps": 10}


def test_a_damaged_safetensors_file_is_one_line(tmp_path):
    model, _ = tfg_create_model_and_diffusion(**TINY_FLAGS)
    path = tmp_path / "net.safetensors"
    save_network(str(path), model.state_dict(), {"num_channels": 32})
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"not a readable \.safetensors file") as err:
        load_model_weights(model, str(path))
    assert "\n" not in str(err.value)
    assert read_metadata(str(path)) == ({}, {})


def test_an_equal_value_spelled_differently_is_no_contradiction():
    argv = ["--model_path", "student.pt", "--channel_mult", "1, 2"]
    args = create_parser().parse_args(argv)
    apply_checkpoint_flags(args, argv, STUDENT_FLAGS, "student.pt")  # "1, 2" is the stored "1,2"


def test_the_hint_says_when_the_shapes_cannot_give_the_image_size(tmp_path):
    # non-released multipliers: the size is unknown, so a 64 px network fits 128 px flags by shape
    path = tmp_path / "plain.pt"
    torch.save(tfg_create_model_and_diffusion(**dict(TINY_FLAGS, image_size=64, channel_mult="1,2,2", attention_resolutions="32"))[0].state_dict(), path)
    model, _ = tfg_create_model_and_diffusion(**dict(TINY_FLAGS, image_size=128, channel_mult="1,2,2", attention_resolutions="32"))
    with pytest.raises(CheckpointError) as err:
        load_model_weights(model, str(path))
    assert ("--attention_resolutions 64 (the flags give 32), and --image_size is not in the shapes "
            "(--attention_resolutions assumes 128)") in str(err.value)


def test_load_network_builds_a_file_from_its_own_flags(tmp_path):
    from guided_diffusion.checkpoint_format import load_network

    model, _ = tfg_create_model_and_diffusion(**{k: v for k, v in STUDENT_FLAGS.items() if k != "use_ddim"})
    path = tmp_path / "student.safetensors"
    save_network(str(path), model.state_dict(), STUDENT_FLAGS)
    loaded, diffusion = load_network(str(path))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items()) and not loaded.training
    assert diffusion.num_timesteps == 2  # the stored ddim2
    assert load_network(str(path), timestep_respacing="ddim4")[1].num_timesteps == 4  # a sampling flag wins
    with pytest.raises(CheckpointError, match=r"num_channels=64 contradicts .* num_channels=32"):
        load_network(str(path), num_channels=64)
