"""Training samples for Diff2Lip: sequences of `nframes` consecutive face crops with references
and mel windows, from a preprocessed root (`dataset/preprocessed.py`).

Every sample is a pure function of `(clip index, seed)`, so a run that is stopped and resumed
draws exactly the batches it would have drawn (see `StepSampler`).
"""

import logging
from typing import Dict, Iterator, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from audio.audio import frame_mel_start, num_syncnet_windows, syncnet_mel_start
from audio.hparams import hparams
from common.errors import Diff2LipError

from .preprocessed import Clip
from .shards import DataRoot, open_root

log = logging.getLogger(__name__)

MEL_STEPS = hparams.mel_step_size


def usable_starts(clip: Clip, nframes: int) -> int:
    """How many start frames s give a full sample: s + nframes <= n_frames, a reference frame
    outside the window exists, and the SyncNet window of s fits in the mel."""
    if clip.n_frames < nframes + 1:
        return 0
    return min(clip.n_frames - nframes + 1, num_syncnet_windows(clip.mel_steps))


def reference_indices(rng: np.random.Generator, n_frames: int, start: int, nframes: int) -> np.ndarray:
    """One random reference per frame of the window, drawn from the clip outside `[start, start+nframes)`.

    The paper stresses that the reference must never be the frame itself (it would leak the
    answer); excluding the whole window also keeps neighbouring, near-identical frames out.
    """
    outside = np.concatenate([np.arange(0, start), np.arange(start + nframes, n_frames)])
    return rng.choice(outside, size=nframes, replace=True)


class TFGDataset(Dataset):
    """Sequences for the TFG model.

    An item is requested as `(clip_index, seed)` (what `StepSampler` yields) and returns:
    `frames` `[F, 3, S, S]` and `refs` `[F, 3, S, S]` in [-1, 1] (RGB), `mels` `[F, 80, 16]`
    (the released per-frame windows), `sync_mel` `[80, 16]` (the SyncNet window of the first
    frame), `start` and `ref_idx` (for tests and logs).
    """

    def __init__(self, root: Union[str, DataRoot], split: str = "train", nframes: int = 5, augment: bool = False,
                 max_retries: int = 5):
        # Frame folders or shards (dataset/shards.py): the same clips in the same order either way.
        self.source = open_root(root)
        self.root = str(self.source)
        self.nframes = nframes
        self.augment = augment
        self.max_retries = max_retries
        self.clips: List[Clip] = []
        self.starts: List[int] = []
        names = self.source.split(split)
        skipped = 0
        for clip in self.source.open_clips(names):
            n = usable_starts(clip, nframes)
            if n == 0:
                skipped += 1
                continue
            self.clips.append(clip)
            self.starts.append(n)
        self.broken = len(names) - len(self.clips) - skipped
        if not self.clips:
            raise Diff2LipError(
                f"no clip of '{root}' split '{split}' has {nframes + 1} frames with audio ({self.broken} of "
                f"{len(names)} broken, reported above); preprocess longer clips or preprocess the broken ones again"
            )
        self.skipped = skipped

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: Tuple[int, int]) -> Dict[str, torch.Tensor]:
        index, seed = key
        for attempt in range(self.max_retries):
            clip_index = (index + attempt) % len(self.clips)
            try:
                return self._sample(clip_index, seed)
            except (Diff2LipError, OSError, ValueError) as exc:
                # A broken clip is reported and replaced by the next one, not fatal.
                log.warning("skipping broken sample of clip %s: %s", self.clips[clip_index].name, exc)
        raise Diff2LipError(f"{self.max_retries} clips in a row failed to load from '{self.root}'; check the data")

    def _sample(self, clip_index: int, seed: int) -> Dict[str, torch.Tensor]:
        clip = self.clips[clip_index]
        rng = np.random.default_rng([seed, clip_index])
        start = int(rng.integers(self.starts[clip_index]))
        window = np.arange(start, start + self.nframes)
        ref_idx = reference_indices(rng, clip.n_frames, start, self.nframes)
        faces = clip.faces(np.concatenate([window, ref_idx]))
        if self.augment:
            faces = _augment(faces, rng)
        images = torch.from_numpy(faces).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        mel = clip.mel
        mels = np.stack([mel[:, frame_mel_start(k) : frame_mel_start(k) + MEL_STEPS] for k in window])
        sync_start = syncnet_mel_start(start)
        return {
            "frames": images[: self.nframes],
            "refs": images[self.nframes :],
            "mels": torch.from_numpy(np.ascontiguousarray(mels, dtype=np.float32)),
            "sync_mel": torch.from_numpy(np.ascontiguousarray(mel[:, sync_start : sync_start + MEL_STEPS], dtype=np.float32)),
            "start": torch.tensor(start),
            "ref_idx": torch.from_numpy(ref_idx),
        }


def _augment(faces: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mild, identical for every image of the sample: brightness/contrast jitter and a mirror."""
    out = faces.astype(np.float32)
    out = (out - 127.5) * rng.uniform(0.9, 1.1) + 127.5 + rng.uniform(-10, 10)
    if rng.random() < 0.5:
        out = out[:, :, ::-1]
    return np.clip(out, 0, 255).astype(np.uint8)


class StepSampler(Sampler):
    """Yields `batch_size` keys `(clip_index, seed)` per step, each a pure function of
    `(seed, step, rank, slot)`: resuming at step N reproduces steps N, N+1, ... exactly, and
    every rank draws its own samples. Endless (train.py's loop decides when to stop); the SyncNet
    pairs, already indexed, have their own `dataset.sync_pairs.SyncPairSampler`."""

    def __init__(self, num_clips: int, batch_size: int, seed: int, rank: int = 0, start_step: int = 0):
        self.num_clips = num_clips
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.start_step = start_step

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        step = self.start_step
        while True:
            rng = np.random.default_rng([self.seed, step, self.rank])
            clips = rng.integers(self.num_clips, size=self.batch_size)
            seeds = rng.integers(2**31, size=self.batch_size)
            yield [(int(c), int(s)) for c, s in zip(clips, seeds)]
            step += 1


def collate(items: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}
