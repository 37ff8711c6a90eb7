"""The synthetic lip-sync demo as a library: the demo networks and their files, the held-out
clips, the demo's flags, and its steps (render the clips, measure the SyncNet expert, generate the
cross and reconstruction clips with generate.py, score them), used by `demo.py` (`make demo`),
`scripts/demo_train.py`, the web app and the sampler benchmark. The scoring itself is
`evaluation/synthetic_lipsync.py`.
"""

import os
import time
from typing import List, Optional

from common.errors import Diff2LipError
from common.files import atomic_write_json
from common.flags import PROGRESS, Option, Options, as_flags
from guided_diffusion.precision import PRECISION
from inference.options import SAMPLING_OPTIONS

# The demo network: the released TFG design (same code and layer names) at 64 px and 32 channels.
# It predicts the clean frame instead of the noise (guided-diffusion's --predict_xstart), which
# gives clean samples after a CPU budget of training; the released network predicts the noise.
DEMO_MODEL = dict(image_size=64, num_channels=32, channel_mult="1,2,2", num_res_blocks=1,
                  attention_resolutions="16", num_head_channels=32, predict_xstart=True)
# The same network in the released parameterization (predicts the noise, learned variance:
# --predict_xstart False --learn_sigma True, as checkpoint.pt), for measuring samplers on what
# users run; `make demo-train-eps` fine-tunes it from the x0 network.
DEMO_MODEL_EPS = {**DEMO_MODEL, "predict_xstart": False, "learn_sigma": True}
DEMO_NETWORKS = {"x0": DEMO_MODEL, "eps": DEMO_MODEL_EPS}
DEMO_CHECKPOINT = "checkpoints/demo/diff2lip_synthetic64.pt"
DEMO_CHECKPOINT_EPS = "checkpoints/demo/diff2lip_synthetic64_eps.pt"
# The demo network distilled into 2 DDIM steps (scripts/train_distill.py): what `make demo` runs.
DEMO_STUDENT = "checkpoints/demo/diff2lip_synthetic64_student2.pt"
DEMO_STUDENT1 = "checkpoints/demo/diff2lip_synthetic64_student1.pt"  # the 1-step student (make demo-student1)
DEMO_SYNC_EXPERT = "checkpoints/demo/syncnet64_synthetic.pt"
# Stored in the demo network files (scripts/export_checkpoint.py --note); generate.py and the web app show it.
DEMO_NOTE = ("demo network: trained only on the synthetic heads of make demo-train (dataset/synthetic.py); on a real "
             "face it paints a frozen mouth. For real videos use the released checkpoint: python -m scripts.fetch_weights")
# The held-out clips: 6 identities (the test identities of a 7-identity render) of data seed 1.
DEMO_DATA = dict(identities=7, test_identities=6, clips_per_identity=1, seconds=6.0, seed=1)
SYNC_MIN_OFFSET = 5
# Targets of the issue, printed beside the figures.
TARGETS = dict(lip_sync=0.8, wrong_audio=0.2, syncnet_accuracy=0.9)


def model_flags(parameterization: str = "x0") -> List[str]:
    """The demo network of this parameterization (DEMO_NETWORKS) as command-line flags of
    generate.py / train.py."""
    if parameterization not in DEMO_NETWORKS:
        raise Diff2LipError(f"--parameterization {parameterization!r} is not one of {', '.join(DEMO_NETWORKS)}")
    return as_flags(DEMO_NETWORKS[parameterization])


# generate.py's sampler flags that the demo passes on (see demo_defaults).
SAMPLER_FLAGS = ("sampler", "sampling_steps", "solver_spacing", "cache_interval", "cache_depth")


def sampler_flags(args) -> List[str]:
    """The sampler flags of `args` that it has, as generate.py flags (others keep generate.py's defaults)."""
    return as_flags({k: getattr(args, k) for k in SAMPLER_FLAGS if hasattr(args, k)})


def demo_defaults() -> dict:
    return DEMO_OPTIONS.defaults()


