"""Demo with nothing downloaded: lip-sync a rendered face video to other speech with generate.py.

1. renders a 2 s talking-face clip in the VoxCeleb2 format (224x224, 25 fps, H.264 + AAC) and a
   different speech track (AAC in an .m4a), both through PyAV;
2. writes a network checkpoint in the released format (a plain state_dict), by default a small
   untrained one, or uses `--model_path` (e.g. the released checkpoints/checkpoint.pt with
   `--official`);
3. runs `generate.py` in cross mode with the released flags (VoxCeleb2 crop, DDIM-25, seed 7),
   streaming decode -> crop -> sample -> paste -> encode;
4. writes `result.mp4` and `sheet.png` (video source | generated, one row per 5th frame) and
   prints what it measured.

An untrained network repaints the lower face with texture, not a mouth: it shows every stage
running; a trained checkpoint (`--model_path`) makes it lip-sync.

    python demo.py [--out_dir outputs/demo] [--model_path checkpoints/checkpoint.pt --official]
"""

import argparse
import os
import time

import cv2
import numpy as np
import torch

from dataset.synthetic import draw_face, speech_like
from dataset.video_io import VideoWriter, iter_frames, probe_video
from inference.cli import main as generate_main

# A small network of the released design (same code, fewer channels) for the untrained demo.
DEMO_FLAGS = [
    "--num_channels", "32", "--num_res_blocks", "1", "--channel_mult", "1,1,2",
    "--attention_resolutions", "16", "--num_head_channels", "32",
]


def write_speech_m4a(path: str, seconds: float, seed: int) -> None:
    """Speech-like audio as AAC in an .m4a (an audio-only container), written atomically."""
    import av

    wav = speech_like(seconds, seed=seed)
    tmp = path + ".part.m4a"
    with av.open(tmp, "w") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(wav[None, :], format="flt", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", default="outputs/demo", help="where the inputs, checkpoint and results go")
    parser.add_argument("--model_path", default="", help="a trained checkpoint to use instead of an untrained one")
    parser.add_argument("--official", action="store_true", help="--model_path has the released (full-size) configuration")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the rendered clip")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    started = time.perf_counter()

    video = os.path.join(args.out_dir, "face.mp4")
    audio = os.path.join(args.out_dir, "speech.m4a")
    with VideoWriter(video, fps=25, audio=speech_like(args.seconds, seed=1), sample_rate=16000) as writer:
        for i in range(int(args.seconds * 25)):
            writer.write(draw_face(i, 224, 224, seed=3))
    write_speech_m4a(audio, args.seconds, seed=2)
    print(f"rendered {video} ({probe_video(video).num_frames} frames) and {audio}")

    model_flags = [] if args.official else DEMO_FLAGS
    model_path = args.model_path
    if not model_path:
        from guided_diffusion.script_util import create_argparser, tfg_create_model_and_diffusion, tfg_model_defaults

        flags = vars(create_argparser(tfg_model_defaults()).parse_args(DEMO_FLAGS))
        torch.manual_seed(0)
        model, _ = tfg_create_model_and_diffusion(**flags)
        model_path = os.path.join(args.out_dir, "untrained_small.pt")
        torch.save(model.state_dict(), model_path + ".part")
        os.replace(model_path + ".part", model_path)
        print(f"untrained network ({sum(p.numel() for p in model.parameters()):,} parameters) -> {model_path}")

    result = os.path.join(args.out_dir, "result.mp4")
    code = generate_main([
        *model_flags, "--model_path", model_path, "--generate_from_filelist", "0", "--video_path", video,
        "--audio_path", audio, "--out_path", result, "--is_voxceleb2", "True", "--precision", "bf16",
        "--sampling_input_type", "gt", "--sampling_ref_type", "gt", "--sampling_seed", "7",
    ])
    if code != 0:
        raise SystemExit(code)

    source = list(iter_frames(video, 25))
    generated = list(iter_frames(result, 25))
    rows = [np.concatenate([source[i], generated[i]], axis=1) for i in range(0, len(generated), 5)]
    sheet = os.path.join(args.out_dir, "sheet.png")
    cv2.imwrite(sheet, cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
    print(f"result {result}: {len(generated)} frames at 25 fps; sheet {sheet}; total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
