"""Speed of the evaluation metrics on rendered clips, and what batching the feature extraction buys.

On rendered 224x224 VoxCeleb2-style clips (2 s, 25 fps) with random weights in the real formats
(nothing is downloaded; the cost is that of the trained networks): clips per second for FID
features (pytorch-fid's Inception), SSIM + PSNR, and LSE (syncnet_python's network on the
VoxCeleb2 face track); and, for the batched extractors (Inception, SyncNet), the per-frame cost
at batch 32 against batch 1 in the same run (target <= 0.5).

    python benchmarks/bench_eval.py [--clips 3]
"""

import argparse
import os
import sys
import time

import numpy as np
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)


def random_inception():
    """pytorch-fid's FID Inception (its own architecture) with random weights: its weight download
    is answered with the freshly built network's state (nothing is fetched; the cost is the same)."""
    import pytorch_fid.inception as inception

    built = []
    build = inception._inception_v3

    def build_and_keep(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    saved = inception._inception_v3, inception.load_state_dict_from_url
    inception._inception_v3 = build_and_keep
    inception.load_state_dict_from_url = lambda *args, **kwargs: built[-1].state_dict()
    try:
        torch.manual_seed(0)
        return inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    finally:
        inception._inception_v3, inception.load_state_dict_from_url = saved


def random_syncnet(path: str) -> None:
    """syncnet_v2.model in its real format (names and shapes from the manifest), random values."""
    from evaluation.syncnet_eval import SyncNetEval

    torch.manual_seed(0)
    net = SyncNetEval()
    torch.save(net.state_dict(), path)


def per_frame_seconds(fn, frames, batch: int, repeats: int = 2) -> float:
    fn(frames[:batch])
    start = time.perf_counter()
    for _ in range(repeats):
        for i in range(0, len(frames), batch):
            fn(frames[i : i + batch])
    return (time.perf_counter() - start) / (repeats * len(frames))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=3, help="rendered clips per metric (default 3)")
    parser.add_argument("--workdir", default=os.path.join(REPO_ROOT, "outputs", "bench_eval"), help="rendered clips go here")
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)

    from dataset.synthetic import draw_face, speech_like
    from dataset.video_io import VideoWriter, iter_frames
    from evaluation.fid import FIDFeatures
    from evaluation.image_metrics import psnr_batch, ssim_batch
    from evaluation.lse import LSEScorer

    clips = []
    for c in range(args.clips):
        path = os.path.join(args.workdir, f"clip{c}.mp4")
        if not os.path.exists(path):
            with VideoWriter(path, fps=25, audio=speech_like(2.0, seed=c), sample_rate=16000) as writer:
                for i in range(50):
                    writer.write(draw_face(i, 224, 224, seed=c))
        clips.append(path)
    frames = [np.stack(list(iter_frames(p, 25))) for p in clips]
    figures = {}

    fid = FIDFeatures(batch_size=32, model=random_inception())
    start = time.perf_counter()
    for f in frames:
        fid.features(f)
        fid.features(f)  # generated and real
    figures["fid_clips_per_s"] = len(clips) / (time.perf_counter() - start)

    start = time.perf_counter()
    for f in frames:
        ssim_batch(f, f[::-1].copy())
        psnr_batch(f, f[::-1].copy())
    figures["ssim_psnr_clips_per_s"] = len(clips) / (time.perf_counter() - start)

    weights = os.path.join(args.workdir, "syncnet_v2_random.model")
    if not os.path.exists(weights):
        random_syncnet(weights)
    scorer = LSEScorer(weights, face_track="voxceleb2", batch_size=32)
    start = time.perf_counter()
    for path in clips:
        scorer.score(path)
    figures["lse_clips_per_s"] = len(clips) / (time.perf_counter() - start)

    sample = frames[0][:32]
    b1 = per_frame_seconds(lambda x: FIDFeatures(batch_size=len(x), model=fid.model).features(x), sample, 1)
    b32 = per_frame_seconds(lambda x: FIDFeatures(batch_size=len(x), model=fid.model).features(x), sample, 32)
    figures["fid_batch32_vs_batch1"] = b32 / b1

    lips = torch.rand(36, 3, 5, 224, 224) * 255
    with torch.no_grad():
        l1 = per_frame_seconds(lambda x: scorer.net.forward_lip(x), lips, 1)
        l32 = per_frame_seconds(lambda x: scorer.net.forward_lip(x), lips, 32)
    figures["syncnet_batch32_vs_batch1"] = l32 / l1

    print(f"{len(clips)} rendered clips of 50 frames (224x224), {torch.get_num_threads()} threads")
    print(f"FID features {figures['fid_clips_per_s']:.2f} clips/s, SSIM+PSNR {figures['ssim_psnr_clips_per_s']:.1f} clips/s, "
          f"LSE {figures['lse_clips_per_s']:.2f} clips/s")
    print(f"per-frame cost at batch 32 / batch 1: Inception {b32 / b1:.2f} ({b1 * 1000:.0f} -> {b32 * 1000:.0f} ms), "
          f"SyncNet lips {l32 / l1:.2f} ({l1 * 1000:.0f} -> {l32 * 1000:.0f} ms) (target <= 0.5)")
    for name, value in figures.items():
        print(f"{name}={value:.4g}")


if __name__ == "__main__":
    main()
