"""How to evaluate a generative model: classifier-based measures, memorisation, Fréchet distance,
and log-likelihoods in one unit.

Evaluation of generative models is an open problem (Patrini, "Unsupervised learning,
representation and generative models", Deep Learning lecture, University of Amsterdam, 2017;
Theis, van den Oord & Bethge 2016, "A note on the evaluation of generative models"). This
module gives the measures the course uses, each readable and tested against a reference:

* classifier-based: :func:`class_histogram` (the class masses ``p`` of a set of samples),
  :func:`collision_entropy` ``-log ||p||^2`` and :func:`renyi_entropy`, :func:`confidence`;
* memorisation: :func:`nearest_neighbours` and :func:`memorisation_check` (generated sample ->
  closest training image, distances compared with held-out real images);
* :func:`frechet_distance` between Gaussians and :func:`classifier_frechet_distance` in the
  feature space of the course's MNIST classifier (NOT the Inception FID, see its docstring);
* fidelity and diversity apart: :func:`precision_recall_density_coverage` (k-nearest-neighbour
  balls around feature vectors) and :func:`classifier_precision_recall_density_coverage` (the same
  in the classifier's feature space);
* log-likelihoods: :func:`gaussian_kde_log_density` (continuous Parzen window),
  :func:`bernoulli_kde_log_likelihood` (its discrete analogue for binary images) and
  :func:`bits_per_dim`, the one unit in which the VAE (IWAE bound), the PixelCNN (exact) and a
  kernel density baseline are compared.

All log-probabilities are in nats unless a name says bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "class_histogram", "collision_entropy", "renyi_entropy", "confidence",
    "nearest_neighbours", "MemorisationReport", "memorisation_check",
    "gaussian_statistics", "frechet_distance", "classifier_frechet_distance",
    "precision_recall_density_coverage", "classifier_precision_recall_density_coverage",
    "gaussian_kde_log_density", "bernoulli_kde_log_likelihood", "bits_per_dim",
]


# --------------------------------------------------------------------------- classifier-based


def _as_distribution(p, name: str = "p") -> torch.Tensor:
    p = torch.as_tensor(p, dtype=torch.float64)
    if p.ndim != 1 or p.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D probability vector, got shape {tuple(p.shape)}")
    if (p < 0).any() or not torch.isclose(p.sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-6):
        raise ValueError(f"{name} must be non-negative and sum to 1, got sum {p.sum().item():.6g}")
    return p


def _check_probs(probs: torch.Tensor, name: str = "probs") -> torch.Tensor:
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"{name} must have shape (B, K) with B >= 1, got {tuple(probs.shape)}")
    if (probs < 0).any() or not torch.allclose(probs.sum(1), torch.ones(len(probs), dtype=probs.dtype), atol=1e-4):
        raise ValueError(f"{name} rows must be probability vectors (non-negative, summing to 1)")
    return probs


def class_histogram(probs_or_labels, num_classes: int | None = None, soft: bool = False) -> torch.Tensor:
    """Class distribution ``p`` of a set of (generated) samples.

    ``p_k`` estimates the probability mass the generator puts on class ``k`` (the class mass
    ``P(z in K_k)`` of Manoj, "On the Latent Space of Deep Generative Models", honors thesis
    talk, 2018, when the samples are decoded from ``z ~ p(z)``).

    Args:
        probs_or_labels: ``(B, K)`` classifier probabilities or ``(B,)`` integer labels.
        num_classes: ``K``; required for labels unless ``max(label) + 1`` is meant, checked
            against ``probs.shape[1]`` for probabilities.
        soft: for probabilities, average them (``p = mean_b q(y|x_b)``) instead of counting
            the arg-max class of each sample (the default, a hard histogram).

    Returns:
        float64 tensor ``(K,)``, non-negative, summing to 1.

    Raises:
        ValueError: empty input, wrong shape, probabilities that are not distributions, negative
            labels or labels ``>= num_classes``.
    """
    x = torch.as_tensor(probs_or_labels)
    if x.ndim == 2:
        probs = _check_probs(x.to(torch.float64), "probs_or_labels")
        if num_classes is not None and num_classes != probs.shape[1]:
            raise ValueError(f"num_classes={num_classes} but probs_or_labels has {probs.shape[1]} columns")
        if soft:
            return probs.mean(0)
        labels, num_classes = probs.argmax(1), probs.shape[1]
    elif x.ndim == 1 and x.numel() > 0:
        if x.is_floating_point() and not torch.equal(x, x.round()):
            raise ValueError("probs_or_labels of shape (B,) must hold integer class labels")
        labels = x.to(torch.int64)
        if (labels < 0).any():
            raise ValueError("probs_or_labels holds negative labels")
        num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
        if labels.max() >= num_classes:
            raise ValueError(f"probs_or_labels holds label {int(labels.max())} >= num_classes={num_classes}")
    else:
        raise ValueError(f"probs_or_labels must be (B, K) probabilities or (B,) labels, got shape {tuple(x.shape)}")
    return torch.bincount(labels, minlength=num_classes).to(torch.float64) / len(labels)


def renyi_entropy(p, alpha: float) -> torch.Tensor:
    """Rényi entropy of order ``alpha`` of a discrete distribution, in nats.

    ``H_alpha(p) = log(sum_k p_k^alpha) / (1 - alpha)`` (Rényi 1961); the limits are the Shannon
    entropy ``-sum p log p`` at ``alpha = 1`` and the min-entropy ``-log max p`` at
    ``alpha = inf``. ``alpha = 2`` is the collision entropy.

    Args:
        p: ``(K,)`` probability vector.
        alpha: order, ``alpha >= 0`` (``float('inf')`` allowed).

    Returns:
        0-d float64 tensor, nats; between 0 and ``log K``.

    Raises:
        ValueError: ``p`` not a probability vector, ``alpha`` negative or NaN.
    """
    p = _as_distribution(p)
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha!r}")
    support = p[p > 0]
    if alpha == 1:
        return -(support * support.log()).sum()
    if math.isinf(alpha):
        return -support.max().log()
    return torch.log((support ** alpha).sum()) / (1.0 - alpha)


def collision_entropy(p) -> torch.Tensor:
    """Collision entropy ``H_2(p) = -log ||p||^2`` in nats.

    ``||p||^2 = sum_k p_k^2`` is the collision probability: the chance that two independent
    samples fall in the same class. Manoj (2018) bounds the expected class radius with
    ``log(1/||p||^2)``; uniform ``p`` over ``K`` classes gives the maximum ``log K``, a
    generator that produces a single class gives 0.

    Args:
        p: ``(K,)`` probability vector (e.g. from :func:`class_histogram`).

    Returns:
        0-d float64 tensor, nats.

    Raises:
        ValueError: ``p`` is not a probability vector.
    """
    p = _as_distribution(p)
    return -torch.log((p ** 2).sum())


def confidence(probs) -> torch.Tensor:
    """Classifier confidence ``max_k q(y=k|x)`` of each sample.

    Sharp, realistic digits get confident predictions; blurry or in-between samples do not
    (the idea behind the Inception score, Salimans et al. 2016, Sec. 4).

    Args:
        probs: ``(B, K)`` classifier probabilities.

    Returns:
        ``(B,)`` tensor in ``[1/K, 1]``.

    Raises:
        ValueError: wrong shape or rows that are not probability vectors.
    """
    probs = _check_probs(torch.as_tensor(probs))
    return probs.max(1).values


# --------------------------------------------------------------------------- memorisation


def _flatten(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, ...) with N >= 1, got {tuple(x.shape)}")
    return x.reshape(len(x), -1).to(torch.float32)


def nearest_neighbours(queries: torch.Tensor, reference: torch.Tensor,
                       batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean nearest neighbour in ``reference`` of every query (pixel space).

    Args:
        queries: ``(B, ...)`` tensor, e.g. generated images ``(B, 1, 28, 28)``.
        reference: ``(N, ...)`` tensor with the same trailing size, e.g. training images.
        batch_size: queries processed at once (memory ``batch_size x N``).

    Returns:
        ``(distances, indices)``: ``(B,)`` float32 Euclidean distances and ``(B,)`` int64 indices
        into ``reference``.

    Raises:
        ValueError: empty inputs or different numbers of features.
    """
    q, r = _flatten(queries, "queries"), _flatten(reference, "reference")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} features per sample, reference has {r.shape[1]}")
    dists, idx = [], []
    for chunk in q.split(batch_size):
        d, i = torch.cdist(chunk, r).min(1)
        dists.append(d)
        idx.append(i)
    return torch.cat(dists), torch.cat(idx)


