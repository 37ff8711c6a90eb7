"""Precision and memory-layout choices for running the network, at inference and in training.

The fast CPU path (bfloat16 autocast, channels-last tensors, fused attention, the audio encoder
run once per frame rather than once per step) gives the same predicted noise as plain float32
to well under 1% relative error; `benchmarks/bench_unet.py` measures both. bfloat16 is fast only
on CPUs with bf16 matrix units (AMX): elsewhere it can be several times slower than float32, so
`--precision auto` picks per machine (`choose_precision`), measuring where the flags cannot tell.
"""

import contextlib
import hashlib
import json
import os
import platform
import time
from typing import Callable, Optional, Tuple

import torch as th

from common.errors import Diff2LipError
from common.files import atomic_write_text
from common.flags import Option, one_of

PRECISIONS = ("fp32", "bf16", "fp16")

PRECISION = Option(
    "precision", "auto",
    "auto (default): the released --use_fp16 meaning, made fast for this machine: float32 without --use_fp16; with "
    "it float16 on a GPU, and on a CPU bfloat16 only where it has bf16 matrix units (AMX) or a short measured probe "
    "(cached per machine and network) shows bfloat16 faster, else float32. fp32, bf16 or fp16 (GPU only) force one",
    one_of("auto", *PRECISIONS))

# bfloat16 must beat float32 by this factor in the probe to be chosen, so that timing noise
# cannot pick a precision that is slower in the run.
PROBE_MARGIN = 1.1
# The probe times forwards of the run's own frames per call, fewer where one float32 forward
# would take over PROBE_SECONDS (so that it takes seconds, once per machine and network), but no
# fewer than PROBE_FRAMES: autocast's fixed cost per call (casting the weights) weighs more at a
# small batch, so a smaller probe leans to float32, never to a slower bfloat16.
PROBE_FRAMES = 4
PROBE_SECONDS = 1.0
PROBE_ROUNDS = 3


