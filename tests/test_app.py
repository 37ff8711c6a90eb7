"""Tests for app.py's own logic, without a browser: the page's values become the generate.py
command it shows (which parses back to the same flags and makes the same video), the checkpoints
it offers, the note of the demo networks, the job folders, and bad uploads as one clean error."""

import os
import shlex
from dataclasses import fields
from types import SimpleNamespace

import numpy as np
import pytest

import app
from common.errors import Diff2LipError
from dataset.video_io import iter_frames, probe_video
from evaluation import synthetic_demo
from helpers import render_clip, save_tiny_checkpoint
from inference.cli import main as generate_main
from inference.options import GENERATE_OPTIONS, parse_args
from launchers import REPO_ROOT

STUDENT = str(REPO_ROOT / synthetic_demo.DEMO_STUDENT)


@pytest.fixture
def clip(tmp_path):
    """A 12-frame synthetic talking head (H.264 + AAC) and 2 s of another voice's speech (wav)."""
    from audio.audio import save_wav
    from dataset.synthetic import speech_like

    video, audio = tmp_path / "face.mp4", tmp_path / "speech.wav"
    render_clip(video, n_frames=12, seed=3)
    save_wav(speech_like(2.0, seed=5), audio, 16000)
    return str(video), str(audio)


@pytest.fixture
def checkpoint_root(tmp_path):
    """A checkpoint folder like checkpoints/: the demo student and the demo SyncNet expert (links)."""
    root = tmp_path / "checkpoints"
    (root / "demo").mkdir(parents=True)
    for name in (synthetic_demo.DEMO_STUDENT, synthetic_demo.DEMO_SYNC_EXPERT):
        os.symlink(REPO_ROOT / name, root / "demo" / os.path.basename(name))
    (root / "notes.pt").write_text("not a checkpoint")
    return root


def test_default_settings_give_only_the_job_flags():
    argv = app.build_argv(app.Settings(checkpoint=STUDENT, face_crop="voxceleb2"), "v.mp4", "a.wav", "o.mp4")
    assert argv == ["--generate_from_filelist", "False", "--video_path", "v.mp4", "--audio_path", "a.wav",
                    "--out_path", "o.mp4", "--save_orig", "True", "--model_path", STUDENT]


@pytest.mark.parametrize("sampler", ["ddim", "dpm++2m"])
def test_shown_command_parses_back_to_the_page_values(sampler):
    settings = app.Settings(
        checkpoint=STUDENT, mode=next(m for m, t in app.MODES.items() if t == ("first_frame", "first_frame")),
        sampler=sampler, steps=4, cache_interval=2, face_crop="box", box="40,180,50,174", face_detector="centerface",
        face_select="central", no_face="nearest", paste="feather", loop_video=True, precision="bf16", seed=11,
    )
    argv = app.build_argv(settings, "in dir/v.mp4", "a.wav", "out/o.mp4")
    command = app.command_line(argv)
    assert command.startswith("python generate.py ") and "'in dir/v.mp4'" in command
    args = parse_args(shlex.split(command)[2:])[0]
    assert args == parse_args(argv)[0]
    steps = args.timestep_respacing == "ddim4" if sampler == "ddim" else args.sampling_steps == 4
    assert steps and args.sampler == sampler
    assert (args.sampling_input_type, args.sampling_ref_type) == ("first_frame", "first_frame")
    assert (args.cache_interval, args.is_voxceleb2, args.box, args.face_detector) == (2, False, "40,180,50,174", "centerface")
    assert (args.face_select, args.no_face, args.paste, args.loop_video) == ("central", "nearest", "feather", True)
    assert (args.precision, args.sampling_seed, args.video_path, args.out_path) == ("bf16", 11, "in dir/v.mp4", "out/o.mp4")
    # The student's stored flags still apply: no architecture flag is needed on the command line.
    assert args.image_size == 64 and "--image_size" not in argv


def test_settings_and_widgets_come_from_the_flag_declarations():
    flags = {f.name: f.metadata["flag"] for f in fields(app.Settings) if "flag" in f.metadata}
    assert flags["seed"] == "sampling_seed" and flags["loop_video"] == "loop_video"
    for name, flag in flags.items():
        assert getattr(app.Settings(), name) == GENERATE_OPTIONS[flag].default, name
    gr = SimpleNamespace(**{kind: (lambda kind: lambda *a, **k: (kind, a, k))(kind) for kind in ("Dropdown", "Checkbox", "Number", "Textbox")})
    kind, _, shown = app.flag_control(gr, "precision", "auto")
    assert kind == "Dropdown"
    assert app.flag_control(gr, "precision", "auto")[1][0] == [("auto", "auto"), ("fp32", "fp32"), ("bf16", "bf16"), ("fp16", "fp16")]
    assert app.flag_control(gr, "sampler", "ddim")[1][0] == [(c, c) for c in GENERATE_OPTIONS["sampler"].choices]
    assert shown["label"] == "Precision" and shown["info"] == f"--precision: {GENERATE_OPTIONS['precision'].help}"
    kind, (value,), shown = app.flag_control(gr, "seed", 7)
    assert (kind, value, shown["minimum"], shown["precision"], shown["label"]) == ("Number", 7, 0, 0, "Seed")
    assert app.flag_control(gr, "cache_interval", 1)[2]["minimum"] == 1
    assert app.flag_control(gr, "loop_video", False)[0] == "Checkbox" and app.flag_control(gr, "pads", "0,0,0,0")[0] == "Textbox"


