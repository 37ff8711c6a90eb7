"""Tests for audio/: loading every common container with PyAV, Wav2Lip's mel, and the mel windows.

All media is written by the tests with PyAV into tmp_path; the mel reference below is computed
from the definition with NumPy only, independently of librosa.stft.
"""

import dataclasses
import os

import av
import librosa
import numpy as np
import pytest
import scipy.signal

from audio import audio
from audio.hparams import hparams
from common.errors import MediaError
from helpers import decoder_output, has_encoder, write_aac

TONE_HZ = 440.0
# Different levels per channel so the test tells a channel mean (what librosa, hence Wav2Lip, does)
# from swresample's louder 1/sqrt(2) downmix.
LEFT_AMP, RIGHT_AMP = 0.5, 0.3
MONO_RMS = (LEFT_AMP + RIGHT_AMP) / 2 / np.sqrt(2)


def _video_encoder() -> str:
    for name in ("libx264", "h264", "mpeg4"):
        if has_encoder(name):
            return name
    pytest.skip("PyAV has no h264 or mpeg4 encoder here")


def _write_media(path, audio_codec=None, rate=44100, video_codec=None, seconds=1.0):
    """Write `seconds` of a stereo 440 Hz tone (and/or a few tiny video frames) with PyAV."""
    with av.open(str(path), "w") as container:
        vstream = None
        if video_codec:
            vstream = container.add_stream(video_codec, rate=25)
            vstream.width, vstream.height, vstream.pix_fmt = 32, 32, "yuv420p"
        if audio_codec:
            astream = container.add_stream(audio_codec, rate=rate, layout="stereo")
            t = np.arange(int(seconds * rate)) / rate
            tone = np.sin(2 * np.pi * TONE_HZ * t)
            stereo = np.stack([LEFT_AMP * tone, RIGHT_AMP * tone]).astype(np.float32)
            for i in range(0, stereo.shape[1], 1000):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(stereo[:, i : i + 1000]), format="fltp", layout="stereo"
                )
                frame.sample_rate, frame.pts = rate, i
                for packet in astream.encode(frame):
                    container.mux(packet)
            for packet in astream.encode(None):
                container.mux(packet)
        if vstream is not None:
            for i in range(int(seconds * 25)):
                image = np.full((32, 32, 3), 8 * i, dtype=np.uint8)
                for packet in vstream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in vstream.encode(None):
                container.mux(packet)


# (file name, audio encoder, sample rate, video?, allowed length error in ms)
# AAC keeps the encoder's padding of its last 1024-sample frame (up to 23 ms at 44.1 kHz), as the
# released ffmpeg -> wav path does, whatever length the container declares.
FORMATS = [
    ("tone.wav", "pcm_s16le", 44100, False, 5),
    ("tone.mp3", "libmp3lame", 44100, False, 5),
    ("tone.m4a", "aac", 44100, False, 24),
    ("tone.mp4", "aac", 44100, True, 24),
    ("tone.mkv", "aac", 44100, False, 24),
    ("tone_opus.mkv", "libopus", 48000, False, 5),
    ("tone.flac", "flac", 44100, False, 5),
    ("tone.ogg", "libopus", 48000, False, 5),
]


@pytest.mark.parametrize("name,codec,rate,with_video,tol_ms", FORMATS, ids=[f[0] for f in FORMATS])
def test_load_wav_decodes_container_to_16k_mono(tmp_path, name, codec, rate, with_video, tol_ms):
    if not has_encoder(codec):
        pytest.skip(f"PyAV has no {codec} encoder here")
    path = tmp_path / name
    _write_media(path, codec, rate, _video_encoder() if with_video else None)

    wav = audio.load_wav(path)

    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - 16000) <= tol_ms * 16, len(wav)
    assert np.abs(wav).max() <= 1.0
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    peak_hz = np.argmax(spectrum) * 16000 / len(wav)
    assert abs(peak_hz - TONE_HZ) <= 5, peak_hz
    # Skip the edges, where codec priming and the resampler's filter ramp live.
    rms = np.sqrt(np.mean(wav[1600:-1600] ** 2))
    assert rms == pytest.approx(MONO_RMS, rel=0.1)


def test_load_wav_resamples_to_requested_rate(tmp_path):
    path = tmp_path / "tone.wav"
    _write_media(path, "pcm_s16le", 44100)
    wav = audio.load_wav(path, sr=8000)
    assert abs(len(wav) - 8000) <= 40
    assert abs(np.argmax(np.abs(np.fft.rfft(wav))) * 8000 / len(wav) - TONE_HZ) <= 5


def test_load_wav_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(MediaError, match="does not exist") as info:
        audio.load_wav(path)
    assert str(path) in str(info.value)


