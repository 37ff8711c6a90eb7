"""Fast training-free samplers for Diff2Lip's diffusion: DPM-Solver++ (2M and 3M) and deep
feature reuse (DeepCache), for the released checkpoint and any network of ours.

Why our own solver rather than a library's: the well-kept implementations (diffusers'
`DPMSolverMultistepScheduler`, the DPM-Solver reference code) assume a network called as
`net(x, t)` on a whole image. Diff2Lip's network inpaints: it forces its input to
`x_t*M + cond*(1-M)`, takes the masked frame, a reference and an audio embedding computed once per
frame, returns noise *and* variance channels (learned sigma), and was trained on the integer
timesteps of a 1000-step discrete schedule. The solver itself is short, so we write it over that
schedule directly (`Denoiser` turns any of our networks into `x0 = D(x_t, t)`), keep it free of
random numbers (same seed, same frames, on any number of processes) and pin it with closed forms:
order 1 on the `ddimN` timesteps *is* the released DDIM (tests/guided_diffusion/test_samplers.py).

The solver works in the data-prediction form of DPM-Solver++ (Lu et al. 2022, Alg. 2), with
`alpha_t = sqrt(abar_t)`, `sigma_t = sqrt(1 - abar_t)`, `lambda_t = log(alpha_t / sigma_t)`:

    x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h) - 1) D,    h = lambda_t - lambda_s,

where D is the denoised prediction (order 1), corrected with the previous one or two
predictions (orders 2 and 3). The last step goes to sigma = 0, where only order 1 is defined:
the output is the (clipped) prediction of the last evaluation, as the released DDIM's is.
"""

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch as th

from .gaussian_diffusion import GaussianDiffusion, ModelMeanType, ModelVarType, precompute_conditioning
from .respace import space_timesteps

SOLVERS = {"dpm++1": 1, "dpm++2m": 2, "dpm++3m": 3}
SPACINGS = ("ddim", "trailing")
# Below this many steps, the updates into the last evaluations use lower orders (see dpm_solver_pp).
LOWER_ORDER_FINAL_BELOW = 15


def solver_timesteps(num_timesteps: int, steps: int, spacing: str = "ddim") -> List[int]:
    """The `steps` timesteps (descending) at which a solver evaluates the network.

    ddim: the timesteps of the released `--timestep_respacing ddimN` (875, 750, ..., 0 for 8 of
        1000; 960, 920, ..., 0 for 25). Like the released DDIM the last evaluation is at t = 0, so
        the solver approaches the frames DDIM-25 gives (2M at 8 steps: 45.8 dB in the mouth on the
        x0 demo network, against 31.5 dB for trailing; benchmarks/bench_sampling_quality.py).
    trailing: evenly spaced from the last training step (T-1) down, ending one stride above 0
        (999, 874, ..., 124 for 8 of 1000), the spacing of few-step samplers trained for it
        (distilled students); its final jump from t = 124 gives a smoother mouth.
    """
    if steps < 1 or steps > num_timesteps:
        raise ValueError(f"solver steps must be in 1..{num_timesteps}, got {steps}")
    if spacing == "trailing":
        points = np.round(np.linspace(num_timesteps, 0, steps + 1))[:-1].astype(np.int64) - 1
        return [int(t) for t in points]
    if spacing == "ddim":
        return sorted(space_timesteps(num_timesteps, f"ddim{steps}"), reverse=True)
    raise ValueError(f"unknown solver spacing {spacing!r}; use one of {', '.join(SPACINGS)}")


