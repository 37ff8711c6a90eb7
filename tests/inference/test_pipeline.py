"""The pipeline object (inference/pipeline.py): `Generator` built from generate.py's flags, its
clips (pixels outside the face, paste modes, looping), the network and detector it reuses, and the
checks of a single clip's files."""

import os

import numpy as np
import pytest

from audio.audio import save_wav
from common.errors import Diff2LipError, MediaError
from dataset.synthetic import speech_like
from dataset.video_io import iter_frames
from helpers import TINY_CLI_FLAGS, full_windows, render_clip, save_tiny_checkpoint
from inference.lipsync import SamplingOptions, SourceFrames, boxes_for_clip, pingpong, plan_clip
from inference.options import create_parser, parse_args
from inference.pipeline import Generator, check_single, detector_key, network_key, single_outputs

BOX = "40,200,50,174"  # top,bottom,left,right inside a 224x224 frame
BOX_YYXX = (40, 200, 50, 174)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    checkpoint = root / "tiny.pt"
    save_tiny_checkpoint(checkpoint)
    video = root / "face.mp4"
    render_clip(video, n_frames=12)
    return root, checkpoint, video


def single(checkpoint, video, audio, out, *extra):
    return [*TINY_CLI_FLAGS, "--model_path", str(checkpoint), "--progress", "False", "--sampling_batch_size", "5",
            "--generate_from_filelist", "0", "--video_path", str(video), "--audio_path", str(audio),
            "--out_path", str(out), "--is_voxceleb2", "False", "--box", BOX, *extra]


def test_pixels_outside_the_face_box_equal_the_input_before_encoding(assets, tmp_path):
    _, checkpoint, video = assets
    args = create_parser().parse_args(single(checkpoint, video, video, tmp_path / "x.mp4"))
    gen = Generator(args)
    opts = gen.opts
    plan = plan_clip(str(video), str(video), opts)
    frames = SourceFrames(plan, None)
    boxes, _ = boxes_for_clip(plan, frames, opts, None)
    out = list(gen.syncer.generate(plan, frames, boxes, 0, plan.n_frames))
    source = list(iter_frames(str(video), 25, 0, plan.n_frames))
    y1, y2, x1, x2 = BOX_YYXX
    outside = np.ones(source[0].shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    changed_inside = 0
    for got, src in zip(out, source):
        assert np.array_equal(got[outside], src[outside])
        changed_inside += int((got[y1:y2, x1:x2] != src[y1:y2, x1:x2]).any())
    assert changed_inside == len(out)


def test_lower_paste_keeps_the_upper_face(assets, tmp_path):
    _, checkpoint, video = assets
    args = create_parser().parse_args(single(checkpoint, video, video, tmp_path / "x.mp4", "--paste", "lower"))
    gen = Generator(args)
    plan = plan_clip(str(video), str(video), gen.opts)
    frames = SourceFrames(plan, None)
    boxes, _ = boxes_for_clip(plan, frames, gen.opts, None)
    out = next(gen.syncer.generate(plan, frames, boxes, 0, 5))
    src = next(iter_frames(str(video), 25, 0, 1))
    y1, y2, x1, x2 = BOX_YYXX
    mid = y1 + (y2 - y1) // 2
    assert np.array_equal(out[:mid], src[:mid])
    assert (out[mid:y2, x1:x2] != src[mid:y2, x1:x2]).any()


def test_loop_video_plays_forward_backward_to_cover_the_audio(assets, tmp_path):
    _, checkpoint, _ = assets
    video = tmp_path / "short.mp4"
    render_clip(video, n_frames=6)
    audio = tmp_path / "long.wav"
    save_wav(speech_like(1.0), audio, 16000)
    args = create_parser().parse_args(single(checkpoint, video, audio, tmp_path / "o.mp4", "--loop_video", "True"))
    gen = Generator(args)
    plan = plan_clip(str(video), str(audio), gen.opts)
    assert plan.n_frames == full_windows(1.0) == 22 and plan.revisit
    assert [plan.source_index(k) for k in range(12)] == [0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0, 1]
    frames = SourceFrames(plan, str(tmp_path))
    try:
        boxes, _ = boxes_for_clip(plan, frames, gen.opts, None)
        out = list(gen.syncer.generate(plan, frames, boxes, 0, plan.n_frames))
    finally:
        frames.close()
    source = np.stack(list(iter_frames(str(video), 25)))
    assert len(out) == 22
    for k, frame in enumerate(out):
        assert np.array_equal(frame[:40], source[pingpong(k, 6)][:40])  # rows above the box
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".frames-")]  # cache removed


def test_the_generator_takes_its_sampling_options_from_the_flags(assets, tmp_path):
    _, checkpoint, video = assets
    args = create_parser().parse_args(single(checkpoint, video, video, tmp_path / "x.mp4", "--cache_interval", "2"))
    gen = Generator(args)
    assert gen.opts == SamplingOptions.from_args(args)
    assert gen.opts.cache_interval == 2 and gen.opts.box == BOX_YYXX and gen.opts.progress is False


def test_a_new_generator_reuses_the_network_and_detector_while_their_flags_stay(assets, tmp_path):
    _, checkpoint, video = assets
    argv = single(checkpoint, video, video, tmp_path / "x.mp4")
    first = Generator(create_parser().parse_args(argv))
    other_sampler = create_parser().parse_args(argv + ["--sampler", "dpm++2m", "--sampling_steps", "3"])
    assert network_key(other_sampler) == first.network_key and detector_key(other_sampler) == detector_key(first.args)
    second = Generator(other_sampler, reuse=first)
    assert second.syncer.model is first.syncer.model and second.syncer.passes_per_chunk() == 3
    other_network = create_parser().parse_args(argv + ["--num_channels", "64"])
    assert network_key(other_network) != first.network_key


def test_single_outputs_and_their_checks(assets, tmp_path):
    _, checkpoint, video = assets
    args = parse_args(single(checkpoint, video, video, tmp_path / "out.mp4", "--save_orig", "True"))[0]
    assert single_outputs(args) == [str(tmp_path / "out.mp4"), str(tmp_path / "out_orig.mp4")]
    check_single(args)
    with pytest.raises(MediaError, match="does not exist"):
        check_single(parse_args(single(checkpoint, tmp_path / "nope.mp4", video, tmp_path / "o.mp4"))[0])
    with pytest.raises(Diff2LipError, match="needs --out_path"):
        check_single(parse_args(single(checkpoint, video, video, ""))[0])
