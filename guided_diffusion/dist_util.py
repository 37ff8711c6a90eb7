"""Distributed setup and helpers for one process, `torchrun`, or `mpiexec` (mpi4py).

The rest of the code asks this module for rank, world size and device, so it never reads
launcher environment variables or touches MPI itself. With one plain process no process
group is created and every helper takes its world-size-1 shortcut.
"""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist

from common.errors import CheckpointError, Diff2LipError

# Environment variables that only an MPI launcher sets (MPICH/Hydra, Intel MPI, Open MPI).
_MPI_ENV_VARS = (
    "PMI_RANK",
    "PMI_SIZE",
    "MPI_LOCALRANKID",
    "MPI_LOCALNRANKS",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK",
)

# Checkpoints (~400 MB) are read and broadcast in pieces so no single message or read is huge.
_CHUNK_BYTES = 64 * 1024 * 1024

_initialized = False
_local_rank = 0


def _launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _launched_by_mpi() -> bool:
    return any(name in os.environ for name in _MPI_ENV_VARS)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def setup_dist(backend: str | None = None) -> None:
    """Join the process group the launcher describes; a no-op after the first call.

    torchrun: env:// rendezvous (a store prefix per elastic attempt). mpiexec: rank 0 picks an address and a free port and
    broadcasts them over MPI, then tcp:// rendezvous. Otherwise a single process without a
    process group. `backend` defaults to NCCL with CUDA, gloo without.
    """
    global _initialized, _local_rank
    if _initialized:
        return
    backend = backend or _default_backend()
    if dist.is_initialized():
        # Someone (e.g. a test harness) already built the group: adopt it as is.
        _local_rank = int(os.environ.get("LOCAL_RANK", 0))
    elif _launched_by_torchrun():
        _local_rank = int(os.environ.get("LOCAL_RANK", 0))
        _set_cuda_device()
        _init_from_torchrun(backend)
    elif _launched_by_mpi():
        _init_from_mpi(backend)
    _initialized = True


def _init_from_torchrun(backend: str) -> None:
    """env:// rendezvous in the store of this attempt of the worker group.

    The elastic agent keeps one store for every attempt (`--max-restarts`), and env:// puts no
    attempt in its keys: after a restart, a rank would read the addresses of the dead group's ranks
    and fail to connect. A prefix per attempt keeps each group to its own keys.
    """
    if _agents_disagree_on_attempts():
        raise Diff2LipError(
            "torchrun --max-restarts on several machines needs TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in torchrun's "
            "environment on every machine (its shared store keeps a dead group's addresses, and after a restart the "
            "machines count attempts differently); export it before torchrun, as scripts/launch.sh does"
        )
    store, rank_, world = next(dist.rendezvous("env://"))
    store = dist.PrefixStore(f"attempt_{restart_count()}", store)
    dist.init_process_group(backend=backend, store=store, rank=rank_, world_size=world)


def _agents_disagree_on_attempts() -> bool:
    """True when several torchrun agents (machines) share one store for every attempt and restarts
    are allowed: an agent restarted because another machine's worker died does not count it as a
    restart of its own, so a prefix by attempt could differ between machines."""
    env = os.environ
    return (
        env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        and int(env.get("GROUP_WORLD_SIZE", "1") or 1) > 1
        and int(env.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) > 0
    )


def _init_from_mpi(backend: str) -> None:
    global _local_rank
    # Imported only here: importing mpi4py initialises MPI, which must not happen
    # in plain or torchrun processes.
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    node_comm = comm.Split_type(MPI.COMM_TYPE_SHARED)
    _local_rank = node_comm.Get_rank()
    single_node = node_comm.Get_size() == comm.Get_size()
    node_comm.Free()
    if comm.Get_size() == 1:
        return
    _set_cuda_device()
    address = None
    if comm.Get_rank() == 0:
        # Loopback avoids depending on hostname resolution when all ranks share one machine.
        host = "127.0.0.1" if single_node else socket.getfqdn()
        address = f"tcp://{host}:{_free_port()}"
    address = comm.bcast(address, root=0)
    dist.init_process_group(
        backend=backend, init_method=address, rank=comm.Get_rank(), world_size=comm.Get_size()
    )


def _set_cuda_device() -> None:
    if torch.cuda.is_available():
        torch.cuda.set_device(dev())


def _has_group() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return dist.get_rank() if _has_group() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if _has_group() else 1


def restart_count() -> int:
    """How many times torchrun's elastic agent has restarted this worker group (`--max-restarts`):
    0 on the first attempt and outside torchrun."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def local_rank() -> int:
    """Rank of this process on its machine; picks the GPU."""
    return _local_rank


def is_main_process() -> bool:
    """True on rank 0, the one rank that writes files and prints."""
    return rank() == 0


def print0(*args: Any, **kwargs: Any) -> None:
    """`print` on rank 0 only, so messages are not repeated once per rank."""
    if is_main_process():
        print(*args, **kwargs)


def dev() -> torch.device:
    """The device for this process: its local rank's GPU, or the CPU without CUDA."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{local_rank() % torch.cuda.device_count()}")
    return torch.device("cpu")


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if not _has_group():
        return
    if dist.get_backend() == "nccl":
        # Naming the device keeps NCCL from guessing (and warning about) which GPU to use.
        dist.barrier(device_ids=[dev().index])
    else:
        dist.barrier()


