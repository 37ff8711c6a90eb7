"""The web app: lip-sync a face video or photo to speech in the browser (Gradio).

    python app.py [--host 127.0.0.1] [--port 7860] [--share False] [--out_root outputs/app] [--checkpoint_root checkpoints]
    make app

Upload a face video or photo and speech (or record it), choose the checkpoint, the mode, the
sampler and its steps, the face options and the precision, and press Generate. A progress bar
follows the network passes; then the page shows the result video, a before/after sheet and the
`python generate.py ...` command that makes the same video from the command line.

The app runs generate.py's own pipeline: the page's values become generate.py flags (the shown
command), parsed by generate.py's parser with the checkpoint's stored flags applied as generate.py
applies them, and `inference.pipeline.Generator` lip-syncs the clip. One job runs at a time per process;
the network stays loaded while the settings do not change. Each job writes into a folder of its own
under --out_root: its inputs (video/, audio/), result.mp4, result_orig.mp4 (the source frames under
the driving audio, generate.py's --save_orig), sheet.png and command.txt. Bad input (an unreadable
upload, a wrong flag value) is one line in the page, as generate.py would print it; the failed
job's folder is removed.

Nothing leaves the machine: it listens on 127.0.0.1 unless told otherwise, Gradio's analytics are
off, and --share stays False unless asked.
"""

import argparse
import os
import re
import shlex
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any, Callable, List, Optional, Sequence

import numpy as np
import torch

from common.errors import Diff2LipError
from common.files import atomic_write_text
from common.flags import Option, Options, as_flags, create_argparser
from dataset.video_io import IMAGE_EXTENSIONS, iter_frames, probe_video
from evaluation import synthetic_demo
from evaluation.sheets import labelled_sheet, write_png
from guided_diffusion.checkpoint_format import is_safetensors, read_metadata, split_network_file
from inference.lipsync import FPS
from inference.options import GENERATE_OPTIONS, create_parser, parse_args
from inference.pipeline import Generator, check_single, network_key, single_outputs

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))

# generate.py's defaults (one source: guided_diffusion/script_util.py).
DEFAULTS = create_parser().parse_args([])

# The two modes of generate.py (its --help): the sampling input and reference frames.
MODES = {
    "cross (dubbing: the lips follow another speech)": ("gt", "gt"),
    "reconstruction (first frame as input and reference)": ("first_frame", "first_frame"),
}

# Where the face is: the detector (--is_voxceleb2 False), the fixed VoxCeleb2 crop of the paper's
# test set and of the synthetic heads (--is_voxceleb2 True), or one fixed box (--box).
FACE_CROPS = {"detect": "face detector", "voxceleb2": "fixed VoxCeleb2 crop", "box": "fixed box (--box)"}


# ----------------------------------------------------------------------------------------------
# Checkpoints


def is_diff2lip_network(path: str) -> bool:
    """True for a Diff2Lip network file (not a SyncNet expert or a face detector): a .safetensors
    file with its flags, or a .pt / .pth state_dict of the TFG network, bare or under "model" /
    "ema". Memory-maps the file, so no weights are read."""
    if is_safetensors(path):
        return bool(read_metadata(path)[0])
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - an unreadable file is simply not offered
        return False
    return isinstance(state, dict) and "time_embed.0.weight" in split_network_file(state)[0]


def released_checkpoint(root: str) -> str:
    """Where the released checkpoint goes: generate.py's default --model_path, under `root`."""
    return os.path.join(root, os.path.basename(DEFAULTS.model_path))


def demo_student(root: str) -> str:
    return os.path.join(root, os.path.relpath(synthetic_demo.DEMO_STUDENT, "checkpoints"))


def find_checkpoints(root: str) -> List[str]:
    """The Diff2Lip networks under `root` (any depth): the released checkpoint first, then the demo
    student, then the rest by name."""
    found = sorted(
        os.path.join(folder, name)
        for folder, _, names in os.walk(root)
        for name in names
        if name.endswith((".pt", ".pth", ".safetensors")) and is_diff2lip_network(os.path.join(folder, name))
    )
    first = [p for p in (released_checkpoint(root), demo_student(root)) if p in found]
    return first + [p for p in found if p not in first]


