"""Riemannian geometry of a generator's latent space: pullback metric, Jacobian conditioning, geodesics.

A decoder (generator) ``f: R^d -> R^D`` with Jacobian ``J(z) = df/dz`` (``D x d``) pulls the
Euclidean metric of image space back to the latent space: ``G(z) = J(z)^T J(z)`` (Arvanitidis,
Hansen & Hauberg, "Latent Space Oddity: on the Curvature of Deep Generative Models", 2018;
Ramirez, Gallego & Puerta, "On the geometry of deep generative models", poster, Universidad
EAFIT, undated).
A latent step ``dz`` moves the image by ``||J dz|| = sqrt(dz^T G dz)``, so

* the *magnification factor* ``sqrt(det G) = prod_i s_i(J)`` (singular values) says how much
  image-space volume a unit of latent area carries (Ramirez et al.'s poster plots ``det(J^T J)``);
* the *condition number* ``kappa(J) = s_max / s_min`` says how anisotropic that stretch is, and
  ``s_max = ||J||_2`` (:func:`local_lipschitz`) how far one latent unit can move the image;
* a curve ``c: [0, 1] -> R^d`` has length ``L(c) = int ||d f(c(t))/dt|| dt`` and energy
  ``E(c) = int ||d f(c(t))/dt||^2 dt``; ``L^2 <= E`` (Cauchy-Schwarz) with equality at
  constant speed, and the curves minimising ``E`` are the constant-speed geodesics.

Curves are discretised by ``T + 1`` points ``c_0 .. c_T`` at ``t_k = k / T`` and image-space
finite differences, ``L = sum_k ||f(c_{k+1}) - f(c_k)||`` and ``E = T sum_k ||f(c_{k+1}) -
f(c_k)||^2`` (Shao, Kumar & Fletcher 2018; Arvanitidis et al. 2018, sec. on geodesics), so that
``L^2 <= E`` holds exactly for the discrete curve too.

Arvanitidis et al.'s point that a deterministic decoder's metric is meaningless away from the
data is addressed by :class:`RBFStd`: a decoder standard deviation that grows away from the
training latents. The expected metric of ``x = mu(z) + sigma(z) * eps`` is
``J_mu^T J_mu + J_sigma^T J_sigma``, which is the pullback metric of the deterministic map
``z -> [mu(z), sigma(z)]`` (:func:`stochastic_decoder`), so every function here applies to it.

Ramirez et al.'s poster concludes that "the jacobian should be intervened during the VAE's training":
:func:`jacobian_penalty` is a differentiable penalty on ``G`` (towards a scaled identity, the flat-manifold
regulariser of Chen et al. 2020) and :func:`train_vae_with_jacobian_penalty` adds it to the ELBO through
:func:`dgmcourse.vae.train_vae`'s penalty hook, :func:`mixup_jacobian_penalty`, at interpolations of pairs of
encodings, i.e. *between* the data (the mixing of Verma et al. 2019, Manifold Mixup).

Units: latent and image-space Euclidean distances (pixel intensities for images in [0, 1]).
Decoders must be pure, differentiable torch functions of a batch ``(B, d) -> (B, ...)`` that
treat samples independently (modules in eval mode: no batch-norm statistics).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = [
    "decoder_jacobian", "pullback_metric", "magnification_factor", "local_lipschitz", "condition_number",
    "metric_heatmaps", "curve_length", "curve_energy", "straight_line", "geodesic",
    "geodesic_distance_matrix", "RBFStd", "fit_rbf_std", "stochastic_decoder", "jacobian_penalty",
    "mixup_jacobian_penalty", "train_vae_with_jacobian_penalty",
]


def _check_z(z, name: str = "z", d: int | None = None) -> torch.Tensor:
    if not isinstance(z, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of latent points (B, d), got {type(z).__name__}")
    if z.dim() != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"{name} must have shape (B, d) with B, d >= 1, got {tuple(z.shape)}")
    if d is not None and z.shape[1] != d:
        raise ValueError(f"{name} must have latent dimension {d}, got {z.shape[1]}")
    if not torch.is_floating_point(z) or not torch.isfinite(z).all():
        raise ValueError(f"{name} must be a finite floating-point tensor")
    return z


def _check_differentiable(decoder, z: torch.Tensor) -> int:
    """Run the decoder once with autograd on; return D. Raise ValueError if it is not differentiable."""
    probe = z[:1].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        try:
            out = decoder(probe)
        except RuntimeError as err:
            raise ValueError(f"decoder failed on latent points of shape {tuple(probe.shape)}: {err}") from err
    if not isinstance(out, torch.Tensor) or out.shape[:1] != (1,):
        raise ValueError("decoder must map a (B, d) tensor to a tensor with leading dimension B")
    if not out.requires_grad:
        raise ValueError("decoder is not differentiable: its output does not depend on z through torch "
                         "operations (no .detach(), numpy or torch.no_grad() inside the decoder)")
    return out[0].numel()


def decoder_jacobian(decoder, z: torch.Tensor, chunk_size: int = 2048) -> torch.Tensor:
    """Jacobian ``J(z) = d f(z) / dz`` of a decoder at a batch of latent points.

    Forward-mode ``torch.func.jacfwd`` vectorised with ``torch.func.vmap``: ``d`` Jacobian-vector
    products per point, cheap when ``d << D`` (``jacrev`` for decoders using an operation without
    forward-mode support) (Ramirez, Gallego & Puerta, poster: "J = d gamma / dz").

    Args:
        decoder: differentiable function ``(B, d) -> (B, ...)``; its output is flattened to ``D``.
        z: latent points ``(B, d)``.
        chunk_size: points per vectorised call (bounds memory).

    Returns:
        ``(B, D, d)`` tensor.

    Raises:
        ValueError: if ``z`` is not a finite ``(B, d)`` float tensor, ``chunk_size`` < 1, or the
            decoder is not differentiable in ``z``.
    """
    z = _check_z(z)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    _check_differentiable(decoder, z)

    def single(zi):
        return decoder(zi.unsqueeze(0)).reshape(-1)

    chunks = z.detach().split(chunk_size)
    with torch.no_grad():  # torch.func ignores no_grad; this only drops the parameters' graph
        try:
            return torch.cat([torch.func.vmap(torch.func.jacfwd(single))(c) for c in chunks])
        except NotImplementedError:  # an operation without forward-mode AD: reverse mode instead
            return torch.cat([torch.func.vmap(torch.func.jacrev(single))(c) for c in chunks])


def pullback_metric(decoder, z: torch.Tensor) -> torch.Tensor:
    """Pullback metric tensor ``G(z) = J(z)^T J(z)`` (Arvanitidis et al. 2018, eq. of the induced metric).

    Args:
        decoder: differentiable ``(B, d) -> (B, ...)``; z: latent points ``(B, d)``.

    Returns:
        ``(B, d, d)`` symmetric positive semi-definite tensor (squared image units per squared latent unit).

    Raises:
        ValueError: as :func:`decoder_jacobian`.
    """
    jac = decoder_jacobian(decoder, z)
    return jac.transpose(1, 2) @ jac


def _singular_values(decoder, z: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(decoder_jacobian(decoder, z))  # (B, min(D, d)), descending


def magnification_factor(decoder, z: torch.Tensor) -> torch.Tensor:
    """Magnification factor ``sqrt(det J^T J)``: image-space volume per unit latent volume.

    Computed as the product of the singular values of ``J`` (stable, no determinant of a
    possibly ill-conditioned ``G``). Ramirez et al. (poster) plot ``det(J^T J)``, the square.

    Args:
        decoder: differentiable ``(B, d) -> (B, D...)`` with ``D >= d``; z: ``(B, d)``.

    Returns:
        ``(B,)`` non-negative tensor.

    Raises:
        ValueError: as :func:`decoder_jacobian`, or if ``D < d`` (``det J^T J`` is then 0).
    """
    sv = _singular_values(decoder, z)
    if sv.shape[1] < z.shape[1]:
        raise ValueError(f"decoder output dimension {sv.shape[1]} < latent dimension {z.shape[1]}")
    return sv.prod(dim=1)


def local_lipschitz(decoder, z: torch.Tensor) -> torch.Tensor:
    """Spectral norm ``||J(z)||_2 = s_max``: the largest image-space stretch of a small latent step at z.

    Its maximum over latent points is a lower estimate of the decoder's Lipschitz constant L in
    ``||g(z) - g(z')|| <= L ||z - z'||`` (the step from latent to image-space adversarial examples,
    Manoj, "On the Latent Space of Deep Generative Models", honors thesis talk, 2018, after
    Fawzi, Fawzi & Fawzi 2018).

    Args:
        decoder: differentiable ``(B, d) -> (B, D...)``; z: ``(B, d)``.

    Returns:
        ``(B,)`` non-negative tensor (image units per latent unit).

    Raises:
        ValueError: as :func:`decoder_jacobian`.
    """
    return _singular_values(decoder, z)[:, 0]


def condition_number(decoder, z: torch.Tensor) -> torch.Tensor:
    """Condition number ``kappa(J) = s_max / s_min`` of the decoder Jacobian (Ramirez et al., poster).

    Args:
        decoder: differentiable ``(B, d) -> (B, D...)`` with ``D >= d``; z: ``(B, d)``.

    Returns:
        ``(B,)`` tensor ``>= 1``; ``inf`` where ``J`` is rank deficient.

    Raises:
        ValueError: as :func:`magnification_factor`.
    """
    sv = _singular_values(decoder, z)
    if sv.shape[1] < z.shape[1]:
        raise ValueError(f"decoder output dimension {sv.shape[1]} < latent dimension {z.shape[1]}")
    return sv[:, 0] / sv[:, -1]


def metric_heatmaps(decoder, xlim=(-3.0, 3.0), ylim=(-3.0, 3.0), n: int = 100,
                    chunk_size: int = 2048) -> dict[str, torch.Tensor]:
    """Magnification factor and condition number on an ``n x n`` grid of a 2-D latent space.

    One Jacobian per grid point (computed once, used for both maps).

    Args:
        decoder: differentiable ``(B, 2) -> (B, ...)``.
        xlim, ylim: ``(low, high)`` ranges of the first / second latent coordinate.
        n: points per axis (>= 2).

    Returns:
        dict with ``"z1"``, ``"z2"`` (``(n,)`` axis values), ``"magnification"`` and
        ``"condition"`` (``(n, n)``, row ``i`` is ``z2 = z2[i]``, ready for ``plt.pcolormesh``).

    Raises:
        ValueError: if ``n`` < 2, a range is not increasing, or as :func:`decoder_jacobian`.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    for name, lim in (("xlim", xlim), ("ylim", ylim)):
        if len(lim) != 2 or not lim[0] < lim[1]:
            raise ValueError(f"{name} must be an increasing pair (low, high), got {lim!r}")
    z1, z2 = torch.linspace(*xlim, n), torch.linspace(*ylim, n)
    rows, cols = torch.meshgrid(z2, z1, indexing="ij")
    grid = torch.stack([cols.flatten(), rows.flatten()], dim=1)
    sv = torch.linalg.svdvals(decoder_jacobian(decoder, grid, chunk_size))
    if sv.shape[1] < 2:
        raise ValueError("decoder output dimension must be >= 2 for a 2-D latent space")
    return {"z1": z1, "z2": z2, "magnification": sv.prod(1).reshape(n, n),
            "condition": (sv[:, 0] / sv[:, -1]).reshape(n, n)}


# --------------------------------------------------------------------------- curves


def _check_curve(curve) -> torch.Tensor:
    if not isinstance(curve, torch.Tensor) or curve.dim() not in (2, 3) or curve.shape[-2] < 2:
        shape = tuple(curve.shape) if isinstance(curve, torch.Tensor) else type(curve).__name__
        raise ValueError(f"curve must be a tensor (T + 1, d) or (N, T + 1, d) with T >= 1, got {shape}")
    return curve


def _image_steps(decoder, curve: torch.Tensor) -> torch.Tensor:
    """Squared image-space steps ``||f(c_{k+1}) - f(c_k)||^2``, shape ``(..., T)``."""
    x = decoder(curve.reshape(-1, curve.shape[-1])).reshape(*curve.shape[:-1], -1)
    return (x[..., 1:, :] - x[..., :-1, :]).pow(2).sum(-1)


def curve_length(decoder, curve: torch.Tensor) -> torch.Tensor:
    """Image-space length ``L = sum_k ||f(c_{k+1}) - f(c_k)||`` of a discretised latent curve.

    Args:
        decoder: ``(B, d) -> (B, ...)``.
        curve: ``(T + 1, d)`` or a batch ``(N, T + 1, d)`` of curves, endpoints included.

    Returns:
        0-d tensor, or ``(N,)`` for a batch (image-space units).

    Raises:
        ValueError: if ``curve`` has fewer than 2 points or the wrong number of dimensions.
    """
    return _image_steps(decoder, _check_curve(curve)).sqrt().sum(-1)


def curve_energy(decoder, curve: torch.Tensor) -> torch.Tensor:
    """Curve energy ``E = T sum_k ||f(c_{k+1}) - f(c_k)||^2`` (the Riemann sum of
    ``int_0^1 ||d f(c(t))/dt||^2 dt`` with ``dt = 1/T``); ``E >= L^2`` with equality iff the
    image-space steps are equal (Cauchy-Schwarz).

    Args / Returns / Raises: as :func:`curve_length` (units: squared image-space units).
    """
    steps = _image_steps(decoder, _check_curve(curve))
    return steps.shape[-1] * steps.sum(-1)


def straight_line(z0: torch.Tensor, z1: torch.Tensor, n_points: int = 20) -> torch.Tensor:
    """Evenly spaced points of the segment from ``z0`` to ``z1`` (linear interpolation).

    Args:
        z0, z1: ``(d,)`` endpoints, or ``(N, d)`` batches of endpoints; n_points: >= 2.

    Returns:
        ``(n_points, d)`` or ``(N, n_points, d)``.

    Raises:
        ValueError: if shapes differ or ``n_points`` < 2.
    """
    if z0.shape != z1.shape or z0.dim() not in (1, 2):
        raise ValueError(f"z0 and z1 must have the same shape (d,) or (N, d), got {tuple(z0.shape)}, {tuple(z1.shape)}")
    if n_points < 2:
        raise ValueError(f"n_points must be >= 2, got {n_points}")
    t = torch.linspace(0, 1, n_points, dtype=z0.dtype, device=z0.device).unsqueeze(-1)
    return z0.unsqueeze(-2) * (1 - t) + z1.unsqueeze(-2) * t


def _minimise_energy(decoder, line: torch.Tensor, steps: int) -> torch.Tensor:
    """L-BFGS on the interior points of one curve or a batch of curves (the sum of energies is separable)."""
    inner = line[..., 1:-1, :].detach().clone().requires_grad_(True)
    start, end = line[..., :1, :].detach(), line[..., -1:, :].detach()
    if inner.shape[-2] == 0 or steps == 0:
        return line.detach()
    opt = torch.optim.LBFGS([inner], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12, history_size=20)

    def closure():
        opt.zero_grad()
        energy = curve_energy(decoder, torch.cat([start, inner, end], dim=-2)).sum()
        energy.backward()
        return energy

    with torch.enable_grad():
        opt.step(closure)
    return torch.cat([start, inner.detach(), end], dim=-2)


def geodesic(decoder, z0: torch.Tensor, z1: torch.Tensor, n_points: int = 20, steps: int = 200) -> torch.Tensor:
    """Discrete geodesic from ``z0`` to ``z1``: minimise :func:`curve_energy` over the ``n_points - 2``
    interior points with L-BFGS (strong Wolfe line search), starting from the straight line.

    Minimising energy rather than length gives constant-speed curves (Arvanitidis et al. 2018;
    Shao et al. 2018). A local minimum: it is the geodesic nearest the straight line.
    ``z0 == z1`` returns the constant curve (distance 0).

    Args:
        decoder: differentiable ``(B, d) -> (B, ...)``.
        z0, z1: ``(d,)`` endpoints.
        n_points: points of the curve including endpoints (>= 2).
        steps: maximum L-BFGS iterations (the search budget).

    Returns:
        ``(n_points, d)`` curve, detached; ``curve[0] == z0``, ``curve[-1] == z1``.

    Raises:
        ValueError: if ``z0``/``z1`` are not finite ``(d,)`` tensors of the same size, ``n_points`` < 2,
            ``steps`` < 0, or the decoder is not differentiable.
    """
    for name, v in (("z0", z0), ("z1", z1)):
        if not isinstance(v, torch.Tensor) or v.dim() != 1:
            raise ValueError(f"{name} must be a 1-D latent point (d,), got {getattr(v, 'shape', type(v))}")
    _check_z(z0[None], "z0")
    _check_z(z1[None], "z1", d=z0.shape[0])
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    _check_differentiable(decoder, z0[None])
    return _minimise_energy(decoder, straight_line(z0, z1, n_points), steps)


def geodesic_distance_matrix(decoder, z: torch.Tensor, n_points: int = 16, steps: int = 100,
                             batch_pairs: int = 256, progress: bool = False) -> torch.Tensor:
    """Pairwise geodesic distances (lengths of the discrete geodesics) between latent points.

    Every pair ``i < j`` gets a geodesic by :func:`geodesic`'s energy minimisation; pairs are
    optimised together in batches of ``batch_pairs`` curves.

    Args:
        decoder: differentiable ``(B, d) -> (B, ...)``.
        z: ``(N, d)`` latent points.
        n_points, steps: as :func:`geodesic`; batch_pairs: curves per L-BFGS run.

    Returns:
        ``(N, N)`` symmetric tensor, zero diagonal, image-space units; each entry is an upper
        bound on the true geodesic distance up to discretisation.

    Raises:
        ValueError: as :func:`geodesic`, or if ``batch_pairs`` < 1.
    """
    z = _check_z(z).detach()
    if batch_pairs < 1:
        raise ValueError(f"batch_pairs must be >= 1, got {batch_pairs}")
    _check_differentiable(decoder, z)
    i, j = torch.triu_indices(len(z), len(z), offset=1)
    dist = torch.zeros(len(z), len(z), dtype=z.dtype)
    for idx in tqdm(torch.arange(len(i)).split(batch_pairs), desc="geodesics", disable=not progress):
        curves = _minimise_energy(decoder, straight_line(z[i[idx]], z[j[idx]], n_points), steps)
        with torch.no_grad():
            lengths = curve_length(decoder, curves).to(dist.dtype).cpu()
        dist[i[idx], j[idx]] = lengths
        dist[j[idx], i[idx]] = lengths
    return dist


def geodesic_energy_trace(decoder, z0: torch.Tensor, z1: torch.Tensor, n_points: int = 20, steps: int = 200,
                          method: str = "lbfgs", lr: float | None = None,
                          init: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`geodesic`'s energy minimisation, returning the curve energy at every evaluation: how the solver
    converges. Ramirez, Gallego & Puerta (poster) list the difficulties of geodesic interpolation as
    "convergence issues", "the jacobian is ill-conditioned" (after Arvanitidis, Hauberg, Hennig & Schober, "Fast
    and Robust Shortest Paths on Manifolds Learned from Data", AISTATS 2019) and "the jacobian is not well defined
    away from data" (Arvanitidis, Hansen & Hauberg 2018, whose geodesics minimise the discrete curve energy).

    * ``method="lbfgs"``: exactly :func:`geodesic`'s solver (L-BFGS, strong Wolfe line search, ``lr``
      default 1.0, at most ``steps`` iterations); without ``init`` the returned curve equals :func:`geodesic`'s
      for the same arguments. The trace holds the energy at *every* evaluation of the solver, the line-search
      trials included (at most ``steps * 5 // 4`` of them, PyTorch's default evaluation budget), so it need not
      decrease monotonically; its running minimum is the solver's progress.
    * ``method="gd"``: plain gradient descent ``c_k <- c_k - lr * dE/dc_k`` on the interior points with a fixed
      step ``lr`` (required), ``steps`` iterations. Near a minimum the energy is close to a quadratic whose
      Hessian in ``c_k`` is about ``2 T`` times a discrete Laplacian times ``G(c_k)``: the largest stable step
      scales like ``1 / (T s_max^2)`` and the slowest direction converges at a rate set by ``s_min^2``, so the
      iterations needed grow with ``kappa(J)^2`` along the curve (the condition number of the Hessian; Nocedal &
      Wright, *Numerical Optimization*, 2006, sec. 3.3). For the identity decoder, a perturbation
      ``sin(pi m k / T)`` of the straight line is multiplied by ``1 - 2 T lr (2 - 2 cos(pi m / T))`` per step
      (``T = n_points - 1``, ``k = 0 .. T``).

    Args:
        decoder: differentiable ``(B, d) -> (B, ...)``.
        z0, z1: ``(d,)`` endpoints.
        n_points: points of the curve including endpoints (>= 2).
        steps: L-BFGS iterations (the search budget) or gradient-descent steps (>= 0).
        method: ``"lbfgs"`` or ``"gd"``.
        lr: L-BFGS initial step (default 1.0) or the gradient-descent step (required, > 0), in squared latent
            units per unit of energy.
        init: optional ``(n_points, d)`` starting curve with ``init[0] == z0`` and ``init[-1] == z1``;
            default the straight line.

    Returns:
        ``(curve, energies)``: the final ``(n_points, d)`` curve (detached, endpoints ``z0``, ``z1``) and a
        float64 ``(n_evals,)`` tensor of curve energies (squared image-space units, :func:`curve_energy`);
        ``energies[0]`` is the energy of the starting curve. For ``"gd"`` ``n_evals = steps + 1`` (the energy
        before each step and after the last) unless the energy becomes non-finite, where the descent stops
        and that value is the last one.

    Raises:
        ValueError: as :func:`geodesic`; ``method`` not ``"lbfgs"`` or ``"gd"``; ``lr`` not a finite number
            > 0 (or ``None`` with ``"gd"``); ``init`` not ``(n_points, d)`` with the endpoints ``z0``, ``z1``.
    """
    for name, v in (("z0", z0), ("z1", z1)):
        if not isinstance(v, torch.Tensor) or v.dim() != 1:
            raise ValueError(f"{name} must be a 1-D latent point (d,), got {getattr(v, 'shape', type(v))}")
    _check_z(z0[None], "z0")
    _check_z(z1[None], "z1", d=z0.shape[0])
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if method not in ("lbfgs", "gd"):
        raise ValueError(f"method must be 'lbfgs' or 'gd', got {method!r}")
    if lr is None and method == "gd":
        raise ValueError("lr (the gradient-descent step) must be given for method='gd'")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < float("inf")):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    _check_differentiable(decoder, z0[None])
    if init is None:
        line = straight_line(z0, z1, n_points)
    else:
        if not isinstance(init, torch.Tensor) or init.shape != (n_points, z0.shape[0]):
            raise ValueError(f"init must be a ({n_points}, {z0.shape[0]}) curve, got "
                             f"{tuple(init.shape) if isinstance(init, torch.Tensor) else type(init).__name__}")
        if not torch.isfinite(init).all() or not (torch.allclose(init[0], z0) and torch.allclose(init[-1], z1)):
            raise ValueError("init must be finite and run from z0 (init[0]) to z1 (init[-1])")
        line = torch.cat([z0[None], init[1:-1].to(z0.dtype), z1[None]])
    start, end = line[:1].detach(), line[-1:].detach()
    inner = line[1:-1].detach().clone().requires_grad_(True)
    energies: list[float] = []

    def energy() -> torch.Tensor:
        return curve_energy(decoder, torch.cat([start, inner, end]))

    with torch.enable_grad():
        if inner.shape[0] == 0 or steps == 0:
            energies.append(energy().item())
        elif method == "lbfgs":
            opt = torch.optim.LBFGS([inner], lr=1.0 if lr is None else lr, max_iter=steps,
                                    line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12,
                                    history_size=20)

            def closure():
                opt.zero_grad()
                value = energy()
                value.backward()
                energies.append(value.item())
                return value

            opt.step(closure)
        else:
            for _ in range(steps):
                value = energy()
                energies.append(value.item())
                if not np.isfinite(energies[-1]):
                    break
                (grad,) = torch.autograd.grad(value, inner)
                with torch.no_grad():
                    inner -= lr * grad
            else:
                energies.append(energy().item())
    return torch.cat([start, inner.detach(), end]), torch.tensor(energies, dtype=torch.float64)


# --------------------------------------------------------------------------- variance that grows away from data


class RBFStd(nn.Module):
    """Decoder standard deviation ``sigma(z) = (W v(z) + zeta)^(-1/2)`` with RBF features
    ``v_k(z) = exp(-lambda_k ||z - c_k||^2)`` (Arvanitidis, Hansen & Hauberg 2018, the RBF
    precision network ``beta(z)``).

    Near the training latents the learnt precision ``W v(z)`` dominates (small sigma); far away
    ``v(z) -> 0`` and ``sigma -> zeta^(-1/2)``, large, so the expected metric grows and geodesics
    avoid holes. ``W = softplus(raw) >= 0`` keeps the precision positive.

    Args:
        centres: ``(K, d)`` RBF centres (k-means of the training latents).
        bandwidths: ``(K,)`` positive ``lambda_k``.
        out_dim: ``D``, the flattened image dimension.
        zeta: precision floor (> 0); ``zeta^(-1/2)`` is the standard deviation far from the data.
    """

    def __init__(self, centres: torch.Tensor, bandwidths: torch.Tensor, out_dim: int, zeta: float = 1e-2):
        super().__init__()
        if centres.dim() != 2 or bandwidths.shape != centres.shape[:1] or (bandwidths <= 0).any():
            raise ValueError("centres must be (K, d) and bandwidths (K,) positive")
        if zeta <= 0:
            raise ValueError(f"zeta must be > 0, got {zeta}")
        self.register_buffer("centres", centres.detach().float())
        self.register_buffer("bandwidths", bandwidths.detach().float())
        self.raw_weight = nn.Parameter(torch.zeros(out_dim, len(centres)))
        self.zeta = zeta

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, d) -> (B, D)`` standard deviations (image units)."""
        v = torch.exp(-self.bandwidths * (z[:, None] - self.centres).pow(2).sum(-1))  # forward-AD friendly
        precision = v @ nn.functional.softplus(self.raw_weight).T + self.zeta
        return precision.rsqrt()


def fit_rbf_std(z_train: torch.Tensor, x_train: torch.Tensor, mean_fn, n_centres: int = 32,
                curvature: float = 1.0, zeta: float = 1e-2, steps: int = 300, lr: float = 0.05,
                seed: int = 0) -> RBFStd:
    """Fit :class:`RBFStd` by maximising the Gaussian likelihood of ``x_train`` around the fixed mean
    ``mean_fn(z_train)`` (Arvanitidis et al. 2018: mean first, then the precision network).

    Centres are k-means (scikit-learn) of ``z_train``; ``lambda_k = 1 / (2 (curvature * s_k)^2)``
    with ``s_k`` the mean distance of cluster ``k``'s points to its centre.

    Args:
        z_train: ``(N, d)`` training latents (e.g. encoder means); x_train: ``(N, ...)`` images.
        mean_fn: ``(B, d) -> (B, ...)`` decoder mean; n_centres: K; curvature: bandwidth scale a;
        zeta, steps, lr (Adam), seed: as named.

    Returns:
        fitted :class:`RBFStd` (in eval mode, parameters frozen).

    Raises:
        ValueError: if ``z_train`` is not ``(N, d)``, sizes differ, or ``n_centres`` > N.
    """
    from sklearn.cluster import KMeans

    z_train = _check_z(z_train, "z_train").detach()
    if len(x_train) != len(z_train):
        raise ValueError(f"x_train must have {len(z_train)} rows like z_train, got {len(x_train)}")
    if not 1 <= n_centres <= len(z_train):
        raise ValueError(f"n_centres must be in [1, {len(z_train)}], got {n_centres}")
    km = KMeans(n_centres, n_init=2, random_state=seed).fit(z_train.cpu().numpy())
    centres = torch.as_tensor(km.cluster_centers_, dtype=torch.float32)
    spread = np.array([np.linalg.norm(z_train.cpu().numpy()[km.labels_ == k] - km.cluster_centers_[k], axis=1).mean()
                       for k in range(n_centres)])
    bandwidths = torch.as_tensor(0.5 / (curvature * np.maximum(spread, 1e-3)) ** 2, dtype=torch.float32)
    x = x_train.reshape(len(x_train), -1).float()
    with torch.no_grad():
        mu = mean_fn(z_train).reshape(len(x), -1).float()
    model = RBFStd(centres, bandwidths, x.shape[1], zeta)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        sigma = model(z_train.float())
        nll = (torch.log(sigma) + 0.5 * ((x - mu) / sigma).pow(2)).sum(1).mean()
        opt.zero_grad()
        nll.backward()
        opt.step()
    return model.eval().requires_grad_(False)


def stochastic_decoder(mean_fn, std_fn):
    """The map ``z -> [mu(z), sigma(z)]`` (flattened, concatenated) whose pullback metric is the
    expected metric ``J_mu^T J_mu + J_sigma^T J_sigma`` of ``x = mu(z) + sigma(z) * eps``
    (Arvanitidis et al. 2018, expected metric of a stochastic generator).

    Args:
        mean_fn, std_fn: ``(B, d) -> (B, ...)``.

    Returns:
        a function ``(B, d) -> (B, D_mu + D_sigma)`` usable with every function of this module.
    """
    def decoder(z: torch.Tensor) -> torch.Tensor:
        return torch.cat([mean_fn(z).reshape(len(z), -1), std_fn(z).reshape(len(z), -1)], dim=1)

    return decoder


# --------------------------------------------------------------------------- intervening on the Jacobian in training


def _jacobian_differentiable(decoder, z: torch.Tensor) -> torch.Tensor:
    """``(B, D, d)`` Jacobian that keeps the autograd graph to the decoder's parameters (and to ``z``).

    ``d`` forward-mode Jacobian-vector products over the whole batch (samples are independent, so the
    tangent ``e_k`` at every point gives column ``k`` of every Jacobian); reverse-mode double backward
    (``torch.autograd.functional.jvp(create_graph=True)``) for operations without forward-mode support.
    """
    def flat(v):
        return decoder(v).reshape(len(v), -1)

    columns = []
    for k in range(z.shape[1]):
        tangent = torch.zeros_like(z)
        tangent[:, k] = 1
        try:
            _, column = torch.func.jvp(flat, (z,), (tangent,))
        except NotImplementedError:
            _, column = torch.autograd.functional.jvp(flat, z, tangent, create_graph=True)
        columns.append(column)
    return torch.stack(columns, dim=-1)


def _check_target(target) -> None:
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float))
                               or not 0 < target < float("inf")):
        raise ValueError(f"target must be None or a finite number > 0, got {target!r}")


