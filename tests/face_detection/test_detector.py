"""S3FD through face-alignment, with random weights in the real `s3fd.pth` format (no network)."""

import os
import urllib.error

import cv2
import numpy as np
import pytest
import torch

from common.errors import CheckpointError, Diff2LipError
from face_detection import S3FD_FILENAME, FaceDetector, is_oom_error, s3fd_weights_path
from helpers import DATA_DIR


def random_s3fd_state_dict(seed=0, std=0.01):
    """Every tensor named in the manifest of the released s3fd.pth, float32 random values."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    with open(os.path.join(DATA_DIR, "s3fd.tsv")) as f:
        for line in f:
            name, shape = line.rstrip("\n").split("\t")
            dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
            state[name] = torch.randn(dims, generator=g) * std
    return state


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("s3fd") / S3FD_FILENAME
    torch.save(random_s3fd_state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def detector(weights_file):
    return FaceDetector(weights_path=weights_file, batch_size=2)


def rendered_faces(n=3, hw=(96, 128)):
    """Cartoon faces (skin ellipse, eyes, mouth) on grey, moving a little from frame to frame."""
    frames = np.full((n, *hw, 3), 90, np.uint8)
    for i, f in enumerate(frames):
        cx, cy = 60 + 3 * i, 48
        cv2.ellipse(f, (cx, cy), (24, 32), 0, 0, 360, (224, 172, 140), -1)
        for ex in (cx - 9, cx + 9):
            cv2.circle(f, (ex, cy - 8), 3, (30, 30, 30), -1)
        cv2.ellipse(f, (cx, cy + 14), (9, 4), 0, 0, 360, (150, 40, 50), -1)
    return frames


def test_real_format_detect(detector):
    frames = rendered_faces(3)
    out = detector.detect(frames)
    assert len(out) == 3
    for d in out:
        assert d is None or (len(d) == 4 and all(type(v) is int for v in d))
        if d is not None:
            x1, y1, x2, y2 = d
            assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 96
    assert detector.detect(list(frames)) == out  # a list of frames works the same


def test_network_sees_bgr_minus_means(detector):
    """RGB frames go in as RGB; face-alignment flips them to the BGR the network was trained on."""
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[...] = (200, 100, 50)  # R, G, B
    seen = []
    hook = detector._sfd.face_detector.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        detector.detect([frame])
    finally:
        hook.remove()
    x = seen[0]
    assert x.shape == (1, 3, 64, 64)
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([50 - 104.0, 100 - 117.0, 200 - 123.0]))


def test_first_detection_clipped_and_truncated(detector, monkeypatch):
    class Fake:
        def detect_from_batch(self, tensor):
            assert tensor.shape == (3, 3, 64, 128)
            return [
                np.array([[-3.7, 5.9, 200.2, 40.1, 0.9], [1, 1, 2, 2, 0.8]]),  # first one wins
                [],
                np.array([[150.0, 3.0, 170.0, 20.0, 0.95]]),  # entirely right of the frame
            ]

    monkeypatch.setattr(detector, "_sfd", Fake())
    monkeypatch.setattr(detector, "batch_size", 4)
    frames = np.zeros((3, 64, 128, 3), np.uint8)
    # x1 -3.7 -> 0, y1 5.9 -> 5, x2 200.2 -> 200 -> frame width 128, y2 40.1 -> 40
    assert detector.detect(frames) == [(0, 5, 128, 40), None, None]


def test_default_weights_found_under_torch_home(tmp_path, monkeypatch, weights_file):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = tmp_path / "hub" / "checkpoints" / S3FD_FILENAME
    assert s3fd_weights_path() == str(target)
    target.parent.mkdir(parents=True)
    target.write_bytes(open(weights_file, "rb").read())

    from face_alignment.detection.sfd import sfd_detector

    def no_download(*args, **kwargs):
        raise AssertionError("must load the local file, not download")

    monkeypatch.setattr(sfd_detector, "load_state_dict_from_url", no_download)
    det = FaceDetector()
    assert len(det.detect(rendered_faces(1))) == 1


def test_missing_weights_offline_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    from face_alignment.detection.sfd import sfd_detector

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(sfd_detector, "load_state_dict_from_url", unreachable)
    with pytest.raises(CheckpointError) as info:
        FaceDetector()
    msg = str(info.value)
    assert S3FD_FILENAME in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "--box" in msg and "\n" not in msg


def test_bad_weights_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        FaceDetector(weights_path=str(tmp_path / "nope.pth"))
    truncated = tmp_path / "truncated.pth"
    torch.save(random_s3fd_state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        FaceDetector(weights_path=str(truncated))
    wrong = tmp_path / "wrong.pth"
    state = random_s3fd_state_dict()
    del state["conv7_2_mbox_loc.bias"]
    torch.save(state, wrong)
    with pytest.raises(CheckpointError, match="not a readable S3FD state dict"):
        FaceDetector(weights_path=str(wrong))


# ---------------------------------------------------------------- out-of-memory halving


def test_oom_halves_and_keeps_batch_size(weights_file, monkeypatch):
    det = FaceDetector(weights_path=weights_file, batch_size=8)
    sizes = []

    def small_memory(batch):
        sizes.append(len(batch))
        if len(batch) > 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [(int(f[0, 0, 0]), 0, int(f[0, 0, 0]) + 5, 5) for f in batch]

    monkeypatch.setattr(det, "_detect_batch", small_memory)
    frames = np.zeros((10, 8, 8, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(10)
    out = det.detect(frames)
    assert out == [(i, 0, i + 5, 5) for i in range(10)]
    assert det.batch_size <= 3 and det.batch_size == 2
    assert sizes == [8, 4, 2, 2, 2, 2, 2]
    sizes.clear()
    assert det.detect(frames[:5]) == out[:5]
    assert sizes == [2, 2, 1]  # the settled size is kept


def test_oom_at_batch_one_and_other_errors(weights_file, monkeypatch):
    det = FaceDetector(weights_path=weights_file, batch_size=4)

    def always_oom(batch):
        raise torch.cuda.OutOfMemoryError("CUDA error: out of memory")

    monkeypatch.setattr(det, "_detect_batch", always_oom)
    with pytest.raises(Diff2LipError, match="out of memory on a single 8x8 frame"):
        det.detect(np.zeros((3, 8, 8, 3), np.uint8))
    assert det.batch_size == 1

    def broken(batch):
        raise RuntimeError("Expected 4-dimensional input")

    monkeypatch.setattr(det, "_detect_batch", broken)
    with pytest.raises(RuntimeError, match="4-dimensional"):
        det.detect(np.zeros((3, 8, 8, 3), np.uint8))


def test_is_oom_error():
    assert is_oom_error(RuntimeError("CUDA out of memory. Tried to allocate"))
    assert is_oom_error(torch.cuda.OutOfMemoryError("x"))
    assert not is_oom_error(RuntimeError("size mismatch"))
    assert not is_oom_error(ValueError("out of memory"))


def test_detection_scale_downsizes_frames_and_maps_boxes_back(monkeypatch):
    from face_detection import FaceDetector

    seen = []

    def fake_batch(self, batch):
        seen.append(batch.shape)
        return [(10, 20, 30, 41)] * len(batch)  # in the downscaled frame

    monkeypatch.setattr(FaceDetector, "_detect_batch", fake_batch)
    detector = FaceDetector.__new__(FaceDetector)
    detector.batch_size, detector.scale, detector.device = 4, 0.5, "cpu"
    frames = np.zeros((3, 120, 200, 3), np.uint8)
    assert detector.detect(frames) == [(20, 40, 60, 82)] * 3
    assert seen == [(3, 60, 100, 3)]
    detector.scale = 1.0
    assert detector.detect(frames) == [(10, 20, 30, 41)] * 3 and seen[-1] == (3, 120, 200, 3)


def test_the_default_scale_follows_the_frame_size_and_halves_for_frames_without_a_face():
    from face_detection.detector import AUTO_LONG_SIDE, RETRY_MIN_SIDE, BatchedDetector

    detector = BatchedDetector()  # scale 0: --face_det_scale's default
    assert (AUTO_LONG_SIDE, RETRY_MIN_SIDE) == (1280, 320)
    assert detector.scales((224, 224)) == [1.0]  # VoxCeleb2 / LRS2 frames: the released scale, no retry
    assert detector.scales((720, 1280)) == [1.0, 0.5, 0.25]  # long side 1280, 640, 320
    assert detector.scales((2160, 3840)) == [1 / 3, 1 / 6, 1 / 12]
    assert detector.scales((1920, 1080)) == [2 / 3, 1 / 3, 1 / 6]  # portrait: the long side counts
    detector.scale = 0.5  # a fixed --face_det_scale is the first scale
    assert detector.scales((720, 1280)) == [0.5, 0.25]


def test_a_cpu_call_holds_a_bounded_number_of_pixels_whatever_the_batch_size():
    from face_detection.detector import CPU_PIXEL_BUDGET, BatchedDetector

    detector = BatchedDetector()
    detector.batch_size = 64
    assert CPU_PIXEL_BUDGET == 2 * 1280 * 736
    assert detector.frames_per_call((720, 1280)) == 2
    assert detector.frames_per_call((2160, 3840)) == 2  # detected at 1/3: 1280x720 each
    assert detector.frames_per_call((224, 224)) == 37 and detector.frames_per_call((96, 96)) == 64
    detector.scale = 1.0
    assert detector.frames_per_call((2160, 3840)) == 1  # at least one frame
    detector.device = "cuda"  # a GPU's batch is bounded by its memory (halved on out-of-memory)
    assert detector.frames_per_call((2160, 3840)) == 64
    detector.device = torch.device("cpu")  # as the Generator passes it
    assert detector.frames_per_call((2160, 3840)) == 1
