"""LSE-C / LSE-D: syncnet_python's feature windows and scores against transcriptions of the reference
code, and the scorer on rendered clips with its network in the real `syncnet_v2.model` format (random
values). The network itself is tested in test_syncnet_eval.py, the face track in test_face_track.py."""

import math

import numpy as np
import pytest
import python_speech_features
import torch

from audio.audio import load_wav
from common.errors import CheckpointError, Diff2LipError, MediaError
from dataset.video_io import iter_frames
from evaluation.face_track import crop_frame
from evaluation.lse import (
    LSEScorer,
    audio_windows,
    lse_scores,
    num_windows,
    syncnet_features,
    syncnet_mfcc,
    to_int16,
)
from evaluation.syncnet_eval import load_syncnet_eval
from face_detection import voxceleb2_box
from helpers import BoxInFramesDetector, render_clip, syncnet_v2_state

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
    torch.save(syncnet_v2_state(), path)
    return str(path)


@pytest.fixture(scope="module")
def net(weights):
    return load_syncnet_eval(weights, "cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "talk.mp4"
    render_clip(path, n_frames=12, height=224, width=224, with_audio=True, seed=3)
    return str(path)


# ---------------------------------------------------------------- transcriptions of syncnet_python


def reference_features(net, crops, audio, batch_size=20):
    """SyncNetInstance.evaluate's input building and feature loop, transcribed (CPU, no Variable)."""
    im = np.stack(crops, axis=3)
    im = np.expand_dims(im, axis=0)
    im = np.transpose(im, (0, 3, 4, 1, 2))
    imtv = torch.from_numpy(im.astype(float)).float()
    mfcc = zip(*python_speech_features.mfcc(audio, 16000))
    mfcc = np.stack([np.array(i) for i in mfcc])
    cc = np.expand_dims(np.expand_dims(mfcc, axis=0), axis=0)
    cct = torch.from_numpy(cc.astype(float)).float()
    min_length = min(len(crops), math.floor(len(audio) / 640))
    lastframe = min_length - 5
    im_feat, cc_feat = [], []
    with torch.no_grad():
        for i in range(0, lastframe, batch_size):
            im_batch = [imtv[:, :, vframe : vframe + 5, :, :] for vframe in range(i, min(lastframe, i + batch_size))]
            im_feat.append(net.forward_lip(torch.cat(im_batch, 0)))
            cc_batch = [cct[:, :, :, vframe * 4 : vframe * 4 + 20] for vframe in range(i, min(lastframe, i + batch_size))]
            cc_feat.append(net.forward_aud(torch.cat(cc_batch, 0)))
    return torch.cat(im_feat, 0), torch.cat(cc_feat, 0)


def reference_scores(im_feat, cc_feat, vshift):
    """calc_pdist and the offset / min dist / confidence lines of evaluate, transcribed."""
    win_size = vshift * 2 + 1
    feat2p = torch.nn.functional.pad(cc_feat, (0, 0, vshift, vshift))
    dists = [
        torch.nn.functional.pairwise_distance(im_feat[[i], :].repeat(win_size, 1), feat2p[i : i + win_size, :])
        for i in range(len(im_feat))
    ]
    mdist = torch.mean(torch.stack(dists, 1), 1)
    minval, minidx = torch.min(mdist, 0)
    return float(torch.median(mdist) - minval), float(minval), int(vshift - minidx)


def numpy_scores(video, audio, vshift):
    """The same scores by hand: distance table with explicit loops, numpy median."""
    n, d = video.shape
    padded = np.concatenate([np.zeros((vshift, d)), audio, np.zeros((vshift, d))])
    table = np.array([[np.linalg.norm(video[i] - padded[i + j] + 1e-6) for j in range(2 * vshift + 1)] for i in range(n)])
    mdist = table.mean(axis=0)
    return np.median(mdist) - mdist.min(), mdist.min(), vshift - int(np.argmin(mdist))


# ---------------------------------------------------------------- windows and features


def test_lastframe_rule_and_mfcc_windows():
    # lastframe = min(n_frames, floor(samples / 640)) - 5
    assert num_windows(30, 640 * 20 + 639) == 15
    assert num_windows(10, 640 * 100) == 5
    assert num_windows(5, 640 * 100) == 0
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(640 * 10) * 3000).astype(np.int16)
    mfcc = syncnet_mfcc(audio)
    # 100 steps per second: n frames of audio (n * 640 samples) give 4n - 1 steps of 13 coefficients.
    assert mfcc.shape == (13, 39)
    np.testing.assert_array_equal(mfcc, python_speech_features.mfcc(audio, 16000).T.astype(np.float32))
    windows = audio_windows(mfcc, 3, 5)
    assert windows.shape == (2, 1, 13, 20)
    np.testing.assert_array_equal(windows[0, 0].numpy(), mfcc[:, 12:32])
    np.testing.assert_array_equal(windows[1, 0].numpy(), mfcc[:, 16:36])
    # The last window the rule allows (vframe 4 of 10 frames) fits; one more does not.
    assert audio_windows(mfcc, 4, 5).shape == (1, 1, 13, 20)
    with pytest.raises(ValueError):
        audio_windows(mfcc, 5, 6)


