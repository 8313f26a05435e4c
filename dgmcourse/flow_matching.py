"""Flow matching, rectified flow and minibatch optimal-transport couplings, with exact fields of the toy mixtures.

Notation and time convention of Lipman, Chen, Ben-Hamu, Nickel & Le (2023), "Flow Matching for Generative
Modeling", ICLR: time runs from **t = 0, noise** :math:`x_0 \\sim N(0, I)`, to **t = 1, data**
:math:`x_1 \\sim q` (the reverse of the diffusion convention of :mod:`dgmcourse.diffusion` and
:mod:`dgmcourse.sde`, where t = 0 is the data). A vector field :math:`v_t(x)` generates samples by the ODE
:math:`dx/dt = v_t(x)` from t = 0 to t = 1 (their eq. 1). Rectified flow (Liu, Gong & Liu 2023) and OT-CFM
(Tong et al. 2024) use the same convention.

A *Gaussian conditional probability path* (Lipman et al., eqs. 10-11) is

.. math:: p_t(x | x_1) = N(\\alpha_t x_1, \\sigma_t^2 I), \\qquad
          \\psi_t(x_0) = \\sigma_t x_0 + \\alpha_t x_1,

with :math:`\\mu_t(x_1) = \\alpha_t x_1`; a :class:`GaussianPath` holds :math:`\\alpha_t, \\sigma_t` and their time
derivatives. The conditional vector field that moves along it (Theorem 3, eq. 15) is
:math:`u_t(x | x_1) = \\frac{\\sigma_t'}{\\sigma_t}(x - \\alpha_t x_1) + \\alpha_t' x_1`, and the conditional
flow-matching (CFM) loss regresses a network on it, :math:`E\\|v_t(\\psi_t(x_0)) - \\frac{d}{dt}\\psi_t(x_0)\\|^2`
(eq. 14). Its minimiser is the *marginal* field :math:`u_t(x) = E[u_t(x | x_1) | x_t = x]` (eq. 8), which
generates the marginal path :math:`p_t(x) = \\int p_t(x|x_1) q(x_1) dx_1` (eq. 6).

Conventions used by every function here:

* A time argument ``t`` lies in [0, 1]: a Python float (one time for the whole batch) or a floating tensor
  ``()`` or ``(B,)``. Path coefficients are computed in float64 on the CPU and cast to the data's dtype and device.
* Data tensors are ``(B, *shape)``; a vector-field model is called as ``v_model(x, t)`` with ``t`` a ``(B,)``
  tensor in ``x``'s dtype on ``x``'s device, and returns a tensor shaped like ``x``.
* Randomness comes from an optional ``torch.Generator``, which must live on the data's device.
* Mixtures are isotropic Gaussian mixtures :math:`\\sum_k w_k N(\\mu_k, s_k^2 I)` given as in
  :func:`dgmcourse.diffusion.mixture_score`: ``means (K, d)``, ``sigmas`` a float or ``(K,)``, ``weights (K,)`` or
  None (equal); the course's toy data are ``gan.ring_means()`` with ``gan.RING_SIGMA`` and ``gan.grid_means()``
  with ``gan.GRID_SIGMA``.

Contents

* Paths: :class:`GaussianPath`, :func:`linear_path` (the "OT" path, eqs. 20-22), :func:`vp_path` (the diffusion
  path, eqs. 18-19); :func:`conditional_flow` (:math:`\\psi_t`), :func:`conditional_vector_field`
  (:math:`u_t(x|x_1)`), :func:`cfm_loss` (eqs. 14 and 23).
* Exact marginal field of a mixture: :func:`marginal_vector_field` (as :func:`dgmcourse.diffusion.optimal_epsilon`
  is for ε); with it the samplers and couplings can be studied without training a network.
* One network, two readings: :func:`velocity_from_score` and :func:`score_from_velocity` (Tweedie's formula), so a
  flow-matching model is a score model and the guidance of :mod:`dgmcourse.guidance` applies to it.
* Samplers: :func:`euler_sample`, :func:`heun_sample` (fixed steps, optionally the whole trajectory).
* Couplings: :func:`ot_plan`, :func:`ot_coupling` (minibatch optimal transport, Tong et al. 2024, with POT),
  :func:`reflow_coupling` (rectified flow's reflow, Liu, Gong & Liu 2023).
* A small model and its training: :class:`VelocityMLP`, :func:`train_cfm` (independent, minibatch-OT or given
  pairs); the exact log-density of the mixture path, :func:`marginal_log_prob`; how straight a sampled
  trajectory is, :func:`straightness`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from dgmcourse.diffusion import _check_data, _check_same_shape, _like, _mixture_parameters, _model_output

__all__ = [
    "GaussianPath", "linear_path", "vp_path", "conditional_flow", "conditional_vector_field", "cfm_loss",
    "marginal_vector_field", "velocity_from_score", "score_from_velocity", "euler_sample", "heun_sample", "ot_plan",
    "ot_coupling", "reflow_coupling", "marginal_log_prob", "straightness", "VelocityMLP", "train_cfm",
]

VectorField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Coefficient = Callable[[torch.Tensor], torch.Tensor]
_SAMPLERS = ("euler", "heun")
_COUPLINGS = ("independent", "ot", "pairs")


# ---------------------------------------------------------------------------------- paths
@dataclass(frozen=True, eq=False)
class GaussianPath:
    """A Gaussian conditional probability path :math:`p_t(x | x_1) = N(\\alpha_t x_1, \\sigma_t^2 I)`, t in [0, 1].

    Lipman et al. (2023), eqs. 10-11 with :math:`\\mu_t(x_1) = \\alpha_t x_1` and :math:`\\sigma_t(x_1) = \\sigma_t`:
    the flow :math:`\\psi_t(x_0) = \\sigma_t x_0 + \\alpha_t x_1` pushes the noise :math:`N(0, I)` at t = 0
    (:math:`\\alpha_0 = 0`, :math:`\\sigma_0 = 1`, or close to it) to :math:`N(\\alpha_1 x_1, \\sigma_1^2 I)` near
    the data point at t = 1. Build paths with :func:`linear_path` or :func:`vp_path`; any four callables that map a
    float64 tensor of times to a float64 tensor of the same shape define one.

    Fields:
        alpha, sigma: :math:`\\alpha_t` and :math:`\\sigma_t > 0` (:math:`\\sigma_t = 0` allowed at t = 1 only).
        d_alpha, d_sigma: their time derivatives :math:`\\alpha_t'` and :math:`\\sigma_t'` (per unit time).
        name: a label for plots and messages.
        closed: whether t = 1 belongs to the path (False where :math:`\\sigma_t'` is infinite at t = 1, as for
            :func:`vp_path`); functions then require t < 1.
    """

    alpha: Coefficient
    sigma: Coefficient
    d_alpha: Coefficient
    d_sigma: Coefficient
    name: str = "gaussian"
    closed: bool = True

    def coefficients(self, t) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:math:`(\\alpha_t, \\sigma_t, \\alpha_t', \\sigma_t')` as float64 CPU tensors shaped like ``t``.

        Raises:
            ValueError: ``t`` not a float or floating tensor in [0, 1] ([0, 1) when the path is not ``closed``).
        """
        t = _check_times(t, self)
        return self.alpha(t), self.sigma(t), self.d_alpha(t), self.d_sigma(t)


