"""generate.py on an in-the-wild clip rendered here: two faces, frames without a face, a scene cut.

The faces are the astronaut photograph's (scikit-image), so the bundled CenterFace detector
finds them for real; the network is the tiny random one of the other inference tests.
"""

import sys

import cv2
import numpy as np
import pytest
from skimage.data import astronaut

from audio.audio import save_wav
from dataset.synthetic import speech_like
from dataset.video_io import VideoWriter, iter_frames
from helpers import TINY_CLI_FLAGS, save_tiny_checkpoint
from inference.cli import main
from inference.lipsync import SourceFrames, boxes_for_clip, plan_clip, track_for_clip
from inference.options import create_parser
from inference.pipeline import Generator
from launchers import REPO_ROOT, run, torchrun

H, W = 320, 640
SMALL = (slice(70, 270), slice(40, 230))  # rows, columns of the small head (left)
LARGE = (slice(20, 300), slice(340, 606))  # the large head (right)
SHOT2 = (slice(60, 260), slice(220, 410))  # the one head of the second shot
N_TWO, N_BLANK, N_SHOT2 = 8, 6, 6  # frames: two heads, no face, then a cut to another scene


def head(rows: slice, cols: slice) -> np.ndarray:
    face = astronaut()[20:220, 130:320]
    return cv2.resize(face, (cols.stop - cols.start, rows.stop - rows.start), interpolation=cv2.INTER_AREA)


def frame(i: int) -> np.ndarray:
    if i < N_TWO:
        img = np.full((H, W, 3), 60, np.uint8)
        for rows, cols in (SMALL, LARGE):
            img[rows, cols] = head(rows, cols)
        return img
    if i < N_TWO + N_BLANK:
        return np.full((H, W, 3), 60, np.uint8)
    img = np.full((H, W, 3), (200, 170, 90), np.uint8)
    img[SHOT2] = head(*SHOT2)
    return img


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("wild")
    checkpoint = root / "tiny.pt"
    save_tiny_checkpoint(checkpoint)
    n = N_TWO + N_BLANK + N_SHOT2
    video = root / "wild.mp4"
    with VideoWriter(str(video), fps=25, audio=speech_like(n / 25), sample_rate=16000) as writer:
        for i in range(n):
            writer.write(frame(i))
    audio = root / "speech.wav"
    save_wav(speech_like(1.2, seed=1), audio, 16000)  # 1.2 s: longer than the 20 frames
    return checkpoint, video, audio


def flags(checkpoint, video, audio, out, *extra):
    return [*TINY_CLI_FLAGS, "--model_path", str(checkpoint), "--progress", "False", "--sampling_batch_size", "5",
            "--generate_from_filelist", "0", "--video_path", str(video), "--audio_path", str(audio),
            "--out_path", str(out), "--is_voxceleb2", "False", "--face_detector", "centerface", *extra]


def pipeline_frames(args):
    """What the pipeline yields (before the encoder), the source frames it saw, and the track."""
    gen = Generator(create_parser().parse_args(args))
    plan = plan_clip(args[args.index("--video_path") + 1], args[args.index("--audio_path") + 1], gen.opts)
    frames = SourceFrames(plan, None)
    _, scan = boxes_for_clip(plan, frames, gen.opts, gen.detector)
    track = track_for_clip(scan, plan, gen.opts)
    out = list(gen.syncer.generate(plan, frames, track.boxes, 0, plan.n_frames, weights=track.weights))
    return out, list(iter_frames(plan.video_path, 25, 0, plan.n_frames)), track


def test_two_faces_blank_frames_and_a_cut(clip, tmp_path):
    checkpoint, video, audio = clip
    out, source, track = pipeline_frames(flags(checkpoint, video, audio, tmp_path / "x.mp4", "--face_select", "largest"))
    n = N_TWO + N_BLANK + N_SHOT2
    assert len(out) == len(source) == n
    assert track.cuts == [N_TWO, N_TWO + N_BLANK]  # into the blank frames and out to the new scene
    assert (track.n_missing, track.n_passed, track.n_filled) == (N_BLANK, N_BLANK, 0)
    # Shot 1: the large head is edited, the small one equals the input.
    for k in range(N_TWO):
        assert np.array_equal(out[k][SMALL], source[k][SMALL])
        assert (out[k][LARGE] != source[k][LARGE]).any()
    # The frames without a face are the input, bit for bit.
    for k in range(N_TWO, N_TWO + N_BLANK):
        assert np.array_equal(out[k], source[k])
    # The generated runs fade into them: 1/4, 2/4, 3/4 of the face next to them.
    assert track.weights.tolist() == [1] * 5 + [0.75, 0.5, 0.25] + [0] * 6 + [0.25, 0.5, 0.75, 1, 1, 1]
    # No box reaches across the cut: shot 1's boxes lie on the large head, shot 2's on its head.
    for k in range(n):
        if track.weights[k] == 0:
            continue
        rows, cols = LARGE if k < N_TWO else SHOT2
        y1, y2, x1, x2 = track.boxes[k]
        assert rows.start - 15 <= y1 < y2 <= rows.stop + 15 and cols.start - 15 <= x1 < x2 <= cols.stop + 15, (k, track.boxes[k])
        assert (out[k][y1:y2, x1:x2] != source[k][y1:y2, x1:x2]).any()


