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
from common.flags import create_argparser
from evaluation import synthetic_demo
from guided_diffusion.checkpoint_format import load_model_weights
from guided_diffusion.script_util import tfg_create_model_and_diffusion, tfg_model_and_diffusion_defaults
from helpers import run_demo_train_recorded
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


def test_the_committed_one_step_student_samples_with_one_pass_and_moved_from_its_teacher():
    one, two = (REPO_ROOT / p for p in (synthetic_demo.DEMO_STUDENT1, synthetic_demo.DEMO_STUDENT))
    assert os.path.getsize(one) <= 8 * 2**20
    saved = torch.load(one, weights_only=True)
    assert (saved["flags"]["timestep_respacing"], saved["flags"]["use_ddim"]) == ("ddim1", True)
    assert {k: saved["flags"][k] for k in synthetic_demo.DEMO_MODEL} == synthetic_demo.DEMO_MODEL
    assert saved["trained_on"]["init_from"] == synthetic_demo.DEMO_STUDENT
    assert saved["trained_on"]["note"] == synthetic_demo.DEMO_NOTE
    model, diffusion = tfg_create_model_and_diffusion(**{**tfg_model_and_diffusion_defaults(), **synthetic_demo.DEMO_MODEL,
                                                         "timestep_respacing": "ddim1"})
    load_model_weights(model, str(one))
    assert diffusion.timestep_map == [500]
    teacher = torch.load(two, weights_only=True)["model"]
    assert all(torch.isfinite(v.float()).all() for v in saved["model"].values())
    assert max(float((saved["model"][k].float() - teacher[k].float()).abs().max()) for k in teacher) > 1e-3


def test_model_flags_round_trip_through_the_parser():
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


def _recorded_proof(tmp_path, monkeypatch, *argv):
    """demo_train with its steps recorded (helpers.run_demo_train_recorded), the held-out clips
    not rendered and each scoring returning a row that names the network file it scored."""
    from evaluation import synthetic_demo

    scored = []

    def evaluate(checkpoint, data_dir, out_dir, args, sheets, network=None, filelists="test"):
        scored.append((checkpoint, network, filelists, args.timestep_respacing))
        k = len(scored)
        return dict(lip_sync=0.1 * k, wrong_audio=0.01 * k, source=0.0, psnr=20.0 + k, ssim=0.5, mouth_psnr=15.0 + k,
                    mouth_sharpness=0.2 * k)

    monkeypatch.setattr(demo_train, "held_out_clips", lambda work_dir, progress: str(tmp_path / "held_out"))
    monkeypatch.setattr(synthetic_demo, "evaluate_checkpoint", evaluate)
    (tmp_path / "held_out").mkdir(exist_ok=True)
    return run_demo_train_recorded(tmp_path, monkeypatch, *argv), scored


def test_lift_proof_trains_b_from_scratch_and_c_lifted_and_scores_all_three(tmp_path, monkeypatch, capsys):
    calls, scored = _recorded_proof(tmp_path, monkeypatch, "--lift_proof", "True", "--lift_steps", "7",
                                    "--timestep_respacing", "ddim4")
    export = tmp_path / "export"
    scratch = calls["train Diff2Lip"]  # (b), the first of the two trainings (the next test has (c))
    out = capsys.readouterr().out
    assert "--init_from" not in scratch and scratch[scratch.index("--channel_mult") + 1] == "1,1,2,2"
    assert scratch[scratch.index("--image_size") + 1] == "128" and scratch[scratch.index("--data_root") + 1] == "CROPS128"
    assert scratch[scratch.index("--max_steps") + 1] == "7"
    # (b) from scratch at the demo's learning rate, (c) fine-tuned at --lift_lr (test below)
    assert float(scratch[scratch.index("--lr") + 1]) == demo_train.DIFF2LIP_TRAINING["lr"]
    assert scratch[scratch.index("--sync_expert") + 1] == str(export / "syncnet64_synthetic.pt")
    # Scored: (a) the exported 64 px network, then (b) and (c)'s last checkpoints, each built from its file.
    work = tmp_path / "work" / "lift128"
    assert [s[0] for s in scored] == [str(export / "diff2lip_synthetic64.pt"), str(work / "scratch" / "checkpoint_0000007.pt"),
                                      str(work / "lifted" / "checkpoint_0000007.pt")]
    assert all(s[1] == [] and s[3] == "ddim4" for s in scored)
    table = out[out.index("| network |"):]
    assert "| (a) 64 px network, upscaled | 0.100 | 0.010 | 21.00 | 0.5000 | 16.00 | 0.200 |" in table
    assert "| (c) 64 px lifted to 128 px, fine-tuned | 0.300 |" in table
    saved = json.loads((tmp_path / "work" / "lift128.json").read_text())
    assert saved["steps"] == 7 and list(saved["rows"]) == list(demo_train.LIFT_ROWS.values())


