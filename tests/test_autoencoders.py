"""Tests of dgmcourse.autoencoders against scikit-learn, scipy and closed forms."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.decomposition import PCA

from dgmcourse import autoencoders as ae


def _low_rank_data(n=300, d=12, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.array([5.0, 3.0, 2.0, 1.0] + [0.3] * (d - 4))
    return torch.as_tensor(rng.standard_normal((n, d)) * scales @ scipy.linalg.qr(rng.standard_normal((d, d)))[0])


def test_pca_matches_sklearn_subspace_and_eigenvalues():
    x = _low_rank_data()
    mean, components, eigenvalues = ae.pca(x, 3)
    ref = PCA(n_components=3).fit(x.numpy())
    assert ae.subspace_distance(components, torch.as_tensor(ref.components_)) < 1e-8
    n = len(x)
    np.testing.assert_allclose(eigenvalues[:3].numpy(), ref.explained_variance_ * (n - 1) / n, rtol=1e-10)
    np.testing.assert_allclose(mean.numpy(), ref.mean_, atol=1e-12)
    assert torch.allclose(components @ components.T, torch.eye(3, dtype=torch.float64), atol=1e-10)


def test_pca_reconstruction_error_is_sum_of_discarded_eigenvalues():
    x = _low_rank_data(seed=1)
    for k in (1, 4, 11):
        mean, components, eigenvalues = ae.pca(x, k)
        err = (ae.pca_reconstruct(x, mean, components) - x).pow(2).sum(1).mean()
        assert err.item() == pytest.approx(eigenvalues[k:].sum().item(), rel=1e-9)
    with pytest.raises(ValueError, match="k must"):
        ae.pca(x, 13)


def test_subspace_distance_against_principal_angles():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((3, 8)), rng.standard_normal((3, 8))
    angles = scipy.linalg.subspace_angles(a.T, b.T)
    assert ae.subspace_distance(a, b) == pytest.approx(math.sqrt(np.sum(np.sin(angles) ** 2)), rel=1e-9)
    assert ae.subspace_distance(a, 2 * a[::-1]) == pytest.approx(0.0, abs=1e-9)
    assert ae.subspace_distance(np.eye(4)[:2], np.eye(4)[2:]) == pytest.approx(math.sqrt(2))


def test_linear_autoencoder_learns_the_pca_subspace():
    x = _low_rank_data(n=400, d=8, seed=3).float()
    model = ae.Autoencoder(x_shape=(8,), code_dim=2, hidden=0)
    ae.train_autoencoder(model, x, epochs=150, batch_size=100, lr=2e-2, device=torch.device("cpu"), progress=False)
    mean, components, eigenvalues = ae.pca(x, 2)
    decoder_weight = model.decoder[0].weight.detach().T  # (code_dim, D): its rows span the decoded subspace
    assert ae.subspace_distance(decoder_weight, components) < 0.05
    assert ae.reconstruction_error(model, x) == pytest.approx(eigenvalues[2:].sum().item(), rel=0.02)


def test_contractive_penalty_closed_form_for_sigmoid_layer():
    """For h = sigmoid(W x + b): ||J||_F^2 = sum_j (h_j (1 - h_j))^2 sum_i W_ji^2 (Rifai et al. 2011, Eq. 6)."""
    torch.manual_seed(0)
    model = ae.Autoencoder(x_shape=(1, 3, 3), code_dim=4, hidden=0, code_activation="sigmoid")
    x = torch.rand(5, 1, 3, 3)
    penalty = ae.contractive_penalty(model.encoder, x)
    w = model.encoder[1].weight
    h = model.encode(x)
    expected = ((h * (1 - h)) ** 2 * w.pow(2).sum(1)).sum(1)
    assert torch.allclose(penalty, expected, rtol=1e-5)


def test_contractive_penalty_matches_autograd_jacobian_and_is_differentiable():
    torch.manual_seed(1)
    model = ae.Autoencoder(x_shape=(6,), code_dim=3, hidden=5)
    x = torch.randn(4, 6)
    penalty = ae.contractive_penalty(model.encoder, x)
    for b in range(4):
        jac = torch.autograd.functional.jacobian(lambda v: model.encoder(v.unsqueeze(0)).squeeze(0), x[b])
        assert penalty[b].item() == pytest.approx(jac.pow(2).sum().item(), rel=1e-5)
    penalty.sum().backward()
    assert model.encoder[1].weight.grad.abs().sum() > 0


def test_corrupt_statistics_and_errors():
    gen = torch.Generator().manual_seed(0)
    x = torch.full((200, 50), 0.5)
    assert (ae.corrupt(x, "gaussian", 0.2, gen) - x).std().item() == pytest.approx(0.2, rel=0.03)
    masked = ae.corrupt(x, "masking", 0.3, gen)
    assert (masked == 0).float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert set(masked.unique().tolist()) == {0.0, 0.5}
    sp = ae.corrupt(x, "salt_pepper", 0.4, gen)
    assert (sp == 1).float().mean().item() == pytest.approx(0.2, abs=0.02)
    with pytest.raises(ValueError, match="kind"):
        ae.corrupt(x, "blur")
    with pytest.raises(ValueError, match="level"):
        ae.corrupt(x, "masking", 1.5)


def test_denoising_autoencoder_removes_noise():
    torch.manual_seed(0)
    x = _low_rank_data(n=400, d=8, seed=4).float() / 5
    model = ae.Autoencoder(x_shape=(8,), code_dim=3, hidden=32)
    ae.train_autoencoder(model, x, epochs=60, batch_size=100, lr=1e-2, noise="gaussian", noise_level=0.3,
                         device=torch.device("cpu"), progress=False)
    noisy = ae.corrupt(x, "gaussian", 0.3, torch.Generator().manual_seed(1))
    with torch.no_grad():
        denoised = model(noisy)
    assert (denoised - x).pow(2).sum(1).mean() < 0.6 * (noisy - x).pow(2).sum(1).mean()


def _gaussian_posterior_denoiser(mu, tau, s):
    """Data N(mu, tau^2), x~ = x + s * eps: P(x|x~) = N(mu + k (x~ - mu), k s^2), k = tau^2 / (tau^2 + s^2)."""
    k = tau**2 / (tau**2 + s**2)
    return k, (lambda x_tilde: mu + k * (x_tilde - mu)), math.sqrt(k * s**2)


def test_denoising_chain_with_the_exact_posterior_samples_the_data_distribution():
    """Bengio et al. 2013, Theorem 1 in closed form: the chain's law after t steps is N(m_t, v_t) with
    m_t = mu + k^t (x_0 - mu) and v_t = v_inf (1 - k^(2t)); v_inf = tau^2 when sampling P(x|x~) and
    tau^2 k / (1 + k) when keeping only its mean."""
    mu, tau, s, x_start = 2.0, 0.5, 0.8, -3.0
    k, denoise, posterior_std = _gaussian_posterior_denoiser(mu, tau, s)
    x0 = torch.full((200_000, 1), x_start, dtype=torch.float64)
    for sample_std, v_inf in ((posterior_std, tau**2), (0.0, tau**2 * k / (1 + k))):
        chain = ae.denoising_chain(denoise, x0, 40, "gaussian", s, sample_std, torch.Generator().manual_seed(0))
        assert chain.shape == (41, 200_000, 1) and chain.dtype == torch.float64
        for t in (1, 3, 40):
            assert chain[t].mean().item() == pytest.approx(mu + k**t * (x_start - mu), abs=0.01)
            assert chain[t].var().item() == pytest.approx(v_inf * (1 - k ** (2 * t)), rel=0.02)
    assert tau**2 * k / (1 + k) < 0.25 * tau**2  # the mean-only chain is clearly under-dispersed here


def test_denoising_chain_masking_with_identity_denoiser_keeps_a_pixel_with_probability_power_t():
    x0 = torch.full((4000, 5), 0.7, dtype=torch.float64)
    chain = ae.denoising_chain(lambda x: x, x0, 3, "masking", 0.4, generator=torch.Generator().manual_seed(1))
    for t in range(4):  # a pixel survives t independent maskings with probability 0.6^t
        assert (chain[t] == 0.7).float().mean().item() == pytest.approx(0.6**t, abs=0.01)
        assert set(chain[t].unique().tolist()) <= {0.0, 0.7}


def test_denoising_chain_shapes_reproducibility_and_errors():
    torch.manual_seed(0)
    model = ae.Autoencoder(x_shape=(1, 4, 4), code_dim=3, hidden=8).eval()
    x0 = torch.rand(6, 1, 4, 4)

    def run(seed, steps=5):
        return ae.denoising_chain(model, x0, steps, "masking", 0.5, 0.1, torch.Generator().manual_seed(seed))

    chain = run(0)
    assert chain.shape == (6, 6, 1, 4, 4)
    assert torch.equal(chain[0], x0) and chain[0].data_ptr() != x0.data_ptr()
    assert torch.equal(chain, run(0)) and not torch.allclose(chain, run(1))
    assert not chain.requires_grad
    assert run(0, steps=0).shape == (1, 6, 1, 4, 4)
    with pytest.raises(ValueError, match="steps"):
        ae.denoising_chain(model, x0, -1)
    with pytest.raises(ValueError, match="steps"):
        ae.denoising_chain(model, x0, 2.0)
    with pytest.raises(ValueError, match="sample_std"):
        ae.denoising_chain(model, x0, 2, sample_std=-0.1)
    with pytest.raises(ValueError, match="x0"):
        ae.denoising_chain(model, torch.rand(16), 2)
    with pytest.raises(ValueError, match="kind"):
        ae.denoising_chain(model, x0, 2, kind="blur")
