import math

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Normal, kl_divergence

from dgmcourse.vae import (VAE, ConvVAE, MLPVAE, elbo, gaussian_kl, iwae_bound, latent_grid, log_likelihood,
                           reparameterization_gradient, reparameterize, score_function_gradient, train_vae)


def test_gaussian_kl_closed_form_and_torch_distributions():
    # KL(N(1, 0.5^2) || N(0, 1)) = (1 + 0.25 - 1 - log 0.25) / 2 = 0.818147 nats
    kl = gaussian_kl(torch.tensor([[1.0]]), torch.tensor([[math.log(0.25)]]))
    assert kl.item() == pytest.approx(0.818147, abs=1e-6)
    generator = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 3, generator=generator), torch.randn(5, 3, generator=generator)
    reference = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(dim=1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), reference)


def test_reparameterize_moments_and_pathwise_gradient():
    mu = torch.tensor([[2.0, -1.0]]).repeat(200_000, 1).requires_grad_()
    logvar = torch.tensor([[math.log(4.0), math.log(0.25)]]).repeat(200_000, 1).requires_grad_()
    z = reparameterize(mu, logvar, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(z.mean(0), torch.tensor([2.0, -1.0]), atol=0.02, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([2.0, 0.5]), atol=0.01, rtol=0)
    z.sum().backward()
    assert torch.all(mu.grad == 1.0)  # dz/dmu = 1
    eps = (z - mu) / (0.5 * logvar).exp()
    torch.testing.assert_close(logvar.grad, 0.5 * (0.5 * logvar).exp() * eps)  # dz/dlogvar


def test_log_likelihood_matches_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 1, 5, 5, generator=generator) * 3
    x = torch.bernoulli(torch.full((4, 1, 5, 5), 0.5), generator=generator)
    torch.testing.assert_close(log_likelihood(x, logits), Bernoulli(logits=logits).log_prob(x).sum((1, 2, 3)))
    mean = torch.randn(4, 7, generator=generator)
    y = torch.randn(4, 7, generator=generator)
    torch.testing.assert_close(log_likelihood(y, mean, "gaussian", scale=0.3),
                               Normal(mean, 0.3).log_prob(y).sum(1))


def test_bernoulli_log_likelihood_is_stable_for_large_logits():
    value = log_likelihood(torch.tensor([[1.0, 0.0]]), torch.tensor([[-200.0, 200.0]]))
    assert value.item() == pytest.approx(-400.0)


def test_elbo_is_reconstruction_minus_beta_kl():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 4, 4, generator=generator)
    logits = torch.randn(3, 1, 4, 4, generator=generator)
    mu, logvar = torch.randn(3, 2, generator=generator), torch.randn(3, 2, generator=generator)
    value, recon, kl = elbo(x, logits, mu, logvar, beta=4.0)
    torch.testing.assert_close(recon, log_likelihood(x, logits))
    torch.testing.assert_close(kl, gaussian_kl(mu, logvar))
    torch.testing.assert_close(value, recon - 4.0 * kl)


class ExactPosteriorVAE(VAE):
    """p(z) = N(0, 1), p(x|z) = N(z, 1), so p(x) = N(0, 2) and p(z|x) = N(x/2, 1/2) exactly."""

    def __init__(self):
        super().__init__((1,), 1, "gaussian")
        self.encoder = nn.Linear(1, 2)
        self.decoder = nn.Linear(1, 1)
        with torch.no_grad():
            self.encoder.weight.copy_(torch.tensor([[0.5], [0.0]]))
            self.encoder.bias.copy_(torch.tensor([0.0, math.log(0.5)]))
            self.decoder.weight.fill_(1.0)
            self.decoder.bias.fill_(0.0)


@pytest.mark.parametrize("k", [1, 10, 100])
def test_iwae_bound_is_exact_with_the_true_posterior(k):
    model = ExactPosteriorVAE()
    x = torch.linspace(-3, 3, 7).unsqueeze(1)
    exact = Normal(0.0, math.sqrt(2.0)).log_prob(x).squeeze(1)
    torch.testing.assert_close(iwae_bound(model, x, k), exact, atol=1e-5, rtol=0)


def test_iwae_bound_tightens_with_k_towards_log_px():
    model = ExactPosteriorVAE()
    with torch.no_grad():  # q(z|x) = N(x/2, 0.05): too narrow, so L_1 < L_10 < L_100 < log p(x)
        model.encoder.bias[1] = math.log(0.05)
    x = torch.linspace(-3, 3, 200).unsqueeze(1)
    exact = Normal(0.0, math.sqrt(2.0)).log_prob(x).mean().item()
    generator = torch.Generator().manual_seed(0)
    bounds = [iwae_bound(model, x, k, generator=generator).mean().item() for k in (1, 10, 100)]
    assert bounds[0] < bounds[1] < bounds[2] < exact
    assert exact - bounds[2] < 0.5 * (exact - bounds[0])


def test_models_shapes_and_sampling():
    for model, shape in ((MLPVAE((1, 28, 28), z_dim=3, hidden=16), (1, 28, 28)),
                         (ConvVAE(z_dim=4, channels=4), (1, 28, 28))):
        x = torch.rand(5, *shape)
        x_logits, mu, logvar, z = model(x)
        assert x_logits.shape == x.shape and mu.shape == logvar.shape == z.shape == (5, model.z_dim)
        samples = model.sample(6)
        assert samples.shape == (6, *shape) and samples.min() >= 0 and samples.max() <= 1


