"""Training plumbing that must never lose work: atomic checkpoints, the newest one for
`--resume`, RNG states for exact resumption, the learning-rate warm-up and stop signals."""

import glob
import os
import re
import signal
import uuid
from typing import Dict, List, Optional

import torch

from . import dist_util

CHECKPOINT_PATTERN = "checkpoint_{step:07d}.pt"
_STEP = re.compile(r"checkpoint_(\d{7})\.pt$")


def save_checkpoint(output_dir: str, step: int, state: dict, keep: int) -> str:
    """Write `state` as `checkpoint_{step}.pt` atomically (temporary name, then rename) and keep
    only the newest `keep` checkpoints. Returns the path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, CHECKPOINT_PATTERN.format(step=step))
    tmp = os.path.join(output_dir, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
        os.remove(old)
    return path


def list_checkpoints(output_dir: str) -> List[str]:
    """Complete checkpoints in `output_dir`, oldest first."""
    paths = [p for p in glob.glob(os.path.join(output_dir, "checkpoint_*.pt")) if _STEP.search(p)]
    return sorted(paths, key=lambda p: int(_STEP.search(p).group(1)))


def latest_checkpoint(output_dir: str) -> Optional[str]:
    paths = list_checkpoints(output_dir)
    return paths[-1] if paths else None


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


def warmup_lr(base_lr: float, step: int, warmup_steps: int) -> float:
    """Linear warm-up from base_lr / warmup_steps to base_lr over `warmup_steps`, then constant."""
    if warmup_steps <= 0:
        return base_lr
    return base_lr * min(1.0, (step + 1) / warmup_steps)


class StopSignal:
    """Remembers SIGTERM / SIGINT so the loop can save and exit cleanly after the current step."""

    def __init__(self):
        self.requested = False
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def any_rank(self, device) -> bool:
        """True when any rank got a signal (all ranks must stop at the same step)."""
        if dist_util.world_size() == 1:
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