@dataclass
class MemorisationReport:
    """Result of :func:`memorisation_check`.

    Attributes:
        generated: ``(B,)`` distance of each generated sample to its closest training image.
        nearest_index: ``(B,)`` index of that training image.
        baseline: ``(M,)`` distance of each held-out real image to its closest training image.
        ratio: ``median(generated) / median(baseline)``; about 1 for a model that generalises
            like fresh data, much below 1 for one that copies its training set.
        fraction_closer: fraction of generated samples closer to the training set than the 5 %
            quantile of the baseline distances (about 0.05 for fresh data).
    """

    generated: torch.Tensor
    nearest_index: torch.Tensor
    baseline: torch.Tensor
    ratio: float
    fraction_closer: float


def memorisation_check(generated: torch.Tensor, train: torch.Tensor, held_out: torch.Tensor,
                       batch_size: int = 512) -> MemorisationReport:
    """Nearest-neighbour memorisation check (Patrini, 2017, "a heuristic check for
    overfitting: given a generated image, search in the training set the closest one").

    "Too similar" needs a yardstick: the distance from a *held-out* real image to the training
    set is what a model that has learnt the distribution, not the examples, should produce.

    Args:
        generated: ``(B, ...)`` generated samples.
        train: ``(N, ...)`` training images the model saw.
        held_out: ``(M, ...)`` real images it did not see.
        batch_size: passed to :func:`nearest_neighbours`.

    Returns:
        :class:`MemorisationReport`.

    Raises:
        ValueError: empty inputs or mismatched feature sizes.
    """
    d_gen, idx = nearest_neighbours(generated, train, batch_size)
    d_base, _ = nearest_neighbours(held_out, train, batch_size)
    ratio = (d_gen.median() / d_base.median().clamp_min(1e-12)).item()
    fraction = (d_gen < torch.quantile(d_base, 0.05)).float().mean().item()
    return MemorisationReport(d_gen, idx, d_base, ratio, fraction)


