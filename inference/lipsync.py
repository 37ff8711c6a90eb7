"""Lip-sync one clip: decode -> detect -> crop -> sample -> paste -> encode, streamed in chunks.

Memory holds one chunk of `sampling_batch_size` frames at a time, never the whole video. Only
the face boxes (a few numbers per frame) are kept for the clip, because the released 5-box
smoothing looks ahead. When frames must be revisited out of order (`--loop_video`, a still
image), the source frames are cached in a memory-mapped file on disk next to the output.

Chunks always start at multiples of the batch size from frame 0, and the only randomness (the
shared noise, the `random` reference order) is seeded per clip and per chunk, so any split of
the chunks over processes gives the frames of a single process.
"""

import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from audio.audio import (
    frame_mel_start,
    load_wav,
    mel_steps_for_frames,
    melspectrogram,
    num_full_windows,
    samples_for_frames,
)
from common.errors import Diff2LipError, MediaError
from common.files import reserve_space
from common.flags import options_dataclass, str2bool
from common.stages import run_stages
from dataset.video_io import VideoWriter, is_image, iter_frames, probe_video
from face_detection import (
    Box,
    ClipScan,
    FaceTrack,
    check_pads,
    crop_face,
    fixed_boxes,
    parse_box,
    parse_face_select,
    parse_pads,
    paste_face,
    scan_faces,
    track_boxes,
)
from guided_diffusion import dist_util
from guided_diffusion.gaussian_diffusion import ModelMeanType
from guided_diffusion.precision import autocast
from guided_diffusion.samplers import SAMPLERS, SOLVERS, network_passes, sampler_name
from guided_diffusion.tfg_data_util import shared_noise, tfg_process_batch
from guided_diffusion.unet import DeepFeatureCache

from .options import CLIP_OPTIONS

FPS = 25
SAMPLE_RATE = 16000


def _box(text: str) -> Optional[Box]:
    return parse_box(text) if text else None


@options_dataclass(CLIP_OPTIONS, convert={"box": _box, "pads": parse_pads})
class SamplingOptions:
    """What lip-syncing a clip takes from the flags: one field per option of
    `inference.options.CLIP_OPTIONS`, with its declared default; `--box` and `--pads` parsed into
    `(y1, y2, x1, x2)` / `(top, bottom, left, right)` pixels (`box` None: no fixed box)."""

    @classmethod
    def from_args(cls, args) -> "SamplingOptions":
        """The options of parsed (and so validated) generate.py flags; progress bars only on the
        main process."""
        return cls.from_flags(args, progress=args.progress and dist_util.is_main_process())


def pingpong(k: int, n: int) -> int:
    """Index of output frame `k` when `n` frames play forward, backward, forward, ..."""
    if n == 1:
        return 0
    period = 2 * n - 2
    m = k % period
    return m if m < n else period - m


@dataclass
class ClipPlan:
    """Everything decided about a clip before any frame is generated."""

    video_path: str
    wav: np.ndarray  # [T] 16 kHz mono float32, the driving audio (only what the frames need if the video limits)
    mel: np.ndarray  # [80, T_mel], exact on every step the frames' windows use
    frame_hw: Tuple[int, int]
    n_frames: int  # output frames
    n_video: int  # frames the source has (1 for a still image)
    revisit: bool  # frames are reused out of order (loop / still image): cache them
    first_frame_input: bool  # reconstruction: every output frame repaints source frame 0

    @property
    def n_source(self) -> int:
        """Source frames 0..n_source-1 that the output uses."""
        if self.first_frame_input:
            return 1
        return self.n_video if self.revisit else self.n_frames

    def source_index(self, k: int) -> int:
        if self.first_frame_input:
            return 0
        return pingpong(k, self.n_video) if self.revisit else k

    def chunks(self, batch_size: int) -> List[Tuple[int, int]]:
        return [(a, min(a + batch_size, self.n_frames)) for a in range(0, self.n_frames, batch_size)]


