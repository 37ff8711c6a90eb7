"""Drawn talking faces whose lips follow synthetic speech measurably, in the VoxCeleb2 layout.

    python dataset/synthetic.py --out_root data/synthetic --identities 8 --clips_per_identity 2 \\
        --seconds 3 --test_identities 2 --seed 0

We cannot download real talking-face data, so this renders data on which the whole pipeline
(preprocessing, SyncNet and Diff2Lip training, generation, evaluation) runs, and where lip-sync
is a number: `dataset/lipmeter.py` reads the mouth back from pixels.

Output of the command (`render_dataset`):
  R/idNNNNN/clipNN/00001.mp4    224x224, 25 fps, H.264 + AAC 16 kHz mono
  R/idNNNNN/clipNN/targets.json per-frame targets (`ClipTargets`): opening, width, vowel
  R/train.txt, R/test.txt        clip names (id00000/clip00/00001) of the train identities and of
                                 the held-out test identities (the last --test_identities ids).
                                 Note `dataset/preprocess.py` walks the whole tree and makes its
                                 own train/val split by identity: these files name the intended one.
  R/test_reconstruction.txt      "AUDIO VIDEO" lines: each test clip with itself
  R/test_cross.txt               each test clip's audio with a clip of another test identity

Identity (`identity_seed`): skin tone, lip colour and thickness, hair colour and style, eye colour
and spacing, face size and shape, a static textured background and clothes; and the voice: pitch
(90-220 Hz, log-uniform, with vibrato), vocal-tract length (formant scale) and speaking rate.

Speech (`clip_seed`): syllables, each one vowel of `VOWELS` (a, e, i, o, u) with a raised-cosine
attack, a sustain and a raised-cosine decay, at a random loudness, separated by short (within a
word) or long pauses. The voice is a harmonic source through the vowel's three formant
resonators, plus light noise; 16 kHz float32 in [-1, 1]. The head sways and bobs a few pixels.

Lips, per video frame k (time k / 25 s):
  opening_k = `lipmeter.implied_opening_from_audio(audio)`[k]: clip((rms - 0.01) / (0.1 - 0.01),
              0, 1) of the RMS in a 40 ms window centred on k / 25: a monotone function of
              loudness, 0 in pauses, 1 for a syllable at full loudness. The drawn mouth interior
              is opening_k * OPENING_MAX_FRAC of the face box high.
  width_k   = REST_WIDTH + sum_j shape_j(k / 25) * (VOWELS[v_j].width - REST_WIDTH), where shape_j
              (0..1) is syllable j's envelope shape: the vowel's width while it is voiced (spread
              for i / e, medium for a, rounded for o / u), easing to the rest width in pauses.
              The drawn outer lip width is WIDTH_MIN_FRAC + width_k * (WIDTH_MAX_FRAC -
              WIDTH_MIN_FRAC) of the face box wide.
The face box is the VoxCeleb2 crop (rows 0..158, cols 50..174 of 224x224), which frames the face
with the mouth at rows ~104..148.

Everything is seeded: the same seeds give identical frames and audio (`synthesize_clip`).
`draw_face` and `speech_like` are the older, simpler stand-ins that unit tests and benchmarks use
for arbitrary frame sizes; they are kept as they were, since tests depend on their exact colours.
"""

import colorsys
import dataclasses
import json
import os
import sys
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

if __package__ in (None, ""):
    # Run as `python dataset/synthetic.py`: Python put dataset/ on the path; the packages live one up.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from scipy import signal  # noqa: E402

from common.errors import Diff2LipError  # noqa: E402
from common.files import atomic_write_json, atomic_write_text  # noqa: E402
from common.flags import PROGRESS, Option, Options, create_argparser  # noqa: E402
from common.progress import track  # noqa: E402
from dataset.lipmeter import (  # noqa: E402
    INTERIOR_RGB,
    OPENING_MAX_FRAC,
    RMS_REF,
    WIDTH_MAX_FRAC,
    WIDTH_MIN_FRAC,
    implied_opening_from_audio,
)
from dataset.video_io import PathLike, VideoWriter  # noqa: E402
from face_detection import voxceleb2_box  # noqa: E402

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
FRAME_SIZE = 224
VIDEO_NAME = "00001"
TARGETS_NAME = "targets.json"


@dataclasses.dataclass(frozen=True)
class Vowel:
    """A vowel's sound (formants, loudness) and its mouth width."""

    formants: Tuple[float, float, float]  # F1, F2, F3 in Hz (adult male, Peterson & Barney)
    width: float  # mouth width target, 0 = rounded .. 1 = spread
    loudness: float  # relative amplitude: open vowels are louder


