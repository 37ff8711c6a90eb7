"""A training checkpoint (train.py's, scripts.train_syncnet's) or a network file as a small
release file that carries its flags: the work of scripts/export_checkpoint.py, also used by
scripts/train_distill.py for its students."""

import os
from typing import Dict, Optional

import torch

from common.command import check_outputs
from common.errors import CheckpointError, Diff2LipError
from common.files import atomic_save
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

# What `export` writes: a torch file or a safetensors file (no ONNX export exists here).
NETWORK_EXTENSIONS = (".pt", ".safetensors")


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
    check_outputs([out], [checkpoint], example="network.pt")
    extension = os.path.splitext(out)[1].lower()
    if extension not in NETWORK_EXTENSIONS:
        # torch.save writes whatever the name says: an .onnx (or .pth.tar) file would be a torch
        # pickle that no ONNX runtime, and nothing here but torch.load, can read.
        raise Diff2LipError(
            f"--out '{out}': network files are written as .pt (torch) or .safetensors, not "
            f"{extension or 'a name without an extension'}; name it e.g. '{os.path.splitext(out)[0]}.pt'"
        )
    # One-line errors and weights_only; read here alone (scripts.train_distill exports on rank 0 only).
    ckpt = dist_util.load_state_dict(checkpoint, map_location="cpu", shared=False)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"'{checkpoint}' is not a network or training checkpoint (no weights)")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if "kind" in ckpt:  # scripts.train_syncnet: keep the kind, so load_sync_expert builds the right network
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
