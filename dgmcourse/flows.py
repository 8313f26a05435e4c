"""Normalizing flows: exact densities through invertible maps (RealNVP coupling layers and MAF).

A flow is an invertible, differentiable map ``f`` from data ``x`` (dimension ``D``) to a base
variable ``z = f(x)`` with a simple density, here the standard normal ``N(0, I)``. The change of
variables formula (Dinh, Sohl-Dickstein & Bengio 2017, "Density estimation using Real NVP",
eq. 3; Papamakarios, Nalisnick, Rezende, Mohamed & Lakshminarayanan 2021, "Normalizing Flows for
Probabilistic Modeling and Inference", eq. 2) gives the exact log-density, in nats:

    log p(x) = log N(f(x); 0, I) + log |det df/dx (x)|.

For ``f = f_K o ... o f_1`` the log-determinants add up, one per layer. Every layer of this module
follows one convention:

* ``forward(x) -> (z, log_det)`` goes from the data towards the base (the *normalizing*
  direction, used by :meth:`Flow.log_prob`), ``log_det = log |det dz/dx|``, shape ``(B,)``;
* ``inverse(z) -> (x, log_det)`` goes back (used by :meth:`Flow.sample`),
  ``log_det = log |det dx/dz|`` = minus the forward one at the matching point.

Layers: :class:`ElementwiseAffine` (the simplest flow, ``x ~ N(shift, exp(log_scale)^2)``),
:class:`AffineCoupling` (RealNVP: fast in both directions), :class:`MAF` (masked autoregressive:
density in one pass, sampling in ``D`` passes) and :class:`Permutation`; :class:`Flow` stacks them,
:func:`realnvp_flow` and :func:`maf_flow` build the usual stacks, :func:`standardize` starts one at
the data's per-coordinate Gaussian, :func:`train_flow` fits one by maximum likelihood. For discrete
data (pixels), :func:`dequantize` adds uniform noise, :func:`bits_per_dim` turns the flow's density
into a bound on the discrete model's bits/dim, and :func:`train_dequantized_flow` trains on fresh
noise every epoch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .device import get_device
from .training import start_training, train_epoch
from .evaluation import bits_per_dim as _nats_to_bits_per_dim

__all__ = [
    "checkerboard_mask", "made_masks", "MaskedLinear", "ElementwiseAffine", "AffineCoupling", "MAF",
    "Permutation", "Flow", "realnvp_flow", "maf_flow", "standardize", "train_flow", "dequantize", "bits_per_dim",
    "train_dequantized_flow",
]


# --------------------------------------------------------------------------- checks and base density

def _check_positive_int(value, name: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_batch(x, dim: int, name: str = "x") -> None:
    """``x`` must be a floating-point tensor of shape ``(B, dim)``."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of shape (B, {dim}), got {x!r:.80}")
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{name} must have shape (B, {dim}), got {tuple(x.shape)}")


def _check_log_scale_bound(bound) -> None:
    if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not bound > 0:
        raise ValueError(f"log_scale_bound must be a positive number, got {bound!r}")


