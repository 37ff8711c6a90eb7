"""Runs that survive a lost worker: training.checkpoints' choice of the checkpoint to continue
from (the newest complete one), and train.py under `torchrun --max-restarts 1` with a worker
killed by SIGKILL (tests/training/elastic_worker.py), ending bit for bit as an uninterrupted run."""

import os
import subprocess
import sys

import pytest
import torch

from common.errors import CheckpointError, Diff2LipError
from guided_diffusion import dist_util, logger
from helpers import TINY_CLI_FLAGS, make_preprocessed_root
from launchers import REPO_ROOT, child_env, run, torchrun
from training.checkpoints import checkpoint_path, list_checkpoints, resume_checkpoint, save_checkpoint

WORKER = REPO_ROOT / "tests" / "training" / "elastic_worker.py"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    make_preprocessed_root(root, n_clips=3, n_frames=14, image_size=32, val_clips=0)
    return root


def train_args(data_root, output_dir, *extra, save_every: int = 3, max_steps: int = 7):
    """The tiny network with its discriminator (every optimizer and random stream a checkpoint
    holds), a checkpoint every `save_every` steps."""
    return [
        *TINY_CLI_FLAGS, "--data_root", str(data_root), "--output_dir", str(output_dir), "--batch_size", "2",
        "--num_workers", "0", "--lambda_sync", "0", "--lambda_lpips", "0", "--warmup_steps", "2", "--log_every", "1",
        "--lr", "1e-3", "--lambda_gan", "0.05", "--disc_channels", "8", "--save_every", str(save_every), "--keep", "5",
        "--max_steps", str(max_steps), *extra,
    ]