def test_load_wav_video_without_audio(tmp_path):
    path = tmp_path / "silent_video.mp4"
    _write_media(path, audio_codec=None, video_codec=_video_encoder(), seconds=0.2)
    with pytest.raises(MediaError, match="no audio track") as info:
        audio.load_wav(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"this is not a media file\n" * 100, b""], ids=["text", "empty"])
def test_load_wav_garbage_file(tmp_path, content):
    path = tmp_path / "garbage.wav"
    path.write_bytes(content)
    with pytest.raises(MediaError) as info:
        audio.load_wav(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_save_wav_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    wav = rng.uniform(-1, 1, 16000 + 37).astype(np.float32)
    path = tmp_path / "out.wav"
    path.write_bytes(b"old content")

    audio.save_wav(wav, path, 16000)
    back = audio.load_wav(path, sr=16000)

    assert back.shape == wav.shape
    assert np.abs(back - wav).max() <= 2 / 32767
    assert os.listdir(tmp_path) == ["out.wav"]


def test_hparams_are_wav2lip_values():
    expected = dict(
        sample_rate=16000, num_mels=80, n_fft=800, hop_size=200, win_size=800, preemphasize=True,
        preemphasis=0.97, fmin=55, fmax=7600, ref_level_db=20, min_level_db=-100, max_abs_value=4.0,
        symmetric_mels=True, signal_normalization=True, allow_clipping_in_normalization=True,
        fps=25, mel_step_size=16,
    )
    for key, value in expected.items():
        assert getattr(hparams, key) == value, key
    assert hparams.mel_steps_per_second == 80
    with pytest.raises(dataclasses.FrozenInstanceError):
        hparams.fps = 30


def _reference_mel(wav: np.ndarray) -> np.ndarray:
    """Wav2Lip's mel from its definition: pre-emphasis, centred zero-padded STFT, Slaney mel, dB, [-4, 4]."""
    x = wav.astype(np.float64)
    y = np.concatenate([x[:1], x[1:] - 0.97 * x[:-1]])
    padded = np.pad(y, 400)
    n_frames = 1 + len(y) // 200
    frames = np.stack([padded[i * 200 : i * 200 + 800] for i in range(n_frames)])
    window = scipy.signal.get_window("hann", 800)
    magnitude = np.abs(np.fft.rfft(frames * window, axis=1)).T
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, basis @ magnitude)) - 20
    return np.clip(8 * ((db + 100) / 100) - 4, -4, 4)


