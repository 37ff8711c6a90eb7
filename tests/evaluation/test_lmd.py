"""LMD: the distance itself, the mouth selection, the frame pipeline with an injected landmark
function on a rendered clip, and face-alignment's 2D FAN loaded from a random-weight file in its
real format."""

import os
import urllib.error

import numpy as np
import pytest
import torch

from common.errors import CheckpointError, MediaError
from dataset.video_io import iter_frames
from evaluation.lmd import FAN_FILENAME, MOUTH, MouthLandmarks, fan_weights_path, lmd, lmd_of_frames, mouth_points
from face_detection import voxceleb2_box
from helpers import render_clip

LIP_RGB = np.array([150, 40, 60])  # draw_face's mouth colour


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def test_lmd_values():
    rng = np.random.default_rng(0)
    real = rng.uniform(0, 200, (6, 20, 2))
    assert lmd(real, real) == 0.0
    assert lmd(real + np.array([3.0, 4.0]), real) == pytest.approx(5.0, abs=1e-12)
    # Per-point distances 0 and 10 in one frame: the mean is over points as well as frames.
    gen = real.copy()
    gen[:, :10] += np.array([6.0, 8.0])
    assert lmd(gen, real) == pytest.approx(5.0, abs=1e-12)
    # normalise: frame i's distances divided by its length (here 5 px shifts over widths 10 and 5).
    two = real[:2]
    assert lmd(two + np.array([3.0, 4.0]), two, normalise=np.array([10.0, 5.0])) == pytest.approx(0.75)
    assert lmd(two + np.array([3.0, 4.0]), two, normalise=100.0) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="one shape"):
        lmd(real, real[:3])
    with pytest.raises(ValueError, match="> 0"):
        lmd(two, two, normalise=np.array([1.0, 0.0]))


def test_mouth_points_are_48_to_67():
    full = np.arange(3 * 68 * 2, dtype=np.float64).reshape(3, 68, 2)
    mouth = mouth_points(full)
    assert mouth.shape == (3, 20, 2)
    np.testing.assert_array_equal(mouth[:, 0], full[:, 48])
    np.testing.assert_array_equal(mouth[:, -1], full[:, 67])
    assert (MOUTH.start, MOUTH.stop) == (48, 68)
    with pytest.raises(ValueError, match="68-point"):
        mouth_points(full[:, :60])


def lip_landmarks(frame, xyxy):
    """A stand-in for the FAN: 68 points at fixed offsets around the centroid of the lip-coloured
    pixels inside the box, so moving the mouth by (dx, dy) moves every point by (dx, dy)."""
    x1, y1, x2, y2 = xyxy
    patch = frame[y1:y2, x1:x2].astype(np.int64)
    ys, xs = np.nonzero(np.abs(patch - LIP_RGB).sum(axis=2) < 60)
    assert len(xs) > 20, "the mouth must be found"
    centre = np.array([xs.mean() + x1, ys.mean() + y1])
    offsets = np.stack([np.cos(np.arange(68)), np.sin(np.arange(68))], axis=1) * 7
    return centre + offsets


class BoxDetector:
    """A detector stand-in that records its batches and finds the VoxCeleb2 crop, or nothing."""

    def __init__(self, batch_size, missing=()):
        self.batch_size = batch_size
        self.missing = set(missing)
        self.calls = []
        self.seen = 0

    def detect(self, frames):
        self.calls.append(len(frames))
        out = []
        for f in frames:
            y1, y2, x1, x2 = voxceleb2_box(*f.shape[:2])
            out.append(None if self.seen in self.missing else (x1, y1, x2, y2))
            self.seen += 1
        return out


@pytest.fixture(scope="module")
def clip_frames(tmp_path_factory):
    path = tmp_path_factory.mktemp("lmd") / "clip.mp4"
    render_clip(path, n_frames=10, height=128, width=128, with_audio=False)
    return list(iter_frames(str(path)))


def shifted(frames, dx, dy):
    """Frames moved right by dx and down by dy (the drawn face stays well inside the box)."""
    return [np.roll(f, (dy, dx), axis=(0, 1)) for f in frames]