def test_detector_crop_for_the_released_network_and_voxceleb2_crop_for_the_demo():
    assert app.default_face_crop(STUDENT) == "voxceleb2"
    assert app.default_face_crop("checkpoints/checkpoint.pt") == "detect"
    argv = app.build_argv(app.Settings(checkpoint=STUDENT, face_crop="detect"), "v.mp4", "a.wav", "o.mp4")
    assert parse_args(argv)[0].is_voxceleb2 is False


def test_steps_default_to_the_checkpoint_and_the_sampler():
    student = app.checkpoint_defaults(STUDENT)
    assert app.default_steps(student, "ddim") == 2  # the student's stored ddim2
    assert app.default_steps(app.DEFAULTS, "ddim") == 25  # generate.py's ddim25
    assert app.default_steps(student, "dpm++2m") == app.DEFAULTS.sampling_steps


def test_a_box_crop_without_a_box_is_one_line():
    with pytest.raises(Diff2LipError, match="needs a box"):
        app.build_argv(app.Settings(checkpoint=STUDENT, face_crop="box", box=" "), "v.mp4", "a.wav", "o.mp4")


def test_checkpoints_found_without_and_with_the_released_file(checkpoint_root):
    student = str(checkpoint_root / "demo" / os.path.basename(synthetic_demo.DEMO_STUDENT))
    found = app.find_checkpoints(str(checkpoint_root))
    assert found == [student]  # not the SyncNet expert, not a file that is no network
    assert app.default_checkpoint(str(checkpoint_root), found) == student
    released = checkpoint_root / "checkpoint.pt"
    save_tiny_checkpoint(released)
    found = app.find_checkpoints(str(checkpoint_root))
    assert found == [str(released), student]
    assert app.default_checkpoint(str(checkpoint_root), found) == str(released)
    assert app.default_checkpoint(str(checkpoint_root / "demo" / "nothing"), []) is None


def test_the_note_is_shown_only_for_networks_that_carry_one(tmp_path):
    note = app.note_text(STUDENT)
    assert "synthetic heads" in note and "frozen mouth" in note and "scripts.fetch_weights" in note
    plain = tmp_path / "checkpoint.pt"
    save_tiny_checkpoint(plain)
    assert app.note_text(str(plain)) == "" and app.note_text(None) == ""


def test_job_folders_are_new_folders_inside_the_output_root(tmp_path):
    root = tmp_path / "out"
    first, second = app.new_job_folder(str(root)), app.new_job_folder(str(root))
    assert first != second and os.path.dirname(first) == str(root) == os.path.dirname(second)
    upload = tmp_path / "uploads" / "face.mp4"
    upload.parent.mkdir()
    upload.write_bytes(b"x")
    kept = app.keep_upload(str(upload), first, "video", "a face video or photo")
    assert kept == os.path.join(first, "video", "face.mp4") and open(kept, "rb").read() == b"x"


@pytest.mark.parametrize("video, audio, message", [
    (None, "speech", "no video: upload a face video or photo"),
    ("face", None, "no audio: upload speech or record it"),
    ("text", "speech", "could not be decoded"),
    ("face", "text", "could not be decoded"),
    ("face", "nan", "holds non-finite samples (NaN or inf), the first at 0.500 s"),
])
def test_bad_upload_is_one_line_and_leaves_no_job_folder(tmp_path, clip, video, audio, message):
    from scipy.io import wavfile

    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video")
    wav = np.zeros(16000, np.float32)
    wav[8000] = np.nan  # a float wav with one NaN sample at 0.5 s
    wavfile.write(tmp_path / "nan.wav", 16000, wav)
    files = {"face": clip[0], "speech": clip[1], "text": str(text), "nan": str(tmp_path / "nan.wav"), None: None}
    runner = app.Runner(str(tmp_path / "out"))
    with pytest.raises(Diff2LipError) as caught:
        runner.run(app.Settings(checkpoint=STUDENT, face_crop="voxceleb2"), files[video], files[audio])
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert os.listdir(tmp_path / "out") == []


def test_a_job_writes_the_video_sheet_and_a_command_that_makes_the_same_video(tmp_path, clip, one_thread):
    runner = app.Runner(str(tmp_path / "out"))
    seen = []
    job = runner.run(app.Settings(checkpoint=STUDENT, face_crop="voxceleb2"), *clip, lambda done, total: seen.append((done, total)))
    assert job.frames == 12 == probe_video(job.video).num_frames == probe_video(job.source).num_frames
    assert seen[-1] == (12, 12) and all(b >= a for (a, _), (b, _) in zip(seen, seen[1:]))
    assert os.path.dirname(job.folder) == str(tmp_path / "out") and os.path.isfile(job.sheet)
    assert open(os.path.join(job.folder, "command.txt")).read() == job.command + "\n"
    # The network stays loaded for a job with another sampler and step count, not for another network.
    argv = shlex.split(job.command)[2:]
    generator = runner.generator(parse_args(argv)[0])
    other_sampler = runner.generator(parse_args(argv + ["--sampler", "dpm++2m", "--sampling_steps", "3"])[0])
    assert other_sampler.syncer.model is generator.syncer.model and other_sampler.syncer.passes_per_chunk() == 3
    other_network = runner.generator(parse_args(argv + ["--model_path", synthetic_demo.DEMO_CHECKPOINT])[0])
    assert other_network.syncer.model is not generator.syncer.model
    # The shown command, run as generate.py, makes the same frames.
    argv = shlex.split(job.command)[2:]
    again = str(tmp_path / "again.mp4")
    argv[argv.index("--out_path") + 1] = again
    assert generate_main(argv + ["--progress", "False"]) == 0
    ours, theirs = np.stack(list(iter_frames(job.video))), np.stack(list(iter_frames(again)))
    assert np.array_equal(ours, theirs)
