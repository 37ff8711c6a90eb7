"""Cost of Diff2Lip's training losses at the official configuration on this machine.

Times full training steps (forward, every loss, backward, AdamW, EMA and, with the GAN, the
discriminator's own step) of the released network (128 px, sequences of 5 frames) with
  (a) L_simple (+ the variational term) only, and
  (b) all five losses: + L2, the lip-sync expert (SyncNet128), LPIPS (VGG) and the sequence GAN;
each in a fresh process, reporting seconds per training sample (one 5-frame sequence) and peak
resident memory. Weights are random in the real formats (nothing is downloaded): the cost is
the same as with trained ones.

    python benchmarks/bench_train.py [--batch 2] [--steps 3] [--precision fp32]
"""

import argparse
import json
import os
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)


def child(mode: str, batch: int, steps: int, precision: str) -> None:
    """Run `steps` timed training steps (after one warm-up) and print a JSON line of figures."""
    import copy

    import lpips
    import torch

    from common.flags import args_to_dict
    from guided_diffusion.nn import update_ema
    from guided_diffusion.precision import autocast
    from guided_diffusion.script_util import tfg_create_model_and_diffusion, tfg_model_and_diffusion_defaults
    from training.diff2lip import create_parser, forward_losses
    from training.losses import DiffusionLoss, L2Loss, LPIPSLoss, SequenceGANLoss, SequencePatchGAN, SyncLoss
    from training.syncnet import SyncExpert

    device = torch.device("cpu")
    args = create_parser().parse_args(["--data_root", "unused", "--precision", precision])
    torch.manual_seed(0)
    model, diffusion = tfg_create_model_and_diffusion(
        **dict(args_to_dict(args, tfg_model_and_diffusion_defaults()), timestep_respacing="")
    )
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    losses = {"simple": DiffusionLoss()}
    weights = {"simple": 1.0}
    disc = disc_opt = None
    if mode == "all":
        expert = SyncExpert("syncnet128", frozen=True).eval().requires_grad_(False)
        lpips_net = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False).eval().requires_grad_(False)
        disc = SequencePatchGAN(5, 64)
        disc_opt = torch.optim.AdamW(disc.parameters(), lr=1e-4, betas=(0.5, 0.999))
        losses.update(l2=L2Loss(), sync=SyncLoss(expert), lpips=LPIPSLoss(lpips_net), gan=SequenceGANLoss(disc))
        weights.update(l2=1.0, sync=0.03, lpips=0.1, gan=0.01)

    g = torch.Generator().manual_seed(0)
    data = {
        "frames": torch.rand(batch, 5, 3, 128, 128, generator=g) * 2 - 1,
        "refs": torch.rand(batch, 5, 3, 128, 128, generator=g) * 2 - 1,
        "mels": torch.randn(batch, 5, 80, 16, generator=g),
        "sync_mel": torch.randn(batch, 80, 16, generator=g),
    }

    def step():
        opt.zero_grad(set_to_none=True)
        total, _, sequences = forward_losses(args, data, model, diffusion, losses, weights, g, device)
        total.backward()
        opt.step()
        update_ema(ema.parameters(), model.parameters(), 0.9999)
        if disc is not None:
            disc_opt.zero_grad(set_to_none=True)
            with autocast(device, precision, fp16_autocast=True):
                losses["gan"].discriminator_loss(sequences.real, sequences.pred.detach()).backward()
            disc_opt.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(json.dumps(dict(seconds_per_step=seconds, seconds_per_sample=seconds / batch, peak_rss_mb=hwm / 1024)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2, help="5-frame sequences per step (default 2)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up (default 3)")
    parser.add_argument("--precision", default="fp32", help="fp32 or bf16 (default fp32)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.batch, args.steps, args.precision)
        return

    results = {}
    for mode in ("simple", "all"):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--batch", str(args.batch),
               "--steps", str(args.steps), "--precision", args.precision]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"{mode} run failed:\n{proc.stderr[-3000:]}")
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[mode]
        print(f"{mode:>6}: {r['seconds_per_step']:.2f} s per step of {args.batch} sequences = "
              f"{r['seconds_per_sample']:.2f} s per sample, peak RSS {r['peak_rss_mb']:.0f} MB ({args.precision})")
    ratio = results["all"]["seconds_per_sample"] / results["simple"]["seconds_per_sample"]
    print(f"all five losses / L_simple only: {ratio:.2f}x (target <= 1.6)")
    figures = {
        "simple_s_per_sample": results["simple"]["seconds_per_sample"],
        "all_losses_s_per_sample": results["all"]["seconds_per_sample"],
        "all_vs_simple": ratio,
        "simple_peak_rss_mb": results["simple"]["peak_rss_mb"],
        "all_losses_peak_rss_mb": results["all"]["peak_rss_mb"],
    }
    for name, value in figures.items():
        print(f"{name}={value:.4g}")


if __name__ == "__main__":
    main()
