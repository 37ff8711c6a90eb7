"""training.syncnet_training and its command scripts.train_syncnet on a tiny preprocessed root: the pairs, checkpoints, resume, logs, learning, DDP,
flag errors and the shell script.

Run as a script, this file is the per-rank worker of the torchrun test (see `_ddp_worker`).
"""

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

if __name__ == "__main__":  # run as the torchrun worker: the helpers in tests/ are not on a script's path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.preprocessed import write_split
from dataset.sync_pairs import SyncPairs
from guided_diffusion import dist_util
from helpers import make_sync_root
from launchers import REPO_ROOT, child_env, run, torchrun
from scripts.train_syncnet import main as train_syncnet_main
from training import syncnet_training as train_syncnet
from training.syncnet import SyncExpert, load_sync_expert

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_sync_root(tmp_path_factory.mktemp("preprocessed"))


def tiny_flags(data_root, output_dir, *extra):
    return ["--data_root", str(data_root), "--output_dir", str(output_dir), "--batch_size", "2",
            "--val_pairs", "4", "--log_every", "1", "--num_workers", "0", *map(str, extra)]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------------------------
# Training runs


def test_checkpoints_resume_and_logs(data_root, tmp_path):
    out = tmp_path / "run"
    flags = tiny_flags(data_root, out, "--save_every", 1, "--keep", 2, "--val_every", 2)
    assert train_syncnet_main([*flags, "--max_steps", "3"]) == 0
    names = sorted(p.name for p in out.iterdir())
    # Only the newest 2 step checkpoints; no temporary file left behind.
    assert [n for n in names if n.startswith("syncnet_")] == ["syncnet_0000002.pt", "syncnet_0000003.pt",
                                                              "syncnet_best.pt"]
    assert not [n for n in names if n.endswith(".tmp")]
    ckpt = torch.load(out / "syncnet_0000003.pt", weights_only=True)
    assert set(ckpt) == {"kind", "model", "opt", "step", "args", "rng", "best_val_acc"}
    assert ckpt["kind"] == "syncnet128" and ckpt["step"] == 3 and ckpt["args"]["batch_size"] == 2
    assert ckpt["rng"] == {"seed": 0}
    assert all(int(s["step"]) == 3 for s in ckpt["opt"]["state"].values())
    rows = read_csv(out / "progress.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(0 < float(r["loss"]) < 5 for r in rows)
    # Validation at step 2 and at the end, on 4 fixed pairs: accuracy in quarters.
    assert [r["val_acc"] for r in rows][0] == ""
    assert {float(rows[1]["val_acc"]) * 4 % 1, float(rows[2]["val_acc"]) * 4 % 1} == {0.0}
    best = torch.load(out / "syncnet_best.pt", weights_only=True)
    assert best["best_val_acc"] == max(float(rows[1]["val_acc"]), float(rows[2]["val_acc"]))
    assert load_sync_expert(out / "syncnet_best.pt").kind == "syncnet128"

    # Without --resume the folder is not silently reused.
    assert train_syncnet_main([*flags, "--max_steps", "4"]) == 1

    assert train_syncnet_main([*flags, "--max_steps", "4", "--resume", "True"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert "syncnet_0000002.pt" not in names and "syncnet_0000004.pt" in names
    resumed = torch.load(out / "syncnet_0000004.pt", weights_only=True)
    assert resumed["step"] == 4
    assert all(int(s["step"]) == 4 for s in resumed["opt"]["state"].values())  # Adam continued
    assert [int(r["step"]) for r in read_csv(out / "progress.csv")] == [1, 2, 3, 4]  # the history continues
    assert "resumed from" in (out / "log.txt").read_text()


def test_syncnet64_trains_resumes_and_refuses_another_kind(data_root, tmp_path):
    out = tmp_path / "light"
    flags = tiny_flags(data_root, out, "--kind", "syncnet64", "--val_every", 0)
    assert train_syncnet_main([*flags, "--max_steps", "1"]) == 0
    ckpt = torch.load(out / "syncnet_0000001.pt", weights_only=True)
    assert ckpt["kind"] == "syncnet64" and ckpt["model"]["face_encoder.0.conv_block.0.weight"].shape == (16, 15, 7, 7)
    assert load_sync_expert(out / "syncnet_0000001.pt").kind == "syncnet64"
    # Resuming under the other kind is refused with the flag to pass.
    assert train_syncnet_main([*tiny_flags(data_root, out, "--val_every", 0), "--max_steps", "2", "--resume", "True"]) == 1
    assert train_syncnet_main([*flags, "--max_steps", "2", "--resume", "True"]) == 0
    assert torch.load(out / "syncnet_0000002.pt", weights_only=True)["step"] == 2


def test_training_without_validation(data_root, tmp_path):
    out = tmp_path / "no_val"
    assert train_syncnet_main(tiny_flags(data_root, out, "--max_steps", 1, "--val_every", 0)) == 0
    assert sorted(p.name for p in out.glob("syncnet_*")) == ["syncnet_0000001.pt"]
    rows = read_csv(out / "progress.csv")
    assert len(rows) == 1 and "val_acc" not in rows[0] and float(rows[0]["loss"]) > 0


def test_loss_drops_when_overfitting_one_batch(data_root):
    torch.manual_seed(0)
    pairs = SyncPairs(str(data_root), "train", 4, seed=0, min_offset=5)
    frames, mel, label = (torch.stack(t) for t in zip(*(pairs[i] for i in range(4))))
    assert 0 < label.sum() < 4  # both kinds of pair
    expert = SyncExpert("syncnet128").train()
    opt = torch.optim.AdamW(expert.parameters(), lr=1e-4, weight_decay=0.0)
    losses = [train_syncnet.train_step(expert, opt, frames, mel, label) for _ in range(12)]
    assert losses[-1] < 0.7 * losses[0], losses


def test_nonfinite_losses_are_skipped_and_counted_then_stop_with_a_message(data_root, tmp_path, monkeypatch, capsys):
    real_bce, calls = train_syncnet.sync_bce, []

    def poisoned(*args, steps=(1,)):
        calls.append(1)
        loss = real_bce(*args)
        return loss * float("nan") if len(calls) - 1 in steps else loss

    monkeypatch.setattr(train_syncnet, "sync_bce", poisoned)
    out = tmp_path / "nan"
    assert train_syncnet_main(tiny_flags(data_root, out, "--kind", "syncnet64", "--val_every", 0,
                                         "--max_steps", 3, "--max_nonfinite", 2)) == 0
    assert "step 1: non-finite loss, step skipped (1 in a row)" in (out / "log.txt").read_text()
    ckpt = torch.load(out / "syncnet_0000003.pt", weights_only=True)
    assert ckpt["step"] == 3 and all(int(s["step"]) == 2 for s in ckpt["opt"]["state"].values())  # 2 updates
    assert [int(r["step"]) for r in read_csv(out / "progress.csv")] == [1, 3]

    monkeypatch.setattr(train_syncnet, "sync_bce", lambda *args: real_bce(*args) * float("nan"))
    capsys.readouterr()
    assert train_syncnet_main(tiny_flags(data_root, tmp_path / "all", "--kind", "syncnet64", "--val_every", 0,
                                         "--max_steps", 5, "--max_nonfinite", 2)) == 1
    assert "non-finite for 2 steps in a row" in capsys.readouterr().err
    assert not list((tmp_path / "all").glob("syncnet_*.pt"))


@pytest.mark.slow
def test_sigterm_saves_and_a_resumed_run_continues_bit_for_bit(data_root, tmp_path):
    out, straight = tmp_path / "sig", tmp_path / "straight"
    flags = ["--kind", "syncnet64", "--val_every", 0, "--save_every", 1000]
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.train_syncnet", *tiny_flags(data_root, out, *flags, "--max_steps", 1000)],
        cwd=REPO_ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "progress.csv").exists() and len(read_csv(out / "progress.csv")) >= 2):
        time.sleep(0.2)  # until two steps have been logged
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    saved = sorted(out.glob("syncnet_*.pt"))
    assert len(saved) == 1 and "stop signal: saved step" in output
    stopped = torch.load(saved[0], weights_only=True)["step"]
    assert 2 <= stopped < 1000
    assert train_syncnet_main(tiny_flags(data_root, out, *flags, "--max_steps", stopped + 2, "--resume", "True")) == 0
    assert train_syncnet_main(tiny_flags(data_root, straight, *flags, "--max_steps", stopped + 2)) == 0
    name = f"syncnet_{stopped + 2:07d}.pt"
    resumed, direct = (torch.load(d / name, weights_only=True) for d in (out, straight))
    assert _state_digest(resumed["model"]) == _state_digest(direct["model"])


def _state_digest(state):
    h = hashlib.sha256()
    for name, value in state.items():
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _ddp_worker(out_json_dir, argv):
    """One torchrun rank: train, then write the digest of this rank's weights and BatchNorm buffers."""
    dist_util.setup_dist()
    try:
        expert = train_syncnet.train(train_syncnet.create_parser().parse_args(argv))
        result = {"rank": dist_util.rank(), "world_size": dist_util.world_size(),
                  "digest": _state_digest(expert.net.state_dict())}
        Path(out_json_dir, f"rank{dist_util.rank()}.json").write_text(json.dumps(result))
    finally:
        dist_util.cleanup()


@pytest.mark.slow
def test_two_torchrun_ranks_keep_identical_weights(data_root, tmp_path):
    out = tmp_path / "ddp"
    flags = tiny_flags(data_root, out, "--max_steps", 2, "--val_every", 2, "--save_every", 2)
    code, output = run([*torchrun(2), __file__, str(tmp_path), *flags], timeout=240)
    assert code == 0, output
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in results] == [2, 2]
    checkpoint = torch.load(out / "syncnet_0000002.pt", weights_only=True)
    assert checkpoint["args"]["batch_size"] == 2
    # The ranks saw different pairs, yet both hold the weights (and statistics) rank 0 saved.
    assert results[0]["digest"] == results[1]["digest"] == _state_digest(checkpoint["model"])
    assert _state_digest(checkpoint["model"]) != _state_digest(SyncExpert("syncnet128").net.state_dict())
    assert [int(r["samples"]) for r in read_csv(out / "progress.csv")] == [4, 8]  # 2 ranks x 2 pairs


