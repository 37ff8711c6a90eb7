"""Seconds per frame of every sampler on the official Diff2Lip network (128 px, random weights in
the released format), through the pipeline's own sampling call (`LipSyncer.sample`).

In one run (the machine is noisy, so only same-run ratios mean much):
  - the released way: float32 eager, einsum attention, DDIM-25 (for reference);
  - our fast path (bf16 autocast on CPU / fp16 or bf16 on CUDA, channels-last, fused attention,
    the audio encoder once per frame) with DDIM-25: the baseline of every speed-up;
  - DPM-Solver++ 2M / 3M at several step counts;
  - DPM-Solver++ 2M with deep-feature reuse (DeepCache) at a few intervals;
  - DPM-Solver++ 2M with `torch.compile` (compile time reported apart);
  - a distilled student's step counts (2 and 1 network passes, plain DDIM on the student's steps).
Each row prints network passes per frame, seconds per frame and the speed-up over fast DDIM-25;
the last lines are `name=value` figures. The same script runs on CUDA (`--device cuda`).

    python benchmarks/bench_sampling.py [--batch 4] [--rounds 2] [--device cpu] [--skip_compile] [--skip_released]
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_unet import realistic_random_model  # noqa: E402

from guided_diffusion.precision import (  # noqa: E402
    cpu_bf16_units,
    cpu_model,
    prepare_for_inference,
    prepare_with_precision,
)
from guided_diffusion.script_util import create_gaussian_diffusion  # noqa: E402
from guided_diffusion.tfg_data_util import shared_noise, tfg_process_batch  # noqa: E402
from inference.lipsync import LipSyncer, SamplingOptions  # noqa: E402

# (name, sampler options, timestep_respacing of the diffusion); steps of the dpm++ rows are passes.
ROWS = [
    ("ddim25", dict(sampler="ddim"), "ddim25"),
    ("ddim8", dict(sampler="ddim"), "ddim8"),
    ("dpm2m_10", dict(sampler="dpm++2m", sampling_steps=10), ""),
    ("dpm2m_8", dict(sampler="dpm++2m", sampling_steps=8), ""),
    ("dpm2m_6", dict(sampler="dpm++2m", sampling_steps=6), ""),
    ("dpm2m_5", dict(sampler="dpm++2m", sampling_steps=5), ""),
    ("dpm3m_8", dict(sampler="dpm++3m", sampling_steps=8), ""),
    # Deep-feature reuse at depth 2 (a reusing pass costs 27% of a full one on this network) and 3 (44%).
    ("dpm2m_8_cache2", dict(sampler="dpm++2m", sampling_steps=8, cache_interval=2, cache_depth=2), ""),
    ("dpm2m_8_cache2_d3", dict(sampler="dpm++2m", sampling_steps=8, cache_interval=2, cache_depth=3), ""),
    ("dpm2m_10_cache2", dict(sampler="dpm++2m", sampling_steps=10, cache_interval=2, cache_depth=2), ""),
    ("student_2", dict(sampler="ddim"), "ddim2"),
    # One pass: the released diffusion class needs two steps, the solver's one step is the x0 jump.
    ("student_1", dict(sampler="dpm++2m", sampling_steps=1, solver_spacing="trailing"), ""),
]


def make_batch(n: int, size: int, device: torch.device):
    torch.manual_seed(1)
    frames = torch.rand(1, n, 3, size, size) * 2 - 1
    batch = tfg_process_batch(
        frames, 0.5, ref_frames=frames.roll(1, dims=1), mels=torch.randn(1, n, 80, 16), noise=shared_noise(size, seed=7)
    )
    batch.x_start, batch.noise, batch.mask = batch.x_start.to(device), batch.noise.to(device), batch.mask.to(device)
    batch.model_kwargs = {k: v.to(device) for k, v in batch.model_kwargs.items()}
    return batch


def seconds(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def syncer(model, respacing: str, precision: str, device, **options) -> LipSyncer:
    diffusion = create_gaussian_diffusion(timestep_respacing=respacing)
    return LipSyncer(model, diffusion, SamplingOptions(precision=precision, **options), device)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4, help="frames per sampling call (default 4)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--precision", default="auto", help="fast-path precision (default auto: what generate.py's "
                        "--precision auto picks under --use_fp16 True here: fp16 on CUDA, on a CPU bf16 where faster, else fp32)")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs of each row, fastest kept (default 2)")
    parser.add_argument("--skip_compile", action="store_true", help="skip the torch.compile row")
    parser.add_argument("--skip_released", action="store_true", help="skip the float32 eager DDIM-25 reference")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    fast, precision, why = prepare_with_precision(realistic_random_model(), device, args.precision, True, 128)
    n = args.batch
    print(f"{cpu_model()} ({cpu_bf16_units()} bf16 units), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{device}, {precision} ({why}), batch {n} frames at 128 px")
    batch = make_batch(n, 128, device)
    syncer(fast, "ddim2", precision, device).sample(batch)  # warm-up: allocator, kernels

    results = {}

    def row(name: str, passes: int, sec: float) -> None:
        results[name] = sec / n
        base = results.get("ddim25")
        speedup = f"{base / results[name]:6.2f}x" if base else "   1.00x"
        print(f"{name:18s} {passes:3d} passes  {sec / n:7.3f} s/frame  {speedup}", flush=True)

    # Rows are timed round-robin, `--rounds` times, and each keeps its fastest run: other load on
    # the machine then slows every row alike instead of whichever ran at the wrong moment.
    syncers = {name: syncer(fast, respacing, precision, device, **options) for name, options, respacing in ROWS}
    best = {name: float("inf") for name in syncers}
    for _ in range(args.rounds):
        for name, s in syncers.items():
            best[name] = min(best[name], seconds(lambda: s.sample(batch), device))
    print(f"{'sampler':18s} {'passes':>10s}  {'s/frame':>13s}  speed-up over fast DDIM-25")
    for name, options, _ in ROWS:
        row(name, options.get("sampling_steps") or syncers[name].diffusion.num_timesteps, best[name])

    figures = {f"s_per_frame_{k}": v for k, v in results.items()}
    figures.update({f"speedup_{k}": results["ddim25"] / v for k, v in results.items() if k != "ddim25"})

    if not args.skip_compile:
        compiled = prepare_for_inference(realistic_random_model(), device, precision, compile=True)
        s = syncer(compiled, "", precision, device, sampler="dpm++2m", sampling_steps=8)
        compile_s = seconds(lambda: s.sample(batch), device)
        row("dpm2m_8_compiled", 8, seconds(lambda: s.sample(batch), device))
        s_cache = syncer(compiled, "", precision, device, sampler="dpm++2m", sampling_steps=8, cache_interval=2,
                         cache_depth=2)
        seconds(lambda: s_cache.sample(batch), device)  # compiles the reusing graph
        row("dpm2m_8_cache2_compiled", 8, seconds(lambda: s_cache.sample(batch), device))
        print(f"first compiled call (compiling): {compile_s:.1f} s")
        for name in ("dpm2m_8_compiled", "dpm2m_8_cache2_compiled"):
            figures[f"s_per_frame_{name}"] = results[name]
            figures[f"speedup_{name}"] = results["ddim25"] / results[name]
        figures["compile_s"] = compile_s

    if not args.skip_released:
        released = prepare_for_inference(realistic_random_model(), device, "fp32", channels_last=False)
        for module in released.modules():
            if hasattr(module, "fused"):
                module.fused = False
        s = syncer(released, "ddim25", "fp32", device)
        row("released_fp32_ddim25", 25, seconds(lambda: s.sample(batch), device))
        figures["s_per_frame_released_fp32_ddim25"] = results["released_fp32_ddim25"]
        figures["fast_ddim25_over_released"] = results["released_fp32_ddim25"] / results["ddim25"]

    fastest = min(results, key=results.get)
    figures["fastest_s_per_frame"] = results[fastest]
    print(f"fastest: {fastest} at {results[fastest]:.3f} s/frame (target <= 1.0 s/frame)")
    for name, value in figures.items():
        print(f"{name}={value:.4g}")


if __name__ == "__main__":
    main()
