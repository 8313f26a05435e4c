"""Tests of dgmcourse.disentanglement: the entangling map of Locatello et al. 2019 and the six metrics,
on closed forms and known cases."""

import numpy as np
import pytest
import scipy.stats as st
import torch
from sklearn.metrics import mutual_info_score

from dgmcourse import disentanglement as D
from dgmcourse import divergences as dv

SIZES = (3, 4, 5, 6)


def sample_factors(n, rng):
    return np.stack([rng.integers(0, s, n) for s in SIZES], axis=1)


def identity(factors, rng):
    return factors.astype(float)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def data(rng):
    codes, factors = D.sample_codes(sample_factors, identity, 2000, rng)
    codes_test, factors_test = D.sample_codes(sample_factors, identity, 1000, rng)
    return codes, factors, codes_test, factors_test


MARGINALS = [st.expon(), st.gamma(2.0), st.beta(2.0, 3.0)]


def test_random_orthogonal(rng):
    A = D.random_orthogonal(4, rng)
    np.testing.assert_allclose(A.T @ A, np.eye(4), atol=1e-12)
    assert np.abs(A).min() >= 1e-2


def test_entangle_is_rotation_for_standard_normal(rng):
    A = D.random_orthogonal(3, rng)
    z = torch.randn(100, 3, dtype=torch.float64)
    torch.testing.assert_close(D.entangle(z, A, st.norm()), z @ torch.as_tensor(A).T)


def test_entangle_bijection_round_trip(rng):
    A = D.random_orthogonal(3, rng)
    z = torch.as_tensor(np.stack([m.rvs(500, random_state=i) for i, m in enumerate(MARGINALS)], 1))
    x = D.entangle(z, A, MARGINALS)
    torch.testing.assert_close(D.entangle(x, A.T, MARGINALS), z, rtol=1e-8, atol=1e-10)
    assert (x[:, 0] > 0).all() and (x[:, 2] > 0).all() and (x[:, 2] < 1).all()  # stays in supp(z)


def test_entangle_preserves_distribution(rng):
    A = D.random_orthogonal(3, rng)
    z = np.stack([m.rvs(3000, random_state=i) for i, m in enumerate(MARGINALS)], 1)
    x = D.entangle(torch.as_tensor(z), A, MARGINALS).numpy()
    for i, m in enumerate(MARGINALS):              # every marginal is unchanged (KS test) ...
        assert st.kstest(x[:, i], m.cdf).pvalue > 1e-3
    fresh = np.stack([m.rvs(300, random_state=10 + i) for i, m in enumerate(MARGINALS)], 1)
    assert D.mmd_permutation_test(x[:300], fresh, permutations=100).p_value > 0.01   # ... and so is the joint
    # ... whereas a correlated sample with the same marginals is rejected
    corr = st.norm.cdf(rng.standard_normal((300, 1)) * np.ones((1, 3)) + 0.3 * rng.standard_normal((300, 3)))
    copula = np.stack([m.ppf(st.norm.cdf(st.norm.ppf(corr[:, i]))) for i, m in enumerate(MARGINALS)], 1)
    assert D.mmd_permutation_test(copula, fresh, permutations=100).p_value < 0.02


def test_entangle_jacobian_dense_and_correct(rng):
    A = D.random_orthogonal(3, rng)
    z = torch.as_tensor([0.7, 1.9, 0.3], dtype=torch.float64)
    J = torch.func.jacrev(lambda v: D.entangle(v, A, MARGINALS))(z)
    assert (J.abs() > 1e-6).all()
    eps = 1e-6                                            # central finite differences
    fd = torch.stack([(D.entangle(z + eps * e, A, MARGINALS) - D.entangle(z - eps * e, A, MARGINALS)) / (2 * eps)
                      for e in torch.eye(3, dtype=torch.float64)], 1)
    torch.testing.assert_close(J, fd, rtol=1e-5, atol=1e-7)


def test_mmd_test_is_the_one_of_divergences():
    assert D.mmd_permutation_test is dv.mmd_permutation_test   # re-exported, not a second kernel


def test_identity_scores_high_on_every_metric(rng, data):
    codes, factors, codes_test, factors_test = data
    assert D.beta_vae_score(sample_factors, identity, rng, num_train=300, num_eval=200)["eval_accuracy"] >= 0.9
    assert D.factor_vae_score(sample_factors, identity, rng, num_train=300, num_eval=200,
                              num_variance_estimate=1000)["eval_accuracy"] >= 0.9
    assert D.mig(codes, factors) >= 0.9
    scores = D.dci(codes, factors, codes_test, factors_test)
    assert min(scores["disentanglement"], scores["completeness"], scores["informativeness_test"]) >= 0.9
    assert D.modularity(codes, factors) >= 0.9
    assert D.explicitness(codes, factors, codes_test, factors_test)["explicitness_test"] >= 0.9
    assert D.sap(codes, factors, codes_test, factors_test, continuous_factors=True) >= 0.9


