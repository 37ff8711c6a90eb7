"""Turn a tree of talking-face videos into the training format of `dataset/preprocessed.py`.

    python dataset/preprocess.py --input_root voxceleb2/dev/mp4 --output_root data/vox --num_workers 8

Per clip: the audio track at 16 kHz and Wav2Lip's mel of it, the frames at 25 fps, one face box
per frame (the fixed VoxCeleb2 crop, or S3FD with Wav2Lip's fill, pads and smoothing, the same
code as inference), and the crops resized to `--image_size`. A clip keeps
n_frames = min(video frames, full mel windows), as inference does. Clips that cannot be used
(unreadable, no audio, too short, no face) are listed with the reason in `report.json`; the run
goes on. Finished clips are skipped on a rerun, so an interrupted run is resumed by running the
same command again. `train.txt` / `val.txt` list the finished clips.

Many workers (machines, GPUs, job-array tasks) split the clip list: worker I of N takes the I-th of
N contiguous, disjoint parts of the sorted list. I and N come from `--shard_index I --num_shards N`,
or from the launcher: torchrun (RANK, WORLD_SIZE), mpiexec (OMPI_COMM_WORLD_RANK/SIZE, PMI_RANK/SIZE),
srun (SLURM_PROCID, SLURM_NTASKS), a Slurm array (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT), a
Kubernetes indexed job (JOB_COMPLETION_INDEX, with --num_shards N). Each worker records what it did
in `workers/I-of-N.json`; the last one to finish merges: train.txt, val.txt, report.json and
manifest.json (`--merge True` merges again, from any machine). N workers write the same clips, byte
for byte, as one. `--format shards` writes WebDataset tar shards (`dataset/shards.py`) instead of
frame folders.

Layouts (the clip name is the video's path under the input root, without extension):
  voxceleb2  ID/VIDEO/00001.mp4               val = a fraction of the identities
  lrw        WORD/{train,val,test}/WORD_00001  the dataset's own split; test only with --include_test
  folder     any videos, at any depth          val = a fraction of the clips
With `--train_list` / `--val_list` (files of clip names, e.g. the ones dataset/synthetic.py writes)
the split is the lists', in any layout, and only the listed clips are preprocessed.
"""

import argparse
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
from dataclasses import dataclass
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

if __package__ in (None, ""):
    # Run as `python dataset/preprocess.py`: Python put dataset/ on the path; the packages live one up.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from audio.audio import load_wav, melspectrogram, num_full_windows  # noqa: E402
from common.command import (  # noqa: E402
    Interrupted,
    check_output_folder,
    run_command,
    sigterm_unwinds,
    worker_signals,
)
from common.errors import CheckpointError, Diff2LipError, DiskFullError, MediaError  # noqa: E402
from common.files import atomic_write_json  # noqa: E402
from common.flags import PROGRESS, Option, Options, at_least, between, check_device, create_argparser, one_of, str2bool  # noqa: E402
from common.progress import track  # noqa: E402
from dataset.preprocessed import clip_dir, write_clip, write_split  # noqa: E402
from dataset.shards import MANIFEST, SHARD_SIZE_MB, ShardWriter, folder_manifest, folder_sample, manifest, shard_records  # noqa: E402
from dataset.video_io import iter_frames, probe_video  # noqa: E402
from face_detection import (  # noqa: E402
    Box,
    FaceDetector,
    boxes_from_detections,
    crop_face,
    detect_faces,
    fixed_boxes,
    parse_pads,
)
from face_detection.options import FACE_OPTIONS  # noqa: E402

FPS = 25
SAMPLE_RATE = 16000
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm")
LAYOUTS = ("auto", "voxceleb2", "lrw", "folder")
LRW_SPLITS = ("train", "val", "test")
FORMATS = ("folders", "shards")
WORKERS = "workers"  # what each worker did: workers/I-of-N.json
VOXCELEB2_IDENTITY = re.compile(r"id\d+")
# A clip needs two frames with audio: a training sample's reference must lie outside its window.
MIN_WINDOWS = 2


