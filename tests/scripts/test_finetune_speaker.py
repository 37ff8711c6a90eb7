"""scripts/finetune_speaker.py as a user runs it: a folder of one speaker's real H.264 + AAC videos,
a network file and an expert in the real formats (a tiny network, random weights) -> face crops
at the network's size, a fine-tuning run with all five losses, an exported network with the
file's flags that generate.py lip-syncs the speaker with; a rerun resumes instead of training
again, and bad input is one line."""

import json

import numpy as np
import pytest
import torch

from dataset.video_io import probe_video
from guided_diffusion.checkpoint_format import network_flags, save_network
from guided_diffusion.script_util import tfg_create_model_and_diffusion, tfg_model_and_diffusion_defaults
from helpers import TINY_FLAGS, randomize_zero_init, render_clip
from inference import cli
from scripts import finetune_speaker

FLAGS = network_flags({**tfg_model_and_diffusion_defaults(), **TINY_FLAGS, "image_size": 64, "predict_xstart": True})


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def test_fine_tunes_a_network_on_one_speaker_and_generates_with_it(tmp_path, capsys):
    from training.syncnet import SyncNet64, save_syncnet_checkpoint

    videos = tmp_path / "alice"
    (videos / "day2").mkdir(parents=True)
    render_clip(videos / "talk1.mp4", n_frames=14, seed=1)
    render_clip(videos / "day2" / "talk2.mov", n_frames=12, seed=2)  # any depth, any container
    torch.manual_seed(0)
    model, _ = tfg_create_model_and_diffusion(**FLAGS)
    randomize_zero_init(model)
    net = tmp_path / "net.pt"
    save_network(str(net), model.state_dict(), FLAGS)
    expert = tmp_path / "expert.pt"
    save_syncnet_checkpoint(expert, SyncNet64(), kind="syncnet64")
    out = tmp_path / "out"
    argv = ["--videos", str(videos), "--checkpoint", str(net), "--sync_expert", str(expert), "--output_dir", str(out),
            "--steps", "2", "--batch_size", "1", "--num_workers", "0", "--lpips_backbone", "random",
            "--is_voxceleb2", "True", "--progress", "False"]
    assert finetune_speaker.main(argv) == 0
    log = capsys.readouterr().out
    assert "1/3 face crops" in log and "3/3 export" in log

    # Both videos cropped at the network's 64 px, all for training.
    crops = out / "crops"
    assert len((crops / "train.txt").read_text().split()) == 2 and (crops / "val.txt").read_text().strip() == ""
    meta = json.loads(next((crops / "clips").rglob("meta.json")).read_text())
    assert meta["image_size"] == 64
    # Fine-tuned with every loss, from the file's weights: the exported EMA moved away from them.
    header, *rows = (out / "train" / "progress.csv").read_text().splitlines()
    assert {"simple", "l2", "sync", "lpips", "gan"} <= set(header.split(","))
    saved = torch.load(out / "speaker.pt", weights_only=True)
    assert saved["flags"]["image_size"] == 64 and saved["flags"]["predict_xstart"] is True
    assert "fine-tuned on one speaker" in saved["trained_on"]["note"]
    start = model.state_dict()
    moved = [k for k, v in saved["model"].items() if not torch.equal(v.float(), start[k].float())]
    assert moved and set(saved["model"]) == set(start)

    result = tmp_path / "alice_synced.mp4"
    assert cli.main(["--model_path", str(out / "speaker.pt"), "--generate_from_filelist", "0",
                     "--video_path", str(videos / "talk1.mp4"), "--audio_path", str(videos / "day2" / "talk2.mov"),
                     "--out_path", str(result), "--is_voxceleb2", "True", "--timestep_respacing", "ddim2",
                     "--precision", "fp32", "--progress", "False"]) == 0
    info = probe_video(str(result))
    assert (info.width, info.height, info.has_audio) == (224, 224, True) and info.num_frames >= 10

    # A rerun resumes: the two steps are done, nothing is trained again, the export is the same.
    before = (out / "train" / "progress.csv").read_text()
    assert finetune_speaker.main(argv) == 0
    assert (out / "train" / "progress.csv").read_text() == before
    again = torch.load(out / "speaker.pt", weights_only=True)["model"]
    assert all(torch.equal(again[k], v) for k, v in saved["model"].items())


@pytest.mark.parametrize("which, message", [
    ("videos", "--videos '{p}/missing' is not a folder"),
    ("checkpoint", "--checkpoint '{p}/missing' not found; the released one: python -m scripts.fetch_weights"),
])
def test_bad_input_is_one_line(tmp_path, capsys, which, message):
    (tmp_path / "v").mkdir()
    argv = {"videos": str(tmp_path / "v"), "checkpoint": str(tmp_path / "net.pt")}
    (tmp_path / "net.pt").write_bytes(b"")
    argv[which] = str(tmp_path / "missing")
    assert finetune_speaker.main(["--videos", argv["videos"], "--checkpoint", argv["checkpoint"],
                                  "--output_dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message.format(p=tmp_path)}"), err
    assert not (tmp_path / "out").exists()


def test_defaults_are_a_fine_tunings():
    defaults = finetune_speaker.finetune_defaults()
    assert defaults["lr"] == pytest.approx(1e-5) and defaults["is_voxceleb2"] == "False"
    assert np.isclose(defaults["ema_rate"], 0.99) and defaults["steps"] == 500
