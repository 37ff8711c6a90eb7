"""Tests for scripts.export_checkpoint (training.export): training checkpoints become release files that generate.py and
train.py load, half the size in float16, with one-line errors for what cannot be exported."""

import os

import pytest
import torch

from guided_diffusion.checkpoint_format import load_model_weights, network_flags, read_metadata
from guided_diffusion.script_util import tfg_create_model_and_diffusion, tfg_model_and_diffusion_defaults
from helpers import TINY_FLAGS, randomize_zero_init
from scripts import export_checkpoint
from training.syncnet import SyncNet64, load_sync_expert, save_syncnet_checkpoint


def tiny_model(seed):
    torch.manual_seed(seed)
    model, _ = tfg_create_model_and_diffusion(**TINY_FLAGS)
    randomize_zero_init(model, seed)
    return model.eval()


@pytest.fixture
def train_checkpoint(tmp_path):
    """A train.py-style checkpoint whose EMA and raw weights differ."""
    model, ema = tiny_model(0), tiny_model(1)
    path = tmp_path / "checkpoint_0000010.pt"
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": {}, "step": 10, "args": TRAIN_ARGS}, path)
    return path, model, ema


TRAIN_ARGS = {**tfg_model_and_diffusion_defaults(), **TINY_FLAGS, "data_root": "data/vox_pre", "init_from": "",
              "timestep_respacing": "", "lr": 1e-4}


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_network_file_carries_the_training_flags(train_checkpoint, tmp_path, suffix):
    path, _, ema = train_checkpoint
    out = tmp_path / f"mine{suffix}"
    assert export_checkpoint.main(["--checkpoint", str(path), "--out", str(out)]) == 0
    flags, trained_on = read_metadata(str(out))
    assert flags == network_flags(TRAIN_ARGS) and flags["num_channels"] == 32 and flags["image_size"] == 32
    assert trained_on == {"data_root": "data/vox_pre", "steps": 10}
    if suffix == ".pt":
        assert set(torch.load(out, weights_only=True)) == {"model", "flags", "trained_on"}
    fresh = tiny_model(5)
    load_model_weights(fresh, str(out))
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in ema.state_dict().items())


def test_generate_needs_no_architecture_flags_for_an_exported_file(train_checkpoint, tmp_path, capsys):
    """The tiny network (32 px, 32 channels, ...) sampled from a .safetensors export with only
    the media and sampling flags on the command line."""
    from audio.audio import save_wav
    from dataset.synthetic import speech_like
    from dataset.video_io import probe_video
    from helpers import render_clip
    from inference.cli import main

    path, _, _ = train_checkpoint
    out = tmp_path / "mine.safetensors"
    assert export_checkpoint.main(["--checkpoint", str(path), "--out", str(out)]) == 0
    video, audio, result = tmp_path / "face.mp4", tmp_path / "speech.wav", tmp_path / "result.mp4"
    render_clip(video, n_frames=6)
    save_wav(speech_like(1.0), audio, 16000)  # longer than the video: the video's 6 frames
    assert main(["--model_path", str(out), "--timestep_respacing", "ddim2", "--generate_from_filelist", "0",
                 "--video_path", str(video), "--audio_path", str(audio), "--out_path", str(result),
                 "--is_voxceleb2", "False", "--box", "40,200,50,174", "--progress", "False"]) == 0
    assert probe_video(str(result)).num_frames == 6
    # a contradicting architecture flag names both values
    capsys.readouterr()
    assert main(["--model_path", str(out), "--num_channels", "64", "--generate_from_filelist", "0", "--video_path", str(video),
                 "--audio_path", str(audio), "--out_path", str(tmp_path / "other.mp4")]) != 0
    error = capsys.readouterr().err.strip()
    assert "--num_channels 64 contradicts" in error and "--num_channels 32" in error and "\n" not in error


