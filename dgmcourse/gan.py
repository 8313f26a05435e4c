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
  :func:`feature_matching_loss`, :class:`HistoricalAverage`, :func:`pack`,
  :class:`MinibatchDiscrimination` (Salimans et al. 2016, §3.2), :func:`packed_total_variation` (PacGAN's
  argument, Lin et al. 2018).
* Theory on densities tabulated on a uniform 1-D grid: :func:`optimal_discriminator`,
  :func:`gan_value` (JSD and KL on grids live in :mod:`dgmcourse.divergences`); on a discrete space,
  :func:`function_space_generator_step` (Algorithm 1 in function space, Proposition 2).
* Toy data (PacGAN's conventions, Lin et al. 2018 §5): :func:`ring_of_gaussians`,
  :func:`grid_of_gaussians`, :func:`mode_coverage`, :func:`mode_reverse_kl`.
* Models and loops: :class:`VirtualBatchNorm1d` (virtual batch normalisation), :class:`ToyGenerator`,
  :class:`ToyDiscriminator`, :class:`ToyGANConfig`, :func:`d_step`, :func:`g_step`, :func:`train_toy_gan`,
  :func:`sample_toy`, :func:`rejection_sample` (discriminator rejection sampling),
  :class:`DCGANGenerator`, :class:`DCGANDiscriminator`, :func:`train_dcgan`.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F
from scipy.special import gammaln, xlogy
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
_TOY_OPTIMIZERS = ("adam", "rmsprop")


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
    """Clamp every parameter of ``module`` into :math:`[-c, c]` in place, after an optimiser step.

    Weight clipping keeps a network K-Lipschitz for some K that depends on c: Arjovsky et al. 2017,
    Algorithm 1, clip the WGAN critic to c = 0.01 after each critic update; Manoj, "On the Latent
    Space of Deep Generative Models" (2018), clips a VAE to c = 0.3
    (:func:`dgmcourse.class_radius.train_omega_vae`). Buffers (e.g. batch-norm running statistics)
    are not parameters and are left alone.

    Args:
        module: any module; every tensor of ``module.parameters()`` is changed in place.
        c: the bound, > 0 (in the parameters' units).

    Raises:
        ValueError: ``c`` not positive (or NaN).
    """
    if not c > 0:
        raise ValueError(f"c must be positive, got {c!r}")
    for p in module.parameters():
        p.clamp_(-c, c)


def feature_matching_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """Feature matching :math:`\\|\\mathbb{E}_{\\pi} d(x) - \\mathbb{E}_{p(z)} d(G(z))\\|_2^2`
    (Salimans et al. 2016, §3.1).

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
    """Historical averaging penalty :math:`\\|\\theta - \\frac1T\\sum_{t=1}^T \\theta_t\\|_2^2`
    (Salimans et al. 2016, §3.3).

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


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination layer (Salimans et al. 2016, "Improved Techniques for Training GANs", §3.2).

    A discriminator that scores one sample at a time cannot see that all samples of a batch are the
    same. This layer gives every sample features measuring how close it is to the other samples of its
    minibatch. With the features :math:`f(x_i) \\in \\mathbb{R}^A` of an intermediate layer and a
    learnable tensor :math:`T \\in \\mathbb{R}^{A \\times B_k \\times C}` (``B_k`` = ``n_kernels``,
    ``C`` = ``kernel_dim``), the paper computes

    .. math:: M_i = f(x_i)\\,T \\in \\mathbb{R}^{B_k \\times C},\\qquad
              c_b(x_i, x_j) = \\exp\\big(-\\|M_{i,b} - M_{j,b}\\|_{L_1}\\big),\\qquad
              o(x_i)_b = \\sum_{j=1}^{n} c_b(x_i, x_j),

    the sum running over the whole minibatch of ``n`` samples, :math:`j = i` included (so
    :math:`1 \\le o(x_i)_b \\le n`), and returns :math:`[f(x_i), o(x_i)]`, to be fed to the next layer
    of the discriminator. A batch of identical samples gives :math:`o = n` exactly; samples far apart (in
    the projections :math:`M`) give :math:`o \\approx 1`. As in the paper, real and generated samples
    are passed in separate minibatches, so :math:`o` compares each sample with its own kind.

    Cost: ``n * n * n_kernels * kernel_dim`` operations per call (pairwise L1 distances by
    ``torch.cdist``), memory ``n * n * n_kernels``.

    Args:
        in_features: A, the number of input features (integer >= 1).
        n_kernels: B_k, the number of similarity features added (integer >= 1).
        kernel_dim: C, the size of each projection (integer >= 1).
        init_std: the entries of ``T`` start from :math:`N(0, \\text{init\\_std}^2)`; default
            :math:`1/\\sqrt{A}` (a linear layer's scale). It sets what counts as "close": pairs whose
            projections differ by much more than 1 in L1 contribute :math:`\\approx 0`.
        generator: optional ``torch.Generator`` for the initial ``T`` (default: torch's global stream).

    Attributes:
        T: ``nn.Parameter`` of shape ``(in_features, n_kernels, kernel_dim)``.

    Shapes:
        ``forward(x)``: ``x`` ``(n, A)`` -> ``(n, A + B_k)``; :meth:`similarity` returns
        :math:`o` alone, ``(n, B_k)``.

    Raises:
        ValueError: ``in_features``, ``n_kernels`` or ``kernel_dim`` not an integer >= 1, or ``init_std``
            not positive (on construction); ``x`` not a floating-point ``(n, in_features)`` tensor with
            n >= 1 (on a call).
    """

    def __init__(self, in_features: int, n_kernels: int, kernel_dim: int, init_std: float | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("n_kernels", n_kernels), ("kernel_dim", kernel_dim)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if init_std is None:
            init_std = 1.0 / math.sqrt(in_features)
        if not (isinstance(init_std, (int, float)) and math.isfinite(init_std) and init_std > 0):
            raise ValueError(f"init_std must be a positive number, got {init_std!r}")
        self.in_features, self.n_kernels, self.kernel_dim = int(in_features), int(n_kernels), int(kernel_dim)
        self.T = nn.Parameter(init_std * torch.randn(self.in_features, self.n_kernels, self.kernel_dim,
                                                     generator=generator))

    def similarity(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`o(x_i)_b = \\sum_j \\exp(-\\|M_{i,b} - M_{j,b}\\|_{L_1})`, ``(n, n_kernels)``, each in [1, n].

        Raises:
            ValueError: ``x`` not a floating-point ``(n, in_features)`` tensor with n >= 1.
        """
        if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() != 2 or x.shape[1] != self.in_features \
                or x.shape[0] < 1:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x must be a floating-point tensor (n, {self.in_features}) with n >= 1, got {shape}")
        M = torch.einsum("ia,abc->bic", x, self.T.to(x.dtype))   # (B_k, n, C): M_{i,b} for every kernel b
        l1 = torch.cdist(M, M, p=1)                              # (B_k, n, n): ||M_{i,b} - M_{j,b}||_1
        return torch.exp(-l1).sum(2).T                           # (n, B_k): the sum over j, j = i included

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[f(x_i), o(x_i)]`` for the minibatch ``x`` ``(n, in_features)``: ``(n, in_features + n_kernels)``.

        Raises:
            ValueError: as :meth:`similarity`.
        """
        return torch.cat([x, self.similarity(x)], dim=1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, n_kernels={self.n_kernels}, kernel_dim={self.kernel_dim}"


def _distribution(name: str, p) -> np.ndarray:
    arr = np.asarray(p.detach().cpu().numpy() if torch.is_tensor(p) else p, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 1 or not np.all(np.isfinite(arr)) or np.any(arr < 0) \
            or abs(arr.sum() - 1.0) > 1e-9:
        raise ValueError(f"{name} must be a 1-D array of K >= 1 non-negative probabilities summing to 1 "
                         f"(within 1e-9), got {arr if arr.size <= 10 else f'shape {arr.shape}'}")
    return arr


def packed_total_variation(p, q, m: int) -> float:
    """Exact total variation between the packed distributions :math:`p^{\\otimes m}` and
    :math:`q^{\\otimes m}` of two discrete distributions (Lin, Khetan, Fanti & Oh 2018, "PacGAN: The power
    of two samples in generative adversarial networks", the analysis of packing in total variation).

    A PacGAN discriminator sees packs of ``m`` independent samples, all from the data or all from the
    generator, so it separates the product distributions, whose distance is

    .. math:: d_{TV}(p^{\\otimes m}, q^{\\otimes m}) = \\frac12 \\sum_{x \\in [K]^m}
              \\Big|\\prod_{t=1}^m p_{x_t} - \\prod_{t=1}^m q_{x_t}\\Big|
              = \\frac12 \\sum_{n_1 + \\dots + n_K = m} \\binom{m}{n_1, \\dots, n_K}
              \\Big|\\prod_k p_k^{n_k} - \\prod_k q_k^{n_k}\\Big| .

    A pack's probability depends only on how often each outcome occurs in it, so the sum runs over the
    :math:`\\binom{m+K-1}{K-1}` count vectors :math:`(n_1, \\dots, n_K)` rather than the :math:`K^m`
    packs. Known answers: ``m = 1`` gives :math:`\\frac12\\sum_k |p_k - q_k|`; when ``q`` drops an
    outcome set of ``p``-mass :math:`\\varepsilon` and rescales the rest, the result is
    :math:`1 - (1-\\varepsilon)^m` exactly (the packs that hit the dropped set); always
    :math:`d_{TV}(p, q) \\le d_{TV}(p^{\\otimes m}, q^{\\otimes m}) \\le \\min(1, m\\, d_{TV}(p, q))`.

    Args:
        p, q: probabilities of K outcomes, ``(K,)`` arrays (or lists, tensors), non-negative, each summing
            to 1 within 1e-9.
        m: the packing degree, integer >= 1.

    Returns:
        float in [0, 1] (total variation has no unit).

    Raises:
        ValueError: ``p`` or ``q`` not a valid distribution, different K; ``m`` not an integer >= 1; more
            than 10**6 count vectors (K and m too large to enumerate).
    """
    p, q = _distribution("p", p), _distribution("q", q)
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same number of outcomes K, got {p.size} and {q.size}")
    if not isinstance(m, (int, np.integer)) or isinstance(m, bool) or m < 1:
        raise ValueError(f"m must be an integer >= 1, got {m!r}")
    k = p.size
    if math.comb(m + k - 1, k - 1) > 10**6:
        raise ValueError(f"m={m} with K={k} outcomes gives {math.comb(m + k - 1, k - 1)} count vectors; "
                         "at most 10**6 are enumerated")
    packs = np.array(list(itertools.combinations_with_replacement(range(k), m)))       # one pack per count vector
    counts = np.zeros((len(packs), k))                                                # (N, K): n_1..n_K
    np.add.at(counts, (np.arange(len(packs))[:, None], packs), 1)
    log_coef = math.lgamma(m + 1) - gammaln(counts + 1).sum(1)                        # log multinomial coefficient
    prob_p = np.exp(log_coef + xlogy(counts, p).sum(1))                               # 0 log 0 = 0
    prob_q = np.exp(log_coef + xlogy(counts, q).sum(1))
    return float(min(1.0, 0.5 * np.abs(prob_p - prob_q).sum()))


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


def optimal_discriminator(p_data, p_g, label_smoothing: float = 0.0,
                          fake_label_smoothing: float = 0.0) -> np.ndarray:
    """Optimal discriminator :math:`D^*(x) = \\pi(x) / (\\pi(x) + p(x|\\theta))`
    (Goodfellow et al. 2014, Proposition 1), optionally for smoothed labels.

    With real labels smoothed to :math:`1-\\alpha` (one-sided label smoothing, Salimans et al. 2016,
    §3.4) and fake labels raised to :math:`\\beta`, D maximises pointwise
    :math:`[(1-\\alpha)\\pi + \\beta p]\\log D + [\\alpha\\pi + (1-\\beta)p]\\log(1-D)`, whose maximiser is

    .. math:: D^*(x) = \\frac{(1-\\alpha)\\pi(x) + \\beta p(x|\\theta)}{\\pi(x) + p(x|\\theta)}

    (Salimans et al. 2016, §3.4: with :math:`\\beta > 0`, :math:`D^* \\to \\beta` where
    :math:`\\pi = 0`, so samples there are not pushed towards the data; hence smoothing is one-sided).
    ``label_smoothing=0`` and ``fake_label_smoothing=0`` give Proposition 1 exactly.

    Args:
        p_data: data density :math:`\\pi` at grid points, shape ``(N,)``.
        p_g: model density at the same points, ``(N,)``.
        label_smoothing: :math:`\\alpha \\in [0, 1)`, the real samples' target is :math:`1-\\alpha`.
        fake_label_smoothing: :math:`\\beta \\in [0, 1)`, the generated samples' target.

    Returns:
        ``(N,)`` float64 array in [0, 1]; :math:`(1-\\alpha+\\beta)/2` where both densities are 0 (any
        value is optimal there; 1/2 without smoothing).

    Raises:
        ValueError: inputs not 1-D finite arrays of equal shape, or negative; ``label_smoothing`` or
            ``fake_label_smoothing`` outside [0, 1).
    """
    p_data, p_g = _as_array("p_data", p_data), _as_array("p_g", p_g)
    if p_data.shape != p_g.shape:
        raise ValueError(f"p_data and p_g must have the same shape, got {p_data.shape} and {p_g.shape}")
    if np.any(p_data < 0) or np.any(p_g < 0):
        raise ValueError("p_data and p_g must be non-negative")
    for name, value in (("label_smoothing", label_smoothing), ("fake_label_smoothing", fake_label_smoothing)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
    total = p_data + p_g
    if label_smoothing == 0.0 and fake_label_smoothing == 0.0:
        return np.divide(p_data, total, out=np.full_like(total, 0.5), where=total > 0)
    target = (1.0 - label_smoothing) * p_data + fake_label_smoothing * p_g
    both_zero = 0.5 * (1.0 - label_smoothing + fake_label_smoothing)
    return np.divide(target, total, out=np.full_like(total, both_zero), where=total > 0)


def gan_value(D, p_data, p_g, dx: float, tol: float = DENSITY_TOL) -> float:
    """:math:`V(G, D) = \\int \\pi(x)\\log D(x) + p(x|\\theta)\\log(1 - D(x))\\,dx` on a uniform grid
    (Goodfellow et al. 2014, eq. 1).

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


def function_space_generator_step(p_data, p_g, lr: float) -> np.ndarray:
    """One update of the model distribution *itself* towards the data, with the discriminator at its
    optimum: the function-space Algorithm 1 of Goodfellow et al. 2014, Proposition 2, on a discrete space.

    For a fixed D, :math:`V(G, D) = \\sum_k \\pi_k \\log D_k + \\sum_k p_k \\log(1 - D_k)` is linear
    (hence convex) in the model masses :math:`p`, with gradient :math:`\\log(1 - D_k)`. The criterion
    :math:`C(p) = \\sup_D V(G, D) = V(G, D^*_G) = 2\\,\\mathrm{JSD}(\\pi \\| p) - \\log 4` is a supremum of
    convex functions, hence convex, and its (sub)gradient at :math:`p` is the gradient of
    :math:`V(G, \\cdot)` at the maximiser :math:`D^*_G = \\pi / (\\pi + p)` (Goodfellow et al. 2014, proof of
    Proposition 2):

    .. math:: g_k = \\log\\big(1 - D^*_G(k)\\big) = \\log \\frac{p_k}{\\pi_k + p_k} .

    The step is exponentiated gradient descent (mirror descent on the simplex with the entropy; Kivinen &
    Warmuth 1997, "Exponentiated Gradient versus Gradient Descent for Linear Predictors"), which keeps
    :math:`p` a distribution:

    .. math:: p_k \\leftarrow \\frac{p_k\\, e^{-\\eta g_k}}{\\sum_j p_j\\, e^{-\\eta g_j}}
              = \\frac{p_k^{1-\\eta} (\\pi_k + p_k)^{\\eta}}{\\sum_j p_j^{1-\\eta} (\\pi_j + p_j)^{\\eta}} .

    Known answers: ``lr = 1`` gives :math:`(\\pi + p)/2` exactly, so :math:`\\mathrm{JSD}(\\pi \\| p)` at
    least halves per step (JSD is convex in its second argument). ``C`` is 1-smooth relative to the
    entropy (its Hessian :math:`\\pi_k / (p_k(\\pi_k + p_k))` is at most :math:`1/p_k`), so for
    :math:`0 < \\eta \\le 1` the steps decrease C monotonically and after t steps
    :math:`2\\,\\mathrm{JSD}(\\pi \\| p_t) \\le KL(\\pi \\| p_0) / (\\eta t)` (Lu, Freund & Nesterov 2018,
    "Relatively smooth convex optimization by first-order methods, and applications": the O(1/t) rate of
    their primal gradient scheme).

    Args:
        p_data: data masses :math:`\\pi`, ``(K,)`` (array, list or tensor), K >= 2, non-negative, summing
            to 1 within 1e-6.
        p_g: model masses :math:`p`, ``(K,)``, strictly positive (a multiplicative step never leaves
            ``p_g``'s support), summing to 1 within 1e-6.
        lr: step size :math:`\\eta > 0` (unitless; :math:`\\eta \\le 1` for the guarantees above).

    Returns:
        the updated masses, ``(K,)`` float64, positive, summing to 1.

    Raises:
        ValueError: ``p_data`` or ``p_g`` not 1-D finite arrays of at least 2 masses, of different shapes,
            negative, not summing to 1, or ``p_g`` with a zero; ``lr`` not a positive finite number.
    """
    p_data, p_g = _as_array("p_data", p_data), _as_array("p_g", p_g)
    if p_data.shape != p_g.shape:
        raise ValueError(f"p_data and p_g must have the same shape, got {p_data.shape} and {p_g.shape}")
    if np.any(p_data < 0):
        raise ValueError("p_data must be non-negative masses")
    if np.any(p_g <= 0):
        raise ValueError("p_g must be strictly positive masses (the multiplicative step keeps zeros at zero)")
    for name, p in (("p_data", p_data), ("p_g", p_g)):
        if abs(p.sum() - 1.0) > 1e-6:
            raise ValueError(f"{name} must sum to 1 within 1e-6, got {p.sum():.9g}")
    if not (isinstance(lr, (int, float, np.floating)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite step size, got {lr!r}")
    grad = np.log(p_g) - np.log(p_data + p_g)          # log(1 - D*), D* = pi / (pi + p), without rounding D*
    log_new = np.log(p_g) - lr * grad
    new = np.exp(log_new - log_new.max())
    return new / new.sum()


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
    """Means :math:`(-4 + 2i, -4 + 2j)`, ``i, j = 0..4``, of PacGAN's 2D-grid (σ = 0.05,
    :data:`GRID_SIGMA`), ``(25, 2)``."""
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


def _points(name: str, x, shape: str, d: int | None = None) -> torch.Tensor:
    """``x`` as a tensor (sharing memory where it can) of shape ``(m, d)``, m >= 1; ``shape`` is for errors."""
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} must be a {shape} tensor or array of numbers, got {type(x).__name__}") from exc
    if t.dim() != 2 or len(t) == 0 or (d is not None and t.shape[1] != d):
        raise ValueError(f"{name} must be a non-empty {shape} tensor or array, got shape {tuple(t.shape)}")
    return t


def _nearest_mode(samples, means, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    samples = _points("samples", samples, "(n, d)")
    means = _points("means", means, f"(K, {samples.shape[1]})", samples.shape[1])
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    dist = torch.cdist(samples.detach().double().cpu(), means.double().cpu())
    d, k = dist.min(1)
    return k, d <= 3 * sigma


def mode_coverage(samples, means, sigma: float) -> tuple[int, float]:
    """Modes covered and fraction of high-quality samples (Srivastava et al. 2017, VEEGAN §5.1).

    A sample is *high quality* when it lies within 3σ of its nearest mode; a mode is
    *covered* when at least one high-quality sample is nearest to it. Distances are computed in
    float64 on the CPU, so a NumPy array gives the same result as the tensor it came from.

    Args:
        samples: ``(n, d)`` generated samples, n >= 1: a tensor (any device; gradients ignored),
            a NumPy array or nested lists.
        means: ``(K, d)`` mode centres, K >= 1 (e.g. :func:`ring_means`, :func:`grid_means`),
            same kinds as ``samples``.
        sigma: the modes' standard deviation (> 0), in the samples' units.

    Returns:
        ``(modes_covered, high_quality_fraction)``: int in 0..K and float in [0, 1].

    Raises:
        ValueError: ``samples`` or ``means`` not numeric, not 2-D, empty or with different ``d``;
            ``sigma`` <= 0.
    """
    k, good = _nearest_mode(samples, means, sigma)
    return int(torch.unique(k[good]).numel()), float(good.double().mean())


def mode_reverse_kl(samples, means, sigma: float) -> float:
    """Reverse KL between the histogram of modes hit and the uniform mode distribution
    (PacGAN, Lin et al. 2018, Table 1).

    Each high-quality sample (within 3σ of its nearest mode, as in :func:`mode_coverage`)
    is assigned to its nearest mode; with :math:`\\hat p_k` the fraction of them at mode
    k, the result is :math:`\\sum_k \\hat p_k \\log(K \\hat p_k)`: 0 when every mode gets
    the same share, :math:`\\log K` when all samples sit on one mode.

    Args:
        samples, means, sigma: as in :func:`mode_coverage` (tensors, NumPy arrays or nested lists).

    Returns:
        float, nats; ``inf`` when there is no high-quality sample.

    Raises:
        ValueError: as :func:`mode_coverage`.
    """
    k, good = _nearest_mode(samples, means, sigma)
    if not good.any():
        return math.inf
    p = torch.bincount(k[good], minlength=len(means)).double()
    p = p / p.sum()
    return float(torch.special.xlogy(p, p * len(means)).sum())


# ------------------------------------------------------------------------- toy models
class VirtualBatchNorm1d(nn.Module):
    """Virtual batch normalisation of features ``(B, num_features)`` (Salimans et al. 2016, §3.5).

    Batch norm normalises each sample with the statistics of its minibatch, so one sample's output
    depends on the others. Virtual batch norm fixes a **reference batch** once; each sample
    :math:`x` is normalised with the statistics of the reference batch :math:`r_1..r_n` *together
    with* :math:`x` itself, the sample weighted :math:`1/(n+1)`:

    .. math:: \\mu(x) = \\frac{n\\bar r + x}{n+1},\\quad
              \\sigma^2(x) = \\frac{n\\overline{r^2} + x^2}{n+1} - \\mu(x)^2,\\quad
              y = \\gamma\\,\\frac{x - \\mu(x)}{\\sqrt{\\sigma^2(x) + \\epsilon}} + \\beta

    per feature (:math:`\\bar r`, :math:`\\overline{r^2}` the reference batch's mean and mean square), as
    in the paper's code (``new_coeff = 1 / (batch_size + 1)``). The output for one sample depends on the
    reference batch and on that sample only, in training and in eval mode alike (no running statistics).

    The reference batch's features change as the layers before this one learn, so they are recomputed
    at every forward pass: call :meth:`set_reference` with the features of the fixed reference inputs
    (it returns them normalised with the reference statistics alone, ready for the next layer), then
    call the module on the batch. The statistics keep their graph, so gradients flow through them as in
    the paper; :class:`ToyGenerator` with ``batch_norm="virtual"`` does all this, at the cost of a forward
    pass of its reference batch per call.

    Args:
        num_features: F, the number of features (integer >= 1).
        eps: :math:`\\epsilon > 0` added to the variance.

    Attributes:
        weight, bias: the learnable affine :math:`\\gamma` (ones) and :math:`\\beta` (zeros), ``(F,)``.

    Raises:
        ValueError: ``num_features`` not an integer >= 1 or ``eps`` not positive (on construction);
            ``reference`` or ``x`` not ``(B, num_features)`` with B >= 1; the module called before
            :meth:`set_reference`.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        if not isinstance(num_features, (int, np.integer)) or isinstance(num_features, bool) or num_features < 1:
            raise ValueError(f"num_features must be an integer >= 1, got {num_features!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        self.num_features = int(num_features)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(self.num_features))
        self.bias = nn.Parameter(torch.zeros(self.num_features))
        self.reference_size: int | None = None
        self._reference_mean: torch.Tensor | None = None
        self._reference_mean_sq: torch.Tensor | None = None

    def _check(self, name: str, x: torch.Tensor) -> None:
        if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() != 2 or x.shape[1] != self.num_features \
                or x.shape[0] < 1:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"{name} must be a floating-point tensor (B, {self.num_features}) with B >= 1, "
                             f"got {shape}")

    def _normalise(self, x: torch.Tensor, mean: torch.Tensor, mean_sq: torch.Tensor) -> torch.Tensor:
        var = mean_sq - mean.pow(2)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias

    def set_reference(self, reference: torch.Tensor) -> torch.Tensor:
        """Store the statistics of the reference batch's features ``(n, F)``; return them normalised ``(n, F)``.

        The reference batch is normalised with its own statistics (mean and biased variance), as
        ordinary batch norm would do.

        Raises:
            ValueError: ``reference`` not a floating-point ``(n, num_features)`` tensor with n >= 1.
        """
        self._check("reference", reference)
        self.reference_size = reference.shape[0]
        self._reference_mean = reference.mean(0)
        self._reference_mean_sq = reference.pow(2).mean(0)
        return self._normalise(reference, self._reference_mean, self._reference_mean_sq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Each row of ``x`` ``(B, F)`` normalised with the reference statistics and itself; ``(B, F)``.

        Raises:
            ValueError: no reference set yet, or ``x`` not a floating-point ``(B, num_features)`` tensor.
        """
        if self._reference_mean is None:
            raise ValueError("reference is not set: call set_reference(reference) before normalising a batch")
        self._check("x", x)
        new = 1.0 / (self.reference_size + 1)
        mean = new * x + (1.0 - new) * self._reference_mean
        mean_sq = new * x.pow(2) + (1.0 - new) * self._reference_mean_sq
        return self._normalise(x, mean, mean_sq)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class ToyGenerator(nn.Module):
    """MLP generator :math:`G: \\mathbb{R}^{z} \\to \\mathbb{R}^{d}` with ReLU hidden layers and batch norm.

    Defaults are PacGAN's toy generator: 4 hidden layers of 400 units, z_dim 2, linear output.

    ``batch_norm``: ``True`` puts ``nn.BatchNorm1d`` after each hidden linear layer, ``False`` none,
    ``"virtual"`` a :class:`VirtualBatchNorm1d` (Salimans et al. 2016, §3.5) whose reference batch is
    ``reference_size`` noise vectors drawn once, at construction, from torch's global random stream
    (after the layers are initialised, so the linear layers equal those of ``batch_norm=False`` for the
    same seed) and kept as the buffer ``reference_z``; every forward pass first propagates it.

    Raises:
        ValueError: ``batch_norm`` not ``False``, ``True`` or ``"virtual"``; ``reference_size`` < 1.
    """

    def __init__(self, z_dim: int = 2, x_dim: int = 2, hidden: int = 400, n_layers: int = 4,
                 batch_norm: bool | str = True, reference_size: int = 128) -> None:
        super().__init__()
        if not (isinstance(batch_norm, bool) or batch_norm == "virtual"):
            raise ValueError(f"batch_norm must be False, True or 'virtual', got {batch_norm!r}")
        self.z_dim = z_dim
        self.virtual = batch_norm == "virtual"
        layers, width = [], z_dim
        for _ in range(n_layers):
            norm = ([VirtualBatchNorm1d(hidden)] if self.virtual else [nn.BatchNorm1d(hidden)]) if batch_norm else []
            layers += [nn.Linear(width, hidden)] + norm + [nn.ReLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, x_dim))
        if self.virtual:
            if not isinstance(reference_size, (int, np.integer)) or reference_size < 1:
                raise ValueError(f"reference_size must be an integer >= 1, got {reference_size!r}")
            self.register_buffer("reference_z", torch.randn(int(reference_size), z_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Samples ``(B, x_dim)`` from noise ``z`` ``(B, z_dim)``."""
        if not self.virtual:
            return self.net(z)
        reference = self.reference_z
        for layer in self.net:
            if isinstance(layer, VirtualBatchNorm1d):
                reference = layer.set_reference(reference)
            elif layer is not self.net[-1]:
                reference = layer(reference)
            z = layer(z)
        return z


class ToyDiscriminator(nn.Module):
    """MLP discriminator (or critic) on ``pack`` concatenated samples, LeakyReLU(0.2) hidden layers.

    Default sizes are PacGAN's (3 hidden layers of 200 units; PacGAN uses maxout units).

    ``forward(x)`` takes ``(B, pack * x_dim)`` and returns logits ``(B,)`` (``pack`` is kept as an attribute);
    ``features(x)`` returns the last hidden layer ``(B, hidden)`` for feature matching.
    """

    def __init__(self, x_dim: int = 2, hidden: int = 200, n_layers: int = 3, pack: int = 1) -> None:
        super().__init__()
        self.pack = pack
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
    return torch.optim.RMSprop(params, lr=lr)


@dataclass(frozen=True)
class ToyGANConfig:
    """Training recipe of :func:`train_toy_gan`, :func:`d_step` and :func:`g_step`.

    Attributes:
        steps: generator updates (integer >= 1).
        loss: ``"minimax"`` or ``"non_saturating"`` (Goodfellow et al. 2014, eq. 1 and §3);
            ``"wgan"``, weights clipped to ``±clip_value`` (Arjovsky et al. 2017, Algorithm 1:
            RMSprop, lr 5e-5, k = 5, c = 0.01); ``"wgan-gp"``, ``gp_weight`` × gradient penalty
            (Gulrajani et al. 2017, Algorithm 1: Adam lr 1e-4, betas (0, 0.9), k = 5, λ = 10).
        k: discriminator (critic) updates per generator update (Goodfellow's k, the WGANs'
            n_critic; integer >= 1).
        batch_size: data and noise samples per update (integer >= 1, divisible by ``pack_m``).
        lr_g, lr_d: learning rates of the generator and the discriminator (> 0).
        betas: Adam's (β1, β2), each in [0, 1); RMSprop ignores them.
        optimizer: ``"adam"`` or ``"rmsprop"``.
        gp_weight: λ >= 0 of the gradient penalty (``"wgan-gp"`` only).
        clip_value: c > 0 of the weight clipping (``"wgan"`` only).
        label_smoothing: one-sided α in [0, 1) (Salimans et al. 2016, §3.4; not used by the WGAN losses).
        feature_matching: the generator minimises :func:`feature_matching_loss` on
            ``discriminator.features`` (Salimans et al. 2016, §3.1); not with the WGAN losses.
        historical_weight: weight >= 0 of both players' :class:`HistoricalAverage` penalty
            (Salimans et al. 2016, §3.3); 0 switches it off.
        r1_weight: γ >= 0: γ/2 × :func:`r1_penalty` on the real batch is added to the discriminator
            loss (Mescheder et al. 2018, eq. 9); 0 switches it off.
        pack_m: PacGAN packing degree (Lin et al. 2018, §3; integer >= 1): the discriminator sees
            ``pack_m`` concatenated samples, so its input size must be ``pack_m * d``.
        lr_decay: decay both learning rates linearly to 0 over the ``steps``.

    Raises:
        ValueError: on construction, naming the first field outside the ranges above, or
            ``feature_matching`` with a WGAN loss.
    """

    steps: int
    loss: str = "non_saturating"
    k: int = 1
    batch_size: int = 256
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    optimizer: str = "adam"
    gp_weight: float = 10.0
    clip_value: float = 0.01
    label_smoothing: float = 0.0
    feature_matching: bool = False
    historical_weight: float = 0.0
    r1_weight: float = 0.0
    pack_m: int = 1
    lr_decay: bool = False

    def __post_init__(self) -> None:
        if self.loss not in _TOY_LOSSES:
            raise ValueError(f"loss must be one of {_TOY_LOSSES}, got {self.loss!r}")
        if self.optimizer not in _TOY_OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_TOY_OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("steps", "k", "batch_size", "pack_m"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.batch_size % self.pack_m:
            raise ValueError(f"batch_size ({self.batch_size}) must be divisible by pack_m ({self.pack_m})")
        for name in ("lr_g", "lr_d", "clip_value"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("gp_weight", "historical_weight", "r1_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing!r}")
        if self.feature_matching and self.wgan:
            raise ValueError(f"feature_matching needs loss 'minimax' or 'non_saturating', got {self.loss!r}")

    @property
    def wgan(self) -> bool:
        """Whether the loss is a Wasserstein one (``"wgan"`` or ``"wgan-gp"``)."""
        return self.loss.startswith("wgan")


def _check_step(config: ToyGANConfig, average: HistoricalAverage | None) -> None:
    if not isinstance(config, ToyGANConfig):
        raise ValueError(f"config must be a ToyGANConfig, got {type(config).__name__}")
    if (average is not None) != (config.historical_weight > 0):
        raise ValueError("average must be a HistoricalAverage exactly when config.historical_weight > 0, "
                         f"got average={type(average).__name__} and historical_weight={config.historical_weight}")


def _check_features(discriminator: nn.Module, config: ToyGANConfig) -> None:
    if config.feature_matching and not hasattr(discriminator, "features"):
        raise ValueError("config.feature_matching needs a discriminator with a features method")


def d_step(generator: nn.Module, discriminator: nn.Module, optimizer: torch.optim.Optimizer,
           real: torch.Tensor, z: torch.Tensor, config: ToyGANConfig,
           average: HistoricalAverage | None = None) -> tuple[float, float | None]:
    """One discriminator (critic) update: the inner loop of Goodfellow et al. 2014, Algorithm 1.

    Generates ``G(z)`` without gradients (a batch norm in training mode still updates its running
    statistics), packs real and generated samples by ``config.pack_m`` and minimises, with one
    ``optimizer`` step:

    * ``"minimax"`` / ``"non_saturating"``: :func:`discriminator_loss` with
      ``config.label_smoothing`` (Goodfellow et al. 2014, eq. 1; Salimans et al. 2016, §3.4);
    * ``"wgan"``: :func:`wasserstein_critic_loss`, then every parameter is clipped to
      ``±config.clip_value`` (Arjovsky et al. 2017, Algorithm 1);
    * ``"wgan-gp"``: :func:`wasserstein_critic_loss` + ``config.gp_weight`` ×
      :func:`gradient_penalty` (Gulrajani et al. 2017, Algorithm 1), whose interpolation weights
      come from torch's global random stream;

    plus γ/2 × :func:`r1_penalty` on ``real`` when ``config.r1_weight`` = γ > 0 (Mescheder et al.
    2018, eq. 9) and ``config.historical_weight`` × ``average.penalty()`` (Salimans et al. 2016,
    §3.3; ``average.update()`` follows the step and the clipping).

    Args:
        generator: maps noise ``(B, z_dim)`` to samples ``(B, d)``.
        discriminator: maps ``(B / pack_m, pack_m * d)`` to logits/scores ``(B / pack_m,)`` or
            ``(B / pack_m, 1)``; its parameters are the ones ``optimizer`` updates.
        optimizer: the discriminator's optimiser.
        real: data ``(B, d)`` on the networks' device, ``B`` divisible by ``config.pack_m``.
        z: noise ``(B, z_dim)`` on the networks' device.
        config: the training recipe.
        average: the discriminator's :class:`HistoricalAverage`, given exactly when
            ``config.historical_weight`` > 0.

    Returns:
        ``(loss, wasserstein)``: the loss minimised, penalties included, as a float (nats for the
        minimax and non-saturating losses, data distance units for the WGAN losses); for the WGAN
        losses the critic's estimate :math:`\\mathbb{E} f(x) - \\mathbb{E} f(G(z))` on this batch
        before the update, penalties excluded, else ``None``.

    Raises:
        ValueError: ``config`` not a :class:`ToyGANConfig`; ``average`` given or missing against
            ``config.historical_weight``; ``B`` not divisible by ``config.pack_m``; logits of
            mismatched shapes.
    """
    _check_step(config, average)
    real = real.detach().requires_grad_(config.r1_weight > 0)
    with torch.no_grad():
        fake = generator(z)
    real_in, fake_in = pack(real, config.pack_m), pack(fake, config.pack_m)
    r, f = discriminator(real_in), discriminator(fake_in)
    wasserstein = None
    if config.wgan:
        loss = wasserstein_critic_loss(r, f)
        wasserstein = -loss.item()
        if config.loss == "wgan-gp":
            loss = loss + config.gp_weight * gradient_penalty(discriminator, real_in, fake_in)
    else:
        loss = discriminator_loss(r, f, config.label_smoothing)
    if config.r1_weight > 0:
        loss = loss + config.r1_weight / 2 * r1_penalty(r, real)
    if average is not None:
        loss = loss + config.historical_weight * average.penalty()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if config.loss == "wgan":
        clip_weights(discriminator, config.clip_value)
    if average is not None:
        average.update()
    return loss.item(), wasserstein


def g_step(generator: nn.Module, discriminator: nn.Module, optimizer: torch.optim.Optimizer,
           z: torch.Tensor, config: ToyGANConfig, real: torch.Tensor | None = None,
           average: HistoricalAverage | None = None) -> float:
    """One generator update: the outer step of Goodfellow et al. 2014, Algorithm 1.

    Minimises, with one ``optimizer`` step, on ``G(z)`` packed by ``config.pack_m``:
    :func:`generator_loss` of kind ``config.loss`` (Goodfellow et al. 2014, eq. 1 and §3),
    :func:`wasserstein_generator_loss` for the WGAN losses (Arjovsky et al. 2017, Algorithm 1) or,
    with ``config.feature_matching``, :func:`feature_matching_loss` between
    ``discriminator.features`` of ``real`` and of ``G(z)`` (Salimans et al. 2016, §3.1); plus
    ``config.historical_weight`` × ``average.penalty()`` (Salimans et al. 2016, §3.3;
    ``average.update()`` follows the step). Gradients also reach the discriminator's parameters;
    :func:`d_step` clears them before its own step.

    Args:
        generator: maps noise ``(B, z_dim)`` to samples ``(B, d)``; its parameters are the ones
            ``optimizer`` updates.
        discriminator: as in :func:`d_step`.
        optimizer: the generator's optimiser.
        z: noise ``(B, z_dim)`` on the networks' device, ``B`` divisible by ``config.pack_m``.
        config: the training recipe.
        real: data ``(B', d)`` on the networks' device, given exactly when
            ``config.feature_matching`` is set.
        average: the generator's :class:`HistoricalAverage`, given exactly when
            ``config.historical_weight`` > 0.

    Returns:
        the loss minimised, penalty included, as a float (nats, except the WGAN generator loss and
        feature matching, which are in score and squared feature units).

    Raises:
        ValueError: ``config`` not a :class:`ToyGANConfig`; ``average`` or ``real`` given or missing
            against ``config``; a discriminator without ``features`` for feature matching; ``B``
            not divisible by ``config.pack_m``.
    """
    _check_step(config, average)
    _check_features(discriminator, config)
    if (real is not None) != config.feature_matching:
        raise ValueError("real must be given exactly when config.feature_matching is set, "
                         f"got real={type(real).__name__} and feature_matching={config.feature_matching}")
    fake = pack(generator(z), config.pack_m)
    if config.feature_matching:
        loss = feature_matching_loss(discriminator.features(pack(real, config.pack_m)).detach(),
                                     discriminator.features(fake))
    elif config.wgan:
        loss = wasserstein_generator_loss(discriminator(fake))
    else:
        loss = generator_loss(discriminator(fake), config.loss)
    if average is not None:
        loss = loss + config.historical_weight * average.penalty()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if average is not None:
        average.update()
    return loss.item()


@torch.no_grad()
def _eval_samples(generator: nn.Module, z: torch.Tensor) -> torch.Tensor:
    generator.eval()
    x = generator(z).cpu()
    generator.train()
    return x


def train_toy_gan(generator: nn.Module, discriminator: nn.Module,
                  sample_data: Callable[[int, torch.Generator], torch.Tensor], config: ToyGANConfig, *,
                  z_dim: int | None = None, device: torch.device | None = None, seed: int = 0,
                  progress: bool = True, snapshot_every: int = 0, n_snapshot: int = 1000) -> dict:
    """Alternating GAN training on low-dimensional data (Goodfellow et al. 2014, Algorithm 1).

    Each of the ``config.steps`` steps runs ``config.k`` times :func:`d_step` on a fresh
    minibatch of ``config.batch_size`` data and noise samples, then :func:`g_step` on fresh noise
    (and, for feature matching, fresh data), then decays the learning rates when
    ``config.lr_decay``. Adam or RMSprop (``config.optimizer``) and the historical averages are
    created here. Data and noise come, in that order, from one ``torch.Generator`` seeded with
    ``seed``, after the ``n_snapshot`` snapshot noise vectors; the WGAN-GP interpolation weights
    come from torch's global stream.

    Args:
        generator: maps noise ``(B, z_dim)`` to samples ``(B, d)``.
        discriminator: maps ``(B / pack_m, pack_m * d)`` to logits/scores ``(B / pack_m,)`` or ``(B / pack_m, 1)``.
        sample_data: ``sample_data(n, torch_generator) -> (n, d)`` data samples, e.g. :func:`ring_of_gaussians`.
        config: the training recipe, a :class:`ToyGANConfig`.
        z_dim: noise size; default ``generator.z_dim``.
        device: where to train; default :func:`dgmcourse.device.get_device`.
        seed: seeds the data and noise streams (initialise the networks before calling).
        progress: show a progress bar.
        snapshot_every: every that many steps (and always at the end) store ``n_snapshot``
            samples from a fixed noise batch in ``history["snapshots"]``; 0: only at the end.
        n_snapshot: samples per snapshot (>= 1).

    Returns:
        history dict: ``"d_loss"``, ``"g_loss"`` (one float per step, as :func:`d_step` (the last
        of the k) and :func:`g_step` return them), ``"wasserstein"`` (one float per step, the last
        critic step's estimate; WGAN losses only, else empty), ``"snapshots"`` (list of
        ``(step, (n_snapshot, d) CPU tensor)``), ``"time_s"`` (wall-clock seconds of training).

    Raises:
        ValueError: ``config`` not a :class:`ToyGANConfig`; no ``z_dim``; feature matching with a
            discriminator without ``features``; ``snapshot_every`` < 0 or ``n_snapshot`` < 1.
    """
    if not isinstance(config, ToyGANConfig):
        raise ValueError(f"config must be a ToyGANConfig, got {type(config).__name__}")
    z_dim = z_dim if z_dim is not None else getattr(generator, "z_dim", None)
    if z_dim is None:
        raise ValueError("z_dim must be given when the generator has no z_dim attribute")
    _check_features(discriminator, config)
    if snapshot_every < 0 or n_snapshot < 1:
        raise ValueError(f"snapshot_every must be >= 0 and n_snapshot >= 1, got {snapshot_every}, {n_snapshot}")
    device = device or get_device()
    generator.to(device).train()
    discriminator.to(device).train()
    opt_g = _optimizer(config.optimizer, generator.parameters(), config.lr_g, config.betas)
    opt_d = _optimizer(config.optimizer, discriminator.parameters(), config.lr_d, config.betas)
    schedules = ([torch.optim.lr_scheduler.LambdaLR(o, lambda t: 1.0 - t / config.steps) for o in (opt_g, opt_d)]
                 if config.lr_decay else [])
    avg_g, avg_d = ((HistoricalAverage(generator), HistoricalAverage(discriminator))
                    if config.historical_weight > 0 else (None, None))
    rng = torch.Generator().manual_seed(seed)
    fixed_z = torch.randn(n_snapshot, z_dim, generator=rng).to(device)
    history = {"d_loss": [], "g_loss": [], "wasserstein": [], "snapshots": []}

    def data() -> torch.Tensor:
        return sample_data(config.batch_size, rng).to(device)

    def noise() -> torch.Tensor:
        return torch.randn(config.batch_size, z_dim, generator=rng).to(device)

    start = time.perf_counter()
    for step in tqdm(range(1, config.steps + 1), desc=f"toy GAN ({config.loss})", disable=not progress):
        # arguments are evaluated left to right: d_step draws data then noise, g_step noise (then data)
        for _ in range(config.k):
            d_loss, wasserstein = d_step(generator, discriminator, opt_d, data(), noise(), config, avg_d)
        g_loss = g_step(generator, discriminator, opt_g, noise(), config,
                        data() if config.feature_matching else None, avg_g)
        for schedule in schedules:
            schedule.step()
        history["d_loss"].append(d_loss)
        history["g_loss"].append(g_loss)
        if wasserstein is not None:
            history["wasserstein"].append(wasserstein)
        if snapshot_every and step % snapshot_every == 0 and step != config.steps:
            history["snapshots"].append((step, _eval_samples(generator, fixed_z)))
    history["snapshots"].append((config.steps, _eval_samples(generator, fixed_z)))
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


@torch.no_grad()
def rejection_sample(generator: nn.Module, discriminator: nn.Module, n: int, gamma_quantile: float | None = None,
                     burn_in: int = 10_000, epsilon: float = 1e-6, z_dim: int | None = None,
                     generator_rng: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """Discriminator rejection sampling (Azadi et al. 2019, Algorithm 1 and eq. 8): ``n`` samples ``(n, d)``.

    A discriminator at its optimum has logit :math:`\\tilde D(x) = \\log \\pi(x) / p_g(x)`, so accepting a
    generator sample with probability :math:`\\exp(\\tilde D(x) - \\tilde D_M)`, where :math:`\\tilde D_M` is the
    largest logit, turns :math:`p_g` into :math:`\\pi` (rejection sampling with the bound :math:`e^{\\tilde D_M}`).
    In practice the sample is accepted when :math:`\\sigma(F(x)) > u`, :math:`u \\sim U(0, 1)`, with

    .. math:: F(x) = \\tilde D(x) - \\tilde D_M - \\log(1 - e^{\\tilde D(x) - \\tilde D_M - \\epsilon}) - \\gamma.

    :math:`\\tilde D_M` is the largest logit of ``burn_in`` generator samples, raised whenever a larger one
    appears. With :math:`\\gamma = 0` (``gamma_quantile=None``, the default) the acceptance probability is exactly
    :math:`e^{\\tilde D(x) - \\tilde D_M - \\epsilon}`. Azadi et al. shift :math:`F` by :math:`\\gamma` to set the
    acceptance rate; with ``gamma_quantile=q``, :math:`\\gamma` is the q-quantile of :math:`F` over each batch of
    ``burn_in`` proposals, so the proposal at that quantile is accepted with probability 1/2 (no longer exact:
    lecture 3 shows it unbalancing the modes).
    The generator and discriminator are evaluated in eval mode (restored afterwards); the discriminator
    must score single samples (no packing): ``discriminator(x)`` ``(B, d)`` → logits ``(B,)``.

    Returns:
        ``(samples, acceptance_rate)``: accepted samples ``(n, d)`` on the CPU, and the fraction of
        proposals accepted.

    Raises:
        ValueError: ``n`` or ``burn_in`` < 1, ``gamma_quantile`` outside (0, 1), ``epsilon`` <= 0, no ``z_dim``,
            a discriminator whose output is not one finite logit per sample.
    """
    if n < 1 or burn_in < 1:
        raise ValueError(f"n and burn_in must be >= 1, got n={n}, burn_in={burn_in}")
    if gamma_quantile is not None and not 0.0 < gamma_quantile < 1.0:
        raise ValueError(f"gamma_quantile must be in (0, 1) or None, got {gamma_quantile}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if getattr(discriminator, "pack", 1) != 1:
        raise ValueError(f"discriminator must score single samples, got a packed one (pack={discriminator.pack})")
    device = next(discriminator.parameters()).device
    was_training = discriminator.training
    discriminator.eval()

    def propose() -> tuple[torch.Tensor, torch.Tensor]:
        x = sample_toy(generator, burn_in, z_dim, generator_rng)
        logits = discriminator(x.to(device)).cpu()
        if logits.shape != (burn_in,) or not torch.isfinite(logits).all():
            raise ValueError(f"discriminator must return one finite logit per sample, shape ({burn_in},), "
                             f"got shape {tuple(logits.shape)}")
        return x, logits.double()

    try:
        _, logits = propose()
        d_max = logits.max()
        accepted, n_accepted, n_proposed = [], 0, 0
        while n_accepted < n:
            x, logits = propose()
            d_max = torch.maximum(d_max, logits.max())
            gap = logits - d_max
            f = gap - torch.log1p(-torch.exp(gap - epsilon))
            if gamma_quantile is not None:
                f = f - torch.quantile(f, gamma_quantile)
            keep = torch.sigmoid(f) > torch.rand(burn_in, generator=generator_rng, dtype=torch.float64)
            accepted.append(x[keep])
            n_accepted += int(keep.sum())
            n_proposed += burn_in
    finally:
        discriminator.train(was_training)
    return torch.cat(accepted)[:n], n_accepted / n_proposed


# ------------------------------------------------------------------------------ DCGAN
def dcgan_init(module: nn.Module) -> None:
    """Radford et al. (2015, §4) initialisation: conv weights :math:`N(0, 0.02^2)`,
    batch-norm scale :math:`N(1, 0.02^2)`, biases 0."""
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
        """``n`` images ``(n, 1, 28, 28)`` with values in [0, 1] (eval mode, CPU tensor);
        pass ``z`` to fix the noise."""
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
