"""dgmcourse.masked_diffusion on vocabulary 2 and length 3, where everything can be enumerated.

The fixed models are functions of the visible tokens only (no t, as the module requires): logits linear in the
one-hot encoding of x_t with random weights, so each position's prediction depends on what is visible elsewhere.

* The ELBO (MDLM eq. 10) is computed by brute force -- every mask set M with its probability
  alpha_t^(L-|M|) (1 - alpha_t)^|M| under q, and the t-integral by Gauss-Legendre quadrature -- and compared with
  ``exact_elbo``'s closed form, for two schedules (the bound does not depend on the schedule).
* ELBO <= log-likelihood: the sampler with one token unmasked per step draws x by a uniformly random order sigma and
  p(x) = E_sigma prod_i p(x_sigma(i) | x_sigma(<i)). Enumerating the 3! orders gives this p exactly; the ELBO is
  E_sigma sum_i log p(x_sigma(i) | x_sigma(<i)) (the any-order form), so Jensen's inequality over sigma gives
  ELBO(x) <= log p(x), with equality when the model ignores the context (then p factorises and every order gives the
  same product). Both are checked, and the sampler's frequencies are checked against that p.
"""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dgmcourse.masked_diffusion import (MaskedDenoiser, cosine_schedule, elbo, exact_elbo, linear_schedule,
                                        masked_diffusion_loss, q_sample, sample, train_masked_diffusion)

V, L = 2, 3
MASK = V


def _context_model(seed: int = 0):
    weights = torch.randn(L, V + 1, L, V, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 1.5

    def model(x_t: torch.Tensor) -> torch.Tensor:                      # (B, L) -> (B, L, V)
        return torch.einsum("bjc,jcil->bil", F.one_hot(x_t, V + 1).double(), weights)
    return model


def _context_free_model(seed: int = 0):
    logits = torch.randn(L, V, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def model(x_t: torch.Tensor) -> torch.Tensor:
        return logits.expand(len(x_t), L, V)
    return model, torch.log_softmax(logits, -1)


def _all_sequences() -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(V), repeat=L)))


def _masked(x: torch.Tensor, positions) -> torch.Tensor:
    x = x.clone()
    x[:, list(positions)] = MASK
    return x


def _brute_force_elbo(model, x0: torch.Tensor, schedule, nodes: int = 60) -> torch.Tensor:
    """-int_0^1 alpha'/(1-alpha) sum_M q(M) sum_{i in M} -log p(x0_i | x0 with M masked) dt, Gauss-Legendre in t."""
    u, w = np.polynomial.legendre.leggauss(nodes)
    t = torch.tensor((u + 1) / 2, dtype=torch.float64)
    w = torch.tensor(w / 2, dtype=torch.float64)
    alpha, d_alpha = schedule.alpha(t), schedule.d_alpha(t)
    total = torch.zeros(len(x0), dtype=torch.float64)
    for bits in itertools.product((0, 1), repeat=L):
        masked = [i for i in range(L) if bits[i]]
        if not masked:
            continue
        log_p = torch.log_softmax(model(_masked(x0, masked)), -1).gather(-1, x0.unsqueeze(-1)).squeeze(-1)
        nll = -log_p[:, masked].sum(1)                                                      # (B,)
        prob_mask = alpha ** (L - len(masked)) * (1 - alpha) ** len(masked)                # (nodes,)
        integral = (w * d_alpha / (1 - alpha) * prob_mask).sum()
        total += integral * nll
    return total


def _any_order_log_likelihood(model, x: torch.Tensor) -> torch.Tensor:
    """log E_sigma prod_i p(x_sigma(i) | x_sigma(<i) visible, the rest masked): the one-token-per-step sampler's p."""
    per_order = []
    for order in itertools.permutations(range(L)):
        log_p = torch.zeros(len(x), dtype=torch.float64)
        for step, i in enumerate(order):
            x_t = _masked(x, order[step:])
            log_p += torch.log_softmax(model(x_t), -1)[torch.arange(len(x)), i, x[:, i]]
        per_order.append(log_p)
    return torch.logsumexp(torch.stack(per_order), 0) - math.log(math.factorial(L))


