"""Training samples: windows, references outside the window, mel windows, reproducibility."""

import numpy as np
import pytest
import torch

from audio.audio import frame_mel_start, syncnet_mel_start
from common.errors import Diff2LipError
from dataset.preprocessed import Clip
from dataset.tfg_dataset import StepSampler, TFGDataset, reference_indices, usable_starts
from helpers import make_preprocessed_root


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    make_preprocessed_root(root, n_clips=3, n_frames=16, image_size=32, val_clips=0)
    return root


def test_sample_shapes_values_and_mel_windows(root):
    ds = TFGDataset(str(root), "train", nframes=5)
    item = ds[(1, 1234)]
    assert item["frames"].shape == (5, 3, 32, 32) and item["refs"].shape == (5, 3, 32, 32)
    assert item["frames"].min() >= -1 and item["frames"].max() <= 1
    clip = ds.clips[1]
    s = int(item["start"])
    expected = clip.faces(range(s, s + 5)).astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(item["frames"].permute(0, 2, 3, 1).numpy(), expected, atol=1e-6)
    for j, k in enumerate(range(s, s + 5)):
        a = frame_mel_start(k)
        np.testing.assert_array_equal(item["mels"][j].numpy(), clip.mel[:, a : a + 16])
    a = syncnet_mel_start(s)
    np.testing.assert_array_equal(item["sync_mel"].numpy(), clip.mel[:, a : a + 16])


def test_reference_is_never_inside_the_window():
    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(6, 40))
        start = int(rng.integers(0, n - 4))
        refs = reference_indices(rng, n, start, 5)
        assert refs.shape == (5,)
        assert ((refs < start) | (refs >= start + 5)).all() and (refs >= 0).all() and (refs < n).all()


def test_samples_are_a_pure_function_of_their_key(root):
    ds = TFGDataset(str(root), "train", nframes=5)
    a, b, c = ds[(2, 99)], ds[(2, 99)], ds[(2, 100)]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    refs = a["ref_idx"].numpy()
    s = int(a["start"])
    assert ((refs < s) | (refs >= s + 5)).all()


def test_step_sampler_resumes_at_any_step():
    full = StepSampler(10, 4, seed=3, rank=0)
    it = iter(full)
    first = [next(it) for _ in range(6)]
    resumed = iter(StepSampler(10, 4, seed=3, rank=0, start_step=4))
    assert [next(resumed) for _ in range(2)] == first[4:]
    other_rank = next(iter(StepSampler(10, 4, seed=3, rank=1)))
    assert other_rank != first[0]


def test_short_clips_are_skipped_and_usable_starts_follow_audio(tmp_path):
    make_preprocessed_root(tmp_path, n_clips=2, n_frames=5, image_size=32, val_clips=0)
    with pytest.raises(Diff2LipError, match="has 6 frames"):
        TFGDataset(str(tmp_path), "train", nframes=5)
    clip = Clip(str(tmp_path), "id000/video/00001")
    assert usable_starts(clip, 5) == 0
    assert usable_starts(clip, 4) == 2


def test_broken_clip_is_replaced_by_the_next(root, caplog):
    ds = TFGDataset(str(root), "train", nframes=5)
    import os

    broken = ds.clips[0]
    os.rename(os.path.join(broken.folder, "00003.jpg"), os.path.join(broken.folder, "moved.jpg"))
    try:
        for seed in range(20):  # some draws need frame 3 of clip 0
            item = ds[(0, seed)]
            assert item["frames"].shape == (5, 3, 32, 32)
        assert "skipping broken sample" in caplog.text
    finally:
        os.rename(os.path.join(broken.folder, "moved.jpg"), os.path.join(broken.folder, "00003.jpg"))


def test_a_clip_without_its_mel_is_reported_and_left_out_and_samples_stay_deterministic(tmp_path, caplog):
    """A real root of 4 clips, one without mel.npy: the dataset holds the other 3 in order, says
    which one it left out, and draws the same samples twice."""
    import os

    names = make_preprocessed_root(tmp_path, n_clips=4, n_frames=16, image_size=32, val_clips=0)
    os.remove(os.path.join(Clip(str(tmp_path), names[1]).folder, "mel.npy"))
    ds = TFGDataset(str(tmp_path), "train", nframes=5)
    assert [clip.name for clip in ds.clips] == [names[0], names[2], names[3]] and ds.broken == 1
    assert f"skipping broken clip '{names[1]}'" in caplog.text
    again = TFGDataset(str(tmp_path), "train", nframes=5)
    for key in [(0, 5), (1, 6), (2, 7)]:
        assert torch.equal(ds[key]["frames"], again[key]["frames"]) and torch.equal(ds[key]["mels"], again[key]["mels"])


def test_a_broken_frame_is_replaced_by_the_next_clip_s_sample_deterministically(tmp_path, caplog):
    names = make_preprocessed_root(tmp_path, n_clips=3, n_frames=16, image_size=32, val_clips=0)
    ds = TFGDataset(str(tmp_path), "train", nframes=5)
    for i in range(16):  # every frame of clip 0 broken: any draw of it fails
        with open(f"{ds.clips[0].folder}/{i:05d}.jpg", "wb") as f:
            f.write(b"\xff\xd8 not a jpeg")
    item = ds[(0, 42)]
    expected = ds._sample(1, 42)
    assert torch.equal(item["frames"], expected["frames"]) and torch.equal(item["refs"], expected["refs"])
    assert f"skipping broken sample of clip {names[0]}" in caplog.text
