"""Divergences, earth mover's distance and two-sample tests against closed forms and references
(scipy, POT, torch.distributions)."""

import itertools
import math

import numpy as np
import ot
import pytest
import scipy.stats as st
import torch
from scipy.spatial.distance import cdist, jensenshannon
from sklearn.metrics.pairwise import rbf_kernel

from dgmcourse import divergences as dv

P = np.array([3, 2, 1, 4]) / 10
Q = np.array([1, 2, 4, 3]) / 10
PILES = np.arange(4.0)
UNIT_COST = np.abs(np.subtract.outer(PILES, PILES))


def _random_pair(k, seed):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k))


# ------------------------------------------------------------------ KL / JSD / TV
@pytest.mark.parametrize("seed", range(3))
def test_kl_matches_scipy_and_torch(seed):
    p, q = _random_pair(7, seed)
    expected = st.entropy(p, q)
    torch_kl = torch.distributions.kl_divergence(torch.distributions.Categorical(torch.tensor(p)),
                                                 torch.distributions.Categorical(torch.tensor(q)))
    assert dv.kl_divergence(p, q) == pytest.approx(expected, rel=1e-12)
    assert dv.kl_divergence(p, q) == pytest.approx(torch_kl.item(), rel=1e-9)


def test_kl_is_infinite_outside_support_and_zero_for_equal():
    assert dv.kl_divergence([0.5, 0.5, 0.0], [1.0, 0.0, 0.0]) == math.inf
    assert dv.kl_divergence([1.0, 0.0, 0.0], [0.5, 0.5, 0.0]) == pytest.approx(math.log(2))
    assert dv.kl_divergence(P, P) == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_jsd_matches_scipy(seed):
    p, q = _random_pair(6, seed)
    assert dv.js_divergence(p, q) == pytest.approx(jensenshannon(p, q) ** 2, rel=1e-10)


def test_jsd_disjoint_is_log2_and_tv_is_one():
    p, q = [0.5, 0.5, 0, 0], [0, 0, 0.2, 0.8]
    assert dv.js_divergence(p, q) == pytest.approx(math.log(2))
    assert dv.total_variation(p, q) == 1.0


def test_tv_known_answer_and_sup_over_events():
    assert dv.total_variation(P, Q) == pytest.approx(0.3)  # (|.3-.1| + 0 + |.1-.4| + |.4-.3|) / 2
    p, q = _random_pair(5, 1)
    events = [[(i >> k) & 1 for k in range(5)] for i in range(32)]
    sup = max(abs(np.dot(e, p) - np.dot(e, q)) for e in events)
    assert dv.total_variation(p, q) == pytest.approx(sup)


def test_gridded_densities_match_gaussian_closed_form():
    x = np.linspace(-12, 14, 40001)
    dx = x[1] - x[0]
    p, q = st.norm.pdf(x, 0, 1), st.norm.pdf(x, 1.5, 2)
    closed = math.log(2) + (1 + 1.5 ** 2) / (2 * 4) - 0.5  # KL(N(0,1) || N(1.5, 2^2))
    assert dv.kl_divergence(p, q, dx=dx) == pytest.approx(closed, rel=1e-6)
    tv_same_var = 2 * st.norm.cdf(0.75) - 1  # TV(N(0,1), N(1.5,1))
    assert dv.total_variation(p, st.norm.pdf(x, 1.5, 1), dx=dx) == pytest.approx(tv_same_var, rel=1e-6)


def test_normalize_option_rescales():
    assert dv.kl_divergence([3, 2, 1, 4], [1, 2, 4, 3], normalize=True) == pytest.approx(st.entropy(P, Q))


