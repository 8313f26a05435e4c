"""Latent-space density: classes, class radius and Manoj's bound in terms of the collision probability.

Notation of Manoj, "On the Latent Space of Deep Generative Models" (honors thesis talk, 2018).
A generator ``g: R^d -> images`` and a classifier
``c: images -> [K]`` split the latent space into classes ``K_i = {z : c(g(z)) = i}``; with
``z ~ N(0, I)`` the class probabilities are ``p_i = P(z in K_i)``. The class radius of ``z`` is
the distance to the nearest latent point of another class,
``r(z) = inf_{z' in union_{j != c(g(z))} K_j} ||z - z'||``, and the theorem bounds its mean:

    E[r(z)] <= log(4 pi log(1/||p||^2)) / sqrt(2 log(1/||p||^2))      (class_radius_bound)

under the partition assumption (every z has a class) and the probability-decay assumption
``||p||_inf <= 1/5``. The proof: Gaussian isoperimetry (Fawzi, Fawzi & Fawzi 2018) gives
``E[r] <= sum_i p_i Phi^{-1}(p_i) + phi(Phi^{-1}(p_i))`` (:func:`isoperimetric_bound`, attained by
two half-space classes); each term is ``<= p_i g(p_i)`` for ``p_i <= 1/5`` with the concave
``g(x) = log(4 pi log(1/x)) / sqrt(2 log(1/x))``, and Jensen gives ``g(sum_i p_i^2)``.

``||p||^2`` is the collision probability (two draws fall in the same class), ``-log ||p||^2`` the
collision entropy (Rényi order 2, :func:`dgmcourse.evaluation.collision_entropy`).

The experiment of Manoj (2018): the regulariser ``omega(l1, l2) = ||f(l1) - f(l2)||^2 / ||l1 - l2||^2``
on an encoder ``f`` (:func:`omega_regulariser`), weight clipping (:func:`clip_weights`) and the
training loop :func:`train_omega_vae`. Distances are latent Euclidean units.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy import integrate
from scipy.stats import norm
from tqdm.auto import tqdm

from .evaluation import collision_entropy, renyi_entropy
from .gan import clip_weights
from .training import start_training, train_epoch
from .vae import elbo

__all__ = [
    "collision_probability", "collision_entropy", "renyi_entropy", "class_radius_bound",
    "isoperimetric_bound", "halfspace_expected_radius", "orthant_expected_radius", "classify_latents",
    "class_radius", "expected_class_radius", "omega_regulariser", "clip_weights", "train_omega_vae",
]

PROBABILITY_DECAY = 0.2  # the theorem's assumption ||p||_inf <= 1/5


def collision_probability(p) -> torch.Tensor:
    """Collision probability ``||p||^2 = sum_i p_i^2`` (two independent draws share a class; the socks).

    Args:
        p: ``(K,)`` probability vector.

    Returns:
        0-d float64 tensor in ``[1/K, 1]``.

    Raises:
        ValueError: if ``p`` is not a probability vector.
    """
    return torch.exp(-collision_entropy(p))


def class_radius_bound(p, strict: bool = False) -> float:
    """Manoj's bound ``g(||p||^2) = log(4 pi log(1/||p||^2)) / sqrt(2 log(1/||p||^2))`` on ``E[r(z)]``.

    Manoj (2018), "Class Radius to Diversity" theorem, for ``z ~ N(0, I_d)`` (any ``d``) and classes
    that partition the latent space. The probability-decay assumption ``||p||_inf <= 1/5`` is
    checked: when it fails the formula is not a bound (it can be far too small or negative; e.g. two
    half-spaces at offset 1.5 have ``E[r] = 1.559`` but ``g = 0.998``).

    Args:
        p: ``(K,)`` class probabilities.
        strict: raise instead of warn when ``||p||_inf > 1/5``.

    Returns:
        the bound, latent units (float).

    Raises:
        ValueError: if ``p`` is not a probability vector, ``||p||^2 = 1`` (one class: no radius is
            defined), or ``strict`` and ``||p||_inf > 1/5``.

    Warns:
        UserWarning: ``||p||_inf > 1/5`` and not ``strict``.
    """
    q = collision_probability(p).item()
    if q >= 1 - 1e-12:
        raise ValueError("p must have at least two classes with positive mass (||p||^2 < 1)")
    p_max = torch.as_tensor(p, dtype=torch.float64).max().item()
    if p_max > PROBABILITY_DECAY:
        message = (f"p violates the probability-decay assumption ||p||_inf <= 1/5 (max p = {p_max:.3f}); "
                   "the formula is then not a bound on E[r(z)]")
        if strict:
            raise ValueError(message)
        warnings.warn(message, UserWarning, stacklevel=2)
    h = math.log(1 / q)
    return math.log(4 * math.pi * h) / math.sqrt(2 * h)


def isoperimetric_bound(p) -> float:
    """Gaussian-isoperimetry bound ``E[r(z)] <= sum_i p_i Phi^{-1}(p_i) + phi(Phi^{-1}(p_i))``.

    The first step of the proof (Fawzi, Fawzi & Fawzi 2018, as rewritten by Manoj, 2018): among sets of
    Gaussian mass ``p_i`` a half-space is farthest (on average) from its complement. Needs only the
    partition assumption; equality for two classes split by a hyperplane. Classes with ``p_i = 0``
    contribute 0 (the limit).

    Args:
        p: ``(K,)`` class probabilities.

    Returns:
        the bound, latent units (float).

    Raises:
        ValueError: if ``p`` is not a probability vector.
    """
    collision_entropy(p)  # validates p
    p = torch.as_tensor(p, dtype=torch.float64).numpy()
    p = p[p > 0]
    q = norm.ppf(p)
    return float(np.sum(np.where(np.isfinite(q), p * q + norm.pdf(q), 0.0)))


def halfspace_expected_radius(a: float) -> float:
    """Exact ``E[r(z)] = a (2 Phi(a) - 1) + 2 phi(a)`` for two classes ``{z_1 < a}``, ``{z_1 >= a}``.

    ``r(z) = |z_1 - a|``, so ``E[r] = E|X - a|`` for ``X ~ N(0, 1)``. Equals :func:`isoperimetric_bound`
    of ``p = (Phi(a), 1 - Phi(a))``.

    Raises:
        ValueError: if ``a`` is not finite.
    """
    if not math.isfinite(a):
        raise ValueError(f"a must be a finite offset, got {a}")
    return a * (2 * norm.cdf(a) - 1) + 2 * norm.pdf(a)


def orthant_expected_radius(m: int) -> float:
    """Exact ``E[r(z)] = E[min_i |z_i|] = int_0^inf (2 (1 - Phi(t)))^m dt`` for the ``K = 2^m`` orthant
    classes of the first ``m`` coordinates (``r(z) = min_i |z_i|``), by ``scipy.integrate.quad``.

    Raises:
        ValueError: if ``m`` < 1.
    """
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    return integrate.quad(lambda t: (2 * norm.sf(t)) ** m, 0, np.inf)[0]


# --------------------------------------------------------------------------- estimating r(z)


def _check_latents(z) -> torch.Tensor:
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[0] == 0 or not torch.is_floating_point(z):
        raise ValueError(f"z must be a float tensor of latent points (B, d), got {getattr(z, 'shape', type(z))}")
    return z


@torch.no_grad()
def classify_latents(generator, classifier, z: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Class probabilities ``softmax(c(g(z)))`` of latent points, shape ``(B, K)`` (CPU).

    Feed the result to :func:`dgmcourse.evaluation.class_histogram` for ``p`` and to
    :func:`dgmcourse.evaluation.confidence` for coverage.

    Raises:
        ValueError: if ``z`` is not ``(B, d)`` or the classifier does not return ``(B, K)`` logits.
    """
    z = _check_latents(z)
    out = [torch.softmax(classifier(generator(b)), dim=1).cpu() for b in z.split(batch_size)]
    probs = torch.cat(out)
    if probs.shape[0] != len(z):
        raise ValueError("classifier(generator(z)) must return logits of shape (B, K)")
    return probs


