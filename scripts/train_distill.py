"""Distil a Diff2Lip network into a student that samples in a few steps (progressive
distillation, Salimans & Ho 2022).

    python -m scripts.train_distill --data_root data/vox_pre --teacher checkpoints/checkpoint.pt \\
        --teacher_steps 8 --student_steps 2 --output_dir outputs/distill
    torchrun --nproc_per_node 8 -m scripts.train_distill ...
    mpiexec -n 8 python -m scripts.train_distill ...

Pass the teacher's network and diffusion flags (the released ones are the defaults). Rounds halve
the step count (8 -> 4 -> 2): in each, a student initialised from the teacher learns to do in one
DDIM step what the teacher does in two (eta 0, x0 clipped as sampling clips it; the details are in
training/distillation.py), and its EMA weights become the next round's teacher. A round is
train.py's training (training.diff2lip on training.loop: the same data, DDP, exact resume,
atomic checkpoints, logs, stop signals and non-finite losses skipped) in OUTPUT_DIR/roundR_ddimN, with the distillation loss instead of the diffusion loss and,
if their lambdas are set, train.py's image-space losses on the student's x0. Each finished round
exports its student, float16 by default, with the flags that sample it (`--timestep_respacing
ddimN --use_ddim True`), to roundR_ddimN/student_ddimN.pt; the last one also to --export.
"""

import argparse
import os
import sys
from typing import List, Optional

if __package__ in (None, ""):
    # Run as `python scripts/train_distill.py`: Python put scripts/ on the path; the packages live one up.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from common.errors import Diff2LipError
from common.flags import Option, Options, args_to_dict, create_argparser
from guided_diffusion import dist_util, logger
from guided_diffusion.checkpoint_format import take_network_flags
from guided_diffusion.script_util import DATA_OPTIONS, MODEL_AND_DIFFUSION_OPTIONS, tfg_model_and_diffusion_defaults
from training import diff2lip
from training.checkpoints import checkpoint_path, elastic_restart, latest_checkpoint
from training.distillation import ProgressiveDistillation, respacing, round_schedule, student_flags
from training.export import export
from training.loop import run_training

# train.py's flags that mean the same here (their help is train.py's).
TRAIN_FLAGS = (
    "data_root", "shard_cache", "batch_size", "accum_steps", "lr", "weight_decay", "warmup_steps", "grad_clip", "ema_rate",
    "lambda_l2", "lambda_sync", "lambda_lpips", "lambda_gan", "lpips_backbone", "sync_expert", "disc_lr",
    "disc_channels", "precision", "save_every", "preview_every", "keep", "log_every", "resume", "seed",
    "num_workers", "max_nonfinite", "augment",
)


def distill_defaults() -> dict:
    """The distillation's flags (the network and diffusion flags come from script_util)."""
    return DISTILL_OPTIONS.defaults()


DISTILL_OPTIONS = Options(
    Option("teacher", "", "the network to distil: a plain state_dict (the released checkpoint.pt), an export or a train.py / "
           "scripts.train_distill checkpoint (its EMA weights); the network and diffusion flags must be its own"),
    Option("teacher_steps", 8, "DDIM steps of the first round's teacher (ddimN); --student_steps times a power of 2"),
    Option("student_steps", 2, "DDIM steps of the final student; rounds halve --teacher_steps down to it"),
    Option("steps_per_round", 5000, "optimizer steps of each round"),
    Option("lambda_distill", 1.0, "weight of the distillation loss (the student's output against the two-step teacher "
           "target, inside the mask)"),
    Option("output_dir", "outputs/distill", "one folder per round (roundR_ddimN: checkpoints, progress.csv, log.txt, "
           "TensorBoard events, the exported student)"),
    Option("export", "", "also write the final student here (empty: only in its round's folder)"),
    Option("export_half", True, "store the exported students' weights in float16"),
    diff2lip.TRAIN_OPTIONS.only(*TRAIN_FLAGS).with_defaults(ema_rate=0.999),
    # train.py's flags whose meaning (and default) differs here
    Option("lambda_l2", 0.0, "weight of the L2 loss of the student's clipped x0 against the real frame, inside the mask "
           "(0: off)"),
    Option("lambda_sync", 0.0, "weight of the lip-sync expert loss on the student's clipped x0 (0: off)"),
    Option("lambda_lpips", 0.0, "weight of LPIPS on the student's clipped x0 (0: off)"),
    Option("lambda_gan", 0.0, "weight of the sequence PatchGAN loss on the student's clipped x0 (0: off)"),
    Option("preview_every", 0, "every N steps, sample the student's EMA weights with its own steps on a fixed val batch "
           "and write preview_STEP.png (0: off)"),
    Option("resume", False, "continue from the newest checkpoint of the unfinished round; finished rounds are kept "
           "(exactly: data order and RNG included)"),
)


