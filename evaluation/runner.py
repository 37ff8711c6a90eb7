"""Evaluate a generated folder against the real videos: per-clip metrics, a feature cache that
makes an interrupted run resume, and the summary in the layout of the paper's Table 2.

Which frames are compared (frame k with frame k, up to the shorter clip):
- reconstruction: generated vs the real video of the same clip (its ground truth);
- cross: FID against the video source's real frames (no ground truth exists); LMD against the
  audio source's real frames (the mouth the audio belongs to); SSIM / PSNR are not defined.
FID pools the Inception features of all frames of all clips; SSIM, PSNR and LMD are means over
frames of a clip, then over clips; LSE-C / LSE-D are syncnet_python's scores of each generated
clip with its own audio, averaged over clips.
"""

import os
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from common.errors import Diff2LipError
from common.files import atomic_write, atomic_write_json, atomic_write_text
from dataset.video_io import iter_frames
from face_detection import voxceleb2_box
from inference.filelist import FilelistItem, output_name, resolve_media, safe_output_path

METRICS = ("fid", "ssim", "psnr", "lmd", "lse")
RECONSTRUCTION_ONLY = ("ssim", "psnr")

# The paper's Table 2 (VoxCeleb2), for the printed comparison.
PAPER_ROWS = {
    "reconstruction": {
        "Wav2Lip": dict(fid=3.26, ssim=0.53, psnr=18.18, lmd=3.16, lse_c=9.08, lse_d=5.93),
        "PC-AVS": dict(fid=4.25, ssim=0.53, psnr=18.26, lmd=3.16, lse_c=6.71, lse_d=7.80),
        "Diff2Lip": dict(fid=2.46, ssim=0.53, psnr=18.09, lmd=3.04, lse_c=8.78, lse_d=5.93),
    },
    "cross": {
        "Wav2Lip": dict(fid=5.11, lmd=4.84, lse_c=8.12, lse_d=6.74),
        "PC-AVS": dict(fid=10.62, lmd=5.00, lse_c=6.96, lse_d=7.53),
        "Diff2Lip": dict(fid=4.53, lmd=4.82, lse_c=7.62, lse_d=6.73),
    },
}
COLUMNS = {
    "reconstruction": [("fid", "FID"), ("ssim", "SSIM"), ("psnr", "PSNR"), ("lmd", "LMD"), ("lse_c", "Sync_c"), ("lse_d", "Sync_d")],
    "cross": [("fid", "FID"), ("lmd", "LMD"), ("lse_c", "Sync_c"), ("lse_d", "Sync_d")],
}


@dataclass
class ClipPaths:
    name: str  # the generated file's name without .mp4: the clip's key in caches and tables
    generated: str
    real: str  # FID reference (and SSIM/PSNR ground truth in reconstruction)
    lmd_reference: str  # whose mouth the generated one should have


def clip_paths(item: FilelistItem, mode: str, real_root: str, generated_root: str) -> ClipPaths:
    generated = safe_output_path(generated_root, output_name(item.audio_rel, item.video_rel))
    video = resolve_media(real_root, item.video_rel, "--real_root")
    audio_source = resolve_media(real_root, item.audio_rel, "--real_root")
    return ClipPaths(
        name=os.path.basename(generated)[: -len(".mp4")],
        generated=generated,
        real=video,
        lmd_reference=video if mode == "reconstruction" else audio_source,
    )


