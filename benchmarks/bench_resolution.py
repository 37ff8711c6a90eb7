"""Cost per frame and peak memory of the official network at 128, 256 and 512 px on this machine.

For each size, the official configuration (128 channels, 2 residual blocks, attention at 32, 16
and 8 px, the released channel multipliers of that size) and, at 256 px, the lifted architecture
that holds the released 128 px network (`guided_diffusion/lift.py`: multipliers 1,1,1,2,3,4):
one forward of `--batch` frames on the fast path (channels-last, fused attention, the audio
encoder run once per frame, bfloat16 autocast or float32), random weights, its FLOPs counted by
torch.utils.flop_counter. Each configuration
first runs in a fresh process, so its peak resident memory (weights + activations of one
forward, no gradients) is its own. Then all four are timed in one process in alternating rounds
(other jobs' load falls on each alike): seconds are the median of `--repeats` rounds after one
warm-up, and the ratios against 128 px come from the same rounds.

    python benchmarks/bench_resolution.py [--batch 1] [--repeats 2] [--precisions bf16,fp32]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONFIGS = [(128, "official"), (256, "official"), (256, "lifted"), (512, "official")]


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build(size: int, arch: str, precision: str, batch: int):
    """`(forward, info)`: one configuration's fast-path forward of `batch` frames and its size."""
    import torch

    from guided_diffusion.lift import lift_flags
    from guided_diffusion.precision import autocast, prepare_for_inference
    from guided_diffusion.script_util import tfg_create_model_and_diffusion, tfg_model_and_diffusion_defaults
    from guided_diffusion.tfg_data_util import tfg_process_batch

    torch.set_grad_enabled(False)
    flags = tfg_model_and_diffusion_defaults()
    flags = lift_flags(flags) if arch == "lifted" else {**flags, "image_size": size}
    torch.manual_seed(0)
    model, _ = tfg_create_model_and_diffusion(**flags)
    for module in model.modules():  # zero-initialised convs get weights, so every block computes as trained
        if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d)) and module.weight.abs().sum() == 0:
            module.reset_parameters()
    info = {"parameters": sum(p.numel() for p in model.parameters()), "channel_mult": flags["channel_mult"] or "released"}
    model = prepare_for_inference(model.eval(), "cpu", precision, channels_last=True)
    frames = torch.rand(1, batch, 3, size, size) * 2 - 1
    inputs = tfg_process_batch(frames, 0.5, ref_frames=frames.roll(1, dims=1), mels=torch.randn(1, batch, 80, 16),
                               noise=torch.randn(batch, 3, size, size))
    kwargs = {k: (v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v)
              for k, v in inputs.model_kwargs.items()}
    x_t = inputs.noise.contiguous(memory_format=torch.channels_last)
    t = torch.full((batch,), 480)
    with autocast("cpu", precision):
        kwargs = model.precompute_conditioning(kwargs)

    def forward():
        with autocast("cpu", precision):
            return model(x_t, t, **kwargs)

    return forward, info


def footprint(size: int, arch: str, precision: str, batch: int) -> dict:
    """In a fresh process: one forward's FLOPs and the process's peak resident memory."""
    from torch.utils.flop_counter import FlopCounterMode

    forward, info = build(size, arch, precision, batch)
    before = rss_mib()
    counter = FlopCounterMode(display=False)
    with counter:
        forward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {**info, "gflop_per_frame": counter.get_total_flops() / batch / 1e9, "peak_rss_mib": peak,
            "rss_before_forward_mib": before}


def timings(precision: str, batch: int, repeats: int) -> dict:
    """Median seconds per frame of every configuration, timed in alternating rounds in one process,
    so that load from other jobs falls on all of them alike and the ratios hold."""
    forwards = {config: build(*config, precision, batch)[0] for config in CONFIGS}
    for forward in forwards.values():
        forward()  # warm-up
    times = {config: [] for config in CONFIGS}
    for _ in range(repeats):
        for config, forward in forwards.items():
            start = time.perf_counter()
            forward()
            times[config].append((time.perf_counter() - start) / batch)
    return {config: sorted(ts)[len(ts) // 2] for config, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1, help="frames per forward (default 1)")
    parser.add_argument("--repeats", type=int, default=2, help="timed forwards per figure, median (default 2)")
    parser.add_argument("--precisions", default="bf16,fp32", help="comma list of bf16, fp32 (default both)")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)  # SIZE,ARCH,PRECISION: the child's task
    args = parser.parse_args()
    if args.one:
        size, arch, precision = args.one.split(",")
        print(json.dumps(footprint(int(size), arch, precision, args.batch)))
        return

    import torch

    from guided_diffusion.precision import cpu_bf16_units, cpu_model

    print(f"{cpu_model()} (bf16 units: {cpu_bf16_units()}), torch {torch.__version__}, "
          f"{os.environ.get('OMP_NUM_THREADS', torch.get_num_threads())} threads, {args.batch} frame(s) per forward")
    results = {}
    for precision in args.precisions.split(","):
        for size, arch in CONFIGS:
            out = subprocess.run([sys.executable, __file__, "--one", f"{size},{arch},{precision}", "--batch", str(args.batch)],
                                 check=True, stdout=subprocess.PIPE, text=True).stdout
            results[(size, arch, precision)] = json.loads(out.strip().splitlines()[-1])
        for (size, arch), seconds in timings(precision, args.batch, args.repeats).items():
            r = results[(size, arch, precision)]
            r["seconds_per_frame"] = seconds
            print(f"{size:4d} px {arch:8s} ({r['channel_mult']:>13s}) {precision}: {seconds:7.2f} s/frame, "
                  f"peak {r['peak_rss_mib']:6.0f} MiB (before the forward {r['rss_before_forward_mib']:5.0f}), "
                  f"{r['parameters'] / 1e6:.1f} M parameters, {r['gflop_per_frame']:.0f} GFLOP/frame", flush=True)
    figures = {}
    for (size, arch, precision), r in results.items():
        name = f"{size}_{arch}_{precision}"
        base = results[(128, "official", precision)]
        figures[f"{name}_s_per_frame"] = r["seconds_per_frame"]
        figures[f"{name}_peak_mib"] = r["peak_rss_mib"]
        figures[f"{name}_time_vs_128"] = r["seconds_per_frame"] / base["seconds_per_frame"]
        figures[f"{name}_params_m"] = r["parameters"] / 1e6
        figures[f"{name}_gflop_per_frame"] = r["gflop_per_frame"]
    for name, value in figures.items():
        print(f"{name}={value:.4g}")


if __name__ == "__main__":
    main()
