"""In-sync and off-sync (frames, mel, label) pairs of a preprocessed root: what a lip-sync expert
trains and is validated on (`python -m scripts.train_syncnet`, the demo's accuracy check)."""

from __future__ import annotations

import logging
import os
from typing import Iterator, List, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from audio.audio import syncnet_mel_window
from common.errors import Diff2LipError

from .shards import DataRoot, open_root

log = logging.getLogger(__name__)

#: Consecutive frames a lip-sync expert embeds (0.2 s at 25 fps).
SYNC_FRAMES = 5
#: Broken pairs in a row replaced before a run gives up.
MAX_RETRIES = 5
#: The validation pairs never change between runs, whatever --seed is, so accuracies compare.
VAL_SEED = 20240101


class SyncPairs(Dataset):
    """In-sync and off-sync (frames, mel, label) pairs of one split of a preprocessed root.

    Pair `i` is a pure function of `(seed, i)`, so a pair set is reproducible, DataLoader workers
    need no seeding, and a resumed run draws exactly the pairs the interrupted one would have.
    Clips too short for an off-sync pair (fewer than 5 + `min_offset` frames) are skipped.
    """

    def __init__(self, root: Union[str, DataRoot], split: str, num_pairs: int, seed: int, min_offset: int):
        self.source = open_root(root)  # frame folders or shards (dataset/shards.py)
        root = str(self.source)
        names = self.source.split(split)
        if not names:
            path = os.path.join(root, f"{split}.txt")
            raise Diff2LipError(f"'{path}' lists no clips; preprocess some videos into it")
        self.root, self.num_pairs, self.seed, self.min_offset = root, num_pairs, seed, min_offset
        # Names and lengths only: a Clip caches its mel, which must not pile up over a whole split.
        self.clips: List[Tuple[str, int]] = []
        sizes = set()
        for clip in self.source.open_clips(names):
            if clip.n_frames >= SYNC_FRAMES + min_offset:
                self.clips.append((clip.name, clip.n_frames))
                sizes.add(clip.image_size)
        self.skipped = len(names) - len(self.clips)
        if not self.clips:
            raise Diff2LipError(
                f"no clip of '{split}' in '{root}' has the {SYNC_FRAMES + min_offset} frames a pair needs "
                "(5 + --min_offset); preprocess longer videos or lower --min_offset"
            )
        if len(sizes) > 1:
            raise Diff2LipError(f"clips of '{split}' in '{root}' have different image sizes {sorted(sizes)}; "
                                "preprocess them all at one --image_size")

    def __len__(self) -> int:
        return self.num_pairs

    def pair(self, index: int) -> Tuple[str, int, int, int]:
        """(clip name, audio start frame, video start frame, label) of pair `index`."""
        rng = np.random.default_rng([self.seed, index])
        name, n_frames = self.clips[rng.integers(len(self.clips))]
        last = n_frames - SYNC_FRAMES  # the last start frame of a whole 5-frame window
        if rng.random() < 0.5:
            start = int(rng.integers(last + 1))
            return name, start, start, 1
        m = self.min_offset
        # Audio starts with a video window at least m frames away on one side or the other.
        starts = np.union1d(np.arange(0, last - m + 1), np.arange(m, last + 1))
        start = int(rng.choice(starts))
        others = np.concatenate([np.arange(0, start - m + 1), np.arange(start + m, last + 1)])
        return name, start, int(rng.choice(others)), 0

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """frames `[5, 3, S, S]` in [-1, 1] RGB, mel `[80, 16]`, label `[]` (1.0 in sync, 0.0 off)."""
        for attempt in range(MAX_RETRIES):
            # A broken pair (a face crop gone bad after the clip list was made) is reported and
            # replaced by pair index + k * num_pairs: drawn like any other, the same on every run.
            name, audio_start, video_start, label = self.pair(index + attempt * self.num_pairs)
            try:
                clip = self.source.clip(name)
                faces = clip.faces(range(video_start, video_start + SYNC_FRAMES))
                # Every frame of a clip has its mel window, so every 5-frame window has its SyncNet one.
                mel = torch.from_numpy(syncnet_mel_window(clip.mel, audio_start))
            except Diff2LipError as exc:
                log.warning("skipping broken pair of clip '%s': %s", name, exc)
                continue
            frames = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            return frames, mel, torch.tensor(float(label))
        raise Diff2LipError(f"{MAX_RETRIES} pairs in a row failed to load from '{self.root}'; check the data")


class SyncPairSampler(Sampler[int]):
    """The pair indices one rank loads for steps `start_step .. max_steps - 1`, `batch_size` per step.

    Not `tfg_dataset.StepSampler` (random clip keys per step, endless): pairs are already a pure
    function of their index, so a step takes consecutive indices. At step t rank r takes pairs
    (t * world + r) * batch_size + 0 .. batch_size - 1: the ranks never share a pair, and resuming
    at step t continues the same sequence.
    """

    def __init__(self, start_step: int, max_steps: int, batch_size: int, rank: int, world_size: int):
        self.start_step, self.max_steps = start_step, max_steps
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start_step, self.max_steps):
            first = (step * self.world_size + self.rank) * self.batch_size
            yield from range(first, first + self.batch_size)

    def __len__(self) -> int:
        return max(self.max_steps - self.start_step, 0) * self.batch_size
