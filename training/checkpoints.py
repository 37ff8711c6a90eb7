"""Training checkpoints: `{prefix}_STEP.pt` files written atomically and durably, the newest
complete one for `--resume` and for a run that torchrun's elastic agent restarts, pruning, and the
random states that make a resumed run continue bit for bit.

A checkpoint counts once it is complete on the disk: it is written under a temporary name,
flushed to the disk (fsync), renamed, and the folder's entry flushed too. A worker killed while it
writes leaves only the temporary (which no listing matches); a machine lost right after a rename
can still leave a short file on some file systems, so a resume takes the newest checkpoint that
loads and passes over one that does not.
"""

import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from common.errors import CheckpointError, Diff2LipError
from common.files import atomic_write
from guided_diffusion import dist_util, logger


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
    """The newest `{prefix}_STEP.pt` by its name (complete as written; `resume_checkpoint` also
    checks that it loads)."""
    paths = list_checkpoints(output_dir, prefix)
    return paths[-1] if paths else None


def prune_checkpoints(output_dir: str, keep: int, prefix: str = "checkpoint") -> None:
    """Delete all but the newest `keep` checkpoints."""
    for old in list_checkpoints(output_dir, prefix)[:-keep] if keep > 0 else []:
        os.remove(old)


def save_checkpoint(output_dir: str, step: int, state: dict, keep: int, prefix: str = "checkpoint") -> str:
    """Write `state` as `{prefix}_{step}.pt` atomically and durably, then keep the newest `keep`.
    Returns the path."""
    os.makedirs(output_dir, exist_ok=True)
    path = checkpoint_path(output_dir, step, prefix)
    atomic_write(path, lambda tmp: _save_synced(state, tmp))
    _sync_folder(output_dir)
    # Only now: the older checkpoints are the fallback until the new one is on the disk.
    prune_checkpoints(output_dir, keep, prefix)
    return path


def _save_synced(state: dict, path: str) -> None:
    # Through a file object (torch's own writer hides a full disk's errno), flushed to the disk
    # before the rename: a rename can reach the disk before the data it names.
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())


def _sync_folder(folder: str) -> None:
    """Flush the folder's entries (the rename) to the disk, where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (and Windows) cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)


def elastic_restart() -> bool:
    """True in a worker group that torchrun's elastic agent restarted (`--max-restarts`) after a
    worker failed: it continues from the newest checkpoint without being asked to. Asked of every
    rank (collective): on several machines only the one whose worker failed may count a restart."""
    return max(dist_util.all_gather_object(dist_util.restart_count())) > 0


def resume_checkpoint(
    output_dir: str, resume: bool, prefix: str = "checkpoint", required: Sequence[str] = ("step",)
) -> Optional[Tuple[str, dict]]:
    """The checkpoint to continue from, as `(path, state)`, or None for a fresh start.

    With `resume` (--resume True) or after an elastic restart: the newest `{prefix}_STEP.pt` in
    `output_dir` that loads and holds the `required` keys; a newer one that does not is passed
    over with a warning. None when there is none at all. Without either, a folder that already
    holds checkpoints is an error (a fresh run would mix its checkpoints with the old ones').
    Rank 0 lists the folder (the other ranks may not see it) and every rank gets the same state.
    """
    paths = dist_util.broadcast_object(list_checkpoints(output_dir, prefix) if dist_util.is_main_process() else None)
    if not paths:
        if resume:
            logger.log(f"--resume: no {prefix}_STEP.pt in {output_dir}, starting at step 0")
        return None
    if not (resume or elastic_restart()):
        raise Diff2LipError(
            f"--output_dir '{output_dir}' already holds checkpoints (newest '{paths[-1]}'); "
            "pass --resume True to continue from it, or choose another --output_dir"
        )
    reasons = []
    for path in reversed(paths):
        try:
            state = dist_util.load_state_dict(path, map_location="cpu")
        except CheckpointError as exc:
            reasons.append(str(exc))
            continue
        missing = [key for key in required if not isinstance(state, dict) or key not in state]
        if missing:
            reasons.append(f"'{path}' lacks {', '.join(missing)}; not a {prefix} checkpoint of this command")
            continue
        _set_aside(paths[len(paths) - len(reasons):], reasons)
        return path, state
    raise CheckpointError(
        f"none of the {len(paths)} checkpoints in '{output_dir}' loads (newest: {reasons[0]}); "
        "move them out of --output_dir to start afresh"
    )


def _set_aside(paths: List[str], reasons: List[str]) -> None:
    """Rename the newer checkpoints that did not load to `NAME.unreadable` (rank 0), kept for a
    look but no longer listed: pruning by name would otherwise keep them over the good ones."""
    for path, reason in zip(reversed(paths), reasons):
        logger.warn(f"passing over {path}, set aside as {os.path.basename(path)}.unreadable: {reason}")
        if dist_util.is_main_process():
            os.replace(path, path + ".unreadable")
    dist_util.barrier()


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
