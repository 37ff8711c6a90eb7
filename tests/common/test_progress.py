"""Progress: plain lines off a terminal (count, rate, time left), a bar on one, and per-pass updates."""

import io

import pytest

from common.progress import PLAIN_LINE_SECONDS, Progress, format_duration, plain_line


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_format_duration():
    assert [format_duration(s) for s in (0, 59.4, 61, 3599, 3600, 3725)] == ["0:00", "0:59", "1:01", "59:59", "1:00:00", "1:02:05"]


def test_plain_line_rate_and_time_left():
    # 50 of 250 frames in 20 s: 2.5 frames/s, 200 frames left = 80 s.
    assert plain_line("out.mp4", 50, 250, "frame", 20.0) == "out.mp4: 50/250 frames (20%), 2.50 frames/s, 1:20 left"
    assert plain_line("out.mp4", 0, 250, "frame", 0.0) == "out.mp4: 0/250 frames (0%)"


def test_plain_lines_are_throttled_and_the_last_one_is_always_written():
    clock, stream, seen = Clock(), io.StringIO(), []
    bar = Progress(10, "job", "frame", True, stream, callback=lambda d, t: seen.append((d, t)), clock=clock)
    for _ in range(10):
        clock.now += PLAIN_LINE_SECONDS / 4
        bar.update(1)
    bar.update(1)  # past the total: clamped, no second final line
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    # the first update, then one per PLAIN_LINE_SECONDS (every 4th update), then the last one
    assert [line.split(":")[1].split()[0] for line in lines] == ["1/10", "5/10", "9/10", "10/10"]
    assert lines[-1] == "job: 10/10 frames (100%), 2.00 frames/s, 0:00 left"  # 10 frames in 5 s
    assert seen[:3] == [(1, 10), (2, 10), (3, 10)] and seen[-1] == (10, 10) and len(seen) == 11


def test_a_terminal_gets_a_bar_and_disabled_progress_only_calls_back():
    stream = Terminal()
    with Progress(4, "job", "frame", True, stream) as bar:
        bar.update(1.5)
        bar.update(2.5)
        assert bar.done == 4
    assert stream.getvalue().startswith("\rjob:   0%|") and "frame/s]" in stream.getvalue()  # tqdm redraws in place
    quiet, seen = io.StringIO(), []
    with Progress(4, "job", "frame", False, quiet, callback=lambda d, t: seen.append(d)) as bar:
        bar.update(4)
    assert quiet.getvalue() == "" and seen == [4]


def test_generate_reports_every_network_pass_in_plain_lines(tmp_path, capsys, monkeypatch):
    """The generator off a terminal: one update per network pass (2 per 5-frame chunk), plain lines only."""
    from audio.audio import save_wav
    from dataset.synthetic import speech_like
    from helpers import TINY_CLI_FLAGS, render_clip, save_tiny_checkpoint
    from inference.options import parse_args
    from inference.pipeline import Generator

    checkpoint, video, audio = tmp_path / "tiny.pt", tmp_path / "face.mp4", tmp_path / "speech.wav"
    save_tiny_checkpoint(checkpoint)
    render_clip(video, n_frames=12)
    save_wav(speech_like(0.6), audio, 16000)
    monkeypatch.setattr("common.progress.PLAIN_LINE_SECONDS", 0.0)  # every update a line
    argv = [*TINY_CLI_FLAGS, "--model_path", str(checkpoint), "--sampling_batch_size", "5", "--generate_from_filelist", "0",
            "--video_path", str(video), "--audio_path", str(audio), "--out_path", str(tmp_path / "out.mp4"),
            "--is_voxceleb2", "False", "--box", "40,200,50,174"]
    args = parse_args(argv)[0]
    seen = []
    assert Generator(args).clip(args.video_path, args.audio_path, args.out_path, on_progress=lambda d, t: seen.append((d, t))) == 12
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    total = seen[-1][1]
    assert total == 12 and seen[-1][0] == pytest.approx(12)
    # chunks of 5, 5, 2 frames, 2 passes each (ddim2): half a chunk per pass
    assert [d for d, _ in seen] == pytest.approx([2.5, 5, 7.5, 10, 11, 12])
    lines = [line for line in err.splitlines() if line.startswith("out.mp4: ")]
    assert len(lines) == 6 and lines[-1].startswith("out.mp4: 12/12 frames (100%)") and "frames/s" in lines[0]


def test_track_yields_every_item_and_counts_them(capsys):
    from common.progress import track

    assert list(track(iter("abc"), 3, "render", "clip")) == ["a", "b", "c"]
    lines = capsys.readouterr().err.splitlines()  # pytest's stderr is not a terminal: plain lines
    assert lines[0].startswith("render: 1/3 clips (33%)") and lines[-1].startswith("render: 3/3 clips (100%)")
    assert list(track([1, 2], 2, "render", "clip", enabled=False)) == [1, 2] and capsys.readouterr().err == ""


def test_scaled_units_and_a_resumed_start_count_only_this_runs_rate():
    clock, stream = Clock(), io.StringIO()
    bar = Progress(4 * 2**20, "w.pth", "MiB", True, stream, clock=clock, scale=2**20, initial=2**20)  # 1 MiB already there
    clock.now += 2.0
    bar.update(2**20)
    clock.now += 2.0
    bar.update(2 * 2**20)
    assert stream.getvalue().splitlines() == [
        "w.pth: 2.0/4.0 MiB (50%), 0.50 MiB/s, 0:04 left",  # 1 MiB in 2 s; 2 MiB left
        "w.pth: 4.0/4.0 MiB (100%), 0.75 MiB/s, 0:00 left",
    ]
    unknown = io.StringIO()
    Progress(None, "w.pth", "MiB", True, unknown, clock=clock, scale=2**20).update(2**19)
    assert unknown.getvalue().startswith("w.pth: 0.5 MiB")