def test_left_selects_the_other_face_and_fail_names_the_frame(clip, tmp_path, capsys):
    checkpoint, video, audio = clip
    out, source, _ = pipeline_frames(flags(checkpoint, video, audio, tmp_path / "x.mp4", "--face_select", "left:1"))
    for k in range(N_TWO):
        assert np.array_equal(out[k][LARGE], source[k][LARGE]) and (out[k][SMALL] != source[k][SMALL]).any()
    code = main(flags(checkpoint, video, audio, tmp_path / "f.mp4", "--no_face", "fail"))
    err = capsys.readouterr().err.strip()
    assert code == 1 and f"no face in frame {N_TWO} (0.32 s)" in err and "\n" not in err
    assert not (tmp_path / "f.mp4").exists()


@pytest.mark.parametrize("flag, value, says", [
    ("--no_face", "skip", "expected one of passthrough, nearest, fail"),
    ("--face_select", "biggest", "expected one of first, largest, central, left:N"),
    ("--face_detector", "yolo", "expected one of s3fd, centerface, auto"),
    ("--paste", "soft", "expected one of full, lower, feather"),
    ("--max_fill_gap", "-1", "expected a value >= 0"),
    ("--cut_threshold", "2", "expected 0 <= value <= 1"),
])
def test_bad_in_the_wild_flags_are_one_line(clip, tmp_path, capsys, flag, value, says):
    checkpoint, video, audio = clip
    assert main(flags(checkpoint, video, audio, tmp_path / "x.mp4", flag, value)) != 0
    err = capsys.readouterr().err.strip()
    assert flag in err and says in err and "\n" not in err


def test_summary_reports_generated_passed_and_filled(clip, tmp_path, capsys):
    checkpoint, video, audio = clip
    assert main(flags(checkpoint, video, audio, tmp_path / "x.mp4", "--paste", "feather", "--color_match", "True")) == 0
    said = capsys.readouterr().out
    assert "no face in 6 of 20 frames: 0 filled with the nearest box, 6 passed through; 14 generated, 2 scene cut(s)" in said


def test_serial_stages_and_per_frame_detection_keep_the_frames(clip, tmp_path):
    """On the clip with two faces, frames without a face and a cut, the keyframe scan (the default
    --detect_every 5) gives per-frame detection's boxes and weights, and the overlapped stages
    (--overlap True, the default on a GPU) the serial path's frames with either."""
    checkpoint, video, audio = clip
    runs = {}
    for name, extra in (("default", ("--overlap", "True")), ("serial", ("--overlap", "False", "--detect_every", "1"))):
        runs[name] = tmp_path / f"{name}.mp4"
        assert main(flags(checkpoint, video, audio, runs[name], *extra)) == 0
    a, b = np.stack(list(iter_frames(str(runs["default"]), 25))), np.stack(list(iter_frames(str(runs["serial"]), 25)))
    assert a.shape == (20, H, W, 3) and np.array_equal(a, b)


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_in_the_wild_clip(clip, tmp_path):
    checkpoint, video, audio = clip
    one, two = tmp_path / "one.mp4", tmp_path / "two.mp4"
    code, output = run([sys.executable, str(REPO_ROOT / "generate.py"), *flags(checkpoint, video, audio, one)], timeout=300)
    assert code == 0, output
    code, output = run([*torchrun(2), str(REPO_ROOT / "generate_dist.py"), *flags(checkpoint, video, audio, two)], timeout=300)
    assert code == 0, output
    a, b = np.stack(list(iter_frames(str(one), 25))), np.stack(list(iter_frames(str(two), 25)))
    assert a.shape == b.shape == (20, H, W, 3)
    assert np.array_equal(a, b)