VOWELS: Dict[str, Vowel] = {
    "a": Vowel((730.0, 1090.0, 2440.0), 0.55, 1.0),
    "e": Vowel((530.0, 1840.0, 2480.0), 0.8, 0.85),
    "i": Vowel((270.0, 2290.0, 3010.0), 1.0, 0.7),
    "o": Vowel((570.0, 840.0, 2410.0), 0.2, 0.85),
    "u": Vowel((300.0, 870.0, 2240.0), 0.0, 0.65),
}
VOWEL_NAMES = tuple(VOWELS)
REST_WIDTH = 0.45  # width of the closed mouth in pauses
FORMANT_BANDWIDTHS = (80.0, 100.0, 140.0)  # Hz
FORMANT_GAINS = (1.0, 0.5, 0.25)
NOISE_STD = 0.002  # white noise under the speech: -54 dBFS, 5x under lipmeter.RMS_FLOOR
HARMONICS_UP_TO_HZ = 4500.0  # the source is band-limited well below Nyquist (8 kHz)

# Palettes (RGB). Lips are derived from the skin; backgrounds and clothes avoid red hues, so that
# the lips are the reddest thing around the mouth (which the lip meter relies on).
SKIN_TONES = (
    (255, 224, 196), (241, 194, 160), (224, 172, 135), (198, 140, 100), (160, 108, 72), (120, 80, 55), (92, 62, 45),
)
HAIR_COLOURS = (
    (28, 24, 22), (60, 40, 28), (105, 70, 40), (200, 170, 110), (125, 78, 45), (150, 148, 145), (210, 208, 200),
)
HAIR_STYLES = ("short", "long", "bald", "curly", "bun")
EYE_COLOURS = ((90, 55, 30), (45, 30, 20), (70, 110, 160), (70, 120, 80), (110, 120, 125), (130, 100, 50))
BACKGROUNDS = ("tiles", "stripes", "gradient", "blobs")


@dataclasses.dataclass(frozen=True)
class Syllable:
    """One voiced vowel: raised-cosine attack, flat sustain, raised-cosine decay (seconds)."""

    vowel: str
    onset: float
    attack: float
    sustain: float
    decay: float
    amplitude: float  # peak amplitude; RMS at the peak is amplitude * RMS_REF

    @property
    def offset(self) -> float:
        return self.onset + self.attack + self.sustain + self.decay

    def shape(self, t: np.ndarray) -> np.ndarray:
        """Envelope shape 0..1 at times `t` (seconds): 0 outside the syllable, 1 in the sustain."""
        u = np.asarray(t, dtype=np.float64) - self.onset
        rise = 0.5 - 0.5 * np.cos(np.pi * np.clip(u / self.attack, 0.0, 1.0))
        fall = 0.5 + 0.5 * np.cos(np.pi * np.clip((u - self.attack - self.sustain) / self.decay, 0.0, 1.0))
        return np.where((u >= 0) & (u < self.offset - self.onset), np.minimum(rise, fall), 0.0)


@dataclasses.dataclass(frozen=True, eq=False)
class ClipTargets:
    """What the lips of a rendered clip do, per video frame (see the module docstring)."""

    opening: np.ndarray  # [N] float64, 0 = closed .. 1 = fully open
    width: np.ndarray  # [N] float64, 0 = rounded .. 1 = spread
    vowels: List[str]  # [N] the vowel being voiced at frame k's time, "" in pauses
    syllables: List[Syllable]
    identity_seed: int
    clip_seed: int

    def to_json(self) -> dict:
        return {
            "fps": FPS,
            "sample_rate": SAMPLE_RATE,
            "identity_seed": self.identity_seed,
            "clip_seed": self.clip_seed,
            "opening": self.opening.tolist(),
            "width": self.width.tolist(),
            "vowels": list(self.vowels),
            "syllables": [dataclasses.asdict(s) for s in self.syllables],
        }

    @classmethod
    def from_json(cls, data: dict) -> "ClipTargets":
        return cls(
            opening=np.asarray(data["opening"], dtype=np.float64),
            width=np.asarray(data["width"], dtype=np.float64),
            vowels=list(data["vowels"]),
            syllables=[Syllable(**s) for s in data["syllables"]],
            identity_seed=int(data["identity_seed"]),
            clip_seed=int(data["clip_seed"]),
        )


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticClip:
    """A rendered clip before encoding."""

    frames: np.ndarray  # [N, 224, 224, 3] RGB uint8
    audio: np.ndarray  # [N * 640] float32 at 16 kHz, in [-1, 1]
    targets: ClipTargets