def preprocess_defaults() -> dict:
    """Flags of `dataset/preprocess.py` and their defaults."""
    return PREPROCESS_OPTIONS.defaults()


@dataclass(frozen=True)
class WorkerOptions:
    """What a worker needs to preprocess one clip (picklable, for spawned workers)."""

    output_root: str
    image_size: int
    is_voxceleb2: bool
    pads: Box
    face_det_batch_size: int
    device: str
    min_frames: int


@dataclass(frozen=True)
class Job:
    name: str  # clip name: the path under the input root, '/'-separated, without extension
    video: str  # absolute path of the video


def _check_is_voxceleb2(value: str) -> Optional[str]:
    if value == "auto":
        return None
    try:
        str2bool(value)
    except argparse.ArgumentTypeError:
        return "expected True, False or auto"
    return None


def _check_pads(value: str) -> Optional[str]:
    parse_pads(value)  # raises its own message
    return None

PREPROCESS_OPTIONS = Options(
    Option("input_root", "", "folder of the videos (a VoxCeleb2 or LRW tree, or any folder of mp4/mkv/avi/mov/webm)"),
    Option("output_root", "", "folder of the preprocessed clips, train.txt, val.txt and report.json"),
    Option("layout", "auto", "auto, voxceleb2 (ID/VIDEO/00001.mp4), lrw (WORD/{train,val,test}/WORD_00001.mp4) or folder; "
        "auto recognises the first two by their structure", one_of(*LAYOUTS)),
    Option("is_voxceleb2", "auto", "True: the fixed VoxCeleb2 face crop; False: the S3FD face detector; "
        "auto: True for the voxceleb2 layout, else False", _check_is_voxceleb2),
    Option("image_size", 128, "side of the square face crops written (the network's --image_size)", at_least(8)),
    Option("pads", "0,0,0,0", "face box padding top,bottom,left,right in pixels (S3FD only; the VoxCeleb2 crop is not padded)", _check_pads),
    FACE_OPTIONS["face_det_batch_size"],
    Option("device", "", "device of the face detector: cpu, cuda, cuda:1, ...; '' = cuda if available, else cpu", check_device),
    Option("first_utterance_only", False, "keep only the first clip (alphabetically: 00001 in VoxCeleb2) of each folder, "
        "as the paper trains on VoxCeleb2"),
    Option("min_frames", 6, "skip clips with fewer frames with audio (the training window plus one reference: nframes + 1)", at_least(MIN_WINDOWS)),
    Option("val_fraction", 0.05, "fraction of the identities (voxceleb2) or clips (folder) in val.txt; if > 0, at least one "
        "when there are two or more", between(0, 1, high_open=True)),
    Option("seed", 0, "seed of the train/val split"),
    Option("include_test", False, "lrw: also preprocess the test folders and list them in val.txt"),
    Option("train_list", "", "a file of clip names (every whitespace-separated name, e.g. dataset/synthetic.py's train.txt): "
        "take the split from the lists instead of --val_fraction; only the listed clips are preprocessed"),
    Option("val_list", "", "the same for val.txt (e.g. dataset/synthetic.py's test.txt, so held-out identities stay out "
        "of training)"),
    Option("num_workers", 1, "worker processes (1 = this process)", at_least(1)),
    Option("format", "folders", "folders: a folder of JPEG crops per clip; shards: WebDataset tar shards of whole clips "
           "(dataset/shards.py; few big files, for clusters and object stores)", one_of(*FORMATS)),
    SHARD_SIZE_MB,
    Option("shard_index", -1, "this worker's part of the clip list, 0 .. --num_shards - 1; -1 = from the launcher's "
           "environment (torchrun, mpiexec, srun, a Slurm array, JOB_COMPLETION_INDEX), else 0", at_least(-1)),
    Option("num_shards", 0, "how many workers split the clip list; 0 = from the launcher's environment, else 1",
           at_least(0)),
    Option("merge", False, "only merge what the workers finished: train.txt, val.txt, report.json, manifest.json "
           "(the last worker does it by itself; any machine may do it again)"),
    PROGRESS,
)


