"""Helpers shared by the tests (importable as `helpers`: pyproject puts tests/ on the path)."""

import os

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(REPO_ROOT, "tests", "data")

# Small enough for a 2-core CPU, but every code path of the official network is on:
# attention, resblock up/down, learned sigma, reference frames and the audio encoder.
TINY_FLAGS = dict(
    image_size=32,
    num_channels=32,
    num_res_blocks=1,
    channel_mult="1,2",
    attention_resolutions="16",
    num_head_channels=16,
)


def randomize_zero_init(model, seed: int = 0, std: float = 0.02) -> None:
    """Give the zero-initialised output convs small random weights, so outputs depend on inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0 and p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * std)


TINY_CLI_FLAGS = [
    "--image_size", "32", "--num_channels", "32", "--num_res_blocks", "1", "--channel_mult", "1,2",
    "--attention_resolutions", "16", "--num_head_channels", "16", "--timestep_respacing", "ddim2",
]


def save_tiny_checkpoint(path, seed: int = 0) -> None:
    """A random-weight checkpoint of the tiny network, in the released format (a plain state_dict)."""
    from guided_diffusion.script_util import tfg_create_model_and_diffusion

    torch.manual_seed(seed)
    model, _ = tfg_create_model_and_diffusion(**TINY_FLAGS)
    randomize_zero_init(model, seed)
    torch.save(model.state_dict(), path)


def speech_like(seconds: float, sr: int = 16000, seed: int = 0):
    """Voiced syllables at ~4 Hz: a harmonic source under an on/off envelope, float32 [T]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110 + 40 * rng.random()
    source = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t + rng.random() * 6), 0, None) ** 2
    return (0.2 * envelope * source / 3).astype(np.float32)


def face_frame(i: int, height: int = 224, width: int = 224, seed: int = 0):
    """A drawn face whose mouth opens with i, on a textured background: RGB uint8 [H, W, 3]."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    img = (rng.integers(40, 90, size=(height // 8 + 1, width // 8 + 1, 3))).astype(np.uint8)
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_NEAREST)
    cx, cy = width // 2 + int(3 * np.sin(i / 5)), height * 9 // 20
    rx, ry = width // 5, height * 3 // 10
    cv2.ellipse(img, (cx, cy), (rx, ry), 0, 0, 360, (225, 180, 150), -1)
    for dx in (-rx // 2, rx // 2):
        cv2.circle(img, (cx + dx, cy - ry // 4), max(2, rx // 8), (40, 30, 30), -1)
    opening = 1 + int(ry / 6 * abs(np.sin(i * 0.7)))
    cv2.ellipse(img, (cx, cy + ry // 2), (rx // 3, opening), 0, 0, 360, (150, 40, 60), -1)
    return img


def render_clip(path, n_frames: int = 20, height: int = 224, width: int = 224, with_audio: bool = True, seed: int = 0) -> None:
    """A real H.264 + AAC mp4 of a drawn talking face, its audio as long as the video."""
    from dataset.video_io import VideoWriter

    audio = speech_like(n_frames / 25, seed=seed) if with_audio else None
    with VideoWriter(str(path), fps=25, audio=audio, sample_rate=16000) as writer:
        for i in range(n_frames):
            writer.write(face_frame(i, height, width, seed))