def resolve_precision(precision: Optional[str], device: th.device, use_fp16: bool = False) -> str:
    """The precision to run without measuring anything: `precision` if given, else the released
    `--use_fp16` meaning (bfloat16 standing in for float16 on a CPU).

    `auto` (or '') needs the network to measure on a CPU: `choose_precision` does that. float16
    on a CPU is an error.
    """
    device = th.device(device)
    if precision in (None, "", "auto"):
        if use_fp16:
            return "fp16" if device.type == "cuda" else "bf16"
        return "fp32"
    if precision not in PRECISIONS:
        raise Diff2LipError(f"--precision {precision!r} is not one of auto, {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise Diff2LipError("--precision fp16 needs a GPU; on a CPU use --precision bf16 (or fp32)")
    return precision


def choose_precision(precision: Optional[str], device, use_fp16: bool, model: th.nn.Module, image_size: int,
                     cache_path: Optional[str] = None, log: Optional[Callable[[str], None]] = None,
                     batch_size: int = PROBE_FRAMES) -> Tuple[str, str]:
    """The precision to run `model` with and why, as (precision, reason).

    An explicit precision wins. `auto` is the released `--use_fp16` meaning: float32 without it;
    with it float16 on a GPU and, on a CPU, what is fast there (`fast_cpu_precision`).
    `model` is the network as `prepare_for_inference` left it (float32 weights).
    """
    device = th.device(device)
    if precision not in (None, "", "auto"):
        return resolve_precision(precision, device), f"--precision {precision}"
    if not use_fp16:
        return "fp32", "--use_fp16 False"
    if device.type == "cuda":
        return "fp16", "--use_fp16 True on a GPU"
    if device.type != "cpu":
        return "fp32", f"--use_fp16 True on {device.type}: float16 and bfloat16 are not used there"
    return fast_cpu_precision(model, image_size, cache_path, log=log, frames=batch_size)


def cpu_bf16_units() -> str:
    """What this CPU offers for bfloat16 matrix products: "amx", "bf16" (instructions without
    matrix units: AVX-512 bf16, ARM's bf16) or "none"."""
    if getattr(th.cpu, "_is_amx_tile_supported", lambda: False)():
        return "amx"
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags or "bf16" in flags or getattr(th.cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "bf16"
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return "bf16"  # Apple silicon: no flags to read, so the probe decides
    return "none"


def cpu_flags() -> set:
    """The CPU's feature flags from /proc/cpuinfo (x86 "flags", ARM "Features"); empty elsewhere."""
    return set(_cpuinfo_field("flags", "Features").split())


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC", ...), for logs and benchmark output."""
    return _cpuinfo_field("model name", "Model", "Hardware") or platform.processor() or platform.machine()


def _cpuinfo_field(*keys: str) -> str:
    """The first /proc/cpuinfo line's value under one of `keys`; '' where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in keys:
                    return value.strip()
    except OSError:
        pass
    return ""


def fast_cpu_precision(model: th.nn.Module, image_size: int, cache_path: Optional[str] = None,
                       units: Optional[str] = None, log: Optional[Callable[[str], None]] = None,
                       frames: int = PROBE_FRAMES) -> Tuple[str, str]:
    """bfloat16 where the CPU has AMX; float32 where it has no bfloat16 instructions; between the
    two (AVX-512 bf16 without AMX, ARM, Apple silicon) whichever a short probe of `model` measures
    faster, cached in `cache_path` (default `probe_cache_path()`) per CPU, torch, threads and
    network shape and `frames` (the run's frames per network call), so the probe runs once per
    machine and network. `units` overrides `cpu_bf16_units()` (to run the probe where the flags
    alone would decide).

    Why measured: bfloat16 instructions without matrix units can be several times slower than
    float32 (oneDNN falls back to conversions), and where that happens depends on the CPU.
    """
    units = units or cpu_bf16_units()
    if units == "amx":
        return "bf16", "--use_fp16 True on a CPU with AMX bf16 matrix units"
    if units == "none":
        return "fp32", "--use_fp16 True on a CPU without bf16 instructions"
    cache_path = cache_path or probe_cache_path()
    key = probe_key(model, image_size, frames)
    cache = _read_cache(cache_path)
    if key in cache:
        fp32_s, bf16_s = cache[key]
        where = f"cached in {cache_path}"
    else:
        if log is not None:
            log("--precision auto: timing float32 against bfloat16 on this CPU (once per machine and network)")
        fp32_s, bf16_s = probe_seconds(model, image_size, frames=probe_frames(model, image_size, frames))
        cache[key] = (fp32_s, bf16_s)
        _write_cache(cache_path, cache)
        where = f"measured now, cached in {cache_path}"
    chosen = probe_choice(fp32_s, bf16_s)
    return chosen, (f"--use_fp16 True on a CPU without AMX: bfloat16 ran at {fp32_s / bf16_s:.2f}x float32's speed "
                    f"on this network ({where})")


def probe_frames(model: th.nn.Module, image_size: int, frames: int) -> int:
    """Frames per probe forward: `frames` (the run's), or as many as one float32 forward does in
    `PROBE_SECONDS`, but at least `PROBE_FRAMES` (or `frames` where that is fewer)."""
    if frames <= PROBE_FRAMES:
        return frames
    one = probe_inputs(model, image_size, 1)
    with th.no_grad():
        model(**one)  # warm-up
        start = time.perf_counter()
        model(**one)
        seconds = time.perf_counter() - start
    return max(PROBE_FRAMES, min(frames, int(PROBE_SECONDS / max(seconds, 1e-6))))


def probe_choice(fp32_seconds: float, bf16_seconds: float) -> str:
    """bf16 only when it is clearly faster than float32 (by `PROBE_MARGIN`)."""
    return "bf16" if bf16_seconds * PROBE_MARGIN <= fp32_seconds else "fp32"


def probe_inputs(model: th.nn.Module, image_size: int, frames: int = PROBE_FRAMES) -> dict:
    """Random inputs of the network's shape for `frames` frames (after `precompute_conditioning`)."""
    gen = th.Generator().manual_seed(0)
    shape = (frames, 3, image_size, image_size)
    mask = th.zeros(frames, 1, image_size, image_size)
    mask[:, :, image_size // 2:] = 1
    kwargs = dict(
        x=th.randn(shape, generator=gen),
        timesteps=th.full((frames,), 500),
        cond_img=th.rand(shape, generator=gen) * 2 - 1,
        mask=mask,
    )
    nrefer = getattr(model, "nrefer", 1)
    if nrefer:
        kwargs["ref_img"] = th.rand(frames, 3 * nrefer, image_size, image_size, generator=gen) * 2 - 1
    device = next(model.parameters()).device
    kwargs = {k: v.to(device) for k, v in kwargs.items()}
    for k in ("x", "cond_img", "mask", "ref_img"):
        if k in kwargs:
            kwargs[k] = kwargs[k].contiguous(memory_format=th.channels_last)
    if getattr(model, "use_audio", False):
        kwargs["indiv_mels"] = th.randn(frames, 80, 16, generator=gen).to(device)
        kwargs = model.precompute_conditioning(kwargs)
    return kwargs


def probe_seconds(model: th.nn.Module, image_size: int, rounds: int = PROBE_ROUNDS,
                  frames: int = PROBE_FRAMES) -> Tuple[float, float]:
    """(float32, bfloat16) seconds of one forward of `model` on `frames` frames: after a
    warm-up of each, the two alternate for `rounds` rounds and the fastest of each counts, so that
    another process busy for a while slows both alike, and only ever adds time."""
    kwargs = probe_inputs(model, image_size, frames)
    device = next(model.parameters()).device

    def forward(precision: str) -> float:
        start = time.perf_counter()
        with th.no_grad(), autocast(device, precision):
            model(**kwargs)
        return time.perf_counter() - start

    forward("fp32"), forward("bf16")
    times = [(forward("fp32"), forward("bf16")) for _ in range(rounds)]
    return min(t[0] for t in times), min(t[1] for t in times)


def probe_key(model: th.nn.Module, image_size: int, frames: int = PROBE_FRAMES) -> str:
    """What the probe's answer depends on: the CPU, torch, the thread count and the network's shape."""
    shapes = hashlib.sha256(repr([(n, tuple(p.shape)) for n, p in model.named_parameters()]).encode()).hexdigest()[:16]
    return f"{cpu_model()}|torch {th.__version__}|{th.get_num_threads()} threads|{image_size} px|{frames} frames|{shapes}"


def probe_cache_path() -> str:
    """$DIFF2LIP_CACHE, else $XDG_CACHE_HOME/diff2lip, else ~/.cache/diff2lip; the file precision_probe.json."""
    root = os.environ.get("DIFF2LIP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "diff2lip")
    return os.path.join(root, "precision_probe.json")


def _read_cache(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
        return {k: tuple(v) for k, v in data.items() if isinstance(v, list) and len(v) == 2}
    except (OSError, ValueError, AttributeError):
        return {}  # missing or damaged: measure again


def _write_cache(path: str, cache: dict) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_text(path, json.dumps({k: list(v) for k, v in cache.items()}, indent=1))
    except OSError:
        pass  # a read-only home: the probe runs again next time, nothing else changes


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


def prepare_with_precision(model: th.nn.Module, device, precision: Optional[str], use_fp16: bool, image_size: int,
                           compile: bool = False, cache_path: Optional[str] = None,
                           log: Optional[Callable[[str], None]] = None, batch_size: int = PROBE_FRAMES):
    """`prepare_for_inference` with the precision chosen by `choose_precision` (its probe, when it
    runs, times the prepared float32 network before any float16 conversion or compilation).
    Returns (model, precision, reason)."""
    device = th.device(device)
    model = prepare_for_inference(model, device, "fp32")
    chosen, reason = choose_precision(precision, device, use_fp16, model, image_size, cache_path, log, batch_size)
    if chosen == "fp16" or compile:
        model = prepare_for_inference(model, device, chosen, compile=compile)
    return model, chosen, reason


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
