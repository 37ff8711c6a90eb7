"""training.diff2lip and train.py: the shared timestep, overfitting, exact resume, DDP, stop signals
(the losses themselves: tests/training/test_losses.py)."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import train
import training.diff2lip as train_script
from common.errors import Diff2LipError
from guided_diffusion import logger
from guided_diffusion.script_util import create_gaussian_diffusion, tfg_create_model_and_diffusion
from helpers import TINY_CLI_FLAGS, TINY_FLAGS, make_preprocessed_root, save_tiny_checkpoint
from launchers import REPO_ROOT, child_env, run, torchrun
from training.checkpoints import list_checkpoints
from training.losses import L2Loss


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    make_preprocessed_root(root, n_clips=3, n_frames=14, image_size=32, val_clips=0)
    return root


def train_args(data_root, output_dir, *extra):
    return [
        *TINY_CLI_FLAGS, "--data_root", str(data_root), "--output_dir", str(output_dir), "--batch_size", "2",
        "--num_workers", "0", "--lambda_sync", "0", "--lambda_lpips", "0", "--warmup_steps", "2", "--log_every", "1",
        "--lr", "1e-3", *extra,
    ]


def run_train(argv):
    args = train_script.create_parser().parse_args(argv)
    try:
        return train_script.train(args)
    finally:
        logger.close()


def digest(model) -> str:
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_one_timestep_per_sequence_shared_by_its_frames(data_root):
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t, **kw):
            seen.append(t.clone())
            return torch.cat([x, torch.zeros_like(x)], 1) * self.p

    from dataset.tfg_dataset import TFGDataset, collate

    ds = TFGDataset(str(data_root), "train", 5)
    batch = collate([ds[(i, i)] for i in range(3)])
    args = train_script.create_parser().parse_args(train_args(data_root, "unused"))
    losses = {"simple": train_script.DiffusionLoss(), "l2": L2Loss()}
    total, logged, seq = train_script.forward_losses(
        args, batch, Recorder(), create_gaussian_diffusion(), losses, {"simple": 1.0, "l2": 1.0}, torch.Generator().manual_seed(0), torch.device("cpu")
    )
    t = seen[0].view(3, 5)
    assert (t == t[:, :1]).all() and len(set(t[:, 0].tolist())) > 1
    assert seq.pred.shape == (3, 5, 3, 32, 32) and set(logged) >= {"simple", "l2", "total", "mse", "vb"}
    # outside the mask the predicted sequence is the real frame
    assert torch.equal(seq.pred[..., :16, :], seq.real[..., :16, :])


def test_tiny_model_overfits_one_batch(data_root):
    """Same batch, same t and noise every step: the diffusion loss must drop at least 10x and the
    total (with the L2 of the clipped x0, whose saturated pixels carry no gradient) 5x."""
    from dataset.tfg_dataset import TFGDataset, collate
    from guided_diffusion.script_util import tfg_create_model_and_diffusion
    from helpers import TINY_FLAGS

    torch.manual_seed(0)
    model, diffusion = tfg_create_model_and_diffusion(**dict(TINY_FLAGS, learn_sigma=False))
    ds = TFGDataset(str(data_root), "train", 5)
    batch = collate([ds[(0, 7)], ds[(1, 8)]])
    args = train_script.create_parser().parse_args(train_args(data_root, "unused"))
    losses = {"simple": train_script.DiffusionLoss(), "l2": L2Loss()}
    weights = {"simple": 1.0, "l2": 1.0}
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    history, simple = [], []
    for _ in range(150):
        total, logged, _ = train_script.forward_losses(args, batch, model, diffusion, losses, weights, torch.Generator().manual_seed(1), torch.device("cpu"))
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
        simple.append(logged["simple"])
    assert simple[-1] < simple[0] / 10, simple[::15]
    assert history[-1] < history[0] / 5, history[::15]


def test_resume_is_exact_bit_for_bit(data_root, tmp_path):
    extra = ["--lambda_gan", "0.05", "--disc_channels", "8", "--save_every", "2", "--keep", "5"]
    straight, step = run_train(train_args(data_root, tmp_path / "a", "--max_steps", "4", *extra))
    assert step == 4
    run_train(train_args(data_root, tmp_path / "b", "--max_steps", "2", *extra))
    resumed, step = run_train(train_args(data_root, tmp_path / "b", "--max_steps", "4", "--resume", "True", *extra))
    assert step == 4
    assert digest(resumed) == digest(straight)
    a = torch.load(tmp_path / "a" / "checkpoint_0000004.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint_0000004.pt", weights_only=True)
    for key in ("model", "ema", "disc"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert set(a) >= {"model", "ema", "opt", "disc", "disc_opt", "step", "args", "rng", "scaler"}
    assert [os.path.basename(p) for p in list_checkpoints(tmp_path / "b")] == ["checkpoint_0000002.pt", "checkpoint_0000004.pt"]
    csv = (tmp_path / "a" / "progress.csv").read_text().splitlines()
    header = csv[0].split(",")
    assert {"simple", "l2", "gan", "disc", "mse", "vb", "total", "lr"} <= set(header) and len(csv) == 5


def test_keep_only_the_last_checkpoints_and_init_from(data_root, tmp_path):
    init = tmp_path / "released.pt"
    save_tiny_checkpoint(init, seed=5)
    model, _ = run_train(train_args(data_root, tmp_path / "k", "--max_steps", "3", "--save_every", "1", "--keep", "2",
                                    "--init_from", str(init), "--lr", "0"))
    assert [os.path.basename(p) for p in list_checkpoints(tmp_path / "k")] == ["checkpoint_0000002.pt", "checkpoint_0000003.pt"]
    released = torch.load(init, weights_only=True)
    assert all(torch.equal(model.state_dict()[k], released[k]) for k in released)  # lr 0: unchanged
    assert not [f for f in os.listdir(tmp_path / "k") if f.endswith(".tmp")]


def test_nonfinite_losses_are_skipped_then_stop_with_a_message(data_root, tmp_path, monkeypatch):
    real_forward = train_script.forward_losses

    def poisoned(*a, **k):
        total, logged, seq = real_forward(*a, **k)
        return total * float("nan"), logged, seq

    monkeypatch.setattr(train_script, "forward_losses", poisoned)
    with pytest.raises(Diff2LipError, match="non-finite for 3 steps in a row"):
        run_train(train_args(data_root, tmp_path / "n", "--max_steps", "10", "--max_nonfinite", "3"))
    assert list_checkpoints(tmp_path / "n") == []


def test_bad_flags_are_one_line_errors(data_root, tmp_path, capsys):
    assert train.main(train_args(data_root, tmp_path, "--precision", "fp16", "--max_steps", "1")) == 1
    assert train.main(train_args(tmp_path / "nothing", tmp_path, "--max_steps", "1")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: --precision fp16 needs a GPU")
    assert err[1].startswith("error: ") and "preprocess" in err[1]


@pytest.mark.slow
def test_two_process_ddp_keeps_parameters_identical(data_root, tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(
        "import sys, json, hashlib, torch\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r}); sys.path.insert(0, {str(REPO_ROOT / 'tests')!r})\n"
        "import training.diff2lip as train\n"
        "from guided_diffusion import dist_util\n"
        "args = train.create_parser().parse_args(sys.argv[2:])\n"
        "model, step = train.train(args)\n"
        "h = hashlib.sha256()\n"
        "for k, v in model.state_dict().items(): h.update(v.numpy().tobytes())\n"
        "open(sys.argv[1] + f'/rank{dist_util.rank()}.txt', 'w').write(h.hexdigest())\n"
    )
    argv = train_args(data_root, tmp_path / "out", "--max_steps", "3", "--lambda_gan", "0.05", "--disc_channels", "8", "--save_every", "3")
    code, output = run([*torchrun(2), str(worker), str(tmp_path), *argv], timeout=300)
    assert code == 0, output
    assert (tmp_path / "rank0.txt").read_text() == (tmp_path / "rank1.txt").read_text()
    state = torch.load(tmp_path / "out" / "checkpoint_0000003.pt", weights_only=True)
    assert len(state["rng"]) == 2 and state["step"] == 3


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(data_root, tmp_path):
    out = tmp_path / "sig"
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "train.py"), *train_args(data_root, out, "--save_every", "1000")],
        cwd=REPO_ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.time() + 120
    progress = out / "progress.csv"
    while time.time() < deadline and not (progress.exists() and len(progress.read_text().splitlines()) >= 2):
        time.sleep(0.5)  # until a step has been logged
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    saved = list_checkpoints(out)
    assert len(saved) == 1 and "stop signal: saved step" in output


@pytest.mark.parametrize("expert_kind", ["syncnet128", "wav2lip"])
def test_all_five_losses_with_either_expert_and_a_preview(data_root, tmp_path, expert_kind):
    from training.syncnet import SyncNet128, Wav2LipSyncNet, save_syncnet_checkpoint

    torch.manual_seed(0)
    expert = tmp_path / "expert.pt"
    if expert_kind == "syncnet128":
        save_syncnet_checkpoint(expert, SyncNet128(), kind="syncnet128")
    else:
        torch.save({"state_dict": Wav2LipSyncNet().state_dict()}, expert)  # lipsync_expert.pth's format
    # The lpips package's network with random VGG weights (the real ones need a download).
    out = tmp_path / "five"
    run_train(train_args(data_root, out, "--max_steps", "2", "--lambda_sync", "0.03", "--lambda_lpips", "0.1",
                         "--lpips_backbone", "random",
                         "--lambda_gan", "0.01", "--disc_channels", "8", "--sync_expert", str(expert),
                         "--preview_every", "2", "--preview_respacing", "ddim2",
                         *(["--preview_sampler", "dpm++2m", "--preview_sampling_steps", "2"] if expert_kind == "wav2lip" else [])))
    header = (out / "progress.csv").read_text().splitlines()[0].split(",")
    assert {"simple", "l2", "sync", "lpips", "gan", "disc", "total"} <= set(header)
    import cv2

    preview = cv2.imread(str(out / "preview_0000002.png"))
    assert preview.shape == (2 * 32, 2 * 5 * 32, 3)  # real over generated, 2 sequences of 5 frames


def test_fine_tuning_a_network_file_takes_its_flags(data_root, tmp_path, capsys):
    """train.py --init_from one of our files, with no network flags: the file's flags build the
    network (and a contradicting one is a one-line error naming both values)."""
    from guided_diffusion.checkpoint_format import network_flags, save_network
    from guided_diffusion.script_util import tfg_model_and_diffusion_defaults

    flags = network_flags({**tfg_model_and_diffusion_defaults(), **TINY_FLAGS, "predict_xstart": True})
    model, _ = tfg_create_model_and_diffusion(**flags)
    init = tmp_path / "mine.safetensors"
    save_network(str(init), model.state_dict(), flags, {"note": "tiny"})
    no_network_flags = train_args(data_root, tmp_path / "run")[len(TINY_CLI_FLAGS):]
    assert no_network_flags[0] == "--data_root"
    argv = [*no_network_flags, "--init_from", str(init), "--max_steps", "1", "--lr", "0"]
    assert train.main(argv) == 0
    saved = torch.load(tmp_path / "run" / "checkpoint_0000001.pt", weights_only=True)
    assert {k: saved["args"][k] for k in ("image_size", "num_channels", "channel_mult", "predict_xstart")} == {
        "image_size": 32, "num_channels": 32, "channel_mult": "1,2", "predict_xstart": True}
    assert all(torch.equal(saved["model"][k], v) for k, v in model.state_dict().items())  # lr 0
    assert "flags from" in capsys.readouterr().out
    assert train.main([*argv, "--num_channels", "64"]) == 1
    assert "--num_channels 64 contradicts" in capsys.readouterr().err


def loss_rows(output_dir) -> list:
    """progress.csv's loss columns (not its timings), row by row."""
    lines = (output_dir / "progress.csv").read_text().splitlines()
    header = lines[0].split(",")
    keep = [i for i, h in enumerate(header) if h in {"simple", "l2", "mse", "vb", "total", "grad_norm", "lr", "step"}]
    return [[row.split(",")[i] for i in keep] for row in lines[1:]]


def test_shards_local_and_over_http_give_the_losses_of_folders(data_root, tmp_path):
    from dataset import shards
    from helpers import serve_folder

    shard_root = tmp_path / "shards"
    assert shards.main(["convert", "--input", str(data_root), "--output", str(shard_root), "--shard_size_mb", "0.1"]) == 0
    run_train(train_args(data_root, tmp_path / "folders", "--max_steps", "2"))
    run_train(train_args(shard_root, tmp_path / "local", "--max_steps", "2"))
    with serve_folder(shard_root) as url:
        run_train(train_args(url, tmp_path / "http", "--max_steps", "2", "--shard_cache", str(tmp_path / "cache")))
    folders = loss_rows(tmp_path / "folders")
    assert len(folders) == 2 and float(folders[0][0]) > 0
    assert loss_rows(tmp_path / "local") == folders and loss_rows(tmp_path / "http") == folders
    # only the shards the batches needed were fetched, each named by its manifest SHA-256
    fetched = set(os.listdir(tmp_path / "cache"))
    assert fetched and fetched <= {f"{s['sha256']}.tar" for s in json.loads((shard_root / "manifest.json").read_text())["shards"]}