def default_checkpoint(root: str, found: Sequence[str]) -> Optional[str]:
    """The released checkpoint when present, else the demo student (else the first found)."""
    for path in (released_checkpoint(root), demo_student(root)):
        if path in found:
            return path
    return found[0] if found else None


def is_demo_network(path: str) -> bool:
    """A network of `make demo`: it lives in the demo folder (checkpoints/demo/, or demo/ under
    another root), like the demo student."""
    return os.path.basename(os.path.dirname(os.path.abspath(path))) == os.path.basename(os.path.dirname(synthetic_demo.DEMO_STUDENT))


def network_note(path: Optional[str]) -> str:
    """The note a network file carries on what it knows (the demo networks': synthetic heads only), or ""."""
    return read_metadata(path)[1].get("note", "") if path else ""


def note_text(path: Optional[str]) -> str:
    """The page's note above the controls: the chosen network's own note."""
    note = network_note(path)
    return f"**Note on {os.path.basename(path)}:** {note}" if note else ""


# ----------------------------------------------------------------------------------------------
# From the page's values to generate.py's flags


def flag_setting(flag: str) -> Any:
    """A Settings field that sets generate.py's `--flag` as it is, with the flag's declared default."""
    return field(default=GENERATE_OPTIONS[flag].default, metadata={"flag": flag})


@dataclass
class Settings:
    """The page's values; `flag_setting` fields set the generate.py flag they name, the others
    become flags in `build_argv`."""

    checkpoint: str = ""
    mode: str = next(m for m, types in MODES.items() if types == (DEFAULTS.sampling_input_type, DEFAULTS.sampling_ref_type))
    sampler: str = flag_setting("sampler")
    steps: int = 0  # 0: the checkpoint's own (see default_steps)
    cache_interval: int = flag_setting("cache_interval")
    face_crop: str = "detect"
    box: str = flag_setting("box")
    face_detector: str = flag_setting("face_detector")
    face_select: str = flag_setting("face_select")
    no_face: str = flag_setting("no_face")
    paste: str = flag_setting("paste")
    pads: str = flag_setting("pads")
    loop_video: bool = flag_setting("loop_video")
    precision: str = flag_setting("precision")
    seed: int = flag_setting("sampling_seed")


def setting_option(name: str) -> Option:
    """The declaration of the generate.py flag that Settings field `name` sets."""
    return GENERATE_OPTIONS[next(f for f in fields(Settings) if f.name == name).metadata["flag"]]


def checkpoint_defaults(checkpoint: str) -> argparse.Namespace:
    """generate.py's defaults for `checkpoint`: the parser's, with what the file stores."""
    return parse_args(["--model_path", checkpoint])[0]


def default_steps(defaults: argparse.Namespace, sampler: str) -> int:
    """Network passes per frame by default: --timestep_respacing ddimN's N for ddim (the parser's
    count when the respacing is not ddimN), --sampling_steps for the dpm++ samplers."""
    if sampler != "ddim":
        return defaults.sampling_steps
    match = re.fullmatch(r"ddim(\d+)", defaults.timestep_respacing)
    return int(match.group(1)) if match else int(DEFAULTS.timestep_respacing[len("ddim"):])


def default_face_crop(checkpoint: str) -> str:
    """The synthetic heads sit in the VoxCeleb2 crop; real videos need the detector."""
    return "voxceleb2" if is_demo_network(checkpoint) else "detect"


