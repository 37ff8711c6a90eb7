"""train.py as a torchrun worker that dies once: on the group's first attempt, the worker of one
rank kills itself with SIGKILL at a chosen moment, as a lost machine or the OOM killer would end it
(no handler runs, nothing is flushed). The elastic agent then restarts the group; every later attempt
is train.py unchanged. Used by tests/training/test_elastic.py:

    torchrun --max-restarts 1 ... tests/training/elastic_worker.py MOMENT RANK STEP [train.py flags]

MOMENT `during_step`: in the middle of optimizer step STEP (0-based; its forward pass done, its
update not). MOMENT `while_saving`: while writing the checkpoint of step STEP, with half of its
bytes under the temporary name (rank 0 is the one that writes).
"""

import os
import signal
import sys

import train
import training.checkpoints as checkpoints
import training.diff2lip as diff2lip
from guided_diffusion import dist_util


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(moment: str, rank: int, step: int) -> None:
    """Install the one fault of the first attempt."""
    if dist_util.restart_count() > 0:
        return
    if moment == "during_step":
        forward = diff2lip.forward_losses
        steps = {"now": -1}
        real_step = diff2lip.Diff2LipTask.step

        def counting_step(self, at: int) -> bool:
            steps["now"] = at
            return real_step(self, at)

        def dying_forward(*args, **kwargs):
            result = forward(*args, **kwargs)
            if steps["now"] == step and dist_util.rank() == rank:
                die()
            return result

        diff2lip.Diff2LipTask.step = counting_step
        diff2lip.forward_losses = dying_forward
    elif moment == "while_saving":
        real_save = checkpoints._save_synced

        def dying_save(state: dict, path: str) -> None:
            real_save(state, path)
            if os.path.basename(path).startswith(f".{os.path.basename(checkpoints.checkpoint_path('', step))}"):
                os.truncate(path, os.path.getsize(path) // 2)
                die()

        checkpoints._save_synced = dying_save
    else:
        raise SystemExit(f"unknown moment {moment!r}")


if __name__ == "__main__":
    moment, rank, step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    arm(moment, rank, step)
    sys.exit(train.main(sys.argv[4:]))