class Metrics:
    """The networks of the requested metrics, loaded once; `clip(paths)` computes one clip's cache."""

    def __init__(self, metrics: List[str], mode: str, device: str, batch_size: int, syncnet_model: str,
                 face_track: str, is_voxceleb2: bool):
        self.metrics = [m for m in metrics if not (mode == "cross" and m in RECONSTRUCTION_ONLY)]
        self.mode = mode
        self.is_voxceleb2 = is_voxceleb2
        self.device = device
        if "fid" in self.metrics:
            from .fid import FIDFeatures

            self.fid = FIDFeatures(device=device, batch_size=batch_size)
        if "lmd" in self.metrics:
            from .lmd import MouthLandmarks

            self.landmarks = MouthLandmarks(device=device)
        if "lse" in self.metrics:
            from .lse import LSEScorer

            self.lse = LSEScorer(syncnet_model, device=device, face_track=face_track)
        self.batch_size = batch_size

    def _boxes(self, path: str, n: int) -> Optional[List]:
        """The face boxes for mouth crops and landmarks: the VoxCeleb2 crop, or None (detect)."""
        if not self.is_voxceleb2:
            return None
        first = next(iter_frames(path, 25, 0, 1))
        return [voxceleb2_box(*first.shape[:2])] * n

    def clip(self, paths: ClipPaths) -> Dict[str, np.ndarray]:
        """Everything the summary needs from one clip (arrays, so it caches as one .npz)."""
        from .fid import mouth_region

        if not os.path.isfile(paths.generated):
            raise Diff2LipError(f"generated clip '{paths.generated}' not found; run generate.py on the filelist first")
        out: Dict[str, np.ndarray] = {}
        gen = list(iter_frames(paths.generated, 25))
        real = list(iter_frames(paths.real, 25))
        per_pixel = [m for m in self.metrics if m in ("ssim", "psnr", "lmd")]
        if per_pixel and gen[0].shape != real[0].shape:
            # Frame k against frame k, pixel for pixel (and mouth landmarks in pixels): sizes must agree.
            (gh, gw), (rh, rw) = gen[0].shape[:2], real[0].shape[:2]
            raise Diff2LipError(
                f"generated clip '{paths.generated}' is {gw}x{gh} but the real clip '{paths.real}' is {rw}x{rh}; "
                f"{', '.join(per_pixel)} compare same-size frames: generate from these real videos, or use --metrics fid,lse"
            )
        n = min(len(gen), len(real))
        out["n_frames"] = np.array(n)
        if "fid" in self.metrics:
            box = voxceleb2_box(*real[0].shape[:2]) if self.is_voxceleb2 else None
            out["fid_gen"] = self.fid.features(gen).astype(np.float16)
            out["fid_real"] = self.fid.features(real).astype(np.float16)
            out["fid_mouth_gen"] = self.fid.features(mouth_region(f, box) for f in gen).astype(np.float16)
            out["fid_mouth_real"] = self.fid.features(mouth_region(f, box) for f in real).astype(np.float16)
        if "ssim" in self.metrics or "psnr" in self.metrics:
            from .image_metrics import psnr_batch, ssim_batch

            values = {"ssim": [], "psnr": []}
            for i in range(0, n, self.batch_size):
                stop = min(i + self.batch_size, n)
                a, b = np.stack(gen[i:stop]), np.stack(real[i:stop])
                values["ssim"].append(ssim_batch(a, b, self.device).cpu().numpy())
                values["psnr"].append(psnr_batch(a, b, self.device).cpu().numpy())
            for key in ("ssim", "psnr"):
                if key in self.metrics:
                    out[key] = np.array(float(np.mean(np.concatenate(values[key]))))
        del real
        if "lmd" in self.metrics:
            from .lmd import lmd_of_frames

            reference = list(iter_frames(paths.lmd_reference, 25))
            m = min(n, len(reference))
            out["lmd"] = np.array(lmd_of_frames(gen[:m], reference[:m], self.landmarks, self._boxes(paths.lmd_reference, m)))
        if "lse" in self.metrics:
            scores = self.lse.score(paths.generated)
            out["lse_c"] = np.array(scores["lse_c"])
            out["lse_d"] = np.array(scores["lse_d"])
            out["offset"] = np.array(scores["offset"])
        return out


def cache_path(output_dir: str, name: str) -> str:
    return os.path.join(output_dir, "cache", f"{name}.npz")


def save_cache(path: str, values: Dict[str, np.ndarray]) -> None:
    """Write atomically: a cache file is either complete or absent."""
    os.makedirs(os.path.dirname(path), exist_ok=True)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object, so that savez does not append .npz to the name
            np.savez(f, **values)

    atomic_write(path, write)


def summarise(caches: Dict[str, Dict[str, np.ndarray]], mode: str, metrics: List[str]) -> Dict[str, float]:
    """The run's row: pooled FID, clip means of the rest."""
    summary: Dict[str, float] = {"clips": float(len(caches))}
    if not caches:
        return summary
    values = list(caches.values())
    if "fid" in metrics:
        from .fid import fid_from_features

        def pooled(key):
            return np.concatenate([v[key].astype(np.float64) for v in values])

        summary["fid"] = fid_from_features(pooled("fid_gen"), pooled("fid_real"))
        summary["fid_mouth"] = fid_from_features(pooled("fid_mouth_gen"), pooled("fid_mouth_real"))
    for key in ("ssim", "psnr", "lmd", "lse_c", "lse_d"):
        present = [float(v[key]) for v in values if key in v]
        if present:
            summary[key] = float(np.mean(present))
    return summary


def table(summary: Dict[str, float], mode: str, run_name: str = "this run") -> str:
    """The summary beside the paper's rows, in the layout of Table 2."""
    cols = COLUMNS[mode]
    header = f"| {mode} | " + " | ".join(label for _, label in cols) + " |"
    rows = [header, "|" + "---|" * (len(cols) + 1)]
    for method, figures in PAPER_ROWS[mode].items():
        rows.append(f"| {method} (paper) | " + " | ".join(f"{figures[k]:.2f}" for k, _ in cols) + " |")
    rows.append(f"| {run_name} | " + " | ".join(f"{summary[k]:.2f}" if k in summary else "-" for k, _ in cols) + " |")
    return "\n".join(rows)


def per_clip_rows(caches: Dict[str, Dict[str, np.ndarray]]) -> List[Dict[str, float]]:
    rows = []
    for name, values in sorted(caches.items()):
        row = {"clip": name, "frames": int(values["n_frames"])}
        for key in ("ssim", "psnr", "lmd", "lse_c", "lse_d", "offset"):
            if key in values:
                row[key] = float(values[key])
        rows.append(row)
    return rows


def write_outputs(output_dir: str, rows: List[dict], summary: Dict[str, float], text: str) -> None:
    """per_clip.csv / .json, summary.json and table.md, each written atomically."""
    import csv
    import io

    os.makedirs(output_dir, exist_ok=True)
    keys = sorted({k for row in rows for k in row}, key=lambda k: (k != "clip", k))
    table_csv = io.StringIO(newline="")
    writer = csv.DictWriter(table_csv, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(os.path.join(output_dir, "per_clip.csv"), table_csv.getvalue())
    atomic_write_json(os.path.join(output_dir, "per_clip.json"), rows)
    atomic_write_json(os.path.join(output_dir, "summary.json"), summary)
    atomic_write_text(os.path.join(output_dir, "table.md"), text + "\n")
