"""The released-style shell scripts, run for real (tiny network flags appended: the last wins)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from audio.audio import save_wav
from dataset.synthetic import speech_like
from dataset.video_io import iter_frames, probe_video
from helpers import TINY_CLI_FLAGS, render_clip, save_tiny_checkpoint
from launchers import REPO_ROOT, child_env


def run_script(script, env_vars, *extra, timeout=300):
    env = child_env()
    env.update({k: str(v) for k, v in env_vars.items()})
    env["PYTHON"] = sys.executable
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / script), *TINY_CLI_FLAGS, "--progress", "False", *extra],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_single_video_script(tmp_path):
    checkpoint = tmp_path / "tiny.pt"
    save_tiny_checkpoint(checkpoint)
    video = tmp_path / "face.mp4"
    render_clip(video, n_frames=10)
    audio = tmp_path / "speech.wav"
    save_wav(speech_like(0.3), audio, 16000)
    out = tmp_path / "result.mp4"
    code, output = run_script(
        "inference_single_video.sh",
        dict(video_path=video, audio_path=audio, out_path=out, model_path=checkpoint),
        "--box", "40,200,50,174",
    )
    assert code == 0, output
    assert "precision " in output and ": --use_fp16 True on a CPU" in output
    assert probe_video(str(out)).num_frames == 5


@pytest.mark.slow
def test_filelist_script_reconstruction_on_two_mpi_ranks(tmp_path):
    checkpoint = tmp_path / "tiny.pt"
    save_tiny_checkpoint(checkpoint)
    root = tmp_path / "vox"
    for identity in ("id001", "id002"):
        (root / identity / "clip").mkdir(parents=True)
        render_clip(root / identity / "clip" / "00001.mp4", n_frames=8, seed=len(identity))
    filelist = tmp_path / "recon.txt"
    filelist.write_text("id001/clip/00001 id001/clip/00001\nid002/clip/00001 id002/clip/00001\n")
    samples = tmp_path / "samples"
    code, output = run_script(
        "inference.sh",
        dict(real_video_root=root, model_path=checkpoint, sample_path=samples, sample_mode="reconstruction",
             filelist_recon=filelist, NUM_GPUS=2),
    )
    assert code == 0, output
    names = sorted(os.listdir(samples))
    assert names == ["id001.clip.00001_id001.clip.00001.mp4", "id002.clip.00001_id002.clip.00001.mp4"]
    # reconstruction repaints the first frame: rows above the VoxCeleb2 crop's lower half stay frame 0
    frames = np.stack(list(iter_frames(str(samples / names[0]), 25)))
    assert np.abs(frames[1:, :60].astype(int) - frames[:1, :60].astype(int)).max() < 12
