"""One box per frame of a streamed clip (face_detection/pipeline.py): the fixed boxes, the raw
detections in detector batches, the clip-wide fill / pads / smoothing, the full scan of every
face, and the tracked person's boxes with the --no_face modes (FaceTrack)."""

import cv2
import numpy as np
import pytest
from skimage.data import astronaut

from common.errors import Diff2LipError, MediaError
from face_detection import (
    NO_FACE_MODES,
    CenterFaceDetector,
    ClipScan,
    FaceTrack,
    boxes_from_detections,
    check_pads,
    colour_histogram,
    detect_faces,
    face_boxes,
    fill_missing,
    fixed_boxes,
    no_face_hint,
    pad_boxes,
    scan_faces,
    smooth_boxes,
    track_boxes,
    voxceleb2_box,
)
from face_detection.pipeline import FADE_FRAMES
from face_detection.tracking import FaceSelect

HW = (360, 640)
# Two people: A on the left (large), C central, x1, y1, x2, y2, score.
A = (100, 80, 260, 280, 0.9)
C = (300, 100, 380, 200, 0.95)


def moved(box, dx=0, dy=0):
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy, box[4])


def talking_frames(n, hw=(256, 256)):
    """The astronaut's head, panning 2 px a frame, in `n` real RGB frames."""
    photo = cv2.resize(astronaut(), (hw[1] + 2 * n, hw[0]))
    return [np.ascontiguousarray(photo[:, 2 * i : 2 * i + hw[1]]) for i in range(n)]


@pytest.fixture(scope="module")
def centerface():
    cv2.setNumThreads(1)
    return CenterFaceDetector(batch_size=3)


# ---------------------------------------------------------------- fixed_boxes


def test_fixed_box_is_tiled_as_int64_for_every_frame():
    boxes = fixed_boxes(7, (60, 80), (3, 50, 7, 70), is_voxceleb2=False)
    assert boxes.dtype == np.int64 and boxes.shape == (7, 4)
    assert (boxes == np.array([3, 50, 7, 70])).all()
    # The box may touch the frame's edges: bottom == height and right == width are inside.
    assert fixed_boxes(1, (60, 80), (0, 60, 0, 80), False).tolist() == [[0, 60, 0, 80]]


def test_voxceleb2_fixed_boxes_are_the_released_crop_of_the_frame_size():
    boxes = fixed_boxes(3, (256, 320), None, is_voxceleb2=True)
    assert boxes.tolist() == [list(voxceleb2_box(256, 320))] * 3 == [[0, 181, 72, 248]] * 3


def test_no_fixed_box_means_the_detector_must_find_faces():
    assert fixed_boxes(5, (60, 80), None, is_voxceleb2=False) is None


def test_fixed_box_outside_the_frame_or_with_voxceleb2_is_a_one_line_error():
    with pytest.raises(Diff2LipError, match=r"--box 3,61,7,70 is not inside the 60x80 \(HxW\) frames of 'c\.mp4'"):
        fixed_boxes(2, (60, 80), (3, 61, 7, 70), False, "c.mp4")
    with pytest.raises(Diff2LipError, match=r"bottom <= 60 and 0 <= left < right <= 80"):
        fixed_boxes(2, (60, 80), (0, 10, 70, 81), False)
    with pytest.raises(Diff2LipError, match="--box and --is_voxceleb2 True both fix the face box"):
        fixed_boxes(2, (60, 80), (3, 50, 7, 70), True)


# ---------------------------------------------------------------- detect_faces / scan_faces (real CenterFace)