def build_argv(s: Settings, video: str, audio: str, out_path: str) -> List[str]:
    """generate.py's command line for one job: the job's files, the checkpoint and each setting that
    differs from the checkpoint's default (`checkpoint_defaults`)."""
    if s.face_crop == "box" and not s.box.strip():
        raise Diff2LipError("face crop 'fixed box' needs a box: top,bottom,left,right in pixels")
    argv = ["--generate_from_filelist", "False", "--video_path", video, "--audio_path", audio,
            "--out_path", out_path, "--save_orig", "True", "--model_path", s.checkpoint]
    defaults = checkpoint_defaults(s.checkpoint)
    steps = int(s.steps) or default_steps(defaults, s.sampler)
    page = dict(  # the settings that are not one flag each
        checkpoint={},
        mode=dict(zip(("sampling_input_type", "sampling_ref_type"), MODES[s.mode])),
        steps={"timestep_respacing": f"ddim{steps}"} if s.sampler == "ddim" else {"sampling_steps": steps},
        face_crop={"is_voxceleb2": s.face_crop == "voxceleb2"},
        box={"box": s.box.strip() if s.face_crop == "box" else ""},
    )
    wanted = {}
    for f in fields(s):
        flag = f.metadata.get("flag")
        wanted.update(page[f.name] if f.name in page else {flag: GENERATE_OPTIONS[flag].type(getattr(s, f.name))})
    return argv + as_flags({k: v for k, v in wanted.items() if getattr(defaults, k) != v})


def shown_path(path: str) -> str:
    """`path` relative to the current folder when inside it (as a user types it), else absolute."""
    rel = os.path.relpath(os.path.abspath(path))
    return os.path.abspath(path) if rel == ".." or rel.startswith(".." + os.sep) else rel


def command_line(argv: Sequence[str]) -> str:
    return "python generate.py " + shlex.join(argv)


# ----------------------------------------------------------------------------------------------
# The before/after sheet


SHEET_ROWS = 4  # frames spread over the clip
SHEET_CELL = 256  # px: the height of each frame in the sheet


def write_sheet(path: str, before_video: str, after_video: str) -> None:
    """The PNG sheet of SHEET_ROWS frames spread over the clip: before | after, each row naming its
    frame's index and time (the two videos are frame-aligned: generate.py's output and --save_orig)."""
    n = probe_video(after_video, FPS).num_frames
    picks = sorted(set(np.linspace(0, n - 1, num=min(SHEET_ROWS, n)).round().astype(int).tolist()))

    def frames(video: str) -> List[np.ndarray]:
        return [f for i, f in enumerate(iter_frames(video, FPS, stop=picks[-1] + 1)) if i in picks]

    rows = list(zip(frames(before_video), frames(after_video)))
    labels = [f"frame {i}\n{i / FPS:.2f} s" for i in picks]
    write_png(path, labelled_sheet(rows, ["before (source)", "after (lip-synced)"], labels, SHEET_CELL))


# ----------------------------------------------------------------------------------------------
# Jobs


@dataclass
class JobResult:
    folder: str
    video: str
    source: str  # the source frames under the driving audio (--save_orig)
    sheet: str
    command: str
    frames: int
    seconds: float
    stored_flags: List[str]  # the flags taken from the checkpoint

    def summary(self) -> str:
        stored = f"; from the checkpoint: `{' '.join(self.stored_flags)}`" if self.stored_flags else ""
        return (f"**{self.frames} frames** in {self.seconds:.1f} s{stored}. "
                f"Files in `{shown_path(self.folder)}`: result.mp4, result_orig.mp4 (the source), sheet.png, command.txt.")