# ----------------------------------------------------------------------------------------------
# Flags and errors


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_syncnet_main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in train_syncnet.syncnet_train_defaults():
        assert f"--{flag}" in text
        assert train_syncnet.SYNCNET_OPTIONS[flag].help


@pytest.mark.parametrize("flags, message", [
    (["--data_root", "/nonexistent/root"], "--data_root '/nonexistent/root' is not a folder"),
    ([], "--data_root is required"),
    (["--data_root", "ROOT", "--bogus", "1"], "unrecognized arguments: --bogus"),
    (["--data_root", "ROOT", "--batch_size", "two"], "invalid int value"),
    (["--data_root", "ROOT", "--batch_size", "1"], "--batch_size 1: expected a value >= 2"),
    (["--data_root", "ROOT", "--keep", "0"], "--keep 0: expected a value >= 1"),
    (["--data_root", "ROOT", "--lr", "0"], "--lr 0.0: expected 0 < value < inf"),
    (["--data_root", "ROOT", "--kind", "wav2lip"], "--kind 'wav2lip': expected one of syncnet128, syncnet64"),
    (["--data_root", "ROOT", "--resume", "maybe"], "expected a boolean"),
])
def test_bad_flags_are_one_error_line(data_root, flags, message, capsys):
    assert train_syncnet_main([str(data_root) if f == "ROOT" else f for f in flags]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_bad_data_is_one_error_line(data_root, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train_syncnet_main(["--data_root", str(empty), "--output_dir", str(tmp_path / "o")]) == 1
    assert "train.txt' not found" in capsys.readouterr().err
    write_split(str(empty), "train", [])
    assert train_syncnet_main(["--data_root", str(empty), "--output_dir", str(tmp_path / "o")]) == 1
    assert "train.txt' lists no clips" in capsys.readouterr().err
    # Clips all too short for --min_offset.
    assert train_syncnet_main(tiny_flags(data_root, tmp_path / "o", "--min_offset", 36)) == 1
    assert "has the 41 frames a pair needs" in capsys.readouterr().err
    # No val.txt: the error says how to train without validation.
    no_val = tmp_path / "no_val"
    os.symlink(data_root / "clips", empty / "clips")
    write_split(str(empty), "train", ["id0/vid/00001"])
    assert train_syncnet_main(["--data_root", str(empty), "--output_dir", str(no_val)]) == 1
    err = capsys.readouterr().err
    assert "val.txt' not found" in err and "--val_every 0" in err
    assert not no_val.exists()  # nothing written before the data is known to be usable


# ----------------------------------------------------------------------------------------------
# scripts/train_syncnet.sh


@pytest.mark.parametrize("gpus", [1, 2])
def test_shell_script_command_line(tmp_path, gpus):
    """The script's command line, seen by a stand-in PYTHON that prints its arguments one per line."""
    fake = tmp_path / "python"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = child_env()
    env.update(PYTHON=str(fake), data_root="/data/my root", output_dir=str(tmp_path / "out dir"), NUM_GPUS=str(gpus))
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "train_syncnet.sh"), "--max_steps", "7"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    argv = proc.stdout.splitlines()
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] if gpus > 1 else []
    assert argv[: len(launcher) + 2] == [*launcher, "-m", "scripts.train_syncnet"]
    assert argv[argv.index("--data_root") + 1] == "/data/my root"  # quoting kept the space
    assert argv[argv.index("--output_dir") + 1] == str(tmp_path / "out dir")
    assert argv[-2:] == ["--max_steps", "7"]  # extra flags come last, so they win


if __name__ == "__main__":
    _ddp_worker(sys.argv[1], sys.argv[2:])