@dataclass
class Denoiser:
    """`D(x_t, t)`: the network's prediction of the clean frame at original timestep `t`.

    Works for every parameterization the flags allow: predicted noise (the released checkpoint;
    with learned sigma only the first half of the channels is the noise) or predicted x0
    (`--predict_xstart True`, the demo network). `model_kwargs` should already hold the
    precomputed conditioning (`precompute_conditioning`).
    """

    model: Callable
    alphas_cumprod: np.ndarray  # [T] of the full training schedule (not a respaced one)
    predicts_xstart: bool
    learned_sigma: bool
    rescale_timesteps: bool
    clip: bool
    model_kwargs: dict

    @classmethod
    def for_diffusion(cls, diffusion: GaussianDiffusion, model, model_kwargs: Optional[dict], clip: bool = True) -> "Denoiser":
        """The denoiser of `model` under `diffusion`'s flags (a respaced diffusion gives its base schedule)."""
        if diffusion.model_mean_type == ModelMeanType.PREVIOUS_X:
            raise ValueError("the fast solvers need a network that predicts the noise or x0, not x_{t-1}")
        return cls(
            model=model,
            alphas_cumprod=getattr(diffusion, "base_alphas_cumprod", diffusion.alphas_cumprod),
            predicts_xstart=diffusion.model_mean_type == ModelMeanType.START_X,
            learned_sigma=diffusion.model_var_type in (ModelVarType.LEARNED, ModelVarType.LEARNED_RANGE),
            rescale_timesteps=diffusion.rescale_timesteps,
            clip=clip,
            model_kwargs=precompute_conditioning(model, model_kwargs),
        )

    @property
    def num_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    def __call__(self, x: th.Tensor, t: int) -> th.Tensor:
        """`x` `[N, C, H, W]` at timestep `t` -> the predicted clean frames `[N, C, H, W]`."""
        ts = th.full((x.shape[0],), t, device=x.device, dtype=th.long)
        if self.rescale_timesteps:
            ts = ts.float() * (1000.0 / self.num_timesteps)
        out = self.model(x, ts, **self.model_kwargs).to(x.dtype)
        if self.learned_sigma:
            out = out[:, : x.shape[1]]
        if self.predicts_xstart:
            x0 = out
        else:
            abar = float(self.alphas_cumprod[t])
            x0 = (x - np.sqrt(1.0 - abar) * out) / np.sqrt(abar)
        return x0.clamp(-1, 1) if self.clip else x0


def dpm_solver_pp(
    denoise: Callable[[th.Tensor, int], th.Tensor],
    x: th.Tensor,
    timesteps: Sequence[int],
    alphas_cumprod: np.ndarray,
    order: int = 2,
    callback: Optional[Callable[[int, int, th.Tensor], None]] = None,
) -> th.Tensor:
    """Multistep DPM-Solver++ from `x` at `timesteps[0]` to the clean frame.

    :param denoise: `D(x, t)` -> predicted x0 (a `Denoiser`).
    :param timesteps: descending original timesteps, one network evaluation each.
    :param order: 1 (= DDIM with eta 0), 2 (2M) or 3 (3M). The first steps use lower orders
        until enough predictions exist; with fewer than 15 steps the update into the last
        evaluation is order 1 (into the one before, at most 2); the final jump to sigma = 0 is
        order 1.
    :param callback: called as `callback(i, t, x0)` after evaluation `i`.
    :return: `[N, C, H, W]` the sample (the last prediction; see the module docstring).
    """
    if order not in (1, 2, 3):
        raise ValueError(f"solver order must be 1, 2 or 3, got {order}")
    timesteps = [int(t) for t in timesteps]
    if any(b >= a for a, b in zip(timesteps, timesteps[1:])):
        raise ValueError(f"solver timesteps must be strictly descending, got {timesteps}")
    abar = np.asarray(alphas_cumprod, dtype=np.float64)
    alpha, sigma = np.sqrt(abar), np.sqrt(1.0 - abar)
    lam = np.log(alpha) - np.log(sigma)
    x0s: List[th.Tensor] = []  # the latest predictions, newest last
    lams: List[float] = []
    for i, t in enumerate(timesteps):
        x0 = denoise(x, t)
        if callback is not None:
            callback(i, t, x0)
        x0s = (x0s + [x0])[-3:]
        lams = (lams + [float(lam[t])])[-3:]
        if i == len(timesteps) - 1:
            return x0
        t_next = timesteps[i + 1]
        h = float(lam[t_next]) - lams[-1]
        phi = -np.expm1(-h)  # 1 - exp(-h), > 0
        k = min(order, len(x0s))
        if len(timesteps) < LOWER_ORDER_FINAL_BELOW:
            # Lower order into the last evaluations (DPM-Solver++'s `lower_order_final`): the
            # last stride is the longest in lambda (t = 125 -> 0 is h = 3.8 at 8 steps), where
            # extrapolating from older predictions overshoots: 2M at 8 steps was 24 dB from
            # DDIM-25's frames in the mouth on the noise-predicting demo network, 37 dB with
            # order 1 there.
            k = min(k, len(timesteps) - 1 - i)
        if k == 1:
            d = x0s[-1]
        elif k == 2:
            r0 = (lams[-1] - lams[-2]) / h
            d = x0s[-1] + (x0s[-1] - x0s[-2]) / (2 * r0)
        else:
            r0 = (lams[-1] - lams[-2]) / h
            r1 = (lams[-2] - lams[-3]) / h
            d1_0 = (x0s[-1] - x0s[-2]) / r0
            d1_1 = (x0s[-2] - x0s[-3]) / r1
            d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
            d2 = 2.0 * (d1_0 - d1_1) / (r0 + r1)
            # d1 ~ h x0'(lambda) and d2 ~ h^2 x0''(lambda) from divided differences; the exact
            # integrals of the Taylor terms against exp(lambda) give alpha_t * (phi*D0 +
            # (1 - phi/h)*d1 - phi3*d2), written as alpha_t * phi * d (third-order convergence
            # on Gaussian data is pinned in the tests).
            phi3 = (h - phi) / h**2 - 0.5
            d = x0s[-1] + ((1.0 - phi / h) / phi) * d1 - (phi3 / phi) * d2
        x = (sigma[t_next] / sigma[t]) * x + (alpha[t_next] * phi) * d
    raise AssertionError("unreachable: the loop returns at the last timestep")