def plan_clip(video_path: str, audio_path: str, opts: SamplingOptions) -> ClipPlan:
    """Probe the video, read the audio and decide the number of frames (released rule:
    min(video frames, full mel windows); a still image or `--loop_video` covers the audio)."""
    if not os.path.isfile(video_path):
        problem = "is a folder" if os.path.isdir(video_path) else "does not exist"
        raise MediaError(f"video '{video_path}' {problem}; check --video_path / --test_video_dir")
    info = probe_video(video_path, FPS)
    if info.num_frames == 0:
        raise MediaError(f"video '{video_path}' has no frames; give a clip with a visible face")
    still = is_image(video_path) or info.num_frames == 1  # a one-frame GIF or video is a still too
    first_frame_input = opts.sampling_input_type == "first_frame"
    covers_audio = still or (opts.loop_video and not first_frame_input)
    # When the video may limit the clip, the audio past what its last frame's window reads cannot
    # change a used value: it is not decoded, so memory does not grow with the audio's length.
    needed = None if covers_audio else samples_for_frames(info.num_frames, FPS)
    wav = load_wav(audio_path, SAMPLE_RATE, max_samples=needed)
    mel = melspectrogram(wav)
    if not covers_audio:
        # Steps past the video's last window may come from the cut signal's end: drop them.
        mel = mel[:, : mel_steps_for_frames(info.num_frames, FPS)]
    n_windows = num_full_windows(mel.shape[1], FPS)
    if n_windows == 0:
        raise MediaError(f"audio '{audio_path}' is shorter than one mel window (0.2 s); give longer speech")
    n_frames = n_windows if covers_audio else min(info.num_frames, n_windows)
    revisit = not first_frame_input and n_frames > info.num_frames
    return ClipPlan(
        video_path=video_path,
        wav=wav,
        mel=mel,
        frame_hw=(info.height, info.width),
        n_frames=n_frames,
        n_video=info.num_frames,
        revisit=revisit,
        first_frame_input=first_frame_input,
    )


class SourceFrames:
    """Source video frames by index, decoded once in order, cached on disk when revisited."""

    def __init__(self, plan: ClipPlan, cache_dir: Optional[str]):
        self.plan = plan
        self._cache = None
        self._first = None
        if plan.revisit:
            h, w = plan.frame_hw
            fd, self._cache_path = tempfile.mkstemp(prefix=".frames-", suffix=".u8", dir=cache_dir)
            os.close(fd)
            try:
                reserve_space(self._cache_path, plan.n_video * h * w * 3)
            except BaseException:
                os.remove(self._cache_path)
                raise
            self._cache = np.memmap(self._cache_path, dtype=np.uint8, mode="w+", shape=(plan.n_video, h, w, 3))
            try:
                for i, frame in enumerate(iter_frames(plan.video_path, FPS, 0, plan.n_video)):
                    self._cache[i] = frame
            except BaseException:  # a bad frame or a stop signal: the caller never gets to close()
                self.close()
                raise

    def close(self) -> None:
        if self._cache is not None:
            del self._cache
            self._cache = None
            os.remove(self._cache_path)

    def first(self) -> np.ndarray:
        if self._first is None:
            self._first = self._cache[0].copy() if self._cache is not None else next(iter_frames(self.plan.video_path, FPS, 0, 1))
        return self._first

    def in_order(self, start: int, stop: int) -> Iterator[np.ndarray]:
        """Source frames start..stop-1 (source indices, not output indices)."""
        if self._cache is not None:
            for i in range(start, stop):
                yield self._cache[i]
        else:
            yield from iter_frames(self.plan.video_path, FPS, start, stop)

    def for_outputs(self, start: int, stop: int) -> Iterator[np.ndarray]:
        """The source frame of each output frame start..stop-1."""
        if self.plan.first_frame_input:
            first = self.first()
            for _ in range(start, stop):
                yield first
        elif self._cache is not None:
            for k in range(start, stop):
                yield self._cache[self.plan.source_index(k)]
        else:
            yield from iter_frames(self.plan.video_path, FPS, start, stop)


