"""dist_util: one plain process in-process, and real 2-process runs under torchrun and mpiexec."""

import argparse
import hashlib
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from common.errors import CheckpointError
from guided_diffusion import dist_util
from launchers import LAUNCHER_VARS, mpiexec, torchrun

# Loaded by path: test folders are not packages (importlib import mode).
_spec = importlib.util.spec_from_file_location("dist_worker_launch", Path(__file__).with_name("dist_worker_launch.py"))
launcher = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launcher)


def _digest(tensor: torch.Tensor) -> str:
    # Same digest as dist_worker.py: equal digests mean bit-identical tensors.
    return hashlib.sha256(tensor.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    state = {
        "conv.weight": torch.randn(64, 32, 3, 3, generator=generator),  # ~300 KB: many 64 KB chunks
        "conv.bias": torch.randn(64, generator=generator).half(),
        "steps": torch.randint(0, 1000, (7,), generator=generator),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
    }
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save(state, path)
    return path, state


@pytest.fixture
def plain_process(monkeypatch):
    """A process started without any launcher, with fresh dist_util state."""
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    dist_util.cleanup()
    yield
    dist_util.cleanup()


def _truncated_copy(path: Path, out: Path) -> Path:
    data = path.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


# --- one plain process ------------------------------------------------------------------------


def test_single_process_helpers(plain_process, capsys):
    mpi_loaded_before = "mpi4py" in sys.modules
    dist_util.setup_dist()
    dist_util.setup_dist()  # idempotent
    assert not dist.is_initialized()
    assert (dist_util.rank(), dist_util.world_size(), dist_util.local_rank()) == (0, 1, 0)
    assert dist_util.is_main_process()
    expected = torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    assert dist_util.dev() == expected
    assert dist_util.broadcast_object({"a": 1}) == {"a": 1}
    assert dist_util.all_gather_object("x") == ["x"]
    dist_util.barrier()
    param = torch.arange(4.0)
    dist_util.sync_params([param])
    assert param.tolist() == [0.0, 1.0, 2.0, 3.0]
    dist_util.print0("hello from rank 0")
    assert capsys.readouterr().out == "hello from rank 0\n"
    if not mpi_loaded_before:
        assert "mpi4py" not in sys.modules, "a plain process must not initialise MPI"


def test_load_state_dict_round_trip(plain_process, checkpoint):
    path, state = checkpoint
    loaded = dist_util.load_state_dict(path)  # a Path works as well as a str
    assert loaded.keys() == state.keys()
    for key, tensor in state.items():
        assert loaded[key].dtype == tensor.dtype
        assert loaded[key].device == torch.device("cpu")
        assert torch.equal(loaded[key], tensor)


def test_load_state_dict_without_blobfile(plain_process, checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "blobfile", None)  # makes `import blobfile` fail
    path, state = checkpoint
    assert torch.equal(dist_util.load_state_dict(str(path))["conv.weight"], state["conv.weight"])


def test_missing_checkpoint(plain_process, tmp_path):
    path = tmp_path / "nope" / "checkpoint.pt"
    with pytest.raises(CheckpointError, match="not found") as info:
        dist_util.load_state_dict(path)
    assert str(path) in str(info.value)
    assert "--model_path" in str(info.value)


def test_truncated_checkpoint(plain_process, checkpoint, tmp_path):
    path = _truncated_copy(checkpoint[0], tmp_path / "half.pt")
    with pytest.raises(CheckpointError, match="truncated") as info:
        dist_util.load_state_dict(path)
    assert str(path) in str(info.value)
    assert "download it again" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content", [b"", b"<html>404 Not Found</html>"], ids=["empty", "html"])
def test_not_a_checkpoint(plain_process, tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as info:
        dist_util.load_state_dict(path)
    assert str(path) in str(info.value)


def test_checkpoint_with_pickled_objects(plain_process, tmp_path):
    path = tmp_path / "with_args.pt"
    torch.save({"args": argparse.Namespace(lr=1e-4), "w": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="objects other than tensors") as info:
        dist_util.load_state_dict(path)
    assert str(path) in str(info.value)
    # The caller may opt out for a file it trusts.
    assert dist_util.load_state_dict(path, weights_only=False)["args"].lr == 1e-4


# --- two real processes ------------------------------------------------------------------------


def _check_two_rank_load(results: dict[int, dict], state: dict[str, torch.Tensor]) -> None:
    assert sorted(results) == [0, 1]
    for rank, result in results.items():
        assert result["world_size"] == 2
        assert result["local_rank"] == rank  # one machine: local rank = global rank
        assert result["is_main"] == (rank == 0)
        assert result["backend"] == "gloo"
        assert result["device"] == "cpu"
        assert result["digests"] == {key: _digest(val) for key, val in state.items()}
        assert result["dtypes"] == {key: str(val.dtype) for key, val in state.items()}
        assert result["gathered_ranks"] == [0, 1]
        assert result["broadcast"] == "from rank 0"
        assert result["synced"] == [[0.0] * 4, [0, 1, 2]]  # rank 1's params now equal rank 0's
    # Only rank 0 read the file; rank 1 got the bytes over the process group.
    assert results[0]["reads"] == 1
    assert results[1]["reads"] == 0


def test_torchrun_two_processes(checkpoint, tmp_path):
    path, state = checkpoint
    code, output, results = launcher.launch(torchrun(2), "load", tmp_path, path)
    assert code == 0, output
    _check_two_rank_load(results, state)


def test_mpiexec_two_processes(checkpoint, tmp_path):
    path, state = checkpoint
    code, output, results = launcher.launch(mpiexec(2), "load", tmp_path, path)
    assert code == 0, output
    _check_two_rank_load(results, state)


def test_torchrun_bad_checkpoint_fails_on_every_rank(checkpoint, tmp_path):
    truncated = _truncated_copy(checkpoint[0], tmp_path / "half.pt")
    missing = tmp_path / "missing.pt"
    code, output, results = launcher.launch(torchrun(2), "bad", tmp_path, truncated, missing)
    assert code != 0, output  # torchrun reports the workers' exit status 3 as a failure
    assert sorted(results) == [0, 1], output
    for result in results.values():
        truncated_error, missing_error = result["errors"]
        assert str(truncated) in truncated_error and "truncated" in truncated_error
        assert str(missing) in missing_error and "not found" in missing_error
    assert results[0]["errors"] == results[1]["errors"]
    assert "rank 0: CheckpointError" in output and "rank 1: CheckpointError" in output
