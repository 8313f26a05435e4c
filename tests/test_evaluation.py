"""Tests of dgmcourse.evaluation against closed forms, scipy and scikit-learn."""

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
from sklearn.neighbors import KernelDensity, NearestNeighbors

from dgmcourse import evaluation as ev


# ----------------------------------------------------------------- class histogram and entropies

def test_class_histogram_from_labels_and_probs():
    labels = torch.tensor([0, 2, 2, 1, 2, 0])
    assert torch.allclose(ev.class_histogram(labels, num_classes=4),
                          torch.tensor([2, 1, 3, 0], dtype=torch.float64) / 6)
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.5, 0.1, 0.4]])
    assert torch.allclose(ev.class_histogram(probs), torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))
    assert torch.allclose(ev.class_histogram(probs, soft=True),
                          torch.tensor([1.5, 1.1, 1.4], dtype=torch.float64) / 4)


@pytest.mark.parametrize("bad, kwargs", [
    (torch.tensor([0, 3]), {"num_classes": 3}),
    (torch.tensor([-1, 0]), {}),
    (torch.tensor([0.5, 1.0]), {}),
    (torch.tensor([[0.5, 0.6]]), {}),
    (torch.zeros(2, 2, 2), {}),
    (torch.tensor([[0.5, 0.5]]), {"num_classes": 3}),
])
def test_class_histogram_rejects_bad_input(bad, kwargs):
    with pytest.raises(ValueError, match="probs_or_labels|num_classes"):
        ev.class_histogram(bad, **kwargs)


def test_collision_entropy_closed_forms():
    assert ev.collision_entropy(torch.full((10,), 0.1)).item() == pytest.approx(math.log(10))
    assert ev.collision_entropy(torch.tensor([1.0, 0.0, 0.0])).item() == pytest.approx(0.0)
    p = torch.tensor([0.5, 0.25, 0.25])
    assert ev.collision_entropy(p).item() == pytest.approx(-math.log(0.25 + 2 * 0.0625))


def test_renyi_entropy_limits_and_monotonicity():
    p = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    assert ev.renyi_entropy(p, 1).item() == pytest.approx(scipy.stats.entropy(p.numpy()))
    assert ev.renyi_entropy(p, 1 + 1e-6).item() == pytest.approx(scipy.stats.entropy(p.numpy()), rel=1e-5)
    assert ev.renyi_entropy(p, 0).item() == pytest.approx(math.log(3))
    assert ev.renyi_entropy(p, float("inf")).item() == pytest.approx(-math.log(0.6))
    assert ev.renyi_entropy(p, 2).item() == pytest.approx(ev.collision_entropy(p).item())
    values = [ev.renyi_entropy(p, a).item() for a in (0, 0.5, 1, 2, 5, float("inf"))]
    assert all(a > b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("bad", [torch.tensor([0.5, 0.6]), torch.tensor([-0.1, 1.1]), torch.ones(2, 2) / 4])
def test_entropies_reject_non_distributions(bad):
    with pytest.raises(ValueError, match="p must"):
        ev.collision_entropy(bad)
    with pytest.raises(ValueError, match="alpha"):
        ev.renyi_entropy(torch.tensor([0.5, 0.5]), -1)


def test_confidence():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    assert torch.allclose(ev.confidence(probs), torch.tensor([0.7, 0.6]))
    with pytest.raises(ValueError, match="probs"):
        ev.confidence(torch.tensor([0.7, 0.3]))


# ----------------------------------------------------------------- memorisation

def test_nearest_neighbours_matches_sklearn():
    gen = torch.Generator().manual_seed(0)
    ref, queries = torch.rand(50, 1, 4, 4, generator=gen), torch.rand(13, 1, 4, 4, generator=gen)
    dist, idx = ev.nearest_neighbours(queries, ref, batch_size=5)
    sk_dist, sk_idx = NearestNeighbors(n_neighbors=1).fit(ref.reshape(50, -1)).kneighbors(queries.reshape(13, -1))
    assert torch.equal(idx, torch.as_tensor(sk_idx[:, 0]))
    np.testing.assert_allclose(dist.numpy(), sk_dist[:, 0], rtol=1e-5)
    with pytest.raises(ValueError, match="features"):
        ev.nearest_neighbours(queries, torch.rand(5, 3))


def test_memorisation_check_detects_copies():
    gen = torch.Generator().manual_seed(1)
    data = torch.rand(400, 1, 6, 6, generator=gen)
    train, held_out, fresh = data[:200], data[200:300], data[300:]
    copies = train[:100] + 0.01 * torch.randn(100, 1, 6, 6, generator=gen)
    copied = ev.memorisation_check(copies, train, held_out)
    assert copied.ratio < 0.1 and copied.fraction_closer == 1.0
    assert torch.equal(copied.nearest_index, torch.arange(100))
    honest = ev.memorisation_check(fresh, train, held_out)
    assert 0.8 < honest.ratio < 1.25 and honest.fraction_closer < 0.2
    assert honest.generated.shape == (100,) and honest.baseline.shape == (100,)


# ----------------------------------------------------------------- Fréchet distance

def _random_spd(d, rng):
    a = rng.standard_normal((d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    s1, s2 = _random_spd(5, rng), _random_spd(5, rng)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert ev.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_closed_forms():
    # commuting (diagonal) covariances: ||mu1-mu2||^2 + sum (sigma1 - sigma2)^2
    assert ev.frechet_distance([0, 0], np.diag([4.0, 1.0]), [3, 4], np.diag([1.0, 9.0])) == pytest.approx(
        25 + (2 - 1) ** 2 + (1 - 3) ** 2)
    s = _random_spd(4, np.random.default_rng(3))
    assert ev.frechet_distance(np.zeros(4), s, np.zeros(4), s) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="sigma2"):
        ev.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))
    with pytest.raises(ValueError, match="symmetric"):
        ev.frechet_distance(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2))