def linear_path(sigma_min: float = 0.0) -> GaussianPath:
    """The linear ("optimal transport") path :math:`x_t = (1 - (1 - \\sigma_{min})t)\\,x_0 + t\\,x_1`.

    Lipman et al. (2023), eqs. 20 and 22: :math:`\\mu_t(x_1) = t x_1`, :math:`\\sigma_t = 1 - (1 - \\sigma_{min})t`;
    its conditional field (eq. 21) is :math:`u_t(x | x_1) = (x_1 - (1 - \\sigma_{min})x)/(1 - (1 - \\sigma_{min})t)`
    and the CFM target (eq. 23) :math:`x_1 - (1 - \\sigma_{min})x_0`, constant in t: each conditional trajectory is
    a straight line travelled at constant speed. With :math:`\\sigma_{min} = 0` it is rectified flow's
    interpolation :math:`x_t = (1 - t)x_0 + t x_1` (Liu, Gong & Liu 2023, eq. 1) and the path of Tong et al.
    (2024, eqs. 14-15, σ = 0).

    Args:
        sigma_min: :math:`\\sigma_{min}` in [0, 1), the width left around each data point at t = 1.

    Returns:
        :class:`GaussianPath` named ``"linear"``.

    Raises:
        ValueError: ``sigma_min`` outside [0, 1).
    """
    if not (isinstance(sigma_min, (int, float)) and 0 <= sigma_min < 1):
        raise ValueError(f"sigma_min must lie in [0, 1), got {sigma_min!r}")
    shrink = 1.0 - float(sigma_min)
    return GaussianPath(alpha=lambda t: t.clone(), sigma=lambda t: 1 - shrink * t,
                        d_alpha=lambda t: torch.ones_like(t), d_sigma=lambda t: torch.full_like(t, -shrink),
                        name="linear")


def vp_path(beta_min: float = 0.1, beta_max: float = 20.0) -> GaussianPath:
    """The variance-preserving path, backwards: :math:`\\alpha_t = a_{1-t}`, :math:`\\sigma_t^2 = 1 - a_{1-t}^2`.

    Lipman et al. (2023), eqs. 18-19: :math:`a_s = e^{-B(s)/2}` with
    :math:`B(s) = \\int_0^s \\beta(r)dr = \\beta_{min}s + \\frac12(\\beta_{max} - \\beta_{min})s^2`, the VP SDE of
    Song et al. (2021, eq. 11 and App. B; :class:`dgmcourse.sde.VPSDE`) read backwards: the path's marginal at time
    t is the VP SDE's marginal at time 1 - t, and the marginal field is minus its probability-flow drift.
    :math:`\\sigma_1 = 0` makes :math:`\\sigma_t'` infinite at t = 1, so the path is defined on [0, 1) (sample to
    1 - ε, as diffusion samplers stop at ε).

    Args:
        beta_min, beta_max: :math:`\\beta(0)` and :math:`\\beta(1)`, 0 < beta_min <= beta_max.

    Returns:
        :class:`GaussianPath` named ``"vp"`` with ``closed=False``.

    Raises:
        ValueError: not ``0 < beta_min <= beta_max`` (finite).
    """
    if not (isinstance(beta_min, (int, float)) and isinstance(beta_max, (int, float))
            and 0 < beta_min <= beta_max < math.inf):
        raise ValueError(f"need finite 0 < beta_min <= beta_max, got {beta_min!r} and {beta_max!r}")
    b0, b1 = float(beta_min), float(beta_max)

    def a(t):  # a_{1-t}
        s = 1 - t
        return torch.exp(-0.5 * (b0 * s + 0.5 * (b1 - b0) * s ** 2))

    def d_a(t):  # d/dt a_{1-t} = a_{1-t} beta(1-t) / 2
        return 0.5 * a(t) * (b0 + (1 - t) * (b1 - b0))

    def sigma(t):
        return torch.sqrt(-torch.expm1(-(b0 * (1 - t) + 0.5 * (b1 - b0) * (1 - t) ** 2)))

    return GaussianPath(alpha=a, sigma=sigma, d_alpha=d_a, d_sigma=lambda t: -a(t) * d_a(t) / sigma(t),
                        name="vp", closed=False)


# ------------------------------------------------------------------------------- helpers
def _check_times(t, path: GaussianPath | None = None) -> torch.Tensor:
    """``t`` as a float64 CPU tensor ``()`` or ``(B,)``, checked to lie in [0, 1] ([0, 1) for an open path)."""
    if isinstance(t, bool) or not (isinstance(t, (int, float)) or (torch.is_tensor(t) and t.is_floating_point())):
        raise ValueError(f"t must be a float or a floating tensor of times in [0, 1], got {t!r}")
    t = torch.as_tensor(t, dtype=torch.float64).detach().cpu()
    closed = path is None or path.closed
    if t.dim() > 1 or not torch.all(torch.isfinite(t) & (t >= 0) & ((t <= 1) if closed else (t < 1))):
        interval = "[0, 1]" if closed else f"[0, 1) (the {path.name} path is singular at t = 1)"
        raise ValueError(f"t must be a scalar or a 1-D tensor of times in {interval}, got {t}")
    return t


def _time_column(t: torch.Tensor, x: torch.Tensor, name: str = "t") -> None:
    if t.shape not in ((), (len(x),)):
        raise ValueError(f"{name} must be a scalar or have shape ({len(x)},), got {tuple(t.shape)}")


