"""The pipeline object: `Generator` loads a Diff2Lip network once and lip-syncs clips with it.

The command line (`inference/cli.py`: generate.py, generate_dist.py), the Python API, the web app
and the demo all lip-sync through it. It is built from generate.py's parsed flags
(`inference.options.parse_args`); `check_single` checks a single clip's files first, so that bad
input fails before any network is loaded.
"""

import os
from typing import Callable, List, Optional

import numpy as np
import torch

from common.command import check_outputs
from common.errors import Diff2LipError, MediaError
from common.files import reserve_space
from common.flags import args_to_dict
from common.progress import Progress
from dataset.video_io import check_video_output, iter_frames
from face_detection import BatchedDetector, ClipScan, make_detector, no_face_hint
from guided_diffusion import dist_util
from guided_diffusion.checkpoint_format import load_model_weights
from guided_diffusion.precision import prepare_with_precision
from guided_diffusion.script_util import (
    tfg_create_diffusion,
    tfg_create_model_and_diffusion,
    tfg_model_and_diffusion_defaults,
    tfg_model_defaults,
)

from .lipsync import (
    FPS,
    LipSyncer,
    SamplingOptions,
    SourceFrames,
    boxes_for_clip,
    driving_audio,
    plan_clip,
    split_range,
    track_for_clip,
    write_clip,
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
        key = network_key(args)  # before the chosen precision replaces an automatic one
        flags = args_to_dict(args, tfg_model_and_diffusion_defaults())
        if reuse is not None and reuse.network_key == key:
            model, diffusion = reuse.syncer.model, tfg_create_diffusion(**flags)
            precision, why = reuse.precision, reuse.precision_reason
        else:
            model, diffusion = tfg_create_model_and_diffusion(**flags)
            load_model_weights(model, args.model_path)
            model, precision, why = prepare_with_precision(model, self.device, args.precision, args.use_fp16,
                                                           args.image_size, compile=args.compile, log=dist_util.print0,
                                                           batch_size=args.sampling_batch_size)
            dist_util.print0(f"precision {precision}: {why}")
        args.precision = precision
        self.precision, self.precision_reason = precision, why
        self.opts = SamplingOptions.from_args(args)
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
            # Ranges start on keyframes (--detect_every), so a split scan has the keyframes of one process.
            a, b = split_range(plan.n_source, ranks, rank, align=opts.detect_every)
            boxes, scan = boxes_for_clip(plan, frames, opts, self.detector if self._needs_detector() else None, a, b)
            weights = None
            if boxes is None:
                if split:
                    scan = ClipScan.join(dist_util.all_gather_object(scan))
                # Every rank tracks the same joined scan: one track and cut list for the clip.
                track = track_for_clip(scan, plan, opts)
                boxes, weights = track.boxes, track.weights
                dist_util.print0(f"{video_path}: {track.summary()}")
                if track.n_generated == 0:
                    dist_util.print0(no_face_hint(self.detector, plan.frame_hw, len(track.weights), video_path))
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
                reserve_space(parts[rank] + ".tmp", os.path.getsize(parts[rank] + ".tmp"))  # a full disk: no SIGBUS
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
