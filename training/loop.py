"""The training loop's policy: precision, learning-rate warm-up, stop signals and the `main`
of a training command."""

import signal
from typing import Any, Callable, List, Optional

import torch

from guided_diffusion import dist_util


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

    from guided_diffusion import logger
    from common.errors import Diff2LipError

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
