"""Reproduce the demo checkpoints end to end, and the ablation of the losses in miniature.

    python -m scripts.demo_train                      (make demo-train)
    python -m scripts.demo_train --ablation True      (make demo-ablation)
    python -m scripts.demo_train --parameterization eps --timestep_respacing ddim25   (make demo-train-eps)
    python -m scripts.demo_train --student_only True  (only step 5: the 2-step student of the exported network)
    python -m scripts.demo_train --one_step_student True  (make demo-student1: the 2-step student distilled to 1 step)

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
With `--one_step_student True`, only the last round of progressive distillation runs
(`ONE_STEP_TRAINING`): the exported 2-step student is distilled into a 1-step student (`ddim1`: one
network pass from the noise), exported as `diff2lip_synthetic64_student1.pt` and evaluated like the
demo (docs/figures.md#student1).
With `--ablation True`, step 3 trains four networks with the same budget (`--ablation_steps`):
L_simple only, + L2 + SyncNet, + LPIPS, + sequence GAN (the rows of the paper's Tables 1 and 3),
scores each like the demo and prints a Markdown table.
With `--lift_proof True` (make demo-lift: docs/resolution.md#proof), the training set is cropped at
128 px, and three networks are scored on the demo's held-out clips with the same sampler:
(a) the exported 64 px demo network, its output upscaled to the face; (b) its lifted architecture
(`guided_diffusion/lift.py`) trained at 128 px from scratch for `--lift_steps`; (c) the exported 64
px network lifted to 128 px (`train.py --init_from --image_size 128`) and fine-tuned for as many
steps. Both trainings use the demo's settings and losses and the exported expert; (c) at
`--lift_lr`.
With `--speaker_proof True` (make demo-speaker: docs/training.md#one-speaker), the exported 64 px
network is fine-tuned on one speaker with `scripts.finetune_speaker` (SPEAKER: two minutes of new
video of one of the demo's held-out identities) and scored on that speaker's held-out demo clip
before and after: its reconstruction, and its video lip-synced to the other held-out voices.
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

if __package__ in (None, ""):
    # Run as `python scripts/demo_train.py`: Python put scripts/ on the path; the packages live one up.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.command import run_command
from common.errors import Diff2LipError
from common.files import atomic_write_json, atomic_write_text
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
# --one_step_student: the last round, the exported 2-step student -> 1 step (its one pass sits at
# ddim2's top step, guided_diffusion/respace.py).
ONE_STEP_TRAINING = dict(DISTILL_TRAINING, teacher_steps=2, student_steps=1, steps_per_round=300)
ONE_STEP_CHECKPOINT = synthetic_demo.DEMO_STUDENT1
# --lift_proof: the crop size of the lifted networks (twice the demo network's), and the names of its rows.
LIFT_SIZE = 128
LIFT_ROWS = {
    "a": "(a) 64 px network, upscaled",
    "b": f"(b) {LIFT_SIZE} px from scratch",
    "c": f"(c) 64 px lifted to {LIFT_SIZE} px, fine-tuned",
}
# --speaker_proof: the speaker (identity 1 of the demo's held-out render, DEMO_DATA), the clips of
# new video of them to fine-tune on (clip 0 is the demo's held-out clip, kept for scoring), and the
# fine-tuning's settings: the demo training's, at a fifth of its learning rate.
SPEAKER = dict(identity=1, clips=(1, 2, 3, 4), seconds=30.0)
SPEAKER_TRAINING = dict(steps=600, lr=1e-4, warmup_steps=20, ema_rate=0.99, batch_size=4, precision="bf16",
                        lpips_backbone="random", num_workers=1, is_voxceleb2=True, **DEMO_LOSSES)
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
    Option("lift_proof", False, f"instead of the demo network, compare at {LIFT_SIZE} px the 64 px network upscaled, a "
           f"{LIFT_SIZE} px network from scratch and the 64 px network lifted and fine-tuned (docs/resolution.md#proof)"),
    Option("lift_steps", 300, "with --lift_proof: optimizer steps of the from-scratch and of the lifted network"),
    Option("lift_lr", 1e-4, "with --lift_proof: learning rate of the lifted network's fine-tuning (the from-scratch network "
           "takes the demo's); at the demo's 5e-4 both moved away from the real frames between 300 and 600 steps"),
    Option("speaker_proof", False, "instead of the demo network, fine-tune the exported one on one held-out speaker and score "
           "that speaker before and after (docs/training.md#one-speaker)"),
    Option("student_only", False, "run only step 5: distil the exported x0 network (in --export_dir) into the 2-step student, "
        "export and evaluate it"),
    Option("one_step_student", False, "run only the last round of distillation: the exported 2-step student (in --export_dir) "
           "into the 1-step student (ddim1), export and evaluate it"),
    PROGRESS,
)


def step(title: str, argv: List[str]) -> None:
    """Run one of the repository's commands (no shell: the arguments go as they are)."""
    print(f"\n[demo-train] {title}\n  $ {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    if subprocess.run([sys.executable, *argv]).returncode != 0:
        raise Diff2LipError(f"{title} failed (its messages are above); rerun to resume")
    print(f"[demo-train] {title}: {time.perf_counter() - started:.0f} s", flush=True)


def prepare_data(work_dir: str, image_size: int = 64) -> str:
    """Render the training set and crop it at `image_size` (skipped when done); returns the preprocessed root."""
    videos, crops = os.path.join(work_dir, "data"), os.path.join(work_dir, f"crops{image_size}")
    marker = os.path.join(videos, "rendered.json")  # written once the render is complete
    if _read_json(marker) != TRAIN_DATA:
        step("render the training set", ["dataset/synthetic.py", "--out_root", videos, *as_flags(TRAIN_DATA)])
        atomic_write_json(marker, TRAIN_DATA)
    step(f"preprocess at {image_size} px", ["dataset/preprocess.py", "--input_root", videos, "--output_root", crops,
                                            "--image_size", str(image_size), "--train_list", os.path.join(videos, "train.txt"),
                                 "--val_list", os.path.join(videos, "test.txt"), "--num_workers", "2"])
    return crops


def train_syncnet(crops: str, work_dir: str, steps: int) -> str:
    out = os.path.join(work_dir, "syncnet64")
    step("train the SyncNet64 expert", ["-m", "scripts.train_syncnet", "--data_root", crops, "--output_dir", out,
                                        "--max_steps", str(steps), "--resume", "True", *as_flags(SYNCNET_TRAINING)])
    return os.path.join(out, "syncnet_best.pt")


def train_diff2lip(crops: str, out: str, expert: str, steps: int, lambdas: Dict[str, float],
                   parameterization: str = "x0", init_from: str = "", network: Optional[List[str]] = None,
                   lr: Optional[float] = None) -> str:
    """Train the demo network of `parameterization`, or the one of the `network` flags (from
    `init_from`'s weights if given), at DIFF2LIP_TRAINING's learning rate unless `lr` is given;
    returns the path of its last checkpoint."""
    init = ["--init_from", init_from] if init_from else []
    network = synthetic_demo.model_flags(parameterization) if network is None else network
    step(f"train Diff2Lip ({out})", [
        "train.py", "--data_root", crops, "--output_dir", out, "--sync_expert", expert, "--max_steps", str(steps),
        "--resume", "True", *network, *init, *as_flags({**DIFF2LIP_TRAINING, "lr": DIFF2LIP_TRAINING["lr"] if lr is None else lr}),
        *as_flags(lambdas),
    ])
    return os.path.join(out, f"checkpoint_{steps:07d}.pt")


def distill_student(crops: str, work_dir: str, teacher: str, exported: str, training: dict = DISTILL_TRAINING) -> str:
    """Distil `teacher` (the exported x0 network, or a student of it) into the student of
    `training` (DISTILL_TRAINING, ONE_STEP_TRAINING), exported to `exported` with the flags that
    sample it; returns `exported`."""
    steps = training["student_steps"]
    step(f"distil the {steps}-step student", [
        "-m", "scripts.train_distill", "--data_root", crops, "--output_dir", os.path.join(work_dir, f"student{steps}"),
        "--teacher", teacher, "--resume", "True", "--export", exported, *synthetic_demo.model_flags("x0"), *as_flags(training),
    ])
    return exported


def evaluate_student(work_dir: str, exported: str, expert: str, progress: bool, steps: int = DISTILL_TRAINING["student_steps"]) -> None:
    step(f"evaluate the {steps}-step student like the demo", [
        "demo.py", "--out_dir", os.path.join(work_dir, f"eval_student{steps}"), "--checkpoint", exported, "--sync_expert", expert,
        "--timestep_respacing", f"ddim{steps}", "--progress", str(progress),
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


def lift_proof(args, exported_x0: str, exported_expert: str) -> dict:
    """--lift_proof: train (b) and (c), score (a), (b) and (c) (see the module docstring), print
    and save the table; returns the scores of each row."""
    from guided_diffusion.lift import lift_flags
    from guided_diffusion.script_util import tfg_model_and_diffusion_defaults

    started = time.perf_counter()
    crops = prepare_data(args.work_dir, LIFT_SIZE)
    data_dir = held_out_clips(args.work_dir, args.progress)
    out = os.path.join(args.work_dir, f"lift{LIFT_SIZE}")
    lifted = lift_flags({**tfg_model_and_diffusion_defaults(), **synthetic_demo.DEMO_MODEL})
    networks = {  # row -> (checkpoint, seconds of training)
        "a": (exported_x0, 0.0),
    }
    for row, init in (("b", ""), ("c", exported_x0)):
        begun = time.perf_counter()
        # (c) takes its flags from the 64 px file and --image_size (train.py lifts it); (b) is the
        # same architecture, given whole.
        network = ["--image_size", str(LIFT_SIZE)] if init else as_flags(
            {k: lifted[k] for k in synthetic_demo.DEMO_MODEL})
        checkpoint = train_diff2lip(crops, os.path.join(out, "lifted" if init else "scratch"), exported_expert,
                                    args.lift_steps, DEMO_LOSSES, init_from=init, network=network,
                                    lr=args.lift_lr if init else None)
        networks[row] = (checkpoint, time.perf_counter() - begun)
    rows = {}
    for row, (checkpoint, seconds) in networks.items():
        rows[LIFT_ROWS[row]] = {**synthetic_demo.evaluate_checkpoint(
            checkpoint, data_dir, os.path.join(out, f"eval_{row}"), evaluation_args(args), sheets=row != "b", network=[]),
            "training_seconds": round(seconds, 1)}
        print(f"[demo-train] {LIFT_ROWS[row]}:\n{synthetic_demo.report(rows[LIFT_ROWS[row]])}", flush=True)
    atomic_write_json(os.path.join(args.work_dir, f"lift{LIFT_SIZE}.json"),
                      {"steps": args.lift_steps, "lifted_lr": args.lift_lr, "timestep_respacing": args.timestep_respacing,
                       "rows": rows})
    print(f"\n{LIFT_SIZE} px crops, {args.lift_steps} steps for (b) and (c), sampled with {args.timestep_respacing} "
          f"({time.perf_counter() - started:.0f} s in all):\n")
    print(proof_table(rows))
    return rows


def speaker_proof(args, exported_x0: str, exported_expert: str) -> dict:
    """--speaker_proof (see the module docstring): render the speaker's new video, fine-tune, score
    before and after; prints and saves the table, returns the two rows' scores."""
    from dataset.synthetic import clip_name, render_speaker

    started = time.perf_counter()
    data_dir = held_out_clips(args.work_dir, args.progress)
    out = os.path.join(args.work_dir, "speaker")
    videos = os.path.join(out, "videos")
    marker = os.path.join(videos, "rendered.json")
    speaker = {**SPEAKER, "clips": list(SPEAKER["clips"])}  # as the JSON marker reads back
    if _read_json(marker) != speaker:
        os.makedirs(videos, exist_ok=True)
        render_speaker(videos, SPEAKER["identity"], SPEAKER["clips"], SPEAKER["seconds"], synthetic_demo.DEMO_DATA["seed"])
        atomic_write_json(marker, speaker)
    # The speaker's held-out clip regenerated from its own audio, and lip-synced to each other held-out voice.
    first_test = synthetic_demo.DEMO_DATA["identities"] - synthetic_demo.DEMO_DATA["test_identities"]
    speaker_clip = clip_name(SPEAKER["identity"], 0)
    voices = [clip_name(i, 0) for i in range(first_test, synthetic_demo.DEMO_DATA["identities"]) if i != SPEAKER["identity"]]
    atomic_write_text(os.path.join(data_dir, "speaker_reconstruction.txt"), f"{speaker_clip} {speaker_clip}\n")
    atomic_write_text(os.path.join(data_dir, "speaker_cross.txt"), "".join(f"{v} {speaker_clip}\n" for v in voices))
    training = dict(SPEAKER_TRAINING)
    step("fine-tune on the speaker", ["-m", "scripts.finetune_speaker", "--videos", videos, "--checkpoint", exported_x0,
                                      "--sync_expert", exported_expert, "--output_dir", out, *as_flags(training),
                                      "--progress", str(args.progress)])
    rows = {}
    for row, checkpoint, eval_dir in (("before (the demo network)", exported_x0, "eval_before"),
                                      ("after fine-tuning", os.path.join(out, "speaker.pt"), "eval_after")):
        rows[row] = synthetic_demo.evaluate_checkpoint(checkpoint, data_dir, os.path.join(out, eval_dir), evaluation_args(args),
                                                       sheets=False, network=[], filelists="speaker")
        print(f"[demo-train] {row}:\n{synthetic_demo.report(rows[row])}", flush=True)
    atomic_write_json(os.path.join(args.work_dir, "speaker.json"), {
        "speaker": speaker, "training": training,
        "timestep_respacing": args.timestep_respacing, "rows": rows})
    print(f"\nOne speaker ({len(SPEAKER['clips'])} x {SPEAKER['seconds']:.0f} s of video, {training['steps']} steps), scored on "
          f"the speaker's held-out clip with {args.timestep_respacing} ({time.perf_counter() - started:.0f} s in all):\n")
    print(proof_table(rows))
    return rows


# The proofs on the exported x0 network and expert: their flag -> (what they do with it, the proof).
PROOFS = {"lift_proof": ("lifts", lift_proof), "speaker_proof": ("fine-tunes", speaker_proof)}


def proof_table(rows: Dict[str, dict]) -> str:
    """The Markdown table of a proof's rows (--lift_proof, --speaker_proof)."""
    lines = ["| network | lip-sync score | wrong-audio control | PSNR (dB) | SSIM | mouth PSNR (dB) | mouth sharpness |",
             "|---|---|---|---|---|---|---|"]
    for row, s in rows.items():
        lines.append(f"| {row} | {s['lip_sync']:.3f} | {s['wrong_audio']:.3f} | {s['psnr']:.2f} | {s['ssim']:.4f} | "
                     f"{s['mouth_psnr']:.2f} | {s['mouth_sharpness']:.3f} |")
    return "\n".join(lines)


def run(args) -> None:
    for flag, (verb, prove) in PROOFS.items():
        if getattr(args, flag):
            if args.ablation or args.student_only or args.parameterization != "x0":
                raise Diff2LipError(f"--{flag} {verb} the exported x0 demo network; it takes no --ablation, "
                                    "--student_only or --parameterization")
            _, exported_x0, exported_expert = exported_files(args.export_dir, "x0")
            if not (os.path.isfile(exported_x0) and os.path.isfile(exported_expert)):
                raise Diff2LipError(f"--{flag} {verb} {exported_x0} (trained with {exported_expert}); "
                                    "`make demo-train` makes them")
            os.makedirs(args.work_dir, exist_ok=True)
            prove(args, exported_x0, exported_expert)
            return
    if args.parameterization not in NETWORKS:
        raise Diff2LipError(f"--parameterization {args.parameterization!r} is not one of {', '.join(NETWORKS)}")
    if args.ablation and args.parameterization != "x0":
        raise Diff2LipError("--ablation trains the x0 demo network's rows; it takes no --parameterization")
    if args.student_only and (args.ablation or args.parameterization != "x0"):
        raise Diff2LipError("--student_only distils the x0 demo network; it takes no --ablation or --parameterization")
    if args.one_step_student and (args.ablation or args.student_only or args.parameterization != "x0"):
        raise Diff2LipError("--one_step_student distils the exported 2-step student; it takes no --ablation, --student_only "
                            "or --parameterization")
    network = NETWORKS[args.parameterization]
    exported, exported_x0, exported_expert = exported_files(args.export_dir, args.parameterization)
    exported_student = os.path.join(args.export_dir, os.path.basename(STUDENT_CHECKPOINT))
    # One distillation of an exported network, then its score: flag -> (teacher, settings, student).
    distillations = {"student_only": (exported_x0, DISTILL_TRAINING, exported_student),
                     "one_step_student": (exported_student, ONE_STEP_TRAINING,
                                          os.path.join(args.export_dir, os.path.basename(ONE_STEP_CHECKPOINT)))}
    for flag, (teacher, training, student) in distillations.items():
        if getattr(args, flag):
            if not (os.path.isfile(teacher) and os.path.isfile(exported_expert)):
                raise Diff2LipError(f"--{flag} distils {teacher} (scored with {exported_expert}); `make demo-train` makes them")
            distill_student(prepare_data(args.work_dir), args.work_dir, teacher, student, training)
            evaluate_student(args.work_dir, student, exported_expert, args.progress, training["student_steps"])
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