def cleanup() -> None:
    """Destroy the process group, if any; `setup_dist` may then be called again."""
    global _initialized, _local_rank
    if _has_group():
        dist.destroy_process_group()
    _initialized = False
    _local_rank = 0


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Return rank `src`'s picklable `obj` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Return every rank's picklable `obj`, indexed by rank."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def _read_bytes(path: str) -> bytearray:
    """Read the whole file in chunks (blobfile handles gs:// and az:// paths too)."""
    try:
        import blobfile

        opener = blobfile.BlobFile
    except ImportError:
        opener = open
    data = bytearray()
    with opener(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            data += chunk
    return data


def _comm_device() -> torch.device:
    # NCCL only moves CUDA tensors; gloo moves CPU tensors.
    return dev() if dist.get_backend() == "nccl" else torch.device("cpu")


def _broadcast_bytes(data: bytearray | None, size: int) -> bytearray:
    """Send rank 0's `data` (`size` bytes, known to all ranks) to every rank."""
    if data is None:
        data = bytearray(size)
    buffer = torch.frombuffer(data, dtype=torch.uint8)
    device = _comm_device()
    for start in range(0, size, _CHUNK_BYTES):
        piece = buffer[start : start + _CHUNK_BYTES]
        if device.type == "cpu":
            dist.broadcast(piece, src=0)
        else:
            staged = piece.to(device)
            dist.broadcast(staged, src=0)
            piece.copy_(staged.cpu())
    return data


def load_state_dict(path: str | os.PathLike[str], map_location: Any = "cpu", shared: bool = True, **kwargs: Any) -> Any:
    """Load a checkpoint that rank 0 alone reads, then broadcasts to the other ranks.

    Loads with `weights_only=True` unless the caller overrides it in `kwargs` (a `.safetensors`
    file with safetensors, to CPU tensors). Raises
    `CheckpointError` on every rank when the file is missing, unreadable or not a checkpoint.
    With `shared=False` this process reads the file itself and no other rank takes part (for
    work that one rank does alone, such as exporting).
    """
    path = str(path)
    shared = shared and world_size() > 1
    data: bytearray | None = None
    header: tuple[int, str | None] = (0, None)
    if rank() == 0 or not shared:
        try:
            data = _read_bytes(path)
            header = (len(data), None)
        except FileNotFoundError:
            released = os.path.basename(path) == "checkpoint.pt"
            header = (0, (
                f"checkpoint {path!r} not found; download the released checkpoint.pt into "
                "checkpoints/ (`python -m scripts.fetch_weights diff2lip` says from where) or pass the right --model_path"
                if released else f"checkpoint {path!r} not found; check the path"
            ))
        except Exception as exc:  # any read failure must reach the other ranks, not strand them
            header = (0, f"checkpoint {path!r} could not be read ({exc}); check the path and its permissions")
    if shared:
        # The error travels with the size so that every rank raises instead of waiting for bytes.
        header = broadcast_object(header)
    size, error = header
    if error is not None:
        raise CheckpointError(error)
    if shared and size > 0:
        data = _broadcast_bytes(data, size)
    if path.endswith(".safetensors"):
        return _load_safetensors(data or b"", path)
    kwargs.setdefault("weights_only", True)
    stream = io.BytesIO(data or b"")
    del data  # the stream holds a copy; don't keep a third one alive while tensors are built
    try:
        # Every rank holds identical bytes, so every rank fails (or succeeds) alike here.
        return torch.load(stream, map_location=map_location, **kwargs)
    except Exception as exc:
        reason = _short_reason(exc)
        if "Unsupported global" in reason:
            # A complete file that pickles more than tensors: downloading again won't help.
            raise CheckpointError(
                f"checkpoint {path!r} holds objects other than tensors ({reason}); re-save it as a "
                "plain state_dict, or pass weights_only=False if you trust its source"
            ) from exc
        raise CheckpointError(
            f"checkpoint {path!r} is truncated or not a PyTorch checkpoint ({reason}); download it again"
        ) from exc


def _short_reason(exc: Exception) -> str:
    """First sentence of the cause, e.g. 'RuntimeError: PytorchStreamReader failed ...'."""
    text = str(exc)
    # weights_only failures put the actual cause after a long generic preamble.
    _, marker, detail = text.partition("WeightsUnpickler error:")
    text = (detail if marker else text).strip()
    first = text.splitlines()[0].split(". ")[0][:120] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def sync_params(params: Iterable[torch.Tensor]) -> None:
    """Copy rank 0's values into `params` on every rank (no-op at world size 1)."""
    if world_size() == 1:
        return
    for p in params:
        with torch.no_grad():
            dist.broadcast(p, src=0)


def _load_safetensors(data: bytes, path: str) -> dict:
    from safetensors.torch import load  # only for .safetensors files

    try:
        return load(bytes(data))
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {path!r} is not a readable .safetensors file ({exc}); download it again") from exc
