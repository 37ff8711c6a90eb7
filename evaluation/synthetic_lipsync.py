"""Lip-sync and reconstruction scores on the synthetic talking heads of `dataset/synthetic.py`.

The numbers of `demo.py`, of the ablation (`python -m scripts.demo_train --ablation True`) and of the end-to-end test:

- `cross_scores`: for each generated clip of a cross filelist, the lip-sync score (Pearson
  correlation of the mouth opening measured in its pixels with the opening its driving audio
  implies, `dataset/lipmeter.py`), and two controls read from the same measurements: the same clip
  against the next pair's audio (the lips a wrong audio would have to explain), and the unedited
  video source against the driving audio (what no lip-sync scores).
- `reconstruction_scores`: PSNR / SSIM of clips regenerated from their own audio against the
  originals, over whole frames as `evaluate.py` computes them.
- `mouth_scores`: the same regenerated clips in the lip meter's mouth region only: PSNR, and the
  mouth's sharpness, its high-frequency energy (mean squared Laplacian of the luma) over the real
  mouth's: 1 as detailed as the real frames, below 1 blurred (an upscaled crop), above 1 noisier.
  `all_reconstruction_scores` gives both from one decoding of the clips.
- `sheet`: a PNG of evenly spaced frames, one row per frame (labelled with its index and time):
  video source | generated | the audio source's real frame (whose mouth the generated one should
  copy), under column labels.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

from audio.audio import load_wav
from dataset.lipmeter import implied_opening_from_audio, measure_video, mouth_region, pearson
from dataset.video_io import iter_frames
from evaluation.image_metrics import psnr_batch, ssim_batch
from evaluation.sheets import labelled_sheet, write_png
from inference.filelist import output_name, resolve_media

Pair = Tuple[str, str]  # (audio clip, video clip) as in the filelists: names under the data root


@dataclasses.dataclass
class CrossScores:
    """Per-pair scores (in filelist order) and their means."""

    pairs: List[Pair]
    lip_sync: List[float]  # generated clip vs its driving audio
    wrong_audio: List[float]  # generated clip vs the next pair's audio (control)
    source: List[float]  # the unedited video source vs the driving audio (control)

    @property
    def mean(self) -> Dict[str, float]:
        return {name: float(np.mean(getattr(self, name))) for name in ("lip_sync", "wrong_audio", "source")}


def read_pairs(path: str) -> List[Pair]:
    """The "AUDIO VIDEO" lines of a filelist."""
    with open(path, encoding="utf-8") as f:
        pairs = [tuple(line.split()) for line in f if line.strip()]
    bad = [p for p in pairs if len(p) != 2]
    if bad:
        raise ValueError(f"{path}: expected 'AUDIO VIDEO' lines, got {' '.join(bad[0])!r}")
    return pairs  # type: ignore[return-value]


def generated_path(sample_dir: str, pair: Pair) -> str:
    """Where generate.py (filelist mode) wrote the clip of `pair`."""
    return os.path.join(sample_dir, output_name(*pair))


def _implied(data_root: str, clip: str, n_frames: int) -> np.ndarray:
    return implied_opening_from_audio(load_wav(resolve_media(data_root, clip)), n_frames)


def _score(measured: np.ndarray, implied: np.ndarray) -> float:
    n = min(measured.size, implied.size)
    return pearson(measured[:n], implied[:n])


def cross_scores(sample_dir: str, data_root: str, pairs: Sequence[Pair]) -> CrossScores:
    """Score every generated clip of `pairs` (see the module docstring). Needs two or more pairs
    with different audio for the wrong-audio control."""
    if len(pairs) < 2:
        raise ValueError("the wrong-audio control needs at least two pairs")
    measured = [measure_video(generated_path(sample_dir, p))[0] for p in pairs]
    implied = [_implied(data_root, audio, m.size) for (audio, _), m in zip(pairs, measured)]
    source = [measure_video(resolve_media(data_root, video))[0] for _, video in pairs]
    n = len(pairs)
    return CrossScores(
        pairs=list(pairs),
        lip_sync=[_score(measured[k], implied[k]) for k in range(n)],
        wrong_audio=[_score(measured[k], implied[(k + 1) % n]) for k in range(n)],
        source=[_score(source[k], implied[k]) for k in range(n)],
    )


def _regenerated(sample_dir: str, data_root: str, pairs: Sequence[Pair]):
    """Per pair, its regenerated clip and the original's frames as long: uint8 [N, H, W, 3] twice."""
    for pair in pairs:
        generated = np.stack(list(iter_frames(generated_path(sample_dir, pair))))
        yield generated, np.stack(list(iter_frames(resolve_media(data_root, pair[1]), stop=len(generated))))