def _col(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """float64 ``()`` or ``(B,)`` coefficients as ``(B or 1, 1, ..., 1)`` in ``x``'s dtype and device."""
    return _like(values.reshape(-1, *([1] * (x.dim() - 1))), x)


def _batch_times(t, x: torch.Tensor) -> torch.Tensor:
    """Time(s) as the ``(B,)`` tensor in ``x``'s dtype and device that models receive."""
    return torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(len(x))


def _path_coefficients(t, x: torch.Tensor, path: GaussianPath) -> tuple[torch.Tensor, ...]:
    if not isinstance(path, GaussianPath):
        raise ValueError(f"path must be a GaussianPath (linear_path(), vp_path()), got {type(path).__name__}")
    t = _check_times(t, path)
    _time_column(t, x)
    return tuple(_col(c, x) for c in path.coefficients(t))


def _check_steps(n_steps) -> None:
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")


# ------------------------------------------------------------------- conditional paths and the loss
def conditional_flow(x0: torch.Tensor, x1: torch.Tensor, t, path: GaussianPath) -> torch.Tensor:
    """The point :math:`x_t = \\psi_t(x_0) = \\sigma_t x_0 + \\alpha_t x_1` of the conditional path.

    Lipman et al. (2023), eq. 11 (eq. 22 for :func:`linear_path`): with :math:`x_0 \\sim N(0, I)` it is a draw
    from :math:`p_t(x | x_1) = N(\\alpha_t x_1, \\sigma_t^2 I)`.

    Args:
        x0: noise :math:`x_0`, ``(B, *shape)``.
        x1: data :math:`x_1`, shaped like ``x0``.
        t: time(s) in [0, 1] (float or tensor ``(B,)``).
        path: the :class:`GaussianPath`.

    Returns:
        :math:`x_t`, shaped like ``x0``.

    Raises:
        ValueError: ``x0``, ``x1`` not non-empty floating batches of one shape, ``t`` outside [0, 1] or of the wrong
            shape, ``path`` not a :class:`GaussianPath`.
    """
    _check_data("x0", x0)
    _check_same_shape("x0", x0, "x1", x1)
    alpha, sigma, _, _ = _path_coefficients(t, x0, path)
    return sigma * x0 + alpha * x1


def conditional_vector_field(x: torch.Tensor, x1: torch.Tensor, t, path: GaussianPath) -> torch.Tensor:
    """The conditional vector field :math:`u_t(x | x_1) = \\sigma_t'(x - \\alpha_t x_1)/\\sigma_t + \\alpha_t' x_1`.

    Lipman et al. (2023), Theorem 3, eq. 15 (eq. 21 for :func:`linear_path`:
    :math:`(x_1 - (1 - \\sigma_{min})x)/(1 - (1 - \\sigma_{min})t)`): the field whose flow is
    :func:`conditional_flow`, so that at :math:`x = \\psi_t(x_0)` it equals
    :math:`\\frac{d}{dt}\\psi_t(x_0) = \\sigma_t' x_0 + \\alpha_t' x_1` (the CFM target).

    Args:
        x: points ``(B, *shape)``.
        x1: the data points conditioned on, shaped like ``x``.
        t: time(s) in [0, 1] (float or tensor ``(B,)``).
        path: the :class:`GaussianPath`.

    Returns:
        ``(B, *shape)``, data units per unit time.

    Raises:
        ValueError: as :func:`conditional_flow`; :math:`\\sigma_t = 0` (t = 1 with :math:`\\sigma_{min} = 0`, where
            the field is singular off :math:`x_1`).
    """
    _check_data("x", x)
    _check_same_shape("x", x, "x1", x1)
    alpha, sigma, d_alpha, d_sigma = _path_coefficients(t, x, path)
    if torch.any(sigma == 0):
        raise ValueError("sigma_t = 0 at this t (t = 1 with sigma_min = 0): the conditional field is singular there")
    return d_sigma / sigma * (x - alpha * x1) + d_alpha * x1


def cfm_loss(v_model: VectorField, x1: torch.Tensor, path: GaussianPath, t=None, x0: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The conditional flow-matching loss :math:`E\\|v_t(\\psi_t(x_0)) - (\\sigma_t' x_0 + \\alpha_t' x_1)\\|^2`.

    Lipman et al. (2023), eqs. 9 and 14 (eq. 23 for :func:`linear_path`, target :math:`x_1 - (1 - \\sigma_{min})x_0`):
    t uniform on [0, 1), :math:`x_0 \\sim N(0, I)` independent of the data, :math:`x_t` from
    :func:`conditional_flow`. Its gradient equals that of regressing on the marginal field (their Theorem 2), so
    its minimiser is :func:`marginal_vector_field`. Passing coupled ``x0`` (from :func:`ot_coupling` or
    :func:`reflow_coupling`) with ``linear_path()`` gives OT-CFM (Tong et al. 2024, eqs. 14-15 with σ = 0, pairs
    from the minibatch OT plan) and rectified flow's objective (Liu, Gong & Liu 2023, eq. 1). The squared norm is
    summed over the data dimensions, as in :func:`dgmcourse.diffusion.epsilon_loss`.

    Args:
        v_model: ``v_model(x_t, t) -> v``; gradients flow into it.
        x1: data ``(B, *shape)``.
        path: the :class:`GaussianPath`.
        t: optional time(s) in [0, 1] (float or ``(B,)``); drawn uniformly per sample when None.
        x0: optional noise (or coupled source points) of ``x1``'s shape; drawn from N(0, I) when None.
        generator: optional ``torch.Generator`` (on ``x1``'s device) for t and :math:`x_0`.

    Returns:
        scalar tensor, the batch mean of the squared error (squared data units per unit time).

    Raises:
        ValueError: ``x1`` not a non-empty floating batch, ``t`` outside [0, 1] or of the wrong shape, ``x0`` of
            another shape, ``path`` not a :class:`GaussianPath`, ``v_model`` returning another shape.
    """
    _check_data("x1", x1)
    if t is None:
        t = torch.rand((len(x1),), generator=generator, device=x1.device, dtype=x1.dtype)
    if x0 is None:
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
    _check_same_shape("x1", x1, "x0", x0)
    alpha, sigma, d_alpha, d_sigma = _path_coefficients(t, x1, path)
    xt = sigma * x0 + alpha * x1
    target = d_sigma * x0 + d_alpha * x1
    times = _check_times(t, path).to(device=x1.device, dtype=x1.dtype).expand(len(x1))
    v = _model_output("v_model", v_model(xt, times), x1)
    return (v - target).pow(2).flatten(1).sum(1).mean()


# ------------------------------------------------------------------------ the exact marginal field
def marginal_vector_field(x: torch.Tensor, t, path: GaussianPath, means: torch.Tensor, sigmas,
                          weights=None) -> torch.Tensor:
    """The exact marginal field :math:`u_t(x) = E[u_t(x | x_1) \\mid x_t = x]` of Gaussian-mixture data.

    For :math:`x_1 \\sim \\sum_k w_k N(\\mu_k, s_k^2 I)` and :math:`x_t = \\sigma_t x_0 + \\alpha_t x_1` the marginal
    path (Lipman et al. 2023, eq. 6) is the mixture :math:`p_t = \\sum_k w_k N(\\alpha_t\\mu_k, v_k I)`,
    :math:`v_k = \\alpha_t^2 s_k^2 + \\sigma_t^2`, and the marginal field (eq. 8) is the posterior-weighted average
    of the conditional fields, :math:`u_t(x) = E[\\sigma_t' x_0 + \\alpha_t' x_1 | x_t = x]`. Given the component
    k, :math:`(x_0, x_1, x_t)` is jointly Gaussian, so

    .. math:: u_t(x) = \\sum_k p(k | x)\\Big[\\alpha_t'\\mu_k
              + \\frac{\\sigma_t\\sigma_t' + \\alpha_t\\alpha_t' s_k^2}{v_k}(x - \\alpha_t\\mu_k)\\Big],
              \\qquad p(k | x) \\propto w_k N(x; \\alpha_t\\mu_k, v_k I),

    each component's own Gaussian field (mean velocity plus the log-std's rate, :math:`\\frac12\\dot v_k/v_k`,
    times the offset) weighted by its responsibility. It stays finite at t = 0 and at t = 1 even with
    :math:`\\sigma_1 = 0` (the linear path then gives :math:`u_1(x) = E[x_1 - x_0 | x_1 = x] = x`). It is the
    minimiser of :func:`cfm_loss` (Theorem 2), as :func:`dgmcourse.diffusion.optimal_epsilon` is for ε. Use it as a
    ``v_model``: ``lambda x, t: marginal_vector_field(x, t, path, means, sigma)``.

    Args:
        x: points ``(B, d)``.
        t: time(s) in [0, 1] (float or tensor ``(B,)``).
        path: the :class:`GaussianPath` (e.g. ``linear_path()``).
        means, sigmas, weights: the data mixture, as in :func:`dgmcourse.diffusion.mixture_score`.

    Returns:
        ``(B, d)``, in x's dtype and device (data units per unit time).

    Raises:
        ValueError: as :func:`dgmcourse.diffusion.mixture_score` (``x`` not ``(B, d)``, ``means`` not ``(K, d)``,
            non-positive ``sigmas``, bad ``weights``); ``t`` outside [0, 1] or of the wrong shape; ``path`` not a
            :class:`GaussianPath`.
    """
    means, variances, log_weights = _mixture_parameters(x, means, sigmas, weights)
    alpha, sigma, d_alpha, d_sigma = _path_coefficients(t, x, path)  # (B or 1, 1)
    v = alpha ** 2 * variances + sigma ** 2  # (B or 1, K)
    rate = (sigma * d_sigma + alpha * d_alpha * variances) / v  # (B or 1, K)
    offset = x.unsqueeze(-2) - alpha.unsqueeze(-1) * means  # (B, K, d)
    log_joint = log_weights - 0.5 * offset.pow(2).sum(-1) / v - 0.5 * x.shape[-1] * v.log()
    responsibilities = torch.softmax(log_joint, dim=-1)  # p(k | x), (B, K)
    fields = d_alpha.unsqueeze(-1) * means + rate.unsqueeze(-1) * offset  # (B, K, d)
    return (responsibilities.unsqueeze(-1) * fields).sum(-2)


def marginal_log_prob(x: torch.Tensor, t, path: GaussianPath, means: torch.Tensor, sigmas,
                      weights=None) -> torch.Tensor:
    """The exact log-density :math:`\\log p_t(x)` of the marginal path of Gaussian-mixture data, nats.

    For :math:`x_1 \\sim \\sum_k w_k N(\\mu_k, s_k^2 I)` and :math:`x_t = \\sigma_t x_0 + \\alpha_t x_1` the
    marginal path (Lipman et al. 2023, eq. 6) is the mixture
    :math:`p_t(x) = \\sum_k w_k N(x; \\alpha_t\\mu_k, (\\alpha_t^2 s_k^2 + \\sigma_t^2) I)`, the density that
    :func:`marginal_vector_field` transports (the pair solves the continuity equation
    :math:`\\partial_t p_t + \\nabla\\cdot(p_t u_t) = 0`). At t = 0 it is :math:`N(0, \\sigma_0^2 I)`, at t = 1 of
    :func:`linear_path` the data density itself (smoothed by :math:`\\sigma_{min}`); for :func:`vp_path` it is
    :func:`dgmcourse.sde.mixture_marginal_log_prob` of the VP SDE at time 1 - t.

    Args:
        x: points ``(B, d)``.
        t: time(s) in [0, 1] (float or tensor ``(B,)``).
        path: the :class:`GaussianPath`.
        means, sigmas, weights: the data mixture, as in :func:`dgmcourse.diffusion.mixture_score`.

    Returns:
        ``(B,)`` nats, in x's dtype and device.

    Raises:
        ValueError: as :func:`marginal_vector_field`.
    """
    means, variances, log_weights = _mixture_parameters(x, means, sigmas, weights)
    alpha, sigma, _, _ = _path_coefficients(t, x, path)  # (B or 1, 1)
    v = alpha ** 2 * variances + sigma ** 2  # (B or 1, K)
    offset = x.unsqueeze(-2) - alpha.unsqueeze(-1) * means  # (B, K, d)
    d = x.shape[-1]
    log_normal = -0.5 * offset.pow(2).sum(-1) / v - 0.5 * d * torch.log(2 * math.pi * v)
    return torch.logsumexp(log_weights + log_normal, dim=-1)


# ---------------------------------------------------------------------- velocity and score
def _velocity_score_coefficients(x: torch.Tensor, t, path: GaussianPath) -> tuple[torch.Tensor, ...]:
    """``(alpha, d_alpha, c)`` with u = (alpha' x + c s) / alpha, c = alpha' sigma^2 - alpha sigma sigma'."""
    alpha, sigma, d_alpha, d_sigma = _path_coefficients(t, x, path)
    return alpha, d_alpha, d_alpha * sigma ** 2 - alpha * sigma * d_sigma


def velocity_from_score(score: torch.Tensor, x: torch.Tensor, t, path: GaussianPath) -> torch.Tensor:
    """The marginal field :math:`u_t(x)` of a Gaussian path from the marginal score :math:`\\nabla\\log p_t(x)`.

    On a Gaussian path :math:`x_t = \\sigma_t x_0 + \\alpha_t x_1` Tweedie's formula (Efron 2011, "Tweedie's
    Formula and Selection Bias", eq. 2.8) gives
    :math:`E[x_1 | x_t = x] = (x + \\sigma_t^2 \\nabla\\log p_t(x))/\\alpha_t`
    and :math:`E[x_0 | x_t = x] = -\\sigma_t\\nabla\\log p_t(x)`; the marginal field of Lipman et al. (2023, eq. 8),
    :math:`u_t(x) = E[\\sigma_t' x_0 + \\alpha_t' x_1 | x_t = x]`, is then

    .. math:: u_t(x) = \\frac{\\alpha_t'}{\\alpha_t}x
              + \\frac{\\alpha_t'\\sigma_t^2 - \\alpha_t\\sigma_t\\sigma_t'}{\\alpha_t}\\nabla\\log p_t(x)

    (linear path: :math:`u_t = (x + (1 - t)\\nabla\\log p_t)/t`). Velocity and score are affine in each other: one
    network serves as both, and guidance, written for scores, applies to velocities unchanged.

    Args:
        score: :math:`\\nabla\\log p_t(x)`, shaped like ``x`` (per data unit).
        x: points ``(B, *shape)``.
        t: time(s) in (0, 1], float or ``(B,)``; :math:`\\alpha_t` must be positive.
        path: the :class:`GaussianPath`.

    Returns:
        ``(B, *shape)`` in x's dtype and device (data units per unit time).

    Raises:
        ValueError: ``score`` not shaped like ``x``; ``t`` outside the path's interval or where
            :math:`\\alpha_t = 0` (t = 0: the field is then :math:`\\alpha_0' E[x_1] - \\sigma_0' x`, not a function
            of the score); ``path`` not a :class:`GaussianPath`.
    """
    _check_data("x", x)
    _check_same_shape("x", x, "score", score)
    alpha, d_alpha, c = _velocity_score_coefficients(x, t, path)
    if not torch.all(alpha > 0):
        raise ValueError("t: alpha_t must be positive (t > 0) to read a velocity from a score")
    return (d_alpha * x + c * score) / alpha


def score_from_velocity(velocity: torch.Tensor, x: torch.Tensor, t, path: GaussianPath) -> torch.Tensor:
    """The marginal score :math:`\\nabla\\log p_t(x)` from the marginal field :math:`u_t(x)`: the inverse of
    :func:`velocity_from_score`, :math:`\\nabla\\log p_t(x) = (\\alpha_t u_t(x) - \\alpha_t' x)/(\\alpha_t'\\sigma_t^2
    - \\alpha_t\\sigma_t\\sigma_t')` (linear path: :math:`(t\\,u_t(x) - x)/(1 - t)`).

    Args:
        velocity: :math:`u_t(x)`, shaped like ``x``.
        x: points ``(B, *shape)``.
        t: time(s) where :math:`\\alpha_t'\\sigma_t^2 \\ne \\alpha_t\\sigma_t\\sigma_t'` (for the linear path with
            :math:`\\sigma_{min} = 0`: t < 1, where the noise has not vanished).
        path: the :class:`GaussianPath`.

    Returns:
        ``(B, *shape)`` in x's dtype and device (per data unit).

    Raises:
        ValueError: ``velocity`` not shaped like ``x``; ``t`` outside the path's interval or where the
            denominator vanishes; ``path`` not a :class:`GaussianPath`.
    """
    _check_data("x", x)
    _check_same_shape("x", x, "velocity", velocity)
    alpha, d_alpha, c = _velocity_score_coefficients(x, t, path)
    if not torch.all(c != 0):
        raise ValueError("t: the score is not determined by the velocity where sigma_t = 0 (t = 1 without sigma_min)")
    return (alpha * velocity - d_alpha * x) / c


# ------------------------------------------------------------------------------------ samplers
def _check_time_interval(t_start, t_end) -> None:
    for name, value in (("t_start", t_start), ("t_end", t_end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite float, got {value!r}")


def _ode_sample(method: str, v_model: VectorField, x: torch.Tensor, n_steps: int, t_start: float, t_end: float,
                return_trajectory: bool, progress: bool) -> torch.Tensor:
    _check_data("x", x)
    _check_steps(n_steps)
    _check_time_interval(t_start, t_end)
    h = (t_end - t_start) / n_steps
    trajectory = [x] if return_trajectory else None
    for k in tqdm(range(n_steps), desc=method.capitalize(), disable=not progress):
        t = t_start + k * h
        v = _model_output("v_model", v_model(x, _batch_times(t, x)), x)
        if method == "euler":
            x = x + h * v
        else:
            x_euler = x + h * v
            t_next = t_end if k == n_steps - 1 else t_start + (k + 1) * h
            v_next = _model_output("v_model", v_model(x_euler, _batch_times(t_next, x)), x)
            x = x + 0.5 * h * (v + v_next)
        if trajectory is not None:
            trajectory.append(x)
    return torch.stack(trajectory) if trajectory is not None else x


@torch.no_grad()
def euler_sample(v_model: VectorField, x: torch.Tensor, n_steps: int, t_start: float = 0.0, t_end: float = 1.0,
                 return_trajectory: bool = False, progress: bool = True) -> torch.Tensor:
    """Euler's method for :math:`dx/dt = v(x, t)` with ``n_steps`` equal steps from ``t_start`` to ``t_end``.

    :math:`x_{k+1} = x_k + h\\,v(x_k, t_k)`, :math:`t_k = t_{start} + kh`, :math:`h = (t_{end} - t_{start})/n`
    (negative when integrating backwards): one call of ``v_model`` per step, global error O(h) (Hairer, Nørsett &
    Wanner 1993, ch. II: Euler's method has order 1). From :math:`x_0 \\sim N(0, I)` at t = 0 to t = 1 it samples
    a flow-matching model (Lipman et al. 2023, eq. 1). Runs under ``torch.no_grad()``.

    Args:
        v_model: ``v_model(x, t) -> v`` with ``t`` ``(B,)``.
        x: the start, ``(B, *shape)``; the result follows its device and dtype.
        n_steps: number of steps, a positive integer.
        t_start, t_end: the time interval (floats; ``t_end < t_start`` integrates backwards).
        return_trajectory: return every iterate instead of the last.
        progress: show a tqdm bar.

    Returns:
        the end point ``(B, *shape)``, or the trajectory ``(n_steps + 1, B, *shape)`` (entry 0 is ``x``).

    Raises:
        ValueError: ``x`` not a non-empty floating batch, ``n_steps`` not a positive integer, non-finite times,
            ``v_model`` returning another shape.
    """
    return _ode_sample("euler", v_model, x, n_steps, t_start, t_end, return_trajectory, progress)


@torch.no_grad()
def heun_sample(v_model: VectorField, x: torch.Tensor, n_steps: int, t_start: float = 0.0, t_end: float = 1.0,
                return_trajectory: bool = False, progress: bool = True) -> torch.Tensor:
    """Heun's method (the explicit trapezoidal rule) for :math:`dx/dt = v(x, t)` with ``n_steps`` equal steps.

    :math:`\\tilde x = x_k + h\\,v(x_k, t_k)`, :math:`x_{k+1} = x_k + \\frac h2\\big(v(x_k, t_k) + v(\\tilde x,
    t_{k+1})\\big)`: two calls of ``v_model`` per step, global error O(h²) (Hairer, Nørsett & Wanner 1993,
    ch. II: Heun's method has order 2; the sampler of Karras et al. 2022, Algorithm 1). Runs under ``torch.no_grad()``.

    Args:
        v_model: ``v_model(x, t) -> v`` with ``t`` ``(B,)``.
        x: the start, ``(B, *shape)``; the result follows its device and dtype.
        n_steps: number of steps, a positive integer.
        t_start, t_end: the time interval (floats; ``t_end < t_start`` integrates backwards).
        return_trajectory: return every iterate instead of the last.
        progress: show a tqdm bar.

    Returns:
        the end point ``(B, *shape)``, or the trajectory ``(n_steps + 1, B, *shape)`` (entry 0 is ``x``).

    Raises:
        ValueError: as :func:`euler_sample`.
    """
    return _ode_sample("heun", v_model, x, n_steps, t_start, t_end, return_trajectory, progress)


# ----------------------------------------------------------------------------------- couplings
def _flat_pair(x0: torch.Tensor, x1: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    _check_data("x0", x0)
    _check_data("x1", x1)
    if x0.shape[1:] != x1.shape[1:]:
        raise ValueError(f"x0 and x1 must hold points of one shape, got {tuple(x0.shape[1:])} and "
                         f"{tuple(x1.shape[1:])}")
    return (x0.detach().flatten(1).double().cpu().numpy(), x1.detach().flatten(1).double().cpu().numpy())


def ot_plan(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """The exact optimal-transport plan between two minibatches for the squared Euclidean cost.

    :math:`\\pi^* = \\arg\\min_{\\pi \\in \\Pi(a, b)} \\sum_{ij}\\pi_{ij}\\|x_0^i - x_1^j\\|^2` with uniform marginals
    :math:`a = 1/n`, :math:`b = 1/m`: the discrete 2-Wasserstein problem that minibatch OT-CFM solves on every batch
    (Tong et al. 2024, OT-CFM), computed by POT's network simplex ``ot.emd`` (Flamary et al. 2021).
    For n = m the optimum is a permutation matrix divided by n (a vertex of the Birkhoff polytope).

    Args:
        x0: source points ``(n, *shape)``; x1: target points ``(m, *shape)`` (flattened for the cost).

    Returns:
        float64 CPU tensor ``(n, m)``, non-negative, rows summing to 1/n and columns to 1/m.

    Raises:
        ValueError: ``x0`` or ``x1`` not non-empty floating batches, or points of different shapes.
        RuntimeError: the network simplex stopped before the optimum (its iteration limit, 10^7).
    """
    import ot  # POT; imported here because it takes seconds to load (as in dgmcourse.divergences)

    a, b = _flat_pair(x0, x1)
    cost = ot.dist(a, b, metric="sqeuclidean")
    plan, log = ot.emd(np.full(len(a), 1.0 / len(a)), np.full(len(b), 1.0 / len(b)), np.ascontiguousarray(cost),
                       numItermax=10_000_000, log=True)
    if log["result_code"] != 1:
        raise RuntimeError(f"ot.emd did not find the optimal plan: {log['warning']}")
    return torch.from_numpy(np.asarray(plan, dtype=np.float64))


def ot_coupling(x0: torch.Tensor, x1: torch.Tensor, replace: bool = False,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Minibatch optimal-transport pairs :math:`(x_0, x_1) \\sim \\pi^*` for OT-CFM (Tong et al. 2024).

    Tong et al. draw each training pair from the minibatch plan :func:`ot_plan` instead of pairing noise and data
    independently; the conditional paths then cross less, the marginal field is straighter and fewer ODE steps
    suffice. With ``replace=False`` (equal batch sizes) the plan is a permutation and every point is used once:
    ``x0`` is reordered so that row i is transported to ``x1[i]``. With ``replace=True``, ``len(x0)`` index pairs
    are drawn from :math:`\\pi^*` with replacement, as their OT-CFM sampler does (any batch sizes).

    Args:
        x0: noise (source) points ``(n, *shape)``.
        x1: data (target) points ``(m, *shape)``; n = m unless ``replace``.
        replace: draw the pairs from the plan (True) or return the permutation (False).
        generator: optional ``torch.Generator`` on ``x0``'s device, for the draws when ``replace``.

    Returns:
        ``(x0_paired, x1_paired)``: with ``replace=False`` ``(x0[perm], x1)``; with ``replace=True`` two ``(n, *shape)``
        tensors of drawn pairs.

    Raises:
        ValueError: as :func:`ot_plan`; n != m without ``replace``.
        RuntimeError: as :func:`ot_plan`; without ``replace``, if the plan is not a permutation (POT's network
            simplex returns a vertex of the Birkhoff polytope, which is one).
    """
    if not replace and len(x0) != len(x1):
        raise ValueError(f"x0 and x1 must have equal batch sizes without replace, got {len(x0)} and {len(x1)}")
    plan = ot_plan(x0, x1)
    if replace:
        flat = plan.flatten().float().to(x0.device)
        index = torch.multinomial(flat, len(x0), replacement=True, generator=generator).cpu()
        rows, cols = index // plan.shape[1], index % plan.shape[1]
        return x0[rows.to(x0.device)], x1[cols.to(x1.device)]
    perm = plan.argmax(0)  # perm[j] = the source point sent to x1[j]
    if not torch.equal(torch.sort(perm).values, torch.arange(len(x0))):  # pragma: no cover - emd returns a vertex
        raise RuntimeError("the optimal plan is not a permutation; use replace=True")
    return x0[perm.to(x0.device)], x1


@torch.no_grad()
def reflow_coupling(v_model: VectorField, x0: torch.Tensor, n_steps: int = 100, method: str = "heun",
                    progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Rectified flow's reflow coupling: the pairs :math:`(z_0, z_1)` with :math:`z_1` the ODE image of :math:`z_0`.

    Liu, Gong & Liu (2023), Algorithm 1 ("Reflow"): after training :math:`v` on independent pairs, solve
    :math:`dz/dt = v(z, t)` from :math:`z_0 \\sim N(0, I)` at t = 0 to t = 1 and train the next rectified flow on
    :math:`(z_0, z_1)` (with :func:`cfm_loss`, ``x0=z0``, ``linear_path()``). The new coupling's straight-line
    paths cross less (they never cross for the exact flow), so the next field is straighter and needs fewer steps;
    its convex transport costs do not increase (Liu, Gong & Liu 2023, sec. 3).

    Args:
        v_model: the trained field ``v_model(x, t) -> v``.
        x0: the noise ``(B, *shape)``.
        n_steps: ODE steps, a positive integer.
        method: ``"heun"`` (:func:`heun_sample`) or ``"euler"`` (:func:`euler_sample`).
        progress: show a tqdm bar.

    Returns:
        ``(x0, x1)``, both ``(B, *shape)``; ``x1`` is detached.

    Raises:
        ValueError: unknown ``method``, or as :func:`euler_sample`.
    """
    if method not in _SAMPLERS:
        raise ValueError(f"method must be one of {_SAMPLERS}, got {method!r}")
    return x0, _ode_sample(method, v_model, x0, n_steps, 0.0, 1.0, False, progress)


# ------------------------------------------------------------------------------- straightness
def straightness(trajectory: torch.Tensor, t_start: float = 0.0, t_end: float = 1.0) -> torch.Tensor:
    """How far a sampled trajectory is from a straight line travelled at constant speed, per sample.

    Liu, Gong & Liu (2023), sec. 3, measure a flow by its straightness
    :math:`S(Z) = \\int_0^1 E\\|(Z_1 - Z_0) - \\dot Z_t\\|^2 dt`, zero exactly when every trajectory is a straight
    line at constant speed (then one Euler step is exact); reflow decreases it. For a trajectory
    :math:`x_0, \\dots, x_K` on the uniform grid :math:`t_k = t_{start} + kh` (what :func:`euler_sample` and
    :func:`heun_sample` return with ``return_trajectory=True``) this is the integral for the piecewise-linear path
    through its points,

    .. math:: S = \\frac{1}{\\Delta}\\sum_{k=0}^{K-1} h\\,\\Big\\|\\frac{x_{k+1} - x_k}{h}
              - \\frac{x_K - x_0}{\\Delta}\\Big\\|^2, \\qquad \\Delta = t_{end} - t_{start},\\ h = \\Delta / K,

    the mean squared deviation of the segment velocities from the chord's velocity (Liu et al.'s
    :math:`Z_1 - Z_0` for :math:`\\Delta = 1`). One segment gives 0; a half circle of radius r travelled at
    constant angular speed in unit time gives :math:`r^2(\\pi^2 - 4)` as K grows. Average over the batch for
    :math:`S(Z)`.

    Args:
        trajectory: ``(K + 1, B, *shape)`` points, K >= 1.
        t_start, t_end: the times of the first and last points (floats, different).

    Returns:
        ``(B,)`` in (data units per unit time)², float64.

    Raises:
        ValueError: ``trajectory`` not a floating tensor ``(K + 1, B, *shape)`` with K >= 1 and B >= 1;
            ``t_start``, ``t_end`` not finite or equal.
    """
    if not torch.is_tensor(trajectory) or not trajectory.is_floating_point() or trajectory.dim() < 3:
        got = tuple(trajectory.shape) if torch.is_tensor(trajectory) else type(trajectory).__name__
        raise ValueError(f"trajectory must be a floating tensor (K + 1, B, *shape), got {got}")
    if trajectory.shape[0] < 2 or trajectory.shape[1] < 1 or trajectory.numel() == 0:
        raise ValueError(f"trajectory must hold K + 1 >= 2 points of B >= 1 samples, "
                         f"got shape {tuple(trajectory.shape)}")
    _check_time_interval(t_start, t_end)
    if t_start == t_end:
        raise ValueError(f"t_start and t_end must differ, got {t_start!r} for both")
    points = trajectory.detach().double().flatten(2)  # (K + 1, B, D)
    duration = float(t_end) - float(t_start)
    h = duration / (len(points) - 1)
    chord = (points[-1] - points[0]) / duration  # (B, D)
    velocities = points.diff(dim=0) / h  # (K, B, D)
    return (velocities - chord).pow(2).sum(-1).sum(0) * h / duration


# ---------------------------------------------------------------------------- a model and its training
class VelocityMLP(nn.Module):
    """An unconditional velocity field :math:`v_\\theta(x, t)`: an MLP on ``[x, embedding(t)]``.

    The time enters by sines and cosines of ``emb // 2`` geometrically spaced frequencies from 1 to 1000 applied to
    t in [0, 1] (Vaswani et al. 2017, Sec. 3.5, as :class:`dgmcourse.diffusion.EpsMLP` and
    :class:`dgmcourse.guidance.ConditionalVelocityMLP`); SiLU activations, so that the field is smooth and its
    divergence (:func:`dgmcourse.sde.exact_divergence`) continuous. The CPU-sized stand-in for the U-Nets of Lipman
    et al. (2023), meant for 2-D points and latent codes.

    Args:
        dim: size of one (flattened) data point.
        hidden: width of the hidden layers; ``n_layers``: their number.
        emb: size of the time embedding, even.

    ``forward(x, t)``: ``x (B, dim)``, ``t (B,)`` times in [0, 1] -> ``(B, dim)``, data units per unit time.

    Raises:
        ValueError: a size not a positive integer or ``emb`` odd; in ``forward``, ``x`` not ``(B, dim)`` or ``t`` not
            ``(B,)``.
    """

    def __init__(self, dim: int, hidden: int = 128, n_layers: int = 3, emb: int = 32):
        super().__init__()
        for name, value in (("dim", dim), ("hidden", hidden), ("n_layers", n_layers), ("emb", emb)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if emb % 2:
            raise ValueError(f"emb must be even (sines and cosines), got {emb}")
        self.dim = dim
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(1000), emb // 2)))
        layers, width = [], dim + emb
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        if not torch.is_tensor(t) or t.shape != (len(x),):
            raise ValueError(f"t must have shape ({len(x)},), got {tuple(getattr(t, 'shape', ()))}")
        angle = t.to(self.freqs.dtype).unsqueeze(1) * self.freqs
        h = torch.cat([x, torch.sin(angle).to(x.dtype), torch.cos(angle).to(x.dtype)], 1)
        return self.net(h)


def train_cfm(model: nn.Module, x1: torch.Tensor, path: GaussianPath, steps: int, batch_size: int = 256,
              lr: float = 2e-3, coupling: str = "independent", x0: torch.Tensor | None = None,
              t_distribution: torch.distributions.Distribution | None = None,
              generator: torch.Generator | None = None, progress: bool = True) -> list[float]:
    """Adam on the conditional flow-matching loss :func:`cfm_loss`, with a choice of coupling of noise and data.

    Each step draws ``batch_size`` rows ``idx`` of ``x1`` with replacement, then noise
    :math:`x_0 \\sim N(0, I)` and uniforms :math:`u \\sim U[0, 1)` (in that order, from ``generator``); the times
    are :math:`t = u`, or :math:`t = F^{-1}(u)` for a ``t_distribution`` with CDF F, e.g. the logit-normal
    ``TransformedDistribution(Normal(m, s), SigmoidTransform())`` of Esser et al. (2024, "Scaling Rectified Flow
    Transformers for High-Resolution Image Synthesis", sec. 3.1), which spends the training on the middle times
    where samples choose their mode (the loss stays minimised by the same marginal field: a time density only
    reweights the times). Then it pairs noise and data:

    * ``"independent"``: as drawn, :math:`q(x_0)q(x_1)` (Lipman et al. 2023, eq. 9; Algorithm 1 of rectified flow,
      Liu, Gong & Liu 2023);
    * ``"ot"``: the noise reordered by the minibatch optimal-transport plan (:func:`ot_coupling`; OT-CFM, Tong et al.
      2024, Algorithm 3);
    * ``"pairs"``: the given ``x0[idx]`` with ``x1[idx]`` (no noise drawn), e.g. the pairs of
      :func:`reflow_coupling` for the next rectified flow (Liu, Gong & Liu 2023, Algorithm 1, "Reflow").

    The learning rate decays linearly from ``lr`` to 0 (as :func:`dgmcourse.guidance.train_conditional_cfm`).

    Args:
        model: ``model(x, t) -> v`` (e.g. :class:`VelocityMLP`), trained in place on its own device, left in eval mode.
        x1: data ``(N, *shape)``.
        path: the probability path (e.g. :func:`linear_path`).
        steps: Adam steps; ``batch_size``: pairs per step; ``lr``: initial learning rate, > 0.
        coupling: ``"independent"``, ``"ot"`` or ``"pairs"``.
        x0: the noise paired with each row of ``x1``, shaped like ``x1``: required for ``"pairs"``, None otherwise.
        t_distribution: a ``torch.distributions.Distribution`` on [0, 1] with an ``icdf`` (drawn by inversion, so
            that ``generator`` fixes the times), or None for U[0, 1).
        generator: a CPU ``torch.Generator`` for the draws (seed 0 when None).
        progress: show a tqdm bar.

    Returns:
        the loss of every step (squared error summed over the data dimensions, batch mean).

    Raises:
        ValueError: ``x1`` not a non-empty floating batch, ``steps``/``batch_size`` not positive integers,
            ``lr`` <= 0, unknown ``coupling``, ``x0`` missing or not shaped like ``x1`` for ``"pairs"`` (or given
            for another coupling), ``t_distribution`` not a distribution with an ``icdf`` into [0, 1], or as
            :func:`cfm_loss`.
    """
    _check_data("x1", x1)
    _check_training(steps, batch_size, lr)
    if coupling not in _COUPLINGS:
        raise ValueError(f"coupling must be one of {_COUPLINGS}, got {coupling!r}")
    if coupling == "pairs":
        if x0 is None:
            raise ValueError("x0 must be given (the noise of each pair) for coupling='pairs'")
        _check_same_shape("x1", x1, "x0", x0)
    elif x0 is not None:
        raise ValueError(f"x0 is only used with coupling='pairs', got coupling={coupling!r}")
    if t_distribution is not None:
        _check_time_distribution(t_distribution)
    device = next(model.parameters()).device
    generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def step_loss() -> torch.Tensor:
        idx = torch.randint(len(x1), (batch_size,), generator=generator)
        data = x1[idx.to(x1.device)]
        if coupling == "pairs":
            noise = x0[idx.to(x0.device)]
        else:
            noise = torch.randn(data.shape, generator=generator, dtype=data.dtype).to(data.device)
        t = torch.rand(batch_size, generator=generator, dtype=torch.float64)
        if t_distribution is not None:
            t = t_distribution.icdf(t).to(torch.float64)
        if coupling == "ot":
            noise = ot_coupling(noise, data)[0]
        return cfm_loss(model, data.to(device), path, t=t, x0=noise.to(device))

    return _adam_linear_decay(model, step_loss, steps, lr, f"flow matching ({coupling})", progress)


def _check_time_distribution(t_distribution) -> None:
    if not isinstance(t_distribution, torch.distributions.Distribution):
        raise ValueError(f"t_distribution must be a torch.distributions.Distribution, got {t_distribution!r}")
    try:
        probe = t_distribution.icdf(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    except NotImplementedError:
        raise ValueError(f"t_distribution must have an icdf (times are drawn by inversion), got {t_distribution}")
    if probe.shape != (3,) or probe.isnan().any() or (probe < 0).any() or (probe > 1).any():
        raise ValueError(f"t_distribution must be a scalar distribution on [0, 1], got {t_distribution}")


def _check_training(steps, batch_size, lr) -> None:
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")


def _adam_linear_decay(model: nn.Module, step_loss: Callable[[], torch.Tensor], steps: int, lr: float, desc: str,
                       progress: bool) -> list[float]:
    """Adam on ``step_loss()`` for ``steps`` steps, lr decayed linearly from ``lr`` to 0; the model left in eval."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1 - i / steps)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc=desc, disable=not progress):
        loss = step_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        decay.step()
        losses.append(loss.item())
    model.eval()
    return losses
