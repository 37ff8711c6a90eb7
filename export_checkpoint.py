"""Turn a training checkpoint into a small release file.

    python export_checkpoint.py --checkpoint outputs/train/checkpoint_0005000.pt --out checkpoints/mine.pt
    python export_checkpoint.py --checkpoint outputs/syncnet128/syncnet_best.pt --out checkpoints/syncnet.pt

A train.py checkpoint (weights, EMA weights, optimizer, discriminator, random states) becomes the
released format: a plain state_dict of the EMA weights (`--weights ema`, the ones to sample with)
or of the raw ones, which generate.py loads with the same flags as the training. A train_syncnet.py
checkpoint becomes `{"kind": ..., "model": ...}`, which train.py's --sync_expert loads. With
`--half True` floating-point tensors are stored in float16 (half the size; the networks cast them
back to float32 on loading). The file is written atomically and loads with weights_only=True.
train_distill.py exports its students through `export(..., flags=...)` as `{"model": state_dict,
"flags": {...}}`: the flags (network, diffusion, `timestep_respacing`, `use_ddim`) that sample them.
"""

import os
import sys
from typing import Dict, List, Optional

import torch

from guided_diffusion.errors import CheckpointError, Diff2LipError
from guided_diffusion.script_util import create_argparser
from guided_diffusion.train_util import atomic_save


def export_defaults() -> dict:
    return dict(checkpoint="", out="", weights="ema", half=False)


EXPORT_HELP = {
    "checkpoint": "a train.py (checkpoint_STEP.pt) or train_syncnet.py (syncnet_STEP.pt, syncnet_best.pt) checkpoint",
    "out": "the file to write",
    "weights": "train.py checkpoints: ema (the averaged weights, for sampling) or model (the raw ones)",
    "half": "store floating-point tensors as float16 (half the size)",
}


def _cast(state: Dict[str, torch.Tensor], half: bool) -> Dict[str, torch.Tensor]:
    return {k: v.half() if half and v.is_floating_point() else v for k, v in state.items()}


def export(checkpoint: str, out: str, weights: str = "ema", half: bool = False, flags: Optional[dict] = None) -> dict:
    """Write the release file of `checkpoint` to `out`; returns what was written. With `flags`
    (train.py-format checkpoints only), `{"model": weights, "flags": flags}`."""
    if weights not in ("ema", "model"):
        raise Diff2LipError(f"--weights {weights!r} is not one of ema, model")
    if not os.path.isfile(checkpoint):
        raise Diff2LipError(f"--checkpoint '{checkpoint}' not found")
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"could not read '{checkpoint}' ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"'{checkpoint}' is not a train.py or train_syncnet.py checkpoint (no 'model' weights)")
    if "kind" in ckpt:  # train_syncnet.py: keep the kind, so load_sync_expert builds the right network
        if flags is not None:
            raise Diff2LipError(f"'{checkpoint}' is a SyncNet checkpoint: it takes no Diff2Lip flags")
        result = {"kind": ckpt["kind"], "model": _cast(ckpt.get("ema") or ckpt["model"], half)}
    else:
        if weights == "ema" and not isinstance(ckpt.get("ema"), dict):
            raise CheckpointError(f"'{checkpoint}' has no EMA weights; pass --weights model")
        result = _cast(ckpt[weights], half)
        if flags is not None:
            result = {"model": result, "flags": dict(flags)}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    atomic_save(result, out)
    return result


def main(argv: Optional[List[str]] = None) -> int:
    try:
        args = create_argparser(export_defaults(), description=__doc__, help_dict=EXPORT_HELP).parse_args(argv)
        if not args.checkpoint or not args.out:
            raise Diff2LipError("--checkpoint and --out are required")
        export(args.checkpoint, args.out, args.weights, args.half)
    except Diff2LipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
