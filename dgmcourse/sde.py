"""Score-based generative modelling with SDEs: VP and VE SDEs, reverse-time samplers, the probability-flow ODE and
its exact likelihood.

Notation of Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole (2021), "Score-Based Generative Modeling through
Stochastic Differential Equations", ICLR: data at **t = 0**, noise at **t = T = 1** (the diffusion convention of
:mod:`dgmcourse.diffusion`; flow matching, :mod:`dgmcourse.flow_matching`, runs the other way). The forward SDE

.. math:: dx = f(x, t)\\,dt + g(t)\\,dw \\qquad \\text{(eq. 5)}

has the reverse-time SDE :math:`dx = [f(x, t) - g(t)^2\\nabla_x\\log p_t(x)]\\,dt + g(t)\\,d\\bar w` (eq. 6) and the
probability-flow ODE :math:`dx/dt = f(x, t) - \\frac12 g(t)^2\\nabla_x\\log p_t(x)` (eq. 13) with the same marginals
:math:`p_t`. For the linear drifts used here the transition :math:`p_{0t}(x_t | x_0)` is
:math:`N(m(t)\\,x_0, s(t)^2 I)` (App. B).

Conventions used by every function here:

* A time argument ``t`` lies in [0, T]: a Python float (one time for the whole batch) or a floating tensor ``()``
  or ``(B,)``. Coefficients are computed in float64 on the CPU and cast to the data's dtype and device.
* Data tensors are ``(B, *shape)``; a score model is called as ``score_fn(x, t)`` with ``t`` a ``(B,)`` tensor in
  ``x``'s dtype on ``x``'s device and returns a tensor shaped like ``x`` (units 1/x).
* Randomness comes from an optional ``torch.Generator``, which must live on the data's device.
* Mixtures are isotropic Gaussian mixtures given as in :func:`dgmcourse.diffusion.mixture_score`.

Contents

* SDEs: :class:`SDE` (the interface), :class:`VPSDE` (eq. 11; DDPM is its discretisation, eq. 10:
  :meth:`VPSDE.discretize`, :meth:`VPSDE.from_schedule`), :class:`VESDE` (eq. 9; SMLD's, eq. 8).
* Exact scores and densities of the diffused toy mixtures: :func:`mixture_marginal_score`,
  :func:`mixture_marginal_log_prob`.
* Samplers: :func:`euler_maruyama` (any SDE, either direction), :func:`reverse_sde_drift`,
  :func:`reverse_sde_sample`, :func:`langevin_corrector_step`, :func:`pc_sample` (predictor-corrector).
* Probability flow and likelihood: :func:`probability_flow_drift`, :func:`exact_divergence`,
  :func:`hutchinson_divergence`, :func:`ode_log_likelihood` (the instantaneous change of variables, Chen et al.
  2018; Grathwohl et al. 2019), :func:`pf_ode_log_likelihood`. Sample the probability-flow ODE with
  :func:`dgmcourse.flow_matching.heun_sample` from t = T to t = ε.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import tqdm

from dgmcourse.flow_matching import _check_time_interval
from dgmcourse.diffusion import (NoiseSchedule, _check_data, _like, _mixture_parameters, _model_output,
                                 linear_schedule, schedule_from_betas)

__all__ = [
    "SDE", "VPSDE", "VESDE", "mixture_marginal_score", "mixture_marginal_log_prob", "euler_maruyama",
    "reverse_sde_drift", "reverse_sde_sample", "langevin_corrector_step", "pc_sample", "probability_flow_drift",
    "exact_divergence", "hutchinson_divergence", "ode_log_likelihood", "pf_ode_log_likelihood",
]

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_METHODS = ("euler", "heun")
_DIVERGENCES = ("exact", "hutchinson")
_PROBES = ("rademacher", "gaussian")


# ------------------------------------------------------------------------------- helpers
def _times(t, T: float, name: str = "t") -> torch.Tensor:
    """``t`` as a float64 CPU tensor ``()`` or ``(B,)``, checked to lie in [0, T]."""
    if isinstance(t, bool) or not (isinstance(t, (int, float)) or (torch.is_tensor(t) and t.is_floating_point())):
        raise ValueError(f"{name} must be a float or a floating tensor of times in [0, {T}], got {t!r}")
    t = torch.as_tensor(t, dtype=torch.float64).detach().cpu()
    if t.dim() > 1 or not torch.all(torch.isfinite(t) & (t >= 0) & (t <= T)):
        raise ValueError(f"{name} must be a scalar or a 1-D tensor of times in [0, {T}], got {t}")
    return t


def _times_for(t, x: torch.Tensor, T: float) -> torch.Tensor:
    t = _times(t, T)
    if t.shape not in ((), (len(x),)):
        raise ValueError(f"t must be a scalar or have shape ({len(x)},), got {tuple(t.shape)}")
    return t


def _col(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """float64 ``()`` or ``(B,)`` coefficients as ``(B or 1, 1, ..., 1)`` in ``x``'s dtype and device."""
    return _like(values.reshape(-1, *([1] * (x.dim() - 1))), x)


def _batch_times(t, x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(len(x))


def _check_steps(n_steps, name: str = "n_steps") -> None:
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"{name} must be a positive integer, got {n_steps!r}")


def _check_sde(sde) -> None:
    if not isinstance(sde, SDE):
        raise ValueError(f"sde must be an SDE (VPSDE, VESDE), got {type(sde).__name__}")


def _check_eps(eps: float, T: float) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < T:
        raise ValueError(f"eps must be a float in [0, {T}), the time the sampler stops at, got {eps!r}")


