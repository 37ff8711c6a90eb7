"""256 px through every command, as a user runs them: preprocess at --image_size 256, a step of
scripts.train_syncnet on those crops (SyncNet128 reads their lower halves resized to 64x128),
lift a 128 px network file with train.py --init_from --image_size 256 (all losses on, that
expert among them), export, generate a 256 px clip and paste it back.
Tiny channel counts keep it to seconds per command; the official widths' cost is in
benchmarks/bench_resolution.py."""

import json

import numpy as np
import pytest
import torch

import train
from dataset import preprocess
from dataset.video_io import iter_frames, probe_video
from guided_diffusion.checkpoint_format import network_flags, save_network
from guided_diffusion.script_util import tfg_create_model_and_diffusion, tfg_model_and_diffusion_defaults
from helpers import randomize_zero_init, render_clip
from inference import cli
from scripts import export_checkpoint, train_syncnet

# The released 128 px levels (1, 1, 2, 3, 4) and attention at 32, 16, 8 px, at a quarter of the width.
TINY128 = {**tfg_model_and_diffusion_defaults(), "num_channels": 32, "num_res_blocks": 1, "num_head_channels": 16}


@pytest.mark.slow
def test_preprocess_lift_train_export_generate_at_256_px(tmp_path, capsys):
    videos = tmp_path / "vox"
    for c in range(2):
        (videos / f"id{c:03d}" / "v0").mkdir(parents=True)
        render_clip(videos / f"id{c:03d}" / "v0" / "00001.mp4", n_frames=10, seed=c)
    crops = tmp_path / "pre"
    assert preprocess.main(["--input_root", str(videos), "--output_root", str(crops), "--image_size", "256",
                            "--is_voxceleb2", "True", "--val_fraction", "0", "--progress", "False"]) == 0
    clip = crops / "clips" / "id000" / "v0" / "00001"
    assert json.loads((clip / "meta.json").read_text())["image_size"] == 256
    import cv2

    assert cv2.imread(str(clip / "00000.jpg")).shape == (256, 256, 3)

    torch.manual_seed(0)
    small, _ = tfg_create_model_and_diffusion(**TINY128)
    randomize_zero_init(small)
    net128 = tmp_path / "net128.pt"
    save_network(str(net128), small.state_dict(), network_flags(TINY128))
    assert train_syncnet.main(["--data_root", str(crops), "--output_dir", str(tmp_path / "sync"), "--batch_size", "2",
                               "--max_steps", "1", "--val_every", "0", "--num_workers", "0", "--min_offset", "3"]) == 0
    expert = tmp_path / "sync" / "syncnet_0000001.pt"
    run = tmp_path / "run"
    assert train.main(["--data_root", str(crops), "--output_dir", str(run), "--init_from", str(net128),
                       "--image_size", "256", "--sync_expert", str(expert), "--lpips_backbone", "random",
                       "--batch_size", "1", "--num_workers", "0", "--max_steps", "1", "--log_every", "1"]) == 0
    out = capsys.readouterr().out
    assert "lifted 128 px -> 256 px: carried" in out
    progress = (run / "progress.csv").read_text().splitlines()
    header, row = progress[0].split(","), progress[1].split(",")
    assert {"simple", "l2", "sync", "lpips", "gan"} <= set(header)
    assert all(np.isfinite(float(row[header.index(k)])) for k in ("simple", "sync", "lpips", "gan"))

    net256 = tmp_path / "net256.pt"
    assert export_checkpoint.main(["--checkpoint", str(run / "checkpoint_0000001.pt"), "--out", str(net256)]) == 0
    stored = torch.load(net256, weights_only=True)["flags"]
    assert (stored["image_size"], stored["channel_mult"]) == (256, "1,1,1,2,3,4")

    result = tmp_path / "out.mp4"
    video = videos / "id001" / "v0" / "00001.mp4"
    assert cli.main(["--model_path", str(net256), "--generate_from_filelist", "0", "--video_path", str(video),
                     "--audio_path", str(videos / "id000" / "v0" / "00001.mp4"), "--out_path", str(result),
                     "--is_voxceleb2", "True", "--sampler", "dpm++2m", "--sampling_steps", "2",
                     "--precision", "fp32", "--progress", "False"]) == 0
    info = probe_video(str(result))
    assert (info.width, info.height, info.has_audio) == (224, 224, True) and info.num_frames >= 8
    # Paste-back: the upper face comes back from the source video (only the lower half is
    # repainted), so the rows above the mask stay close to the source.
    source, generated = next(iter_frames(str(video))), next(iter_frames(str(result)))
    top = slice(0, 60)
    diff = np.abs(source[top].astype(float) - generated[top].astype(float)).mean()
    assert diff < 12, diff
