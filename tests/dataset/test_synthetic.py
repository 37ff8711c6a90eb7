"""Tests for dataset/synthetic.py: the renderer is deterministic, its lips follow its audio by the
documented map (dataset/lipmeter.py's, whose reading back is tested in test_lipmeter.py), and the
command writes the VoxCeleb2 layout with its filelists."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from audio.audio import load_wav
from dataset import synthetic
from dataset.lipmeter import implied_opening_from_audio
from dataset.synthetic import load_targets, render_clip, synthesize_clip
from dataset.video_io import iter_frames
from launchers import REPO_ROOT, child_env

SECONDS = 2.0
N_FRAMES = 50


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    cv2.setNumThreads(1)
    yield


@pytest.fixture(scope="module")
def clips():
    """Three identities' clips in memory (identity seeds chosen to cover light and dark skin)."""
    return [synthesize_clip(identity, 100 + identity, SECONDS) for identity in (1, 2, 3)]


def test_render_is_deterministic_and_seeded(clips):
    again = synthesize_clip(1, 101, SECONDS)
    first = clips[0]
    assert first.frames.shape == (N_FRAMES, 224, 224, 3) and first.frames.dtype == np.uint8
    assert first.audio.shape == (N_FRAMES * 640,) and first.audio.dtype == np.float32
    assert np.abs(first.audio).max() <= 1.0
    np.testing.assert_array_equal(again.frames, first.frames)
    np.testing.assert_array_equal(again.audio, first.audio)
    np.testing.assert_array_equal(again.targets.opening, first.targets.opening)
    np.testing.assert_array_equal(again.targets.width, first.targets.width)
    assert again.targets.vowels == first.targets.vowels

    other_clip = synthesize_clip(1, 102, SECONDS)  # same identity, other speech and motion
    assert not np.array_equal(other_clip.audio, first.audio)
    assert not np.array_equal(other_clip.frames, first.frames)
    assert np.abs(clips[1].frames.astype(int) - first.frames).mean() > 10  # another face altogether


def test_targets_follow_the_audio(clips):
    for clip in clips:
        targets = clip.targets
        assert len(targets.syllables) >= 3
        np.testing.assert_array_equal(targets.opening, implied_opening_from_audio(clip.audio, N_FRAMES))
        # Open while voicing, closed in long pauses, and a spread of openings in between.
        assert targets.opening.min() == 0.0 and targets.opening.max() > 0.3
        voiced = np.array([v != "" for v in targets.vowels])
        assert targets.opening[voiced].mean() > 3 * targets.opening[~voiced].mean()
        np.testing.assert_allclose(targets.width[~voiced], synthetic.REST_WIDTH)
        for k in np.flatnonzero(voiced):
            # Between the rest width and the vowel's, as the syllable's shape eases in and out.
            low, high = sorted([synthetic.VOWELS[targets.vowels[k]].width, synthetic.REST_WIDTH])
            assert low - 1e-9 <= targets.width[k] <= high + 1e-9


def test_encoded_clip_saves_its_targets_and_decodes_identically(tmp_path):
    paths = [tmp_path / "a" / "00001.mp4", tmp_path / "b" / "00001.mp4"]
    for p in paths:
        p.parent.mkdir()
    targets = render_clip(paths[0], 4, 104, SECONDS)
    render_clip(paths[1], 4, 104, SECONDS)
    saved = load_targets(paths[0])
    np.testing.assert_array_equal(saved.opening, targets.opening)
    np.testing.assert_array_equal(saved.width, targets.width)
    assert saved.syllables == targets.syllables and saved.vowels == targets.vowels
    assert (saved.identity_seed, saved.clip_seed) == (4, 104)

    # The encoder is deterministic here, but only the decoded frames and audio are promised.
    decoded = [np.stack(list(iter_frames(p))) for p in paths]
    np.testing.assert_array_equal(decoded[0], decoded[1])
    assert decoded[0].shape == (N_FRAMES, 224, 224, 3)
    np.testing.assert_array_equal(load_wav(paths[0]), load_wav(paths[1]))


