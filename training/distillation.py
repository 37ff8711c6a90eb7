"""Progressive distillation of a Diff2Lip network into a few-step student (Salimans & Ho 2022).

A round distils a teacher sampled with DDIM over `2N` steps (`--timestep_respacing ddim2N`, eta 0,
x0 clipped as sampling clips it) into a student sampled over the `N` steps of `ddimN`. Every step
of ddimN is a step of ddim2N (checked), so student step k, from timestep s_k to s_{k-1}, spans
the teacher's two consecutive steps s_k -> t -> s_{k-1}. The student learns the x0 whose one DDIM
step lands where the teacher's two land (in its own parameterization: that x0 for an x0
network, the noise it implies for a noise network). Two steps of the sampler are special:
- the last (k = 0, from s_0 = 0 to the clean frame) is a single step for both;
- the first: the sampler starts the student at its top step s_{N-1} from the noise itself
  (the masked frame's noise, as inference shares it), while the teacher starts one of its steps
  higher from the same noise. The student's top step is trained on exactly that input, against
  the teacher's three steps from it to s_{N-2}.
The other steps see x_{s_k} = q(x_{s_k} | x_0), as the paper does. In the last round (2 -> 1)
the student's one step is both: `ddim1` puts it at ddim2's top step (respace.space_timesteps), and
from the noise it learns the clean frame that the teacher's two steps reach from the same noise. Frames are flattened
sequences `[N = B*F, 3, H, W]`; the network sees `x_t*M + cond*(1-M)` and the loss counts only
the mask (`training.losses.DistillationLoss`).
"""

import copy
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from common.errors import Diff2LipError
from guided_diffusion.checkpoint_format import network_flags
from guided_diffusion.gaussian_diffusion import ModelMeanType, masked_mean_flat, precompute_conditioning
from guided_diffusion.precision import autocast
from guided_diffusion.respace import SpacedDiffusion
from guided_diffusion.script_util import create_gaussian_diffusion
from guided_diffusion.tfg_data_util import tfg_process_batch
from training.losses import DistillationLoss, L2Loss, PredictedSequences, weighted_sum


def respacing(steps: int) -> str:
    """The `--timestep_respacing` of a `steps`-step DDIM sampler: "ddimN" (steps 0, s, 2s, ...)."""
    return f"ddim{steps}"


def round_schedule(teacher_steps: int, student_steps: int) -> List[Tuple[int, int]]:
    """The rounds from `teacher_steps` down to `student_steps`, halving: 8, 2 -> [(8, 4), (4, 2)];
    2, 1 -> [(2, 1)], the last round, whose student samples with `ddim1` (respace.space_timesteps:
    one pass, at ddim2's top step)."""
    if student_steps < 1:
        raise Diff2LipError(f"--student_steps {student_steps}: a student takes at least 1 step")
    rounds, steps = [], teacher_steps
    while steps > student_steps and steps % 2 == 0:
        rounds.append((steps, steps // 2))
        steps //= 2
    if steps != student_steps or not rounds:
        raise Diff2LipError(
            f"--teacher_steps {teacher_steps} must be --student_steps {student_steps} times a power of 2 (2 at least)"
        )
    return rounds


def step_plan(student_timesteps: Sequence[int], teacher_timesteps: Sequence[int]) -> List[List[int]]:
    """For each student step k (ascending timesteps s_0 < s_1 < ...), the indices into the sorted
    teacher timesteps that the teacher runs for it, in running order (descending): those in
    (s_{k-1}, s_k], and for the top step every teacher step above s_{N-2} (the teacher starts
    higher from the same noise). Raises when a student step is not a teacher step."""
    student, teacher = sorted(student_timesteps), sorted(teacher_timesteps)
    missing = sorted(set(student) - set(teacher))
    if missing:
        raise Diff2LipError(f"student timesteps {missing} are not teacher timesteps: the teacher's steps must include the student's")
    plan = []
    for k, s in enumerate(student):
        low = student[k - 1] if k > 0 else -1
        high = np.inf if k == len(student) - 1 else s
        plan.append([j for j in range(len(teacher) - 1, -1, -1) if low < teacher[j] <= high])
    return plan


def x0_matching_step(x_t: torch.Tensor, x_prev: torch.Tensor, alpha_bar: torch.Tensor, alpha_bar_prev: torch.Tensor) -> torch.Tensor:
    """The x0 whose DDIM step (eta 0) from `x_t` at `alpha_bar` lands on `x_prev` at `alpha_bar_prev`.

    DDIM: x_prev = sqrt(a') x0 + sqrt(1 - a') (x_t - sqrt(a) x0) / sqrt(1 - a); solved for x0
    (Salimans & Ho, Algorithm 2). `x_t`, `x_prev`: `[N, C, H, W]`; the alphas broadcast (`[N, 1, 1, 1]`).
    """
    ratio = torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar))
    return (x_prev - ratio * x_t) / (torch.sqrt(alpha_bar_prev) - ratio * torch.sqrt(alpha_bar))