def _labels(generator, classifier, z: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([classifier(generator(b)).argmax(1) for b in z.split(batch_size)])


def _margin_direction(generator, classifier, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Own labels and unit directions of steepest ascent of ``max_{j != own} logit_j - logit_own``."""
    z = z.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = classifier(generator(z))
        if not logits.requires_grad:
            raise ValueError("classifier(generator(z)) is not differentiable in z (no autograd graph)")
        own = logits.argmax(1)
        other = logits.scatter(1, own[:, None], -torch.inf).max(1).values
        margin = other - logits.gather(1, own[:, None]).squeeze(1)
        (grad,) = torch.autograd.grad(margin.sum(), z)
    return own.detach(), grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)


def class_radius(generator, classifier, z: torch.Tensor, n_directions: int = 4, max_radius: float = 6.0,
                 n_steps: int = 12, n_bisect: int = 8, batch_size: int = 4096, seed: int = 0) -> torch.Tensor:
    """Upper-bound estimate of the class radius ``r(z)`` (Manoj, 2018) by ray search.

    Search, per point ``z`` with class ``i = argmax c(g(z))``: rays ``z + t u`` along
    ``1 + n_directions`` unit directions ``u`` -- the gradient of the margin
    ``max_{j != i} logit_j - logit_i`` (the adversarial direction; exact for linear class
    boundaries) and ``n_directions`` random directions. Each ray is scanned at
    ``t = max_radius * k / n_steps`` (``k = 1..n_steps``); the first bracket whose end has another
    class is refined by ``n_bisect`` bisection steps, keeping the other-class end. ``r_hat(z)`` is the
    smallest such ``t`` over the rays: a point of another class at that distance exists, so
    ``r_hat >= r`` up to floating point. A boundary can be missed (thin classes between scan points,
    or a nearest point off every ray), which only loosens the bound.

    Budget: 1 gradient plus ``(1 + n_directions) * (n_steps + n_bisect)`` label evaluations per point.

    Args:
        generator: ``(B, d) -> images``; classifier: images -> logits ``(B, K)``; both torch functions.
        z: ``(B, d)`` latent points.
        n_directions, max_radius, n_steps, n_bisect: the search budget (see above).
        batch_size: latent points per generator/classifier call; seed: random directions.

    Returns:
        ``(B,)`` tensor of upper bounds, latent units; ``inf`` where no other class was found within
        ``max_radius``. Resolution of a found crossing: ``max_radius / n_steps / 2^n_bisect``.

    Raises:
        ValueError: bad ``z`` or budget, or a generator/classifier that is not differentiable.
    """
    z = _check_latents(z).detach()
    if n_directions < 0 or n_steps < 1 or n_bisect < 0 or not max_radius > 0:
        raise ValueError("need n_directions >= 0, n_steps >= 1, n_bisect >= 0 and max_radius > 0, got "
                         f"{n_directions}, {n_steps}, {n_bisect}, {max_radius}")
    own, grad_dir = _margin_direction(generator, classifier, z)
    gen = torch.Generator().manual_seed(seed)
    rand = torch.randn(len(z), n_directions, z.shape[1], generator=gen).to(z)
    dirs = torch.cat([grad_dir[:, None], rand / rand.norm(dim=2, keepdim=True)], dim=1)  # (B, M, d)
    B, M, d = dirs.shape
    t = torch.arange(1, n_steps + 1, dtype=z.dtype, device=z.device) * (max_radius / n_steps)
    pts = z[:, None, None] + t[None, None, :, None] * dirs[:, :, None]  # (B, M, S, d)
    other = _labels(generator, classifier, pts.reshape(-1, d), batch_size).reshape(B, M, n_steps) != own[:, None, None]
    found = other.any(2)
    first = other.int().argmax(2)
    hi = torch.where(found, t[first], torch.full_like(t[first], torch.inf))
    lo = torch.where(first > 0, t[(first - 1).clamp_min(0)], torch.zeros_like(hi))
    rows = found.nonzero(as_tuple=True)
    lo_f, hi_f = lo[rows], hi[rows]
    for _ in range(n_bisect):
        mid = (lo_f + hi_f) / 2
        mid_pts = z[rows[0]] + mid[:, None] * dirs[rows]
        crossed = _labels(generator, classifier, mid_pts, batch_size) != own[rows[0]]
        hi_f, lo_f = torch.where(crossed, mid, hi_f), torch.where(crossed, lo_f, mid)
    hi[rows] = hi_f
    return hi.min(1).values


def expected_class_radius(generator, classifier, z: torch.Tensor, confidence: float = 0.95,
                          progress: bool = False, **search) -> dict:
    """Monte Carlo estimate of the class radius ``E[r(z)]`` with a normal-approximation confidence interval.

    ``z`` should be draws from the prior ``N(0, I)``. Points are processed in chunks of 250 (tqdm bar).

    Args:
        generator, classifier, z: as :func:`class_radius`; confidence: level of the interval.
        **search: budget arguments of :func:`class_radius`.

    Returns:
        dict with ``"mean"``, ``"ci_low"``, ``"ci_high"``, ``"std_err"`` (latent units; over the points
        where another class was found), ``"n"``, ``"n_not_found"``, ``"evaluations_per_point"`` and
        ``"radii"`` (``(B,)`` tensor).

    Raises:
        ValueError: as :func:`class_radius`, or ``confidence`` outside (0, 1).

    Warns:
        UserWarning: when some points found no other class within ``max_radius`` (the mean then
        excludes them and is not an upper bound).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    z = _check_latents(z)
    radii = torch.cat([class_radius(generator, classifier, chunk, **search)
                       for chunk in tqdm(z.split(250), desc="class radius", disable=not progress)])
    finite = radii[torch.isfinite(radii)].double()
    if len(finite) < len(radii):
        warnings.warn(f"{len(radii) - len(finite)} of {len(radii)} points found no other class within "
                      "max_radius; they are left out of the mean", UserWarning, stacklevel=2)
    if len(finite) == 0:
        raise ValueError("no point found another class within max_radius: increase max_radius")
    mean = finite.mean().item()
    std_err = finite.std().item() / math.sqrt(len(finite)) if len(finite) > 1 else math.inf
    half = norm.ppf(0.5 + confidence / 2) * std_err
    budget = 1 + (1 + search.get("n_directions", 4)) * (search.get("n_steps", 12) + search.get("n_bisect", 8))
    return {"mean": mean, "ci_low": float(mean - half), "ci_high": float(mean + half), "std_err": std_err,
            "n": len(radii), "n_not_found": len(radii) - len(finite), "evaluations_per_point": budget,
            "radii": radii}


# --------------------------------------------------------------------------- the omega-regularised VAE


def omega_regulariser(images: torch.Tensor, codes: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``sum_{i=1}^{b/2} omega(l_i, l_{i+b/2})`` with ``omega(l1, l2) = ||f(l1) - f(l2)||^2 / ||l1 - l2||^2``.

    Manoj (2018), "VAE Modification": the encoder ``f`` is penalised for putting images far apart in the
    latent space relative to their distance in image space ("penalize distant encodings"); Manoj
    trains with ``lambda = 30`` times this sum.

    Args:
        images: ``(b, ...)`` batch ``l_1..l_b`` (flattened for the norm); b even, >= 2.
        codes: ``(b, d)`` their encodings ``f(l_i)`` (e.g. the encoder means).
        eps: floor on ``||l1 - l2||^2`` (identical images).

    Returns:
        0-d tensor (squared latent units per squared image unit), differentiable.

    Raises:
        ValueError: if ``b`` is odd or < 2, or ``codes`` does not have ``b`` rows.
    """
    b = len(images)
    if b < 2 or b % 2:
        raise ValueError(f"images must hold an even batch size b >= 2, got {b}")
    if codes.dim() != 2 or len(codes) != b:
        raise ValueError(f"codes must have shape ({b}, d), got {tuple(codes.shape)}")
    x = images.reshape(b, -1)
    h = b // 2
    num = (codes[:h] - codes[h:]).pow(2).sum(1)
    den = (x[:h] - x[h:]).pow(2).sum(1).clamp_min(eps)
    return (num / den).sum()


def train_omega_vae(model, x_train: torch.Tensor, lam: float = 30.0, clip: float | None = 0.3,
                    epochs: int = 10, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                    device: torch.device | None = None, progress: bool = True) -> dict[str, list[float]]:
    """Train a :class:`dgmcourse.vae.VAE` on ``-sum_batch ELBO + lam * omega_regulariser(x, mu)`` with
    Adam, clipping all weights to ``[-clip, clip]`` after every step (the experiment of Manoj, 2018).

    The ELBO is summed over the batch as in the PyTorch examples VAE Manoj's experiment started
    from; ``omega`` uses the encoder means ``mu``. ``lam=0, clip=None`` is the vanilla VAE with the
    same loop.

    Args:
        model: a VAE with ``forward(x) -> (x_logits, mu, logvar, z)`` and ``likelihood``.
        x_train: ``(N, *x_shape)`` (with an odd ``N`` the last example is left out, so every batch pairs up);
        lam: lambda >= 0; clip: weight bound or None;
        epochs, batch_size (even), lr, seed, device, progress: as in :func:`dgmcourse.vae.train_vae`.

    Returns:
        history with per-epoch means per datum: ``"train_elbo"`` (nats) and ``"omega"`` (per pair).

    Raises:
        ValueError: if ``lam`` < 0, ``batch_size`` is odd or < 2, or ``epochs`` < 1.
    """
    if lam < 0 or epochs < 1 or batch_size < 2 or batch_size % 2:
        raise ValueError(f"need lam >= 0, epochs >= 1 and an even batch_size >= 2; got {lam}, {epochs}, {batch_size}")
    device, opt = start_training(model, lr, seed, device)
    if clip is not None:
        clip_weights(model, clip)
    history = {"train_elbo": [], "omega": []}
    x_train = x_train[: len(x_train) // 2 * 2]      # every batch then pairs up: an odd last example is left out

    def losses(idx):
        x = x_train[idx].to(device)
        x_logits, mu, logvar, _ = model(x)
        value = elbo(x, x_logits, mu, logvar, model.likelihood)[0].sum()
        reg = omega_regulariser(x, mu)
        return {"loss": -value + lam * reg, "elbo": value / len(idx), "omega": reg / (len(idx) // 2)}

    for _ in tqdm(range(epochs), desc=f"train VAE (lambda={lam:g})", disable=not progress):
        means = train_epoch(opt, len(x_train), batch_size, losses,
                            after_step=None if clip is None else lambda: clip_weights(model, clip))
        history["train_elbo"].append(means["elbo"])
        history["omega"].append(means["omega"])
    model.eval()
    return history
