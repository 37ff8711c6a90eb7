"""Diff2Lip's training (the paper, Sec. 3.2.1): its flags, its losses, and the task that
training.loop runs for train.py (and, with another objective, for scripts/train_distill.py).

Per batch of B sequences of `nframes` frames: one diffusion step t per sequence, shared by its
frames; x_t from Eq. 2 on the masked lower face; the predicted clean frames x0 from the predicted
noise; then L_simple (+ the variational term), L2 on x0 (Eq. 5), the frozen lip-sync expert
(Eq. 6), LPIPS (Eq. 7) and a sequence PatchGAN (Eq. 8) with its own optimizer, summed with
their lambdas (Eq. 9). A lambda of 0 switches its term off.
"""

import contextlib
import copy
from typing import List, Optional

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from common.errors import Diff2LipError
from common.flags import Option, Options, args_to_dict, at_least, between, check_same_flags, create_argparser, one_of
from dataset.shards import SHARD_CACHE, check_data_root, open_root
from dataset.tfg_dataset import StepSampler, TFGDataset, collate
from guided_diffusion import dist_util, logger
from guided_diffusion.lift import init_weights
from guided_diffusion.nn import update_ema
from guided_diffusion.precision import PRECISIONS, autocast, resolve_precision
from guided_diffusion.samplers import SAMPLERS
from guided_diffusion.script_util import (
    DATA_OPTIONS,
    MODEL_AND_DIFFUSION_OPTIONS,
    tfg_create_model_and_diffusion,
    tfg_model_and_diffusion_defaults,
)
from guided_diffusion.tfg_data_util import tfg_process_batch
from training.checkpoints import resume_checkpoint, rng_state, set_rng_state
from training.loop import MAX_NONFINITE, LoopPolicy, StopSignal, all_finite, run_loop, run_training, warmup_lr
from training.losses import (
    LPIPS_BACKBONES,
    DiffusionLoss,
    L2Loss,
    LPIPSLoss,
    PredictedSequences,
    SequenceGANLoss,
    SequencePatchGAN,
    SyncLoss,
    load_lpips,
    weighted_sum,
)
from training.preview import Preview


def train_defaults() -> dict:
    """Training flags (the network and diffusion flags come from script_util)."""
    return TRAIN_OPTIONS.defaults()


