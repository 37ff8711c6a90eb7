"""Precision and memory-layout choices for running the network, at inference and in training.

The fast CPU path (bfloat16 autocast, channels-last tensors, fused attention, the audio encoder
run once per frame rather than once per step) gives the same predicted noise as plain float32
to well under 1% relative error; `benchmarks/bench_unet.py` measures both.
"""

import contextlib
from typing import Optional

import torch as th

from common.errors import Diff2LipError
from common.flags import Option, one_of

PRECISIONS = ("fp32", "bf16", "fp16")

PRECISION = Option("precision", "", "fp32, bf16 or fp16 (GPU only); '' = fp32, or the released --use_fp16 meaning",
                   one_of("", *PRECISIONS))


def resolve_precision(precision: Optional[str], device: th.device, use_fp16: bool = False) -> str:
    """The precision to run: `precision` if given, else the released `--use_fp16` meaning.

    `--use_fp16 True` means a float16 torso on a GPU; on a CPU float16 is slow and inexact, so
    bfloat16 is used instead (callers print what was chosen). float16 on a CPU is an error.
    """
    device = th.device(device)
    if precision is None or precision == "":
        if use_fp16:
            return "fp16" if device.type == "cuda" else "bf16"
        return "fp32"
    if precision not in PRECISIONS:
        raise Diff2LipError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise Diff2LipError("--precision fp16 needs a GPU; on a CPU use --precision bf16 (or fp32)")
    return precision


def prepare_for_inference(model: th.nn.Module, device, precision: str = "fp32", channels_last: bool = True, compile: bool = False):
    """Move `model` to `device` in eval mode, with fused attention and the memory layout that
    suits the precision; float16 converts the torso as the released `--use_fp16` did. With
    `compile`, the network's forward is compiled by `torch.compile` (inductor) on first use;
    the module keeps its attributes (`precompute_conditioning`), only `forward` is replaced.
    """
    model = model.to(device).eval()
    for module in model.modules():
        if hasattr(module, "fused"):
            module.fused = True
    if precision == "fp16":
        model.convert_to_fp16()
    if channels_last:
        model = model.to(memory_format=th.channels_last)
    if compile:
        # dynamic=False: a clip's batches share one shape (only the last one differs), and
        # static shapes give the fastest kernels; the reusing steps of DeepFeatureCache are a
        # second graph of their own.
        model.forward = th.compile(model.forward, dynamic=False)
    return model


def autocast(device, precision: str, fp16_autocast: bool = False):
    """The autocast context for `precision`: bfloat16 autocast for "bf16"; for "fp16", float16
    autocast with `fp16_autocast` and nothing without; nothing for "fp32".

    float16 means two things. At inference (`fp16_autocast=False`) `prepare_for_inference` has
    converted the torso to float16, as the released `--use_fp16` did, so no autocast is needed.
    In training (`fp16_autocast=True`) the weights stay float32 (the optimizer updates them) and
    float16 autocast runs the forward, with a `torch.amp.GradScaler` scaling the loss.
    """
    device = th.device(device)
    if precision == "bf16":
        return th.autocast(device_type=device.type, dtype=th.bfloat16)
    if precision == "fp16" and fp16_autocast:
        return th.autocast(device_type=device.type, dtype=th.float16)
    return contextlib.nullcontext()
