"""End-to-end speed and memory of the streaming lip-sync pipeline on rendered 1280x720 clips.

For a 10 s and a 60 s clip (H.264 + AAC, rendered here), each in a fresh process running
`generate.py`'s pipeline with a tiny random network (128 px crops), it measures: end-to-end
frames/s, the share of time spent outside the network (decode, crop, paste, encode), and the
process's peak resident memory. Face detection is measured apart, with S3FD in the real format
and random weights on 720p frames, because on a CPU it would dominate the run time; the clips
themselves use a fixed `--box`.

The share outside the network that users of the official network will see is then estimated
from the per-frame cost of the official network's DDIM-25 sample on the fast CPU path, timed
in this same run.

Memory in the audio's length: the same 4 s 224x224 video (100 frames, the VoxCeleb2 crop)
lip-synced to 10 s and to 10 min of speech (AAC), each in a fresh process, compares the peak
resident memory. The video limits both clips, so only the audio differs; small frames keep the
video's share of the peak small, so that audio costs would show.

Memory with face detection (`detect`): the same two lengths of 1280x720, rendered from the
astronaut photograph so that the bundled CenterFace finds the face in every frame, lip-synced by
the committed 2-step demo student with `--is_voxceleb2 False --face_detector centerface
--face_det_scale 0.5` (`--detect_scale`), the source frames also written under the output's audio (`--save_orig`'s
path); the peak resident memory of the longer over the shorter.

In-the-wild box logic (`wild`): per 720p frame, the colour histogram of scene-cut detection
(computed while frames are decoded) and the clip-wide track (selection among 3 faces, IoU
track, cuts, gap fill, smoothing), on rendered frames and 3000 frames of detections.
Seam (`seam`): the grey step across the face box's edges after each `--paste` mode against the
source's own, on the astronaut photograph with a stand-in generated face (its own crop at 128
px, blurred and colour-shifted as diffusion samples drift).

Keyframe detection (`keyframes`): a network of the official size (random weights in the
released format) end to end on 2 s of the astronaut's 1280x720 clip, each in a fresh process:
frames/s with a fixed `--box`, and with CenterFace at each `--detect_every` (1: every frame), and
the share of the time outside the network. `--keyframes_sampler` sets what the network runs:
student2 (2 DDIM steps, the 2-step student's cost), student1 (`ddim1`, the 1-step student's) or
fast (the fast sampler for the released checkpoint: DPM-Solver++ 2M, 8 passes, features reused
every 2nd step at depth 2). S3FD with random weights finds no face, so its rows are composed in the
same run instead: the fixed box's run plus S3FD's measured time per 720p frame (real format, random
weights, at scale 1.0, the default at 720p, and 0.5) on each keyframe that `--detect_every`
schedules on this cut-free clip.

Overlapped stages (`overlap`): the small network on the 10 s 720p clip with a fixed box,
`--overlap True` against `--overlap False`, fresh processes alternating: frames/s.

Allocator (`allocator`): the committed demo student on a 10 s 224x224 clip, as `make demo` runs
it, with and without the setting every command makes (`common/allocator.py`: freed tensor memory
kept in the process), fresh processes alternating: wall time, time in the kernel, page faults.

    python benchmarks/bench_pipeline.py [--durations 10 60] [--audio_durations 10 600]
        [--parts clips detect audio estimates wild seam allocator keyframes overlap] [--detect_every 1 5]
        [--keyframes_sampler student2 student1 fast]
        [--workdir outputs/bench_pipeline]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Optional, Sequence

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

HEIGHT, WIDTH = 720, 1280
BOX = "160,560,440,840"  # top,bottom,left,right of the drawn face in a 1280x720 frame
FIXED_BOX = ("--is_voxceleb2", "False", "--box", BOX)
PARTS = ("clips", "detect", "audio", "estimates", "wild", "seam", "allocator", "keyframes", "overlap")
STUDENT = os.path.join(REPO_ROOT, "checkpoints", "demo", "diff2lip_synthetic64_student2.pt")
# The detection path as a new user runs it: the bundled detector on every frame (at --detect_scale:
# 0.5 by default, 4x cheaper than 1.0 on a CPU; memory is bounded per detector call either way),
# the tracked face, the paste, and the untouched source frames under the output's audio.
DETECT_FLAGS = ("--is_voxceleb2", "False", "--face_detector", "centerface")
TINY_FLAGS = [
    "--image_size", "128", "--num_channels", "32", "--num_res_blocks", "1", "--channel_mult", "1,1,2",
    "--attention_resolutions", "16", "--num_head_channels", "32", "--timestep_respacing", "ddim2",
]


def render(path: str, seconds: float, with_audio: bool = True, height: int = HEIGHT, width: int = WIDTH) -> None:
    from dataset.synthetic import draw_face, speech_like
    from dataset.video_io import VideoWriter

    if os.path.exists(path):
        return
    with VideoWriter(path, fps=25, audio=speech_like(seconds) if with_audio else None, sample_rate=16000) as writer:
        for i in range(int(seconds * 25)):
            writer.write(draw_face(i, height, width))


def photo_frame(i: int, height: int = HEIGHT, width: int = WIDTH):
    """Frame `i` of a talking-head shot a face detector finds: the astronaut photograph's head
    (scikit-image), its side `height`, swaying 40 px left and right every 4 s on a grey ground."""
    import cv2
    import numpy as np
    from skimage.data import astronaut

    head = cv2.resize(astronaut(), (height, height), interpolation=cv2.INTER_AREA)
    frame = np.full((height, width, 3), 96, np.uint8)
    x = (width - height) // 2 + int(round(40 * np.sin(2 * np.pi * i / 100)))
    frame[:, x : x + height] = head
    return frame


def render_photo(path: str, seconds: float) -> None:
    """`seconds` of `photo_frame` at 25 fps, 1280x720 H.264, with its own AAC speech track."""
    from dataset.synthetic import speech_like
    from dataset.video_io import VideoWriter

    if os.path.exists(path):
        return
    with VideoWriter(path + ".tmp.mp4", fps=25, audio=speech_like(seconds), sample_rate=16000) as writer:
        for i in range(int(seconds * 25)):
            writer.write(photo_frame(i))
    os.replace(path + ".tmp.mp4", path)


def write_speech(path: str, seconds: float) -> None:
    """`seconds` of speech-like audio as a 16 kHz AAC file, encoded in 10 s pieces."""
    from fractions import Fraction

    import av

    from dataset.synthetic import speech_like

    if os.path.exists(path):
        return
    tmp = path + ".tmp.m4a"
    with av.open(tmp, "w") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        for k, start in enumerate(range(0, int(seconds), 10)):
            piece = speech_like(min(10, seconds - start), seed=k)
            frame = av.AudioFrame.from_ndarray(piece[None, :], format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 16000, start * 16000, Fraction(1, 16000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    os.replace(tmp, path)


def run_clip(video: str, checkpoint: str, out: str, audio: Optional[str] = None, face: Sequence[str] = FIXED_BOX,
             model_flags: Sequence[str] = tuple(TINY_FLAGS), orig: str = "", keep_freed: bool = True,
             extra: Sequence[str] = ()) -> dict:
    """Lip-sync `video` with `audio` (default: its own) in a fresh process, faces placed by the
    `face` flags (and with `orig`, the source frames under the output's audio written there too);
    the child prints its figures. `keep_freed`: with the allocator setting every command makes
    (common.allocator), else glibc's default."""
    code = (
        "import json, resource, sys, time\n"
        f"sys.path.insert(0, {REPO_ROOT!r})\n"
        f"if {keep_freed!r}:\n"
        "    from common.allocator import keep_freed_memory\n"
        "    keep_freed_memory()\n"
        "from inference.options import parse_args\n"
        "from inference.pipeline import Generator\n"
        "args, _, _ = parse_args(sys.argv[1:])\n"  # with the flags a network file carries
        "def mb(key):\n"
        "    return int([l for l in open('/proc/self/status') if l.startswith(key)][0].split()[1]) / 1024\n"
        "gen = Generator(args)\n"
        "peak_before = mb('VmHWM:')\n"
        # Writing 5 to clear_refs resets the peak to the current RSS (Linux >= 4.0), so the clip's own
        # peak is measured apart from the imports and the model, which can hide it.
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "rss_before = mb('VmRSS:')\n"
        "usage = resource.getrusage(resource.RUSAGE_SELF)\n"
        "system_before, faults_before = usage.ru_stime, usage.ru_minflt\n"
        "start = time.perf_counter()\n"
        f"n = gen.clip(args.video_path, args.audio_path, args.out_path, orig_path={orig!r} or None)\n"
        "total = time.perf_counter() - start\n"
        "clip_peak = mb('VmHWM:')\n"
        "usage = resource.getrusage(resource.RUSAGE_SELF)\n"
        "print(json.dumps(dict(frames=n, seconds=total, network_seconds=gen.syncer.network_seconds,"
        " peak_rss_mb=max(peak_before, clip_peak), clip_rss_mb=clip_peak - rss_before,"
        " system_seconds=usage.ru_stime - system_before, page_faults=usage.ru_minflt - faults_before)))\n"
    )
    argv = [
        *model_flags, "--model_path", checkpoint, "--generate_from_filelist", "0", "--video_path", video,
        "--audio_path", audio or video, "--out_path", out, *face,
        "--sampling_batch_size", "32", "--progress", "False", "--precision", "bf16", *extra,
    ]
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=REPO_ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"pipeline run failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def detection_seconds_per_frame(workdir: str, frames: int = 8, scale: float = 1.0) -> float:
    """S3FD (real format, random weights) on 720p frames scaled by `scale`, in batches of 4."""
    from dataset.synthetic import draw_face
    from face_detection import FaceDetector

    weights = os.path.join(workdir, "s3fd_random.pth")
    if not os.path.exists(weights):
        g = torch.Generator().manual_seed(0)
        state = {}
        with open(os.path.join(REPO_ROOT, "tests", "data", "s3fd.tsv")) as f:
            for line in f:
                name, shape = line.rstrip("\n").split("\t")
                dims = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
                state[name] = torch.randn(dims, generator=g) * 0.01
        # Random classifiers would call every anchor a face candidate and spend the time in NMS
        # over ~1e5 boxes, which trained weights never do: make them say "background".
        for name in [n for n in state if "_mbox_conf" in n]:
            if name.endswith(".weight"):
                state[name].zero_()
            else:
                state[name].fill_(10.0)
                state[name][-1] = -10.0
        torch.save(state, weights)
    detector = FaceDetector(device="cpu", weights_path=weights, batch_size=4, scale=scale)
    images = [draw_face(i, HEIGHT, WIDTH) for i in range(frames)]
    detector.detect(images[:4])  # warm-up
    start = time.perf_counter()
    detector.detect(images)
    return (time.perf_counter() - start) / frames


def in_the_wild_ms_per_frame(frames: int = 100, track_frames: int = 3000) -> dict:
    """Milliseconds per 720p frame of the scene-cut histogram and of the clip-wide track."""
    import numpy as np

    from dataset.synthetic import draw_face
    from face_detection import ClipScan, colour_histogram, parse_face_select, track_boxes

    images = [draw_face(i, HEIGHT, WIDTH, seed=i // 50) for i in range(frames)]  # a cut every 50 frames
    start = time.perf_counter()
    histograms = [colour_histogram(f) for f in images]
    hist_ms = (time.perf_counter() - start) / frames * 1000
    rng = np.random.default_rng(0)
    detections = []
    for i in range(track_frames):
        # Three people, jittering; every 40th frame misses one, every 200th sees nobody.
        faces = [(x + rng.integers(-3, 4), 200 + rng.integers(-3, 4), x + 200, 460, 0.9) for x in (80, 540, 1000)]
        detections.append(np.array([] if i % 200 == 199 else faces[: 2 if i % 40 == 39 else 3], dtype=float).reshape(-1, 5))
    scan = ClipScan(detections, [histograms[i % frames] for i in range(track_frames)], (HEIGHT, WIDTH))
    start = time.perf_counter()
    track_boxes(scan, parse_face_select("largest"), cut_threshold=0.5)
    track_ms = (time.perf_counter() - start) / track_frames * 1000
    return {"cut_histogram_ms_per_frame": hist_ms, "track_ms_per_frame": track_ms, "wild_total_ms_per_frame": hist_ms + track_ms}


def seam_gradients() -> dict:
    """The grey step across the box edges after each paste mode, and the source's own."""
    import cv2
    import numpy as np
    from skimage.data import astronaut

    from face_detection import border_gradient, crop_face, paste_face

    frame, box = astronaut(), (50, 190, 170, 280)
    crop = crop_face(frame, box, 128).astype(np.int16)
    face = np.clip(cv2.GaussianBlur(crop, (0, 0), 1.5) + np.array([18, -8, 6]), 0, 255).astype(np.uint8)
    figures = {"seam_source": border_gradient(frame, box)}
    for mode, match in (("full", False), ("lower", False), ("feather", False), ("feather", True)):
        name = f"seam_{mode}" + ("_color_match" if match else "")
        figures[name] = border_gradient(paste_face(frame, face, box, mode=mode, color_match=match), box)
    return figures


def official_network_seconds_per_frame(batch: int = 8) -> float:
    """One DDIM-25 sample of the official network on the fast CPU path, per frame (from one
    timed forward of `batch` frames x 25 steps; the audio encoder runs once per frame)."""
    from guided_diffusion.precision import autocast, prepare_for_inference
    from guided_diffusion.script_util import tfg_create_model_and_diffusion

    torch.manual_seed(0)
    model, _ = tfg_create_model_and_diffusion()
    model = prepare_for_inference(model, "cpu", "bf16")
    x = torch.randn(batch, 3, 128, 128).contiguous(memory_format=torch.channels_last)
    mask = torch.zeros(batch, 1, 128, 128)
    mask[:, :, 64:] = 1
    kwargs = dict(cond_img=x, mask=mask, ref_img=x, indiv_mels=torch.randn(batch, 80, 16))
    with torch.no_grad(), autocast("cpu", "bf16"):
        kwargs = model.precompute_conditioning(kwargs)
        t = torch.full((batch,), 480)
        model(x, t, **kwargs)
        start = time.perf_counter()
        model(x, t, **kwargs)
        forward = time.perf_counter() - start
    return forward * 25 / batch


def detection_memory(workdir: str, durations: Sequence[float], scale: float = 0.5) -> dict:
    """Peak RSS of the detection path on the astronaut's head at 1280x720 (its own AAC track),
    the shorter and the longer clip each in a fresh process, with the committed 2-step demo
    student; also the source frames written under the output's audio (`orig`)."""
    runs = {}
    for seconds in durations:
        video = os.path.join(workdir, f"photo_{int(seconds)}s_720p.mp4")
        render_photo(video, seconds)
        out = os.path.join(workdir, f"out_detect_{int(seconds)}s.mp4")
        face = (*DETECT_FLAGS, "--face_det_scale", str(scale))
        runs[seconds] = result = run_clip(video, STUDENT, out, face=face, model_flags=(),
                                          orig=os.path.join(workdir, f"out_detect_{int(seconds)}s_orig.mp4"))
        print(f"{seconds:4.0f} s of 720p with detection, {result['frames']} frames: {result['frames'] / result['seconds']:.1f} "
              f"frames/s, peak RSS {result['peak_rss_mb']:.0f} MB (the clip adds {result['clip_rss_mb']:.0f} MB)")
    short, long_ = runs[min(durations)], runs[max(durations)]
    ratio = long_["peak_rss_mb"] / short["peak_rss_mb"]
    print(f"peak memory with detection, {max(durations):.0f} s / {min(durations):.0f} s of 720p: {ratio:.3f} "
          f"(target <= 1.2, and under 3000 MB: {long_['peak_rss_mb']:.0f} MB)")
    return {
        f"detect_peak_rss_mb_{int(min(durations))}s": short["peak_rss_mb"],
        f"detect_peak_rss_mb_{int(max(durations))}s": long_["peak_rss_mb"],
        "detect_memory_ratio_long_vs_short": ratio,
        f"detect_fps_{int(max(durations))}s": long_["frames"] / long_["seconds"],
    }


def audio_memory(workdir: str, checkpoint: str, durations: Sequence[float]) -> dict:
    """Peak RSS lip-syncing one 4 s 224x224 video to the shorter and to the longer audio, each in a fresh process."""
    video = os.path.join(workdir, "video_4s_224p.mp4")
    render(video, 4, with_audio=False, height=224, width=224)
    runs = {}
    for seconds in durations:
        speech = os.path.join(workdir, f"speech_{int(seconds)}s.m4a")
        write_speech(speech, seconds)
        out = os.path.join(workdir, f"out_audio_{int(seconds)}s.mp4")
        runs[seconds] = result = run_clip(video, checkpoint, out, audio=speech, face=("--is_voxceleb2", "True"))
        print(f"4 s video ({result['frames']} frames) with {seconds:.0f} s of audio: peak RSS {result['peak_rss_mb']:.0f} MB, "
              f"of which the clip adds {result['clip_rss_mb']:.0f} MB to the loaded model")
    short, long_ = runs[min(durations)], runs[max(durations)]
    ratio = long_["peak_rss_mb"] / short["peak_rss_mb"]
    print(f"peak memory, {max(durations):.0f} s / {min(durations):.0f} s of audio at the same video: {ratio:.3f} "
          f"(target <= 1.1); the clip's own: {long_['clip_rss_mb']:.0f} MB vs {short['clip_rss_mb']:.0f} MB")
    return {
        f"peak_rss_mb_audio_{int(min(durations))}s": short["peak_rss_mb"],
        f"peak_rss_mb_audio_{int(max(durations))}s": long_["peak_rss_mb"],
        "memory_ratio_audio_long_vs_short": ratio,
        f"clip_rss_mb_audio_{int(min(durations))}s": short["clip_rss_mb"],
        f"clip_rss_mb_audio_{int(max(durations))}s": long_["clip_rss_mb"],
        "clip_memory_added_by_long_audio_mb": long_["clip_rss_mb"] - short["clip_rss_mb"],
    }


def allocator(workdir: str, seconds: float = 10, rounds: int = 2) -> dict:
    """The committed demo student on a `seconds` 224x224 clip (the VoxCeleb2 crop, as `make demo`
    runs it) in fresh processes, with and without the allocator setting of every command
    (common.allocator), alternating, `rounds` each: the fastest wall time, the kernel's time and
    the page faults of each."""
    video = os.path.join(workdir, f"video_{int(seconds)}s_224p.mp4")
    render(video, seconds, height=224, width=224)
    runs = {True: [], False: []}
    for _ in range(rounds):
        for keep in (False, True):
            runs[keep].append(run_clip(video, STUDENT, os.path.join(workdir, f"out_allocator_{keep}.mp4"),
                                       face=("--is_voxceleb2", "True"), model_flags=(), keep_freed=keep))
    best = {keep: min(results, key=lambda r: r["seconds"]) for keep, results in runs.items()}
    for keep, name in ((False, "glibc's default"), (True, "freed memory kept")):
        r = best[keep]
        print(f"demo student, {r['frames']} frames of 224x224, {name}: {r['seconds']:.1f} s, {r['system_seconds']:.1f} s "
              f"in the kernel, {r['page_faults']} page faults, peak RSS {r['peak_rss_mb']:.0f} MB")
    ratio = best[True]["seconds"] / best[False]["seconds"]
    print(f"wall time with freed memory kept / glibc's default: {ratio:.3f}")
    return dict(allocator_time_ratio_kept_vs_default=ratio,
                allocator_system_seconds_default=best[False]["system_seconds"],
                allocator_system_seconds_kept=best[True]["system_seconds"],
                allocator_peak_rss_mb_default=best[False]["peak_rss_mb"],
                allocator_peak_rss_mb_kept=best[True]["peak_rss_mb"])


def s3fd_seconds_per_frame(workdir: str) -> dict:
    """{scale: S3FD's seconds per 720p frame} at the released scale 1.0 and at 0.5, timed once for
    the parts that need them (estimates, keyframes)."""
    return {scale: detection_seconds_per_frame(workdir, scale=scale) for scale in (1.0, 0.5)}


def estimates(workdir: str, detect: dict, outside: Optional[float] = None) -> dict:
    """S3FD (`detect`: `s3fd_seconds_per_frame`) and official-network costs per frame, and the share
    of time outside the network (`outside`: seconds per frame outside the small network, from the
    longest clip run)."""
    network = official_network_seconds_per_frame()
    print(f"S3FD on 720p: {detect[1.0] * 1000:.0f} ms (--face_det_scale 1, released), {detect[0.5] * 1000:.0f} ms (0.5); "
          f"official network DDIM-25 (bf16): {network:.2f} s")
    figures = dict(
        s3fd_ms_per_frame_scale1=detect[1.0] * 1000,
        s3fd_ms_per_frame_scale05=detect[0.5] * 1000,
        official_network_s_per_frame=network,
    )
    if outside is None:  # no clip was run: nothing to share out
        return figures

    def share(extra: float) -> float:
        return (outside + extra) / (outside + extra + network)

    print(f"outside the network per frame: {outside * 1000:.1f} ms (decode, crop, paste, encode)")
    print(f"estimated share outside the official network: {share(0):.1%} with a fixed box / VoxCeleb2 crop, "
          f"{share(detect[0.5]):.1%} with S3FD at scale 0.5, {share(detect[1.0]):.1%} at scale 1 (target <= 15%)")
    figures.update(
        outside_ms_per_frame=outside * 1000,
        outside_share_official_fixed_box=share(0),
        outside_share_official_s3fd_scale05=share(detect[0.5]),
        outside_share_official_s3fd_scale1=share(detect[1.0]),
    )
    return figures


def overlap(workdir: str, checkpoint: str, seconds: float = 10, rounds: int = 2) -> dict:
    """The small network on a 1280x720 clip with a fixed box, `--overlap True` (stages in threads)
    against `--overlap False` (one after the other), fresh processes alternating: frames/s."""
    video = os.path.join(workdir, f"clip_{int(seconds)}s_720p.mp4")
    render(video, seconds)
    fps = {"True": [], "False": []}
    for _ in range(rounds):
        for flag in fps:
            r = run_clip(video, checkpoint, os.path.join(workdir, f"out_overlap_{flag}.mp4"), extra=("--overlap", flag))
            fps[flag].append(r["frames"] / r["seconds"])
    best = {flag: max(values) for flag, values in fps.items()}
    ratio = best["True"] / best["False"]
    print(f"small network, {seconds:.0f} s of 720p, fixed box: {best['True']:.2f} frames/s with --overlap True, "
          f"{best['False']:.2f} with False ({ratio:.3f}x; best of {rounds})")
    return {"overlap_fps": best["True"], "serial_fps": best["False"], "overlap_fps_ratio": ratio}


# --keyframes_sampler: the sampling flags of each network cost the keyframes part can measure.
KEYFRAME_SAMPLERS = {
    "student2": ("--timestep_respacing", "ddim2"),
    "student1": ("--timestep_respacing", "ddim1"),
    "fast": ("--sampler", "dpm++2m", "--sampling_steps", "8", "--cache_interval", "2", "--cache_depth", "2"),
}


def keyframe_detection(workdir: str, s3fd: dict, seconds: float = 2.0, every: Sequence[int] = (1, 5),
                       min_face: float = 0.0, sampler: str = "student2") -> dict:
    """End to end on the astronaut's 1280x720 clip with a network of the official size sampled as
    KEYFRAME_SAMPLERS[`sampler`] says (random weights in the released format): frames/s with a
    fixed `--box` against CenterFace at each `--detect_every` (default scale: 1.0 at 720p), each in
    a fresh process, and the share of the time outside the network; S3FD's rows composed from the
    box run and S3FD's own time per keyframe (`s3fd`: `s3fd_seconds_per_frame`; the module
    docstring says why)."""
    from face_detection import CenterFaceDetector
    from guided_diffusion.script_util import tfg_create_model_and_diffusion

    video = os.path.join(workdir, f"photo_{int(seconds)}s_720p.mp4")
    render_photo(video, seconds)
    official = os.path.join(workdir, "official_random.pt")
    if not os.path.exists(official):
        torch.manual_seed(0)
        model, _ = tfg_create_model_and_diffusion()
        torch.save(model.state_dict(), official)  # checkpoint.pt's format: a plain state_dict
    x1, y1, x2, y2 = CenterFaceDetector().detect([photo_frame(0)])[0]
    flags = KEYFRAME_SAMPLERS[sampler]
    box = run_clip(video, official, os.path.join(workdir, "out_kf_box.mp4"), model_flags=flags,
                   face=("--is_voxceleb2", "False", "--box", f"{y1},{y2},{x1},{x2}"))
    rows = {"box": ("fixed --box", box)}  # tag -> (label, run)
    for k in every:
        rows[f"every{k}"] = (f"CenterFace, --detect_every {k}", run_clip(
            video, official, os.path.join(workdir, f"out_kf_{k}.mp4"), model_flags=flags,
            face=(*DETECT_FLAGS, "--detect_every", str(k), "--detect_min_face", str(min_face))))
    for scale, per_frame in s3fd.items():  # S3FD's rows: the box run plus S3FD on the keyframes
        for k in every:
            keyframes = len(range(0, box["frames"], k)) + (1 if (box["frames"] - 1) % k else 0)  # and the last frame
            rows[f"s3fd{scale:g}_every{k}"] = (f"S3FD at scale {scale:g} (composed), --detect_every {k}",
                                               dict(box, seconds=box["seconds"] + keyframes * per_frame))
    # The 2-step rows keep the names of the figures recorded before the other samplers existed.
    prefix = "student" if sampler == "student2" else sampler
    figures = {}
    for tag, (label, r) in rows.items():
        fps, outside = r["frames"] / r["seconds"], 1 - r["network_seconds"] / r["seconds"]
        ratio = fps / (box["frames"] / box["seconds"])
        print(f"official-size network, {sampler}, {label}: {fps:.3f} frames/s ({ratio:.3f}x the fixed box), "
              f"{outside:.1%} of the time outside the network")
        figures[f"{prefix}_fps_{tag}"] = fps
        figures[f"{prefix}_outside_share_{tag}"] = outside
        if tag != "box":
            figures[f"{prefix}_fps_ratio_{tag}_vs_box"] = ratio
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--durations", type=float, nargs="+", default=[10, 60], help="clip lengths in seconds")
    parser.add_argument("--audio_durations", type=float, nargs=2, default=[10, 600],
                        help="the two audio lengths (seconds) lip-synced onto the same 4 s 224x224 video")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="clips: speed and memory per clip length (fixed --box); detect: memory with face detection; audio: memory in the audio's length; "
                        "estimates: S3FD and the official network, the share outside the network; "
                        "wild: scene-cut and tracking cost per 720p frame; seam: box-edge step per paste mode; "
                        "allocator: the demo student with and without freed memory kept (common.allocator); "
                        "keyframes: an official-size 2-step network end to end on 720p, fixed box vs CenterFace at each --detect_every; "
                        "overlap: the small network with --overlap True against False")
    parser.add_argument("--detect_scale", type=float, default=0.5,
                        help="detect: --face_det_scale of the runs (0: generate.py's default, 1.0 at 720p, 4x the time)")
    parser.add_argument("--detect_every", type=int, nargs="+", default=[1, 5],
                        help="keyframes: the --detect_every values run against the fixed box")
    parser.add_argument("--keyframes_sampler", nargs="+", choices=KEYFRAME_SAMPLERS, default=["student2"],
                        help="keyframes: what the official-size network runs (student2: 2 DDIM steps; student1: ddim1; "
                        "fast: DPM-Solver++ 2M-8 with feature reuse, the fast path for the released checkpoint)")
    parser.add_argument("--workdir", default=os.path.join(REPO_ROOT, "outputs", "bench_pipeline"),
                        help="where the rendered clips (kept for reruns) and outputs go")
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)

    from guided_diffusion.script_util import tfg_create_model_and_diffusion
    from inference.options import create_parser

    flags = create_parser().parse_args(TINY_FLAGS)
    tiny_keys = ("image_size", "num_channels", "num_res_blocks", "channel_mult", "attention_resolutions", "num_head_channels")
    torch.manual_seed(0)
    model, _ = tfg_create_model_and_diffusion(**{k: getattr(flags, k) for k in tiny_keys})
    checkpoint = os.path.join(args.workdir, "tiny.pt")
    torch.save(model.state_dict(), checkpoint)

    s3fd: dict = {}

    def s3fd_timings() -> dict:  # S3FD timed on first use, then shared by the parts
        if not s3fd:
            s3fd.update(s3fd_seconds_per_frame(args.workdir))
        return s3fd

    figures = {}
    runs = {}
    for seconds in args.durations if "clips" in args.parts else []:
        video = os.path.join(args.workdir, f"clip_{int(seconds)}s_720p.mp4")
        render(video, seconds)
        result = run_clip(video, checkpoint, os.path.join(args.workdir, f"out_{int(seconds)}s.mp4"))
        outside = result["seconds"] - result["network_seconds"]
        runs[seconds] = dict(result, outside_per_frame=outside / result["frames"])
        print(
            f"{seconds:4.0f} s clip, {result['frames']} frames: {result['frames'] / result['seconds']:.1f} frames/s end to end, "
            f"{outside / result['seconds']:.0%} outside the tiny network, peak RSS {result['peak_rss_mb']:.0f} MB"
        )
        tag = f"{int(seconds)}s"
        figures[f"fps_{tag}"] = result["frames"] / result["seconds"]
        figures[f"outside_share_tiny_{tag}"] = outside / result["seconds"]
        figures[f"peak_rss_mb_{tag}"] = result["peak_rss_mb"]

    if runs and min(runs) != max(runs):
        short, long_ = min(runs), max(runs)
        figures["memory_ratio_long_vs_short"] = runs[long_]["peak_rss_mb"] / runs[short]["peak_rss_mb"]
        print(f"peak memory {int(long_)} s / {int(short)} s: {figures['memory_ratio_long_vs_short']:.3f} (target <= 1.2)")

    if "detect" in args.parts:
        figures.update(detection_memory(args.workdir, args.durations, args.detect_scale))
    if "audio" in args.parts:
        figures.update(audio_memory(args.workdir, checkpoint, args.audio_durations))
    if "wild" in args.parts:
        figures.update(in_the_wild_ms_per_frame())
        print(f"in-the-wild box logic: {figures['wild_total_ms_per_frame']:.3f} ms per 720p frame (target < 2 ms)")
    if "seam" in args.parts:
        figures.update(seam_gradients())
    if "allocator" in args.parts:
        figures.update(allocator(args.workdir))
    if "overlap" in args.parts:
        figures.update(overlap(args.workdir, checkpoint))
    if "keyframes" in args.parts:
        for sampler in args.keyframes_sampler:
            figures.update(keyframe_detection(args.workdir, s3fd_timings(), every=args.detect_every, sampler=sampler))
    if "estimates" in args.parts:
        figures.update(estimates(args.workdir, s3fd_timings(), runs[max(runs)]["outside_per_frame"] if runs else None))
    for name, value in figures.items():
        print(f"{name}={value:.4g}")


if __name__ == "__main__":
    main()
