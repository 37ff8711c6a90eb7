"""Worker launched by torchrun / mpiexec from test_dist_util.py and test_logger.py.

usage: dist_worker.py MODE OUT_DIR [CHECKPOINT...]
  load       setup_dist, load_state_dict(CHECKPOINT), collectives; writes OUT_DIR/rank{R}.json
  bad        load_state_dict must raise CheckpointError on every rank for each CHECKPOINT
             given (missing, truncated...); each rank writes the messages to
             OUT_DIR/rank{R}.json, meets the others at a barrier (proof that none hangs),
             and exits with status 3, as an entry point would
  logger     logger.dumpkvs averaging over ranks into OUT_DIR/logs; writes OUT_DIR/rank{R}.json
"""

import hashlib
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from common.errors import CheckpointError
from guided_diffusion import dist_util, logger


def _digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def _common() -> dict:
    return {
        "rank": dist_util.rank(),
        "world_size": dist_util.world_size(),
        "local_rank": dist_util.local_rank(),
        "is_main": dist_util.is_main_process(),
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "device": str(dist_util.dev()),
    }


def run_load(checkpoint: str) -> dict:
    # Small chunks so that the broadcast of the test checkpoint takes many pieces.
    dist_util._CHUNK_BYTES = 1 << 16
    # Count file reads: only rank 0 may touch the file.
    reads = []
    read_bytes = dist_util._read_bytes
    dist_util._read_bytes = lambda path: reads.append(path) or read_bytes(path)

    state = dist_util.load_state_dict(checkpoint)
    params = [torch.full((4,), float(dist_util.rank())), torch.arange(3) * (dist_util.rank() + 1)]
    dist_util.sync_params(params)
    dist_util.barrier()
    return {
        **_common(),
        "reads": len(reads),
        "digests": {key: _digest(val) for key, val in state.items()},
        "dtypes": {key: str(val.dtype) for key, val in state.items()},
        "gathered_ranks": dist_util.all_gather_object(dist_util.rank()),
        "broadcast": dist_util.broadcast_object(f"from rank {dist_util.rank()}"),
        "synced": [p.tolist() for p in params],
    }


def run_bad(checkpoints: list[str], out_dir: Path) -> None:
    errors = []
    for checkpoint in checkpoints:
        try:
            dist_util.load_state_dict(checkpoint)
        except CheckpointError as exc:
            errors.append(str(exc))
            dist_util.barrier()
        else:
            raise AssertionError(f"load_state_dict accepted the bad checkpoint {checkpoint!r}")
    (out_dir / f"rank{dist_util.rank()}.json").write_text(json.dumps({**_common(), "errors": errors}))
    print(f"rank {dist_util.rank()}: CheckpointError: {errors[-1]}", file=sys.stderr)
    dist_util.cleanup()
    sys.exit(3)


def run_logger(out_dir: Path) -> dict:
    logger.configure(dir=out_dir / "logs", format_strs=("stdout", "csv"))
    # Rank 0 logs two values, rank 1 one: the mean must be weighted by count, (1+3+5)/3 = 3.
    for val in ([1.0, 3.0] if dist_util.rank() == 0 else [5.0]):
        logger.logkv_mean("loss", val)
    if dist_util.rank() == 1:
        logger.logkv_mean("only_rank1", 7.0)
    logger.logkv("step", 10 + dist_util.rank())
    dumped = logger.dumpkvs()
    outputs = len(logger.get_current().outputs)
    logger.close()
    return {**_common(), "dumped": dumped, "outputs": outputs}


def main() -> None:
    mode, out_dir = sys.argv[1], Path(sys.argv[2])
    dist_util.setup_dist()
    if mode == "load":
        result = run_load(sys.argv[3])
    elif mode == "bad":
        run_bad(sys.argv[3:], out_dir)
    elif mode == "logger":
        result = run_logger(out_dir)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    (out_dir / f"rank{dist_util.rank()}.json").write_text(json.dumps(result))
    dist_util.cleanup()


if __name__ == "__main__":
    main()
