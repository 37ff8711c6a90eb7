"""A battery of bad and unusual inputs against generate.py, dataset/preprocess.py and evaluate.py.

Every case asserts the exit code, that stderr holds one `error:` line naming the flag or file
(never a traceback), and that nothing is left behind in the output folder (no hidden temporary
files). Flag errors must come before any network is built, which the `no_networks` fixture turns
into a test failure. The signal cases start generate.py as a real process and stop it mid-run.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy.io import wavfile

import evaluate
from audio.audio import save_wav
from dataset import preprocess
from dataset.synthetic import draw_face, speech_like
from dataset.video_io import VideoWriter, probe_video
from helpers import TINY_CLI_FLAGS, save_tiny_checkpoint
from inference import cli
from inference.filelist import output_name
from launchers import REPO_ROOT, child_env

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 64  # frames of 64x64 px: the tiny network's 32 px crops come from a 48 px box
BOX = "8,56,8,56"
FPS = 25
UNWRITABLE = "/proc/no-such-folder"  # cannot be created, even by root


def full_windows(seconds: float) -> int:
    """Frames whose mel window fits in `seconds` of audio (the released rule)."""
    mel_steps = 1 + int(round(seconds * 16000)) // 200
    return sum(1 for k in range(1000) if int(80 * max(k - 1, 0) / 25) + 16 <= mel_steps)


def render(path, n_frames=6, seconds=None, with_audio=True, seed=0, size=SIZE):
    """A small H.264 (+ AAC) clip of a drawn face."""
    audio = speech_like(seconds or n_frames / FPS, seed=seed) if with_audio else None
    with VideoWriter(str(path), fps=FPS, audio=audio, sample_rate=16000) as writer:
        for i in range(n_frames):
            writer.write(draw_face(i, size, size, seed))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Inputs shared by the cases: a tiny checkpoint, clips, stills, odd audio, odd filelists."""
    from PIL import Image

    root = tmp_path_factory.mktemp("media")
    m = {"root": root}
    m["ckpt"] = root / "tiny.pt"
    save_tiny_checkpoint(m["ckpt"])
    m["video"] = root / "face.mp4"
    render(m["video"], n_frames=10)
    m["one_frame_mp4"] = root / "one.mp4"
    render(m["one_frame_mp4"], n_frames=1, seconds=0.04)
    m["silent"] = root / "silent.mp4"
    render(m["silent"], n_frames=4, with_audio=False)
    m["gif"] = root / "one.gif"
    Image.fromarray(draw_face(0, SIZE, SIZE)).save(m["gif"])
    m["png"] = root / "face.png"
    Image.fromarray(draw_face(0, SIZE, SIZE)).save(m["png"])
    m["speech"] = root / "speech.wav"
    save_wav(speech_like(0.3), m["speech"], 16000)  # 5 frames
    m["long_speech"] = root / "long.wav"
    save_wav(speech_like(2.0), m["long_speech"], 16000)  # 50 frames: more than the video's 10
    m["tiny_audio"] = root / "short.wav"
    save_wav(speech_like(0.1), m["tiny_audio"], 16000)
    for name, bad in (("nan", np.nan), ("inf", np.inf)):
        wav = speech_like(0.3).astype(np.float32)
        wav[1000:1100] = bad
        m[name] = root / f"{name}.wav"
        wavfile.write(m[name], 16000, wav)
    m["garbage"] = root / "garbage.mp4"
    m["garbage"].write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    m["empty_file"] = root / "empty.mp4"
    m["empty_file"].write_bytes(b"")
    m["text"] = root / "notes.txt"
    m["text"].write_text("not media\n")
    m["latin1"] = root / "latin1.txt"
    m["latin1"].write_bytes("caf\xe9 b\xe4r\n".encode("latin-1"))
    m["blank"] = root / "blank.txt"
    m["blank"].write_text("\n   \n\n")
    m["empty_list"] = root / "empty.txt"
    m["empty_list"].write_text("")
    m["folder"] = root / "a_folder"
    m["folder"].mkdir()
    m["link"] = root / "link.mp4"
    os.symlink(m["video"], m["link"])
    m["orig_named"] = root / "clip_orig.mp4"
    render(m["orig_named"], n_frames=6)
    return m


@pytest.fixture
def no_networks(monkeypatch):
    """Fail the test if a network is built: flag and path errors must come before."""

    def built(*args, **kwargs):
        raise AssertionError("a network was built before the bad input was refused")

    monkeypatch.setattr(cli, "Generator", built)
    monkeypatch.setattr(evaluate, "Metrics", built)
    monkeypatch.setattr(preprocess, "_ClipWorker", built)


def gen_flags(m, *extra):
    return [*TINY_CLI_FLAGS, "--model_path", str(m["ckpt"]), "--progress", "False", "--sampling_batch_size", "5",
            "--timestep_respacing", "ddim2", *extra]


def single(m, out, *extra, video=None, audio=None):
    return gen_flags(m, "--generate_from_filelist", "0", "--video_path", str(m["video"] if video is None else video),
                     "--audio_path", str(m["speech"] if audio is None else audio), "--out_path", str(out),
                     "--is_voxceleb2", "False", "--box", BOX, *extra)


def hidden_files(folder):
    """Hidden (temporary) files anywhere under `folder`."""
    if not os.path.isdir(folder):
        return []
    return [os.path.join(d, f) for d, dirs, files in os.walk(folder) for f in files + dirs if f.startswith(".")]


