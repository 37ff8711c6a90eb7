"""Score generated lip-sync videos with the paper's metrics and print Table 2 for the run.

    python evaluate.py --mode reconstruction --filelist dataset/filelists/voxceleb2_test_n_500_reconstruction.txt \
        --real_root /data/voxceleb2/test/mp4 --generated_root outputs/samples_recon --output_dir outputs/eval_recon
    torchrun --nproc_per_node 4 evaluate.py ...      mpiexec -n 4 python evaluate.py ...

Per clip, the features and scores are cached in OUTPUT_DIR/cache/, so an interrupted run
resumes; clips that fail are listed and the others go on. Outputs: per_clip.csv / .json,
summary.json and table.md (the paper's rows beside this run's).
"""

import os
import sys
from typing import List, Optional

import numpy as np

from common.command import Interrupted, check_output_folder, run_command
from common.errors import Diff2LipError
from common.flags import DEVICE, PROGRESS, Option, Options, at_least, create_argparser, one_of
from evaluation.lse import FACE_TRACKS
from evaluation.runner import (
    METRICS,
    Metrics,
    cache_path,
    clip_paths,
    per_clip_rows,
    save_cache,
    summarise,
    table,
    write_outputs,
)
from guided_diffusion import dist_util
from inference.filelist import for_each_item, read_filelist, unique_items


def evaluate_defaults() -> dict:
    return EVALUATE_OPTIONS.defaults()


def _metric_list(value: str) -> List[str]:
    return [m.strip() for m in value.split(",") if m.strip()]


def _check_metrics(value: str) -> Optional[str]:
    unknown = sorted(set(_metric_list(value)) - set(METRICS))
    if unknown or not _metric_list(value):
        return f"unknown {', '.join(unknown) or 'empty list'}; expected a comma list of {', '.join(METRICS)}"
    return None


EVALUATE_OPTIONS = Options(
    Option("mode", "reconstruction", "reconstruction (SSIM/PSNR/LMD against the clip itself) or cross", one_of("reconstruction", "cross")),
    Option("filelist", "", "the filelist given to generate.py ('AUDIO_REL VIDEO_REL' lines)"),
    Option("real_root", "", "root of the real videos (generate.py's --test_video_dir)"),
    Option("generated_root", "", "generate.py's --sample_path (outputs named AUDIO.REL_VIDEO.REL.mp4)"),
    Option("output_dir", "outputs/eval", "per_clip.csv/json, summary.json, table.md and the per-clip cache go here"),
    Option("metrics", ",".join(METRICS), "comma list of fid, ssim, psnr, lmd, lse (ssim and psnr only in reconstruction)", _check_metrics),
    DEVICE,
    Option("batch_size", 32, "frames per network call for the feature extractors", at_least(1)),
    Option("syncnet_model", "checkpoints/syncnet_v2.model", "syncnet_python's syncnet_v2.model for LSE-C / LSE-D"),
    Option("face_track", "s3fd", "LSE face track: s3fd (the reference protocol), voxceleb2 (fixed crop) or none (already a face track)", one_of(*(t for t in FACE_TRACKS if t != "box"))),
    Option("is_voxceleb2", True, "mouth crops and landmarks use the fixed VoxCeleb2 face box instead of S3FD"),
    PROGRESS,
)


def create_parser():
    return create_argparser(EVALUATE_OPTIONS, description=__doc__)


def check_paths(args) -> None:
    """The inputs and the output folder, before any network is loaded."""
    for flag in ("filelist", "real_root", "generated_root"):
        if not getattr(args, flag):
            raise Diff2LipError(f"--{flag} is required")
    for flag in ("real_root", "generated_root"):
        folder = getattr(args, flag)
        if not os.path.isdir(folder):
            problem = "is a file" if os.path.exists(folder) else "does not exist"
            raise Diff2LipError(f"--{flag} '{folder}' {problem}; give a folder")
    check_output_folder(args.output_dir, "--output_dir")


def main(argv: Optional[List[str]] = None) -> int:
    def body() -> int:
        args = create_parser().parse_args(argv)
        check_paths(args)
        dist_util.setup_dist()
        return run(args)

    try:
        return run_command(body)
    finally:
        dist_util.cleanup()


def run(args) -> int:
    metrics = _metric_list(args.metrics)
    device = args.device or str(dist_util.dev())
    items, problems = read_filelist(args.filelist)
    items, duplicates = unique_items(items, args.filelist)
    main_rank = dist_util.is_main_process()
    failures = list(problems) if main_rank else []
    paths = {}
    for item in items:
        try:
            paths[item] = clip_paths(item, args.mode, args.real_root, args.generated_root)
        except Diff2LipError as exc:  # a line that leaves its root: reported, the others are scored
            if main_rank:
                failures.append(f"{args.filelist}:{item.line_no}: {exc}")
    items = [item for item in items if item in paths]
    mine = items[dist_util.rank() :: dist_util.world_size()]
    todo = [item for item in mine if not os.path.exists(cache_path(args.output_dir, paths[item].name))]
    scorer = Metrics(metrics, args.mode, device, args.batch_size, args.syncnet_model, args.face_track, args.is_voxceleb2) if todo else None

    def process(item) -> None:
        save_cache(cache_path(args.output_dir, paths[item].name), scorer.clip(paths[item]))

    try:
        for_each_item(todo, process, args.filelist, args.progress and main_rank, failures)
    except Interrupted as exc:
        scored = sum(os.path.exists(cache_path(args.output_dir, paths[item].name)) for item in mine)
        print(f"stopped by {exc.name}: {scored} of {len(mine)} clips scored and cached in {args.output_dir}; "
              "run the same command again to finish")
        raise
    failures = [f for part in dist_util.all_gather_object(failures) for f in part]
    dist_util.barrier()
    if not dist_util.is_main_process():
        return 1 if failures else 0

    caches = {}
    for item in items:
        name = paths[item].name
        path = cache_path(args.output_dir, name)
        if os.path.exists(path):
            with np.load(path) as data:
                caches[name] = {k: data[k] for k in data.files}
    used = [m for m in metrics if not (args.mode == "cross" and m in ("ssim", "psnr"))]
    summary = summarise(caches, args.mode, used)
    text = table(summary, args.mode)
    write_outputs(args.output_dir, per_clip_rows(caches), summary, text)
    for line in failures:
        print(f"failed: {line}", file=sys.stderr)
    for line in duplicates:
        print(f"duplicate: {line}", file=sys.stderr)
    print(text)
    extra = f"; mouth-region FID {summary['fid_mouth']:.2f}" if "fid_mouth" in summary else ""
    print(f"{len(caches)} clips scored, {len(failures)} failed{extra}; files in {args.output_dir}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