def create_parser() -> argparse.ArgumentParser:
    return create_argparser(PREPROCESS_OPTIONS, description=__doc__)


# ----------------------------------------------------------------------------------------------
# Finding the clips


def find_videos(input_root: str, exclude: Optional[str] = None) -> List[str]:
    """Paths of the videos under `input_root`, relative to it, '/'-separated, sorted.

    Hidden files and folders are ignored, and so is `exclude` (an output root inside the input
    root: walking its thousands of crop folders would be slow and find nothing).
    """
    root = os.path.realpath(input_root)
    exclude = os.path.realpath(exclude) if exclude else None
    if exclude and os.path.commonpath([root, exclude]) != root:
        exclude = None  # outside the tree: no folder needs comparing with it
    found = []
    for folder, subfolders, files in os.walk(input_root):
        subfolders[:] = [
            d for d in subfolders
            if not d.startswith(".") and not (exclude and os.path.realpath(os.path.join(folder, d)) == exclude)
        ]
        rel_folder = os.path.relpath(folder, input_root)
        for f in files:
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS:
                rel = os.path.normpath(os.path.join(rel_folder, f))
                found.append(rel.replace(os.sep, "/"))
    return sorted(found)


def _is_voxceleb2_path(rel: str, strict: bool) -> bool:
    parts = rel.split("/")
    return len(parts) == 3 and (not strict or VOXCELEB2_IDENTITY.fullmatch(parts[0]) is not None)


def _is_lrw_path(rel: str, strict: bool) -> bool:
    parts = rel.split("/")
    return len(parts) == 3 and parts[1] in LRW_SPLITS and (not strict or parts[2].startswith(parts[0] + "_"))


