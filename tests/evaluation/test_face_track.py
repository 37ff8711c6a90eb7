"""syncnet_python's face track (evaluation/face_track.py): `crop_video`'s geometry against hand
computation, the track's gap interpolation, trimming and median filter, the fixed track, and the
crops streamed from a real rendered clip."""

import cv2
import numpy as np
import pytest

from common.errors import MediaError
from dataset.video_io import iter_frames
from evaluation.face_track import (
    MIN_TRACK_FRAMES,
    crop_frame,
    crop_window,
    detect_track,
    fixed_track,
    iter_track_crops,
    track_from_boxes,
    track_from_detections,
)
from helpers import BoxInFramesDetector, render_clip


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    cv2.setNumThreads(1)
    yield


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "talk.mp4"
    render_clip(path, n_frames=12, height=224, width=224, with_audio=True, seed=3)
    return str(path)


def test_crop_of_a_known_box_inside_the_frame():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
    # Box x 40..80, y 30..70: half size 20, centre (60, 50); bsi = int(20 * 1.8) = 36.
    track = fixed_track(1, (30, 70, 40, 80))
    assert (track.cx[0], track.cy[0], track.half_size[0]) == (60, 50, 20)
    # rows my - bs .. my + 1.8 bs = 86 - 20 .. 86 + 36, columns mx -+ 1.4 bs = 96 -+ 28 (padded frame)
    assert crop_window(60, 50, 20, 0.4) == (36, 66, 122, 68, 124)
    crop = crop_frame(frame, 60, 50, 20)
    # Minus the pad that is rows 30..86, columns 32..88 of the frame itself, resized, then BGR.
    expected = cv2.resize(frame[30:86, 32:88], (224, 224))[:, :, ::-1]
    np.testing.assert_array_equal(crop, expected)


def test_crop_past_the_frame_edge_reads_the_constant_110():
    frame = np.full((64, 64, 3), 7, np.uint8)
    # Box 0..40 both ways: centre (20, 20), half size 20, bsi 36, window rows 36..92, columns 28..84.
    assert crop_window(20, 20, 20, 0.4) == (36, 36, 92, 28, 84)
    hand = np.full((56, 56, 3), 110, np.uint8)
    hand[:, 8:] = 7  # padded columns 28..35 lie left of the frame; rows 0..55 and columns 0..47 inside it
    np.testing.assert_array_equal(crop_frame(frame, 20, 20, 20), cv2.resize(hand, (224, 224)))


def medfilt_by_hand(values, kernel=13):
    """Median of each zero-padded window of `kernel` values."""
    half = kernel // 2
    padded = np.concatenate([np.zeros(half), values, np.zeros(half)])
    return np.array([np.sort(padded[i : i + kernel])[half] for i in range(len(values))])


def test_track_interpolates_gaps_trims_ends_and_median_filters():
    n = 20
    # A box moving linearly: x1 = 10 + 2f, y1 = 5 + f, side 40 + f; none before frame 2, after 17, nor at 6..8.
    box = lambda f: (10 + 2 * f, 5 + f, 50 + 3 * f, 45 + 2 * f)
    raw = [box(f) if 2 <= f <= 17 and not 6 <= f <= 8 else None for f in range(n)]
    track = track_from_detections(raw, "clip.mp4")
    assert (track.start, track.n_frames) == (2, 16)
    frames = np.arange(2, 18)
    # Linear interpolation of a linear motion is the motion itself, so the unsmoothed values are exact.
    np.testing.assert_allclose(track.cx, medfilt_by_hand(30 + 2.5 * frames))
    np.testing.assert_allclose(track.cy, medfilt_by_hand(25 + 1.5 * frames))
    np.testing.assert_allclose(track.half_size, medfilt_by_hand((40 + frames) / 2))


def test_track_without_faces_or_too_short_is_a_media_error():
    with pytest.raises(MediaError, match="no face found in any of the 4 frames of 'clip.mp4'"):
        track_from_detections([None] * 4, "clip.mp4")
    with pytest.raises(MediaError, match="'clip.mp4'.*frames 1..5"):
        track_from_detections([None] + [(0, 0, 10, 10)] * 5 + [None] * 6, "clip.mp4")


