"""Flags: the released command lines parse unchanged; factories follow the flags."""

import argparse
import shlex

import pytest

from common.errors import Diff2LipError
from common.flags import create_argparser, str2bool
from guided_diffusion.script_util import (
    parse_channel_mult,
    tfg_create_model_and_diffusion,
    tfg_data_defaults,
    tfg_model_and_diffusion_defaults,
)
from inference.options import GENERATE_OPTIONS, tfg_sampling_defaults

# The released scripts' flags (docs/compatibility.md), with both `--f v` and `--f=v` forms.
RELEASED_CROSS = """
--attention_resolutions 32,16,8 --class_cond False --learn_sigma True --num_channels 128
--num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_fp16 True
--use_scale_shift_norm False --predict_xstart False --diffusion_steps 1000
--noise_schedule linear --rescale_timesteps False --sampling_seed=7
--sampling_input_type=gt --sampling_ref_type=gt
--timestep_respacing ddim25 --use_ddim True --model_path=checkpoints/checkpoint.pt --sample_path=out/
--nframes 5 --nrefer 1 --image_size 128 --sampling_batch_size=32 --face_hide_percentage 0.5
--use_ref=True --use_audio=True --audio_as_style=True
--generate_from_filelist 1 --test_video_dir=/data/vox --filelist=dataset/filelists/x.txt --save_orig=False
--face_det_batch_size 64 --pads 0,0,0,0 --is_voxceleb2=False
"""


def released_parser():
    return create_argparser(GENERATE_OPTIONS)


def test_released_command_line_parses_verbatim():
    args = released_parser().parse_args(shlex.split(RELEASED_CROSS))
    assert args.attention_resolutions == "32,16,8"
    assert args.class_cond is False and args.learn_sigma is True and args.use_fp16 is True
    assert args.num_channels == 128 and args.num_head_channels == 64 and args.image_size == 128
    assert args.sampling_seed == 7 and args.sampling_input_type == "gt"
    assert args.timestep_respacing == "ddim25" and args.use_ddim is True
    assert args.face_hide_percentage == 0.5 and args.sampling_batch_size == 32
    assert args.generate_from_filelist is True and args.is_voxceleb2 is False and args.save_orig is False
    assert args.pads == "0,0,0,0" and args.test_video_dir == "/data/vox"


def test_reconstruction_and_single_video_flags_parse():
    line = (
        "--sampling_input_type=first_frame --sampling_ref_type=first_frame --generate_from_filelist 0 "
        "--video_path=v.mp4 --audio_path a.wav --out_path=o.mp4"
    )
    args = released_parser().parse_args(shlex.split(line))
    assert (args.sampling_input_type, args.sampling_ref_type) == ("first_frame", "first_frame")
    assert args.generate_from_filelist is False
    assert (args.video_path, args.audio_path, args.out_path) == ("v.mp4", "a.wav", "o.mp4")


@pytest.mark.parametrize("text, value", [("True", True), ("true", True), ("1", True), ("False", False), ("false", False), ("0", False)])
def test_str2bool(text, value):
    assert str2bool(text) is value


def test_str2bool_rejects_other_words():
    with pytest.raises(argparse.ArgumentTypeError):
        str2bool("maybe")


def test_every_flag_has_help_and_bad_flags_are_one_line_errors():
    defaults = {**tfg_model_and_diffusion_defaults(), **tfg_data_defaults(), **tfg_sampling_defaults()}
    assert sorted(k for k in defaults if not GENERATE_OPTIONS[k].help) == []
    parser = released_parser()
    with pytest.raises(Diff2LipError, match=r"^unrecognized arguments: --num_chan 64; see --help$"):
        parser.parse_args(["--num_chan", "64"])  # no prefix abbreviation to --num_channels
    with pytest.raises(Diff2LipError, match="--use_ddim.*maybe"):
        parser.parse_args(["--use_ddim", "maybe"])


def test_defaults_build_the_released_configuration():
    flags = tfg_model_and_diffusion_defaults()
    assert flags["num_channels"] == 128 and flags["attention_resolutions"] == "32,16,8"
    assert flags["resblock_updown"] is True and flags["use_scale_shift_norm"] is False
    assert flags["learn_sigma"] is True and flags["noise_schedule"] == "linear"


@pytest.mark.parametrize("size, mult", [(64, (1, 2, 3, 4)), (128, (1, 1, 2, 3, 4)), (256, (1, 1, 2, 3, 4, 4)), (512, (1, 1, 2, 2, 4, 4))])
def test_channel_mult_per_image_size(size, mult):
    assert parse_channel_mult("", size) == mult


def test_explicit_channel_mult_and_unknown_size():
    assert parse_channel_mult("1,2,2", 48) == (1, 2, 2)
    with pytest.raises(Diff2LipError):
        parse_channel_mult("", 48)


def test_factory_rejects_unknown_flags_and_unimplemented_variants(tiny_flags):
    with pytest.raises(TypeError, match="num_chanels"):
        tfg_create_model_and_diffusion(num_chanels=3)
    with pytest.raises(Diff2LipError, match="audio_as_style"):
        tfg_create_model_and_diffusion(**dict(tiny_flags, audio_as_style=False))
    with pytest.raises(Diff2LipError, match="audio_as_style_encoder_mlp"):
        tfg_create_model_and_diffusion(**dict(tiny_flags, audio_as_style_encoder_mlp=True))


def test_factory_follows_diffusion_flags(tiny_flags):
    _, diffusion = tfg_create_model_and_diffusion(**dict(tiny_flags, timestep_respacing="ddim25", diffusion_steps=1000))
    assert diffusion.num_timesteps == 25 and diffusion.original_num_steps == 1000
    _, full = tfg_create_model_and_diffusion(**dict(tiny_flags, diffusion_steps=100, noise_schedule="cosine"))
    assert full.num_timesteps == 100
