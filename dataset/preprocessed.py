"""The on-disk format of preprocessed training data, read and written in one place.

    ROOT/
      train.txt, val.txt        one clip name per line (a relative path such as id00012/abc/00001)
      report.json               what preprocessing skipped, and why
      clips/NAME/
        00000.jpg ...           face crops, image_size x image_size, one per 25 fps video frame
        audio.wav               16 kHz mono, 16-bit PCM
        mel.npy                 Wav2Lip's mel of audio.wav, float32 [80, T]
        meta.json               {"n_frames", "image_size", "fps", "source", "n_missing_faces"}

A clip has `n_frames` = min(video frames, full mel windows), so every frame has its mel window.
A clip folder is written under a temporary name and renamed when complete, so a folder under
`clips/` is always whole; preprocessing skips the ones that exist.
"""

import json
import logging
import os
import shutil
import uuid
from typing import Iterable, List

import cv2
import numpy as np

from audio.audio import save_wav
from common.errors import Diff2LipError
from common.files import atomic_write_text, reporting_full_disk

FRAME_NAME = "{:05d}.jpg"
JPEG_QUALITY = 95
CLIPS = "clips"

log = logging.getLogger(__name__)


def clip_dir(root: str, name: str) -> str:
    """`root/clips/name`, refusing names that would leave `root/clips`."""
    base = os.path.realpath(os.path.join(root, CLIPS))
    path = os.path.realpath(os.path.join(base, name))
    if os.path.commonpath([base, path]) != base or path == base:
        raise Diff2LipError(f"clip name '{name}' escapes '{base}'; fix the filelist line")
    return path


def read_split(root: str, split: str) -> List[str]:
    """Clip names of `root/{split}.txt`."""
    path = os.path.join(root, f"{split}.txt")
    if not os.path.isfile(path):
        raise Diff2LipError(f"'{path}' not found; run dataset/preprocess.py on your videos first (see README)")
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def write_split(root: str, split: str, names: Iterable[str]) -> None:
    atomic_write_text(os.path.join(root, f"{split}.txt"), "".join(f"{n}\n" for n in names))


def write_clip(root: str, name: str, faces: Iterable[np.ndarray], wav: np.ndarray, mel: np.ndarray, meta: dict) -> int:
    """Write one clip atomically: the folder appears only when complete. Returns the frame count.

    :param faces: RGB uint8 `[S, S, 3]` crops, in frame order.
    """
    final = clip_dir(root, name)
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(final)}.{uuid.uuid4().hex}.tmp")
    os.makedirs(tmp)
    try:
        count = 0
        with reporting_full_disk(parent):
            for face in faces:
                # Encoded here and written by Python: cv2.imwrite answers a full disk with a bare
                # False, which would leave a clip with frames missing.
                ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(face, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if not ok:
                    raise Diff2LipError(f"clip '{name}': face crop {count} could not be encoded as JPEG")
                with open(os.path.join(tmp, FRAME_NAME.format(count)), "wb") as f:
                    f.write(jpeg.tobytes())
                count += 1
            save_wav(wav, os.path.join(tmp, "audio.wav"), 16000)
            np.save(os.path.join(tmp, "mel.npy"), mel.astype(np.float32))
            with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
                json.dump(dict(meta, n_frames=count), f)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        return count
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def open_clips(root: str, names: Iterable[str]) -> List["Clip"]:
    """The clips of `names` that open (meta.json and mel.npy readable); each broken one is
    reported as a warning and left out, so one bad folder does not end a training run."""
    clips = []
    for name in names:
        try:
            clips.append(Clip(root, name))
        except Diff2LipError as exc:
            log.warning("skipping broken clip '%s': %s", name, exc)
    return clips


class Clip:
    """A preprocessed clip: its face crops by index and its mel."""

    def __init__(self, root: str, name: str):
        self.name = name
        self.folder = clip_dir(root, name)
        try:
            with open(os.path.join(self.folder, "meta.json"), encoding="utf-8") as f:
                self.meta = json.load(f)
            self.n_frames: int = int(self.meta["n_frames"])
            self.image_size: int = int(self.meta["image_size"])
        except (OSError, ValueError, TypeError) as exc:
            raise Diff2LipError(f"clip '{self.folder}' is incomplete ({exc}); preprocess it again") from exc
        except KeyError as exc:
            raise Diff2LipError(f"clip '{self.folder}' is incomplete (meta.json has no {exc}); preprocess it again") from exc
        self._mel = None
        # The mel's header now, so that a clip without it is found when the clip list is made,
        # not in a training step.
        self.mel_steps: int = self._load_mel(mmap_mode="r").shape[1]

    def _load_mel(self, mmap_mode=None) -> np.ndarray:
        path = os.path.join(self.folder, "mel.npy")
        try:
            mel = np.load(path, mmap_mode=mmap_mode)
        except (OSError, ValueError, EOFError) as exc:
            raise Diff2LipError(f"clip '{self.folder}': mel.npy is missing or unreadable ({exc}); preprocess it again") from exc
        if mel.ndim != 2 or mel.shape[0] != 80 or mel.dtype != np.float32:
            raise Diff2LipError(f"clip '{self.folder}': mel.npy is {mel.dtype} {list(mel.shape)}, not float32 [80, T]; "
                                "preprocess it again")
        if mmap_mode is None and not np.isfinite(mel).all():  # a NaN would make every loss of its samples NaN
            raise Diff2LipError(f"clip '{self.folder}': mel.npy holds NaN or inf; preprocess it again")
        return mel

    @property
    def mel(self) -> np.ndarray:
        """Wav2Lip mel `[80, T]` float32 (80 steps per second)."""
        if self._mel is None:
            self._mel = self._load_mel()
        return self._mel

    def faces(self, indices: Iterable[int]) -> np.ndarray:
        """Face crops `[len, S, S, 3]` uint8 RGB."""
        out = []
        for i in indices:
            path = os.path.join(self.folder, FRAME_NAME.format(int(i)))
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            if image is None:
                raise Diff2LipError(f"face crop '{path}' is missing or unreadable; preprocess the clip again")
            if image.shape != (self.image_size, self.image_size, 3):
                raise Diff2LipError(f"face crop '{path}' is {image.shape[1]}x{image.shape[0]}, not the clip's "
                                    f"{self.image_size}x{self.image_size}; preprocess the clip again")
            out.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        return np.stack(out)