def resolve_layout(layout: str, videos: Sequence[str]) -> str:
    """The layout of the tree: `auto` is voxceleb2 when every video is `idNNN/VIDEO/CLIP`, lrw when
    every video is `WORD/{train,val,test}/WORD_*`, else folder. An explicit layout that some video
    does not fit (three levels; lrw: a train/val/test middle folder) is an error naming it."""
    if layout not in LAYOUTS:
        raise Diff2LipError(f"--layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    if layout == "auto":
        if all(_is_voxceleb2_path(v, strict=True) for v in videos):
            return "voxceleb2"
        if all(_is_lrw_path(v, strict=True) for v in videos):
            return "lrw"
        return "folder"
    expected = {
        "voxceleb2": (lambda v: _is_voxceleb2_path(v, strict=False), "ID/VIDEO/CLIP.mp4"),
        "lrw": (lambda v: _is_lrw_path(v, strict=False), "WORD/{train,val,test}/CLIP.mp4"),
    }
    if layout in expected:
        fits, shape = expected[layout]
        for v in videos:
            if not fits(v):
                raise Diff2LipError(f"--layout {layout} expects {shape} under --input_root, found '{v}'; "
                                    "use --layout folder or fix the tree")
    return layout


def select_clips(videos: Sequence[str], layout: str, first_utterance_only: bool, include_test: bool
                 ) -> Tuple[List[Tuple[str, str]], List[Dict[str, str]]]:
    """(clip name, video rel path) pairs to preprocess, and skipped entries for names that clash:
    two videos with one name (a.mp4, a.mkv), or a clip whose folder would hold another clip
    (a.mp4 and a/b.mp4: writing clips/a would replace clips/a/b)."""
    if layout == "lrw" and not include_test:
        videos = [v for v in videos if v.split("/")[1] != "test"]
    if first_utterance_only:
        first: Dict[str, str] = {}
        for v in videos:  # sorted, so the first one seen per folder is the alphabetically first
            first.setdefault(os.path.dirname(v), v)
        videos = sorted(first.values())
    chosen: Dict[str, str] = {}
    skipped = []
    for v in videos:
        name = os.path.splitext(v)[0]
        if name in chosen:
            skipped.append({"clip": name, "reason": f"'{v}' has the same clip name as '{chosen[name]}'; rename one"})
        else:
            chosen[name] = v
    holders = {}  # folder -> a clip inside it
    for name in chosen:
        parts = name.split("/")
        for i in range(1, len(parts)):
            holders.setdefault("/".join(parts[:i]), name)
    for name in sorted(set(chosen) & set(holders)):
        reason = f"'{chosen.pop(name)}' would hold clip '{holders[name]}' in its folder; rename one"
        skipped.append({"clip": name, "reason": reason})
    return sorted(chosen.items()), skipped


def read_clip_list(path: str, flag: str) -> List[str]:
    """The clip names in a list file: every whitespace-separated token, in order, without repeats."""
    usage = "give a text file of clip names such as ID/VIDEO/00001"
    if not os.path.isfile(path):
        raise Diff2LipError(f"{flag} '{path}' {'is a folder' if os.path.isdir(path) else 'not found'}; {usage}")
    try:
        with open(path, encoding="utf-8") as f:
            return list(dict.fromkeys(f.read().split()))
    except UnicodeDecodeError as exc:
        raise Diff2LipError(f"{flag} '{path}' is not UTF-8 text (byte {exc.start}); {usage}") from None
    except OSError as exc:
        raise Diff2LipError(f"{flag} '{path}' cannot be read ({exc.strerror or exc}); {usage}") from None


def apply_lists(pairs: Sequence[Tuple[str, str]], train_list: Sequence[str], val_list: Sequence[str]
                ) -> Tuple[List[Tuple[str, str]], List[Dict[str, str]]]:
    """Keep the pairs whose clip is listed; a listed clip without a video is reported as skipped."""
    both = sorted(set(train_list) & set(val_list))
    if both:
        raise Diff2LipError(
            f"{len(both)} clip(s) are in both --train_list and --val_list (first: '{both[0]}'); a clip "
            "belongs to one split"
        )
    listed = set(train_list) | set(val_list)
    found = {name for name, _ in pairs}
    missing = [{"clip": name, "reason": "listed but no video of that name under --input_root"}
               for name in sorted(listed - found)]
    return [(name, rel) for name, rel in pairs if name in listed], missing


# ----------------------------------------------------------------------------------------------
# One clip


class _ClipWorker:
    """Preprocesses clips in one process; the face detector is built on first need and kept."""

    def __init__(self, opts: WorkerOptions):
        self.opts = opts
        self._detector = None

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            device = self.opts.device
            if not device:
                import torch

                # One GPU per worker under torchrun / srun on a machine with several.
                local = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))
                device = f"cuda:{local % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
            self._detector = FaceDetector(device=device, batch_size=self.opts.face_det_batch_size)
        return self._detector

    def __call__(self, job: Job) -> Tuple[str, Optional[str]]:
        """(clip name, None when written or the one-line reason it was skipped)."""
        try:
            self.process(job)
            return job.name, None
        except (CheckpointError, DiskFullError):
            raise  # missing S3FD weights or a full disk: every clip would fail the same way, so stop the run
        except Diff2LipError as exc:
            return job.name, _one_line(str(exc))
        except Exception as exc:  # a codec or library failure on one file must not stop the others
            return job.name, _one_line(f"{type(exc).__name__}: {exc}")

    def process(self, job: Job) -> int:
        """Write one clip; returns its frame count. Raises Diff2LipError for an unusable clip."""
        opts = self.opts
        info = probe_video(job.video, FPS)
        if not info.has_audio:
            raise MediaError(f"video '{job.video}' has no audio track")
        wav = load_wav(job.video, SAMPLE_RATE)
        mel = melspectrogram(wav)
        n_frames = min(info.num_frames, num_full_windows(mel.shape[1], FPS))
        needed = max(MIN_WINDOWS, opts.min_frames)
        if n_frames < needed:
            raise MediaError(
                f"too short: {n_frames} frames with audio (video {info.num_frames} frames, audio "
                f"{wav.size / SAMPLE_RATE:.2f} s), at least {needed} needed"
            )
        boxes, n_missing = self.boxes(job.video, n_frames, (info.height, info.width))
        meta = dict(image_size=opts.image_size, fps=FPS, source=job.video, n_missing_faces=int(n_missing))
        # The whole audio track is kept, not n_frames / 25 s of it: the last frames' mel windows
        # reach past that. mel.npy is the mel inference computes from the same video.
        count = write_clip(opts.output_root, job.name, self.crops(job.video, boxes), wav, mel, meta)
        if count != n_frames:  # the decoder promises probe_video's count; a mismatch is a broken file
            raise MediaError(f"video '{job.video}' gave {count} frames, {n_frames} expected; re-encode it")
        return count

    def boxes(self, video: str, n_frames: int, frame_hw: Tuple[int, int]) -> Tuple[np.ndarray, int]:
        """Face boxes of frames 0..n_frames-1 and how many frames had no face of their own."""
        fixed = fixed_boxes(n_frames, frame_hw, None, self.opts.is_voxceleb2, video)
        if fixed is not None:
            return fixed, 0  # the fixed crop needs only the frame size: no decoding pass
        # face_boxes' detector steps, split so that a faceless clip gets a message without
        # inference's --box advice, which this command does not have.
        raw, hw = detect_faces(iter_frames(video, FPS, stop=n_frames), self.detector, video)
        if all(r is None for r in raw):
            raise MediaError(f"no face found in any of the {len(raw)} frames of '{video}'")
        return boxes_from_detections(raw, hw, self.opts.pads, video)

    def crops(self, video: str, boxes: np.ndarray) -> Iterator[np.ndarray]:
        """The face crops, decoded a second time frame by frame rather than kept from detection."""
        for frame, box in zip(iter_frames(video, FPS, stop=len(boxes)), boxes):
            yield crop_face(frame, box, self.opts.image_size)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# Worker processes: each builds its own _ClipWorker (and so its own detector) once.
