"""The command line of `generate.py` (one process) and `generate_dist.py` (torchrun / mpiexec).

Both take the released flags unchanged. A single video is one clip; under several processes
its chunks are split over the ranks and rank 0 joins them in order. A filelist is split over
the ranks item by item; a failing item is reported and the others go on, and the run ends with
a summary and a non-zero exit code if anything failed.
"""

import itertools
import os
import sys
import time
from typing import List, Optional

import numpy as np
import torch

from dataset.video_io import iter_frames
from face_detection import FaceDetector, boxes_from_detections, parse_box, parse_pads
from guided_diffusion import dist_util
from guided_diffusion.errors import Diff2LipError
from guided_diffusion.inference_util import prepare_for_inference, resolve_precision
from guided_diffusion.script_util import (
    args_to_dict,
    create_argparser,
    load_model_weights,
    tfg_create_model_and_diffusion,
    tfg_data_defaults,
    tfg_model_and_diffusion_defaults,
    tfg_sampling_defaults,
)

from .filelist import for_each_item, output_name, read_filelist, resolve_media, safe_output_path
from .lipsync import (
    FPS,
    LipSyncer,
    SamplingOptions,
    SourceFrames,
    boxes_for_clip,
    driving_audio,
    plan_clip,
    split_range,
    write_clip,
)

INPUT_TYPES = ("gt", "first_frame")
REF_TYPES = ("gt", "first_frame", "random")
PASTE_MODES = ("full", "lower")

DESCRIPTION = """Lip-sync videos to speech with Diff2Lip.

single video:  --generate_from_filelist 0 --video_path V --audio_path A --out_path O
filelist:      --generate_from_filelist 1 --test_video_dir D --filelist L --sample_path S
modes:         cross = --sampling_input_type gt --sampling_ref_type gt;
               reconstruction = first_frame / first_frame
"""


def create_parser():
    return create_argparser(
        tfg_model_and_diffusion_defaults(), tfg_data_defaults(), tfg_sampling_defaults(), description=DESCRIPTION
    )


def sampling_options(args) -> SamplingOptions:
    """Validate the sampling flags into options; errors name the flag."""
    if args.sampling_input_type not in INPUT_TYPES:
        raise Diff2LipError(f"--sampling_input_type {args.sampling_input_type!r} is not one of {', '.join(INPUT_TYPES)}")
    if args.sampling_ref_type not in REF_TYPES:
        raise Diff2LipError(f"--sampling_ref_type {args.sampling_ref_type!r} is not one of {', '.join(REF_TYPES)}")
    if args.paste not in PASTE_MODES:
        raise Diff2LipError(f"--paste {args.paste!r} is not one of {', '.join(PASTE_MODES)}")
    if args.channel_order not in ("rgb", "bgr"):
        raise Diff2LipError(f"--channel_order {args.channel_order!r} is not rgb or bgr")
    if args.sampling_batch_size < 1:
        raise Diff2LipError("--sampling_batch_size must be at least 1")
    return SamplingOptions(
        image_size=args.image_size,
        face_hide_percentage=args.face_hide_percentage,
        sampling_seed=args.sampling_seed,
        sampling_input_type=args.sampling_input_type,
        sampling_ref_type=args.sampling_ref_type,
        sampling_batch_size=args.sampling_batch_size,
        use_ddim=args.use_ddim,
        clip_denoised=args.clip_denoised,
        paste=args.paste,
        loop_video=args.loop_video,
        is_voxceleb2=args.is_voxceleb2,
        box=parse_box(args.box) if args.box else None,
        pads=parse_pads(args.pads),
        channel_order=args.channel_order,
        precision=args.precision,
        progress=args.progress and dist_util.is_main_process(),
    )


