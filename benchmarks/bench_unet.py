"""Speed of the official Diff2Lip network at 128 px on this machine.

Measures, in one run (the machine is noisy, so only same-run ratios mean much):
  (a) the released way: float32 eager, einsum attention, the audio encoder run at every call;
  (b) our fastest CPU path: bfloat16 autocast, channels-last, fused attention, the audio
      encoder run once per frame (it does not depend on the diffusion step);
  (c) the same path in float32 (what --precision auto runs where bfloat16 does not pay);
for a batch of 10 frames: forward frames/s, achieved GFLOP/s (FLOPs counted by
torch.utils.flop_counter) and that as a fraction of a large matmul's GFLOP/s in the same
precision; the relative error of (b)'s predicted noise against (a); and one full DDIM-25 sample
of 10 frames with each. Weights are random in the released format (no checkpoint is needed).

    python benchmarks/bench_unet.py [--batch 10] [--repeats 5] [--skip_ddim]
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from guided_diffusion.precision import autocast, cpu_bf16_units, cpu_model, prepare_for_inference  # noqa: E402
from guided_diffusion.script_util import create_gaussian_diffusion, tfg_create_model_and_diffusion  # noqa: E402
from guided_diffusion.tfg_data_util import shared_noise, tfg_process_batch  # noqa: E402


def realistic_random_model(**flags):
    """The official network (or the one `flags` build) with default init everywhere, including the
    layers that start at zero in training, so every block contributes to the output as in a trained model."""
    torch.manual_seed(0)
    model, _ = tfg_create_model_and_diffusion(**flags)
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d)) and module.weight.abs().sum() == 0:
            module.reset_parameters()
    return model.eval()


def timed(fn, repeats: int) -> float:
    """Median seconds of `fn()` over `repeats` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    seconds = timed(lambda: a @ b, repeats)
    return 2 * n**3 / seconds / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=10, help="frames per forward (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure, median reported (default 5)")
    parser.add_argument("--skip_ddim", action="store_true", help="skip the two full DDIM-25 samples")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(f"{cpu_model()} (bf16 units: {cpu_bf16_units()}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch} frames at 128 px")

    size, n = 128, args.batch
    torch.manual_seed(1)
    frames = torch.rand(1, n, 3, size, size) * 2 - 1
    batch = tfg_process_batch(
        frames, 0.5, ref_frames=frames.roll(1, dims=1), mels=torch.randn(1, n, 80, 16), noise=shared_noise(size, seed=7)
    )
    x_t = batch.noise.clone()
    t = torch.full((n,), 480)

    # (a) the released way
    baseline = prepare_for_inference(realistic_random_model(), "cpu", "fp32", channels_last=False)
    for module in baseline.modules():
        if hasattr(module, "fused"):
            module.fused = False
    kwargs_a = batch.model_kwargs

    def forward_a():
        return baseline(x_t, t, **kwargs_a)

    # (b) the fast path
    fast = prepare_for_inference(realistic_random_model(), "cpu", "bf16", channels_last=True)
    x_t_cl = x_t.contiguous(memory_format=torch.channels_last)
    kwargs_b = {k: (v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v) for k, v in batch.model_kwargs.items()}
    with autocast("cpu", "bf16"):
        kwargs_b = fast.precompute_conditioning(kwargs_b)

    def forward_b():
        with autocast("cpu", "bf16"):
            return fast(x_t_cl, t, **kwargs_b)

    # (c) the same fast path in float32: what --precision auto runs where bfloat16 does not pay
    kwargs_c = fast.precompute_conditioning(
        {k: (v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v) for k, v in batch.model_kwargs.items()})

    def forward_c():
        return fast(x_t_cl, t, **kwargs_c)

    eps_a = forward_a()[:, :3].float()
    eps_b = forward_b()[:, :3].float()
    rel_err = ((eps_b - eps_a).norm() / eps_a.norm()).item()

    flops_a = count_flops(forward_a)
    flops_b = count_flops(forward_b)
    sec_a = timed(forward_a, args.repeats)
    sec_b = timed(forward_b, args.repeats)
    sec_c = timed(forward_c, args.repeats)
    peak_fp32 = matmul_gflops(torch.float32)
    peak_bf16 = matmul_gflops(torch.bfloat16)

    gflops_a = flops_a / sec_a / 1e9
    gflops_b = flops_b / sec_b / 1e9
    fps_a, fps_b = n / sec_a, n / sec_b
    print(f"FLOPs per forward of {n} frames: (a) {flops_a / 1e9:.1f} G, (b) {flops_b / 1e9:.1f} G (audio encoder cached)")
    print(f"large matmul: fp32 {peak_fp32:.0f} GFLOP/s, bf16 {peak_bf16:.0f} GFLOP/s")
    print(f"(a) fp32 eager      : {sec_a * 1000:7.1f} ms  {fps_a:6.2f} frames/s  {gflops_a:6.0f} GFLOP/s = {gflops_a / peak_fp32:.0%} of fp32 matmul")
    print(f"(b) bf16 fast path  : {sec_b * 1000:7.1f} ms  {fps_b:6.2f} frames/s  {gflops_b:6.0f} GFLOP/s = {gflops_b / peak_bf16:.0%} of bf16 matmul")
    print(f"(c) fp32 fast path  : {sec_c * 1000:7.1f} ms  {n / sec_c:6.2f} frames/s")
    print(f"speed-up (b)/(a): {fps_b / fps_a:.2f}x, (c)/(a): {sec_a / sec_c:.2f}x, bf16 over fp32 on the fast path "
          f"(b)/(c): {sec_c / sec_b:.2f}x   predicted-noise relative error: {rel_err:.3%}")

    figures = {
        "fp32_frames_per_s": fps_a,
        "fast_frames_per_s": fps_b,
        "speedup": fps_b / fps_a,
        "fast_fp32_frames_per_s": n / sec_c,
        "fast_fp32_speedup": sec_a / sec_c,
        "bf16_over_fp32_fast_path": sec_c / sec_b,
        "fp32_gflops": gflops_a,
        "fast_gflops": gflops_b,
        "fp32_fraction_of_matmul": gflops_a / peak_fp32,
        "fast_fraction_of_bf16_matmul": gflops_b / peak_bf16,
        "eps_relative_error": rel_err,
    }

    if not args.skip_ddim:
        diffusion = create_gaussian_diffusion(timestep_respacing="ddim25")
        shape = (n, 3, size, size)

        def sample_a():
            return diffusion.ddim_sample_loop(baseline, shape, noise=batch.noise, model_kwargs=batch.model_kwargs)

        def sample_b():
            with autocast("cpu", "bf16"):
                return diffusion.ddim_sample_loop(fast, shape, noise=x_t_cl, model_kwargs=batch.model_kwargs)

        start = time.perf_counter()
        sample_a()
        ddim_a = time.perf_counter() - start
        start = time.perf_counter()
        sample_b()
        ddim_b = time.perf_counter() - start
        print(f"DDIM-25 sample of {n} frames: (a) {ddim_a:.1f} s, (b) {ddim_b:.1f} s ({ddim_a / ddim_b:.2f}x)")
        figures.update(ddim25_fp32_s=ddim_a, ddim25_fast_s=ddim_b, ddim25_speedup=ddim_a / ddim_b)

    for name, value in figures.items():
        print(f"{name}={value:.4g}")


if __name__ == "__main__":
    main()
