"""Audio I/O, Wav2Lip's mel spectrogram, and the mel windows that condition each video frame.

Media is decoded with PyAV only (no ffmpeg binary). The mel must match Wav2Lip's exactly because
both the released SyncNet expert and the Diff2Lip checkpoints were trained on it.
"""

import functools
import os
import uuid
from typing import Callable, Optional, Union

import av
import librosa
import numpy as np
from scipy import signal
from scipy.io import wavfile

from guided_diffusion.errors import MediaError

from .hparams import hparams

PathLike = Union[str, "os.PathLike[str]"]


def load_wav(path: PathLike, sr: int = hparams.sample_rate) -> np.ndarray:
    """Decode the first audio track of any container PyAV reads (wav, mp3, m4a, mp4, mkv, flac, ogg).

    Returns float32 [T], mono (mean of the channels, as librosa and so Wav2Lip do), resampled to
    `sr` Hz, values in [-1, 1]. Raises MediaError naming `path` if it is missing, unreadable, or has
    no audio track.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        problem = "is a folder" if os.path.isdir(path) else "does not exist"
        raise MediaError(f"audio file '{path}' {problem}; give the path of a file with speech, e.g. a .wav")
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise MediaError(f"audio file '{path}' has no audio track; give a file with speech, e.g. a .wav")
            stream = container.streams.audio[0]
            # Keep the channels and average them ourselves: swresample's downmix weights stereo by
            # 1/sqrt(2), which is 3 dB louder than the mean the released models were trained on.
            resampler = av.AudioResampler(format="fltp", layout=None, rate=sr)
            chunks = []
            longest_frame_s = 0.0
            for frame in container.decode(stream):
                longest_frame_s = max(longest_frame_s, frame.samples / frame.sample_rate)
                chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(frame))
            # The resampler holds back its filter tail until flushed; without it the end is cut.
            chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(None))
            declared = float(stream.duration * stream.time_base) if stream.duration else None
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(
            f"audio file '{path}' could not be decoded ({getattr(exc, 'strerror', None) or exc}); "
            "re-encode it, e.g. to a 16 kHz .wav"
        ) from exc
    wav = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if declared is not None:
        # AAC decoders emit the encoder's padding of the last frame; mp4 declares the true length.
        # Durations estimated from the bitrate (VBR mp3 without a header) can be short, so never
        # cut more than one codec frame: that is the most padding an encoder adds.
        excess = wav.size - int(round(declared * sr))
        if 0 < excess <= longest_frame_s * sr + 1:
            wav = wav[: wav.size - excess]
    if wav.size == 0:
        raise MediaError(f"audio file '{path}' contains no audio samples; give a file with speech, e.g. a .wav")
    # Lossy decoders can overshoot full scale slightly.
    return np.clip(wav, -1.0, 1.0).astype(np.float32, copy=False)


def save_wav(wav: np.ndarray, path: PathLike, sr: int) -> None:
    """Write float samples [T] in [-1, 1] as 16-bit PCM mono at `sr` Hz.

    Unlike Wav2Lip's `save_wav` this does not peak-normalise, so levels survive a round trip.
    The file is written under a temporary name and renamed, so readers never see a half file.
    """
    path = os.fspath(path)
    pcm = np.round(np.clip(np.asarray(wav, dtype=np.float64).reshape(-1), -1.0, 1.0) * 32767).astype(np.int16)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            wavfile.write(f, int(sr), pcm)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def preemphasis(wav: np.ndarray, k: float = hparams.preemphasis, preemphasize: bool = True) -> np.ndarray:
    """Pre-emphasis filter y[n] = x[n] - k x[n-1] (returned unchanged if `preemphasize` is False)."""
    if preemphasize:
        return signal.lfilter([1, -k], [1], wav)
    return wav


@functools.lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    return librosa.filters.mel(
        sr=hparams.sample_rate,
        n_fft=hparams.n_fft,
        n_mels=hparams.num_mels,
        fmin=hparams.fmin,
        fmax=hparams.fmax,
    )


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """Wav2Lip's mel spectrogram of a 16 kHz mono signal [T].

    Returns float32 [80, 1 + T // 200] (80 steps per second), values in [-4, 4].
    """
    y = preemphasis(np.asarray(wav, dtype=np.float64), hparams.preemphasis, hparams.preemphasize)
    # pad_mode is explicit because librosa < 0.10 defaulted to reflect padding.
    spec = librosa.stft(
        y=y,
        n_fft=hparams.n_fft,
        hop_length=hparams.hop_size,
        win_length=hparams.win_size,
        center=True,
        pad_mode="constant",
    )
    mel = np.dot(_mel_basis(), np.abs(spec))
    min_level = 10.0 ** (hparams.min_level_db / 20.0)
    s = 20.0 * np.log10(np.maximum(min_level, mel)) - hparams.ref_level_db
    m = hparams.max_abs_value
    s = (2 * m) * ((s - hparams.min_level_db) / -hparams.min_level_db) - m
    return np.clip(s, -m, m).astype(np.float32)


def frame_mel_start(k: int, fps: float = hparams.fps) -> int:
    """First mel step of the window conditioning 0-based video frame `k` (released Diff2Lip rule).

    The window starts at frame k-1 (clamped at 0), so it spans frames k-1 .. k+3:
    int(80 * max(k-1, 0) / fps).
    """
    if k < 0:
        raise ValueError(f"frame index must be >= 0, got {k}")
    return int(hparams.mel_steps_per_second * max(k - 1, 0) / fps)


def _count_fitting(start_of: Callable[[int], int], num_mel_steps: int, fps: float, lead: int) -> int:
    """Number of n = 0, 1, ... with start_of(n) + mel_step_size <= num_mel_steps.

    start_of must be non-decreasing, start at 0, and equal int(80 * (n - lead) / fps) for n >= lead.
    """
    last = num_mel_steps - hparams.mel_step_size
    if last < 0:
        return 0
    # The closed form is exact in real arithmetic; walking from it absorbs float rounding.
    n = lead + int(np.ceil((last + 1) * fps / hparams.mel_steps_per_second))
    while n > 0 and start_of(n - 1) > last:
        n -= 1
    while start_of(n) <= last:
        n += 1
    return n


def num_full_windows(num_mel_steps: int, fps: float = hparams.fps) -> int:
    """Number of video frames k = 0, 1, ... whose `frame_mel_start` window lies inside the mel.

    A clip has at most this many frames; callers take the min with the video frame count.
    """
    return _count_fitting(lambda k: frame_mel_start(k, fps), num_mel_steps, fps, lead=1)


def frame_mel_windows(mel: np.ndarray, num_frames: Optional[int] = None, fps: float = hparams.fps) -> np.ndarray:
    """Mel windows for video frames 0 .. F-1: mel [80, T_mel] -> float32 [F, 80, 16].

    F defaults to `num_full_windows(T_mel, fps)`; asking for more frames than that is an error.
    """
    if mel.ndim != 2:
        raise ValueError(f"mel must be [num_mels, T_mel], got shape {mel.shape}")
    available = num_full_windows(mel.shape[1], fps)
    if num_frames is None:
        num_frames = available
    if not 0 <= num_frames <= available:
        raise ValueError(
            f"asked for mel windows of {num_frames} frames but a mel of {mel.shape[1]} steps "
            f"covers only {available} frames at {fps} fps; take the min with num_full_windows()"
        )
    starts = np.array([frame_mel_start(k, fps) for k in range(num_frames)], dtype=np.int64)
    idx = starts[:, None] + np.arange(hparams.mel_step_size)
    return np.ascontiguousarray(mel[:, idx].transpose(1, 0, 2), dtype=np.float32)


def syncnet_mel_start(start_frame: int, fps: float = hparams.fps) -> int:
    """First mel step of the SyncNet window for frames start_frame .. start_frame+4 (Wav2Lip rule)."""
    if start_frame < 0:
        raise ValueError(f"frame index must be >= 0, got {start_frame}")
    return int(hparams.mel_steps_per_second * start_frame / fps)


def num_syncnet_windows(num_mel_steps: int, fps: float = hparams.fps) -> int:
    """Number of start frames s = 0, 1, ... whose SyncNet mel window lies inside the mel.

    Only the audio side: the caller also needs s + 5 <= its video frame count.
    """
    return _count_fitting(lambda s: syncnet_mel_start(s, fps), num_mel_steps, fps, lead=0)


def syncnet_mel_window(mel: np.ndarray, start_frame: int, fps: float = hparams.fps) -> np.ndarray:
    """SyncNet mel window for the 5 frames starting at 0-based `start_frame`: [80, T_mel] -> float32 [80, 16]."""
    start = syncnet_mel_start(start_frame, fps)
    if mel.ndim != 2 or start + hparams.mel_step_size > mel.shape[1]:
        raise ValueError(
            f"SyncNet window for frame {start_frame} needs mel steps {start}..{start + hparams.mel_step_size - 1} "
            f"but the mel has shape {mel.shape}"
        )
    return np.ascontiguousarray(mel[:, start : start + hparams.mel_step_size], dtype=np.float32)