def targets_path(video_path: PathLike) -> str:
    """Where `render_clip` saves a clip's targets: `targets.json` beside the video."""
    return os.path.join(os.path.dirname(os.path.abspath(os.fspath(video_path))), TARGETS_NAME)


def load_targets(video_path: PathLike) -> ClipTargets:
    """The targets `render_clip` saved for the video at `video_path`."""
    with open(targets_path(video_path)) as f:
        return ClipTargets.from_json(json.load(f))


# ----------------------------------------------------------------------------------------------
# Drawing helpers: shapes are drawn anti-aliased with 4 fractional bits, so sizes and positions
# change continuously (a mouth 0.3 px more open is visibly, measurably more open).

_SHIFT = 4
# OpenCV's anti-aliased fill covers about 0.7 px beyond each edge of a shape (a filled ellipse of
# half-height b >= 1 covers 2 b + 1.4 px of a column), so the mouth is drawn that much smaller to
# cover its nominal size; below half-height 1 px its coverage is irregular, so none is drawn smaller.
_AA_FRINGE = 0.7
_MIN_AXIS = 1.0


def _fx(value: float) -> int:
    return int(round(value * (1 << _SHIFT)))


Point = Tuple[float, float]


def _point(p: Point) -> Tuple[int, int]:
    return _fx(p[0]), _fx(p[1])


def _ellipse(mask: np.ndarray, centre: Point, axes: Point, start: float = 0, end: float = 360) -> None:
    """Fill an ellipse (or its sector start..end degrees, clockwise from +x) into a uint8 mask."""
    cv2.ellipse(mask, _point(centre), _point(axes), 0, start, end, 255, -1, cv2.LINE_AA, _SHIFT)


def _rect(mask: np.ndarray, corner: Point, opposite: Point) -> None:
    cv2.rectangle(mask, _point(corner), _point(opposite), 255, -1, cv2.LINE_AA, _SHIFT)


def _line(mask: np.ndarray, start: Point, end: Point, thickness: int) -> None:
    cv2.line(mask, _point(start), _point(end), 255, thickness, cv2.LINE_AA, _SHIFT)


def _coverage(size: int, draw: Callable[[np.ndarray], None]) -> np.ndarray:
    """Anti-aliased coverage 0..1 [size, size, 1] float32 of what `draw` paints into a mask."""
    mask = np.zeros((size, size), np.uint8)
    draw(mask)
    return (mask.astype(np.float32) / 255.0)[..., None]


def _over(image: np.ndarray, coverage: np.ndarray, colour) -> None:
    """Composite `colour` (RGB or a [H, W, 3] field) over float `image` in place."""
    image *= 1.0 - coverage
    image += coverage * np.asarray(colour, dtype=np.float32)


def _paint(rgb: np.ndarray, alpha: np.ndarray, coverage: np.ndarray, colour) -> None:
    """Composite `colour` over a premultiplied layer `rgb` / `alpha` in place."""
    _over(rgb, coverage, colour)
    _over(alpha, coverage, 1.0)


def _calm_colour(rng: np.random.Generator, saturation: Tuple[float, float], value: Tuple[float, float]) -> np.ndarray:
    """A random RGB colour whose hue avoids reds, pinks and purples (orange through blue)."""
    hue = rng.uniform(0.08, 0.72)
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(*saturation), rng.uniform(*value))
    return np.array([r, g, b], dtype=np.float32) * 255.0