def test_detect_faces_gives_each_frames_first_face_and_none_without_one(centerface):
    frames = talking_frames(5) + [np.full((256, 256, 3), 128, np.uint8)] + talking_frames(2)
    raw, frame_hw = detect_faces(iter(frames), centerface, "pan.mp4")
    assert frame_hw == (256, 256) and len(raw) == 8
    # The same detector on each frame alone: batching changes nothing.
    expected = [centerface.detect([f])[0] for f in frames]
    assert raw == expected
    assert raw[5] is None and all(isinstance(r, tuple) and len(r) == 4 for i, r in enumerate(raw) if i != 5)
    # The head pans left 2 px a frame, so do its boxes (CenterFace's box jitters by a pixel or two).
    x1 = np.array([r[0] for r in raw[:5]])
    assert np.abs(np.diff(x1) + 2).max() <= 2 and x1[0] - x1[4] >= 4


def test_detect_faces_holds_one_detector_batch_of_frames_at_a_time():
    pulled = []

    class Watching:
        batch_size = 3
        calls = []

        def detect(self, frames):
            # The frames handed over are exactly those pulled since the last call.
            assert len(pulled) == sum(self.calls) + len(frames)
            self.calls.append(len(frames))
            return [(i, 0, i + 10, 10) for i in range(len(frames))]

    def stream():
        for i in range(8):
            pulled.append(i)
            yield np.zeros((20, 30, 3), np.uint8)

    detector = Watching()
    raw, frame_hw = detect_faces(stream(), detector)
    assert detector.calls == [3, 3, 2] and frame_hw == (20, 30)
    assert raw == [(i, 0, i + 10, 10) for i in (0, 1, 2, 0, 1, 2, 0, 1)]


def test_detect_faces_refuses_an_empty_clip_and_frames_of_two_sizes(centerface):
    with pytest.raises(MediaError, match="'e.mp4' has no video frames"):
        detect_faces(iter([]), centerface, "e.mp4")
    frames = talking_frames(2) + [np.zeros((256, 250, 3), np.uint8)]
    with pytest.raises(MediaError, match="frame 2 of 'm.mp4' is 256x250, the first was 256x256"):
        detect_faces(iter(frames), centerface, "m.mp4")


def test_scan_faces_keeps_every_face_and_each_frames_colour_histogram(centerface):
    head = talking_frames(1, (200, 190))[0]
    two = np.full((256, 512, 3), 60, np.uint8)
    two[20:220, 20:210] = head
    two[40:240, 300:490] = head
    one = np.full((256, 512, 3), 60, np.uint8)
    one[30:230, 150:340] = head
    frames = [two, one, np.full((256, 512, 3), 200, np.uint8), two]
    scan = scan_faces(iter(frames), centerface, "two.mp4")
    assert scan.frame_hw == (256, 512)
    assert [len(d) for d in scan.detections] == [2, 1, 0, 2]
    for got, frame in zip(scan.detections, frames):
        np.testing.assert_array_equal(got, centerface.detect_all([frame])[0])
        assert got.shape[1] == 5 and (np.diff(got[:, 4]) <= 0).all()  # best score first
    assert len(scan.histograms) == 4
    for hist, frame in zip(scan.histograms, frames):
        np.testing.assert_array_equal(hist, colour_histogram(frame))
        assert hist.shape == (512,) and hist.sum() == pytest.approx(1.0)


def test_scans_of_consecutive_ranges_join_into_the_scan_of_the_whole_clip(centerface):
    frames = talking_frames(7)
    whole = scan_faces(iter(frames), centerface)
    parts = [scan_faces(iter(frames[:3]), centerface), scan_faces(iter(frames[3:]), centerface)]
    joined = ClipScan.join(parts)
    assert joined.frame_hw == whole.frame_hw == (256, 256)
    assert len(joined.detections) == len(joined.histograms) == 7
    for a, b in zip(joined.detections, whole.detections):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(joined.histograms, whole.histograms):
        np.testing.assert_array_equal(a, b)
    # A process whose range was empty adds nothing and knows no frame size.
    assert ClipScan.join([ClipScan(), parts[0], ClipScan()]).frame_hw == (256, 256)
    assert ClipScan.join([ClipScan()]).frame_hw is None