_POOL_WORKER: Optional[_ClipWorker] = None


def _init_pool_worker(opts: WorkerOptions, torch_threads: int) -> None:
    global _POOL_WORKER
    import torch

    worker_signals()  # the parent handles a stop
    # Several detectors on the same cores would each use all of them.
    torch.set_num_threads(torch_threads)
    _POOL_WORKER = _ClipWorker(opts)


def _pool_job(job: Job) -> Tuple[str, Optional[str]]:
    with sigterm_unwinds():  # a stopped run removes the clip in progress (write_clip's clean-up)
        return _POOL_WORKER(job)


def run_jobs(jobs: Sequence[Job], opts: WorkerOptions, num_workers: int, progress: bool, ordered: bool = False
             ) -> Iterator[Tuple[str, Optional[str]]]:
    """Preprocess `jobs` in this process or in `num_workers` spawned ones; yields (name, skip
    reason or None) as each clip finishes (in job order if `ordered`), so a run stopped midway
    knows what it finished."""
    bar = functools.partial(track, total=len(jobs), desc="preprocess", unit="clip", enabled=progress)
    if num_workers == 1 or len(jobs) <= 1:
        yield from bar(map(_ClipWorker(opts), jobs))
        return
    # 'spawn': a forked child would inherit the parent's torch / CUDA state, which is not fork-safe.
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // num_workers)
    # Leaving the block (also on a stop signal) terminates the workers, which remove their clip in progress.
    with context.Pool(min(num_workers, len(jobs)), _init_pool_worker, (opts, threads)) as pool:
        yield from bar((pool.imap if ordered else pool.imap_unordered)(_pool_job, jobs))


# ----------------------------------------------------------------------------------------------
# Splits


def _val_count(n: int, val_fraction: float) -> int:
    if n < 2 or val_fraction <= 0:
        return 0
    return min(n - 1, max(1, round(val_fraction * n)))