def test_lift_proof_lifts_the_exported_network(tmp_path, monkeypatch):
    recorded = []
    monkeypatch.setattr(demo_train, "train_diff2lip", lambda crops, out, expert, steps, lambdas, init_from="", network=None,
                        lr=None: recorded.append((init_from, network, lr)) or f"{out}/checkpoint_{steps:07d}.pt")
    _recorded_proof(tmp_path, monkeypatch, "--lift_proof", "True", "--lift_lr", "3e-5")
    (_, scratch, scratch_lr), (init, lifted, lifted_lr) = recorded
    assert init == str(tmp_path / "export" / "diff2lip_synthetic64.pt") and lifted == ["--image_size", "128"]
    assert (scratch_lr, lifted_lr) == (None, 3e-5)
    assert "--channel_mult" in scratch and "--init_from" not in scratch


def test_speaker_proof_fine_tunes_on_new_video_of_a_held_out_speaker(tmp_path, monkeypatch, capsys):
    from dataset import synthetic

    rendered = []
    monkeypatch.setattr(synthetic, "render_speaker", lambda out, identity, clips, seconds, seed: rendered.append(
        (identity, tuple(clips), seconds, seed)))
    calls, scored = _recorded_proof(tmp_path, monkeypatch, "--speaker_proof", "True", "--timestep_respacing", "ddim4")
    assert rendered == [(1, (1, 2, 3, 4), 30.0, 1)]  # identity 1 of the demo's held-out render (seed 1), new clips
    argv = calls["fine-tune on the speaker"]
    assert argv[:2] == ["-m", "scripts.finetune_speaker"]
    assert argv[argv.index("--checkpoint") + 1] == str(tmp_path / "export" / "diff2lip_synthetic64.pt")
    assert argv[argv.index("--lr") + 1] == "0.0001" and argv[argv.index("--steps") + 1] == "600"
    assert argv[argv.index("--is_voxceleb2") + 1] == "True"
    speaker = str(tmp_path / "work" / "speaker" / "speaker.pt")
    assert [(s[0], s[2]) for s in scored] == [(str(tmp_path / "export" / "diff2lip_synthetic64.pt"), "speaker"), (speaker, "speaker")]
    held_out = tmp_path / "held_out"
    assert (held_out / "speaker_reconstruction.txt").read_text() == "id00001/clip00/00001 id00001/clip00/00001\n"
    cross = (held_out / "speaker_cross.txt").read_text().splitlines()
    assert cross == [f"id{i:05d}/clip00/00001 id00001/clip00/00001" for i in (2, 3, 4, 5, 6)]
    assert "| after fine-tuning | 0.200 |" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--lift_proof", "True", "--ablation", "True"], ["--speaker_proof", "True", "--student_only", "True"]])
def test_a_proof_takes_no_other_mode(tmp_path, capsys, argv):
    assert demo_train.main(["--work_dir", str(tmp_path / "w"), *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --") and "takes no --ablation, --student_only or --parameterization" in err


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
