"""Training the lip-sync expert (SyncNet128 / SyncNet64, `training.syncnet`): its options, the
BCE task that `training.loop.run_loop` runs, and resuming; `python -m scripts.train_syncnet` is
the command.

Each sample is 5 consecutive face crops of a random clip and the SyncNet mel window of a random
start frame s: half the time the frames are s..s+4 (in sync, label 1), otherwise s'..s'+4 with
|s' - s| >= --min_offset (off sync, label 0). The loss is the binary cross-entropy of the cosine
similarity of the two embeddings.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Optional

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from common.errors import CheckpointError, Diff2LipError
from common.flags import Option, Options, at_least, between, create_argparser, one_of
from dataset.shards import SHARD_CACHE, check_data_root, open_root
from dataset.sync_pairs import VAL_SEED, SyncPairs, SyncPairSampler
from guided_diffusion import dist_util, logger
from training.checkpoints import resume_checkpoint
from training.loop import MAX_NONFINITE, LoopPolicy, StopSignal, all_finite, run_loop
from training.syncnet import TRAINABLE, SyncExpert, expert_accuracy, save_syncnet_checkpoint, sync_bce

PREFIX = "syncnet"  # checkpoints are syncnet_STEP.pt
BEST_NAME = "syncnet_best.pt"


def syncnet_train_defaults() -> dict:
    """Every flag of scripts.train_syncnet with its default (Wav2Lip's expert settings where it had one)."""
    return SYNCNET_OPTIONS.defaults()


SYNCNET_OPTIONS = Options(
    Option("data_root", "", "preprocessed data (dataset/preprocess.py output: frame folders or shards, with train.txt "
           "and val.txt), or the URL of a shard root (file://, http(s)://, gs://, s3://)"),
    SHARD_CACHE,
    Option("output_dir", "outputs/syncnet128", "where checkpoints syncnet_STEP.pt, syncnet_best.pt, log.txt and progress.csv go"),
    Option("kind", "syncnet128", "the network: syncnet128 (for 128 px crops, 18.3M parameters) or syncnet64 (light, "
           "for 64 px crops, 2.6M parameters); any crop size works, the lower half is resized to the network's input",
           one_of(*TRAINABLE)),
    Option("batch_size", 64, "pairs per step and process (the global batch is this times the number of processes); "
           "BatchNorm runs per process on 1x1 embeddings, so keep it at 16 or more (at least 2)", at_least(2)),
    Option("lr", 1e-4, "AdamW learning rate (Wav2Lip's expert: 1e-4)",
           between(0, math.inf, low_open=True, high_open=True)),
    Option("weight_decay", 0.0, "AdamW weight decay (0 is Wav2Lip's plain Adam)", at_least(0)),
    Option("max_steps", 200000, "train until this optimizer step (a resumed run counts from its checkpoint's step)", at_least(1)),
    Option("min_offset", 5, "off-sync pairs take frames at least this many frames away from the audio's", at_least(1)),
    Option("val_every", 1000, "validate every this many steps and at the end (0: no validation, no syncnet_best.pt)", at_least(0)),
    Option("val_pairs", 1024, "size of the fixed set of validation pairs drawn from val.txt's clips"),
    Option("save_every", 5000, "write syncnet_STEP.pt every this many steps and at the end", at_least(1)),
    Option("keep", 3, "keep only the newest this many syncnet_STEP.pt files", at_least(1)),
    Option("log_every", 100, "write the mean training loss to stdout, progress.csv and TensorBoard every this many steps", at_least(1)),
    Option("resume", False, "continue from the newest complete syncnet_STEP.pt in --output_dir (starts fresh if there is "
           "none); a worker group that torchrun --max-restarts brings back does so by itself"),
    Option("num_workers", 4, "DataLoader worker processes per training process (0: load in the training process)", at_least(0)),
    Option("seed", 0, "seed of the network's initialisation and of the training pairs", at_least(0)),
    MAX_NONFINITE,
)


def create_parser(description: str = "") -> argparse.ArgumentParser:
    parser = create_argparser(SYNCNET_OPTIONS, description=description)
    parser.prog = "python -m scripts.train_syncnet"
    return parser


def check_args(args: argparse.Namespace) -> None:
    """What the declarations cannot check alone: the data folder, and validation pairs when validating."""
    check_data_root(args.data_root)
    if args.val_every and args.val_pairs < 1:
        raise Diff2LipError(f"--val_pairs must be at least 1 when validating, got {args.val_pairs}")


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, frames: torch.Tensor, mel: torch.Tensor,
               label: torch.Tensor) -> Optional[float]:
    """One optimizer step on a batch (frames `[B, 5, 3, S, S]`, mel `[B, 80, 16]`, label `[B]`);
    returns the loss, or None when it was non-finite on some rank (then nothing was updated)."""
    audio_emb, video_emb = model(frames, mel)
    loss = sync_bce(audio_emb, video_emb, label)
    opt.zero_grad(set_to_none=True)
    if not all_finite(loss):
        return None
    loss.backward()
    opt.step()
    return loss.item()