def one_error_line(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------------------------
# generate.py: flag values, refused before any network is built

GENERATE_FLAG_CASES = [
    (["--face_hide_percentage", "0"], "--face_hide_percentage 0.0: expected 0 < value < 1"),
    (["--face_hide_percentage", "1"], "--face_hide_percentage 1.0"),
    (["--face_hide_percentage", "1.5"], "--face_hide_percentage 1.5"),
    (["--face_hide_percentage", "-0.2"], "--face_hide_percentage -0.2"),
    (["--face_hide_percentage", "nan"], "--face_hide_percentage nan"),
    (["--face_hide_percentage", "half"], "--face_hide_percentage: invalid float value"),
    (["--box", "0,1,0,1"], "at least 16 px"),
    (["--box", "10,20,10,20"], "got 10x10"),
    (["--box", "1,2,3"], "--box '1,2,3' must be four"),
    (["--box", "abc"], "--box 'abc'"),
    (["--box", "50,40,10,60"], "0 <= top < bottom"),
    (["--box=-5,40,10,60"], "--box '-5,40,10,60'"),
    (["--is_voxceleb2", "True"], "--box and --is_voxceleb2 True"),
    (["--pads", "0,10,0,0"], "--pads 0,10,0,0: pads only boxes the face detector finds"),
    (["--box", "", "--is_voxceleb2", "True", "--pads", "0,10,0,0"], "--is_voxceleb2 True"),
    (["--pads", "1,2"], "--pads '1,2' must be four"),
    (["--pads", "a,b,c,d"], "--pads 'a,b,c,d'"),
    (["--nframes", "0"], "--nframes 0: expected a value >= 1"),
    (["--nframes", "-3"], "--nframes -3"),
    (["--nrefer", "0"], "--nrefer 0"),
    (["--timestep_respacing", "0"], "--timestep_respacing '0': expected step counts"),
    (["--timestep_respacing", "ddim0"], "--timestep_respacing 'ddim0': expected ddimN with 1 <= N <= 1000"),
    (["--timestep_respacing", "ddim"], "--timestep_respacing 'ddim': expected ddimN"),
    (["--timestep_respacing", "ddim-5"], "--timestep_respacing 'ddim-5'"),
    (["--timestep_respacing", "ddim2000"], "1 <= N <= 1000"),
    (["--timestep_respacing", "1"], "(one step: ddim1, for a 1-step student)"),
    (["--timestep_respacing", "-1"], "--timestep_respacing '-1'"),
    (["--timestep_respacing", "a,b"], "--timestep_respacing 'a,b'"),
    (["--timestep_respacing", "ddim999"], "use ddim1000 (the nearest that does) or '999'"),
    (["--timestep_respacing", "0,0"], "--timestep_respacing '0,0'"),
    (["--timestep_respacing", "ddim25", "--diffusion_steps", "10"], "1 <= N <= 10"),
    (["--diffusion_steps", "0"], "--diffusion_steps 0"),
    (["--noise_schedule", "quadratic"], "--noise_schedule 'quadratic': expected one of linear, cosine"),
    (["--device", "banana"], "--device 'banana': expected cpu, cuda or cuda:N"),
    (["--device", "cpu:x"], "--device 'cpu:x'"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--precision", "fp64"], "--precision 'fp64': expected one of"),
    (["--sampling_batch_size", "0"], "--sampling_batch_size 0"),
    (["--sampling_batch_size", "-1"], "--sampling_batch_size -1"),
    (["--sampling_batch_size", "abc"], "--sampling_batch_size: invalid int value"),
    (["--sampling_seed", "-1"], "--sampling_seed -1: expected 0 <= value <= 4294967295"),
    (["--sampling_seed", str(2**40)], f"--sampling_seed {2**40}"),
    (["--sampling_input_type", "middle"], "--sampling_input_type 'middle': expected one of gt, first_frame"),
    (["--sampling_ref_type", "other"], "--sampling_ref_type 'other'"),
    (["--paste", "middle"], "--paste 'middle': expected one of full, lower"),
    (["--channel_order", "gbr"], "--channel_order 'gbr'"),
    (["--face_det_batch_size", "0"], "--face_det_batch_size 0"),
    (["--face_det_scale", "1.5"], "--face_det_scale 1.5"),
    (["--face_det_scale", "-1"], "--face_det_scale -1.0"),
    (["--image_size", "0"], "--image_size 0"),
    (["--image_size", "33"], "--image_size 33 is not a multiple of 2"),
    (["--image_size", "48", "--channel_mult", ""], "--image_size 48 has no default channel multipliers"),
    (["--channel_mult", "1,x"], "--channel_mult '1,x'"),
    (["--channel_mult", "0,2"], "--channel_mult '0,2'"),
    (["--attention_resolutions", "16,abc"], "--attention_resolutions '16,abc'"),
    (["--attention_resolutions", "-16"], "--attention_resolutions '-16'"),
    (["--num_channels", "0"], "--num_channels 0"),
    (["--num_channels", "48"], "--num_channels 48 with --channel_mult 1,2 gives levels of [48, 96] channels, and each "
                               "must be a multiple of 32"),
    (["--num_head_channels", "24"], "--num_head_channels 24 does not divide the 64 channels of an attention level"),
    (["--num_head_channels", "-1", "--num_heads", "5"], "--num_heads 5 does not divide the 64 channels"),
    (["--num_res_blocks", "-1"], "--num_res_blocks -1"),
    (["--num_heads", "0"], "--num_heads 0"),
    (["--num_head_channels", "0"], "--num_head_channels 0: expected -1 (unused)"),
    (["--num_heads_upsample", "0"], "--num_heads_upsample 0"),
    (["--dropout", "1"], "--dropout 1.0"),
    (["--dropout", "-0.1"], "--dropout -0.1"),
    (["--use_ddim", "maybe"], "--use_ddim: expected a boolean"),
    (["--generate_from_filelist", "2"], "--generate_from_filelist: expected a boolean"),
    (["--no_such_flag", "1"], "unrecognized arguments: --no_such_flag"),
    (["--sampling_see", "7"], "unrecognized arguments: --sampling_see"),
    (["--audio_as_style", "False"], "--audio_as_style False (the released spatial-audio variant) is not implemented"),
    (["--audio_as_style_encoder_mlp", "True"], "--audio_as_style_encoder_mlp True is not implemented"),
]


@pytest.mark.parametrize("extra, needle", GENERATE_FLAG_CASES, ids=[" ".join(c[0]) for c in GENERATE_FLAG_CASES])
def test_generate_flag_values_are_refused_before_any_network(extra, needle, media, tmp_path, capsys, no_networks):
    out = tmp_path / "out" / "result.mp4"
    assert cli.main(single(media, out, *extra)) == 1
    one_error_line(capsys, needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:7"])
def test_cuda_device_without_a_gpu_is_one_line(device, media, tmp_path, capsys, no_networks):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert cli.main(single(media, tmp_path / "o.mp4", "--device", device)) == 1
    one_error_line(capsys, f"--device '{device}': no CUDA GPU is visible")


# ----------------------------------------------------------------------------------------------
# generate.py: input and output paths, refused before any network is built

def _path_case(m, tmp):
    """name -> (argv changes, needle); built per test because they name tmp paths."""
    blocker = tmp / "a_file"
    blocker.write_text("x")
    return {
        "video missing": (dict(video=tmp / "nope.mp4"), "--video_path"),
        "video is a folder": (dict(video=m["folder"]), "is a folder"),
        "video empty flag": (dict(video=""), "needs --video_path"),
        "audio missing": (dict(audio=tmp / "nope.wav"), "--audio_path"),
        "audio is a folder": (dict(audio=m["folder"]), "--audio_path"),
        "out is an existing folder": (dict(out=m["folder"]), "is a folder"),
        "out is the input video": (dict(out=m["video"]), "is the input"),
        "out is the input audio": (dict(out=m["speech"]), "is the input"),
        "out is a link to the input": (dict(out=m["link"]), "is the input"),
        "orig output is the input": (dict(out=m["root"] / "clip.mp4", video=m["orig_named"], extra=["--save_orig", "True"]),
                                     "is the input"),
        "out unknown extension": (dict(out=tmp / "o.foo"), "o.foo"),
        "out extension without H.264": (dict(out=tmp / "o.webm"), "o.webm"),
        "out under a file": (dict(out=blocker / "o.mp4"), "is a file"),
        "out folder cannot be created": (dict(out=UNWRITABLE + "/o.mp4"), "cannot be written"),
        "out empty flag": (dict(out=""), "needs --out_path"),
    }


PATH_CASES = [
    "video missing", "video is a folder", "video empty flag", "audio missing", "audio is a folder",
    "out is an existing folder", "out is the input video", "out is the input audio", "out is a link to the input",
    "orig output is the input", "out unknown extension", "out extension without H.264", "out under a file",
    "out folder cannot be created", "out empty flag",
]


@pytest.mark.parametrize("case", PATH_CASES)
def test_generate_paths_are_refused_before_any_network(case, media, tmp_path, capsys, no_networks):
    change, needle = _path_case(media, tmp_path)[case]
    before = sorted(os.listdir(media["root"]))
    argv = single(media, change.get("out", tmp_path / "o.mp4"), *change.get("extra", []),
                  video=change.get("video", media["video"]), audio=change.get("audio", media["speech"]))
    assert cli.main(argv) == 1
    one_error_line(capsys, needle)
    assert sorted(os.listdir(media["root"])) == before  # no input overwritten, nothing added
    assert sorted(os.listdir(tmp_path)) == ["a_file"]


def test_path_case_list_matches_the_cases(tmp_path, media):
    assert sorted(PATH_CASES) == sorted(_path_case(media, tmp_path))


@pytest.mark.parametrize("case", ["missing", "folder", "not UTF-8", "empty", "blank lines", "no dataset folder",
                                  "dataset folder is a file", "sample_path is a file", "sample_path under a file",
                                  "sample_path cannot be written", "no filelist flag"])
def test_generate_filelist_run_is_refused_before_any_network(case, media, tmp_path, capsys, no_networks):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    good = tmp_path / "list.txt"
    good.write_text("face face\n")
    flags = {"--filelist": good, "--test_video_dir": media["root"], "--sample_path": tmp_path / "samples"}
    needle = {
        "missing": ("--filelist", tmp_path / "nope.txt", "not found"),
        "folder": ("--filelist", media["folder"], "is a folder"),
        "not UTF-8": ("--filelist", media["latin1"], "is not UTF-8 text"),
        "empty": ("--filelist", media["empty_list"], "is empty"),
        "blank lines": ("--filelist", media["blank"], "is empty"),
        "no dataset folder": ("--test_video_dir", tmp_path / "nope", "--test_video_dir"),
        "dataset folder is a file": ("--test_video_dir", blocker, "is a file"),
        "sample_path is a file": ("--sample_path", blocker, "--sample_path: "),
        "sample_path under a file": ("--sample_path", blocker / "sub", "cannot be created"),
        "sample_path cannot be written": ("--sample_path", UNWRITABLE, "cannot be written"),
        "no filelist flag": ("--filelist", "", "needs --filelist"),
    }[case]
    flags[needle[0]] = needle[1]
    argv = gen_flags(media, "--generate_from_filelist", "1", *(str(x) for kv in flags.items() for x in kv))
    assert cli.main(argv) == 1
    one_error_line(capsys, needle[2])
    assert sorted(os.listdir(tmp_path)) == ["a_file", "list.txt"]


# ----------------------------------------------------------------------------------------------
# generate.py: checkpoints and media that are only found bad when read (a network is built)

@pytest.mark.parametrize("case", ["checkpoint missing", "checkpoint garbage", "checkpoint of other flags",
                                  "video garbage", "video 0 bytes", "video is text", "audio garbage",
                                  "audio without a track", "audio shorter than a window"])
def test_generate_unreadable_inputs_are_one_line(case, media, tmp_path, capsys):
    out = tmp_path / "out" / "o.mp4"
    garbage_ckpt = tmp_path / "bad.pt"
    garbage_ckpt.write_bytes(b"\x00" * 100)
    argv, needle = {
        "checkpoint missing": (single(media, out, "--model_path", str(tmp_path / "no.pt")), "no.pt"),
        "checkpoint garbage": (single(media, out, "--model_path", str(garbage_ckpt)), "bad.pt"),
        "checkpoint of other flags": (single(media, out, "--num_channels", "64"), "does not match"),
        "video garbage": (single(media, out, video=media["garbage"]), "garbage.mp4"),
        "video 0 bytes": (single(media, out, video=media["empty_file"]), "empty.mp4"),
        "video is text": (single(media, out, video=media["text"]), "notes.txt"),
        "audio garbage": (single(media, out, audio=media["garbage"]), "garbage.mp4"),
        "audio without a track": (single(media, out, audio=media["silent"]), "no audio track"),
        "audio shorter than a window": (single(media, out, audio=media["tiny_audio"]), "shorter than one mel window"),
    }[case]
    assert cli.main(argv) == 1
    one_error_line(capsys, needle)
    assert not hidden_files(tmp_path) and not out.exists()


# ----------------------------------------------------------------------------------------------
# generate.py: unusual inputs that must work, and give the right result



@pytest.mark.parametrize("source", ["gif", "one_frame_mp4", "png"])
def test_any_one_frame_source_is_a_still_that_covers_the_audio(source, media, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    assert cli.main(single(media, out, video=media[source])) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert probe_video(str(out)).num_frames == full_windows(0.3) == 5
    assert sorted(os.listdir(tmp_path)) == ["o.mp4"]


@pytest.mark.parametrize("audio", ["nan", "inf"])
def test_audio_with_non_finite_samples_is_refused_naming_the_time(audio, media, tmp_path, capsys):
    """NaN / inf in a float wav (samples 1000..1099 at 16 kHz): the 16-bit conversion would make
    them silence or clicks without a word; refused before any frame is made, naming the first one's time."""
    out = tmp_path / "o.mp4"
    assert cli.main(single(media, out, audio=media[audio])) == 1
    one_error_line(capsys, str(media[audio]), "non-finite", "0.062 s")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("extra, needle", [
    (["--cache_interval", "2", "--cache_depth", "99"], "--cache_depth 99: this network has 4 encoder blocks; give --cache_depth 1..4"),
    (["--sampler", "dpm++2m", "--solver_spacing", "trailing", "--sampling_steps", "5000"],
     "--sampling_steps 5000: this network's diffusion has 1000 steps; give --sampling_steps 1..1000"),
    (["--sampler", "dpm++2m", "--sampling_steps", "4", "--cache_interval", "2", "--cache_depth", "4"], None),
], ids=["cache depth", "solver steps", "a good one runs"])
def test_options_that_depend_on_the_network_are_checked_once_it_is_known_before_any_frame(
        extra, needle, media, tmp_path, capsys, monkeypatch):
    """The flag checks cannot know the network's depth or its diffusion; these come when it is
    built, as one line, before the clip is planned (a frame read would fail the test)."""
    from inference import pipeline

    def planned(*args, **kwargs):
        raise AssertionError("a clip was planned before the network-dependent options were checked")

    if needle is None:
        out = tmp_path / "o.mp4"
        assert cli.main(single(media, out, *extra)) == 0
        assert probe_video(str(out)).num_frames == 5
        return
    monkeypatch.setattr(pipeline, "plan_clip", planned)
    assert cli.main(single(media, tmp_path / "o.mp4", *extra)) == 1
    one_error_line(capsys, needle)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("cache", ["video writer", "frame cache", "list run"])
def test_generate_into_a_full_disk_is_one_line_and_leaves_nothing(cache, media, tmp_path):
    """A real 64 KiB tmpfs, filled (helpers.small_disk): the H.264 file, or first the
    --loop_video frame cache beside it (a memory map, whose full disk was a SIGBUS), finds no room;
    a list run stops at the first item (each one after it would fail the same way)."""
    from helpers import small_disk

    with small_disk(tmp_path / "disk", "64k") as (folder, preexec):
        with open(os.path.join(folder, "filler"), "wb") as f:
            f.write(b"\0" * 64 * 1024)
        out = os.path.join(folder, "o.mp4")
        extra = ["--loop_video", "True"] if cache == "frame cache" else []
        argv = single(media, out, *extra, audio=media["long_speech"])
        if cache == "list run":
            (tmp_path / "list.txt").write_text("face face\nclip_orig face\n")
            argv = gen_flags(media, "--generate_from_filelist", "1", "--test_video_dir", str(media["root"]), "--filelist",
                             str(tmp_path / "list.txt"), "--sample_path", folder, "--is_voxceleb2", "False", "--box", BOX)
        done = subprocess.run([sys.executable, "generate.py", *argv], cwd=REPO_ROOT, env=child_env(),
                              capture_output=True, text=True, timeout=120, preexec_fn=preexec)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith(f"error: no space left on the disk of '{folder}'")
        assert sorted(os.listdir(folder)) == ["filler"]


# ----------------------------------------------------------------------------------------------
# generate.py: one list run with every kind of bad line; the good ones are made once

LIST_LINES = {
    "good": "face face",
    "duplicate": "face face",
    "duplicate with extension": "face.mp4 face",
    "climbs out with ..": "../escape face",
    "absolute path": "{root}/face face",
    "one field": "just-one-field",
    "three fields": "a b c",
    "missing video": "face nope",
    "garbage video": "face garbage",
    "output is a folder": "face one",
}


@pytest.fixture(scope="module")
def list_run(media, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("list_run")
    samples = tmp / "samples"
    (samples / output_name("face", "one")).mkdir(parents=True)  # an item's output name taken by a folder
    (tmp / "escape.mp4").write_bytes(media["speech"].read_bytes())  # what '..' would reach
    filelist = tmp / "list.txt"
    filelist.write_text("".join(line.format(root=media["root"]) + "\n" for line in LIST_LINES.values()))
    argv = gen_flags(media, "--generate_from_filelist", "1", "--test_video_dir", str(media["root"]),
                     "--filelist", str(filelist), "--sample_path", str(samples),
                     "--is_voxceleb2", "False", "--box", BOX)
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "generate.py"), *argv], cwd=REPO_ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=300)
    return dict(code=proc.returncode, out=proc.stdout, err=proc.stderr, samples=samples, filelist=filelist, argv=argv)


@pytest.mark.parametrize("kind", list(LIST_LINES))
def test_filelist_lines(kind, list_run):
    line_no = list(LIST_LINES).index(kind) + 1
    err = list_run["err"]
    assert "Traceback" not in err
    assert list_run["code"] == 1  # some lines failed
    mentions = [line for line in err.splitlines() if f"{list_run['filelist']}:{line_no}:" in line]
    if kind == "good":
        assert not mentions
        assert probe_video(str(list_run["samples"] / output_name("face", "face"))).num_frames > 0
    elif kind.startswith("duplicate"):
        assert len(mentions) == 1 and mentions[0].startswith("duplicate: ") and "same output as line 1" in mentions[0]
    else:
        assert len(mentions) == 1 and mentions[0].startswith("failed: "), err
        expected = {"climbs out with ..": "leaves --test_video_dir", "absolute path": "leaves --test_video_dir",
                    "one field": "1 field", "three fields": "3 field", "missing video": "nope.mp4",
                    "garbage video": "garbage.mp4", "output is a folder": "is a folder"}[kind]
        assert expected in mentions[0]
    assert "summary: 1 generated, 0 skipped (already there), 7 failed, 2 duplicate line(s) done once" in list_run["out"]
    assert sorted(os.listdir(list_run["samples"])) == sorted([output_name("face", "face"), output_name("face", "one")])
    assert not hidden_files(list_run["samples"])


@pytest.mark.parametrize("existing", ["zero bytes", "garbage", "a finished video"])
def test_skip_existing_trusts_only_a_readable_video(existing, media, list_run, tmp_path, capsys):
    samples = tmp_path / "samples"
    samples.mkdir()
    name = output_name("face", "face")
    done = list_run["samples"] / name
    data = {"zero bytes": b"", "garbage": media["garbage"].read_bytes(), "a finished video": done.read_bytes()}[existing]
    (samples / name).write_bytes(data)
    filelist = tmp_path / "list.txt"
    filelist.write_text("face face\n")
    argv = gen_flags(media, "--generate_from_filelist", "1", "--test_video_dir", str(media["root"]),
                     "--filelist", str(filelist), "--sample_path", str(samples), "--skip_existing", "True",
                     "--is_voxceleb2", "False", "--box", BOX)
    assert cli.main(argv) == 0
    printed = capsys.readouterr()
    assert "Traceback" not in printed.err
    if existing == "a finished video":
        assert "0 generated, 1 skipped" in printed.out and (samples / name).read_bytes() == data
    else:
        made = probe_video(str(samples / name)).num_frames
        assert "1 generated, 0 skipped" in printed.out and made == probe_video(str(done)).num_frames
    assert os.listdir(samples) == [name]


# ----------------------------------------------------------------------------------------------
# generate.py: SIGTERM and SIGINT mid-run

def _start(argv):
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "generate.py"), *argv], cwd=REPO_ROOT, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"generate.py ended before the signal: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("generate.py did not reach the point to signal")
        time.sleep(0.02)


