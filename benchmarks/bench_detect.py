"""Face boxes from keyframe detection (`--detect_every`, `--detect_min_face`) against per-frame
detection, and what each costs, on rendered 1280x720 footage the bundled CenterFace finds.

Footage: the astronaut photograph's head (scikit-image, a real face) moved as talking heads and
cameras move it, one clip per motion, 25 fps:
  sway      40 px left and right every 4 s (bench_pipeline's clip)
  approach  walks across and towards the camera: 380 -> 620 px, 300 px to the right
  turn      turns the head: in-plane roll up to 20 degrees and a yaw squash to 60% of its width and back
  nod       fast nods: 30 px up and down twice a second
  enter     slides in from the left edge, stays, leaves on the right (half-visible frames included)
  cut       two shots: the face on the left on grey, a cut, a larger face on the right on another ground
Every clip is decoded from H.264 as users' videos are. For each setting its boxes go through the
same track as generate.py's (`track_boxes`: selection, cuts, gap fill, smoothing) and are compared
with per-frame detection's frame by frame: IoU where both generate the face, and the frames where
only one does (counted as IoU 0). Cost: detector frames and wall seconds per frame, in the same
run. The defaults of face_detection/options.py are the setting this table chose.

    python benchmarks/bench_detect.py [--frames 100] [--every 1 3 5 8 12] [--min_face 0 160] [--scale 0.5]

Ends with one name=value line per figure.
"""

import argparse
import os
import sys
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

HEIGHT, WIDTH = 720, 1280
MOTIONS = ("sway", "approach", "turn", "nod", "enter", "cut")
TARGETS = dict(mean_iou=0.9, min_iou=0.7)


def _head(side: int):
    import cv2
    from skimage.data import astronaut

    return cv2.resize(astronaut(), (side, side), interpolation=cv2.INTER_AREA)