def make_splits(names: Sequence[str], layout: str, val_fraction: float, seed: int) -> Tuple[List[str], List[str]]:
    """(train, val) clip names, sorted.

    lrw: the clip's own split folder (test clips go to val; they are only present with
    --include_test). voxceleb2: whole identities (the top folder) go to val, so no speaker is in
    both; folder: single clips. The units in val are the first ones in an order fixed by a hash
    of the seed and the unit's name, so the split does not depend on the order clips finished
    in, and a unit keeps its side when clips of other units are added (unless the val count grows).
    """
    if layout == "lrw":
        train = [n for n in names if n.split("/")[1] == "train"]
        return sorted(train), sorted(n for n in names if n.split("/")[1] != "train")
    unit_of = (lambda n: n.split("/")[0]) if layout == "voxceleb2" else (lambda n: n)
    units = sorted({unit_of(n) for n in names})
    order = sorted(units, key=lambda u: hashlib.sha256(f"{seed}/{u}".encode()).hexdigest())
    val_units = set(order[: _val_count(len(units), val_fraction)])
    return sorted(n for n in names if unit_of(n) not in val_units), sorted(n for n in names if unit_of(n) in val_units)


# ----------------------------------------------------------------------------------------------
# Command line


def _options(args) -> Tuple[WorkerOptions, str, List[Tuple[str, str]], List[Dict[str, str]], Optional[set]]:
    """Check the flags and find the clips: (options, layout, (name, video) pairs, skipped names,
    the val clip names of --val_list, or None when the split is not taken from lists)."""
    if not args.input_root:
        raise Diff2LipError("--input_root is required: the folder of the videos")
    if not os.path.isdir(args.input_root):
        raise Diff2LipError(f"--input_root '{args.input_root}' is not a folder")
    if not args.output_root:
        raise Diff2LipError("--output_root is required: where the preprocessed clips go")
    check_output_folder(args.output_root, "--output_root")
    pads = parse_pads(args.pads)
    videos = find_videos(args.input_root, exclude=args.output_root)
    if not videos:
        raise Diff2LipError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under --input_root '{args.input_root}'")
    layout = resolve_layout(args.layout, videos)
    is_voxceleb2 = layout == "voxceleb2" if args.is_voxceleb2 == "auto" else str2bool(args.is_voxceleb2)
    pairs, skipped = select_clips(videos, layout, args.first_utterance_only, args.include_test)
    listed_val = None
    if args.train_list or args.val_list:
        train_list, val_list = [read_clip_list(path, flag) if path else []
                                for path, flag in ((args.train_list, "--train_list"), (args.val_list, "--val_list"))]
        pairs, missing = apply_lists(pairs, train_list, val_list)
        skipped += missing
        listed_val = set(val_list)
    opts = WorkerOptions(
        output_root=os.path.abspath(args.output_root),
        image_size=args.image_size,
        is_voxceleb2=is_voxceleb2,
        pads=pads,
        face_det_batch_size=args.face_det_batch_size,
        device=args.device,
        min_frames=args.min_frames,
    )
    return opts, layout, pairs, skipped, listed_val


# ----------------------------------------------------------------------------------------------
# Many workers


def _env_int(env: Mapping[str, str], name: str) -> Optional[int]:
    value = env.get(name, "")
    try:
        return int(value) if value != "" else None
    except ValueError:
        raise Diff2LipError(f"environment variable {name}={value!r} is not a whole number; fix the job's "
                            "environment or pass --shard_index and --num_shards") from None