def test_gaussian_statistics_and_feature_distance():
    gen = torch.Generator().manual_seed(2)
    f = torch.randn(300, 3, generator=gen)
    mu, sigma = ev.gaussian_statistics(f)
    np.testing.assert_allclose(mu, f.double().mean(0).numpy(), atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f.double().numpy(), rowvar=False), atol=1e-12)
    with pytest.raises(ValueError, match="features"):
        ev.gaussian_statistics(torch.randn(1, 3))


class _LinearFeatures(torch.nn.Module):
    """A stand-in classifier whose features are the mean intensity of the top and bottom halves."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def features(self, x):
        return torch.stack([x[:, 0, :14].mean((1, 2)), x[:, 0, 14:].mean((1, 2))], 1)


def test_classifier_frechet_distance_uses_feature_gaussians():
    gen = torch.Generator().manual_seed(4)
    x_a, x_b = torch.rand(64, 1, 28, 28, generator=gen), torch.rand(64, 1, 28, 28, generator=gen) * 0.5
    model = _LinearFeatures()
    fa, fb = model.features(x_a), model.features(x_b)
    expected = ev.frechet_distance(*ev.gaussian_statistics(fa), *ev.gaussian_statistics(fb))
    assert ev.classifier_frechet_distance(x_a, x_b, model=model, batch_size=10) == pytest.approx(expected)
    assert expected > 0.05  # mean intensity halves: (0.5 - 0.25)^2 * 2 = 0.125 from the means
    with pytest.raises(ValueError, match="x_b"):
        ev.classifier_frechet_distance(x_a, torch.rand(4, 784), model=model)


# ----------------------------------------------------------------- log-likelihoods

def test_gaussian_kde_matches_sklearn():
    gen = torch.Generator().manual_seed(5)
    train, x = torch.rand(60, 7, generator=gen), torch.rand(9, 7, generator=gen)
    ours = ev.gaussian_kde_log_density(x, train, bandwidth=0.3, batch_size=4)
    ref = KernelDensity(kernel="gaussian", bandwidth=0.3).fit(train.double().numpy()).score_samples(x.double().numpy())
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-8)
    with pytest.raises(ValueError, match="bandwidth"):
        ev.gaussian_kde_log_density(x, train, bandwidth=0.0)


def test_bernoulli_kde_is_a_normalised_pmf():
    train = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.float32)
    all_images = torch.tensor(list(itertools.product([0, 1], repeat=4)), dtype=torch.float32)
    log_p = ev.bernoulli_kde_log_likelihood(all_images, train, flip=0.1)
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    # a training image itself: 1/3 (0.9^4 + 0.1^2 0.9^2 + 0.1^3 0.9) for [0,1,1,0]
    expected = math.log((0.9 ** 4 + 0.1 ** 2 * 0.9 ** 2 + 0.1 ** 3 * 0.9) / 3)
    assert ev.bernoulli_kde_log_likelihood(train[:1], train, flip=0.1).item() == pytest.approx(expected)
    # flip = 1/2 is the uniform distribution: exactly 1 bit per dimension
    assert torch.allclose(ev.bits_per_dim(ev.bernoulli_kde_log_likelihood(all_images, train, 0.5), 4),
                          torch.ones(16, dtype=torch.float64))
    with pytest.raises(ValueError, match="binary"):
        ev.bernoulli_kde_log_likelihood(all_images * 0.5, train, 0.1)
    with pytest.raises(ValueError, match="flip"):
        ev.bernoulli_kde_log_likelihood(all_images, train, 0.7)


def test_bits_per_dim():
    assert ev.bits_per_dim(torch.tensor([-784 * math.log(2)]), 784).item() == pytest.approx(1.0)
    assert ev.bits_per_dim(torch.tensor(-10.0), 5).item() == pytest.approx(2 / math.log(2))
    with pytest.raises(ValueError, match="num_dims"):
        ev.bits_per_dim(torch.tensor(-1.0), 0)


# ----------------------------------------------------------------- precision, recall, density, coverage

def _prdc_reference(real, fake, k):
    """prdc's compute_prdc (the reference code of Naeem et al. 2020) on float64 arrays, as floats."""
    from prdc import compute_prdc

    result = compute_prdc(np.asarray(real, np.float64), np.asarray(fake, np.float64), nearest_k=k)
    return {key: float(value) for key, value in result.items()}


