"""generate.py / generate_dist.py end to end on clips rendered here, with a tiny random network."""

import os
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from audio.audio import load_wav, save_wav
from common.errors import Diff2LipError
from dataset.synthetic import draw_face, speech_like
from dataset.video_io import iter_frames, probe_video
from helpers import TINY_CLI_FLAGS, full_windows, render_clip, save_tiny_checkpoint
from inference.cli import main
from inference.filelist import output_name, read_filelist, safe_output_path
from inference.lipsync import split_range
from launchers import REPO_ROOT, mpiexec, run, torchrun

BOX = "40,200,50,174"  # top,bottom,left,right inside a 224x224 frame


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    checkpoint = root / "tiny.pt"
    save_tiny_checkpoint(checkpoint)
    video = root / "face.mp4"
    render_clip(video, n_frames=12)
    return root, checkpoint, video


def cli(checkpoint, *extra):
    return [*TINY_CLI_FLAGS, "--model_path", str(checkpoint), "--progress", "False", "--sampling_batch_size", "5", *extra]


def single(checkpoint, video, audio, out, *extra):
    return cli(checkpoint, "--generate_from_filelist", "0", "--video_path", str(video), "--audio_path", str(audio),
               "--out_path", str(out), "--is_voxceleb2", "False", "--box", BOX, *extra)


def decoded(path):
    return np.stack(list(iter_frames(str(path), 25)))


def stream_facts(path):
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        return video.codec_context.name, float(video.average_rate), audio.codec_context.name, audio.sample_rate


def test_single_video_gives_playable_mp4_with_expected_frames_fps_and_audio(assets, tmp_path):
    _, checkpoint, video = assets
    audio = tmp_path / "speech.wav"
    save_wav(speech_like(0.3), audio, 16000)  # 0.3 s: fewer mel windows than the 12 video frames
    out = tmp_path / "out.mp4"
    assert main(single(checkpoint, video, audio, out)) == 0
    expected = full_windows(0.3)
    assert probe_video(str(out)).num_frames == expected == 5
    assert stream_facts(out) == ("h264", 25.0, "aac", 16000)
    # The declared length; decoding gives the AAC encoder's padding of its last frame on top.
    with av.open(str(out)) as container:
        track = container.streams.audio[0]
        assert track.duration * track.time_base == pytest.approx(expected / 25, abs=1 / 16000)
    assert expected / 25 <= load_wav(str(out), 16000).size / 16000 < expected / 25 + 0.07


@pytest.mark.parametrize("ref", ["gt", "random"])
def test_overlapped_stages_give_the_serial_frames(assets, tmp_path, ref):
    """--overlap True (decode, network and paste in threads) against --overlap False: the same
    frames, over two chunks (10 frames, batches of 5), with the reference order drawn per chunk."""
    _, checkpoint, video = assets
    outs = {}
    for overlap in ("True", "False"):
        outs[overlap] = tmp_path / f"overlap_{overlap}.mp4"
        assert main(single(checkpoint, video, video, outs[overlap], "--overlap", overlap, "--sampling_ref_type", ref)) == 0
    a, b = decoded(outs["True"]), decoded(outs["False"])
    assert a.shape == (10, 224, 224, 3) and np.array_equal(a, b)  # the clip's audio covers 10 frames


def test_overlap_auto_is_on_for_a_gpu_only():
    import torch

    from inference.lipsync import overlaps

    assert overlaps("auto", torch.device("cuda", 0)) and not overlaps("auto", torch.device("cpu"))
    assert overlaps("True", torch.device("cpu")) and not overlaps("False", torch.device("cuda"))


def test_frames_follow_the_shorter_of_video_and_audio(assets, tmp_path):
    _, checkpoint, video = assets
    out = tmp_path / "out.mp4"
    assert main(single(checkpoint, video, video, out)) == 0  # the clip's own audio track
    info = probe_video(str(out))
    assert info.num_frames <= 12 and info.num_frames >= 12 - 4  # the last windows need 0.2 s of audio


def voxceleb_tree(root: Path, ids):
    for identity, clip in ids:
        folder = root / identity / clip
        folder.mkdir(parents=True, exist_ok=True)
        render_clip(folder / "00001.mp4", n_frames=8, seed=hash(identity) % 100)


def test_filelist_in_voxceleb2_layout_gives_released_names_and_orig(assets, tmp_path):
    _, checkpoint, _ = assets
    data = tmp_path / "vox"
    voxceleb_tree(data, [("id001", "AAA"), ("id002", "BBB")])
    filelist = tmp_path / "cross.txt"
    filelist.write_text("id001/AAA/00001 id002/BBB/00001\nid002/BBB/00001 id001/AAA/00001\n")
    samples = tmp_path / "samples"
    code = main(cli(checkpoint, "--generate_from_filelist", "1", "--test_video_dir", str(data), "--filelist", str(filelist),
                    "--sample_path", str(samples), "--save_orig", "True"))
    assert code == 0
    assert sorted(os.listdir(samples)) == [
        "id001.AAA.00001_id002.BBB.00001.mp4",
        "id001.AAA.00001_id002.BBB.00001_orig.mp4",
        "id002.BBB.00001_id001.AAA.00001.mp4",
        "id002.BBB.00001_id001.AAA.00001_orig.mp4",
    ]
    orig = decoded(samples / "id001.AAA.00001_id002.BBB.00001_orig.mp4")
    source = decoded(data / "id002" / "BBB" / "00001.mp4")[: len(orig)]
    assert np.abs(orig.astype(int) - source.astype(int)).mean() < 3  # re-encoded, not repainted


