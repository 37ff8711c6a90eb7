"""scripts/train.sh on a preprocessed folder: trains, checkpoints, resumes and logs every term."""

import subprocess
import sys

import pytest
import torch

from helpers import TINY_CLI_FLAGS, make_preprocessed_root
from launchers import REPO_ROOT, child_env
from training.syncnet import SyncNet128, save_syncnet_checkpoint


@pytest.mark.slow
def test_train_script_trains_checkpoints_resumes_and_logs(tmp_path):
    data = tmp_path / "pre"
    make_preprocessed_root(data, n_clips=3, n_frames=14, image_size=32, val_clips=1)
    expert = tmp_path / "expert.pt"
    torch.manual_seed(0)
    save_syncnet_checkpoint(expert, SyncNet128())
    out = tmp_path / "run"
    env = child_env()
    env.update(data_root=str(data), output_dir=str(out), sync_expert=str(expert), PYTHON=sys.executable)
    # The tiny network and short run come last and win over the script's defaults; LPIPS is off
    # because torchvision's VGG weights cannot be downloaded here.
    extra = [*TINY_CLI_FLAGS, "--batch_size", "2", "--num_workers", "0", "--lambda_lpips", "0", "--disc_channels", "8",
             "--save_every", "2", "--log_every", "1", "--preview_every", "2", "--preview_respacing", "ddim2"]

    def run(*more):
        proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "train.sh"), *extra, *more],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    run("--max_steps", "2")
    output = run("--max_steps", "4", "--resume", "True")
    assert "resumed from" in output and "checkpoint_0000002.pt" in output
    assert sorted(p.name for p in out.glob("checkpoint_*.pt")) == ["checkpoint_0000002.pt", "checkpoint_0000004.pt"]
    rows = (out / "progress.csv").read_text().splitlines()
    assert {"simple", "l2", "sync", "gan", "disc", "mse", "vb", "total"} <= set(rows[0].split(","))
    assert len(rows) == 5  # steps 1..4, the history continued across the resume
    assert (out / "preview_0000004.png").exists()


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO_ROOT / "scripts").glob("*.py")
                                        if "__main__" in p.read_text()))
def test_every_script_runs_as_a_module_and_as_a_file(name):
    """`python -m scripts.NAME` (the docs' form) and `python scripts/NAME.py` both reach the parser
    (a file run once failed on importing our packages, with a traceback)."""
    for how in (["-m", f"scripts.{name}"], [f"scripts/{name}.py"]):
        done = subprocess.run([sys.executable, *how, "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "usage:" in done.stdout, (how, done.stderr[-500:])