@pytest.mark.parametrize("n, m, d, k", [(50, 40, 3, 1), (200, 150, 10, 5), (120, 300, 64, 3), (30, 30, 2, 28)])
def test_prdc_matches_the_prdc_package(n, m, d, k):
    rng = np.random.default_rng(n + m + d + k)
    real, fake = rng.standard_normal((n, d)), 0.3 + 1.2 * rng.standard_normal((m, d))
    ours = ev.precision_recall_density_coverage(torch.as_tensor(real), fake, k=k)
    reference = _prdc_reference(real, fake, k)
    assert ours.keys() == reference.keys() == {"precision", "recall", "density", "coverage"}
    for key in ours:
        assert ours[key] == pytest.approx(reference[key], abs=1e-12), key
    assert any(0 < value < 1 for value in ours.values())  # shifted, wider fakes: not a trivial case


def test_prdc_by_hand_in_one_dimension():
    """Real 0, 1, 2, 3, 10 and fake 0.5, 1, 8, 20 on a line, k = 1.

    Real radii (distance to the nearest other real point): 1, 1, 1, 1, 7, so the open real balls are
    (-1, 1), (0, 2), (1, 3), (2, 4), (3, 17). Fake 0.5 lies in 2 of them, fake 1 in 1 (it is on the
    spheres of the balls around 0 and 2, which do not count), fake 8 in 1 (only the outlier's big ball)
    and fake 20 in none: precision 3/4, density (2 + 1 + 1 + 0) / (1 * 4) = 1. The balls around 0, 1 and
    10 hold a fake point, those around 2 and 3 do not: coverage 3/5.
    Fake radii: 0.5, 0.5, 7, 12, balls (0, 1), (0.5, 1.5), (1, 15), (8, 32): every real point but 0
    (on the sphere of the first) lies in one, recall 4/5. Closed balls would give recall 1, coverage
    4/5 and density 6/4.
    """
    real, fake = torch.tensor([[0.0], [1], [2], [3], [10]]), torch.tensor([[0.5], [1], [8], [20]])
    expected = {"precision": 3 / 4, "recall": 4 / 5, "density": 1.0, "coverage": 3 / 5}
    assert ev.precision_recall_density_coverage(real, fake, k=1) == expected
    assert _prdc_reference(real, fake, 1) == pytest.approx(expected, abs=1e-12)


K_MODES = 8
_ANGLES = torch.arange(K_MODES, dtype=torch.float64) * 2 * math.pi / K_MODES
MODE_CENTRES = 10 * torch.stack([_ANGLES.cos(), _ANGLES.sin()], 1)  # neighbours 7.7 apart, 15 standard deviations


def _mixture(modes, per_mode, gen):
    """``per_mode`` points from each of the given modes: Gaussians with standard deviation 0.5 around
    ``MODE_CENTRES``. Equal counts, so mode masses are exact and only the positions are random."""
    centres = MODE_CENTRES[modes].repeat_interleave(per_mode, 0)
    return centres + 0.5 * torch.randn(len(centres), 2, generator=gen, dtype=torch.float64)


def test_prdc_of_a_matching_generator_are_about_one():
    """Fake drawn like the real data (1,000 points each, k = 5): over 60 seeds precision and recall averaged
    0.987 (standard deviation 0.005), density 1.00 (0.02, its expectation is exactly 1, Naeem et al. 2020)
    and coverage 0.972 (0.008); the bounds are at least 4 standard deviations away."""
    gen = torch.Generator().manual_seed(0)
    real, fake = _mixture(torch.arange(K_MODES), 125, gen), _mixture(torch.arange(K_MODES), 125, gen)
    scores = ev.precision_recall_density_coverage(real, fake, k=5)
    assert scores["precision"] > 0.95 and scores["recall"] > 0.95 and scores["coverage"] > 0.93
    assert scores["density"] == pytest.approx(1.0, abs=0.1)


