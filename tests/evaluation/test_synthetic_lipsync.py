"""Tests for evaluation/synthetic_lipsync.py: on clips whose lip-sync is known by construction (a
face drawn with another clip's mouth targets is perfectly synced to that clip's audio), the
scores, controls, reconstruction metrics and sheets come out as they must."""

import os
import shutil

import cv2
import numpy as np
import pytest

from dataset.synthetic import Talker, render_clip
from dataset.video_io import VideoWriter, iter_frames
from evaluation import sheets
from evaluation import synthetic_lipsync as sl

SECONDS = 4.0
IDENTITIES = (11, 12, 13)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    cv2.setNumThreads(1)
    yield


@pytest.fixture(scope="module")
def cross_set(tmp_path_factory):
    """Three clips (one per identity) and a sample dir where the clip generated for the pair
    (audio k, video k+1) is video k+1's face drawn with clip k's mouth: perfect lip-sync."""
    root = tmp_path_factory.mktemp("synthetic")
    samples = tmp_path_factory.mktemp("samples")
    names = [f"id{i:05d}/clip00/00001" for i in IDENTITIES]
    targets = []
    for identity, name in zip(IDENTITIES, names):
        os.makedirs(root / os.path.dirname(name))
        targets.append(render_clip(root / f"{name}.mp4", identity, 500 + identity, SECONDS))
    pairs = [(names[k], names[(k + 1) % 3]) for k in range(3)]
    for k, (audio, video) in enumerate(pairs):
        talker = Talker(IDENTITIES[(k + 1) % 3])
        with VideoWriter(sl.generated_path(str(samples), (audio, video)), fps=25) as writer:
            for frame in talker.frames(500 + IDENTITIES[k], targets[k]):
                writer.write(frame)
    return root, samples, pairs


def test_perfect_lip_sync_scores_near_one_and_the_controls_do_not(cross_set):
    root, samples, pairs = cross_set
    scores = sl.cross_scores(str(samples), str(root), pairs)
    assert scores.pairs == pairs
    assert min(scores.lip_sync) > 0.98, scores.lip_sync
    # The wrong audio and the unedited video source are other syllable patterns: far below.
    assert max(scores.wrong_audio) < 0.5 and max(scores.source) < 0.5, (scores.wrong_audio, scores.source)
    mean = scores.mean
    assert mean["lip_sync"] == pytest.approx(np.mean(scores.lip_sync))
    assert mean["lip_sync"] - mean["wrong_audio"] > 0.5
    with pytest.raises(ValueError, match="at least two pairs"):
        sl.cross_scores(str(samples), str(root), pairs[:1])


def test_reconstruction_of_an_identical_clip_is_perfect_and_of_another_is_not(cross_set, tmp_path):
    root, _, pairs = cross_set
    name, other = pairs[0][0], pairs[0][1]
    shutil.copy(root / f"{name}.mp4", sl.generated_path(str(tmp_path), (name, name)))
    psnr, ssim = sl.reconstruction_scores(str(tmp_path), str(root), [(name, name)])
    assert psnr == float("inf") and ssim == pytest.approx(1.0, abs=1e-9)
    # The other identity's clip in its place: an independent per-frame computation agrees.
    shutil.copy(root / f"{other}.mp4", sl.generated_path(str(tmp_path), (name, name)))
    psnr, ssim = sl.reconstruction_scores(str(tmp_path), str(root), [(name, name)])
    a = np.stack(list(iter_frames(root / f"{other}.mp4"))).astype(np.float64)
    b = np.stack(list(iter_frames(root / f"{name}.mp4"))).astype(np.float64)
    expected_psnr = np.mean(10 * np.log10(255.0**2 / ((a - b) ** 2).mean(axis=(1, 2, 3))))
    assert psnr == pytest.approx(expected_psnr, rel=1e-9) and 0 < ssim < 0.9