@pytest.mark.parametrize("fn", [dv.kl_divergence, dv.js_divergence, dv.total_variation])
def test_bad_distributions_raise(fn):
    with pytest.raises(ValueError, match="same shape"):
        fn([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="p has negative mass"):
        fn([1.2, -0.2], [0.5, 0.5])
    with pytest.raises(ValueError, match="q must sum to 1"):
        fn([0.5, 0.5], [0.5, 0.6])
    with pytest.raises(ValueError, match="dx"):
        fn([0.5, 0.5], [0.5, 0.5], dx=-1.0)


# ------------------------------------------------------------------ earth mover's distance
@pytest.mark.parametrize("solver", ["linprog", "network_simplex"])
def test_lecture_piles_example(solver):
    w, gamma = dv.earth_movers_distance(P, Q, UNIT_COST, solver=solver)
    assert w == pytest.approx(0.5)
    np.testing.assert_allclose(gamma.sum(1), P, atol=1e-12)
    np.testing.assert_allclose(gamma.sum(0), Q, atol=1e-12)
    w10, _ = dv.earth_movers_distance(10 * P, 10 * Q, UNIT_COST, solver=solver)
    assert w10 == pytest.approx(5.0)  # unnormalised piles: 2 + 2 + 1


def test_transport_lp_constraints_are_the_marginals():
    c, A_eq, b_eq = dv.transport_lp(P, Q, UNIT_COST)
    gamma = np.outer(P, Q)  # the independent coupling is feasible
    np.testing.assert_allclose(A_eq @ gamma.ravel(), b_eq)
    assert A_eq.shape == (8, 16) and c.shape == (16,)
    np.testing.assert_allclose(c, UNIT_COST.ravel())


@pytest.mark.parametrize("seed", range(2))
def test_emd_solvers_agree_with_pot(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(30, 2)), rng.normal(1, 1, size=(25, 2))
    a, b = rng.dirichlet(np.ones(30)), rng.dirichlet(np.ones(25))
    cost = cdist(x, y)
    w_lp, gamma = dv.earth_movers_distance(a, b, cost, solver="linprog")
    w_ns, _ = dv.earth_movers_distance(a, b, cost)
    assert w_lp == pytest.approx(ot.emd2(a, b, cost), rel=1e-8)
    assert w_ns == pytest.approx(w_lp, rel=1e-8)
    np.testing.assert_allclose(gamma.sum(1), a, atol=1e-9)
    assert gamma.min() >= -1e-12


def test_point_clouds_in_1d_match_scipy():
    rng = np.random.default_rng(3)
    u, v = rng.normal(size=40), rng.exponential(size=40)
    w, _ = dv.point_cloud_wasserstein(u[:, None], v[:, None])
    assert w == pytest.approx(st.wasserstein_distance(u, v), rel=1e-10)


def test_emd_bad_input_raises():
    with pytest.raises(ValueError, match="cost must have shape"):
        dv.earth_movers_distance(P, Q, np.ones((4, 3)))
    with pytest.raises(ValueError, match="same total mass"):
        dv.earth_movers_distance(P, 2 * Q, UNIT_COST)
    with pytest.raises(ValueError, match="a has negative mass"):
        dv.earth_movers_distance([1.5, -0.5], [0.5, 0.5], np.ones((2, 2)))
    with pytest.raises(ValueError, match="solver"):
        dv.earth_movers_distance(P, Q, UNIT_COST, solver="sinkhorn")
    with pytest.raises(ValueError, match="same d"):
        dv.point_cloud_wasserstein(np.zeros((3, 2)), np.zeros((3, 3)))


# ------------------------------------------------------------------ wasserstein_1d
def test_wasserstein_1d_lecture_piles():
    assert dv.wasserstein_1d(PILES, PILES, P, Q) == pytest.approx(0.5)
    assert dv.wasserstein_1d(PILES, PILES, P, Q) == pytest.approx(st.wasserstein_distance(PILES, PILES, P, Q))


@pytest.mark.parametrize("p", [1, 2, 3])
def test_wasserstein_1d_matches_pot_power_p(p):
    rng = np.random.default_rng(p)
    u, v = rng.normal(size=50), rng.normal(1, 2, size=70)
    wu, wv = rng.dirichlet(np.ones(50)), rng.dirichlet(np.ones(70))
    ours = dv.wasserstein_1d(u, v, wu, wv, p=p)
    assert ours ** p == pytest.approx(ot.wasserstein_1d(u, v, wu, wv, p=p), rel=1e-9)  # POT gives W_p^p
    if p == 1:
        assert ours == pytest.approx(st.wasserstein_distance(u, v, wu, wv), rel=1e-10)


def test_wasserstein_1d_translation_and_bad_input():
    u = np.random.default_rng(0).normal(size=20)
    assert dv.wasserstein_1d(u, u + 0.7, p=2) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="u_weights must have shape"):
        dv.wasserstein_1d(u, u, np.full(10, 0.1))
    with pytest.raises(ValueError, match="v_weights must sum to 1"):
        dv.wasserstein_1d(u, u, None, np.full(20, 0.1))
    with pytest.raises(ValueError, match="p must be"):
        dv.wasserstein_1d(u, u, p=0.5)


# ------------------------------------------------------------------ parallel lines
def test_parallel_lines_closed_forms():
    assert dv.parallel_lines_divergences(0.0) == {"KL": 0.0, "JSD": 0.0, "TV": 0.0, "W": 0.0}
    assert dv.parallel_lines_divergences(-0.3) == {"KL": math.inf, "JSD": math.log(2), "TV": 1.0, "W": 0.3}


