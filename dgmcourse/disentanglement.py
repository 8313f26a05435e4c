"""Disentanglement: the impossibility construction of Locatello et al. and the six standard metrics.

Source: Locatello et al. 2019, "Challenging Common Assumptions in the Unsupervised Learning of
Disentangled Representations" (ICML), Theorem 1 and its proof; the metrics with the settings of
their Sec. 5 / ``disentanglement_lib``. Notation of the course (Isachenko, lecture 9): a factorised
prior p(z) = prod_i p(z_i), g = marginal CDFs, h = inverse standard-normal CDF,
A an orthogonal matrix with all entries non-zero, and f(z) = g^{-1}(h^{-1}(A h(g(z)))).

Conventions (as in ``disentanglement_lib``): codes have shape ``(num_codes, N)`` and integer factors
``(num_factors, N)``; intervention-based scores take ``sample_factors(n, rng) -> (n, num_factors)``
and ``represent(factors, rng) -> (n, num_codes)``. Information is in nats.

``mmd_permutation_test`` is :func:`dgmcourse.divergences.mmd_permutation_test`, re-exported here
to check that f(z) has the distribution of z (Theorem 1's f preserves p(z)).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import scipy.stats
import torch
from joblib import Parallel, delayed
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score, roc_auc_score
from sklearn.preprocessing import label_binarize
from sklearn.svm import LinearSVC

from dgmcourse.divergences import mmd_permutation_test as mmd_permutation_test  # re-exported
from dgmcourse.vae import MLPVAE, encoder_means

BETA_VAE_WEIGHTS = Path(__file__).resolve().parent / "weights" / "beta_vae_dsprites.pt"

SampleFactors = Callable[[int, np.random.Generator], np.ndarray]
Represent = Callable[[np.ndarray, np.random.Generator], np.ndarray]


# ----------------------------------------------------------------------------------------------
# The construction of the proof
# ----------------------------------------------------------------------------------------------
def random_orthogonal(d: int, rng: np.random.Generator, min_abs_entry: float = 1e-2) -> np.ndarray:
    """A random orthogonal ``(d, d)`` matrix with every entry of magnitude >= ``min_abs_entry``.

    Haar-distributed (QR of a Gaussian matrix with the sign fix of Mezzadri 2007), redrawn until
    no entry is near zero; such matrices have probability one, so the family is infinite
    (Locatello et al. 2019, proof of Theorem 1).

    Raises:
        ValueError: ``d`` < 2 (for d = 1 no entangling rotation exists).
    """
    if d < 2:
        raise ValueError(f"d must be >= 2, got {d}")
    while True:
        q, r = np.linalg.qr(rng.standard_normal((d, d)))
        q = q * np.sign(np.diag(r))
        if np.abs(q).min() >= min_abs_entry:
            return q


def _check_marginals(marginals, d: int) -> list:
    if not isinstance(marginals, Sequence):
        marginals = [marginals] * d
    if len(marginals) != d:
        raise ValueError(f"marginals must give one distribution per dimension ({d}), got {len(marginals)}")
    for m in marginals:
        if not isinstance(getattr(m, "dist", None), scipy.stats.rv_continuous):
            raise ValueError(f"marginals must be frozen continuous scipy.stats distributions "
                             f"(e.g. scipy.stats.expon()), got {m!r}")
    return list(marginals)


def check_orthogonal(A, atol: float = 1e-6) -> np.ndarray:
    """Return ``A`` as a float64 ``(d, d)`` array after checking A^T A = I within ``atol``.

    Raises:
        ValueError: ``A`` not square or not orthogonal.
    """
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square matrix, got shape {A.shape}")
    if not np.allclose(A.T @ A, np.eye(len(A)), atol=atol):
        raise ValueError("A must be orthogonal (A^T A = I)")
    return A


def _to_gaussian(z: np.ndarray, m) -> tuple[np.ndarray, np.ndarray]:
    """y = h(g(z)) = Phi^{-1}(F(z)) (tail-accurate) and its derivative p(z) / phi(y)."""
    y = np.where(z > m.median(), -scipy.stats.norm.ppf(m.sf(z)), scipy.stats.norm.ppf(m.cdf(z)))
    return y, m.pdf(z) / scipy.stats.norm.pdf(y)


def _from_gaussian(w: np.ndarray, m) -> tuple[np.ndarray, np.ndarray]:
    """x = g^{-1}(h^{-1}(w)) = F^{-1}(Phi(w)) (tail-accurate) and its derivative phi(w) / p(x)."""
    x = np.where(w > 0, m.isf(scipy.stats.norm.sf(w)), m.ppf(scipy.stats.norm.cdf(w)))
    return x, scipy.stats.norm.pdf(w) / m.pdf(x)


class _Marginal(torch.autograd.Function):
    """Element-wise map computed by SciPy, with its derivative saved for autograd / torch.func."""

    @staticmethod
    def forward(z, fn, marginals):
        values, slopes = zip(*(fn(z[..., i].detach().cpu().numpy(), m) for i, m in enumerate(marginals)))
        as_tensor = lambda a: torch.as_tensor(np.stack(a, -1), dtype=z.dtype, device=z.device)  # noqa: E731
        return as_tensor(values), as_tensor(slopes)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output[1])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx, grad, _):
        (slope,) = ctx.saved_tensors
        return grad * slope, None, None


def entangle(z: torch.Tensor, A, marginals) -> torch.Tensor:
    """The entangling map of Locatello et al. 2019, Theorem 1: f(z) = g^{-1}(h^{-1}(A h(g(z)))).

    g_i = CDF of the i-th marginal, h_i = Phi^{-1} (inverse standard-normal CDF). If z has the
    factorised density prod_i p(z_i), then f is a bijection of supp(z), f(z) has the same
    distribution as z, and every df_i/dz_j = [phi(w_i)/p_i(f_i)] A_ij [p_j(z_j)/phi(y_j)] is non-zero,
    with y = h(g(z)), w = A y. For a standard normal prior g = h^{-1}, so f(z) = A z exactly.
    The inverse is ``entangle(x, A.T, marginals)``. Differentiable (``torch.autograd``,
    ``torch.func.jacrev`` on single samples) through the saved SciPy derivatives.

    Args:
        z: ``(N, d)`` or ``(d,)`` float tensor of points in the support.
        A: ``(d, d)`` orthogonal matrix (array or tensor).
        marginals: one frozen continuous ``scipy.stats`` distribution, or a sequence of ``d``.

    Returns:
        Tensor of the shape and dtype of ``z``.

    Raises:
        ValueError: ``z`` not 1-D/2-D, ``A`` not ``(d, d)`` orthogonal, or a marginal that is not a
            frozen continuous ``scipy.stats`` distribution.
    """
    if not isinstance(z, torch.Tensor) or z.ndim not in (1, 2) or not z.is_floating_point():
        raise ValueError("z must be a float tensor of shape (N, d) or (d,)")
    d = z.shape[-1]
    A = check_orthogonal(A.detach().cpu().numpy() if isinstance(A, torch.Tensor) else A)
    if A.shape != (d, d):
        raise ValueError(f"A must have shape ({d}, {d}) to match z, got {A.shape}")
    marginals = _check_marginals(marginals, d)
    y, _ = _Marginal.apply(z, _to_gaussian, marginals)              # h(g(z)): standard normal
    w = y @ torch.as_tensor(A, dtype=z.dtype, device=z.device).T     # rotation A y: still N(0, I)
    x, _ = _Marginal.apply(w, _from_gaussian, marginals)            # g^{-1}(h^{-1}(w)): back to p(z)
    return x


# ----------------------------------------------------------------------------------------------
# Codes, factors and helpers
# ----------------------------------------------------------------------------------------------
def _check_codes_factors(codes, factors, codes_name="codes", factors_name="factors"):
    codes, factors = np.asarray(codes), np.asarray(factors)
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.number):
        raise ValueError(f"{codes_name} must be a numeric array of shape (num_codes, N), got {codes.shape}")
    if factors.ndim != 2 or not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"{factors_name} must be an integer array of shape (num_factors, N), "
                         f"got {factors.dtype} {factors.shape}")
    if (factors < 0).any():
        raise ValueError(f"{factors_name} must be non-negative integer labels")
    if codes.shape[1] != factors.shape[1]:
        raise ValueError(f"{codes_name} and {factors_name} must have the same N, "
                         f"got {codes.shape[1]} and {factors.shape[1]}")
    return codes.astype(np.float64), factors


def sample_codes(sample_factors: SampleFactors, represent: Represent, num_points: int,
                 rng: np.random.Generator, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``num_points`` factors and their codes: ``(codes (num_codes, N), factors (num_factors, N))``.

    Source: ``generate_batch_factor_code`` of Locatello et al. 2019's ``disentanglement_lib``.

    Raises:
        ValueError: ``num_points`` < 1.
    """
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    factors = sample_factors(num_points, rng)
    return _represent(represent, factors, rng, batch_size).T, factors.T


