"""Train Diff2Lip (the authors released no training code; this follows the paper, Sec. 3.2.1).

    python train.py --data_root data/vox_pre --output_dir outputs/train --sync_expert checkpoints/syncnet_best.pt
    torchrun --nproc_per_node 8 train.py ...        mpiexec -n 8 python train.py ...

Per batch of B sequences of `nframes` frames: one diffusion step t per sequence, shared by its
frames; x_t from Eq. 2 on the masked lower face; the predicted clean frames x0 from the predicted
noise; then L_simple (+ the variational term), L2 on x0 (Eq. 5), the frozen lip-sync expert
(Eq. 6), LPIPS (Eq. 7) and a sequence PatchGAN (Eq. 8) with its own optimizer, summed with
their lambdas (Eq. 9). A lambda of 0 switches its term off. Checkpoints are atomic and hold
everything needed to resume exactly; SIGTERM / SIGINT save and exit.
"""

import contextlib
import copy
import os
import sys
import time
import warnings
from typing import List, Optional

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from dataset.tfg_dataset import StepSampler, TFGDataset, collate
from guided_diffusion import dist_util, logger
from guided_diffusion.checkpoint_format import load_model_weights, take_network_flags
from common.errors import CheckpointError, Diff2LipError
from guided_diffusion.precision import resolve_precision
from guided_diffusion.nn import update_ema
from common.flags import Option, Options, args_to_dict, at_least, create_argparser, one_of
from guided_diffusion.precision import PRECISION
from guided_diffusion.samplers import SAMPLERS
from guided_diffusion.script_util import (
    DATA_OPTIONS,
    MODEL_AND_DIFFUSION_OPTIONS,
    tfg_create_model_and_diffusion,
    tfg_data_defaults,
    tfg_model_and_diffusion_defaults,
)
from guided_diffusion.tfg_data_util import tfg_process_batch
from training.losses import (
    DiffusionLoss,
    L2Loss,
    LPIPSLoss,
    PredictedSequences,
    SequenceGANLoss,
    SequencePatchGAN,
    SyncLoss,
    weighted_sum,
)
from training.loop import StopSignal, autocast, run_training, warmup_lr
from training.checkpoints import latest_checkpoint, rng_state, save_checkpoint, set_rng_state

LPIPS_VGG_FILE = "vgg16-397923af.pth"


def train_defaults() -> dict:
    """Training flags (the network and diffusion flags come from script_util)."""
    return TRAIN_OPTIONS.defaults()