class Generator:
    """Loads the network once and lip-syncs clips with it."""

    def __init__(self, args):
        self.args = args
        self.device = torch.device(args.device) if args.device else dist_util.dev()
        precision = resolve_precision(args.precision, self.device, args.use_fp16)
        if args.use_fp16 and precision != "fp16":
            dist_util.print0(f"--use_fp16 True on {self.device.type}: running {precision} instead of float16")
        args.precision = precision
        self.opts = sampling_options(args)
        model, diffusion = tfg_create_model_and_diffusion(**args_to_dict(args, tfg_model_and_diffusion_defaults()))
        load_model_weights(model, args.model_path)
        model = prepare_for_inference(model, self.device, precision)
        self.syncer = LipSyncer(model, diffusion, self.opts, self.device)
        self._detector = None
        dist_util.print0(
            f"model {args.model_path}: {sum(p.numel() for p in model.parameters()):,} parameters on {self.device}, "
            f"{precision}, {args.timestep_respacing or 'all'} steps"
        )

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector(device=self.device, batch_size=self.args.face_det_batch_size, scale=self.args.face_det_scale)
        return self._detector

    def _needs_detector(self) -> bool:
        return self.opts.box is None and not self.opts.is_voxceleb2

    def clip(self, video_path: str, audio_path: str, out_path: str, orig_path: Optional[str] = None, split: bool = False) -> int:
        """Lip-sync one clip into `out_path`; with `split`, the ranks share its chunks.

        Returns the number of frames written.
        """
        opts = self.opts
        plan = plan_clip(video_path, audio_path, opts)
        out_dir = os.path.dirname(os.path.abspath(out_path))
        os.makedirs(out_dir, exist_ok=True)
        frames = SourceFrames(plan, cache_dir=out_dir)
        try:
            ranks = dist_util.world_size() if split else 1
            rank = dist_util.rank() if split else 0
            a, b = split_range(plan.n_source, ranks, rank)
            boxes, raw = boxes_for_clip(plan, frames, opts, self.detector if self._needs_detector() else None, a, b)
            if boxes is None:
                if split:
                    raw = list(itertools.chain.from_iterable(dist_util.all_gather_object(raw)))
                boxes, n_missing = boxes_from_detections(raw, plan.frame_hw, opts.pads, video_path)
                if n_missing:
                    dist_util.print0(f"{video_path}: no face in {n_missing} of {len(raw)} frames; used the nearest detected box")
            audio = driving_audio(plan)
            bar = _frame_bar(plan.n_frames, os.path.basename(out_path), opts.progress)
            progress = bar.update if bar is not None else None
            if ranks == 1:
                count = write_clip(out_path, self.syncer.generate(plan, frames, boxes, 0, plan.n_frames, progress), audio)
            else:
                count = self._clip_split(plan, frames, boxes, out_path, audio, progress)
            if bar is not None:
                bar.close()
            if orig_path is not None and dist_util.is_main_process():
                # The untouched source frames under the output's audio (the real frames in
                # reconstruction mode: the ground truth that evaluation compares against).
                source = frames.for_outputs(0, plan.n_frames) if plan.revisit else iter_frames(video_path, FPS, 0, plan.n_frames)
                write_clip(orig_path, source, audio)
            return count
        finally:
            frames.close()

    def _clip_split(self, plan, frames, boxes, out_path, audio, progress) -> int:
        """Each rank writes its chunk-aligned frame range to a part file; rank 0 encodes them in order."""
        rank, ranks = dist_util.rank(), dist_util.world_size()
        parts = [_part_path(out_path, r) for r in range(ranks)]
        a, b = split_range(plan.n_frames, ranks, rank, align=self.opts.sampling_batch_size)
        h, w = plan.frame_hw
        if b > a:
            part = np.lib.format.open_memmap(parts[rank] + ".tmp", mode="w+", dtype=np.uint8, shape=(b - a, h, w, 3))
            for i, frame in enumerate(self.syncer.generate(plan, frames, boxes, a, b, progress)):
                part[i] = frame
            part.flush()
            del part
            os.replace(parts[rank] + ".tmp", parts[rank])
        dist_util.barrier()
        count = 0
        if dist_util.is_main_process():
            present = [p for p in parts if os.path.exists(p)]
            count = write_clip(out_path, (f for p in present for f in np.load(p, mmap_mode="r")), audio)
            for p in present:
                os.remove(p)
        dist_util.barrier()
        return count


def _part_path(out_path: str, rank: int) -> str:
    folder, name = os.path.split(os.path.abspath(out_path))
    return os.path.join(folder, f".{name}.rank{rank}.npy")


def _frame_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="frame", leave=False)


def run_single(gen: Generator, distributed: bool) -> int:
    args = gen.args
    for flag in ("video_path", "audio_path", "out_path"):
        if not getattr(args, flag):
            raise Diff2LipError(f"--generate_from_filelist 0 needs --{flag}")
    start = time.perf_counter()
    orig = None
    if args.save_orig:
        root, _ = os.path.splitext(args.out_path)
        orig = root + "_orig.mp4"
    count = gen.clip(args.video_path, args.audio_path, args.out_path, orig, split=distributed)
    dist_util.print0(f"wrote {args.out_path}: {count} frames at {FPS} fps in {time.perf_counter() - start:.1f} s")
    return 0


def run_filelist(gen: Generator) -> int:
    args = gen.args
    if not args.filelist or not args.test_video_dir:
        raise Diff2LipError("--generate_from_filelist 1 needs --filelist and --test_video_dir")
    items, problems = read_filelist(args.filelist)
    mine = items[dist_util.rank() :: dist_util.world_size()]
    failures: List[str] = list(problems) if dist_util.is_main_process() else []
    counts = {"done": 0, "skipped": 0}

    def process(item) -> None:
        out = safe_output_path(args.sample_path, item.name)
        if args.skip_existing and os.path.exists(out):
            counts["skipped"] += 1
            return
        orig = None
        if args.save_orig:
            orig = safe_output_path(args.sample_path, output_name(item.audio_rel, item.video_rel, "_orig"))
        gen.clip(resolve_media(args.test_video_dir, item.video_rel), resolve_media(args.test_video_dir, item.audio_rel), out, orig)
        counts["done"] += 1

    failures += for_each_item(mine, process, args.filelist, gen.opts.progress)
    totals = dist_util.all_gather_object((counts["done"], counts["skipped"], failures))
    done = sum(t[0] for t in totals)
    skipped = sum(t[1] for t in totals)
    failures = [f for t in totals for f in t[2]]
    if dist_util.is_main_process():
        for line in failures:
            print(f"failed: {line}", file=sys.stderr)
        print(f"summary: {done} generated, {skipped} skipped (already there), {len(failures)} failed, into {args.sample_path}")
    return 1 if failures else 0


def main(argv: Optional[List[str]] = None, distributed: bool = False) -> int:
    try:
        args = create_parser().parse_args(argv)
        if distributed:
            dist_util.setup_dist()
        gen = Generator(args)
        return run_filelist(gen) if args.generate_from_filelist else run_single(gen, distributed)
    except Diff2LipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if distributed:
            dist_util.cleanup()
