"""Tests for dataset/video_io.py: 25 fps resampling like ffmpeg's fps filter, probing, seeking, images, the writer.

Every clip is rendered by the tests with PyAV into tmp_path. Frame i carries its index as 8 black
or white stripes (one bit each), which survive compression, so each decoded frame tells which
source frame it shows.
"""

import os
from fractions import Fraction
from math import ceil

import av
import cv2
import numpy as np
import pytest

from audio.audio import load_wav
from common.errors import MediaError
from dataset import video_io
from dataset.video_io import IMAGE_EXTENSIONS, VideoInfo, VideoWriter, is_image, iter_frames, probe_video, write_video
from helpers import has_encoder

H, W, BITS = 32, 128, 8


def _index_frame(i: int) -> np.ndarray:
    bits = (i >> np.arange(BITS)) & 1
    row = np.repeat(bits * 255, W // BITS).astype(np.uint8)
    return np.repeat(np.broadcast_to(row[None, :, None], (1, W, 3)), H, axis=0)


def _read_index(rgb: np.ndarray) -> int:
    stripes = rgb[H // 4 : 3 * H // 4].reshape(H // 2, BITS, W // BITS, 3)[:, :, 4:-4].mean(axis=(0, 2, 3))
    return int(sum(1 << b for b in range(BITS) if stripes[b] > 128))


def _render(path, fps, n=None, codec="libx264", pts=None, time_base=None, gop=None, fmt=None, pix_fmt="yuv420p") -> str:
    """Write frames 0..n-1 (or one per entry of `pts`, in units of `time_base`, default 1/fps)."""
    pts = list(range(n)) if pts is None else pts
    time_base = time_base or Fraction(1, 1) / Fraction(fps)
    with av.open(str(path), "w", format=fmt) as container:
        options = {"g": str(gop)} if gop and codec == "libx264" else {}
        stream = container.add_stream(codec, rate=Fraction(fps), options=options)
        stream.width, stream.height, stream.pix_fmt = W, H, pix_fmt
        stream.codec_context.time_base = time_base
        if gop and codec != "libx264":
            stream.codec_context.gop_size = gop
        for i, t in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(_index_frame(i), format="rgb24")
            frame.pts, frame.time_base = t, time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def _expected_cfr(n: int, src_fps) -> list:
    """Source frame of each 25 fps output for n frames at src_fps, from the rule solved for j.

    Source frame j (at j / F) starts in slot round_half_up(25 j / F); output k shows the last j
    whose slot is <= k, i.e. the last j with j < (k + 1/2) F / 25. There are
    round_half_up(25 n / F) outputs.
    """
    f = Fraction(src_fps)
    count = int(Fraction(25 * n) / f + Fraction(1, 2))
    return [ceil((k + Fraction(1, 2)) * f / 25) - 1 for k in range(count)]


def _indices(path, **kw) -> list:
    return [_read_index(frame) for frame in iter_frames(path, **kw)]


@pytest.mark.parametrize("src_fps, seconds", [(25, 1.0), (30, 1.5), (50, 1.0), (24, 1.5), (Fraction(30000, 1001), 1.0)])
def test_resample_to_25fps(tmp_path, src_fps, seconds):
    n = int(round(seconds * src_fps))
    path = _render(tmp_path / "clip.mp4", src_fps, n)
    expected = _expected_cfr(n, src_fps)
    got = _indices(path)
    assert got == expected
    info = probe_video(path)
    assert info.num_frames == len(got)
    assert (info.width, info.height, info.has_audio) == (W, H, False)
    assert info.source_fps == pytest.approx(float(src_fps))
    assert info.duration == pytest.approx(n / float(src_fps), abs=1e-3)


def test_known_patterns():
    """Spot values of the rule, written out by hand."""
    assert _expected_cfr(25, 25) == list(range(25))
    assert _expected_cfr(50, 50)[:4] == [0, 2, 4, 6]
    assert _expected_cfr(30, 30)[:7] == [0, 1, 2, 4, 5, 6, 7]  # one frame in six dropped
    assert _expected_cfr(24, 24)[10:15] == [10, 11, 11, 12, 13]  # one frame a second repeated
    assert len(_expected_cfr(45, 30)) == 38  # 37.5 rounds up


@pytest.mark.parametrize(
    "ext, codec, fmt",
    [
        ("mkv", "libx264", None),
        ("avi", "mpeg4", None),
        ("webm", "libvpx", None),
        ("mov", "mpeg4", None),
        ("ts", "libx264", "mpegts"),
    ],
)
def test_containers(tmp_path, ext, codec, fmt):
    if not has_encoder(codec):
        pytest.skip(f"PyAV has no {codec} encoder here")
    path = _render(tmp_path / f"clip.{ext}", 30, 30, codec=codec, fmt=fmt)
    got = _indices(path)
    assert got == _expected_cfr(30, 30)
    assert probe_video(path).num_frames == len(got) == 25


def test_stream_without_timestamps(tmp_path):
    # A raw H.264 stream has no timestamps: frames follow each other by their durations (1/30 s).
    path = _render(tmp_path / "raw.h264", 30, 30, fmt="h264")
    with av.open(path) as container:
        assert all(p.pts is None for p in container.demux(video=0))
    got = _indices(path)
    assert got == _expected_cfr(30, 30)
    assert probe_video(path).num_frames == len(got)
    assert _indices(path, start=10, stop=14) == got[10:14]


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_stream_not_starting_at_zero(tmp_path, ext):
    # 24 fps frames stamped from 1.25 s on: time zero is the first frame, not the stream origin.
    path = _render(tmp_path / f"late.{ext}", 24, pts=[30 + i for i in range(24)])
    with av.open(path) as container:
        assert container.streams.video[0].start_time > 0
    got = _indices(path)
    assert got == _expected_cfr(24, 24)
    assert probe_video(path).num_frames == len(got)


def test_variable_timestamps(tmp_path):
    ms = [0, 20, 30, 60, 65, 70, 160, 300, 301, 330, 420]  # ties at 20 and 60 ms, a dropped pair, gaps
    path = _render(tmp_path / "vfr.mkv", 25, pts=ms, time_base=Fraction(1, 1000))
    with av.open(path) as container:
        last_duration = [p.duration for p in container.demux(video=0) if p.size][-1]
    slots = [int(Fraction(t * 25, 1000) + Fraction(1, 2)) for t in ms]  # round half up
    count = int(Fraction((ms[-1] + last_duration) * 25, 1000) + Fraction(1, 2))
    expected = [max(j for j, s in enumerate(slots) if s <= k) for k in range(count)]
    assert expected[:5] == [0, 2, 5, 5, 6]
    got = _indices(path)
    assert got == expected
    assert probe_video(path).num_frames == len(got)


@pytest.mark.parametrize(
    "ext, codec, src_fps", [("mp4", "libx264", 50), ("mkv", "libx264", 30), ("avi", "mpeg4", 24), ("ts", "libx264", 25)]
)
def test_start_stop_is_a_slice(tmp_path, ext, codec, src_fps):
    # A keyframe every 10 frames (and B-frames for x264), so seeking has somewhere to go.
    fmt = "mpegts" if ext == "ts" else None
    path = _render(tmp_path / f"gop.{ext}", src_fps, 2 * src_fps, codec=codec, gop=10, fmt=fmt)
    full = list(iter_frames(path))
    assert [_read_index(f) for f in full] == _expected_cfr(2 * src_fps, src_fps)
    for start, stop in [(0, 5), (7, 19), (23, 40), (len(full) - 1, None), (30, 10_000), (12, 12)]:
        part = list(iter_frames(path, start=start, stop=stop))
        assert len(part) == len(full[start:stop])
        assert all(np.array_equal(a, b) for a, b in zip(part, full[start:stop])), (start, stop)


def test_seeks_instead_of_decoding_from_the_start(tmp_path, monkeypatch):
    path = _render(tmp_path / "long.mp4", 25, 250, gop=10)
    decoded = []
    index_frames = video_io._indexed

    def counting(frames, timeline):
        for item in index_frames(frames, timeline):
            decoded.append(item[0])
            yield item

    monkeypatch.setattr(video_io, "_indexed", counting)
    frames = iter_frames(path, start=203, stop=208)
    assert _read_index(next(frames)) == 203
    assert min(decoded) >= 190 and len(decoded) <= 20  # from the keyframe at 200, and lazily
    assert [_read_index(f) for f in frames] == [204, 205, 206, 207]


@pytest.mark.parametrize("ext, codec, pix_fmt", [("mp4", "libx264", "yuv420p"), ("mov", "png", "rgb24")])
def test_repeated_frames_are_independent_arrays(tmp_path, ext, codec, pix_fmt):
    path = _render(tmp_path / f"clip24.{ext}", 24, 24, codec=codec, pix_fmt=pix_fmt)
    frames = iter_frames(path, start=11, stop=13)  # output 12 repeats source frame 11
    first = next(frames)
    first[:] = 0  # the caller edits the frame (e.g. pastes a mouth) before asking for the next
    assert _read_index(next(frames)) == 11


@pytest.mark.parametrize("ext", IMAGE_EXTENSIONS)
def test_images(tmp_path, ext):
    rgb = np.zeros((37, 50, 3), np.uint8)
    rgb[:, :25] = (200, 40, 10)
    rgb[:, 25:] = (20, 90, 220)
    path = str(tmp_path / f"face{ext}")
    assert cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert is_image(path)
    assert probe_video(path) == VideoInfo(50, 37, 25.0, 1, 0.04, False)
    frames = list(iter_frames(path))
    assert len(frames) == 1 and frames[0].shape == (37, 50, 3) and frames[0].dtype == np.uint8
    assert np.abs(frames[0].astype(int) - rgb).mean() < 6  # jpg / lossy webp
    assert list(iter_frames(path, start=1)) == []


def test_is_image():
    assert is_image("a/b/FACE.PNG") and is_image("x.jpeg") and is_image("x.webp")
    assert not is_image("x.mp4") and not is_image("png") and not is_image("x.gif")


def _smooth_frames(n: int, h: int, w: int) -> list:
    y, x = np.mgrid[0:h, 0:w]
    return [
        np.stack(
            [
                128 + 90 * np.sin(2 * np.pi * (x / 128 + i / 50)),
                128 + 90 * np.cos(2 * np.pi * (y / 96 - i / 60)),
                np.full((h, w), 60 + 4 * i),
            ],
            axis=-1,
        )
        .round()
        .astype(np.uint8)
        for i in range(n)
    ]


def test_writer_round_trip(tmp_path):
    frames = _smooth_frames(30, 96, 128)
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(24000) / 16000)).astype(np.float32)  # 1.5 s
    path = str(tmp_path / "out.mp4")
    with VideoWriter(path, fps=25, audio=tone, sample_rate=16000) as writer:
        for frame in frames:
            writer.write(frame)
    assert os.listdir(tmp_path) == ["out.mp4"]
    with av.open(path) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and video.average_rate == 25
        assert (video.width, video.height) == (128, 96)
        assert audio.codec_context.name == "aac" and audio.sample_rate == 16000
        assert sum(1 for _ in container.decode(video)) == 30
    wav = load_wav(path, 16000)
    assert abs(wav.size / 16000 - 1.2) < 0.03
    assert np.sqrt(np.mean(wav[1600:-1600] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)
    decoded = list(iter_frames(path))
    assert len(decoded) == 30
    assert max(np.abs(a.astype(int) - b).mean() for a, b in zip(decoded, frames)) < 3


def test_writer_pads_short_audio_and_odd_sizes(tmp_path):
    frames = _smooth_frames(25, 47, 63)
    path = str(tmp_path / "odd.mkv")
    assert write_video(path, iter(frames), fps=25, audio=np.zeros(4000, np.float32)) == 25
    assert abs(load_wav(path, 16000).size / 16000 - 1.0) < 0.03
    decoded = list(iter_frames(path))
    assert len(decoded) == 25 and decoded[0].shape == (48, 64, 3)
    assert max(np.abs(a[:47, :63].astype(int) - b).mean() for a, b in zip(decoded, frames)) < 3
    # The padding repeats the last row and column.
    assert np.abs(decoded[0][47, :63].astype(int) - frames[0][46]).mean() < 4
    assert np.abs(decoded[0][:47, 63].astype(int) - frames[0][:, 62]).mean() < 4


def test_writer_without_audio(tmp_path):
    path = str(tmp_path / "silent.mp4")
    write_video(path, _smooth_frames(5, 32, 32))
    with av.open(path) as container:
        assert not container.streams.audio and len(container.streams.video) == 1
    assert probe_video(path).has_audio is False and probe_video(path).num_frames == 5


def test_writer_leaves_nothing_on_error(tmp_path):
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(path, audio=np.zeros(16000, np.float32)) as writer:
            for frame in _smooth_frames(10, 32, 32):
                writer.write(frame)
            raise RuntimeError("boom")
    with pytest.raises(ValueError, match="differs"):
        with VideoWriter(path) as writer:
            writer.write(np.zeros((32, 32, 3), np.uint8))
            writer.write(np.zeros((32, 34, 3), np.uint8))
    with pytest.raises(ValueError, match="no frames"):
        with VideoWriter(path):
            pass
    assert os.listdir(tmp_path) == []


def test_writer_bad_destination(tmp_path):
    with pytest.raises(MediaError, match="does not exist"):
        VideoWriter(tmp_path / "missing" / "out.mp4")
    with pytest.raises(MediaError, match="extension"):
        VideoWriter(tmp_path / "out.unknownext")
    assert os.listdir(tmp_path) == []


def _write_audio_file(path, codec: str, cover: bool = False) -> str:
    """One second of silence; with `cover`, plus a cover picture (an 'attached picture' video stream)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=16000, layout="mono")
        if cover:
            picture = container.add_stream("png")
            picture.width, picture.height, picture.pix_fmt = 16, 16, "rgb24"
            picture.disposition = av.stream.Disposition.attached_pic
            image = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            image.pts = 0
            for packet in list(picture.encode(image)) + list(picture.encode(None)):
                container.mux(packet)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            container.mux(packet)
    return str(path)


def test_errors_name_the_file(tmp_path):
    missing = str(tmp_path / "nope.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    bad_image = tmp_path / "garbage.png"
    bad_image.write_bytes(b"not a png at all" * 10)
    audio_only = _write_audio_file(tmp_path / "speech.m4a", "aac")
    cover_art = audio_only
    if has_encoder("libmp3lame"):
        cover_art = _write_audio_file(tmp_path / "song.mp3", "libmp3lame", cover=True)
    for path, words in [
        (missing, "does not exist"),
        (str(tmp_path), "is a folder"),
        (str(garbage), "could not be decoded"),
        (str(bad_image), "could not be decoded"),
        (audio_only, "no video stream"),
        (cover_art, "no video stream"),
    ]:
        for call in (probe_video, iter_frames):
            with pytest.raises(MediaError, match=words) as info:
                call(path)
            assert path in str(info.value) and "\n" not in str(info.value)
