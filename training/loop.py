"""The one training loop of train.py, scripts/train_syncnet.py and scripts/train_distill.py, and
its policy:

- a step is the task's: `task.step(step)` draws its own batches (a pure function of the step, so
  the data position is the step), updates the networks and logs its terms (`logger.logkv_mean`),
  or returns False when the loss was non-finite on some rank: nothing was updated, the step still
  counts, and `max_nonfinite` of those in a row end the run with a one-line error;
- checkpoints `{prefix}_STEP.pt` every `save_every` steps, at the last step and on SIGTERM /
  SIGINT, written atomically by rank 0 (the newest `keep` kept); `task.checkpoint(step)` holds
  everything (weights, optimizers, RNG states) for `--resume True` to continue bit for bit;
- a stop signal finishes the current step, saves and returns: the command exits 0;
- logs through guided_diffusion.logger: the terms' means every `log_every` steps and at the end.

The loop knows no network, loss or flag; a task is a small object (EDM's loss callables, DiT's
checkpoint dict): Diff2Lip's objective (training.diff2lip), the progressive distillation (the
same task with training.distillation's objective) and the SyncNet BCE (training.syncnet_training).
"""

import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Protocol

import torch

from common.command import print_error, run_command
from common.errors import Diff2LipError, ReportedError
from common.flags import Option, at_least
from guided_diffusion import dist_util, logger
from training.checkpoints import save_checkpoint

MAX_NONFINITE = Option("max_nonfinite", 10, "stop with an error after this many non-finite losses in a row (each is skipped)",
                       at_least(1))


def warmup_lr(base_lr: float, step: int, warmup_steps: int) -> float:
    """Linear warm-up from base_lr / warmup_steps to base_lr over `warmup_steps`, then constant."""
    if warmup_steps <= 0:
        return base_lr
    return base_lr * min(1.0, (step + 1) / warmup_steps)


def all_finite(loss: torch.Tensor) -> bool:
    """True when the loss is finite on every rank (all ranks must skip a step together)."""
    flag = torch.isfinite(loss.detach()).float().reshape(1)
    if dist_util.world_size() > 1:
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item())


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


class TrainingTask(Protocol):
    """What the loop trains."""

    def step(self, step: int) -> bool:
        """Optimizer step `step` (0-based), logging its terms; False when the loss was non-finite
        on some rank (then nothing was updated, on any rank)."""

    def after_step(self, step: int, last: bool) -> bool:
        """After update number `step` (previews, validation); True when it logged values that must
        be written now."""

    def log_totals(self, step: int, elapsed: float) -> Dict[str, float]:
        """Values logged with each write of the logs (e.g. samples per second)."""

    def checkpoint(self, step: int) -> Optional[dict]:
        """What the checkpoint of `step` holds (weights, optimizers, step, flags, random states);
        called on every rank (it may gather), rank 0's is written."""


@dataclass
class LoopPolicy:
    """When the loop saves, logs and gives up (the flags of the same names)."""

    output_dir: str
    max_steps: int  # 0: until stopped
    save_every: int
    keep: int
    log_every: int
    max_nonfinite: int
    prefix: str = "checkpoint"


def save(task: TrainingTask, policy: LoopPolicy, step: int) -> None:
    """Rank 0 writes the task's checkpoint for `step` atomically and prunes to the newest `keep`.
    When it cannot (a full disk), every rank ends with its one-line error."""
    state = task.checkpoint(step)
    failed = None
    if dist_util.is_main_process():
        try:
            path = save_checkpoint(policy.output_dir, step, state, policy.keep, policy.prefix)
            logger.log(f"saved {path}")
        except Exception as exc:  # noqa: BLE001 - raised below, on every rank
            failed = exc
    if dist_util.world_size() > 1:
        # Every rank learns whether rank 0 wrote, and whether its error is a line or a bug: the
        # others would wait at the next collective for a rank that has gone.
        told = dist_util.broadcast_object(None if failed is None else (str(failed), isinstance(failed, Diff2LipError)))
        if told is not None:
            message, is_line = told
            if is_line:
                # Each rank prints its line before any exits: the first to exit makes torchrun
                # stop the others, which may not have printed theirs yet.
                print_error(message)
                dist_util.barrier()
                raise ReportedError(message) from failed
            if failed is None:
                failed = Diff2LipError(f"rank 0 could not write the checkpoint of step {step} ({message})")
    if failed is not None:
        raise failed
    dist_util.barrier()


def run_loop(task: TrainingTask, policy: LoopPolicy, start_step: int, stop: StopSignal, device) -> int:
    """Train from `start_step` until `policy.max_steps` or a stop signal; returns the step reached."""
    step, nonfinite = start_step, 0
    started = time.perf_counter()
    while policy.max_steps == 0 or step < policy.max_steps:
        updated = task.step(step)
        step += 1
        last = step == policy.max_steps
        if updated:
            nonfinite = 0
        else:
            nonfinite += 1
            logger.warn(f"step {step - 1}: non-finite loss, step skipped ({nonfinite} in a row)")
            if nonfinite >= policy.max_nonfinite:
                raise Diff2LipError(
                    f"the loss was non-finite for {nonfinite} steps in a row (last at step {step - 1}); "
                    "lower --lr, use --precision fp32, or check the data"
                )
        # A skipped step still counts: it saves and heeds a stop signal like any other (its
        # terms were not logged, so it writes no periodic log line).
        dump = task.after_step(step, last) if updated else False
        stopping = stop.any_rank(device)
        if step % policy.save_every == 0 or stopping or last:
            save(task, policy, step)
        if stopping or last or (updated and (dump or step % policy.log_every == 0)):
            logger.logkv("step", step)
            for name, value in task.log_totals(step, time.perf_counter() - started).items():
                logger.logkv(name, value)
            logger.dumpkvs(step)
        if stopping:
            logger.log(f"stop signal: saved step {step}, exiting")
            break
    return step


def run_training(
    run: Callable[[Any], Any],
    parser,
    argv: Optional[List[str]] = None,
    prepare: Optional[Callable[[Any, List[str]], None]] = None,
) -> int:
    """The `main` of a training command, through `common.command.run_command`: parse `argv`,
    `prepare(args, argv)` (e.g. take the flags that the --init_from file carries), `run(args)`,
    exit 0; a `Diff2LipError` is one `error:` line and exit 1. The logger and the process group
    are closed either way. A stop signal during training is the loop's own (it saves a
    checkpoint and returns: exit 0); one outside the loop unwinds the command (exit 130 / 143)."""
    argv = sys.argv[1:] if argv is None else list(argv)

    def body() -> int:
        try:
            args = parser.parse_args(argv)
            if prepare is not None:
                prepare(args, argv)
            run(args)
            return 0
        finally:
            logger.close()
            dist_util.cleanup()

    return run_command(body)
