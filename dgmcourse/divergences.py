"""Divergences, the Wasserstein (earth mover's) distance and the limits of likelihood.

Notation follows Isachenko, *Deep Generative Models*, lecture 9, Ozon Masters, 2021: data
distribution π, model p(x|θ). All divergences are in nats.

* Discrete / gridded divergences: :func:`kl_divergence`, :func:`js_divergence`,
  :func:`total_variation`.
* Earth mover's distance: :func:`transport_lp` writes the transport problem as a linear
  program, :func:`earth_movers_distance` solves it (SciPy's HiGHS or POT's network
  simplex) and returns W and the plan γ; :func:`point_cloud_wasserstein` for two samples;
  :func:`wasserstein_1d` through quantile functions.
* The parallel-lines example of Arjovsky et al. (2017), Example 1:
  :func:`sample_parallel_lines`, :func:`parallel_lines_divergences`,
  :func:`histogram_divergences` (plug-in estimates from samples).
* Likelihood versus sample quality: :func:`sample_gaussian_kde` (p1, a mixture of narrow
  Gaussians on the training points; its density is
  :func:`dgmcourse.evaluation.gaussian_kde_log_density`) and
  :func:`noise_mixture_log_likelihood` (p2 = 0.01 p + 0.99 noise).
* Likelihood-free two-sample tests: :func:`mmd2_unbiased`, :func:`mmd_permutation_test`,
  :func:`classifier_two_sample_test`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import linprog
from scipy.stats import binomtest, norm

_MASS_TOL = 1e-6


class TestResult(NamedTuple):
    """Outcome of a two-sample test: the statistic and its p-value under H0: π = p."""

    statistic: float
    p_value: float


# --------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------
def _to_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be an array of numbers, got {type(x).__name__}") from err
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite numbers")
    return arr


def _masses(p, name: str, dx: float | None, normalize: bool) -> np.ndarray:
    """Probability masses of a discrete distribution or of a density on a grid with cell volume dx."""
    arr = _to_numpy(p, name)
    if arr.ndim == 0:
        raise ValueError(f"{name} must be an array of masses, got a scalar")
    if (arr < 0).any():
        raise ValueError(f"{name} has negative mass (min {arr.min():.3g}); masses must be >= 0")
    if dx is not None and not (dx > 0 and math.isfinite(dx)):
        raise ValueError(f"dx must be a positive cell volume, got {dx!r}")
    if normalize:
        if arr.sum() <= 0:
            raise ValueError(f"{name} has zero total mass and cannot be normalised")
        return arr / arr.sum()
    masses = arr * (dx if dx is not None else 1.0)
    if abs(masses.sum() - 1.0) > _MASS_TOL * max(1, arr.size ** 0.5):
        what = "sum(p) * dx" if dx is not None else "its masses"
        raise ValueError(f"{name} must sum to 1 ({what} = {masses.sum():.6g}); "
                         "pass normalize=True to rescale it")
    return masses


def _pair(p, q, dx, normalize) -> tuple[np.ndarray, np.ndarray]:
    p_m, q_m = _masses(p, "p", dx, normalize), _masses(q, "q", dx, normalize)
    if p_m.shape != q_m.shape:
        raise ValueError(f"p and q must have the same shape, got {p_m.shape} and {q_m.shape}")
    return p_m, q_m


# --------------------------------------------------------------------------------------
# f-divergences on discrete distributions and grids
# --------------------------------------------------------------------------------------
def kl_divergence(p, q, dx: float | None = None, normalize: bool = False) -> float:
    """Kullback-Leibler divergence KL(p || q) = Σ p log(p / q), in nats.

    Args:
        p, q: masses of two discrete distributions (any shape, same shape), or, with ``dx``,
            density values on the same grid (``dx`` = volume of one grid cell; then the
            masses are ``p * dx`` and the sum is a Riemann sum of ∫ p log(p/q) dx).
        dx: grid cell volume for densities; ``None`` for discrete masses.
        normalize: rescale ``p`` and ``q`` to total mass 1 instead of checking that they are.

    Returns:
        KL in nats; ``inf`` when p puts mass where q has none (p ≪ q fails). 0 log 0 = 0.

    Raises:
        ValueError: shapes differ, negative or non-finite entries, masses that do not sum
            to 1 (without ``normalize``), or a non-positive ``dx``.

    Source: Isachenko (2021), lecture 9, KL(π||p) = ∫ π(x) log π(x)/p(x) dx; Cover & Thomas,
    Eq. 2.26.
    """
    p_m, q_m = _pair(p, q, dx, normalize)
    support = p_m > 0
    if (q_m[support] == 0).any():
        return math.inf
    return float(np.sum(p_m[support] * np.log(p_m[support] / q_m[support])))


def js_divergence(p, q, dx: float | None = None, normalize: bool = False) -> float:
    """Jensen-Shannon divergence JSD(p || q) = ½ KL(p || m) + ½ KL(q || m), m = (p + q) / 2.

    Args and errors as :func:`kl_divergence`. Always finite: 0 ≤ JSD ≤ log 2 (nats), with
    log 2 exactly when p and q have disjoint supports.

    Returns:
        JSD in nats.

    Source: Isachenko (2021), lecture 9, JSD definition and V(G, D*) = 2 JSD(π||p) − log 4
    (Goodfellow et al. 2014, Theorem 1).
    """
    p_m, q_m = _pair(p, q, dx, normalize)
    m = 0.5 * (p_m + q_m)
    return 0.5 * kl_divergence(p_m, m) + 0.5 * kl_divergence(q_m, m)


def total_variation(p, q, dx: float | None = None, normalize: bool = False) -> float:
    """Total variation distance TV(p, q) = sup_A |p(A) − q(A)| = ½ Σ |p − q|.

    Args and errors as :func:`kl_divergence`. 0 ≤ TV ≤ 1 (a probability, unitless).

    Source: Arjovsky et al. (2017), "Wasserstein GAN", Section 2, δ(P_r, P_g).
    """
    p_m, q_m = _pair(p, q, dx, normalize)
    return float(0.5 * np.abs(p_m - q_m).sum())


# --------------------------------------------------------------------------------------
# earth mover's distance
# --------------------------------------------------------------------------------------
def _piles(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _to_numpy(a, "a"), _to_numpy(b, "b")
    for name, v in (("a", a), ("b", b)):
        if v.ndim != 1:
            raise ValueError(f"{name} must be a 1-D vector of masses, got shape {v.shape}")
        if (v < 0).any():
            raise ValueError(f"{name} has negative mass (min {v.min():.3g}); masses must be >= 0")
    if abs(a.sum() - b.sum()) > _MASS_TOL * max(1.0, a.sum()):
        raise ValueError(f"a and b must carry the same total mass (dirt is moved, not created), "
                         f"got {a.sum():.6g} and {b.sum():.6g}")
    return a, b


def _cost(cost, n: int, m: int) -> np.ndarray:
    cost = _to_numpy(cost, "cost")
    if cost.shape != (n, m):
        raise ValueError(f"cost must have shape (len(a), len(b)) = ({n}, {m}), got {cost.shape}")
    return cost


def transport_lp(a, b, cost):
    """The optimal transport problem between piles ``a`` and ``b`` written as a linear program.

    minimise   Σ_ij c_ij γ_ij                      (cost of the plan)
    subject to Σ_j γ_ij = a_i  for every i          (everything in pile i leaves it)
               Σ_i γ_ij = b_j  for every j          (pile j ends up with b_j)
               γ_ij ≥ 0.

    The unknown plan γ (n, m) is flattened row-major: γ_ij is variable ``i * m + j``.

    Args:
        a: (n,) source masses; b: (m,) target masses, same total; cost: (n, m) c_ij.

    Returns:
        ``(c, A_eq, b_eq)``: c (n·m,) objective, A_eq (n + m, n·m) sparse constraint matrix,
        b_eq (n + m,) right-hand side, ready for ``scipy.optimize.linprog``.

    Raises:
        ValueError: non-1-D or negative masses, unequal totals, cost of the wrong shape.

    Source: Isachenko (2021), lecture 9, W(π, p) = inf_{γ ∈ Π(π, p)} E_γ ||x − y||;
    Peyré & Cuturi, "Computational Optimal Transport" (2019), Eq. 2.11.
    """
    a, b = _piles(a, b)
    n, m = len(a), len(b)
    cost = _cost(cost, n, m)
    rows_leave = sp.kron(sp.eye(n), np.ones((1, m)))   # Σ_j γ_ij
    cols_arrive = sp.kron(np.ones((1, n)), sp.eye(m))  # Σ_i γ_ij
    A_eq = sp.vstack([rows_leave, cols_arrive]).tocsr()
    return cost.ravel(), A_eq, np.concatenate([a, b])


def earth_movers_distance(a, b, cost, solver: str = "network_simplex") -> tuple[float, np.ndarray]:
    """Earth mover's distance: the cheapest way to move piles ``a`` onto piles ``b``.

    Args:
        a: (n,) source masses; b: (m,) target masses. Any non-negative masses with the same
            total (probabilities, or unnormalised piles of dirt: W then scales with the total).
        cost: (n, m) cost of moving one unit from pile i to pile j (a distance for W_1).
        solver: ``"linprog"`` solves :func:`transport_lp` with SciPy's HiGHS (fine up to a few
            hundred piles); ``"network_simplex"`` uses POT's ``ot.emd`` (exact; thousands).

    Returns:
        ``(W, gamma)``: the minimal cost Σ γ_ij c_ij (units of cost × mass) and the optimal plan
        γ of shape (n, m) with row sums a and column sums b.

    Raises:
        ValueError: as :func:`transport_lp`, or an unknown ``solver``.
        RuntimeError: if the solver does not report an optimal solution.

    Source: Isachenko (2021), lecture 9, discrete earth mover's example (W = 2 + 2 + 1 = 5);
    Arjovsky et al. (2017), Eq. 1.
    """
    if solver not in ("network_simplex", "linprog"):
        raise ValueError(f"solver must be 'network_simplex' or 'linprog', got {solver!r}")
    a, b = _piles(a, b)
    cost = _cost(cost, len(a), len(b))
    if solver == "linprog":
        c, A_eq, b_eq = transport_lp(a, b, cost)
        res = linprog(c, A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs")
        if res.status != 0:
            raise RuntimeError(f"linprog did not find the optimal plan: {res.message}")
        gamma = res.x.reshape(len(a), len(b))
    else:
        import ot

        gamma, log = ot.emd(a, b, np.ascontiguousarray(cost), numItermax=10_000_000, log=True)
        if log["result_code"] != 1:
            raise RuntimeError(f"ot.emd did not find the optimal plan: {log['warning']}")
    return float(np.sum(gamma * cost)), gamma


def point_cloud_wasserstein(x, y, solver: str = "network_simplex") -> tuple[float, np.ndarray]:
    """Exact Wasserstein-1 distance between the empirical distributions of two samples.

    Args:
        x: (n, d) points, y: (m, d) points (arrays or tensors), each point with mass 1/n or 1/m.
        solver: as :func:`earth_movers_distance`.

    Returns:
        ``(W, gamma)``: W_1 in the units of x (Euclidean ground distance) and the (n, m) plan.

    Raises:
        ValueError: if x or y is not 2-D or their dimensions differ.

    Source: Arjovsky et al. (2017), Eq. 1, with empirical measures.
    """
    x, y = _to_numpy(x, "x"), _to_numpy(y, "y")
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (n, d) and (m, d) with the same d, got {x.shape} and {y.shape}")
    from scipy.spatial.distance import cdist

    a, b = np.full(len(x), 1.0 / len(x)), np.full(len(y), 1.0 / len(y))
    return earth_movers_distance(a, b, cdist(x, y), solver=solver)


def _quantile_steps(values: np.ndarray, weights: np.ndarray):
    order = np.argsort(values, kind="stable")
    return values[order], np.cumsum(weights[order])


def wasserstein_1d(u_values, v_values, u_weights=None, v_weights=None, p: float = 1.0,
                   normalize: bool = False) -> float:
    """Wasserstein-p distance between two distributions on the real line, via quantiles.

    W_p(μ, ν)^p = ∫_0^1 |F_μ^{-1}(t) − F_ν^{-1}(t)|^p dt, with F^{-1} the (step) quantile
    function of a weighted sample. Computed exactly by splitting [0, 1] at every jump of
    either cumulative distribution function.

    Args:
        u_values: (n,) support points of μ; v_values: (m,) support points of ν.
        u_weights, v_weights: (n,) / (m,) masses summing to 1 (uniform when ``None``).
        p: order p ≥ 1.
        normalize: rescale the weights to sum to 1 instead of checking that they do.

    Returns:
        W_p itself (not W_p^p, unlike POT's ``ot.wasserstein_1d``), in the units of the values.

    Raises:
        ValueError: non-1-D inputs, weights of the wrong length, negative or unnormalised
            weights, or p < 1.

    Source: Villani (2003), "Topics in Optimal Transportation", Theorem 2.18; Peyré & Cuturi
    (2019), Section 2.6.
    """
    if not p >= 1:
        raise ValueError(f"p must be >= 1, got {p!r}")
    steps = []
    for name, values, weights in (("u", u_values, u_weights), ("v", v_values, v_weights)):
        values = _to_numpy(values, f"{name}_values")
        if values.ndim != 1:
            raise ValueError(f"{name}_values must be 1-D, got shape {values.shape}")
        if weights is None:
            weights = np.full(len(values), 1.0 / len(values))
        weights = _masses(weights, f"{name}_weights", None, normalize)
        if weights.shape != values.shape:
            raise ValueError(f"{name}_weights must have shape {values.shape}, got {weights.shape}")
        steps.append(_quantile_steps(values, weights))
    (u, cu), (v, cv) = steps
    levels = np.unique(np.concatenate([[0.0], cu, cv, [1.0]]).clip(0, 1))
    widths, mids = np.diff(levels), 0.5 * (levels[1:] + levels[:-1])
    u_q = u[np.minimum(np.searchsorted(cu, mids), len(u) - 1)]  # F^{-1}(t) = u_i on (c_{i-1}, c_i]
    v_q = v[np.minimum(np.searchsorted(cv, mids), len(v) - 1)]
    return float(np.sum(widths * np.abs(u_q - v_q) ** p) ** (1.0 / p))


# --------------------------------------------------------------------------------------
# parallel lines (Arjovsky et al. 2017, Example 1)
# --------------------------------------------------------------------------------------
def sample_parallel_lines(theta: float, n: int, noise_std: float = 0.0,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample p(x, y | θ) = (θ, U[0, 1]): a vertical segment at horizontal position θ.

    θ = 0 gives the data distribution π = (0, U[0, 1]).

    Args:
        theta: horizontal position of the line; n: number of points.
        noise_std: standard deviation σ of Gaussian noise added to both coordinates (the
            "instance noise" that gives the two distributions overlapping supports).
        generator: optional torch generator for reproducibility.

    Returns:
        (n, 2) float32 tensor of points (x, y).

    Raises:
        ValueError: if n < 1 or noise_std < 0.

    Source: Isachenko (2021), lecture 9; Arjovsky et al. (2017), Example 1.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
    y = torch.rand(int(n), generator=generator)
    points = torch.stack([torch.full_like(y, float(theta)), y], dim=1)
    if noise_std > 0:
        points = points + noise_std * torch.randn(points.shape, generator=generator)
    return points


def parallel_lines_divergences(theta: float, noise_std: float = 0.0) -> dict[str, float]:
    """Exact KL, JSD, TV and W between π = (0, U[0,1]) and p_θ = (θ, U[0,1]).

    Without noise (σ = 0): KL(π||p_θ) = KL(p_θ||π) = ∞, JSD = log 2, TV = 1 for θ ≠ 0, all 0 at
    θ = 0, and W = |θ| (move every point horizontally by |θ|).

    With Gaussian noise N(0, σ² I) added to both (instance noise), the supports overlap and
    everything is continuous in θ: only the horizontal marginals N(0, σ²), N(θ, σ²) differ, so
    KL = θ² / (2σ²), TV = 2 Φ(|θ| / 2σ) − 1, JSD by quadrature of the two Gaussians on a grid
    (no closed form), and still W = |θ| (translation by θ).

    Args:
        theta: horizontal offset θ; noise_std: σ ≥ 0.

    Returns:
        dict with keys ``"KL"`` (both directions are equal), ``"JSD"``, ``"TV"``, ``"W"``; nats
        for KL and JSD.

    Raises:
        ValueError: if noise_std < 0 or theta is not finite.

    Source: Isachenko (2021), lecture 9, "Wasserstein distance vs KL vs JSD"; Arjovsky et al. (2017),
    Example 1; Arjovsky & Bottou (2017) on noise.
    """
    theta = float(theta)
    if not math.isfinite(theta):
        raise ValueError(f"theta must be finite, got {theta!r}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
    if theta == 0:
        return {"KL": 0.0, "JSD": 0.0, "TV": 0.0, "W": 0.0}
    if noise_std == 0:
        return {"KL": math.inf, "JSD": math.log(2), "TV": 1.0, "W": abs(theta)}
    grid = np.linspace(min(0.0, theta) - 10 * noise_std, max(0.0, theta) + 10 * noise_std, 20001)
    dx = grid[1] - grid[0]
    pi_x, p_x = norm.pdf(grid, 0.0, noise_std), norm.pdf(grid, theta, noise_std)
    return {"KL": theta ** 2 / (2 * noise_std ** 2),
            "JSD": js_divergence(pi_x, p_x, dx=dx, normalize=True),
            "TV": float(2 * norm.cdf(abs(theta) / (2 * noise_std)) - 1),
            "W": abs(theta)}


def histogram_divergences(x, y, bins, bounds) -> dict[str, float]:
    """Plug-in estimates of KL(x||y), KL(y||x), JSD and TV from two samples, on a histogram.

    Both samples are binned on the same grid; the empirical bin frequencies are then compared
    with :func:`kl_divergence`, :func:`js_divergence` and :func:`total_variation`. Such
    estimates are biased and depend on the bins; they show *how* a divergence behaves (e.g.
    jumping from 0 to its maximum as soon as the samples land in different bins).

    Args:
        x: (n, d) sample of the first distribution, y: (m, d) of the second (arrays or tensors).
        bins: bins per dimension (int or sequence), as ``numpy.histogramdd``.
        bounds: sequence of d ``(low, high)`` pairs (``range`` of ``numpy.histogramdd``);
            points outside are dropped.

    Returns:
        dict with ``"KL"`` = KL(x||y), ``"KL_reverse"`` = KL(y||x), ``"JSD"``, ``"TV"``.

    Raises:
        ValueError: if x or y is not 2-D, dimensions differ, or a sample has no point in range.

    Source: Isachenko (2021), lecture 9, parallel-lines example, estimated from finite samples.
    """
    x, y = _to_numpy(x, "x"), _to_numpy(y, "y")
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (n, d) and (m, d) with the same d, got {x.shape} and {y.shape}")
    hists = []
    for name, s in (("x", x), ("y", y)):
        h, _ = np.histogramdd(s, bins=bins, range=bounds)
        if h.sum() == 0:
            raise ValueError(f"{name} has no point inside bounds={bounds!r}")
        hists.append(h / h.sum())
    hx, hy = hists
    return {"KL": kl_divergence(hx, hy), "KL_reverse": kl_divergence(hy, hx),
            "JSD": js_divergence(hx, hy), "TV": total_variation(hx, hy)}


# --------------------------------------------------------------------------------------
# likelihood versus sample quality
# --------------------------------------------------------------------------------------
def _flat(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"{name} must have shape (N, D) or (N, *shape), got {tuple(x.shape)}")
    return x.reshape(len(x), -1).double()


def sample_gaussian_kde(centers: torch.Tensor, bandwidth: float, n: int,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw n samples of p1(x) = (1/N) Σ_i N(x | x_i, ε I), ε = h²: pick a training point, add noise.

    The density of p1 is :func:`dgmcourse.evaluation.gaussian_kde_log_density` with the same
    ``bandwidth`` h (a standard deviation).

    Args:
        centers: (N, *shape) training points x_i; bandwidth: h ≥ 0; n: number of samples.
        generator: optional torch generator.

    Returns:
        (n, *shape) tensor with the dtype of ``centers``.

    Raises:
        ValueError: if bandwidth < 0 or n < 1.

    Source: Isachenko (2021), lecture 9, p1, "poor likelihood, great samples".
    """
    if not bandwidth >= 0:
        raise ValueError(f"bandwidth must be >= 0, got {bandwidth!r}")
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    idx = torch.randint(len(centers), (int(n),), generator=generator)
    noise = torch.randn((int(n), *centers.shape[1:]), generator=generator, dtype=centers.dtype)
    return centers[idx] + bandwidth * noise


def noise_mixture_log_likelihood(log_p: torch.Tensor, log_p_noise: torch.Tensor,
                                 weight: float = 0.01) -> torch.Tensor:
    """log p2(x) for p2(x) = w p(x) + (1 − w) p_noise(x), computed stably with logaddexp.

    Since p2 ≥ w p, log p2(x) ≥ log p(x) + log w = log p(x) − log 100 for w = 0.01: the
    likelihood loses at most 4.6 nats per point, however poor 99% of the samples are.

    Args:
        log_p: (B,) log p(x) in nats; log_p_noise: (B,) log p_noise(x) (broadcastable);
        weight: w in (0, 1].

    Returns:
        (B,) tensor, log p2(x) in nats.

    Raises:
        ValueError: if weight is not in (0, 1].

    Source: Isachenko (2021), lecture 9, "Great likelihood, poor samples"; Theis et al. (2016), Sec. 3.2.
    """
    if not 0 < weight <= 1:
        raise ValueError(f"weight must be in (0, 1], got {weight!r}")
    log_p_noise = torch.as_tensor(log_p_noise, dtype=log_p.dtype)
    if weight == 1:
        return log_p.clone()
    return torch.logaddexp(log_p + math.log(weight), log_p_noise + math.log1p(-weight))


# --------------------------------------------------------------------------------------
# two-sample tests
# --------------------------------------------------------------------------------------
def _samples(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    y = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
    x, y = _flat(x, "x"), _flat(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"x and y need at least 2 points each, got {len(x)} and {len(y)}")
    return x, y


def _gaussian_gram(z: torch.Tensor, bandwidth: float | None) -> torch.Tensor:
    """Gram matrix k(z_i, z_j) = exp(−||z_i − z_j||² / 2h²) of the pooled sample z (N, D).

    ``bandwidth=None`` is the median heuristic (Gretton et al. 2012, Sec. 8): h = the median of
    the N(N−1)/2 distances ||z_i − z_j||, i < j (``torch.median``: the lower of the two middle
    values when their number is even).
    """
    sq = torch.cdist(z, z).pow(2)
    if bandwidth is None:
        bandwidth = float(sq[torch.triu_indices(len(z), len(z), 1).unbind()].median().sqrt())
        if bandwidth == 0:
            raise ValueError("bandwidth=None: the median pairwise distance of the pooled sample is 0 "
                             "(most points coincide); pass a bandwidth > 0")
    if isinstance(bandwidth, bool) or not bandwidth > 0 or not math.isfinite(bandwidth):
        raise ValueError(f"bandwidth must be a finite number > 0, got {bandwidth!r}")
    return torch.exp(-sq / (2 * bandwidth ** 2))


def _mmd2_from_gram(k: torch.Tensor, in_x: torch.Tensor) -> torch.Tensor:
    """MMD²_u for every labelling in the columns of ``in_x`` (N, P), 1 where a point is "from x".

    Block sums of the pooled Gram matrix as quadratic forms: Σ_{x,x} k = uᵀKu,
    Σ_{x,y} k = uᵀK1 − uᵀKu, Σ_{y,y} k = 1ᵀK1 − 2uᵀK1 + uᵀKu; diagonals removed for U-statistics.
    """
    n = in_x.sum(0)
    m = len(k) - n
    ku, k1, diag = k @ in_x, k.sum(1, keepdim=True), k.diagonal().unsqueeze(1)
    s_xx, s_x1, d_x = (in_x * ku).sum(0), (in_x * k1).sum(0), (in_x * diag).sum(0)
    s_xy, s_yy, d_y = s_x1 - s_xx, k.sum() - 2 * s_x1 + s_xx, diag.sum() - d_x
    return (s_xx - d_x) / (n * (n - 1)) + (s_yy - d_y) / (m * (m - 1)) - 2 * s_xy / (n * m)


def _labels(n: int, total: int) -> torch.Tensor:
    return (torch.arange(total) < n).double().unsqueeze(1)


def _check_count(value, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def mmd2_unbiased(x, y, bandwidth: float | None = None) -> float:
    """Unbiased estimate of the squared maximum mean discrepancy with a Gaussian kernel.

    MMD²_u = 1/(n(n−1)) Σ_{i≠j} k(x_i, x_j) + 1/(m(m−1)) Σ_{i≠j} k(y_i, y_j) − 2/(nm) Σ k(x_i, y_j),
    k(x, y) = exp(−||x − y||² / 2h²).

    Args:
        x: (n, D) or (n, *shape) sample of π; y: (m, D) sample of p (tensors or arrays).
        bandwidth: kernel width h, in the units of x; ``None`` uses the median heuristic: h =
            the median distance ||z_i − z_j||, i < j, over the pooled sample z = (x, y) (the lower
            middle value when the number of pairs is even).

    Returns:
        MMD²_u, dimensionless (a squared distance between kernel mean embeddings; the kernel takes
        values in (0, 1], so MMD²_u ≤ 2); it may be slightly negative when π = p.

    Raises:
        ValueError: x or y not (N, D) / (N, *shape), mismatched dimensions, fewer than 2 points,
            bandwidth ≤ 0, or a median pairwise distance of 0.

    Source: Gretton et al. (2012), "A Kernel Two-Sample Test", JMLR, Lemma 6 / Eq. 3.
    """
    x, y = _samples(x, y)
    k = _gaussian_gram(torch.cat([x, y]), bandwidth)
    return float(_mmd2_from_gram(k, _labels(len(x), len(x) + len(y))))


def mmd_permutation_test(x, y, *, bandwidth: float | None = None, permutations: int = 500,
                         seed: int = 0) -> TestResult:
    """Kernel two-sample test of H0: π = p with MMD²_u as statistic and a permutation p-value.

    The statistic is :func:`mmd2_unbiased` with the Gaussian kernel
    k(x, y) = exp(−||x − y||² / 2h²); h is fixed once on the pooled sample (by default the median
    heuristic, see ``bandwidth``) before permuting. Under H0 the labels "from π" / "from p" are
    exchangeable, so the statistic on randomly relabelled pooled samples gives its null
    distribution; p = (1 + #{T_perm ≥ T}) / (1 + permutations).

    Args:
        x: (n, D) or (n, *shape) sample of π; y: (m, D) sample of p (tensors or arrays; n, m ≥ 2).
        bandwidth: keyword-only kernel width h, as in :func:`mmd2_unbiased` (``None``: h = median
            pairwise distance of the pooled sample).
        permutations: keyword-only number of random relabellings P ≥ 1.
        seed: keyword-only seed (≥ 0) of the ``torch.Generator`` drawing the relabellings; the
            same inputs and seed give the same result.

    Returns:
        :class:`TestResult` with ``statistic`` = MMD²_u (dimensionless, as :func:`mmd2_unbiased`)
        and ``p_value`` in [1 / (1 + P), 1]; it unpacks as ``(statistic, p_value)``.

    Raises:
        ValueError: as :func:`mmd2_unbiased`, ``permutations`` not an integer ≥ 1, or ``seed``
            not an integer ≥ 0.

    Source: Gretton et al. (2012), "A Kernel Two-Sample Test", JMLR, Eq. 3 and Sec. 5
    (permutation null); Isachenko (2021), lecture 9, likelihood-free learning as a two-sample test.
    """
    _check_count(permutations, "permutations", minimum=1)
    _check_count(seed, "seed", minimum=0)
    x, y = _samples(x, y)
    k = _gaussian_gram(torch.cat([x, y]), bandwidth)
    n, total = len(x), len(x) + len(y)
    stat = _mmd2_from_gram(k, _labels(n, total))[0]
    gen = torch.Generator().manual_seed(int(seed))
    exceed = 0
    for start in range(0, int(permutations), 100):  # relabel in batches of 100 permutations
        ranks = torch.stack([torch.randperm(total, generator=gen)
                             for _ in range(min(100, int(permutations) - start))], dim=1)
        exceed += int((_mmd2_from_gram(k, (ranks < n).double()) >= stat).sum())
    return TestResult(float(stat), (1 + exceed) / (1 + int(permutations)))


def classifier_two_sample_test(x, y, classifier=None, test_fraction: float = 0.5,
                               seed: int = 0) -> TestResult:
    """Classifier two-sample test: can a classifier tell samples of π from samples of p?

    Label x with 0 and y with 1, train ``classifier`` on a random part, measure accuracy on the
    held-out part. Under H0: π = p (and balanced samples) no classifier beats chance, so the
    number of correct test predictions is Binomial(n_test, 1/2); the p-value is the one-sided
    binomial tail P[Bin ≥ correct].

    Args:
        x: (n, D) or (n, *shape) sample of π; y: (m, D) sample of p (tensors or arrays). Use
            n = m: with unbalanced samples chance accuracy is not 1/2.
        classifier: an unfitted scikit-learn classifier (default: 10-nearest neighbours).
        test_fraction: share of the pooled sample held out for the accuracy, in (0, 1).
        seed: random seed of the split.

    Returns:
        :class:`TestResult` (statistic = held-out accuracy in [0, 1], p_value).

    Raises:
        ValueError: mismatched dimensions, fewer than 2 points, n ≠ m, test_fraction not in (0, 1).

    Source: Lopez-Paz & Oquab (2017), "Revisiting Classifier Two-Sample Tests", ICLR, Sec. 2;
    Isachenko (2021), lecture 9: the discriminator as a learned two-sample test statistic.
    """
    from sklearn.base import clone
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    x, y = _samples(x, y)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same number of points (balanced classes), "
                         f"got {len(x)} and {len(y)}")
    features = torch.cat([x, y]).numpy()
    labels = np.r_[np.zeros(len(x)), np.ones(len(y))]
    f_tr, f_te, l_tr, l_te = train_test_split(features, labels, test_size=test_fraction,
                                              random_state=seed, stratify=labels)
    model = clone(classifier) if classifier is not None else KNeighborsClassifier(10)
    correct = int((model.fit(f_tr, l_tr).predict(f_te) == l_te).sum())
    p_value = binomtest(correct, len(l_te), 0.5, alternative="greater").pvalue
    return TestResult(correct / len(l_te), float(p_value))
