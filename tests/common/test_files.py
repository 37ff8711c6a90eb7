"""common/files.py: a file appears whole under its final name or not at all."""

import json
import os

import pytest
import torch

from common.errors import DiskFullError
from common.files import (
    atomic_save,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    is_disk_full,
)
from helpers import small_disk


def test_writes_land_under_the_final_name_with_their_content(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "b.txt", "héllo")
    atomic_write_json(tmp_path / "c.json", {"x": [1, 2]})
    atomic_save({"w": torch.arange(3)}, str(tmp_path / "d.pt"))
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo"
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": [1, 2]}
    assert torch.equal(torch.load(tmp_path / "d.pt", weights_only=True)["w"], torch.arange(3))
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.txt", "c.json", "d.pt"]  # no temporary left


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"step": 1})

    def half_written(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write('{"step": ')
        raise OSError(28, "No space left on device")

    with pytest.raises(DiskFullError, match=f"no space left on the disk of '{tmp_path}' \\(writing 'state.json'\\)"):
        atomic_write(path, half_written)
    assert json.loads(path.read_text()) == {"step": 1}
    assert os.listdir(tmp_path) == ["state.json"]


def test_an_interrupt_during_the_write_also_cleans_up(tmp_path):
    def interrupted(tmp: str) -> None:
        open(tmp, "wb").close()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "x.bin", interrupted)
    assert os.listdir(tmp_path) == []


def test_the_temporary_is_hidden_and_in_the_same_folder(tmp_path):
    seen = []
    atomic_write(tmp_path / "out.txt", lambda tmp: (seen.append(tmp), open(tmp, "w").close()))
    folder, name = os.path.split(seen[0])
    assert folder == str(tmp_path) and name.startswith(".out.txt.") and name.endswith(".tmp")


def test_a_checkpoint_larger_than_the_free_space_is_one_error_and_the_previous_one_stays(tmp_path):
    """On a real 1 MiB tmpfs: torch.save of 2 MiB fails for lack of space. Saved to a path, torch
    would say only "unexpected pos"; ours names the folder, and the 4 KiB file before it is intact."""
    with small_disk(tmp_path / "disk", "1m") as (folder, preexec):
        if preexec is not None:
            pytest.skip("no tmpfs here; the full-disk tests of the commands cover the file-size limit")
        path = os.path.join(folder, "state.pt")
        atomic_save({"w": torch.arange(1000)}, path)
        with pytest.raises(DiskFullError, match=f"no space left on the disk of '{folder}'") as caught:
            atomic_save({"w": torch.zeros(512 * 1024)}, path)
        assert caught.value.__cause__ is None  # one line: the OSError is not chained into the message
        assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(1000))
        assert os.listdir(folder) == ["state.pt"]


def test_a_full_disk_is_recognised_through_a_library_s_wrapping_error():
    def wrapped():
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0")

    with pytest.raises(RuntimeError) as caught:
        wrapped()
    assert is_disk_full(caught.value)
    assert not is_disk_full(RuntimeError("other")) and not is_disk_full(OSError(2, "No such file"))
