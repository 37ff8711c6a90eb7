"""Quality of the fast samplers on the synthetic benchmark, with the real commands.

For one trained demo network (the committed x0 network, or the released parameterization:
predicted noise with learned sigma), render the demo's held-out talking heads once, then run
generate.py (through `synthetic_demo.evaluate_checkpoint`) with DDIM-25 and with each fast sampler and
report, per sampler: network passes, the mouth-region PSNR of the cross clips against
the DDIM-25 clips (the lower half of the face box, where the network paints), the lip-sync score,
the wrong-audio control and the reconstruction PSNR / SSIM. The last lines are `name=value`.

    python benchmarks/bench_sampling_quality.py --parameterization eps [--samplers ddim25,dpm2m_8,...]
    python benchmarks/bench_sampling_quality.py --parameterization eps --quick_frames 32 --samplers all
"""

import argparse
import json
import os
import sys
from typing import Dict, Iterable, List

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.files import atomic_write_json  # noqa: E402
from dataset.video_io import iter_frames  # noqa: E402
from evaluation import synthetic_demo  # noqa: E402
from evaluation import synthetic_lipsync as sl  # noqa: E402
from face_detection.boxes import voxceleb2_box  # noqa: E402

# name -> (generate.py's sampler flags, network passes per frame)
SAMPLERS: Dict[str, tuple] = {
    "ddim25": (dict(timestep_respacing="ddim25", sampler="ddim"), 25),
    "ddim10": (dict(timestep_respacing="ddim10", sampler="ddim"), 10),
    "ddim8": (dict(timestep_respacing="ddim8", sampler="ddim"), 8),
    "dpm2m_10": (dict(sampler="dpm++2m", sampling_steps=10), 10),
    "dpm2m_8": (dict(sampler="dpm++2m", sampling_steps=8), 8),
    "dpm2m_6": (dict(sampler="dpm++2m", sampling_steps=6), 6),
    "dpm2m_5": (dict(sampler="dpm++2m", sampling_steps=5), 5),
    "ddim6": (dict(timestep_respacing="ddim6", sampler="ddim"), 6),
    "dpm2m_8_trailing": (dict(sampler="dpm++2m", sampling_steps=8, solver_spacing="trailing"), 8),
    "dpm3m_8": (dict(sampler="dpm++3m", sampling_steps=8), 8),
    "dpm2m_8_cache2": (dict(sampler="dpm++2m", sampling_steps=8, cache_interval=2, cache_depth=2), 8),
    "dpm2m_10_cache2": (dict(sampler="dpm++2m", sampling_steps=10, cache_interval=2, cache_depth=2), 10),
}
DEFAULT_SAMPLERS = "ddim25,ddim8,dpm2m_8,dpm2m_6,dpm2m_8_cache2"


