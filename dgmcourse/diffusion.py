"""Diffusion models and score matching, with exact scores of the course's toy mixtures.

Notation of Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models", NeurIPS (DDPM):
data :math:`x_0`, T noising steps with variances :math:`\\beta_t`, :math:`\\alpha_t = 1 - \\beta_t`,
:math:`\\bar\\alpha_t = \\prod_{s \\le t} \\alpha_s`, so that

.. math:: q(x_t | x_{t-1}) = N(\\sqrt{\\alpha_t}\\,x_{t-1}, \\beta_t I), \\qquad
          q(x_t | x_0) = N(\\sqrt{\\bar\\alpha_t}\\,x_0, (1 - \\bar\\alpha_t) I).

Conventions used by every function here:

* A :class:`NoiseSchedule` stores T + 1 values per quantity: entry ``t`` belongs to step t
  (t = 1..T) and entry 0 to the data (:math:`\\beta_0 = 0`, :math:`\\alpha_0 = \\bar\\alpha_0 = 1`),
  so ``schedule.alpha_bars[t]`` reads as :math:`\\bar\\alpha_t` in the papers. Schedules are
  float64 CPU tensors; coefficients are computed in float64 and cast to the data's dtype and device.
* A timestep argument ``t`` lies in 1..T: a Python int (the same step for the whole batch) or an
  integer tensor ``(B,)``.
* Data tensors are ``(B, *shape)``; an ε-model is called as ``eps_model(x_t, t)`` with ``t`` a
  ``(B,)`` long tensor on ``x_t``'s device, a noise-conditional score model as
  ``score_model(x, sigma)`` with ``sigma`` a ``(B,)`` tensor; both return a tensor shaped like ``x``.
* Randomness comes from an optional ``torch.Generator``, which must live on the data's device.

Contents

* Schedules: :class:`NoiseSchedule`, :func:`schedule_from_betas`, :func:`schedule_from_alpha_bars`,
  :func:`linear_schedule`, :func:`cosine_schedule`.
* Forward process: :func:`forward_step`, :func:`q_sample`.
* Posterior, reverse process and samplers: :func:`posterior_mean_var`, :func:`predict_x0`,
  :func:`reverse_variances`, :func:`reverse_mean`, :func:`reverse_step`, :func:`ddpm_sample`,
  :func:`ddim_timesteps`, :func:`ddim_step`, :func:`ddim_sample`.
* Training objectives: :func:`epsilon_loss` (L_simple, or the ELBO with :func:`elbo_weights`),
  :func:`dsm_loss`.
* Score-based sampling: :func:`geometric_noise_levels`, :func:`langevin_dynamics`,
  :func:`annealed_langevin_dynamics`.
* Exact scores of isotropic Gaussian mixtures, e.g. the ring (``gan.ring_means()``, σ =
  ``gan.RING_SIGMA``) and the grid (``gan.grid_means()``, σ = ``gan.GRID_SIGMA``) of
  :mod:`dgmcourse.gan`: :func:`mixture_score`, :func:`noised_mixture_score`,
  :func:`optimal_epsilon`. With them the samplers can be studied without training a network.
* A small ε-network and its training loop: :class:`EpsMLP`, :func:`train_epsilon_model`.
* Latent diffusion (Rombach et al. 2022): :func:`encode_latents`, :func:`decode_latents` carry images to a
  trained VAE's standardised latent codes and back; the diffusion model is trained and sampled there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from dgmcourse.vae import encoder_means

__all__ = [
    "NoiseSchedule", "schedule_from_betas", "schedule_from_alpha_bars", "linear_schedule", "cosine_schedule",
    "forward_step", "q_sample", "posterior_mean_var", "predict_x0", "reverse_variances", "reverse_mean",
    "reverse_step", "ddpm_sample", "ddim_timesteps", "ddim_step", "ddim_sample", "epsilon_loss",
    "elbo_weights", "dsm_loss", "geometric_noise_levels", "langevin_dynamics", "annealed_langevin_dynamics",
    "mixture_score", "noised_mixture_score", "optimal_epsilon", "EpsMLP", "train_epsilon_model",
    "encode_latents", "decode_latents",
]

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ScoreModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_REVERSE_VARIANCES = ("beta", "posterior")


# ----------------------------------------------------------------------------- schedules
@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """Noise variances :math:`\\beta_t`, :math:`\\alpha_t = 1 - \\beta_t` and :math:`\\bar\\alpha_t` of a diffusion.

    :math:`\\bar\\alpha_t = \\prod_{s \\le t} \\alpha_s`; Ho et al. (2020), sec. 2 and eq. 4.

    Each field is a float64 CPU tensor ``(T + 1,)`` whose entry t belongs to step t; entry 0 is
    the data (:math:`\\beta_0 = 0`, :math:`\\alpha_0 = \\bar\\alpha_0 = 1`). Build schedules with
    :func:`schedule_from_betas` and the functions that call it, which check the values.
    """

    betas: torch.Tensor
    alphas: torch.Tensor
    alpha_bars: torch.Tensor

    @property
    def T(self) -> int:
        """Number of noising steps."""
        return len(self.betas) - 1


def _check_T(T: int) -> None:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive integer (number of steps), got {T!r}")


def schedule_from_betas(betas) -> NoiseSchedule:
    """The schedule with variances :math:`\\beta_1, \\dots, \\beta_T` (Ho et al. 2020, eq. 2 and sec. 2).

    Args:
        betas: ``(T,)`` sequence or tensor, :math:`\\beta_t \\in (0, 1)`.

    Returns:
        :class:`NoiseSchedule` with :math:`\\alpha_t = 1 - \\beta_t`,
        :math:`\\bar\\alpha_t = \\prod_{s \\le t} \\alpha_s` (strictly decreasing, in (0, 1)).

    Raises:
        ValueError: ``betas`` not 1-D with T >= 1 entries, or some :math:`\\beta_t` outside (0, 1) (NaN included).
    """
    betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
    if betas.dim() != 1 or len(betas) < 1:
        raise ValueError(f"betas must be 1-D with T >= 1 entries, got shape {tuple(betas.shape)}")
    bad = ~((betas > 0) & (betas < 1))
    if bad.any():
        t = int(bad.nonzero()[0]) + 1
        raise ValueError(f"betas must lie in the open interval (0, 1), got beta_{t} = {betas[t - 1].item()!r}")
    betas = torch.cat([betas.new_zeros(1), betas])
    alphas = 1.0 - betas
    return NoiseSchedule(betas, alphas, torch.cumprod(alphas, 0))


def _betas_from_alpha_bars(alpha_bars) -> torch.Tensor:
    alpha_bars = torch.as_tensor(alpha_bars, dtype=torch.float64).detach().cpu()
    if alpha_bars.dim() != 1 or len(alpha_bars) < 1:
        raise ValueError(f"alpha_bars must be 1-D with T >= 1 entries, got shape {tuple(alpha_bars.shape)}")
    if not torch.all((alpha_bars > 0) & (alpha_bars < 1)):
        raise ValueError("alpha_bars must lie in the open interval (0, 1)")
    previous = torch.cat([alpha_bars.new_ones(1), alpha_bars[:-1]])
    if not torch.all(alpha_bars < previous):
        t = int((alpha_bars >= previous).nonzero()[0]) + 1
        raise ValueError(f"alpha_bars must be strictly decreasing (alpha_bar_t = alpha_bar_(t-1) * alpha_t with "
                         f"alpha_t < 1), but alpha_bar_{t} >= alpha_bar_{t - 1}")
    return 1.0 - alpha_bars / previous


def schedule_from_alpha_bars(alpha_bars) -> NoiseSchedule:
    """The schedule with given signal levels :math:`\\bar\\alpha_1, \\dots, \\bar\\alpha_T`.

    :math:`\\beta_t = 1 - \\bar\\alpha_t / \\bar\\alpha_{t-1}` with :math:`\\bar\\alpha_0 = 1`; Nichol & Dhariwal
    (2021), "Improved Denoising Diffusion Probabilistic Models", ICML, sec. 3.2
    (the relation under eq. 17).

    Args:
        alpha_bars: ``(T,)`` sequence or tensor in (0, 1), strictly decreasing.

    Returns:
        :class:`NoiseSchedule`.

    Raises:
        ValueError: ``alpha_bars`` not 1-D with T >= 1 entries, outside (0, 1), or not strictly decreasing.
    """
    return schedule_from_betas(_betas_from_alpha_bars(alpha_bars))


def linear_schedule(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    """β linear from ``beta_start`` to ``beta_end`` over T steps (Ho et al. 2020, sec. 4: 1e-4 to 0.02, T = 1000).

    Raises:
        ValueError: T not a positive integer; ``beta_start`` or ``beta_end`` outside (0, 1).
    """
    _check_T(T)
    if not (0 < beta_start < 1 and 0 < beta_end < 1):
        raise ValueError(f"beta_start and beta_end must lie in (0, 1), got {beta_start!r} and {beta_end!r}")
    return schedule_from_betas(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))


def cosine_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """Cosine schedule of Nichol & Dhariwal (2021).

    :math:`\\bar\\alpha_t = f(t)/f(0)`, :math:`f(t) = \\cos^2\\big(\\frac{t/T + s}{1 + s}\\frac{\\pi}{2}\\big)`:
    Nichol & Dhariwal (2021), eq. 17, with their offset s = 0.008; as they do, each
    :math:`\\beta_t = 1 - \\bar\\alpha_t/\\bar\\alpha_{t-1}` is clipped to at most ``max_beta`` = 0.999
    (the formula gives :math:`\\beta_T = 1`), and :math:`\\bar\\alpha_t` is recomputed from the clipped β.

    Raises:
        ValueError: T not a positive integer, ``s`` < 0, or ``max_beta`` outside (0, 1).
    """
    _check_T(T)
    if not s >= 0:
        raise ValueError(f"s must be >= 0, got {s!r}")
    if not 0 < max_beta < 1:
        raise ValueError(f"max_beta must lie in (0, 1), got {max_beta!r}")
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    return schedule_from_betas(_betas_from_alpha_bars(f[1:] / f[0]).clamp(max=max_beta))


# ------------------------------------------------------------------------------- helpers
def _check_data(name: str, x: torch.Tensor) -> None:
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[0] < 1 or x.numel() == 0:
        raise ValueError(f"{name} must be a non-empty batch (B, *shape), got shape {tuple(x.shape)}")


def _check_same_shape(a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    _check_data(b_name, b)
    if a.shape != b.shape:
        raise ValueError(f"{b_name} must have the shape of {a_name} {tuple(a.shape)}, got {tuple(b.shape)}")


def _timesteps(t, x: torch.Tensor, schedule: NoiseSchedule, name: str = "t", low: int = 1) -> torch.Tensor:
    """``t`` as a CPU long tensor, ``()`` for one step for the whole batch or ``(B,)``, checked to lie in ``low..T``."""
    integer = (isinstance(t, int) and not isinstance(t, bool)) or (
        torch.is_tensor(t) and not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool)
    if not integer:
        raise ValueError(f"{name} must be an int or an integer tensor of shape (B,), got {t!r}")
    t = torch.as_tensor(t).detach().cpu().long()
    if t.shape not in ((), (len(x),)):
        raise ValueError(f"{name} must be a scalar or have shape ({len(x)},), got {tuple(t.shape)}")
    if t.min() < low or t.max() > schedule.T:
        raise ValueError(f"{name} must lie in {low}..{schedule.T}, got values in {int(t.min())}..{int(t.max())}")
    return t


def _at(values: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``values[t]`` (float64, CPU) shaped ``(B or 1, 1, ..., 1)`` to broadcast against ``x``."""
    return values[t].reshape(-1, *([1] * (x.dim() - 1)))