DEMO_OPTIONS = Options(
    Option("out_dir", "outputs/demo", "where the rendered clips, the generated videos, the sheets and scores.json go"),
    Option("checkpoint", DEMO_STUDENT, "the Diff2Lip checkpoint (the demo network's flags): the 2-step student by default, or "
        f"{DEMO_CHECKPOINT} (the network it was distilled from, e.g. with --timestep_respacing ddim10); "
        "`make demo-train` writes both"),
    Option("sync_expert", DEMO_SYNC_EXPERT, "the SyncNet checkpoint whose accuracy is measured"),
    Option("timestep_respacing", "ddim2", "sampling steps of generate.py (ddimN)"),
    SAMPLING_OPTIONS.only(*SAMPLER_FLAGS),
    Option("precision", "auto", "generate.py's --precision; auto (default) runs generate.py with --use_fp16 True "
           "--precision auto: float16 on a GPU, on a CPU bfloat16 where it is faster than float32 (AMX), else float32",
           PRECISION.check),
    Option("seconds", DEMO_DATA["seconds"], "length of each rendered clip"),
    Option("parameterization", "x0", "the --checkpoint's network: x0 (the demo network, predicts the clean frame) or eps (the "
        f"released parameterization: predicts the noise, learned sigma; {DEMO_CHECKPOINT_EPS})"),
    PROGRESS,
)


def render(data_dir: str, seconds: float, progress: bool) -> None:
    from dataset.synthetic import render_dataset

    render_dataset(data_dir, progress=progress, test_only=True, **{**DEMO_DATA, "seconds": seconds})


def syncnet_accuracy(expert_path: str, data_dir: str, work_dir: str, pairs: int = 512) -> float:
    """In-sync vs off-sync accuracy of the expert on the clips of `data_dir` (all of test.txt)."""
    import torch

    from dataset import preprocess
    from dataset.sync_pairs import VAL_SEED, SyncPairs
    from training.syncnet import expert_accuracy, load_sync_expert

    crops = os.path.join(work_dir, "crops64")
    code = preprocess.main(["--input_root", data_dir, "--output_root", crops, "--image_size", "64",
                            "--val_list", os.path.join(data_dir, "test.txt"), "--progress", "False"])
    if code != 0:
        raise Diff2LipError(f"preprocessing the demo clips into {crops} failed")
    expert = load_sync_expert(expert_path)
    with torch.no_grad():
        _, accuracy = expert_accuracy(expert, SyncPairs(crops, "val", pairs, VAL_SEED, SYNC_MIN_OFFSET), 64, 0)
    return accuracy


def generate(checkpoint: str, data_dir: str, filelist: str, sample_dir: str, args,
             network: Optional[List[str]] = None) -> None:
    """generate.py on `filelist` with `checkpoint`, built with the `network` flags (default: the
    demo network of `args.parameterization`; [] takes them all from the file)."""
    from inference.cli import main as generate_main

    code = generate_main([
        *(model_flags(args.parameterization) if network is None else network), "--model_path", checkpoint, "--generate_from_filelist", "True",
        "--filelist", os.path.join(data_dir, filelist), "--test_video_dir", data_dir, "--sample_path", sample_dir,
        "--timestep_respacing", args.timestep_respacing, *sampler_flags(args), "--precision", args.precision,
        # auto means the fast path here, which generate.py takes under the released --use_fp16 True.
        *(["--use_fp16", "True"] if args.precision == "auto" else []),
        "--sampling_seed", "7", "--progress", str(args.progress),
        # A resumed benchmark keeps the clips an earlier run finished (generate.py probes them).
        "--skip_existing", str(getattr(args, "skip_existing", False)),
    ])
    if code != 0:
        raise Diff2LipError(f"generate.py failed on {filelist} (its messages are above)")


