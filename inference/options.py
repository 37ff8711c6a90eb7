"""The options of generate.py, generate_dist.py and the web app, each declared once
(`common.flags.Option`): the network, diffusion and face-crop options of `script_util`, the face
options of `face_detection`, and the sampling and input/output options below; and generate.py's
parser of them (`create_parser`, `parse_args`: the flags with a network file's own filled in).

A new sampling option is one `Option` in SAMPLING_OPTIONS: it is a flag of generate.py (its
`--help`, its check), a field of `inference.lipsync.SamplingOptions` with the same default
(CLIP_OPTIONS), and a value the web app can pass on.
"""

import argparse
from typing import List, Optional, Sequence, Tuple

from common.flags import (
    DEVICE,
    PROGRESS,
    FlagRule,
    Option,
    Options,
    at_least,
    between,
    create_argparser,
    one_of,
    validate_flags,
)
from face_detection.options import FACE_OPTIONS
from guided_diffusion.checkpoint_format import apply_checkpoint_flags, read_metadata
from guided_diffusion.precision import PRECISION
from guided_diffusion.respace import ddim_strides, nearest_ddim_count
from guided_diffusion.samplers import SAMPLERS, SOLVERS
from guided_diffusion.script_util import DATA_OPTIONS, DIFFUSION_OPTIONS, MODEL_AND_DIFFUSION_OPTIONS, MODEL_OPTIONS


def _solver_steps_rule(args: argparse.Namespace) -> Optional[str]:
    """A dpm++ sampler on the ddim spacing needs a step count that some ddimN stride gives."""
    if args.sampler not in SOLVERS or args.solver_spacing != "ddim":
        return None
    steps = getattr(args, "diffusion_steps", 1000)
    if args.sampling_steps >= 2 and args.sampling_steps in ddim_strides(steps):
        return None
    return (f"--sampling_steps {args.sampling_steps} with --solver_spacing ddim: no ddimN spacing of {steps} steps has "
            f"that many (2 at least); use --sampling_steps {nearest_ddim_count(steps, max(args.sampling_steps, 2))} "
            "or --solver_spacing trailing")



SAMPLING_OPTIONS = Options(
    DIFFUSION_OPTIONS["timestep_respacing"].with_default("ddim25"),
    Option('use_ddim', True, 'sample with DDIM (deterministic with eta 0) instead of DDPM'),
    Option('clip_denoised', True, 'clamp the predicted clean frame to [-1, 1] at each step'),
    Option('sampler', 'ddim',
           'ddim: the released sampler (DDIM, or DDPM with --use_ddim False) over --timestep_respacing; '
           'ddpm: ancestral sampling over --timestep_respacing; '
           'dpm++2m / dpm++3m: DPM-Solver++ multistep ODE solvers of --sampling_steps network passes (same '
           'network, no retraining; 2M at 8-10 steps is close to DDIM-25)',
           one_of(*SAMPLERS)),
    Option('sampling_steps', 10,
           'network passes per frame of the dpm++ samplers (the ddim sampler takes its steps from '
           '--timestep_respacing)',
           at_least(1)),
    Option('solver_spacing', 'ddim',
           'timesteps of the dpm++ samplers: ddim (those of --timestep_respacing ddimN for N = '
           '--sampling_steps, ending at t=0 like the released sampler: closest to its frames) or trailing '
           '(from t=T-1 down in equal strides, ending one stride above 0)',
           one_of("ddim", "trailing")),
    Option('cache_interval', 1,
           'deep-feature reuse (DeepCache): a full network pass every N steps, and in between only the '
           'shallowest --cache_depth blocks at each end of the UNet (1 = off, the released behaviour)',
           at_least(1)),
    Option('cache_depth', 3,
           'encoder (and mirror decoder) blocks recomputed on the reusing steps; the rest is reused',
           at_least(1)),
    Option('compile', False, 'torch.compile the network (the first batch compiles for a minute; pays on long clips)'),
    Option('model_path', 'checkpoints/checkpoint.pt',
           'Diff2Lip network file, e.g. checkpoints/checkpoint.pt (the released plain state_dict: the '
           'released flags build it) or one of ours (.pt or .safetensors), which carries its flags: then no '
           'network flag is needed'),
    Option('sampling_seed', 7, 'seed of the shared initial noise; same seed, same output', between(0, 2**32 - 1)),
    Option('sampling_input_type', 'gt',
           'input frames: gt (each frame itself, cross) or first_frame (reconstruction)',
           one_of("gt", "first_frame")),
    Option('sampling_ref_type', 'gt',
           'reference frames: gt, first_frame or random',
           one_of("gt", "first_frame", "random")),
    Option('sampling_batch_size', 32, 'frames per network call', at_least(1)),
    Option('overlap', 'auto', 'run the stages concurrently: decoding and cropping the next chunk, the network on this '
           'one, pasting and encoding the one before (threads, one chunk waiting between two stages); False runs them '
           'one after the other, with the same frames; auto (default): True when the network runs on a GPU, False on '
           'a CPU, whose cores the network already keeps busy', one_of("auto", "True", "False")),
    Option('generate_from_filelist', True, '1: run the pairs of --filelist; 0: one --video_path/--audio_path pair'),
    Option('test_video_dir', '', 'root folder the filelist paths are relative to'),
    Option('filelist', '', "text file of 'AUDIO_REL VIDEO_REL' lines (no .mp4)"),
    Option('sample_path', 'outputs/samples', 'output folder for filelist runs'),
    Option('save_orig', False, 'also write the untouched input with the driving audio as *_orig.mp4'),
    Option('video_path', '', 'single run: the face video (or a still image)'),
    Option('audio_path', '', "single run: the speech (wav, mp3, m4a, or a video's audio track)"),
    Option('out_path', 'outputs/result.mp4', 'single run: the output mp4 (never one of the inputs)'),
    Option('loop_video', False,
           'play the video forward-backward to cover the whole audio (dubbing); released: stop at the '
           'shorter of video and audio'),
    Option('skip_existing', False,
           'skip filelist items whose output already exists as a readable video (resume an interrupted list)'),
    PRECISION,
    DEVICE,
    Option('channel_order', 'rgb',
           'channel order the network sees: rgb or bgr (rgb assumed for the released checkpoint)',
           one_of("rgb", "bgr")),
    PROGRESS,
    FACE_OPTIONS,
    rules=[FlagRule(("sampler", "sampling_steps", "solver_spacing"), _solver_steps_rule)],
)

