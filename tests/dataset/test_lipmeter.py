"""The lip meter (dataset/lipmeter.py): the loudness -> opening map the renderer draws with, the
mouth read back from pixels (clean, blurred and noisy, in a face crop, H.264-decoded, and a mouth
drawn by hand to known sizes), and the lip-sync score of a real encoded clip."""

import cv2
import numpy as np
import pytest

from audio.audio import load_wav
from dataset import lipmeter
from dataset.lipmeter import (
    OPENING_MAX_FRAC,
    WIDTH_MAX_FRAC,
    WIDTH_MIN_FRAC,
    frame_rms,
    implied_opening_from_audio,
    lip_sync_score,
    measure_mouth,
    measure_video,
    opening_from_rms,
    pearson,
)
from dataset.synthetic import render_clip, synthesize_clip
from dataset.video_io import VideoWriter, iter_frames
from face_detection import voxceleb2_box

SECONDS = 2.0
N_FRAMES = 50


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    cv2.setNumThreads(1)
    yield


@pytest.fixture(scope="module")
def clips():
    """Three identities' clips in memory (identity seeds chosen to cover light and dark skin)."""
    return [synthesize_clip(identity, 100 + identity, SECONDS) for identity in (1, 2, 3)]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """A rendered clip as H.264 + AAC on disk, and its saved targets."""
    path = tmp_path_factory.mktemp("lipmeter") / "00001.mp4"
    targets = render_clip(path, 4, 104, SECONDS)
    return path, targets


# ---------------------------------------------------------------- audio -> opening


def rms_by_hand(wav, n_frames, fps, sample_rate=16000):
    """The documented window: 40 ms (640 samples at 16 kHz) centred on k / fps, zeros outside."""
    half = int(round(0.04 * sample_rate / 2))
    out = []
    for k in range(n_frames):
        centre = int(round(k * sample_rate / fps))
        window = [wav[i] if 0 <= i < len(wav) else 0.0 for i in range(centre - half, centre + half)]
        out.append(np.sqrt(np.mean(np.square(window))))
    return np.array(out)


@pytest.mark.parametrize("fps, n_frames", [(25, 30), (30, 40)])
def test_frame_rms_is_the_rms_of_a_centred_40ms_window_with_zeros_outside(fps, n_frames):
    rng = np.random.default_rng(fps)
    wav = rng.uniform(-0.5, 0.5, 16000 + 123).astype(np.float32)  # shorter than 40 frames at 30 fps
    got = frame_rms(wav, n_frames, fps)
    assert got.dtype == np.float64 and got.shape == (n_frames,)
    np.testing.assert_allclose(got, rms_by_hand(wav.astype(np.float64), n_frames, fps), rtol=1e-9, atol=1e-12)
    # Frame 0 sees only the second half of its window: the audio starts at its centre.
    np.testing.assert_allclose(got[0], np.sqrt(np.sum(wav[:320].astype(np.float64) ** 2) / 640))
    assert frame_rms(wav, 0).shape == (0,)


def test_opening_map_is_the_documented_clip_of_loudness():
    np.testing.assert_allclose(opening_from_rms([0.0, 0.01, 0.055, 0.1, 0.5]), [0.0, 0.0, 0.5, 1.0, 1.0])
    # A steady tone at RMS 0.055 reads as half open, silence as closed, frames past the end too.
    t = np.arange(16000) / 16000
    wav = np.concatenate([0.055 * np.sqrt(2) * np.sin(2 * np.pi * 200 * t), np.zeros(8000)])
    opening = implied_opening_from_audio(wav, 40)
    np.testing.assert_allclose(opening[2:24], 0.5, atol=0.01)
    np.testing.assert_allclose(opening[27:], 0.0)


def test_implied_opening_rises_with_loudness_and_saturates():
    t = np.arange(16000 * 2) / 16000
    # Loudness ramping from silence to twice the full-loudness RMS over two seconds.
    ramp = np.linspace(0, 0.2, t.size) * np.sqrt(2) * np.sin(2 * np.pi * 150 * t)
    opening = implied_opening_from_audio(ramp, 50)
    assert opening.min() == 0.0 and opening.max() == 1.0
    assert (np.diff(opening[2:-2]) >= -0.02).all()  # monotone up to the sine's ripple
    np.testing.assert_allclose(opening, opening_from_rms(frame_rms(ramp, 50)))
    # Louder than RMS_REF stays fully open: the constants are absolute, not relative to the clip.
    assert (opening[30:48] == 1.0).all()


