"""Checkpoint files that describe themselves.

Every network file this project writes carries the flags that build and sample it, so that
`generate.py --model_path FILE` needs no architecture flags:

- `.pt`: `{"model": state_dict, "flags": {...}, "trained_on": {...}}`, loaded with
  `torch.load(weights_only=True)`; train.py's training checkpoints hold their flags under "args".
- `.safetensors`: the tensors, with the metadata `{"format": "diff2lip", "flags": <json>,
  "trained_on": <json>}` (safetensors metadata holds strings only).
- The released `checkpoint.pt` is a plain state_dict with no flags: the released flags (our
  defaults) build it. `python -m scripts.export_checkpoint --plain True` writes that format, for
  the release's own code.

When a plain state_dict does not fit the flags, `shape_mismatch_hint` reads the architecture
off the tensor shapes (`infer_flags_from_shapes`) and names the flags that differ, with both values.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from common.errors import CheckpointError
from common.files import atomic_save, atomic_write
from common.flags import validate_flags

from . import dist_util
from .script_util import (
    CHANNEL_MULT_BY_SIZE,
    tfg_create_model_and_diffusion,
    tfg_model_and_diffusion_defaults,
)

# Flags that change how a network runs, not what its weights are: never stored, never contradicted.
RUNTIME_FLAGS = ("use_fp16", "use_checkpoint", "fused_attention", "dropout")
# The sampling flags a file may suggest (a distilled student's step count); the command line wins.
SAMPLING_FLAGS = ("timestep_respacing", "use_ddim", "sampler", "sampling_steps")

SAFETENSORS_FORMAT = "diff2lip"


def network_flags(settings: Mapping) -> dict:
    """The flags a network file stores: every network and diffusion flag of `settings` (a dict
    or an argparse namespace's `vars`) except the runtime ones and the training-time respacing."""
    keys = [k for k in tfg_model_and_diffusion_defaults() if k not in RUNTIME_FLAGS and k != "timestep_respacing"]
    return {k: settings[k] for k in keys if k in settings}


def is_safetensors(path: str) -> bool:
    return str(path).endswith(".safetensors")


def save_network(path: str, state: Dict[str, torch.Tensor], flags: Optional[dict], trained_on: Optional[dict] = None) -> None:
    """Write a network file, atomically: `.safetensors` with the flags in its metadata, otherwise a
    `.pt` dict; `flags=None` writes a plain state_dict (the released format)."""
    if is_safetensors(path):
        from safetensors.torch import save_file

        metadata = {"format": SAFETENSORS_FORMAT, "flags": json.dumps(flags or {}), "trained_on": json.dumps(trained_on or {})}
        tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}  # no shared storage in safetensors
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    elif flags is None:
        atomic_save(state, path)
    else:
        atomic_save({"model": state, "flags": dict(flags), "trained_on": dict(trained_on or {})}, path)


def is_training_checkpoint(ckpt: dict) -> bool:
    """A train.py / scripts.train_distill checkpoint (weights, EMA, optimizer, step, its command line)."""
    return isinstance(ckpt.get("model"), dict) and ("opt" in ckpt or "step" in ckpt or "args" in ckpt)


def training_record(ckpt: Mapping) -> dict:
    """What a training checkpoint says it was trained on: its data, step count and starting weights."""
    args = ckpt.get("args") if isinstance(ckpt.get("args"), dict) else {}
    record = (("data_root", args.get("data_root")), ("steps", ckpt.get("step")), ("init_from", args.get("init_from")))
    return {k: v for k, v in record if v not in (None, "")}


def split_network_file(ckpt: Mapping) -> Tuple[Dict[str, torch.Tensor], dict, dict]:
    """`(state_dict, flags, trained_on)` of a loaded network file: `{"model", "flags",
    "trained_on"}`, a training checkpoint (its EMA weights, else its raw ones, and its command
    line's flags) or a plain state_dict (no flags)."""
    if isinstance(ckpt.get("model"), dict):
        state = ckpt.get("ema") or ckpt["model"]
        if isinstance(ckpt.get("flags"), dict):
            return state, dict(ckpt["flags"]), dict(ckpt.get("trained_on") or {})
        args = ckpt.get("args") if isinstance(ckpt.get("args"), dict) else {}
        return state, network_flags(args), training_record(ckpt)
    return dict(ckpt), {}, {}


def read_metadata(path: str) -> Tuple[dict, dict]:
    """`(flags, trained_on)` stored in a network file; `({}, {})` for a plain state_dict or an
    unreadable file (the weight loader reports that with its own message). Reads no weights:
    the `.pt` file is memory-mapped, the `.safetensors` header alone is parsed."""
    try:
        if is_safetensors(path):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as handle:
                meta = handle.metadata() or {}
            return json.loads(meta.get("flags", "{}")), json.loads(meta.get("trained_on", "{}"))
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - reported later by the weight loader
        return {}, {}
    if not isinstance(state, dict):
        return {}, {}
    return split_network_file(state)[1:]


