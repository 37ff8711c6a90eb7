"""The command line of `generate.py` (one process) and `generate_dist.py` (torchrun / mpiexec).

Both take the released flags unchanged. A single video is one clip; under several processes
its chunks are split over the ranks and rank 0 joins them in order. A filelist is split over
the ranks item by item; a failing item is reported and the others go on, and the run ends with
a summary and a non-zero exit code if anything failed.
"""

import argparse
import os
import sys
import time
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from dataset.video_io import check_video_output, iter_frames, probe_video
from face_detection import BatchedDetector, ClipScan, make_detector, parse_box, parse_face_select, parse_pads
from guided_diffusion import dist_util
from guided_diffusion.checkpoint_format import apply_checkpoint_flags, load_model_weights, read_metadata
from common.command import Interrupted, check_output_folder, check_outputs, run_command
from common.errors import Diff2LipError, MediaError
from guided_diffusion.precision import prepare_for_inference, resolve_precision
from common.progress import Progress
from common.flags import args_to_dict, create_argparser, validate_flags
from guided_diffusion.script_util import (
    tfg_create_diffusion,
    tfg_create_model_and_diffusion,
    tfg_model_and_diffusion_defaults,
    tfg_model_defaults,
)

from .options import GENERATE_OPTIONS
from .filelist import FilelistItem, for_each_item, output_name, read_filelist, resolve_media, safe_output_path, unique_items
from .lipsync import (
    FPS,
    LipSyncer,
    SamplingOptions,
    SourceFrames,
    boxes_for_clip,
    track_for_clip,
    driving_audio,
    plan_clip,
    split_range,
    write_clip,
)

DESCRIPTION = """Lip-sync videos to speech with Diff2Lip.

single video:  --generate_from_filelist 0 --video_path V --audio_path A --out_path O
filelist:      --generate_from_filelist 1 --test_video_dir D --filelist L --sample_path S
modes:         cross = --sampling_input_type gt --sampling_ref_type gt;
               reconstruction = first_frame / first_frame
"""


def create_parser():
    return create_argparser(GENERATE_OPTIONS, description=DESCRIPTION)


def sampling_options(args) -> SamplingOptions:
    """The sampling options of parsed (and so validated) flags."""
    return SamplingOptions(
        image_size=args.image_size,
        face_hide_percentage=args.face_hide_percentage,
        sampling_seed=args.sampling_seed,
        sampling_input_type=args.sampling_input_type,
        sampling_ref_type=args.sampling_ref_type,
        sampling_batch_size=args.sampling_batch_size,
        use_ddim=args.use_ddim,
        sampler=args.sampler,
        sampling_steps=args.sampling_steps,
        solver_spacing=args.solver_spacing,
        cache_interval=args.cache_interval,
        cache_depth=args.cache_depth,
        clip_denoised=args.clip_denoised,
        paste=args.paste,
        color_match=args.color_match,
        face_select=args.face_select,
        no_face=args.no_face,
        max_fill_gap=args.max_fill_gap,
        cut_threshold=args.cut_threshold,
        loop_video=args.loop_video,
        is_voxceleb2=args.is_voxceleb2,
        box=parse_box(args.box) if args.box else None,
        pads=parse_pads(args.pads),
        channel_order=args.channel_order,
        precision=args.precision,
        progress=args.progress and dist_util.is_main_process(),
    )


def network_key(args) -> tuple:
    """What the loaded network depends on: its file, its flags, the device and how it runs."""
    keys = ("model_path", "device", "precision", "use_fp16", "compile", "learn_sigma", *tfg_model_defaults())
    # the file's time too: a network re-exported under the same name is loaded again
    mtime = os.path.getmtime(args.model_path) if os.path.exists(args.model_path) else None
    return (*((k, getattr(args, k)) for k in sorted(set(keys))), ("mtime", mtime))


def detector_key(args) -> tuple:
    return tuple((k, getattr(args, k)) for k in ("face_detector", "device", "face_det_batch_size", "face_det_scale"))


