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
