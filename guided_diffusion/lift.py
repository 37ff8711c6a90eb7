"""Lifting a trained network to twice its image size (`train.py --init_from net.pt --image_size 2N`).

The lifted architecture puts one new level in front of the small network's levels, with the
small network's first channel multiplier: at 256 px the released (1, 1, 2, 3, 4) becomes
(1, 1, 1, 2, 3, 4), and `--attention_resolutions` keeps its values (feature-map sizes in px).
Every old level then works on feature maps of the size it was trained on (the old 128 px level
now sees the 128 px map of a 256 px face, the 32/16/8 px attention stays at 32/16/8 px), so
every tensor of the small network has a home of the same shape:

- `input_blocks.0` (the input conv) and the output head `out.*` keep their names: the new level
  has the old first level's width;
- the encoder's blocks shift by one level: `input_blocks.i` -> `input_blocks.{i + num_res_blocks + 1}`;
- the decoder's blocks keep their indices (the deepest level comes first);
- the middle block, the timestep embedding and the audio encoder are unchanged.

New are the front level's encoder blocks (`num_res_blocks` residual blocks and a downsampler),
the upsampler now ending the old first level's decoder, and the front level's decoder
(`num_res_blocks + 1` blocks). They start close to a pass-through: the residual blocks' last
convs are zero-initialised (identity, average pooling, nearest upsampling), and the new decoder
blocks' skip projections take the upsampled features and ignore the new encoder skip. The lifted
network then starts as the small one working on a half-size view of the input, and fine-tuning
teaches the new level the detail the small one never saw.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from common.errors import CheckpointError, Diff2LipError
from common.flags import validate_flags

from . import dist_util
from .checkpoint_format import (
    RUNTIME_FLAGS,
    apply_checkpoint_flags,
    given_flags,
    load_model_weights,
    network_flags,
    read_metadata,
    take_network_flags,
)
from .script_util import parse_channel_mult, tfg_create_model_and_diffusion, tfg_model_and_diffusion_defaults
from .unet import Downsample, ResBlock, TFGModel, Upsample


@dataclass
class LiftReport:
    """What a lift did: `carried` maps each small tensor's name to its name in the large network
    (copied unchanged), `new` lists the large network's tensors that had no source."""

    small_size: int
    large_size: int
    carried: Dict[str, str] = field(default_factory=dict)
    new: List[str] = field(default_factory=list)
    new_parameters: int = 0
    carried_parameters: int = 0

    def summary(self) -> str:
        """One paragraph: the counts and the new tensors grouped by block."""
        blocks = sorted({re.sub(r"^((?:input|output)_blocks\.\d+(?:\.\d+)?)\..*", r"\1", k) for k in self.new},
                        key=_natural)
        return (f"lifted {self.small_size} px -> {self.large_size} px: carried {len(self.carried)} tensors "
                f"({self.carried_parameters:,} values) unchanged, {len(self.new)} new tensors "
                f"({self.new_parameters:,} values) in {', '.join(blocks)}")


def _natural(key: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]


# ----------------------------------------------------------------------------------------------
# The architecture


def lifted_channel_mult(channel_mult, image_size: int) -> Tuple[float, ...]:
    """The multipliers of the lifted network: the small network's, with its first repeated in front."""
    mults = tuple(parse_channel_mult(channel_mult, image_size))
    return (mults[0], *mults)


def _mult_flag(mults: Sequence[float]) -> str:
    return ",".join(str(m) for m in mults)


def lift_flags(small: dict) -> dict:
    """The network flags of the lifted network from the small one's (a full flag dict): twice the
    image size, `lifted_channel_mult`; everything else, attention sizes in px included, the same."""
    return {**small, "image_size": 2 * small["image_size"],
            "channel_mult": _mult_flag(lifted_channel_mult(small["channel_mult"], small["image_size"]))}


def key_map(small_keys: Sequence[str], num_res_blocks: int) -> Dict[str, str]:
    """Small tensor name -> its name in the lifted network (see the module docstring)."""
    shift = num_res_blocks + 1

    def target(key: str) -> str:
        m = re.match(r"input_blocks\.(\d+)\.(.*)", key)
        if m and int(m.group(1)) > 0:
            return f"input_blocks.{int(m.group(1)) + shift}.{m.group(2)}"
        return key

    return {k: target(k) for k in small_keys}


def _identity_conv(conv: nn.Conv2d) -> None:
    """A conv that copies its input channels to its first outputs (a centred delta kernel), zero bias."""
    with torch.no_grad():
        conv.weight.zero_()
        k = conv.weight.shape[-1] // 2
        n = min(conv.weight.shape[0], conv.weight.shape[1])
        conv.weight[torch.arange(n), torch.arange(n), k, k] = 1.0
        if conv.bias is not None:
            conv.bias.zero_()


def _pass_through(block: nn.Module) -> None:
    """Make a new block start close to an identity: its residual blocks' skip projections keep the
    first input channels (the upsampled features; a decoder block reads [h, encoder skip]), and a
    conv resampler copies its channels."""
    for module in block.modules():
        if isinstance(module, ResBlock) and isinstance(module.skip_connection, nn.Conv2d):
            _identity_conv(module.skip_connection)
        elif isinstance(module, Upsample) and module.use_conv:
            _identity_conv(module.conv)
        elif isinstance(module, Downsample) and isinstance(module.op, nn.Conv2d):
            _identity_conv(module.op)


