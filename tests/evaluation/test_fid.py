"""FID: pytorch-fid's Inception loaded from a random-weight file in its real format, a small
injected network for the distance's behaviour, and the mouth crop rule."""

import urllib.error

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from common.errors import CheckpointError
from dataset.synthetic import draw_face
from evaluation.fid import (
    INCEPTION_FILENAME,
    FIDFeatures,
    fid_from_features,
    inception_weights_path,
    load_inception,
    mouth_region,
)
from face_detection import crop_face, voxceleb2_box
from helpers import random_inception_state_dict


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A torch home whose hub cache holds the random Inception file under pytorch-fid's name."""
    home = tmp_path_factory.mktemp("torch_home")
    target = home / "hub" / "checkpoints" / INCEPTION_FILENAME
    target.parent.mkdir(parents=True)
    torch.save(random_inception_state_dict(), target)
    return home


def offline(monkeypatch):
    """No network: torch.hub's download (what pytorch-fid's loader calls) fails as it does offline."""

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)


@pytest.fixture(scope="module")
def inception(torch_home):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(torch_home))
        offline(mp)  # it must load the cached file, not download
        return load_inception("cpu")


def faces(n, h=48, w=48, seed=0):
    """`[n, h, w, 3]` uint8 drawn faces, several identities and mouth openings."""
    return np.stack([draw_face(i, h, w, seed + i % 5) for i in range(n)])


