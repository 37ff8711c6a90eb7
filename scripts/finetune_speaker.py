"""Fine-tune a Diff2Lip network on one speaker, then lip-sync that person with it.

    python -m scripts.finetune_speaker --videos data/alice --checkpoint checkpoints/checkpoint.pt \\
        --sync_expert checkpoints/lipsync_expert.pth --output_dir outputs/alice
    python generate.py --model_path outputs/alice/speaker.pt --video_path alice_new.mp4 --audio_path speech.wav \\
        --out_path alice_new_lipsynced.mp4

A few minutes of one person's video (any folder of mp4/mkv/avi/mov/webm, at any depth) are
enough: the network already knows how lips follow speech, and learns here this face's mouth,
teeth and skin. Three of the repository's own steps, each resumed by a rerun:
1. `dataset/preprocess.py --layout folder --val_fraction 0`: every video into face crops at the
   network's size (`--is_voxceleb2 False`: the S3FD detector finds the face; True: the fixed
   VoxCeleb2 crop), all for training;
2. `train.py --init_from CHECKPOINT`: the network (its flags from the file: the released
   checkpoint.pt or one of our network files) trained for `--steps` with all five losses, at a
   learning rate a fraction of a training from scratch's, so that it does not forget lip-sync;
3. the export of `scripts.export_checkpoint`: the EMA weights as OUTPUT_DIR/speaker.pt, with the
   file's flags and a note naming the speaker's folder.
Recipe and measured effect: docs/training.md#one-speaker.
"""

import os
import sys
from typing import List, Optional

if __package__ in (None, ""):
    # Run as `python scripts/finetune_speaker.py`: Python put scripts/ on the path; the packages live one up.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.command import run_command
from common.errors import Diff2LipError
from common.flags import PROGRESS, Option, Options, as_flags, at_least, create_argparser
from dataset.preprocess import PREPROCESS_OPTIONS
from training.diff2lip import TRAIN_OPTIONS

# train.py's flags that a speaker's fine-tuning passes on, with its own defaults: a learning rate
# a tenth of the released training's, a short warm-up, an EMA that follows a few hundred steps.
SPEAKER_TRAINING = TRAIN_OPTIONS.only(
    "sync_expert", "batch_size", "lr", "warmup_steps", "ema_rate", "lambda_l2", "lambda_sync", "lambda_lpips",
    "lambda_gan", "lpips_backbone", "precision", "save_every", "num_workers", "seed",
).with_defaults(lr=1e-5, warmup_steps=50, ema_rate=0.99, save_every=100)

FINETUNE_OPTIONS = Options(
    Option("videos", "", "folder of the speaker's videos (mp4/mkv/avi/mov/webm at any depth): a few minutes of one person"),
    Option("checkpoint", "checkpoints/checkpoint.pt", "the network to fine-tune: the released checkpoint.pt (python -m "
           "scripts.fetch_weights diff2lip) or one of our network files"),
    Option("output_dir", "outputs/speaker", "the crops (crops/), the training run (train/) and the fine-tuned network "
           "(speaker.pt) go here"),
    Option("steps", 500, "optimizer steps of the fine-tuning", at_least(1)),
    PREPROCESS_OPTIONS.only("is_voxceleb2", "pads", "device").with_defaults(is_voxceleb2="False"),
    SPEAKER_TRAINING,
    PROGRESS,
)


def finetune_defaults() -> dict:
    return FINETUNE_OPTIONS.defaults()


def finetune(args) -> str:
    """The three steps (see the module docstring); returns the path of the fine-tuned network."""
    from dataset import preprocess
    from guided_diffusion.lift import file_network_flags
    from training import diff2lip
    from training.export import export

    if not args.videos or not os.path.isdir(args.videos):
        raise Diff2LipError(f"--videos {args.videos!r} is not a folder; give the folder of the speaker's videos")
    if not os.path.isfile(args.checkpoint):
        raise Diff2LipError(f"--checkpoint '{args.checkpoint}' not found; the released one: python -m scripts.fetch_weights "
                            "diff2lip (or pass one of our network files)")
    image_size = file_network_flags(args.checkpoint)["image_size"]
    crops, run_dir = os.path.join(args.output_dir, "crops"), os.path.join(args.output_dir, "train")
    out = os.path.join(args.output_dir, "speaker.pt")

    print(f"[speaker] 1/3 face crops of {args.videos} at {image_size} px -> {crops}", flush=True)
    if preprocess.main(["--input_root", args.videos, "--output_root", crops, "--layout", "folder", "--val_fraction", "0",
                        "--image_size", str(image_size), *as_flags({k: getattr(args, k) for k in ("is_voxceleb2", "pads",
                        "device")}), "--progress", str(args.progress)]) != 0:
        raise Diff2LipError(f"preprocessing {args.videos} failed (its messages are above)")
    print(f"[speaker] 2/3 fine-tune {args.checkpoint} for {args.steps} steps -> {run_dir}", flush=True)
    if diff2lip.main(["--data_root", crops, "--output_dir", run_dir, "--init_from", args.checkpoint, "--max_steps",
                   str(args.steps), "--resume", "True", "--keep", "2",
                   *as_flags({k: getattr(args, k) for k in SPEAKER_TRAINING})]) != 0:
        raise Diff2LipError(f"fine-tuning failed (its messages are above); rerun to resume from {run_dir}")
    print(f"[speaker] 3/3 export the EMA weights -> {out}", flush=True)
    note = f"fine-tuned on one speaker ({os.path.abspath(args.videos)}) from {os.path.basename(args.checkpoint)}"
    export(os.path.join(run_dir, f"checkpoint_{args.steps:07d}.pt"), out, "ema", half=False, note=note)
    print(f"[speaker] done: python generate.py --model_path {out} --video_path VIDEO --audio_path AUDIO --out_path OUT.mp4")
    return out


def main(argv: Optional[List[str]] = None) -> int:
    def body() -> int:
        parser = create_argparser(FINETUNE_OPTIONS, description=__doc__)
        parser.prog = "python -m scripts.finetune_speaker"
        finetune(parser.parse_args(argv))
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