def _standard_normal_log_prob(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    d = x[0].numel()
    return (-0.5 * x.flatten(1).pow(2).sum(1) / scale ** 2 - d * math.log(scale)
            - 0.5 * d * math.log(2 * math.pi))


# ---------------------------------------------------------------------------------- SDEs
class SDE:
    """A forward SDE :math:`dx = f(x, t)dt + g(t)dw` on [0, T] with Gaussian transitions (Song et al. 2021, eq. 5).

    Subclasses give the drift :math:`f`, the diffusion :math:`g` and the transition
    :math:`p_{0t}(x_t | x_0) = N(m(t)x_0, s(t)^2 I)` through :meth:`scale_std`; the base class builds the rest.
    Use :class:`VPSDE` or :class:`VESDE`.

    Attributes:
        T: the time horizon (1.0).
    """

    T: float = 1.0

    def scale_std(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`(m(t), s(t))` of the transition, float64 CPU tensors shaped like ``t``.

        Raises:
            ValueError: ``t`` not a float or floating tensor in [0, T].
        """
        raise NotImplementedError

    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        """The drift :math:`f(x, t)`, shaped like ``x`` (data units per unit time).

        Raises:
            ValueError: ``x`` not a non-empty floating batch; ``t`` outside [0, T] or not a scalar or ``(B,)``.
        """
        raise NotImplementedError

    def diffusion(self, t) -> torch.Tensor:
        """The diffusion coefficient :math:`g(t)`, a float64 CPU tensor shaped like ``t`` (data units per √time).

        Raises:
            ValueError: ``t`` not a float or floating tensor in [0, T].
        """
        raise NotImplementedError

    def marginal_mean_std(self, x0: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of :math:`p_{0t}(x_t | x_0) = N(m(t)x_0, s(t)^2 I)` (Song et al. 2021, App. B).

        Args:
            x0: data ``(B, *shape)``.
            t: time(s) in [0, T] (float or ``(B,)``).

        Returns:
            ``(mean, std)``: the mean shaped like ``x0``, the std ``(B or 1, 1, ..., 1)``, in x0's dtype and device.

        Raises:
            ValueError: ``x0`` not a non-empty floating batch; ``t`` outside [0, T] or not a scalar or ``(B,)``.
        """
        _check_data("x0", x0)
        scale, std = self.scale_std(_times_for(t, x0, self.T))
        return _col(scale, x0) * x0, _col(std, x0)

    def marginal_sample(self, x0: torch.Tensor, t, noise: torch.Tensor | None = None,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw :math:`x_t = m(t)x_0 + s(t)z` from :math:`p_{0t}(x_t | x_0)`, z ~ N(0, I) (the noising of
        denoising score matching, Song et al. 2021, eq. 7).

        Args:
            x0: data ``(B, *shape)``; t: time(s) in [0, T];
            noise: optional z of ``x0``'s shape; drawn when None; generator: optional ``torch.Generator`` for it.

        Returns:
            :math:`x_t`, shaped like ``x0``.

        Raises:
            ValueError: as :meth:`marginal_mean_std`; ``noise`` of another shape.
        """
        mean, std = self.marginal_mean_std(x0, t)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        elif not torch.is_tensor(noise) or noise.shape != x0.shape:
            raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, "
                             f"got {tuple(getattr(noise, 'shape', ()))}")
        return mean + std * noise

    def prior_std(self) -> float:
        """Standard deviation of the prior :math:`p_T = N(0, \\sigma_T^2 I)` the samplers start from."""
        raise NotImplementedError

    def prior_sample(self, shape, generator: torch.Generator | None = None, device=None,
                     dtype: torch.dtype | None = None) -> torch.Tensor:
        """``shape`` = ``(B, *data_shape)`` draws from the prior :math:`N(0, \\sigma_T^2 I)` (Song et al. 2021, App. B).

        Raises:
            ValueError: ``shape`` not a non-empty tuple of positive integers.
        """
        shape = tuple(shape)
        if not shape or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
            raise ValueError(f"shape must be a tuple (B, *data_shape) of positive integers, got {shape!r}")
        return self.prior_std() * torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\log N(x; 0, \\sigma_T^2 I)` per sample, ``(B,)`` nats (summed over the data dimensions).

        Raises:
            ValueError: ``x`` not a non-empty floating batch.
        """
        _check_data("x", x)
        return _standard_normal_log_prob(x, self.prior_std())


class VPSDE(SDE):
    """The variance-preserving SDE :math:`dx = -\\frac12\\beta(t)x\\,dt + \\sqrt{\\beta(t)}\\,dw`.

    Song et al. (2021), eq. 11 and App. B: :math:`\\beta(t) = \\beta_{min} + t(\\beta_{max} - \\beta_{min})` on
    [0, 1] (their 0.1 and 20). With :math:`B(t) = \\int_0^t\\beta = \\beta_{min}t + \\frac12 t^2(\\beta_{max} -
    \\beta_{min})` the transition is :math:`N(e^{-B(t)/2}x_0, (1 - e^{-B(t)})I)`: the continuous-time
    :math:`\\bar\\alpha(t) = e^{-B(t)}` of DDPM, whose Markov chain (eq. 10) is this SDE's discretisation
    (:meth:`discretize`). The prior is N(0, I). With ``beta_min == beta_max`` it is the Ornstein-Uhlenbeck process.
    :meth:`from_schedule` builds the VP SDE of any DDPM schedule (cosine included).

    Args:
        beta_min, beta_max: :math:`\\beta(0)` and :math:`\\beta(1)`, finite, 0 < beta_min <= beta_max.

    Raises:
        ValueError: not ``0 < beta_min <= beta_max`` (finite).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not (isinstance(beta_min, (int, float)) and isinstance(beta_max, (int, float))
                and 0 < beta_min <= beta_max < math.inf):
            raise ValueError(f"need finite 0 < beta_min <= beta_max, got {beta_min!r} and {beta_max!r}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def __repr__(self) -> str:
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max})"

    def beta(self, t) -> torch.Tensor:
        """:math:`\\beta(t)`, float64 CPU tensor shaped like ``t`` (per unit time).

        Raises:
            ValueError: ``t`` outside [0, 1].
        """
        t = _times(t, self.T)
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integrated_beta(self, t) -> torch.Tensor:
        """:math:`B(t) = \\int_0^t \\beta(s)ds` (so :math:`\\bar\\alpha(t) = e^{-B(t)}`), float64 tensor like ``t``.

        Raises:
            ValueError: ``t`` outside [0, 1].
        """
        t = _times(t, self.T)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t ** 2

    def scale_std(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.integrated_beta(t)
        return torch.exp(-0.5 * b), torch.sqrt(-torch.expm1(-b))

    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        _check_data("x", x)
        return -0.5 * _col(self.beta(_times_for(t, x, self.T)), x) * x

    def diffusion(self, t) -> torch.Tensor:
        return self.beta(t).sqrt()

    def prior_std(self) -> float:
        return 1.0

    def discretize(self, N: int) -> NoiseSchedule:
        """DDPM's schedule as the discretisation of this SDE: :math:`\\beta_i = \\beta(\\tau_i)/N`, N steps.

        Song et al. (2021), eq. 10 and App. B: the Markov chain :math:`x_i = \\sqrt{1 - \\beta_i}x_{i-1} +
        \\sqrt{\\beta_i}z` with :math:`\\beta_i = \\bar\\beta_i/N` is the VP SDE's discretisation; as in their
        implementation the :math:`\\bar\\beta_i` are spaced evenly from :math:`\\beta_{min}` to :math:`\\beta_{max}`
        (:math:`\\tau_i = (i-1)/(N-1)`), so ``VPSDE(0.1, 20).discretize(1000)`` is Ho et al.'s linear schedule
        :func:`dgmcourse.diffusion.linear_schedule` (1e-4 to 0.02). Its :math:`\\bar\\alpha_i` approach
        :math:`e^{-B(i/N)}` as N grows (the error is O(1/N)).

        Args:
            N: number of steps, an integer >= 2 with ``beta_max / N < 1``.

        Returns:
            :class:`dgmcourse.diffusion.NoiseSchedule` with T = N.

        Raises:
            ValueError: ``N`` not an integer >= 2, or ``beta_max / N`` >= 1.
        """
        if isinstance(N, bool) or not isinstance(N, int) or N < 2:
            raise ValueError(f"N must be an integer >= 2, got {N!r}")
        if not self.beta_max / N < 1:
            raise ValueError(f"beta_max / N must be below 1 (a DDPM variance), got {self.beta_max / N!r}: "
                             "take more steps")
        return linear_schedule(N, self.beta_min / N, self.beta_max / N)

    @classmethod
    def from_schedule(cls, schedule: NoiseSchedule) -> "VPSDE":
        """The VP SDE whose marginals at :math:`t_i = i/T` are DDPM's :math:`q(x_i | x_0)` exactly, for any schedule.

        :math:`\\beta(t)` is piecewise constant, :math:`-T\\log\\alpha_i` on :math:`((i-1)/T, i/T]`, so
        :math:`B(i/T) = -\\log\\bar\\alpha_i` and :math:`p_{0,i/T}(x | x_0) = N(\\sqrt{\\bar\\alpha_i}x_0,
        (1 - \\bar\\alpha_i)I)`, Ho et al. (2020), eq. 4 (Song et al. 2021, App. B, read the other way round).
        :meth:`discretize` of it returns the schedule's own betas (N = T) or, for other N, the exact increments
        :math:`\\beta_i = 1 - e^{-(B(i/N) - B((i-1)/N))}`.

        Args:
            schedule: a :class:`dgmcourse.diffusion.NoiseSchedule` (e.g. ``cosine_schedule(1000)``).

        Returns:
            a :class:`VPSDE` (``beta_min``/``beta_max`` are the smallest and largest of its :math:`\\beta(t)`).

        Raises:
            ValueError: ``schedule`` not a NoiseSchedule.
        """
        if not isinstance(schedule, NoiseSchedule):
            raise ValueError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        return _ScheduleVPSDE(schedule)


class _ScheduleVPSDE(VPSDE):
    """:meth:`VPSDE.from_schedule`: piecewise-constant :math:`\\beta(t)` matching a DDPM schedule at t = i/T."""

    def __init__(self, schedule: NoiseSchedule) -> None:
        self.n = schedule.T
        self.rates = -schedule.alphas[1:].log() * self.n  # beta(t) on ((i-1)/n, i/n], (n,)
        self.knots = torch.cat([torch.zeros(1, dtype=torch.float64), -schedule.alpha_bars[1:].log()])  # B(i/n)
        self.beta_min, self.beta_max = self.rates.min().item(), self.rates.max().item()

    def __repr__(self) -> str:
        return f"VPSDE.from_schedule(<{self.n} steps>)"

    def _piece(self, t: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.ceil(t * self.n).long(), 1, self.n)

    def beta(self, t) -> torch.Tensor:
        t = _times(t, self.T)
        return self.rates[self._piece(t) - 1]

    def integrated_beta(self, t) -> torch.Tensor:
        t = _times(t, self.T)
        i = self._piece(t)
        return self.knots[i - 1] + (t - (i - 1).double() / self.n) * self.rates[i - 1]

    def discretize(self, N: int) -> NoiseSchedule:
        if isinstance(N, bool) or not isinstance(N, int) or N < 1:
            raise ValueError(f"N must be a positive integer, got {N!r}")
        b = self.integrated_beta(torch.arange(N + 1, dtype=torch.float64) / N)
        return schedule_from_betas(-torch.expm1(-(b[1:] - b[:-1])))


class VESDE(SDE):
    """The variance-exploding SDE :math:`dx = \\sqrt{d[\\sigma^2(t)]/dt}\\,dw`.

    Song et al. (2021), eq. 9 and App. B: :math:`\\sigma(t) = \\sigma_{min}(\\sigma_{max}/\\sigma_{min})^t`, so
    :math:`g(t) = \\sigma(t)\\sqrt{2\\log(\\sigma_{max}/\\sigma_{min})}`, no drift, and the transition is
    :math:`N(x_0, (\\sigma(t)^2 - \\sigma_{min}^2)I)`: the continuum limit of SMLD's noise levels (Song & Ermon
    2019; the chain of eq. 8; :func:`dgmcourse.diffusion.geometric_noise_levels`). The prior is
    :math:`N(0, \\sigma_{max}^2 I)`.

    Args:
        sigma_min, sigma_max: :math:`\\sigma(0)` and :math:`\\sigma(1)`, finite, 0 < sigma_min < sigma_max (Song et al.
            use 0.01 and 50 on CIFAR-10; take sigma_max about the largest distance between data points).

    Raises:
        ValueError: not ``0 < sigma_min < sigma_max`` (finite).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        if not (isinstance(sigma_min, (int, float)) and isinstance(sigma_max, (int, float))
                and 0 < sigma_min < sigma_max < math.inf):
            raise ValueError(f"need finite 0 < sigma_min < sigma_max, got {sigma_min!r} and {sigma_max!r}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"

    def sigma(self, t) -> torch.Tensor:
        """:math:`\\sigma(t) = \\sigma_{min}(\\sigma_{max}/\\sigma_{min})^t`, float64 CPU tensor shaped like ``t``.

        Raises:
            ValueError: ``t`` outside [0, 1].
        """
        t = _times(t, self.T)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def scale_std(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.sigma(t)
        return torch.ones_like(s), torch.sqrt(s ** 2 - self.sigma_min ** 2)

    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        _check_data("x", x)
        _times_for(t, x, self.T)
        return torch.zeros_like(x)

    def diffusion(self, t) -> torch.Tensor:
        return self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

    def prior_std(self) -> float:
        return self.sigma_max


# ------------------------------------------------------------------- exact scores of diffused mixtures
def _diffused_mixture(sde: SDE, x: torch.Tensor, t, means, sigmas, weights):
    _check_sde(sde)
    means, variances, log_weights = _mixture_parameters(x, means, sigmas, weights)
    scale, std = sde.scale_std(_times_for(t, x, sde.T))
    scale, std = _col(scale, x), _col(std, x)  # (B or 1, 1)
    return scale.unsqueeze(-1) * means, scale ** 2 * variances + std ** 2, log_weights  # (., K, d), (., K), (K,)


def mixture_marginal_score(sde: SDE, x: torch.Tensor, t, means: torch.Tensor, sigmas, weights=None) -> torch.Tensor:
    """The exact score :math:`\\nabla_x\\log p_t(x)` of Gaussian-mixture data diffused by the SDE.

    For :math:`x_0 \\sim \\sum_k w_k N(\\mu_k, s_k^2 I)` and the transition :math:`N(m(t)x_0, s(t)^2 I)` (Song et al.
    2021, App. B) the marginal is the mixture :math:`\\sum_k w_k N(m(t)\\mu_k, (m(t)^2 s_k^2 + s(t)^2)I)`; its
    score is :func:`dgmcourse.diffusion.mixture_score` of that mixture (the continuous-time
    :func:`dgmcourse.diffusion.optimal_epsilon`). It is the minimiser of denoising score matching at time t
    (eq. 7). Use it as a ``score_fn``: ``lambda x, t: mixture_marginal_score(sde, x, t, means, sigma)``.

    Args:
        sde: the :class:`SDE`.
        x: points ``(B, d)``.
        t: time(s) in [0, T] (float or ``(B,)``).
        means, sigmas, weights: the data mixture, as in :func:`dgmcourse.diffusion.mixture_score`.

    Returns:
        ``(B, d)``, in x's dtype and device (units 1/x).

    Raises:
        ValueError: as :func:`dgmcourse.diffusion.mixture_score`; ``sde`` not an :class:`SDE`; ``t`` outside [0, T] or
            of the wrong shape.
    """
    means, variances, log_weights = _diffused_mixture(sde, x, t, means, sigmas, weights)
    diff = means - x.unsqueeze(-2)  # (B, K, d)
    log_joint = log_weights - 0.5 * diff.pow(2).sum(-1) / variances - 0.5 * x.shape[-1] * variances.log()
    responsibilities = torch.softmax(log_joint, dim=-1)
    return (responsibilities.unsqueeze(-1) * diff / variances.unsqueeze(-1)).sum(-2)


def mixture_marginal_log_prob(sde: SDE, x: torch.Tensor, t, means: torch.Tensor, sigmas,
                              weights=None) -> torch.Tensor:
    """The exact log-density :math:`\\log p_t(x)` of Gaussian-mixture data diffused by the SDE, nats.

    :math:`\\log\\sum_k w_k N(x; m(t)\\mu_k, (m(t)^2 s_k^2 + s(t)^2)I)` (see :func:`mixture_marginal_score`); at t = 0
    the data density itself, at t = T the true :math:`p_T` the prior approximates.

    Args:
        sde: the :class:`SDE`; x: points ``(B, d)``; t: time(s) in [0, T];
        means, sigmas, weights: the data mixture, as in :func:`dgmcourse.diffusion.mixture_score`.

    Returns:
        ``(B,)`` nats, in x's dtype and device.

    Raises:
        ValueError: as :func:`mixture_marginal_score`.
    """
    means, variances, log_weights = _diffused_mixture(sde, x, t, means, sigmas, weights)
    d = x.shape[-1]
    log_normal = (-0.5 * (x.unsqueeze(-2) - means).pow(2).sum(-1) / variances
                  - 0.5 * d * torch.log(2 * math.pi * variances))
    return torch.logsumexp(log_weights + log_normal, dim=-1)


# ------------------------------------------------------------------------------------ samplers
def euler_maruyama(drift_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   diffusion_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, t_start: float,
                   t_end: float, n_steps: int, generator: torch.Generator | None = None, denoise: bool = False,
                   return_trajectory: bool = False, progress: bool = True) -> torch.Tensor:
    """Euler-Maruyama for :math:`dx = f(x, t)dt + g(t)dw` with ``n_steps`` equal steps from ``t_start`` to ``t_end``.

    :math:`x_{k+1} = x_k + f(x_k, t_k)h + g(t_k)\\sqrt{|h|}\\,z_k`, :math:`z_k \\sim N(0, I)`,
    :math:`h = (t_{end} - t_{start})/n`: strong order 1/2, weak order 1 (Kloeden & Platen 1992, the Euler scheme).
    With ``t_end < t_start`` (h < 0) it integrates a reverse-time SDE :math:`dx = f\\,dt + g\\,d\\bar w` backwards,
    as :func:`reverse_sde_sample` does (Song et al. 2021, sec. 4.2). Runs under ``torch.no_grad()``.

    Args:
        drift_fn: ``drift_fn(x, t) -> f`` with ``t`` ``(B,)``, shaped like ``x``.
        diffusion_fn: ``diffusion_fn(t) -> g`` for a float64 scalar tensor ``t`` (a float or 0-d tensor).
        x: the start ``(B, *shape)``; t_start, t_end: the time interval (floats).
        n_steps: number of steps, a positive integer.
        generator: optional ``torch.Generator`` (on ``x``'s device) for the :math:`z_k`.
        denoise: make the last step noise-free (return its mean), as samplers do at the data end (Ho et al. 2020,
            Algorithm 2: z = 0 at t = 1).
        return_trajectory: return every iterate instead of the last.
        progress: show a tqdm bar.

    Returns:
        the end point ``(B, *shape)``, or the trajectory ``(n_steps + 1, B, *shape)``.

    Raises:
        ValueError: ``x`` not a non-empty floating batch, ``n_steps`` not a positive integer, non-finite times,
            ``drift_fn`` returning another shape.
    """
    _check_data("x", x)
    _check_steps(n_steps)
    _check_time_interval(t_start, t_end)
    h = (t_end - t_start) / n_steps
    trajectory = [x] if return_trajectory else None
    with torch.no_grad():
        for k in tqdm(range(n_steps), desc="Euler-Maruyama", disable=not progress):
            t = t_start + k * h
            f = _model_output("drift_fn", drift_fn(x, _batch_times(t, x)), x)
            x = x + h * f
            if not (denoise and k == n_steps - 1):
                g = float(diffusion_fn(torch.tensor(t, dtype=torch.float64)))
                x = x + g * math.sqrt(abs(h)) * torch.randn(x.shape, generator=generator, device=x.device,
                                                            dtype=x.dtype)
            if trajectory is not None:
                trajectory.append(x)
    return torch.stack(trajectory) if trajectory is not None else x


def reverse_sde_drift(sde: SDE, score_fn: ScoreFn, x: torch.Tensor, t) -> torch.Tensor:
    """The drift of the reverse-time SDE, :math:`f(x, t) - g(t)^2 s(x, t)` (Song et al. 2021, eq. 6).

    With the true score :math:`s = \\nabla_x\\log p_t` the reverse SDE run from :math:`p_T` down to t = 0 has the
    forward process's marginals (Anderson 1982, "Reverse-time diffusion equation models").

    Args:
        sde: the :class:`SDE`; score_fn: ``score_fn(x, t) -> s`` with ``t`` ``(B,)``;
        x: points ``(B, *shape)``; t: time(s) in [0, T].

    Returns:
        shaped like ``x`` (data units per unit time, for time running forwards).

    Raises:
        ValueError: ``sde`` not an :class:`SDE`, ``x`` not a non-empty floating batch, ``t`` outside [0, T],
            ``score_fn`` returning another shape.
    """
    _check_sde(sde)
    _check_data("x", x)
    times = _times_for(t, x, sde.T)
    score = _model_output("score_fn", score_fn(x, _batch_times(times, x)), x)
    return sde.drift(x, times) - _col(sde.diffusion(times) ** 2, x) * score


def probability_flow_drift(sde: SDE, score_fn: ScoreFn, x: torch.Tensor, t) -> torch.Tensor:
    """The probability-flow ODE's drift :math:`\\tilde f(x, t) = f(x, t) - \\frac12 g(t)^2 s(x, t)`.

    Song et al. (2021), eq. 13 and App. D.1: the deterministic :math:`dx/dt = \\tilde f(x, t)` has the same
    marginals :math:`p_t` as the SDE when :math:`s = \\nabla_x\\log p_t` (the Fokker-Planck equation of the SDE is
    the continuity equation of this field). Integrate it with :func:`dgmcourse.flow_matching.heun_sample` from
    ``t_start=sde.T`` to ``t_end=eps`` to sample, or with :func:`ode_log_likelihood` for exact likelihoods.

    Args:
        sde: the :class:`SDE`; score_fn: ``score_fn(x, t) -> s``; x: ``(B, *shape)``; t: time(s) in [0, T].

    Returns:
        shaped like ``x``.

    Raises:
        ValueError: as :func:`reverse_sde_drift`.
    """
    _check_sde(sde)
    _check_data("x", x)
    times = _times_for(t, x, sde.T)
    score = _model_output("score_fn", score_fn(x, _batch_times(times, x)), x)
    return sde.drift(x, times) - 0.5 * _col(sde.diffusion(times) ** 2, x) * score


def reverse_sde_sample(sde: SDE, score_fn: ScoreFn, x_T: torch.Tensor, n_steps: int = 1000, eps: float = 1e-3,
                       generator: torch.Generator | None = None, denoise: bool = True,
                       return_trajectory: bool = False, progress: bool = True) -> torch.Tensor:
    """Sample by Euler-Maruyama on the reverse-time SDE from t = T down to t = ``eps``.

    :math:`x \\leftarrow x - [f(x, t) - g(t)^2 s(x, t)]\\Delta t + g(t)\\sqrt{\\Delta t}\\,z`, Song et al. (2021),
    eq. 6 and sec. 4.2 (Euler-Maruyama as the predictor); :func:`euler_maruyama` with :func:`reverse_sde_drift`.
    Stopping at a small ε > 0 avoids the singular score at t = 0 for a learned model (Song et al. use 1e-3 for VP);
    the exact mixture score is finite at t = 0.

    Args:
        sde: the :class:`SDE`; score_fn: ``score_fn(x, t) -> s``.
        x_T: the start ``(B, *shape)``, normally ``sde.prior_sample``.
        n_steps: number of steps; eps: the end time in [0, T).
        generator: optional ``torch.Generator`` (on ``x_T``'s device).
        denoise: no noise in the last step (see :func:`euler_maruyama`).
        return_trajectory: return every iterate; progress: show a tqdm bar.

    Returns:
        samples ``(B, *shape)``, or the trajectory ``(n_steps + 1, B, *shape)``.

    Raises:
        ValueError: ``sde`` not an :class:`SDE`, ``eps`` outside [0, T), or as :func:`euler_maruyama`.
    """
    _check_sde(sde)
    _check_eps(eps, sde.T)
    return euler_maruyama(lambda x, t: reverse_sde_drift(sde, score_fn, x, t), sde.diffusion, x_T, sde.T, eps,
                          n_steps, generator, denoise, return_trajectory, progress)


def langevin_corrector_step(score_fn: ScoreFn, x: torch.Tensor, t, snr: float, alpha: float = 1.0,
                            noise: torch.Tensor | None = None,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """One Langevin corrector step at time t: :math:`x + \\epsilon s(x, t) + \\sqrt{2\\epsilon}\\,z`.

    Song et al. (2021), App. G, Algorithms 4 (VE, α = 1) and 5 (VP, :math:`\\alpha = \\alpha_i = 1 - \\beta_i`):
    the step size :math:`\\epsilon = 2\\alpha(r\\|z\\|_2/\\|s(x, t)\\|_2)^2` is set from the signal-to-noise
    ratio r (``snr``), so the update's noise is about 1/r times its drift; the chain leaves :math:`p_t`
    approximately invariant (Langevin dynamics, :func:`dgmcourse.diffusion.langevin_dynamics`). As in the authors'
    implementation the two norms are averaged over the batch (one ε for the batch): per-sample norms, which
    concentrate in high dimension, make ε explode in low dimension wherever the score nearly vanishes.

    Args:
        score_fn: ``score_fn(x, t) -> s``; x: ``(B, *shape)``; t: time(s) (float or ``(B,)``, passed to the model).
        snr: r > 0 (Song et al.: 0.16 for VE on CIFAR-10; 0.01-0.2 are common).
        alpha: α in (0, 1].
        noise: optional z of ``x``'s shape; drawn when None; generator: optional ``torch.Generator`` for it.

    Returns:
        the corrected points, shaped like ``x``.

    Raises:
        ValueError: ``x`` not a non-empty floating batch, ``snr`` <= 0, ``alpha`` outside (0, 1], ``noise`` or the
            score of another shape.
    """
    _check_data("x", x)
    if isinstance(snr, bool) or not isinstance(snr, (int, float)) or not 0 < snr < math.inf:
        raise ValueError(f"snr must be a positive float, got {snr!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha!r}")
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    elif not torch.is_tensor(noise) or noise.shape != x.shape:
        raise ValueError(f"noise must have the shape of x {tuple(x.shape)}, "
                         f"got {tuple(getattr(noise, 'shape', ()))}")
    times = t if torch.is_tensor(t) else torch.tensor(float(t))
    score = _model_output("score_fn", score_fn(x, times.to(device=x.device, dtype=x.dtype).expand(len(x))), x)
    score_norm = score.flatten(1).norm(dim=1).mean().clamp_min(torch.finfo(x.dtype).tiny)
    ratio = noise.flatten(1).norm(dim=1).mean() / score_norm
    step = 2 * alpha * (snr * ratio) ** 2
    return x + step * score + (2 * step).sqrt() * noise


@torch.no_grad()
def pc_sample(sde: SDE, score_fn: ScoreFn, x_T: torch.Tensor, n_steps: int = 1000, snr: float = 0.16,
              n_corrector: int = 1, eps: float = 1e-3, generator: torch.Generator | None = None,
              denoise: bool = True, progress: bool = True) -> torch.Tensor:
    """Predictor-corrector sampling: Euler-Maruyama predictor, Langevin corrector.

    Song et al. (2021), sec. 4.2 and App. G, Algorithm 1 (with the predictor of :func:`reverse_sde_sample` and
    ``n_corrector`` = M steps of :func:`langevin_corrector_step`): at each time :math:`t_k` from T down to ε + Δt
    the corrector's M Langevin steps at :math:`t_k` move the points towards :math:`p_{t_k}`, then one reverse-SDE
    step predicts :math:`x_{t_{k+1}}`, as in the authors' implementation. For a :class:`VPSDE` the corrector uses
    the step's :math:`\\alpha_k = 1 - \\beta_k = e^{-(B(t_k) - B(t_{k+1}))}` (Algorithm 5; about
    :math:`1 - \\beta(t_k)\\Delta t`, and in (0, 1] for any step), for other SDEs α = 1 (Algorithm 4).
    ``n_corrector=0`` is :func:`reverse_sde_sample`. Runs under ``torch.no_grad()``.

    Args:
        sde: the :class:`SDE`; score_fn: ``score_fn(x, t) -> s``; x_T: the start ``(B, *shape)``.
        n_steps: predictor steps; snr: the corrector's r > 0; n_corrector: M >= 0 corrector steps per time.
        eps: the end time in [0, T); generator: optional ``torch.Generator`` (on ``x_T``'s device).
        denoise: no noise in the last predictor step; progress: show a tqdm bar.

    Returns:
        samples ``(B, *shape)``.

    Raises:
        ValueError: as :func:`reverse_sde_sample` and :func:`langevin_corrector_step`; ``n_corrector`` not an integer
            >= 0.
    """
    _check_sde(sde)
    _check_eps(eps, sde.T)
    _check_data("x_T", x_T)
    _check_steps(n_steps)
    if isinstance(n_corrector, bool) or not isinstance(n_corrector, int) or n_corrector < 0:
        raise ValueError(f"n_corrector must be an integer >= 0, got {n_corrector!r}")
    h = (eps - sde.T) / n_steps
    x = x_T
    for k in tqdm(range(n_steps), desc="predictor-corrector", disable=not progress):
        t = sde.T + k * h
        alpha = 1.0
        if isinstance(sde, VPSDE):  # the step's alpha_i = 1 - beta_i = exp(-(B(t) - B(t - dt)))
            alpha = math.exp(-float(sde.integrated_beta(t) - sde.integrated_beta(max(t + h, 0.0))))
        for _ in range(n_corrector):
            x = langevin_corrector_step(score_fn, x, t, snr, alpha, generator=generator)
        x = euler_maruyama(lambda y, s: reverse_sde_drift(sde, score_fn, y, s), sde.diffusion, x, t, t + h, 1,
                           generator, denoise and k == n_steps - 1, False, False)
    return x


# ------------------------------------------------------------------------- divergence and likelihood
def _divergence_input(x: torch.Tensor, create_graph: bool) -> torch.Tensor:
    _check_data("x", x)
    if create_graph and x.requires_grad:
        return x
    return x.detach().requires_grad_(True)


def exact_divergence(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                     create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The value :math:`f(x)` and its exact divergence :math:`\\nabla\\cdot f = \\mathrm{tr}(\\partial f/\\partial x)`.

    One backward pass per data dimension D (the diagonal of the Jacobian, row by row): exact, and cheap for the
    2-D toy data; above a few dozen dimensions use :func:`hutchinson_divergence`. The divergence is what the
    instantaneous change of variables integrates (Chen et al. 2018, "Neural Ordinary Differential Equations",
    NeurIPS, Theorem 1). ``fn`` must act on each sample separately (no batch norm).

    Args:
        fn: ``fn(x) -> f`` shaped like ``x``.
        x: points ``(B, *shape)`` (D = prod(shape)).
        create_graph: keep the graph (to differentiate the divergence, e.g. to train through it); otherwise both
            outputs are detached.

    Returns:
        ``(f, div)``: ``f`` shaped like ``x``, ``div`` ``(B,)`` (per unit time when f is a velocity).

    Raises:
        ValueError: ``x`` not a non-empty floating batch, ``fn`` returning another shape.
    """
    x = _divergence_input(x, create_graph)
    with torch.enable_grad():
        f = _model_output("fn", fn(x), x)
        flat_f = f.flatten(1)
        div = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        for i in range(flat_f.shape[1]):
            grad = torch.autograd.grad(flat_f[:, i].sum(), x, create_graph=create_graph, retain_graph=True)[0]
            div = div + grad.flatten(1)[:, i]
    return (f, div) if create_graph else (f.detach(), div.detach())


def hutchinson_divergence(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                          noise: torch.Tensor | None = None, n_probes: int = 1, distribution: str = "rademacher",
                          generator: torch.Generator | None = None,
                          create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The value :math:`f(x)` and Hutchinson's estimate of its divergence, :math:`\\epsilon^\\top J_f\\,\\epsilon`.

    :math:`\\mathrm{tr}(A) = E[\\epsilon^\\top A\\epsilon]` for any probe with :math:`E[\\epsilon\\epsilon^\\top] = I`
    (Hutchinson 1990, "A stochastic estimator of the trace of the influence matrix for Laplacian smoothing splines";
    Grathwohl et al. 2019, "FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative Models", ICLR,
    sec. 3.1): one vector-Jacobian product per probe, whatever the dimension; the estimate is averaged over the
    probes. For the Jacobian J one Rademacher probe (±1) has the smallest variance,
    :math:`\\sum_{i<j}(J_{ij} + J_{ji})^2`; a Gaussian one adds :math:`2\\sum_i J_{ii}^2`.

    Args:
        fn: ``fn(x) -> f`` shaped like ``x``, acting on each sample separately.
        x: points ``(B, *shape)``.
        noise: optional probes ``(P, B, *shape)``; drawn when None (FFJORD keeps them fixed over one ODE solve).
        n_probes: P when drawing, a positive integer.
        distribution: ``"rademacher"`` or ``"gaussian"``, when drawing.
        generator: optional ``torch.Generator`` (on ``x``'s device) for the probes.
        create_graph: keep the graph; otherwise both outputs are detached.

    Returns:
        ``(f, div_estimate)``: ``f`` shaped like ``x``, the estimate ``(B,)``.

    Raises:
        ValueError: ``x`` not a non-empty floating batch, ``n_probes`` not a positive integer, unknown
            ``distribution``, ``noise`` not ``(P, B, *shape)``, ``fn`` returning another shape.
    """
    x = _divergence_input(x, create_graph)
    if noise is None:
        _check_steps(n_probes, "n_probes")
        if distribution not in _PROBES:
            raise ValueError(f"distribution must be one of {_PROBES}, got {distribution!r}")
        noise = torch.randn((n_probes, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
        if distribution == "rademacher":
            noise = torch.sign(noise)
            noise[noise == 0] = 1.0
    elif not torch.is_tensor(noise) or noise.dim() != x.dim() + 1 or noise.shape[1:] != x.shape or len(noise) == 0:
        raise ValueError(f"noise must have shape (P, {', '.join(map(str, x.shape))}), "
                         f"got {tuple(getattr(noise, 'shape', ()))}")
    with torch.enable_grad():
        f = _model_output("fn", fn(x), x)
        div = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        for probe in noise:
            vjp = torch.autograd.grad(f, x, probe, create_graph=create_graph, retain_graph=True)[0]
            div = div + (vjp * probe).flatten(1).sum(1)
        div = div / len(noise)
    return (f, div) if create_graph else (f.detach(), div.detach())


def ode_log_likelihood(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                       prior_log_prob: Callable[[torch.Tensor], torch.Tensor], t_start: float, t_end: float,
                       n_steps: int = 100, method: str = "heun", divergence: str = "exact", n_probes: int = 1,
                       generator: torch.Generator | None = None, progress: bool = True) -> torch.Tensor:
    """Exact log-likelihood of a continuous normalising flow by the instantaneous change of variables.

    Along :math:`dx/dt = v(x, t)`, :math:`\\frac{d}{dt}\\log p_t(x_t) = -\\nabla\\cdot v(x_t, t)` (Chen et al. 2018,
    Theorem 1), so carrying the data point x from ``t_start`` to ``t_end`` (where the density is the known prior)
    gives

    .. math:: \\log p_{t_{start}}(x) = \\log p_{t_{end}}(x_{t_{end}}) + \\int_{t_{start}}^{t_{end}}
              \\nabla\\cdot v(x_t, t)\\,dt,

    integrated jointly with x by a fixed-step solver (Euler or Heun, as :func:`dgmcourse.flow_matching.heun_sample`)
    with the divergence exact (:func:`exact_divergence`, small D) or by Hutchinson's estimator with probes fixed over
    the solve (:func:`hutchinson_divergence`, Grathwohl et al. 2019, sec. 3.1; then the result is an unbiased
    estimate of the discretised integral, not of the log-likelihood itself). For the probability-flow ODE
    (data at t = 0, prior at T) see :func:`pf_ode_log_likelihood`; for a flow-matching model (noise at t = 0,
    data at t = 1) pass ``t_start=1, t_end=0``.

    Args:
        velocity: ``velocity(x, t) -> v`` with ``t`` ``(B,)``, shaped like ``x``, acting on each sample separately.
        x: data points ``(B, *shape)``.
        prior_log_prob: ``prior_log_prob(x_end) -> (B,)`` nats, the density at ``t_end``.
        t_start, t_end: the data's time and the prior's time (floats, different).
        n_steps: solver steps; method: ``"euler"`` or ``"heun"``.
        divergence: ``"exact"`` or ``"hutchinson"``; n_probes: Hutchinson probes (Rademacher).
        generator: optional ``torch.Generator`` (on ``x``'s device) for the probes.
        progress: show a tqdm bar.

    Returns:
        ``(B,)`` log-likelihoods in nats, detached.

    Raises:
        ValueError: ``x`` not a non-empty floating batch, ``n_steps`` or ``n_probes`` not a positive integer, unknown
            ``method`` or ``divergence``, ``t_start == t_end`` or non-finite, ``velocity`` returning another shape,
            ``prior_log_prob`` not returning ``(B,)``.
    """
    _check_data("x", x)
    _check_steps(n_steps)
    _check_steps(n_probes, "n_probes")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if divergence not in _DIVERGENCES:
        raise ValueError(f"divergence must be one of {_DIVERGENCES}, got {divergence!r}")
    _check_time_interval(t_start, t_end)
    if t_start == t_end:
        raise ValueError(f"t_start and t_end must differ, got {t_start!r} for both")
    probes = None
    if divergence == "hutchinson":
        probes = torch.sign(torch.randn((n_probes, *x.shape), generator=generator, device=x.device, dtype=x.dtype))
        probes[probes == 0] = 1.0

    def field(y: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        fn = lambda z: velocity(z, _batch_times(t, z))  # noqa: E731
        if probes is None:
            return exact_divergence(fn, y)
        return hutchinson_divergence(fn, y, noise=probes)

    h = (t_end - t_start) / n_steps
    integral = torch.zeros(len(x), dtype=x.dtype, device=x.device)
    x = x.detach()
    for k in tqdm(range(n_steps), desc="log-likelihood", disable=not progress):
        t = t_start + k * h
        v, div = field(x, t)
        if method == "euler":
            x, integral = x + h * v, integral + h * div
        else:
            t_next = t_end if k == n_steps - 1 else t_start + (k + 1) * h
            v_next, div_next = field(x + h * v, t_next)
            x, integral = x + 0.5 * h * (v + v_next), integral + 0.5 * h * (div + div_next)
    with torch.no_grad():
        log_prior = prior_log_prob(x)
    if not torch.is_tensor(log_prior) or log_prior.shape != (len(x),):
        raise ValueError(f"prior_log_prob must return a tensor ({len(x)},), "
                         f"got {tuple(getattr(log_prior, 'shape', ()))}")
    return (log_prior + integral).detach()


def pf_ode_log_likelihood(sde: SDE, score_fn: ScoreFn, x: torch.Tensor, n_steps: int = 100, eps: float = 1e-5,
                          prior_log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None,
                          method: str = "heun", divergence: str = "exact", n_probes: int = 1,
                          generator: torch.Generator | None = None, progress: bool = True) -> torch.Tensor:
    """Log-likelihood :math:`\\log p_\\epsilon(x)` by the probability-flow ODE, nats.

    Song et al. (2021), sec. 4.3 and App. D.2: :math:`\\log p_\\epsilon(x(\\epsilon)) = \\log p_T(x(T)) +
    \\int_\\epsilon^T \\nabla\\cdot\\tilde f(x(t), t)\\,dt` with :math:`\\tilde f` = :func:`probability_flow_drift`;
    :func:`ode_log_likelihood` from ``eps`` to T. With the true score and the true :math:`p_T` as prior it is the
    exact log-density of the diffused data at ε up to the solver's error; the default prior is the SDE's
    :math:`N(0, \\sigma_T^2 I)` (:meth:`SDE.prior_log_prob`), which differs slightly from the true :math:`p_T`.

    Args:
        sde: the :class:`SDE`; score_fn: ``score_fn(x, t) -> s``; x: data points ``(B, *shape)``.
        n_steps: solver steps; eps: the start time in [0, T) (Song et al. use 1e-5).
        prior_log_prob: ``(x_T) -> (B,)`` nats; ``sde.prior_log_prob`` when None.
        method, divergence, n_probes, generator, progress: as in :func:`ode_log_likelihood`.

    Returns:
        ``(B,)`` log-likelihoods in nats.

    Raises:
        ValueError: ``sde`` not an :class:`SDE`, ``eps`` outside [0, T), or as :func:`ode_log_likelihood`.
    """
    _check_sde(sde)
    _check_eps(eps, sde.T)
    prior = sde.prior_log_prob if prior_log_prob is None else prior_log_prob
    return ode_log_likelihood(lambda y, t: probability_flow_drift(sde, score_fn, y, t), x, prior, eps, sde.T,
                              n_steps, method, divergence, n_probes, generator, progress)
