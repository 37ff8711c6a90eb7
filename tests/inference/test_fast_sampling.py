"""The fast samplers through generate.py / generate_dist.py: flags, determinism, process splits."""

import sys

import numpy as np
import pytest
import torch

from audio.audio import save_wav
from dataset.synthetic import speech_like
from dataset.video_io import iter_frames
from guided_diffusion.script_util import create_gaussian_diffusion
from helpers import TINY_CLI_FLAGS, render_clip, save_tiny_checkpoint
from inference.cli import main
from launchers import REPO_ROOT, run, torchrun

BOX = "40,200,50,174"
SOLVER = ["--sampler", "dpm++2m", "--sampling_steps", "3", "--cache_interval", "2", "--cache_depth", "2"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("fast")
    checkpoint = root / "tiny.pt"
    save_tiny_checkpoint(checkpoint)
    video = root / "face.mp4"
    render_clip(video, n_frames=12)
    audio = root / "speech.wav"
    save_wav(speech_like(0.48), audio, 16000)
    return checkpoint, video, audio


def single(assets, out, *extra):
    checkpoint, video, audio = assets
    return [*TINY_CLI_FLAGS, "--model_path", str(checkpoint), "--progress", "False", "--sampling_batch_size", "5",
            "--generate_from_filelist", "0", "--video_path", str(video), "--audio_path", str(audio),
            "--out_path", str(out), "--is_voxceleb2", "False", "--box", BOX, *extra]


def decoded(path):
    return np.stack(list(iter_frames(str(path), 25)))


def test_solver_counts_its_network_passes_and_is_repeatable(assets, tmp_path, monkeypatch):
    import guided_diffusion.unet as unet

    calls = []
    forward = unet.TFGModel.forward
    monkeypatch.setattr(unet.TFGModel, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    assert main(single(assets, tmp_path / "a.mp4", "--sampler", "dpm++2m", "--sampling_steps", "3")) == 0
    # 9 frames in chunks of 5 and 4: 3 passes per chunk.
    assert len(calls) == 2 * 3
    assert main(single(assets, tmp_path / "b.mp4", "--sampler", "dpm++2m", "--sampling_steps", "3")) == 0
    assert np.array_equal(decoded(tmp_path / "a.mp4"), decoded(tmp_path / "b.mp4"))
    assert main(single(assets, tmp_path / "c.mp4")) == 0  # the released DDIM differs
    assert not np.array_equal(decoded(tmp_path / "a.mp4"), decoded(tmp_path / "c.mp4"))


def test_solver_with_feature_reuse_split_over_two_processes_equals_one(assets, tmp_path):
    one, two = tmp_path / "one.mp4", tmp_path / "two.mp4"
    code, output = run([sys.executable, str(REPO_ROOT / "generate.py"), *single(assets, one, *SOLVER)], timeout=300)
    assert code == 0, output
    code, output = run([*torchrun(2), str(REPO_ROOT / "generate_dist.py"), *single(assets, two, *SOLVER)], timeout=300)
    assert code == 0, output
    a, b = decoded(one), decoded(two)
    assert a.shape[0] == 9 and np.array_equal(a, b)


@pytest.mark.parametrize("respacing, timesteps", [("ddim2", [500, 0]), ("ddim1", [500])])
def test_a_checkpoint_with_flags_samples_without_architecture_flags(assets, tmp_path, monkeypatch, capsys, respacing, timesteps):
    """A student's file says its network and its step count; generate.py needs neither flag. The
    1-step student's file (ddim1) makes one network pass per chunk, at ddim2's top step."""
    import guided_diffusion.unet as unet
    from guided_diffusion.script_util import tfg_create_model_and_diffusion
    from helpers import TINY_FLAGS, randomize_zero_init

    flags = {**TINY_FLAGS, "predict_xstart": True, "timestep_respacing": respacing, "use_ddim": True}
    model, _ = tfg_create_model_and_diffusion(**{k: v for k, v in flags.items() if k != "use_ddim"})
    randomize_zero_init(model)
    student = tmp_path / "student.pt"
    torch.save({"model": model.state_dict(), "flags": flags}, student)
    _, video, audio = assets
    steps = []
    forward = unet.TFGModel.forward
    monkeypatch.setattr(unet.TFGModel, "forward", lambda self, x, t, **k: steps.append(int(t[0])) or forward(self, x, t, **k))
    argv = ["--model_path", str(student), "--progress", "False", "--generate_from_filelist", "0",
            "--video_path", str(video), "--audio_path", str(audio), "--out_path", str(tmp_path / "out.mp4"),
            "--is_voxceleb2", "False", "--box", BOX]
    assert main(argv) == 0
    assert steps == timesteps  # of 1000 steps, one chunk of 9 frames
    assert "--image_size 32" in capsys.readouterr().out
    assert main([*argv, "--num_channels", "64"]) == 1
    assert "contradicts" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--sampler", "euler"], "--sampler"),
        (["--sampling_steps", "0"], "--sampling_steps"),
        (["--solver_spacing", "log"], "--solver_spacing"),
        (["--sampler", "dpm++2m", "--sampling_steps", "9999"], "--sampling_steps"),
        (["--sampler", "dpm++2m", "--sampling_steps", "1"], "--solver_spacing trailing"),
        (["--cache_interval", "0"], "--cache_interval"),
        (["--cache_depth", "0"], "--cache_depth"),
    ],
)
def test_bad_sampler_flags_are_one_line_errors_before_any_output(assets, tmp_path, capsys, flags, named):
    assert main(single(assets, tmp_path / "x.mp4", *flags)) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and named in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_ddim_flags_keep_the_released_sampler(assets):
    """--sampler ddim (the default) samples exactly with the respaced diffusion's DDIM loop."""
    from inference.lipsync import LipSyncer, SamplingOptions
    from inference.options import create_parser

    args = create_parser().parse_args(single(assets, "unused.mp4"))
    opts = SamplingOptions.from_args(args)
    assert opts.sampler == "ddim" and opts.cache_interval == 1

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))  # the loop reads the device from it
            self.seen = []

        def forward(self, x, t, **kwargs):
            self.seen.append((int(t[0]), sorted(kwargs)))
            return torch.zeros(x.shape[0], 6, *x.shape[2:])

    model = Recorder()
    syncer = LipSyncer(model, create_gaussian_diffusion(timestep_respacing="ddim25"), opts, torch.device("cpu"))

    class Batch:
        x_start = noise = torch.zeros(2, 3, 8, 8)
        model_kwargs = {"cond_img": torch.zeros(2, 3, 8, 8)}

    syncer.sample(Batch())
    assert [t for t, _ in model.seen] == list(range(960, -1, -40))
    assert all(keys == ["cond_img"] for _, keys in model.seen)  # no feature cache is passed
