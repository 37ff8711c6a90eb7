"""Reproduce the demo checkpoints end to end, and the ablation of the losses in miniature.

    python -m scripts.demo_train                      (make demo-train)
    python -m scripts.demo_train --ablation True      (make demo-ablation)
    python -m scripts.demo_train --parameterization eps --timestep_respacing ddim25   (make demo-train-eps)
    python -m scripts.demo_train --student_only True  (only step 5: the 2-step student of the exported network)

Every step is the repository's own command, run as a subprocess with the flags below, in
`--work_dir` (each step resumes or skips what an earlier, interrupted run finished):
1. render the training set with `dataset/synthetic.py` (data seed 0: 54 identities x 3 clips x
   8 s; the last 6 identities are held out) and preprocess it at 64 px with
   `dataset/preprocess.py`, the split taken from the renderer's train.txt / test.txt;
2. train the light SyncNet64 expert with `scripts.train_syncnet` (validated on the held-out identities);
3. train the demo network (`synthetic_demo.DEMO_MODEL`) with `train.py` and all five losses (LPIPS on a
   fixed random VGG-16: `--lpips_backbone random`, since the ImageNet weights cannot be
   downloaded offline);
4. export both with `scripts.export_checkpoint` (EMA weights, float16) into `--export_dir`, and run the
   demo's evaluation with them;
5. distil the exported network into a 2-step student with `scripts.train_distill` (progressive
   distillation, `DISTILL_TRAINING`), export it with its sampling flags as
   `diff2lip_synthetic64_student2.pt` and evaluate it like the demo with its 2 DDIM steps.
With `--ablation True`, step 3 trains four networks with the same budget (`--ablation_steps`):
L_simple only, + L2 + SyncNet, + LPIPS, + sequence GAN (the rows of the paper's Tables 1 and 3),
scores each like the demo and prints a Markdown table.
With `--parameterization eps`, step 3 trains the demo network in the released parameterization
(predicts the noise, learned sigma: `synthetic_demo.DEMO_MODEL_EPS`) instead, with the same data, losses
and settings, fine-tuned from the exported x0 network (`train.py --init_from`: both have the
learned variance, so every tensor fits; the output conv's first 3 channels switch from the clean
frame to the noise) and with the exported expert (step 2 is skipped); it is exported as
`diff2lip_synthetic64_eps.pt` (the raw weights, not the EMA: see NETWORKS) and evaluated with its
own flags.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional

from common.command import run_command
from common.errors import Diff2LipError
from common.files import atomic_write_json
from common.flags import PROGRESS, Option, Options, as_flags, create_argparser
from evaluation import synthetic_demo

TRAIN_DATA = dict(identities=54, clips_per_identity=3, seconds=8.0, test_identities=6, seed=0)
SYNCNET_TRAINING = dict(kind="syncnet64", batch_size=64, lr=3e-4, val_every=250, val_pairs=512, save_every=250,
                        log_every=50, num_workers=1)
DIFF2LIP_TRAINING = dict(batch_size=4, lr=5e-4, warmup_steps=100, ema_rate=0.995, precision="bf16",
                         lpips_backbone="random", save_every=250, log_every=50, keep=2, num_workers=1)
# The demo network's loss weights: every loss on.
DEMO_LOSSES = dict(lambda_l2=1, lambda_sync=0.03, lambda_lpips=0.1, lambda_gan=0.01)
# The networks of --parameterization: where each trains, its exported file, its default step count,
# whether it starts from the exported x0 network, and which weights are exported. From scratch,
# the noise-predicting network still sampled noise in the mouth after 500 steps (lip-sync score
# -0.06); fine-tuned from the x0 network it only has to learn to predict the noise. Its step count
# is what the CPU budget of its session allowed (see the README). After so few steps the EMA (rate
# 0.995) still holds 0.995**201 = 37% of the x0 network's weights, whose output head predicts the
# clean frame: the masked MSE of its DDIM-25 samples to the real frames was 1.08, the raw weights' 0.14.
NETWORKS = {
    "x0": dict(run_dir="diff2lip64", eval_dir="eval", checkpoint=synthetic_demo.DEMO_CHECKPOINT, steps=1000, fine_tune=False,
               weights="ema"),
    "eps": dict(run_dir="diff2lip64_eps", eval_dir="eval_eps", checkpoint=synthetic_demo.DEMO_CHECKPOINT_EPS, steps=201,
                fine_tune=True, weights="model"),
}
# Step 5: progressive distillation of the exported x0 network, one round ddim4 -> ddim2.
DISTILL_TRAINING = dict(teacher_steps=4, student_steps=2, steps_per_round=200, batch_size=2, lr=1e-4, warmup_steps=10,
                        ema_rate=0.99, precision="bf16", save_every=25, keep=2, log_every=10, num_workers=1)
STUDENT_CHECKPOINT = synthetic_demo.DEMO_STUDENT
# The loss weights of each ablation row (the last row is the demo network's).
ABLATION = {
    "L_simple only": dict(lambda_l2=0, lambda_sync=0, lambda_lpips=0, lambda_gan=0),
    "+ L2 + SyncNet": dict(lambda_l2=1, lambda_sync=0.03, lambda_lpips=0, lambda_gan=0),
    "+ LPIPS": dict(lambda_l2=1, lambda_sync=0.03, lambda_lpips=0.1, lambda_gan=0),
    "+ sequence GAN": DEMO_LOSSES,
}


def demo_train_defaults() -> dict:
    return DEMO_TRAIN_OPTIONS.defaults()


DEMO_TRAIN_OPTIONS = Options(
    Option("work_dir", "outputs/demo_train", "data, preprocessed crops, training runs and evaluation outputs go here"),
    Option("export_dir", "checkpoints/demo", "where the exported demo checkpoints go (the paths demo.py reads by default)"),
    Option("syncnet_steps", 1500, "optimizer steps of the SyncNet64 expert (batch 64)"),
    Option("steps", 0, "optimizer steps of the demo network (batch 4 sequences of 5 frames); 0: the network's own (NETWORKS)"),
    Option("parameterization", "x0", "x0: the demo network (predicts the clean frame, trained from scratch with its own expert); "
        "eps: the released parameterization (predicts the noise, learned sigma), fine-tuned from the exported x0 "
        "network with the exported expert"),
    Option("ablation", False, "instead of the demo network, train and score the four ablation rows"),
    Option("ablation_steps", 500, "optimizer steps of each ablation row"),
    Option("timestep_respacing", "ddim10", "sampling steps of the evaluation (ddimN)"),
    Option("student_only", False, "run only step 5: distil the exported x0 network (in --export_dir) into the 2-step student, "
        "export and evaluate it"),
    PROGRESS,
)


def step(title: str, argv: List[str]) -> None:
    """Run one of the repository's commands (no shell: the arguments go as they are)."""
    print(f"\n[demo-train] {title}\n  $ {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    if subprocess.run([sys.executable, *argv]).returncode != 0:
        raise Diff2LipError(f"{title} failed (its messages are above); rerun to resume")
    print(f"[demo-train] {title}: {time.perf_counter() - started:.0f} s", flush=True)


def prepare_data(work_dir: str) -> str:
    """Render and preprocess the training set (skipped when done); returns the preprocessed root."""
    videos, crops = os.path.join(work_dir, "data"), os.path.join(work_dir, "crops64")
    marker = os.path.join(videos, "rendered.json")  # written once the render is complete
    if _read_json(marker) != TRAIN_DATA:
        step("render the training set", ["dataset/synthetic.py", "--out_root", videos, *as_flags(TRAIN_DATA)])
        atomic_write_json(marker, TRAIN_DATA)
    step("preprocess at 64 px", ["dataset/preprocess.py", "--input_root", videos, "--output_root", crops,
                                 "--image_size", "64", "--train_list", os.path.join(videos, "train.txt"),
                                 "--val_list", os.path.join(videos, "test.txt"), "--num_workers", "2"])
    return crops


def train_syncnet(crops: str, work_dir: str, steps: int) -> str:
    out = os.path.join(work_dir, "syncnet64")
    step("train the SyncNet64 expert", ["-m", "scripts.train_syncnet", "--data_root", crops, "--output_dir", out,
                                        "--max_steps", str(steps), "--resume", "True", *as_flags(SYNCNET_TRAINING)])
    return os.path.join(out, "syncnet_best.pt")


def train_diff2lip(crops: str, out: str, expert: str, steps: int, lambdas: Dict[str, float],
                   parameterization: str = "x0", init_from: str = "") -> str:
    """Train the demo network of `parameterization` (from `init_from`'s weights if given); returns
    the path of its last checkpoint."""
    init = ["--init_from", init_from] if init_from else []
    step(f"train Diff2Lip ({out})", [
        "train.py", "--data_root", crops, "--output_dir", out, "--sync_expert", expert, "--max_steps", str(steps),
        "--resume", "True", *synthetic_demo.model_flags(parameterization), *init, *as_flags(DIFF2LIP_TRAINING),
        *as_flags(lambdas),
    ])
    return os.path.join(out, f"checkpoint_{steps:07d}.pt")


def distill_student(crops: str, work_dir: str, teacher: str, exported: str) -> str:
    """Distil `teacher` (the exported x0 network) into the 2-step student, exported to `exported`
    with the flags that sample it; returns `exported`."""
    step("distil the 2-step student", [
        "-m", "scripts.train_distill", "--data_root", crops, "--output_dir", os.path.join(work_dir, "student2"), "--teacher", teacher,
        "--resume", "True", "--export", exported, *synthetic_demo.model_flags("x0"), *as_flags(DISTILL_TRAINING),
    ])
    return exported


def evaluate_student(work_dir: str, exported: str, expert: str, progress: bool) -> None:
    step("evaluate the student like the demo", [
        "demo.py", "--out_dir", os.path.join(work_dir, "eval_student2"), "--checkpoint", exported, "--sync_expert", expert,
        "--timestep_respacing", f"ddim{DISTILL_TRAINING['student_steps']}", "--progress", str(progress),
    ])


def _read_json(path: str):
    """The JSON in `path`, or None when there is no such file."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def evaluation_args(args) -> argparse.Namespace:
    return argparse.Namespace(timestep_respacing=args.timestep_respacing, precision=synthetic_demo.demo_defaults()["precision"],
                              parameterization="x0", progress=args.progress)


def held_out_clips(work_dir: str, progress: bool) -> str:
    """The demo's held-out clips (data seed 1), rendered once."""
    data_dir = os.path.join(work_dir, "eval", "data")
    synthetic_demo.render(data_dir, synthetic_demo.DEMO_DATA["seconds"], progress)
    return data_dir


def exported_files(export_dir: str, parameterization: str):
    """The exported network of `parameterization`, the exported x0 network and the exported expert."""
    return tuple(os.path.join(export_dir, os.path.basename(path)) for path in
                 (NETWORKS[parameterization]["checkpoint"], synthetic_demo.DEMO_CHECKPOINT, synthetic_demo.DEMO_SYNC_EXPERT))


def run(args) -> None:
    if args.parameterization not in NETWORKS:
        raise Diff2LipError(f"--parameterization {args.parameterization!r} is not one of {', '.join(NETWORKS)}")
    if args.ablation and args.parameterization != "x0":
        raise Diff2LipError("--ablation trains the x0 demo network's rows; it takes no --parameterization")
    if args.student_only and (args.ablation or args.parameterization != "x0"):
        raise Diff2LipError("--student_only distils the x0 demo network; it takes no --ablation or --parameterization")
    network = NETWORKS[args.parameterization]
    exported, exported_x0, exported_expert = exported_files(args.export_dir, args.parameterization)
    exported_student = os.path.join(args.export_dir, os.path.basename(STUDENT_CHECKPOINT))
    if args.student_only:
        if not (os.path.isfile(exported_x0) and os.path.isfile(exported_expert)):
            raise Diff2LipError(f"--student_only distils {exported_x0} (scored with {exported_expert}); "
                                "`make demo-train` makes them")
        distill_student(prepare_data(args.work_dir), args.work_dir, exported_x0, exported_student)
        evaluate_student(args.work_dir, exported_student, exported_expert, args.progress)
        return
    if network["fine_tune"] and not (os.path.isfile(exported_x0) and os.path.isfile(exported_expert)):
        raise Diff2LipError(f"--parameterization {args.parameterization} fine-tunes {exported_x0} with "
                            f"{exported_expert}; `make demo-train` makes them")
    started = time.perf_counter()
    crops = prepare_data(args.work_dir)
    if network["fine_tune"]:
        expert = exported_expert
    else:
        expert = train_syncnet(crops, args.work_dir, args.syncnet_steps)
    if args.ablation:
        data_dir = held_out_clips(args.work_dir, args.progress)
        rows = {}
        for i, (row, lambdas) in enumerate(ABLATION.items()):
            run_dir = os.path.join(args.work_dir, f"ablation{i}")
            checkpoint = train_diff2lip(crops, run_dir, expert, args.ablation_steps, lambdas)
            rows[row] = synthetic_demo.evaluate_checkpoint(checkpoint, data_dir, os.path.join(run_dir, "eval"),
                                                 evaluation_args(args), sheets=False)
            print(f"[demo-train] {row}: {synthetic_demo.report(rows[row])}", flush=True)
        atomic_write_json(os.path.join(args.work_dir, "ablation.json"), rows)
        print(f"\nAblation, {args.ablation_steps} steps each ({time.perf_counter() - started:.0f} s in all):\n")
        print("| losses | lip-sync score | wrong-audio control | PSNR (dB) | SSIM |")
        print("|---|---|---|---|---|")
        for row, s in rows.items():
            print(f"| {row} | {s['lip_sync']:.3f} | {s['wrong_audio']:.3f} | {s['psnr']:.2f} | {s['ssim']:.4f} |")
        return

    checkpoint = train_diff2lip(crops, os.path.join(args.work_dir, network["run_dir"]), expert,
                                args.steps or network["steps"], DEMO_LOSSES, args.parameterization,
                                exported_x0 if network["fine_tune"] else "")
    step("export the demo network", ["-m", "scripts.export_checkpoint", "--checkpoint", checkpoint, "--out", exported,
                                     "--weights", network["weights"], "--half", "True", "--note", synthetic_demo.DEMO_NOTE])
    if expert != exported_expert:
        step("export the expert", ["-m", "scripts.export_checkpoint", "--checkpoint", expert, "--out", exported_expert,
                                   "--half", "True"])
    step("evaluate like the demo", ["demo.py", "--out_dir", os.path.join(args.work_dir, network["eval_dir"]),
                                    "--checkpoint", exported, "--sync_expert", exported_expert,
                                    "--parameterization", args.parameterization,
                                    "--timestep_respacing", args.timestep_respacing, "--progress", str(args.progress)])
    if args.parameterization == "x0":
        distill_student(crops, args.work_dir, exported, exported_student)
        evaluate_student(args.work_dir, exported_student, exported_expert, args.progress)
    print(f"[demo-train] done in {time.perf_counter() - started:.0f} s")


def main(argv: Optional[List[str]] = None) -> int:
    def body() -> int:
        run(create_argparser(DEMO_TRAIN_OPTIONS, description=__doc__).parse_args(argv))
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