def test_inception_matches_pytorch_fid_pipeline(inception, torch_home, tmp_path):
    """Our features of uint8 frames == pytorch-fid's `get_activations` on the same frames as PNG
    files (its PIL -> ToTensor path), for batch sizes 1 and 7."""
    from pytorch_fid.fid_score import get_activations
    from pytorch_fid.inception import InceptionV3

    assert isinstance(inception, InceptionV3) and not inception.training
    saved = torch.load(torch_home / "hub" / "checkpoints" / INCEPTION_FILENAME)
    assert torch.equal(inception.blocks[0][0].conv.weight, saved["Conv2d_1a_3x3.conv.weight"])
    frames = faces(8, 40, 56)
    files = []
    for i, f in enumerate(frames):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(f).save(files[-1])
    want = get_activations(files, inception, batch_size=4, dims=2048, device="cpu", num_workers=0)

    one = FIDFeatures(batch_size=1, model=inception).features(iter(frames))
    seven = FIDFeatures(batch_size=7, model=inception).features(frames)
    assert one.shape == seven.shape == (8, 2048) and one.dtype == np.float64
    scale = np.abs(want).max()
    assert 0.1 < scale < 1e3  # O(1) features: the tolerances below mean something
    np.testing.assert_allclose(one, seven, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(seven, want, rtol=0, atol=1e-5 * scale)
    assert np.abs(one[0] - one[1]).max() > 1e-3 * scale  # different frames, different features


class TinyFeatures(nn.Module):
    """A fixed random conv net called like pytorch-fid's InceptionV3: [B, 3, H, W] in [0, 1] ->
    [[B, 16, h, w]] (FIDFeatures averages the map, as pytorch-fid does for its smaller blocks)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(3, 16, 5, stride=2), nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2), nn.ReLU())

    def forward(self, x):
        return [self.net(2 * x - 1)]


def noisy(frames, sigma, seed=1):
    rng = np.random.default_rng(seed)
    return np.clip(frames + rng.normal(0, sigma, frames.shape), 0, 255).astype(np.uint8)


def test_fid_zero_for_same_set_and_grows_with_noise():
    extractor = FIDFeatures(batch_size=16, model=TinyFeatures())
    real = faces(96)
    f_real = extractor.features(real)
    scale = np.trace(np.cov(f_real, rowvar=False))
    assert scale > 0
    assert abs(fid_from_features(f_real, f_real)) < 1e-6 * scale
    fids = [fid_from_features(f_real, extractor.features(noisy(real, s))) for s in (0, 10, 30)]
    assert fids[0] < 1e-6 * scale  # sigma 0: the same frames
    assert fids[0] < fids[1] < fids[2]
    assert fids[1] > 1e-3 * scale  # noise of 10 grey levels is visible to the features


def test_batching_and_mixed_sizes_do_not_change_features():
    model = TinyFeatures()
    frames = [draw_face(i, 40 + 8 * (i % 3 == 0), 48, seed=i) for i in range(10)]  # 48x48 and 40x48 mixed
    one = FIDFeatures(batch_size=1, model=model).features(frames)
    seven = FIDFeatures(batch_size=7, model=model).features(iter(frames))
    assert one.shape == (10, 16)
    np.testing.assert_allclose(one, seven, rtol=0, atol=1e-5 * np.abs(one).max())


def test_fid_from_features_known_values():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0, 1.0])
    # Same covariance: FID = |mean difference|^2.
    assert fid_from_features(f, f + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    # Doubled spread about the mean: Tr(S + 4S - 2 * 2S) = Tr(S).
    doubled = 2 * (f - f.mean(0)) + f.mean(0)
    assert fid_from_features(f, doubled) == pytest.approx(np.trace(np.cov(f, rowvar=False)), rel=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        fid_from_features(f[:1], f)


def test_features_rejects_bad_frames():
    extractor = FIDFeatures(model=TinyFeatures())
    with pytest.raises(ValueError, match="uint8"):
        extractor.features([np.zeros((32, 32, 3), np.float32)])
    with pytest.raises(ValueError, match="no frames"):
        extractor.features([])


def test_missing_weights_offline_raise(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    offline(monkeypatch)
    with pytest.raises(CheckpointError) as info:
        FIDFeatures()
    msg = str(info.value)
    assert INCEPTION_FILENAME in msg and str(tmp_path / "hub" / "checkpoints") in msg and "\n" not in msg


def test_truncated_weights_raise(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    offline(monkeypatch)
    path = tmp_path / "hub" / "checkpoints" / INCEPTION_FILENAME
    path.parent.mkdir(parents=True)
    torch.save({"w": torch.zeros(3)}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable FID Inception state dict"):
        load_inception()
    assert inception_weights_path() == str(path)


def test_mouth_region():
    frame = np.random.default_rng(0).integers(0, 256, (120, 100, 3), dtype=np.uint8)
    y1, y2, x1, x2 = voxceleb2_box(120, 100)  # (0, 85, 22, 78)
    crop = mouth_region(frame)
    assert crop.shape == (y2 - (y1 + (y2 - y1) // 2), x2 - x1, 3) == (43, 56, 3)
    np.testing.assert_array_equal(crop, frame[42:85, 22:78])
    np.testing.assert_array_equal(mouth_region(frame, (10, 31, 5, 40)), frame[20:31, 5:40])
    # At the network's size: the lower half of the face crop, the half Diff2Lip inpaints.
    np.testing.assert_array_equal(mouth_region(frame, (10, 31, 5, 40), size=33), crop_face(frame, (10, 31, 5, 40), 33)[16:])
    with pytest.raises(ValueError, match="not inside"):
        mouth_region(frame, (10, 130, 5, 40))


def test_mouth_fid_uses_the_same_functions():
    """Mouth FID: identical lower halves give 0 even when the upper faces differ."""
    extractor = FIDFeatures(model=TinyFeatures())
    real = faces(40, 64, 64)
    gen = real.copy()
    box = voxceleb2_box(64, 64)
    gen[:, : box[0] + (box[1] - box[0]) // 2] = noisy(gen[:, : box[0] + (box[1] - box[0]) // 2], 30)
    f_real = extractor.features(mouth_region(f, size=32) for f in real)
    f_gen = extractor.features(mouth_region(f, size=32) for f in gen)
    assert f_real.shape == (40, 16)
    assert fid_from_features(f_real, f_gen) < 1e-6 * np.trace(np.cov(f_real, rowvar=False))
    full_real, full_gen = extractor.features(real), extractor.features(gen)
    assert fid_from_features(full_real, full_gen) > 1e-3 * np.trace(np.cov(full_real, rowvar=False))
