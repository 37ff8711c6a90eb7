"""The command line of `generate.py` (one process) and `generate_dist.py` (torchrun / mpiexec).

Both take the released flags unchanged. A single video is one clip; under several processes
its chunks are split over the ranks and rank 0 joins them in order. A filelist is split over
the ranks item by item; a failing item is reported and the others go on, and the run ends with
a summary and a non-zero exit code if anything failed.
"""

import os
import sys
import time
from typing import List, Optional, Tuple

from common.command import Interrupted, check_output_folder, run_command
from common.errors import Diff2LipError, MediaError
from dataset.video_io import probe_video
from guided_diffusion import dist_util

from .filelist import (
    FilelistItem,
    for_each_item,
    output_name,
    read_filelist,
    resolve_media,
    safe_output_path,
    unique_items,
)
from .lipsync import FPS
from .options import parse_args
from .pipeline import Generator, check_single, single_outputs

__all__ = ["check_filelist_run", "main", "run_filelist", "run_single"]


def _finished_output(path: str) -> bool:
    """True when `path` is a readable video with frames: only such a file is trusted by
    --skip_existing (a 0-byte or half-written file from elsewhere is made again)."""
    try:
        return probe_video(path, FPS).num_frames > 0
    except MediaError:
        return False


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