def test_prdc_of_a_mode_dropping_generator_lose_diversity_only():
    """Real: 125 points on each of 8 tight, well-separated modes. Fake: 250 points on each of the first 4
    only. Every fake sample is realistic (precision about 1, density about 1: locally fake looks like real),
    but no fake ball reaches the 4 dropped modes, so recall and coverage are at most 1/2. Over 60 seeds:
    precision 0.988 (sd 0.005), density 1.00 (0.02), recall 0.496 (0.002), coverage 0.498 (0.002)."""
    gen = torch.Generator().manual_seed(1)
    real, fake = _mixture(torch.arange(K_MODES), 125, gen), _mixture(torch.arange(K_MODES // 2), 250, gen)
    scores = ev.precision_recall_density_coverage(real, fake, k=5)
    assert scores["precision"] > 0.95
    assert scores["density"] == pytest.approx(1.0, abs=0.1)
    assert 0.46 < scores["recall"] <= 0.5 and 0.46 < scores["coverage"] <= 0.5


def test_prdc_of_off_mode_samples_lose_fidelity_only():
    """Fake: like the real data (125 points a mode) plus a fraction f = 1/5 of samples far off every mode
    (250 points of a unit Gaussian at the centre, 10 from each mode). The stray samples lie in no real ball,
    so precision and density fall to about 1 - f = 0.8 (times the 0.99 of a matching generator); recall
    and coverage stay about 1. Over 60 seeds: precision 0.790 (sd 0.003), density 0.80 (0.014), recall
    0.987 (0.004), coverage 0.972 (0.008)."""
    gen = torch.Generator().manual_seed(2)
    real = _mixture(torch.arange(K_MODES), 125, gen)
    strays = torch.randn(250, 2, generator=gen, dtype=torch.float64)
    fake = torch.cat([_mixture(torch.arange(K_MODES), 125, gen), strays])
    scores = ev.precision_recall_density_coverage(real, fake, k=5)
    assert scores["precision"] == pytest.approx(0.8, abs=0.04)
    assert scores["density"] == pytest.approx(0.8, abs=0.1)
    assert scores["recall"] > 0.95 and scores["coverage"] > 0.93


@pytest.mark.parametrize("real, fake, k, match", [
    (torch.zeros(10), torch.zeros(10, 1), 1, "real_features"),
    (torch.zeros(0, 3), torch.zeros(10, 3), 1, "real_features"),
    (torch.rand(10, 3), torch.rand(10, 3, 1), 1, "fake_features"),
    (torch.rand(10, 3), torch.rand(10, 2), 1, "d=3.*d=2"),
    (torch.rand(10, 3), torch.tensor([[0.0, 1, float("nan")]] * 10), 1, "fake_features must be finite"),
    (torch.tensor([[float("inf")]] * 10), torch.rand(10, 1), 1, "real_features must be finite"),
    (torch.rand(10, 3), torch.rand(10, 3), 0, "k must be a positive integer"),
    (torch.rand(10, 3), torch.rand(10, 3), 2.0, "k must be a positive integer"),
    (torch.rand(10, 3), torch.rand(10, 3), True, "k must be a positive integer"),
    (torch.rand(10, 3), torch.rand(4, 3), 4, "more than k points"),
    (torch.rand(3, 3), torch.rand(10, 3), 3, "more than k points"),
])
def test_prdc_rejects_bad_input(real, fake, k, match):
    with pytest.raises(ValueError, match=match):
        ev.precision_recall_density_coverage(real, fake, k=k)


def test_classifier_prdc_scores_the_classifier_features(monkeypatch):
    """On embedded MNIST digits, through a seeded (untrained: it trains in seconds, not here) course classifier:
    the wrapper is the plain function on ``model.features``, in eval mode, restores the model's mode, and
    loads ``load_classifier()`` when no model is given. Real against itself: every point is in its own ball."""
    from dgmcourse import classifier
    from dgmcourse.data import load_mnist

    torch.manual_seed(0)
    model = classifier.MNISTClassifier().train()
    x, _ = load_mnist("test", source="embedded")
    x_real, x_fake = x[:60], x[60:110]
    with torch.no_grad():
        expected = ev.precision_recall_density_coverage(model.eval().features(x_real), model.features(x_fake), k=3)
    model.train()
    assert ev.classifier_precision_recall_density_coverage(x_real, x_fake, model=model, k=3) == expected
    assert model.training
    assert 0 < expected["precision"] < 1 and 0 < expected["recall"] < 1  # two different sets of digits
    itself = ev.classifier_precision_recall_density_coverage(x_real, x_real, model=model, k=3)
    assert itself["precision"] == itself["recall"] == itself["coverage"] == 1.0
    monkeypatch.setattr(classifier, "load_classifier", lambda: model)
    assert ev.classifier_precision_recall_density_coverage(x_real, x_fake, k=3) == expected
    with pytest.raises(ValueError, match="x_fake"):
        ev.classifier_precision_recall_density_coverage(x_real, x_fake.flatten(1), model=model)