def test_parallel_lines_with_noise_match_gaussian_formulas():
    theta, sigma = 0.4, 0.2
    out = dv.parallel_lines_divergences(theta, noise_std=sigma)
    a, b = torch.distributions.Normal(0.0, sigma), torch.distributions.Normal(theta, sigma)
    assert out["KL"] == pytest.approx(torch.distributions.kl_divergence(a, b).item(), rel=1e-6)
    assert out["TV"] == pytest.approx(2 * st.norm.cdf(1.0) - 1)
    # JSD by Monte Carlo from its definition
    x = torch.cat([a.sample((200_000,)), b.sample((200_000,))])
    m = torch.logaddexp(a.log_prob(x), b.log_prob(x)) - math.log(2)
    lp = torch.cat([a.log_prob(x[:200_000]), b.log_prob(x[200_000:])])
    assert out["JSD"] == pytest.approx((lp - m).mean().item(), abs=3e-3)
    assert 0 < out["JSD"] < math.log(2) and out["W"] == theta


def test_parallel_line_samples_and_estimates():
    gen = torch.Generator().manual_seed(0)
    x = dv.sample_parallel_lines(0.0, 400, generator=gen)
    y = dv.sample_parallel_lines(0.5, 400, generator=gen)
    assert x.shape == (400, 2) and (x[:, 0] == 0).all() and (y[:, 0] == 0.5).all()
    assert 0 <= y[:, 1].min() and y[:, 1].max() <= 1
    est = dv.histogram_divergences(x, y, bins=(10, 5), bounds=[(-1, 1), (0, 1)])
    assert est["KL"] == est["KL_reverse"] == math.inf
    assert est["JSD"] == pytest.approx(math.log(2)) and est["TV"] == pytest.approx(1.0)
    w, _ = dv.point_cloud_wasserstein(x, y)
    assert w == pytest.approx(0.5, abs=0.03)  # horizontal move 0.5 plus a small vertical mismatch
    with pytest.raises(ValueError, match="noise_std"):
        dv.sample_parallel_lines(0.1, 10, noise_std=-1)


# ------------------------------------------------------------------ likelihood vs samples
def test_sample_gaussian_kde_and_noise_mixture():
    from dgmcourse.evaluation import gaussian_kde_log_density

    centers = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    s = dv.sample_gaussian_kde(centers, 0.0, 50, generator=torch.Generator().manual_seed(0))
    assert all(((s == c).all(1)).any() for c in centers)  # bandwidth 0 copies training points
    s = dv.sample_gaussian_kde(centers, 0.5, 20_000, generator=torch.Generator().manual_seed(0))
    near0 = s[s.norm(dim=1) < 5]
    assert near0.std(0).numpy() == pytest.approx([0.5, 0.5], rel=0.05)
    log_p = gaussian_kde_log_density(torch.randn(100, 2), centers, 1.0)
    log_p2 = dv.noise_mixture_log_likelihood(log_p, torch.zeros(100), weight=0.01)
    assert torch.allclose(log_p2, torch.log(0.01 * log_p.exp() + 0.99))
    assert (log_p2 >= log_p - math.log(100)).all()
    with pytest.raises(ValueError, match="weight"):
        dv.noise_mixture_log_likelihood(log_p, log_p, weight=0.0)


# ------------------------------------------------------------------ two-sample tests
def test_mmd2_unbiased_matches_sklearn_kernel():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 3)), rng.normal(0.5, 1, size=(40, 3))
    h = 1.3
    kxx, kyy, kxy = (rbf_kernel(a, b, gamma=1 / (2 * h ** 2)) for a, b in ((x, x), (y, y), (x, y)))
    expected = ((kxx.sum() - 30) / (30 * 29) + (kyy.sum() - 40) / (40 * 39) - 2 * kxy.mean())
    assert dv.mmd2_unbiased(x, y, bandwidth=h) == pytest.approx(expected, rel=1e-10)


# a tiny sample: 3 + 3 points give 15 pairwise distances, so the median is a single one
TINY_X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
TINY_Y = np.array([[3.0, 1.0], [4.0, 3.0], [2.5, 4.0]])


def _brute_force_mmd2(x, y, h):
    """MMD²_u of Gretton et al. (2012), Eq. 3, by explicit double sums with a Gaussian kernel."""
    k = lambda a, b: math.exp(-float(((a - b) ** 2).sum()) / (2 * h ** 2))  # noqa: E731
    n, m = len(x), len(y)
    return (sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
            + sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
            - 2 * sum(k(a, b) for a in x for b in y) / (n * m))