def _to_tensor(images: Sequence[np.ndarray], channel_order: str) -> torch.Tensor:
    """RGB uint8 `[H, W, 3]` images -> `[N, 3, H, W]` in [-1, 1], in the network's channel order."""
    array = np.stack(images)
    if channel_order == "bgr":
        array = array[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _to_images(tensor: torch.Tensor, channel_order: str, paste: str = "full") -> List[np.ndarray]:
    """`[N, 3, H, W]` in [-1, 1] (network channel order) -> RGB uint8 `[H, W, 3]` images.

    `paste="full"` converts as the release does, `((x+1)*0.5).clamp(0,1)*255` truncated by
    `astype(np.uint8)`, so the pasted box (upper face included) has the released pixels. `"lower"`
    is ours, with no released output to match: it rounds, which does not darken by half a level.
    """
    x = tensor.float()
    if paste == "full":
        scaled = ((x + 1) * 0.5).clamp(0, 1) * 255
    else:
        scaled = ((x.clamp(-1, 1) + 1) * 127.5).round()
    array = scaled.to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if channel_order == "bgr":
        array = array[..., ::-1]
    return [np.ascontiguousarray(a) for a in array]


def overlaps(overlap: str, device: torch.device) -> bool:
    """`--overlap` for a network on `device`: auto is on a GPU only (on a CPU the threads would
    take cores from the network: 0.67x the frames/s on 2 cores, docs/figures.md)."""
    if overlap == "auto":
        return torch.device(device).type == "cuda"
    return str2bool(overlap)


@dataclass
class _Chunk:
    """One chunk of output frames on its way through `LipSyncer.generate`'s stages."""

    start: int  # its first output frame
    targets: List[np.ndarray]  # the source frames it repaints
    src_idx: List[int]  # their source indices
    batch: Optional[object]  # the network's input (a TFGBatch); None: nothing to repaint
    faces: Optional[List[np.ndarray]] = None  # the generated crops, once sampled


class LipSyncer:
    """The network, the diffusion and the options; `generate` yields finished frames of a clip."""

    def __init__(self, model, diffusion, opts: SamplingOptions, device: torch.device):
        self.model = model
        self.diffusion = diffusion
        self.opts = opts
        self.sampler = sampler_name(opts.sampler, opts.use_ddim)  # the SAMPLERS entry
        self.device = device
        self.network_seconds = 0.0  # time spent sampling, for logs and benchmarks
        self._check_network()

    def _check_network(self) -> None:
        """The options that depend on the network and its diffusion, checked once they are known
        and before any frame is read (the flag checks cannot see them): one line naming the flag."""
        opts = self.opts
        blocks = len(getattr(self.model, "input_blocks", ()))  # a wrapped network may not show its blocks
        if opts.cache_interval > 1 and blocks and opts.cache_depth > blocks:
            raise Diff2LipError(f"--cache_depth {opts.cache_depth}: this network has {blocks} encoder blocks; "
                                f"give --cache_depth 1..{blocks}")
        if self.sampler in SOLVERS:
            steps = len(getattr(self.diffusion, "base_alphas_cumprod", self.diffusion.alphas_cumprod))
            if opts.sampling_steps > steps:
                raise Diff2LipError(f"--sampling_steps {opts.sampling_steps}: this network's diffusion has {steps} "
                                    f"steps; give --sampling_steps 1..{steps}")
            if self.diffusion.model_mean_type == ModelMeanType.PREVIOUS_X:
                raise Diff2LipError(f"--sampler {opts.sampler} needs a network that predicts the noise or x0, not "
                                    "x_{t-1}; use --sampler ddim")

    def generate(
        self,
        plan: ClipPlan,
        frames: SourceFrames,
        boxes: np.ndarray,
        start: int,
        stop: int,
        on_frames: Optional[Callable[[int], None]] = None,
        weights: Optional[np.ndarray] = None,
    ) -> Iterator[np.ndarray]:
        """Finished frames for output frames start..stop-1 (chunk-aligned `start`).

        :param weights: `[n_source]` share of the generated face per source frame (`FaceTrack`):
            0 passes the source frame through, in between cross-fades; None: 1 everywhere.
        """
        chunks = self._prepared_chunks(plan, frames, boxes, start, stop, weights)
        steps = (lambda chunk: self._sample_chunk(chunk, on_frames),
                 lambda chunk: self._paste_chunk(chunk, plan, boxes, weights))
        if overlaps(self.opts.overlap, self.device):
            for finished in run_stages(chunks, steps, depth=1, name="lipsync"):
                yield from finished
        else:
            for chunk in chunks:
                yield from steps[1](steps[0](chunk))

    def _prepared_chunks(self, plan: ClipPlan, frames: SourceFrames, boxes: np.ndarray, start: int, stop: int,
                         weights: Optional[np.ndarray]) -> Iterator["_Chunk"]:
        """Stage 1 of `generate`: each chunk of output frames start..stop-1 decoded, cropped and
        batched for the network (no batch where the chunk has no face to repaint)."""
        opts = self.opts
        size = opts.image_size
        noise = shared_noise(size, seed=opts.sampling_seed)
        first_crop = None
        if plan.first_frame_input or opts.sampling_ref_type == "first_frame":
            first_crop = crop_face(frames.first(), boxes[0], size)
        source = frames.for_outputs(start, stop)
        for c0, c1 in plan.chunks(opts.sampling_batch_size):
            if c1 <= start or c0 >= stop:
                continue
            n = c1 - c0
            targets = [np.asarray(next(source)) for _ in range(n)]
            src_idx = [plan.source_index(k) for k in range(c0, c1)]
            if weights is not None and not any(weights[i] > 0 for i in src_idx):
                # No face to repaint in the whole chunk: no network call. Chunks are seeded
                # by their start, so the others do not change.
                yield _Chunk(c0, targets, src_idx, None)
                continue
            crops = [crop_face(f, boxes[i], size) for f, i in zip(targets, src_idx)]
            inputs = [first_crop] * n if plan.first_frame_input else crops
            if opts.sampling_ref_type == "first_frame":
                refs = [first_crop] * n
            elif opts.sampling_ref_type == "random":
                # Seeded per chunk so that any split of chunks over processes draws the same order.
                generator = torch.Generator().manual_seed(opts.sampling_seed * 1_000_003 + c0)
                refs = [inputs[j] for j in torch.randperm(n, generator=generator).tolist()]
            else:
                refs = inputs
            starts = [frame_mel_start(k, FPS) for k in range(c0, c1)]
            mels = np.stack([plan.mel[:, s : s + 16] for s in starts])
            batch = tfg_process_batch(
                _to_tensor(inputs, opts.channel_order)[None].to(self.device),
                opts.face_hide_percentage,
                ref_frames=_to_tensor(refs, opts.channel_order)[None].to(self.device),
                mels=torch.from_numpy(mels)[None].to(self.device),
                noise=noise.to(self.device),
            )
            yield _Chunk(c0, targets, src_idx, batch)

    def _sample_chunk(self, chunk: "_Chunk", on_frames: Optional[Callable[[int], None]]) -> "_Chunk":
        """Stage 2 of `generate`: the network's faces of a chunk (uint8 crops), progress as it goes."""
        n = len(chunk.targets)
        if chunk.batch is None:
            if on_frames is not None:
                on_frames(n)
            return chunk
        # Progress moves with every network pass (its share of the chunk's frames): a chunk of
        # 32 frames takes minutes on a CPU.
        per_pass = n / self.passes_per_chunk()
        reported = 0.0

        def on_pass() -> None:
            nonlocal reported
            if on_frames is not None and reported + per_pass <= n:
                reported += per_pass
                on_frames(per_pass)

        started = time.perf_counter()
        batch = chunk.batch
        sample = self.sample(batch, chunk.start, on_pass)
        self.network_seconds += time.perf_counter() - started
        generated = sample * batch.mask + batch.x_start * (1 - batch.mask)
        chunk.faces = _to_images(generated.cpu(), self.opts.channel_order, self.opts.paste)
        chunk.batch = None  # the tensors are done with
        if on_frames is not None and n > reported:
            on_frames(n - reported)
        return chunk

    def _paste_chunk(self, chunk: "_Chunk", plan: ClipPlan, boxes: np.ndarray, weights: Optional[np.ndarray]) -> List[np.ndarray]:
        """Stage 3 of `generate`: the chunk's finished frames, each face pasted into its frame."""
        opts = self.opts
        if chunk.faces is None:
            return chunk.targets
        out = []
        for target, face, i in zip(chunk.targets, chunk.faces, chunk.src_idx):
            box = boxes[0] if plan.first_frame_input else boxes[i]
            weight = 1.0 if weights is None else float(weights[i])
            if weight == 0:
                out.append(target)
                continue
            pasted = paste_face(target, face, box, mode=opts.paste, face_hide_percentage=opts.face_hide_percentage,
                                color_match=opts.color_match)
            if weight < 1:  # cross-fade into a run of frames passed through
                pasted = np.rint(target + weight * (pasted.astype(np.float32) - target)).astype(np.uint8)
            out.append(pasted)
        return out

    def passes_per_chunk(self) -> int:
        """Network passes that `sample` makes for one chunk."""
        return network_passes(self.sampler, self.diffusion, self.opts.sampling_steps)

    def sample(self, batch, chunk_start: int = 0, on_pass: Optional[Callable[[], None]] = None) -> torch.Tensor:
        """Sample the clean crops `[N, 3, H, W]` of one chunk (a `TFGBatch`) with the chosen sampler.

        :param on_pass: called after every network pass (progress).
        """
        if on_pass is None:
            return self._sample(batch, chunk_start)
        hook = self.model.register_forward_hook(lambda *_: on_pass())
        try:
            return self._sample(batch, chunk_start)
        finally:
            hook.remove()

    def _sample(self, batch, chunk_start: int) -> torch.Tensor:
        opts = self.opts
        x_t = batch.noise.contiguous()
        model_kwargs = dict(batch.model_kwargs)
        if opts.cache_interval > 1:
            model_kwargs["feature_cache"] = DeepFeatureCache(opts.cache_interval, opts.cache_depth, self.passes_per_chunk())
        if self.sampler == "ddpm":
            # DDPM draws noise at every step: seed it per chunk, for the same reason as above.
            torch.manual_seed(opts.sampling_seed * 1_000_003 + chunk_start)
        with torch.no_grad(), autocast(self.device, opts.precision):
            return SAMPLERS[self.sampler](self.diffusion, self.model, x_t, model_kwargs, steps=opts.sampling_steps,
                                          spacing=opts.solver_spacing, clip_denoised=opts.clip_denoised)


def driving_audio(plan: ClipPlan) -> np.ndarray:
    """The audio under the generated frames: trimmed to n_frames / 25 s."""
    return plan.wav[: int(round(plan.n_frames * SAMPLE_RATE / FPS))]


def boxes_for_clip(plan: ClipPlan, frames: SourceFrames, opts: SamplingOptions, detector, start: int = 0, stop: Optional[int] = None):
    """(boxes `[n_source, 4]` or None, `ClipScan` of source frames start..stop-1).

    With `--box` or the VoxCeleb2 crop the boxes come back directly; otherwise the scan of the
    range (every face and a colour histogram per frame) comes back for `track_for_clip`
    (processes that split the detection join their ranges first: the track, the cuts, the
    fill and the smoothing need the whole clip).
    """
    fixed = fixed_boxes(plan.n_source, plan.frame_hw, opts.box, opts.is_voxceleb2, plan.video_path)
    if fixed is not None:
        return fixed, ClipScan()
    stop = plan.n_source if stop is None else stop
    check_pads(opts.pads, plan.frame_hw, plan.video_path)  # before the detector's minutes, not after
    # With keyframes, a range that ends before the clip also scans the next range's first frame (a
    # keyframe, and the frame a cut there is seen from), so the frames before it are filled and
    # cut as one process fills them; its own scan is the next range's.
    lookahead = int(opts.detect_every > 1 and stop < plan.n_source)
    scan = scan_faces(frames.in_order(start, stop + lookahead), detector, plan.video_path, opts.detect_every,
                      opts.cut_threshold, opts.detect_min_face)
    if lookahead:
        scan = ClipScan(scan.detections[:-1], scan.histograms[:-1], scan.frame_hw)
    return None, scan


def track_for_clip(scan: ClipScan, plan: ClipPlan, opts: SamplingOptions) -> FaceTrack:
    """The boxes and per-frame weights of a clip from its whole (joined) scan."""
    return track_boxes(
        scan, parse_face_select(opts.face_select), opts.pads, opts.no_face, opts.max_fill_gap,
        opts.cut_threshold, plan.video_path,
    )


def split_range(n: int, parts: int, index: int, align: int = 1) -> Tuple[int, int]:
    """The `index`-th of `parts` contiguous ranges covering 0..n-1, boundaries on multiples of `align`."""
    units = math.ceil(n / align)
    lo = units * index // parts
    hi = units * (index + 1) // parts
    return min(lo * align, n), min(hi * align, n)


def write_clip(out_path: str, frames: Iterator[np.ndarray], audio: np.ndarray) -> int:
    """Encode frames + audio to `out_path` (H.264 + AAC 16 kHz, atomically); returns the frame count."""
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    count = 0
    with VideoWriter(out_path, fps=FPS, audio=audio, sample_rate=SAMPLE_RATE) as writer:
        for frame in frames:
            writer.write(frame)
            count += 1
    return count