def _jitter(rng: np.random.Generator, colour, amount: float) -> np.ndarray:
    return np.clip(np.asarray(colour, dtype=np.float32) + rng.uniform(-amount, amount, 3), 0, 255).astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A static textured background [size, size, 3] float32: two calm colours mixed by a pattern."""
    base = _calm_colour(rng, (0.05, 0.45), (0.25, 0.85))
    other = _calm_colour(rng, (0.05, 0.45), (0.25, 0.85))
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, np.pi)
    along = x * np.cos(angle) + y * np.sin(angle)
    if kind == "tiles":
        cells = int(rng.integers(6, 24))
        grid = rng.random((cells, cells)).astype(np.float32)
        pattern = cv2.resize(grid, (size, size), interpolation=cv2.INTER_NEAREST)
    elif kind == "stripes":
        pattern = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 10) * along + rng.uniform(0, 2 * np.pi))
    elif kind == "gradient":
        pattern = (along - along.min()) / max(float(along.max() - along.min()), 1e-6)
    else:  # blobs
        pattern = np.zeros((size, size), np.float32)
        for _ in range(int(rng.integers(4, 9))):
            cx, cy, r = rng.random(), rng.random(), rng.uniform(0.05, 0.25)
            pattern += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
        pattern /= pattern.max()
    image = base + (other - base) * pattern[..., None]
    image += rng.normal(0, 3.0, image.shape).astype(np.float32)  # fine grain, as a camera has
    return np.clip(cv2.GaussianBlur(image, (3, 3), 0), 0, 255).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Voice


@dataclasses.dataclass(frozen=True)
class Voice:
    """An identity's voice: the harmonic source and how it is shaped and paced."""

    f0: float  # Hz
    vibrato_rate: float  # Hz
    vibrato_depth: float  # fraction of f0
    tract: float  # formant scale: shorter vocal tracts (higher voices) have higher formants
    tilt: float  # harmonic k has amplitude 1 / k**tilt
    breath: float  # noise in the source, relative to the harmonics' RMS
    rate: float  # speaking-time scale: durations are multiplied by it

    def speak(self, syllables: List[Syllable], n_samples: int, rng: np.random.Generator) -> np.ndarray:
        """The speech waveform: float32 [n_samples] at 16 kHz in [-1, 1]."""
        t = np.arange(n_samples) / SAMPLE_RATE
        vibrato = 1 + self.vibrato_depth * np.sin(2 * np.pi * self.vibrato_rate * t + rng.uniform(0, 2 * np.pi))
        intonation = 1 + 0.05 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 2 * np.pi))
        phase = 2 * np.pi * np.cumsum(self.f0 * vibrato * intonation) / SAMPLE_RATE
        source = np.zeros(n_samples)
        for k in range(1, int(HARMONICS_UP_TO_HZ / (self.f0 * 1.1)) + 1):  # 1.1: room for vibrato and intonation
            source += np.sin(k * phase) / k**self.tilt
        source /= _rms(source)
        source += self.breath * rng.standard_normal(n_samples)

        # Envelope per vowel, then each vowel's filtered voice at unit RMS: the waveform's RMS is
        # amplitude * shape * RMS_REF, the loudness that lipmeter maps to the opening.
        envelopes: Dict[str, np.ndarray] = {}
        for s in syllables:
            lo, hi = int(s.onset * SAMPLE_RATE), min(n_samples, int(np.ceil(s.offset * SAMPLE_RATE)) + 1)
            env = envelopes.setdefault(s.vowel, np.zeros(n_samples))
            env[lo:hi] += s.amplitude * s.shape(t[lo:hi])
        speech = np.zeros(n_samples)
        for vowel in sorted(envelopes):
            voiced = _formant_filter(source, [f * self.tract for f in VOWELS[vowel].formants])
            speech += envelopes[vowel] * voiced / _rms(voiced)
        speech = RMS_REF * speech + NOISE_STD * rng.standard_normal(n_samples)
        return np.clip(speech, -1.0, 1.0).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return max(float(np.sqrt(np.mean(np.square(x)))), 1e-12)


def _formant_filter(source: np.ndarray, formants: List[float]) -> np.ndarray:
    """Parallel two-pole resonators, each with unit gain at its formant, weighted by FORMANT_GAINS."""
    out = np.zeros_like(source)
    for freq, bandwidth, gain in zip(formants, FORMANT_BANDWIDTHS, FORMANT_GAINS):
        r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
        theta = 2 * np.pi * freq / SAMPLE_RATE
        # |H| at the peak is 1 / ((1 - r) |1 - r e^{-2j theta}|); b0 cancels it.
        b0 = (1 - r) * abs(1 - r * np.exp(-2j * theta))
        out += gain * signal.lfilter([b0], [1.0, -2 * r * np.cos(theta), r * r], source)
    return out


def _script(rng: np.random.Generator, seconds: float, rate: float) -> List[Syllable]:
    """Syllables filling `seconds`: 70% follow within a word (short gap), 30% after a pause."""
    syllables = []
    t = rng.uniform(0.05, 0.35)
    while True:
        vowel = VOWEL_NAMES[rng.integers(len(VOWEL_NAMES))]
        attack = rng.uniform(0.02, 0.05) * rate
        sustain = rng.uniform(0.04, 0.2) * rate
        decay = rng.uniform(0.04, 0.09) * rate
        amplitude = VOWELS[vowel].loudness * rng.uniform(0.6, 1.0)
        gap = (rng.uniform(0.02, 0.1) if rng.random() < 0.7 else rng.uniform(0.2, 0.6)) * rate
        if t + attack + sustain + decay > seconds:
            return syllables
        syllables.append(Syllable(vowel, float(t), float(attack), float(sustain), float(decay), float(amplitude)))
        t += attack + sustain + decay + gap


# ----------------------------------------------------------------------------------------------
# Talker