TRAIN_OPTIONS = Options(
    Option("data_root", "", "preprocessed data (dataset/preprocess.py output: frame folders or shards), or the URL of "
           "a shard root (file://, http(s)://, gs://, s3://)"),
    SHARD_CACHE,
    Option("output_dir", "outputs/train", "checkpoints, progress.csv, log.txt and TensorBoard events go here"),
    Option("batch_size", 4, "sequences of --nframes frames per process per micro-batch", at_least(1)),
    Option("accum_steps", 1, "micro-batches accumulated per optimizer step", at_least(1)),
    Option("lr", 1e-4, "AdamW learning rate of the network", at_least(0)),
    Option("weight_decay", 0.0, "AdamW weight decay", at_least(0)),
    Option("warmup_steps", 500, "linear learning-rate warm-up steps", at_least(0)),
    Option("grad_clip", 1.0, "clip the gradient norm to this (0: off)", at_least(0)),
    Option("ema_rate", 0.9999, "EMA decay of the weights kept for sampling", between(0, 1)),
    Option("max_steps", 0, "stop after this many optimizer steps (0: until stopped)", at_least(0)),
    Option("lambda_simple", 1.0, "weight of L_simple (+ the variational term), Eq. 3", at_least(0)),
    Option("lambda_l2", 1.0, "weight of the L2 loss on the predicted clean frames, Eq. 5 (0: off)", at_least(0)),
    Option("lambda_sync", 0.03, "weight of the lip-sync expert loss, Eq. 6 (0: off)", at_least(0)),
    Option("lambda_lpips", 0.1, "weight of LPIPS (VGG), Eq. 7 (0: off)", at_least(0)),
    Option("lambda_gan", 0.01, "weight of the sequence PatchGAN loss, Eq. 8 (0: off)", at_least(0)),
    Option("lpips_backbone", "pretrained", "pretrained: LPIPS as published (torchvision's ImageNet VGG-16, downloaded "
           "once); random: the same VGG-16 with fixed random weights (seed 0) under lpips' trained linear heads, for "
           "machines that cannot download (a weaker perceptual loss; the synthetic demo uses it)"),
    Option("sync_expert", "outputs/syncnet128/syncnet_best.pt", "the frozen lip-sync expert: our scripts.train_syncnet "
           "checkpoint or Wav2Lip's lipsync_expert.pth"),
    Option("disc_lr", 1e-4, "AdamW learning rate of the discriminator", at_least(0)),
    Option("disc_channels", 64, "base channel count of the PatchGAN discriminator", at_least(1)),
    Option("precision", "fp32", "fp32, bf16 (autocast) or fp16 (autocast with loss scaling, GPU only)", one_of(*PRECISIONS)),
    Option("save_every", 5000, "write a checkpoint every N steps", at_least(1)),
    Option("preview_every", 0, "every N steps, sample the EMA network on a fixed val batch and write preview_STEP.png "
           "(0: off)", at_least(0)),
    Option("preview_respacing", "ddim25", "sampling steps of the previews (ddimN as at inference)"),
    Option("preview_sampler", "ddim", "sampler of the previews, as generate.py's --sampler (ddim: over "
           "--preview_respacing)", one_of(*SAMPLERS)),
    Option("preview_sampling_steps", 10, "network passes of a dpm++ preview sampler", at_least(1)),
    Option("keep", 3, "keep the newest N checkpoints (0: all)", at_least(0)),
    Option("log_every", 100, "write the averaged loss terms every N steps", at_least(1)),
    Option("resume", False, "continue from the newest complete checkpoint in --output_dir (exactly: data order and RNG "
           "included); a worker group that torchrun --max-restarts brings back does so by itself"),
    Option("init_from", "", "start from these network weights (e.g. the released checkpoint.pt) for fine-tuning; with "
           "--image_size twice the file's, the network is lifted to that size (docs/resolution.md)"),
    Option("freeze_carried_steps", 0, "with a lift (--init_from a network at half --image_size): for the first N steps "
           "only the lifted network's new tensors learn and the ones carried from the file stay as they are, then all "
           "learn (0: all from the start; docs/resolution.md)", at_least(0)),
    Option("seed", 0, "seed of the initial weights, the data order and the diffusion noise", at_least(0)),
    Option("num_workers", 2, "data-loading worker processes per training process", at_least(0)),
    MAX_NONFINITE,
    Option("augment", False, "mild brightness/contrast/mirror augmentation (the paper uses none)"),
)


def create_parser(description: Optional[str] = None):
    """train.py's parser: the network, diffusion and data flags of script_util, then TRAIN_OPTIONS."""
    return create_argparser(MODEL_AND_DIFFUSION_OPTIONS, DATA_OPTIONS, TRAIN_OPTIONS, description=description)


def main(argv: Optional[List[str]] = None, description: Optional[str] = None) -> int:
    """train.py's command (also run by scripts.finetune_speaker): parse, then `train` through the
    one training loop. Fine-tuning one of our network files needs no network flags: the file
    carries them (and --image_size twice the file's lifts it)."""
    from guided_diffusion.lift import take_init_flags

    parser = create_parser(description=description)
    return run_training(train, parser, argv, lambda args, given: take_init_flags(args, given, parser))


# ----------------------------------------------------------------------------------------------
# The objective


