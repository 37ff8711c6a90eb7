"""Tests for the display rotation in dataset/video_io.py: phone clips decode upright.

Every clip is a real H.264 file written here with PyAV; its rotation is stored in the file (a
display matrix, or the legacy `rotate` tag) and read back from it. The stored picture is 64 wide
and 32 tall with a bright 8x8 block in its top-left corner, so a decoded frame tells both its
size and which way it was turned.
"""

import shutil
import subprocess

import av
import numpy as np
import pytest
from PIL import Image

from audio.audio import save_wav
from dataset.synthetic import draw_face, speech_like
from dataset.video_io import iter_frames, probe_video
from face_detection import voxceleb2_box
from helpers import TINY_CLI_FLAGS, save_tiny_checkpoint
from inference.cli import main

H, W, BLOCK = 32, 64, 8
N_FRAMES = 30


def _stored_picture() -> np.ndarray:
    picture = np.full((H, W, 3), 40, np.uint8)
    picture[:BLOCK, :BLOCK] = 230  # grey, so that chroma subsampling does not blur it
    return picture


def _write(path, frames, matrix_degrees=None, tag=None, gop=None, hflip=False) -> str:
    """An H.264 file of `frames`; `matrix_degrees` is the display matrix's counter-clockwise angle
    (PyAV's and ffprobe's convention), `tag` the legacy `rotate` stream tag."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"g": str(gop)} if gop else {})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if matrix_degrees is not None:
            stream.set_display_rotation(matrix_degrees, hflip=hflip)
        if tag is not None:
            stream.metadata["rotate"] = str(tag)
        for i, picture in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def _matrix_angle_in_file(path) -> int:
    """The display matrix angle as ffmpeg reads the file (counter-clockwise; 0 if none)."""
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).rotation


def _bright_box(frame: np.ndarray):
    """(top, bottom, left, right) of the bright block, edges exclusive."""
    rows, cols = np.nonzero(frame.mean(axis=2) > 135)
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


# Matrix angle written (counter-clockwise), clockwise turn applied, displayed (height, width), and
# where a viewer sees the stored top-left block. A phone held upright records -90: shown turned a
# quarter clockwise, the stored top-left corner lands top right.
ROTATIONS = [
    (None, 0, (H, W), (0, BLOCK, 0, BLOCK)),
    (-90, 90, (W, H), (0, BLOCK, H - BLOCK, H)),
    (180, 180, (H, W), (H - BLOCK, H, W - BLOCK, W)),
    (90, 270, (W, H), (W - BLOCK, W, 0, BLOCK)),
]


@pytest.mark.parametrize("matrix_degrees, clockwise, shape, block", ROTATIONS)
def test_display_matrix_gives_upright_frames_and_displayed_size(tmp_path, matrix_degrees, clockwise, shape, block):
    path = _write(tmp_path / "phone.mp4", [_stored_picture()] * N_FRAMES, matrix_degrees, gop=10)
    assert _matrix_angle_in_file(path) == {None: 0, 180: -180}.get(matrix_degrees, matrix_degrees)

    info = probe_video(path)
    assert (info.height, info.width, info.rotation) == (*shape, clockwise)
    assert info.num_frames == N_FRAMES
    frames = list(iter_frames(path))
    assert len(frames) == N_FRAMES
    assert all(f.shape == (*shape, 3) and f.flags.c_contiguous for f in frames)
    assert all(_bright_box(f) == block for f in frames)
    # A start past a keyframe seeks; those frames are turned too.
    later = list(iter_frames(path, start=25, stop=28))
    assert [f.shape for f in later] == [(*shape, 3)] * 3 and _bright_box(later[0]) == block


def test_repeated_rotated_frames_are_independent_arrays(tmp_path):
    path = _write(tmp_path / "phone.mp4", [_stored_picture()] * 3, matrix_degrees=-90)
    first, second = list(iter_frames(path, fps=50, stop=2))  # 50 fps shows each source frame twice
    first[:] = 0
    assert _bright_box(second) == (0, BLOCK, H - BLOCK, H)


def test_legacy_rotate_tag_is_clockwise(tmp_path):
    # Today's mp4 muxer drops the tag, but Matroska keeps it (as ROTATE), as in files from old tools.
    path = _write(tmp_path / "old.mkv", [_stored_picture()] * 5, tag=90)
    with av.open(path) as container:
        assert {k.lower(): v for k, v in container.streams.video[0].metadata.items()}["rotate"] == "90"
    assert _matrix_angle_in_file(path) == 0

    info = probe_video(path)
    assert (info.width, info.height, info.rotation) == (H, W, 90)
    assert all(_bright_box(f) == (0, BLOCK, H - BLOCK, H) for f in iter_frames(path))


# ffmpeg's autorotate (fftools' filter graph) for each display matrix PyAV writes as "turn
# `degrees` counter-clockwise, then flip": the filters it inserts, as numpy operations on the
# stored picture. Independent of video_io's decomposition, which returns a turn and a mirror.
FILTERS = {
    "hflip": lambda a: a[:, ::-1],
    "vflip": lambda a: a[::-1],
    "clock": lambda a: np.rot90(a, k=-1),
    "cclock": lambda a: np.rot90(a, k=1),
    "cclock_flip": lambda a: a.transpose(1, 0, 2),
    "clock_flip": lambda a: a[::-1, ::-1].transpose(1, 0, 2),
}
MIRRORED = [  # (degrees, hflip, vflip), ffmpeg's filters, video_io's (clockwise turn, mirrored)
    ((0, True, False), ["hflip"], (0, True)),
    ((0, False, True), ["vflip"], (180, True)),
    ((90, True, False), ["clock_flip"], (270, True)),
    ((-90, True, False), ["cclock_flip"], (90, True)),
    ((180, True, False), ["vflip"], (180, True)),
    ((90, False, True), ["cclock_flip"], (90, True)),
    ((0, True, True), ["hflip", "vflip"], (180, False)),
]


def _mirror_clip(path, degrees, hflip, vflip) -> tuple:
    """A lossless 48x64 clip (4:4:4, crf 0) of 8x8 grey blocks of random levels, its display
    matrix written by PyAV; returns (path, the stored picture)."""
    blocks = np.random.default_rng(0).integers(0, 8, (6, 8, 1)) * 30
    picture = np.ascontiguousarray(blocks.astype(np.uint8).repeat(8, 0).repeat(8, 1).repeat(3, 2))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv444p"
        stream.set_display_rotation(degrees, hflip=hflip, vflip=vflip)
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path), picture


@pytest.mark.parametrize("written, filters, decomposed", MIRRORED)
def test_mirrored_display_matrix_shows_the_picture_as_ffmpeg_does(tmp_path, written, filters, decomposed):
    path, picture = _mirror_clip(tmp_path / "selfie.mp4", *written)
    want = picture
    for name in filters:
        want = FILTERS[name](want)
    info = probe_video(path)
    assert (info.rotation, info.mirrored) == decomposed
    assert (info.height, info.width) == want.shape[:2]
    frames = list(iter_frames(path))
    assert len(frames) == 3
    for frame in frames:
        assert frame.shape == want.shape and np.abs(frame.astype(int) - want).max() <= 1
    if shutil.which("ffmpeg"):  # and against ffmpeg's own autorotated decoding, where it is installed
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-frames:v", "1", "-f", "rawvideo",
                              "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
        reference = np.frombuffer(raw, np.uint8).reshape(want.shape)
        assert np.abs(frames[0].astype(int) - reference).max() <= 1


def test_exif_orientation_of_a_photograph_is_honoured(tmp_path):
    path = str(tmp_path / "phone.jpg")
    image = Image.fromarray(_stored_picture())
    exif = image.getexif()
    exif[0x0112] = 6  # EXIF orientation 6: turn 90 degrees clockwise to display
    image.save(path, exif=exif, quality=95)

    info = probe_video(path)
    assert (info.width, info.height, info.rotation, info.num_frames) == (H, W, 90, 1)
    (frame,) = list(iter_frames(path))
    assert frame.shape == (W, H, 3) and _bright_box(frame) == (0, BLOCK, H - BLOCK, H)


@pytest.mark.parametrize("orientation, turn", [(2, lambda a: a[:, ::-1]), (4, lambda a: a[::-1]),
                                               (5, lambda a: a.transpose(1, 0, 2)),
                                               (7, lambda a: a[::-1, ::-1].transpose(1, 0, 2))])
def test_mirrored_exif_orientation_of_a_photograph_is_honoured(tmp_path, orientation, turn):
    path = str(tmp_path / "selfie.png")  # lossless, so the frame equals the turned picture exactly
    image = Image.fromarray(_stored_picture())
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif)

    want = turn(_stored_picture())
    info = probe_video(path)
    assert (info.height, info.width, info.mirrored) == (*want.shape[:2], True)
    (frame,) = list(iter_frames(path))
    assert np.array_equal(frame, want)


# How a phone stores the upright picture, and the matrix (degrees, hflip) that shows it again: a
# quarter turn counter-clockwise undone by -90; a selfie camera's picture also mirrored (the
# transpose), undone by -90 and a mirror (ffmpeg's transpose=cclock_flip, the transpose again).
STORED = {
    "rotated": (lambda f: np.rot90(f), -90, False),
    "mirrored": (lambda f: f.transpose(1, 0, 2), -90, True),
}


@pytest.mark.parametrize("kind", sorted(STORED))
def test_generate_on_a_phone_clip_writes_an_upright_output_of_the_displayed_size(tmp_path, kind):
    height, width = 224, 160  # a portrait face, as the viewer sees it
    upright = [draw_face(i, height, width) for i in range(12)]
    store, degrees, hflip = STORED[kind]
    clip = _write(tmp_path / "phone.mp4", [np.ascontiguousarray(store(f)) for f in upright], matrix_degrees=degrees,
                  hflip=hflip)
    checkpoint = tmp_path / "tiny.pt"
    save_tiny_checkpoint(checkpoint)
    audio = tmp_path / "speech.wav"
    save_wav(speech_like(0.3), audio, 16000)
    out = tmp_path / "out.mp4"

    argv = [*TINY_CLI_FLAGS, "--model_path", str(checkpoint), "--progress", "False", "--generate_from_filelist", "0",
            "--video_path", clip, "--audio_path", str(audio), "--out_path", str(out), "--is_voxceleb2", "True"]
    assert main(argv) == 0

    info = probe_video(out)
    assert (info.width, info.height, info.rotation, info.num_frames) == (width, height, 0, 5)
    assert _matrix_angle_in_file(out) == 0
    # Below the VoxCeleb2 crop the output is the upright input, up to two H.264 encodes (about 5
    # grey levels); the input upside down, as a wrong turn would give, differs there by 27.
    _, y2, _, _ = voxceleb2_box(height, width)
    for got, want in zip(iter_frames(out), upright):
        assert np.abs(got[y2:].astype(int) - want[y2:]).mean() < 10