def reconstruction_scores(sample_dir: str, data_root: str, pairs: Sequence[Pair]) -> Tuple[float, float]:
    """Mean PSNR (dB) and SSIM over all frames of the regenerated clips against their originals."""
    scores = all_reconstruction_scores(sample_dir, data_root, pairs, mouth=False)
    return scores["psnr"], scores["ssim"]


def high_frequency_energy(rgb: np.ndarray) -> float:
    """Mean squared 4-neighbour Laplacian of the BT.601 luma of uint8 RGB frames [N, H, W, 3]: the
    energy of their finest detail (borders reflected)."""
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return float(np.mean([np.square(cv2.Laplacian(frame, cv2.CV_32F, ksize=1)).mean() for frame in luma]))


def mouth_scores(sample_dir: str, data_root: str, pairs: Sequence[Pair]) -> Tuple[float, float]:
    """(PSNR in dB, sharpness) of the regenerated clips' mouth region against the originals' (see
    the module docstring): the PSNR of all mouth pixels together, the sharpness the ratio of the
    two high-frequency energies summed over the clips."""
    scores = all_reconstruction_scores(sample_dir, data_root, pairs, whole=False)
    return scores["mouth_psnr"], scores["mouth_sharpness"]


def all_reconstruction_scores(sample_dir: str, data_root: str, pairs: Sequence[Pair], whole: bool = True,
                              mouth: bool = True) -> Dict[str, float]:
    """`reconstruction_scores` ("psnr", "ssim") and `mouth_scores` ("mouth_psnr", "mouth_sharpness")
    from one decoding of the clips; `whole` / `mouth` False leave those out."""
    psnrs, ssims = [], []
    squared_error, pixels, energy, real_energy = 0.0, 0, 0.0, 0.0
    for generated, original in _regenerated(sample_dir, data_root, pairs):
        if whole:
            psnrs.append(psnr_batch(generated, original).numpy())
            ssims.append(ssim_batch(generated, original).numpy())
        if mouth:
            rows, cols = mouth_region(*original.shape[1:3])
            gen_mouth, real_mouth = generated[:, rows, cols], original[:, rows, cols]
            squared_error += float(np.square(gen_mouth.astype(np.float64) - real_mouth).sum())
            pixels += gen_mouth.size
            energy += high_frequency_energy(gen_mouth) * len(gen_mouth)
            real_energy += high_frequency_energy(real_mouth) * len(real_mouth)
    scores = {}
    if whole:
        scores.update(psnr=float(np.concatenate(psnrs).mean()), ssim=float(np.concatenate(ssims).mean()))
    if mouth:
        # Identical mouths: an infinite PSNR, as psnr_batch gives identical frames.
        scores["mouth_psnr"] = 10.0 * float(np.log10(255.0**2 * pixels / squared_error)) if squared_error else float("inf")
        scores["mouth_sharpness"] = energy / real_energy
    return scores


SHEET_COLUMNS = ("video source", "generated", "audio source (real)")


def sheet(path: str, sample_dir: str, data_root: str, pair: Pair, rows: int = 8) -> None:
    """Write the PNG sheet of one cross pair (see the module docstring), atomically."""
    generated = list(iter_frames(generated_path(sample_dir, pair)))
    video = list(iter_frames(resolve_media(data_root, pair[1]), stop=len(generated)))
    audio_source = list(iter_frames(resolve_media(data_root, pair[0]), stop=len(generated)))
    n = min(len(generated), len(video), len(audio_source))
    picks = np.linspace(0, n - 1, num=min(rows, n)).round().astype(int)
    image = labelled_sheet([[video[i], generated[i], audio_source[i]] for i in picks], SHEET_COLUMNS,
                           [f"frame {i}\n{i / 25:.2f} s" for i in picks])
    write_png(path, image)