# Everything generate.py takes.
GENERATE_OPTIONS = Options(MODEL_AND_DIFFUSION_OPTIONS, DATA_OPTIONS, SAMPLING_OPTIONS)

# The sampling options that choose the network, the face detector, the files and the device of a
# run (the pipeline and the command line read them from the flags); every other one shapes the
# frames of each clip.
RUN_OPTIONS = ("timestep_respacing", "compile", "model_path", "generate_from_filelist", "test_video_dir", "filelist",
               "sample_path", "save_orig", "video_path", "audio_path", "out_path", "skip_existing", "device",
               "face_det_batch_size", "face_det_scale", "face_detector")

# What lip-syncing a clip takes from the flags: the fields of `inference.lipsync.SamplingOptions`.
CLIP_OPTIONS = Options(MODEL_OPTIONS.only("image_size"), DATA_OPTIONS, SAMPLING_OPTIONS.without(*RUN_OPTIONS))

DESCRIPTION = """Lip-sync videos to speech with Diff2Lip.

single video:  --generate_from_filelist 0 --video_path V --audio_path A --out_path O
filelist:      --generate_from_filelist 1 --test_video_dir D --filelist L --sample_path S
modes:         cross = --sampling_input_type gt --sampling_ref_type gt;
               reconstruction = first_frame / first_frame
"""


def create_parser() -> argparse.ArgumentParser:
    """generate.py's parser (and generate_dist.py's)."""
    return create_argparser(GENERATE_OPTIONS, description=DESCRIPTION)


def parse_args(argv: Sequence[str]) -> Tuple[argparse.Namespace, List[str], dict]:
    """generate.py's flags with the checkpoint's own filled in: `(args, flags taken from the
    file, what the file says it was trained on)`. The command line, the web app and the Python
    API all start here.

    Our network files carry their flags (a student its step count): the command line needs only
    what it wants to change, and a network flag that contradicts the file is an error. What the
    file sets is validated like a typed flag.
    """
    parser = create_parser()
    args = parser.parse_args(list(argv))
    stored, trained_on = read_metadata(args.model_path)
    taken = apply_checkpoint_flags(args, argv, stored, args.model_path)
    if taken:
        validate_flags(args, parser.options, parser.flag_rules)
    return args, taken, trained_on


def tfg_sampling_defaults() -> dict:
    """Defaults of the sampling, face and input/output options (the released inference scripts')."""
    return SAMPLING_OPTIONS.defaults()
