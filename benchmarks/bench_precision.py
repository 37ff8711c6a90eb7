"""float32 against bfloat16 on this CPU, and what `--precision auto` picks, for the official
network and the small released configuration.

bfloat16 is fast only where the CPU has bf16 matrix units (AMX); with AVX-512 bf16 alone, or on
other CPU families, it can be slower than float32, so `--precision auto` (under the released
`--use_fp16 True`) measures a short probe where the CPU's flags cannot tell. This script times
one forward of `--batch` frames in each precision (alternating, fastest of `--rounds` kept: the
machine is noisy), runs the same probe `auto` runs (in a fresh cache), and reports the time of
auto's choice over float32's: the target is at most 1.1.

    python benchmarks/bench_precision.py [--batch 8] [--rounds 3]
"""

import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_unet import realistic_random_model  # noqa: E402

from guided_diffusion.precision import (  # noqa: E402
    cpu_bf16_units,
    cpu_flags,
    cpu_model,
    fast_cpu_precision,
    prepare_for_inference,
    probe_seconds,
)

# The small released configuration (the released README's --num_channels 32 ... example) beside
# the official network.
NETWORKS = {
    "official": {},
    "small": dict(num_channels=32, num_head_channels=32, num_res_blocks=1),
}
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="frames per timed forward (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds, fastest kept (default 3)")
    parser.add_argument("--networks", default="official,small", help="comma list of official, small")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    flags = sorted(f for f in cpu_flags() if f in SHOWN_FLAGS)
    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} threads, bf16 units: {cpu_bf16_units()}, "
          f"flags: {' '.join(flags) or 'none of ' + ' '.join(SHOWN_FLAGS)}; torch {torch.__version__}")
    figures = {"cpu": cpu_model().replace(" ", "_"), "bf16_units": cpu_bf16_units()}
    with tempfile.TemporaryDirectory() as cache_dir:
        for name in args.networks.split(","):
            model = prepare_for_inference(realistic_random_model(**NETWORKS[name]), "cpu", "fp32")
            fp32_s, bf16_s = probe_seconds(model, 128, rounds=args.rounds, frames=args.batch)
            auto, why = fast_cpu_precision(model, 128, os.path.join(cache_dir, "probe.json"), frames=args.batch)
            auto_s = bf16_s if auto == "bf16" else fp32_s
            print(f"{name:9s}: fp32 {args.batch / fp32_s:6.2f} frames/s, bf16 {args.batch / bf16_s:6.2f} frames/s "
                  f"(bf16 {fp32_s / bf16_s:.2f}x fp32's speed); auto picks {auto}: {why}")
            figures.update({
                f"{name}_fp32_frames_per_s": args.batch / fp32_s,
                f"{name}_bf16_frames_per_s": args.batch / bf16_s,
                f"{name}_bf16_speed_over_fp32": fp32_s / bf16_s,
                f"{name}_auto": auto,
                f"{name}_auto_time_over_fp32": auto_s / fp32_s,
            })
    for key, value in figures.items():
        print(f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}")


if __name__ == "__main__":
    main()