def new_job_folder(out_root: str) -> str:
    """A fresh folder under `out_root`: <date-time>-<random>."""
    folder = os.path.join(out_root, f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")
    os.makedirs(folder)
    return folder


def keep_upload(upload: Optional[str], folder: str, kind: str, what: str) -> str:
    """Copy an uploaded file into the job's `folder`/`kind`/ (its own name kept), so the job's
    command keeps working after the upload cache is cleaned; a missing upload is a one-line error."""
    if not upload:
        raise Diff2LipError(f"no {kind}: upload {what}")
    if not os.path.isfile(upload):
        raise Diff2LipError(f"the uploaded {kind} '{os.path.basename(upload)}' is gone; upload it again")
    target = os.path.join(folder, kind, os.path.basename(upload) or kind)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(upload, target)
    return target


class Runner:
    """Runs jobs one at a time, keeping the network of the last job loaded while its network flags
    stay (a new sampler, step count or face option does not load it again)."""

    def __init__(self, out_root: str):
        self.out_root = out_root
        self._lock = threading.Lock()
        self._generator: Optional[Generator] = None

    def generator(self, args: argparse.Namespace) -> Generator:
        """A Generator for `args`, taking the last job's loaded network when its flags are the same."""
        if self._generator is not None and self._generator.network_key != network_key(args):
            self._generator = None  # the old network goes before the new one loads
        self._generator = Generator(args, reuse=self._generator)
        return self._generator

    def run(self, settings: Settings, video: Optional[str], audio: Optional[str],
            on_progress: Optional[Callable[[float, float], None]] = None) -> JobResult:
        """Lip-sync the uploads `video` and `audio` with `settings` into a new job folder."""
        if not settings.checkpoint:
            raise Diff2LipError("no checkpoint: put the released checkpoint.pt in checkpoints/ or run `make demo-train`")
        with self._lock:
            started = time.perf_counter()
            folder = new_job_folder(self.out_root)
            try:
                video = shown_path(keep_upload(video, folder, "video", "a face video or photo"))
                audio = shown_path(keep_upload(audio, folder, "audio", "speech or record it"))
                argv = build_argv(settings, video, audio, shown_path(os.path.join(folder, "result.mp4")))
                args, stored, _ = parse_args(argv)
                check_single(args)
                out, orig = single_outputs(args)
                frames = self.generator(args).clip(args.video_path, args.audio_path, out, orig, on_progress=on_progress)
                sheet = os.path.join(folder, "sheet.png")
                write_sheet(sheet, orig, out)
                command = command_line(argv)
                atomic_write_text(os.path.join(folder, "command.txt"), command + "\n")
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            return JobResult(folder, out, orig, sheet, command, frames, time.perf_counter() - started, stored)


# ----------------------------------------------------------------------------------------------
# The page


def flag_control(gr, name: str, value: Any):
    """The widget of Settings field `name`, from the declaration of the flag it sets: a menu of the
    flag's choices ('' shown as auto), a checkbox for a boolean, a whole-number field from the
    flag's minimum, else a text field; labelled with the setting's name, the flag's help as info."""
    option = setting_option(name)
    shown = dict(label=name.replace("_", " ").capitalize(), info=help_of(option.name))
    if option.choices:
        return gr.Dropdown([(choice or "auto", choice) for choice in option.choices], value=value, **shown)
    if isinstance(option.default, bool):
        return gr.Checkbox(value, **shown)
    if isinstance(option.default, int):
        return gr.Number(value, precision=0, minimum=option.minimum, **shown)
    return gr.Textbox(value, **shown)


def help_of(flag: str) -> str:
    return f"--{flag}: {GENERATE_OPTIONS[flag].help}"


def build_app(runner: Runner, checkpoint_root: str):
    """The Gradio Blocks of the app (launch it with `.launch`)."""
    import gradio as gr

    root = shown_path(checkpoint_root)
    found = find_checkpoints(root)
    first = default_checkpoint(root, found)
    first_defaults = checkpoint_defaults(first) if first else DEFAULTS
    s = Settings(checkpoint=first or "", face_crop=default_face_crop(first or ""))

    with gr.Blocks(title="Diff2Lip", analytics_enabled=False) as page:
        gr.Markdown("# Diff2Lip: lip-sync a face to speech")
        note = gr.Markdown(note_text(first), visible=bool(note_text(first)), elem_id="network-note")
        with gr.Row():
            with gr.Column():
                video = gr.File(label="Face video or photo", file_types=["video", *IMAGE_EXTENSIONS], elem_id="video-upload")
                audio = gr.Audio(label="Speech (upload or record)", sources=["upload", "microphone"], type="filepath",
                                 elem_id="audio-upload")
                widgets = dict(
                    checkpoint=gr.Dropdown([(shown_path(p), p) for p in found], value=s.checkpoint, label="Checkpoint", elem_id="checkpoint",
                                           info=help_of("model_path")),
                    mode=gr.Radio(list(MODES), value=s.mode, label="Mode", info=GENERATE_OPTIONS["sampling_input_type"].help),
                )
                with gr.Row():
                    widgets.update(
                        sampler=flag_control(gr, "sampler", s.sampler),
                        steps=gr.Number(default_steps(first_defaults, s.sampler), precision=0, minimum=1, label="Steps",
                                        info="network passes per frame: --timestep_respacing ddimN for ddim, "
                                        "--sampling_steps for dpm++"),
                        cache_interval=flag_control(gr, "cache_interval", s.cache_interval),
                    )
                with gr.Accordion("Face", open=False):
                    widgets.update(
                        face_crop=gr.Radio([(label, key) for key, label in FACE_CROPS.items()], value=s.face_crop,
                                           label="Face crop", info=help_of("is_voxceleb2")),
                        **{name: flag_control(gr, name, getattr(s, name))
                           for name in ("box", "face_detector", "face_select", "no_face", "paste", "pads", "loop_video")},
                    )
                with gr.Row():
                    widgets.update(
                        precision=flag_control(gr, "precision", s.precision),
                        seed=flag_control(gr, "seed", s.seed),
                    )
                start = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                result = gr.Video(label="Result", elem_id="result-video", interactive=False)
                sheet = gr.Image(label="Before / after", type="filepath", format="png", interactive=False, elem_id="sheet")
                command = gr.Textbox(label="The same run from the command line (from the folder the app was started in)", lines=3,
                                     buttons=["copy"], interactive=False, elem_id="command")
                summary = gr.Markdown(elem_id="summary")

        def on_checkpoint(checkpoint: str, sampler: str):
            text = note_text(checkpoint)
            steps = default_steps(checkpoint_defaults(checkpoint), sampler)
            return gr.update(value=text, visible=bool(text)), steps, default_face_crop(checkpoint)

        def on_sampler(checkpoint: str, sampler: str):
            return default_steps(checkpoint_defaults(checkpoint), sampler)

        def generate(values: dict, progress=gr.Progress()):
            # A cleared field takes its default (Settings).
            settings = Settings(**{name: values[w] for name, w in widgets.items() if values[w] is not None})

            def on_progress(done: float, total: float) -> None:
                progress(done / total if total else 1.0, desc=f"{done:.0f}/{total:.0f} frames")

            progress(0.0, desc="loading")
            try:
                job = runner.run(settings, values[video], values[audio], on_progress)
            except Diff2LipError as exc:
                raise gr.Error(str(exc), duration=None, print_exception=False) from None
            return job.video, job.sheet, job.command, job.summary()

        pick = [widgets["checkpoint"], widgets["sampler"]]
        widgets["checkpoint"].change(on_checkpoint, pick, [note, widgets["steps"], widgets["face_crop"]])
        widgets["sampler"].change(on_sampler, pick, widgets["steps"])
        start.click(generate, {video, audio, *widgets.values()}, [result, sheet, command, summary], concurrency_limit=1)
    return page


def app_defaults() -> dict:
    return APP_OPTIONS.defaults()


APP_OPTIONS = Options(
    Option("host", "127.0.0.1", "address to listen on (127.0.0.1: this machine only; 0.0.0.0: every network interface)"),
    Option("port", 7860, "port to listen on"),
    Option("share", False, "also open a public gradio.live link (sends the page through Gradio's servers)"),
    Option("out_root", "outputs/app", "each job writes into a new folder under this one"),
    Option("checkpoint_root", os.path.join(REPO_ROOT, "checkpoints"), "the Diff2Lip networks offered are the .pt, .pth and .safetensors files under this folder"),
)


def main(argv: Optional[List[str]] = None) -> int:
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    parser = create_argparser(APP_OPTIONS, description=__doc__)
    try:
        args = parser.parse_args(argv)
    except Diff2LipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    os.makedirs(args.out_root, exist_ok=True)
    page = build_app(Runner(args.out_root), args.checkpoint_root)
    page.queue().launch(server_name=args.host, server_port=args.port, share=args.share,
                        allowed_paths=[os.path.abspath(args.out_root)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