class Generator:
    """Loads the network once and lip-syncs clips with it.

    :param reuse: a Generator whose loaded network (and face detector) this one takes when they
        were built from the same flags (`network_key`, `detector_key`), so that changing only
        sampling or face options (the web app's controls) does not load the network again.
    """

    def __init__(self, args, reuse: Optional["Generator"] = None):
        self.args = args
        self.device = torch.device(args.device) if args.device else dist_util.dev()
        precision = resolve_precision(args.precision, self.device, args.use_fp16)
        if args.use_fp16 and precision != "fp16":
            dist_util.print0(f"--use_fp16 True on {self.device.type}: running {precision} instead of float16")
        key = network_key(args)  # before the resolved precision replaces an automatic one
        args.precision = precision
        self.opts = sampling_options(args)
        flags = args_to_dict(args, tfg_model_and_diffusion_defaults())
        if reuse is not None and reuse.network_key == key:
            model, diffusion = reuse.syncer.model, tfg_create_diffusion(**flags)
        else:
            model, diffusion = tfg_create_model_and_diffusion(**flags)
            load_model_weights(model, args.model_path)
            model = prepare_for_inference(model, self.device, precision, compile=args.compile)
        self.network_key = key
        self.syncer = LipSyncer(model, diffusion, self.opts, self.device)
        self._detector = reuse._detector if reuse is not None and detector_key(reuse.args) == detector_key(args) else None
        dist_util.print0(
            f"model {args.model_path}: {sum(p.numel() for p in model.parameters()):,} parameters on {self.device}, "
            f"{precision}, {args.timestep_respacing or 'all'} steps"
        )

    @property
    def detector(self) -> BatchedDetector:
        if self._detector is None:
            self._detector = make_detector(self.args.face_detector, self.device, self.args.face_det_batch_size,
                                           self.args.face_det_scale, log=dist_util.print0)
        return self._detector

    def _needs_detector(self) -> bool:
        return self.opts.box is None and not self.opts.is_voxceleb2

    def clip(
        self,
        video_path: str,
        audio_path: str,
        out_path: str,
        orig_path: Optional[str] = None,
        split: bool = False,
        on_progress: Optional[Callable[[float, float], None]] = None,
    ) -> int:
        """Lip-sync one clip into `out_path`; with `split`, the ranks share its chunks.

        :param on_progress: called as `on_progress(frames_done, frames_total)` after every network
            pass (fractional frames; this process's share in a split run).
        Returns the number of frames written.
        """
        opts = self.opts
        outputs = [out_path] + ([orig_path] if orig_path else [])
        check_outputs(outputs, [video_path, audio_path])
        plan = plan_clip(video_path, audio_path, opts)
        out_dir = os.path.dirname(os.path.abspath(out_path))
        os.makedirs(out_dir, exist_ok=True)
        frames = SourceFrames(plan, cache_dir=out_dir)
        try:
            ranks = dist_util.world_size() if split else 1
            rank = dist_util.rank() if split else 0
            a, b = split_range(plan.n_source, ranks, rank)
            boxes, scan = boxes_for_clip(plan, frames, opts, self.detector if self._needs_detector() else None, a, b)
            weights = None
            if boxes is None:
                if split:
                    scan = ClipScan.join(dist_util.all_gather_object(scan))
                # Every rank tracks the same joined scan: one track and cut list for the clip.
                track = track_for_clip(scan, plan, opts)
                boxes, weights = track.boxes, track.weights
                dist_util.print0(f"{video_path}: {track.summary()}")
            audio = driving_audio(plan)
            own = split_range(plan.n_frames, ranks, rank, align=opts.sampling_batch_size)
            with Progress(own[1] - own[0], os.path.basename(out_path), "frame", opts.progress, callback=on_progress) as bar:
                if ranks == 1:
                    count = write_clip(out_path, self.syncer.generate(plan, frames, boxes, 0, plan.n_frames, bar.update, weights), audio)
                else:
                    count = self._clip_split(plan, frames, boxes, out_path, audio, bar.update, weights)
            if orig_path is not None and dist_util.is_main_process():
                # The untouched source frames under the output's audio (the real frames in
                # reconstruction mode: the ground truth that evaluation compares against).
                source = frames.for_outputs(0, plan.n_frames) if plan.revisit else iter_frames(video_path, FPS, 0, plan.n_frames)
                write_clip(orig_path, source, audio)
            return count
        finally:
            frames.close()

    def _clip_split(self, plan, frames, boxes, out_path, audio, progress, weights=None) -> int:
        """Each rank writes its chunk-aligned frame range to a part file; rank 0 encodes them in order."""
        rank, ranks = dist_util.rank(), dist_util.world_size()
        parts = [_part_path(out_path, r) for r in range(ranks)]
        a, b = split_range(plan.n_frames, ranks, rank, align=self.opts.sampling_batch_size)
        h, w = plan.frame_hw
        try:
            if b > a:
                part = np.lib.format.open_memmap(parts[rank] + ".tmp", mode="w+", dtype=np.uint8, shape=(b - a, h, w, 3))
                for i, frame in enumerate(self.syncer.generate(plan, frames, boxes, a, b, progress, weights)):
                    part[i] = frame
                part.flush()
                del part
                os.replace(parts[rank] + ".tmp", parts[rank])
            dist_util.barrier()
            count = 0
            if dist_util.is_main_process():
                present = [p for p in parts if os.path.exists(p)]
                count = write_clip(out_path, (f for p in present for f in np.load(p, mmap_mode="r")), audio)
            dist_util.barrier()
            return count
        finally:
            # Finished or stopped, the part files are scratch: each rank removes its own, rank 0 all.
            mine = parts if dist_util.is_main_process() else [parts[rank]]
            for p in mine + [parts[rank] + ".tmp"]:
                if os.path.exists(p):
                    os.remove(p)


