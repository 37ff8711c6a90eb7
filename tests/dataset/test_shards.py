"""dataset/shards.py: real WebDataset tar shards written from a real preprocessed root, read back
by clip (locally and from a real HTTP server on 127.0.0.1), converted both ways byte for byte."""

import hashlib
import json
import os

import numpy as np
import pytest
import torch
import webdataset

from common.errors import Diff2LipError
from dataset import shards
from dataset.preprocessed import Clip, read_split
from dataset.sync_pairs import SyncPairs
from dataset.tfg_dataset import TFGDataset
from helpers import make_preprocessed_root, serve_folder


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    make_preprocessed_root(root, n_clips=5, n_frames=14, image_size=32, val_clips=1)
    return root


@pytest.fixture(scope="module")
def shard_root(folder_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "root"
    # About 90 kB a clip: 0.2 MB shards hold two clips each, the last one.
    assert shards.main(["convert", "--input", str(folder_root), "--output", str(out), "--shard_size_mb", "0.2"]) == 0
    return out


def folder_files(root) -> dict:
    """{relative path: bytes} of every file under root/clips."""
    base = os.path.join(root, "clips")
    out = {}
    for folder, _, files in os.walk(base):
        for f in files:
            with open(os.path.join(folder, f), "rb") as fh:
                out[os.path.relpath(os.path.join(folder, f), base)] = fh.read()
    return out


def test_manifest_lists_every_shard_with_its_clips_frames_bytes_and_sha256(folder_root, shard_root):
    manifest = json.loads((shard_root / "manifest.json").read_text())
    names = read_split(str(folder_root), "train") + read_split(str(folder_root), "val")
    assert [len(s["clips"]) for s in manifest["shards"]] == [2, 2, 1]
    assert sorted(c["name"] for s in manifest["shards"] for c in s["clips"]) == sorted(names)
    for shard in manifest["shards"]:
        data = (shard_root / shard["path"]).read_bytes()
        assert shard["bytes"] == len(data) and shard["sha256"] == hashlib.sha256(data).hexdigest()
        assert shard["frames"] == sum(c["frames"] for c in shard["clips"]) == 14 * len(shard["clips"])
    assert manifest["clips"] == 5 and manifest["frames"] == 70
    assert manifest["bytes"] == sum(s["bytes"] for s in manifest["shards"])
    # the splits and the files beside them are the folder root's
    for split in ("train", "val"):
        assert (shard_root / f"{split}.txt").read_text() == (folder_root / f"{split}.txt").read_text()


def test_shards_are_webdataset_samples_of_whole_clips(folder_root, shard_root):
    """The library reads them as samples: one per clip, the folder's files byte for byte."""
    manifest = json.loads((shard_root / "manifest.json").read_text())
    urls = [str(shard_root / s["path"]) for s in manifest["shards"]]
    samples = list(webdataset.WebDataset(urls, shardshuffle=False))
    assert [shards.key_clip(s["__key__"]) for s in samples] == sorted(c["name"] for s in manifest["shards"] for c in s["clips"])
    for sample in samples:
        clip = Clip(str(folder_root), shards.key_clip(sample["__key__"]))
        assert set(sample) - {"__key__", "__url__", "__local_path__"} == set(shards.MEMBERS)
        with open(os.path.join(clip.folder, "mel.npy"), "rb") as f:
            assert sample["mel.npy"] == f.read()
        offsets = np.frombuffer(sample["frames.idx"], dtype="<u8")
        assert len(offsets) == clip.n_frames + 1
        with open(os.path.join(clip.folder, "00003.jpg"), "rb") as f:
            assert sample["frames.jpgs"][offsets[3]:offsets[4]] == f.read()


def test_convert_back_gives_the_same_files(folder_root, shard_root, tmp_path):
    back = tmp_path / "back"
    assert shards.main(["convert", "--input", str(shard_root), "--output", str(back)]) == 0
    assert folder_files(back) == folder_files(folder_root)
    for split in ("train", "val"):
        assert (back / f"{split}.txt").read_text() == (folder_root / f"{split}.txt").read_text()
    manifest = json.loads((back / "manifest.json").read_text())
    assert manifest["format"] == "folders" and manifest["frames"] == 70
    assert manifest["bytes"] == sum(len(v) for v in folder_files(folder_root).values())


def test_clips_read_from_shards_equal_the_folders(folder_root, shard_root):
    source = shards.open_root(str(shard_root))
    assert isinstance(source, shards.ShardRoot) and isinstance(shards.open_root(str(folder_root)), shards.FolderRoot)
    for name in read_split(str(folder_root), "train"):
        a, b = Clip(str(folder_root), name), source.clip(name)
        assert (a.n_frames, a.image_size, a.mel_steps, a.meta) == (b.n_frames, b.image_size, b.mel_steps, b.meta)
        idx = [13, 0, 7, 7]
        assert np.array_equal(a.faces(idx), b.faces(idx)) and np.array_equal(a.mel, b.mel)


def test_training_samples_and_pairs_from_shards_equal_the_folders(folder_root, shard_root):
    a, b = TFGDataset(str(folder_root), "train", 5), TFGDataset(str(shard_root), "train", 5)
    assert len(a) == len(b) == 4
    for key in [(0, 1), (3, 99), (2, 5)]:
        x, y = a[key], b[key]
        assert all(torch.equal(x[k], y[k]) for k in x)
    p, q = SyncPairs(str(folder_root), "train", 8, seed=3, min_offset=2), SyncPairs(str(shard_root), "train", 8, 3, 2)
    for i in range(8):
        assert all(torch.equal(u, v) for u, v in zip(p[i], q[i]))


def test_shards_over_http_equal_local_and_are_checked_by_sha256(shard_root, tmp_path):
    local = shards.open_root(str(shard_root))
    with serve_folder(shard_root) as url:
        remote = shards.open_root(url, cache_dir=str(tmp_path / "cache"))
        assert remote.split("train") == local.split("train")
        name = local.split("train")[2]
        assert np.array_equal(remote.clip(name).faces([0, 5]), local.clip(name).faces([0, 5]))
        shard = local.entries[name][0]
        # fetched once, whole, under its SHA-256
        assert os.listdir(tmp_path / "cache") == [f"{shard['sha256']}.tar"]
        assert (tmp_path / "cache" / f"{shard['sha256']}.tar").read_bytes() == (shard_root / shard["path"]).read_bytes()

        # a shard replaced on the server without its manifest is refused in one line
        path = shard_root / shard["path"]
        good = path.read_bytes()
        try:
            path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
            fresh = shards.open_root(url, cache_dir=str(tmp_path / "cache2"))
            with pytest.raises(Diff2LipError, match="has SHA-256 .* the manifest says"):
                fresh.clip(name).faces([0])
        finally:
            path.write_bytes(good)
        with pytest.raises(Diff2LipError, match="cannot read manifest"):
            shards.open_root(url + "/nothing_here")


def test_shard_size_and_the_writer_commit(tmp_path, folder_root):
    """Whole clips: a clip bigger than the size gets a shard of its own; a stopped writer leaves no file."""
    names = read_split(str(folder_root), "train")
    sample = shards.folder_sample(Clip(str(folder_root), names[0]).folder, 14)
    with shards.ShardWriter(str(tmp_path), "x", max_bytes=10) as writer:
        writer.add(names[0], sample)
        writer.add(names[1], sample)
    assert [len(r["clips"]) for r in writer.records] == [1, 1]
    assert sorted(os.listdir(tmp_path / "shards")) == ["x-000000.tar", "x-000000.tar.json", "x-000001.tar",
                                                       "x-000001.tar.json"]
    with pytest.raises(RuntimeError):
        with shards.ShardWriter(str(tmp_path / "stopped"), "y", max_bytes=1e9) as writer:
            writer.add(names[0], sample)
            raise RuntimeError("stop")
    assert os.listdir(tmp_path / "stopped" / "shards") == []


def test_convert_errors_are_one_line(tmp_path, capsys):
    assert shards.main(["convert", "--input", str(tmp_path / "none"), "--output", str(tmp_path / "o")]) == 1
    assert shards.main(["nothing"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not a folder" in err[0] and "usage: python -m dataset.shards convert" in err[1]