def diffusion_from_flags(flags: dict, timestep_respacing: str) -> SpacedDiffusion:
    """The diffusion process of the model/diffusion `flags`, respaced to `timestep_respacing`."""
    return create_gaussian_diffusion(
        steps=flags["diffusion_steps"], learn_sigma=flags["learn_sigma"], noise_schedule=flags["noise_schedule"],
        use_kl=flags["use_kl"], predict_xstart=flags["predict_xstart"], rescale_timesteps=flags["rescale_timesteps"],
        rescale_learned_sigmas=flags["rescale_learned_sigmas"], timestep_respacing=timestep_respacing,
    )


def student_flags(flags: dict, student_steps: int) -> dict:
    """What generate.py needs to sample the student: its network and diffusion flags
    (`checkpoint_format.network_flags`), its `timestep_respacing` and `use_ddim`."""
    return {**network_flags(flags), "timestep_respacing": respacing(student_steps), "use_ddim": True}


def _column(values: np.ndarray, index: torch.Tensor) -> torch.Tensor:
    """`values[index]` as float32 `[N, 1, 1, 1]` on `index`'s device."""
    return torch.from_numpy(values).to(index.device)[index].float().view(-1, 1, 1, 1)


class ProgressiveDistillation:
    """One round's objective for training.diff2lip.train: `attach` freezes the initialised network (the
    teacher's weights) as the teacher; `forward` is called like training.diff2lip.forward_losses.

    :param flags: the model and diffusion flags (teacher and student share them).
    """

    def __init__(self, flags: dict, teacher_steps: int, student_steps: int):
        self.losses = {"distill": DistillationLoss(), "l2": L2Loss()}  # training.diff2lip.build_losses adds the image-space ones
        self.teacher_diffusion = diffusion_from_flags(flags, respacing(teacher_steps))
        self.student_diffusion = diffusion_from_flags(flags, respacing(student_steps))
        if self.student_diffusion.model_mean_type == ModelMeanType.PREVIOUS_X:
            raise Diff2LipError("distillation needs a network that predicts x0 or the noise")
        plan = step_plan(self.student_diffusion.timestep_map, self.teacher_diffusion.timestep_map)
        # [N_student, longest run]: the teacher's indices per student step, -1 after its last.
        self.teacher_index = torch.full((len(plan), max(map(len, plan))), -1, dtype=torch.long)
        for k, run in enumerate(plan):
            self.teacher_index[k, : len(run)] = torch.tensor(run)
        self.student_timesteps = torch.tensor(self.student_diffusion.timestep_map)
        self.teacher = None

    def attach(self, model: torch.nn.Module) -> None:
        self.teacher = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def run_teacher(self, x_t: torch.Tensor, k: torch.Tensor, model_kwargs: dict) -> torch.Tensor:
        """The teacher's clipped DDIM steps of student step `k` `[N]` from `x_t` `[N, C, H, W]`:
        its x at s_{k-1} (the clean frame for k = 0). Frames run only the steps they need."""
        kwargs = precompute_conditioning(self.teacher, model_kwargs)  # the audio once, not per step
        index = self.teacher_index.to(k.device)[k]  # [N, longest run]
        x = x_t.clone()
        for column in index.T:
            rows = (column >= 0).nonzero().squeeze(1)
            if len(rows) == 0:
                break
            sub = {name: value[rows] for name, value in kwargs.items()}
            out = self.teacher_diffusion.ddim_sample(self.teacher, x[rows], column[rows], clip_denoised=True, model_kwargs=sub)
            x[rows] = out["sample"].to(x.dtype)
        return x

    def target(self, x_t: torch.Tensor, k: torch.Tensor, model_kwargs: dict) -> torch.Tensor:
        """The student's target at its step `k` `[N]` from `x_t` `[N, C, H, W]`, in its
        parameterization: the x0 (or the noise it implies at s_k) whose DDIM step lands on the
        teacher's x at s_{k-1}."""
        sd = self.student_diffusion
        alpha_bar = _column(sd.alphas_cumprod, k)
        x0 = x0_matching_step(x_t, self.run_teacher(x_t, k, model_kwargs), alpha_bar, _column(sd.alphas_cumprod_prev, k))
        if sd.model_mean_type == ModelMeanType.START_X:
            return x0
        return (x_t - torch.sqrt(alpha_bar) * x0) / torch.sqrt(1 - alpha_bar)

    def forward(self, args, batch: dict, model, diffusion, losses: dict, weights: dict, generator: torch.Generator, device):
        """One micro-batch: the student's step k (one per sequence, shared by its frames, as
        train.py shares t) against the teacher's steps. `diffusion` is the training process
        (every step), which draws x_{s_k} ~ q(x_{s_k} | x_0).

        :return: the total loss, the logged terms ("distill" per student step as "distill_tT")
            and the `PredictedSequences` of the student's clipped x0.
        """
        frames = batch["frames"].to(device)
        B, F = frames.shape[:2]
        n_steps = len(self.student_timesteps)
        k = torch.randint(0, n_steps, (B,), generator=generator).repeat_interleave(F).to(device)
        noise = torch.randn(frames.flatten(0, 1).shape, generator=generator).to(device)
        # The masked frame's noise is drawn apart, as train.py does; the top step starts from it.
        cond_noise = torch.randn(frames.flatten(0, 1).shape, generator=generator).to(device)
        inputs = tfg_process_batch(
            frames, args.face_hide_percentage, ref_frames=batch["refs"].to(device), mels=batch["mels"].to(device), noise=cond_noise
        )
        x_t = diffusion.q_sample(inputs.x_start, self.student_timesteps.to(device)[k], noise=noise)
        x_t = torch.where((k == n_steps - 1).view(-1, 1, 1, 1), inputs.noise, x_t)
        with autocast(device, args.precision, fp16_autocast=True):
            target = self.target(x_t, k, inputs.model_kwargs)
            # p_mean_variance splits off the learned variance channels, which stay out of the loss.
            out = self.student_diffusion.p_mean_variance(model, x_t, k, clip_denoised=False, model_kwargs=inputs.model_kwargs)
            pred = out["pred_xstart"].clamp(-1, 1) * inputs.mask + inputs.x_start * (1 - inputs.mask)
            sequences = PredictedSequences(
                pred=pred.unflatten(0, (B, F)),
                real=frames,
                mask=inputs.mask.unflatten(0, (B, F)),
                sync_mel=batch["sync_mel"].to(device),
                diffusion_terms={"student": out["model_output"], "target": target},
            )
            total, logged = weighted_sum(losses, weights, sequences)
        logged.update(self.per_step_errors(out["model_output"].detach(), target, inputs.mask, k))
        return total, logged, sequences

    def per_step_errors(self, student: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, k: torch.Tensor) -> Dict[str, float]:
        """The distillation error of each student step present, as "distill_tT" (T its timestep)."""
        per_frame = masked_mean_flat((student - target) ** 2, mask)
        return {f"distill_t{int(self.student_timesteps[step])}": per_frame[k == step].mean().item() for step in k.unique().tolist()}
