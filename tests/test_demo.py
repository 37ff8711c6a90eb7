"""Tests for demo.py (evaluation/synthetic_demo.py) and scripts/demo_train.py: the committed demo checkpoints fit the demo's flags and
size limit, errors are one line, and the demo runs end to end (slow) writing videos, sheets and
every score."""

import json
import os
import sys

import pytest
import torch

import demo
from common.errors import Diff2LipError
from evaluation import synthetic_demo
from guided_diffusion.checkpoint_format import load_model_weights
from guided_diffusion.script_util import tfg_create_model_and_diffusion, tfg_model_and_diffusion_defaults
from launchers import REPO_ROOT
from scripts import demo_train
from training.syncnet import load_sync_expert


def test_committed_checkpoints_fit_the_demo_flags_and_the_size_limit():
    checkpoint, expert_path = REPO_ROOT / synthetic_demo.DEMO_CHECKPOINT, REPO_ROOT / synthetic_demo.DEMO_SYNC_EXPERT
    assert os.path.getsize(checkpoint) + os.path.getsize(expert_path) <= 20 * 2**20
    flags = {**tfg_model_and_diffusion_defaults(), **synthetic_demo.DEMO_MODEL}
    model, _ = tfg_create_model_and_diffusion(**flags)
    load_model_weights(model, str(checkpoint))
    saved = torch.load(checkpoint, weights_only=True)
    state = saved["model"]
    # The file carries its flags and what it knows: generate.py needs no architecture flags.
    assert {k: saved["flags"][k] for k in synthetic_demo.DEMO_MODEL} == synthetic_demo.DEMO_MODEL
    assert saved["trained_on"]["note"] == synthetic_demo.DEMO_NOTE
    # Trained weights, not an initialisation: the zero-initialised output conv has learned values.
    assert float(state["out.2.weight"].float().abs().max()) > 1e-3
    assert all(torch.isfinite(v.float()).all() for v in state.values())
    expert = load_sync_expert(expert_path)
    assert expert.kind == "syncnet64"


def test_model_flags_round_trip_through_the_parser():
    from common.flags import create_argparser
    from guided_diffusion.script_util import MODEL_AND_DIFFUSION_OPTIONS

    args = create_argparser(MODEL_AND_DIFFUSION_OPTIONS).parse_args(synthetic_demo.model_flags())
    assert {k: getattr(args, k) for k in synthetic_demo.DEMO_MODEL} == synthetic_demo.DEMO_MODEL


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nothing.pt"
    assert demo.main(["--out_dir", str(tmp_path / "out"), "--checkpoint", str(missing)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --checkpoint") and str(missing) in err and "make demo-train" in err
    assert "\n" not in err and not (tmp_path / "out").exists()


def test_demo_train_step_failure_names_the_step(capsys):
    with pytest.raises(Diff2LipError, match="broken step failed"):
        demo_train.step("broken step", ["-c", "import sys; sys.exit(3)"])
    demo_train.step("working step", ["-c", "print('fine')"])
    assert "working step" in capsys.readouterr().out


def test_ablation_rows_add_one_loss_at_a_time():
    rows = list(demo_train.ABLATION.values())
    switched_on = [{k for k, v in row.items() if v} for row in rows]
    assert switched_on[0] == set()
    assert switched_on[1] == {"lambda_l2", "lambda_sync"}
    assert switched_on[2] - switched_on[1] == {"lambda_lpips"} and switched_on[3] - switched_on[2] == {"lambda_gan"}


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    import subprocess

    from launchers import child_env

    out = tmp_path / "demo"
    env = child_env()
    env["OMP_NUM_THREADS"] = "2"
    proc = subprocess.run([sys.executable, "demo.py", "--out_dir", str(out), "--seconds", "2",
                           "--timestep_respacing", "ddim2", "--progress", "False"], cwd=REPO_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:]
    scores = json.loads((out / "scores.json").read_text())
    for key in ("lip_sync", "wrong_audio", "source", "psnr", "ssim", "syncnet_accuracy"):
        assert isinstance(scores[key], float), key
    assert 0.5 <= scores["syncnet_accuracy"] <= 1 and 10 < scores["psnr"] < 60 and 0 < scores["ssim"] <= 1
    assert len(scores["per_clip"]) == 6
    assert len(list((out / "sheets").glob("*.png"))) == 6
    assert len(list((out / "cross").glob("*.mp4"))) == 6 and len(list((out / "reconstruction").glob("*.mp4"))) == 6
    assert "lip-sync score" in proc.stdout and "SyncNet" in proc.stdout