def solver_sample(
    diffusion: GaussianDiffusion,
    model,
    noise: th.Tensor,
    model_kwargs: Optional[dict] = None,
    solver: str = "dpm++2m",
    steps: int = 10,
    spacing: str = "ddim",
    clip_denoised: bool = True,
    callback: Optional[Callable[[int, int, th.Tensor], None]] = None,
) -> th.Tensor:
    """Sample `[N, C, H, W]` from x_T = `noise` with a DPM-Solver++ of `steps` network passes.

    `model` is the bare network (it is called with original timesteps, whatever respacing
    `diffusion` has); `model_kwargs` are its conditioning inputs, and may hold a
    `DeepFeatureCache` under "feature_cache". Draws no random numbers.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; use one of {', '.join(SOLVERS)}")
    with th.no_grad():
        denoise = Denoiser.for_diffusion(diffusion, model, model_kwargs, clip=clip_denoised)
        timesteps = solver_timesteps(denoise.num_timesteps, steps, spacing)
        return dpm_solver_pp(denoise, noise, timesteps, denoise.alphas_cumprod, SOLVERS[solver], callback)


# ----------------------------------------------------------------------------------------------
# One calling convention: `SAMPLERS[name](diffusion, model, noise, model_kwargs, steps=, spacing=,
# clip_denoised=)` returns the sampled `[N, C, H, W]`, whatever the sampler.


def sample_ddim(diffusion: GaussianDiffusion, model, noise: th.Tensor, model_kwargs: Optional[dict] = None,
                steps: int = 0, spacing: str = "ddim", clip_denoised: bool = True) -> th.Tensor:
    """The released sampler: DDIM with eta 0 (Song et al. 2021, Eq. 12) over the timesteps of
    `diffusion`'s respacing (`--timestep_respacing`; `steps` and `spacing` are not used)."""
    return diffusion.ddim_sample_loop(model, tuple(noise.shape), noise=noise, clip_denoised=clip_denoised,
                                      model_kwargs=model_kwargs)


def sample_ddpm(diffusion: GaussianDiffusion, model, noise: th.Tensor, model_kwargs: Optional[dict] = None,
                steps: int = 0, spacing: str = "ddim", clip_denoised: bool = True) -> th.Tensor:
    """Ancestral sampling (Ho et al. 2020, Alg. 2) over the timesteps of `diffusion`'s respacing,
    the released `--use_ddim False`; draws its step noise from torch's global generator."""
    return diffusion.p_sample_loop(model, tuple(noise.shape), noise=noise, clip_denoised=clip_denoised,
                                   model_kwargs=model_kwargs)


def _dpm_solver_pp(solver: str) -> Callable[..., th.Tensor]:
    def sample(diffusion: GaussianDiffusion, model, noise: th.Tensor, model_kwargs: Optional[dict] = None,
               steps: int = 10, spacing: str = "ddim", clip_denoised: bool = True) -> th.Tensor:
        return solver_sample(diffusion, model, noise, model_kwargs, solver=solver, steps=steps, spacing=spacing,
                             clip_denoised=clip_denoised)

    sample.__doc__ = (f"DPM-Solver++({SOLVERS[solver]}M) (Lu et al. 2022, Alg. 2) in `steps` network passes "
                      "on the timesteps of `spacing`; draws no random numbers.")
    return sample


SAMPLERS: Dict[str, Callable[..., th.Tensor]] = {
    "ddim": sample_ddim,
    "ddpm": sample_ddpm,
    "dpm++2m": _dpm_solver_pp("dpm++2m"),
    "dpm++3m": _dpm_solver_pp("dpm++3m"),
}


def sampler_name(sampler: str, use_ddim: bool = True) -> str:
    """The `SAMPLERS` entry the flags ask for: the released `--use_ddim False` turns ddim into ddpm."""
    return "ddpm" if sampler == "ddim" and not use_ddim else sampler


def network_passes(sampler: str, diffusion: GaussianDiffusion, steps: int) -> int:
    """Network passes that `SAMPLERS[sampler]` makes for one batch."""
    return steps if sampler in SOLVERS else diffusion.num_timesteps
