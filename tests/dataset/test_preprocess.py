"""Tests for dataset/preprocess.py: real H.264 + AAC clips rendered into tmp_path, run through the
command in-process (and once as a script and through scripts/preprocess.sh), outputs checked by
numbers: frame counts, crop bytes, audio length, mel values, report entries and splits."""

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from audio.audio import load_wav, melspectrogram, num_full_windows
from common.errors import Diff2LipError
from dataset import preprocess, shards
from dataset.preprocessed import JPEG_QUALITY, Clip, clip_dir, read_split
from dataset.video_io import iter_frames, probe_video
from face_detection import crop_face, voxceleb2_box
from helpers import render_clip
from launchers import REPO_ROOT, child_env, torchrun
from launchers import run as launch_run

# The usable clips of the VoxCeleb2 tree: clip name -> frames rendered.
GOOD = {
    "id00001/vidA/00001": 20,
    "id00001/vidA/00002": 12,
    "id00001/vidB/00001": 20,
    "id00002/vidC/00001": 20,
    "id00003/vidD/00001": 12,
    "id00003/vidD/00002": 20,
}
# 20 frames = 0.8 s of audio; decoded with the AAC encoder's padding of its last frame (kept, as
# the release keeps it) 13312 samples = 67 mel steps: frames 0..17 have a full window; 12 -> 10.
EXPECTED_FRAMES = {20: 18, 12: 10}
AUDIOLESS, TOO_SHORT, GARBAGE = "id00002/vidC/00002", "id00003/vidD/00003", "id00003/vidE/00001"


def run(*argv) -> int:
    return preprocess.main([*map(str, argv), "--progress", "False"])