# --------------------------------------------------------------------------- Fréchet distance


def gaussian_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of a set of feature vectors.

    Args:
        features: ``(N, D)`` array or tensor, ``N >= 2``.

    Returns:
        ``(mu, sigma)``: float64 arrays ``(D,)`` and ``(D, D)`` (``np.cov`` with ``ddof=1``).

    Raises:
        ValueError: not 2-D or fewer than two rows.
    """
    f = torch.as_tensor(features).detach().cpu().to(torch.float64).numpy()
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape (N, D) with N >= 2, got {f.shape}")
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (len(f) - 1)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Fréchet (2-Wasserstein) distance between two Gaussians.

    ``d^2 = ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^{1/2} S2 S1^{1/2})^{1/2})``
    (Dowson & Landau 1982; Heusel et al. 2017, Eq. 6 writes the trace term as
    ``2 (S1 S2)^{1/2}``, which has the same trace). The symmetric form used here only needs
    square roots of symmetric positive semi-definite matrices, so it stays real.

    Args:
        mu1, mu2: ``(D,)`` means.
        sigma1, sigma2: ``(D, D)`` symmetric positive semi-definite covariances.

    Returns:
        float, ``>= 0`` (squared distance, in squared feature units).

    Raises:
        ValueError: shapes that do not match, or non-symmetric covariances.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,):
        raise ValueError(f"mu1 and mu2 must both have shape (D,), got {mu1.shape} and {mu2.shape}")
    for name, s in (("sigma1", s1), ("sigma2", s2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must have shape ({d}, {d}), got {s.shape}")
        if not np.allclose(s, s.T, atol=1e-8 * max(1.0, np.abs(s).max())):
            raise ValueError(f"{name} must be symmetric")
    root1 = _psd_sqrt(s1)
    cross = _psd_sqrt(root1 @ s2 @ root1)
    value = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross)
    return float(max(value, 0.0))


@torch.no_grad()
def _classifier_features(model, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.cat([model.features(chunk.to(device)).flatten(1).cpu() for chunk in x.split(batch_size)])


def _image_features(model, batch_size: int, **images: torch.Tensor) -> list[torch.Tensor]:
    """Classifier features ``(N, D)`` of each named ``(N, 1, 28, 28)`` image set (``N >= 2``), computed
    in eval mode by ``model`` (default ``load_classifier()``), whose mode is restored afterwards."""
    for name, x in images.items():
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28) or len(x) < 2:
            raise ValueError(f"{name} must have shape (N, 1, 28, 28) with N >= 2, got {tuple(x.shape)}")
    if model is None:
        from dgmcourse.classifier import load_classifier
        model = load_classifier()
    was_training = model.training
    model.eval()
    features = [_classifier_features(model, x, batch_size) for x in images.values()]
    model.train(was_training)
    return features


def classifier_frechet_distance(x_a: torch.Tensor, x_b: torch.Tensor, model=None,
                                batch_size: int = 500) -> float:
    """Fréchet distance between two image sets in the feature space of the course's MNIST
    classifier (``dgmcourse.classifier``; its ``.features(x)``, the penultimate layer).

    This is **not** FID. FID (Heusel et al. 2017) uses the 2048-d pool features of Inception-v3
    trained on ImageNet; its numbers are only comparable with other FIDs computed with exactly
    that network. We do not use it because (1) the course runs offline and never downloads
    weights, (2) Inception features of 28x28 grey digits upsampled to 299x299 describe ImageNet
    textures, not what makes a digit a digit, and (3) 2048-d covariances need far more samples
    than a CPU course draws. Our classifier was trained on MNIST, so its features separate
    digits; the recipe (fit a Gaussian per set, :func:`frechet_distance`) is FID's, the scale is
    not, so compare values only with each other, computed with the same classifier and sample size
    (the estimate is biased upwards for small sets).

    Args:
        x_a, x_b: ``(N, 1, 28, 28)`` images in [0, 1], ``N >= 2`` each.
        model: a classifier with ``.features(x) -> (N, D)``; default
            ``dgmcourse.classifier.load_classifier()``.
        batch_size: images per forward pass.

    Returns:
        float, squared Fréchet distance of the two feature Gaussians.

    Raises:
        ValueError: inputs that are not ``(N, 1, 28, 28)`` with ``N >= 2``.
    """
    features_a, features_b = _image_features(model, batch_size, x_a=x_a, x_b=x_b)
    return frechet_distance(*gaussian_statistics(features_a), *gaussian_statistics(features_b))


# --------------------------------------------------------------------------- precision, recall, density, coverage


def _check_features(features, name: str) -> torch.Tensor:
    f = torch.as_tensor(features).detach().cpu()
    if f.ndim != 2 or f.shape[0] == 0 or f.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, d) with N, d >= 1, got {tuple(f.shape)}")
    f = f.to(torch.float64)
    if not torch.isfinite(f).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return f


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``(len(a), len(b))`` from exact differences (a point is at distance 0 from itself)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _knn_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """``NND_k``: the ``(N,)`` distances from each point to its k-th nearest neighbour among the others."""
    return _distances(features, features).kthvalue(k + 1, dim=1).values  # the 1st smallest: the point itself


def precision_recall_density_coverage(real_features, fake_features, k: int = 5) -> dict[str, float]:
    """Fidelity (precision, density) and diversity (recall, coverage) of generated samples, from the
    k-nearest-neighbour balls ``B(x, NND_k(x))`` around feature vectors.

    ``NND_k(x)`` is the distance from ``x`` to its k-th nearest neighbour in its own set (itself
    excluded). With real ``X_1..X_N`` and generated (fake) ``Y_1..Y_M``:

    * precision ``= 1/M sum_j 1[Y_j in some real ball B(X_i, NND_k(X_i))]``: how many samples look real;
    * recall ``= 1/N sum_i 1[X_i in some fake ball B(Y_j, NND_k(Y_j))]``: how much of the data the
      generator reaches (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for
      Assessing Generative Models", Eqs. 1-2);
    * density ``= 1/(kM) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))]``: how many real balls hold a sample,
      about 1 when fake and real are alike, above 1 where samples crowd in dense real regions;
    * coverage ``= 1/N sum_i 1[some Y_j in B(X_i, NND_k(X_i))]``: the fraction of real balls that hold
      a sample (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative Models",
      Sec. 3). A sample inside the one oversized ball of a real outlier counts fully towards
      precision but only ``1/k`` towards density; a stray sample, whose own ball is large, can
      raise recall but not coverage, which uses the real balls only.

    The balls are open (``distance < NND_k``), as in ``prdc``, the reference code of Naeem et al.
    (Kynkäänniemi et al. write ``<=``; the two differ only for points exactly on a sphere). Distances
    are Euclidean, in float64; memory grows as ``(N + M)^2``.

    Args:
        real_features: ``(N, d)`` features of real data, ``N > k``.
        fake_features: ``(M, d)`` features of generated samples, ``M > k``.
        k: the neighbour that sets each ball's radius (positive integer; 5 in Naeem et al., 3 in
            Kynkäänniemi et al.).

    Returns:
        ``{"precision", "recall", "density", "coverage"}`` -> float; all in [0, 1] but density, in
        [0, N/k].

    Raises:
        ValueError: inputs that are not non-empty 2-D arrays, differ in ``d`` or hold NaN or inf;
            ``k`` not a positive integer, or not smaller than ``N`` and ``M``.
    """
    real, fake = _check_features(real_features, "real_features"), _check_features(fake_features, "fake_features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real_features have d={real.shape[1]} columns, fake_features have d={fake.shape[1]}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k >= min(len(real), len(fake)):
        raise ValueError(f"k={k} needs more than k points in each set, got N={len(real)} real and M={len(fake)} fake")
    distances = _distances(real, fake)                                # (N, M)
    in_real_ball = distances < _knn_radii(real, k)[:, None]           # [i, j]: Y_j in B(X_i, NND_k(X_i))
    in_fake_ball = distances < _knn_radii(fake, k)[None, :]           # [i, j]: X_i in B(Y_j, NND_k(Y_j))
    return {
        "precision": in_real_ball.any(0).double().mean().item(),
        "recall": in_fake_ball.any(1).double().mean().item(),
        "density": in_real_ball.sum(0).double().mean().item() / k,
        "coverage": in_real_ball.any(1).double().mean().item(),
    }


def classifier_precision_recall_density_coverage(x_real: torch.Tensor, x_fake: torch.Tensor, model=None,
                                                 k: int = 5, batch_size: int = 500) -> dict[str, float]:
    """:func:`precision_recall_density_coverage` of two image sets in the feature space of the course's
    MNIST classifier (its ``.features(x)``, as in :func:`classifier_frechet_distance`, whose caveats apply:
    these are not the Inception or VGG features of the papers, so compare values only with each other).

    Args:
        x_real: ``(N, 1, 28, 28)`` real images in [0, 1], ``N > k``.
        x_fake: ``(M, 1, 28, 28)`` generated images in [0, 1], ``M > k``.
        model: a classifier with ``.features(x) -> (N, D)``; default
            ``dgmcourse.classifier.load_classifier()``.
        k: nearest neighbour that sets the ball radii (positive integer).
        batch_size: images per forward pass.

    Returns:
        ``{"precision", "recall", "density", "coverage"}`` -> float.

    Raises:
        ValueError: inputs that are not ``(N, 1, 28, 28)`` with ``N >= 2``, non-finite features,
            ``k`` not a positive integer smaller than ``N`` and ``M``.
    """
    real, fake = _image_features(model, batch_size, x_real=x_real, x_fake=x_fake)
    return precision_recall_density_coverage(real, fake, k)


# --------------------------------------------------------------------------- log-likelihoods


def gaussian_kde_log_density(x: torch.Tensor, train: torch.Tensor, bandwidth: float,
                             batch_size: int = 256) -> torch.Tensor:
    """Log-density of a Gaussian kernel density estimate (Parzen window), in nats.

    ``log p(x) = logsumexp_i log N(x; x_i, h^2 I) - log n`` over the ``n`` training points
    (Isachenko, "Deep Generative Models", lecture 9, Ozon Masters, 2021:
    ``p_1(x) = 1/n sum_i N(x | x_i, eps I)``; the estimator of
    ``sklearn.neighbors.KernelDensity(kernel="gaussian", bandwidth=h)``).
    A continuous density: do not compare it with the probabilities of a discrete model.

    Args:
        x: ``(B, ...)`` points.
        train: ``(n, ...)`` kernel centres with the same trailing size.
        bandwidth: ``h > 0``, the kernel's standard deviation.
        batch_size: query points processed at once.

    Returns:
        ``(B,)`` float64 log-densities in nats.

    Raises:
        ValueError: non-positive bandwidth, empty or mismatched inputs.
    """
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth!r}")
    q, r = _flatten(x, "x").double(), _flatten(train, "train").double()
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"x has {q.shape[1]} features per sample, train has {r.shape[1]}")
    d, n = q.shape[1], r.shape[0]
    const = -0.5 * d * math.log(2 * math.pi * bandwidth ** 2) - math.log(n)
    out = [torch.logsumexp(-0.5 * torch.cdist(c, r) ** 2 / bandwidth ** 2, 1) + const for c in q.split(batch_size)]
    return torch.cat(out)


def bernoulli_kde_log_likelihood(x: torch.Tensor, train: torch.Tensor, flip: float,
                                 batch_size: int = 256) -> torch.Tensor:
    """Log-probability of binary images under a kernel density estimate with Bernoulli kernels.

    The discrete analogue of the Parzen window for binarised images: an equal mixture of one
    kernel per training image ``x_i`` that copies each pixel and flips it with probability
    ``flip``: ``p(x) = 1/n sum_i prod_d flip^[x_d != x_id] (1 - flip)^[x_d = x_id]``.
    It is a probability mass function over ``{0,1}^D``, so its log-likelihood is in the same unit
    as the PixelCNN's and a Bernoulli VAE's (nats per image, or :func:`bits_per_dim`). A small
    ``flip`` gives samples that are near copies of training digits and a poor test likelihood
    (the "great samples, poor likelihood" model of Isachenko, 2021).

    Args:
        x: ``(B, ...)`` binary images (values in {0, 1}).
        train: ``(n, ...)`` binary training images.
        flip: pixel flip probability, in ``(0, 0.5]``.
        batch_size: query images processed at once.

    Returns:
        ``(B,)`` float64 log-probabilities in nats.

    Raises:
        ValueError: ``flip`` outside (0, 0.5], non-binary data, empty or mismatched inputs.
    """
    if not 0 < flip <= 0.5:
        raise ValueError(f"flip must lie in (0, 0.5], got {flip!r}")
    q, r = _flatten(x, "x").double(), _flatten(train, "train").double()
    for name, t in (("x", q), ("train", r)):
        if not ((t == 0) | (t == 1)).all():
            raise ValueError(f"{name} must be binary (values in {{0, 1}}); binarise it first")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"x has {q.shape[1]} features per sample, train has {r.shape[1]}")
    d, n = q.shape[1], r.shape[0]
    log_flip, log_keep = math.log(flip), math.log1p(-flip)
    out = []
    for c in q.split(batch_size):
        mismatches = c @ (1 - r).T + (1 - c) @ r.T  # Hamming distances (b, n)
        out.append(torch.logsumexp(mismatches * log_flip + (d - mismatches) * log_keep, 1) - math.log(n))
    return torch.cat(out)


def bits_per_dim(log_likelihood, num_dims: int) -> torch.Tensor:
    """Convert log-likelihoods in nats per example into bits per dimension.

    ``bpd = -log p(x) / (D log 2)``; lower is better. For binary 28x28 images ``D = 784`` and a
    model that ignores the data (every pixel a fair coin) scores exactly 1 bit/dim.

    Args:
        log_likelihood: tensor (any shape) of ``log p(x)`` in nats per example.
        num_dims: ``D``, the number of dimensions of one example (positive integer).

    Returns:
        tensor of the same shape, bits per dimension.

    Raises:
        ValueError: ``num_dims`` not a positive integer.
    """
    if isinstance(num_dims, bool) or not isinstance(num_dims, (int, np.integer)) or num_dims <= 0:
        raise ValueError(f"num_dims must be a positive integer, got {num_dims!r}")
    return -torch.as_tensor(log_likelihood) / (num_dims * math.log(2))
