"""Launch real multi-process runs (torchrun / mpiexec) from tests, with a hard timeout."""

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The pytest process may itself run under a launcher; its variables must not leak into the children.
LAUNCHER_VARS = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
    "PMI_RANK", "PMI_SIZE", "PMI_FD", "PMI_PORT", "MPI_LOCALRANKID", "MPI_LOCALNRANKS",
    "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
)


def torchrun(nproc: int) -> List[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]


def mpiexec(nproc: int) -> List[str]:
    """The venv's own mpiexec (PyPI `mpich`), so it matches the MPI that mpi4py loads."""
    path = Path(sys.executable).parent / "mpiexec"
    if not path.exists():
        pytest.skip(f"no mpiexec next to {sys.executable}; `pip install mpich` provides one")
    return [str(path), "-n", str(nproc), sys.executable]


def child_env() -> Dict[str, str]:
    env = {key: val for key, val in os.environ.items() if key not in LAUNCHER_VARS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"  # two ranks on few cores: avoid thread oversubscription
    # CPU + gloo everywhere: two ranks cannot share one GPU under NCCL.
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run(command: Sequence[str], timeout: float = 120) -> Tuple[int, str]:
    """Run `command` from the repository root; return its exit status and combined output."""
    # A session of its own, so that a hang can be ended with every rank the launcher started.
    proc = subprocess.Popen(
        list(command), cwd=REPO_ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # torchrun starts its workers in sessions of their own: end every descendant, or their
        # open pipe keeps `communicate` waiting after the launcher is gone.
        for pid in [*_descendants(proc.pid), proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{' '.join(command)} hung for {timeout} s; output:\n{output[-4000:]}")
    return proc.returncode, output


def _descendants(root: int) -> List[int]:
    """Every process below `root`, from /proc's parent ids (Linux)."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