@pytest.mark.parametrize("weights", ["ema", "model"])
def test_train_checkpoint_to_a_plain_state_dict(train_checkpoint, tmp_path, weights):
    path, model, ema = train_checkpoint
    source = ema if weights == "ema" else model
    out = tmp_path / "release" / "mine.pt"
    assert export_checkpoint.main(["--checkpoint", str(path), "--out", str(out), "--weights", weights, "--plain", "True"]) == 0
    state = torch.load(out, weights_only=True)
    assert list(state) == list(source.state_dict())
    for k, v in source.state_dict().items():
        assert torch.equal(state[k], v), k
    # generate.py's loader takes it into a fresh network.
    fresh = tiny_model(5)
    load_model_weights(fresh, str(out))
    for k, v in source.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_half_precision_halves_the_size_and_loads_into_float32(train_checkpoint, tmp_path):
    path, _, ema = train_checkpoint
    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    assert export_checkpoint.main(["--checkpoint", str(path), "--out", str(full)]) == 0
    assert export_checkpoint.main(["--checkpoint", str(path), "--out", str(half), "--half", "True"]) == 0
    assert os.path.getsize(half) < 0.55 * os.path.getsize(full)
    state = torch.load(half, weights_only=True)["model"]
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    fresh = tiny_model(5)
    load_model_weights(fresh, str(half))
    for k, v in ema.state_dict().items():
        assert fresh.state_dict()[k].dtype == torch.float32
        torch.testing.assert_close(fresh.state_dict()[k], v.half().float(), rtol=0, atol=0)


def test_syncnet_checkpoint_keeps_its_kind(tmp_path):
    torch.manual_seed(0)
    net = SyncNet64()
    path = tmp_path / "syncnet_best.pt"
    save_syncnet_checkpoint(path, net, kind="syncnet64", opt={}, step=3, best_val_acc=0.9)
    out = tmp_path / "expert.pt"
    assert export_checkpoint.main(["--checkpoint", str(path), "--out", str(out), "--half", "True"]) == 0
    assert set(torch.load(out, weights_only=True)) == {"kind", "model"}
    expert = load_sync_expert(out)
    assert expert.kind == "syncnet64"
    for k, v in net.state_dict().items():
        expected = v.half().float() if v.is_floating_point() else v
        torch.testing.assert_close(expert.net.state_dict()[k], expected, rtol=0, atol=0)


def test_errors_are_one_line(tmp_path, capsys):
    torch.save({"model": tiny_model(0).state_dict(), "step": 3}, tmp_path / "no_ema.pt")
    (tmp_path / "photo.png").write_bytes(b"\x89PNG not a checkpoint")
    torch.save({"kind": "syncnet64", "model": {}}, tmp_path / "syncnet.pt")
    cases = [
        ([], "--checkpoint and --out are required"),
        (["--checkpoint", str(tmp_path / "missing.pt"), "--out", "x.pt"], "not found"),
        (["--checkpoint", str(tmp_path / "photo.png"), "--out", "x.pt"], "photo.png"),
        (["--checkpoint", str(tmp_path / "no_ema.pt"), "--out", "x.pt"], "has no EMA weights; pass --weights model"),
        (["--checkpoint", str(tmp_path / "no_ema.pt"), "--out", "x.pt", "--weights", "best"], "--weights 'best'"),
        (["--checkpoint", str(tmp_path / "no_ema.pt"), "--out", str(tmp_path)],
         f"is a folder; give a file name such as '{tmp_path}/network.pt'"),
        (["--checkpoint", str(tmp_path / "no_ema.pt"), "--out", str(tmp_path / "no_ema.pt")], "would destroy the input"),
        (["--checkpoint", str(tmp_path / "syncnet.pt"), "--out", "x.pt", "--note", "hi"], "takes no Diff2Lip flags or --note"),
        (["--checkpoint", str(tmp_path / "no_ema.pt"), "--out", "x.onnx", "--weights", "model"],
         "--out 'x.onnx': network files are written as .pt (torch) or .safetensors, not .onnx; name it e.g. 'x.pt'"),
    ]
    for argv, message in cases:
        assert export_checkpoint.main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
        assert "weights_only=False" not in err
    assert not os.path.exists("x.pt") and not os.path.exists("x.onnx")


@pytest.mark.parametrize("source_suffix, out_suffix", [(".pt", ".safetensors"), (".safetensors", ".pt")])
def test_a_network_file_re_exports_with_its_flags_and_note(train_checkpoint, tmp_path, source_suffix, out_suffix):
    """Another format or float16: the flags and what it was trained on go along."""
    path, _, ema = train_checkpoint
    first, second = tmp_path / f"first{source_suffix}", tmp_path / f"second{out_suffix}"
    assert export_checkpoint.main(["--checkpoint", str(path), "--out", str(first), "--note", "synthetic heads only"]) == 0
    assert export_checkpoint.main(["--checkpoint", str(first), "--out", str(second), "--half", "True"]) == 0
    assert read_metadata(str(second)) == read_metadata(str(first))
    assert read_metadata(str(second))[1]["note"] == "synthetic heads only"
    fresh = tiny_model(5)
    load_model_weights(fresh, str(second))
    assert all(torch.equal(fresh.state_dict()[k], v.half().float()) for k, v in ema.state_dict().items() if v.is_floating_point())
