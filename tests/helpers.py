"""Helpers shared by the tests (importable as `helpers`: pyproject puts tests/ on the path)."""

import contextlib
import os

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(REPO_ROOT, "tests", "data")

# Small enough for a 2-core CPU, but every code path of the official network is on:
# attention, resblock up/down, learned sigma, reference frames and the audio encoder.
TINY_FLAGS = dict(
    image_size=32,
    num_channels=32,
    num_res_blocks=1,
    channel_mult="1,2",
    attention_resolutions="16",
    num_head_channels=16,
)


def randomize_zero_init(model, seed: int = 0, std: float = 0.02) -> None:
    """Give the zero-initialised output convs small random weights, so outputs depend on inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0 and p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * std)


TINY_CLI_FLAGS = [
    "--image_size", "32", "--num_channels", "32", "--num_res_blocks", "1", "--channel_mult", "1,2",
    "--attention_resolutions", "16", "--num_head_channels", "16", "--timestep_respacing", "ddim2",
]


def save_tiny_checkpoint(path, seed: int = 0) -> None:
    """A random-weight checkpoint of the tiny network, in the released format (a plain state_dict)."""
    from guided_diffusion.script_util import tfg_create_model_and_diffusion

    torch.manual_seed(seed)
    model, _ = tfg_create_model_and_diffusion(**TINY_FLAGS)
    randomize_zero_init(model, seed)
    torch.save(model.state_dict(), path)


def render_clip(path, n_frames: int = 20, height: int = 224, width: int = 224, with_audio: bool = True, seed: int = 0) -> None:
    """A real H.264 + AAC mp4 of a drawn talking face, its audio as long as the video."""
    from dataset.synthetic import draw_face, speech_like
    from dataset.video_io import VideoWriter

    audio = speech_like(n_frames / 25, seed=seed) if with_audio else None
    with VideoWriter(str(path), fps=25, audio=audio, sample_rate=16000) as writer:
        for i in range(n_frames):
            writer.write(draw_face(i, height, width, seed))


def full_windows(seconds: float) -> int:
    """Frames k whose mel window int(80*max(k-1,0)/25) .. +16 fits in the mel of `seconds` of audio."""
    mel_steps = 1 + int(round(seconds * 16000)) // 200
    return sum(1 for k in range(1000) if int(80 * max(k - 1, 0) / 25) + 16 <= mel_steps)


def make_preprocessed_root(root, n_clips: int = 3, n_frames: int = 16, image_size: int = 32, val_clips: int = 1) -> list:
    """A preprocessed training root in the real format (`dataset/preprocessed.py`), from drawn
    faces and speech-like audio; returns the clip names."""
    import cv2

    from audio.audio import melspectrogram
    from dataset.preprocessed import write_clip, write_split
    from dataset.synthetic import draw_face, speech_like

    names = []
    for c in range(n_clips):
        name = f"id{c:03d}/video/00001"
        wav = speech_like(n_frames / 25 + 0.2, seed=c)
        faces = [cv2.resize(draw_face(i, 224, 224, seed=c)[0:158, 50:174], (image_size, image_size)) for i in range(n_frames)]
        write_clip(str(root), name, faces, wav, melspectrogram(wav), {"image_size": image_size, "fps": 25, "source": "synthetic"})
        names.append(name)
    write_split(str(root), "train", names[: n_clips - val_clips] if val_clips else names)
    write_split(str(root), "val", names[n_clips - val_clips :] if val_clips else [])
    return names


def has_encoder(name: str) -> bool:
    """Whether PyAV's FFmpeg build can encode with `name`."""
    import av

    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


