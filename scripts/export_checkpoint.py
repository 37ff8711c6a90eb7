"""Turn a training checkpoint into a small release file that carries its flags.

    python -m scripts.export_checkpoint --checkpoint outputs/train/checkpoint_0005000.pt --out checkpoints/mine.pt
    python -m scripts.export_checkpoint --checkpoint outputs/train/checkpoint_0005000.pt --out checkpoints/mine.safetensors
    python -m scripts.export_checkpoint --checkpoint outputs/syncnet128/syncnet_best.pt --out checkpoints/syncnet.pt

A train.py checkpoint (weights, EMA weights, optimizer, discriminator, random states) becomes a
network file: the EMA weights (`--weights ema`, the ones to sample with) or the raw ones, with the
network and diffusion flags of the training and what it was trained on (guided_diffusion/
checkpoint_format.py): `{"model", "flags", "trained_on"}` in a `.pt` file, or a `.safetensors` file
whose metadata holds them. `generate.py --model_path FILE` then needs no architecture flags.
`--plain True` writes a plain state_dict instead (the released checkpoint.pt's format, for the
release's own code; generate.py then needs the training's flags). A scripts.train_syncnet checkpoint
becomes `{"kind": ..., "model": ...}`, which train.py's --sync_expert loads. With `--half True`
floating-point tensors are stored in float16 (half the size; the networks cast them back to
float32 on loading). The file is written atomically and loads with weights_only=True.
The work is `training.export.export`, through which scripts.train_distill also exports its
students (`flags=...`: the network, diffusion, `timestep_respacing` and `use_ddim` flags that
sample them).
"""

import os
import sys
from typing import List, Optional

if __package__ in (None, ""):
    # Run as `python scripts/export_checkpoint.py`: Python put scripts/ on the path; the packages live one up.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.command import run_command
from common.errors import Diff2LipError
from common.flags import Option, Options, create_argparser
from training.export import export


def export_defaults() -> dict:
    return EXPORT_OPTIONS.defaults()


EXPORT_OPTIONS = Options(
    Option("checkpoint", "", "a train.py (checkpoint_STEP.pt) or scripts.train_syncnet (syncnet_STEP.pt, syncnet_best.pt) "
           "checkpoint, or a network file (re-exported to the other format or float16 with its flags)"),
    Option("out", "", "the file to write: .pt, or .safetensors (the flags in its metadata)"),
    Option("weights", "ema", "train.py checkpoints: ema (the averaged weights, for sampling) or model (the raw ones)"),
    Option("half", False, "store floating-point tensors as float16 (half the size)"),
    Option("plain", False, "write a plain state_dict without flags (the released checkpoint.pt format, for the "
           "release's own code)"),
    Option("note", "", "one line on what the network knows, stored with it and shown by generate.py and the web app "
           "(empty: the note of the network it was fine-tuned or distilled from, if any)"),
)


def main(argv: Optional[List[str]] = None) -> int:
    def body() -> int:
        parser = create_argparser(EXPORT_OPTIONS, description=__doc__)
        parser.prog = "python -m scripts.export_checkpoint"
        args = parser.parse_args(argv)
        if not args.checkpoint or not args.out:
            raise Diff2LipError("--checkpoint and --out are required")
        export(args.checkpoint, args.out, args.weights, args.half, plain=args.plain, note=args.note)
        print(f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB)")
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
