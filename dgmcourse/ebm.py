"""Energy-based models: short-run Langevin sampling, a replay buffer, contrastive divergence, the score of an energy.

An energy-based model (LeCun, Chopra, Hadsell, Ranzato & Huang 2006, "A Tutorial on Energy-Based Learning") is a
density known up to its normaliser,

.. math:: p_\\theta(x) = \\frac{e^{-E_\\theta(x)}}{Z_\\theta}, \\qquad Z_\\theta = \\int e^{-E_\\theta(x)}\\,dx,

with an energy :math:`E_\\theta(x)` in nats (any network with one scalar output). The log-likelihood gradient is a
difference of two expectations (Hinton 2002, "Training Products of Experts by Minimizing Contrastive Divergence",
the maximum-likelihood gradient before his contrastive divergence; Du & Mordatch 2019, their training gradient):

.. math:: -\\nabla_\\theta \\log p_\\theta(x) = \\nabla_\\theta E_\\theta(x)
          - E_{x^- \\sim p_\\theta}[\\nabla_\\theta E_\\theta(x^-)],

so maximum likelihood lowers the energy of data and raises the energy of the model's own samples. The model
samples come from Langevin dynamics, which needs only :math:`\\nabla_x E` (the normaliser drops out):
Du & Mordatch (2019), "Implicit Generation and Generalization in Energy-Based Models", NeurIPS, run a few dozen
steps started from a *replay buffer* of earlier samples (95 %) or fresh noise (5 %); Nijkamp, Hill, Zhu & Wu (2019),
"Learning Non-Convergent Non-Persistent Short-Run MCMC Toward Energy-Based Model", NeurIPS, start every chain
from noise and treat the short-run chain itself as the generator. The same :math:`-\\nabla_x E` is the model's
*score* :math:`\\nabla_x \\log p_\\theta`, the quantity score matching fits (Hyvärinen 2005, "Estimation of
Non-Normalized Statistical Models by Score Matching"; lecture 11, § 2, and :mod:`dgmcourse.diffusion`).

Conventions used by every function here:

* An energy is a callable ``energy(x) -> (B,)`` on a batch ``x`` ``(B, *shape)``, in nats; an ``nn.Module`` such
  as :class:`EnergyMLP` (2-D toys) or :class:`EnergyCNN` (images).
* Images are in **[-1, 1]** (``2 * pixel - 1`` of :func:`dgmcourse.data.load_mnist`), as for the DCGAN of
  :mod:`dgmcourse.gan` and the digits of lecture 11; Langevin chains on images are clipped to it (``clip=(-1, 1)``).
* Randomness comes from an optional ``torch.Generator``, which must live on the data's device.

Contents: :func:`langevin_sample` (unadjusted Langevin on an energy), :func:`score` (:math:`-\\nabla_x E`),
:class:`ReplayBuffer` (Du & Mordatch's sample buffer), :func:`contrastive_divergence_loss` (with the
energy-magnitude regulariser), :class:`EnergyMLP`, :class:`EnergyCNN`, :func:`train_ebm`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["langevin_sample", "score", "ReplayBuffer", "contrastive_divergence_loss", "EnergyMLP", "EnergyCNN",
           "train_ebm"]

Energy = Callable[[torch.Tensor], torch.Tensor]
_NOISE_KINDS = ("uniform", "gaussian")


# ----------------------------------------------------------------------------------------- checks
def _check_batch(name: str, x) -> None:
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[0] < 1 or x.numel() == 0:
        raise ValueError(f"{name} must be a non-empty batch (B, *shape), got shape {tuple(x.shape)}")


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _check_non_negative(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")


def _check_range(name: str, bounds) -> tuple[float, float]:
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {bounds!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"{name} must be a pair (low, high) of finite numbers with low < high, got {bounds!r}")
    return low, high


def _energies(energy: Energy, x: torch.Tensor) -> torch.Tensor:
    """``energy(x)``, checked to be ``(B,)``."""
    e = energy(x)
    if not torch.is_tensor(e) or e.shape != (len(x),):
        raise ValueError(f"energy(x) must return one energy per sample, shape ({len(x)},), got "
                         f"{tuple(getattr(e, 'shape', ()))}")
    return e


def _energy_gradient(energy: Energy, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """:math:`\\nabla_x E(x)` ``(B, *shape)``; only x is differentiated (no gradient reaches the parameters)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e = _energies(energy, x)
        (grad,) = torch.autograd.grad(e.sum(), x, create_graph=create_graph)
    return grad