# ---------------------------------------------------------------- boxes_from_detections


def test_boxes_from_detections_fill_pad_and_smooth_by_hand():
    raw = [(10, 20, 50, 60), None, (14, 24, 54, 64)]
    # Frame 1 ties between frames 0 and 2: the earlier box. Pads top 1, bottom 2, left 3, right 4:
    # (y1, y2, x1, x2) = (20 - 1, 60 + 2, 10 - 3, 50 + 4) and (23, 66, 11, 58) for frame 2.
    unsmoothed, n_missing = boxes_from_detections(raw, (100, 100), (1, 2, 3, 4), smooth=False)
    assert n_missing == 1 and unsmoothed.dtype == np.int64
    assert unsmoothed.tolist() == [[19, 62, 7, 54], [19, 62, 7, 54], [23, 66, 11, 58]]
    # Wav2Lip's smoothing of 3 boxes, T = 5: every window is boxes[-2:], read in place:
    # rows 0 and 1 = mean(row 1, row 2) = (21, 64, 9, 56); row 2 = mean(new row 1, row 2) = (22, 65, 10, 57).
    smoothed, _ = boxes_from_detections(raw, (100, 100), (1, 2, 3, 4))
    assert smoothed.tolist() == [[21, 64, 9, 56], [21, 64, 9, 56], [22, 65, 10, 57]]


def test_boxes_from_detections_equal_fill_then_pads_then_smoothing():
    rng = np.random.default_rng(4)
    raw = []
    for i in range(23):
        x1, y1 = rng.integers(0, 200), rng.integers(0, 150)
        raw.append(None if i % 4 == 1 else (int(x1), int(y1), int(x1 + rng.integers(20, 90)), int(y1 + rng.integers(20, 90))))
    boxes, n_missing = boxes_from_detections(raw, (240, 320), (5, -3, 0, 12), "r.mp4")
    xyxy, filled = fill_missing(raw, "r.mp4")
    np.testing.assert_array_equal(boxes, smooth_boxes(pad_boxes(xyxy, (5, -3, 0, 12), (240, 320)), T=5))
    assert n_missing == filled == 6
    # Pads are clamped to the frame.
    assert boxes[:, 0].min() >= 0 and boxes[:, 1].max() <= 240 and boxes[:, 3].max() <= 320


def test_pads_that_leave_no_face_name_the_first_empty_frame():
    raw = [(10, 5, 40, 60), (10, 5, 40, 30), (10, 5, 40, 30)]
    with pytest.raises(Diff2LipError, match=r"--pads 0,-30,0,0 leave no face in frame 1 of 'p\.mp4'"):
        boxes_from_detections(raw, (100, 100), (0, -30, 0, 0), "p.mp4", smooth=False)


def test_no_detection_at_all_is_a_media_error_naming_the_clip():
    with pytest.raises(MediaError, match=r"no face found in any of the 3 frames of 'n\.mp4'"):
        boxes_from_detections([None] * 3, (100, 100), source_name="n.mp4")


# ---------------------------------------------------------------- face_boxes


class FakeDetector:
    """Boxes keyed by frame index (written into pixel [0, 0, 0]); records batch sizes."""

    def __init__(self, table, batch_size=3):
        self.table = table
        self.batch_size = batch_size
        self.calls = []

    def detect(self, frames):
        self.calls.append(len(frames))
        return [self.table[int(f[0, 0, 0])] for f in frames]


def frame_stream(n, hw=(60, 80), log=None):
    for i in range(n):
        if log is not None:
            log.append(i)
        frame = np.zeros((*hw, 3), dtype=np.uint8)
        frame[0, 0, 0] = i
        yield frame