def motion_frame(motion: str, i: int, n: int):
    """Frame `i` of `n` of one motion (see the module docstring): RGB uint8 [720, 1280, 3]."""
    import cv2

    t = i / 25.0
    ground = 96
    side, angle, squash = 620, 0.0, 1.0
    cx, cy = WIDTH / 2, HEIGHT / 2
    if motion == "sway":
        side, cx = 720, WIDTH / 2 + 40 * np.sin(2 * np.pi * t / 4)
    elif motion == "approach":
        u = i / max(n - 1, 1)
        side, cx, cy = 380 + 240 * u, WIDTH / 2 - 150 + 300 * u, HEIGHT / 2 + 20 * u
    elif motion == "turn":
        angle = 20 * np.sin(2 * np.pi * t / 3)
        squash = 1 - 0.4 * np.abs(np.sin(2 * np.pi * t / 4))
    elif motion == "nod":
        cy = HEIGHT / 2 + 30 * np.sin(2 * np.pi * 2 * t)
    elif motion == "enter":
        u = i / max(n - 1, 1)  # from fully left of the frame to fully right
        side, cx = 560, -280 + (WIDTH + 560) * (0.5 + 0.5 * np.sin(np.pi * (u - 0.5)))
    elif motion == "cut":
        if i < n // 2:
            side, cx = 520, WIDTH * 0.3 + 2 * i
        else:
            side, cx, ground = 680, WIDTH * 0.62 - 2 * (i - n // 2), 170
    else:
        raise ValueError(motion)
    frame = np.full((HEIGHT, WIDTH, 3), ground, np.uint8)
    side = int(round(side))
    head = _head(side)
    if squash != 1.0:
        head = cv2.resize(head, (max(8, int(side * squash)), side), interpolation=cv2.INTER_AREA)
    if angle:
        h, w = head.shape[:2]
        rotation = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        head = cv2.warpAffine(head, rotation, (w, h), borderValue=(ground, ground, ground))
    h, w = head.shape[:2]
    x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
    fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(WIDTH, x0 + w), min(HEIGHT, y0 + h)
    if fx1 > fx0 and fy1 > fy0:
        frame[fy0:fy1, fx0:fx1] = head[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    return frame


def render(path: str, motion: str, n: int) -> None:
    from dataset.video_io import VideoWriter

    if os.path.exists(path):
        return
    with VideoWriter(path + ".tmp.mp4", fps=25) as writer:
        for i in range(n):
            writer.write(motion_frame(motion, i, n))
    os.replace(path + ".tmp.mp4", path)


def boxes(frames, detector, every: int, min_face: float):
    """(track of generate.py's default flags, detector frames, seconds) for one setting."""
    from face_detection import parse_face_select, scan_faces, track_boxes

    start = time.perf_counter()
    calls = []
    real = detector._detect_batch

    def counting(batch):
        calls.append(len(batch))
        return real(batch)

    detector._detect_batch = counting
    try:
        scan = scan_faces(iter(frames), detector, "bench", every, 0.5, min_face)
    finally:
        detector._detect_batch = real
    track = track_boxes(scan, parse_face_select("largest"), cut_threshold=0.5, source_name="bench")
    return track, sum(calls), time.perf_counter() - start


def compare(track, reference) -> np.ndarray:
    """Per frame: IoU of the generated boxes where both generate, 0 where only one does; NaN where neither."""
    from face_detection.tracking import iou

    out = np.full(len(reference.weights), np.nan)
    for i, (a, b, wa, wb) in enumerate(zip(track.boxes, reference.boxes, track.weights, reference.weights)):
        if wa > 0 and wb > 0:  # (y1, y2, x1, x2) boxes as the track's (x1, y1, x2, y2)
            out[i] = float(iou(a[[2, 0, 3, 1]], b[None, [2, 0, 3, 1]])[0])
        elif (wa > 0) != (wb > 0):
            out[i] = 0.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100, help="frames of each motion's clip")
    parser.add_argument("--every", type=int, nargs="+", default=[3, 5, 8, 12], help="--detect_every values (1 is the reference)")
    parser.add_argument("--min_face", type=float, nargs="+", default=[0, 160], help="--detect_min_face values")
    parser.add_argument("--scale", type=float, default=0.5, help="--face_det_scale of every setting (0.5: bench_pipeline's)")
    parser.add_argument("--motions", nargs="+", default=list(MOTIONS), choices=MOTIONS)
    parser.add_argument("--workdir", default="outputs/bench_detect")
    args = parser.parse_args()

    from dataset.video_io import iter_frames
    from face_detection import CenterFaceDetector

    os.makedirs(args.workdir, exist_ok=True)
    detector = CenterFaceDetector(scale=args.scale)
    settings = [(e, m) for e in args.every for m in args.min_face]
    ious = {s: [] for s in settings}
    cost = {s: [0, 0.0] for s in settings}
    ref_cost = [0, 0.0]
    per_motion = {}
    total = 0
    for motion in args.motions:
        path = os.path.join(args.workdir, f"{motion}.mp4")
        render(path, motion, args.frames)
        frames = list(iter_frames(path))
        total += len(frames)
        reference, n_ref, sec = boxes(frames, detector, 1, 0)
        ref_cost[0] += n_ref
        ref_cost[1] += sec
        per_motion[motion] = {}
        for s in settings:
            track, n, sec = boxes(frames, detector, *s)
            iou = compare(track, reference)
            ious[s].append(iou)
            cost[s][0] += n
            cost[s][1] += sec
            valid = iou[~np.isnan(iou)]
            per_motion[motion][s] = (valid.mean() if len(valid) else 1.0, valid.min() if len(valid) else 1.0)
        print(f"[{motion}] per-frame: {reference.n_generated}/{len(frames)} frames with the face; " + ", ".join(
            f"every {e} min_face {m:g}: mean {per_motion[motion][(e, m)][0]:.3f} min {per_motion[motion][(e, m)][1]:.3f}"
            for e, m in settings), flush=True)

    print(f"\n{total} frames of 1280x720 in {len(args.motions)} motions, CenterFace at --face_det_scale {args.scale}; "
          f"per-frame detection {ref_cost[1] / total * 1000:.0f} ms/frame\n")
    print("| --detect_every | --detect_min_face | mean IoU | lowest IoU (motion) | detector frames | ms / frame | vs per-frame |")
    print("|---|---|---|---|---|---|---|")
    lines = []
    for s in settings:
        all_iou = np.concatenate(ious[s])
        valid = all_iou[~np.isnan(all_iou)]
        worst = min(per_motion, key=lambda m: per_motion[m][s][1])
        ms = cost[s][1] / total * 1000
        ratio = cost[s][1] / ref_cost[1]
        print(f"| {s[0]} | {s[1]:g} | {valid.mean():.3f} | {valid.min():.3f} ({worst}) | {cost[s][0]}/{total} | {ms:.0f} | {ratio:.3f}x |")
        key = f"every{s[0]}_minface{int(s[1])}"
        lines += [f"{key}_mean_iou={valid.mean():.4f}", f"{key}_min_iou={valid.min():.4f}", f"{key}_time_ratio={ratio:.4f}"]
    print()
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