def _part_path(out_path: str, rank: int) -> str:
    folder, name = os.path.split(os.path.abspath(out_path))
    return os.path.join(folder, f".{name}.rank{rank}.npy")


def _check_input(path: str, flag: str) -> None:
    if not path:
        raise Diff2LipError(f"--generate_from_filelist 0 needs {flag}")
    if not os.path.isfile(path):
        problem = "is a folder" if os.path.isdir(path) else "does not exist"
        raise MediaError(f"{flag} '{path}' {problem}; give a file")


def _finished_output(path: str) -> bool:
    """True when `path` is a readable video with frames: only such a file is trusted by
    --skip_existing (a 0-byte or half-written file from elsewhere is made again)."""
    try:
        return probe_video(path, FPS).num_frames > 0
    except MediaError:
        return False


def single_outputs(args) -> List[str]:
    """--out_path, and with --save_orig the untouched input beside it as ..._orig.mp4."""
    outputs = [args.out_path]
    if args.save_orig:
        outputs.append(os.path.splitext(args.out_path)[0] + "_orig.mp4")
    return outputs


def check_single(args) -> None:
    """Inputs and outputs of a single run, checked before the network is built."""
    _check_input(args.video_path, "--video_path")
    _check_input(args.audio_path, "--audio_path")
    if not args.out_path:
        raise Diff2LipError("--generate_from_filelist 0 needs --out_path")
    outputs = single_outputs(args)
    check_outputs(outputs, [args.video_path, args.audio_path])
    for out in outputs:
        check_video_output(out, "--out_path")


def check_filelist_run(args) -> Tuple[List[FilelistItem], List[str]]:
    """The flags of a list run, checked before the network is built; returns `read_filelist`'s
    items and malformed-line messages."""
    if not args.filelist or not args.test_video_dir:
        raise Diff2LipError("--generate_from_filelist 1 needs --filelist and --test_video_dir")
    if not os.path.isdir(args.test_video_dir):
        problem = "is a file" if os.path.exists(args.test_video_dir) else "does not exist"
        raise Diff2LipError(f"--test_video_dir '{args.test_video_dir}' {problem}; give the folder the filelist paths are relative to")
    check_output_folder(args.sample_path, "--sample_path")
    return read_filelist(args.filelist)