def test_sigterm_mid_clip_removes_the_temporary_output_and_frame_cache(media, tmp_path):
    """A still image over 8 s of audio: the frame cache exists from the start, the hidden video
    file from the first encoded packets; SIGTERM while both exist."""
    audio = tmp_path / "long.wav"
    save_wav(speech_like(8.0), audio, 16000)
    out_dir = tmp_path / "out"
    proc = _start(single(media, out_dir / "o.mp4", video=media["png"], audio=audio))
    _wait_for(lambda: len(hidden_files(out_dir)) >= 2, proc)  # .frames-*.u8 and .o.*.tmp.mp4
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, (stdout, stderr)
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "stopped by SIGTERM; unfinished outputs were removed, finished ones kept"
    assert os.listdir(out_dir) == []


def test_sigint_mid_list_reports_what_finished_and_keeps_it(media, tmp_path):
    audio = tmp_path / "long.wav"
    save_wav(speech_like(8.0), audio, 16000)
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(media["png"], data / "face.png")
    os.symlink(audio, data / "long.wav")
    os.symlink(media["speech"], data / "short.wav")
    filelist = tmp_path / "list.txt"
    filelist.write_text("short.wav face.png\nlong.wav face.png\nshort.wav face.png\n")
    samples = tmp_path / "samples"
    proc = _start(gen_flags(media, "--generate_from_filelist", "1", "--test_video_dir", str(data), "--filelist",
                            str(filelist), "--sample_path", str(samples), "--is_voxceleb2", "False", "--box", BOX))
    first = samples / output_name("short.wav", "face.png")
    second = samples / output_name("long.wav", "face.png")
    # Stop while the second item is being written (its hidden temporary output exists): the first
    # item's own temporary files (its frame cache) can outlive its output by a moment.
    _wait_for(lambda: first.exists() and any(os.path.basename(h).startswith(f".{second.stem}.")
                                             for h in hidden_files(samples)), proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "summary: 1 generated, 0 skipped (already there), 0 failed, 1 duplicate line(s) done once" in stdout
    assert "stopped by SIGINT" in stdout
    assert os.listdir(samples) == [first.name] and probe_video(str(first)).num_frames == 5


# ----------------------------------------------------------------------------------------------
# dataset/preprocess.py

def pre(*argv):
    return preprocess.main([*map(str, argv), "--progress", "False"])


@pytest.fixture(scope="module")
def pre_tree(media, tmp_path_factory):
    root = tmp_path_factory.mktemp("pre_tree")
    (root / "id001" / "v").mkdir(parents=True)
    render(root / "id001" / "v" / "00001.mp4", n_frames=12)
    return root


PREPROCESS_FLAG_CASES = [
    (["--layout", "kinetics"], "--layout 'kinetics': expected one of"),
    (["--is_voxceleb2", "maybe"], "--is_voxceleb2 'maybe': expected True, False or auto"),
    (["--pads", "1,2"], "--pads '1,2' must be four"),
    (["--image_size", "0"], "--image_size 0"),
    (["--image_size", "4"], "--image_size 4"),
    (["--min_frames", "1"], "--min_frames 1: expected a value >= 2"),
    (["--val_fraction", "1"], "--val_fraction 1.0"),
    (["--val_fraction", "-0.1"], "--val_fraction -0.1"),
    (["--num_workers", "0"], "--num_workers 0"),
    (["--face_det_batch_size", "0"], "--face_det_batch_size 0"),
    (["--device", "banana"], "--device 'banana'"),
    (["--seed", "x"], "--seed: invalid int value"),
]


@pytest.mark.parametrize("extra, needle", PREPROCESS_FLAG_CASES, ids=[" ".join(c[0]) for c in PREPROCESS_FLAG_CASES])
def test_preprocess_flag_values(extra, needle, pre_tree, tmp_path, capsys, no_networks):
    assert pre("--input_root", pre_tree, "--output_root", tmp_path / "out", *extra) == 1
    one_error_line(capsys, needle)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("case", ["no input flag", "input missing", "input is a file", "input without videos",
                                  "no output flag", "output is a file", "output under a file", "output cannot be written",
                                  "train list missing", "train list is a folder", "train list not UTF-8",
                                  "val list not UTF-8"])
def test_preprocess_paths(case, media, pre_tree, tmp_path, capsys, no_networks):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    argv, needle = {
        "no input flag": (["--output_root", out], "--input_root is required"),
        "input missing": (["--input_root", tmp_path / "nope", "--output_root", out], "is not a folder"),
        "input is a file": (["--input_root", blocker, "--output_root", out], "is not a folder"),
        "input without videos": (["--input_root", tmp_path / "empty", "--output_root", out], "no videos"),
        "no output flag": (["--input_root", pre_tree], "--output_root is required"),
        "output is a file": (["--input_root", pre_tree, "--output_root", blocker], "--output_root: "),
        "output under a file": (["--input_root", pre_tree, "--output_root", blocker / "o"], "cannot be created"),
        "output cannot be written": (["--input_root", pre_tree, "--output_root", UNWRITABLE], "cannot be written"),
        "train list missing": (["--input_root", pre_tree, "--output_root", out, "--train_list", tmp_path / "n.txt"],
                               "--train_list"),
        "train list is a folder": (["--input_root", pre_tree, "--output_root", out, "--train_list", media["folder"]],
                                   "is a folder"),
        "train list not UTF-8": (["--input_root", pre_tree, "--output_root", out, "--train_list", media["latin1"]],
                                 "--train_list"),
        "val list not UTF-8": (["--input_root", pre_tree, "--output_root", out, "--val_list", media["latin1"]],
                               "--val_list"),
    }[case]
    assert pre(*argv) == 1
    one_error_line(capsys, needle)
    assert sorted(os.listdir(tmp_path)) == ["a_file", "empty"]


@pytest.fixture(scope="module")
def pre_run(media, tmp_path_factory):
    """A tree of one good clip and every kind of unusable one, preprocessed once."""
    root = tmp_path_factory.mktemp("pre_bad")
    for name in ("good", "audioless", "short", "garbage", "empty"):
        (root / "id001" / name).mkdir(parents=True)
    render(root / "id001" / "good" / "00001.mp4", n_frames=12)
    render(root / "id001" / "audioless" / "00001.mp4", n_frames=12, with_audio=False)
    render(root / "id001" / "short" / "00001.mp4", n_frames=2)
    (root / "id001" / "garbage" / "00001.mp4").write_bytes(media["garbage"].read_bytes())
    (root / "id001" / "empty" / "00001.mp4").write_bytes(b"")
    out = tmp_path_factory.mktemp("pre_out")
    code = pre("--input_root", root, "--output_root", out, "--image_size", "32", "--val_fraction", "0")
    import json

    return dict(code=code, out=out, report=json.loads((out / "report.json").read_text()))


@pytest.mark.parametrize("clip, reason", [("audioless", "no audio track"), ("short", "too short"),
                                          ("garbage", "could not be decoded"), ("empty", "could not be decoded")])
def test_preprocess_reports_unusable_clips_and_goes_on(clip, reason, pre_run):
    assert pre_run["code"] == 0
    reasons = {s["clip"]: s["reason"] for s in pre_run["report"]["skipped"]}
    assert reason in reasons[f"id001/{clip}/00001"]
    assert pre_run["report"]["done"] == 1
    assert not hidden_files(pre_run["out"])


# ----------------------------------------------------------------------------------------------
# evaluate.py

@pytest.fixture(scope="module")
def eval_dirs(media, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    real = root / "real"
    (real / "a").mkdir(parents=True)
    render(real / "a" / "00001.mp4", n_frames=6)
    render(real / "a" / "00002.mp4", n_frames=6, seed=1)
    generated = root / "generated"
    generated.mkdir()
    render(generated / output_name("a/00001", "a/00001"), n_frames=6, seed=2)
    render(generated / output_name("a/00002", "a/00002"), n_frames=6, size=48)  # another size
    filelist = root / "recon.txt"
    filelist.write_text("a/00001 a/00001\na/00001 a/00001\na/00002 a/00002\n../real/a/00001 a/00001\n")
    return dict(root=root, real=real, generated=generated, filelist=filelist)


def eval_flags(d, out, *extra, **paths):
    flags = {"--filelist": d["filelist"], "--real_root": d["real"], "--generated_root": d["generated"],
             "--output_dir": out, **{f"--{k}": v for k, v in paths.items()}}
    return [*(str(x) for kv in flags.items() for x in kv), "--metrics", "ssim,psnr", "--progress", "False", *extra]


EVALUATE_FLAG_CASES = [
    (["--mode", "both"], "--mode 'both': expected one of reconstruction, cross"),
    (["--metrics", "bleu"], "--metrics 'bleu': unknown bleu"),
    (["--metrics", ","], "--metrics ',': unknown empty list"),
    (["--batch_size", "0"], "--batch_size 0"),
    (["--face_track", "box"], "--face_track 'box'"),
    (["--face_track", "x"], "--face_track 'x'"),
    (["--device", "banana"], "--device 'banana'"),
    (["--is_voxceleb2", "perhaps"], "--is_voxceleb2: expected a boolean"),
]


@pytest.mark.parametrize("extra, needle", EVALUATE_FLAG_CASES, ids=[" ".join(c[0]) for c in EVALUATE_FLAG_CASES])
def test_evaluate_flag_values(extra, needle, eval_dirs, tmp_path, capsys, no_networks):
    assert evaluate.main(eval_flags(eval_dirs, tmp_path / "out", *extra)) == 1
    one_error_line(capsys, needle)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("case", ["filelist missing", "filelist not UTF-8", "filelist empty", "filelist is a folder",
                                  "real root missing", "real root is a file", "generated root missing",
                                  "generated root is a file", "output is a file", "output under a file",
                                  "output cannot be written", "no filelist flag"])
def test_evaluate_paths(case, media, eval_dirs, tmp_path, capsys, no_networks):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    change, needle = {
        "filelist missing": (dict(filelist=tmp_path / "n.txt"), "not found"),
        "filelist not UTF-8": (dict(filelist=media["latin1"]), "not UTF-8"),
        "filelist empty": (dict(filelist=media["empty_list"]), "is empty"),
        "filelist is a folder": (dict(filelist=media["folder"]), "is a folder"),
        "real root missing": (dict(real_root=tmp_path / "nope"), "--real_root"),
        "real root is a file": (dict(real_root=blocker), "--real_root"),
        "generated root missing": (dict(generated_root=tmp_path / "nope"), "--generated_root"),
        "generated root is a file": (dict(generated_root=blocker), "--generated_root"),
        "output is a file": (dict(output_dir=blocker), "--output_dir: "),
        "output under a file": (dict(output_dir=blocker / "o"), "cannot be created"),
        "output cannot be written": (dict(output_dir=UNWRITABLE), "cannot be written"),
        "no filelist flag": (dict(filelist=""), "--filelist is required"),
    }[case]
    paths = {k: v for k, v in change.items() if k != "output_dir"}
    out = change.get("output_dir", tmp_path / "out")
    assert evaluate.main(eval_flags(eval_dirs, out, **paths)) == 1
    one_error_line(capsys, needle)
    assert os.listdir(tmp_path) == ["a_file"]


@pytest.fixture(scope="module")
def eval_run(eval_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_out")
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "evaluate.py"), *eval_flags(eval_dirs, out)], cwd=REPO_ROOT,
                          env=child_env(), capture_output=True, text=True, timeout=300)
    return dict(code=proc.returncode, out=proc.stdout, err=proc.stderr, dir=out)