def jacobian_penalty(decoder, z: torch.Tensor, target: float | None = None) -> torch.Tensor:
    """Flatness penalty ``mean_b ||G(z_b) / c^2 - I||_F^2`` on the pullback metric ``G = J^T J``.

    It pushes ``G`` towards a scaled identity ``c^2 I``, the regulariser of Chen, Klushyn, Ferroni, Bayer &
    van der Smagt, "Learning Flat Latent Manifolds with VAEs" (ICML 2020), which regularises the metric tensor
    to be a scaled identity matrix. With eigenvalues ``lambda_i = s_i^2`` of ``G`` (``s_i`` the singular values
    of ``J``), each point contributes ``sum_i (s_i^2 / c^2 - 1)^2``: zero iff every singular value equals
    ``c``, so it penalises both the condition number ``kappa(J)`` and a magnification that varies from point to
    point. Differentiable: add ``weight * jacobian_penalty(...)`` to a training loss.

    * ``target=None`` (default): ``c^2 = mean_b tr G(z_b) / d``, the batch's mean eigenvalue (not detached).
      The penalty then equals ``d^2 E[tr G^2] / (E[tr G])^2 - d``, is unchanged when the decoder is
      rescaled (``f -> a f``) and so conditions ``J`` without shrinking it. For one point and ``d = 2`` it
      is ``2 ((kappa^2 - 1) / (kappa^2 + 1))^2``.
    * ``target=c2`` (> 0): a fixed ``c^2`` in squared image units per squared latent unit; this also pulls
      the scale of ``J`` to ``c``.

    Unlike the contractive penalty ``||J||_F^2 = tr G`` (Rifai et al. 2011, there on an encoder), which
    shrinks every singular value, this one only asks them to be equal.

    Args:
        decoder: differentiable ``(B, d) -> (B, ...)`` treating samples independently; its output is
            flattened to ``D``. The graph to its parameters is kept.
        z: latent points ``(B, d)`` where the penalty is evaluated (e.g. interpolations of encodings).
        target: ``None`` or the fixed ``c^2`` (> 0).

    Returns:
        0-d tensor ``>= 0`` (dimensionless), differentiable with respect to the decoder's parameters.

    Raises:
        ValueError: if ``z`` is not a finite ``(B, d)`` float tensor, ``target`` is not ``None`` or a finite
            number > 0, the decoder is not differentiable in ``z``, or ``J`` is zero at every point of the
            batch with ``target=None`` (no scale to normalise by).
    """
    z = _check_z(z)
    _check_target(target)
    _check_differentiable(decoder, z)
    jac = _jacobian_differentiable(decoder, z)
    metric = jac.transpose(1, 2) @ jac  # (B, d, d)
    eye = torch.eye(z.shape[1], dtype=metric.dtype, device=metric.device)
    if target is None:
        scale = metric.diagonal(dim1=1, dim2=2).mean()
        if scale.detach() <= 0:
            raise ValueError("the decoder Jacobian is zero on the whole batch: no scale c^2 for target=None")
    else:
        scale = target
    return (metric / scale - eye).pow(2).sum(dim=(1, 2)).mean()