def run_single(gen: Generator, distributed: bool) -> int:
    args = gen.args
    start = time.perf_counter()
    outputs = single_outputs(args)
    orig = outputs[1] if len(outputs) > 1 else None
    count = gen.clip(args.video_path, args.audio_path, args.out_path, orig, split=distributed)
    dist_util.print0(f"wrote {args.out_path}: {count} frames at {FPS} fps in {time.perf_counter() - start:.1f} s")
    return 0


def run_filelist(gen: Generator, items: List[FilelistItem], problems: List[str]) -> int:
    args = gen.args
    items, duplicates = unique_items(items, args.filelist)
    mine = items[dist_util.rank() :: dist_util.world_size()]
    main_rank = dist_util.is_main_process()
    failures: List[str] = list(problems) if main_rank else []
    counts = {"done": 0, "skipped": 0}

    def process(item) -> None:
        video = resolve_media(args.test_video_dir, item.video_rel)
        audio = resolve_media(args.test_video_dir, item.audio_rel)
        out = safe_output_path(args.sample_path, item.name)
        orig = None
        if args.save_orig:
            orig = safe_output_path(args.sample_path, output_name(item.audio_rel, item.video_rel, "_orig"))
        if args.skip_existing and all(_finished_output(p) for p in (out, orig) if p):
            counts["skipped"] += 1
            return
        gen.clip(video, audio, out, orig)
        counts["done"] += 1

    def summary(done: int, skipped: int, failed: List[str], stopped: str = "") -> None:
        for line in failed:
            print(f"failed: {line}", file=sys.stderr)
        for line in duplicates if main_rank else []:
            print(f"duplicate: {line}", file=sys.stderr)
        tail = f"; stopped by {stopped} before the rest, run again with --skip_existing True to finish" if stopped else ""
        print(
            f"summary: {done} generated, {skipped} skipped (already there), {len(failed)} failed, "
            f"{len(duplicates) if main_rank else 0} duplicate line(s) done once, into {args.sample_path}{tail}"
        )

    try:
        for_each_item(mine, process, args.filelist, gen.opts.progress, failures)
    except Interrupted as exc:
        # Only this rank's own figures: the other ranks may be stopping too, none can wait for them.
        summary(counts["done"], counts["skipped"], failures, exc.name)
        raise
    totals = dist_util.all_gather_object((counts["done"], counts["skipped"], failures))
    if main_rank:
        summary(sum(t[0] for t in totals), sum(t[1] for t in totals), [f for t in totals for f in t[2]])
    return 1 if any(t[2] for t in totals) else 0


def parse_args(argv: Sequence[str]) -> Tuple[argparse.Namespace, List[str], dict]:
    """generate.py's flags with the checkpoint's own filled in: `(args, flags taken from the
    file, what the file says it was trained on)`. The command line, the web app and the Python
    API all start here.

    Our network files carry their flags (a student its step count): the command line needs only
    what it wants to change, and a network flag that contradicts the file is an error. What the
    file sets is validated like a typed flag.
    """
    parser = create_parser()
    args = parser.parse_args(list(argv))
    stored, trained_on = read_metadata(args.model_path)
    taken = apply_checkpoint_flags(args, argv, stored, args.model_path)
    if taken:
        validate_flags(args, parser.options, parser.flag_rules)
    return args, taken, trained_on


def main(argv: Optional[List[str]] = None, distributed: bool = False) -> int:
    def body() -> int:
        args, taken, trained_on = parse_args(sys.argv[1:] if argv is None else argv)
        # Everything that can be checked without the network is, before it is loaded.
        work = check_filelist_run(args) if args.generate_from_filelist else check_single(args)
        if distributed:
            dist_util.setup_dist()
        if taken:
            dist_util.print0(f"flags from {args.model_path}: {' '.join(taken)}")
        if trained_on.get("note"):
            dist_util.print0(f"note on {args.model_path}: {trained_on['note']}")
        gen = Generator(args)
        return run_filelist(gen, *work) if args.generate_from_filelist else run_single(gen, distributed)

    try:
        return run_command(body)
    finally:
        if distributed:
            dist_util.cleanup()