def test_face_boxes_detected_equals_fill_pad_smooth():
    table = [None, (10, 5, 40, 30), (12, 6, 41, 33), None, None, (9, 4, 60, 50), None, (0, 0, 79, 59), None]
    det = FakeDetector(table, batch_size=3)
    yielded = []
    boxes, n_missing = face_boxes(
        frame_stream(len(table), log=yielded), det, pads=(0, 10, 2, 3), source_name="v.mp4"
    )
    xyxy, expected_missing = fill_missing(table, "v.mp4")
    expected = smooth_boxes(pad_boxes(xyxy, (0, 10, 2, 3), (60, 80)))
    np.testing.assert_array_equal(boxes, expected)
    assert boxes.dtype == np.int64 and n_missing == expected_missing == 5
    assert det.calls == [3, 3, 3]
    assert len(yielded) == len(table)


def test_face_boxes_streams_in_batches():
    """Only one detector batch of frames is pulled from the iterator before each detect call."""
    table = [(1, 1, 20, 20)] * 7
    yielded = []

    class Watching(FakeDetector):
        def detect(self, frames):
            # the frames handed over are exactly the ones pulled since the last call
            assert len(yielded) == sum(self.calls) + len(frames)
            return super().detect(frames)

    det = Watching(table, batch_size=2)
    boxes, n_missing = face_boxes(frame_stream(7, log=yielded), det, smooth=False)
    assert det.calls == [2, 2, 2, 1]
    assert boxes.tolist() == [[1, 20, 1, 20]] * 7 and n_missing == 0


def test_face_boxes_no_face_raises():
    with pytest.raises(MediaError, match=r"no face found in any of the 4 frames of 'x\.mp4'"):
        face_boxes(frame_stream(4), FakeDetector([None] * 4), source_name="x.mp4")


def test_face_boxes_fixed_box_and_voxceleb2_are_constant():
    boxes, n_missing = face_boxes(frame_stream(6), None, pads=(0, 10, 0, 0), box=(3, 50, 7, 70))
    assert boxes.tolist() == [[3, 50, 7, 70]] * 6 and n_missing == 0
    boxes, n_missing = face_boxes(frame_stream(5, hw=(224, 224)), None, is_voxceleb2=True)
    assert boxes.tolist() == [[0, 158, 50, 174]] * 5 and n_missing == 0


def test_face_boxes_bad_inputs():
    with pytest.raises(Diff2LipError, match=r"--box 3,61,7,70 is not inside the 60x80.*'c\.mp4'"):
        face_boxes(frame_stream(2), None, box=(3, 61, 7, 70), source_name="c.mp4")
    with pytest.raises(Diff2LipError, match="--box and --is_voxceleb2"):
        face_boxes(frame_stream(2), None, box=(3, 50, 7, 70), is_voxceleb2=True)
    with pytest.raises(MediaError, match="no video frames"):
        face_boxes(iter([]), None, is_voxceleb2=True, source_name="e.mp4")

    def mixed():
        yield np.zeros((60, 80, 3), np.uint8)
        yield np.zeros((60, 81, 3), np.uint8)

    with pytest.raises(MediaError, match="frame 1 of 'm.mp4' is 60x81"):
        face_boxes(mixed(), None, is_voxceleb2=True, source_name="m.mp4")
    with pytest.raises(Diff2LipError, match="--pads 0,-30,0,0"):
        face_boxes(frame_stream(2), FakeDetector([(10, 5, 40, 30)] * 2), pads=(0, -30, 0, 0))


# ---------------------------------------------------------------- track_boxes, FaceTrack, --no_face


def scan(dets, cuts_at=()):
    """A scan whose histograms change completely at `cuts_at`."""
    hists, shot = [], 0
    for i in range(len(dets)):
        shot += i in cuts_at
        hists.append(np.eye(64, dtype=np.float32)[shot])
    return ClipScan([np.asarray(d, dtype=float).reshape(-1, 5) for d in dets], hists, HW)