TRAIN_OPTIONS = Options(
    Option("data_root", "", "preprocessed data (dataset/preprocess.py output: clips/, train.txt)"),
    Option("output_dir", "outputs/train", "checkpoints, progress.csv, log.txt and TensorBoard events go here"),
    Option("batch_size", 4, "sequences of --nframes frames per process per micro-batch"),
    Option("accum_steps", 1, "micro-batches accumulated per optimizer step"),
    Option("lr", 1e-4, "AdamW learning rate of the network"),
    Option("weight_decay", 0.0, "AdamW weight decay"),
    Option("warmup_steps", 500, "linear learning-rate warm-up steps"),
    Option("grad_clip", 1.0, "clip the gradient norm to this (0: off)"),
    Option("ema_rate", 0.9999, "EMA decay of the weights kept for sampling"),
    Option("max_steps", 0, "stop after this many optimizer steps (0: until stopped)"),
    Option("lambda_simple", 1.0, "weight of L_simple (+ the variational term), Eq. 3"),
    Option("lambda_l2", 1.0, "weight of the L2 loss on the predicted clean frames, Eq. 5 (0: off)"),
    Option("lambda_sync", 0.03, "weight of the lip-sync expert loss, Eq. 6 (0: off)"),
    Option("lambda_lpips", 0.1, "weight of LPIPS (VGG), Eq. 7 (0: off)"),
    Option("lambda_gan", 0.01, "weight of the sequence PatchGAN loss, Eq. 8 (0: off)"),
    Option("lpips_backbone", "pretrained", "pretrained: LPIPS as published (torchvision's ImageNet VGG-16, downloaded once); random: "
        "the same VGG-16 with fixed random weights (seed 0) under lpips' trained linear heads, for machines that "
        "cannot download (a weaker perceptual loss; the synthetic demo uses it)"),
    Option("sync_expert", "outputs/syncnet128/syncnet_best.pt", "the frozen lip-sync expert: our train_syncnet.py checkpoint or Wav2Lip's lipsync_expert.pth"),
    Option("disc_lr", 1e-4, "AdamW learning rate of the discriminator"),
    Option("disc_channels", 64, "base channel count of the PatchGAN discriminator"),
    Option("precision", "fp32", "fp32, bf16 (autocast) or fp16 (autocast with loss scaling, GPU only)", PRECISION.check),
    Option("save_every", 5000, "write a checkpoint every N steps"),
    Option("preview_every", 0, "every N steps, sample the EMA network on a fixed val batch and write preview_STEP.png (0: off)"),
    Option("preview_respacing", "ddim25", "sampling steps of the previews (ddimN as at inference)"),
    Option("preview_sampler", "ddim", "sampler of the previews, as generate.py's --sampler (ddim: over --preview_respacing)",
           one_of(*SAMPLERS)),
    Option("preview_sampling_steps", 10, "network passes of a dpm++ preview sampler", at_least(1)),
    Option("keep", 3, "keep the newest N checkpoints"),
    Option("log_every", 100, "write the averaged loss terms every N steps"),
    Option("resume", False, "continue from the newest checkpoint in --output_dir (exactly: data order and RNG included)"),
    Option("init_from", "", "start from these network weights (e.g. the released checkpoint.pt) for fine-tuning"),
    Option("seed", 0, "seed of the initial weights, the data order and the diffusion noise"),
    Option("num_workers", 2, "data-loading worker processes per training process"),
    Option("max_nonfinite", 10, "stop with an error after this many non-finite losses in a row (each is skipped)"),
    Option("augment", False, "mild brightness/contrast/mirror augmentation (the paper uses none)"),
)


def create_parser():
    return create_argparser(MODEL_AND_DIFFUSION_OPTIONS, DATA_OPTIONS, TRAIN_OPTIONS, description=__doc__)


# ----------------------------------------------------------------------------------------------
# Helpers


LPIPS_BACKBONES = ("pretrained", "random")


def load_lpips(device, backbone: str = "pretrained") -> torch.nn.Module:
    """The `lpips` package's VGG LPIPS, frozen. Its VGG-16 weights come from torch's hub cache, or
    with `backbone="random"` are a fixed random draw (seed 0, the same in every run and on resume)."""
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's `pretrained=` deprecation inside lpips
        if backbone == "random":
            with torch.random.fork_rng(devices=[]):  # the training's random stream stays untouched
                torch.manual_seed(0)
                net = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)
        else:
            try:
                net = lpips.LPIPS(net="vgg", verbose=False)
            except Exception as exc:  # the download on a machine without internet
                cached = os.path.join(torch.hub.get_dir(), "checkpoints", LPIPS_VGG_FILE)
                raise CheckpointError(
                    f"LPIPS needs torchvision's VGG-16 weights: put {LPIPS_VGG_FILE} in {os.path.dirname(cached)} "
                    f"(`python -m scripts.fetch_weights vgg16` or torchvision downloads it there on a connected machine), or pass --lpips_backbone random "
                    f"or --lambda_lpips 0 ({exc})"
                ) from exc
    return net.to(device).eval().requires_grad_(False)


def build_losses(args, device, base: Optional[dict] = None):
    """The losses with a non-zero lambda, and the discriminator when the GAN loss is on.

    `base` replaces the diffusion terms {"simple", "l2"} (train_distill.py: the distillation loss);
    every loss `name` is weighted by `args.lambda_<name>`.
    """
    losses = dict(base) if base is not None else {"simple": DiffusionLoss(), "l2": L2Loss()}
    discriminator = None
    if args.lambda_sync:
        from training.syncnet import load_sync_expert

        if args.nframes != 5:
            raise Diff2LipError(f"the lip-sync expert sees 5 frames; --nframes {args.nframes} needs --lambda_sync 0")

        losses["sync"] = SyncLoss(load_sync_expert(args.sync_expert).to(device))
    if args.lambda_lpips:
        losses["lpips"] = LPIPSLoss(load_lpips(device, args.lpips_backbone))
    if args.lambda_gan:
        discriminator = SequencePatchGAN(args.nframes, args.disc_channels).to(device)
        losses["gan"] = SequenceGANLoss(discriminator)
    weights = {name: getattr(args, f"lambda_{name}") for name in losses}
    return losses, weights, discriminator


