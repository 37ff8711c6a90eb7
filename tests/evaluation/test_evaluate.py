"""evaluate.py end to end: generate.py outputs scored with random weights in the real formats."""

import json
import os

import numpy as np
import pytest
import torch

import evaluate
from evaluation.fid import INCEPTION_FILENAME
from evaluation.lmd import FAN_FILENAME
from helpers import TINY_CLI_FLAGS, random_inception_state_dict, render_clip, save_tiny_checkpoint, syncnet_v2_state
from inference.cli import main as generate_main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    """A VoxCeleb2-layout real root, generate.py reconstructions of it, and the weight files."""
    from face_alignment.models import FAN

    root = tmp_path_factory.mktemp("eval")
    real = root / "real"
    for identity, seed in (("id001", 1), ("id002", 2)):
        (real / identity / "v").mkdir(parents=True)
        render_clip(real / identity / "v" / "00001.mp4", n_frames=12, seed=seed)
    filelist = root / "recon.txt"
    filelist.write_text("id001/v/00001 id001/v/00001\nid002/v/00001 id002/v/00001\n")
    checkpoint = root / "tiny.pt"
    save_tiny_checkpoint(checkpoint)
    generated = root / "generated"
    assert generate_main([
        *TINY_CLI_FLAGS, "--model_path", str(checkpoint), "--progress", "False", "--generate_from_filelist", "1",
        "--test_video_dir", str(real), "--filelist", str(filelist), "--sample_path", str(generated),
        "--sampling_input_type", "first_frame", "--sampling_ref_type", "first_frame",
    ]) == 0
    home = root / "torch_home" / "hub" / "checkpoints"
    home.mkdir(parents=True)
    torch.save(random_inception_state_dict(), home / INCEPTION_FILENAME)
    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), home / FAN_FILENAME)
    syncnet = root / "syncnet_v2.model"
    torch.save(syncnet_v2_state(), syncnet)
    return dict(root=root, real=real, filelist=filelist, generated=generated, torch_home=root / "torch_home", syncnet=syncnet)


def offline_env(monkeypatch, run_dirs):
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(run_dirs["torch_home"]))

    def unreachable(*args, **kwargs):
        raise OSError("no network in tests")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", unreachable)


def flags(run_dirs, out, *extra):
    return ["--filelist", str(run_dirs["filelist"]), "--real_root", str(run_dirs["real"]), "--generated_root",
            str(run_dirs["generated"]), "--output_dir", str(out), "--syncnet_model", str(run_dirs["syncnet"]),
            "--face_track", "voxceleb2", "--progress", "False", "--batch_size", "8", *extra]


@pytest.mark.slow
def test_reconstruction_table_files_and_resume(run_dirs, tmp_path, monkeypatch, capsys):
    offline_env(monkeypatch, run_dirs)
    out = tmp_path / "recon"
    assert evaluate.main(flags(run_dirs, out, "--mode", "reconstruction")) == 0
    printed = capsys.readouterr().out
    assert "| reconstruction | FID | SSIM | PSNR | LMD | Sync_c | Sync_d |" in printed
    assert "| Diff2Lip (paper) | 2.46 | 0.53 | 18.09 | 3.04 | 8.78 | 5.93 |" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clips"] == 2
    for key in ("fid", "fid_mouth", "ssim", "psnr", "lmd", "lse_c", "lse_d"):
        assert np.isfinite(summary[key]), key
    assert 0 < summary["ssim"] <= 1 and summary["psnr"] > 5 and summary["fid"] >= 0
    rows = json.loads((out / "per_clip.json").read_text())
    assert [r["clip"] for r in rows] == ["id001.v.00001_id001.v.00001", "id002.v.00001_id002.v.00001"]
    assert (out / "per_clip.csv").read_text().splitlines()[0].startswith("clip,")
    assert (out / "table.md").exists()

    caches = sorted((out / "cache").iterdir())
    stamps = [p.stat().st_mtime_ns for p in caches]
    assert evaluate.main(flags(run_dirs, out, "--mode", "reconstruction")) == 0  # everything from the cache
    assert [p.stat().st_mtime_ns for p in caches] == stamps
    assert json.loads((out / "summary.json").read_text()) == summary


@pytest.mark.slow
def test_cross_mode_and_failed_clips_are_listed(run_dirs, tmp_path, monkeypatch, capsys):
    offline_env(monkeypatch, run_dirs)
    bad_list = tmp_path / "cross.txt"
    bad_list.write_text(run_dirs["filelist"].read_text() + "id001/v/00001 id009/v/00001\n")
    out = tmp_path / "cross"
    args = flags(run_dirs, out, "--mode", "cross", "--metrics", "fid,ssim,lse")
    args[args.index("--filelist") + 1] = str(bad_list)
    assert evaluate.main(args) == 1
    captured = capsys.readouterr()
    assert "| cross | FID | LMD | Sync_c | Sync_d |" in captured.out
    assert "2 clips scored, 1 failed" in captured.out
    assert any("id009" in line and ":3:" in line for line in captured.err.splitlines())
    summary = json.loads((out / "summary.json").read_text())
    assert "ssim" not in summary and "lse_c" in summary  # no ground truth in cross mode


def test_bad_flags_are_one_line_errors(run_dirs, tmp_path, capsys):
    assert evaluate.main(flags(run_dirs, tmp_path, "--mode", "both")) == 1
    assert evaluate.main(flags(run_dirs, tmp_path, "--metrics", "fid,bleu")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --mode 'both': expected one of reconstruction, cross",
                   "error: --metrics 'fid,bleu': unknown bleu; expected a comma list of fid, ssim, psnr, lmd, lse"]
    assert not os.path.exists(tmp_path / "summary.json")