@pytest.mark.parametrize("schedule", [linear_schedule(), cosine_schedule()], ids=lambda s: s.name)
def test_exact_elbo_equals_brute_force_enumeration_and_quadrature(schedule):
    model, x = _context_model(), _all_sequences()
    torch.testing.assert_close(exact_elbo(model, x, V), _brute_force_elbo(model, x, schedule), atol=1e-8, rtol=0)


def test_elbo_is_at_most_the_any_order_log_likelihood():
    model, x = _context_model(), _all_sequences()
    log_p = _any_order_log_likelihood(model, x)
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    bound = exact_elbo(model, x, V)
    assert torch.all(bound <= log_p + 1e-12)
    assert (log_p - bound).max() > 0.01          # strict for this context-dependent model
    # KL(p || model) >= 0 in expectation: E_p[log p - ELBO] is the (positive) gap
    assert (log_p.exp() * (log_p - bound)).sum() > 0


def test_elbo_is_tight_when_the_model_ignores_the_context():
    model, log_pi = _context_free_model()
    x = _all_sequences()
    log_p = log_pi[torch.arange(L), x].sum(1)                                       # p(x) = prod_i pi_i(x_i)
    torch.testing.assert_close(exact_elbo(model, x, V), log_p, atol=1e-12, rtol=0)
    torch.testing.assert_close(_any_order_log_likelihood(model, x), log_p, atol=1e-12, rtol=0)


def _frequencies(draws: torch.Tensor) -> torch.Tensor:
    codes = (draws * (V ** torch.arange(L - 1, -1, -1))).sum(1)
    return torch.bincount(codes, minlength=V ** L).double() / len(draws)


def test_many_step_sampler_draws_from_the_any_order_distribution():
    # with 400 steps two tokens share a step with probability about C(3, 2)/400 < 1%: allowed for in the tolerance
    model, n = _context_model(), 8000
    draws = sample(model, n, L, V, steps=400, generator=torch.Generator().manual_seed(0))
    assert draws.dtype == torch.int64 and draws.shape == (n, L) and draws.max() < V
    exact = _any_order_log_likelihood(model, _all_sequences()).exp()
    tolerance = 5 * torch.sqrt(exact * (1 - exact) / n) + 0.01
    assert torch.all((_frequencies(draws) - exact).abs() < tolerance), (_frequencies(draws), exact)


def test_one_step_sampler_draws_every_token_from_the_all_masked_prediction():
    model, n = _context_model(), 20_000
    draws = sample(model, n, L, V, steps=1, generator=torch.Generator().manual_seed(1))
    log_q = torch.log_softmax(model(torch.full((1, L), MASK)), -1)[0]                 # (L, V)
    exact = log_q[torch.arange(L), _all_sequences()].sum(1).exp()
    tolerance = 5 * torch.sqrt(exact * (1 - exact) / n) + 1e-3
    assert torch.all((_frequencies(draws) - exact).abs() < tolerance)


def test_q_sample_masks_with_probability_one_minus_alpha():
    x0 = torch.randint(0, V, (2000, 50), generator=torch.Generator().manual_seed(0))
    for t, schedule in ((0.3, linear_schedule()), (0.6, linear_schedule()), (0.5, cosine_schedule())):
        x_t = q_sample(x0, t, V, schedule, generator=torch.Generator().manual_seed(1))
        masked = x_t == MASK
        expected = 1 - schedule.alpha(torch.tensor(t, dtype=torch.float64)).item()
        sd = math.sqrt(expected * (1 - expected) / x0.numel())
        assert abs(masked.double().mean().item() - expected) < 5 * sd
        assert torch.equal(x_t[~masked], x0[~masked])          # visible tokens are the data's
    t = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    x_t = q_sample(x0[:4], t, V)
    assert not (x_t[0] == MASK).any() and (x_t[1] == MASK).all()