def forward_losses(args, batch, model, diffusion, losses, weights, generator, device):
    """One micro-batch: Eq. 2-9. Returns the total loss, the logged terms and the predicted sequences."""
    frames = batch["frames"].to(device)
    B, F = frames.shape[:2]
    # One diffusion step per sequence, shared by its frames (Sec. 3.2.1).
    t = torch.randint(0, diffusion.num_timesteps, (B,), generator=generator).repeat_interleave(F).to(device)
    noise = torch.randn(frames.flatten(0, 1).shape, generator=generator).to(device)
    # The masked frame's noise is drawn apart: it must not reveal the noise the model predicts.
    cond_noise = torch.randn(frames.flatten(0, 1).shape, generator=generator).to(device)
    inputs = tfg_process_batch(
        frames, args.face_hide_percentage, ref_frames=batch["refs"].to(device), mels=batch["mels"].to(device), noise=cond_noise
    )
    with autocast(device, args.precision):
        terms = diffusion.training_losses(model, inputs.x_start, t, inputs.model_kwargs, noise=noise, loss_mask=inputs.mask)
        # The image-space losses see x_0 clipped to the image range, as sampling clips it
        # (clip_denoised). Unclipped, x_0 = (x_t - sqrt(1 - a) eps) / sqrt(a) turns the L2 of Eq. 5
        # into (1 - a) / a times the noise MSE, up to 4e4 at t = 999, swamping every other term.
        pred_xstart = terms["pred_xstart"].clamp(-1, 1)
        pred = pred_xstart * inputs.mask + inputs.x_start * (1 - inputs.mask)
        sequences = PredictedSequences(
            pred=pred.unflatten(0, (B, F)),
            real=frames,
            mask=inputs.mask.unflatten(0, (B, F)),
            sync_mel=batch["sync_mel"].to(device),
            diffusion_terms=terms,
        )
        total, logged = weighted_sum(losses, weights, sequences)
    logged["mse"] = terms["mse"].mean().item()
    if "vb" in terms:
        logged["vb"] = terms["vb"].mean().item()
    return total, logged, sequences


def all_finite(loss: torch.Tensor) -> bool:
    """True when the loss is finite on every rank (all ranks must skip a step together)."""
    flag = torch.isfinite(loss.detach()).float().reshape(1)
    if dist_util.world_size() > 1:
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item())


