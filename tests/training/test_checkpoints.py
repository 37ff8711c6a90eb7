"""training/checkpoints.py: checkpoints on a full disk, and resuming after a network flag changed.

The full disk is real: a tmpfs with room for one checkpoint of the tiny network (73 MB of 100 MB),
or, where mounting is not allowed, a file-size limit (see helpers.small_disk).
"""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from helpers import TINY_CLI_FLAGS, make_preprocessed_root, small_disk
from launchers import REPO_ROOT, child_env
from training.checkpoints import list_checkpoints

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    make_preprocessed_root(root, n_clips=3, n_frames=14, image_size=32, val_clips=0)
    return root


def train(data_root, output_dir, *extra, preexec=None) -> subprocess.CompletedProcess:
    argv = [*TINY_CLI_FLAGS, "--data_root", str(data_root), "--output_dir", str(output_dir), "--batch_size", "2",
            "--num_workers", "0", "--lambda_sync", "0", "--lambda_lpips", "0", "--log_every", "1", *extra]
    return subprocess.run([sys.executable, "train.py", *argv], cwd=REPO_ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=300, preexec_fn=preexec)


def test_a_full_disk_is_one_line_and_the_previous_checkpoint_stays_resumable(data_root, tmp_path):
    with small_disk(tmp_path / "disk", "100m") as (folder, preexec):
        run = os.path.join(folder, "run")
        assert train(data_root, run, "--max_steps", "1").returncode == 0
        first = torch.load(os.path.join(run, "checkpoint_0000001.pt"), weights_only=False)
        done = train(data_root, run, "--max_steps", "2", "--resume", "True", preexec=preexec)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().splitlines()[-1] == (
            f"error: no space left on the disk of '{run}' (writing 'checkpoint_0000002.pt'): nothing was written "
            "under the final name and earlier files there are intact; free some space there or give another output folder"
        )
        assert [os.path.basename(p) for p in list_checkpoints(run)] == ["checkpoint_0000001.pt"]
        assert not [f for f in os.listdir(run) if f.startswith(".")]  # no temporary left
        kept = torch.load(os.path.join(run, "checkpoint_0000001.pt"), weights_only=False)
        assert kept["step"] == 1 and all(torch.equal(kept["model"][k], first["model"][k]) for k in first["model"])
        moved = tmp_path / "moved"
        shutil.copytree(run, moved)
    resumed = train(data_root, moved, "--max_steps", "2", "--resume", "True")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert torch.load(moved / "checkpoint_0000002.pt", weights_only=False)["step"] == 2


def test_resume_after_a_network_flag_changed_is_one_line_naming_the_flag_and_both_values(data_root, tmp_path):
    run = tmp_path / "run"
    assert train(data_root, run, "--max_steps", "1").returncode == 0
    changed = [*TINY_CLI_FLAGS[:2], "--num_channels", "64", *TINY_CLI_FLAGS[4:]]  # TINY_CLI_FLAGS has 32
    argv = [*changed, "--data_root", str(data_root), "--output_dir", str(run), "--batch_size", "2", "--num_workers", "0",
            "--lambda_sync", "0", "--lambda_lpips", "0", "--max_steps", "2", "--resume", "True", "--learn_sigma", "False"]
    done = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO_ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: --resume True: checkpoint '{run / 'checkpoint_0000001.pt'}' was made with --learn_sigma True, this run "
        "has --learn_sigma False (and 1 more: --num_channels); give the checkpoint's value, or another --output_dir to "
        "start a new run"
    )
    assert [os.path.basename(p) for p in list_checkpoints(run)] == ["checkpoint_0000001.pt"]


@pytest.mark.slow
def test_a_full_disk_under_torchrun_ends_every_rank_with_the_line_instead_of_a_hang(data_root, tmp_path):
    """Two gloo ranks on a real 10 MB tmpfs, where the 73 MB checkpoint cannot go: rank 0's
    failed save reaches rank 1 too (before, rank 1 waited at the barrier for a rank that had gone)."""
    from launchers import run as launch
    from launchers import torchrun

    with small_disk(tmp_path / "disk", "10m") as (folder, preexec):
        if preexec is not None:
            pytest.skip("no tmpfs here, and a file-size limit does not pass through torchrun's workers")
        argv = [*TINY_CLI_FLAGS, "--data_root", str(data_root), "--output_dir", os.path.join(folder, "run"),
                "--batch_size", "2", "--num_workers", "0", "--lambda_sync", "0", "--lambda_lpips", "0", "--max_steps", "1"]
        code, output = launch([*torchrun(2), "train.py", *argv], timeout=240)
        assert code != 0
        line = f"error: no space left on the disk of '{folder}/run' (writing 'checkpoint_0000001.pt')"
        assert sum(line in text for text in output.splitlines()) == 2, output  # one line from each rank
        assert 'File "' + str(REPO_ROOT / "training") not in output  # no traceback from our code
        assert not [f for f in os.listdir(os.path.join(folder, "run")) if f.endswith(".tmp") or f.startswith(".")]