def assert_same_state(a_path, b_path):
    """Two training checkpoints hold the same tensors, bit for bit (weights, EMA, discriminator and
    both optimizers' moments)."""
    a, b = (torch.load(p, weights_only=True) for p in (a_path, b_path))
    assert a["step"] == b["step"]
    for key in ("model", "ema", "disc"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    for key in ("opt", "disc_opt"):
        moments_a = [t for s in a[key]["state"].values() for t in s.values() if torch.is_tensor(t)]
        moments_b = [t for s in b[key]["state"].values() for t in s.values() if torch.is_tensor(t)]
        assert len(moments_a) == len(moments_b) > 0
        assert all(torch.equal(x, y) for x, y in zip(moments_a, moments_b)), key


# ----------------------------------------------------------------------------------------------
# Which checkpoint a run continues from


@pytest.fixture
def folder(tmp_path):
    """Checkpoints of steps 3 and 6 as save_checkpoint writes them."""
    for step in (3, 6):
        save_checkpoint(str(tmp_path), step, {"step": step, "w": torch.full((4,), float(step))}, keep=5)
    yield tmp_path
    logger.close()


def test_save_checkpoint_round_trips_and_leaves_no_temporary(folder):
    save_checkpoint(str(folder), 9, {"step": 9, "w": torch.arange(4.0)}, keep=2)
    assert [os.path.basename(p) for p in list_checkpoints(str(folder))] == ["checkpoint_0000006.pt", "checkpoint_0000009.pt"]
    assert torch.equal(torch.load(checkpoint_path(str(folder), 9), weights_only=True)["w"], torch.arange(4.0))
    assert sorted(os.listdir(folder)) == ["checkpoint_0000006.pt", "checkpoint_0000009.pt"]


def test_resume_takes_the_newest_checkpoint(folder):
    path, state = resume_checkpoint(str(folder), resume=True)
    assert path == checkpoint_path(str(folder), 6) and state["step"] == 6 and torch.equal(state["w"], torch.full((4,), 6.0))


def test_a_truncated_newest_checkpoint_is_passed_over_for_the_one_before(folder, capsys):
    """What a machine lost just after the rename can leave on some file systems; a temporary from a
    writer killed mid-write is not a checkpoint at all."""
    newest = checkpoint_path(str(folder), 9)
    save_checkpoint(str(folder), 9, {"step": 9, "w": torch.zeros(4)}, keep=5)
    os.truncate(newest, os.path.getsize(newest) // 2)
    (folder / ".checkpoint_0000012.pt.0123abcd.tmp").write_bytes(b"half a checkpoint")
    path, state = resume_checkpoint(str(folder), resume=True)
    assert path == checkpoint_path(str(folder), 6) and state["step"] == 6
    out = capsys.readouterr().out
    assert f"passing over {newest}, set aside as checkpoint_0000009.pt.unreadable: checkpoint '{newest}' is truncated" in out
    # Set aside, so that pruning by name cannot keep it over the run's next checkpoints.
    assert [os.path.basename(p) for p in list_checkpoints(str(folder))] == ["checkpoint_0000003.pt", "checkpoint_0000006.pt"]
    assert os.path.getsize(newest + ".unreadable") > 0
    save_checkpoint(str(folder), 7, {"step": 7}, keep=1)
    assert resume_checkpoint(str(folder), resume=True)[1]["step"] == 7


def test_a_checkpoint_without_the_required_keys_is_passed_over(folder, capsys):
    torch.save({"weights": torch.zeros(2)}, checkpoint_path(str(folder), 9))
    path, state = resume_checkpoint(str(folder), resume=True, required=("step", "w"))
    assert state["step"] == 6
    assert "checkpoint_0000009.pt.unreadable: '" in capsys.readouterr().out


def test_none_that_loads_is_one_error_naming_the_folder(tmp_path):
    for step in (1, 2):
        open(checkpoint_path(str(tmp_path), step), "wb").write(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=rf"none of the 2 checkpoints in '{tmp_path}' loads \(newest: checkpoint "
                                              rf"'.*checkpoint_0000002.pt' is truncated"):
        resume_checkpoint(str(tmp_path), resume=True)
    logger.close()


def test_a_fresh_run_into_a_folder_with_checkpoints_is_refused(folder):
    with pytest.raises(Diff2LipError, match=r"already holds checkpoints \(newest '.*checkpoint_0000006.pt'\); pass --resume True"):
        resume_checkpoint(str(folder), resume=False)
    assert resume_checkpoint(str(folder / "empty"), resume=False) is None


def test_a_worker_the_elastic_agent_restarted_resumes_without_being_asked(folder, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert dist_util.restart_count() == 0
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert dist_util.restart_count() == 1
    path, state = resume_checkpoint(str(folder), resume=False)
    assert state["step"] == 6


@pytest.mark.parametrize("machines, restarts, refused", [("2", "3", True), ("1", "3", False), ("2", "0", False)])
def test_several_restartable_machines_on_the_agents_shared_store_are_refused(monkeypatch, machines, restarts, refused):
    """Their agents count restarts differently, so a store prefix per attempt could differ between
    machines and the group would wait forever; one line says which variable gives each attempt a
    fresh store."""
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("GROUP_WORLD_SIZE", machines)
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", restarts)
    assert dist_util._agents_disagree_on_attempts() is refused
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")  # TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1's doing
    assert dist_util._agents_disagree_on_attempts() is False


def test_the_refusal_comes_before_any_rendezvous(monkeypatch):
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1",
                        "TORCHELASTIC_USE_AGENT_STORE": "True", "GROUP_WORLD_SIZE": "2",
                        "TORCHELASTIC_MAX_RESTARTS": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", raising=False)  # an earlier test may have set it
    dist_util.cleanup()  # an in-process training earlier in the suite leaves setup_dist done
    with pytest.raises(Diff2LipError, match="needs TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in torchrun's environment"):
        dist_util.setup_dist()
    assert not torch.distributed.is_initialized()
    dist_util.cleanup()


@pytest.mark.slow
def test_a_writer_killed_while_saving_leaves_the_previous_checkpoint_to_resume(data_root, tmp_path):
    """One process, SIGKILLed with half of checkpoint 4 written: no checkpoint 4 appears, and
    --resume continues from 2 to the same step-5 state as a run never interrupted."""
    out, straight = tmp_path / "killed", tmp_path / "straight"
    steps = {"save_every": 2, "max_steps": 5}
    killed = subprocess.run([sys.executable, str(WORKER), "while_saving", "0", "4", *train_args(data_root, out, **steps)],
                            cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert [os.path.basename(p) for p in list_checkpoints(str(out))] == ["checkpoint_0000002.pt"]
    assert [name for name in os.listdir(out) if name.startswith(".checkpoint_0000004.pt.")]  # the half-written one
    # Every run in a process of its own, as the killed one: one set of threads and global state for all.
    code, output = run([sys.executable, "train.py", *train_args(data_root, out, "--resume", "True", **steps)], timeout=300)
    assert code == 0, output
    assert f"resumed from {checkpoint_path(str(out), 2)} at step 2" in (out / "log.txt").read_text()
    code, output = run([sys.executable, "train.py", *train_args(data_root, straight, **steps)], timeout=300)
    assert code == 0, output
    assert_same_state(checkpoint_path(str(out), 5), checkpoint_path(str(straight), 5))


# ----------------------------------------------------------------------------------------------
# A real worker group that loses a worker


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_restarted_and_the_run_ends_as_if_uninterrupted(data_root, tmp_path):
    """torchrun --max-restarts 1, 2 processes (gloo): rank 1 is SIGKILLed in the middle of step 4,
    after checkpoint 3. The agent restarts both, they continue from checkpoint 3 with no --resume
    (one step lost, at most --save_every), and step 7 equals an uninterrupted run's bit for bit."""
    elastic = [*torchrun(2), "--max-restarts", "1"]
    code, output = run([*elastic, str(WORKER), "during_step", "1", "4", *train_args(data_root, tmp_path / "killed")],
                       timeout=300)
    assert code == 0, output
    assert "exitcode: -9" in output and "local_rank: 1" in output  # the agent saw rank 1 die by SIGKILL
    assert f"resumed from {checkpoint_path(str(tmp_path / 'killed'), 3)} at step 3" in output
    code, straight = run([*torchrun(2), "train.py", *train_args(data_root, tmp_path / "straight")], timeout=300)
    assert code == 0, straight
    assert "resumed" not in straight
    assert_same_state(checkpoint_path(str(tmp_path / "killed"), 7), checkpoint_path(str(tmp_path / "straight"), 7))
    # The steps after checkpoint 3 were logged twice (before the kill and again), with the same values.
    rows = (tmp_path / "killed" / "progress.csv").read_text().splitlines()
    reference = (tmp_path / "straight" / "progress.csv").read_text().splitlines()
    header = rows[0].split(",")
    losses = [header.index(name) for name in ("simple", "l2", "gan", "disc", "total")]
    by_step = {}
    for row in rows[1:]:
        cells = row.split(",")
        by_step.setdefault(int(float(cells[header.index("step")])), []).append([cells[i] for i in losses])
    assert sorted(by_step) == list(range(1, 8)) and [len(by_step[s]) for s in range(1, 8)] == [1, 1, 1, 2, 1, 1, 1]
    ref_header = reference[0].split(",")
    for row in reference[1:]:
        cells = row.split(",")
        step = int(float(cells[ref_header.index("step")]))
        assert all(seen == [cells[ref_header.index(n)] for n in ("simple", "l2", "gan", "disc", "total")]
                   for seen in by_step[step]), step
