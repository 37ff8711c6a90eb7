"""Streaming video I/O with PyAV: frames read at a fixed rate, and an atomic H.264 + AAC writer.

The generator streams decode -> detect -> crop -> sample -> paste -> encode in chunks, so nothing
here holds more than a couple of decoded frames: memory does not grow with the video length.

Frame-rate rule of `iter_frames` (ffmpeg's `fps` filter with its defaults round=near,
eof_action=round), evaluated in exact rational arithmetic on the container's timestamps:

- t_j is the presentation time of source frame j (frames sorted by time) minus t_0, so the first
  frame is at time 0 whatever the stream's start time;
- slot p_j = round_half_up(t_j * fps) is the output frame where source frame j starts;
- output frame k shows the LAST source frame j with p_j <= k, i.e. the frame on screen just
  before time (k + 1/2) / fps. Frames that share a slot are dropped except the last one, and a
  slot no frame starts in repeats the previous frame;
- there are N = round_half_up(T_end * fps) output frames (at least 1), where T_end is the end of
  the last frame: its time plus its packet duration (else the gap to the frame before it, else
  one frame at the stream's rate).

So a 25 fps source maps 1:1, 50 fps keeps frames 0, 2, 4, ..., 30 fps drops one frame in six
(output k = 3 shows source frame 4), and 24 fps repeats one frame a second (output 12 shows
source frame 11 again). Note this is the frame on screen at the half-slot point, not always the
frame nearest to k / fps (for 24 fps, output 12 at 0.48 s shows frame 11 at 0.458 s, not frame 12
at 0.5 s), exactly as ffmpeg does.

Display rotation: a phone stores its frames as the sensor sees them (sideways when held upright)
and records how to show them, as a display matrix (or, in files from old tools, a `rotate` tag).
Every frame read here is turned upright as a player (and ffmpeg's autorotate) would show it, and
`probe_video` reports the displayed size, so crops, boxes and outputs all live in upright frames.
The matrix may also mirror the picture (a selfie camera's clip): it is decomposed into a quarter
turn and a left-right mirror exactly as ffmpeg's autorotate applies it, not read for its angle
only. The same holds for a photograph's EXIF orientation (all eight, mirrors included).
"""

import contextlib
import functools
import math
import os
import struct
import uuid
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Iterator, List, Optional, Tuple, Union

import av
import numpy as np

from common.command import check_output_folder
from common.errors import MediaError
from common.files import reporting_full_disk

PathLike = Union[str, "os.PathLike[str]"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def is_image(path: PathLike) -> bool:
    """True if `path` names a still image (by extension); it is read as a one-frame video."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` reports. `num_frames` is exactly what `iter_frames` yields at that fps."""

    width: int
    height: int
    source_fps: float  # the stream's average rate (0.0 if it declares none); the requested fps for an image
    num_frames: int
    duration: float  # seconds from the first frame's start to the last frame's end
    has_audio: bool
    rotation: int = 0  # clockwise degrees (0, 90, 180, 270) the stored frames were turned to show them upright
    mirrored: bool = False  # after the turn, mirrored left-right (a selfie camera's display matrix)


@dataclass(frozen=True)
class _Timeline:
    """One demux pass over a video (no decoding) and the output -> source frame map at one fps."""

    info: VideoInfo
    pts: np.ndarray  # [F] int64 timestamps of the source frames in stream time base, sorted
    keyframe: np.ndarray  # [F] bool
    dts_or_pts: np.ndarray  # [F] int64 min(pts, dts): where dts-indexed demuxers (avi, mpeg-ts) find a keyframe
    source_of: np.ndarray  # [N] int64 source frame shown by output frame k
    timed: bool  # every packet had a pts: decoded frames are matched by pts, and seeking is safe


def _round_half_up(num: int, den: int) -> int:
    """round(num / den) with halves up, for num >= 0 and den > 0 (ffmpeg's AV_ROUND_NEAR_INF)."""
    return (2 * num + den) // (2 * den)


def _as_rate(fps: float) -> Fraction:
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return Fraction(fps).limit_denominator(1_000_000)


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        problem = "is a folder" if os.path.isdir(path) else "does not exist"
        raise MediaError(f"video '{path}' {problem}; give the path of a video or image file of a face")


@contextlib.contextmanager
def _reading(path: str) -> Iterator[None]:
    """Turn PyAV's errors while reading `path` into a one-line MediaError naming it."""
    try:
        yield
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise MediaError(
            f"video '{path}' could not be decoded ({reason}); re-encode it, e.g. to an H.264 .mp4"
        ) from exc


def _video_stream(container: "av.container.InputContainer", path: str) -> "av.VideoStream":
    """The first video stream that is not cover art (mp3 / m4a pictures are 'attached pictures')."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise MediaError(f"'{path}' has no video stream; give a video or an image of a face")


def _display_matrix(frame: "av.VideoFrame") -> Optional[Tuple[int, ...]]:
    """The frame's display matrix as ffmpeg stores it (9 little-endian int32, 16.16 fixed point
    except the last column), or None when it has none."""
    try:
        side_data = list(frame.side_data)
    except ValueError:
        # PyAV's enum lacks some newer side-data types (an image's EXIF block is 31) and fails on
        # the whole list: ffmpeg's angle is all that is left to read.
        angle = frame.rotation
        return None if not angle else tuple(round(65536 * v) for v in _angle_matrix(angle))
    for data in side_data:
        if data.type.name == "DISPLAYMATRIX" and len(bytes(data)) == 36:
            return struct.unpack("<9i", bytes(data))
    return None


def _angle_matrix(counter_clockwise: float) -> Tuple[float, ...]:
    """The first six entries of av_display_rotation_set's matrix for a counter-clockwise angle."""
    r = math.radians(counter_clockwise)
    return (math.cos(r), -math.sin(r), 0.0, math.sin(r), math.cos(r), 0.0)