def test_pipeline_with_injected_landmarks(clip_frames):
    real = clip_frames
    gen = shifted(real, 3, 4)
    box = voxceleb2_box(128, 128)
    model = MouthLandmarks(landmark_fn=lip_landmarks, detector=BoxDetector(batch_size=3))
    assert lmd_of_frames(iter(real), iter(real), model, boxes=[box] * 10) == 0.0
    assert lmd_of_frames(iter(gen), iter(real), model, boxes=[box] * 10) == pytest.approx(5.0, abs=1e-9)
    width = box[3] - box[2]
    assert lmd_of_frames(gen, real, model, boxes=np.tile(box, (10, 1)), normalise_by_box_width=True) == pytest.approx(5.0 / width, abs=1e-12)
    assert model.detector.calls == []  # known boxes: no detection

    # Without boxes: detection on the real frames, in detector batches, the real box for both.
    gen_pts, real_pts, used = model.pairs(gen, real)
    assert model.detector.calls == [3, 3, 3, 1]
    assert gen_pts.shape == real_pts.shape == (10, 20, 2)
    np.testing.assert_array_equal(used, np.tile(box, (10, 1)))
    np.testing.assert_allclose(gen_pts - real_pts, np.broadcast_to([3.0, 4.0], (10, 20, 2)), atol=1e-9)
    # The face sways by up to 3 px in the clip: the points are measured, not constant.
    assert np.ptp(real_pts[:, 0, 0]) > 1.0


def test_pipeline_errors(clip_frames):
    model = MouthLandmarks(landmark_fn=lip_landmarks, detector=BoxDetector(batch_size=4, missing={5}))
    with pytest.raises(MediaError, match="real frame 5"):
        model.pairs(clip_frames, clip_frames)
    box = voxceleb2_box(128, 128)
    with pytest.raises(ValueError):
        model.pairs(clip_frames[:9], clip_frames, boxes=[box] * 10)
    with pytest.raises(ValueError, match="boxes ends"):
        model.pairs(clip_frames, clip_frames, boxes=[box] * 9)
    with pytest.raises(ValueError, match="more entries"):
        model.pairs(clip_frames, clip_frames, boxes=[box] * 11)


def offline(monkeypatch):
    """No network: face-alignment's download fails as it does offline."""
    import face_alignment.utils

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(face_alignment.utils, "download_url_to_file", unreachable)


def test_fan_filename_is_face_alignments():
    from face_alignment.api import models_urls

    assert os.path.basename(models_urls["2DFAN-4"]) == FAN_FILENAME


def test_missing_fan_weights_raise(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    offline(monkeypatch)
    with pytest.raises(CheckpointError) as info:
        MouthLandmarks()
    msg = str(info.value)
    assert FAN_FILENAME in msg and str(tmp_path / "hub" / "checkpoints") in msg and "\n" not in msg


def test_random_fan_in_real_format(tmp_path, monkeypatch, clip_frames):
    """A random-weight 2D FAN saved where face-alignment looks, loaded by face-alignment itself."""
    from face_alignment.models import FAN

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    offline(monkeypatch)  # it must load the cached file, not download
    torch.manual_seed(0)
    path = tmp_path / "hub" / "checkpoints" / FAN_FILENAME
    path.parent.mkdir(parents=True)
    torch.save(FAN(4).state_dict(), path)
    assert fan_weights_path() == str(path)

    model = MouthLandmarks(detector=BoxDetector(batch_size=2))
    gen_pts, real_pts, _ = model.pairs(clip_frames[:1], clip_frames[:1])
    assert real_pts.shape == (1, 20, 2) and np.isfinite(real_pts).all()
    # Points lie in face-alignment's crop for the box: centre raised by 0.12 of the box height,
    # side 200 * scale with scale (w + h) / 195; give or take two 64-px heatmap cells.
    y1, y2, x1, x2 = voxceleb2_box(128, 128)
    scale = (x2 - x1 + y2 - y1) / 195
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2 - 0.12 * (y2 - y1)])
    assert (np.abs(real_pts - centre) <= 100 * scale + 2 * 200 * scale / 64).all()
    assert lmd(gen_pts, real_pts) == 0.0

    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable 2D FAN state dict"):
        MouthLandmarks()
