"""LSE-C / LSE-D ("Sync_c" / "Sync_d"): syncnet_python's audio-visual sync scores of a talking-head clip.

The numbers the field reports come from syncnet_python's `SyncNetInstance.evaluate` run on the face
track `run_pipeline.py` cuts (see `evaluation/face_track.py`); this module reproduces both:

- audio: the clip's track as 16 kHz mono int16 (what its `ffmpeg -ac 1 -acodec pcm_s16le -ar 16000`
  wav holds), `python_speech_features.mfcc(audio, 16000)` -> `[13, T]` at 100 steps per second;
- windows: `lastframe = min(n_frames, floor(n_samples / 640)) - 5`; for vframe in range(lastframe)
  the lips see frames vframe .. vframe+4 and the audio MFCC steps vframe*4 .. vframe*4+19;
- scores (`lse_scores`): mean over frames of the distances between each lip feature and the audio
  features shifted by -vshift .. +vshift frames (zero rows past the ends); LSE-D is the smallest
  mean distance, LSE-C the median minus that minimum, the AV offset vshift minus its index.

    scorer = LSEScorer("checkpoints/syncnet_v2.model", device="cuda")
    scorer.score("generated.mp4")  # {"lse_c": float, "lse_d": float, "offset": int, "n_frames": int}
"""

import math
import os
from typing import Dict, Iterable, Iterator, Optional, Tuple, Union

import cv2
import numpy as np
import python_speech_features
import torch
import torch.nn.functional as F

from audio.audio import load_wav, to_int16
from common.errors import Diff2LipError, MediaError
from dataset.video_io import VideoInfo, iter_frames, probe_video
from face_detection import Box, FaceDetector, check_box, voxceleb2_box

from .face_track import CROP_SCALE, CROP_SIZE, FACEDET_SCALE, FaceTrack, detect_track, fixed_track, iter_track_crops
from .syncnet_eval import DEFAULT_SYNCNET_EVAL_PATH, SyncNetEval, load_syncnet_eval

PathLike = Union[str, "os.PathLike[str]"]

SAMPLE_RATE = 16000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
MFCC_STEPS_PER_FRAME = 4  # python_speech_features' 10 ms step at 25 fps
MFCC_WINDOW = 20  # 0.2 s, the 5 frames of a lip window
FRAMES_PER_WINDOW = 5
FACE_TRACKS = ("s3fd", "voxceleb2", "box", "none")
# syncnet_python's S3FD confidence threshold (`detect_faces(..., conf_th=0.9)`).
S3FD_THRESHOLD = 0.9
# Rows of `lse_scores`' distance table computed at once: bounds the [rows, 31, 1024] difference to ~16 MB.
_PDIST_CHUNK = 128


def syncnet_mfcc(audio: np.ndarray) -> np.ndarray:
    """syncnet_python's audio features: 16 kHz int16 samples `[T]`, T >= 400 -> float32
    `[13, 1 + ceil((T - 400) / 160)]` (`python_speech_features.mfcc` with its defaults, transposed:
    100 steps per second, 4n - 1 steps for n * 640 samples)."""
    return np.ascontiguousarray(python_speech_features.mfcc(audio, SAMPLE_RATE).T, dtype=np.float32)


def num_windows(n_frames: int, n_samples: int) -> int:
    """syncnet_python's `lastframe`: how many 5-frame windows are scored (may be <= 0: too short)."""
    return min(n_frames, math.floor(n_samples / SAMPLES_PER_FRAME)) - FRAMES_PER_WINDOW


def audio_windows(mfcc: np.ndarray, start: int, stop: int) -> torch.Tensor:
    """MFCC windows of vframes start .. stop-1: `[13, T]` -> float32 `[stop - start, 1, 13, 20]`,
    window v being steps v*4 .. v*4+19."""
    steps = np.arange(start, stop)[:, None] * MFCC_STEPS_PER_FRAME + np.arange(MFCC_WINDOW)
    if steps.size and steps[-1, -1] >= mfcc.shape[1]:
        raise ValueError(f"MFCC window of vframe {stop - 1} needs step {steps[-1, -1]}, the MFCC has {mfcc.shape[1]}")
    return torch.from_numpy(np.ascontiguousarray(mfcc[:, steps].transpose(1, 0, 2)))[:, None]


def lip_windows(crops: np.ndarray) -> torch.Tensor:
    """All 5-frame windows of consecutive crops: BGR uint8 `[n + 4, H, W, 3]` -> float32
    `[n, 3, 5, H, W]` with raw 0..255 values."""
    clip = torch.from_numpy(np.ascontiguousarray(crops)).permute(3, 0, 1, 2).float()  # [3, n + 4, H, W]
    return torch.stack([clip[:, v : v + FRAMES_PER_WINDOW] for v in range(clip.shape[1] - FRAMES_PER_WINDOW + 1)])


