"""Tests for the demo network in the released parameterization (`python -m scripts.demo_train
--parameterization eps`, `demo.py --parameterization eps`): the flags each command gets, and the committed network."""

import os

import pytest
import torch

from common.errors import Diff2LipError
from common.flags import create_argparser
from evaluation import synthetic_demo
from guided_diffusion.checkpoint_format import load_model_weights
from guided_diffusion.script_util import (
    MODEL_AND_DIFFUSION_OPTIONS,
    tfg_create_model_and_diffusion,
    tfg_model_and_diffusion_defaults,
)
from helpers import run_demo_train_recorded
from launchers import REPO_ROOT
from scripts import demo_train
from training import diff2lip


def test_demo_train_eps_fine_tunes_the_x0_network_with_the_released_parameterization(tmp_path, monkeypatch):
    calls = run_demo_train_recorded(tmp_path, monkeypatch, "--parameterization", "eps", "--timestep_respacing", "ddim25")
    export = tmp_path / "export"
    # The committed expert is reused: neither trained nor exported again.
    assert list(calls) == ["train Diff2Lip", "export the demo network", "evaluate like the demo"]
    args = diff2lip.create_parser().parse_args(calls["train Diff2Lip"][1:])
    assert (args.predict_xstart, args.learn_sigma) == (False, True)
    assert {k: getattr(args, k) for k in synthetic_demo.DEMO_MODEL if k != "predict_xstart"} == {
        k: v for k, v in synthetic_demo.DEMO_MODEL.items() if k != "predict_xstart"}
    assert args.init_from == str(export / "diff2lip_synthetic64.pt")
    assert args.sync_expert == str(export / "syncnet64_synthetic.pt")
    assert args.max_steps == demo_train.NETWORKS["eps"]["steps"] and args.resume
    assert args.output_dir == str(tmp_path / "work" / "diff2lip64_eps")
    assert (args.lambda_l2, args.lambda_sync, args.lambda_lpips, args.lambda_gan) == (1, 0.03, 0.1, 0.01)
    exported = calls["export the demo network"]
    assert exported[exported.index("--out") + 1] == str(export / "diff2lip_synthetic64_eps.pt")
    assert exported[exported.index("--weights") + 1] == "model"
    evaluation = create_argparser(synthetic_demo.DEMO_OPTIONS).parse_args(calls["evaluate like the demo"][1:])
    assert (evaluation.parameterization, evaluation.timestep_respacing) == ("eps", "ddim25")
    assert evaluation.checkpoint == str(export / "diff2lip_synthetic64_eps.pt")
    assert evaluation.out_dir == str(tmp_path / "work" / "eval_eps")


def test_demo_train_default_is_the_x0_network_from_scratch(tmp_path, monkeypatch):
    calls = run_demo_train_recorded(tmp_path, monkeypatch)
    # then step 5, the 2-step student of the exported x0 network (tests/scripts/test_train_distill.py pins its flags)
    assert list(calls) == ["train the SyncNet64 expert", "train Diff2Lip", "export the demo network",
                           "export the expert", "evaluate like the demo", "distil the 2-step student",
                           "evaluate the 2-step student like the demo"]
    args = diff2lip.create_parser().parse_args(calls["train Diff2Lip"][1:])
    assert (args.predict_xstart, args.init_from, args.max_steps) == (True, "", 1000)
    exported = calls["export the demo network"]
    assert exported[exported.index("--out") + 1] == str(tmp_path / "export" / "diff2lip_synthetic64.pt")
    assert exported[exported.index("--weights") + 1] == "ema"
    evaluation = create_argparser(synthetic_demo.DEMO_OPTIONS).parse_args(calls["evaluate like the demo"][1:])
    assert (evaluation.parameterization, evaluation.timestep_respacing) == ("x0", "ddim10")


def test_demo_train_eps_without_the_x0_network_names_the_command(tmp_path):
    with pytest.raises(Diff2LipError, match="make demo-train"):
        demo_train.run(create_argparser(demo_train.DEMO_TRAIN_OPTIONS).parse_args(
            ["--parameterization", "eps", "--export_dir", str(tmp_path), "--work_dir", str(tmp_path / "w")]))
    assert not (tmp_path / "w").exists()


def test_demo_model_flags_per_parameterization():
    parse = create_argparser(MODEL_AND_DIFFUSION_OPTIONS).parse_args
    assert synthetic_demo.model_flags() == synthetic_demo.model_flags("x0")
    x0, eps = parse(synthetic_demo.model_flags("x0")), parse(synthetic_demo.model_flags("eps"))
    assert (x0.predict_xstart, x0.learn_sigma) == (True, True)
    assert (eps.predict_xstart, eps.learn_sigma) == (False, True)
    assert vars(x0) == {**vars(eps), "predict_xstart": True}
    with pytest.raises(Diff2LipError, match="x0, eps"):
        synthetic_demo.model_flags("v")


def test_committed_eps_network_fits_its_flags_and_differs_from_the_x0_network():
    path = REPO_ROOT / synthetic_demo.DEMO_CHECKPOINT_EPS
    assert os.path.getsize(path) <= 8 * 2**20
    model, _ = tfg_create_model_and_diffusion(**{**tfg_model_and_diffusion_defaults(), **synthetic_demo.DEMO_MODEL_EPS})
    load_model_weights(model, str(path))
    eps, x0 = (torch.load(REPO_ROOT / p, weights_only=True)["model"] for p in (synthetic_demo.DEMO_CHECKPOINT_EPS, synthetic_demo.DEMO_CHECKPOINT))
    assert eps["out.2.weight"].dtype == torch.float16
    assert all(torch.isfinite(v.float()).all() for v in eps.values())
    # Fine-tuned, not a copy: the head that now predicts the noise has moved from the x0 head.
    assert float((eps["out.2.weight"][:3].float() - x0["out.2.weight"][:3].float()).abs().max()) > 1e-2
