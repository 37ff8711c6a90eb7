"""Timestep respacing: sample with a subset of the training steps (e.g. `ddim25`)."""

from typing import Dict, Iterable, List, Set, Union

import numpy as np
import torch as th

from common.errors import Diff2LipError

from .gaussian_diffusion import GaussianDiffusion


def ddim_strides(num_timesteps: int) -> Dict[int, int]:
    """{N: the stride s whose steps 0, s, 2s, ... number exactly N} for every N that has one."""
    return {len(range(0, num_timesteps, s)): s for s in range(num_timesteps - 1, 0, -1)}


def nearest_ddim_count(num_timesteps: int, count: int) -> int:
    """The step count nearest `count` (the smaller on a tie) that a `ddimN` spacing can give."""
    return min(ddim_strides(num_timesteps), key=lambda n: (abs(n - count), n))


def space_timesteps(num_timesteps: int, section_counts: Union[str, Iterable[int]]) -> Set[int]:
    """The steps of the original process to keep.

    `section_counts` is "ddimN" (steps 0, s, 2s, ... with the stride s that gives exactly N
    steps: ddim25 of 1000 keeps 0, 40, ..., 960), "N" (N steps spread evenly), or a comma list
    "10,15,20" of counts for equal sections of the process.

    `ddim1`, the one-step student's process, keeps the top step of ddim2 (500 of 1000), the step
    it is distilled from (training/distillation.py): the one network pass goes from the noise to
    the clean frame. The spacing rule would give step 0, where a network is told that its input
    is nearly clean; from noise, no network trained on that can do better than a blurred mean.
    """
    flag = f"--timestep_respacing {section_counts!r}"
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            try:
                desired_count = int(section_counts[len("ddim"):])
            except ValueError:
                raise Diff2LipError(f"{flag}: expected ddimN with a whole number N, e.g. ddim25") from None
            if not 1 <= desired_count <= num_timesteps:
                raise Diff2LipError(f"{flag}: expected ddimN with 1 <= N <= {num_timesteps} (the diffusion steps)")
            strides = ddim_strides(num_timesteps)
            if desired_count == 1:
                return {max(range(0, num_timesteps, strides[2]))} if num_timesteps > 1 else {0}
            if desired_count in strides:
                return set(range(0, num_timesteps, strides[desired_count]))
            nearest = nearest_ddim_count(num_timesteps, desired_count)
            raise Diff2LipError(
                f"{flag}: no integer stride gives exactly {desired_count} of {num_timesteps} steps; "
                f"use ddim{nearest} (the nearest that does) or '{desired_count}' (even spacing)"
            )
        try:
            section_counts = [int(x) for x in section_counts.split(",")]
        except ValueError:
            raise Diff2LipError(f"{flag}: expected 'ddimN', 'N' or a comma list of counts, e.g. ddim25") from None
    section_counts = list(section_counts)
    if any(c < 0 for c in section_counts) or sum(section_counts) < 2:
        raise Diff2LipError(f"{flag}: expected step counts >= 0 that add up to at least 2, e.g. ddim25 or 25 "
                            "(one step: ddim1, for a 1-step student)")
    size_per = num_timesteps // len(section_counts)
    extra = num_timesteps % len(section_counts)
    start_idx = 0
    all_steps: List[int] = []
    for i, section_count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < section_count:
            raise Diff2LipError(f"cannot take {section_count} steps from a section of {size} steps")
        frac_stride = 1 if section_count <= 1 else (size - 1) / (section_count - 1)
        cur_idx = 0.0
        for _ in range(section_count):
            all_steps.append(start_idx + round(cur_idx))
            cur_idx += frac_stride
        start_idx += size
    return set(all_steps)


class SpacedDiffusion(GaussianDiffusion):
    """A diffusion that skips steps of a base process; the model still sees the original indices.

    :param use_timesteps: the steps of the base process to keep.
    """

    def __init__(self, use_timesteps: Iterable[int], **kwargs):
        self.use_timesteps = set(use_timesteps)
        self.timestep_map: List[int] = []
        self.original_num_steps = len(kwargs["betas"])

        base_diffusion = GaussianDiffusion(**kwargs)
        # The full schedule, for solvers that pick their own timesteps (samplers.Denoiser).
        self.base_alphas_cumprod = base_diffusion.alphas_cumprod
        last_alpha_cumprod = 1.0
        new_betas = []
        for i, alpha_cumprod in enumerate(base_diffusion.alphas_cumprod):
            if i in self.use_timesteps:
                # The kept steps' betas are recomputed so that alpha_bar is unchanged at each.
                new_betas.append(1 - alpha_cumprod / last_alpha_cumprod)
                last_alpha_cumprod = alpha_cumprod
                self.timestep_map.append(i)
        kwargs["betas"] = np.array(new_betas)
        super().__init__(**kwargs)

    def p_mean_variance(self, model, *args, **kwargs):
        return super().p_mean_variance(self._wrap_model(model), *args, **kwargs)

    def training_losses(self, model, *args, **kwargs):
        return super().training_losses(self._wrap_model(model), *args, **kwargs)

    def _wrap_model(self, model):
        if isinstance(model, _WrappedModel):
            return model
        return _WrappedModel(model, self.timestep_map, self.rescale_timesteps, self.original_num_steps)

    def _scale_timesteps(self, t):
        # Scaling is done by the wrapped model.
        return t


class _WrappedModel:
    """Calls the model with the original step index of each respaced step."""

    def __init__(self, model, timestep_map: List[int], rescale_timesteps: bool, original_num_steps: int):
        self.model = model
        self.timestep_map = timestep_map
        self.rescale_timesteps = rescale_timesteps
        self.original_num_steps = original_num_steps

    def __call__(self, x, ts, **kwargs):
        map_tensor = th.tensor(self.timestep_map, device=ts.device, dtype=ts.dtype)
        new_ts = map_tensor[ts]
        if self.rescale_timesteps:
            new_ts = new_ts.float() * (1000.0 / self.original_num_steps)
        return self.model(x, new_ts, **kwargs)

    def parameters(self):
        return self.model.parameters()
