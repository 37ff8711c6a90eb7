"""Gaussian diffusion: noise schedules, the forward process, the learned reverse process, losses
and the DDPM / DDIM sampling loops (after openai's guided-diffusion, which Diff2Lip builds on).

Schedules are kept in float64 NumPy and gathered per timestep, as in the released code, so the
same weights and seed give the same frames.
"""

import enum
import math
from typing import Callable, Dict, Iterator, Optional, Sequence

import numpy as np
import torch as th

from .losses import discretized_gaussian_log_likelihood, normal_kl
from .nn import mean_flat


def get_named_beta_schedule(schedule_name: str, num_diffusion_timesteps: int) -> np.ndarray:
    """Betas `[T]` of a named schedule: "linear" (Ho et al., scaled to T) or "cosine" (Nichol & Dhariwal)."""
    if schedule_name == "linear":
        # Scaled so that any T matches the 1000-step schedule's endpoints.
        scale = 1000 / num_diffusion_timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps, dtype=np.float64)
    if schedule_name == "cosine":
        return betas_for_alpha_bar(
            num_diffusion_timesteps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        )
    raise ValueError(f"unknown --noise_schedule {schedule_name!r}; use 'linear' or 'cosine'")


def betas_for_alpha_bar(num_diffusion_timesteps: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999):
    """Betas that discretise a continuous `alpha_bar(t)`, t in [0, 1]."""
    betas = []
    for i in range(num_diffusion_timesteps):
        t1 = i / num_diffusion_timesteps
        t2 = (i + 1) / num_diffusion_timesteps
        betas.append(min(1 - alpha_bar(t2) / alpha_bar(t1), max_beta))
    return np.array(betas)


class ModelMeanType(enum.Enum):
    PREVIOUS_X = enum.auto()  # the model predicts x_{t-1}
    START_X = enum.auto()  # the model predicts x_0
    EPSILON = enum.auto()  # the model predicts epsilon (Diff2Lip)


class ModelVarType(enum.Enum):
    LEARNED = enum.auto()
    FIXED_SMALL = enum.auto()
    FIXED_LARGE = enum.auto()
    LEARNED_RANGE = enum.auto()  # interpolate log-variance between beta_t and beta~_t (Diff2Lip)


class LossType(enum.Enum):
    MSE = enum.auto()  # raw MSE on the prediction (+ the variational term when the variance is learned)
    RESCALED_MSE = enum.auto()  # the same with the variational term scaled by T / 1000
    KL = enum.auto()  # the variational lower bound
    RESCALED_KL = enum.auto()

    def is_vb(self) -> bool:
        return self in (LossType.KL, LossType.RESCALED_KL)


def masked_mean_flat(tensor: th.Tensor, mask: Optional[th.Tensor]) -> th.Tensor:
    """Per-sample mean of `tensor` `[N, C, H, W]` over the pixels where `mask` `[N, 1, H, W]` is 1."""
    if mask is None:
        return mean_flat(tensor)
    weights = mask.to(tensor.dtype).expand_as(tensor)
    dims = list(range(1, tensor.dim()))
    return (tensor * weights).sum(dim=dims) / weights.sum(dim=dims).clamp(min=1.0)