def _like(coefficient: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return coefficient.to(device=x.device, dtype=x.dtype)


def _noise(noise: torch.Tensor | None, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if noise is None:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    _check_same_shape("x", x, "noise", noise)
    return noise


def _batch_steps(t: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor:
    """Step(s) as the ``(B,)`` long tensor on ``x``'s device that models receive."""
    return torch.as_tensor(t, dtype=torch.long, device=x.device).expand(len(x))


def _model_output(name: str, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(out) or out.shape != x.shape:
        raise ValueError(f"{name} must return a tensor of the input's shape {tuple(x.shape)}, "
                         f"got {tuple(getattr(out, 'shape', ()))}")
    return out


# ------------------------------------------------------------------------ forward process
def forward_step(x_prev: torch.Tensor, t, schedule: NoiseSchedule, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """One forward step, a draw from :math:`q(x_t | x_{t-1})`.

    :math:`x_t = \\sqrt{1 - \\beta_t}\\,x_{t-1} + \\sqrt{\\beta_t}\\,\\epsilon`; Ho et al. (2020), eq. 2:
    :math:`q(x_t | x_{t-1}) = N(\\sqrt{1-\\beta_t}\\,x_{t-1}, \\beta_t I)`.

    Args:
        x_prev: :math:`x_{t-1}`, ``(B, *shape)``.
        t: step(s) in 1..T (int or integer tensor ``(B,)``).
        schedule: the noise schedule.
        noise: optional :math:`\\epsilon` of ``x_prev``'s shape; drawn from N(0, I) when None.
        generator: optional ``torch.Generator`` for that draw.

    Returns:
        :math:`x_t`, shaped like ``x_prev``.

    Raises:
        ValueError: ``x_prev`` not a non-empty floating batch, ``t`` not integer or outside 1..T,
            ``noise`` of another shape.
    """
    _check_data("x_prev", x_prev)
    t = _timesteps(t, x_prev, schedule)
    beta = _at(schedule.betas, t, x_prev)
    return _like((1 - beta).sqrt(), x_prev) * x_prev + _like(beta.sqrt(), x_prev) * _noise(noise, x_prev, generator)


def q_sample(x0: torch.Tensor, t, schedule: NoiseSchedule, noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """A draw from :math:`q(x_t | x_0)` in one step.

    :math:`x_t = \\sqrt{\\bar\\alpha_t}\\,x_0 + \\sqrt{1 - \\bar\\alpha_t}\\,\\epsilon`; Ho et al. (2020), eq. 4:
    :math:`q(x_t | x_0) = N(\\sqrt{\\bar\\alpha_t}\\,x_0, (1 - \\bar\\alpha_t) I)`,
    the law of t applications of :func:`forward_step` (the variances add up:
    :math:`\\alpha_t(1 - \\bar\\alpha_{t-1}) + \\beta_t = 1 - \\bar\\alpha_t`).

    Args:
        x0: data ``(B, *shape)``.
        t: step(s) in 1..T (int or integer tensor ``(B,)``).
        schedule: the noise schedule.
        noise: optional :math:`\\epsilon` of ``x0``'s shape (pass it to reuse it in a loss); drawn when None.
        generator: optional ``torch.Generator`` for that draw.

    Returns:
        :math:`x_t`, shaped like ``x0``.

    Raises:
        ValueError: ``x0`` not a non-empty floating batch, ``t`` not integer or outside 1..T,
            ``noise`` of another shape.
    """
    _check_data("x0", x0)
    t = _timesteps(t, x0, schedule)
    alpha_bar = _at(schedule.alpha_bars, t, x0)
    return _like(alpha_bar.sqrt(), x0) * x0 + _like((1 - alpha_bar).sqrt(), x0) * _noise(noise, x0, generator)


# --------------------------------------------------------- posterior and reverse process
def posterior_mean_var(x0: torch.Tensor, xt: torch.Tensor, t, schedule: NoiseSchedule
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of the forward posterior :math:`q(x_{t-1} | x_t, x_0) = N(\\tilde\\mu_t, \\tilde\\beta_t I)`.

    Ho et al. (2020), eqs. 6-7:

    .. math:: \\tilde\\mu_t = \\frac{\\sqrt{\\bar\\alpha_{t-1}}\\beta_t}{1-\\bar\\alpha_t} x_0
              + \\frac{\\sqrt{\\alpha_t}(1-\\bar\\alpha_{t-1})}{1-\\bar\\alpha_t} x_t, \\qquad
              \\tilde\\beta_t = \\frac{1-\\bar\\alpha_{t-1}}{1-\\bar\\alpha_t}\\beta_t.

    At t = 1 the posterior is the point mass at :math:`x_0` (mean :math:`x_0`, variance 0).

    Args:
        x0, xt: :math:`x_0` and :math:`x_t`, ``(B, *shape)`` each.
        t: step(s) in 1..T (int or integer tensor ``(B,)``).
        schedule: the noise schedule.

    Returns:
        ``(mean, variance)``, both shaped like ``x0`` (the variance is the same in every coordinate).

    Raises:
        ValueError: inputs not non-empty floating batches of one shape, ``t`` not integer or outside 1..T.
    """
    _check_data("x0", x0)
    _check_same_shape("x0", x0, "xt", xt)
    t = _timesteps(t, x0, schedule)
    alpha_bar, alpha_bar_prev = _at(schedule.alpha_bars, t, x0), _at(schedule.alpha_bars, t - 1, x0)
    beta, alpha = _at(schedule.betas, t, x0), _at(schedule.alphas, t, x0)
    coef_x0 = alpha_bar_prev.sqrt() * beta / (1 - alpha_bar)
    coef_xt = alpha.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar)
    mean = _like(coef_x0, x0) * x0 + _like(coef_xt, x0) * xt
    variance = _like((1 - alpha_bar_prev) / (1 - alpha_bar) * beta, x0).expand_as(mean)
    return mean, variance


def predict_x0(xt: torch.Tensor, t, eps: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """The clean sample implied by a noise prediction.

    :math:`\\hat x_0 = (x_t - \\sqrt{1-\\bar\\alpha_t}\\,\\hat\\epsilon)/\\sqrt{\\bar\\alpha_t}`: Ho et al. (2020),
    eq. 4 solved for :math:`x_0`; Song, Meng & Ermon (2021), "Denoising Diffusion
    Implicit Models", ICLR, eq. 9. With the optimal :math:`\\hat\\epsilon = E[\\epsilon | x_t]` it is
    the optimal denoiser :math:`E[x_0 | x_t]` (Tweedie's formula, see :func:`optimal_epsilon`).

    Args:
        xt: :math:`x_t`, ``(B, *shape)``.
        t: step(s) in 1..T.
        eps: predicted noise :math:`\\hat\\epsilon`, shaped like ``xt``.
        schedule: the noise schedule.

    Returns:
        :math:`\\hat x_0`, shaped like ``xt``.

    Raises:
        ValueError: inputs not non-empty floating batches of one shape, ``t`` not integer or outside 1..T.
    """
    _check_data("xt", xt)
    _check_same_shape("xt", xt, "eps", eps)
    t = _timesteps(t, xt, schedule)
    alpha_bar = _at(schedule.alpha_bars, t, xt)
    return (xt - _like((1 - alpha_bar).sqrt(), xt) * eps) / _like(alpha_bar.sqrt(), xt)


def reverse_variances(schedule: NoiseSchedule, kind: str = "beta") -> torch.Tensor:
    """The fixed reverse-process variances :math:`\\sigma_t^2` of Ho et al. (2020), sec. 3.2.

    * ``"beta"``: :math:`\\sigma_t^2 = \\beta_t` (optimal when :math:`x_0 \\sim N(0, I)`);
    * ``"posterior"``: :math:`\\sigma_t^2 = \\tilde\\beta_t` of eq. 7 (optimal when :math:`x_0` is a
      point), except :math:`\\sigma_1^2 = \\beta_1`: :math:`\\tilde\\beta_1 = 0` would make the decoder
      :math:`p_\\theta(x_0 | x_1)` a point mass. Sampling never uses :math:`\\sigma_1`
      (Algorithm 2 adds no noise at t = 1); only :func:`elbo_weights` does.

    Returns:
        float64 CPU tensor ``(T + 1,)``; entry t is :math:`\\sigma_t^2`, entry 0 is 0.

    Raises:
        ValueError: unknown ``kind``.
    """
    if kind == "beta":
        return schedule.betas.clone()
    if kind == "posterior":
        variances = schedule.betas.clone()
        alpha_bars = schedule.alpha_bars
        variances[2:] = (1 - alpha_bars[1:-1]) / (1 - alpha_bars[2:]) * schedule.betas[2:]
        return variances
    raise ValueError(f"kind must be one of {_REVERSE_VARIANCES}, got {kind!r}")


def reverse_mean(xt: torch.Tensor, t, eps: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """Mean :math:`\\mu_\\theta(x_t, t)` of the reverse step given a noise prediction.

    :math:`\\mu_\\theta = (x_t - \\beta_t\\hat\\epsilon/\\sqrt{1-\\bar\\alpha_t})/\\sqrt{\\alpha_t}`,
    Ho et al. (2020), eq. 11: the posterior mean :math:`\\tilde\\mu_t` of eq. 7 with :math:`x_0`
    replaced by :func:`predict_x0` (eq. 10).

    Args:
        xt: :math:`x_t`, ``(B, *shape)``.
        t: step(s) in 1..T.
        eps: predicted noise :math:`\\hat\\epsilon = \\epsilon_\\theta(x_t, t)`, shaped like ``xt``.
        schedule: the noise schedule.

    Returns:
        :math:`\\mu_\\theta`, shaped like ``xt``.

    Raises:
        ValueError: inputs not non-empty floating batches of one shape, ``t`` not integer or outside 1..T.
    """
    _check_data("xt", xt)
    _check_same_shape("xt", xt, "eps", eps)
    t = _timesteps(t, xt, schedule)
    alpha, beta = _at(schedule.alphas, t, xt), _at(schedule.betas, t, xt)
    alpha_bar = _at(schedule.alpha_bars, t, xt)
    return (xt - _like(beta / (1 - alpha_bar).sqrt(), xt) * eps) / _like(alpha.sqrt(), xt)


def reverse_step(xt: torch.Tensor, t, eps: torch.Tensor, schedule: NoiseSchedule, kind: str = "beta",
                 noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One ancestral step :math:`x_{t-1} = \\mu_\\theta(x_t, t) + \\sigma_t z` from :math:`p_\\theta(x_{t-1} | x_t)`.

    Ho et al. (2020), eq. 11 and Algorithm 2 (lines 3-4): :math:`z \\sim N(0, I)` for t > 1 and
    z = 0 for t = 1; :math:`\\sigma_t^2` from :func:`reverse_variances` (``kind``).

    Args:
        xt: :math:`x_t`, ``(B, *shape)``.
        t: step(s) in 1..T.
        eps: predicted noise :math:`\\epsilon_\\theta(x_t, t)`, shaped like ``xt``.
        schedule: the noise schedule.
        kind: ``"beta"`` or ``"posterior"``.
        noise: optional z of ``xt``'s shape; drawn when None.
        generator: optional ``torch.Generator`` for that draw.

    Returns:
        :math:`x_{t-1}`, shaped like ``xt``.

    Raises:
        ValueError: as :func:`reverse_mean`, unknown ``kind``, ``noise`` of another shape.
    """
    mean = reverse_mean(xt, t, eps, schedule)
    t = _timesteps(t, xt, schedule)
    variances = reverse_variances(schedule, kind)
    variances[1] = 0.0  # Algorithm 2: z = 0 at t = 1
    return mean + _like(_at(variances, t, xt).sqrt(), xt) * _noise(noise, xt, generator)


@torch.no_grad()
def ddpm_sample(eps_model: EpsModel, x_T: torch.Tensor, schedule: NoiseSchedule, kind: str = "beta",
                generator: torch.Generator | None = None, progress: bool = True) -> torch.Tensor:
    """DDPM ancestral sampling :math:`x_T \\to x_{T-1} \\to \\dots \\to x_0` (Ho et al. 2020, Algorithm 2).

    :func:`reverse_step` for t = T..1: T calls of ``eps_model`` under ``torch.no_grad()``.

    Args:
        eps_model: ``eps_model(x_t, t) -> eps`` (e.g. a network, or :func:`optimal_epsilon` with
            the data's mixture parameters bound).
        x_T: the start, ``(B, *shape)``, normally ``torch.randn``; the samples follow its device and dtype.
        schedule: the noise schedule the model was trained with.
        kind: reverse variances, ``"beta"`` or ``"posterior"`` (:func:`reverse_variances`).
        generator: optional ``torch.Generator`` (on ``x_T``'s device) for the per-step noise.
        progress: show a tqdm bar.

    Returns:
        :math:`x_0`, shaped like ``x_T``.

    Raises:
        ValueError: ``x_T`` not a non-empty floating batch, unknown ``kind``, or ``eps_model``
            returning another shape.
    """
    _check_data("x_T", x_T)
    x = x_T
    for step in tqdm(range(schedule.T, 0, -1), desc="DDPM", disable=not progress):
        eps = _model_output("eps_model", eps_model(x, _batch_steps(step, x)), x)
        x = reverse_step(x, step, eps, schedule, kind, generator=generator)
    return x


def ddim_timesteps(T: int, n_steps: int) -> torch.Tensor:
    """Evenly spaced sub-sequence :math:`\\tau_i = \\lfloor iT/S \\rfloor`, i = 1..S, of the steps 1..T.

    The sub-sequence DDIM samples on (Song, Meng & Ermon 2021, sec. 4.2).

    Args:
        T: steps of the trained model.
        n_steps: S, the length of the sub-sequence, 1 <= S <= T.

    Returns:
        long tensor ``(S,)``, strictly increasing, ending at T.

    Raises:
        ValueError: ``T`` or ``n_steps`` not a positive integer, or ``n_steps`` > T.
    """
    _check_T(T)
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or not 1 <= n_steps <= T:
        raise ValueError(f"n_steps must be an integer in 1..T={T}, got {n_steps!r}")
    return torch.arange(1, n_steps + 1) * T // n_steps


def ddim_step(xt: torch.Tensor, t, t_prev, eps: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """Deterministic DDIM step from t to an earlier step s.

    :math:`x_s = \\sqrt{\\bar\\alpha_s}\\,\\hat x_0 + \\sqrt{1-\\bar\\alpha_s}\\,\\hat\\epsilon`: Song, Meng & Ermon
    (2021), eq. 12 with :math:`\\sigma_t = 0` (their :math:`\\alpha` is
    :math:`\\bar\\alpha` here), :math:`\\hat x_0` from :func:`predict_x0`. s = 0 returns :math:`\\hat x_0`.

    Args:
        xt: :math:`x_t`, ``(B, *shape)``.
        t: step(s) in 1..T.
        t_prev: the target step(s) s, 0 <= s < t (int or integer tensor ``(B,)``).
        eps: predicted noise :math:`\\epsilon_\\theta(x_t, t)`, shaped like ``xt``.
        schedule: the noise schedule.

    Returns:
        :math:`x_s`, shaped like ``xt``.

    Raises:
        ValueError: as :func:`predict_x0`; ``t_prev`` not integer, negative or not below ``t``.
    """
    x0 = predict_x0(xt, t, eps, schedule)
    t = _timesteps(t, xt, schedule)
    s = _timesteps(t_prev, xt, schedule, name="t_prev", low=0)
    if torch.any(s >= t):
        raise ValueError("t_prev must be smaller than t")
    alpha_bar = _at(schedule.alpha_bars, s, xt)
    return _like(alpha_bar.sqrt(), xt) * x0 + _like((1 - alpha_bar).sqrt(), xt) * eps


@torch.no_grad()
def ddim_sample(eps_model: EpsModel, x_T: torch.Tensor, schedule: NoiseSchedule, n_steps: int | None = None,
                progress: bool = True) -> torch.Tensor:
    """Deterministic DDIM sampling on the sub-sequence :func:`ddim_timesteps` (Song, Meng & Ermon 2021, eq. 12, σ = 0).

    :math:`x_{\\tau_S} = x_T \\to x_{\\tau_{S-1}} \\to \\dots \\to x_{\\tau_1} \\to x_0` with :func:`ddim_step`:
    S calls of ``eps_model`` under ``torch.no_grad()``; the same ``x_T`` always gives the same
    samples, and the model trained for DDPM is used unchanged.

    Args:
        eps_model: ``eps_model(x_t, t) -> eps``.
        x_T: the start, ``(B, *shape)``, normally ``torch.randn``; the samples follow its device and dtype.
        schedule: the noise schedule the model was trained with.
        n_steps: S (default T).
        progress: show a tqdm bar.

    Returns:
        :math:`x_0`, shaped like ``x_T``.

    Raises:
        ValueError: ``x_T`` not a non-empty floating batch, ``n_steps`` not in 1..T, or ``eps_model``
            returning another shape.
    """
    _check_data("x_T", x_T)
    taus = ddim_timesteps(schedule.T, schedule.T if n_steps is None else n_steps).tolist()
    x = x_T
    for step, previous in tqdm(list(zip(taus[::-1], taus[-2::-1] + [0])), desc="DDIM", disable=not progress):
        eps = _model_output("eps_model", eps_model(x, _batch_steps(step, x)), x)
        x = ddim_step(x, step, previous, eps, schedule)
    return x


# ----------------------------------------------------------------------------- objectives
def elbo_weights(schedule: NoiseSchedule, kind: str = "beta") -> torch.Tensor:
    """Per-step weights that turn L_simple into the ELBO's terms (Ho et al. 2020, eq. 12).

    :math:`w_t = \\frac{\\beta_t^2}{2\\sigma_t^2\\alpha_t(1-\\bar\\alpha_t)}`. The ELBO's term for step t > 1 is
    a KL between Gaussians (eqs. 5 and 8); with
    :math:`x_t = \\sqrt{\\bar\\alpha_t}x_0 + \\sqrt{1-\\bar\\alpha_t}\\epsilon` and the means of
    eqs. 10-11 it is

    .. math:: L_{t-1} = \\mathrm{KL}\\big(q(x_{t-1}|x_t,x_0)\\,\\|\\,p_\\theta(x_{t-1}|x_t)\\big)
              = w_t\\,\\|\\epsilon - \\epsilon_\\theta(x_t, t)\\|^2 + C_t,
              \\qquad C_t = \\tfrac{d}{2}\\big(\\tfrac{\\tilde\\beta_t}{\\sigma_t^2} - 1
              - \\log\\tfrac{\\tilde\\beta_t}{\\sigma_t^2}\\big),

    d the data dimension. For t = 1 the same :math:`w_1` weighs the decoder term
    :math:`-\\log N(x_0; \\mu_\\theta(x_1, 1), \\sigma_1^2 I) = w_1\\|\\epsilon - \\epsilon_\\theta\\|^2
    + \\frac d2\\log(2\\pi\\sigma_1^2)` (a Gaussian decoder in place of the discretised one of eq. 13).
    Hence :func:`epsilon_loss` with ``weights=elbo_weights(schedule)`` times T, plus
    :math:`\\sum_t C_t` and :math:`L_T`, is the negative ELBO (nats). L_simple (eq. 14) sets every
    :math:`w_t` to 1: for the linear schedule :math:`w_t` falls from about 1/2 at t = 1 to about
    0.01 at t = T, so L_simple down-weights the small-t terms relative to the ELBO (Ho et al., sec. 3.4).

    Args:
        schedule: the noise schedule.
        kind: the reverse variances :math:`\\sigma_t^2`, ``"beta"`` or ``"posterior"`` (:func:`reverse_variances`).

    Returns:
        float64 CPU tensor ``(T + 1,)``, nats per unit of squared error; entry t is :math:`w_t`, entry 0 is 0.

    Raises:
        ValueError: unknown ``kind``.
    """
    variances = reverse_variances(schedule, kind)
    weights = torch.zeros_like(variances)
    betas, alphas, alpha_bars = schedule.betas[1:], schedule.alphas[1:], schedule.alpha_bars[1:]
    weights[1:] = betas ** 2 / (2 * variances[1:] * alphas * (1 - alpha_bars))
    return weights


def epsilon_loss(eps_model: EpsModel, x0: torch.Tensor, schedule: NoiseSchedule, t=None, weights=None,
                 noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise-prediction loss, L_simple or, with weights, the ELBO.

    :math:`E_{t, \\epsilon}\\big[w_t\\|\\epsilon - \\epsilon_\\theta(\\sqrt{\\bar\\alpha_t}x_0
    + \\sqrt{1-\\bar\\alpha_t}\\epsilon, t)\\|^2\\big]`: Ho et al. (2020), eq. 14 (L_simple, :math:`w_t = 1`,
    t uniform on 1..T, Algorithm 1); with
    ``weights=elbo_weights(schedule)`` it is the ELBO's reweighting of eq. 12 (see
    :func:`elbo_weights` for the link). The squared norm is summed over the data dimensions, the
    ELBO's convention (``F.mse_loss`` averages instead: a factor ``prod(shape)`` smaller).

    Args:
        eps_model: ``eps_model(x_t, t) -> eps``; gradients flow into it.
        x0: data ``(B, *shape)``.
        schedule: the noise schedule.
        t: optional step(s) in 1..T (int or ``(B,)``); drawn uniformly per sample when None.
        weights: optional ``(T + 1,)`` non-negative weights indexed by t (e.g. :func:`elbo_weights`); all 1 when None.
        noise: optional :math:`\\epsilon` of ``x0``'s shape; drawn when None.
        generator: optional ``torch.Generator`` (on ``x0``'s device) for t and :math:`\\epsilon`.

    Returns:
        scalar tensor, the batch mean; a squared error (nats when weighted by :func:`elbo_weights`).

    Raises:
        ValueError: ``x0`` not a non-empty floating batch, ``t`` outside 1..T, ``noise`` of another
            shape, ``weights`` not ``(T + 1,)`` finite and non-negative, or ``eps_model`` returning another shape.
    """
    _check_data("x0", x0)
    if t is None:
        t = torch.randint(1, schedule.T + 1, (len(x0),), generator=generator, device=x0.device)
    t = _timesteps(t, x0, schedule)
    noise = _noise(noise, x0, generator)
    eps = _model_output("eps_model", eps_model(q_sample(x0, t, schedule, noise), _batch_steps(t, x0)), x0)
    squared_error = (noise - eps).pow(2).flatten(1).sum(1)
    if weights is not None:
        weights = torch.as_tensor(weights, dtype=torch.float64).detach().cpu()
        if weights.shape != (schedule.T + 1,) or not torch.all(torch.isfinite(weights) & (weights >= 0)):
            raise ValueError(f"weights must be a finite non-negative tensor of shape ({schedule.T + 1},), "
                             f"got shape {tuple(weights.shape)}")
        squared_error = _like(weights[t], squared_error) * squared_error
    return squared_error.mean()


def _noise_levels(sigmas, decreasing: bool = False) -> torch.Tensor:
    levels = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu().reshape(-1)
    if len(levels) == 0 or not torch.all(torch.isfinite(levels) & (levels > 0)):
        raise ValueError(f"sigmas must be one or more finite positive noise levels, got {sigmas!r}")
    if decreasing and not torch.all(levels[1:] < levels[:-1]):
        raise ValueError("sigmas must be strictly decreasing (annealing goes from large to small noise)")
    return levels


def dsm_loss(score_model: ScoreModel, x: torch.Tensor, sigmas, generator: torch.Generator | None = None
             ) -> torch.Tensor:
    """Noise-conditional denoising score matching, :math:`\\frac12 E\\|\\sigma s_\\theta(\\tilde x, \\sigma) + z\\|^2`.

    Song & Ermon (2019), "Generative Modeling by Estimating Gradients of the Data Distribution",
    NeurIPS, eqs. 2 and 5-6: each sample gets a level σ drawn uniformly from ``sigmas``,
    :math:`\\tilde x = x + \\sigma z`, and the target is the score of the noising kernel,
    :math:`\\nabla_{\\tilde x}\\log N(\\tilde x; x, \\sigma^2 I) = -(\\tilde x - x)/\\sigma^2 = -z/\\sigma`;
    the weight :math:`\\lambda(\\sigma) = \\sigma^2` gives :math:`\\frac12\\sigma^2\\|s_\\theta + z/\\sigma\\|^2`.
    Vincent (2011), "A Connection Between Score Matching and Denoising Autoencoders" (the DSM
    objective): per level, the loss is :math:`\\frac{\\sigma^2}{2} E\\|s_\\theta(\\tilde x, \\sigma)
    - \\nabla\\log q_\\sigma(\\tilde x)\\|^2` plus a constant free of θ, so it is minimised by the
    score of the noised data :math:`q_\\sigma = p * N(0, \\sigma^2 I)` (:func:`noised_mixture_score`
    for a mixture). One level gives σ² times Vincent's objective.

    Args:
        score_model: ``score_model(x_noisy, sigma) -> score`` with ``sigma`` ``(B,)``; gradients flow into it.
        x: data ``(B, *shape)``.
        sigmas: a positive float or a 1-D tensor of levels ``(L,)``.
        generator: optional ``torch.Generator`` (on ``x``'s device) for the levels and the noise.

    Returns:
        scalar tensor (squared error, batch mean, summed over data dimensions).

    Raises:
        ValueError: ``x`` not a non-empty floating batch, non-positive or non-finite ``sigmas``,
            ``score_model`` returning another shape.
    """
    _check_data("x", x)
    levels = _noise_levels(sigmas)
    index = torch.randint(len(levels), (len(x),), generator=generator, device=x.device)
    sigma = _like(levels, x)[index]
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    sigma_b = sigma.reshape(-1, *([1] * (x.dim() - 1)))
    score = _model_output("score_model", score_model(x + sigma_b * z, sigma), x)
    return 0.5 * (sigma_b * score + z).pow(2).flatten(1).sum(1).mean()


# ------------------------------------------------------------------ score-based sampling
def geometric_noise_levels(sigma_max: float = 1.0, sigma_min: float = 0.01, n_levels: int = 10) -> torch.Tensor:
    """Geometric sequence of noise levels :math:`\\sigma_1 = \\sigma_{max} > \\dots > \\sigma_L = \\sigma_{min}`.

    Song & Ermon (2019), sec. 4.1; their experiments use 1 to 0.01 with L = 10.

    Returns:
        float64 CPU tensor ``(L,)``, strictly decreasing.

    Raises:
        ValueError: ``n_levels`` < 2, or not ``sigma_max > sigma_min > 0``.
    """
    if isinstance(n_levels, bool) or not isinstance(n_levels, int) or n_levels < 2:
        raise ValueError(f"n_levels must be an integer >= 2, got {n_levels!r}")
    if not sigma_max > sigma_min > 0:
        raise ValueError(f"need sigma_max > sigma_min > 0, got {sigma_max!r} and {sigma_min!r}")
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), n_levels, dtype=torch.float64))


@torch.no_grad()
def langevin_dynamics(score_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, step_size: float,
                      n_steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Unadjusted Langevin dynamics.

    :math:`x \\leftarrow x + \\frac{\\epsilon}{2}\\nabla_x\\log p(x) + \\sqrt{\\epsilon}\\,z`, z ~ N(0, I):
    Song & Ermon (2019), eq. 4 (Welling & Teh 2011). For small ε and many steps x approaches
    p; for finite ε the chain is biased: for :math:`p = N(\\mu, s^2 I)` its stationary law is
    :math:`N(\\mu, s^2/(1 - \\epsilon/(4s^2))\\,I)`. ``score_fn`` runs under ``torch.no_grad()``
    (wrap its body in ``torch.enable_grad()`` if it differentiates a log-density).

    Args:
        score_fn: ``score_fn(x) -> grad log p(x)``, shaped like ``x``.
        x: starting points ``(B, *shape)``.
        step_size: ε > 0 (squared data units).
        n_steps: number of updates, >= 1.
        generator: optional ``torch.Generator`` (on ``x``'s device) for z.

    Returns:
        the final points, shaped like ``x``.

    Raises:
        ValueError: ``x`` not a non-empty floating batch, ``step_size`` <= 0, ``n_steps`` < 1, or
            ``score_fn`` returning another shape.
    """
    _check_data("x", x)
    if not (step_size > 0 and math.isfinite(step_size)):
        raise ValueError(f"step_size must be positive, got {step_size!r}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    for _ in range(n_steps):
        score = _model_output("score_fn", score_fn(x), x)
        x = x + step_size / 2 * score + math.sqrt(step_size) * _noise(None, x, generator)
    return x


def annealed_langevin_dynamics(score_model: ScoreModel, x: torch.Tensor, sigmas, step_size: float = 2e-5,
                               n_steps_each: int = 100, generator: torch.Generator | None = None,
                               progress: bool = True) -> torch.Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

    For each level :math:`\\sigma_i` from the largest to the smallest, ``n_steps_each`` steps of
    :func:`langevin_dynamics` with the score :math:`s(\\cdot, \\sigma_i)` and step
    :math:`\\alpha_i = \\epsilon\\,\\sigma_i^2/\\sigma_L^2`. The output approximates the data
    noised at the smallest level, :math:`p * N(0, \\sigma_L^2 I)` (no final denoising step).

    Args:
        score_model: ``score_model(x, sigma) -> score`` with ``sigma`` ``(B,)``.
        x: starting points ``(B, *shape)`` (Song & Ermon start from uniform noise).
        sigmas: strictly decreasing positive levels ``(L,)`` (e.g. :func:`geometric_noise_levels`).
        step_size: ε, the step at the smallest level (paper: 2e-5).
        n_steps_each: steps per level (paper: 100).
        generator: optional ``torch.Generator`` (on ``x``'s device).
        progress: show a tqdm bar over the levels.

    Returns:
        the final points, shaped like ``x``.

    Raises:
        ValueError: ``sigmas`` not positive, finite and strictly decreasing, or as :func:`langevin_dynamics`.
    """
    _check_data("x", x)
    levels = _noise_levels(sigmas, decreasing=True)
    for level in tqdm(levels.tolist(), desc="annealed Langevin", disable=not progress):
        sigma = torch.full((len(x),), level, device=x.device, dtype=x.dtype)
        x = langevin_dynamics(lambda y: score_model(y, sigma), x, step_size * level ** 2 / levels[-1].item() ** 2,
                              n_steps_each, generator)
    return x


# ---------------------------------------------------------- exact scores of toy mixtures
def _mixture_parameters(x: torch.Tensor, means: torch.Tensor, sigmas, weights
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checked ``(means (K, d), variances (K,), log_weights (K,))`` in ``x``'s dtype and device."""
    if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() != 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty floating tensor (N, d), got {getattr(x, 'shape', x)}")
    if not torch.is_tensor(means) or means.dim() != 2 or means.shape[0] < 1 or means.shape[1] != x.shape[1]:
        raise ValueError(f"means must be a tensor (K, {x.shape[1]}) with K >= 1, got {getattr(means, 'shape', means)}")
    k = len(means)
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu()
    if sigmas.dim() == 0:
        sigmas = sigmas.expand(k)
    if sigmas.shape != (k,) or not torch.all(torch.isfinite(sigmas) & (sigmas > 0)):
        raise ValueError(f"sigmas must be a positive float or a positive tensor ({k},), got {sigmas}")
    if weights is None:
        weights = torch.full((k,), 1.0 / k, dtype=torch.float64)
    weights = torch.as_tensor(weights, dtype=torch.float64).detach().cpu()
    if weights.shape != (k,) or torch.any(weights < 0) or abs(weights.sum().item() - 1) > 1e-5:
        raise ValueError(f"weights must be ({k},), non-negative and sum to 1, got {weights}")
    return means.to(x), _like(sigmas ** 2, x), _like(weights.log(), x)


def _mixture_score(x: torch.Tensor, means: torch.Tensor, variances: torch.Tensor,
                   log_weights: torch.Tensor) -> torch.Tensor:
    """Score of :math:`\\sum_k w_k N(\\mu_k, v_k I)`; means (K, d) or (N, K, d), variances (K,) or (N, K)."""
    diff = means - x.unsqueeze(-2)  # (N, K, d)
    log_joint = log_weights - 0.5 * diff.pow(2).sum(-1) / variances - 0.5 * x.shape[-1] * variances.log()
    responsibilities = torch.softmax(log_joint, dim=-1)  # p(k | x), (N, K)
    return (responsibilities.unsqueeze(-1) * diff / variances.unsqueeze(-1)).sum(-2)


def mixture_score(x: torch.Tensor, means: torch.Tensor, sigmas, weights=None) -> torch.Tensor:
    """Exact score of an isotropic Gaussian mixture :math:`p = \\sum_k w_k N(\\mu_k, \\sigma_k^2 I)`.

    :math:`\\nabla_x\\log p(x) = \\sum_k p(k|x)\\,(\\mu_k - x)/\\sigma_k^2`, the gradient of
    :math:`\\log\\sum_k w_k N(x; \\mu_k, \\sigma_k^2 I)`: each component's score
    :math:`(\\mu_k - x)/\\sigma_k^2` weighted by its responsibility :math:`p(k|x)` (a softmax, so
    it stays finite far from every mode). For the course's toy data pass ``gan.ring_means()``
    with ``gan.RING_SIGMA`` or ``gan.grid_means()`` with ``gan.GRID_SIGMA``.

    Args:
        x: points ``(N, d)``.
        means: :math:`\\mu_k`, ``(K, d)``.
        sigmas: :math:`\\sigma_k`, a positive float (shared) or tensor ``(K,)``.
        weights: :math:`w_k`, ``(K,)`` non-negative summing to 1; equal when None.

    Returns:
        ``(N, d)``, in x's dtype and device (units 1/x).

    Raises:
        ValueError: ``x`` not floating ``(N, d)``, ``means`` not ``(K, d)``, non-positive ``sigmas``,
            ``weights`` of the wrong shape, negative or not summing to 1.
    """
    means, variances, log_weights = _mixture_parameters(x, means, sigmas, weights)
    return _mixture_score(x, means, variances, log_weights)


def noised_mixture_score(x: torch.Tensor, noise_sigma, means: torch.Tensor, sigmas, weights=None) -> torch.Tensor:
    """Exact score of the mixture convolved with :math:`N(0, \\sigma^2 I)`.

    :func:`mixture_score` with :math:`\\sigma_k^2 \\to \\sigma_k^2 + \\sigma^2`.

    The noised data :math:`q_\\sigma = p * N(0, \\sigma^2 I)` of denoising score matching
    (Vincent 2011; Song & Ermon 2019, sec. 4.1) is again a mixture, with the same means and
    weights; this is the minimiser of :func:`dsm_loss` at level σ.

    Args:
        x: points ``(N, d)``.
        noise_sigma: σ >= 0, a float or a tensor ``(N,)`` (one level per point, as score models receive it).
        means, sigmas, weights: the clean mixture, as in :func:`mixture_score`.

    Returns:
        ``(N, d)``, in x's dtype and device.

    Raises:
        ValueError: as :func:`mixture_score`; ``noise_sigma`` negative, non-finite or not a scalar or ``(N,)``.
    """
    means, variances, log_weights = _mixture_parameters(x, means, sigmas, weights)
    noise_sigma = torch.as_tensor(noise_sigma, dtype=x.dtype, device=x.device)
    if noise_sigma.shape not in ((), (len(x),)) or not torch.all(torch.isfinite(noise_sigma) & (noise_sigma >= 0)):
        raise ValueError(f"noise_sigma must be a non-negative float or tensor ({len(x)},), "
                         f"got shape {tuple(noise_sigma.shape)}")
    noised_variances = variances + noise_sigma.reshape(-1, 1) ** 2  # (1 or N, K)
    return _mixture_score(x, means, noised_variances, log_weights)


def optimal_epsilon(xt: torch.Tensor, t, schedule: NoiseSchedule, means: torch.Tensor, sigmas,
                    weights=None) -> torch.Tensor:
    """The exact minimiser of L_simple for mixture data, :math:`\\epsilon^*(x_t, t) = E[\\epsilon | x_t]`.

    :math:`\\epsilon^* = -\\sqrt{1-\\bar\\alpha_t}\\,\\nabla\\log q_t(x_t)`.

    For :math:`x_0 \\sim \\sum_k w_k N(\\mu_k, \\sigma_k^2 I)` the marginal
    :math:`q_t(x_t) = \\int q(x_t|x_0)p(x_0)dx_0` (Ho et al. 2020, eq. 4) is the mixture with means
    :math:`\\sqrt{\\bar\\alpha_t}\\mu_k` and variances :math:`\\bar\\alpha_t\\sigma_k^2 + 1 - \\bar\\alpha_t`.
    The squared-error minimiser is the conditional mean :math:`E[\\epsilon | x_t]`, which Tweedie's
    formula (Efron 2011, "Tweedie's Formula and Selection Bias", JASA, sec. 1) turns into the score:
    :math:`E[\\sqrt{\\bar\\alpha_t}x_0 | x_t] = x_t + (1-\\bar\\alpha_t)\\nabla\\log q_t(x_t)`. This is
    the link between ε-prediction and score matching noted by Ho et al. (2020, sec. 3.2).
    Use it as an ``eps_model``: ``lambda x, t: optimal_epsilon(x, t, schedule, means, sigma)``.

    Args:
        xt: :math:`x_t`, ``(B, d)``.
        t: step(s) in 1..T (int or integer tensor ``(B,)``).
        schedule: the noise schedule.
        means, sigmas, weights: the data mixture, as in :func:`mixture_score`.

    Returns:
        ``(B, d)``, in xt's dtype and device (dimensionless, like ε).

    Raises:
        ValueError: as :func:`mixture_score`; ``t`` not integer or outside 1..T.
    """
    means, variances, log_weights = _mixture_parameters(xt, means, sigmas, weights)
    t = _timesteps(t, xt, schedule)
    alpha_bar = _at(schedule.alpha_bars, t, xt)  # (B or 1, 1)
    signal, noise_var = _like(alpha_bar, xt), _like(1 - alpha_bar, xt)
    score = _mixture_score(xt, signal.sqrt().unsqueeze(-1) * means, signal * variances + noise_var, log_weights)
    return -noise_var.sqrt() * score


# ----------------------------------------------------------------------------- a small network and its training

class EpsMLP(nn.Module):
    """A noise-prediction network :math:`\\epsilon_\\theta(x_t, t)`: an MLP on ``[x_t, embedding(t)]``.

    The step enters through a sinusoidal embedding (Vaswani et al. 2017, Sec. 3.5, as in Ho et al.
    2020, Appendix B): ``emb // 2`` frequencies spaced geometrically from 1 to 1000 applied to
    ``t / T``, as sines and cosines. The image or point is flattened, so the network has no notion of
    neighbouring pixels (Ho et al. use a U-Net; this is the CPU-sized stand-in of lecture 11).

    Args:
        shape: the shape of one data point, e.g. ``(2,)`` or ``(1, 14, 14)``.
        T: number of diffusion steps of the schedule (scales ``t`` to ``[0, 1]``).
        hidden: width of the hidden layers; ``n_layers``: their number (ReLU).
        emb: size of the time embedding, even.

    ``forward(x, t)``: ``x (B, *shape)``, ``t (B,)`` integer steps -> ``(B, *shape)``.

    Raises:
        ValueError: a size not a positive integer, ``emb`` odd, or (in ``forward``) ``x`` not
            ``(B, *shape)`` or ``t`` not ``(B,)``.
    """

    def __init__(self, shape, T: int, hidden: int = 128, n_layers: int = 4, emb: int = 32):
        super().__init__()
        self.shape = tuple(int(n) for n in shape)
        for name, value in [("T", T), ("hidden", hidden), ("n_layers", n_layers), ("emb", emb), *(
                (f"shape[{i}]", n) for i, n in enumerate(self.shape))]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if emb % 2:
            raise ValueError(f"emb must be even (sines and cosines), got {emb}")
        self.T, d = T, math.prod(self.shape)
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(1000), emb // 2)))
        layers, width = [], d + emb
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, d))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.ndim != len(self.shape) + 1 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.shape))}), got {tuple(x.shape)}")
        if t.shape != (len(x),):
            raise ValueError(f"t must have shape ({len(x)},), got {tuple(t.shape)}")
        angle = (t.float() / self.T).unsqueeze(1) * self.freqs
        h = torch.cat([x.flatten(1), torch.sin(angle), torch.cos(angle)], 1)
        return self.net(h).view(-1, *self.shape)


def train_epsilon_model(model: nn.Module, sample_batch: Callable[[], torch.Tensor], schedule: NoiseSchedule,
                        steps: int, lr: float = 2e-3, ema_decay: float | None = None, progress: bool = True,
                        desc: str = "L_simple") -> list[float]:
    """Ho et al. (2020), Algorithm 1: Adam on :func:`epsilon_loss` (L_simple), learning rate decayed
    linearly from ``lr`` to 0 over ``steps``; optionally an exponential moving average of the weights.

    With ``ema_decay`` = γ the model ends with the average :math:`\\bar\\theta \\leftarrow \\gamma\\bar\\theta
    + (1-\\gamma)\\theta` updated after every step, in place of the last iterate (Ho et al. 2020, Appendix B,
    γ = 0.9999 for their long runs): it averages out the noise of the last steps.

    Args:
        model: the ε-network (e.g. :class:`EpsMLP`), trained in place on its own device.
        sample_batch: called once per step, returns a fresh data batch ``(B, *shape)`` on the model's device.
        schedule: the noise schedule.
        steps: number of Adam steps, positive integer; ``lr``: the initial learning rate, > 0.
        ema_decay: None (keep the last iterate) or γ in [0, 1).
        progress: show a tqdm bar (titled ``desc``).

    Returns:
        the loss of every step (squared error summed over the data dimensions, batch mean).

    Raises:
        ValueError: ``steps`` not a positive integer, ``lr`` <= 0 or ``ema_decay`` outside [0, 1); as
            :func:`epsilon_loss` for bad batches.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if ema_decay is not None and not 0 <= ema_decay < 1:
        raise ValueError(f"ema_decay must be None or in [0, 1), got {ema_decay!r}")
    model.train()
    average = None if ema_decay is None else [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1 - i / steps)
    losses = []
    for _ in tqdm(range(steps), desc=desc, disable=not progress):
        loss = epsilon_loss(model, sample_batch(), schedule)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        decay.step()
        losses.append(loss.item())
        if average is not None:
            with torch.no_grad():
                for a, p in zip(average, model.parameters()):
                    a.lerp_(p, 1 - ema_decay)
    if average is not None:
        with torch.no_grad():
            for a, p in zip(average, model.parameters()):
                p.copy_(a)
    model.eval()
    return losses


# ----------------------------------------------------------------------------- latent diffusion
@torch.no_grad()
def encode_latents(vae: nn.Module, x: torch.Tensor, batch_size: int = 1000
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The data for a latent diffusion model (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
    Diffusion Models", sec. 3): a trained VAE's encoder means, standardised coordinate by coordinate,
    :math:`\mathbf u = (\boldsymbol\mu_\phi(\mathbf x) - \mathbf m) / \mathbf s`, so that the forward process,
    which ends at :math:`\mathcal N(0, I)`, starts from data of unit scale (Rombach et al. rescale by the latents'
    standard deviation, their sec. 4.3.2 and appendix G).

    Args:
        vae: a :class:`dgmcourse.vae.VAE` (``encode(x) -> (mu, logvar)``), run in eval mode on its own device;
            its training mode is restored afterwards.
        x: images ``(N, *x_shape)``, N >= 2.
        batch_size: images encoded at once.

    Returns:
        ``(u, m, s)``: ``u`` ``(N, z_dim)`` with mean 0 and standard deviation 1 in every coordinate, on the VAE's
        device; ``m`` and ``s`` ``(z_dim,)``, the means' mean and standard deviation (:func:`decode_latents`
        inverts the map).

    Raises:
        ValueError: fewer than 2 images, ``batch_size`` < 1, a coordinate of the means that is constant (no
            scale to divide by), or as ``vae.encode`` for images of the wrong shape.
    """
    if len(x) < 2:
        raise ValueError(f"x must hold at least 2 images, got {len(x)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    mu = encoder_means(vae, x, batch_size)
    m, s = mu.mean(0), mu.std(0)
    if not (s > 0).all():
        raise ValueError(f"latent coordinates {torch.nonzero(s <= 0).flatten().tolist()} are constant over x: "
                         "cannot standardise them")
    return (mu - m) / s, m, s


@torch.no_grad()
def decode_latents(vae: nn.Module, u: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    r"""Images from standardised latent codes: the VAE's mean image :math:`\mathbb E[\mathbf x \mid \mathbf z]`
    at :math:`\mathbf z = \mathbf m + \mathbf s \odot \mathbf u` (the inverse of :func:`encode_latents`;
    Rombach et al. 2022, sec. 3: a sample of the latent diffusion model is decoded once).

    Args:
        vae: the VAE whose encoder gave ``m`` and ``s`` (``mean_image(z) -> (B, *x_shape)``), in eval mode while
            decoding; its training mode is restored afterwards.
        u: ``(B, z_dim)`` standardised codes, e.g. :func:`ddim_sample` of a model trained on
            :func:`encode_latents`'s ``u``; ``m``, ``s``: ``(z_dim,)`` from :func:`encode_latents`.

    Returns:
        ``(B, *x_shape)`` images on the VAE's device (values in [0, 1] for a Bernoulli decoder).

    Raises:
        ValueError: ``u`` not ``(B, z_dim)`` or ``m``, ``s`` not ``(z_dim,)``.
    """
    if u.ndim != 2 or m.shape != (u.shape[1],) or s.shape != (u.shape[1],):
        raise ValueError(f"need u (B, z_dim) and m, s (z_dim,); got {tuple(u.shape)}, {tuple(m.shape)}, "
                         f"{tuple(s.shape)}")
    device, was_training = next(vae.parameters()).device, vae.training
    vae.eval()
    try:
        return vae.mean_image((u.to(device) * s.to(device) + m.to(device)))
    finally:
        vae.train(was_training)
