"""scripts.train_distill: a real run that exports a student generate.py's loader reads, exact
resume, DDP, flags (training.distillation's schedule and target: tests/training/test_distillation.py)."""

import hashlib
import os

import pytest
import torch

from common.errors import Diff2LipError
from common.flags import create_argparser
from guided_diffusion import logger
from guided_diffusion.checkpoint_format import load_model_weights, network_flags
from guided_diffusion.script_util import (
    tfg_create_model_and_diffusion,
    tfg_model_and_diffusion_defaults,
)
from helpers import TINY_CLI_FLAGS, lower_half_kwargs, make_preprocessed_root, save_tiny_checkpoint
from launchers import REPO_ROOT, run, torchrun
from scripts import train_distill


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    make_preprocessed_root(root, n_clips=3, n_frames=14, image_size=32, val_clips=0)
    return root


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_tiny_checkpoint(path, seed=3)
    return path


def distill_args(data_root, output_dir, teacher, *extra):
    return [
        *TINY_CLI_FLAGS, "--data_root", str(data_root), "--output_dir", str(output_dir), "--teacher", str(teacher),
        "--batch_size", "2", "--num_workers", "0", "--warmup_steps", "2", "--log_every", "1", "--lr", "1e-3", *extra,
    ]


def run_distill(argv):
    try:
        return train_distill.distill(train_distill.create_parser().parse_args(argv))
    finally:
        logger.close()


def digest(state) -> str:
    h = hashlib.sha256()
    for name, tensor in state.items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# Real runs


def test_one_round_runs_for_real_and_exports_a_student_that_loads_and_samples(data_root, teacher, tmp_path):
    out = tmp_path / "run"
    exported = run_distill(distill_args(data_root, out, teacher, "--teacher_steps", "4", "--student_steps", "2",
                                        "--steps_per_round", "3", "--export", str(tmp_path / "student.pt")))
    assert exported == str(tmp_path / "student.pt")
    saved = torch.load(exported, weights_only=True)
    flags = saved["flags"]
    assert flags["timestep_respacing"] == "ddim2" and flags["use_ddim"] is True
    assert set(flags) == set(network_flags(tfg_model_and_diffusion_defaults())) | {"timestep_respacing", "use_ddim"}
    assert saved["trained_on"]["init_from"] == str(teacher) and saved["trained_on"]["steps"] == 3
    assert flags["image_size"] == 32 and flags["num_channels"] == 32 and flags["learn_sigma"] is True
    assert all(v.dtype == torch.float16 for v in saved["model"].values() if v.is_floating_point())
    round_dir = out / "round1_ddim2"
    assert torch.load(round_dir / "student_ddim2.pt", weights_only=True)["flags"] == flags
    header = (round_dir / "progress.csv").read_text().splitlines()[0].split(",")
    assert {"distill", "total", "lr", "grad_norm"} <= set(header) and {"distill_t0", "distill_t500"} & set(header)
    # generate.py's loader takes it into the network its flags build, and its sampler runs 2 steps.
    model_flags = {k: v for k, v in flags.items() if k != "use_ddim"}
    model, diffusion = tfg_create_model_and_diffusion(**model_flags)
    load_model_weights(model, exported)
    ema = torch.load(round_dir / "checkpoint_0000003.pt", weights_only=True)["ema"]
    assert all(torch.equal(model.state_dict()[k], v.half().float()) for k, v in ema.items())
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    kwargs = lower_half_kwargs(2, 32)
    kwargs.update(ref_img=torch.zeros(2, 3, 32, 32), indiv_mels=torch.zeros(2, 80, 16))
    sample = diffusion.ddim_sample_loop(model, (2, 3, 32, 32), noise=torch.randn(2, 3, 32, 32), model_kwargs=kwargs)
    assert len(calls) == 2 and torch.isfinite(sample).all()
    # the student learnt: it moved away from the teacher
    released = torch.load(teacher, weights_only=True)
    assert any(not torch.equal(released[k], model.state_dict()[k]) for k in released)


