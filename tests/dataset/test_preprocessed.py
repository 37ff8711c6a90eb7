"""The preprocessed-clip format (dataset/preprocessed.py): a clip written with write_clip reads
back through Clip (crops, mel, meta, audio), splits round-trip, folders appear only when whole,
names cannot leave the root, and a broken clip is a one-line error saying to preprocess again."""

import json
import os

import cv2
import numpy as np
import pytest

from audio.audio import load_wav, melspectrogram, to_int16
from common.errors import Diff2LipError
from dataset.preprocessed import (
    CLIPS,
    FRAME_NAME,
    JPEG_QUALITY,
    Clip,
    clip_dir,
    open_clips,
    read_split,
    write_clip,
    write_split,
)
from dataset.synthetic import draw_face, speech_like

NAME = "id00012/abc/00001"


def crops(n, size=48, seed=0):
    return [cv2.resize(draw_face(i, 224, 224, seed=seed)[0:158, 50:174], (size, size)) for i in range(n)]


def jpeg_round_trip(face):
    """What a JPEG of quality JPEG_QUALITY decodes to, computed apart from the module."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(face, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture
def written(tmp_path):
    faces = crops(7)
    wav = speech_like(7 / 25 + 0.2, seed=1)
    mel = melspectrogram(wav)
    count = write_clip(str(tmp_path), NAME, (f for f in faces), wav, mel.astype(np.float64),
                       {"image_size": 48, "fps": 25, "source": "x.mp4", "n_missing_faces": 2, "n_frames": 999})
    return tmp_path, faces, wav, mel, count


def test_written_clip_reads_back_crops_mel_meta_and_audio(written):
    root, faces, wav, mel, count = written
    assert count == 7
    folder = os.path.join(root, CLIPS, NAME)
    assert sorted(os.listdir(folder)) == [FRAME_NAME.format(i) for i in range(7)] + ["audio.wav", "mel.npy", "meta.json"]
    clip = Clip(str(root), NAME)
    assert clip.folder == os.path.realpath(folder) and clip.name == NAME
    # n_frames is the number of crops written, whatever the meta passed in said.
    assert (clip.n_frames, clip.image_size) == (7, 48)
    assert clip.meta == {"image_size": 48, "fps": 25, "source": "x.mp4", "n_missing_faces": 2, "n_frames": 7}
    got = clip.faces(range(7))
    assert got.shape == (7, 48, 48, 3) and got.dtype == np.uint8
    for face, back in zip(faces, got):
        np.testing.assert_array_equal(back, jpeg_round_trip(face))
        assert np.abs(back.astype(int) - face).mean() < 6  # quality 95 on a noisy drawn face: close to it
    # Crops come in the order asked for, repeats allowed.
    np.testing.assert_array_equal(clip.faces([4, 0, 4]), got[[4, 0, 4]])
    # The mel is stored as float32; its length is known from the header before it is loaded.
    assert clip.mel_steps == mel.shape[1]
    assert clip.mel.dtype == np.float32 and clip.mel.shape == (80, mel.shape[1])
    np.testing.assert_array_equal(clip.mel, mel.astype(np.float32))
    assert clip.mel_steps == mel.shape[1]
    # 16-bit PCM: load_wav gives back the samples rounded to int16, exactly.
    np.testing.assert_array_equal(load_wav(os.path.join(folder, "audio.wav")), to_int16(wav) / np.float32(32768))


def test_rewriting_a_clip_replaces_the_whole_folder(written):
    root, *_ = written
    wav = speech_like(0.4, seed=2)
    assert write_clip(str(root), NAME, crops(3, seed=5), wav, melspectrogram(wav), {"image_size": 48}) == 3
    clip = Clip(str(root), NAME)
    assert clip.n_frames == 3
    assert sorted(f for f in os.listdir(clip.folder) if f.endswith(".jpg")) == [FRAME_NAME.format(i) for i in range(3)]
    np.testing.assert_array_equal(clip.faces([2])[0], jpeg_round_trip(crops(3, seed=5)[2]))


def test_a_write_that_fails_midway_leaves_no_folder_and_the_old_clip_whole(written):
    root, faces, *_ = written

    def failing():
        yield faces[0]
        yield faces[1]
        raise RuntimeError("decoder died")

    wav = speech_like(0.4)
    with pytest.raises(RuntimeError, match="decoder died"):
        write_clip(str(root), NAME, failing(), wav, melspectrogram(wav), {"image_size": 48})
    with pytest.raises(RuntimeError):
        write_clip(str(root), "id00099/new/00001", failing(), wav, melspectrogram(wav), {"image_size": 48})
    parent = os.path.dirname(clip_dir(str(root), NAME))
    assert os.listdir(parent) == ["00001"]  # no temporary folder left behind
    assert os.listdir(os.path.join(root, CLIPS, "id00099", "new")) == []
    assert Clip(str(root), NAME).n_frames == 7


@pytest.mark.parametrize("name", ["../outside", "a/../../outside", "/etc/passwd", "", "."])
def test_clip_names_that_leave_the_clips_folder_are_refused(tmp_path, name):
    with pytest.raises(Diff2LipError, match=r"clip name .* escapes .*; fix the filelist line"):
        clip_dir(str(tmp_path), name)
    wav = speech_like(0.3)
    with pytest.raises(Diff2LipError, match="escapes"):
        write_clip(str(tmp_path), name, crops(1), wav, melspectrogram(wav), {"image_size": 48})
    assert not (tmp_path / "outside").exists()


def test_clip_dir_is_under_the_roots_clips_folder(tmp_path):
    assert clip_dir(str(tmp_path), NAME) == os.path.join(os.path.realpath(tmp_path), "clips", "id00012", "abc", "00001")
    assert clip_dir(str(tmp_path), "a/../b") == os.path.join(os.path.realpath(tmp_path), "clips", "b")


def test_splits_round_trip_in_order(tmp_path):
    names = ["id2/b/00001", "id1/a/00002", "id1/a/00001"]
    write_split(str(tmp_path), "train", names)
    write_split(str(tmp_path), "val", [])
    assert (tmp_path / "train.txt").read_text() == "id2/b/00001\nid1/a/00002\nid1/a/00001\n"
    assert read_split(str(tmp_path), "train") == names
    assert (tmp_path / "val.txt").read_text() == "" and read_split(str(tmp_path), "val") == []
    # Hand-edited files: blank lines and surrounding spaces do not make names.
    (tmp_path / "test.txt").write_text("\n  id3/c/00001  \n\n\tid4/d/00001\n")
    assert read_split(str(tmp_path), "test") == ["id3/c/00001", "id4/d/00001"]
    assert sorted(os.listdir(tmp_path)) == ["test.txt", "train.txt", "val.txt"]  # no temporary file left


def test_a_missing_split_says_to_preprocess_first(tmp_path):
    with pytest.raises(Diff2LipError, match=r"'.*val\.txt' not found; run dataset/preprocess\.py"):
        read_split(str(tmp_path), "val")


def test_a_clip_without_meta_or_with_broken_json_is_incomplete(written):
    root, *_ = written
    meta = os.path.join(clip_dir(str(root), NAME), "meta.json")
    text = open(meta).read()
    open(meta, "w").write(text[: len(text) // 2])
    with pytest.raises(Diff2LipError, match=r"clip '.*00001' is incomplete \(.*\); preprocess it again"):
        Clip(str(root), NAME)
    os.remove(meta)
    with pytest.raises(Diff2LipError, match="is incomplete.*preprocess it again"):
        Clip(str(root), NAME)
    with pytest.raises(Diff2LipError, match="is incomplete"):
        Clip(str(root), "id00012/never/00001")


def test_a_missing_or_corrupt_crop_names_its_file(written):
    root, *_ = written
    clip = Clip(str(root), NAME)
    os.remove(os.path.join(clip.folder, FRAME_NAME.format(3)))
    with open(os.path.join(clip.folder, FRAME_NAME.format(5)), "wb") as f:
        f.write(b"\xff\xd8 not a jpeg")
    clip.faces([0, 1, 2])  # the others still read
    for i in (3, 5):
        with pytest.raises(Diff2LipError, match=rf"face crop '.*{FRAME_NAME.format(i)}' is missing or unreadable; preprocess the clip again"):
            clip.faces([0, i])


def test_a_meta_without_its_counts_is_incomplete(written):
    root, *_ = written
    with open(os.path.join(clip_dir(str(root), NAME), "meta.json"), "w") as f:
        json.dump({"fps": 25}, f)
    with pytest.raises(Diff2LipError, match="is incomplete"):
        Clip(str(root), NAME)


@pytest.mark.parametrize("damage, needle", [
    ("removed", r"mel.npy is missing or unreadable"),
    ("truncated", r"mel.npy is missing or unreadable"),
    ("wrong shape", r"mel.npy is float32 \[40, 3\], not float32 \[80, T\]"),
    ("NaN", r"mel.npy holds NaN or inf"),
])
def test_a_clip_with_a_missing_or_broken_mel_is_refused_when_opened(written, damage, needle):
    root, *_ = written
    path = os.path.join(clip_dir(str(root), NAME), "mel.npy")
    if damage == "removed":
        os.remove(path)
    elif damage == "truncated":
        data = open(path, "rb").read()
        open(path, "wb").write(data[:100])
    elif damage == "wrong shape":
        np.save(path, np.zeros((40, 3), np.float32))
    else:
        mel = np.load(path)
        mel[3, 5] = np.nan
        np.save(path, mel)
    with pytest.raises(Diff2LipError, match=rf"clip '.*00001': {needle}.*preprocess it again"):
        Clip(str(root), NAME).mel  # the header at once, the values when they are read


def test_a_crop_of_another_size_is_refused_naming_it(written):
    root, faces, *_ = written
    clip = Clip(str(root), NAME)
    cv2.imwrite(os.path.join(clip.folder, FRAME_NAME.format(2)), cv2.resize(faces[2], (40, 48)))
    with pytest.raises(Diff2LipError, match=r"face crop '.*00002.jpg' is 40x48, not the clip's 48x48"):
        clip.faces([2])


def test_open_clips_reports_the_broken_ones_and_keeps_the_rest_in_order(tmp_path, caplog):
    wav = speech_like(7 / 25 + 0.2, seed=1)
    names = [f"id/{i}" for i in range(4)]
    for name in names:
        write_clip(str(tmp_path), name, crops(7), wav, melspectrogram(wav), {"image_size": 48, "fps": 25})
    os.remove(os.path.join(clip_dir(str(tmp_path), "id/1"), "mel.npy"))
    os.remove(os.path.join(clip_dir(str(tmp_path), "id/3"), "meta.json"))
    assert [clip.name for clip in open_clips(str(tmp_path), names)] == ["id/0", "id/2"]
    assert "skipping broken clip 'id/1'" in caplog.text and "skipping broken clip 'id/3'" in caplog.text