class Talker:
    """One identity: its look and voice, drawn once from `identity_seed`, and its frames."""

    def __init__(self, identity_seed: int):
        if identity_seed < 0:
            raise ValueError(f"identity_seed must be >= 0, got {identity_seed}")
        self.identity_seed = int(identity_seed)
        rng = np.random.default_rng(self.identity_seed)
        size = FRAME_SIZE
        y1, y2, x1, x2 = voxceleb2_box(size, size)
        self.box_h, self.box_w = y2 - y1, x2 - x1

        # Face geometry: the mouth sits at 76-80% of the crop's height, centred.
        rx = rng.uniform(0.34, 0.40) * self.box_w
        ry = rx * rng.uniform(1.2, 1.4)
        self.mouth_x = (x1 + x2) / 2
        self.mouth_y = y1 + rng.uniform(0.76, 0.80) * self.box_h
        cx, cy = self.mouth_x, self.mouth_y - 0.55 * ry
        skin = _jitter(rng, SKIN_TONES[rng.integers(len(SKIN_TONES))], 6)
        lip_gb = rng.uniform(0.4, 0.5), rng.uniform(0.5, 0.6)
        self.lip_rgb = np.clip(skin * np.array([0.85, *lip_gb], np.float32) + np.array([30, 0, 0], np.float32), 0, 255)
        self.upper_lip = rng.uniform(0.022, 0.032) * self.box_h
        self.lower_lip = rng.uniform(0.028, 0.040) * self.box_h
        hair = _jitter(rng, HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))], 8)
        style = HAIR_STYLES[rng.integers(len(HAIR_STYLES))]
        eye_colour = _jitter(rng, EYE_COLOURS[rng.integers(len(EYE_COLOURS))], 8)
        eye_dx = rng.uniform(0.33, 0.45) * rx
        clothes = _calm_colour(rng, (0.15, 0.7), (0.15, 0.85))
        self.background = _background(rng, size)

        f0 = float(np.exp(rng.uniform(np.log(90), np.log(220))))
        self.voice = Voice(
            f0=f0,
            vibrato_rate=rng.uniform(4.5, 6.5),
            vibrato_depth=rng.uniform(0.005, 0.02),
            tract=1 + 0.18 * (f0 - 90) / 130 + rng.uniform(-0.03, 0.03),
            tilt=rng.uniform(0.8, 1.3),
            breath=rng.uniform(0.02, 0.08),
            rate=rng.uniform(0.85, 1.15),
        )

        # The head without its mouth, premultiplied RGB + alpha, drawn once and shifted per frame.
        self._head_rgb = np.zeros((size, size, 3), np.float32)
        self._head_alpha = np.zeros((size, size, 1), np.float32)
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        dx, dy = (xs - cx) / rx, (ys - cy) / ry
        # Light from the upper left; the face darkens towards its rim.
        shading = np.clip(1.04 - 0.2 * dx**2 - 0.1 * dy**2 - 0.06 * (dx + dy), 0.6, 1.1)[..., None]
        shaded_skin = np.clip(skin * shading, 0, 255)
        paint = self._draw

        paint(clothes, _ellipse, (cx, size * 1.12), (rx * 1.7, size * 0.3))
        if style == "long":  # ends above the chin, beside the face: never next to the mouth
            paint(hair, _rect, (cx - rx * 1.12, cy - 0.2 * ry), (cx + rx * 1.12, cy + 0.3 * ry))
            paint(hair, _ellipse, (cx, cy - 0.15 * ry), (rx * 1.12, ry))
        paint(skin * 0.78, _rect, (cx - 0.5 * rx, cy + 0.5 * ry), (cx + 0.5 * rx, size + 1))  # neck, in shadow
        for side in (-1, 1):
            paint(skin * 0.88, _ellipse, (cx + side * rx * 0.97, cy - 0.05 * ry), (0.16 * rx, 0.27 * ry))  # ear
        paint(shaded_skin, _ellipse, (cx, cy), (rx, ry))
        if style in ("short", "long", "bun"):
            paint(hair, _ellipse, (cx, cy - 0.42 * ry), (rx * 1.05, ry * 0.62), 180, 360)
        if style == "curly":
            for angle in np.linspace(np.pi * 1.05, np.pi * 1.95, 9):
                curl = (cx + rx * np.cos(angle), cy - 0.3 * ry + 0.8 * ry * np.sin(angle))
                paint(hair, _ellipse, curl, (0.3 * rx, 0.3 * rx))
        if style == "bun":
            paint(hair, _ellipse, (cx, cy - 1.05 * ry), (0.35 * rx, 0.28 * rx))
        eye_y = cy - 0.12 * ry
        for side in (-1, 1):
            ex = cx + side * eye_dx
            brow_y, tilt = eye_y - 0.2 * ry, side * 0.01 * ry
            brow = np.clip(hair * 0.8, 0, 255)
            paint(brow, _line, (ex - 0.2 * rx, brow_y + tilt), (ex + 0.2 * rx, brow_y - tilt), max(2, int(0.06 * rx)))
            paint((245, 245, 240), _ellipse, (ex, eye_y), (0.17 * rx, 0.075 * ry))
            paint(eye_colour, _ellipse, (ex, eye_y), (0.07 * rx, 0.07 * rx))  # iris
            paint((15, 12, 12), _ellipse, (ex, eye_y), (0.032 * rx, 0.032 * rx))  # pupil
            paint(shaded_skin, _ellipse, (ex, eye_y - 0.09 * ry), (0.19 * rx, 0.05 * ry))  # upper lid
        nose_y = cy + 0.15 * ry
        paint(skin * 0.85, _line, (cx, eye_y + 0.08 * ry), (cx + 0.05 * rx, nose_y), 1)
        for side in (-1, 1):
            # Nostrils are shaded skin, not dark: only the mouth interior is dark near the mouth.
            paint(skin * 0.8, _ellipse, (cx + side * 0.09 * rx, nose_y), (0.06 * rx, 0.025 * ry))

    def _draw(self, colour, draw: Callable[..., None], *shape) -> None:
        """Draw `draw(mask, *shape)` in `colour` (RGB or a field) onto the head layer."""
        coverage = _coverage(FRAME_SIZE, lambda mask: draw(mask, *shape))
        _paint(self._head_rgb, self._head_alpha, coverage, colour)

    def speech(self, clip_seed: int, n_frames: int) -> Tuple[np.ndarray, ClipTargets]:
        """The audio of `n_frames` video frames of speech from `clip_seed`, and its lip targets."""
        rng = np.random.default_rng([int(clip_seed), 0])
        seconds = n_frames / FPS
        syllables = _script(rng, seconds, self.voice.rate)
        audio = self.voice.speak(syllables, n_frames * SAMPLES_PER_FRAME, rng)
        times = np.arange(n_frames) / FPS
        width = np.full(n_frames, REST_WIDTH)
        vowels = [""] * n_frames
        for s in syllables:
            shape = s.shape(times)
            width += shape * (VOWELS[s.vowel].width - REST_WIDTH)
            for k in np.flatnonzero(shape > 0):
                vowels[k] = s.vowel
        targets = ClipTargets(
            opening=implied_opening_from_audio(audio, n_frames, FPS, SAMPLE_RATE),
            width=np.clip(width, 0.0, 1.0),
            vowels=vowels,
            syllables=syllables,
            identity_seed=self.identity_seed,
            clip_seed=int(clip_seed),
        )
        return audio, targets

    def frames(self, clip_seed: int, targets: ClipTargets) -> Iterator[np.ndarray]:
        """The video frames (RGB uint8 [224, 224, 3]) of a clip with these lip targets."""
        rng = np.random.default_rng([int(clip_seed), 1])
        # Sway and bob: two slow sines each, a few pixels, independent of the speech.
        amps = rng.uniform(1.0, 2.5, 4)
        freqs = rng.uniform(0.1, 0.6, 4)
        phases = rng.uniform(0, 2 * np.pi, 4)
        for k, (opening, width) in enumerate(zip(targets.opening, targets.width)):
            wave = amps * np.sin(2 * np.pi * freqs * k / FPS + phases)
            yield self.frame(float(opening), float(width), (float(wave[0] + wave[1]), float(wave[2] + wave[3]) * 0.6))

    def frame(self, opening: float, width: float, offset: Tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """One frame: the head shifted by `offset` (dx, dy) px with its mouth at (opening, width)."""
        size = FRAME_SIZE
        shift = np.float32([[1, 0, offset[0]], [0, 1, offset[1]]])
        # Replicated borders: the neck and clothes continue below the frame as the head moves up.
        rgb, alpha = (
            cv2.warpAffine(layer, shift, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            for layer in (self._head_rgb, self._head_alpha)
        )
        alpha = alpha[..., None]  # warpAffine drops the single channel
        image = self.background * (1.0 - alpha) + rgb

        # The jaw drops as the mouth opens, so the centre moves down by a third of the opening.
        half_open = opening * OPENING_MAX_FRAC * self.box_h / 2
        half_width = (WIDTH_MIN_FRAC + width * (WIDTH_MAX_FRAC - WIDTH_MIN_FRAC)) * self.box_w / 2
        mx, my = self.mouth_x + offset[0], self.mouth_y + offset[1] + half_open / 3
        lip_half_width = half_width - _AA_FRINGE

        def lips(mask: np.ndarray) -> None:
            _ellipse(mask, (mx, my), (lip_half_width, half_open + self.upper_lip), 180, 360)
            _ellipse(mask, (mx, my), (lip_half_width, half_open + self.lower_lip), 0, 180)

        _over(image, _coverage(size, lips), self.lip_rgb)
        if half_open > 0:
            # The interior's coverage summed down a column is 2 * half_open: drawn shrunk by the
            # fringe, and below the smallest regular ellipse drawn at that size but fainter (a
            # barely parted mouth is a faint dark seam), so the opening is linear down to 0.
            half_height = max(half_open - _AA_FRINGE, _MIN_AXIS)
            interior = _coverage(size, lambda mask: _ellipse(mask, (mx, my), (0.8 * half_width, half_height)))
            strength = min(1.0, half_open / (half_height + _AA_FRINGE))
            _over(image, interior * strength, INTERIOR_RGB)
        return np.clip(np.round(image), 0, 255).astype(np.uint8)


def synthesize_clip(identity_seed: int, clip_seed: int, seconds: float) -> SyntheticClip:
    """Render a clip in memory: the exact frames and audio `render_clip` encodes."""
    talker = Talker(identity_seed)
    audio, targets = talker.speech(clip_seed, _frame_count(seconds))
    return SyntheticClip(np.stack(list(talker.frames(clip_seed, targets))), audio, targets)


def render_clip(path: PathLike, identity_seed: int, clip_seed: int, seconds: float) -> ClipTargets:
    """Write a clip to `path` (H.264 + AAC) and its targets to `targets.json` in the same folder
    (so give each clip its own folder, as the VoxCeleb2 layout does); returns the targets.
    Frames are rendered as they are encoded, so memory does not grow with `seconds`."""
    talker = Talker(identity_seed)
    audio, targets = talker.speech(clip_seed, _frame_count(seconds))
    with VideoWriter(path, fps=FPS, audio=audio, sample_rate=SAMPLE_RATE) as writer:
        for frame in talker.frames(clip_seed, targets):
            writer.write(frame)
    atomic_write_json(targets_path(path), targets.to_json(), indent=None)  # readers never see half a file
    return targets


def _frame_count(seconds: float) -> int:
    n_frames = int(round(seconds * FPS))
    if n_frames < 1:
        raise ValueError(f"seconds must give at least one frame at {FPS} fps, got {seconds}")
    return n_frames


# ----------------------------------------------------------------------------------------------
# Data set


@dataclasses.dataclass(frozen=True)
class Splits:
    """The clip names and "AUDIO VIDEO" pairs `render_dataset` wrote to the four filelists."""

    train: List[str]
    test: List[str]
    test_reconstruction: List[Tuple[str, str]]
    test_cross: List[Tuple[str, str]]


def _derived_seed(*key: int) -> int:
    """A seed per (data set seed, role, index...): independent streams, stable across versions."""
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0])