@pytest.mark.parametrize("kind", ["scored", "duplicate", "other size", "climbs out"])
def test_evaluate_lines(kind, eval_run, eval_dirs):
    err = eval_run["err"]
    assert "Traceback" not in err and eval_run["code"] == 1
    line_no = {"scored": 1, "duplicate": 2, "other size": 3, "climbs out": 4}[kind]
    mentions = [line for line in err.splitlines() if f"{eval_dirs['filelist']}:{line_no}:" in line]
    if kind == "scored":
        assert not mentions
    elif kind == "duplicate":
        assert len(mentions) == 1 and mentions[0].startswith("duplicate: ")
    else:
        assert len(mentions) == 1 and mentions[0].startswith("failed: ")
        assert {"other size": "is 48x48 but the real clip", "climbs out": "leaves --real_root"}[kind] in mentions[0]
    assert "1 clips scored, 2 failed" in eval_run["out"]
    assert not hidden_files(eval_run["dir"])


# ----------------------------------------------------------------------------------------------
# train.py: flag values refused before any network; broken clips reported and replaced

TRAIN_FLAG_CASES = [
    (["--batch_size", "0"], "--batch_size 0: expected a value >= 1"),
    (["--lr", "-1"], "--lr -1.0: expected a value >= 0"),
    (["--save_every", "0"], "--save_every 0: expected a value >= 1"),
    (["--log_every", "0"], "--log_every 0: expected a value >= 1"),
    (["--num_workers", "-1"], "--num_workers -1: expected a value >= 0"),
    (["--ema_rate", "1.5"], "--ema_rate 1.5"),
    (["--num_channels", "16"], "--num_channels 16 with --channel_mult 1,2 gives levels of [16, 32] channels"),
]