def test_track_boxes_passthrough_fill_and_counts():
    # 20 frames: A everywhere except a 2-frame gap (filled) and a 6-frame gap (passed through).
    dets = [[A]] * 20
    for i in (4, 5, 10, 11, 12, 13, 14, 15):
        dets[i] = []
    track = track_boxes(scan(dets), FaceSelect("largest"), no_face="passthrough", max_gap=3)
    assert (track.n_missing, track.n_filled, track.n_passed, track.n_generated) == (8, 2, 6, 14)
    assert track.weights[10:16].tolist() == [0] * 6
    assert track.weights[7:10].tolist() == [0.25 * k for k in (3, 2, 1)]
    assert track.boxes.tolist() == [[80, 280, 100, 260]] * 20  # (y1, y2, x1, x2); placeholders too
    assert "no face in 8 of 20 frames: 2 filled with the nearest box, 6 passed through; 14 generated" in track.summary()
    nearest = track_boxes(scan(dets), FaceSelect("largest"), no_face="nearest")
    assert (nearest.n_filled, nearest.n_passed) == (8, 0) and (nearest.weights == 1).all()
    with pytest.raises(MediaError, match=r"no face in frame 10 \(0.40 s\).*--max_fill_gap 3"):
        track_boxes(scan(dets), FaceSelect("largest"), no_face="fail", max_gap=3)
    empty = track_boxes(scan([[]] * 4), FaceSelect("largest"))
    assert empty.n_passed == 4 and (empty.weights == 0).all() and empty.boxes.tolist() == [[0, 360, 0, 640]] * 4


def test_track_boxes_never_smooths_or_fills_across_a_cut():
    # Shot 1 (0-5): A moving; shot 2 (6-11): C, its first frame missed by the detector.
    dets = [[moved(A, 10 * i)] for i in range(6)] + [[]] + [[C]] * 5
    track = track_boxes(scan(dets, cuts_at=[6]), FaceSelect("largest"), cut_threshold=0.5, max_gap=3)
    assert track.cuts == [6]
    # Shot 2's boxes are C's alone: the gap at 6 takes C (its own shot), not A's last box.
    assert track.boxes[6:].tolist() == [[100, 200, 300, 380]] * 6
    # Shot 1 is smoothed among itself (the released rule within the run: means of 5, last window).
    expected = smooth_boxes(np.array([[80, 280, 100 + 10 * i, 260 + 10 * i] for i in range(6)]))
    assert np.array_equal(track.boxes[:6], expected)
    no_cut = track_boxes(scan(dets, cuts_at=[6]), FaceSelect("largest"), cut_threshold=0, max_gap=3)
    assert no_cut.cuts == [] and no_cut.boxes[4, 2] != expected[4, 2]  # smoothed with C's boxes


def test_no_face_modes_are_the_three_the_flag_offers_and_others_are_refused():
    assert NO_FACE_MODES == ("passthrough", "nearest", "fail")
    with pytest.raises(ValueError, match=r"no_face 'skip' is not one of \('passthrough', 'nearest', 'fail'\)"):
        track_boxes(scan([[A]] * 3), FaceSelect("largest"), no_face="skip")


def test_a_shot_without_any_face_per_no_face_mode():
    # Shot 1 (0-5): A; shot 2 (6-11): no face at all; a gap longer than any --max_fill_gap.
    dets = [[A]] * 6 + [[]] * 6
    passed = track_boxes(scan(dets, cuts_at=[6]), FaceSelect("largest"), no_face="passthrough", cut_threshold=0.5)
    assert passed.cuts == [6] and (passed.n_missing, passed.n_filled, passed.n_passed) == (6, 0, 6)
    assert passed.weights.tolist() == [1, 1, 1, 0.75, 0.5, 0.25] + [0] * 6
    assert passed.n_generated == 6
    # nearest: the release's fill, the shot without a face takes the nearest box of another shot.
    nearest = track_boxes(scan(dets, cuts_at=[6]), FaceSelect("largest"), no_face="nearest", cut_threshold=0.5)
    assert (nearest.n_filled, nearest.n_passed, nearest.n_generated) == (6, 0, 12)
    assert nearest.boxes.tolist() == [[80, 280, 100, 260]] * 12 and (nearest.weights == 1).all()
    with pytest.raises(MediaError, match=r"no face in frame 6 \(0.24 s\) of 'cut\.mp4'.*--max_fill_gap 3"):
        track_boxes(scan(dets, cuts_at=[6]), FaceSelect("largest"), no_face="fail", cut_threshold=0.5, source_name="cut.mp4")