def create_parser() -> argparse.ArgumentParser:
    respacing_unused = Option("timestep_respacing", "", "not used: each round's teacher and student sample with ddimN, N "
                              "from --teacher_steps and --student_steps")
    parser = create_argparser(MODEL_AND_DIFFUSION_OPTIONS, respacing_unused, DATA_OPTIONS, DISTILL_OPTIONS,
                              description=__doc__)
    parser.prog = "python -m scripts.train_distill"
    return parser


def round_args(args, round_dir: str, teacher: str, student_steps: int) -> argparse.Namespace:
    """train.py's flags for one round: its defaults, the shared flags, the round's folder, teacher
    (as --init_from) and step budget; previews sample with the student's steps."""
    merged = vars(diff2lip.create_parser().parse_args([]))
    merged.update({k: v for k, v in vars(args).items() if k in merged})
    merged.update(output_dir=round_dir, init_from=teacher, max_steps=args.steps_per_round,
                  preview_respacing=respacing(student_steps), lambda_distill=args.lambda_distill)
    return argparse.Namespace(**merged)


def _check_teacher(round_dir: str, teacher: str) -> None:
    """Refuse to resume a round whose checkpoints were distilled from another teacher (e.g. after
    --steps_per_round changed, the previous round ends at another checkpoint)."""
    path = latest_checkpoint(round_dir)
    if path is None:
        return
    trained_from = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["args"]["init_from"]
    if trained_from != teacher:
        raise Diff2LipError(
            f"cannot resume {round_dir}: its checkpoints were distilled from '{trained_from}', this round's teacher is "
            f"'{teacher}'; remove the folder (and the later rounds') to distil them again"
        )


def distill(args) -> Optional[str]:
    """Run the rounds; returns the path of the final exported student, or None when a stop signal
    ended a round early (rerun with --resume True to continue)."""
    if not args.teacher:
        raise Diff2LipError("--teacher is required: the checkpoint to distil")
    rounds = round_schedule(args.teacher_steps, args.student_steps)
    flags = args_to_dict(args, tfg_model_and_diffusion_defaults())
    teacher, exported = args.teacher, None
    for number, (teacher_steps, student_steps) in enumerate(rounds, 1):
        round_dir = os.path.join(args.output_dir, f"round{number}_ddim{student_steps}")
        if args.resume or elastic_restart():  # a restarted worker group resumes by itself
            _check_teacher(round_dir, teacher)
        objective = ProgressiveDistillation(flags, teacher_steps, student_steps)
        _, step = diff2lip.train(round_args(args, round_dir, teacher, student_steps), objective)
        if step < args.steps_per_round:
            return None
        teacher = checkpoint_path(round_dir, step)
        exported = os.path.join(round_dir, f"student_ddim{student_steps}.pt")
        if dist_util.is_main_process():
            for path in filter(None, (exported, args.export if number == len(rounds) else "")):
                export(teacher, path, "ema", args.export_half, flags=student_flags(flags, student_steps))
                logger.log(f"round {number} ({teacher_steps} -> {student_steps} steps): exported {path}")
        dist_util.barrier()
    return args.export or exported


def main(argv: Optional[List[str]] = None) -> int:
    parser = create_parser()
    # A teacher that is one of our network files needs no network flags: the file carries them.
    return run_training(distill, parser, argv, lambda args, given: take_network_flags(args, given, args.teacher, parser))


if __name__ == "__main__":
    sys.exit(main())