@torch.no_grad()
def syncnet_features(
    net: SyncNetEval,
    crops: Iterable[np.ndarray],
    n_frames: int,
    audio: np.ndarray,
    batch_size: int = 20,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """`SyncNetInstance.evaluate`'s features, streamed: only `batch_size + 4` crops are held.

    :param crops: the clip's `n_frames` BGR uint8 `[224, 224, 3]` face crops, in order.
    :param audio: its 16 kHz int16 samples `[T]`.
    :return: `(video_feats, audio_feats)`, float32 CPU `[lastframe, 1024]` each.
    """
    device = next(net.parameters()).device
    n_win = num_windows(n_frames, len(audio))
    if n_win < 1:
        raise ValueError(f"{n_frames} frames and {len(audio)} samples give no 5-frame window")
    mfcc = syncnet_mfcc(audio)
    video_feats, audio_feats = [], []
    pending = []  # crops of frames start .. start + len(pending) - 1
    start = 0
    for crop in crops:
        pending.append(crop)
        stop = min(n_win, start + batch_size)
        if len(pending) < stop - start + FRAMES_PER_WINDOW - 1:
            continue
        video_feats.append(net.forward_lip(lip_windows(np.stack(pending)).to(device)).float().cpu())
        audio_feats.append(net.forward_aud(audio_windows(mfcc, start, stop).to(device)).float().cpu())
        pending = pending[stop - start :]
        start = stop
        if start == n_win:
            break
    if start < n_win:
        raise ValueError(f"the crops ended before frame {start + FRAMES_PER_WINDOW - 1}; expected {n_frames}")
    return torch.cat(video_feats), torch.cat(audio_feats)


def lse_scores(video_feats: torch.Tensor, audio_feats: torch.Tensor, vshift: int = 15) -> Tuple[float, float, int]:
    """syncnet_python's `calc_pdist` and scores: `[N, D]` lip and audio features -> `(lse_c, lse_d, offset)`.

    dist[i, j] = ||video[i] - audio_padded[i + j] + 1e-6|| (`pairwise_distance`), where audio is padded
    with `vshift` zero rows at both ends, j = 0 .. 2 vshift; mdist = mean over i; LSE-D = min(mdist),
    LSE-C = median(mdist) - LSE-D (torch's median: the lower middle value for even lengths),
    offset = vshift - argmin(mdist).

    Sign: offset = k > 0 when audio[i] best matches video[i + k], i.e. the picture lags the sound
    by k frames (syncnet_python's "AV offset"); in-sync clips score 0.
    """
    video = torch.as_tensor(video_feats, dtype=torch.float32).cpu()
    audio = torch.as_tensor(audio_feats, dtype=torch.float32).cpu()
    if video.ndim != 2 or video.shape != audio.shape or len(video) == 0:
        raise ValueError(f"need two equal non-empty [N, D] feature sets, got {tuple(video.shape)} and {tuple(audio.shape)}")
    win = 2 * vshift + 1
    padded = F.pad(audio, (0, 0, vshift, vshift))
    windows = padded.unfold(0, win, 1).transpose(1, 2)  # [N, win, D] view: row i is padded[i : i + win]
    dists = torch.cat([
        F.pairwise_distance(video[i : i + _PDIST_CHUNK, None, :], windows[i : i + _PDIST_CHUNK])
        for i in range(0, len(video), _PDIST_CHUNK)
    ])  # [N, win]
    mdist = dists.mean(0)
    minval, minidx = torch.min(mdist, 0)
    return float(torch.median(mdist) - minval), float(minval), int(vshift - minidx)


class LSEScorer:
    """LSE-C / LSE-D of talking-head videos with syncnet_python's network and protocol.

    :param weights_path: syncnet_python's `syncnet_v2.model` (loaded now: a missing file fails here).
    :param device: where the SyncNet (and S3FD) run.
    :param batch_size: 5-frame windows per forward (syncnet_python's default 20); any value gives
        the same features up to float rounding.
    :param vshift: largest AV offset tried, in frames (15 as syncnet_python's evaluation scripts).
    :param face_track: how the 224 x 224 face track is cut (`evaluation/face_track.py`):
        "s3fd" the reference protocol (run_pipeline.py's detection, smoothing and crop);
        "voxceleb2" / "box" the VoxCeleb2 crop / `box` in every frame through the same crop,
        for clips whose face position is known (not the reference protocol);
        "none" the video already is the face track (frames resized to 224 x 224 if needed).
    :param detector: for "s3fd", a `FaceDetector` or look-alike; default S3FD with
        syncnet_python's 0.9 threshold, built on first use.
    :param box: `(y1, y2, x1, x2)` face box in pixels, for face_track="box".
    """

    def __init__(
        self,
        weights_path: PathLike = DEFAULT_SYNCNET_EVAL_PATH,
        device: Union[str, torch.device] = "cpu",
        batch_size: int = 20,
        vshift: int = 15,
        face_track: str = "s3fd",
        detector: Optional[FaceDetector] = None,
        box: Optional[Box] = None,
        facedet_scale: float = FACEDET_SCALE,
        crop_scale: float = CROP_SCALE,
    ) -> None:
        if face_track not in FACE_TRACKS:
            raise Diff2LipError(f"face_track {face_track!r} is not one of {', '.join(FACE_TRACKS)}")
        if (box is not None) != (face_track == "box"):
            raise Diff2LipError('give a face box exactly when face_track="box"')
        if batch_size < 1 or vshift < 0:
            raise Diff2LipError(f"batch_size must be >= 1 and vshift >= 0, got {batch_size} and {vshift}")
        self.device = str(device)
        self.batch_size = int(batch_size)
        self.vshift = int(vshift)
        self.face_track = face_track
        self.box = box
        self.facedet_scale = float(facedet_scale)
        self.crop_scale = float(crop_scale)
        self._detector = detector
        self.net = load_syncnet_eval(weights_path, self.device)

    def _track(self, path: str, frame_hw: Tuple[int, int], n_frames: int) -> FaceTrack:
        if self.face_track == "s3fd":
            if self._detector is None:
                self._detector = FaceDetector(self.device, filter_threshold=S3FD_THRESHOLD)
            return detect_track(path, self._detector, self.facedet_scale, FPS)
        if self.face_track == "box":
            check_box(self.box, frame_hw, path)
            return fixed_track(n_frames, self.box)
        return fixed_track(n_frames, voxceleb2_box(*frame_hw))

    def _crops(self, path: str, info: VideoInfo) -> Tuple[Iterator[np.ndarray], int, int]:
        """`(BGR 224 x 224 crops, their count, first frame)` of the clip's face track."""
        if self.face_track == "none":
            # cv2.resize to the same size copies the frame unchanged.
            frames = iter_frames(path, FPS)
            crops = (np.ascontiguousarray(cv2.resize(f, (CROP_SIZE, CROP_SIZE))[:, :, ::-1]) for f in frames)
            return crops, info.num_frames, 0
        track = self._track(path, (info.height, info.width), info.num_frames)
        return iter_track_crops(path, track, self.crop_scale, FPS), track.n_frames, track.start

    def features(self, video_path: PathLike) -> Tuple[torch.Tensor, torch.Tensor]:
        """`(video_feats, audio_feats)`, float32 CPU `[N, 1024]` each, N = lastframe, of the clip at
        `video_path` (frames at 25 fps, its own audio track); cache these to rescore cheaply.

        Raises MediaError naming the clip when it has no audio, no face, or fewer than 6 frames
        (0.24 s) of face track and audio.
        """
        path = os.fspath(video_path)
        info = probe_video(path, FPS)
        if not info.has_audio:
            raise MediaError(f"video '{path}' has no audio track; LSE scores the lips against the clip's own sound")
        audio = to_int16(load_wav(path, SAMPLE_RATE))
        crops, n_frames, first = self._crops(path, info)
        # run_pipeline.py cuts the audio to the face track's frames (-ss first/25 -to (last+1)/25).
        audio = audio[first * SAMPLES_PER_FRAME : (first + n_frames) * SAMPLES_PER_FRAME]
        if num_windows(n_frames, len(audio)) < 1:
            raise MediaError(
                f"'{path}' is too short to score: {n_frames} face-track frames and {len(audio) / SAMPLE_RATE:.3f} s "
                f"of audio; LSE needs at least {FRAMES_PER_WINDOW + 1} frames ({(FRAMES_PER_WINDOW + 1) / FPS:.2f} s) of both"
            )
        return syncnet_features(self.net, crops, n_frames, audio, self.batch_size)

    def scores_from_features(self, video_feats: torch.Tensor, audio_feats: torch.Tensor) -> Dict[str, Union[float, int]]:
        """`{"lse_c", "lse_d", "offset", "n_frames"}` from `features()`' output; n_frames is the
        number of scored 5-frame windows (lastframe)."""
        lse_c, lse_d, offset = lse_scores(video_feats, audio_feats, self.vshift)
        return {"lse_c": lse_c, "lse_d": lse_d, "offset": offset, "n_frames": int(len(video_feats))}

    def score(self, video_path: PathLike) -> Dict[str, Union[float, int]]:
        """LSE-C, LSE-D, AV offset and the number of scored windows of the clip at `video_path`."""
        return self.scores_from_features(*self.features(video_path))