def test_discrete_sap_is_capped_by_chance(rng):
    # binary balanced factors: the identity code is perfect, the best other code is at chance 1/2
    factors = rng.integers(0, 2, (3, 4000))
    score = D.sap(factors[:, :2000], factors[:, :2000], factors[:, 2000:], factors[:, 2000:])
    assert score == pytest.approx(0.5, abs=0.05)


def test_dci_duplicated_code_completeness():
    # 5 factors, 10 codes: each factor is captured equally by two codes
    R = np.repeat(np.eye(5), 2, axis=0)
    disentanglement, completeness = D.dci_from_importance(R)
    assert completeness == pytest.approx(1 - np.log(2) / np.log(10), abs=1e-8)
    assert disentanglement == pytest.approx(1.0, abs=1e-8)


def test_dci_duplicated_code_end_to_end(rng):
    factors = rng.integers(0, 4, (5, 1500))
    codes = np.repeat(factors, 2, axis=0).astype(float)
    scores = D.dci(codes[:, :1000], factors[:, :1000], codes[:, 1000:], factors[:, 1000:])
    assert scores["completeness"] == pytest.approx(1 - np.log(2) / np.log(10), abs=0.03)


def test_dci_importance_matches_sklearn(data):
    from sklearn.ensemble import GradientBoostingClassifier
    codes, factors, codes_test, factors_test = data
    scores = D.dci(codes, factors, codes_test, factors_test)
    ref = GradientBoostingClassifier(random_state=0).fit(codes.T, factors[2]).feature_importances_
    np.testing.assert_allclose(scores["importance"][:, 2], ref)


def test_modularity_one_code_for_two_factors(rng):
    factors = rng.integers(0, 2, (10, 20000))
    codes = factors[0::2] * 2 + factors[1::2]              # code i encodes factors 2i and 2i+1
    assert D.modularity(codes.astype(float), factors) == pytest.approx(1 - 1 / 9, abs=0.01)
    mi = np.zeros((5, 10))
    mi[np.arange(5), 2 * np.arange(5)] = mi[np.arange(5), 2 * np.arange(5) + 1] = np.log(2)
    assert D.modularity_from_mi(mi) == pytest.approx(1 - 1 / 9)


def test_random_codes_have_zero_mig(rng):
    factors = rng.integers(0, 5, (4, 10000))
    assert D.mig(rng.standard_normal((6, 10000)), factors) == pytest.approx(0.0, abs=0.01)