def test_the_last_round_distils_a_2_step_student_into_one_pass_that_generate_samples(data_root, teacher, tmp_path):
    """8 -> 4 -> 2 -> 1: the last round's student samples with ddim1, one network pass at t = 500."""
    exported = run_distill(distill_args(data_root, tmp_path / "run", teacher, "--teacher_steps", "8", "--student_steps", "1",
                                        "--steps_per_round", "2", "--export", str(tmp_path / "student1.pt")))
    rounds = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert rounds == ["round1_ddim4", "round2_ddim2", "round3_ddim1"]
    saved = torch.load(exported, weights_only=True)
    assert saved["flags"]["timestep_respacing"] == "ddim1" and saved["flags"]["use_ddim"] is True
    assert saved["trained_on"]["init_from"] == str(tmp_path / "run" / "round2_ddim2" / "checkpoint_0000002.pt")
    header = (tmp_path / "run" / "round3_ddim1" / "progress.csv").read_text().splitlines()[0].split(",")
    assert "distill_t500" in header and "distill_t0" not in header
    model, diffusion = tfg_create_model_and_diffusion(**{k: v for k, v in saved["flags"].items() if k != "use_ddim"})
    load_model_weights(model, exported)
    seen = []
    model.register_forward_hook(lambda module, inputs, output: seen.append(inputs[1].tolist()))
    kwargs = lower_half_kwargs(2, 32)
    kwargs.update(ref_img=torch.zeros(2, 3, 32, 32), indiv_mels=torch.zeros(2, 80, 16))
    sample = diffusion.ddim_sample_loop(model, (2, 3, 32, 32), noise=torch.randn(2, 3, 32, 32), model_kwargs=kwargs)
    assert seen == [[500, 500]] and torch.isfinite(sample).all()


def test_resume_is_exact_across_rounds(data_root, teacher, tmp_path):
    """Two rounds of 2 steps straight, and the same run stopped after round 2's first step and resumed."""
    base = ["--teacher_steps", "8", "--student_steps", "2", "--save_every", "1", "--keep", "5"]
    extra = [*base, "--steps_per_round", "2"]
    run_distill(distill_args(data_root, tmp_path / "a", teacher, *extra))
    run_distill(distill_args(data_root, tmp_path / "b", teacher, *extra))
    last = tmp_path / "b" / "round2_ddim2"
    os.remove(last / "checkpoint_0000002.pt")  # as if stopped after step 1 of round 2
    os.remove(last / "student_ddim2.pt")
    run_distill(distill_args(data_root, tmp_path / "b", teacher, *extra, "--resume", "True"))
    a = torch.load(tmp_path / "a" / "round2_ddim2" / "checkpoint_0000002.pt", weights_only=True)
    b = torch.load(last / "checkpoint_0000002.pt", weights_only=True)
    for key in ("model", "ema"):
        assert digest(a[key]) == digest(b[key]), key
    assert b["args"]["init_from"] == str(tmp_path / "b" / "round1_ddim4" / "checkpoint_0000002.pt")
    # A round distilled from another teacher (the previous round's budget changed) is not resumed.
    with pytest.raises(Diff2LipError, match="distilled from"):
        run_distill(distill_args(data_root, tmp_path / "b", teacher, *base, "--steps_per_round", "3", "--resume", "True"))


