"""Turn a training checkpoint into a small release file that carries its flags.

    python export_checkpoint.py --checkpoint outputs/train/checkpoint_0005000.pt --out checkpoints/mine.pt
    python export_checkpoint.py --checkpoint outputs/train/checkpoint_0005000.pt --out checkpoints/mine.safetensors
    python export_checkpoint.py --checkpoint outputs/syncnet128/syncnet_best.pt --out checkpoints/syncnet.pt

A train.py checkpoint (weights, EMA weights, optimizer, discriminator, random states) becomes a
network file: the EMA weights (`--weights ema`, the ones to sample with) or the raw ones, with the
network and diffusion flags of the training and what it was trained on (guided_diffusion/
checkpoint_format.py): `{"model", "flags", "trained_on"}` in a `.pt` file, or a `.safetensors` file
whose metadata holds them. `generate.py --model_path FILE` then needs no architecture flags.
`--plain True` writes a plain state_dict instead (the released checkpoint.pt's format, for the
release's own code; generate.py then needs the training's flags). A train_syncnet.py checkpoint
becomes `{"kind": ..., "model": ...}`, which train.py's --sync_expert loads. With `--half True`
floating-point tensors are stored in float16 (half the size; the networks cast them back to
float32 on loading). The file is written atomically and loads with weights_only=True.
train_distill.py exports its students through `export(..., flags=...)`: the flags (network,
diffusion, `timestep_respacing`, `use_ddim`) that sample them.
"""

import os
import sys
from typing import Dict, List, Optional

import torch

from guided_diffusion import dist_util
from guided_diffusion.checkpoint_format import (
    is_safetensors,
    is_training_checkpoint,
    network_flags,
    read_metadata,
    save_network,
    split_network_file,
    training_record,
)
from common.command import check_outputs
from common.errors import CheckpointError, Diff2LipError
from common.flags import Option, Options, create_argparser
from common.files import atomic_save


def export_defaults() -> dict:
    return EXPORT_OPTIONS.defaults()


EXPORT_OPTIONS = Options(
    Option("checkpoint", "", "a train.py (checkpoint_STEP.pt) or train_syncnet.py (syncnet_STEP.pt, syncnet_best.pt) checkpoint, "
        "or a network file (re-exported to the other format or float16 with its flags)"),
    Option("out", "", "the file to write: .pt, or .safetensors (the flags in its metadata)"),
    Option("weights", "ema", "train.py checkpoints: ema (the averaged weights, for sampling) or model (the raw ones)"),
    Option("half", False, "store floating-point tensors as float16 (half the size)"),
    Option("plain", False, "write a plain state_dict without flags (the released checkpoint.pt format, for the release's own code)"),
    Option("note", "", "one line on what the network knows, stored with it and shown by generate.py and the web app (empty: the "
        "note of the network it was fine-tuned or distilled from, if any)"),
)


def _cast(state: Dict[str, torch.Tensor], half: bool) -> Dict[str, torch.Tensor]:
    return {k: v.half() if half and v.is_floating_point() else v for k, v in state.items()}


def export(
    checkpoint: str,
    out: str,
    weights: str = "ema",
    half: bool = False,
    flags: Optional[dict] = None,
    plain: bool = False,
    trained_on: Optional[dict] = None,
    note: str = "",
) -> dict:
    """Write the network file of `checkpoint` to `out`; returns what was written (for a
    `.safetensors` file, `{"model", "flags", "trained_on"}` as stored in it). The flags are
    `flags` when given (a distilled student's), otherwise the training's own (its "args"), or,
    for a network file (re-exported to another format or to float16), the ones it carries."""
    if weights not in ("ema", "model"):
        raise Diff2LipError(f"--weights {weights!r} is not one of ema, model")
    if not os.path.isfile(checkpoint):
        raise Diff2LipError(f"--checkpoint '{checkpoint}' not found")
    check_outputs([out], [checkpoint])
    # One-line errors and weights_only; read here alone (train_distill.py exports on rank 0 only).
    ckpt = dist_util.load_state_dict(checkpoint, map_location="cpu", shared=False)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"'{checkpoint}' is not a network or training checkpoint (no weights)")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if "kind" in ckpt:  # train_syncnet.py: keep the kind, so load_sync_expert builds the right network
        if flags is not None or note:
            raise Diff2LipError(f"'{checkpoint}' is a SyncNet checkpoint: it takes no Diff2Lip flags or --note")
        if is_safetensors(out):
            raise Diff2LipError(f"--out '{out}': SyncNet checkpoints are exported as .pt (train.py's --sync_expert reads those)")
        result = {"kind": ckpt["kind"], "model": _cast(ckpt.get("ema") or ckpt["model"], half)}
        atomic_save(result, out)
        return result
    if is_training_checkpoint(ckpt):
        if weights == "ema" and not isinstance(ckpt.get("ema"), dict):
            raise CheckpointError(f"'{checkpoint}' has no EMA weights; pass --weights model")
        state = ckpt[weights]
        args = ckpt.get("args") if isinstance(ckpt.get("args"), dict) else {}
        stored = network_flags(args)
        if trained_on is None:
            trained_on = training_record(ckpt)
            # A fine-tune or a student knows what the network it started from knows.
            note = note or (read_metadata(args["init_from"])[1].get("note", "") if args.get("init_from") else "")
    else:  # a network file already (.pt with or without flags, .safetensors): another format, or float16
        state, stored, kept = split_network_file(ckpt)
        if is_safetensors(checkpoint):  # its flags live in the header, not among the tensors
            stored, kept = read_metadata(checkpoint)
        trained_on = kept if trained_on is None else trained_on
        if not state:
            raise CheckpointError(f"'{checkpoint}' holds no network weights")
    state = _cast(state, half)
    if plain:
        save_network(out, state, None)
        return state
    flags = dict(stored if flags is None else flags)
    trained_on = {**trained_on, "note": note} if note else dict(trained_on)
    save_network(out, state, flags, trained_on)
    return {"model": state, "flags": flags, "trained_on": trained_on}


def main(argv: Optional[List[str]] = None) -> int:
    try:
        args = create_argparser(EXPORT_OPTIONS, description=__doc__).parse_args(argv)
        if not args.checkpoint or not args.out:
            raise Diff2LipError("--checkpoint and --out are required")
        export(args.checkpoint, args.out, args.weights, args.half, plain=args.plain, note=args.note)
    except Diff2LipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