# ---------------------------------------------------------------- pixels -> (opening, width)


SKIN, LIPS = (220, 180, 150), (200, 60, 70)


def drawn_mouth(lip_cols, interior_rows, size=200):
    """A skin frame with a rectangular mouth centred at (100, 150): red lips 28 rows high and
    `lip_cols` wide, and a dark interior `interior_rows` high in their middle."""
    frame = np.full((size, size, 3), SKIN, np.uint8)
    left = 100 - lip_cols // 2
    frame[136:164, left : left + lip_cols] = LIPS
    if interior_rows:
        top = 150 - interior_rows // 2
        frame[top : top + interior_rows, 85:115] = lipmeter.INTERIOR_RGB
    return frame


@pytest.mark.parametrize("lip_cols, interior_rows", [(58, 14), (58, 0), (74, 20), (46, 8)])
def test_a_mouth_drawn_to_known_sizes_measures_the_documented_fractions(lip_cols, interior_rows):
    box = (0, 200, 0, 200)
    opening, width = measure_mouth(drawn_mouth(lip_cols, interior_rows), box)
    # opening = interior height / (OPENING_MAX_FRAC * box height); width = outer lip width as a
    # fraction of the box, mapped from [WIDTH_MIN_FRAC, WIDTH_MAX_FRAC] to [0, 1].
    assert opening == pytest.approx(interior_rows / (OPENING_MAX_FRAC * 200), abs=0.01)
    assert width == pytest.approx((lip_cols / 200 - WIDTH_MIN_FRAC) / (WIDTH_MAX_FRAC - WIDTH_MIN_FRAC), abs=0.01)


def test_the_measurement_follows_the_box_not_the_frame():
    # The same mouth in a frame twice as large, with the box around the original area.
    small = drawn_mouth(58, 14)
    big = np.full((400, 400, 3), (90, 120, 200), np.uint8)  # a blue background outside the box
    big[100:300, 150:350] = small
    assert measure_mouth(big, (100, 300, 150, 350)) == pytest.approx(measure_mouth(small, (0, 200, 0, 200)), abs=1e-6)


def test_meter_rejects_frames_that_are_not_rgb_uint8_and_empty_boxes():
    frame = drawn_mouth(58, 14)
    with pytest.raises(ValueError, match=r"RGB uint8 \[H, W, 3\], got uint8 \(200, 200\)"):
        measure_mouth(frame[:, :, 0])
    with pytest.raises(ValueError, match=r"box \(10, 10, 0, 50\) is empty"):
        measure_mouth(frame, (10, 10, 0, 50))


def _measure(frames):
    return np.array([measure_mouth(f) for f in frames]).T


def test_meter_recovers_targets_from_clean_frames(clips):
    for clip in clips:
        opening, width = _measure(clip.frames)
        assert pearson(opening, clip.targets.opening) >= 0.95
        assert pearson(width, clip.targets.width) >= 0.8
        # Calibrated, not only correlated: the values themselves are close to the targets.
        assert np.abs(opening - clip.targets.opening).mean() < 0.02
        assert np.abs(width - clip.targets.width).mean() < 0.03


def test_meter_is_robust_to_blur_and_noise(clips):
    rng = np.random.default_rng(0)
    for clip in clips:
        degraded = [
            np.clip(cv2.GaussianBlur(f, (0, 0), 1.5) + rng.normal(0, 4, f.shape), 0, 255).astype(np.uint8)
            for f in clip.frames
        ]
        opening, width = _measure(degraded)
        assert pearson(opening, clip.targets.opening) >= 0.98
        assert pearson(width, clip.targets.width) >= 0.95
        assert np.abs(opening - clip.targets.opening).mean() < 0.1