class SyncNetTask:
    """The SyncNet BCE objective for training.loop: one step per batch of pairs, validation every
    --val_every steps and at the end (the best accuracy also as syncnet_best.pt)."""

    def __init__(self, args, expert: SyncExpert, model: torch.nn.Module, opt: torch.optim.Optimizer, batches,
                 val_set: Optional[SyncPairs], seed: int, best_val_acc: float, device):
        self.args, self.expert, self.model, self.opt, self.batches = args, expert, model, opt, batches
        self.val_set, self.seed, self.best_val_acc, self.device = val_set, seed, best_val_acc, device

    def step(self, step: int) -> bool:
        frames, mel, label = next(self.batches)
        loss = train_step(self.model, self.opt, frames.to(self.device, non_blocking=True),
                          mel.to(self.device, non_blocking=True), label.to(self.device, non_blocking=True))
        if loss is None:
            return False
        logger.logkv_mean("loss", loss)
        return True

    def after_step(self, step: int, last: bool) -> bool:
        args = self.args
        if self.val_set is None or not (step % args.val_every == 0 or last):
            return False
        # Each rank's BatchNorm statistics saw only its own batches: validate rank 0's, the saved ones.
        dist_util.sync_params(self.expert.buffers())
        val_loss, val_acc = expert_accuracy(self.expert, self.val_set, args.batch_size, args.num_workers)
        self.model.train()
        logger.logkv("val_loss", val_loss)
        logger.logkv("val_acc", val_acc)
        if val_acc > self.best_val_acc:
            self.best_val_acc = val_acc
            if dist_util.is_main_process():
                save_syncnet_checkpoint(os.path.join(args.output_dir, BEST_NAME), self.expert.net, self.expert.kind,
                                        **self.resume_state(step))
        return True

    def log_totals(self, step: int, elapsed: float) -> dict:
        return {"samples": step * self.args.batch_size * dist_util.world_size()}

    def resume_state(self, step: int) -> dict:
        """What a resumed run needs besides the weights: optimizer, step, flags and the pair seed
        (the data position is the step: pair i is a function of (seed, i))."""
        return dict(opt=self.opt.state_dict(), step=step, args=vars(self.args), rng={"seed": self.seed},
                    best_val_acc=self.best_val_acc)

    def checkpoint(self, step: int) -> dict:
        """`{"kind", "model", ...}` as `save_syncnet_checkpoint` writes it, with `resume_state`."""
        return {"kind": self.expert.kind, "model": self.expert.net.state_dict(), **self.resume_state(step)}


def load_resume_state(args: argparse.Namespace) -> Optional[dict]:
    """The newest complete checkpoint to continue from (with --resume True or after an elastic
    restart), or None for a fresh start; every rank gets the same one."""
    resumed = resume_checkpoint(args.output_dir, args.resume, PREFIX, required=("kind", "model", "opt", "step", "rng"))
    if resumed is None:
        return None
    path, ckpt = resumed
    if ckpt["kind"] not in TRAINABLE:
        raise CheckpointError(f"'{path}' is not a scripts.train_syncnet checkpoint; move it out of --output_dir")
    if ckpt["kind"] != args.kind:
        raise Diff2LipError(
            f"'{path}' holds a {ckpt['kind']} but --kind is {args.kind}; pass --kind {ckpt['kind']} to resume it"
        )
    ckpt["path"] = path
    return ckpt


def train(args: argparse.Namespace) -> SyncExpert:
    """Train (or continue training) the --kind network in this process group; returns the trained expert."""
    check_args(args)
    resume = load_resume_state(args)
    # The pairs continue the interrupted run's sequence even if --seed changed since.
    seed = resume["rng"]["seed"] if resume else args.seed
    start_step = resume["step"] if resume else 0
    best_val_acc = resume.get("best_val_acc", -1.0) if resume else -1.0
    rank, world = dist_util.rank(), dist_util.world_size()
    global_batch = args.batch_size * world
    source = open_root(args.data_root, args.shard_cache)
    train_set = SyncPairs(source, "train", args.max_steps * global_batch, seed, args.min_offset)
    val_set = None
    if args.val_every:
        try:
            val_set = SyncPairs(source, "val", args.val_pairs, VAL_SEED, args.min_offset)
        except Diff2LipError as exc:
            raise Diff2LipError(f"{exc} (or pass --val_every 0 to train without validation)") from exc

    stop = StopSignal()  # from here: a signal during set-up stops after the first step
    try:
        logger.configure(args.output_dir)

        torch.manual_seed(args.seed)
        device = dist_util.dev()
        expert = SyncExpert(args.kind).to(device)
        opt = torch.optim.AdamW(expert.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        if resume:
            expert.net.load_state_dict(resume["model"])
            opt.load_state_dict(resume["opt"])
            logger.log(f"resumed from {resume['path']} at step {start_step}")
        # DDP broadcasts rank 0's weights now and all-reduces the gradients of every step.
        model = (DistributedDataParallel(expert, device_ids=[device] if device.type == "cuda" else None)
                 if world > 1 else expert)
        n_params = sum(p.numel() for p in expert.parameters())
        logger.log(
            f"{args.kind}: {n_params:,} parameters on {device}, {world} process(es); "
            f"train: {len(train_set.clips)} clips ({train_set.skipped} too short skipped)"
            + (f", val: {len(val_set.clips)} clips, {len(val_set)} fixed pairs" if val_set else ", no validation")
        )
        if start_step >= args.max_steps:
            logger.log(f"already at step {start_step} >= --max_steps {args.max_steps}; nothing to do")
            return expert

        loader = DataLoader(
            train_set, batch_size=args.batch_size, num_workers=args.num_workers, pin_memory=device.type == "cuda",
            sampler=SyncPairSampler(start_step, args.max_steps, args.batch_size, rank, world),
        )
        model.train()
        task = SyncNetTask(args, expert, model, opt, iter(loader), val_set, seed, best_val_acc, device)
        policy = LoopPolicy(args.output_dir, args.max_steps, args.save_every, args.keep, args.log_every,
                            args.max_nonfinite, prefix=PREFIX)
        run_loop(task, policy, start_step, stop, device)
    finally:
        stop.restore()
    # Every rank returns only once rank 0 has written the final checkpoint.
    dist_util.barrier()
    return expert