def test_int16_quantisation_is_pcm_s16le():
    wav = np.array([0.0, 1.0, -1.0, 0.5, 1.5 / 32768, -2.5 / 32768, 0.99999])
    np.testing.assert_array_equal(to_int16(wav), [0, 32767, -32768, 16384, 2, -2, 32767])


@pytest.mark.parametrize("batch_size", [2, 20])
def test_streamed_features_equal_the_reference_loop(net, batch_size):
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(9)]
    audio = (rng.standard_normal(640 * 8 + 100) * 3000).astype(np.int16)  # audio limits: 8 - 5 = 3 windows
    video_feats, audio_feats = syncnet_features(net, iter(crops), len(crops), audio, batch_size=batch_size)
    ref_video, ref_audio = reference_features(net, crops, audio)
    assert video_feats.shape == audio_feats.shape == (3, 1024)
    torch.testing.assert_close(video_feats, ref_video, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(audio_feats, ref_audio, rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------- scores


def shifted_features(k, n=40, d=64, noise=0.01, seed=0):
    """Audio features that are the video features k frames later: audio[i] = video[i + k] + noise."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n + 2 * abs(k) + 2, d))
    o = abs(k) + 1
    video = base[o : o + n]
    audio = base[o + k : o + k + n] + noise * rng.standard_normal((n, d))
    return video.astype(np.float32), audio.astype(np.float32)


@pytest.mark.parametrize("k", [3, -2, 0])
def test_shifted_features_give_offset_and_hand_computed_scores(k):
    video, audio = shifted_features(k)
    lse_c, lse_d, offset = lse_scores(torch.from_numpy(video), torch.from_numpy(audio), vshift=15)
    # offset = +k when audio[i] matches video[i + k]: the picture lags the sound by k frames.
    assert offset == k
    hand_c, hand_d, hand_offset = numpy_scores(video.astype(np.float64), audio.astype(np.float64), 15)
    assert hand_offset == k
    assert lse_d == pytest.approx(hand_d, rel=1e-5)
    assert lse_c == pytest.approx(hand_c, rel=1e-5)
    assert (lse_c, lse_d, offset) == pytest.approx(reference_scores(torch.from_numpy(video), torch.from_numpy(audio), 15), rel=1e-6)
    # Off-shift distances are ~sqrt(2 D) for independent unit Gaussians, so the confidence is large.
    assert lse_c > 5


def test_identical_features_score_offset_zero_and_distance_zero():
    video, _ = shifted_features(0)
    lse_c, lse_d, offset = lse_scores(torch.from_numpy(video), torch.from_numpy(video.copy()), vshift=15)
    assert offset == 0
    assert lse_d == pytest.approx(1e-6 * math.sqrt(video.shape[1]), abs=1e-6)  # only pairwise_distance's eps
    assert lse_c > 5


# ---------------------------------------------------------------- LSEScorer on a rendered clip


def test_scorer_with_voxceleb2_crop_on_a_rendered_clip(weights, clip):
    scorer = LSEScorer(weights, face_track="voxceleb2")
    result = scorer.score(clip)
    assert set(result) == {"lse_c", "lse_d", "offset", "n_frames"}
    assert math.isfinite(result["lse_c"]) and math.isfinite(result["lse_d"]) and result["lse_d"] > 0
    assert result["lse_c"] >= 0 and -15 <= result["offset"] <= 15
    n_samples = len(load_wav(clip, 16000))
    assert result["n_frames"] == min(12, n_samples // 640) - 5 and result["n_frames"] in (6, 7)
    # The same features from crops made by hand: the VoxCeleb2 box through crop_video's geometry.
    y1, y2, x1, x2 = voxceleb2_box(224, 224)
    s, cx, cy = max(y2 - y1, x2 - x1) / 2, (x1 + x2) / 2, (y1 + y2) / 2
    crops = [crop_frame(f, cx, cy, s) for f in iter_frames(clip)]
    video_feats, audio_feats = syncnet_features(scorer.net, crops, 12, to_int16(load_wav(clip, 16000)))
    torch.testing.assert_close(scorer.features(clip), (video_feats, audio_feats))
    assert scorer.scores_from_features(video_feats, audio_feats) == result


def test_scorer_s3fd_track_cuts_frames_and_audio(weights, clip):
    scorer = LSEScorer(weights, face_track="s3fd", detector=BoxInFramesDetector(), batch_size=3)
    video_feats, audio_feats = scorer.features(clip)
    frames = list(iter_frames(clip))[1:10]
    crops = [crop_frame(f, 100, 112, 64) for f in frames]
    # run_pipeline.py cuts the audio to the track: samples of frames 1..9.
    audio = to_int16(load_wav(clip, 16000))[640 : 640 * 10]
    expected = syncnet_features(scorer.net, crops, 9, audio, batch_size=3)
    assert video_feats.shape == (4, 1024)  # min(9 frames, 9 frames of audio) - 5
    torch.testing.assert_close((video_feats, audio_feats), expected)


def test_scorer_without_face_track_reads_bgr_frames(weights, clip):
    scorer = LSEScorer(weights, face_track="none", batch_size=4)
    crops = [np.ascontiguousarray(f[:, :, ::-1]) for f in iter_frames(clip)]
    expected = syncnet_features(scorer.net, crops, 12, to_int16(load_wav(clip, 16000)), batch_size=4)
    torch.testing.assert_close(scorer.features(clip), expected)


def test_scorer_without_its_weights_is_a_checkpoint_error_naming_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoints"):
        LSEScorer(weights_path=tmp_path / "nowhere" / "syncnet_v2.model", face_track="voxceleb2")


def test_scorer_rejects_bad_options_and_unscorable_clips(weights, tmp_path):
    with pytest.raises(Diff2LipError, match="face_track"):
        LSEScorer(weights, face_track="dlib")
    with pytest.raises(Diff2LipError, match="box"):
        LSEScorer(weights, face_track="box")
    silent = tmp_path / "silent.mp4"
    render_clip(silent, n_frames=8, height=64, width=64, with_audio=False)
    with pytest.raises(MediaError, match="silent.mp4.*no audio"):
        LSEScorer(weights, face_track="voxceleb2").score(silent)
    short = tmp_path / "short.mp4"
    render_clip(short, n_frames=5, height=64, width=64)
    with pytest.raises(MediaError, match="short.mp4.*too short"):
        LSEScorer(weights, face_track="box", box=(0, 60, 4, 60)).score(short)
    with pytest.raises(MediaError, match="no face found.*short.mp4"):
        LSEScorer(weights, face_track="s3fd", detector=type("NoFace", (), {"batch_size": 2, "detect": lambda self, f: [None] * len(f)})()).score(short)