def test_melspectrogram_matches_definition():
    rng = np.random.default_rng(1)
    n = 16000 + 137
    t = np.arange(n) / 16000
    wav = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t) + 0.05 * rng.standard_normal(n)
    wav[4000:6000] = 0.0  # silence drives the mel to the -4 floor
    wav = wav.astype(np.float32)

    mel = audio.melspectrogram(wav)
    ref = _reference_mel(wav)

    assert mel.dtype == np.float32
    assert mel.shape == (80, 1 + n // 200) == ref.shape
    assert np.abs(mel - ref).max() < 1e-3
    assert mel.min() >= -4 and mel.max() <= 4
    assert mel.min() == -4 and mel.max() > 0


@pytest.mark.filterwarnings("ignore:n_fft=800 is too large")  # centring pads short input; fine
@pytest.mark.parametrize("n", [1, 199, 200, 801, 16000])
def test_melspectrogram_length(n):
    wav = np.random.default_rng(n).uniform(-0.5, 0.5, n).astype(np.float32)
    assert audio.melspectrogram(wav).shape == (80, 1 + n // 200)


def test_preemphasis():
    x = np.array([1.0, 2.0, 0.0, -1.0])
    np.testing.assert_allclose(audio.preemphasis(x, 0.97), [1.0, 2.0 - 0.97, -1.94, -1.0])
    assert audio.preemphasis(x, 0.97, preemphasize=False) is x


def test_frame_mel_start_values():
    # int(80 * max(k-1, 0) / 25) by hand: 0, 0, int(3.2), int(76.8), int(80.0)
    assert [audio.frame_mel_start(k) for k in (0, 1, 2, 25, 26)] == [0, 0, 3, 76, 80]
    assert audio.frame_mel_start(2, fps=30) == 2  # int(80 / 30)
    with pytest.raises(ValueError):
        audio.frame_mel_start(-1)


@pytest.mark.parametrize("fps", [25, 30, 29.97, 24])
def test_window_counts_equal_brute_force(fps):
    for n in range(0, 400):
        full = 0
        while int(80 * max(full - 1, 0) / fps) + 16 <= n:
            full += 1
        assert audio.num_full_windows(n, fps) == full, (n, fps)
        sync = 0
        while int(80 * sync / fps) + 16 <= n:
            sync += 1
        assert audio.num_syncnet_windows(n, fps) == sync, (n, fps)
    assert audio.num_full_windows(16) == 2  # frames 0 and 1 both start at step 0
    assert audio.num_full_windows(15) == 0


def test_frame_mel_windows_are_mel_slices():
    mel = np.random.default_rng(2).uniform(-4, 4, (80, 1 + 32000 // 200)).astype(np.float32)
    windows = audio.frame_mel_windows(mel)
    assert windows.dtype == np.float32
    assert windows.shape == (audio.num_full_windows(mel.shape[1]), 80, 16)
    for k in range(len(windows)):
        start = int(80 * max(k - 1, 0) / 25)
        np.testing.assert_array_equal(windows[k], mel[:, start : start + 16])
    assert audio.frame_mel_windows(mel, num_frames=7).shape == (7, 80, 16)
    assert audio.frame_mel_windows(mel, num_frames=0).shape == (0, 80, 16)
    with pytest.raises(ValueError, match="num_full_windows"):
        audio.frame_mel_windows(mel, num_frames=len(windows) + 1)


def test_syncnet_mel_window():
    mel = np.arange(80 * 100, dtype=np.float32).reshape(80, 100)
    for start_frame in (0, 1, 7, 25):
        start = int(80 * start_frame / 25)
        np.testing.assert_array_equal(audio.syncnet_mel_window(mel, start_frame), mel[:, start : start + 16])
    assert audio.syncnet_mel_window(mel, 7).shape == (80, 16)
    last = audio.num_syncnet_windows(100) - 1
    audio.syncnet_mel_window(mel, last)
    with pytest.raises(ValueError):
        audio.syncnet_mel_window(mel, last + 1)


def _different_channels(n: int, rate: int) -> np.ndarray:
    """Stereo [2, n]: unlike tones per channel, a quiet stretch and a peak past full scale on the left."""
    t = np.arange(n) / rate
    left = 0.6 * np.sin(2 * np.pi * 330 * t) + 0.002 * np.sin(2 * np.pi * 5000 * t)
    right = 0.25 * np.sin(2 * np.pi * 1250 * t + 1.0)
    left[n // 3 : n // 2] *= 1e-3  # quiet: here averaging floats and averaging int16 differ most
    left[n // 5 : n // 5 + 400] = 1.2  # clipped by the s16 conversion
    return np.stack([left, right]).astype(np.float32)


@pytest.mark.skipif(not has_encoder("aac"), reason="PyAV has no aac encoder here")
def test_load_wav_quantizes_each_channel_to_int16_then_averages_like_ffmpeg_and_librosa(tmp_path):
    path = tmp_path / "stereo.m4a"
    write_aac(path, _different_channels(24000, 16000))
    decoded = decoder_output(path)
    assert decoded.dtype == np.float32 and decoded.shape[0] == 2

    # ffmpeg's flt -> s16 (lrintf(x * 32768), clipped), then librosa: int / 32768 as float32, mean.
    pcm = np.clip(np.rint(decoded.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
    expected = np.mean(pcm.astype(np.float32) / np.float32(32768), axis=0)

    wav = audio.load_wav(path)
    assert wav.dtype == np.float32
    np.testing.assert_array_equal(wav, expected)
    # Not the float mean: the test can tell the two rules apart on this file.
    assert not np.array_equal(wav, decoded.mean(axis=0))


def test_load_wav_of_a_16k_stereo_pcm_wav_equals_librosa_load(tmp_path):
    path = tmp_path / "stereo.wav"
    rng = np.random.default_rng(3)
    pcm = rng.integers(-32768, 32768, size=(16000 + 33, 2), dtype=np.int16)
    pcm[:4000] //= 300  # quiet
    scipy.io.wavfile.write(path, 16000, pcm)
    # The released path for this file: ffmpeg copies the 16-bit samples, librosa reads them.
    released = librosa.load(path, sr=16000, mono=True)[0]
    np.testing.assert_array_equal(audio.load_wav(path), released)


def test_load_wav_averages_before_resampling_as_librosa_does(tmp_path):
    path = tmp_path / "stereo44k.wav"
    stereo = _different_channels(44100, 44100)
    scipy.io.wavfile.write(path, 44100, audio.to_int16(stereo.T.reshape(-1)).reshape(-1, 2))
    # At the source rate nothing is resampled: librosa's samples exactly.
    np.testing.assert_array_equal(audio.load_wav(path, sr=44100), librosa.load(path, sr=None, mono=True)[0])
    # At 16 kHz only the resampling filter differs (swresample here, soxr in librosa).
    wav, released = audio.load_wav(path), librosa.load(path, sr=16000, mono=True)[0]
    assert abs(wav.size - released.size) <= 1
    n = min(wav.size, released.size)
    assert np.abs(wav[400 : n - 400] - released[400 : n - 400]).max() < 0.02


@pytest.mark.skipif(not has_encoder("aac"), reason="PyAV has no aac encoder here")
def test_load_wav_keeps_the_aac_padding_past_the_declared_duration(tmp_path):
    path = tmp_path / "tone.mp4"
    n = 9261  # not a multiple of AAC's 1024-sample frame: the encoder pads the last one
    write_aac(path, _different_channels(n, 16000)[:1], video_frames=3)
    with av.open(str(path)) as container:
        track = container.streams.audio[0]
        declared = float(track.duration * track.time_base) * 16000
    decoded = decoder_output(path).shape[1]
    assert decoded > declared + 200  # the padding is longer than a mel step

    assert audio.load_wav(path).size == decoded


@pytest.mark.skipif(not has_encoder("aac"), reason="PyAV has no aac encoder here")
@pytest.mark.parametrize("rate", [16000, 44100])
def test_load_wav_max_samples_gives_the_prefix_of_the_whole_decode(tmp_path, rate):
    path = tmp_path / f"speech{rate}.m4a"
    write_aac(path, _different_channels(3 * rate, rate), rate=rate)
    whole = audio.load_wav(path)
    for max_samples in (1, 1000, 20011, whole.size - 1, whole.size, whole.size + 5000):
        np.testing.assert_array_equal(audio.load_wav(path, max_samples=max_samples), whole[:max_samples])
    with pytest.raises(ValueError, match="max_samples"):
        audio.load_wav(path, max_samples=0)


def test_save_wav_then_load_wav_gives_back_16_bit_samples_exactly(tmp_path):
    wav = np.random.default_rng(4).integers(-32768, 32768, 16001).astype(np.float32) / 32768
    audio.save_wav(wav, tmp_path / "out.wav", 16000)
    np.testing.assert_array_equal(audio.load_wav(tmp_path / "out.wav"), wav)


def _whole_signal_mel(wav: np.ndarray) -> np.ndarray:
    """The mel from one librosa STFT over the whole signal (the computation before blocks)."""
    y = scipy.signal.lfilter([1, -0.97], [1], wav.astype(np.float64))
    spec = librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800, center=True, pad_mode="constant")
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, np.dot(basis, np.abs(spec)))) - 20
    return np.clip(8 * ((db + 100) / 100) - 4, -4, 4).astype(np.float32)


@pytest.mark.filterwarnings("ignore:n_fft=800 is too large")
@pytest.mark.parametrize("n", [1, 399, 400, 401, 1000, 16000 + 137, 40000])
def test_melspectrogram_in_blocks_equals_one_whole_signal_stft(n):
    wav = (0.2 * np.random.default_rng(n).standard_normal(n)).astype(np.float32)
    reference = _whole_signal_mel(wav)
    for block_steps in (1, 3, 64, 1024, 10**6):
        np.testing.assert_array_equal(audio.melspectrogram(wav, block_steps=block_steps), reference)


@pytest.mark.parametrize("n_frames", [1, 2, 7, 26, 100])
def test_samples_for_frames_keep_the_mel_of_the_frames_windows(n_frames):
    wav = (0.2 * np.random.default_rng(n_frames).standard_normal(16000 * 5)).astype(np.float32)
    steps = audio.mel_steps_for_frames(n_frames)
    assert steps == int(80 * max(n_frames - 2, 0) / 25) + 16  # the last frame's window end
    cut = wav[: audio.samples_for_frames(n_frames)]
    np.testing.assert_array_equal(audio.melspectrogram(cut)[:, :steps], audio.melspectrogram(wav)[:, :steps])
    assert audio.num_full_windows(steps) == max(n_frames, 2)  # frames 0 and 1 share a window


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("channels", [1, 2])
def test_load_wav_refuses_non_finite_float_samples_naming_the_first_ones_time(tmp_path, bad, channels):
    """A float wav (packed, interleaved channels) with one bad sample at 22050 in the second
    channel: the 16-bit conversion would hide it, so it is refused at 22050 / 44100 = 0.500 s."""
    from scipy.io import wavfile

    wav = (0.1 * np.sin(np.arange(44100 * channels, dtype=np.float32) / 10)).reshape(44100, channels)
    wav[22050, channels - 1] = bad
    path = tmp_path / "bad.wav"
    wavfile.write(path, 44100, wav)
    with pytest.raises(MediaError, match=r"non-finite samples .* at 0\.500 s"):
        audio.load_wav(path)
    wav[22050, channels - 1] = 0.0
    wavfile.write(path, 44100, wav)
    assert audio.load_wav(path).shape == (16000,)  # the same file, repaired, loads (resampled to 16 kHz)
