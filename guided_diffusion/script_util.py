"""Model and diffusion options and factories, as in guided-diffusion's `script_util`.

Each option of the network, the diffusion process and the face crops is declared once (name,
default, help, check: `common.flags.Option`); `tfg_model_defaults()` and the other `*_defaults()`
dictionaries of the released code are views of these declarations. The defaults are the released
checkpoint's configuration, so `--model_path checkpoints/checkpoint.pt` alone builds the right
network.
"""

import argparse
import math
from typing import Optional, Tuple

from common.errors import Diff2LipError
from common.flags import (  # noqa: F401  (args_to_dict, add_dict_to_argparser, str2bool: the released API)
    FlagRule,
    Option,
    Options,
    add_dict_to_argparser,
    args_to_dict,
    at_least,
    between,
    create_argparser,
    one_of,
    str2bool,
)

from . import gaussian_diffusion as gd
from .respace import SpacedDiffusion, space_timesteps
from .unet import TFGModel

NUM_CLASSES = 1000

# Channel multipliers of the released code per image size (docs/compatibility.md).
CHANNEL_MULT_BY_SIZE = {
    512: (1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 3, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


def _minus_one_or_positive(v: int) -> Optional[str]:
    return None if v == -1 or v >= 1 else "expected -1 (unused) or a value >= 1"


def _positive_list(v: str) -> Optional[str]:
    """'' or a comma list of positive numbers (channel multipliers, attention sizes)."""
    try:
        ok = all(float(x) > 0 for x in str(v).split(",")) if str(v).strip() else True
    except ValueError:
        ok = False
    return None if ok else "expected '' or a comma list of positive numbers, e.g. 1,2,2"


def _respacing_rule(args: argparse.Namespace) -> Optional[str]:
    if args.timestep_respacing:
        space_timesteps(getattr(args, "diffusion_steps", 1000), args.timestep_respacing)  # raises its own message
    return None


def _image_size_rule(args: argparse.Namespace) -> Optional[str]:
    levels = len(parse_channel_mult(args.channel_mult, args.image_size))
    step = 2 ** (levels - 1)
    if args.image_size % step:
        return (f"--image_size {args.image_size} is not a multiple of {step}, which the {levels} levels of "
                f"--channel_mult {args.channel_mult or 'default'} halve it by; pick a multiple of {step}")
    return None


def _width_rule(args: argparse.Namespace) -> Optional[str]:
    """Every level's channels split into the group norm's 32 groups, and each attention level's
    (and the middle block's) into whole heads: the network cannot be built otherwise."""
    mults = parse_channel_mult(args.channel_mult, args.image_size)
    widths = [int(m * args.num_channels) for m in mults]
    if any(w % 32 for w in widths):
        return (f"--num_channels {args.num_channels} with --channel_mult {args.channel_mult or 'default'} gives levels "
                f"of {widths} channels, and each must be a multiple of 32 (the group norm's groups); "
                "pick --num_channels 32, 64, 128, ...")
    rates = parse_attention_resolutions(args.attention_resolutions, args.image_size)
    attended = sorted({w for level, w in enumerate(widths) if 2**level in rates} | {widths[-1]})
    if args.num_head_channels != -1:
        bad = [w for w in attended if w % args.num_head_channels]
        if bad:
            return (f"--num_head_channels {args.num_head_channels} does not divide the {bad[0]} channels of an attention "
                    f"level (they have {attended}); pick a divisor of {math.gcd(*attended)}")
        return None
    for flag in ("num_heads", "num_heads_upsample"):
        heads = getattr(args, flag)
        bad = [w for w in attended if heads != -1 and w % heads]
        if bad:
            return (f"--{flag} {heads} does not divide the {bad[0]} channels of an attention level (they have "
                    f"{attended}); pick a divisor of {math.gcd(*attended)}")
    return None


def _unimplemented_variant(use_audio: bool, audio_as_style: bool, audio_as_style_encoder_mlp: bool) -> Optional[str]:
    """Released network variants that parse but are not implemented (also refused by create_tfg_model)."""
    if use_audio and not audio_as_style:
        return ("--audio_as_style False (the released spatial-audio variant) is not implemented; "
                "use --audio_as_style True, as the released checkpoint does")
    if audio_as_style_encoder_mlp:
        return "--audio_as_style_encoder_mlp True is not implemented; the released checkpoint uses False"
    return None



MODEL_OPTIONS = Options(
    Option('image_size', 128, 'side of the square face crop the network works on (released: 128)', at_least(8)),
    Option('num_channels', 128, 'base channel count of the UNet (released: 128)', at_least(1)),
    Option('num_res_blocks', 2, 'residual blocks per UNet level', at_least(0)),
    Option('num_heads', 4, 'attention heads (used when --num_head_channels is -1)', at_least(1)),
    Option('num_heads_upsample', -1,
           'attention heads in the decoder (-1: same as --num_heads)',
           _minus_one_or_positive),
    Option('num_head_channels', 64, 'channels per attention head (-1: use --num_heads)', _minus_one_or_positive),
    Option('attention_resolutions', '32,16,8',
           'comma list of feature-map sizes (px) with self-attention',
           _positive_list),
    Option('channel_mult', '',
           "comma list of channel multipliers per level ('' picks the released one for the image size)",
           _positive_list),
    Option('dropout', 0.0, 'dropout rate inside residual blocks', between(0, 1, high_open=True)),
    Option('class_cond', False, 'class-conditional UNet (guided-diffusion option; Diff2Lip: False)'),
    Option('use_checkpoint', False, 'gradient checkpointing: less memory, more compute in training'),
    Option('use_scale_shift_norm', False, 'FiLM-style scale/shift conditioning (released Diff2Lip: False)'),
    Option('resblock_updown', True, 'down/up-sample inside residual blocks (released: True)'),
    Option('use_fp16', False, 'run the UNet torso in float16 on a GPU (on a CPU, float32 or bfloat16 is used instead)'),
    Option('use_new_attention_order', False, 'split q/k/v before heads (released Diff2Lip: False, the legacy order)'),
    Option('fused_attention', True,
           "use torch's fused scaled_dot_product_attention (same result as the released einsum, faster)"),
    Option('nframes', 5, 'frames per training sequence (SyncNet and sequence-GAN window)', at_least(1)),
    Option('nrefer', 1, 'reference frames concatenated to the input', at_least(1)),
    Option('use_ref', True, 'feed reference frame(s) to the network'),
    Option('use_audio', True, 'condition on audio through the audio encoder'),
    Option('audio_as_style', True,
           'inject audio by adding it to the timestep embedding (released: True; False, the released spatial '
           'variant, is parsed but not implemented)'),
    Option('audio_as_style_encoder_mlp', False,
           'released variant with an MLP after the audio encoder: parsed, not implemented (must be False)'),
    rules=[
        FlagRule(("image_size", "channel_mult"), _image_size_rule),
        FlagRule(("image_size", "num_channels", "channel_mult", "attention_resolutions", "num_head_channels",
                  "num_heads", "num_heads_upsample"), _width_rule),
        FlagRule(
            ("use_audio", "audio_as_style", "audio_as_style_encoder_mlp"),
            lambda a: _unimplemented_variant(a.use_audio, a.audio_as_style, a.audio_as_style_encoder_mlp),
        ),
    ],
)

DIFFUSION_OPTIONS = Options(
    Option('learn_sigma', True, 'the network also predicts the variance (learned range); output has 6 channels'),
    Option('diffusion_steps', 1000, 'training diffusion steps T', at_least(1)),
    Option('noise_schedule', 'linear', 'beta schedule: linear or cosine', one_of("linear", "cosine")),
    Option('timestep_respacing', '',
           "sampling steps: 'ddimN', 'N' or a comma list of section counts, 2 steps at least, or ddim1 (the 1-step "
           "student's one pass, at ddim2's top step) ('' = all T)"),
    Option('use_kl', False, 'train on the variational bound instead of the MSE'),
    Option('predict_xstart', False, 'the network predicts x0 instead of the noise (Diff2Lip: False)'),
    Option('rescale_timesteps', False, 'feed timesteps scaled to 0..1000 to the network'),
    Option('rescale_learned_sigmas', False, 'scale the variational term by T/1000 (RESCALED_MSE)'),
    rules=[FlagRule(("timestep_respacing",), _respacing_rule)],
)

# The face crops fed to the network.
DATA_OPTIONS = Options(
    Option('face_hide_percentage', 0.5,
           'fraction of the face crop (from the bottom) that is masked and generated',
           between(0, 1, low_open=True, high_open=True)),
)

MODEL_AND_DIFFUSION_OPTIONS = Options(MODEL_OPTIONS, DIFFUSION_OPTIONS)


def diffusion_defaults() -> dict:
    """Defaults of the diffusion process (the released checkpoint's)."""
    return DIFFUSION_OPTIONS.defaults()


def tfg_model_defaults() -> dict:
    """Defaults of the TFG network (the released checkpoint's)."""
    return MODEL_OPTIONS.defaults()


def tfg_model_and_diffusion_defaults() -> dict:
    """Every flag that `tfg_create_model_and_diffusion` takes, with the released values."""
    return MODEL_AND_DIFFUSION_OPTIONS.defaults()


def tfg_data_defaults() -> dict:
    """Flags of the face crops fed to the network."""
    return DATA_OPTIONS.defaults()


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