def test_every_flag_is_documented_and_bad_flags_are_one_line_errors(data_root, teacher, tmp_path, capsys):
    parser = train_distill.create_parser()
    undocumented = [a.dest for a in parser._actions if a.dest != "help" and a.help.startswith("(default")]
    assert undocumented == []
    assert train_distill.main(distill_args(data_root, tmp_path, teacher, "--teacher_steps", "6")) == 1
    assert train_distill.main(distill_args(data_root, tmp_path, "")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: --teacher_steps 6 must be") and err[1].startswith("error: --teacher is required")


@pytest.mark.slow
def test_two_process_ddp_keeps_parameters_identical(data_root, teacher, tmp_path):
    worker = tmp_path / "worker.py"
    # Each rank hashes its own network, as training.diff2lip.train returns it to the distillation.
    worker.write_text(
        "import sys, hashlib, torch\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r}); sys.path.insert(0, {str(REPO_ROOT / 'tests')!r})\n"
        "from scripts import train_distill\n"
        "from training import diff2lip\n"
        "from guided_diffusion import dist_util\n"
        "trained, real_train = [], diff2lip.train\n"
        "diff2lip.train = lambda *a, **k: trained.append(real_train(*a, **k)) or trained[-1]\n"
        "train_distill.distill(train_distill.create_parser().parse_args(sys.argv[2:]))\n"
        "h = hashlib.sha256()\n"
        "for k, v in trained[-1][0].state_dict().items(): h.update(v.numpy().tobytes())\n"
        "open(sys.argv[1] + f'/rank{dist_util.rank()}.txt', 'w').write(h.hexdigest())\n"
    )
    argv = distill_args(data_root, tmp_path / "out", teacher, "--teacher_steps", "4", "--student_steps", "2",
                        "--steps_per_round", "2", "--lambda_gan", "0.05", "--disc_channels", "8")
    code, output = run([*torchrun(2), str(worker), str(tmp_path), *argv], timeout=300)
    assert code == 0, output
    assert (tmp_path / "rank0.txt").read_text() == (tmp_path / "rank1.txt").read_text()
    state = torch.load(tmp_path / "out" / "round1_ddim2" / "checkpoint_0000002.pt", weights_only=True)
    assert len(state["rng"]) == 2 and "disc" in state


# ----------------------------------------------------------------------------------------------
# scripts.demo_train's student step


def test_demo_train_student_only_distils_the_exported_network_and_scores_it_with_two_steps(tmp_path, monkeypatch):
    from evaluation import synthetic_demo as demo
    from helpers import run_demo_train_recorded
    from scripts import demo_train

    export = tmp_path / "export"
    calls = run_demo_train_recorded(tmp_path, monkeypatch, "--student_only", "True")
    assert list(calls) == ["distil the 2-step student", "evaluate the 2-step student like the demo"]
    argv = calls["distil the 2-step student"]
    assert argv[:2] == ["-m", "scripts.train_distill"]
    args = train_distill.create_parser().parse_args(argv[2:])
    assert {k: getattr(args, k) for k in demo.DEMO_MODEL} == demo.DEMO_MODEL
    assert {k: getattr(args, k) for k in demo_train.DISTILL_TRAINING} == demo_train.DISTILL_TRAINING
    assert args.teacher == str(export / "diff2lip_synthetic64.pt") and args.data_root == "CROPS64" and args.resume
    student = str(export / os.path.basename(demo_train.STUDENT_CHECKPOINT))
    assert args.export == student and args.output_dir == str(tmp_path / "work" / "student2")
    evaluation = create_argparser(demo.DEMO_OPTIONS).parse_args(calls["evaluate the 2-step student like the demo"][1:])
    assert evaluation.checkpoint == student and evaluation.timestep_respacing == "ddim2"
    assert evaluation.sync_expert == str(export / "syncnet64_synthetic.pt")
    assert demo_train.main(["--student_only", "True", "--parameterization", "eps"]) == 1


def test_demo_train_one_step_student_distils_the_exported_2_step_student(tmp_path, monkeypatch):
    from evaluation import synthetic_demo
    from helpers import run_demo_train_recorded

    (tmp_path / "export").mkdir()
    student2 = tmp_path / "export" / os.path.basename(synthetic_demo.DEMO_STUDENT)
    student2.write_bytes(b"")
    calls = run_demo_train_recorded(tmp_path, monkeypatch, "--one_step_student", "True")
    assert list(calls) == ["distil the 1-step student", "evaluate the 1-step student like the demo"]
    args = train_distill.create_parser().parse_args(calls["distil the 1-step student"][2:])
    assert (args.teacher, args.teacher_steps, args.student_steps) == (str(student2), 2, 1)
    assert args.export == str(tmp_path / "export" / os.path.basename(synthetic_demo.DEMO_STUDENT1))
    assert (args.data_root, args.output_dir, args.steps_per_round) == ("CROPS64", str(tmp_path / "work" / "student1"), 300)
    evaluation = create_argparser(synthetic_demo.DEMO_OPTIONS).parse_args(calls["evaluate the 1-step student like the demo"][1:])
    assert (evaluation.checkpoint, evaluation.timestep_respacing) == (args.export, "ddim1")
    assert evaluation.out_dir == str(tmp_path / "work" / "eval_student1")


def test_demo_train_one_step_student_without_the_2_step_student_names_the_command(tmp_path, capsys):
    from scripts import demo_train

    assert demo_train.main(["--one_step_student", "True", "--export_dir", str(tmp_path), "--work_dir", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --one_step_student distils") and "make demo-train" in err
    assert not (tmp_path / "w").exists()