def build_losses(args, device, base: Optional[dict] = None):
    """The losses with a non-zero lambda, and the discriminator when the GAN loss is on.

    `base` replaces the diffusion terms {"simple", "l2"} (scripts.train_distill: the distillation
    loss); every loss `name` is weighted by `args.lambda_<name>`.
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
    with autocast(device, args.precision, fp16_autocast=True):
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


# ----------------------------------------------------------------------------------------------
# The task the loop runs


def resume_flags() -> List[str]:
    """The flags that build what a training checkpoint holds (the network, its diffusion, the
    discriminator): a run resumed with another value of one cannot continue it. Not
    --timestep_respacing, which only sampling (the previews) reads."""
    return sorted(set(tfg_model_and_diffusion_defaults()) - {"timestep_respacing"}) + ["disc_channels", "nframes"]


class Diff2LipTask:
    """One optimizer step of the network (accumulated micro-batches, loss scaling, gradient
    clipping, EMA), then the discriminator's; a checkpoint holds both and every random state."""

    def __init__(self, args, model, ema, opt, diffusion, losses, weights, discriminator, disc_opt, scaler,
                 generator, batches, forward, preview, device):
        self.args, self.model, self.ema, self.opt, self.diffusion = args, model, ema, opt, diffusion
        self.losses, self.weights, self.discriminator, self.disc_opt = losses, weights, discriminator, disc_opt
        self.scaler, self.generator, self.batches, self.forward = scaler, generator, batches, forward
        self.preview, self.device = preview, device
        self.train_model, self.train_disc = model, discriminator
        self.frozen: List[torch.nn.Parameter] = []  # learn only from step --freeze_carried_steps on

    def distribute(self) -> None:
        """Wrap the networks that learn in DDP (it broadcasts rank 0's weights now)."""
        if dist_util.world_size() == 1:
            return
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.train_model = DDP(self.model, device_ids=device_ids)
        if self.discriminator is not None:
            self.train_disc = DDP(self.discriminator, device_ids=device_ids)

    def step(self, step: int) -> bool:
        args, opt, world = self.args, self.opt, dist_util.world_size()
        for group in opt.param_groups:
            group["lr"] = warmup_lr(args.lr, step, args.warmup_steps)
        opt.zero_grad(set_to_none=True)
        skip = False
        fakes, reals = [], []
        for micro in range(args.accum_steps):
            batch = next(self.batches)
            total, logged, sequences = self.forward(args, batch, self.train_model, self.diffusion, self.losses,
                                                    self.weights, self.generator, self.device)
            if not all_finite(total):
                skip = True  # every micro-batch still runs, so all ranks stay in step
                continue
            last = micro == args.accum_steps - 1
            with self.train_model.no_sync() if (world > 1 and not last) else contextlib.nullcontext():
                self.scaler.scale(total / args.accum_steps).backward()
            for name, value in logged.items():
                logger.logkv_mean(name, value)
            if self.discriminator is not None:
                fakes.append(sequences.pred.detach())
                reals.append(sequences.real)
        if skip:
            opt.zero_grad(set_to_none=True)
            return False
        self.scaler.unscale_(opt)
        if step < args.freeze_carried_steps:
            # A parameter without a gradient is left alone by the optimizer, its moments included:
            # the carried tensors start learning afresh when the new level has caught up.
            for p in self.frozen:
                p.grad = None
        if args.grad_clip > 0:
            logger.logkv_mean("grad_norm", torch.nn.utils.clip_grad_norm_(self.model.parameters(), args.grad_clip).item())
        self.scaler.step(opt)
        self.scaler.update()
        update_ema(self.ema.parameters(), self.model.parameters(), rate=args.ema_rate)

        if self.discriminator is not None:
            # Alternating update: the discriminator learns on this step's real and generated sequences.
            self.disc_opt.zero_grad(set_to_none=True)
            with autocast(self.device, args.precision, fp16_autocast=True):
                disc_loss = self.losses["gan"].discriminator_loss(torch.cat(reals), torch.cat(fakes), self.train_disc)
            disc_loss.backward()
            self.disc_opt.step()
            logger.logkv_mean("disc", disc_loss.item())
        logger.logkv("lr", opt.param_groups[0]["lr"])
        return True

    def after_step(self, step: int, last: bool) -> bool:
        if self.preview is not None and step % self.args.preview_every == 0:
            logger.log(f"preview {self.preview.write(self.ema, step)}")
        return False

    def log_totals(self, step: int, elapsed: float) -> dict:
        args = self.args
        return {"samples_per_s": step * args.batch_size * args.accum_steps * dist_util.world_size() / elapsed}

    def checkpoint(self, step: int) -> Optional[dict]:
        rngs = dist_util.all_gather_object(rng_state(self.generator))
        if not dist_util.is_main_process():
            return None
        state = {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "opt": self.opt.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": step,
            "args": vars(self.args),
            "rng": rngs,
        }
        if self.discriminator is not None:
            state["disc"] = self.discriminator.state_dict()
            state["disc_opt"] = self.disc_opt.state_dict()
        return state

    def load(self, state: dict) -> int:
        """Continue from checkpoint `state`; returns its step."""
        rank, world = dist_util.rank(), dist_util.world_size()
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        if self.discriminator is not None and "disc" in state:
            self.discriminator.load_state_dict(state["disc"])
            self.disc_opt.load_state_dict(state["disc_opt"])
        self.scaler.load_state_dict(state["scaler"])
        if len(state["rng"]) == world:
            set_rng_state(state["rng"][rank], self.generator)
        else:
            logger.warn(f"resuming on {world} processes from {len(state['rng'])}: random streams restart")
        return int(state["step"])