def read_manifest(filename: str) -> list:
    """[(name, shape)] of a weight-format manifest in tests/data (state-dict order)."""
    with open(os.path.join(DATA_DIR, filename), encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    return [(name, tuple(int(d) for d in shape.strip("()").split(",") if d.strip())) for name, shape in rows]


def random_inception_state_dict(seed=0):
    """Every tensor of pytorch-fid's FID Inception, random: the module comes from pytorch-fid's
    own `fid_inception_v3` with its download answered by the module's own state. Conv weights are
    He-scaled (BN is near identity at its defaults) so that pool3 features are O(1), not ~1e-8 as
    with the default initialisation, and batch-size effects would show."""
    import pytest
    import pytorch_fid.inception as inception

    built = []
    build = inception._inception_v3

    def build_and_keep(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(inception, "_inception_v3", build_and_keep)
        # fid_inception_v3 patches the FID blocks in before loading: its own state is complete.
        mp.setattr(inception, "load_state_dict_from_url", lambda *args, **kwargs: built[-1].state_dict())
        state = inception.fid_inception_v3().state_dict()
    g = torch.Generator().manual_seed(seed)
    for name, t in state.items():
        if t.dim() == 4:
            state[name] = torch.randn(t.shape, generator=g) * (2.0 / t[0].numel()) ** 0.5
    return state



def syncnet_v2_state(seed=0):
    """Random values in exactly the manifest's names, shapes and order: He-scaled conv / linear
    weights (activations stay O(input)), BatchNorm scales near 1 and positive running variances."""
    import math

    import numpy as np

    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in read_manifest("syncnet_python_eval.tsv"):
        if name.endswith("num_batches_tracked"):
            value = torch.tensor(1000)
        elif name.endswith("running_var"):
            value = torch.rand(shape, generator=g) + 0.5
        elif name.endswith(".weight") and len(shape) > 1:
            value = torch.randn(shape, generator=g) * math.sqrt(2.0 / np.prod(shape[1:]))
        elif name.endswith(".weight"):
            value = 1 + 0.1 * torch.randn(shape, generator=g)
        else:  # biases and running means
            value = 0.1 * torch.randn(shape, generator=g)
        state[name] = value
    return state




def write_aac(path, channels, rate: int = 16000, video_frames: int = 0) -> None:
    """Write float channels [C, T] (C = 1 or 2) as AAC with PyAV, plus `video_frames` tiny 32x32
    25 fps frames when > 0. AAC pads its last 1024-sample frame, so the decoder yields more
    samples than the container declares unless T is a multiple of 1024."""
    import av
    import numpy as np

    layout = {1: "mono", 2: "stereo"}[channels.shape[0]]
    with av.open(str(path), "w") as container:
        vstream = None
        if video_frames:
            codec = next((c for c in ("libx264", "h264", "mpeg4") if has_encoder(c)), None)
            if codec is None:
                import pytest

                pytest.skip("PyAV has no h264 or mpeg4 encoder here")
            vstream = container.add_stream(codec, rate=25)
            vstream.width, vstream.height, vstream.pix_fmt = 32, 32, "yuv420p"
        astream = container.add_stream("aac", rate=rate, layout=layout)
        for i in range(0, channels.shape[1], 1000):
            chunk = np.ascontiguousarray(channels[:, i : i + 1000], dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, i
            for packet in astream.encode(frame):
                container.mux(packet)
        for packet in astream.encode(None):
            container.mux(packet)
        for i in range(video_frames):
            image = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 4 * i % 256, dtype=np.uint8), format="rgb24")
            for packet in vstream.encode(image):
                container.mux(packet)
        if vstream is not None:
            for packet in vstream.encode(None):
                container.mux(packet)


def decoder_output(path):
    """Every float sample [C, T] PyAV's decoder yields for the first audio track, nothing cut."""
    import av
    import numpy as np

    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray() for f in container.decode(container.streams.audio[0])], axis=1)


