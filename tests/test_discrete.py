"""dgmcourse.discrete: the Bernoulli VAE's exact ELBO and its gradient estimators, checked against torch.distributions,
brute-force sums and the exact gradient (bias within the Monte Carlo error for the unbiased estimators)."""

import itertools
import math

import pytest
import torch
from torch.distributions import Bernoulli, RelaxedBernoulli, kl_divergence

from dgmcourse import discrete
from dgmcourse.data import load_digits
from dgmcourse.discrete import (BernoulliVAE, bernoulli_kl, encoder_gradients, exact_elbo, relaxed_bernoulli,
                                surrogate_elbo, train_bernoulli_vae)


def _small_model(seed: int = 0) -> tuple[BernoulliVAE, torch.Tensor]:
    torch.manual_seed(seed)
    model = BernoulliVAE(x_dim=6, n_latents=3, hidden=8)
    x = torch.rand(5, 6, generator=torch.Generator().manual_seed(seed))
    return model, x


def test_bernoulli_kl_matches_torch_distributions():
    logits = torch.tensor([[-30.0, -2.0, 0.0, 1.5, 30.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    expected = kl_divergence(Bernoulli(logits=logits), Bernoulli(probs=torch.full_like(logits, 0.5))).sum(dim=1)
    torch.testing.assert_close(bernoulli_kl(logits), expected, atol=1e-5, rtol=1e-5)
    assert bernoulli_kl(logits)[1].item() == 0.0
    assert bernoulli_kl(torch.full((1, 4), 50.0)).item() == pytest.approx(4 * math.log(2), abs=1e-5)


def test_relaxed_bernoulli_is_torch_binary_concrete():
    generator = torch.Generator().manual_seed(0)
    logits = torch.full((200_000,), 0.7)
    ours = relaxed_bernoulli(logits, 0.5, generator)
    torch.manual_seed(1)
    theirs = RelaxedBernoulli(torch.tensor(0.5), logits=logits).sample()
    # P(sample > 1/2) = sigmoid(logits) at any temperature; standard error sqrt(p(1-p)/n) ~ 0.001
    assert (ours > 0.5).float().mean().item() == pytest.approx(torch.sigmoid(torch.tensor(0.7)).item(), abs=0.005)
    quantiles = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    torch.testing.assert_close(ours.quantile(quantiles), theirs.quantile(quantiles), atol=0.01, rtol=0)
    cold = relaxed_bernoulli(logits[:10_000], 0.01, generator)
    assert ((cold < 0.01) | (cold > 0.99)).float().mean().item() > 0.95


def test_exact_elbo_is_the_sum_over_codes_and_bounds_the_likelihood():
    model, x = _small_model()
    logits = model.encoder(x)
    q = Bernoulli(logits=logits)
    codes = torch.tensor(list(itertools.product((0.0, 1.0), repeat=3)))
    terms, log_joint = [], []
    for code in codes:
        z = code.expand(len(x), 3)
        log_q = q.log_prob(z).sum(dim=1)
        log_px = model.log_px(x, z)
        terms.append(log_q.exp() * (log_px - log_q + 3 * math.log(0.5)))
        log_joint.append(log_px + 3 * math.log(0.5))
    brute_force = torch.stack(terms).sum(dim=0)
    torch.testing.assert_close(exact_elbo(model, x), brute_force, atol=1e-4, rtol=1e-5)
    log_px = torch.logsumexp(torch.stack(log_joint), dim=0)
    assert (exact_elbo(model, x) <= log_px + 1e-5).all()


@pytest.mark.parametrize("estimator,samples", [("reinforce", 1), ("reinforce_loo", 3)])
def test_reinforce_estimators_are_unbiased(estimator, samples):
    model, x = _small_model()
    exact = encoder_gradients(model, x, None, 1)[0]
    draws = encoder_gradients(model, x, estimator, 4000, samples, generator=torch.Generator().manual_seed(0))
    # along the exact gradient and 5 fixed random directions, the mean estimate is within 4.5 standard errors of
    # the exact value (a z-test; an unbiased estimator fails one of the six with probability < 1e-4)
    directions = torch.cat([exact[None] / exact.norm(), torch.randn(5, len(exact), generator=torch.Generator()
                                                                    .manual_seed(1))])
    projected, target = draws @ directions.T, directions @ exact
    z = (projected.mean(dim=0) - target) / (projected.std(dim=0) / len(draws) ** 0.5)
    assert z.abs().max() < 4.5, f"{estimator}: z-scores {z.tolist()}"


def test_baseline_reduces_variance_and_relaxation_is_biased():
    model, x = _small_model()
    exact = encoder_gradients(model, x, None, 1)[0]
    generator = torch.Generator().manual_seed(0)
    plain = encoder_gradients(model, x, "reinforce", 2000, 2, generator=generator)
    loo = encoder_gradients(model, x, "reinforce_loo", 2000, 2, generator=generator)
    assert loo.var(dim=0).sum() < 0.2 * plain.var(dim=0).sum()
    relaxed = encoder_gradients(model, x, "gumbel_softmax", 2000, temperature=1.0, generator=generator)
    error, noise = (relaxed.mean(dim=0) - exact).pow(2).sum(), relaxed.var(dim=0).sum() / len(relaxed)
    assert error > 20 * noise, f"Gumbel-softmax at tau=1 should be biased: {error:.3g} vs {noise:.3g}"


def test_straight_through_decodes_hard_codes():
    model, x = _small_model()
    value = surrogate_elbo(model, x, "straight_through", samples=1, temperature=0.5,
                           generator=torch.Generator().manual_seed(3))
    relaxed = relaxed_bernoulli(model.encoder(x), 0.5, torch.Generator().manual_seed(3))
    expected = (model.log_px(x, (relaxed > 0.5).float()) - bernoulli_kl(model.encoder(x))).mean()
    torch.testing.assert_close(value, expected)


def test_training_raises_the_exact_elbo():
    x = load_digits()[0][:256].flatten(1)
    for estimator in discrete.ESTIMATORS:
        torch.manual_seed(0)
        model = BernoulliVAE(x_dim=64, n_latents=4, hidden=32)
        history = train_bernoulli_vae(model, x, estimator, epochs=4, batch_size=32, lr=1e-2, samples=2,
                                      device=torch.device("cpu"), progress=False)
        assert len(history["train_elbo"]) == 4
        # an untrained decoder is ~ -44 nats per digit; its mean image alone is worth > 10 nats
        assert history["train_elbo"][-1] > history["train_elbo"][0] + 3, (estimator, history["train_elbo"])
        assert history["train_elbo"][-1] > -35, (estimator, history["train_elbo"])


def test_bad_input_raises_clear_errors():
    model, x = _small_model()
    with pytest.raises(ValueError, match="estimator"):
        surrogate_elbo(model, x, "reparameterize")
    with pytest.raises(ValueError, match="samples"):
        surrogate_elbo(model, x, "reinforce_loo", samples=1)
    with pytest.raises(ValueError, match="temperature"):
        surrogate_elbo(model, x, "gumbel_softmax", temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        relaxed_bernoulli(torch.zeros(3), -1.0)
    with pytest.raises(ValueError, match=r"\(B, 6\)"):
        exact_elbo(model, torch.rand(5, 7))
    with pytest.raises(ValueError, match="K <= 12"):
        exact_elbo(BernoulliVAE(x_dim=6, n_latents=13), x)
    with pytest.raises(ValueError, match="draws"):
        encoder_gradients(model, x, "reinforce", 0)
    with pytest.raises(ValueError, match="logits"):
        bernoulli_kl(torch.zeros(4))
    with pytest.raises(ValueError, match="n_latents"):
        BernoulliVAE(x_dim=6, n_latents=0)
    with pytest.raises(ValueError, match="epochs"):
        train_bernoulli_vae(model, x, "reinforce", epochs=0)
