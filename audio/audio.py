"""Audio I/O, Wav2Lip's mel spectrogram, and the mel windows that condition each video frame.

Media is decoded with PyAV only (no ffmpeg binary). The mel must match Wav2Lip's exactly because
both the released SyncNet expert and the Diff2Lip checkpoints were trained on it.
"""

import functools
import os
import uuid
from fractions import Fraction
from typing import Callable, List, Optional, Union

import av
import librosa
import numpy as np
from scipy import signal
from scipy.io import wavfile

from common.errors import MediaError

from .hparams import hparams

PathLike = Union[str, "os.PathLike[str]"]


def load_wav(path: PathLike, sr: int = hparams.sample_rate, max_samples: Optional[int] = None) -> np.ndarray:
    """Decode the first audio track of any container PyAV reads (wav, mp3, m4a, mp4, mkv, flac, ogg)
    into the samples the released code reads.

    The release runs `ffmpeg -i AUDIO out.wav` (every sample the decoder yields, written as 16-bit
    PCM per channel) and `librosa.load(out.wav, sr=16000)` (int / 32768 as float32, the mean of the
    channels, then resampled to 16 kHz if the source rate differs). This does the same with
    ffmpeg's own s16 conversion; only the resampler differs (swresample here, librosa's there), so a
    16 kHz source (VoxCeleb2, LRW) gives the release's samples exactly. Nothing is cut at the
    container's declared duration: an AAC encoder's padding of its last frame stays, as in the
    release, where it can add a video frame.

    Returns float32 [T] mono at `sr` Hz, in [-1, 1) (resampling may overshoot a little). With
    `max_samples`, decoding stops once the first `max_samples` samples are known and at most that
    many come back (the same values as the prefix of the whole decode), so memory does not grow
    with the rest of the file. Raises MediaError naming `path` if it is missing, unreadable, or has
    no audio track.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        problem = "is a folder" if os.path.isdir(path) else "does not exist"
        raise MediaError(f"audio file '{path}' {problem}; give the path of a file with speech, e.g. a .wav")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}")
    chunks: List[np.ndarray] = []
    have = 0
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise MediaError(f"audio file '{path}' has no audio track; give a file with speech, e.g. a .wav")
            stream = container.streams.audio[0]
            # swresample's s16 conversion is the one ffmpeg's wav writer uses (lrintf(x * 32768),
            # clipped, for float decoders like AAC's); the channels stay apart until librosa's mean.
            to_s16 = av.AudioResampler(format="s16p", layout=None, rate=None)
            to_rate = None  # the mono float resampler, made once the source rate is known
            fed = 0  # mono samples given to `to_rate`, its input clock

            def take(frames: List["av.AudioFrame"]) -> None:
                nonlocal to_rate, fed, have
                for frame in frames:
                    pcm = frame.to_ndarray()  # int16 [C, n]
                    mono = np.mean(pcm / np.float32(32768), axis=0, dtype=np.float32)
                    if frame.sample_rate == sr:
                        out = [mono]
                    else:
                        if to_rate is None:
                            to_rate = av.AudioResampler(format="flt", layout="mono", rate=sr)
                        mono_frame = av.AudioFrame.from_ndarray(mono[None, :], format="flt", layout="mono")
                        mono_frame.sample_rate = frame.sample_rate
                        mono_frame.pts, mono_frame.time_base = fed, Fraction(1, frame.sample_rate)
                        fed += mono.size
                        out = [o.to_ndarray().reshape(-1) for o in to_rate.resample(mono_frame)]
                    for samples in out:
                        chunks.append(samples)
                        have += samples.size

            decoded = 0  # samples per channel decoded so far, for the position of a bad sample
            for frame in container.decode(stream):
                _check_finite(frame, path, decoded)
                decoded += frame.samples
                take(to_s16.resample(frame))
                if max_samples is not None and have >= max_samples:
                    break
            else:
                take(to_s16.resample(None))
                if to_rate is not None:
                    # The resampler holds back its filter tail until flushed; without it the end is cut.
                    chunks.extend(o.to_ndarray().reshape(-1) for o in to_rate.resample(None))
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(
            f"audio file '{path}' could not be decoded ({getattr(exc, 'strerror', None) or exc}); "
            "re-encode it, e.g. to a 16 kHz .wav"
        ) from exc
    wav = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if wav.size == 0:
        raise MediaError(f"audio file '{path}' contains no audio samples; give a file with speech, e.g. a .wav")
    return wav[:max_samples].astype(np.float32, copy=False)


def _check_finite(frame: "av.AudioFrame", path: str, decoded: int) -> None:
    """Refuse a float frame holding NaN or inf: the 16-bit conversion would turn each such sample
    into silence or a full-scale click without a word, and the lips would follow that."""
    if frame.format.name not in ("flt", "fltp", "dbl", "dblp"):
        return  # integer PCM and the decoders' own output cannot hold them
    samples = frame.to_ndarray()  # planar: [C, n]; packed: [1, n * C], interleaved
    if not frame.format.is_planar:
        samples = samples.reshape(-1, len(frame.layout.channels)).T
    bad = ~np.isfinite(samples).all(axis=0)
    if bad.any():
        first = decoded + int(np.argmax(bad))
        raise MediaError(
            f"audio file '{path}' holds non-finite samples (NaN or inf), the first at {first / frame.sample_rate:.3f} s; "
            "they are no sound to lip-sync to: re-export the audio from its source"
        )


def to_int16(wav: np.ndarray) -> np.ndarray:
    """Float samples [T] -> int16 [T] as ffmpeg converts float to 16-bit PCM: x * 32768 rounded
    half to even (lrintf), clipped to [-32768, 32767]. Inverts `load_wav`'s int / 32768 exactly."""
    return np.clip(np.rint(np.asarray(wav, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def save_wav(wav: np.ndarray, path: PathLike, sr: int) -> None:
    """Write float samples [T] in [-1, 1] as 16-bit PCM mono at `sr` Hz.

    Unlike Wav2Lip's `save_wav` this does not peak-normalise, and it scales by 32768 as ffmpeg does
    (`to_int16`), so `load_wav` gives back the samples it read from a 16 kHz source exactly.
    The file is written under a temporary name and renamed, so readers never see a half file.
    """
    path = os.fspath(path)
    pcm = to_int16(np.asarray(wav).reshape(-1))
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


def melspectrogram(wav: np.ndarray, block_steps: int = 1024) -> np.ndarray:
    """Wav2Lip's mel spectrogram of a 16 kHz mono signal [T].

    Returns float32 [80, 1 + T // 200] (80 steps per second), values in [-4, 4]. The STFT is
    librosa's with center=True and zero padding; it runs over `block_steps` mel steps at a time,
    each block reading only its own samples (its frames plus the sample before them for the
    pre-emphasis), so memory stays flat in T and the values are those of one whole-signal STFT.
    """
    x = np.asarray(wav)
    if x.ndim != 1:
        raise ValueError(f"wav must be mono samples [T], got shape {x.shape}")
    if block_steps < 1:
        raise ValueError(f"block_steps must be >= 1, got {block_steps}")
    hop, half = hparams.hop_size, hparams.n_fft // 2
    n_steps = 1 + x.size // hop
    mel = np.empty((hparams.num_mels, n_steps), dtype=np.float32)
    for first in range(0, n_steps, block_steps):
        last = min(first + block_steps, n_steps) - 1
        # Step m's frame covers samples m*hop - half .. m*hop + half - 1; outside the signal, zeros.
        lo, hi = first * hop - half, last * hop + half
        a, b = max(lo, 0), min(hi, x.size)
        padded = np.zeros(hi - lo, dtype=np.float64)
        if b > a:
            # Start one sample early so that y[a] = x[a] - k x[a-1] as in the whole signal.
            y = preemphasis(x[max(a - 1, 0) : b].astype(np.float64), hparams.preemphasis, hparams.preemphasize)
            padded[a - lo : b - lo] = y[1:] if a > 0 else y
        spec = librosa.stft(
            y=padded, n_fft=hparams.n_fft, hop_length=hop, win_length=hparams.win_size, center=False
        )
        mel[:, first : last + 1] = _normalized_db(np.dot(_mel_basis(), np.abs(spec)))
    return mel


def _normalized_db(mel: np.ndarray) -> np.ndarray:
    """Mel magnitudes [80, N] -> Wav2Lip's normalised dB in [-4, 4]."""
    min_level = 10.0 ** (hparams.min_level_db / 20.0)
    s = 20.0 * np.log10(np.maximum(min_level, mel)) - hparams.ref_level_db
    m = hparams.max_abs_value
    s = (2 * m) * ((s - hparams.min_level_db) / -hparams.min_level_db) - m
    return np.clip(s, -m, m)


def samples_for_frames(n_frames: int, fps: float = hparams.fps) -> int:
    """Samples whose mel gives the windows of video frames 0 .. n_frames-1 (the last window's last
    STFT frame reaches half a window past its step): the mel of this prefix of a signal equals
    the whole signal's mel on the first `mel_steps_for_frames(n_frames)` steps."""
    return (mel_steps_for_frames(n_frames, fps) - 1) * hparams.hop_size + hparams.n_fft // 2


def mel_steps_for_frames(n_frames: int, fps: float = hparams.fps) -> int:
    """Mel steps that the windows of video frames 0 .. n_frames-1 span (n_frames >= 1)."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    return frame_mel_start(n_frames - 1, fps) + hparams.mel_step_size


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