def _orientation(frame: "av.VideoFrame") -> Tuple[int, bool]:
    """(clockwise degrees 0/90/180/270, then mirrored left-right) that show `frame` as a player
    does, from its display matrix: the rotation and the flip it holds, not only its angle.

    ffmpeg's autorotate (fftools' filter graph) turns `theta = round(atan2(m[1], m[0]))` degrees
    clockwise and then reads the signs it needs for the mirror: at 90 / 270 the sign of m[3]
    picks a transpose that flips, at 0 / 180 the signs of m[0] and m[4] give a horizontal and a
    vertical flip. Each of those eight results is a quarter turn, then perhaps a left-right
    mirror; angles between quarter turns round to the nearest one (ffmpeg would rotate by the
    angle exactly, which no upright crop can use).
    """
    m = _display_matrix(frame)
    if m is None or not (m[0] or m[3]) or not (m[1] or m[4]):  # none, or degenerate: ffmpeg ignores it
        return 0, False
    # av_display_rotation_get's angle: each column scaled to unit length first.
    quarter = round(math.degrees(math.atan2(m[1] / math.hypot(m[1], m[4]), m[0] / math.hypot(m[0], m[3]))) / 90) % 4
    if quarter == 0:  # vflip when m[4] < 0 = a half turn, then a mirror
        return (180, True) if m[4] < 0 else (0, False)
    if quarter == 2:  # hflip, plus vflip when m[4] < 0
        return (180, False) if m[4] < 0 else (0, True)
    if quarter == 1:  # transpose=clock, or cclock_flip (a plain transpose) when m[3] > 0
        return (90, m[3] > 0)
    return (270, m[3] < 0)  # transpose=cclock, or clock_flip (the anti-transpose) when m[3] < 0


def _tag_rotation(stream: "av.VideoStream") -> int:
    """Clockwise degrees of the legacy `rotate` stream tag, 0 if there is none.

    Old ffmpeg versions wrote it (and kept it in .mkv tags, upper-cased) and read it as clockwise;
    today's ffmpeg writes and reads a display matrix instead, so this only serves older files.
    """
    for key, value in stream.metadata.items():
        if key.lower() == "rotate":
            try:
                return round(float(value) / 90) * 90 % 360
            except ValueError:
                return 0
    return 0