def test_mmd_permutation_statistic_is_brute_force_mmd2_with_median_bandwidth():
    pooled = np.concatenate([TINY_X, TINY_Y])
    h = float(np.median(cdist(pooled, pooled)[np.triu_indices(6, 1)]))
    result = dv.mmd_permutation_test(TINY_X, TINY_Y, permutations=10)
    assert result.statistic == pytest.approx(_brute_force_mmd2(TINY_X, TINY_Y, h), rel=1e-12)
    assert dv.mmd_permutation_test(TINY_X, TINY_Y, bandwidth=0.7, permutations=10).statistic == \
        pytest.approx(_brute_force_mmd2(TINY_X, TINY_Y, 0.7), rel=1e-12)
    statistic, p_value = result                      # the NamedTuple unpacks as a pair
    assert (statistic, p_value) == (result.statistic, result.p_value)


def test_mmd_permutation_p_value_approaches_the_exact_permutation_p_value():
    # all C(6, 3) = 20 relabellings: the observed split and its mirror image give the largest MMD²
    pooled = np.concatenate([TINY_X, TINY_Y])
    h = float(np.median(cdist(pooled, pooled)[np.triu_indices(6, 1)]))
    observed = _brute_force_mmd2(TINY_X, TINY_Y, h)
    splits = [list(c) for c in itertools.combinations(range(6), 3)]
    null = [_brute_force_mmd2(pooled[c], np.delete(pooled, c, axis=0), h) for c in splits]
    exact = np.mean(np.array(null) >= observed - 1e-12)
    assert exact == pytest.approx(2 / 20)
    p_value = dv.mmd_permutation_test(TINY_X, TINY_Y, permutations=2000, seed=1).p_value
    assert abs(p_value - exact) < 0.04              # Monte Carlo sd ~ 0.007
    assert p_value == dv.mmd_permutation_test(TINY_X, TINY_Y, permutations=2000, seed=1).p_value


def test_mmd_permutation_test_detects_shift():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(150, 2, generator=gen), torch.randn(150, 2, generator=gen)
    shifted = dv.mmd_permutation_test(x, y + 1.0, permutations=99)
    assert shifted.statistic > 0.1 and shifted.p_value == pytest.approx(0.01)  # 1 / (1 + 99)


def test_mmd_permutation_p_values_are_roughly_uniform_under_the_null():
    gen = torch.Generator().manual_seed(0)
    p_values = np.array([dv.mmd_permutation_test(torch.randn(20, 2, generator=gen), torch.randn(20, 2, generator=gen),
                                                 permutations=99, seed=s).p_value for s in range(40)])
    assert 0.3 < p_values.mean() < 0.7                # uniform: 0.5, sd of the mean ~ 0.05
    assert (p_values <= 0.05).mean() <= 0.2            # level 5%: expected 2 of 40 rejections


@pytest.mark.parametrize("kwargs, name", [
    (dict(x=np.zeros(5), y=np.zeros((5, 1))), "x"),
    (dict(x=np.zeros((5, 2)), y=np.zeros((5, 3))), "dimension"),
    (dict(x=np.zeros((1, 2)), y=np.ones((5, 2))), "at least 2"),
    (dict(x=TINY_X, y=TINY_Y, permutations=0), "permutations"),
    (dict(x=TINY_X, y=TINY_Y, permutations=2.5), "permutations"),
    (dict(x=TINY_X, y=TINY_Y, seed=-1), "seed"),
    (dict(x=TINY_X, y=TINY_Y, bandwidth=-1.0), "bandwidth"),
    (dict(x=np.zeros((4, 2)), y=np.zeros((4, 2))), "bandwidth"),  # median distance 0
])
def test_mmd_permutation_test_rejects_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        dv.mmd_permutation_test(**kwargs)


def test_mmd_permutation_test_options_are_keyword_only():
    with pytest.raises(TypeError):   # a positional 200 must not be read as the bandwidth
        dv.mmd_permutation_test(TINY_X, TINY_Y, 200)


def test_classifier_two_sample_test():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 2, generator=gen), torch.randn(200, 2, generator=gen)
    far = dv.classifier_two_sample_test(x, y + 3.0)
    assert far.statistic > 0.95
    assert far.p_value == pytest.approx(st.binomtest(round(far.statistic * 200), 200, 0.5,
                                                     alternative="greater").pvalue)
    assert far.p_value < 1e-20
    assert dv.classifier_two_sample_test(x, y).p_value > 0.05
    with pytest.raises(ValueError, match="same number of points"):
        dv.classifier_two_sample_test(x, y[:100])
    with pytest.raises(ValueError, match="same dimension"):
        dv.mmd2_unbiased(x, torch.randn(10, 3))