def test_mutual_information_and_mig_against_closed_form(rng):
    factors = rng.integers(0, 4, (2, 5000))
    codes = np.stack([factors[0], factors[0] // 2, factors[1]]).astype(float)
    mi = D.mutual_information_matrix(D.histogram_discretize(codes), factors)
    assert mi[0, 0] == pytest.approx(mutual_info_score(factors[0], factors[0]))
    h0, h1 = mutual_info_score(factors[0], factors[0]), mutual_info_score(factors[1], factors[1])
    # factor 0: gap I(z0) - I(z1) = H - H(f // 2) ~ ln 4 - ln 2; factor 1: gap ~ H
    expected = ((h0 - mutual_info_score(factors[0], factors[0] // 2)) / h0 + (h1 - mi[:2, 1].max()) / h1) / 2
    assert D.mig(codes, factors) == pytest.approx(expected)
    assert D.mig(codes, factors) == pytest.approx(0.75, abs=0.02)


def test_entangled_perfect_code_collapses_mig(rng):
    factors = sample_factors(5000, rng)
    z = D.gaussian_codes(factors, SIZES, rng)
    A = D.random_orthogonal(4, rng)
    entangled = D.entangle(torch.as_tensor(z), A, st.norm()).numpy()
    assert D.mig(z.T, factors.T) > 0.5 > D.mig(entangled.T, factors.T)
    assert st.kstest(entangled[:, 0], "norm").pvalue > 1e-3


def test_table_representation_and_all_factors(rng):
    grid = D.all_factors(SIZES)
    assert grid.shape == (np.prod(SIZES), 4)
    np.testing.assert_array_equal(np.ravel_multi_index(tuple(grid.T), SIZES), np.arange(len(grid)))
    represent = D.table_representation(grid * 10.0, SIZES)
    f = sample_factors(7, rng)
    np.testing.assert_array_equal(represent(f, rng), f * 10.0)


def test_bad_input_raises(rng, data):
    codes, factors, codes_test, factors_test = data
    with pytest.raises(ValueError, match="same N"):
        D.mig(codes[:, :10], factors)
    with pytest.raises(ValueError, match="factors"):
        D.mig(codes, factors.astype(float))
    with pytest.raises(ValueError, match="factors"):
        D.modularity(codes, -factors)
    with pytest.raises(ValueError, match="A must be orthogonal"):
        D.entangle(torch.zeros(2, 2, dtype=torch.float64), np.ones((2, 2)), st.norm())
    with pytest.raises(ValueError, match="marginals"):
        D.entangle(torch.zeros(2, 2, dtype=torch.float64), np.eye(2), st.poisson(2.0))
    with pytest.raises(ValueError, match="codes_test"):
        D.dci(codes, factors, codes_test[:, :5], factors_test)


class _DropoutEncoder(torch.nn.Module):
    """encode(x) = (dropout(W x), 0): deterministic only in eval mode; records the mode it ran in."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2, bias=False)
        self.dropout = torch.nn.Dropout(0.5)
        self.modes = []

    def encode(self, x):
        if x.shape[1:] != (4,):
            raise ValueError(f"x must have shape (n, 4), got {tuple(x.shape)}")
        self.modes.append(self.training)
        mu = self.dropout(self.linear(x))
        return mu, torch.zeros_like(mu)


@pytest.mark.parametrize("training", [True, False])
def test_mean_representation_uses_eval_mode_and_restores_the_mode(training, rng):
    torch.manual_seed(0)
    model = _DropoutEncoder().train(training)
    x = rng.standard_normal((7, 4)).astype(np.float32)
    codes = D.mean_representation(model, x, batch_size=3)
    expected = x.astype(np.float64) @ model.linear.weight.detach().double().numpy().T   # no dropout
    np.testing.assert_allclose(codes, expected, rtol=1e-5, atol=1e-6)   # float32 encoder: atol for outputs near 0
    assert codes.dtype == np.float64 and model.modes == [False] * 3   # 3 chunks, all in eval mode
    assert model.training is training and model.dropout.training is training
    with pytest.raises(ValueError, match="x"):
        D.mean_representation(model, x[:, :3])
    assert model.training is training and model.dropout.training is training


def test_save_and_load_beta_vae_round_trip(tmp_path):
    from dgmcourse.vae import MLPVAE
    torch.manual_seed(0)
    model = MLPVAE(x_shape=(1, 4, 4), z_dim=2, hidden=8).train()
    info = {"model": {"x_shape": [1, 4, 4], "z_dim": 2, "hidden": 8}, "training": {"beta": 4.0, "seed": 1}}
    path = D.save_beta_vae(model, info, tmp_path / "w" / "vae.pt")
    loaded, loaded_info = D.load_beta_vae(path)
    assert loaded_info == info and not loaded.training and path.stat().st_size < 10_000
    for name, value in model.state_dict().items():     # half precision: the float16 rounding of each weight
        torch.testing.assert_close(loaded.state_dict()[name], value.half().float(), rtol=0, atol=0)
    x = torch.rand(5, 1, 4, 4)
    torch.testing.assert_close(loaded.encode(x)[0], model.eval().encode(x)[0], rtol=1e-2, atol=1e-3)


def test_save_and_load_beta_vae_bad_input(tmp_path):
    from dgmcourse.vae import MLPVAE
    model = MLPVAE(x_shape=(1, 4, 4), z_dim=2, hidden=8)
    with pytest.raises(ValueError, match="MLPVAE"):
        D.save_beta_vae(torch.nn.Linear(2, 2), {"model": {}}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match="info"):
        D.save_beta_vae(model, {}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match="info"):
        D.save_beta_vae(model, {"model": {"x_shape": [1, 4, 4], "z_dim": 3, "hidden": 8}}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match="no beta-VAE weights"):
        D.load_beta_vae(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a file written by save_beta_vae"):
        D.load_beta_vae(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a file written by save_beta_vae"):
        D.load_beta_vae(tmp_path / "other.pt")


def test_shipped_beta_vae_reproduces_its_recorded_mig():
    """The weights lecture 5 loads are the sweep's best model: re-encoding the data with the half-precision
    weights gives the MIG recorded by benchmarks/disentanglement.py (same points: rng 100 + seed)."""
    from dgmcourse.data import DSprites
    model, info = D.load_beta_vae()
    assert len(info["sweep"]) >= 12
    assert info["metrics"]["MIG"] == max(row["metrics"]["MIG"] for row in info["sweep"])
    data = DSprites(**info["data"])
    x_all = data.sample_observations_from_factors(D.all_factors(data.factor_sizes), np.random.default_rng(0))
    represent = D.table_representation(D.mean_representation(model, x_all), data.factor_sizes)
    codes, factors = D.sample_codes(data.sample_factors, represent, 10000,
                                    np.random.default_rng(100 + info["training"]["seed"]))
    assert D.mig(codes, factors) == pytest.approx(info["metrics"]["MIG"], abs=0.01)
