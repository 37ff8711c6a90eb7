"""Cost of the training data path on this machine, one core (OMP_NUM_THREADS=1, one process).

  1. preprocessing: real H.264 + AAC talking-head videos (224 px, drawn faces, speech-like audio;
     VoxCeleb2 layout) through dataset/preprocess.py with the fixed VoxCeleb2 crop, and with the
     S3FD detector when its weights are there (python -m scripts.fetch_weights s3fd);
  2. the two formats of the result: files and bytes per hour of video, frame folders against
     WebDataset shards (python -m dataset.shards convert, the default 500 MB shard size);
  3. the loader: TFGDataset samples (5 frames + 5 references at 128 px, mel windows; JPEG decode
     included) per second, from folders and from shards, the keys train.py's StepSampler draws;
  4. loader cores per training process: the assumed GPU step rate (--gpu_samples_per_s) over the
     measured shard loader rate.

    OMP_NUM_THREADS=1 python benchmarks/bench_data.py [--clips 12] [--seconds 4] [--samples 400]

Ends with one name=value line per figure.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

# An assumption, not a measurement (no GPU here): the released network (128 px, 5-frame sequences,
# all five losses) at bf16 on one A100/H100. guided-diffusion's 128 px UNets train at roughly
# 250-300 images/s on an A100; a sequence is 5 images plus the loss networks, so about 50.
GPU_SAMPLES_PER_S = 50.0
HOUR = 3600.0


def render_tree(root: str, clips: int, seconds: float) -> float:
    """`clips` videos under root/idNNNNN/vid/00001.mp4; returns their total duration in seconds."""
    from dataset.synthetic import draw_face, speech_like
    from dataset.video_io import VideoWriter

    frames = int(seconds * 25)
    for c in range(clips):
        folder = os.path.join(root, f"id{c:05d}", "vid")
        os.makedirs(folder)
        with VideoWriter(os.path.join(folder, "00001.mp4"), fps=25, audio=speech_like(seconds, seed=c), sample_rate=16000) as w:
            for i in range(frames):
                w.write(draw_face(i, 224, 224, c))
    return clips * frames / 25


def time_preprocess(videos: str, out: str, *flags: str) -> float:
    from dataset import preprocess

    start = time.perf_counter()
    code = preprocess.main(["--input_root", videos, "--output_root", out, "--progress", "False", *flags])
    if code != 0:
        raise RuntimeError(f"preprocessing failed (exit {code}; the error line above says why)")
    return time.perf_counter() - start


def tree_size(root: str):
    """(files, bytes) under root: apparent sizes, the folder format's most favourable count."""
    files = size = 0
    for folder, _, names in os.walk(root):
        for n in names:
            files += 1
            size += os.path.getsize(os.path.join(folder, n))
    return files, size


def loader_rate(root: str, samples: int) -> float:
    """TFGDataset samples per second (one process, one thread), StepSampler's keys."""
    from dataset.tfg_dataset import StepSampler, TFGDataset

    dataset = TFGDataset(root, "train", 5)
    batches = iter(StepSampler(len(dataset), 1, seed=0))
    keys = [next(batches)[0] for _ in range(samples)]
    dataset[keys[0]]  # opens files, reads a shard's headers once
    start = time.perf_counter()
    for key in keys:
        dataset[key]
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each video")
    parser.add_argument("--samples", type=int, default=400, help="loader samples timed per format")
    parser.add_argument("--gpu_samples_per_s", type=float, default=GPU_SAMPLES_PER_S,
                        help="assumed training samples per second of one GPU (see the comment in the file)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from dataset import shards
    from face_detection.detector import S3FD_FILENAME

    work = tempfile.mkdtemp(prefix="bench_data_")
    try:
        videos, folders, shard_root = (os.path.join(work, d) for d in ("videos", "folders", "shards"))
        duration = render_tree(videos, args.clips, args.seconds)
        crop_s = time_preprocess(videos, folders, "--is_voxceleb2", "True", "--val_fraction", "0")
        print(f"# preprocessing, fixed VoxCeleb2 crop: {args.clips} clips of {args.seconds} s in {crop_s:.1f} s")
        detector = float("nan")
        try:
            det_s = time_preprocess(videos, os.path.join(work, "detected"), "--is_voxceleb2", "False",
                                    "--device", "cpu", "--val_fraction", "0")
            detector = args.clips / det_s
        except Exception as exc:  # no S3FD weights here: say so, do not guess the figure
            print(f"# S3FD not measured ({S3FD_FILENAME} missing? python -m scripts.fetch_weights s3fd): "
                  f"{' '.join(str(exc).split())[:160]}")

        shards.main(["convert", "--input", folders, "--output", shard_root])
        folder_files, folder_bytes = tree_size(os.path.join(folders, "clips"))
        shard_files, shard_bytes = tree_size(os.path.join(shard_root, "shards"))
        shard_files += 1  # manifest.json
        print(f"# formats: folders {folder_files} files {folder_bytes / 1e6:.2f} MB; shards {shard_files} files "
              f"{shard_bytes / 1e6:.2f} MB ({args.clips} clips, {duration:.0f} s of video)")

        folder_rate = loader_rate(folders, args.samples)
        shard_rate = loader_rate(shard_root, args.samples)
        print(f"# loader: folders {folder_rate:.1f} samples/s, shards {shard_rate:.1f} samples/s, one core; "
              f"assumed GPU rate {args.gpu_samples_per_s:g} samples/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    per_hour = HOUR / duration
    figures = {
        "preprocess_crop_clips_per_s_per_core": args.clips / crop_s,
        "preprocess_crop_video_s_per_s_per_core": duration / crop_s,
        "preprocess_detector_clips_per_s_per_core": detector,
        "folders_files_per_hour": folder_files * per_hour,
        "shards_files_per_hour": shard_files * per_hour,
        "shards_files_per_100_clips": shard_files * 100 / args.clips,
        # At full scale the files follow the bytes: a 500 MB shard and its record per 500 MB of clips.
        "shards_files_per_100_clips_at_500mb": 2 * 100 * (shard_bytes / args.clips) / 500e6,
        "folders_bytes_per_hour": folder_bytes * per_hour,
        "shards_bytes_per_hour": shard_bytes * per_hour,
        "shards_over_folders_bytes": shard_bytes / folder_bytes,
        "loader_folders_samples_per_s_per_core": folder_rate,
        "loader_shards_samples_per_s_per_core": shard_rate,
        "loader_shards_over_folders": shard_rate / folder_rate,
        "assumed_gpu_samples_per_s": args.gpu_samples_per_s,
        "loader_cores_per_training_process": args.gpu_samples_per_s / shard_rate,
    }
    for name, value in figures.items():
        print(f"{name}={value:.4g}")


if __name__ == "__main__":
    main()