def test_meter_in_a_face_crop(clips):
    """Generated faces come as resized crops: the box makes the normalisation follow the crop."""
    y1, y2, x1, x2 = voxceleb2_box(224, 224)
    for clip in clips:
        crops = [cv2.resize(f[y1:y2, x1:x2], (128, 128), interpolation=cv2.INTER_AREA) for f in clip.frames]
        opening, width = np.array([measure_mouth(c, box=(0, 128, 0, 128)) for c in crops]).T
        assert pearson(opening, clip.targets.opening) >= 0.99 and pearson(width, clip.targets.width) >= 0.99
        assert np.abs(opening - clip.targets.opening).mean() < 0.02
        assert np.abs(width - clip.targets.width).mean() < 0.03


def test_no_mouth_measures_zero():
    grey = np.full((224, 224, 3), 128, np.uint8)
    assert measure_mouth(grey) == (0.0, 0.0)
    with pytest.raises(ValueError, match="uint8"):
        measure_mouth(grey.astype(np.float32))


def test_encoded_clip_measures_its_targets_and_scores_its_own_audio(encoded):
    path, targets = encoded
    opening, width = measure_video(path)
    assert pearson(opening, targets.opening) >= 0.95
    assert pearson(width, targets.width) >= 0.8

    # The AAC round trip keeps the loudness envelope: the audio alone implies the lips.
    implied = implied_opening_from_audio(load_wav(path), N_FRAMES)
    assert pearson(implied, targets.opening) >= 0.95
    assert lip_sync_score(path, implied) >= 0.95
    # Other speech (or the same speech late by 5 frames) does not drive these lips.
    other = synthesize_clip(4, 105, SECONDS)
    assert lip_sync_score(path, implied_opening_from_audio(other.audio, N_FRAMES)) < 0.5
    assert lip_sync_score(path, np.concatenate([np.zeros(5), implied[:-5]])) < 0.5


def test_measure_video_is_measure_mouth_of_every_decoded_frame(tmp_path):
    frames = [drawn_mouth(46 + 4 * k, 2 * k) for k in range(6)]
    with VideoWriter(str(tmp_path / "m.mp4"), fps=25) as writer:
        for frame in frames:
            writer.write(frame)
    decoded = list(iter_frames(tmp_path / "m.mp4"))
    opening, width = measure_video(tmp_path / "m.mp4", box=(0, 200, 0, 200))
    assert opening.shape == width.shape == (6,) and opening.dtype == np.float64
    expected = np.array([measure_mouth(f, (0, 200, 0, 200)) for f in decoded])
    np.testing.assert_array_equal(np.stack([opening, width], 1), expected)
    # Through H.264 the drawn sizes still read back within a few hundredths.
    np.testing.assert_allclose(opening, [2 * k / 28 for k in range(6)], atol=0.04)


def test_lip_sync_score_uses_only_the_frames_both_series_have(encoded):
    path, targets = encoded
    implied = implied_opening_from_audio(load_wav(path), N_FRAMES)
    longer = np.concatenate([implied, np.random.default_rng(0).uniform(0, 1, 30)])
    assert lip_sync_score(path, longer) == pytest.approx(lip_sync_score(path, implied), abs=1e-12)
    measured, _ = measure_video(path)
    assert lip_sync_score(path, implied[:20]) == pytest.approx(pearson(measured[:20], implied[:20]), abs=1e-12)
    # A correlation: a model that opens twice as far, plus a little, scores the same.
    assert lip_sync_score(path, 2 * implied + 0.1) == pytest.approx(lip_sync_score(path, implied), abs=1e-9)


def test_pearson_edge_cases_constant_and_mismatched_series():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) == 0.0  # a frozen mouth shows no sync
    with pytest.raises(ValueError, match="one length"):
        pearson([1, 2], [1, 2, 3])



def test_pearson_equals_numpys_correlation_and_is_zero_below_two_values():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=40), rng.normal(size=40)
    b += 0.7 * a
    assert pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)
    assert pearson(3 * a - 2, b) == pytest.approx(pearson(a, b), abs=1e-12)
    assert pearson(-a, b) == pytest.approx(-pearson(a, b), abs=1e-12)
    assert pearson([1.0], [2.0]) == 0.0 and pearson([], []) == 0.0
