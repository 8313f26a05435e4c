"""Generative adversarial networks: losses, theory on 1-D densities, toy data, training loops.

Notation follows the course (seed lecture 9): data density :math:`\\pi(x)`, model
:math:`p(x|\\theta)` given by the generator :math:`x = G(z)`, discriminator :math:`D(x)`,

.. math:: V(G, D) = \\mathbb{E}_{\\pi(x)} \\log D(x) + \\mathbb{E}_{p(z)} \\log(1 - D(G(z))).

Discriminators here output *logits* :math:`l`, with :math:`D = \\sigma(l)`; every loss is
computed from logits with ``softplus`` (``-log σ(l) = softplus(-l)``,
``-log(1 - σ(l)) = softplus(l)``) so that it stays finite when D is confident.

Contents
* Losses: :func:`discriminator_loss`, :func:`generator_loss`, :func:`wasserstein_critic_loss`,
  :func:`wasserstein_generator_loss`, :func:`gradient_penalty`, :func:`r1_penalty`, :func:`clip_weights`,
  :func:`feature_matching_loss`, :class:`HistoricalAverage`, :func:`pack`.
* Theory on densities tabulated on a uniform 1-D grid: :func:`optimal_discriminator`,
  :func:`gan_value` (JSD and KL on grids live in :mod:`dgmcourse.divergences`).
* Toy data (PacGAN's conventions, Lin et al. 2018 §5): :func:`ring_of_gaussians`,
  :func:`grid_of_gaussians`, :func:`mode_coverage`, :func:`mode_reverse_kl`.
* Models and loops: :class:`ToyGenerator`, :class:`ToyDiscriminator`, :func:`train_toy_gan`,
  :class:`DCGANGenerator`, :class:`DCGANDiscriminator`, :func:`train_dcgan`.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F
from scipy.special import xlogy
from tqdm.auto import tqdm

from .device import get_device

LOG4 = math.log(4.0)
RING_N_MODES = 8
RING_RADIUS = 1.0
RING_SIGMA = 0.01
GRID_COORDS = (-4.0, -2.0, 0.0, 2.0, 4.0)
GRID_SIGMA = 0.05
DENSITY_TOL = 1e-3
_GENERATOR_KINDS = ("minimax", "non_saturating")
_TOY_LOSSES = ("minimax", "non_saturating", "wgan", "wgan-gp")


# ----------------------------------------------------------------------------- losses
def _check_logits(name: str, t: torch.Tensor) -> None:
    if not torch.is_tensor(t) or not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {type(t).__name__}")
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty")


def _check_pair(a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    _check_logits(a_name, a)
    _check_logits(b_name, b)
    if a.shape != b.shape:
        raise ValueError(f"{a_name} and {b_name} must have the same shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                       label_smoothing: float = 0.0) -> torch.Tensor:
    """Discriminator loss :math:`-V(G, D)` estimated on a batch, from logits.

    .. math:: \\mathcal{L}_D = -\\frac1B\\sum_i [(1-\\alpha)\\log D(x_i) + \\alpha\\log(1-D(x_i))]
              - \\frac1B\\sum_i \\log(1 - D(G(z_i)))

    with :math:`D = \\sigma(\\text{logit})` (Goodfellow et al. 2014, eq. 1). One-sided label
    smoothing (Salimans et al. 2016, §3.4) uses target :math:`1-\\alpha` for real samples
    only; its optimum is :math:`D^* = (1-\\alpha)\\pi / (\\pi + p)`.

    Args:
        real_logits: logits of D on data, any shape (e.g. ``(B,)`` or ``(B, 1)``).
        fake_logits: logits of D on generated samples, same shape as ``real_logits``.
        label_smoothing: :math:`\\alpha \\in [0, 1)`.

    Returns:
        scalar tensor, nats; equals :math:`\\log 4` when D outputs 1/2 everywhere.

    Raises:
        ValueError: logits not floating tensors, empty or of different shapes;
            ``label_smoothing`` outside [0, 1).
    """
    _check_pair("real_logits", real_logits, "fake_logits", fake_logits)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing!r}")
    real = (1.0 - label_smoothing) * F.softplus(-real_logits) + label_smoothing * F.softplus(real_logits)
    return real.mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor, kind: str = "non_saturating") -> torch.Tensor:
    """Generator loss from the discriminator's logits on generated samples.

    * ``"minimax"``: :math:`\\frac1B\\sum_i \\log(1 - D(G(z_i)))` -- the term of V that G
      minimises (Goodfellow et al. 2014, eq. 1); its gradient vanishes when D confidently
      rejects the samples (:math:`d/dl = -\\sigma(l) \\to 0` as :math:`l \\to -\\infty`).
    * ``"non_saturating"``: :math:`-\\frac1B\\sum_i \\log D(G(z_i))` (Goodfellow et al. 2014, §3;
      gradient :math:`-(1-\\sigma(l)) \\to -1`).

    Args:
        fake_logits: logits of D on generated samples, any shape.
        kind: ``"minimax"`` or ``"non_saturating"``.

    Returns:
        scalar tensor, nats.

    Raises:
        ValueError: ``fake_logits`` not a non-empty floating tensor, or unknown ``kind``.
    """
    _check_logits("fake_logits", fake_logits)
    if kind == "minimax":
        return -F.softplus(fake_logits).mean()
    if kind == "non_saturating":
        return F.softplus(-fake_logits).mean()
    raise ValueError(f"kind must be one of {_GENERATOR_KINDS}, got {kind!r}")


def wasserstein_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN critic loss :math:`\\mathbb{E}[f(G(z))] - \\mathbb{E}_{\\pi}[f(x)]` (Arjovsky et al. 2017, eq. 3).

    Minimising it maximises the Kantorovich-Rubinstein estimate of the Wasserstein-1
    distance over (approximately) 1-Lipschitz critics :math:`f`.

    Args:
        real_scores, fake_scores: critic outputs (unbounded scores), same shape.

    Returns:
        scalar tensor (units of the data's distance; not nats).

    Raises:
        ValueError: inputs not non-empty floating tensors of the same shape.
    """
    _check_pair("real_scores", real_scores, "fake_scores", fake_scores)
    return fake_scores.mean() - real_scores.mean()