def test_broken_entries_are_reported_and_the_rest_is_produced_then_skip_existing(assets, tmp_path, capsys):
    _, checkpoint, _ = assets
    data = tmp_path / "vox"
    voxceleb_tree(data, [("id001", "AAA")])
    (data / "id003" / "CCC").mkdir(parents=True)
    (data / "id003" / "CCC" / "00001.mp4").write_bytes(b"not a video")
    filelist = tmp_path / "list.txt"
    filelist.write_text(
        "id001/AAA/00001 id001/AAA/00001\n"
        "id001/AAA/00001 id009/missing/00001\n"
        "just-one-field\n"
        "id003/CCC/00001 id001/AAA/00001\n"
    )
    samples = tmp_path / "samples"
    args = cli(checkpoint, "--generate_from_filelist", "1", "--test_video_dir", str(data), "--filelist", str(filelist),
               "--sample_path", str(samples))
    assert main(args) == 1
    err = capsys.readouterr()
    assert os.listdir(samples) == ["id001.AAA.00001_id001.AAA.00001.mp4"]
    assert "summary: 1 generated, 0 skipped (already there), 3 failed" in err.out
    failed = [line for line in err.err.splitlines() if line.startswith("failed:")]
    assert len(failed) == 3
    assert any("id009/missing/00001.mp4" in line and ":2:" in line for line in failed)
    assert any(":3:" in line and "1 field" in line for line in failed)
    assert any("CCC/00001.mp4" in line and ":4:" in line for line in failed)
    assert not [f for f in os.listdir(samples) if f.startswith(".")]  # no half files left

    done = samples / "id001.AAA.00001_id001.AAA.00001.mp4"
    stamp = done.stat().st_mtime_ns
    assert main(args + ["--skip_existing", "True"]) == 1
    assert "1 skipped" in capsys.readouterr().out
    assert done.stat().st_mtime_ns == stamp


def test_still_image_covers_the_whole_audio(assets, tmp_path):
    _, checkpoint, _ = assets
    import cv2

    image = tmp_path / "face.png"
    cv2.imwrite(str(image), cv2.cvtColor(draw_face(0), cv2.COLOR_RGB2BGR))
    audio = tmp_path / "speech.wav"
    save_wav(speech_like(0.6), audio, 16000)
    out = tmp_path / "out.mp4"
    assert main(single(checkpoint, image, audio, out)) == 0
    assert probe_video(str(out)).num_frames == full_windows(0.6)


def test_errors_are_one_line_and_leave_no_output(assets, tmp_path, capsys):
    _, checkpoint, video = assets
    silent = tmp_path / "silent.mp4"
    render_clip(silent, n_frames=5, with_audio=False)
    cases = [
        (single(checkpoint, tmp_path / "nope.mp4", video, tmp_path / "a.mp4"), "nope.mp4"),
        (single(checkpoint, video, silent, tmp_path / "b.mp4"), "no audio track"),
        (single(checkpoint, video, video, tmp_path / "c.mp4", "--sampling_ref_type", "other"), "--sampling_ref_type"),
        (single(checkpoint, video, video, tmp_path / "d.mp4", "--box", "1,2,3"), "--box"),
        (single(tmp_path / "missing.pt", video, video, tmp_path / "e.mp4"), "missing.pt"),
    ]
    for args, needle in cases:
        assert main(args) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and needle in err and "\n" not in err, err
    assert sorted(os.listdir(tmp_path)) == ["silent.mp4"]


def test_detector_path_fills_misses_pads_smooths_and_pastes(assets, tmp_path, monkeypatch, capsys):
    """The S3FD path of generate with the per-batch detection replaced by known boxes."""
    _, checkpoint, video = assets
    from face_detection import FaceDetector

    calls = []

    def fake_batch(self, batch):
        calls.append(len(batch))
        start = sum(calls[:-1])
        return [None if (start + i) % 4 == 1 else (60, 50, 160, 190) for i in range(len(batch))]

    def fake_init(self, device="cpu", batch_size=64, scale=1.0, **kw):
        self.batch_size, self.scale, self.device = batch_size, scale, device

    monkeypatch.setattr(FaceDetector, "__init__", fake_init)
    monkeypatch.setattr(FaceDetector, "_detect_batch", fake_batch)
    out = tmp_path / "det.mp4"
    args = cli(checkpoint, "--generate_from_filelist", "0", "--video_path", str(video), "--audio_path", str(video),
               "--out_path", str(out), "--is_voxceleb2", "False", "--pads", "0,10,0,0", "--face_det_batch_size", "4",
               "--paste", "lower")
    assert main(args) == 0
    n = probe_video(str(out)).num_frames
    assert sum(calls) == n and max(calls) <= 4
    assert f"no face in {sum(1 for k in range(n) if k % 4 == 1)} of {n} frames" in capsys.readouterr().out
    got, src = decoded(out), decoded(video)[:n]
    # box rows 50..200 (190 + pad 10), columns 60..160: everything above and beside it is kept
    assert np.abs(got[:, :50].astype(int) - src[:, :50].astype(int)).mean() < 3
    assert np.abs(got[:, :, 165:].astype(int) - src[:, :, 165:].astype(int)).mean() < 3