def _unwrap(model):
    """The network inside DistributedDataParallel or a timestep-respacing wrapper."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "model"):
            model = model.model
        else:
            return model


def precompute_conditioning(model, model_kwargs: Optional[dict]) -> dict:
    """Let the network compute its step-independent conditioning (the audio) once per sample loop."""
    model_kwargs = dict(model_kwargs or {})
    hook = getattr(_unwrap(model), "precompute_conditioning", None)
    return hook(model_kwargs) if hook is not None else model_kwargs


class GaussianDiffusion:
    """The diffusion process over `num_timesteps` steps given by `betas`.

    :param rescale_timesteps: pass timesteps to the model scaled to [0, 1000) as the original
        DDPM did.
    """

    def __init__(
        self,
        *,
        betas: Sequence[float],
        model_mean_type: ModelMeanType,
        model_var_type: ModelVarType,
        loss_type: LossType,
        rescale_timesteps: bool = False,
    ):
        self.model_mean_type = model_mean_type
        self.model_var_type = model_var_type
        self.loss_type = loss_type
        self.rescale_timesteps = rescale_timesteps

        betas = np.array(betas, dtype=np.float64)
        self.betas = betas
        assert len(betas.shape) == 1, "betas must be 1-D"
        assert (betas > 0).all() and (betas <= 1).all()
        self.num_timesteps = int(betas.shape[0])

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas, axis=0)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)

        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)

        # q(x_{t-1} | x_t, x_0)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # The posterior variance is 0 at t = 0; clip the log to its value at t = 1. A one-step
        # process (a 1-step student, `ddim1`) has no t = 1: its step's beta stands in. Step 0
        # adds no noise either way, so only LEARNED_RANGE's lower bound sees this value.
        self.first_step_variance = self.posterior_variance[1] if len(betas) > 1 else betas[0]
        self.posterior_log_variance_clipped = np.log(np.append(self.first_step_variance, self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

    # ----------------------------------------------------------------------------------------
    # Forward process

    def q_mean_variance(self, x_start: th.Tensor, t: th.Tensor):
        """Mean, variance and log-variance of q(x_t | x_0)."""
        mean = _extract_into_tensor(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
        variance = _extract_into_tensor(1.0 - self.alphas_cumprod, t, x_start.shape)
        log_variance = _extract_into_tensor(self.log_one_minus_alphas_cumprod, t, x_start.shape)
        return mean, variance, log_variance

    def q_sample(self, x_start: th.Tensor, t: th.Tensor, noise: Optional[th.Tensor] = None) -> th.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (Eq. 2)."""
        if noise is None:
            noise = th.randn_like(x_start)
        assert noise.shape == x_start.shape
        return (
            _extract_into_tensor(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
            + _extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise
        )

    def q_posterior_mean_variance(self, x_start: th.Tensor, x_t: th.Tensor, t: th.Tensor):
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        assert x_start.shape == x_t.shape
        posterior_mean = (
            _extract_into_tensor(self.posterior_mean_coef1, t, x_t.shape) * x_start
            + _extract_into_tensor(self.posterior_mean_coef2, t, x_t.shape) * x_t
        )
        posterior_variance = _extract_into_tensor(self.posterior_variance, t, x_t.shape)
        posterior_log_variance_clipped = _extract_into_tensor(self.posterior_log_variance_clipped, t, x_t.shape)
        return posterior_mean, posterior_variance, posterior_log_variance_clipped

    # ----------------------------------------------------------------------------------------
    # Reverse process

    def p_mean_variance(
        self,
        model,
        x: th.Tensor,
        t: th.Tensor,
        clip_denoised: bool = True,
        denoised_fn: Optional[Callable] = None,
        model_kwargs: Optional[dict] = None,
    ) -> Dict[str, th.Tensor]:
        """Apply the model to get p(x_{t-1} | x_t) and the prediction of x_0.

        :return: dict with "mean", "variance", "log_variance", "pred_xstart", "model_output".
        """
        model_kwargs = model_kwargs or {}
        B, C = x.shape[:2]
        assert t.shape == (B,)
        model_output = model(x, self._scale_timesteps(t), **model_kwargs).to(x.dtype)

        if self.model_var_type in (ModelVarType.LEARNED, ModelVarType.LEARNED_RANGE):
            assert model_output.shape == (B, C * 2, *x.shape[2:])
            model_output, model_var_values = th.split(model_output, C, dim=1)
            if self.model_var_type == ModelVarType.LEARNED:
                model_log_variance = model_var_values
                model_variance = th.exp(model_log_variance)
            else:
                min_log = _extract_into_tensor(self.posterior_log_variance_clipped, t, x.shape)
                max_log = _extract_into_tensor(np.log(self.betas), t, x.shape)
                # The model's output is in [-1, 1]; map it to an interpolation weight in [0, 1].
                frac = (model_var_values + 1) / 2
                model_log_variance = frac * max_log + (1 - frac) * min_log
                model_variance = th.exp(model_log_variance)
        else:
            model_variance, model_log_variance = {
                # FIXED_LARGE uses beta_t but the posterior variance at t = 0 for a better decoder.
                ModelVarType.FIXED_LARGE: (
                    np.append(self.first_step_variance, self.betas[1:]),
                    np.log(np.append(self.first_step_variance, self.betas[1:])),
                ),
                ModelVarType.FIXED_SMALL: (self.posterior_variance, self.posterior_log_variance_clipped),
            }[self.model_var_type]
            model_variance = _extract_into_tensor(model_variance, t, x.shape)
            model_log_variance = _extract_into_tensor(model_log_variance, t, x.shape)

        def process_xstart(x0: th.Tensor) -> th.Tensor:
            if denoised_fn is not None:
                x0 = denoised_fn(x0)
            return x0.clamp(-1, 1) if clip_denoised else x0

        if self.model_mean_type == ModelMeanType.PREVIOUS_X:
            pred_xstart = process_xstart(self._predict_xstart_from_xprev(x_t=x, t=t, xprev=model_output))
            model_mean = model_output
        else:
            if self.model_mean_type == ModelMeanType.START_X:
                pred_xstart = process_xstart(model_output)
            else:
                pred_xstart = process_xstart(self._predict_xstart_from_eps(x_t=x, t=t, eps=model_output))
            model_mean, _, _ = self.q_posterior_mean_variance(x_start=pred_xstart, x_t=x, t=t)

        return {
            "mean": model_mean,
            "variance": model_variance,
            "log_variance": model_log_variance,
            "pred_xstart": pred_xstart,
            "model_output": model_output,
        }

    def _predict_xstart_from_eps(self, x_t: th.Tensor, t: th.Tensor, eps: th.Tensor) -> th.Tensor:
        assert x_t.shape == eps.shape
        return (
            _extract_into_tensor(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
            - _extract_into_tensor(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps
        )

    def _predict_xstart_from_xprev(self, x_t: th.Tensor, t: th.Tensor, xprev: th.Tensor) -> th.Tensor:
        assert x_t.shape == xprev.shape
        return (
            _extract_into_tensor(1.0 / self.posterior_mean_coef1, t, x_t.shape) * xprev
            - _extract_into_tensor(self.posterior_mean_coef2 / self.posterior_mean_coef1, t, x_t.shape) * x_t
        )

    def _predict_eps_from_xstart(self, x_t: th.Tensor, t: th.Tensor, pred_xstart: th.Tensor) -> th.Tensor:
        return (
            _extract_into_tensor(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - pred_xstart
        ) / _extract_into_tensor(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape)

    def _scale_timesteps(self, t: th.Tensor) -> th.Tensor:
        if self.rescale_timesteps:
            return t.float() * (1000.0 / self.num_timesteps)
        return t

    # ----------------------------------------------------------------------------------------
    # DDPM sampling

    def p_sample(self, model, x, t, clip_denoised=True, denoised_fn=None, model_kwargs=None):
        """One ancestral step x_t -> x_{t-1}; returns "sample" and "pred_xstart"."""
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn, model_kwargs=model_kwargs)
        noise = th.randn_like(x)
        nonzero_mask = (t != 0).float().view(-1, *([1] * (len(x.shape) - 1)))  # no noise at t == 0
        sample = out["mean"] + nonzero_mask * th.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def p_sample_loop(
        self,
        model,
        shape,
        noise: Optional[th.Tensor] = None,
        clip_denoised: bool = True,
        denoised_fn: Optional[Callable] = None,
        model_kwargs: Optional[dict] = None,
        device=None,
        progress: bool = False,
        callback: Optional[Callable] = None,
    ) -> th.Tensor:
        """Ancestral sampling from x_T = `noise` (or fresh noise); returns x_0 `shape`.

        :param callback: called as `callback(i, t, out)` after every step, `i` counting from 0.
        """
        final = None
        for final in self.p_sample_loop_progressive(
            model, shape, noise=noise, clip_denoised=clip_denoised, denoised_fn=denoised_fn,
            model_kwargs=model_kwargs, device=device, progress=progress, callback=callback,
        ):
            pass
        return final["sample"]

    def p_sample_loop_progressive(
        self, model, shape, noise=None, clip_denoised=True, denoised_fn=None, model_kwargs=None,
        device=None, progress=False, callback=None,
    ) -> Iterator[Dict[str, th.Tensor]]:
        """Yield the output of every DDPM step."""
        yield from self._loop(
            lambda img, t, kwargs: self.p_sample(model, img, t, clip_denoised, denoised_fn, kwargs),
            model, shape, noise, model_kwargs, device, progress, callback,
        )

    # ----------------------------------------------------------------------------------------
    # DDIM sampling

    def ddim_sample(self, model, x, t, clip_denoised=True, denoised_fn=None, model_kwargs=None, eta: float = 0.0):
        """One DDIM step x_t -> x_{t-1} (Eq. 10; eta = 0 is deterministic, Eq. 4)."""
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn, model_kwargs=model_kwargs)
        # Recompute eps from the (clipped) x_0 so that the step is consistent with it.
        eps = self._predict_eps_from_xstart(x, t, out["pred_xstart"])
        alpha_bar = _extract_into_tensor(self.alphas_cumprod, t, x.shape)
        alpha_bar_prev = _extract_into_tensor(self.alphas_cumprod_prev, t, x.shape)
        sigma = eta * th.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * th.sqrt(1 - alpha_bar / alpha_bar_prev)
        sample = out["pred_xstart"] * th.sqrt(alpha_bar_prev) + th.sqrt(1 - alpha_bar_prev - sigma**2) * eps
        if eta > 0:
            nonzero_mask = (t != 0).float().view(-1, *([1] * (len(x.shape) - 1)))
            sample = sample + nonzero_mask * sigma * th.randn_like(x)
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_sample_loop(
        self,
        model,
        shape,
        noise: Optional[th.Tensor] = None,
        clip_denoised: bool = True,
        denoised_fn: Optional[Callable] = None,
        model_kwargs: Optional[dict] = None,
        device=None,
        progress: bool = False,
        eta: float = 0.0,
        callback: Optional[Callable] = None,
    ) -> th.Tensor:
        """DDIM sampling from x_T = `noise` (or fresh noise); returns x_0 `shape`.

        :param callback: called as `callback(i, t, out)` after every step, `i` counting from 0.
        """
        final = None
        for final in self.ddim_sample_loop_progressive(
            model, shape, noise=noise, clip_denoised=clip_denoised, denoised_fn=denoised_fn,
            model_kwargs=model_kwargs, device=device, progress=progress, eta=eta, callback=callback,
        ):
            pass
        return final["sample"]

    def ddim_sample_loop_progressive(
        self, model, shape, noise=None, clip_denoised=True, denoised_fn=None, model_kwargs=None,
        device=None, progress=False, eta=0.0, callback=None,
    ) -> Iterator[Dict[str, th.Tensor]]:
        """Yield the output of every DDIM step."""
        yield from self._loop(
            lambda img, t, kwargs: self.ddim_sample(model, img, t, clip_denoised, denoised_fn, kwargs, eta=eta),
            model, shape, noise, model_kwargs, device, progress, callback,
        )

    def _loop(self, step, model, shape, noise, model_kwargs, device, progress, callback):
        if device is None:
            device = next(model.parameters()).device
        assert isinstance(shape, (tuple, list))
        img = noise.to(device) if noise is not None else th.randn(*shape, device=device)
        with th.no_grad():
            model_kwargs = precompute_conditioning(model, model_kwargs)
        indices = list(range(self.num_timesteps))[::-1]
        if progress:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc="sampling", leave=False)
        for i, index in enumerate(indices):
            t = th.tensor([index] * shape[0], device=device)
            with th.no_grad():
                out = step(img, t, model_kwargs)
            if callback is not None:
                callback(i, t, out)
            yield out
            img = out["sample"]

    # ----------------------------------------------------------------------------------------
    # Training

    def _vb_terms_bpd(self, model, x_start, x_t, t, clip_denoised=True, model_kwargs=None, mask=None):
        """The variational bound term for step t in bits per dimension (masked mean over pixels)."""
        true_mean, _, true_log_variance_clipped = self.q_posterior_mean_variance(x_start=x_start, x_t=x_t, t=t)
        out = self.p_mean_variance(model, x_t, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
        kl = normal_kl(true_mean, true_log_variance_clipped, out["mean"], out["log_variance"])
        kl = masked_mean_flat(kl, mask) / np.log(2.0)
        decoder_nll = -discretized_gaussian_log_likelihood(
            x_start, means=out["mean"], log_scales=0.5 * out["log_variance"]
        )
        decoder_nll = masked_mean_flat(decoder_nll, mask) / np.log(2.0)
        # At the first timestep the decoder NLL replaces the KL.
        output = th.where((t == 0), decoder_nll, kl)
        return {"output": output, "pred_xstart": out["pred_xstart"]}

    def training_losses(
        self,
        model,
        x_start: th.Tensor,
        t: th.Tensor,
        model_kwargs: Optional[dict] = None,
        noise: Optional[th.Tensor] = None,
        loss_mask: Optional[th.Tensor] = None,
    ) -> Dict[str, th.Tensor]:
        """The diffusion losses for one batch, per sample.

        :param x_start: clean frames `[N, C, H, W]` in [-1, 1].
        :param t: timesteps `[N]` (Diff2Lip: one per sequence, repeated for its frames).
        :param loss_mask: `[N, 1, H, W]`, 1 where the loss counts (the generated lower face);
            None for the whole frame.
        :return: dict of `[N]` tensors "loss", "mse" (and "vb" with a learned variance), plus
            "pred_xstart" `[N, C, H, W]`: x_0 recovered from the predicted noise (Eq. 2), with
            gradients, for the image-space losses; "x_t", "noise" and "model_output".
        """
        model_kwargs = model_kwargs or {}
        if noise is None:
            noise = th.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise=noise)

        terms: Dict[str, th.Tensor] = {"x_t": x_t, "noise": noise}
        model_output = model(x_t, self._scale_timesteps(t), **model_kwargs).to(x_t.dtype)
        terms["model_output"] = model_output

        if self.loss_type.is_vb():
            terms["loss"] = self._vb_terms_bpd(
                model=lambda *args, r=model_output: r,
                x_start=x_start, x_t=x_t, t=t, clip_denoised=False, mask=loss_mask,
            )["output"]
            if self.loss_type == LossType.RESCALED_KL:
                terms["loss"] = terms["loss"] * self.num_timesteps
            prediction = model_output[:, : x_t.shape[1]]
        else:
            prediction = model_output
            if self.model_var_type in (ModelVarType.LEARNED, ModelVarType.LEARNED_RANGE):
                B, C = x_t.shape[:2]
                assert model_output.shape == (B, C * 2, *x_t.shape[2:])
                prediction, model_var_values = th.split(model_output, C, dim=1)
                # The variational term trains only the variance: the mean is frozen for it.
                frozen_out = th.cat([prediction.detach(), model_var_values], dim=1)
                terms["vb"] = self._vb_terms_bpd(
                    model=lambda *args, r=frozen_out: r,
                    x_start=x_start, x_t=x_t, t=t, clip_denoised=False, mask=loss_mask,
                )["output"]
                if self.loss_type == LossType.RESCALED_MSE:
                    # Divide by 1000 for equivalence with the initial implementation.
                    terms["vb"] = terms["vb"] * (self.num_timesteps / 1000.0)

            target = {
                ModelMeanType.PREVIOUS_X: lambda: self.q_posterior_mean_variance(x_start=x_start, x_t=x_t, t=t)[0],
                ModelMeanType.START_X: lambda: x_start,
                ModelMeanType.EPSILON: lambda: noise,
            }[self.model_mean_type]()
            assert prediction.shape == target.shape == x_start.shape
            terms["mse"] = masked_mean_flat((target - prediction) ** 2, loss_mask)
            terms["loss"] = terms["mse"] + terms["vb"] if "vb" in terms else terms["mse"]

        terms["pred_xstart"] = {
            ModelMeanType.EPSILON: lambda: self._predict_xstart_from_eps(x_t, t, prediction),
            ModelMeanType.START_X: lambda: prediction,
            ModelMeanType.PREVIOUS_X: lambda: self._predict_xstart_from_xprev(x_t, t, prediction),
        }[self.model_mean_type]()
        return terms


def _extract_into_tensor(arr: np.ndarray, timesteps: th.Tensor, broadcast_shape) -> th.Tensor:
    """Gather `arr[timesteps]` (float64 -> float32) and broadcast it to `broadcast_shape`."""
    res = th.from_numpy(arr).to(device=timesteps.device)[timesteps].float()
    while len(res.shape) < len(broadcast_shape):
        res = res[..., None]
    return res.expand(broadcast_shape)