def test_command_writes_layout_and_filelists(tmp_path, capsys):
    root = tmp_path / "synth"
    argv = ["--out_root", str(root), "--identities", "4", "--clips_per_identity", "2", "--seconds", "0.6",
            "--test_identities", "2", "--seed", "3", "--progress", "False"]
    assert synthetic.main(argv) == 0
    assert "wrote 8 clips" in capsys.readouterr().out

    def lines(name):
        return (root / name).read_text().splitlines()

    train, test = lines("train.txt"), lines("test.txt")
    assert train == [f"id{i:05d}/clip{c:02d}/00001" for i in (0, 1) for c in (0, 1)]
    assert test == [f"id{i:05d}/clip{c:02d}/00001" for i in (2, 3) for c in (0, 1)]
    assert not {n.split("/")[0] for n in train} & {n.split("/")[0] for n in test}
    for name in train + test:
        assert (root / f"{name}.mp4").is_file() and (root / os.path.dirname(name) / "targets.json").is_file()
    assert lines("test_reconstruction.txt") == [f"{n} {n}" for n in test]
    cross = [line.split() for line in lines("test_cross.txt")]
    assert [a for a, _ in cross] == test
    for audio, video in cross:
        assert video in test and audio.split("/")[0] != video.split("/")[0]

    # Same seed, same data: the targets (and so the audio and lips) are rendered again identically.
    before = (root / "id00002/clip01/targets.json").read_text()
    assert synthetic.main(argv) == 0
    assert (root / "id00002/clip01/targets.json").read_text() == before

    # --test_only: just the held-out identities, the same clips and test filelists, no train clips.
    held_out = tmp_path / "held_out"
    assert synthetic.main([*argv[:1], str(held_out), *argv[2:], "--test_only", "True"]) == 0
    assert sorted(p.name for p in held_out.iterdir() if p.is_dir()) == ["id00002", "id00003"]
    assert (held_out / "train.txt").read_text() == ""
    for name in ("test.txt", "test_reconstruction.txt", "test_cross.txt", "id00002/clip01/targets.json"):
        assert (held_out / name).read_text() == (root / name).read_text(), name


def test_render_speaker_gives_a_data_sets_clips_of_one_identity(tmp_path):
    root = tmp_path / "synth"
    assert synthetic.main(["--out_root", str(root), "--identities", "3", "--clips_per_identity", "2", "--seconds", "0.6",
                           "--test_identities", "2", "--seed", "3", "--progress", "False"]) == 0
    paths = synthetic.render_speaker(str(tmp_path / "speaker"), identity=1, clips=[1, 4], seconds=0.6, seed=3)
    assert paths == [str(tmp_path / "speaker" / f"clip{c:02d}" / f"clip{c:02d}.mp4") for c in (1, 4)]
    # Clip 1: the very clip the data set holds (same face, voice and speech), frames and audio.
    assert (tmp_path / "speaker" / "clip01" / "targets.json").read_text() == (root / "id00001/clip01/targets.json").read_text()
    for a, b in zip(iter_frames(paths[0]), iter_frames(root / "id00001/clip01/00001.mp4")):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(load_wav(paths[0]), load_wav(root / "id00001/clip01/00001.mp4"))
    # Clip 4: the same identity's face with speech of its own.
    speaker, dataset_clip = next(iter_frames(paths[1])), next(iter_frames(root / "id00001/clip00/00001.mp4"))
    other_identity = next(iter_frames(root / "id00002/clip00/00001.mp4"))
    top = slice(0, 90)  # above the mouth: face, hair, background
    assert np.abs(speaker[top].astype(float) - dataset_clip[top]).mean() < np.abs(speaker[top].astype(float) -
                                                                                  other_identity[top]).mean() / 4
    assert json.loads((tmp_path / "speaker/clip04/targets.json").read_text())["clip_seed"] != json.loads(
        (root / "id00001/clip00/targets.json").read_text())["clip_seed"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--identities", "four"], "invalid int value"),
        (["--identities", "3", "--test_identities", "1"], "--test_identities 1 must be at least 2"),
        (["--identities", "3", "--test_identities", "3"], "below --identities 3"),
        (["--seconds", "0.1"], "--seconds 0.1 must be"),
        (["--clips_per_identity", "0"], "--clips_per_identity 0 must be"),
        (["--bogus", "1"], "unrecognized arguments: --bogus"),
    ],
)
def test_command_rejects_bad_flags(tmp_path, capsys, argv, message):
    assert synthetic.main(["--out_root", str(tmp_path / "out"), *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "train.txt").exists()


def test_command_requires_out_root_as_a_script():
    proc = subprocess.run([sys.executable, "dataset/synthetic.py"], cwd=REPO_ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.startswith("error: --out_root is required")