def wasserstein_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN generator loss :math:`-\\mathbb{E}[f(G(z))]` (Arjovsky et al. 2017, Algorithm 1).

    Args:
        fake_scores: critic outputs on generated samples, any shape.

    Returns:
        scalar tensor.

    Raises:
        ValueError: ``fake_scores`` not a non-empty floating tensor.
    """
    _check_logits("fake_scores", fake_scores)
    return -fake_scores.mean()


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP penalty :math:`\\mathbb{E}_{\\hat x}[(\\|\\nabla_{\\hat x} f(\\hat x)\\|_2 - 1)^2]`, without λ.

    :math:`\\hat x = \\epsilon x + (1-\\epsilon)\\tilde x`, :math:`\\epsilon \\sim U[0,1]` drawn per
    sample, :math:`x` real and :math:`\\tilde x` generated (Gulrajani et al. 2017, eq. 3 and
    Algorithm 1). The graph is kept (``create_graph=True``) so the penalty can be
    back-propagated into the critic's parameters; ``fake`` is detached.

    Args:
        critic: module or function mapping ``(B, *shape)`` to scores ``(B,)`` or ``(B, 1)``.
        real, fake: samples ``(B, *shape)`` of the same shape.
        generator: optional ``torch.Generator`` for :math:`\\epsilon` (on the samples' device).

    Returns:
        scalar tensor.

    Raises:
        ValueError: ``real``/``fake`` not non-empty floating tensors of the same shape, or
            the critic's output has not one score per sample.
    """
    _check_pair("real", real, "fake", fake)
    eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(eps_shape, generator=generator, device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)
    if scores.numel() != real.shape[0]:
        raise ValueError(f"critic must return one score per sample ({real.shape[0]}), "
                         f"got shape {tuple(scores.shape)}")
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 penalty :math:`\\mathbb{E}_{\\pi(x)}\\|\\nabla_x l(x)\\|_2^2` on real data, without the factor γ/2.

    Mescheder, Geiger & Nowozin 2018, "Which Training Methods for GANs do actually Converge?",
    ICML, eq. 9: adding :math:`\\frac{\\gamma}{2}` times this to the discriminator loss penalises
    the discriminator's gradient on the data, which makes simultaneous gradient descent converge
    locally where plain GAN training oscillates around sharp data modes. :math:`l` are the
    discriminator's logits; the graph is kept (``create_graph=True``) so the penalty can be
    back-propagated into the discriminator's parameters.

    Args:
        real_logits: logits ``(B,)`` or ``(B, 1)`` computed from ``real``.
        real: the real samples ``(N, *shape)`` with ``requires_grad=True`` (``N`` may be
            ``pack_m * B`` for a packed discriminator: then each packed input is one term).

    Returns:
        scalar tensor: the mean over the B logits of the squared gradient norm.

    Raises:
        ValueError: ``real`` does not require gradients, or ``real_logits`` is not a non-empty
            floating tensor with at most one logit per real sample.
    """
    _check_logits("real_logits", real_logits)
    if not real.requires_grad:
        raise ValueError("real must require gradients (call real.requires_grad_() before the discriminator)")
    if real_logits.numel() > real.shape[0]:
        raise ValueError(f"real_logits must have at most one logit per real sample ({real.shape[0]}), "
                         f"got shape {tuple(real_logits.shape)}")
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.pow(2).sum() / real_logits.numel()


@torch.no_grad()
def clip_weights(module: nn.Module, c: float) -> None:
    """Clamp every parameter of ``module`` into :math:`[-c, c]` in place (Arjovsky et al. 2017, Algorithm 1).

    Raises:
        ValueError: ``c`` not positive.
    """
    if not c > 0:
        raise ValueError(f"c must be positive, got {c!r}")
    for p in module.parameters():
        p.clamp_(-c, c)


def feature_matching_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """Feature matching :math:`\\|\\mathbb{E}_{\\pi} d(x) - \\mathbb{E}_{p(z)} d(G(z))\\|_2^2` (Salimans et al. 2016, §3.1).

    Args:
        real_features: intermediate-layer features of D on data, ``(B, F)``.
        fake_features: the same features on generated samples, ``(B', F)``.

    Returns:
        scalar tensor: squared Euclidean distance between the batch means.

    Raises:
        ValueError: inputs not 2-D floating tensors with the same number of features.
    """
    _check_logits("real_features", real_features)
    _check_logits("fake_features", fake_features)
    if real_features.dim() != 2 or fake_features.dim() != 2 or real_features.shape[1] != fake_features.shape[1]:
        raise ValueError("real_features and fake_features must be (B, F) with the same F, got "
                         f"{tuple(real_features.shape)} and {tuple(fake_features.shape)}")
    return (real_features.mean(0) - fake_features.mean(0)).pow(2).sum()


class HistoricalAverage:
    """Historical averaging penalty :math:`\\|\\theta - \\frac1T\\sum_{t=1}^T \\theta_t\\|_2^2` (Salimans et al. 2016, §3.3).

    Keeps the running mean of a module's parameters over the :meth:`update` calls.
    Usage: add ``weight * avg.penalty()`` to the player's loss, call ``avg.update()`` after
    each optimiser step.
    """

    def __init__(self, module: nn.Module) -> None:
        self.params = [p for p in module.parameters()]
        self.mean = [p.detach().clone() for p in self.params]
        self.count = 1

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current parameters into the running mean."""
        self.count += 1
        for m, p in zip(self.mean, self.params):
            m.add_((p.detach() - m) / self.count)

    def penalty(self) -> torch.Tensor:
        """Scalar :math:`\\sum \\|\\theta - \\bar\\theta\\|^2`, differentiable in the current parameters."""
        return sum((p - m).pow(2).sum() for p, m in zip(self.params, self.mean))


def pack(x: torch.Tensor, m: int) -> torch.Tensor:
    """PacGAN packing: concatenate ``m`` consecutive samples into one discriminator input (Lin et al. 2018, §3).

    Args:
        x: samples ``(B, *shape)``; ``B`` divisible by ``m``.
        m: packing degree (1 = no packing).

    Returns:
        ``(B // m, m * prod(shape))``.

    Raises:
        ValueError: ``m`` < 1 or ``B`` not divisible by ``m``.
    """
    if not isinstance(m, int) or m < 1:
        raise ValueError(f"m must be a positive integer, got {m!r}")
    if x.shape[0] % m:
        raise ValueError(f"the batch size of x ({x.shape[0]}) must be divisible by m={m}")
    return x.reshape(x.shape[0] // m, -1)


# ------------------------------------------------------------------- theory on a 1-D grid
def _as_array(name: str, a) -> np.ndarray:
    arr = np.asarray(a.detach().cpu().numpy() if torch.is_tensor(a) else a, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError(f"{name} must be a 1-D array with at least 2 values, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def _density(name: str, p, dx: float, tol: float) -> np.ndarray:
    p = _as_array(name, p)
    if np.any(p < 0):
        raise ValueError(f"{name} must be non-negative")
    mass = p.sum() * dx
    if abs(mass - 1.0) > tol:
        raise ValueError(f"{name} must integrate to 1 (sum * dx) within {tol}, got {mass:.6f}")
    return p


def optimal_discriminator(p_data, p_g) -> np.ndarray:
    """Optimal discriminator :math:`D^*(x) = \\pi(x) / (\\pi(x) + p(x|\\theta))` (Goodfellow et al. 2014, Proposition 1).

    Args:
        p_data: data density :math:`\\pi` at grid points, shape ``(N,)``.
        p_g: model density at the same points, ``(N,)``.

    Returns:
        ``(N,)`` float64 array in [0, 1]; 1/2 where both densities are 0 (any value is
        optimal there).

    Raises:
        ValueError: inputs not 1-D finite arrays of equal shape, or negative.
    """
    p_data, p_g = _as_array("p_data", p_data), _as_array("p_g", p_g)
    if p_data.shape != p_g.shape:
        raise ValueError(f"p_data and p_g must have the same shape, got {p_data.shape} and {p_g.shape}")
    if np.any(p_data < 0) or np.any(p_g < 0):
        raise ValueError("p_data and p_g must be non-negative")
    total = p_data + p_g
    return np.divide(p_data, total, out=np.full_like(total, 0.5), where=total > 0)


def gan_value(D, p_data, p_g, dx: float, tol: float = DENSITY_TOL) -> float:
    """:math:`V(G, D) = \\int \\pi(x)\\log D(x) + p(x|\\theta)\\log(1 - D(x))\\,dx` on a uniform grid (Goodfellow et al. 2014, eq. 1).

    Riemann sum with cell width ``dx`` (as :func:`dgmcourse.divergences.js_divergence`), with
    :math:`0 \\log 0 = 0`. For smooth densities that vanish at the grid's ends the sum is
    spectrally accurate: for N(0, 1), N(1, 1) on ``np.linspace(-12, 13, 20001)`` the error is
    below 1e-9. Together with ``js_divergence(p_data, p_g, dx)`` it shows Theorem 1:
    :math:`V(G, D^*) = 2\\,\\mathrm{JSD}(\\pi \\| p) - \\log 4`.

    Args:
        D: discriminator probabilities at the grid points, ``(N,)`` in [0, 1].
        p_data, p_g: densities at the grid points, ``(N,)``; ``sum * dx`` within ``tol`` of 1.
        dx: grid spacing (> 0).
        tol: tolerance on the total mass (default 1e-3).

    Returns:
        float, nats; ``-inf`` when D is 0 where the data has mass (or 1 where the model has).
        In float64, :func:`optimal_discriminator` rounds to exactly 1 where
        :math:`\\pi / p > 10^{16}`; keep the grid where that ratio stays smaller.

    Raises:
        ValueError: shapes differ, ``dx`` <= 0, negative densities, densities whose total mass
            differs from 1 by more than ``tol``, or ``D`` outside [0, 1].
    """
    if not (dx > 0 and math.isfinite(dx)):
        raise ValueError(f"dx must be a positive grid spacing, got {dx!r}")
    p_data, p_g = _density("p_data", p_data, dx, tol), _density("p_g", p_g, dx, tol)
    D = _as_array("D", D)
    if not D.shape == p_data.shape == p_g.shape:
        raise ValueError(f"D, p_data and p_g must have the same shape, got {D.shape}, {p_data.shape}, {p_g.shape}")
    if np.any(D < 0) or np.any(D > 1):
        raise ValueError("D must hold probabilities in [0, 1]")
    with np.errstate(divide="ignore"):
        return float(np.sum(xlogy(p_data, D) + xlogy(p_g, 1.0 - D)) * dx)


# ------------------------------------------------------------------------------ toy data
def ring_means(n_modes: int = RING_N_MODES, radius: float = RING_RADIUS) -> torch.Tensor:
    """Means :math:`r(\\cos(2\\pi i/K), \\sin(2\\pi i/K))`, ``i = 0..K-1``, of the ring mixture, ``(K, 2)``.

    PacGAN's 2D-ring (Lin et al. 2018, §5): K = 8, radius 1, σ = 0.01 (:data:`RING_SIGMA`).

    Raises:
        ValueError: ``n_modes`` < 1 or ``radius`` <= 0.
    """
    if n_modes < 1 or not radius > 0:
        raise ValueError(f"n_modes must be >= 1 and radius > 0, got {n_modes!r}, {radius!r}")
    angle = 2 * math.pi * torch.arange(n_modes, dtype=torch.float64) / n_modes
    return (radius * torch.stack([torch.cos(angle), torch.sin(angle)], 1)).float()


def grid_means() -> torch.Tensor:
    """Means :math:`(-4 + 2i, -4 + 2j)`, ``i, j = 0..4``, of PacGAN's 2D-grid (σ = 0.05, :data:`GRID_SIGMA`), ``(25, 2)``."""
    c = torch.tensor(GRID_COORDS)
    return torch.cartesian_prod(c, c)


def sample_mixture(n: int, means: torch.Tensor, sigma: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples ``(n, d)`` of the equal-weight mixture of :math:`N(\\mu_k, \\sigma^2 I)` with means ``(K, d)``.

    Raises:
        ValueError: ``n`` < 1, ``means`` not 2-D, or ``sigma`` <= 0.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if means.dim() != 2:
        raise ValueError(f"means must be (K, d), got {tuple(means.shape)}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    k = torch.randint(len(means), (n,), generator=generator)
    return means[k] + sigma * torch.randn(n, means.shape[1], generator=generator)


def ring_of_gaussians(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples ``(n, 2)`` of the ring of 8 Gaussians (radius 1, σ = 0.01; PacGAN's 2D-ring)."""
    return sample_mixture(n, ring_means(), RING_SIGMA, generator)


def grid_of_gaussians(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples ``(n, 2)`` of the grid of 25 Gaussians at {-4,-2,0,2,4}², σ = 0.05 (PacGAN's 2D-grid)."""
    return sample_mixture(n, grid_means(), GRID_SIGMA, generator)


def _nearest_mode(samples: torch.Tensor, means: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    if not torch.is_tensor(samples) or samples.dim() != 2 or len(samples) == 0:
        raise ValueError(f"samples must be a non-empty (n, d) tensor, got {getattr(samples, 'shape', samples)}")
    if not torch.is_tensor(means) or means.dim() != 2 or means.shape[1] != samples.shape[1]:
        raise ValueError(f"means must be (K, {samples.shape[1]}), got {getattr(means, 'shape', means)}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    dist = torch.cdist(samples.detach().double().cpu(), means.double().cpu())
    d, k = dist.min(1)
    return k, d <= 3 * sigma


def mode_coverage(samples: torch.Tensor, means: torch.Tensor, sigma: float) -> tuple[int, float]:
    """Modes covered and fraction of high-quality samples (Srivastava et al. 2017, VEEGAN §5.1).

    A sample is *high quality* when it lies within 3σ of its nearest mode; a mode is
    *covered* when at least one high-quality sample is nearest to it.

    Args:
        samples: ``(n, d)`` generated samples.
        means: ``(K, d)`` mode centres (e.g. :func:`ring_means`, :func:`grid_means`).
        sigma: the modes' standard deviation (> 0).

    Returns:
        ``(modes_covered, high_quality_fraction)``: int in 0..K and float in [0, 1].

    Raises:
        ValueError: bad shapes or ``sigma`` <= 0.
    """
    k, good = _nearest_mode(samples, means, sigma)
    return int(torch.unique(k[good]).numel()), float(good.double().mean())


def mode_reverse_kl(samples: torch.Tensor, means: torch.Tensor, sigma: float) -> float:
    """Reverse KL between the histogram of modes hit and the uniform mode distribution (PacGAN, Lin et al. 2018, Table 1).

    Each high-quality sample (within 3σ of its nearest mode, as in :func:`mode_coverage`)
    is assigned to its nearest mode; with :math:`\\hat p_k` the fraction of them at mode
    k, the result is :math:`\\sum_k \\hat p_k \\log(K \\hat p_k)`: 0 when every mode gets
    the same share, :math:`\\log K` when all samples sit on one mode.

    Returns:
        float, nats; ``inf`` when there is no high-quality sample.

    Raises:
        ValueError: bad shapes or ``sigma`` <= 0.
    """
    k, good = _nearest_mode(samples, means, sigma)
    if not good.any():
        return math.inf
    p = torch.bincount(k[good], minlength=len(means)).double()
    p = p / p.sum()
    return float(torch.special.xlogy(p, p * len(means)).sum())


# ------------------------------------------------------------------------- toy models
class ToyGenerator(nn.Module):
    """MLP generator :math:`G: \\mathbb{R}^{z} \\to \\mathbb{R}^{d}` with ReLU hidden layers and batch norm.

    Defaults are PacGAN's toy generator: 4 hidden layers of 400 units, z_dim 2, linear output.
    """

    def __init__(self, z_dim: int = 2, x_dim: int = 2, hidden: int = 400, n_layers: int = 4,
                 batch_norm: bool = True) -> None:
        super().__init__()
        self.z_dim = z_dim
        layers, width = [], z_dim
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden)] + ([nn.BatchNorm1d(hidden)] if batch_norm else []) + [nn.ReLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, x_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Samples ``(B, x_dim)`` from noise ``z`` ``(B, z_dim)``."""
        return self.net(z)


class ToyDiscriminator(nn.Module):
    """MLP discriminator (or critic) on ``pack`` concatenated samples, LeakyReLU(0.2) hidden layers.

    Default sizes are PacGAN's (3 hidden layers of 200 units; PacGAN uses maxout units).

    ``forward(x)`` takes ``(B, pack * x_dim)`` and returns logits ``(B,)``;
    ``features(x)`` returns the last hidden layer ``(B, hidden)`` for feature matching.
    """

    def __init__(self, x_dim: int = 2, hidden: int = 200, n_layers: int = 3, pack: int = 1) -> None:
        super().__init__()
        layers, width = [], x_dim * pack
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last hidden layer ``(B, hidden)``."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B,)``."""
        return self.head(self.body(x)).squeeze(-1)


def _optimizer(name: str, params, lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    raise ValueError(f"optimizer must be 'adam' or 'rmsprop', got {name!r}")


def train_toy_gan(generator: nn.Module, discriminator: nn.Module,
                  sample_data: Callable[[int, torch.Generator], torch.Tensor], steps: int,
                  loss: str = "non_saturating", k: int = 1, batch_size: int = 256,
                  lr_g: float = 1e-4, lr_d: float = 1e-4, betas: tuple[float, float] = (0.5, 0.999),
                  optimizer: str = "adam", gp_weight: float = 10.0, clip_value: float = 0.01,
                  label_smoothing: float = 0.0, feature_matching: bool = False,
                  historical_weight: float = 0.0, r1_weight: float = 0.0, pack_m: int = 1,
                  lr_decay: bool = False,
                  z_dim: int | None = None,
                  device: torch.device | None = None, seed: int = 0, progress: bool = True,
                  snapshot_every: int = 0, n_snapshot: int = 1000) -> dict:
    """Alternating GAN training on low-dimensional data (Goodfellow et al. 2014, Algorithm 1).

    Each step does ``k`` discriminator (critic) updates on fresh minibatches of
    ``batch_size`` data and noise samples, then one generator update. Losses:

    * ``"minimax"`` / ``"non_saturating"``: :func:`discriminator_loss` (with
      ``label_smoothing``) and :func:`generator_loss`; ``feature_matching=True`` replaces the
      generator loss by :func:`feature_matching_loss` on ``discriminator.features``.
    * ``"wgan"``: :func:`wasserstein_critic_loss`, weights clipped to ``±clip_value`` after each
      critic step (Arjovsky et al. 2017, Algorithm 1: RMSprop, lr 5e-5, k = 5, c = 0.01).
    * ``"wgan-gp"``: critic loss + ``gp_weight`` × :func:`gradient_penalty` (Gulrajani et al.
      2017, Algorithm 1: Adam lr 1e-4, betas (0, 0.9), k = 5, λ = 10).

    ``historical_weight`` > 0 adds that multiple of the :class:`HistoricalAverage` penalty to
    both players' losses; ``r1_weight`` = γ > 0 adds γ/2 × :func:`r1_penalty` on the real
    minibatch to the discriminator loss (Mescheder et al. 2018); ``pack_m`` > 1 feeds the
    discriminator ``pack_m`` concatenated samples (PacGAN; the discriminator's input size must be
    ``pack_m * d``). ``lr_decay=True`` decays
    both learning rates linearly to 0 over the ``steps``, which sharpens the modes at the end.

    Args:
        generator: maps noise ``(B, z_dim)`` to samples ``(B, d)``.
        discriminator: maps ``(B / pack_m, pack_m * d)`` to logits/scores ``(B / pack_m,)`` or ``(B / pack_m, 1)``.
        sample_data: ``sample_data(n, torch_generator) -> (n, d)`` data samples, e.g. :func:`ring_of_gaussians`.
        steps: generator updates.
        z_dim: noise size; default ``generator.z_dim``.
        seed: seeds the data and noise streams (initialise the networks before calling).
        snapshot_every: every that many steps (and at the end) store ``n_snapshot`` samples
            from a fixed noise batch in ``history["snapshots"]`` as ``(step, (n_snapshot, d))``.

    Returns:
        history dict: ``"d_loss"``, ``"g_loss"`` (one float per step; the last critic step's
        loss including penalties), ``"wasserstein"`` (the last critic step's
        estimate :math:`E f(x) - E f(G(z))` before its update, penalty excluded; WGAN losses only), ``"snapshots"``, ``"time_s"``.

    Raises:
        ValueError: unknown ``loss``/``optimizer``; ``steps``, ``k``, ``batch_size`` < 1;
            ``r1_weight`` < 0; ``batch_size`` not divisible by ``pack_m``; no ``z_dim``; feature matching with a WGAN
            loss or a discriminator without ``features``.
    """
    if loss not in _TOY_LOSSES:
        raise ValueError(f"loss must be one of {_TOY_LOSSES}, got {loss!r}")
    if min(steps, k, batch_size, pack_m) < 1:
        raise ValueError(f"steps, k, batch_size and pack_m must be >= 1, got {steps}, {k}, {batch_size}, {pack_m}")
    if r1_weight < 0:
        raise ValueError(f"r1_weight must be >= 0, got {r1_weight}")
    if batch_size % pack_m:
        raise ValueError(f"batch_size ({batch_size}) must be divisible by pack_m ({pack_m})")
    z_dim = z_dim if z_dim is not None else getattr(generator, "z_dim", None)
    if z_dim is None:
        raise ValueError("z_dim must be given when the generator has no z_dim attribute")
    wgan = loss.startswith("wgan")
    if feature_matching and (wgan or not hasattr(discriminator, "features")):
        raise ValueError("feature_matching needs loss 'minimax'/'non_saturating' and discriminator.features")
    device = device or get_device()
    generator.to(device).train()
    discriminator.to(device).train()
    opt_g = _optimizer(optimizer, generator.parameters(), lr_g, betas)
    opt_d = _optimizer(optimizer, discriminator.parameters(), lr_d, betas)
    schedules = [torch.optim.lr_scheduler.LambdaLR(o, lambda t: 1.0 - t / steps if lr_decay else 1.0)
                 for o in (opt_g, opt_d)]
    hist_g = HistoricalAverage(generator) if historical_weight > 0 else None
    hist_d = HistoricalAverage(discriminator) if historical_weight > 0 else None
    rng = torch.Generator().manual_seed(seed)
    fixed_z = torch.randn(n_snapshot, z_dim, generator=rng).to(device)
    history = {"d_loss": [], "g_loss": [], "wasserstein": [], "snapshots": []}

    def noise() -> torch.Tensor:
        return torch.randn(batch_size, z_dim, generator=rng).to(device)

    def snapshot(step: int) -> None:
        generator.eval()
        with torch.no_grad():
            history["snapshots"].append((step, generator(fixed_z).cpu()))
        generator.train()

    start = time.perf_counter()
    for step in tqdm(range(steps), desc=f"toy GAN ({loss})", disable=not progress):
        for _ in range(k):
            real = sample_data(batch_size, rng).to(device).requires_grad_(r1_weight > 0)
            with torch.no_grad():
                fake = generator(noise())
            r, f = discriminator(pack(real, pack_m)), discriminator(pack(fake, pack_m))
            if wgan:
                d_loss = wasserstein_critic_loss(r, f)
                w_estimate = -d_loss.item()
                if loss == "wgan-gp":
                    d_loss = d_loss + gp_weight * gradient_penalty(discriminator, pack(real, pack_m), pack(fake, pack_m))
            else:
                d_loss = discriminator_loss(r, f, label_smoothing)
            if r1_weight > 0:
                d_loss = d_loss + r1_weight / 2 * r1_penalty(r, real)
            if hist_d is not None:
                d_loss = d_loss + historical_weight * hist_d.penalty()
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            if loss == "wgan":
                clip_weights(discriminator, clip_value)
            if hist_d is not None:
                hist_d.update()
        fake = generator(noise())
        f = discriminator(pack(fake, pack_m))
        if wgan:
            g_loss = wasserstein_generator_loss(f)
            history["wasserstein"].append(w_estimate)
        elif feature_matching:
            real = sample_data(batch_size, rng).to(device)
            g_loss = feature_matching_loss(discriminator.features(pack(real, pack_m)).detach(),
                                           discriminator.features(pack(fake, pack_m)))
        else:
            g_loss = generator_loss(f, loss)
        if hist_g is not None:
            g_loss = g_loss + historical_weight * hist_g.penalty()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        if hist_g is not None:
            hist_g.update()
        for schedule in schedules:
            schedule.step()
        history["d_loss"].append(d_loss.item())
        history["g_loss"].append(g_loss.item())
        if snapshot_every and (step + 1) % snapshot_every == 0 and step + 1 != steps:
            snapshot(step + 1)
    snapshot(steps)
    history["time_s"] = time.perf_counter() - start
    return history


@torch.no_grad()
def sample_toy(generator: nn.Module, n: int, z_dim: int | None = None,
               generator_rng: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples ``(n, d)`` from a toy generator in eval mode (noise :math:`N(0, I)`), on the CPU.

    Raises:
        ValueError: ``n`` < 1 or no ``z_dim``.
    """
    z_dim = z_dim if z_dim is not None else getattr(generator, "z_dim", None)
    if z_dim is None or n < 1:
        raise ValueError(f"need n >= 1 and a z_dim (argument or generator.z_dim), got n={n}, z_dim={z_dim}")
    was_training = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    x = generator(torch.randn(n, z_dim, generator=generator_rng).to(device)).cpu()
    generator.train(was_training)
    return x


# ------------------------------------------------------------------------------ DCGAN
def dcgan_init(module: nn.Module) -> None:
    """Radford et al. (2015, §4) initialisation: conv weights :math:`N(0, 0.02^2)`, batch-norm scale :math:`N(1, 0.02^2)`, biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    """DCGAN generator for 28x28 images (Radford et al. 2015, §3 rules).

    z ``(B, z_dim)`` → transposed conv to 7x7x(2c) → 14x14xc → 28x28x1; batch norm and ReLU
    after every layer except the output, which is tanh (values in [-1, 1]).
    """

    def __init__(self, z_dim: int = 64, channels: int = 32) -> None:
        super().__init__()
        self.z_dim = z_dim
        c = channels
        self.net = nn.Sequential(
            nn.ConvTranspose2d(z_dim, 2 * c, 7, 1, 0, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU(),  # 7x7
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),          # 14x14
            nn.ConvTranspose2d(c, 1, 4, 2, 1), nn.Tanh(),                                             # 28x28
        )
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 1, 28, 28)`` in [-1, 1] from noise ``z`` ``(B, z_dim)``."""
        return self.net(z.reshape(z.shape[0], self.z_dim, 1, 1))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` images ``(n, 1, 28, 28)`` with values in [0, 1] (eval mode, CPU tensor); pass ``z`` to fix the noise."""
        if z is None:
            z = torch.randn(n, self.z_dim, generator=generator)
        was_training = self.training
        self.eval()
        x = (self(z.to(next(self.parameters()).device)).cpu() + 1) / 2
        self.train(was_training)
        return x


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator for 28x28 images (Radford et al. 2015, §3 rules).

    Strided convolutions 28 → 14 → 7 with LeakyReLU(0.2), batch norm on all but the input
    layer, then a 7x7 convolution to one logit. ``features(x)`` is the flattened 7x7x(2c)
    block, used for feature matching.
    """

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        c = channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1), nn.LeakyReLU(0.2),                                      # 14x14
            nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2),  # 7x7
        )
        self.head = nn.Conv2d(2 * c, 1, 7, 1, 0)
        self.apply(dcgan_init)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(B, 49 * 2c)`` of images ``(B, 1, 28, 28)`` in [-1, 1]."""
        return self.body(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B,)`` of images ``(B, 1, 28, 28)`` in [-1, 1]."""
        return self.head(self.body(x)).flatten()


def train_dcgan(generator: DCGANGenerator, discriminator: DCGANDiscriminator, x_train: torch.Tensor,
                epochs: int = 5, batch_size: int = 128, lr: float = 2e-4,
                betas: tuple[float, float] = (0.5, 0.999), label_smoothing: float = 0.0,
                device: torch.device | None = None, seed: int = 0, n_fixed: int = 64,
                progress: bool = True) -> dict:
    """Train a DCGAN with the non-saturating loss and Adam(2e-4, β1 = 0.5) (Radford et al. 2015, §4).

    Args:
        x_train: images ``(N, 1, 28, 28)`` in [0, 1]; mapped to [-1, 1] for the tanh generator.
        epochs, batch_size, lr, betas: optimisation settings (one D and one G step per batch).
        label_smoothing: one-sided label smoothing α for the discriminator (Salimans et al. 2016).
        seed: seeds shuffling and noise (initialise the networks before calling).
        n_fixed: size of the fixed latent batch whose samples are stored after every epoch.

    Returns:
        history dict: ``"d_loss"``, ``"g_loss"`` (per-epoch means, nats), ``"fixed_z"``
        ``(n_fixed, z_dim)``, ``"fixed_samples"`` (list per epoch of ``(n_fixed, 1, 28, 28)`` in [0, 1]),
        ``"time_s"``.

    Raises:
        ValueError: ``x_train`` not ``(N, 1, 28, 28)`` in [0, 1]; ``epochs`` or ``batch_size`` < 1.
    """
    if x_train.dim() != 4 or tuple(x_train.shape[1:]) != (1, 28, 28):
        raise ValueError(f"x_train must be (N, 1, 28, 28), got {tuple(x_train.shape)}")
    if x_train.min() < 0 or x_train.max() > 1:
        raise ValueError("x_train must hold values in [0, 1]")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    device = device or get_device()
    generator.to(device).train()
    discriminator.to(device).train()
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas)
    rng = torch.Generator().manual_seed(seed)
    fixed_z = torch.randn(n_fixed, generator.z_dim, generator=rng)
    history = {"d_loss": [], "g_loss": [], "fixed_z": fixed_z, "fixed_samples": []}
    start = time.perf_counter()
    for _ in tqdm(range(epochs), desc="DCGAN", disable=not progress):
        d_sum = g_sum = 0.0
        batches = torch.randperm(len(x_train), generator=rng).split(batch_size)
        for idx in batches:
            real = (x_train[idx] * 2 - 1).to(device)
            z = torch.randn(len(idx), generator.z_dim, generator=rng).to(device)
            fake = generator(z)
            d_loss = discriminator_loss(discriminator(real), discriminator(fake.detach()), label_smoothing)
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            g_loss = generator_loss(discriminator(fake), "non_saturating")
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
            d_sum, g_sum = d_sum + d_loss.item(), g_sum + g_loss.item()
        history["d_loss"].append(d_sum / len(batches))
        history["g_loss"].append(g_sum / len(batches))
        history["fixed_samples"].append(generator.sample(n_fixed, z=fixed_z))
    history["time_s"] = time.perf_counter() - start
    return history
