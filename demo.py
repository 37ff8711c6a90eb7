"""Demo with nothing downloaded: the core pipeline end to end on data made here.

1. speech-like audio is synthesised and written as AAC in an .m4a through PyAV, then read back
   with `audio.audio.load_wav`, turned into Wav2Lip's mel and cut into per-frame windows;
2. the official Diff2Lip network is built from the released flags, given random weights, saved
   as a released-format `checkpoint.pt` and loaded back with `weights_only=True`;
3. a drawn face is masked like the released sampler does and repainted by DDIM-25 on the fast
   CPU path; a PNG sheet (input | masked input | output per frame) is written.

With random weights the repainted half is not a mouth: the point is that every stage runs and
the invariants hold (pixels above the mask untouched, one shared noise, the checkpoint round trip).

    python demo.py [--out_dir outputs/demo] [--frames 5] [--precision bf16]
"""

import argparse
import os
import time

import av
import cv2
import numpy as np
import torch

from audio.audio import frame_mel_windows, load_wav, melspectrogram, num_full_windows
from guided_diffusion.inference_util import autocast, prepare_for_inference, resolve_precision
from guided_diffusion.script_util import load_model_weights, tfg_create_model_and_diffusion
from guided_diffusion.tfg_data_util import shared_noise, tfg_process_batch


def write_speech_like_m4a(path: str, seconds: float = 1.0, sr: int = 16000) -> None:
    """Voiced syllables (a 140 Hz harmonic source with two formants) at 4 Hz, as AAC in an .m4a."""
    t = np.arange(int(seconds * sr)) / sr
    source = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20))
    formants = 0.6 * np.sin(2 * np.pi * 700 * t) + 0.4 * np.sin(2 * np.pi * 1200 * t)
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    wav = (0.3 * envelope * (0.5 * source / 3 + 0.5 * formants)).astype(np.float32)
    tmp = path + ".part.m4a"
    with av.open(tmp, "w") as container:
        stream = container.add_stream("aac", rate=sr, layout="mono")
        frame = av.AudioFrame.from_ndarray(wav[None, :], format="flt", layout="mono")
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    os.replace(tmp, path)


def drawn_faces(n: int, size: int = 128) -> np.ndarray:
    """`n` RGB frames of a drawn face (skin, eyes, a mouth that opens and closes): `[n, H, W, 3]` uint8."""
    frames = []
    for i in range(n):
        img = np.full((size, size, 3), (120, 90, 70), np.uint8)
        cv2.ellipse(img, (size // 2, size // 2), (size * 3 // 8, size * 15 // 32), 0, 0, 360, (225, 180, 150), -1)
        for x in (size * 3 // 8, size * 5 // 8):
            cv2.circle(img, (x, size * 13 // 32), size // 20, (40, 40, 40), -1)
        opening = 2 + int(6 * abs(np.sin(i * 0.9)))
        cv2.ellipse(img, (size // 2, size * 23 // 32), (size // 7, opening), 0, 0, 360, (150, 40, 60), -1)
        frames.append(img)
    return np.stack(frames)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", default="outputs/demo", help="where the audio, checkpoint and sheet go")
    parser.add_argument("--frames", type=int, default=5, help="video frames to repaint (default 5)")
    parser.add_argument("--precision", default="bf16", help="fp32 or bf16 (default bf16, the fast CPU path)")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    device = torch.device("cpu")
    precision = resolve_precision(args.precision, device)
    started = time.perf_counter()

    audio_path = os.path.join(args.out_dir, "speech.m4a")
    write_speech_like_m4a(audio_path)
    wav = load_wav(audio_path, 16000)
    mel = melspectrogram(wav)
    n_frames = min(args.frames, num_full_windows(mel.shape[1]))
    windows = frame_mel_windows(mel, n_frames)
    print(f"audio: {audio_path}: {wav.size} samples at 16 kHz -> mel {mel.shape} -> windows {windows.shape}")

    torch.manual_seed(0)
    model, diffusion = tfg_create_model_and_diffusion(timestep_respacing="ddim25")
    checkpoint = os.path.join(args.out_dir, "checkpoint.pt")
    torch.save(model.state_dict(), checkpoint + ".part")
    os.replace(checkpoint + ".part", checkpoint)
    fresh, _ = tfg_create_model_and_diffusion(timestep_respacing="ddim25")
    load_model_weights(fresh, checkpoint)
    n_params = sum(p.numel() for p in fresh.parameters())
    print(f"network: released configuration, {n_params:,} parameters, saved and reloaded from {checkpoint}")

    faces = drawn_faces(n_frames)
    frames = torch.from_numpy(faces).permute(0, 3, 1, 2).float().div(127.5).sub(1)[None]  # [1, F, 3, H, W]
    noise = shared_noise(128, seed=7)
    batch = tfg_process_batch(frames, 0.5, ref_frames=frames, mels=torch.from_numpy(windows)[None], noise=noise)
    model = prepare_for_inference(fresh, device, precision)
    start = time.perf_counter()
    with torch.no_grad(), autocast(device, precision):
        sample = diffusion.ddim_sample_loop(
            model, tuple(batch.x_start.shape), noise=batch.noise, model_kwargs=batch.model_kwargs, progress=True
        )
    seconds = time.perf_counter() - start
    output = sample * batch.mask + batch.x_start * (1 - batch.mask)
    untouched = torch.equal(output[:, :, :64], batch.x_start[:, :, :64])
    print(f"DDIM-25 on {n_frames} frames ({precision}): {seconds:.1f} s; pixels above the mask untouched: {untouched}")

    def to_uint8(t):
        return ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()

    columns = [to_uint8(batch.x_start), to_uint8(batch.model_kwargs["cond_img"].clamp(-1, 1)), to_uint8(output)]
    sheet = np.concatenate([np.concatenate(list(col), axis=0) for col in columns], axis=1)
    sheet_path = os.path.join(args.out_dir, "sheet.png")
    cv2.imwrite(sheet_path, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"sheet: {sheet_path} (input | masked input | output); total {time.perf_counter() - started:.1f} s")
    if not untouched:
        raise SystemExit("pixels above the mask changed: the paste-back is broken")


if __name__ == "__main__":
    main()