def _represent(represent: Represent, factors: np.ndarray, rng, batch_size: int = 8192) -> np.ndarray:
    """Codes ``(n, num_codes)`` of ``(n, K)`` factors, computed in chunks of ``batch_size``."""
    return np.concatenate([np.asarray(represent(chunk, rng), dtype=np.float64)
                           for chunk in np.array_split(factors, -(-len(factors) // batch_size))])


def all_factors(factor_sizes: Sequence[int]) -> np.ndarray:
    """Every factor combination, in the row order of the dSprites file: int64 ``(prod(sizes), K)``."""
    return np.indices(factor_sizes).reshape(len(factor_sizes), -1).T.astype(np.int64)


def table_representation(table: np.ndarray, factor_sizes: Sequence[int]) -> Represent:
    """A ``represent`` function that looks codes up in ``table`` (``(prod(sizes), num_codes)``, rows in
    :func:`all_factors` order): exact and fast for deterministic (mean) encoders of noise-free data.

    Raises:
        ValueError: ``table`` has not one row per factor combination.
    """
    table = np.asarray(table)
    if table.ndim != 2 or len(table) != int(np.prod(factor_sizes)):
        raise ValueError(f"table must have shape ({int(np.prod(factor_sizes))}, num_codes), got {table.shape}")
    return lambda factors, rng: table[np.ravel_multi_index(tuple(np.asarray(factors).T), factor_sizes)]


def gaussian_codes(factors: np.ndarray, factor_sizes: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """A perfectly disentangled continuous representation: code_k = Phi^{-1}((factor_k + U) / size_k)
    with U ~ Uniform(0, 1). Each code depends on one factor only and, for uniform factors, is exactly
    N(0, 1) with independent coordinates (the prior of Theorem 1). ``factors``: ``(n, K)`` ints;
    returns float64 ``(n, K)``.

    Raises:
        ValueError: factors not ``(n, K)`` integers within ``factor_sizes``.
    """
    factors = np.asarray(factors)
    sizes = np.asarray(factor_sizes)
    if factors.ndim != 2 or factors.shape[1] != len(sizes) or not np.issubdtype(factors.dtype, np.integer) \
            or (factors < 0).any() or (factors >= sizes).any():
        raise ValueError(f"factors must be (n, {len(sizes)}) integers in [0, size) for sizes {tuple(sizes)}")
    return scipy.stats.norm.ppf((factors + rng.uniform(size=factors.shape)) / sizes)


def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Discretise each code into ``num_bins`` equal-width bins over its range (``disentanglement_lib``'s
    ``_histogram_discretize``, the setting of Locatello et al. 2019): int ``(num_codes, N)``.

    Raises:
        ValueError: ``codes`` not 2-D or ``num_bins`` < 2.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must have shape (num_codes, N), got {codes.shape}")
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2, got {num_bins}")
    return np.stack([np.digitize(c, np.histogram(c, num_bins)[1][:-1]) for c in codes])


def mutual_information_matrix(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Plug-in mutual information I(code_i; factor_k) in nats, ``(num_codes, num_factors)``
    (``sklearn.metrics.mutual_info_score`` on each pair).

    Raises:
        ValueError: bad shapes or labels (see the module conventions).
    """
    discrete_codes, factors = _check_codes_factors(discrete_codes, factors, "discrete_codes")
    return np.array([[mutual_info_score(y, c) for y in factors] for c in discrete_codes])


# ----------------------------------------------------------------------------------------------
# Intervention-based scores
# ----------------------------------------------------------------------------------------------
def _num_factors(sample_factors, rng) -> int:
    return sample_factors(1, rng).shape[1]


def _beta_vae_features(sample_factors, represent, rng, batch_size, num_points):
    """For each point: a random factor k, ``batch_size`` pairs sharing factor k, the mean |z1 - z2|."""
    k = _num_factors(sample_factors, rng)
    index = rng.integers(0, k, num_points)
    first = sample_factors(num_points * batch_size, rng)
    second = sample_factors(num_points * batch_size, rng)
    fixed = np.repeat(index, batch_size)
    second[np.arange(len(second)), fixed] = first[np.arange(len(first)), fixed]
    diff = np.abs(_represent(represent, first, rng) - _represent(represent, second, rng))
    return diff.reshape(num_points, batch_size, -1).mean(axis=1), index


def beta_vae_score(sample_factors: SampleFactors, represent: Represent, rng: np.random.Generator,
                   batch_size: int = 64, num_train: int = 10000, num_eval: int = 5000) -> dict:
    """BetaVAE score (Higgins et al. 2017, "beta-VAE", ICLR, Sec. 3 / Eq. 3 and Appendix A.4).

    Each point fixes one random factor k in ``batch_size`` pairs of samples, averages the absolute
    code differences |z1 - z2| over the pairs, and a linear classifier (scikit-learn
    ``LogisticRegression``) predicts k from that vector. Defaults: Locatello et al. 2019.

    Returns:
        ``{"train_accuracy", "eval_accuracy"}``; the score is ``eval_accuracy`` in [0, 1].

    Raises:
        ValueError: ``batch_size``, ``num_train`` or ``num_eval`` < 1.
    """
    if min(batch_size, num_train, num_eval) < 1:
        raise ValueError("batch_size, num_train and num_eval must be >= 1")
    x_train, y_train = _beta_vae_features(sample_factors, represent, rng, batch_size, num_train)
    x_eval, y_eval = _beta_vae_features(sample_factors, represent, rng, batch_size, num_eval)
    model = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    return {"train_accuracy": float(model.score(x_train, y_train)),
            "eval_accuracy": float(model.score(x_eval, y_eval))}


def _factor_vae_votes(sample_factors, represent, rng, batch_size, num_points, scale, active):
    k = _num_factors(sample_factors, rng)
    index = rng.integers(0, k, num_points)
    factors = sample_factors(num_points * batch_size, rng).reshape(num_points, batch_size, k)
    factors[np.arange(num_points), :, index] = factors[np.arange(num_points), :1, index]
    codes = _represent(represent, factors.reshape(-1, k), rng).reshape(num_points, batch_size, -1)
    codes = codes[..., active] / scale[active]
    votes = np.zeros((k, len(scale)), dtype=np.int64)
    np.add.at(votes, (index, np.flatnonzero(active)[np.argmin(codes.var(axis=1, ddof=1), axis=1)]), 1)
    return votes


def factor_vae_score(sample_factors: SampleFactors, represent: Represent, rng: np.random.Generator,
                     batch_size: int = 64, num_train: int = 10000, num_eval: int = 5000,
                     num_variance_estimate: int = 10000, prune_threshold: float = 0.05) -> dict:
    """FactorVAE score (Kim & Mnih 2018, "Disentangling by Factorising", ICML, Sec. 4).

    Codes are divided by their global standard deviation (from ``num_variance_estimate`` samples);
    codes with standard deviation below ``prune_threshold`` (collapsed to the prior) are dropped.
    Each vote fixes one random factor k in ``batch_size`` samples and votes (k, argmin_j Var[z_j]);
    the majority-vote classifier maps each code to its most voted factor. Defaults: Locatello et
    al. 2019.

    Returns:
        ``{"train_accuracy", "eval_accuracy", "num_active_dims"}``; the score is ``eval_accuracy``.

    Raises:
        ValueError: ``batch_size`` < 2 or ``num_train``, ``num_eval``, ``num_variance_estimate`` < 2.
    """
    if min(batch_size, num_train, num_eval, num_variance_estimate) < 2:
        raise ValueError("batch_size, num_train, num_eval and num_variance_estimate must be >= 2")
    scale = sample_codes(sample_factors, represent, num_variance_estimate, rng)[0].std(axis=1, ddof=1)
    active = scale >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
    train = _factor_vae_votes(sample_factors, represent, rng, batch_size, num_train, scale, active)
    evaluation = _factor_vae_votes(sample_factors, represent, rng, batch_size, num_eval, scale, active)
    classifier = train.argmax(axis=0)                      # code j -> its majority factor
    columns = np.arange(train.shape[1])
    return {"train_accuracy": float(train[classifier, columns].sum() / train.sum()),
            "eval_accuracy": float(evaluation[classifier, columns].sum() / evaluation.sum()),
            "num_active_dims": int(active.sum())}


# ----------------------------------------------------------------------------------------------
# Information- and predictor-based scores
# ----------------------------------------------------------------------------------------------
def mig(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> float:
    """Mutual Information Gap (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs",
    NeurIPS, Eq. 6): (1/K) sum_k [I(z_{j1}; v_k) - I(z_{j2}; v_k)] / H(v_k), where j1, j2 are the
    codes with the largest and second-largest mutual information with factor v_k.

    Codes are histogram-discretised into ``num_bins`` bins (Locatello et al. 2019); information in
    nats (the ratio is unit-free). Factors with H(v_k) = 0 are skipped.

    Args:
        codes: ``(num_codes, N)`` with num_codes >= 2; factors: ``(num_factors, N)`` integer labels.

    Returns:
        MIG in [0, 1].

    Raises:
        ValueError: mismatched N, fewer than 2 codes, or non-integer / negative factor labels.
    """
    codes, factors = _check_codes_factors(codes, factors)
    if len(codes) < 2:
        raise ValueError("codes must have at least 2 rows (MIG compares the top two codes)")
    info = np.sort(mutual_information_matrix(histogram_discretize(codes, num_bins), factors), axis=0)
    entropy = np.array([mutual_info_score(y, y) for y in factors])
    keep = entropy > 0
    return float(np.mean((info[-1, keep] - info[-2, keep]) / entropy[keep]))


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """DCI disentanglement and completeness from a ``(num_codes, num_factors)`` importance matrix R
    (Eastwood & Williams 2018, "A Framework for the Quantitative Evaluation of Disentangled
    Representations", ICLR, Sec. 3.1-3.2).

    Disentanglement: D_i = 1 - H_K(P_i.), P_ij = R_ij / sum_k R_ik, weighted by rho_i = sum_j R_ij / sum R.
    Completeness: C_j = 1 - H_D(P~_.j), P~_ij = R_ij / sum_i R_ij, weighted by the factor's share
    of the importance. H_K is the entropy with logarithm base K (num_factors), H_D base D (num_codes).

    Raises:
        ValueError: R not 2-D with at least 2 rows and 2 columns, negative, or all zero.
    """
    R = np.asarray(importance, dtype=np.float64)
    if R.ndim != 2 or min(R.shape) < 2 or (R < 0).any() or R.sum() <= 0:
        raise ValueError("importance must be a non-negative (num_codes >= 2, num_factors >= 2) matrix "
                         "with a positive sum")
    code_entropy = scipy.stats.entropy(R.T + 1e-11, base=R.shape[1])
    factor_entropy = scipy.stats.entropy(R + 1e-11, base=R.shape[0])
    disentanglement = np.sum((1 - code_entropy) * R.sum(axis=1) / R.sum())
    completeness = np.sum((1 - factor_entropy) * R.sum(axis=0) / R.sum())
    return float(disentanglement), float(completeness)


def dci(codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray,
        factors_test: np.ndarray, random_state: int = 0, n_jobs: int | None = None) -> dict:
    """DCI disentanglement, completeness and informativeness (Eastwood & Williams 2018, ICLR).

    One scikit-learn ``GradientBoostingClassifier`` (default settings, as in Locatello et al. 2019)
    per factor predicts it from all codes; its ``feature_importances_`` form column j of R
    (see :func:`dci_from_importance`); informativeness is its accuracy. Locatello et al. use
    10,000 training and 5,000 test points. ``n_jobs`` fits the per-factor classifiers in parallel
    threads (``joblib``; None = one). Cost: gradient boosting fits 100 depth-3 trees per factor
    value, so it grows with the number of factor values (5,100 trees for the 51 values of the
    lecture's dSprites variant, 11,300 for the 113 of dSprites); with Locatello et al.'s sizes this
    is about two CPU minutes (``benchmarks/reports/disentanglement.json``), which is why the
    lecture uses fewer points.

    Returns:
        ``{"disentanglement", "completeness", "informativeness_train", "informativeness_test",
        "importance"}`` (``importance``: ``(num_codes, num_factors)`` array).

    Raises:
        ValueError: mismatched N or codes, non-integer or negative factor labels, fewer than 2
            codes or factors.
    """
    codes_train, factors_train = _check_codes_factors(codes_train, factors_train, "codes_train", "factors_train")
    codes_test, factors_test = _check_codes_factors(codes_test, factors_test, "codes_test", "factors_test")
    if codes_train.shape[0] != codes_test.shape[0] or factors_train.shape[0] != factors_test.shape[0]:
        raise ValueError("codes_test / factors_test must have as many rows as codes_train / factors_train")
    # one tree per factor value and stage: start the factors with most values first, to balance the threads
    order = sorted(range(len(factors_train)), key=lambda j: -len(np.unique(factors_train[j])))
    fitted = dict(zip(order, Parallel(n_jobs=n_jobs, prefer="threads")(
        delayed(GradientBoostingClassifier(random_state=random_state).fit)(codes_train.T, factors_train[j])
        for j in order)))
    models = [fitted[j] for j in range(len(factors_train))]
    importance = np.array([np.abs(model.feature_importances_) for model in models]).T
    acc_train = [model.score(codes_train.T, y) for model, y in zip(models, factors_train)]
    acc_test = [model.score(codes_test.T, y) for model, y in zip(models, factors_test)]
    disentanglement, completeness = dci_from_importance(importance)
    return {"disentanglement": disentanglement, "completeness": completeness,
            "informativeness_train": float(np.mean(acc_train)),
            "informativeness_test": float(np.mean(acc_test)), "importance": importance}


def modularity_from_mi(mutual_information: np.ndarray) -> float:
    """Modularity from a ``(num_codes, num_factors)`` mutual-information matrix (Ridgeway & Mozer
    2018, "Learning Deep Disentangled Embeddings with the F-Statistic Loss", NeurIPS, Sec. 3):
    per code, 1 - sum_{k != k*} m_k^2 / (theta^2 (K - 1)) with theta = max_k m_k; codes with theta = 0
    score 0; the mean over codes.

    Raises:
        ValueError: not a non-negative matrix with at least 2 factors (columns).
    """
    m2 = np.square(np.asarray(mutual_information, dtype=np.float64))
    if m2.ndim != 2 or m2.shape[1] < 2 or (np.asarray(mutual_information) < 0).any():
        raise ValueError("mutual_information must be a non-negative (num_codes, num_factors >= 2) matrix")
    theta2 = m2.max(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = 1 - (m2.sum(axis=1) - theta2) / (theta2 * (m2.shape[1] - 1))
    return float(np.mean(np.where(theta2 > 0, score, 0.0)))


def modularity(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> float:
    """Modularity (Ridgeway & Mozer 2018) of histogram-discretised codes, see :func:`modularity_from_mi`.

    Raises:
        ValueError: mismatched N, non-integer or negative factor labels, fewer than 2 factors.
    """
    codes, factors = _check_codes_factors(codes, factors)
    return modularity_from_mi(mutual_information_matrix(histogram_discretize(codes, num_bins), factors))


def explicitness(codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray,
                 factors_test: np.ndarray) -> dict:
    """Explicitness (Ridgeway & Mozer 2018, Sec. 3): per factor, a scikit-learn ``LogisticRegression``
    on the standardised codes; the score is its one-vs-rest ROC AUC averaged over the factor's
    values, then over factors (Locatello et al. 2019 use 10,000 train / 5,000 test points).

    Returns:
        ``{"explicitness_train", "explicitness_test"}`` in [0, 1].

    Raises:
        ValueError: mismatched N or codes, non-integer or negative factor labels.
    """
    codes_train, factors_train = _check_codes_factors(codes_train, factors_train, "codes_train", "factors_train")
    codes_test, factors_test = _check_codes_factors(codes_test, factors_test, "codes_test", "factors_test")
    mean, std = codes_train.mean(axis=1, keepdims=True), codes_train.std(axis=1, keepdims=True)
    std[std == 0] = 1.0
    x_train, x_test = ((codes_train - mean) / std).T, ((codes_test - mean) / std).T
    scores = {"explicitness_train": [], "explicitness_test": []}
    for y_train, y_test in zip(factors_train, factors_test):
        model = LogisticRegression(max_iter=1000).fit(x_train, y_train)
        for key, x, y in (("explicitness_train", x_train, y_train), ("explicitness_test", x_test, y_test)):
            scores[key].append(_auc(model, x, y))
    return {key: float(np.mean(values)) for key, values in scores.items()}


def _auc(model, x, y) -> float:
    """Macro one-vs-rest ROC AUC over the classes of the model present (with both labels) in y."""
    probs = model.predict_proba(x)
    onehot = label_binarize(y, classes=model.classes_)
    if len(model.classes_) == 2:
        onehot, probs = onehot[:, :1], probs[:, 1:]
    keep = (onehot.sum(axis=0) > 0) & (onehot.sum(axis=0) < len(y))
    return float(np.mean([roc_auc_score(onehot[:, c], probs[:, c]) for c in np.flatnonzero(keep)]))


def sap(codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray,
        factors_test: np.ndarray, continuous_factors: bool = False) -> float:
    """Separated Attribute Predictability (Kumar et al. 2018, "Variational Inference of Disentangled
    Latent Concepts from Unlabeled Observations", ICLR, Sec. 3).

    Score matrix S_ij: for discrete factors (Locatello et al. 2019's setting) the test accuracy of a
    scikit-learn ``LinearSVC(C=0.01, class_weight="balanced")`` predicting factor j from code i alone;
    for continuous factors the squared correlation R^2 of code i and factor j. SAP is the mean over
    factors of the gap between the two largest S_ij. Note: in the discrete setting even a perfect
    code cannot beat the chance accuracy of the second-best code, so SAP <= 1 - 1/|values|.

    Raises:
        ValueError: mismatched N or codes, non-integer or negative factor labels, fewer than 2 codes.
    """
    codes_train, factors_train = _check_codes_factors(codes_train, factors_train, "codes_train", "factors_train")
    codes_test, factors_test = _check_codes_factors(codes_test, factors_test, "codes_test", "factors_test")
    if len(codes_train) < 2 or len(codes_test) != len(codes_train):
        raise ValueError("codes_train and codes_test need the same number (>= 2) of codes")
    score = np.zeros((len(codes_train), len(factors_train)))
    for i, code in enumerate(codes_train):
        for j, y in enumerate(factors_train):
            if continuous_factors:
                score[i, j] = np.corrcoef(code, y)[0, 1] ** 2 if code.std() > 1e-12 and y.std() > 0 else 0.0
            else:
                model = LinearSVC(C=0.01, class_weight="balanced").fit(code[:, None], y)
                score[i, j] = model.score(codes_test[i][:, None], factors_test[j])
    top = np.sort(score, axis=0)
    return float(np.mean(top[-1] - top[-2]))


def all_metrics(sample_factors: SampleFactors, represent: Represent, rng: np.random.Generator,
                num_train: int = 10000, num_test: int = 5000, n_jobs: int | None = None) -> dict:
    """The six scores of Locatello et al. 2019 (Table/Fig. 3 of the paper) with their settings:
    BetaVAE, FactorVAE (``num_train``/``num_test`` votes of 64-sample batches), MIG and Modularity
    on ``num_train`` points, DCI, explicitness and SAP trained on ``num_train`` and tested on
    ``num_test`` points. ``n_jobs``: threads for DCI's classifiers.

    Returns:
        A flat dict ``{"BetaVAE", "FactorVAE", "MIG", "DCI disentanglement", "DCI completeness",
        "DCI informativeness", "Modularity", "Explicitness", "SAP"}`` of floats.

    Raises:
        ValueError: ``num_train`` or ``num_test`` < 2.
    """
    if min(num_train, num_test) < 2:
        raise ValueError("num_train and num_test must be >= 2")
    codes, factors = sample_codes(sample_factors, represent, num_train, rng)
    codes_test, factors_test = sample_codes(sample_factors, represent, num_test, rng)
    scores = dci(codes, factors, codes_test, factors_test, n_jobs=n_jobs)
    return {
        "BetaVAE": beta_vae_score(sample_factors, represent, rng, num_train=num_train,
                                  num_eval=num_test)["eval_accuracy"],
        "FactorVAE": factor_vae_score(sample_factors, represent, rng, num_train=num_train, num_eval=num_test,
                                      num_variance_estimate=num_train)["eval_accuracy"],
        "MIG": mig(codes, factors),
        "DCI disentanglement": scores["disentanglement"],
        "DCI completeness": scores["completeness"],
        "DCI informativeness": scores["informativeness_test"],
        "Modularity": modularity(codes, factors),
        "Explicitness": explicitness(codes, factors, codes_test, factors_test)["explicitness_test"],
        "SAP": sap(codes, factors, codes_test, factors_test),
    }


# ----------------------------------------------------------------------------------------------
# beta-VAE representations
# ----------------------------------------------------------------------------------------------
def mean_representation(model, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """The encoder mean mu(x) of a VAE as the representation ("training: sampled z; inference: the
    mean", Locatello et al. 2019, Sec. 2). ``x``: ``(n, *x_shape)`` array; returns float64 ``(n, z_dim)``.

    The encoder runs in eval mode; the model's previous training mode is restored afterwards,
    also when encoding raises.

    Raises:
        ValueError: from ``model.encode`` when ``x`` has the wrong shape.
    """
    return encoder_means(model, torch.as_tensor(x, dtype=torch.float32), batch_size).double().cpu().numpy()


def save_beta_vae(model: MLPVAE, info: dict, path: str | Path = BETA_VAE_WEIGHTS) -> Path:
    """Save a trained :class:`~dgmcourse.vae.MLPVAE` in half precision (about 1.3 MB for ``hidden=256``)
    with ``info``, a JSON-like dict that must hold ``info["model"]``, the keyword arguments that rebuild
    the model (``x_shape``, ``z_dim``, ``hidden``). Written by ``benchmarks/disentanglement.py``.

    Raises:
        ValueError: ``model`` is not an ``MLPVAE`` or ``info["model"]`` does not rebuild it.
    """
    if not isinstance(model, MLPVAE):
        raise ValueError(f"model must be an MLPVAE, got {type(model).__name__}")
    try:
        MLPVAE(**info["model"]).load_state_dict(model.state_dict())
    except (KeyError, TypeError, RuntimeError) as error:
        raise ValueError(f"info['model'] must hold the MLPVAE's x_shape, z_dim and hidden: {error}") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"info": info, "state_dict": {k: v.detach().cpu().half() for k, v in model.state_dict().items()}},
               path)
    return path


def load_beta_vae(path: str | Path = BETA_VAE_WEIGHTS, device: torch.device | None = None) -> tuple[MLPVAE, dict]:
    """The beta-VAE (Higgins et al. 2017) shipped with the course (default), or one saved by :func:`save_beta_vae`,
    in eval mode.

    The shipped model is the best of ``benchmarks/disentanglement.py``'s sweep (largest MIG + DCI
    disentanglement) on the lecture's dSprites variant, ``DSprites(resolution=32, num_positions=16,
    num_orientations=10)``: its ``info`` holds ``"model"`` (MLPVAE arguments), ``"training"``
    (:func:`~dgmcourse.vae.train_vae` arguments, to retrain it), ``"metrics"`` (its six scores with Locatello
    et al.'s sizes) and ``"sweep"`` (every model's beta, seed and scores), so the lecture needs no report file.

    Returns:
        ``(model, info)``: the model in float32 on ``device`` (default CPU) and the dict saved with it.

    Raises:
        ValueError: the file is missing or is not a file written by :func:`save_beta_vae`.
    """
    path = Path(path)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = MLPVAE(**saved["info"]["model"])
        model.load_state_dict({k: v.float() for k, v in saved["state_dict"].items()})
    except FileNotFoundError:
        raise ValueError(f"no beta-VAE weights at {path} (run benchmarks/disentanglement.py)") from None
    except (KeyError, TypeError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(f"{path} is not a file written by save_beta_vae: {error}") from None
    return model.to(device or torch.device("cpu")).eval(), saved["info"]