def mixup_jacobian_penalty(model, n_mix: int = 32, target: float | None = None, seed: int = 0):
    """The penalty hook of :func:`dgmcourse.vae.train_vae` that controls the Jacobian between the data.

    Per minibatch, ``z_mix = alpha mu_i + (1 - alpha) mu_j`` for ``n_mix`` random pairs ``(i, j)`` of the
    batch's encoder means (detached: the penalty acts on the decoder) and ``alpha ~ U(0, 1)``, the mixing of
    hidden states of Verma et al., "Manifold Mixup: Better Representations by Interpolating Hidden States"
    (ICML 2019), applied to the latent codes; the hook returns :func:`jacobian_penalty` of the mean image
    ``E[x|z]`` (:meth:`dgmcourse.vae.VAE.mean_image`, the decoder whose metric this module measures) at
    ``z_mix``. The mixing draws come from the hook's own generator, seeded by ``seed``: they leave the
    global random state alone.

    Args:
        model: a :class:`dgmcourse.vae.VAE`.
        n_mix: interpolated points per minibatch (integer >= 1; at most the batch size are used).
        target: passed to :func:`jacobian_penalty`.
        seed: seeds the mixing generator.

    Returns:
        A function of the encoder means ``mu`` ``(B, z_dim)`` returning the penalty, a dimensionless scalar
        tensor.

    Raises:
        ValueError: ``n_mix`` not an integer >= 1, or a bad ``target``.
    """
    if isinstance(n_mix, bool) or not isinstance(n_mix, int) or n_mix < 1:
        raise ValueError(f"n_mix must be an integer >= 1, got {n_mix!r}")
    _check_target(target)
    mixing = torch.Generator().manual_seed(seed)

    def penalty(mu: torch.Tensor) -> torch.Tensor:
        m = min(n_mix, len(mu))
        i = torch.randperm(len(mu), generator=mixing)[:m].to(mu.device)
        j = torch.randperm(len(mu), generator=mixing)[:m].to(mu.device)
        alpha = torch.rand(m, 1, generator=mixing).to(mu.device)
        codes = mu.detach()
        return jacobian_penalty(model.mean_image, alpha * codes[i] + (1 - alpha) * codes[j], target)

    return penalty