def old_pytorch_state(net, seed: int = 0) -> dict:
    """`net`'s state dict as PyTorch before 0.4.1 saved it: no BatchNorm `num_batches_tracked`.
    The running statistics are made random first, so a load that dropped them would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=g))
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=g) + 0.5)
                module.num_batches_tracked.fill_(1000)
    return {k: v.clone() for k, v in net.state_dict().items() if not k.endswith(".num_batches_tracked")}


def run_demo_train_recorded(tmp_path, monkeypatch, *argv: str) -> dict:
    """demo_train.main with every step recorded instead of run, the exported x0 network and
    expert present as empty files in tmp_path/export; returns {title without its "(...)": argv}."""
    from evaluation import synthetic_demo
    from scripts import demo_train

    export = tmp_path / "export"
    export.mkdir(exist_ok=True)
    for path in (synthetic_demo.DEMO_CHECKPOINT, synthetic_demo.DEMO_SYNC_EXPERT):
        (export / os.path.basename(path)).write_bytes(b"")
    calls = {}
    monkeypatch.setattr(demo_train, "prepare_data", lambda work_dir, image_size=64: f"CROPS{image_size}")
    monkeypatch.setattr(demo_train, "step", lambda title, args: calls.setdefault(title.split(" (")[0], args))
    assert demo_train.main(["--work_dir", str(tmp_path / "work"), "--export_dir", str(export), *argv]) == 0
    return calls


class BoxInFramesDetector:
    """A face detector (`batch_size`, `detect`) that finds `box` `(x1, y1, x2, y2)` in frames
    `first .. last` of the frames it is given, counted over all its calls, and records each
    frame's shape."""

    batch_size = 4

    def __init__(self, box=(10, 12, 40, 44), first=1, last=9):
        self.box, self.first, self.last = box, first, last
        self.shapes = []

    def detect(self, frames):
        start = len(self.shapes)
        self.shapes.extend(f.shape for f in frames)
        return [self.box if self.first <= start + i <= self.last else None for i in range(len(frames))]


SYNC_ROOT_FRAMES = 40


def write_sync_clip(root, name, n_frames, seed):
    """A preprocessed clip of `n_frames` drawn 128 px faces with speech-like audio; returns its frame count."""
    from audio.audio import melspectrogram, num_full_windows
    from dataset.preprocessed import write_clip
    from dataset.synthetic import draw_face, speech_like

    wav = speech_like(n_frames / 25 + 0.2, seed=seed)
    mel = melspectrogram(wav)
    n = min(n_frames, num_full_windows(mel.shape[1]))
    faces = (draw_face(i, 128, 128, seed=seed) for i in range(n))
    return write_clip(str(root), name, faces, wav, mel, dict(image_size=128, fps=25))


def make_sync_root(root):
    """The lip-sync expert's tiny root: 3 training clips of SYNC_ROOT_FRAMES frames, 1 too short (9
    frames), 1 validation clip; 128 px crops."""
    from dataset.preprocessed import write_split

    for k in range(4):
        assert write_sync_clip(root, f"id{k}/vid/00001", SYNC_ROOT_FRAMES, seed=k) == SYNC_ROOT_FRAMES
    assert write_sync_clip(root, "id9/vid/00001", 9, seed=9) == 9
    write_split(str(root), "train", ["id0/vid/00001", "id1/vid/00001", "id9/vid/00001", "id2/vid/00001"])
    write_split(str(root), "val", ["id3/vid/00001"])
    return root


def lower_half_kwargs(n: int, size: int = 8) -> dict:
    """The masking inputs of `n` frames of `size` px whose lower half is repainted (a zero masked frame)."""
    mask = torch.zeros(n, 1, size, size)
    mask[..., size // 2:, :] = 1
    return {"cond_img": torch.zeros(n, 3, size, size), "mask": mask}


def small_disk(folder, size: str):
    """A real file system of `size` (e.g. "2m") at `folder`, for full-disk tests: a tmpfs mounted
    there; a context manager yielding `(folder, preexec_fn)`. Where mounting is not allowed it
    falls back to a file-size limit (RLIMIT_FSIZE) that `preexec_fn` sets in a child process to
    `size` less what the folder holds when the child starts, with SIGXFSZ ignored, so a write
    past it fails with EFBIG as a full disk fails with ENOSPC (`preexec_fn` is None on a tmpfs)."""
    import contextlib
    import resource
    import signal
    import subprocess

    @contextlib.contextmanager
    def mounted():
        os.makedirs(folder, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
        if done.returncode == 0:
            try:
                yield str(folder), None
            finally:
                subprocess.run(["umount", "-l", str(folder)], check=True)
            return
        limit = int(size[:-1]) * {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[size[-1].lower()]

        def limited():
            used = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (max(limit - used, 1), max(limit - used, 1)))

        yield str(folder), limited

    return mounted()


@contextlib.contextmanager
def serve_folder(folder):
    """A real HTTP server (http.server, a thread) on 127.0.0.1 serving `folder`; yields its base URL."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