def _base_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` summed over the last dimension: ``(B, D) -> (B,)``, nats."""
    base = torch.distributions.Normal(z.new_zeros(()), z.new_ones(()))
    return base.log_prob(z).sum(-1)


# --------------------------------------------------------------------------- masks

def checkerboard_mask(shape: int | Sequence[int], parity: int = 0) -> torch.Tensor:
    """Binary checkerboard mask of a coupling layer, flattened (Dinh et al. 2017, Fig. 3).

    Entry ``(i_1, ..., i_n)`` is 1 when ``i_1 + ... + i_n + parity`` is even: for a vector
    (``shape = D``) the mask alternates ``1, 0, 1, ...``; for an ``(H, W)`` image it is the
    checkerboard of RealNVP, flattened in raster order to match images flattened to ``(B, H*W)``.
    Stacking layers with ``parity`` 0, 1, 0, ... lets every coordinate be transformed.

    Args:
        shape: ``D`` or a tuple of positive sizes such as ``(H, W)``.
        parity: 0 or 1; 1 gives the complementary mask.

    Returns:
        float32 tensor ``(prod(shape),)`` of zeros and ones.

    Raises:
        ValueError: a non-positive or non-integer size, or ``parity`` not 0/1.
    """
    sizes = (shape,) if isinstance(shape, int) and not isinstance(shape, bool) else tuple(shape)
    if not sizes:
        raise ValueError("shape must name at least one size")
    for i, size in enumerate(sizes):
        _check_positive_int(size, f"shape[{i}]")
    if parity not in (0, 1) or isinstance(parity, bool):
        raise ValueError(f"parity must be 0 or 1, got {parity!r}")
    grids = torch.meshgrid(*(torch.arange(size) for size in sizes), indexing="ij")
    return ((sum(grids) + parity) % 2 == 0).float().flatten()


def made_masks(dim: int, hidden_sizes: Sequence[int]) -> list[torch.Tensor]:
    """Connectivity masks of a MADE network with inputs in the natural order ``1, ..., D``
    (Germain, Gregor, Murray & Larochelle 2015, "MADE: Masked Autoencoder for Distribution
    Estimation", Sec. 4).

    Every unit gets a *degree* ``m``: input ``d`` has degree ``d``; hidden units cycle through
    ``1, ..., D-1`` (deterministically, so every degree is present when a layer has at least
    ``D-1`` units). A hidden unit of degree ``m`` may see units of degree ``<= m``; output ``d``
    may only see hidden units of degree ``< d``. Hence output ``d`` depends on inputs ``< d``
    only, and output 1 on none (it is a constant). (The course's ``autoregressive.causal_mask`` is
    the same idea for a 2-D convolution kernel; it does not apply to vectors.)

    Args:
        dim: ``D``, positive integer.
        hidden_sizes: the widths of the hidden layers, each a positive integer (may be empty).

    Returns:
        ``len(hidden_sizes) + 1`` float32 masks, shaped like the ``nn.Linear`` weights they
        multiply, ``(out_features, in_features)``; the last (outputs) has ``D`` rows.

    Raises:
        ValueError: ``dim`` or a hidden size not a positive integer.
    """
    _check_positive_int(dim, "dim")
    for i, size in enumerate(hidden_sizes):
        _check_positive_int(size, f"hidden_sizes[{i}]")
    inputs = torch.arange(1, dim + 1)
    degrees = [inputs] + [torch.arange(size) % max(dim - 1, 1) + 1 for size in hidden_sizes]
    masks = [(d_out[:, None] >= d_in[None, :]).float() for d_in, d_out in zip(degrees, degrees[1:])]
    masks.append((inputs[:, None] > degrees[-1][None, :]).float())
    return masks


class MaskedLinear(nn.Linear):
    """``nn.Linear`` whose weight is multiplied by a fixed binary mask ``(out_features, in_features)``.

    Input ``(B, in_features)`` -> output ``(B, out_features)``. The 1-D counterpart of
    :class:`dgmcourse.autoregressive.MaskedConv2d`.

    Raises:
        ValueError: ``mask`` not of shape ``(out_features, in_features)``.
    """

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor):
        super().__init__(in_features, out_features)
        mask = torch.as_tensor(mask)
        if mask.shape != self.weight.shape:
            raise ValueError(f"mask must have shape {tuple(self.weight.shape)}, got {tuple(mask.shape)}")
        self.register_buffer("mask", mask.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def _zero_last_layer(net: nn.Sequential) -> None:
    """Zero the output layer so that a new layer is the identity map (Kingma & Dhariwal 2018,
    "Glow", Sec. 3.3): training starts from the base distribution itself."""
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)


# --------------------------------------------------------------------------- layers

class ElementwiseAffine(nn.Module):
    """The simplest flow: ``z = (x - shift) * exp(-log_scale)``, coordinate by coordinate.

    With the standard normal base, ``x = shift + exp(log_scale) * z ~ N(shift, diag(exp(2 log_scale)))``.
    Its Jacobian is diagonal: ``log |det dz/dx| = -sum(log_scale)`` (Papamakarios et al. 2021,
    eq. 2). Parameters start at 0 (the identity).

    Args:
        dim: ``D``, positive integer.

    ``forward(x)``: ``(B, D) -> (z (B, D), log_det (B,))``; ``inverse(z)``: the reverse map and
    ``+sum(log_scale)``. Both raise ValueError for input not of shape ``(B, D)``.
    """

    def __init__(self, dim: int):
        super().__init__()
        _check_positive_int(dim, "dim")
        self.dim = dim
        self.shift = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch(x, self.dim)
        return (x - self.shift) * torch.exp(-self.log_scale), (-self.log_scale.sum()).expand(len(x))

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch(z, self.dim, "z")
        return z * torch.exp(self.log_scale) + self.shift, self.log_scale.sum().expand(len(z))


class AffineCoupling(nn.Module):
    """RealNVP affine coupling layer with a binary mask ``b`` (Dinh et al. 2017, eqs. 4-9).

    Coordinates with ``b = 1`` pass through unchanged and condition a scale ``s`` and a
    translation ``t`` of the others (eq. 9, in the data -> base direction of eqs. 4-5):

        z = b * x + (1 - b) * (x * exp(s(b * x)) + t(b * x)),
        x = b * z + (1 - b) * ((z - t(b * z)) * exp(-s(b * z)))          (inverse, eqs. 7-8).

    The Jacobian is triangular up to a permutation, with diagonal ``exp(s)`` on the transformed
    coordinates, so ``log |det dz/dx| = sum_{b_i = 0} s_i`` (eq. 6). ``s`` and ``t`` come from
    one MLP ``D -> hidden -> hidden -> 2D`` (ReLU); the log-scale is bounded,
    ``s = log_scale_bound * tanh(raw)``, so one layer scales a coordinate by at most
    ``exp(+-log_scale_bound)``, which keeps training stable. The MLP's last layer starts at zero,
    making a new layer the identity.

    Args:
        mask: binary tensor ``(D,)`` with at least one 0 and one 1 (see :func:`checkerboard_mask`).
        hidden: width of the MLP's two hidden layers.
        log_scale_bound: positive bound on ``|s|``.

    ``forward(x)``: ``(B, D) -> (z (B, D), log_det (B,))``; ``inverse(z) -> (x, log_det)`` with
    ``log_det = -sum s``. Both raise ValueError for input not of shape ``(B, D)``.

    Raises:
        ValueError: ``mask`` not 1-D binary with both values present, ``hidden`` not a positive
            integer, or ``log_scale_bound`` <= 0.
    """

    def __init__(self, mask: torch.Tensor, hidden: int = 64, log_scale_bound: float = 2.0):
        super().__init__()
        mask = torch.as_tensor(mask)
        if mask.ndim != 1 or not ((mask == 0) | (mask == 1)).all():
            raise ValueError(f"mask must be a 1-D tensor of zeros and ones, got {mask!r:.80}")
        if mask.all() or not mask.any():
            raise ValueError("mask must contain both a 0 (transformed) and a 1 (passed through)")
        _check_positive_int(hidden, "hidden")
        _check_log_scale_bound(log_scale_bound)
        self.dim = mask.numel()
        self.log_scale_bound = float(log_scale_bound)
        self.register_buffer("mask", mask.float())
        self.net = nn.Sequential(nn.Linear(self.dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2 * self.dim))
        _zero_last_layer(self.net)

    def _scale_shift(self, passed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``s, t`` of the transformed coordinates (zero on the passed-through ones)."""
        raw, shift = self.net(passed).chunk(2, dim=-1)
        free = 1 - self.mask
        return free * self.log_scale_bound * torch.tanh(raw), free * shift

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch(x, self.dim)
        s, t = self._scale_shift(self.mask * x)
        return self.mask * x + (1 - self.mask) * (x * torch.exp(s) + t), s.sum(-1)

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch(z, self.dim, "z")
        s, t = self._scale_shift(self.mask * z)
        return self.mask * z + (1 - self.mask) * ((z - t) * torch.exp(-s)), -s.sum(-1)


class MAF(nn.Module):
    """One layer of a masked autoregressive flow (Papamakarios, Pavlakou & Murray 2017, eqs. 2-4).

    Each coordinate is a Gaussian given the previous ones, ``x_i = u_i exp(alpha_i) + mu_i`` with
    ``mu_i, alpha_i`` functions of ``x_1, ..., x_{i-1}`` (eq. 2). A MADE network
    (:func:`made_masks`, ``D -> hidden -> hidden -> 2D``, ReLU) outputs all ``mu_i, alpha_i`` in
    one pass, so the density direction is parallel (eq. 3):

        u = (x - mu(x)) * exp(-alpha(x)),      log |det du/dx| = -sum_i alpha_i   (eq. 4),

    the Jacobian being lower triangular in the order ``1, ..., D``. Sampling inverts it one
    coordinate at a time: ``D`` sequential passes. As in :class:`AffineCoupling` (and unlike the
    paper), the log-scale is bounded, ``alpha = log_scale_bound * tanh(raw)``: with unbounded
    ``alpha`` a stack of layers can scale a coordinate by ``exp`` of a sum of large numbers and
    sampling loses all precision. The output layer starts at zero (identity).

    Args:
        dim: ``D``, positive integer.
        hidden: width of the two masked hidden layers.
        log_scale_bound: positive bound on ``|alpha|``.

    ``forward(x)``: ``(B, D) -> (u (B, D), log_det (B,))``, one network pass; ``inverse(u)``:
    ``-> (x, sum alpha)``, ``D`` passes. Both raise ValueError for input not of shape ``(B, D)``.

    Raises:
        ValueError: ``dim`` or ``hidden`` not a positive integer, or ``log_scale_bound`` <= 0.
    """

    def __init__(self, dim: int, hidden: int = 64, log_scale_bound: float = 2.0):
        super().__init__()
        _check_positive_int(hidden, "hidden")
        _check_log_scale_bound(log_scale_bound)
        first, second, out = made_masks(dim, [hidden, hidden])
        self.dim = dim
        self.log_scale_bound = float(log_scale_bound)
        self.net = nn.Sequential(MaskedLinear(dim, hidden, first), nn.ReLU(), MaskedLinear(hidden, hidden, second),
                                 nn.ReLU(), MaskedLinear(hidden, 2 * dim, out.repeat(2, 1)))
        _zero_last_layer(self.net)

    def _shift_log_scale(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``mu, alpha`` ``(B, D)``, output ``i`` depending on ``x_1, ..., x_{i-1}`` only."""
        mu, raw = self.net(x).chunk(2, dim=-1)
        return mu, self.log_scale_bound * torch.tanh(raw)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch(x, self.dim)
        mu, alpha = self._shift_log_scale(x)
        return (x - mu) * torch.exp(-alpha), -alpha.sum(-1)

    def inverse(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch(u, self.dim, "u")
        x = torch.zeros_like(u)
        for _ in range(self.dim):
            # If x_1..x_{k-1} are already right, mu_k and alpha_k are too, so this pass also
            # gets x_k right: after pass k the first k coordinates are exact, after D all are.
            mu, alpha = self._shift_log_scale(x)
            x = u * torch.exp(alpha) + mu
        return x, alpha.sum(-1)


class Permutation(nn.Module):
    """Reorder coordinates: ``z = x[:, perm]``; volume-preserving, ``log_det = 0``.

    Placed between :class:`MAF` layers so that each layer uses a different autoregressive order
    (MAF layers sharing one order would compose to a single autoregressive model in that order).

    Args:
        perm: a permutation of ``0, ..., D-1`` (sequence or 1-D integer tensor).

    ``forward(x)``: ``(B, D) -> (x[:, perm], zeros (B,))``; ``inverse(z)`` undoes it.

    Raises:
        ValueError: ``perm`` not a permutation of ``0, ..., D-1``.
    """

    def __init__(self, perm: Sequence[int] | torch.Tensor):
        super().__init__()
        perm = torch.as_tensor(perm)
        if perm.ndim != 1 or perm.numel() == 0 or not torch.equal(perm.sort().values, torch.arange(perm.numel())):
            raise ValueError(f"perm must be a permutation of 0, ..., D-1, got {perm!r:.80}")
        self.dim = perm.numel()
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", perm.argsort())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch(x, self.dim)
        return x[:, self.perm], x.new_zeros(len(x))

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch(z, self.dim, "z")
        return z[:, self.inverse_perm], z.new_zeros(len(z))


# --------------------------------------------------------------------------- the flow

class Flow(nn.Module):
    """A stack of flow layers over a standard normal base ``N(0, I_D)``.

    ``forward(x)`` applies the layers in order (data -> base) and adds their log-determinants;
    ``inverse(z)`` applies their inverses in reverse order.

    Args:
        layers: non-empty sequence of layers with the same ``dim`` (``forward``/``inverse``
            returning ``(output, log_det)``, as every layer of this module).

    Raises:
        ValueError: no layers, or layers of different ``dim``.
    """

    def __init__(self, layers: Sequence[nn.Module]):
        super().__init__()
        layers = list(layers)
        if not layers:
            raise ValueError("layers must contain at least one layer")
        dims = {layer.dim for layer in layers}
        if len(dims) != 1:
            raise ValueError(f"all layers must have the same dim, got {sorted(dims)}")
        self.dim = dims.pop()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, D) -> (z (B, D), log |det dz/dx| (B,))``. Raises ValueError for a bad shape."""
        _check_batch(x, self.dim)
        log_det = x.new_zeros(len(x))
        for layer in self.layers:
            x, layer_log_det = layer(x)
            log_det = log_det + layer_log_det
        return x, log_det

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z (B, D) -> (x (B, D), log |det dx/dz| (B,))``. Raises ValueError for a bad shape."""
        _check_batch(z, self.dim, "z")
        log_det = z.new_zeros(len(z))
        for layer in reversed(self.layers):
            z, layer_log_det = layer.inverse(z)
            log_det = log_det + layer_log_det
        return z, log_det

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x) = log N(f(x); 0, I) + log |det df/dx|`` in nats (Dinh et al. 2017, eq. 3).

        Args:
            x: ``(B, D)`` on the flow's device.

        Returns:
            ``(B,)`` log-densities in nats (differentiable: minimise their negative mean to train).

        Raises:
            ValueError: ``x`` not a floating-point tensor of shape ``(B, D)``.
        """
        z, log_det = self(x)
        return _base_log_prob(z) + log_det

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``z ~ N(0, I)`` and return ``x = f^{-1}(z)`` (Papamakarios et al. 2021, eq. 1).

        The base draws are made on the CPU (so ``generator`` is a CPU ``torch.Generator`` and a
        seed gives the same samples on every device), then moved to the flow's device and dtype.

        Args:
            n: number of samples, positive integer.
            generator: optional CPU ``torch.Generator``.

        Returns:
            ``(n, D)`` samples on the flow's device.

        Raises:
            ValueError: ``n`` not a positive integer.
        """
        _check_positive_int(n, "n")
        tensors = list(itertools.chain(self.parameters(), self.buffers()))
        dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.get_default_dtype())
        z = torch.randn(n, self.dim, generator=generator, dtype=dtype)
        return self.inverse(z.to(tensors[0].device))[0]


def realnvp_flow(dim: int, layers: int = 4, hidden: int = 64, image_shape: Sequence[int] | None = None) -> Flow:
    """``layers`` :class:`AffineCoupling` layers with alternating masks (parity 0, 1, 0, ...).

    The masks are :func:`checkerboard_mask` of ``dim`` (coordinates alternate) or, with
    ``image_shape`` such as ``(28, 28)``, RealNVP's spatial checkerboard on the image flattened in
    raster order (Dinh et al. 2017, Fig. 3).

    Raises:
        ValueError: ``dim`` < 2 (a coupling needs a part to pass through and one to transform),
            ``layers`` or ``hidden`` not a positive integer, or ``image_shape`` whose sizes do not
            multiply to ``dim``.
    """
    _check_positive_int(dim, "dim", minimum=2)
    _check_positive_int(layers, "layers")
    shape = dim if image_shape is None else tuple(image_shape)
    if image_shape is not None and math.prod(shape) != dim:
        raise ValueError(f"image_shape must multiply to dim = {dim}, got {shape}")
    return Flow([AffineCoupling(checkerboard_mask(shape, parity=i % 2), hidden) for i in range(layers)])


def maf_flow(dim: int, layers: int = 4, hidden: int = 64) -> Flow:
    """``layers`` :class:`MAF` layers with the order reversed (:class:`Permutation`) between them.

    Raises:
        ValueError: ``dim``, ``layers`` or ``hidden`` not a positive integer.
    """
    _check_positive_int(dim, "dim")
    _check_positive_int(layers, "layers")
    stack = [MAF(dim, hidden)]
    for _ in range(layers - 1):
        stack += [Permutation(torch.arange(dim - 1, -1, -1)), MAF(dim, hidden)]
    return Flow(stack)


def standardize(flow: Flow, x: torch.Tensor) -> Flow:
    """``flow`` with an :class:`ElementwiseAffine` layer prepended, started at the data's mean and
    standard deviation per coordinate.

    Before training, the new flow (identity couplings) is the per-coordinate Gaussian
    ``N(mean(x), diag(std(x)^2))`` (Papamakarios et al. 2021, eq. 2, with the affine map as the
    first layer), so maximum likelihood starts from data on the base's scale; the first layer is
    trained with the others. The layers of ``flow`` are shared, not copied.

    Args:
        flow: a :class:`Flow` of dimension ``D``.
        x: ``(N, D)`` floating-point data, ``N >= 2`` (e.g. dequantized training data).

    Returns:
        a new :class:`Flow` ``[ElementwiseAffine, *flow.layers]`` on ``x``'s dtype, on the device of
        ``flow``'s parameters.

    Raises:
        ValueError: ``x`` not ``(N, D)`` floating point with ``N >= 2``, or a coordinate with zero
            standard deviation (its log-scale would be ``-inf``).
    """
    _check_batch(x, flow.dim)
    if len(x) < 2:
        raise ValueError(f"x needs at least 2 rows for a standard deviation, got {len(x)}")
    std = x.std(0)
    if not (std > 0).all():
        raise ValueError("x has a coordinate with zero standard deviation: standardize cannot start there")
    first = ElementwiseAffine(flow.dim).to(next(flow.parameters()).device)
    with torch.no_grad():
        first.shift.copy_(x.mean(0))
        first.log_scale.copy_(std.log())
    return Flow([first, *flow.layers])


def train_flow(flow: Flow, x_train: torch.Tensor, x_test: torch.Tensor | None = None, epochs: int = 10,
               batch_size: int = 128, lr: float = 1e-3, device: torch.device | None = None, seed: int = 0,
               progress: bool = True) -> dict[str, list[float]]:
    """Maximum likelihood with Adam: minimise ``-mean log p(x)`` (exact, no bound).

    Args:
        flow: a :class:`Flow`; moved to ``device`` (default :func:`dgmcourse.device.get_device`).
        x_train: ``(N, D)`` continuous training data (dequantize discrete data first);
            ``x_test``: optional held-out ``(M, D)`` data.
        epochs, batch_size, lr: optimisation settings.
        seed: shuffling seed, passed to :func:`dgmcourse.device.seed_everything`.
        progress: tqdm bar over epochs.

    Returns:
        ``{"train_nll": [...], "test_nll": [...]}``: per-epoch mean negative log-likelihood in
        nats per example (train: averaged over the epoch's mini-batches; test: after the epoch,
        empty without ``x_test``).

    Raises:
        ValueError: data not ``(N, D)`` floating point, ``epochs``/``batch_size`` < 1 or ``lr`` <= 0.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    _check_batch(x_train, flow.dim, "x_train")
    if x_test is not None:
        _check_batch(x_test, flow.dim, "x_test")
    device, optimizer = start_training(flow, lr, seed, device)
    history = {"train_nll": [], "test_nll": []}
    bar = tqdm(range(epochs), desc="train flow", disable=not progress)
    for _ in bar:
        means = train_epoch(optimizer, len(x_train), batch_size,
                            lambda idx: {"loss": -flow.log_prob(x_train[idx].to(device)).mean()})
        history["train_nll"].append(means["loss"])
        if x_test is not None:
            with torch.no_grad():
                history["test_nll"].append(-flow.log_prob(x_test.to(device)).mean().item())
        bar.set_postfix(nll=f"{history['train_nll'][-1]:.3f}")
    flow.eval()
    return history


# --------------------------------------------------------------------------- discrete data

def _check_levels(levels) -> None:
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2 (2 for binary pixels, 256 for 8-bit), got {levels!r}")


def dequantize(x: torch.Tensor, levels: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantization: ``y = (x + u) / levels`` with ``u ~ U[0, 1)^D``, so ``y`` lies in
    ``[x / levels, (x + 1) / levels)`` (Theis, van den Oord & Bethge 2016, "A note on the evaluation
    of generative models", Sec. 3.1; Ho, Chen, Srinivas, Duan & Abbeel 2019, "Flow++", Sec. 3.1).

    A density fitted to the integers themselves could pile up arbitrarily high on them; on the
    dequantized data its likelihood is a lower bound on the likelihood of a discrete model
    (see :func:`bits_per_dim`). Draw fresh noise every epoch.

    Args:
        x: tensor of any shape with integer values in ``{0, ..., levels - 1}`` (integer or float
            dtype; e.g. binary pixels with ``levels=2``).
        levels: number of discrete values, integer >= 2.
        generator: optional CPU ``torch.Generator`` (the noise is drawn on the CPU, then moved to
            ``x``'s device).

    Returns:
        tensor of ``x``'s shape and device, in ``[0, 1)``; ``x``'s dtype if floating, else the
        default float dtype.

    Raises:
        ValueError: ``levels`` not an integer >= 2, ``x`` not a tensor, or values that are not
            integers in ``{0, ..., levels - 1}``.
    """
    _check_levels(levels)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a tensor, got {type(x).__name__}")
    x = x.to(x.dtype if x.is_floating_point() else torch.get_default_dtype())
    if ((x != torch.floor(x)) | (x < 0) | (x > levels - 1)).any():
        raise ValueError(f"x must hold integers in {{0, ..., {levels - 1}}} (levels={levels})")
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    # Rounding can turn x + u into x + 1 when u is within one float spacing of 1: keep y below
    # the bin's upper edge.
    upper = torch.nextafter((x + 1) / levels, torch.zeros_like(x))
    return torch.minimum((x + u) / levels, upper)


def bits_per_dim(log_prob_nats, dims: int, levels: int) -> torch.Tensor:
    """Upper bound on a discrete model's bits/dim from a density on uniformly dequantized data.

    Derivation (Theis et al. 2016, Sec. 3.1; Ho et al. 2019, Sec. 3.1). The density ``p`` on
    ``y`` in ``[0, 1)^D`` (the output scale of :func:`dequantize`) defines a discrete model
    ``P(x) = integral of p over the bin [x, x + 1) / L`` (``L = levels``). Substituting
    ``y = (x + u) / L``, ``dy = L^{-D} du``, ``u ~ U[0, 1)^D``, and applying Jensen's inequality:

        log P(x) = log E_u[p((x + u) / L)] - D log L  >=  E_u[log p((x + u) / L)] - D log L,

    so, dividing ``-log P(x)`` by ``D log 2``:

        bits/dim of P  <=  -log p(y) / (D log 2) + log2(L)   (in expectation over the noise).

    Equality holds when ``p`` is constant on every bin; the uniform density ``p = 1`` gives
    ``log2(L)`` bits/dim, that of the uniform discrete model (8 for 8-bit pixels, 1 for binary).
    If the flow models a rescaled ``y`` (e.g. ``2y - 1`` or a logit), include that map's
    log-determinant in ``log_prob_nats`` first. With ``levels`` dropped this is
    :func:`dgmcourse.evaluation.bits_per_dim`, the unit of the PixelCNN and VAE lectures.

    Args:
        log_prob_nats: tensor (any shape) of ``log p(y)`` in nats per example, ``y`` in ``[0, 1)^D``.
        dims: ``D``, the number of dimensions of one example (positive integer).
        levels: ``L``, the number of discrete values per dimension (integer >= 2).

    Returns:
        tensor of ``log_prob_nats``'s shape, in bits per dimension.

    Raises:
        ValueError: ``dims`` not a positive integer or ``levels`` not an integer >= 2.
    """
    _check_positive_int(dims, "dims")
    _check_levels(levels)
    return _nats_to_bits_per_dim(log_prob_nats, dims) + math.log2(levels)


def train_dequantized_flow(flow: Flow, x_train: torch.Tensor, levels: int, epochs: int = 10, y_test=None,
                           batch_size: int = 128, lr: float = 1e-3, device: torch.device | None = None,
                           generator: torch.Generator | None = None, progress: bool = True) -> dict[str, list[float]]:
    """Maximum likelihood on discrete data with fresh uniform dequantization noise every epoch.

    Each epoch draws ``y = dequantize(x_train, levels)`` (:func:`dequantize`; Theis et al. 2016,
    Sec. 3.1; Ho et al. 2019, Sec. 3.1) and runs one epoch of :func:`train_flow` on it (Adam,
    shuffling seeded with the epoch number); the per-epoch losses are reported in the unit of
    :func:`bits_per_dim`, an upper bound on the discrete model's bits/dim.

    Args:
        flow: a :class:`Flow` of dimension ``D``; trained in place and moved to ``device``
            (default :func:`dgmcourse.device.get_device`).
        x_train: ``(N, D)`` integers in ``{0, ..., levels - 1}`` (e.g. binary pixels, float dtype).
        levels: number of discrete values, integer >= 2.
        epochs, batch_size, lr: optimisation settings (``epochs`` >= 1).
        y_test: optional ``(M, D)`` *already dequantized* test data (one fixed noise draw, so the
            test curve does not fluctuate with the noise).
        generator: optional CPU ``torch.Generator`` for the training noise.
        progress: tqdm bar over epochs.

    Returns:
        ``{"train_bpd": [...], "test_bpd": [...]}``: per epoch, the training bound (mean over the
        epoch's mini-batches) and the test bound after the epoch (empty without ``y_test``), in bits/dim.

    Raises:
        ValueError: as :func:`dequantize` and :func:`train_flow` (bad ``levels``, values, shapes,
            ``epochs`` < 1, ...).
    """
    _check_positive_int(epochs, "epochs")
    _check_levels(levels)
    _check_batch(x_train, flow.dim, "x_train")
    if y_test is not None:
        _check_batch(y_test, flow.dim, "y_test")
    device = device or get_device()
    history = {"train_bpd": [], "test_bpd": []}
    bar = tqdm(range(epochs), desc="dequantized flow", disable=not progress)
    for epoch in bar:
        y_train = dequantize(x_train, levels, generator=generator)
        h = train_flow(flow, y_train, epochs=1, batch_size=batch_size, lr=lr, device=device, seed=epoch,
                       progress=False)
        history["train_bpd"].append(bits_per_dim(torch.tensor(-h["train_nll"][0]), flow.dim, levels).item())
        if y_test is not None:
            with torch.no_grad():
                log_prob = flow.log_prob(y_test.to(device)).cpu()
            history["test_bpd"].append(bits_per_dim(log_prob, flow.dim, levels).mean().item())
        bar.set_postfix(bpd=f"{history['train_bpd'][-1]:.3f}")
    return history