def train_vae_with_jacobian_penalty(model, x_train: torch.Tensor, weight: float, x_test: torch.Tensor | None = None,
                                    epochs: int = 10, batch_size: int = 128, lr: float = 1e-3, n_mix: int = 32,
                                    target: float | None = None, device: torch.device | None = None,
                                    seed: int = 0, progress: bool = True) -> dict[str, list[float]]:
    """Train a VAE on ``-ELBO + weight * jacobian_penalty(model.mean_image, z_mix)`` with Adam:
    :func:`dgmcourse.vae.train_vae` with the hook :func:`mixup_jacobian_penalty` (``z_mix`` between pairs of
    encoded data, the flat-manifold regulariser of Chen et al. 2020). With ``weight=0`` the run is the same
    as :func:`dgmcourse.vae.train_vae` with the same ``seed``, ``lr`` and ``batch_size`` (the penalty is
    then only recorded).

    Args:
        model: a :class:`dgmcourse.vae.VAE`; moved to ``device`` (default :func:`dgmcourse.device.get_device`).
        x_train: training data ``(N, *x_shape)``; x_test: optional held-out data.
        weight: penalty weight (>= 0), nats per unit of penalty.
        epochs, batch_size, lr: as :func:`dgmcourse.vae.train_vae`.
        n_mix, target: as :func:`mixup_jacobian_penalty`.
        seed: seeds initialisation order, shuffling, sampling (:func:`dgmcourse.device.seed_everything`) and
            the mixing generator.
        progress: show a tqdm bar over epochs.

    Returns:
        History of per-epoch means: ``"train_elbo"``, ``"train_recon"``, ``"train_kl"``, ``"test_elbo"``
        (nats per datum, as :func:`dgmcourse.vae.train_vae`) and ``"train_penalty"`` (dimensionless).

    Raises:
        ValueError: ``weight`` < 0, ``n_mix`` < 1, ``epochs`` < 1, ``batch_size`` < 1, ``lr`` <= 0, a bad
            ``target``, or data of the wrong shape.
    """
    from dgmcourse.vae import train_vae

    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < float("inf"):
        raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
    return train_vae(model, x_train, x_test, epochs=epochs, batch_size=batch_size, lr=lr, device=device, seed=seed,
                     progress=progress, penalty=mixup_jacobian_penalty(model, n_mix, target, seed),
                     penalty_weight=weight)