def test_missing_s3fd_weights_name_the_file_and_folder(assets, tmp_path, monkeypatch, capsys):
    _, checkpoint, video = assets
    import urllib.error

    import face_alignment.detection.sfd.sfd_detector as sfd

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(sfd, "load_state_dict_from_url", offline)
    args = cli(checkpoint, "--generate_from_filelist", "0", "--video_path", str(video), "--audio_path", str(video),
               "--out_path", str(tmp_path / "x.mp4"), "--is_voxceleb2", "False")
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "s3fd-619a316812.pth" in err and str(tmp_path / "torch_home") in err and "\n" not in err
    assert not (tmp_path / "x.mp4").exists()


def test_filelist_parsing_and_output_paths_stay_inside(tmp_path):
    lst = tmp_path / "l.txt"
    lst.write_text("a/b c/d\n\nx y z\nWORD_1.wav clip/WORD_1.mp4\n")
    items, problems = read_filelist(str(lst))
    assert [(i.audio_rel, i.video_rel, i.line_no) for i in items] == [("a/b", "c/d", 1), ("WORD_1.wav", "clip/WORD_1.mp4", 4)]
    assert len(problems) == 1 and ":3:" in problems[0]
    assert output_name("id1/v/00001", "id2/w/00002") == "id1.v.00001_id2.w.00002.mp4"
    assert output_name("../../etc/passwd", "x") == "......etc.passwd_x.mp4"
    assert safe_output_path(str(tmp_path), "ok.mp4") == os.path.realpath(tmp_path / "ok.mp4")
    with pytest.raises(Diff2LipError, match="escapes --sample_path"):
        safe_output_path(str(tmp_path), "../outside.mp4")


def test_split_range_aligns_to_batches_and_covers_everything():
    for n in (1, 7, 32, 33, 100):
        for parts in (1, 2, 3):
            ranges = [split_range(n, parts, i, align=5) for i in range(parts)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a % 5 == 0 for a, _ in ranges)
            assert all(ranges[i][1] == ranges[i + 1][0] for i in range(parts - 1))


@pytest.mark.slow
def test_two_processes_equal_one_process_frame_for_frame(assets, tmp_path):
    _, checkpoint, video = assets
    audio = tmp_path / "speech.wav"
    save_wav(speech_like(0.48), audio, 16000)
    one = tmp_path / "one.mp4"
    two = tmp_path / "two.mp4"
    # The reference runs as a process of the same kind (one thread, like each rank): float
    # results may differ between thread counts, not between process counts.
    code, output = run([sys.executable, str(REPO_ROOT / "generate.py"),
                        *single(checkpoint, video, audio, one, "--sampling_ref_type", "random")], timeout=300)
    assert code == 0, output
    code, output = run([*torchrun(2), str(REPO_ROOT / "generate_dist.py"),
                        *single(checkpoint, video, audio, two, "--sampling_ref_type", "random")], timeout=300)
    assert code == 0, output
    a, b = decoded(one), decoded(two)
    assert a.shape == b.shape and a.shape[0] == full_windows(0.48) == 9
    assert np.array_equal(a, b)

    data = tmp_path / "vox"
    voxceleb_tree(data, [("id001", "AAA"), ("id002", "BBB"), ("id003", "CCC")])
    filelist = tmp_path / "cross.txt"
    filelist.write_text("id001/AAA/00001 id002/BBB/00001\nid002/BBB/00001 id003/CCC/00001\nid003/CCC/00001 id001/AAA/00001\n")
    flags = ["--generate_from_filelist", "1", "--test_video_dir", str(data), "--filelist", str(filelist)]
    code, output = run([sys.executable, str(REPO_ROOT / "generate.py"), *cli(checkpoint, *flags, "--sample_path", str(tmp_path / "s1"))])
    assert code == 0, output
    code, output = run([*mpiexec(2), str(REPO_ROOT / "generate_dist.py"),
                        *cli(checkpoint, *flags, "--sample_path", str(tmp_path / "s2"))], timeout=300)
    assert code == 0, output
    names = sorted(os.listdir(tmp_path / "s1"))
    assert names == sorted(os.listdir(tmp_path / "s2")) and len(names) == 3
    for name in names:
        assert np.array_equal(decoded(tmp_path / "s1" / name), decoded(tmp_path / "s2" / name))