def test_fail_with_max_fill_gap_zero_stops_at_a_single_missed_frame():
    dets = [[A]] * 4 + [[]] + [[A]] * 4
    with pytest.raises(MediaError, match=r"no face in frame 4 \(0.16 s\)"):
        track_boxes(scan(dets), FaceSelect("largest"), no_face="fail", max_gap=0)
    filled = track_boxes(scan(dets), FaceSelect("largest"), no_face="fail", max_gap=1)
    assert (filled.n_missing, filled.n_filled, filled.n_passed) == (1, 1, 0) and (filled.weights == 1).all()


def test_track_pads_clamp_to_the_frame_and_passed_frames_hold_the_nearest_padded_box():
    dets = [[moved(A, dy=-70)]] * 5 + [[]] * 5
    track = track_boxes(scan(dets), FaceSelect("largest"), pads=(20, 10, 5, 5), no_face="passthrough", max_gap=0)
    # A moved up to y1 = 10: top pad 20 clamps at 0; (y1, y2, x1, x2) = (0, 220, 95, 265).
    assert track.boxes.tolist() == [[0, 220, 95, 265]] * 10
    assert track.n_passed == 5 and track.weights[5:].tolist() == [0] * 5


def test_face_track_counts_and_summary():
    weights = np.array([0, 0.25, 0.5, 1, 1, 0], dtype=np.float32)
    track = FaceTrack(boxes=np.zeros((6, 4), np.int64), weights=weights, cuts=[3], n_missing=3, n_filled=1, n_passed=2)
    # Frames with any share of the generated face are generated, the fade frames too.
    assert track.n_generated == 4
    assert track.summary() == (
        "no face in 3 of 6 frames: 1 filled with the nearest box, 2 passed through; 4 generated, 1 scene cut(s)"
    )


def test_fade_frames_ramp_the_generated_face_in_over_an_eighth_of_a_second():
    assert FADE_FRAMES == 3
    dets = [[]] + [[A]] * 9
    track = track_boxes(scan(dets), FaceSelect("largest"), max_gap=0)
    # 1 / (FADE_FRAMES + 1) steps after the frame passed through.
    assert track.weights.tolist() == [0, 0.25, 0.5, 0.75] + [1] * 6


def test_real_clip_scanned_and_tracked_passes_the_faceless_frames_through(centerface):
    grey = np.full((256, 256, 3), 128, np.uint8)
    frames = talking_frames(6) + [grey] * 5 + talking_frames(4)
    clip_scan = scan_faces(iter(frames), centerface)
    track = track_boxes(clip_scan, FaceSelect("largest"), no_face="passthrough", max_gap=3, cut_threshold=0.5)
    # The grey frames are another shot: cut in and cut out again.
    assert track.cuts == [6, 11]
    assert (track.n_missing, track.n_filled, track.n_passed) == (5, 0, 5)
    assert track.weights[6:11].tolist() == [0] * 5
    # Each run of faces is smoothed on its own: shot 1's boxes are the smoothing of its detections.
    detected = np.array([d[0, :4] for d in clip_scan.detections[:6]], dtype=np.int64)
    np.testing.assert_array_equal(track.boxes[:6], smooth_boxes(pad_boxes(detected, (0, 0, 0, 0), (256, 256))))