def lift_state_dict(small_state: Dict[str, torch.Tensor], small_flags: dict, large: TFGModel) -> LiftReport:
    """Copy every tensor of `small_state` (a network built from `small_flags`) into its home in
    `large` (built from `lift_flags(small_flags)`), start the new blocks as pass-throughs, and
    return what was carried and what is new. A tensor without a same-shaped home is a
    `CheckpointError` naming it."""
    num_res_blocks = int(small_flags["num_res_blocks"])
    mapping = key_map(list(small_state), num_res_blocks)
    own = large.state_dict()
    homeless = [f"{k} -> {t}" for k, t in mapping.items() if t not in own]
    misfit = [f"{k} {tuple(small_state[k].shape)} -> {t} {tuple(own[t].shape)}"
              for k, t in mapping.items() if t in own and own[t].shape != small_state[k].shape]
    if homeless or misfit:
        shown = (homeless + misfit)[:3]
        raise CheckpointError(
            f"the {small_flags['image_size']} px network does not lift into the {large.image_size} px one: "
            f"{len(homeless)} tensors without a home, {len(misfit)} of another shape ({'; '.join(shown)}); "
            f"lifting needs --channel_mult {_mult_flag(lifted_channel_mult(small_flags['channel_mult'], small_flags['image_size']))}"
        )
    levels = len(parse_channel_mult(small_flags["channel_mult"], small_flags["image_size"]))
    first_new_decoder = levels * (num_res_blocks + 1)
    for j in range(first_new_decoder, len(large.output_blocks)):
        _pass_through(large.output_blocks[j])
    for i in range(1, num_res_blocks + 2):
        _pass_through(large.input_blocks[i])
    state = large.state_dict()
    targets = set(mapping.values())
    for key, tgt in mapping.items():
        state[tgt] = small_state[key].detach().clone().to(state[tgt].dtype)
    large.load_state_dict(state)
    new = [k for k in state if k not in targets]
    return LiftReport(
        small_size=int(small_flags["image_size"]), large_size=int(large.image_size), carried=mapping, new=new,
        new_parameters=sum(state[k].numel() for k in new),
        carried_parameters=sum(v.numel() for v in small_state.values()),
    )


# ----------------------------------------------------------------------------------------------
# From a network file


def file_network_flags(path: str) -> dict:
    """Every network and diffusion flag of the network file `path`: those it stores, the released
    defaults for the rest (a plain state_dict such as checkpoint.pt stores none)."""
    stored = network_flags(read_metadata(path)[0]) if path else {}
    return {**tfg_model_and_diffusion_defaults(), **stored}


def lifts(path: str, image_size: int) -> bool:
    """Whether training `--image_size image_size` from `path` is a lift (the file is at half that size)."""
    return bool(path) and image_size == 2 * int(file_network_flags(path)["image_size"])


def lift_network(large: TFGModel, path: str) -> LiftReport:
    """Load the network file `path` (at half `large`'s size) into `large` by lifting; prints and
    returns the report. The file is first loaded into its own network, so a file that does not
    fit its flags fails as `load_model_weights` says."""
    flags = file_network_flags(path)
    build = {k: v for k, v in flags.items() if k not in RUNTIME_FLAGS}
    small, _ = tfg_create_model_and_diffusion(**build)
    load_model_weights(small, path)
    report = lift_state_dict(small.state_dict(), flags, large)
    dist_util.print0(report.summary())
    return report


def take_init_flags(args: argparse.Namespace, argv: Sequence[str], parser) -> List[str]:
    """train.py's flags from its --init_from file. At the file's size: the file's flags
    (`take_network_flags`). At twice its size (`--image_size` given): a lift, with the file's
    flags but `--image_size` and the lifted `--channel_mult` (a given one must be that)."""
    path = args.init_from
    if not path or "image_size" not in given_flags(argv) or not lifts(path, args.image_size):
        return take_network_flags(args, argv, path, parser)
    small = file_network_flags(path)
    lifted = lift_flags(small)
    if "channel_mult" in given_flags(argv) and tuple(parse_channel_mult(args.channel_mult, args.image_size)) != tuple(
            parse_channel_mult(lifted["channel_mult"], args.image_size)):
        raise Diff2LipError(
            f"--channel_mult {args.channel_mult} cannot hold the {small['image_size']} px network of '{path}' at "
            f"--image_size {args.image_size}; drop the flag (lifting uses --channel_mult {lifted['channel_mult']})"
        )
    stored = {k: v for k, v in network_flags(lifted).items() if k != "image_size"}
    argv_without_mult = [a for a in argv if a.split("=", 1)[0] != "--channel_mult"]
    taken = apply_checkpoint_flags(args, argv_without_mult, stored, path)
    validate_flags(args, parser.options, parser.flag_rules)
    dist_util.print0(f"lifting {path} ({small['image_size']} px) to {args.image_size} px: {' '.join(taken) or 'no flags taken'}")
    return taken


def init_weights(model: TFGModel, path: str) -> Optional[LiftReport]:
    """train.py's --init_from: load `path` into `model`, lifting it when `model` is twice its size."""
    if lifts(path, model.image_size):
        return lift_network(model, path)
    load_model_weights(model, path)
    return None
