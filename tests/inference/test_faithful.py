"""The released pipeline's frame count, output audio length and pixels, on clips made here.

The released path reads audio with `ffmpeg -i AUDIO out.wav` and librosa (every decoded sample,
AAC padding included), makes one frame per full mel window up to the video's length, writes the
audio cut to frames / 25 s, and converts the generated face with
`((x+1)*0.5).clamp(0,1)*255` and `astype(np.uint8)`. Each expectation below is computed from
those rules directly, not through the code under test.
"""

import av
import numpy as np
import pytest
import torch

from audio.audio import load_wav, melspectrogram, samples_for_frames
from helpers import decoder_output, has_encoder, write_aac
from inference.lipsync import SamplingOptions, _to_images, driving_audio, plan_clip, write_clip

pytestmark = pytest.mark.skipif(not has_encoder("aac"), reason="PyAV has no aac encoder here")


def released_frame_count(n_samples: int, n_video: int) -> int:
    """generate.py's load_all_indiv_mels loop on a mel of 1 + n_samples // 200 steps, then min with the video."""
    mel_steps = 1 + n_samples // 200
    windows, i = 0, 1
    while True:
        start = int(80.0 * (max(i - 5 // 2, 0) / float(25)))
        if mel_steps - start < 16:  # spec[start : start + 16] came back short
            break
        windows += 1
        i += 1
    return min(n_video, windows)


def test_aac_padding_gives_the_released_frame_count_and_output_audio_length(tmp_path):
    clip = tmp_path / "clip.mp4"
    n_video = 50  # 2 s of video: the 0.58 s of audio limits the clip
    tone = 0.3 * np.sin(2 * np.pi * 300 * np.arange(9261) / 16000)  # 9261: AAC pads 9261 -> 10240
    write_aac(clip, tone[None], video_frames=n_video)
    with av.open(str(clip)) as container:
        track = container.streams.audio[0]
        declared = int(round(float(track.duration * track.time_base) * 16000))
    released = released_frame_count(decoder_output(clip).shape[1], n_video)
    # The clip must exercise the difference: cutting at the declared length loses frames.
    assert released > released_frame_count(declared, n_video)

    plan = plan_clip(str(clip), str(clip), SamplingOptions())
    assert plan.n_frames == released

    audio = driving_audio(plan)
    assert audio.size == int(released / 25 * 16000) == released * 640  # the release cuts at frames / 25 s
    np.testing.assert_array_equal(audio, load_wav(clip)[: released * 640])
    out = tmp_path / "out.mp4"
    frames = (np.full((32, 32, 3), 100, dtype=np.uint8) for _ in range(plan.n_frames))
    assert write_clip(str(out), frames, audio) == released
    with av.open(str(out)) as container:
        video_track, audio_track = container.streams.video[0], container.streams.audio[0]
        assert sum(1 for _ in container.decode(video_track)) == released
        assert audio_track.duration * audio_track.time_base == pytest.approx(released / 25, abs=1 / 16000)


@pytest.mark.parametrize("rate", [16000, 44100])
def test_a_video_limited_plan_decodes_only_the_audio_its_frames_use(tmp_path, rate):
    video, speech = tmp_path / "face.mp4", tmp_path / "speech.m4a"
    n_video = 12
    write_aac(video, np.zeros((1, 16000)), video_frames=n_video)
    t = np.arange(20 * rate) / rate  # 20 s of speech for a 0.48 s video
    write_aac(speech, np.stack([0.4 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 1700 * t)]), rate=rate)
    whole = load_wav(speech)
    full_mel = melspectrogram(whole)

    plan = plan_clip(str(video), str(speech), SamplingOptions())

    assert plan.n_frames == n_video
    assert plan.wav.size == samples_for_frames(n_video) < whole.size // 20
    np.testing.assert_array_equal(plan.wav, whole[: plan.wav.size])
    # Every step a frame's window reads equals the whole-audio mel's.
    last_step = int(80 * (n_video - 2) / 25) + 16
    assert plan.mel.shape == (80, last_step)
    np.testing.assert_array_equal(plan.mel, full_mel[:, :last_step])
    np.testing.assert_array_equal(driving_audio(plan), whole[: n_video * 640])

    # --loop_video covers the whole audio, so all of it is read.
    looped = plan_clip(str(video), str(speech), SamplingOptions(loop_video=True))
    np.testing.assert_array_equal(looped.wav, whole)
    assert looped.n_frames == released_frame_count(whole.size, 10**9)


def _released_uint8(x: torch.Tensor) -> np.ndarray:
    """generate.py: `(normalise(x) * 255).numpy().transpose(0, 2, 3, 1)`, then `g.astype(np.uint8)`."""
    normalised = np.clip((x.numpy() + np.float32(1)) * np.float32(0.5), 0, 1)
    return (normalised * np.float32(255)).transpose(0, 2, 3, 1).astype(np.uint8)


def test_full_paste_converts_the_face_like_the_release_and_lower_rounds():
    # Every input gray level as the network sees it, values that fall just below a level, and
    # values outside [-1, 1] (the sample is clamped only through x0).
    levels = torch.arange(256, dtype=torch.float32).div(127.5).sub(1.0)
    just_below = torch.arange(1, 256, dtype=torch.float32).sub(0.3).div(127.5).sub(1.0)
    rng = torch.Generator().manual_seed(0)
    values = torch.cat([levels, just_below, torch.rand(3 * 4 * 4 * 30 - 511 - 4, generator=rng) * 2.2 - 1.1,
                        torch.tensor([-1.5, -1.0, 1.0, 1.5])])
    x = values.reshape(30, 3, 4, 4)

    full = np.stack(_to_images(x, "rgb", "full"))
    np.testing.assert_array_equal(full, _released_uint8(x))
    lower = np.stack(_to_images(x, "rgb", "lower"))
    expected_lower = np.rint((np.clip(x.numpy(), -1, 1) + 1) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(lower, expected_lower)
    # The two rules differ (truncation is never above rounding): the test tells them apart.
    assert (full != lower).any() and (full.astype(int) <= lower.astype(int)).all()
    # bgr only reverses the channels.
    np.testing.assert_array_equal(np.stack(_to_images(x, "bgr", "full")), _released_uint8(x)[..., ::-1])
