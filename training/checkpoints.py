"""Training checkpoints: `{prefix}_STEP.pt` files written atomically, the newest one for
`--resume`, pruning, and the random states that make a resumed run continue bit for bit."""

import os
import re
from typing import Dict, List, Optional

import torch

from common.files import atomic_save
from guided_diffusion import dist_util


def checkpoint_path(output_dir: str, step: int, prefix: str = "checkpoint") -> str:
    """`output_dir/{prefix}_{step:07d}.pt`."""
    return os.path.join(output_dir, f"{prefix}_{step:07d}.pt")


def list_checkpoints(output_dir: str, prefix: str = "checkpoint") -> List[str]:
    """Complete `{prefix}_STEP.pt` checkpoints in `output_dir`, oldest first."""
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d{{7}})\.pt$")
    if not os.path.isdir(output_dir):
        return []
    names = sorted(name for name in os.listdir(output_dir) if pattern.match(name))
    return [os.path.join(output_dir, name) for name in names]


def latest_checkpoint(output_dir: str, prefix: str = "checkpoint") -> Optional[str]:
    paths = list_checkpoints(output_dir, prefix)
    return paths[-1] if paths else None


def prune_checkpoints(output_dir: str, keep: int, prefix: str = "checkpoint") -> None:
    """Delete all but the newest `keep` checkpoints."""
    for old in list_checkpoints(output_dir, prefix)[:-keep] if keep > 0 else []:
        os.remove(old)


def save_checkpoint(output_dir: str, step: int, state: dict, keep: int, prefix: str = "checkpoint") -> str:
    """Write `state` as `{prefix}_{step}.pt` atomically and keep the newest `keep`. Returns the path."""
    os.makedirs(output_dir, exist_ok=True)
    path = checkpoint_path(output_dir, step, prefix)
    atomic_save(state, path)
    prune_checkpoints(output_dir, keep, prefix)
    return path


def rng_state(generator: torch.Generator) -> Dict[str, torch.Tensor]:
    """Every random state the training draws from: torch's global CPU and CUDA generators and
    the training's own generator (timesteps and noise)."""
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state(dist_util.dev())
    return state


def set_rng_state(state: Dict[str, torch.Tensor], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"], dist_util.dev())