def _upright(array: np.ndarray, rotation: int, mirrored: bool = False) -> np.ndarray:
    """RGB [H, W, 3] turned `rotation` degrees clockwise (np.rot90 turns counter-clockwise for
    k > 0), then mirrored left-right if `mirrored`, as a new contiguous array (OpenCV and
    torch.from_numpy want one)."""
    turned = np.rot90(array, k=-rotation // 90)
    return np.ascontiguousarray(turned[:, ::-1] if mirrored else turned)


# EXIF orientation tag (1..8) -> (clockwise degrees, then mirrored left-right), as the EXIF
# standard defines them (2: mirrored, 4: upside-down mirror, 5: transposed, 7: transversed).
EXIF_ORIENTATIONS = {1: (0, False), 2: (0, True), 3: (180, False), 4: (180, True),
                     5: (90, True), 6: (90, False), 7: (270, True), 8: (270, False)}


def _exif_orientation(path: str) -> Optional[Tuple[int, bool]]:
    """The EXIF orientation of an image file as (clockwise degrees, mirrored), None without one.
    Read with Pillow: PyAV gives an image's angle but not its mirror."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            tag = image.getexif().get(0x0112)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None
    return EXIF_ORIENTATIONS.get(tag)


def _read_image(path: str) -> Tuple[np.ndarray, int, bool]:
    """The image as an upright RGB array, and the clockwise degrees and mirror its EXIF
    orientation asked for."""
    exif = _exif_orientation(path)
    with _reading(path), av.open(path) as container:
        for frame in container.decode(_video_stream(container, path)):
            rotation, mirrored = exif if exif is not None else _orientation(frame)
            return _rgb(frame, rotation, mirrored), rotation, mirrored
    raise MediaError(f"image '{path}' contains no picture; give a valid .png or .jpg of a face")


def probe_video(path: PathLike, fps: float = 25.0) -> VideoInfo:
    """Displayed size, source rate, duration, audio presence, the exact number of frames at `fps`
    and the display rotation that `iter_frames` applies.

    Videos are demuxed, decoding only up to the first frame to read its display matrix (the result
    is cached per file). An image is one frame.
    Raises MediaError naming `path` if it is missing, unreadable, or has no video stream.
    """
    path = os.fspath(path)
    rate = _as_rate(fps)
    _check_file(path)
    if is_image(path):
        image, rotation, mirrored = _read_image(path)
        height, width = image.shape[:2]
        return VideoInfo(width, height, float(fps), 1, float(1 / rate), False, rotation, mirrored)
    return _timeline(path, fps).info


def _timeline(path: str, fps: float) -> _Timeline:
    stat = os.stat(path)
    # Size and mtime are in the key so that a file rewritten in place is scanned again.
    return _scan(path, stat.st_size, stat.st_mtime_ns, fps)


# The generator asks for one chunk of frames at a time; caching keeps that from re-reading the file.
@functools.lru_cache(maxsize=8)
def _scan(path: str, size: int, mtime_ns: int, fps: float) -> _Timeline:
    rate = _as_rate(fps)
    with _reading(path), av.open(path) as container:
        stream = _video_stream(container, path)
        tb = stream.time_base
        stream_rate = stream.average_rate or stream.guessed_rate
        one_frame = max(1, round(1 / ((stream_rate or rate) * tb)))  # ticks of one frame
        packets = []
        first_frame = None
        for p in container.demux(stream):
            # Empty packets flush the demuxer; discarded ones (edit lists) never reach the output.
            if p.size and not p.is_discard:
                packets.append((p.pts, p.dts, p.duration if p.duration and p.duration > 0 else 0, p.is_keyframe))
            # PyAV shows the display matrix only on decoded frames, so the first one is decoded
            # (discarded packets too: later frames may refer to them). One matrix holds for the clip.
            if first_frame is None:
                first_frame = next(iter(stream.decode(p)), None)
        rotation, mirrored = _orientation(first_frame) if first_frame is not None else (0, False)
        if not rotation and not mirrored:
            rotation = _tag_rotation(stream)
        width, height = stream.codec_context.width, stream.codec_context.height
        if rotation in (90, 270):
            width, height = height, width
        has_audio = bool(container.streams.audio)
    if not packets:
        raise MediaError(f"video '{path}' has no video frames; give a clip with a visible face")

    timed = all(p[0] is not None for p in packets)
    if timed:
        packets.sort(key=lambda p: p[0])
        pts = [p[0] for p in packets]
    else:
        # No timestamps (raw .h264 and the like): frames follow each other by their durations, as
        # ffmpeg assumes; such streams have no reordering, so decode order is presentation order.
        pts = np.cumsum([0] + [p[2] or one_frame for p in packets[:-1]]).tolist()
    last_duration = packets[-1][2] or (pts[-1] - pts[-2] if len(pts) > 1 and pts[-1] > pts[-2] else one_frame)
    end = pts[-1] + last_duration

    # Slot of tick offset d: round_half_up(d * tb * fps) = round_half_up(d * num / den), exact integers.
    num, den = tb.numerator * rate.numerator, tb.denominator * rate.denominator
    slots = np.array([_round_half_up((t - pts[0]) * num, den) for t in pts], dtype=np.int64)
    # One picture (a one-frame GIF or video) is a still whatever duration it declares: one frame,
    # as for an image file, so that callers treat it as a still and cover the audio with it.
    n_out = 1 if len(pts) == 1 else max(1, _round_half_up((end - pts[0]) * num, den))
    source_of = np.searchsorted(slots, np.arange(n_out), side="right") - 1

    info = VideoInfo(
        width=width,
        height=height,
        source_fps=float(stream_rate or 0.0),
        num_frames=n_out,
        duration=float((end - pts[0]) * tb),
        has_audio=has_audio,
        rotation=rotation,
        mirrored=mirrored,
    )
    return _Timeline(
        info=info,
        pts=np.array(pts, dtype=np.int64),
        keyframe=np.array([p[3] for p in packets], dtype=bool),
        dts_or_pts=np.array([min(t, t if p[1] is None else p[1]) for t, p in zip(pts, packets)], dtype=np.int64),
        source_of=source_of,
        timed=timed,
    )


def iter_frames(path: PathLike, fps: float = 25.0, start: int = 0, stop: Optional[int] = None) -> Iterator[np.ndarray]:
    """Yield upright RGB uint8 [H, W, 3] frames resampled to `fps`, output indices start <= k < stop.

    See the module docstring for the frame-rate rule; `stop` defaults to (and is clipped at)
    `probe_video(path, fps).num_frames`. Decoding starts at the last keyframe at or before the
    first needed frame. Frames are decoded as they are yielded, never all held. Each is turned by
    `probe_video(path).rotation`, so H and W are the displayed height and width. An image yields
    its one (upright) frame if start == 0. The file is checked at call time (MediaError naming it).
    """
    path = os.fspath(path)
    if start < 0 or (stop is not None and stop < 0):
        raise ValueError(f"start and stop must be >= 0, got start={start}, stop={stop}")
    _as_rate(fps)
    _check_file(path)
    if is_image(path):
        image, _, _ = _read_image(path)
        return iter([image] if start == 0 and (stop is None or stop > 0) else [])
    timeline = _timeline(path, fps)
    n_out = timeline.source_of.size
    return _resampled(path, timeline, start, n_out if stop is None else min(stop, n_out))


def _resampled(path: str, timeline: _Timeline, start: int, stop: int) -> Iterator[np.ndarray]:
    """Output frames start..stop-1: a two-frame window over the decoded source frames."""
    if start >= stop:
        return
    held = None  # (index, frame): the newest decoded frame at or before the current target
    pending = None  # (index, frame): the first decoded frame after it
    with _reading(path), contextlib.closing(_decoded(path, timeline, int(timeline.source_of[start]))) as decoded:
        for k in range(start, stop):
            target = timeline.source_of[k]
            if pending is not None and pending[0] <= target:
                held, pending = pending, None
            while pending is None:
                item = next(decoded, None)
                if item is None:
                    break
                if item[0] <= target:
                    held = item
                else:
                    pending = item
            # A frame the decoder dropped (corrupt data) is stood in for by its neighbour, so the
            # count always matches probe_video.
            current = held if held is not None else pending
            if current is None:
                raise MediaError(f"video '{path}' has no decodable frames; re-encode it, e.g. to an H.264 .mp4")
            yield _rgb(current[1], timeline.info.rotation, timeline.info.mirrored)


def _rgb(frame: "av.VideoFrame", rotation: int, mirrored: bool = False) -> np.ndarray:
    """A new upright RGB array per call (turned `rotation` degrees clockwise, then mirrored), so a
    repeated frame can be edited by the caller without touching the next copy (to_ndarray
    returns a view of the frame's buffer when it already is rgb24)."""
    array = frame.to_ndarray(format="rgb24")
    if rotation or mirrored:
        return _upright(array, rotation, mirrored)
    return array.copy() if frame.format.name == "rgb24" else array


def _decoded(path: str, timeline: _Timeline, first: int) -> Iterator[Tuple[int, "av.VideoFrame"]]:
    """Decoded source frames with their index, starting at or before source frame `first`."""
    for seek_ts in _seek_targets(timeline, first):
        with av.open(path) as container:
            stream = _video_stream(container, path)
            stream.thread_type = "AUTO"
            container.seek(seek_ts, stream=stream, backward=True)
            frames = _indexed(container.decode(stream), timeline)
            head = next(frames, None)
            # Demuxers index keyframes by pts (mp4, mkv, webm) or dts (avi, mpeg-ts), and some flag
            # non-keyframes as key: a seek that lands after `first` or off a keyframe is retried.
            if head is not None and head[0] <= first and head[1].key_frame:
                yield head
                yield from frames
                return
    with av.open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        yield from _indexed(container.decode(stream), timeline)


def _seek_targets(timeline: _Timeline, first: int) -> List[int]:
    """Timestamps to try seeking to for source frame `first`; empty if decoding from the start is as good."""
    if not timeline.timed:
        return []
    keys = np.flatnonzero(timeline.keyframe[: first + 1])
    if keys.size == 0 or keys[-1] == 0:
        return []
    key = keys[-1]
    targets = [int(timeline.pts[key])]
    if timeline.dts_or_pts[key] != timeline.pts[key]:
        targets.append(int(timeline.dts_or_pts[key]))
    return targets


def _indexed(frames: Iterable["av.VideoFrame"], timeline: _Timeline) -> Iterator[Tuple[int, "av.VideoFrame"]]:
    """Pair each decoded frame with its source index: by pts when known, else the next index."""
    index = -1
    for frame in frames:
        if timeline.timed and frame.pts is not None:
            index = int(np.searchsorted(timeline.pts, frame.pts, side="right")) - 1
        else:
            index += 1
        yield index, frame


def _open_output(tmp: str, path: str, fps: Fraction, sample_rate: Optional[int], crf: int = 18, preset: str = "veryfast"):
    """(container, H.264 stream, AAC stream or None) writing to `tmp`, for `path`'s messages.

    PyAV creates the file at the first packet, so this fails only on an extension whose container
    cannot hold H.264 + AAC, and closing it unused leaves nothing on disk.
    """
    try:
        container = av.open(tmp, "w")
        video = container.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": preset})
        video.pix_fmt = "yuv420p"
        audio = None if sample_rate is None else container.add_stream("aac", rate=sample_rate, layout="mono")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(
            f"cannot write video '{path}' ({getattr(exc, 'strerror', None) or exc}); "
            "give it a video extension such as .mp4 or .mkv"
        ) from exc
    return container, video, audio


def check_video_output(path: PathLike, flag: str) -> None:
    """Fail now, before any frame is made, if `path` cannot become a video: it is a folder, its
    extension names no container for H.264 + AAC, or its folder cannot be created or written.
    Creates nothing."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise MediaError(f"{flag} '{path}' is a folder; give a file name in it, e.g. '{os.path.join(path, 'result.mp4')}'")
    check_output_folder(os.path.dirname(os.path.abspath(path)), flag)
    container, _, _ = _open_output(path, path, Fraction(25), 16000)
    container.close()


class VideoWriter:
    """Encode RGB frames to H.264 (libx264, yuv420p) with optional AAC mono audio; a context manager.

    The stream carries no display rotation: the frames given are already upright (`iter_frames`
    turned a phone clip's frames by its display matrix), so the file plays upright as stored.

    The file is written under a temporary name in the same folder and renamed to `path` on a clean
    exit, so an interrupted run leaves no half file; on an exception the temporary file is deleted
    and the exception propagates. The frame size is fixed by the first frame; an odd width or
    height is padded to even by repeating the last column / row, since yuv420p needs even sizes
    (the file is then one pixel wider / taller than the frames). `audio` (float32 mono [T] at
    `sample_rate`) is encoded along with the frames, trimmed or zero-padded to exactly
    n_frames / fps seconds.
    """

    def __init__(
        self,
        path: PathLike,
        fps: float = 25,
        audio: Optional[np.ndarray] = None,
        sample_rate: int = 16000,
        crf: int = 18,
        preset: str = "veryfast",
    ):
        self.path = os.fspath(path)
        self.fps = _as_rate(fps)
        self.sample_rate = int(sample_rate)
        self.n_frames = 0
        self._audio = None if audio is None else np.asarray(audio, dtype=np.float32)
        if self._audio is not None and self._audio.ndim != 1:
            raise ValueError(f"audio must be mono samples [T], got shape {self._audio.shape}")
        self._audio_sent = 0  # samples encoded so far
        self._size: Optional[Tuple[int, int]] = None
        self._closed = False
        folder, name = os.path.split(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise MediaError(f"cannot write video '{self.path}': folder '{folder}' does not exist; create it first")
        stem, ext = os.path.splitext(name)
        # Same folder so the final rename is atomic; same extension so PyAV picks the container.
        self._tmp = os.path.join(folder, f".{stem}.{uuid.uuid4().hex[:12]}.tmp{ext}")
        self._container, self._video, self._audio_stream = _open_output(
            self._tmp, self.path, self.fps, self.sample_rate if self._audio is not None else None, crf, preset
        )

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()

    def write(self, frame: np.ndarray) -> None:
        """Encode one RGB uint8 [H, W, 3] frame (the same size as the first one)."""
        if self._closed:
            raise ValueError(f"VideoWriter for '{self.path}' is closed")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape:
            raise ValueError(f"frames must be RGB uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        if self._size is None:
            self._size = (h, w)
            self._video.height, self._video.width = h + h % 2, w + w % 2
        elif (h, w) != self._size:
            raise ValueError(f"frame size {h}x{w} differs from the first frame's {self._size[0]}x{self._size[1]}")
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts, video_frame.time_base = self.n_frames, 1 / self.fps
        self._mux(self._video.encode(video_frame))
        self.n_frames += 1
        self._feed_audio()

    def _feed_audio(self) -> None:
        """Encode the audio up to the end of the frames written so far (zeros past the track's end).

        Feeding it along with the frames keeps the muxer's interleaving queue short.
        """
        if self._audio_stream is None:
            return
        until = _round_half_up(self.n_frames * self.sample_rate * self.fps.denominator, self.fps.numerator)
        chunk = self._audio[self._audio_sent : until]
        chunk = np.pad(chunk, (0, until - self._audio_sent - chunk.size))
        audio_frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
        audio_frame.sample_rate = self.sample_rate
        audio_frame.pts, audio_frame.time_base = self._audio_sent, Fraction(1, self.sample_rate)
        self._mux(self._audio_stream.encode(audio_frame))
        self._audio_sent = until

    def _mux(self, packets: List["av.Packet"]) -> None:
        # A full disk shows first here or in close(): one line naming the folder, not PyAV's OSError.
        with reporting_full_disk(self.path):
            for packet in packets:
                self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoders, finish the file and rename it to `path`; on failure delete it."""
        if self._closed:
            return
        try:
            if self.n_frames == 0:
                raise ValueError(f"no frames were written to '{self.path}'")
            self._mux(self._video.encode(None))
            if self._audio_stream is not None:
                self._mux(self._audio_stream.encode(None))
            with reporting_full_disk(self.path):  # the trailer (an MP4's index) is written here
                self._container.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.discard()
            raise
        self._closed = True

    def discard(self) -> None:
        """Abandon the output: close the container and delete the temporary file."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        except (av.error.FFmpegError, OSError, ValueError):
            pass  # the half-written file is deleted below anyway
        if os.path.exists(self._tmp):
            os.remove(self._tmp)


def write_video(
    path: PathLike,
    frames: Iterable[np.ndarray],
    fps: float = 25,
    audio: Optional[np.ndarray] = None,
    sample_rate: int = 16000,
    crf: int = 18,
    preset: str = "veryfast",
) -> int:
    """Write all `frames` (RGB uint8 [H, W, 3]) with `VideoWriter`; returns the number written."""
    with VideoWriter(path, fps, audio, sample_rate, crf, preset) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.n_frames
