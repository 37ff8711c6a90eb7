"""Checkpoints that carry their flags: read back, applied where the command line is silent."""

import pytest
import torch

from guided_diffusion.errors import CheckpointError
from guided_diffusion.script_util import (
    apply_checkpoint_flags,
    given_flags,
    read_checkpoint_flags,
    tfg_create_model_and_diffusion,
)
from helpers import TINY_CLI_FLAGS, TINY_FLAGS
from inference.cli import create_parser

STUDENT_FLAGS = {**TINY_FLAGS, "predict_xstart": True, "learn_sigma": False, "timestep_respacing": "ddim2", "use_ddim": True}


def test_flags_round_trip_through_a_saved_checkpoint(tmp_path):
    model, _ = tfg_create_model_and_diffusion(**TINY_FLAGS, predict_xstart=True, learn_sigma=False)
    path = tmp_path / "student.pt"
    torch.save({"model": model.state_dict(), "flags": STUDENT_FLAGS}, path)
    assert read_checkpoint_flags(str(path)) == STUDENT_FLAGS
    torch.save(model.state_dict(), tmp_path / "plain.pt")  # the released format holds no flags
    assert read_checkpoint_flags(str(tmp_path / "plain.pt")) == {}
    assert read_checkpoint_flags(str(tmp_path / "missing.pt")) == {}


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

import ast  # noqa: E402
from pathlib import Path  # noqa: E402

from guided_diffusion.checkpoint_format import (  # noqa: E402
    infer_flags_from_shapes,
    network_flags,
    read_metadata,
    save_network,
)
from guided_diffusion.script_util import load_model_weights, tfg_model_and_diffusion_defaults  # noqa: E402

MANIFEST = Path(__file__).resolve().parents[1] / "data" / "diff2lip_official_tfgmodel.tsv"
RELEASED = tfg_model_and_diffusion_defaults()


def manifest_shapes():
    rows = (line.rstrip("\n").split("\t") for line in MANIFEST.read_text().splitlines())
    return {name: ast.literal_eval(shape) for name, shape in rows}


def test_the_released_manifest_gives_the_released_flags():
    flags = infer_flags_from_shapes(manifest_shapes())
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
    assert "--use_audio" not in message and "--attention_resolutions" not in message


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_network_files_round_trip_weights_flags_and_what_they_were_trained_on(tmp_path, suffix):
    model, _ = tfg_create_model_and_diffusion(**TINY_FLAGS)
    flags = network_flags({**RELEASED, **TINY_FLAGS, "use_fp16": True, "data_root": "data/x"})
    assert "use_fp16" not in flags and "timestep_respacing" not in flags and "data_root" not in flags
    assert flags["num_channels"] == 32 and flags["predict_xstart"] is False
    path = tmp_path / f"net{suffix}"
    save_network(str(path), model.state_dict(), flags, {"data_root": "data/x", "steps": 10})
    assert read_metadata(str(path)) == (flags, {"data_root": "data/x", "steps": 10})
    assert read_checkpoint_flags(str(path)) == flags
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