def evaluate_checkpoint(checkpoint: str, data_dir: str, out_dir: str, args, sheets: bool,
                        network: Optional[List[str]] = None, filelists: str = "test") -> dict:
    """Generate the clips of `data_dir`'s FILELISTS_cross.txt and FILELISTS_reconstruction.txt with
    `checkpoint` (built as `generate` says) and score them."""
    from evaluation import synthetic_lipsync as sl

    scores: dict = {}
    cross_dir, recon_dir = os.path.join(out_dir, "cross"), os.path.join(out_dir, "reconstruction")
    generate(checkpoint, data_dir, f"{filelists}_cross.txt", cross_dir, args, network)
    pairs = sl.read_pairs(os.path.join(data_dir, f"{filelists}_cross.txt"))
    cross = sl.cross_scores(cross_dir, data_dir, pairs)
    scores.update(cross.mean)
    scores["per_clip"] = [dict(audio=a, video=v, lip_sync=s, wrong_audio=w, source=o)
                          for (a, v), s, w, o in zip(pairs, cross.lip_sync, cross.wrong_audio, cross.source)]
    if sheets:
        for pair in pairs:
            sl.sheet(os.path.join(out_dir, "sheets", sl.output_name(*pair).replace(".mp4", ".png")),
                     cross_dir, data_dir, pair)
    generate(checkpoint, data_dir, f"{filelists}_reconstruction.txt", recon_dir, args, network)
    recon_pairs = sl.read_pairs(os.path.join(data_dir, f"{filelists}_reconstruction.txt"))
    scores.update(sl.all_reconstruction_scores(recon_dir, data_dir, recon_pairs))
    return scores


def report(scores: dict) -> str:
    def verdict(value: float, target: float, at_most: bool = False) -> str:
        met = value <= target if at_most else value >= target
        return f"{'met' if met else 'MISSED'} ({'<=' if at_most else '>='} {target})"

    lines = [
        f"lip-sync score, generated vs driving audio:   {scores['lip_sync']:.3f}  target {verdict(scores['lip_sync'], TARGETS['lip_sync'])}",
        f"control: generated vs the wrong audio:        {scores['wrong_audio']:.3f}  target {verdict(scores['wrong_audio'], TARGETS['wrong_audio'], True)}",
        f"control: video source (unedited) vs audio:    {scores['source']:.3f}",
        f"reconstruction PSNR / SSIM:                   {scores['psnr']:.2f} dB / {scores['ssim']:.4f}",
    ]
    if "mouth_psnr" in scores:
        lines.append(f"mouth PSNR / sharpness (1 = the real mouth's): {scores['mouth_psnr']:.2f} dB / "
                     f"{scores['mouth_sharpness']:.3f}")
    if "syncnet_accuracy" in scores:
        lines.append(f"SyncNet in/off-sync accuracy (offset >= {SYNC_MIN_OFFSET}):  {scores['syncnet_accuracy']:.3f}  "
                     f"target {verdict(scores['syncnet_accuracy'], TARGETS['syncnet_accuracy'])}")
    return "\n".join(lines)


def run(args) -> dict:
    model_flags(args.parameterization)  # a wrong value fails before anything is rendered
    for flag, path in (("--checkpoint", args.checkpoint), ("--sync_expert", args.sync_expert)):
        if not os.path.isfile(path):
            raise Diff2LipError(f"{flag} '{path}' not found; `make demo-train` trains it (or pass the path of yours)")
    started = time.perf_counter()
    data_dir = os.path.join(args.out_dir, "data")
    render(data_dir, args.seconds, args.progress)
    print(f"[demo] rendered 6 held-out talking heads into {data_dir} ({time.perf_counter() - started:.0f} s)")
    scores = {"syncnet_accuracy": syncnet_accuracy(args.sync_expert, data_dir, args.out_dir)}
    print(f"[demo] SyncNet accuracy measured ({time.perf_counter() - started:.0f} s)")
    scores.update(evaluate_checkpoint(args.checkpoint, data_dir, args.out_dir, args, sheets=True))
    scores["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(os.path.join(args.out_dir, "scores.json"), scores)
    print(f"\n[demo] videos in {args.out_dir}/cross and {args.out_dir}/reconstruction, sheets in "
          f"{args.out_dir}/sheets (video source | generated | audio source), scores in {args.out_dir}/scores.json")
    print(report(scores))
    print(f"[demo] done in {scores['seconds']:.0f} s")
    return scores
