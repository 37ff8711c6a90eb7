"""The prepared GPU benchmark: frames/s of the official network and of the whole pipeline, in one
run of a few minutes on a machine with one GPU.

Rows, each timed through the pipeline's own sampling call (`LipSyncer.sample`) on the official
network with random weights in the released format (no checkpoint needed):
  - samplers: DDIM-25 (the released sampler), DPM-Solver++ 2M with 8 passes and deep-feature
    reuse (the fast sampler for the released checkpoint), 2 passes (what the 2-step student
    runs) and 1 pass (`ddim1`, what the 1-step student runs);
  - precisions: fp16 and bf16 on a GPU, fp32 and bf16 on a CPU;
  - batch sizes (`--batches`);
  - `torch.compile` on the fast sampler (compile time reported apart);
  - end to end: `generate.py`'s pipeline (`Generator`) on a rendered 1280x720 clip with the fast
    sampler and the 2- and 1-step students' passes, the face detector on at its defaults (every 5th
    frame and at cuts; S3FD when its weights are on disk, else the bundled CenterFace), the
    checkpoint a random official network written as the released file, decode, detection,
    network, paste and encode included.
Rows are timed round-robin `--rounds` times, each keeping its fastest run (other work on the
machine then slows every row alike). Ends with one `name=value` line per figure (frames/s).
`--tiny` runs the same code with a tiny network and a small clip, for the tests and CPUs.

    python benchmarks/bench_gpu.py [--device cuda] [--batches 8,32] [--rounds 2] [--skip_compile]
        [--e2e_seconds 4] [--tiny] [--workdir outputs/bench_gpu]
"""

import argparse
import os
import shutil
import sys
import time

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_pipeline import photo_frame  # noqa: E402
from bench_sampling import make_batch, seconds  # noqa: E402
from bench_unet import realistic_random_model  # noqa: E402

from common.flags import as_flags  # noqa: E402
from guided_diffusion.precision import cpu_model, prepare_for_inference  # noqa: E402
from guided_diffusion.script_util import create_gaussian_diffusion  # noqa: E402
from inference.lipsync import LipSyncer, SamplingOptions  # noqa: E402

# (row, sampler options, timestep_respacing); the dpm++ rows' steps are network passes.
SAMPLER_ROWS = [
    ("ddim25", dict(sampler="ddim"), "ddim25"),
    ("dpm2m_8_cache2", dict(sampler="dpm++2m", sampling_steps=8, cache_interval=2, cache_depth=2), ""),
    ("passes_2", dict(sampler="ddim"), "ddim2"),
    ("passes_1", dict(sampler="ddim"), "ddim1"),
]
# The tiny network of --tiny (the tests' size), at 32 px.
TINY_NETWORK = dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="16",
                    num_head_channels=32)


def precisions_for(device: torch.device) -> list:
    return ["fp16", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]


def network_rows(args, network: dict, device: torch.device) -> dict:
    """frames/s of every sampler row, per precision and batch size."""
    size = network.get("image_size", 128)
    syncers, batches = {}, {}
    for precision in precisions_for(device):
        model = prepare_for_inference(realistic_random_model(**network), device, precision)
        for n in args.batches:
            batches[n] = batches.get(n) or make_batch(n, size, device)
            for name, options, respacing in SAMPLER_ROWS:
                diffusion = create_gaussian_diffusion(timestep_respacing=respacing)
                syncer = LipSyncer(model, diffusion, SamplingOptions(precision=precision, **options), device)
                syncers[(name, precision, n)] = syncer
        for n in args.batches:  # warm-up: allocator, kernels, cuDNN's choice of algorithms
            syncers[("passes_2", precision, n)].sample(batches[n])
    best = {key: float("inf") for key in syncers}
    for _ in range(args.rounds):
        for key, syncer in syncers.items():
            best[key] = min(best[key], seconds(lambda: syncer.sample(batches[key[2]]), device))
    figures = {}
    for (name, precision, n), sec in best.items():
        figures[f"{name}_{precision}_batch{n}_frames_per_s"] = n / sec
        print(f"{name:16s} {precision} batch {n:3d}: {n / sec:8.2f} frames/s", flush=True)
    if not args.skip_compile:
        precision, n = precisions_for(device)[0], args.batches[-1]
        compiled = prepare_for_inference(realistic_random_model(**network), device, precision, compile=True)
        name, options, respacing = SAMPLER_ROWS[1]
        syncer = LipSyncer(compiled, create_gaussian_diffusion(timestep_respacing=respacing),
                           SamplingOptions(precision=precision, **options), device)
        compile_s = seconds(lambda: syncer.sample(batches[n]), device)
        sec = min(seconds(lambda: syncer.sample(batches[n]), device) for _ in range(args.rounds))
        figures[f"{name}_{precision}_batch{n}_compiled_frames_per_s"] = n / sec
        figures["compile_s"] = compile_s
        print(f"{name:16s} {precision} batch {n:3d} compiled: {n / sec:8.2f} frames/s (compiling took {compile_s:.1f} s)")
    return figures