@pytest.fixture(scope="module")
def train_root(tmp_path_factory):
    """A real preprocessed root of 4 clips: one without mel.npy, one whose crops are garbage."""
    from helpers import make_preprocessed_root

    root = tmp_path_factory.mktemp("train_root")
    names = make_preprocessed_root(root, n_clips=4, n_frames=14, image_size=32, val_clips=0)
    os.remove(root / "clips" / names[1] / "mel.npy")
    for i in range(14):
        (root / "clips" / names[2] / f"{i:05d}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root, names


def train_flags(root, out, *extra):
    return [*TINY_CLI_FLAGS, "--data_root", str(root), "--output_dir", str(out), "--batch_size", "2", "--num_workers", "0",
            "--lambda_sync", "0", "--lambda_lpips", "0", "--max_steps", "2", "--log_every", "1", *extra]


@pytest.mark.parametrize("extra, needle", TRAIN_FLAG_CASES, ids=[" ".join(c[0]) for c in TRAIN_FLAG_CASES])
def test_train_flag_values_are_refused_before_any_network(extra, needle, train_root, tmp_path, capsys, monkeypatch):
    import train
    from training import diff2lip

    def built(*args, **kwargs):
        raise AssertionError("a network was built before the bad flag was refused")

    monkeypatch.setattr(diff2lip, "tfg_create_model_and_diffusion", built)
    assert train.main(train_flags(train_root[0], tmp_path / "out", *extra)) == 1
    one_error_line(capsys, needle)
    assert os.listdir(tmp_path) == []


def test_train_on_a_root_with_a_clip_without_mel_and_one_with_broken_crops_reports_and_goes_on(train_root, tmp_path):
    root, names = train_root
    proc = subprocess.run([sys.executable, "train.py", *train_flags(root, tmp_path / "out")], cwd=REPO_ROOT,
                          env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert f"skipping broken clip '{names[1]}'" in proc.stderr and "mel.npy is missing or unreadable" in proc.stderr
    assert f"skipping broken sample of clip {names[2]}" in proc.stderr
    assert os.path.exists(tmp_path / "out" / "checkpoint_0000002.pt")