# ----------------------------------------------------------------------------------------------
# The architecture from the tensor shapes


def _shape(shapes: Mapping[str, Sequence[int]], key: str) -> Optional[Tuple[int, ...]]:
    value = shapes.get(key)
    return None if value is None else tuple(value)


def infer_flags_from_shapes(shapes: Mapping[str, Sequence[int]], image_size: Optional[int] = None) -> dict:
    """The network flags that a TFG state_dict's tensor shapes determine.

    `shapes`: name -> shape. Read off: `num_channels` (first conv), `nrefer`/`use_ref` (its input
    channels, 3 x (2 + nrefer)), `num_res_blocks` and the levels (where the decoder upsamples),
    `channel_mult` (each level's width), `resblock_updown` (residual or conv resampling),
    `attention_resolutions` (levels with attention, in px of `image_size`), `learn_sigma` (6 or 3
    output channels), `use_scale_shift_norm` (embedding projections twice as wide), `use_audio`,
    `audio_as_style`, `class_cond`. `image_size` is not in the shapes: when the multipliers are the
    released ones of exactly one size, that size (and `channel_mult` ""), otherwise the given one.
    """
    first = _shape(shapes, "input_blocks.0.0.weight")
    if first is None or len(first) != 4:
        return {}
    flags: dict = {"num_channels": first[0]}
    nrefer = first[1] // 3 - 2  # inputs [x_t, cond, ref x nrefer], 3 channels each
    flags["use_ref"] = nrefer > 0
    if nrefer > 0:
        flags["nrefer"] = nrefer
    out = _shape(shapes, "out.2.weight")
    if out is not None:
        flags["learn_sigma"] = out[0] == 6

    n_out = 1 + max((int(m.group(1)) for k in shapes if (m := re.match(r"output_blocks\.(\d+)\.", k))), default=-1)
    ups = sorted({int(m.group(1)) for k in shapes if (m := re.match(r"output_blocks\.(\d+)\.([1-9])\.(in_layers|conv)\.", k))})
    if n_out == 0:
        return flags
    per_level = ups[0] + 1 if ups else n_out  # the first upsampler ends the first decoder level
    levels = n_out // per_level
    flags["num_res_blocks"] = per_level - 1
    flags["resblock_updown"] = any(f"output_blocks.{ups[0]}.{j}.in_layers.2.weight" in shapes for j in range(1, 3)) if ups else True
    mult, attention_ds = [], []
    for level in range(levels):
        block = 1 + level * per_level  # the level's first residual block in the encoder
        width = _shape(shapes, f"input_blocks.{block}.0.out_layers.3.weight")
        if width is None:
            return flags
        mult.append(width[0] // first[0] if width[0] % first[0] == 0 else width[0] / first[0])
        if f"input_blocks.{block}.1.qkv.weight" in shapes:
            attention_ds.append(2**level)
    # The released multipliers differ for every size, so at most one size matches.
    sizes = [size for size, default in CHANNEL_MULT_BY_SIZE.items() if tuple(default) == tuple(mult)]
    if sizes:
        image_size = sizes[0]
        flags.update(image_size=image_size, channel_mult="")
    else:
        flags["channel_mult"] = ",".join(str(m) for m in mult)
    if image_size:
        flags["attention_resolutions"] = ",".join(str(image_size // ds) for ds in attention_ds)
    emb = _shape(shapes, "input_blocks.1.0.emb_layers.1.weight")
    width = _shape(shapes, "input_blocks.1.0.out_layers.3.weight")
    if emb is not None and width is not None:
        flags["use_scale_shift_norm"] = emb[0] == 2 * width[0]
    flags["use_audio"] = any(k.startswith("audio_encoder.") for k in shapes)
    if flags["use_audio"]:
        flags["audio_as_style"] = any(k.startswith("audio_encoder_to_style.") for k in shapes)
    flags["class_cond"] = any(k.startswith("label_emb.") for k in shapes)
    return flags


def _same(a, b) -> bool:
    return str(a).replace(" ", "") == str(b).replace(" ", "")


def shape_mismatch_hint(own: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor], image_size: int) -> str:
    """`--flag X (the flags give Y)` for every network flag on which the checkpoint's shapes and
    the model's (built at `image_size`) differ, or "" when the shapes tell nothing."""
    ours = infer_flags_from_shapes({k: tuple(v.shape) for k, v in own.items()}, image_size)
    found = infer_flags_from_shapes({k: tuple(v.shape) for k, v in theirs.items()}, image_size)
    ours["image_size"] = image_size
    for flags in (ours, found):  # compare multipliers, whether defaults or given
        if flags.get("channel_mult") == "" and flags.get("image_size") in CHANNEL_MULT_BY_SIZE:
            flags["channel_mult"] = ",".join(str(m) for m in CHANNEL_MULT_BY_SIZE[flags["image_size"]])
    differ = [
        f"--{key} {found[key]} (the flags give {ours[key]})" for key in found if key in ours and not _same(found[key], ours[key])
    ]
    if differ and "image_size" not in found:
        # Only the released multipliers tell the size; attention levels are then read at the flags' size.
        differ.append(f"and --image_size is not in the shapes (--attention_resolutions assumes {image_size})")
    return ", ".join(differ)


# ----------------------------------------------------------------------------------------------
# Loading weights


def load_model_weights(model: torch.nn.Module, path: str) -> None:
    """Load a checkpoint (a plain state_dict, or a training checkpoint holding one under "model"
    or "ema") into `model`; rank 0 reads it and broadcasts it when several processes run.

    A checkpoint that does not fit raises `CheckpointError` with one line listing missing,
    unexpected and mis-shaped keys and the network flags whose values its tensor shapes give
    (`checkpoint_format.shape_mismatch_hint`). `.safetensors` files load too.
    """
    state = dist_util.load_state_dict(path, map_location="cpu")
    if isinstance(state, dict):
        state = split_network_file(state)[0]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint '{path}' does not hold a state_dict of tensors")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:

        def listing(keys: Sequence[str], label: str) -> str:
            shown = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")
            return f"{len(keys)} {label} ({shown})" if keys else ""

        shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched]
        parts = [
            p for p in (listing(missing, "missing"), listing(unexpected, "unexpected"), listing(shapes, "mis-shaped")) if p
        ]
        differ = shape_mismatch_hint(own, state, getattr(model, "image_size", None))
        raise CheckpointError(
            f"checkpoint '{path}' does not match the model built from the flags: {'; '.join(parts)}"
            + (f"; its tensor shapes say {differ}" if differ else "")
        )
    model.load_state_dict(state)


# ----------------------------------------------------------------------------------------------
# Stored flags on the command line


def given_flags(argv: Sequence[str]) -> set:
    """The flag names on a command line (`--name value` or `--name=value`; abbreviations are off)."""
    return {arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")}


def apply_checkpoint_flags(args: argparse.Namespace, argv: Sequence[str], stored: dict, path: str) -> List[str]:
    """Take the flags a checkpoint stores for every flag the command line did not give.

    A network or diffusion flag given with another value than the stored one is an error naming
    both (the weights fit only the stored one); a sampling flag given on the command line wins
    (e.g. more steps for a student). Returns the flags taken from the checkpoint.
    """
    given = given_flags(argv)
    taken = []
    for key, value in stored.items():
        if not hasattr(args, key):
            continue
        if key in RUNTIME_FLAGS:
            continue
        if key in given:
            if key not in SAMPLING_FLAGS and not _same(getattr(args, key), value):
                raise CheckpointError(
                    f"--{key} {getattr(args, key)!r} contradicts the checkpoint '{path}', which was trained with "
                    f"--{key} {value!r}; drop the flag (the checkpoint sets it)"
                )
            continue
        if getattr(args, key) != value:
            setattr(args, key, value)
            taken.append(f"--{key} {value}")
    return taken


def load_network(path: str, **flags) -> tuple:
    """`(model, diffusion)` of the network file `path`, for Python callers: built from the flags
    the file carries (the released flags for a plain state_dict such as checkpoint.pt), with
    `flags` on top (e.g. `timestep_respacing="ddim8"`); a network flag that contradicts the file
    is a `CheckpointError` naming both values, as on the command line. The model is in eval mode."""
    stored = {k: v for k, v in read_metadata(path)[0].items() if k in tfg_model_and_diffusion_defaults()}
    for key, value in flags.items():
        if key in stored and key not in SAMPLING_FLAGS and key not in RUNTIME_FLAGS and not _same(value, stored[key]):
            raise CheckpointError(f"{key}={value!r} contradicts the checkpoint '{path}', which was trained with {key}={stored[key]!r}")
    model, diffusion = tfg_create_model_and_diffusion(**{**stored, **flags})
    load_model_weights(model, path)
    return model.eval(), diffusion


def take_network_flags(args: argparse.Namespace, argv: Sequence[str], path: str, parser) -> List[str]:
    """For training from the network file `path` (train.py --init_from, scripts.train_distill
    --teacher): its network and diffusion flags where the command line is silent (not its sampling
    flags: training uses every step), a contradicting one an error naming both values; the taken
    values are validated like typed flags. Returns the flags taken, for the log."""
    stored = network_flags(read_metadata(path)[0]) if path else {}
    taken = apply_checkpoint_flags(args, argv, stored, path)
    if taken:
        validate_flags(args, parser.options, parser.flag_rules)
        dist_util.print0(f"flags from {path}: {' '.join(taken)}")
    return taken
