"""Wav2Lip mel-spectrogram hyperparameters: the one source of truth for every audio consumer.

The released Wav2Lip SyncNet expert and the Diff2Lip checkpoints were trained on mels made with
exactly these values, so changing any of them silently breaks those checkpoints.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class AudioHParams:
    """Mel front end (Wav2Lip's `hparams.py`) plus the audio/video alignment constants."""

    sample_rate: int = 16000
    num_mels: int = 80
    n_fft: int = 800
    hop_size: int = 200
    win_size: int = 800
    preemphasize: bool = True
    preemphasis: float = 0.97
    fmin: float = 55.0
    fmax: float = 7600.0
    ref_level_db: float = 20.0
    min_level_db: float = -100.0
    max_abs_value: float = 4.0
    symmetric_mels: bool = True
    signal_normalization: bool = True
    allow_clipping_in_normalization: bool = True
    fps: float = 25.0
    # Mel steps per conditioning window: 16 steps = 0.2 s = 5 video frames at 25 fps.
    mel_step_size: int = 16
    # Consecutive video frames the SyncNet expert scores against one mel window.
    syncnet_T: int = 5

    @property
    def mel_steps_per_second(self) -> float:
        """Mel frames per second of audio (80 for 16 kHz with a 200-sample hop)."""
        return self.sample_rate / self.hop_size


hparams = AudioHParams()