# --------------------------------------------------------------------------- architecture variants


def swap_activations(module: nn.Module, activation, old: type = nn.ReLU) -> nn.Module:
    """Replace, in place, every submodule of type ``old`` (default ``nn.ReLU``) by a fresh ``activation()``.

    Builds the variants with which Ramirez, Gallego & Puerta (poster) state that their Jacobian findings
    ("Results do not vary with the size or activation function") hold: the course's builders
    (:class:`dgmcourse.vae.MLPVAE`, :class:`dgmcourse.autoencoders.Autoencoder`,
    :class:`dgmcourse.gan.DCGANGenerator`) take a width but hard-code ReLU hidden layers. Other modules
    (linear and convolution layers, batch norm, an output ``nn.Tanh`` or ``nn.Sigmoid``) are kept, with
    their parameters. Call it before training (the new activation has no parameters to train unless
    ``activation()`` has).

    Args:
        module: the network to change (e.g. a freshly built model).
        activation: a callable without arguments returning an ``nn.Module``, e.g. ``nn.Tanh`` or
            ``lambda: nn.ELU(alpha=1.0)``; called once per replaced submodule.
        old: the ``nn.Module`` subclass to replace.

    Returns:
        ``module`` itself (changed in place), for chaining.

    Raises:
        ValueError: if ``module`` is not an ``nn.Module``, ``old`` is not an ``nn.Module`` subclass,
            ``activation`` cannot be called without arguments or does not return an ``nn.Module``, or
            ``module`` has no submodule of type ``old`` (nothing to replace).
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not (isinstance(old, type) and issubclass(old, nn.Module)):
        raise ValueError(f"old must be a torch.nn.Module subclass, got {old!r}")
    targets = [(parent, name) for parent in module.modules() for name, child in parent.named_children()
               if isinstance(child, old)]
    if not targets:
        raise ValueError(f"module has no {old.__name__} submodule to replace")
    for parent, name in targets:
        try:
            new = activation()
        except TypeError as err:
            raise ValueError(f"activation must be callable without arguments, e.g. nn.Tanh: {err}") from err
        if not isinstance(new, nn.Module):
            raise ValueError(f"activation() must return a torch.nn.Module, got {type(new).__name__}")
        setattr(parent, name, new)
    return module