# ------------------------------------------------------------------------------------- sampling, score
def langevin_sample(energy: Energy, x_init: torch.Tensor, n_steps: int, step_size: float,
                    noise_scale: float | None = None, clip: tuple[float, float] | None = None,
                    generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """Unadjusted Langevin dynamics on an energy, started from ``x_init``.

    .. math:: x_{k+1} = x_k - \\frac{\\epsilon}{2}\\nabla_x E(x_k) + \\sigma\\,\\xi_k, \\qquad \\xi_k \\sim N(0, I),

    Du & Mordatch (2019), their Langevin update (their λ is ε, the noise variance λ), and Nijkamp et al.
    (2019); the score form :math:`x + \\frac{\\epsilon}{2}\\nabla_x\\log p + \\sqrt\\epsilon\\,\\xi` is
    :func:`dgmcourse.diffusion.langevin_dynamics` (Welling & Teh 2011). With the default
    :math:`\\sigma = \\sqrt\\epsilon` the chain targets :math:`p \\propto e^{-E}` as :math:`\\epsilon \\to 0`;
    for finite ε it is biased: for :math:`E(x) = \\frac12 (x-\\mu)^\\top\\Sigma^{-1}(x-\\mu)` its stationary law
    is :math:`N(\\mu, (\\Sigma^{-1} - \\frac\\epsilon4\\Sigma^{-2})^{-1})`. Both papers decouple the two in
    practice (a large ε and σ of about 0.01 on images): a chain with :math:`\\sigma^2 \\ne \\epsilon` targets
    :math:`e^{-E/T}` at the temperature :math:`T = \\sigma^2/\\epsilon` (for a Gaussian, covariance
    :math:`T\\,(\\Sigma^{-1} - \\frac\\epsilon4\\Sigma^{-2})^{-1}`), and a short run of it is a sampler in its own
    right, not an MCMC estimate (Nijkamp et al. 2019). ``clip`` clamps x after every step (Du & Mordatch clip
    images to their valid range).

    The energy is differentiated with respect to x only: no gradient reaches its parameters (their ``.grad`` is
    untouched), the result is detached, and it runs under ``torch.no_grad()`` too.

    Args:
        energy: ``energy(x) -> (B,)`` energies in nats.
        x_init: starting points ``(B, *shape)`` (noise, or a :class:`ReplayBuffer` draw).
        n_steps: number of updates, >= 0 (0 returns a detached copy of ``x_init``, clipped).
        step_size: ε > 0 (squared units of x).
        noise_scale: σ >= 0 (units of x); default :math:`\\sqrt\\epsilon`; 0 gives gradient descent on E.
        clip: optional ``(low, high)``; x is clamped to it after every step (and at the start).
        generator: optional ``torch.Generator`` on ``x_init``'s device, for ξ.
        progress: show a tqdm bar over the steps.

    Returns:
        the final points ``(B, *shape)``, detached, in ``x_init``'s dtype and device.

    Raises:
        ValueError: ``x_init`` not a non-empty floating batch, ``n_steps`` not a non-negative integer,
            ``step_size`` not positive and finite, ``noise_scale`` negative or not finite, ``clip`` not
            ``(low, high)`` with low < high, or ``energy`` not returning ``(B,)``.
    """
    _check_batch("x_init", x_init)
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
    _check_positive("step_size", step_size)
    noise_scale = math.sqrt(step_size) if noise_scale is None else noise_scale
    _check_non_negative("noise_scale", noise_scale)
    bounds = None if clip is None else _check_range("clip", clip)
    x = x_init.detach().clone()
    if bounds is not None:
        x = x.clamp(*bounds)
    for _ in tqdm(range(n_steps), desc="Langevin", disable=not progress):
        grad = _energy_gradient(energy, x)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x - step_size / 2 * grad + noise_scale * noise
        if bounds is not None:
            x = x.clamp(*bounds)
    return x


def score(energy: Energy, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """The model's score :math:`\\nabla_x \\log p_\\theta(x) = -\\nabla_x E_\\theta(x)`.

    :math:`\\log p_\\theta = -E_\\theta - \\log Z_\\theta` and :math:`Z_\\theta` does not depend on x, so the
    score of an energy-based model is exact without the normaliser: the link to score matching (Hyvärinen 2005,
    sec. 2, which fits this score to the data's; Song & Ermon 2019 and lecture 11, § 2, fit a score network
    without an energy).
    With ``create_graph=True`` the result stays differentiable in the energy's parameters, so
    ``dgmcourse.diffusion.dsm_loss(lambda y, s: score(energy, y, create_graph=True), x, sigma)`` trains an energy by
    denoising score matching (Vincent 2011).

    Args:
        energy: ``energy(x) -> (B,)`` in nats.
        x: points ``(B, *shape)``.
        create_graph: keep the graph for a second differentiation (default: a detached result).

    Returns:
        ``(B, *shape)`` in x's dtype and device (units 1/x).

    Raises:
        ValueError: ``x`` not a non-empty floating batch, or ``energy`` not returning ``(B,)``.
    """
    _check_batch("x", x)
    grad = _energy_gradient(energy, x, create_graph=create_graph)
    return -grad if create_graph else -grad.detach()


# --------------------------------------------------------------------------------------- replay buffer
class ReplayBuffer:
    """Du & Mordatch's (2019) sample replay buffer of past Langevin samples.

    :meth:`sample` starts each chain, independently, from fresh noise with probability ``reinit`` (5 % in the
    paper) and otherwise from a uniformly drawn stored sample; while the buffer is empty every start is noise.
    :meth:`push` stores the chains' end points, first in first out: once ``capacity`` samples are stored the oldest
    are overwritten. Restarting from the buffer makes the short chains long ones in effect (persistent contrastive
    divergence); the fresh starts keep exploring. Without a buffer every chain starts from noise (Nijkamp et al.
    2019's short-run sampler).

    Args:
        shape: the shape of one sample, e.g. ``(2,)`` or ``(1, 28, 28)``.
        capacity: how many samples are kept.
        reinit: probability in [0, 1] that a start is fresh noise.
        noise: ``"uniform"`` on ``noise_range`` (the paper's) or ``"gaussian"``, :math:`N(0, I)`.
        noise_range: ``(low, high)`` of the uniform noise (default (-1, 1), the image range).
        device: where the samples live.

    Attributes:
        samples: the stored samples, ``(len(self), *shape)``, in insertion order until the buffer wraps.

    Raises:
        ValueError: ``shape`` not a tuple of positive integers, ``capacity`` not a positive integer, ``reinit``
            outside [0, 1], unknown ``noise`` or a bad ``noise_range``.
    """

    def __init__(self, shape, capacity: int = 10_000, reinit: float = 0.05, noise: str = "uniform",
                 noise_range: tuple[float, float] = (-1.0, 1.0), device: torch.device | str = "cpu") -> None:
        try:
            shape = tuple(shape)
        except TypeError:
            raise ValueError(f"shape must be a tuple of positive integers, got {shape!r}") from None
        if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
            raise ValueError(f"shape must be a tuple of positive integers, got {shape!r}")
        _check_positive_int("capacity", capacity)
        if isinstance(reinit, bool) or not isinstance(reinit, (int, float)) or not 0 <= reinit <= 1:
            raise ValueError(f"reinit must be a probability in [0, 1], got {reinit!r}")
        if noise not in _NOISE_KINDS:
            raise ValueError(f"noise must be one of {_NOISE_KINDS}, got {noise!r}")
        self.shape, self.capacity, self.reinit, self.noise = shape, capacity, float(reinit), noise
        self.noise_range = _check_range("noise_range", noise_range)
        self.device = torch.device(device)
        self._store = torch.empty((capacity, *shape), device=self.device)
        self._size, self._next = 0, 0

    def __len__(self) -> int:
        return self._size

    @property
    def samples(self) -> torch.Tensor:
        return self._store[:self._size]

    def noise_sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` fresh noise samples ``(n, *shape)`` (uniform on ``noise_range`` or standard normal)."""
        _check_positive_int("n", n)
        if self.noise == "gaussian":
            return torch.randn((n, *self.shape), generator=generator, device=self.device)
        low, high = self.noise_range
        return low + (high - low) * torch.rand((n, *self.shape), generator=generator, device=self.device)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` chain starts ``(n, *shape)``: each fresh noise with probability ``reinit``, else a stored sample.

        Draws, from ``generator`` (on the buffer's device): the n noise samples, then (once the buffer holds
        samples) n uniforms (which starts are fresh) and n stored indices (with replacement).

        Raises:
            ValueError: ``n`` not a positive integer.
        """
        _check_positive_int("n", n)
        fresh = self.noise_sample(n, generator)
        if self._size == 0:
            return fresh
        use_noise = torch.rand(n, generator=generator, device=self.device) < self.reinit
        index = torch.randint(self._size, (n,), generator=generator, device=self.device)
        keep = (~use_noise).reshape(n, *([1] * len(self.shape)))
        return torch.where(keep, self._store[index], fresh)

    def push(self, x: torch.Tensor) -> None:
        """Store ``x`` ``(n, *shape)`` (detached, on the buffer's device), overwriting the oldest samples when full.

        Raises:
            ValueError: ``x`` not a floating tensor ``(n, *shape)``.
        """
        _check_batch("x", x)
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x must have shape (n, {', '.join(map(str, self.shape))}), got {tuple(x.shape)}")
        x = x.detach().to(self._store.device, self._store.dtype)[-self.capacity:]
        positions = (self._next + torch.arange(len(x), device=self.device)) % self.capacity
        self._store[positions] = x
        self._next = (self._next + len(x)) % self.capacity
        self._size = min(self.capacity, self._size + len(x))


# --------------------------------------------------------------------------------------------- the loss
def _cd_terms(energy: Energy, x_data: torch.Tensor, x_model: torch.Tensor, alpha: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    e_data = _energies(energy, x_data)
    e_model = _energies(energy, x_model.detach())
    loss = e_data.mean() - e_model.mean() + alpha * (e_data.pow(2).mean() + e_model.pow(2).mean())
    return loss, e_data.detach().mean(), e_model.detach().mean()


def contrastive_divergence_loss(energy: Energy, x_data: torch.Tensor, x_model: torch.Tensor,
                                alpha: float = 0.0) -> torch.Tensor:
    """The contrastive-divergence surrogate :math:`\\bar E(x^+) - \\bar E(x^-) + \\alpha(\\overline{E(x^+)^2}
    + \\overline{E(x^-)^2})`.

    Its gradient in θ with the model samples :math:`x^-` held fixed is the Monte Carlo estimate of the negative
    log-likelihood gradient of the module docstring (Hinton 2002; Du & Mordatch 2019): for an
    exponential family :math:`E_\\theta(x) = -\\theta^\\top T(x)` it is exactly
    :math:`\\overline{T(x^-)} - \\overline{T(x^+)}`, the moment difference, zero in expectation when the model
    samples come from the data's distribution. The α term is Du & Mordatch's (2019) regulariser of the
    energies' magnitude, which keeps them near 0 and the training stable. ``x_model`` is detached
    (no gradient flows back through the Langevin chain).

    Args:
        energy: ``energy(x) -> (B,)`` in nats.
        x_data: data ``(B, *shape)``; x_model: model samples ``(B', *shape)`` (e.g. from :func:`langevin_sample`).
        alpha: α >= 0.

    Returns:
        0-d tensor, nats (differentiable in the energy's parameters).

    Raises:
        ValueError: ``x_data`` or ``x_model`` not a non-empty floating batch, their sample shapes differ,
            ``alpha`` negative, or ``energy`` not returning ``(B,)``.
    """
    _check_batch("x_data", x_data)
    _check_batch("x_model", x_model)
    if x_data.shape[1:] != x_model.shape[1:]:
        raise ValueError(f"x_model must hold samples of x_data's shape {tuple(x_data.shape[1:])}, got "
                         f"{tuple(x_model.shape[1:])}")
    _check_non_negative("alpha", alpha)
    return _cd_terms(energy, x_data, x_model, alpha)[0]


# ------------------------------------------------------------------------------------------ networks
class EnergyMLP(nn.Module):
    """An MLP energy :math:`\\mathbb{R}^d \\to \\mathbb{R}` for the 2-D toy mixtures.

    ``n_layers`` hidden layers of width ``hidden`` with SiLU (Swish) activations, smooth so that
    :math:`\\nabla_x E` is continuous for Langevin dynamics, and a linear scalar output.

    Args:
        dim: d, the data dimension; hidden: the width; n_layers: hidden layers (all positive integers).

    ``forward(x)``: ``(B, d)`` -> energies ``(B,)`` in nats.

    Raises:
        ValueError: ``dim``, ``hidden`` or ``n_layers`` not positive integers.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, n_layers: int = 3) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("hidden", hidden), ("n_layers", n_layers)):
            _check_positive_int(name, value)
        layers, width = [], dim
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class EnergyCNN(nn.Module):
    """A small convolutional energy for digits, ``(B, C, H, W)`` in [-1, 1] -> ``(B,)``.

    Four 3x3 convolutions with SiLU (the last two with stride 2: 28 -> 14 -> 7), a spatial mean and a linear scalar
    output; a CPU-sized stand-in for the ResNet energies of Du & Mordatch (2019) and the plain conv nets of
    Nijkamp et al. (2019). The spatial mean makes it work for any image size (28x28 MNIST, scikit-learn's 8x8
    digits).

    Args:
        channels: C, image channels; width: the first layer's channels (doubled after the first stride).

    ``forward(x)``: ``(B, C, H, W)`` -> energies ``(B,)`` in nats.

    Raises:
        ValueError: ``channels`` or ``width`` not positive integers.
    """

    def __init__(self, channels: int = 1, width: int = 32) -> None:
        super().__init__()
        _check_positive_int("channels", channels)
        _check_positive_int("width", width)
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
        )
        self.out = nn.Linear(2 * width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(x).mean(dim=(2, 3))).squeeze(-1)


# ------------------------------------------------------------------------------------------- training
def train_ebm(energy: nn.Module, data: torch.Tensor, steps: int, batch_size: int = 128, lr: float = 3e-3,
              alpha: float = 0.01, langevin_steps: int = 20, step_size: float = 0.003,
              noise_scale: float | None = None, buffer: bool | ReplayBuffer = True, reinit: float = 0.05,
              noise_range: tuple[float, float] | None = None, clip: tuple[float, float] | None = None,
              generator: torch.Generator | None = None, progress: bool = True) -> dict[str, list[float]]:
    """Contrastive divergence with short-run Langevin sampling (Du & Mordatch 2019, Algorithm 1).

    Each step draws ``batch_size`` data rows with replacement; draws as many chain starts, from ``buffer``
    (Du & Mordatch: a :class:`ReplayBuffer`, fresh noise with probability ``reinit``) or, with ``buffer=False``,
    all from noise (Nijkamp et al. 2019's non-persistent short run); runs ``langevin_steps`` steps of
    :func:`langevin_sample`; takes one Adam step on :func:`contrastive_divergence_loss`; and pushes the chains'
    end points into the buffer. The noise is uniform on ``noise_range``. The defaults suit the 2-D toys at unit
    scale (e.g. ``gan.ring_means(4)`` with σ = 0.1: chains at temperature 1, :math:`\\sigma = \\sqrt\\epsilon`);
    for images take Du & Mordatch's decoupled setting (a large ``step_size``, a small ``noise_scale``, more
    ``langevin_steps``, ``clip=(-1, 1)``) and a smaller ``lr``.

    Args:
        energy: e.g. :class:`EnergyMLP` or :class:`EnergyCNN`, trained in place on its own device, left in eval mode.
        data: ``(N, *shape)`` training data (images in [-1, 1]).
        steps, batch_size, langevin_steps: positive integers; lr: > 0; alpha: >= 0 (the energy regulariser).
        step_size, noise_scale, clip: as :func:`langevin_sample`.
        buffer: True (a new :class:`ReplayBuffer` of capacity 10,000), False (noise starts), or a
            :class:`ReplayBuffer` to use and keep (its shape must be the data's).
        reinit: the new buffer's fresh-noise probability (with ``buffer=True``).
        noise_range: ``(low, high)`` of the uniform noise; default the data's range, ``(data.min(), data.max())``
            (a given :class:`ReplayBuffer` keeps its own noise).
        generator: CPU ``torch.Generator`` (seed 0 when None) for the batches and the seed of the chains' generators
            (on the buffer's and the model's devices).
        progress: show a tqdm bar.

    Returns:
        a history: ``"loss"`` (the surrogate, nats), ``"energy_data"`` and ``"energy_model"`` (batch means of the
        energies of data and of the Langevin samples, nats), one value per step.

    Raises:
        ValueError: ``data`` not a floating batch, bad ``steps``, ``batch_size``, ``lr``, ``langevin_steps``,
            ``alpha``, ``reinit`` or ``noise_range`` (or constant data and no ``noise_range``), a ``buffer`` of the
            wrong shape, or as :func:`langevin_sample`.
    """
    _check_batch("data", data)
    for name, value in (("steps", steps), ("batch_size", batch_size), ("langevin_steps", langevin_steps)):
        _check_positive_int(name, value)
    _check_positive("lr", lr)
    _check_non_negative("alpha", alpha)
    _check_positive("step_size", step_size)
    if noise_scale is not None:
        _check_non_negative("noise_scale", noise_scale)
    bounds = None if clip is None else _check_range("clip", clip)
    params = list(energy.parameters())
    device = params[0].device if params else data.device
    shape = tuple(data.shape[1:])
    if isinstance(buffer, ReplayBuffer):
        if buffer.shape != shape:
            raise ValueError(f"buffer must hold samples of the data's shape {shape}, got {buffer.shape}")
        replay = buffer
    elif isinstance(buffer, bool):
        if noise_range is None:
            noise_range = (data.min().item(), data.max().item())
            if not noise_range[0] < noise_range[1]:
                raise ValueError(f"noise_range must be given: the data's range {noise_range} is empty")
        noise_range = _check_range("noise_range", noise_range)
        replay = ReplayBuffer(shape, reinit=reinit if buffer else 1.0, noise_range=noise_range, device=device)
    else:
        raise ValueError(f"buffer must be True, False or a ReplayBuffer, got {buffer!r}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    seed = int(torch.randint(2 ** 62, (1,), generator=generator))
    start_generator = torch.Generator(device=replay.device).manual_seed(seed)
    chain_generator = torch.Generator(device=device).manual_seed(seed + 1)
    cpu_data = data.detach().cpu()
    optimizer = torch.optim.Adam(energy.parameters(), lr=lr)
    history: dict[str, list[float]] = {"loss": [], "energy_data": [], "energy_model": []}
    energy.train()
    for _ in tqdm(range(steps), desc="train EBM", disable=not progress):
        x_data = cpu_data[torch.randint(len(cpu_data), (batch_size,), generator=generator)].to(device)
        x_start = replay.sample(batch_size, start_generator).to(device, data.dtype)
        x_model = langevin_sample(energy, x_start, langevin_steps, step_size, noise_scale, bounds, chain_generator)
        loss, e_data, e_model = _cd_terms(energy, x_data, x_model, alpha)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if buffer is not False:
            replay.push(x_model)
        history["loss"].append(loss.item())
        history["energy_data"].append(e_data.item())
        history["energy_model"].append(e_model.item())
    energy.eval()
    return history
