"""Checkpoint files that describe themselves.

Every network file this project writes carries the flags that build and sample it, so that
`generate.py --model_path FILE` needs no architecture flags:

- `.pt`: `{"model": state_dict, "flags": {...}, "trained_on": {...}}`, loaded with
  `torch.load(weights_only=True)`; train.py's training checkpoints hold their flags under "args".
- `.safetensors`: the tensors, with the metadata `{"format": "diff2lip", "flags": <json>,
  "trained_on": <json>}` (safetensors metadata holds strings only).
- The released `checkpoint.pt` is a plain state_dict with no flags: the released flags (our
  defaults) build it. `export_checkpoint.py --plain True` writes that format, for the release's
  own code.

When a plain state_dict does not fit the flags, `shape_mismatch_hint` reads the architecture
off the tensor shapes (`infer_flags_from_shapes`) and names the flags that differ, with both values.
"""

from __future__ import annotations

import json
import os
import re
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch

from .errors import CheckpointError

# Flags that change how a network runs, not what its weights are: never stored, never contradicted.
RUNTIME_FLAGS = ("use_fp16", "use_checkpoint", "fused_attention", "dropout")
# The sampling flags a file may suggest (a distilled student's step count); the command line wins.
SAMPLING_FLAGS = ("timestep_respacing", "use_ddim", "sampler", "sampling_steps")
# What the tensor shapes cannot tell (same shapes either way), with the released values.
NOT_IN_SHAPES = ("num_head_channels", "num_heads", "predict_xstart", "noise_schedule", "diffusion_steps")

SAFETENSORS_FORMAT = "diff2lip"


def network_flags(settings: Mapping) -> dict:
    """The flags a network file stores: every network and diffusion flag of `settings` (a dict
    or an argparse namespace's `vars`) except the runtime ones and the training-time respacing."""
    from .script_util import tfg_model_and_diffusion_defaults

    keys = [k for k in tfg_model_and_diffusion_defaults() if k not in RUNTIME_FLAGS and k != "timestep_respacing"]
    return {k: settings[k] for k in keys if k in settings}


def is_safetensors(path: str) -> bool:
    return str(path).endswith(".safetensors")


def save_network(path: str, state: Dict[str, torch.Tensor], flags: Optional[dict], trained_on: Optional[dict] = None) -> None:
    """Write a network file, atomically: `.safetensors` with the flags in its metadata, otherwise a
    `.pt` dict; `flags=None` writes a plain state_dict (the released format)."""
    from .train_util import atomic_save, atomic_write

    if is_safetensors(path):
        from safetensors.torch import save_file

        metadata = {"format": SAFETENSORS_FORMAT, "flags": json.dumps(flags or {}), "trained_on": json.dumps(trained_on or {})}
        tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}  # no shared storage in safetensors
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    elif flags is None:
        atomic_save(state, path)
    else:
        atomic_save({"model": state, "flags": dict(flags), "trained_on": dict(trained_on or {})}, path)


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
    if isinstance(state.get("flags"), dict):
        return dict(state["flags"]), dict(state.get("trained_on") or {})
    if isinstance(state.get("args"), dict) and isinstance(state.get("model"), dict):
        # a train.py checkpoint: its command line
        args = state["args"]
        return network_flags(args), {"data_root": args.get("data_root", ""), "steps": state.get("step")}
    return {}, {}


def load_safetensors_bytes(data: bytes, path: str) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load

    try:
        return load(bytes(data))
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {path!r} is not a readable .safetensors file ({exc}); download it again") from exc


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
    from .script_util import CHANNEL_MULT_BY_SIZE

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
    from .script_util import CHANNEL_MULT_BY_SIZE

    ours = infer_flags_from_shapes({k: tuple(v.shape) for k, v in own.items()}, image_size)
    found = infer_flags_from_shapes({k: tuple(v.shape) for k, v in theirs.items()}, image_size)
    ours["image_size"] = image_size
    for flags in (ours, found):  # compare multipliers, whether defaults or given
        if flags.get("channel_mult") == "" and flags.get("image_size") in CHANNEL_MULT_BY_SIZE:
            flags["channel_mult"] = ",".join(str(m) for m in CHANNEL_MULT_BY_SIZE[flags["image_size"]])
    differ = [
        f"--{key} {found[key]} (the flags give {ours[key]})" for key in found if key in ours and not _same(found[key], ours[key])
    ]
    return ", ".join(differ)