# ----------------------------------------------------------------------------------------------
# Training


def train(args, objective=None):
    """Run the training; returns the network (unwrapped) and the step it stopped at.

    `objective` replaces Diff2Lip's diffusion objective and keeps everything else of this loop
    (scripts.train_distill's progressive distillation): its `losses` (the `base` of
    `build_losses`), `attach(model)`, called once with the initialised network, and `forward`,
    called like `forward_losses`.
    """
    dist_util.setup_dist()
    device = dist_util.dev()
    rank, world = dist_util.rank(), dist_util.world_size()
    resolve_precision(args.precision, device)  # one-line errors for a bad value, fp16 without a GPU
    check_data_root(args.data_root)
    if args.lpips_backbone not in LPIPS_BACKBONES:
        raise Diff2LipError(f"--lpips_backbone {args.lpips_backbone!r} is not one of {', '.join(LPIPS_BACKBONES)}")
    stop = StopSignal()  # from the start: a signal during set-up stops after the first step
    try:
        logger.configure(dir=args.output_dir)

        torch.manual_seed(args.seed)  # the same initial weights on every rank
        flags = args_to_dict(args, tfg_model_and_diffusion_defaults())
        flags["timestep_respacing"] = ""  # training uses every step
        model, diffusion = tfg_create_model_and_diffusion(**flags)
        lift = init_weights(model, args.init_from) if args.init_from else None  # a lift: the file is half --image_size
        if args.freeze_carried_steps and lift is None:
            raise Diff2LipError(f"--freeze_carried_steps {args.freeze_carried_steps} freezes what a lift carried; give "
                                f"--init_from a network at half --image_size {args.image_size}, or drop the flag")
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
        task = Diff2LipTask(args, model, ema, opt, diffusion, losses, weights, discriminator, disc_opt, scaler,
                            generator, None, forward, None, device)
        if args.freeze_carried_steps:
            carried = set(lift.carried.values())
            task.frozen = [p for name, p in model.named_parameters() if name in carried]

        step = 0
        resumed = resume_checkpoint(args.output_dir, args.resume, required=("model", "ema", "opt", "step", "rng"))
        if resumed:
            check_same_flags(resumed[1].get("args", {}), args, resume_flags(), f"--resume True: checkpoint '{resumed[0]}'",
                             "give the checkpoint's value, or another --output_dir to start a new run")
            step = task.load(resumed[1])
            logger.log(f"resumed from {resumed[0]} at step {step}")
        task.distribute()

        dataset = TFGDataset(open_root(args.data_root, args.shard_cache), "train", args.nframes, augment=args.augment)
        if dataset.skipped:
            logger.log(f"skipped {dataset.skipped} clips shorter than {args.nframes + 1} frames with audio")
        sampler = StepSampler(len(dataset), args.batch_size, args.seed, rank, start_step=step * args.accum_steps)
        loader = DataLoader(
            dataset, batch_sampler=sampler, num_workers=args.num_workers, collate_fn=collate,
            generator=torch.Generator().manual_seed(args.seed),  # keeps the global RNG out of data loading
        )
        task.batches = iter(loader)
        task.preview = Preview(args, device) if args.preview_every and dist_util.is_main_process() else None
        logger.log(
            f"training {sum(p.numel() for p in model.parameters()):,} parameters on {world} process(es), device {device}; "
            f"{len(dataset)} clips; losses: {', '.join(f'{k}={v}' for k, v in weights.items())}"
        )
        policy = LoopPolicy(args.output_dir, args.max_steps, args.save_every, args.keep, args.log_every,
                            args.max_nonfinite)
        step = run_loop(task, policy, step, stop, device)
    finally:
        stop.restore()
    return model, step