def mouth_psnr(frames_a: Iterable[np.ndarray], frames_b: Iterable[np.ndarray]) -> float:
    """PSNR (dB) over the lower half of the VoxCeleb2 face box of two clips' frames `[H, W, 3]`."""
    squared, count = 0.0, 0
    for fa, fb in zip(frames_a, frames_b):
        y1, y2, x1, x2 = voxceleb2_box(*fa.shape[:2])
        top = y1 + (y2 - y1) // 2
        diff = fa[top:y2, x1:x2].astype(np.float64) - fb[top:y2, x1:x2].astype(np.float64)
        squared += float((diff**2).sum())
        count += diff.size
    mse = squared / max(count, 1)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def quick(args, names: List[str], checkpoint: str, data_dir: str, pair) -> int:
    """Mouth PSNR vs DDIM-25 of each sampler on the first `--quick_frames` frames of one cross
    pair, through the pipeline's own code (`Generator`), before any encoding."""
    from common.flags import as_flags
    from inference.lipsync import SourceFrames, boxes_for_clip, plan_clip
    from inference.options import create_parser
    from inference.pipeline import Generator

    audio_rel, video_rel = pair
    video, audio = (os.path.join(data_dir, rel + ".mp4") for rel in (video_rel, audio_rel))

    def frames_of(name: str) -> np.ndarray:
        flags = {**dict(timestep_respacing="ddim25", precision=args.precision, use_fp16=args.precision == "auto"),
                 **SAMPLERS[name][0]}
        argv = [*synthetic_demo.model_flags(args.parameterization), "--model_path", checkpoint, "--progress", "False",
                *as_flags(flags)]
        gen = Generator(create_parser().parse_args(argv))
        plan = plan_clip(video, audio, gen.opts)
        plan.n_frames = min(plan.n_frames, args.quick_frames)
        source = SourceFrames(plan, None)
        boxes, _ = boxes_for_clip(plan, source, gen.opts, None)
        return np.stack(list(gen.syncer.generate(plan, source, boxes, 0, plan.n_frames)))

    reference = frames_of("ddim25")
    print(f"\n{args.parameterization} network, first {len(reference)} frames of {audio_rel} -> {video_rel}:\n")
    print("| sampler | passes | mouth PSNR vs DDIM-25 (dB) |")
    print("|---|---|---|")
    figures = {}
    for name in [n for n in names if n != "ddim25"]:
        figures[name] = mouth_psnr(frames_of(name), reference)
        print(f"| {name} | {SAMPLERS[name][1]} | {figures[name]:.1f} |", flush=True)
    for name, value in figures.items():
        print(f"{args.parameterization}_quick_{name}_mouth_psnr_vs_ddim25={value:.4g}")
    return 0


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parameterization", default="eps", choices=sorted(synthetic_demo.DEMO_NETWORKS),
                        help="which demo network: eps (released parameterization) or x0 (default eps)")
    parser.add_argument("--checkpoint", default="", help="its checkpoint ('' = the committed one)")
    parser.add_argument("--samplers", default=DEFAULT_SAMPLERS, help=f"comma list of {', '.join(SAMPLERS)}, or all")
    parser.add_argument("--out_dir", default="outputs/bench_sampling_quality", help="clips and results go here")
    parser.add_argument("--precision", default="auto", help="generate.py's --precision (default auto, with --use_fp16 True: "
                        "the fast path of this machine)")
    parser.add_argument("--quick_frames", type=int, default=0,
                        help="only the mouth PSNR vs DDIM-25, on the first N frames of the first cross pair, generated "
                        "in-process (minutes, not an hour); 0 = the full evaluation")
    parser.add_argument("--resume", action="store_true",
                        help="keep clips already in --out_dir (generate.py --skip_existing) and only score them")
    args = parser.parse_args(argv)
    names = list(SAMPLERS) if args.samplers == "all" else args.samplers.split(",")
    unknown = [n for n in names if n not in SAMPLERS]
    if unknown or "ddim25" not in names:
        parser.error(f"--samplers must name ddim25 (the reference) and only {', '.join(SAMPLERS)}; got {unknown}")
    checkpoint = args.checkpoint or (
        synthetic_demo.DEMO_CHECKPOINT_EPS if args.parameterization == "eps" else synthetic_demo.DEMO_CHECKPOINT)
    data_dir = os.path.join(args.out_dir, "data")
    synthetic_demo.render(data_dir, synthetic_demo.DEMO_DATA["seconds"], progress=False)
    pairs = sl.read_pairs(os.path.join(data_dir, "test_cross.txt"))
    if args.quick_frames:
        return quick(args, names, checkpoint, data_dir, pairs[0])
    run_dir = os.path.join(args.out_dir, args.parameterization)
    results = {}
    # The reference last, so that a resumed run can take its clips from another run of the same
    # settings (demo.py --timestep_respacing ddim25) while the fast samplers generate.
    for name in [n for n in names if n != "ddim25"] + ["ddim25"]:
        flags, passes = SAMPLERS[name]
        settings = {**dict(timestep_respacing="ddim25", precision=args.precision, progress=False,
                           parameterization=args.parameterization, skip_existing=args.resume), **flags}
        scores = synthetic_demo.evaluate_checkpoint(checkpoint, data_dir, os.path.join(run_dir, name),
                                          argparse.Namespace(**settings), sheets=False)
        scores.pop("per_clip")
        results[name] = dict(scores, passes=passes)
        print(f"{name}: {json.dumps({k: round(v, 4) for k, v in results[name].items()})}", flush=True)
    for name, scores in results.items():
        scores["mouth_psnr_vs_ddim25"] = float(np.mean([
            mouth_psnr(iter_frames(sl.generated_path(os.path.join(run_dir, name, "cross"), p), 25),
                       iter_frames(sl.generated_path(os.path.join(run_dir, "ddim25", "cross"), p), 25)) for p in pairs
        ]))
    results = {"ddim25": results.pop("ddim25"), **results}
    atomic_write_json(os.path.join(run_dir, "results.json"), results)
    ref = results["ddim25"]
    print(f"\n{args.parameterization} network ({checkpoint}), 6 held-out clips x 2 filelists:\n")
    print("| sampler | passes | mouth PSNR vs DDIM-25 (dB) | lip-sync (delta) | wrong audio | recon PSNR / SSIM |")
    print("|---|---|---|---|---|---|")
    for name, s in results.items():
        psnr = "-" if name == "ddim25" else f"{s['mouth_psnr_vs_ddim25']:.1f}"
        print(f"| {name} | {s['passes']} | {psnr} | {s['lip_sync']:.3f} ({s['lip_sync'] - ref['lip_sync']:+.3f}) "
              f"| {s['wrong_audio']:.3f} | {s['psnr']:.2f} / {s['ssim']:.4f} |")
    for name, s in results.items():
        for key in ("mouth_psnr_vs_ddim25", "lip_sync", "wrong_audio", "psnr", "ssim"):
            if not (name == "ddim25" and key == "mouth_psnr_vs_ddim25"):
                print(f"{args.parameterization}_{name}_{key}={s[key]:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