def test_mouth_scores_are_those_of_the_mouth_region_and_blur_lowers_sharpness(cross_set, tmp_path):
    from dataset.lipmeter import mouth_region

    root, _, pairs = cross_set
    name = pairs[0][0]
    original = np.stack(list(iter_frames(root / f"{name}.mp4")))
    shutil.copy(root / f"{name}.mp4", sl.generated_path(str(tmp_path), (name, name)))
    psnr, sharpness = sl.mouth_scores(str(tmp_path), str(root), [(name, name)])
    assert psnr == float("inf") and sharpness == pytest.approx(1.0, abs=1e-12)
    # The same clip at half resolution, upscaled (what a 64 px network's crop pasted into a 128 px
    # face looks like): blurred, so less high-frequency energy; its mouth PSNR as numpy computes it.
    with VideoWriter(sl.generated_path(str(tmp_path), (name, name)), fps=25) as writer:
        for frame in original:
            writer.write(cv2.resize(cv2.resize(frame, (112, 112), interpolation=cv2.INTER_AREA), (224, 224)))
    psnr, sharpness = sl.mouth_scores(str(tmp_path), str(root), [(name, name)])
    blurred = np.stack(list(iter_frames(sl.generated_path(str(tmp_path), (name, name))))).astype(np.float64)
    rows, cols = mouth_region(224, 224)
    # The VoxCeleb2 crop's rows 0..158, cols 50..174: rows 0.55..0.98 and cols 0.22..0.78 of it.
    assert (rows.start, rows.stop, cols.start, cols.stop) == (87, 155, 77, 147)
    mse = ((blurred[:, rows, cols] - original[:, rows, cols]) ** 2).mean()
    assert psnr == pytest.approx(10 * np.log10(255.0**2 / mse), rel=1e-9)
    laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float32)

    def energy(frames):  # the Laplacian by hand: filter2D with an explicit kernel, same border
        luma = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.mean([(cv2.filter2D(f, cv2.CV_32F, laplacian) ** 2).mean() for f in luma])

    expected = energy(blurred[:, rows, cols]) / energy(original[:, rows, cols].astype(np.float64))
    assert sharpness == pytest.approx(expected, rel=1e-4) and sharpness < 0.6


def test_sheet_rows_are_video_generated_and_audio_source_frames(cross_set, tmp_path):
    root, samples, pairs = cross_set
    path = tmp_path / "sub" / "sheet.png"
    sl.sheet(str(path), str(samples), str(root), pairs[0], rows=4)
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    band, left = sheets.LABEL_BAND, sheets.ROW_LABEL_WIDTH
    assert image.shape == (band + 4 * 224, left + 3 * 224, 3)
    generated = list(iter_frames(sl.generated_path(str(samples), pairs[0])))
    picks = np.linspace(0, len(generated) - 1, 4).round().astype(int)
    video = list(iter_frames(root / f"{pairs[0][1]}.mp4"))
    audio_source = list(iter_frames(root / f"{pairs[0][0]}.mp4"))
    for row, i in enumerate(picks):
        cells = image[band + row * 224 : band + (row + 1) * 224, left:]
        assert np.array_equal(cells[:, :224], video[i])
        assert np.array_equal(cells[:, 224:448], generated[i])
        assert np.array_equal(cells[:, 448:], audio_source[i])
    # Each column and row has its label: dark text pixels on the white bands, one cluster per column.
    for c in range(3):
        assert (image[:band, left + c * 224 : left + (c + 1) * 224] < 128).any()
    assert all((image[band + r * 224 : band + (r + 1) * 224, :left] < 128).any() for r in range(4))
    assert os.listdir(path.parent) == ["sheet.png"]  # no temporary file left behind


def test_read_pairs(tmp_path):
    (tmp_path / "list.txt").write_text("a/b/c d/e/f\n\ng/h/i j/k/l\n")
    assert sl.read_pairs(str(tmp_path / "list.txt")) == [("a/b/c", "d/e/f"), ("g/h/i", "j/k/l")]
    (tmp_path / "bad.txt").write_text("a/b/c\n")
    with pytest.raises(ValueError, match="expected 'AUDIO VIDEO'"):
        sl.read_pairs(str(tmp_path / "bad.txt"))
