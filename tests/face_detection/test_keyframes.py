"""Tests for face_detection/keyframes.py: detection on keyframes with the frames between filled.

The detector is a real `BatchedDetector` (its batching, scaling and retries) whose network is
exact: it finds white squares on a dark frame. So per-frame detection is the truth, and the
keyframe scan is compared with it box by box."""

import cv2
import numpy as np
import pytest

from face_detection import scan_faces
from face_detection.detector import BatchedDetector
from face_detection.keyframes import interpolate_faces, match_faces, scan_keyframes
from face_detection.tracking import scene_cuts

H, W = 180, 320


class SquareDetector(BatchedDetector):
    """Every white region of a frame as a face (score 1), biggest first; records the frames and the
    width each call saw."""

    name = "squares"
    batch_size = 4
    min_area = 4

    def __init__(self):
        self.widths = []

    def _detect_batch(self, batch):
        out = []
        for frame in batch:
            self.widths.append(frame.shape[1])
            mask = (frame[..., 0] > 200).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            rows = [(x, y, x + w, y + h, 1.0) for x, y, w, h, area in stats[1:] if area >= self.min_area]
            out.append(np.array(sorted(rows, key=lambda r: -(r[2] - r[0]) * (r[3] - r[1])), dtype=np.float64).reshape(-1, 5))
        return out


def frame_with(squares, background=30):
    """A dark frame with white squares (x, y, side)."""
    frame = np.full((H, W, 3), background, np.uint8)
    for x, y, side in squares:
        frame[int(y) : int(y) + int(side), int(x) : int(x) + int(side)] = 255
    return frame


def per_frame(frames):
    return SquareDetector().detect_all(frames)


def test_linear_motion_is_filled_exactly_from_the_keyframes():
    frames = [frame_with([(20 + 2 * i, 40 + i, 80)]) for i in range(23)]
    detector = SquareDetector()
    scan = scan_keyframes(frames, detector, every=5)
    # Keyframes 0, 5, 10, 15, 20 and the last (22): the detector saw 6 frames, not 23.
    assert scan.detected == 6 and len(detector.widths) == 6
    truth = per_frame(frames)
    for got, want in zip(scan.detections, truth):
        np.testing.assert_allclose(got[:, :4], want[:, :4], atol=1)  # interpolation rounds to whole pixels


def test_a_large_motion_between_keyframes_is_detected_frame_by_frame():
    # The square jumps 50 px at frame 7: keyframes 5 and 10 do not overlap, so 6..9 are detected.
    frames = [frame_with([(20 + (50 if i >= 7 else 0), 40, 40)]) for i in range(11)]
    scan = scan_keyframes(frames, SquareDetector(), every=5)
    for got, want in zip(scan.detections, per_frame(frames)):
        np.testing.assert_array_equal(got, want)
    assert scan.detected == 3 + 4  # keyframes 0, 5, 10, and 6..9


@pytest.mark.parametrize("present", [range(3, 9), range(0, 7)], ids=["enters-and-leaves", "leaves"])
def test_faces_entering_and_leaving_are_seen_in_the_frame_they_do(present):
    # A second face in `present` frames only: the keyframes around it disagree on the count.
    frames = [frame_with([(20, 40, 50)] + ([(200, 60, 40)] if i in present else [])) for i in range(13)]
    scan = scan_keyframes(frames, SquareDetector(), every=5)
    for i, (got, want) in enumerate(zip(scan.detections, per_frame(frames))):
        assert len(got) == (2 if i in present else 1), i
        np.testing.assert_array_equal(got, want)


def test_no_fill_across_a_scene_cut():
    # Frames 0..8 one shot, 9.. another (bright background, the face elsewhere): 8 and 9 are both
    # keyframes, and the boxes of each shot come from its own keyframes.
    frames = [frame_with([(20 + 2 * i, 40, 50)]) if i < 9 else frame_with([(220, 90, 50)], background=120) for i in range(15)]
    scan = scan_keyframes(frames, SquareDetector(), every=5, cut_threshold=0.5)
    assert scene_cuts(np.stack(scan.histograms), 0.5) == [9]
    for got, want in zip(scan.detections, per_frame(frames)):
        np.testing.assert_allclose(got[:, :4], want[:, :4], atol=1)
    assert scan.detected == 6  # 0, 5, 8 (before the cut), 9 (the cut), 10, 14 (last)


def test_every_1_and_scan_faces_are_per_frame_detection():
    frames = [frame_with([(10 + 3 * i, 30, 45)]) for i in range(9)]
    truth = per_frame(frames)
    scan = scan_faces(frames, SquareDetector(), detect_every=1)
    assert all(np.array_equal(a, b) for a, b in zip(scan.detections, truth))
    keyed = scan_faces(frames, SquareDetector(), detect_every=4, cut_threshold=0.5)
    assert len(keyed.detections) == 9 and keyed.frame_hw == (H, W)
    np.testing.assert_array_equal(np.stack(keyed.histograms), np.stack(scan.histograms))


def test_min_face_detects_keyframes_at_the_scale_the_face_needs():
    frames = [frame_with([(40 + i, 40, 100)]) for i in range(11)]
    detector = SquareDetector()
    detector.batch_size = 1  # one keyframe per call: each one's scale from the one before
    scan = scan_keyframes(frames, detector, every=5, min_face=50)
    # The first keyframe at the detector's scale (the whole 320 px width), then at 50 / 100 of it,
    # then at 50 px over the box found at half size (a pixel or two short: 98 px).
    assert detector.widths[:2] == [320, 160] and 160 <= detector.widths[2] <= 166 and len(detector.widths) == 3
    for got, want in zip(scan.detections, per_frame(frames)):
        np.testing.assert_allclose(got[:, :4], want[:, :4], atol=2)  # boxes found at half size, mapped back


def test_a_keyframe_that_loses_a_face_at_the_small_scale_is_detected_again():
    # Two 100 px faces in frame 0 (so keyframe 5 is detected at half scale), one shrunk to 6 px by
    # frame 5: at half scale 3 px, under the detector's smallest face. Keyframe 5 is detected again
    # at the full scale, and the frames between (a face shrinking 16-fold) frame by frame.
    frames = [frame_with([(20, 40, 100), (200, 40, 100 if i < 3 else 6)]) for i in range(6)]
    detector = SquareDetector()
    detector.batch_size, detector.min_area = 1, 16
    scan = scan_keyframes(frames, detector, every=5, min_face=50)
    assert detector.widths == [320, 160, 320, 320, 320, 320, 320]
    assert [len(d) for d in scan.detections] == [2] * 6
    for got, want in zip(scan.detections, SquareDetector().detect_all(frames)):
        np.testing.assert_array_equal(got, want)


def test_match_and_interpolate():
    a = np.array([[0, 0, 10, 10, 0.9], [50, 50, 70, 70, 0.8]], dtype=np.float64)
    b = np.array([[52, 50, 72, 70, 0.7], [2, 0, 12, 10, 0.95]], dtype=np.float64)
    order = match_faces(a, b)
    assert order == [1, 0]
    np.testing.assert_array_equal(interpolate_faces(a, b, order, 0.5), [[1, 0, 11, 10, 0.9], [51, 50, 71, 70, 0.7]])
    assert match_faces(a, b[:1]) is None  # another count
    assert match_faces(a[:1], np.array([[30, 30, 40, 40, 1.0]])) is None  # no overlap
    assert match_faces(np.zeros((0, 5)), np.zeros((0, 5))) == []