def render_clip(path: str, seconds: float, height: int, width: int) -> None:
    """`seconds` of the astronaut's swaying head (bench_pipeline's `photo_frame`), H.264 with AAC speech."""
    from dataset.synthetic import speech_like
    from dataset.video_io import VideoWriter

    if os.path.exists(path):
        return
    with VideoWriter(path + ".tmp.mp4", fps=25, audio=speech_like(seconds), sample_rate=16000) as writer:
        for i in range(int(seconds * 25)):
            writer.write(photo_frame(i, height, width))
    os.replace(path + ".tmp.mp4", path)


def end_to_end(args, network: dict, device: torch.device) -> dict:
    """frames/s of `generate.py`'s pipeline on a rendered clip, detection at its defaults."""
    from face_detection import s3fd_weights_path
    from inference.options import create_parser
    from inference.pipeline import Generator

    os.makedirs(args.workdir, exist_ok=True)
    height, width = (180, 320) if args.tiny else (720, 1280)
    video = os.path.join(args.workdir, f"photo_{width}x{height}_{args.e2e_seconds:g}s.mp4")
    render_clip(video, args.e2e_seconds, height, width)
    checkpoint = os.path.join(args.workdir, "random_network.pt")
    torch.save(realistic_random_model(**network).state_dict(), checkpoint)
    detector = "s3fd" if os.path.isfile(s3fd_weights_path()) else "centerface"
    figures = {}
    for name, options, respacing in SAMPLER_ROWS[1:]:
        out = os.path.join(args.workdir, f"e2e_{name}.mp4")
        flags = {**network, **options, "timestep_respacing": respacing, "model_path": checkpoint,
                 "generate_from_filelist": False, "video_path": video, "audio_path": video, "out_path": out,
                 "is_voxceleb2": False, "face_detector": detector, "device": str(device), "use_fp16": True,
                 "sampling_batch_size": args.batches[-1], "progress": False}
        generator = Generator(create_parser().parse_args(as_flags(flags)))
        start = time.perf_counter()
        frames = generator.clip(video, video, out)
        sec = time.perf_counter() - start
        figures[f"e2e_{name}_{width}x{height}_{detector}_frames_per_s"] = frames / sec
        print(f"end to end, {name}, {width}x{height}, {detector}: {frames} frames, "
              f"{frames / sec:.2f} frames/s ({generator.syncer.network_seconds / sec:.0%} in the network)", flush=True)
    return figures


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda or cpu (default: cuda when there is one)")
    parser.add_argument("--batches", default="8,32", help="comma list of frames per network call (default 8,32)")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs of each row, fastest kept (default 2)")
    parser.add_argument("--skip_compile", action="store_true", help="skip the torch.compile row")
    parser.add_argument("--e2e_seconds", type=float, default=4.0, help="length of the end-to-end clip (default 4)")
    parser.add_argument("--tiny", action="store_true", help="a tiny network and a small clip (tests, CPUs)")
    parser.add_argument("--workdir", default="outputs/bench_gpu", help="where the clip and outputs go")
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_model()} (CPU)"
    print(f"{name}, torch {torch.__version__}, {'tiny network' if args.tiny else 'the official network'}", flush=True)
    network = TINY_NETWORK if args.tiny else {}
    figures = network_rows(args, network, device)
    figures.update(end_to_end(args, network, device))
    print(f"device={name.replace(' ', '_')}")
    for key, value in figures.items():
        print(f"{key}={value:.4g}")
    if args.tiny:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