def test_a_720p_clip_is_scanned_holding_one_cpu_call_of_frames_whatever_the_batch_size(tmp_path):
    # A real 1280x720 H.264 file decoded by PyAV through the real detector at its defaults (batch
    # 64): the frames alive at once, counted by weak references as the decoder hands them out,
    # stay at one CPU call's worth (2 at 720p), not the batch or the clip.
    import weakref

    from dataset.video_io import iter_frames, write_video

    hw = (720, 1280)
    path = tmp_path / "talking_720p.mp4"
    write_video(path, talking_frames(9, hw))
    detector = CenterFaceDetector()
    per_call = detector.frames_per_call(hw)
    assert (detector.batch_size, per_call) == (64, 2)
    refs, most_alive = [], 0

    def counted(frames):
        nonlocal most_alive
        for frame in frames:
            refs.append(weakref.ref(frame))
            most_alive = max(most_alive, sum(r() is not None for r in refs))
            yield frame
            del frame

    clip_scan = scan_faces(counted(iter_frames(path)), detector, str(path))
    assert len(refs) == len(clip_scan.detections) == len(clip_scan.histograms) == 9
    assert all(len(d) == 1 for d in clip_scan.detections)  # her face in every frame
    assert most_alive <= per_call + 1  # the call's frames and the one being handed over
    assert sum(r() is not None for r in refs) == 0


def test_left_n_beyond_the_faces_seen_says_how_many_there_were():
    six = [tuple(moved(C, 90 * k - 270)) for k in range(6)]
    dets = [six] * 4 + [six[:3]] * 2
    with pytest.raises(Diff2LipError, match=r"--face_select left:7: at most 6 faces were seen in one frame of 'c\.mp4'; "
                                            r"give left:1 to left:6"):
        track_boxes(scan(dets), FaceSelect("left", index=7), source_name="c.mp4")
    track = track_boxes(scan(dets), FaceSelect("left", index=6))
    assert track.max_faces == 6 and track.n_generated == 6
    # No face at all is not this error: the clip passes through (and no_face_hint says why).
    assert track_boxes(scan([[]] * 3), FaceSelect("left", index=7)).n_passed == 3


def test_pads_that_stretch_every_box_over_the_frame_are_refused_like_an_out_of_frame_box():
    message = r"--pads 10000,10000,10000,10000 would stretch every face box over the whole 360x640 \(HxW\) frames of 'c\.mp4'"
    with pytest.raises(Diff2LipError, match=message):
        track_boxes(scan([[A]] * 3), FaceSelect("largest"), pads=(10000,) * 4, source_name="c.mp4")
    with pytest.raises(Diff2LipError, match=r"give top \+ bottom < 360 and left \+ right < 640"):
        boxes_from_detections([A[:4]] * 3, HW, pads=(0, 0, 320, 320), source_name="c.mp4")
    check_pads((0, 10, 0, 0), HW, "c.mp4")  # a few pixels, clamped to the frame as released
    check_pads((200, 159, 300, 339), HW, "c.mp4")
    assert track_boxes(scan([[A]] * 3), FaceSelect("largest"), pads=(0, 100, 0, 0)).boxes.tolist() == [[80, 360, 100, 260]] * 3


def test_a_clip_without_any_face_gets_one_line_naming_what_was_tried_and_the_flag(centerface):
    line = no_face_hint(CenterFaceDetector(), (2160, 3840), 125, "c.mp4")
    assert line == (
        "no face found in any of the 125 frames of 'c.mp4' (3840x2160) by centerface at scale 0.333, 0.167, 0.0833: "
        "the clip passes through unchanged; for a face that fills most of the frame try --face_det_scale 0.0417, for "
        "a small one --face_det_scale 1, or another --face_detector, or give the face as --box top,bottom,left,right "
        "with --is_voxceleb2 False"
    )
    line = no_face_hint(centerface, (720, 1280), 3)
    assert "\n" not in line and "at scale 1, 0.5, 0.25:" in line and "--face_det_scale 0.125, or another" in line
