"""Training plumbing that must never lose work: atomic checkpoints (and atomic writes of any
file), the newest checkpoint for `--resume`, RNG states for exact resumption, the learning-rate
warm-up and stop signals."""

import json
import os
import re
import signal
import uuid
from typing import Any, Callable, Dict, List, Optional

import torch

from . import dist_util


def atomic_write(path, write: Callable[[str], None]) -> None:
    """Let `write(tmp)` produce the file under a temporary name in the same folder, then rename it
    to `path`: an interrupted write never leaves a truncated file under the final name."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save(obj, path: str) -> None:
    """`torch.save` of `obj` to `path`, atomically (`atomic_write`)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_bytes(path, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj: Any, indent: Optional[int] = 1) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent))


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


def autocast(device: torch.device, precision: str):
    """The training's precision context: none for fp32, bfloat16 or float16 autocast (float16 with
    a loss scaler) otherwise."""
    if precision == "fp32":
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


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


def run_training(
    run: Callable[[Any], Any],
    parser,
    argv: Optional[List[str]] = None,
    prepare: Optional[Callable[[Any, List[str]], None]] = None,
) -> int:
    """The `main` of a training command: parse `argv`, `prepare(args, argv)` (e.g. take the flags
    that the --init_from file carries), `run(args)`, exit 0; a `Diff2LipError` is one `error:` line
    and exit 1. The logger and the process group are closed either way (a stop signal is the
    training loop's own: it saves a checkpoint and returns)."""
    import sys

    from . import logger
    from .errors import Diff2LipError

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
        if prepare is not None:
            prepare(args, argv)
        run(args)
        return 0
    except Diff2LipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        logger.close()
        dist_util.cleanup()