def test_s3fd_track_on_downscaled_frames_maps_boxes_back(clip):
    detector = BoxInFramesDetector()
    track = detect_track(clip, detector)
    assert detector.shapes == [(56, 56, 3)] * 12  # 224 * 0.25
    assert (track.start, track.n_frames) == (1, 9)
    # Boxes times 224 / 56: x 40..160, y 48..176 -> centre (100, 112), half size max(120, 128) / 2.
    np.testing.assert_allclose(track.cx, 100)
    np.testing.assert_allclose(track.cy, 112)
    np.testing.assert_allclose(track.half_size, 64)



def test_unsmoothed_track_is_each_boxs_centre_and_half_its_longer_side():
    xyxy = np.array([[10, 20, 50, 90], [0, 0, 30, 10], [5.5, 6.5, 7.5, 8.5]])
    track = track_from_boxes(xyxy, start=4, smooth=False)
    assert (track.start, track.n_frames) == (4, 3)
    np.testing.assert_allclose(track.cx, [30, 15, 6.5])
    np.testing.assert_allclose(track.cy, [55, 5, 7.5])
    np.testing.assert_allclose(track.half_size, [35, 15, 1])  # max(h = 70, w = 40) / 2, max(10, 30) / 2, 2 / 2


def test_fixed_track_holds_the_box_in_every_frame_unsmoothed():
    track = fixed_track(3, (30, 70, 40, 80))
    assert (track.start, track.n_frames) == (0, 3)
    assert track.cx.tolist() == [60] * 3 and track.cy.tolist() == [50] * 3 and track.half_size.tolist() == [20] * 3
    # The median filter's zero padding would have shrunk a track this short.
    assert track_from_boxes(np.tile([40, 30, 80, 70], (3, 1))).cx.tolist() == [0, 0, 0]


def test_the_shortest_track_is_the_median_filters_half_kernel():
    assert MIN_TRACK_FRAMES == 7
    box = (0, 0, 10, 10)
    assert track_from_detections([None] + [box] * 7, "c.mp4").n_frames == 7
    with pytest.raises(MediaError, match=r"frames 1..6; the face track needs at least 7 frames"):
        track_from_detections([None] + [box] * 6 + [None], "c.mp4")


def test_a_zero_size_box_is_an_empty_crop_error():
    with pytest.raises(MediaError, match=r"face box of half size 0.0 px at \(10.0, 10.0\) gives an empty crop"):
        crop_frame(np.zeros((32, 32, 3), np.uint8), 10, 10, 0)


def test_track_crops_stream_the_tracks_frames_of_a_real_clip(clip):
    frames = list(iter_frames(clip))
    rng = np.random.default_rng(7)
    n = 6
    xyxy = np.stack([rng.uniform(40, 70, n), rng.uniform(40, 70, n), rng.uniform(150, 180, n), rng.uniform(150, 180, n)], 1)
    track = track_from_boxes(xyxy, start=3, smooth=False)
    crops = list(iter_track_crops(clip, track))
    assert len(crops) == n
    for i, crop in enumerate(crops):
        assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
        np.testing.assert_array_equal(crop, crop_frame(frames[3 + i], track.cx[i], track.cy[i], track.half_size[i]))
    # Another crop scale is another window of the same frame.
    wider = next(iter_track_crops(clip, track, crop_scale=0.6))
    np.testing.assert_array_equal(wider, crop_frame(frames[3], track.cx[0], track.cy[0], track.half_size[0], 0.6))


def test_detection_at_half_scale_maps_boxes_back_by_the_frame_ratio(clip):
    detector = BoxInFramesDetector(box=(20, 24, 80, 88), first=0, last=11)
    track = detect_track(clip, detector, facedet_scale=0.5)
    assert detector.shapes == [(112, 112, 3)] * 12
    # x 40..160, y 48..176 in full-frame pixels: centre (100, 112), half size 64; the median of a
    # 12-frame constant track is the constant except within 6 frames of its zero-padded ends.
    assert (track.start, track.n_frames) == (0, 12)
    np.testing.assert_allclose(track.cx[6], 100)
    np.testing.assert_allclose(track.cy[6], 112)
    np.testing.assert_allclose(track.half_size[6], 64)