def clip_name(identity: int, clip: int) -> str:
    """The clip name (video path under the root, no extension) in the VoxCeleb2 layout."""
    return f"id{identity:05d}/clip{clip:02d}/{VIDEO_NAME}"


def render_dataset(
    out_root: str,
    identities: int,
    clips_per_identity: int,
    seconds: float,
    test_identities: int = 2,
    seed: int = 0,
    progress: bool = False,
    test_only: bool = False,
) -> Splits:
    """Render `identities` x `clips_per_identity` clips under `out_root` and write the filelists
    (see the module docstring). The last `test_identities` identities are held out for testing;
    `test_only` renders just those (the same faces and voices as in a full render with these
    settings, so a model trained on the full render's train.txt has never seen them) and writes an
    empty train.txt. Raises Diff2LipError on impossible settings. Rendering again overwrites, with
    the same result.
    """
    if not out_root:
        raise Diff2LipError("--out_root is required: the folder to write the clips and filelists to")
    if not 3 <= identities <= 99999:
        raise Diff2LipError(f"--identities {identities} must be 3..99999 (train identities and two test ones)")
    if not 2 <= test_identities < identities:
        raise Diff2LipError(
            f"--test_identities {test_identities} must be at least 2 (cross pairs need another test "
            f"identity) and below --identities {identities} (training needs one)"
        )
    if not 1 <= clips_per_identity <= 99:
        raise Diff2LipError(f"--clips_per_identity {clips_per_identity} must be 1..99")
    if not 0.5 <= seconds <= 600:
        raise Diff2LipError(f"--seconds {seconds} must be 0.5..600: clips need a few syllables")
    if seed < 0:
        raise Diff2LipError(f"--seed {seed} must be >= 0")

    first_test = identities - test_identities
    jobs = [(i, c) for i in range(first_test if test_only else 0, identities) for c in range(clips_per_identity)]
    for i, c in track(jobs, len(jobs), "rendering", "clip", progress):
        folder = os.path.join(out_root, *clip_name(i, c).split("/")[:-1])
        os.makedirs(folder, exist_ok=True)
        video = os.path.join(folder, f"{VIDEO_NAME}.mp4")
        render_clip(video, _derived_seed(seed, 0, i), _derived_seed(seed, 1, i, c), seconds)

    train = [clip_name(i, c) for i, c in jobs if i < first_test]
    test = [clip_name(i, c) for i, c in jobs if i >= first_test]
    # Cross: each test clip's audio drives a random clip of a random other test identity.
    rng = np.random.default_rng(_derived_seed(seed, 2))
    cross = []
    for i, c in jobs:
        if i >= first_test:
            other = first_test + (i - first_test + 1 + int(rng.integers(test_identities - 1))) % test_identities
            cross.append((clip_name(i, c), clip_name(other, int(rng.integers(clips_per_identity)))))
    splits = Splits(train, test, [(name, name) for name in test], cross)
    _write_lines(os.path.join(out_root, "train.txt"), splits.train)
    _write_lines(os.path.join(out_root, "test.txt"), splits.test)
    _write_lines(os.path.join(out_root, "test_reconstruction.txt"), [" ".join(p) for p in splits.test_reconstruction])
    _write_lines(os.path.join(out_root, "test_cross.txt"), [" ".join(p) for p in splits.test_cross])
    return splits


