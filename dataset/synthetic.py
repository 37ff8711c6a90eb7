"""Drawn talking faces and speech-like audio, for tests, benchmarks and demos that must run with
nothing downloaded. (The synthetic talking-head benchmark builds on these.)"""

import cv2
import numpy as np


def speech_like(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """Voiced syllables at ~4 Hz: a harmonic source under an on/off envelope, float32 [T] in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    f0 = 110 + 40 * rng.random()
    source = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t + rng.random() * 6), 0, None) ** 2
    return (0.2 * envelope * source / 3).astype(np.float32)


def draw_face(i: int, height: int = 224, width: int = 224, seed: int = 0) -> np.ndarray:
    """Frame `i` of a drawn face that sways a little and opens its mouth periodically, on a
    blocky background: RGB uint8 `[H, W, 3]`. The face spans the middle of the frame, inside
    the VoxCeleb2 crop for square frames."""
    rng = np.random.default_rng(seed)
    img = rng.integers(40, 90, size=(height // 8 + 1, width // 8 + 1, 3)).astype(np.uint8)
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_NEAREST)
    cx, cy = width // 2 + int(3 * np.sin(i / 5)), height * 9 // 20
    rx, ry = min(width, height) // 5, height * 3 // 10
    cv2.ellipse(img, (cx, cy), (rx, ry), 0, 0, 360, (225, 180, 150), -1)
    for dx in (-rx // 2, rx // 2):
        cv2.circle(img, (cx + dx, cy - ry // 4), max(2, rx // 8), (40, 30, 30), -1)
    opening = 1 + int(ry / 6 * abs(np.sin(i * 0.7)))
    cv2.ellipse(img, (cx, cy + ry // 2), (rx // 3, opening), 0, 0, 360, (150, 40, 60), -1)
    return img
