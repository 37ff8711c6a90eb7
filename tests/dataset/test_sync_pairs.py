"""dataset/sync_pairs.py: the lip-sync expert's in-sync and off-sync pairs and their sampler."""

import numpy as np
import pytest
import torch

from audio.audio import syncnet_mel_window
from dataset.preprocessed import Clip
from dataset.sync_pairs import SyncPairs, SyncPairSampler
from helpers import SYNC_ROOT_FRAMES as N_FRAMES
from helpers import make_sync_root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_sync_root(tmp_path_factory.mktemp("preprocessed"))


def test_pairs_follow_the_sync_rules(data_root):
    pairs = SyncPairs(str(data_root), "train", 200, seed=3, min_offset=5)
    assert [name for name, _ in pairs.clips] == ["id0/vid/00001", "id1/vid/00001", "id2/vid/00001"]
    assert pairs.skipped == 1  # the 9-frame clip cannot give an off-sync pair 5 frames away
    drawn = [pairs.pair(i) for i in range(200)]
    assert drawn == [pairs.pair(i) for i in range(200)]  # a pure function of (seed, index)
    labels = np.array([label for *_, label in drawn])
    assert 0.35 < labels.mean() < 0.65
    for name, audio_start, video_start, label in drawn:
        assert 0 <= audio_start <= N_FRAMES - 5 and 0 <= video_start <= N_FRAMES - 5
        if label:
            assert video_start == audio_start
        else:
            assert abs(video_start - audio_start) >= 5
    offsets = {abs(v - a) for _, a, v, label in drawn if not label}
    assert min(offsets) == 5 and max(offsets) > 20  # the whole range of offsets is used
    other = SyncPairs(str(data_root), "train", 200, seed=4, min_offset=5)
    assert [other.pair(i) for i in range(200)] != drawn


def test_pair_tensors_are_the_clips_frames_and_mel_window(data_root):
    pairs = SyncPairs(str(data_root), "train", 50, seed=0, min_offset=5)
    index = next(i for i in range(50) if pairs.pair(i)[3] == 0)
    name, audio_start, video_start, _ = pairs.pair(index)
    frames, mel, label = pairs[index]
    clip = Clip(str(data_root), name)
    faces = clip.faces(range(video_start, video_start + 5))
    assert frames.shape == (5, 3, 128, 128) and frames.dtype == torch.float32
    torch.testing.assert_close(frames, torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 127.5 - 1)
    np.testing.assert_array_equal(mel.numpy(), syncnet_mel_window(clip.mel, audio_start))
    assert label.item() == 0.0


def test_step_sampler_shards_steps_over_ranks_and_resumes():
    def indices(start, rank):
        return list(SyncPairSampler(start, 4, 3, rank, 2))

    rank0, rank1 = indices(0, 0), indices(0, 1)
    assert len(rank0) == len(SyncPairSampler(0, 4, 3, 0, 2)) == 12
    assert sorted(rank0 + rank1) == list(range(24))  # disjoint, nothing skipped
    assert rank0[:3] == [0, 1, 2] and rank1[:3] == [3, 4, 5]
    assert indices(2, 0) == rank0[6:] and indices(2, 1) == rank1[6:]  # resuming at step 2




def test_a_broken_pair_is_replaced_by_a_later_drawn_pair_the_same_on_every_run(tmp_path, caplog):
    """Pair 0's clip loses its crops: pair 0 becomes pair 0 + k * num_pairs for the first k of another clip."""
    import os
    import shutil

    root = make_sync_root(tmp_path / "root")
    pairs = SyncPairs(str(root), "train", 50, seed=3, min_offset=5)
    name = pairs.pair(0)[0]
    index = next(k for k in range(1, 20) if pairs.pair(k * 50)[0] != name)  # the first of another clip
    assert index < 5  # within the replacements tried
    good = SyncPairs(str(root), "train", 50 * (index + 1), seed=3, min_offset=5)[index * 50]
    folder = Clip(str(root), name).folder
    for f in os.listdir(folder):
        if f.endswith(".jpg"):
            os.remove(os.path.join(folder, f))
    frames, mel, label = pairs[0]
    assert torch.equal(frames, good[0]) and torch.equal(mel, good[1]) and torch.equal(label, good[2])
    assert f"skipping broken pair of clip '{name}'" in caplog.text
    shutil.rmtree(root)