def render_speaker(out_dir: str, identity: int, clips: Sequence[int], seconds: float, seed: int = 0) -> List[str]:
    """Clips of one speaker: clip c of identity `identity` of the data set `seed` for each c in
    `clips`, the face and voice as `render_dataset` draws them with that seed (the speech of each
    clip its own), written as `out_dir`/clipNN/clipNN.mp4 with its targets.json; returns the
    video paths. For one-speaker fine-tuning: a data set's held-out speaker, more of their video."""
    paths = []
    for c in clips:
        folder = os.path.join(out_dir, f"clip{c:02d}")
        os.makedirs(folder, exist_ok=True)
        render_clip(os.path.join(folder, f"clip{c:02d}.mp4"), _derived_seed(seed, 0, identity),
                    _derived_seed(seed, 1, identity, c), seconds)
        paths.append(os.path.join(folder, f"clip{c:02d}.mp4"))
    return paths


def _write_lines(path: str, lines: List[str]) -> None:
    atomic_write_text(path, "".join(f"{line}\n" for line in lines))


def synthetic_defaults() -> dict:
    """Flags of `dataset/synthetic.py` and their defaults."""
    return SYNTHETIC_OPTIONS.defaults()


SYNTHETIC_OPTIONS = Options(
    Option("out_root", "", "folder to write idNNNNN/clipNN/00001.mp4 (+ targets.json) and the four filelists to"),
    Option("identities", 8, "number of drawn identities (each its own face, background and voice)"),
    Option("clips_per_identity", 2, "clips per identity"),
    Option("seconds", 3.0, "length of each clip in seconds"),
    Option("test_identities", 2, "identities held out (the last ones) for test.txt, test_reconstruction.txt and test_cross.txt"),
    Option("seed", 0, "seed of the whole data set: the same seed renders the same frames and audio"),
    Option("test_only", False, "render only the held-out test identities (the same ones a full render holds out) and their "
        "filelists; train.txt is empty"),
    PROGRESS,
)


def main(argv: Optional[List[str]] = None) -> int:
    try:
        args = create_argparser(SYNTHETIC_OPTIONS, description=__doc__).parse_args(argv)
        splits = render_dataset(
            args.out_root,
            args.identities,
            args.clips_per_identity,
            args.seconds,
            args.test_identities,
            args.seed,
            args.progress,
            args.test_only,
        )
    except Diff2LipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {len(splits.train) + len(splits.test)} clips to {args.out_root}: "
        f"{len(splits.train)} train, {len(splits.test)} test ({args.test_identities} held-out identities)"
    )
    return 0


# ----------------------------------------------------------------------------------------------
# Simple stand-ins for unit tests and benchmarks (any frame size; no lip-sync relation).


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


if __name__ == "__main__":
    sys.exit(main())