def jpeg_bytes(face: np.ndarray) -> bytes:
    """The bytes write_clip stores for an RGB crop."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(face, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    return data.tobytes()


def clip_names(out) -> list:
    """Names of the clip folders (those holding meta.json) under out/clips."""
    base = os.path.join(out, "clips")
    return sorted(os.path.relpath(d, base).replace(os.sep, "/") for d, _, files in os.walk(base) if "meta.json" in files)


def frame_files(folder) -> list:
    return sorted(f for f in os.listdir(folder) if f.endswith(".jpg"))


@pytest.fixture(scope="module")
def vox_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("voxceleb2")
    for i, (name, n_frames) in enumerate(GOOD.items()):
        os.makedirs(root / os.path.dirname(name), exist_ok=True)
        render_clip(root / f"{name}.mp4", n_frames=n_frames, seed=i)
    render_clip(root / f"{AUDIOLESS}.mp4", n_frames=20, with_audio=False)
    render_clip(root / f"{TOO_SHORT}.mp4", n_frames=3)
    os.makedirs(root / os.path.dirname(GARBAGE))
    (root / f"{GARBAGE}.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (root / "id00001" / "notes.txt").write_text("not a video: ignored")
    return root


@pytest.fixture(scope="module")
def vox_out(vox_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("vox_out")
    assert run("--input_root", vox_tree, "--output_root", out) == 0
    return out


def test_voxceleb2_tree_clips_report_and_splits(vox_tree, vox_out):
    out = vox_out
    assert clip_names(out) == sorted(GOOD)
    for name, rendered in GOOD.items():
        video = str(vox_tree / f"{name}.mp4")
        clip = Clip(str(out), name)
        n = EXPECTED_FRAMES[rendered]
        # the rule itself: min(video frames, full mel windows of the video's audio)
        assert n == min(probe_video(video).num_frames, num_full_windows(melspectrogram(load_wav(video)).shape[1]))
        assert clip.n_frames == n
        assert frame_files(clip.folder) == [f"{i:05d}.jpg" for i in range(n)]
        assert clip.faces(range(n)).shape == (n, 128, 128, 3)
        assert clip.meta == {"n_frames": n, "image_size": 128, "fps": 25, "source": video, "n_missing_faces": 0}
        stored = load_wav(os.path.join(clip.folder, "audio.wav"))
        # the whole audio track (16-bit): longer than n / 25 s, as the last windows reach past it
        source_audio = load_wav(video)
        assert stored.size == source_audio.size >= n * 640
        assert np.abs(stored - source_audio).max() < 1e-4
        # mel.npy is the mel inference computes from the video; audio.wav's 16 bits move it a little
        assert clip.mel.dtype == np.float32 and np.array_equal(clip.mel, melspectrogram(source_audio))
        diff = np.abs(clip.mel - melspectrogram(stored))
        assert diff.max() < 0.05 and diff.mean() < 1e-3
        assert num_full_windows(clip.mel.shape[1]) >= n

    # crops are the released VoxCeleb2 crop of each 25 fps frame, byte for byte as JPEG
    name = "id00001/vidA/00001"
    folder = clip_dir(str(out), name)
    for i, frame in enumerate(iter_frames(str(vox_tree / f"{name}.mp4"), stop=EXPECTED_FRAMES[20])):
        expected = jpeg_bytes(crop_face(frame, voxceleb2_box(224, 224), 128))
        with open(os.path.join(folder, f"{i:05d}.jpg"), "rb") as f:
            assert f.read() == expected, f"frame {i}"

    with open(out / "report.json") as f:
        report = json.load(f)
    assert report["done"] == len(GOOD) and report["already_done"] == 0
    reasons = {s["clip"]: s["reason"] for s in report["skipped"]}
    assert sorted(reasons) == sorted([AUDIOLESS, TOO_SHORT, GARBAGE])
    assert "no audio track" in reasons[AUDIOLESS]
    assert reasons[TOO_SHORT].startswith("too short: 0 frames with audio (video 3 frames")
    assert "could not be decoded" in reasons[GARBAGE]
    assert all("\n" not in r for r in reasons.values())

    train, val = read_split(str(out), "train"), read_split(str(out), "val")
    assert sorted(train + val) == sorted(GOOD) and not set(train) & set(val)
    train_ids, val_ids = {n.split("/")[0] for n in train}, {n.split("/")[0] for n in val}
    # 0.05 of 3 identities rounds to 0: at least one identity goes to val, never all
    assert len(val_ids) == 1 and len(train_ids) == 2 and not train_ids & val_ids


def test_rerun_skips_finished_clips(vox_tree, vox_out, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(vox_out, out)  # copy2 keeps the mtimes
    mtimes = {p: os.stat(p).st_mtime_ns for p in (out / "clips").rglob("*.jpg")}
    splits = (out / "train.txt").read_text(), (out / "val.txt").read_text()
    assert run("--input_root", vox_tree, "--output_root", out) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == 0 and report["already_done"] == len(GOOD)
    assert sorted(s["clip"] for s in report["skipped"]) == sorted([AUDIOLESS, TOO_SHORT, GARBAGE])
    assert {p: os.stat(p).st_mtime_ns for p in (out / "clips").rglob("*.jpg")} == mtimes
    assert ((out / "train.txt").read_text(), (out / "val.txt").read_text()) == splits
    assert "summary: 0 clips preprocessed, 6 already done, 3 skipped" in capsys.readouterr().out

    # a removed clip is redone, and only it
    shutil.rmtree(out / "clips" / "id00002" / "vidC" / "00001")
    assert run("--input_root", vox_tree, "--output_root", out) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == 1 and report["already_done"] == len(GOOD) - 1
    assert clip_names(out) == sorted(GOOD)


def test_first_utterance_only(vox_tree, tmp_path):
    out = tmp_path / "out"
    assert run("--input_root", vox_tree, "--output_root", out, "--first_utterance_only", "True") == 0
    firsts = sorted(n for n in GOOD if n.endswith("/00001"))
    assert clip_names(out) == firsts
    assert sorted(read_split(str(out), "train") + read_split(str(out), "val")) == firsts
    report = json.loads((out / "report.json").read_text())
    # of the bad clips only the garbage one is a first utterance
    assert report["done"] == len(firsts) and [s["clip"] for s in report["skipped"]] == [GARBAGE]


def test_two_workers_match_one(vox_tree, vox_out, tmp_path):
    out = tmp_path / "out"
    assert run("--input_root", vox_tree, "--output_root", out, "--num_workers", "2") == 0
    assert clip_names(out) == clip_names(vox_out)
    for name in GOOD:
        one, two = clip_dir(str(vox_out), name), clip_dir(str(out), name)
        assert sorted(os.listdir(one)) == sorted(os.listdir(two))
        for f in os.listdir(one):
            if f != "meta.json":
                with open(os.path.join(one, f), "rb") as a, open(os.path.join(two, f), "rb") as b:
                    assert a.read() == b.read(), f"{name}/{f}"
    for f in ("train.txt", "val.txt"):
        assert (out / f).read_text() == (vox_out / f).read_text()
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == len(GOOD) and len(report["skipped"]) == 3


def test_lrw_layout_splits_from_folders(tmp_path, capsys):
    root, out = tmp_path / "lrw", tmp_path / "out"
    names = [f"{word}/{split}/{word}_{k:05d}" for word in ("ABOUT", "BLACK") for split in ("train", "val", "test")
             for k in (1, 2)]
    for i, name in enumerate(names):
        os.makedirs(root / os.path.dirname(name), exist_ok=True)
        render_clip(root / f"{name}.mp4", n_frames=10, height=96, width=96, seed=i)
    assert run("--input_root", root, "--output_root", out, "--is_voxceleb2", "True") == 0
    assert "; lrw layout, train 4 / val 4 clips" in capsys.readouterr().out
    train = [n for n in names if "/train/" in n]
    val = [n for n in names if "/val/" in n]
    assert read_split(str(out), "train") == sorted(train)
    assert read_split(str(out), "val") == sorted(val)
    assert clip_names(out) == sorted(train + val)  # test clips are not even preprocessed
    # 10 frames, 0.4 s, decoded with the AAC padding to 7168 samples: windows for frames 0..7
    assert Clip(str(out), train[0]).n_frames == 8

    assert run("--input_root", root, "--output_root", out, "--is_voxceleb2", "True", "--include_test", "True") == 0
    test = [n for n in names if "/test/" in n]
    assert read_split(str(out), "val") == sorted(val + test)
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == len(test) and report["already_done"] == len(train + val)


class FakeDetector:
    """Stands in for S3FD: a known face box, none in frames 160 px high, and every 4th frame missed."""

    BOX = (60, 40, 170, 180)  # x1, y1, x2, y2 in a 224x224 frame
    instances = []

    def __init__(self, device, batch_size):
        self.device, self.batch_size = device, batch_size
        self.seen = 0
        self.missed = 0  # frames of faced clips without a detection
        FakeDetector.instances.append(self)

    def detect(self, frames):
        assert len(frames) <= self.batch_size
        out = []
        for frame in frames:
            self.seen += 1
            if frame.shape[0] == 160:
                out.append(None)
            elif self.seen % 4 == 0:
                self.missed += 1
                out.append(None)
            else:
                out.append(self.BOX)
        return out


def test_folder_layout_with_face_detector(tmp_path, monkeypatch):
    monkeypatch.setattr(preprocess, "FaceDetector", FakeDetector)
    FakeDetector.instances.clear()
    root, out = tmp_path / "videos", tmp_path / "out"
    os.makedirs(root / "talks" / "more")
    render_clip(root / "talks" / "one.mp4", n_frames=20, seed=1)
    render_clip(root / "talks" / "more" / "two.mkv", n_frames=12, seed=2)
    render_clip(root / "faceless.mov", n_frames=12, height=160, width=224)
    assert run("--input_root", root, "--output_root", out, "--pads", "0,10,0,0", "--image_size", "64",
               "--face_det_batch_size", "4", "--device", "cpu") == 0
    (detector,) = FakeDetector.instances  # built once, lazily, with the flags
    assert (detector.device, detector.batch_size) == ("cpu", 4)

    assert clip_names(out) == ["talks/more/two", "talks/one"]
    padded = (40, 190, 60, 170)  # y1, y2 (+10 bottom pad), x1, x2
    missing, n_frames = 0, {}
    for name, video in (("talks/one", "talks/one.mp4"), ("talks/more/two", "talks/more/two.mkv")):
        clip = Clip(str(out), name)
        path = str(root / video)
        assert clip.image_size == 64
        assert clip.n_frames == min(probe_video(path).num_frames, num_full_windows(melspectrogram(load_wav(path)).shape[1]))
        n_frames[name] = clip.n_frames
        missing += clip.meta["n_missing_faces"]
        for i, frame in enumerate(iter_frames(path, stop=clip.n_frames)):
            with open(os.path.join(clip.folder, f"{i:05d}.jpg"), "rb") as f:
                assert f.read() == jpeg_bytes(crop_face(frame, padded, 64)), f"{name} frame {i}"
    assert missing == detector.missed > 0
    assert n_frames["talks/one"] == EXPECTED_FRAMES[20]
    # detection reads each clip's frames once: the two clips and the faceless one (12 rendered)
    assert detector.seen == sum(n_frames.values()) + EXPECTED_FRAMES[12]

    report = json.loads((out / "report.json").read_text())
    assert report["skipped"] == [{"clip": "faceless", "reason": f"no face found in any of the {EXPECTED_FRAMES[12]} frames of '{root / 'faceless.mov'}'"}]
    train, val = read_split(str(out), "train"), read_split(str(out), "val")
    assert len(train) == len(val) == 1 and sorted(train + val) == ["talks/more/two", "talks/one"]


@pytest.mark.parametrize(
    "videos, expected",
    [
        (["id00012/abc/00001.mp4", "id00012/abc/00002.mp4", "id00420/x_y/00001.mp4"], "voxceleb2"),
        (["ABOUT/train/ABOUT_00001.mp4", "ABOUT/test/ABOUT_00003.mp4", "WORLD/val/WORLD_00002.mp4"], "lrw"),
        (["id00012/abc/00001.mp4", "stray.mp4"], "folder"),
        (["speaker/abc/00001.mp4"], "folder"),  # three levels, but not an idNNN identity
        (["ABOUT/train/OTHER_00001.mp4"], "folder"),
    ],
)
def test_layout_detection(videos, expected):
    assert preprocess.resolve_layout("auto", videos) == expected


def test_explicit_layout_must_fit():
    assert preprocess.resolve_layout("voxceleb2", ["speaker/abc/00001.mp4"]) == "voxceleb2"
    with pytest.raises(preprocess.Diff2LipError, match="--layout lrw expects .* found 'a/b/c.mp4'"):
        preprocess.resolve_layout("lrw", ["a/b/c.mp4"])


def test_clashing_clip_names_are_skipped():
    videos = ["a.mkv", "a.mp4", "a/b.mp4", "c.mp4", "d/e/f.mp4", "d/e.mp4"]
    pairs, skipped = preprocess.select_clips(videos, "folder", first_utterance_only=False, include_test=False)
    assert pairs == [("a/b", "a/b.mp4"), ("c", "c.mp4"), ("d/e/f", "d/e/f.mp4")]
    assert [s["clip"] for s in skipped] == ["a", "a", "d/e"]
    assert "same clip name as 'a.mkv'" in skipped[0]["reason"] and "would hold clip 'a/b'" in skipped[1]["reason"]


def test_split_is_deterministic_and_by_unit():
    names = [f"id{i:05d}/v/{k:05d}" for i in range(40) for k in (1, 2)]
    train, val = preprocess.make_splits(names, "voxceleb2", 0.1, seed=3)
    assert (train, val) == preprocess.make_splits(list(reversed(names)), "voxceleb2", 0.1, seed=3)
    assert len({n.split("/")[0] for n in val}) == 4 and len(val) == 8 and len(train) == 72
    assert preprocess.make_splits(names, "voxceleb2", 0.1, seed=4)[1] != val
    # adding identities keeps the ones already in val there while the val count is unchanged
    assert set(val) <= set(preprocess.make_splits(names + ["id99999/v/00001"], "voxceleb2", 0.1, seed=3)[1])
    assert preprocess.make_splits(["a", "b", "c"], "folder", 0.0, seed=0) == (["a", "b", "c"], [])
    assert preprocess.make_splits(["a"], "folder", 0.5, seed=0) == (["a"], [])


def test_split_from_lists_preprocesses_only_the_listed_clips(vox_tree, tmp_path):
    # The lists name the split (as dataset/synthetic.py's train.txt / test.txt do); a cross list's
    # "AUDIO VIDEO" lines name two clips each. Unlisted clips are not preprocessed.
    (tmp_path / "train.txt").write_text("id00001/vidA/00001\nid00003/vidD/00002\nid00009/gone/00001\n")
    (tmp_path / "cross.txt").write_text("id00002/vidC/00001 id00001/vidB/00001\n")
    out = tmp_path / "out"
    assert run("--input_root", vox_tree, "--output_root", out, "--train_list", tmp_path / "train.txt",
               "--val_list", tmp_path / "cross.txt", "--val_fraction", "0.5") == 0
    assert read_split(str(out), "train") == ["id00001/vidA/00001", "id00003/vidD/00002"]
    assert read_split(str(out), "val") == ["id00001/vidB/00001", "id00002/vidC/00001"]
    assert clip_names(out) == sorted(read_split(str(out), "train") + read_split(str(out), "val"))
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == 4
    assert [s["clip"] for s in report["skipped"]] == ["id00009/gone/00001"]
    assert "no video" in report["skipped"][0]["reason"]
    # A rerun with a train list only: val is empty, the finished clips are not redone.
    assert run("--input_root", vox_tree, "--output_root", out, "--train_list", tmp_path / "train.txt") == 0
    assert read_split(str(out), "val") == [] and len(read_split(str(out), "train")) == 2
    assert json.loads((out / "report.json").read_text())["already_done"] == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "--input_root is required"),
        (["--input_root", "{tree}", "--output_root", "{out}", "--train_list", "{missing}"], "--train_list"),
        (["--input_root", "{tree}", "--output_root", "{out}", "--train_list", "{both}", "--val_list", "{both}"],
         "in both --train_list and --val_list"),
        (["--input_root", "{missing}", "--output_root", "{out}"], "is not a folder"),
        (["--input_root", "{tree}"], "--output_root is required"),
        (["--input_root", "{tree}", "--output_root", "{out}", "--layout", "kinetics"], "--layout 'kinetics': expected one of"),
        (["--input_root", "{tree}", "--output_root", "{out}", "--layout", "lrw"], "--layout lrw expects"),
        (["--input_root", "{tree}", "--output_root", "{out}", "--pads", "1,2"], "--pads '1,2' must be four"),
        (["--input_root", "{tree}", "--output_root", "{out}", "--image_size", "big"], "argument --image_size: invalid int value"),
        (["--input_root", "{tree}", "--output_root", "{out}", "--num_workers", "0"], "--num_workers 0: expected a value >= 1"),
        (["--input_root", "{tree}", "--output_root", "{out}", "--val_fraction", "1"], "--val_fraction 1.0: expected 0 <= value < 1"),
        (["--input_root", "{tree}", "--output_root", "{out}", "--is_voxceleb2", "maybe"], "--is_voxceleb2"),
        (["--input_root", "{tree}", "--output_root", "{out}", "--no_such_flag", "1"], "unrecognized arguments"),
        (["--input_root", "{empty}", "--output_root", "{out}"], "no videos"),
    ],
)
def test_bad_flags_are_one_line_errors(argv, message, vox_tree, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "both.txt").write_text("id00001/vidA/00001\n")
    paths = dict(missing=tmp_path / "missing", out=tmp_path / "out", tree=vox_tree, empty=tmp_path / "empty",
                 both=tmp_path / "both.txt")
    assert preprocess.main([a.format(**paths) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_as_a_script_and_through_the_shell_script(tmp_path):
    """`python dataset/preprocess.py` finds the packages by itself; the shell script passes its variables and "$@"."""
    env = child_env()
    env.pop("PYTHONPATH")
    proc = subprocess.run([sys.executable, "dataset/preprocess.py", "--input_root", str(tmp_path / "nope"),
                           "--output_root", str(tmp_path / "out")],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr == f"error: --input_root '{tmp_path / 'nope'}' is not a folder\n"

    root = tmp_path / "in dir"  # a space: the script must quote
    (root / "id00001" / "v").mkdir(parents=True)
    render_clip(root / "id00001" / "v" / "00001.mp4", n_frames=12)
    env.update(input_root=str(root), output_root=str(tmp_path / "out put"), layout="voxceleb2", NUM_WORKERS="1",
               is_voxceleb2="True", PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "preprocess.sh"), "--image_size", "32", "--progress", "False"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "summary: 1 clips preprocessed" in proc.stdout
    clip = Clip(str(tmp_path / "out put"), "id00001/v/00001")
    assert clip.n_frames == EXPECTED_FRAMES[12] and clip.image_size == 32


def test_two_torchrun_workers_match_one(vox_tree, vox_out, tmp_path):
    """2 processes on 127.0.0.1 split the clip list (RANK / WORLD_SIZE); the last one merges."""
    out = tmp_path / "out"
    code, output = launch_run([*torchrun(2), "dataset/preprocess.py", "--input_root", str(vox_tree),
                               "--output_root", str(out), "--progress", "False"], timeout=300)
    assert code == 0, output
    assert "summary: " in output and "still running" in output  # one worker waited, the other merged
    parts = [json.loads((out / "workers" / f"0000{i}-of-00002.json").read_text()) for i in range(2)]
    assert not set(parts[0]["done"]) & set(parts[1]["done"]) and parts[0]["done"] and parts[1]["done"]
    assert clip_names(out) == clip_names(vox_out)
    for name in GOOD:
        for f in os.listdir(clip_dir(str(vox_out), name)):
            if f != "meta.json":
                with open(os.path.join(clip_dir(str(vox_out), name), f), "rb") as a, \
                        open(os.path.join(clip_dir(str(out), name), f), "rb") as b:
                    assert a.read() == b.read(), f"{name}/{f}"
    for f in ("train.txt", "val.txt"):
        assert (out / f).read_text() == (vox_out / f).read_text()
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == len(GOOD) and sorted(s["clip"] for s in report["skipped"]) == sorted([AUDIOLESS, TOO_SHORT, GARBAGE])
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["name"] for c in manifest["clips"]] == sorted(GOOD)
    assert [c["frames"] for c in manifest["clips"]] == [EXPECTED_FRAMES[GOOD[n]] for n in sorted(GOOD)]


def test_shards_from_two_workers_hold_the_clips_of_one(vox_tree, vox_out, tmp_path, capsys):
    out = tmp_path / "shards"
    base = ["--input_root", vox_tree, "--output_root", out, "--format", "shards", "--num_shards", "2"]
    assert run(*base, "--shard_index", "1") == 0
    assert "1 worker(s) still running" in capsys.readouterr().out and not (out / "train.txt").exists()
    assert run(*base, "--shard_index", "0") == 0
    assert "summary: 6 clips preprocessed" in capsys.readouterr().out
    for f in ("train.txt", "val.txt"):
        assert (out / f).read_text() == (vox_out / f).read_text()
    source = shards.open_root(str(out))
    manifest = source.manifest
    # whole clips in each worker's own shards; every clip's members are the one-worker folder's files
    assert sorted(os.path.basename(s["path"]) for s in manifest["shards"]) == ["00000-of-00002-000000.tar",
                                                                             "00001-of-00002-000000.tar"]
    assert sorted(c["name"] for s in manifest["shards"] for c in s["clips"]) == sorted(GOOD)
    for name in GOOD:
        clip = Clip(str(vox_out), name)
        expected = shards.folder_sample(clip.folder, clip.n_frames)
        assert {m: source.member(name, m) for m in shards.MEMBERS if m != "meta.json"} == \
            {m: v for m, v in expected.items() if m != "meta.json"}
        assert source.clip(name).meta == clip.meta
    assert not (out / "clips").exists() and not os.listdir(out / ".staging")
    # a rerun of either worker finds its clips done and writes no shard
    before = sorted(os.listdir(out / "shards"))
    first = json.loads((out / "workers" / "00000-of-00002.json").read_text())
    assert run(*base, "--shard_index", "0") == 0
    assert sorted(os.listdir(out / "shards")) == before
    again = json.loads((out / "workers" / "00000-of-00002.json").read_text())
    assert again["done"] == [] and again["already_done"] == len(first["done"]) > 0
    # the merge again, from anywhere, gives the same files
    listed = {f: (out / f).read_bytes() for f in ("train.txt", "val.txt", "manifest.json")}
    assert run(*base, "--merge", "True") == 0
    assert {f: (out / f).read_bytes() for f in listed} == listed


@pytest.mark.parametrize("env, flags, slot", [
    ({}, (-1, 0), (0, 1)),
    ({"RANK": "1", "WORLD_SIZE": "4"}, (-1, 0), (1, 4)),
    ({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "3"}, (-1, 0), (2, 3)),
    ({"PMI_RANK": "0", "PMI_SIZE": "2"}, (-1, 0), (0, 2)),
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "1"}, (-1, 0), (4, 8)),
    # an array of 4 tasks, each running 2 srun tasks: 8 workers
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, (-1, 0), (7, 8)),
    ({"JOB_COMPLETION_INDEX": "6"}, (-1, 10), (6, 10)),
    ({"RANK": "1", "WORLD_SIZE": "4"}, (3, 5), (3, 5)),
])
def test_worker_slot_from_flags_and_launchers(env, flags, slot):
    assert preprocess.worker_slot(*flags, env=env) == slot


def test_worker_parts_are_disjoint_and_cover_the_list():
    pairs = [(f"c{i:02d}", f"c{i:02d}.mp4") for i in range(23)]
    for n in (1, 2, 5, 23, 30):
        parts = [preprocess.worker_part(pairs, i, n) for i in range(n)]
        assert [p for part in parts for p in part] == pairs and max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("env, flags, message", [
    ({"JOB_COMPLETION_INDEX": "2"}, (-1, 0), "pass --num_shards"),
    ({}, (4, 4), "--shard_index must be 0 .. 3"),
    ({"RANK": "x", "WORLD_SIZE": "2"}, (-1, 0), "RANK='x' is not a whole number"),
])
def test_worker_slot_errors_name_the_fix(env, flags, message):
    with pytest.raises(Diff2LipError, match=message):
        preprocess.worker_slot(*flags, env=env)


@pytest.mark.slow  # about 21 s: a preprocessing process with its pool
def test_a_full_disk_stops_the_run_with_one_line_and_leaves_no_half_clip(tmp_path):
    """A real 64 KiB tmpfs (helpers.small_disk): the first clip's crops do not fit. Every clip
    would fail the same way, so the run stops (also from a pool worker), instead of listing each
    clip as skipped; no temporary clip folder stays. Before, cv2.imwrite's bare False on a full
    disk could leave a clip with frames missing."""
    from helpers import small_disk

    root = tmp_path / "videos"
    for k in (1, 2):
        os.makedirs(root / "id1" / "v", exist_ok=True)
        render_clip(root / "id1" / "v" / f"0000{k}.mp4", n_frames=20, seed=k)
    with small_disk(tmp_path / "disk", "64k") as (folder, preexec):
        out = os.path.join(folder, "out")
        proc = subprocess.run([sys.executable, "dataset/preprocess.py", "--input_root", str(root), "--output_root", out,
                               "--is_voxceleb2", "True", "--progress", "False", "--num_workers", "2"],
                              cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True, timeout=120,
                              preexec_fn=preexec)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith(f"error: no space left on the disk of '{out}")
        assert not [f for d, dirs, files in os.walk(folder) for f in dirs + files if f.startswith(".")]
        assert not os.path.exists(os.path.join(out, "train.txt"))