def worker_slot(shard_index: int, num_shards: int, env: Mapping[str, str] = os.environ) -> Tuple[int, int]:
    """(I, N): this worker's part of the clip list and how many parts. Flags first, then the
    launchers' variables (torchrun, Open MPI, MPICH / Intel MPI, srun tasks, a Slurm array whose
    tasks may each run several srun tasks, a Kubernetes indexed job); one worker when none is set."""
    index, count = shard_index, num_shards
    if index < 0 or count == 0:
        for rank_var, size_var in (("RANK", "WORLD_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
                                   ("PMI_RANK", "PMI_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
            rank, size = _env_int(env, rank_var), _env_int(env, size_var)
            if rank is not None and size is not None and size > 1:
                break
        else:
            rank, size = 0, 1
        task, tasks = _env_int(env, "SLURM_ARRAY_TASK_ID"), _env_int(env, "SLURM_ARRAY_TASK_COUNT")
        if task is not None and tasks is not None:
            # Array ids need not start at 0 (--array 1-8): count from the smallest.
            task -= _env_int(env, "SLURM_ARRAY_TASK_MIN") or 0
            rank, size = task * size + rank, tasks * size
        k8s = _env_int(env, "JOB_COMPLETION_INDEX")
        if k8s is not None:
            if count == 0:
                raise Diff2LipError("JOB_COMPLETION_INDEX is set but not the number of workers; pass --num_shards "
                                    "(the indexed job's completions)")
            rank, size = k8s, count
        index = rank if index < 0 else index
        count = size if count == 0 else count
    if not 0 <= index < count:
        raise Diff2LipError(f"worker {index} of {count} does not exist; --shard_index must be 0 .. {count - 1}")
    return index, count


def worker_part(pairs: Sequence[Tuple[str, str]], index: int, count: int) -> List[Tuple[str, str]]:
    """Worker `index`'s clips: the index-th of `count` contiguous, disjoint parts of the sorted list
    (contiguous, so that one speaker's clips share shards)."""
    n = len(pairs)
    return list(pairs[index * n // count:(index + 1) * n // count])


def finished_clips(output_root: str, fmt: str) -> set:
    """The clips already written: a folder under clips/ exists only once complete (write_clip renames
    it into place), and a shard only once committed with its record."""
    if fmt == "shards":
        return {c["name"] for r in shard_records(output_root) for c in r["clips"]}
    base = os.path.join(output_root, "clips")
    if not os.path.isdir(base):
        return set()
    return {os.path.relpath(d, base).replace(os.sep, "/") for d, _, files in os.walk(base) if "meta.json" in files}


def _part_path(output_root: str, index: int, count: int) -> str:
    return os.path.join(output_root, WORKERS, f"{index:05d}-of-{count:05d}.json")


def _run_shards(jobs: Sequence[Job], opts: WorkerOptions, args, index: int, count: int
                ) -> Iterator[Tuple[str, Optional[str]]]:
    """Preprocess `jobs` into a staging folder, clip by clip, and pack each finished clip into this
    worker's shards (in job order, so a worker's shards are the same on every run)."""
    staging = os.path.join(opts.output_root, ".staging", f"{index:05d}-of-{count:05d}")
    shutil.rmtree(staging, ignore_errors=True)  # a stopped run's clips are redone
    prefix = f"{index:05d}-of-{count:05d}"
    # A rerun continues the numbering after this worker's committed shards.
    first = sum(1 for r in shard_records(opts.output_root) if os.path.basename(r["path"]).startswith(prefix))
    staged = dataclasses.replace(opts, output_root=staging)
    with ShardWriter(opts.output_root, prefix, args.shard_size_mb * 1e6, first_index=first) as writer:
        try:
            for name, reason in run_jobs(jobs, staged, args.num_workers, args.progress, ordered=True):
                if reason is None:
                    folder = clip_dir(staging, name)
                    with open(os.path.join(folder, "meta.json"), encoding="utf-8") as f:
                        writer.add(name, folder_sample(folder, json.load(f)["n_frames"]))
                    shutil.rmtree(folder)
                yield name, reason
        except Interrupted:
            writer.flush()  # the clips packed so far are whole: keep them
            raise
    shutil.rmtree(staging, ignore_errors=True)


def preprocess(args) -> dict:
    """Run this worker's part of the preprocessing and, if it is the last to finish (or --merge),
    the merge; returns this worker's part record, or the report when it merged."""
    opts, layout, pairs, skipped, listed_val = _options(args)
    index, count = worker_slot(args.shard_index, args.num_shards)
    os.makedirs(opts.output_root, exist_ok=True)
    if args.merge:
        return merge(args, opts, layout, pairs, skipped, listed_val, count)
    mine = worker_part(pairs, index, count)
    done_before = finished_clips(opts.output_root, args.format) & {name for name, _ in mine}
    input_root = os.path.abspath(args.input_root)
    jobs = [Job(name, os.path.join(input_root, *rel.split("/"))) for name, rel in mine if name not in done_before]
    results: List[Tuple[str, Optional[str]]] = []
    stopped = None
    try:
        if args.format == "shards":
            results.extend(_run_shards(jobs, opts, args, index, count))
        else:
            results.extend(run_jobs(jobs, opts, args.num_workers, args.progress))
    except Interrupted as exc:
        # Record what finished (a rerun resumes from there), then stop.
        stopped = exc
    part = {"worker": index, "workers": count, "complete": stopped is None,
            "done": sorted(name for name, reason in results if reason is None), "already_done": len(done_before),
            "skipped": sorted(({"clip": n, "reason": r} for n, r in results if r is not None), key=lambda e: e["clip"])}
    os.makedirs(os.path.join(opts.output_root, WORKERS), exist_ok=True)
    atomic_write_json(_part_path(opts.output_root, index, count), part)
    parts = _parts(opts.output_root, count)
    if count == 1 or all(p["complete"] for p in parts.values()) and len(parts) == count:
        report = merge(args, opts, layout, pairs, skipped, listed_val, count)
        tail = f"; stopped by {stopped.name} before {len(jobs) - len(results)} clip(s), run again to finish" if stopped else ""
        print(f"summary: {report['done']} clips preprocessed, {report['already_done']} already done, "
              f"{len(report['skipped'])} skipped (reasons in {os.path.join(opts.output_root, 'report.json')}); "
              f"{layout} layout, train {report['train']} / val {report['val']} clips in {opts.output_root}{tail}")
    else:
        waiting = count - sum(1 for p in parts.values() if p["complete"])
        print(f"worker {index} of {count}: {len(part['done'])} clips preprocessed, {len(done_before)} already done, "
              f"{len(part['skipped'])} skipped; {waiting} worker(s) still running (the last one merges, or run "
              "again with --merge True)")
        report = part
    if stopped is not None:
        raise stopped
    return report


def _parts(output_root: str, count: int) -> Dict[int, dict]:
    """The part records of the `count` workers of a run (a record from a run with another N is ignored)."""
    parts = {}
    for index in range(count):
        try:
            with open(_part_path(output_root, index, count), encoding="utf-8") as f:
                parts[index] = json.load(f)
        except (OSError, ValueError):
            continue
    return parts


def merge(args, opts: WorkerOptions, layout: str, pairs: Sequence[Tuple[str, str]], skipped: List[Dict[str, str]],
          listed_val: Optional[set], count: int) -> dict:
    """Write train.txt, val.txt, report.json and manifest.json from what is finished on disk: the
    same from any worker, as often as it is run (every file atomic, nothing depends on timing)."""
    selected = {name for name, _ in pairs}
    finished = sorted(finished_clips(opts.output_root, args.format) & selected)
    if listed_val is None:
        train, val = make_splits(finished, layout, args.val_fraction, args.seed)
    else:
        train, val = [n for n in finished if n not in listed_val], [n for n in finished if n in listed_val]
    write_split(opts.output_root, "train", train)
    write_split(opts.output_root, "val", val)
    parts = _parts(opts.output_root, count).values()
    done = set(finished)
    skipped = skipped + [s for p in parts for s in p["skipped"] if s["clip"] not in done]
    report = {"done": sum(len(p["done"]) for p in parts), "already_done": sum(p["already_done"] for p in parts),
              "skipped": sorted(skipped, key=lambda s: s["clip"])}
    atomic_write_json(os.path.join(opts.output_root, "report.json"), report)
    if args.format == "shards":
        atomic_write_json(os.path.join(opts.output_root, MANIFEST), manifest(shard_records(opts.output_root)))
    else:
        atomic_write_json(os.path.join(opts.output_root, MANIFEST), folder_manifest(opts.output_root, finished))
    return dict(report, train=len(train), val=len(val))


def main(argv: Optional[List[str]] = None) -> int:
    def body() -> int:
        preprocess(create_parser().parse_args(argv))
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