class Preview:
    """Samples a fixed batch (the val split's, else the train split's) with the EMA weights,
    as inference does (DDIM or a DPM-Solver++, one shared noise), and writes `preview_STEP.png`: real | generated."""

    def __init__(self, args, device):
        from guided_diffusion.script_util import create_gaussian_diffusion

        try:
            dataset = TFGDataset(args.data_root, "val", args.nframes)
        except Diff2LipError:
            dataset = TFGDataset(args.data_root, "train", args.nframes)
        self.batch = collate([dataset[(i % len(dataset), i)] for i in range(min(2, len(dataset)))])
        self.diffusion = create_gaussian_diffusion(
            steps=args.diffusion_steps, learn_sigma=args.learn_sigma, noise_schedule=args.noise_schedule,
            timestep_respacing=args.preview_respacing, rescale_timesteps=args.rescale_timesteps,
        )
        self.args, self.device = args, device

    @torch.no_grad()
    def write(self, ema, step: int) -> str:
        import cv2
        import numpy as np

        from guided_diffusion.tfg_data_util import shared_noise

        frames = self.batch["frames"].to(self.device)
        size = frames.shape[-1]
        inputs = tfg_process_batch(
            frames, self.args.face_hide_percentage, ref_frames=self.batch["refs"].to(self.device),
            mels=self.batch["mels"].to(self.device), noise=shared_noise(size, seed=self.args.seed).to(self.device),
        )
        was_training = ema.training
        ema.eval()
        sample = SAMPLERS[self.args.preview_sampler](self.diffusion, ema, inputs.noise, inputs.model_kwargs,
                                                    steps=self.args.preview_sampling_steps)
        ema.train(was_training)
        generated = sample * inputs.mask + inputs.x_start * (1 - inputs.mask)
        grid = torch.cat([torch.cat(list(inputs.x_start), 2), torch.cat(list(generated), 2)], 1)  # [3, 2H, N*W]
        image = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        path = os.path.join(self.args.output_dir, f"preview_{step:07d}.png")
        cv2.imwrite(path, cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
        return path


# ----------------------------------------------------------------------------------------------
# Training


def train(args, objective=None):
    """Run the training; returns the network (unwrapped) and the step it stopped at.

    `objective` replaces Diff2Lip's diffusion objective and keeps everything else of this loop
    (train_distill.py's progressive distillation): its `losses` (the `base` of `build_losses`),
    `attach(model)`, called once with the initialised network, and `forward`, called like
    `forward_losses`.
    """
    dist_util.setup_dist()
    device = dist_util.dev()
    rank, world = dist_util.rank(), dist_util.world_size()
    resolve_precision(args.precision, device)  # one-line errors for a bad value, fp16 without a GPU
    if not args.data_root:
        raise Diff2LipError("--data_root is required: the output folder of dataset/preprocess.py")
    if args.lpips_backbone not in LPIPS_BACKBONES:
        raise Diff2LipError(f"--lpips_backbone {args.lpips_backbone!r} is not one of {', '.join(LPIPS_BACKBONES)}")
    stop = StopSignal()  # from the start: a signal during set-up stops after the first step
    try:
        logger.configure(dir=args.output_dir)

        torch.manual_seed(args.seed)  # the same initial weights on every rank
        flags = args_to_dict(args, tfg_model_and_diffusion_defaults())
        flags["timestep_respacing"] = ""  # training uses every step
        model, diffusion = tfg_create_model_and_diffusion(**flags)
        if args.init_from:
            load_model_weights(model, args.init_from)
        model.to(device)
        ema = copy.deepcopy(model).requires_grad_(False)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        forward = forward_losses
        if objective is not None:
            objective.attach(model)
            forward = objective.forward
        losses, weights, discriminator = build_losses(args, device, None if objective is None else objective.losses)
        disc_opt = torch.optim.AdamW(discriminator.parameters(), lr=args.disc_lr, betas=(0.5, 0.999)) if discriminator else None
        scaler = torch.amp.GradScaler("cuda", enabled=args.precision == "fp16")
        generator = torch.Generator().manual_seed(args.seed * 1009 + rank)

        step = 0
        path = latest_checkpoint(args.output_dir) if args.resume else None
        if path:
            state = dist_util.load_state_dict(path)
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["opt"])
            if discriminator is not None and "disc" in state:
                discriminator.load_state_dict(state["disc"])
                disc_opt.load_state_dict(state["disc_opt"])
            scaler.load_state_dict(state["scaler"])
            step = int(state["step"])
            if len(state["rng"]) == world:
                set_rng_state(state["rng"][rank], generator)
            else:
                logger.warn(f"resuming on {world} processes from {len(state['rng'])}: random streams restart")
            logger.log(f"resumed from {path} at step {step}")
        elif args.resume:
            logger.log(f"--resume: no checkpoint in {args.output_dir}, starting at step 0")

        train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
        train_disc = discriminator
        if discriminator is not None and world > 1:
            train_disc = DDP(discriminator, device_ids=[device.index] if device.type == "cuda" else None)

        dataset = TFGDataset(args.data_root, "train", args.nframes, augment=args.augment)
        if dataset.skipped:
            logger.log(f"skipped {dataset.skipped} clips shorter than {args.nframes + 1} frames with audio")
        sampler = StepSampler(len(dataset), args.batch_size, args.seed, rank, start_step=step * args.accum_steps)
        loader = DataLoader(
            dataset, batch_sampler=sampler, num_workers=args.num_workers, collate_fn=collate,
            generator=torch.Generator().manual_seed(args.seed),  # keeps the global RNG out of data loading
        )
        batches = iter(loader)
        preview = Preview(args, device) if args.preview_every and dist_util.is_main_process() else None
        logger.log(
            f"training {sum(p.numel() for p in model.parameters()):,} parameters on {world} process(es), device {device}; "
            f"{len(dataset)} clips; losses: {', '.join(f'{k}={v}' for k, v in weights.items())}"
        )

        nonfinite = 0
        started = time.perf_counter()
        while args.max_steps == 0 or step < args.max_steps:
            for group in opt.param_groups:
                group["lr"] = warmup_lr(args.lr, step, args.warmup_steps)
            opt.zero_grad(set_to_none=True)
            skip = False
            fakes, reals = [], []
            for micro in range(args.accum_steps):
                batch = next(batches)
                total, logged, sequences = forward(args, batch, train_model, diffusion, losses, weights, generator, device)
                if not all_finite(total):
                    skip = True  # every micro-batch still runs, so all ranks stay in step
                    continue
                last = micro == args.accum_steps - 1
                with train_model.no_sync() if (world > 1 and not last) else contextlib.nullcontext():
                    scaler.scale(total / args.accum_steps).backward()
                for name, value in logged.items():
                    logger.logkv_mean(name, value)
                if discriminator is not None:
                    fakes.append(sequences.pred.detach())
                    reals.append(sequences.real)
            if skip:
                nonfinite += 1
                logger.warn(f"step {step}: non-finite loss, step skipped ({nonfinite} in a row)")
                if nonfinite >= args.max_nonfinite:
                    raise Diff2LipError(
                        f"the loss was non-finite for {nonfinite} steps in a row (last at step {step}); "
                        "lower --lr, use --precision fp32, or check the data"
                    )
                opt.zero_grad(set_to_none=True)
                step += 1
                continue
            nonfinite = 0
            scaler.unscale_(opt)
            if args.grad_clip > 0:
                logger.logkv_mean("grad_norm", torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip).item())
            scaler.step(opt)
            scaler.update()
            update_ema(ema.parameters(), model.parameters(), rate=args.ema_rate)

            if discriminator is not None:
                # Alternating update: the discriminator learns on this step's real and generated sequences.
                disc_opt.zero_grad(set_to_none=True)
                with autocast(device, args.precision):
                    disc_loss = losses["gan"].discriminator_loss(torch.cat(reals), torch.cat(fakes), train_disc)
                disc_loss.backward()
                disc_opt.step()
                logger.logkv_mean("disc", disc_loss.item())

            step += 1
            logger.logkv("step", step)
            logger.logkv("lr", opt.param_groups[0]["lr"])
            if step % args.log_every == 0:
                logger.logkv("samples_per_s", step * args.batch_size * args.accum_steps * world / (time.perf_counter() - started))
                logger.dumpkvs(step)
            if preview is not None and step % args.preview_every == 0:
                logger.log(f"preview {preview.write(ema, step)}")
            stopping = stop.any_rank(device)
            if step % args.save_every == 0 or stopping or step == args.max_steps:
                _save(args, step, model, ema, opt, discriminator, disc_opt, scaler, generator)
            if stopping:
                logger.log(f"stop signal: saved step {step}, exiting")
                break
    finally:
        stop.restore()
    return model, step


def _save(args, step, model, ema, opt, discriminator, disc_opt, scaler, generator) -> None:
    """Rank 0 writes a checkpoint with everything needed to resume exactly."""
    rngs = dist_util.all_gather_object(rng_state(generator))
    if dist_util.is_main_process():
        state = {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "opt": opt.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "args": vars(args),
            "rng": rngs,
        }
        if discriminator is not None:
            state["disc"] = discriminator.state_dict()
            state["disc_opt"] = disc_opt.state_dict()
        path = save_checkpoint(args.output_dir, step, state, args.keep)
        logger.log(f"saved {path}")
    dist_util.barrier()


def main(argv: Optional[List[str]] = None) -> int:
    parser = create_parser()
    # Fine-tuning one of our network files needs no network flags: the file carries them.
    return run_training(train, parser, argv, lambda args, given: take_network_flags(args, given, args.init_from, parser))


if __name__ == "__main__":
    sys.exit(main())