def test_monte_carlo_estimators_agree_with_the_exact_elbo():
    model, x = _context_model(), _all_sequences()
    exact = exact_elbo(model, x, V)
    copies = 3000
    repeated = x.repeat(copies, 1)
    estimate = elbo(model, repeated, V, n_t=16, generator=torch.Generator().manual_seed(0)).view(copies, -1).mean(0)
    assert torch.all((estimate - exact).abs() < 0.05), (estimate, exact)
    loss = torch.stack([masked_diffusion_loss(model, repeated, V, generator=torch.Generator().manual_seed(s))
                        for s in range(8)]).mean()
    assert loss.item() == pytest.approx(-exact.mean().item(), abs=0.05)
    assert loss.dtype == torch.float64


def test_masked_denoiser_trains_towards_the_data_likelihood():
    # half the sequences are all 0, half all 1: log p(x) = -log 2 for both, the best independent model -4 log 2
    data = torch.tensor([[0] * 4, [1] * 4]).repeat(64, 1)
    torch.manual_seed(0)
    model = MaskedDenoiser(V, 4, d_model=16, n_heads=2, n_layers=1)
    with torch.no_grad():
        assert model(q_sample(data[:3], 0.5, V)).shape == (3, 4, V)
    train_masked_diffusion(model, data, V, steps=100, batch_size=64, lr=3e-3,
                           generator=torch.Generator().manual_seed(0), progress=False)
    bound = exact_elbo(model, data[:2], V)
    # whatever the training did: each ELBO is at most log p of the any-order sampler's distribution, which sums to
    # at most 1 over the two sequences (and the optimum, exactly -log 2 each, is attained by a perfect denoiser)
    assert torch.logsumexp(bound, 0).item() <= 1e-9, bound
    # the training: seeds 0-29 (initialisation and minibatches) gave ELBO + log 2 in [-0.31, 0.18] per sequence and
    # [-0.11, -0.04] for the mean of the two; at initialisation the mean was below -2.7. Any model that ignores the
    # context scores at most -4 log 2 = -2.77 each, so both bounds below still require the correlation learned.
    assert torch.all(bound > -2 * math.log(2)), bound
    assert bound.mean() > -math.log(2) - 0.3, bound
    assert not model.training


def test_bad_inputs_raise():
    model = _context_model()
    x0 = _all_sequences()
    with pytest.raises(ValueError, match=r"x0 must hold tokens in \[0, 2\)"):
        q_sample(torch.tensor([[0, 2, 1]]), 0.5, V)
    with pytest.raises(ValueError, match="x0 must be a non-empty int64 tensor"):
        q_sample(x0.float(), 0.5, V)
    with pytest.raises(ValueError, match=r"t must be a scalar or a \(8,\) tensor of times in \[0, 1\]"):
        q_sample(x0, 1.5, V)
    with pytest.raises(ValueError, match="schedule must be a MaskSchedule"):
        q_sample(x0, 0.5, V, schedule="linear")
    with pytest.raises(ValueError, match="vocab_size must be a positive integer"):
        masked_diffusion_loss(model, x0, 0)
    with pytest.raises(ValueError, match="model\\(x_t\\) must return logits of shape"):
        exact_elbo(lambda x: torch.zeros(len(x), L, V + 1), x0, V)
    with pytest.raises(ValueError, match="exact_elbo enumerates 2\\^L mask sets"):
        exact_elbo(model, torch.zeros(1, 13, dtype=torch.int64), V)
    with pytest.raises(ValueError, match="n_t must be a positive integer"):
        elbo(model, x0, V, n_t=0)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        sample(model, 2, L, V, steps=0)