def test_train_vae_improves_the_elbo():
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(256, 1, 8, 8, generator=generator) < torch.linspace(0, 1, 64).view(1, 1, 8, 8)).float()
    history = train_vae(MLPVAE((1, 8, 8), z_dim=2, hidden=32), x, x[:64], epochs=5, lr=3e-3, progress=False)
    assert set(history) == {"train_elbo", "train_recon", "train_kl", "test_elbo"}
    assert all(len(v) == 5 for v in history.values())
    assert history["train_elbo"][-1] > history["train_elbo"][0]
    for elbo_value, recon, kl in zip(history["train_elbo"], history["train_recon"], history["train_kl"]):
        assert elbo_value == pytest.approx(recon - kl, rel=1e-5) and kl >= 0


def test_train_vae_penalty_hook_sees_the_encoder_means_and_is_weighted():
    generator = torch.Generator().manual_seed(0)
    prototypes = (torch.rand(4, 1, 6, 6, generator=generator) < 0.5).float()  # 4 clusters: codes worth encoding
    x = prototypes[torch.arange(128) % 4]
    torch.manual_seed(0)
    start = MLPVAE((1, 6, 6), z_dim=3, hidden=16).state_dict()
    seen, runs = [], {}
    for weight in (None, 0.0, 100.0):
        model = MLPVAE((1, 6, 6), z_dim=3, hidden=16)
        model.load_state_dict(start)

        def squared_means(mu):  # a known penalty: E ||mu||^2 of the batch's encoder means
            seen.append(tuple(mu.shape))
            return mu.pow(2).sum(1).mean()

        kwargs = {} if weight is None else dict(penalty=squared_means, penalty_weight=weight)
        runs[weight] = (train_vae(model, x, epochs=3, batch_size=32, lr=1e-2, device=torch.device("cpu"), seed=1,
                                  progress=False, **kwargs), model)
    assert set(seen) == {(32, 3)} and len(seen) == 2 * 3 * 4  # two runs with the hook, 3 epochs of 4 batches
    assert "train_penalty" not in runs[None][0] and len(runs[0.0][0]["train_penalty"]) == 3
    for a, b in zip(runs[None][1].parameters(), runs[0.0][1].parameters()):
        assert torch.equal(a, b)  # weight 0: recorded only, the same run
    with torch.no_grad():
        mu_plain, mu_penalised = (runs[w][1].encode(x)[0].pow(2).sum(1).mean().item() for w in (0.0, 100.0))
    assert mu_penalised < 0.1 * mu_plain  # a heavy weight on E ||mu||^2 pulls the means to 0
    for kwargs, match in [(dict(penalty=3.0), "penalty must be"), (dict(penalty=squared_means, penalty_weight=-1.0),
                                                                    "penalty_weight"),
                          (dict(penalty=squared_means, penalty_weight=float("nan")), "penalty_weight")]:
        with pytest.raises(ValueError, match=match):
            train_vae(MLPVAE((1, 6, 6), z_dim=3, hidden=16), x, epochs=1, progress=False, **kwargs)


def test_latent_grid_uses_gaussian_quantiles():
    grid = latent_grid(3)
    assert grid.shape == (9, 2)
    q = Normal(0.0, 1.0).icdf(torch.tensor(0.95)).item()  # 1.6449
    assert grid[0].tolist() == pytest.approx([-q, q]) and grid[-1].tolist() == pytest.approx([q, -q])


def test_gradient_estimators_are_unbiased_and_reparameterization_has_lower_variance():
    # d/dmu E[z^2] = 2 mu for z ~ N(mu, sigma^2)
    generator = torch.Generator().manual_seed(0)
    pathwise = reparameterization_gradient(lambda z: z**2, 1.5, 1.0, 100_000, generator=generator)
    score = score_function_gradient(lambda z: z**2, 1.5, 1.0, 100_000, generator=generator)
    assert pathwise.mean().item() == pytest.approx(3.0, abs=0.03)
    assert score.mean().item() == pytest.approx(3.0, abs=0.15)
    # Var of the pathwise estimate 2z is 4 sigma^2 = 4; the score estimate's is far larger
    assert pathwise.var().item() == pytest.approx(4.0, rel=0.05)
    assert score.var().item() > 5 * pathwise.var().item()


@pytest.mark.parametrize("call, name", [
    (lambda: gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 4)), "logvar"),
    (lambda: reparameterize(torch.zeros(2, 3), torch.zeros(3)), "logvar"),
    (lambda: log_likelihood(torch.full((1, 2), 1.5), torch.zeros(1, 2)), "x"),
    (lambda: log_likelihood(torch.zeros(1, 2), torch.zeros(1, 3)), "decoder_output"),
    (lambda: log_likelihood(torch.zeros(1, 2), torch.zeros(1, 2), "poisson"), "likelihood"),
    (lambda: iwae_bound(MLPVAE((1, 2, 2), 1, 4), torch.rand(3, 1, 2, 2), 0), "k"),
    (lambda: MLPVAE((1, 28, 28), 2, 8).encode(torch.rand(2, 1, 8, 8)), "x"),
    (lambda: elbo(torch.rand(2, 3), torch.rand(2, 3), torch.zeros(2, 1), torch.zeros(2, 1), beta=-1), "beta"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_latent_explorer_redraws_the_decoded_image():
    from dgmcourse.widgets import latent_explorer

    seen = []

    def decode(z):
        seen.append(z.clone())
        return torch.sigmoid(z.sum()).expand(1, 1, 4, 4)

    box = latent_explorer(decode, z_dim=2, image_shape=(4, 4))
    sliders = box.children[0].children[0].children
    assert len(sliders) == 2 and seen[-1].tolist() == [[0.0, 0.0]]
    sliders[1].value = 1.5
    assert seen[-1].tolist() == [[0.0, 1.5]]
    with pytest.raises(ValueError, match="z_dim"):
        latent_explorer(decode, z_dim=0)
