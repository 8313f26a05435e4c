"""dgmcourse.transformer: the key/value cache against full recomputation, causality by autograd, the chain-rule
likelihood normalised over every sequence, sampling frequencies against it, and a tiny training run."""

import itertools
import math

import pytest
import torch

from dgmcourse.transformer import CausalTransformer, log_likelihood, sample, train_autoregressive

K, T = 2, 4  # data tokens and sequence length of the small models; the start token is id K


def _model(causal: bool = True, seed: int = 0) -> CausalTransformer:
    torch.manual_seed(seed)
    return CausalTransformer(K + 1, T, d_model=16, n_heads=2, n_layers=2, causal=causal, output_size=K).eval()


def test_cache_gives_the_logits_of_full_recomputation():
    model = _model()
    tokens = torch.randint(0, K + 1, (5, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, _ = model(tokens)
        one_by_one, cache = [], None
        for i in range(T):
            logits, cache = model(tokens[:, i:i + 1], cache)
            one_by_one.append(logits)
        first, cache = model(tokens[:, :1])           # then three new tokens at once (T_new > 1 with a cache)
        rest, cache = model(tokens[:, 1:], cache)
    torch.testing.assert_close(torch.cat(one_by_one, 1), full, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat([first, rest], 1), full, atol=1e-5, rtol=0)
    assert cache[0][0].shape == (5, 2, T, 8)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_cached_and_uncached_sampling_are_identical(temperature):
    model = _model()
    with_cache = sample(model, 64, T, bos=K, temperature=temperature, generator=torch.Generator().manual_seed(3))
    without = sample(model, 64, T, bos=K, temperature=temperature, generator=torch.Generator().manual_seed(3),
                     use_cache=False)
    assert with_cache.dtype == torch.int64 and with_cache.shape == (64, T)
    assert torch.equal(with_cache, without)
    assert with_cache.max() < K  # the start token is never sampled (output_size=K)
    with_cache[0, 0] = K - 1     # sampled under inference mode, returned as a normal tensor: in-place edits work


def test_output_at_i_has_zero_gradient_from_inputs_after_i():
    for causal in (True, False):
        model = _model(causal)
        h = model.embed(torch.tensor([[2, 0, 1, 1]])).detach().requires_grad_(True)
        logits, _ = model.forward_embeddings(h)
        for i in range(T):
            (grad,) = torch.autograd.grad(logits[0, i].sum(), h, retain_graph=True)
            norms = grad[0].abs().sum(dim=1)
            if causal:
                assert torch.all(norms[i + 1:] == 0), (i, norms)
                assert torch.all(norms[:i + 1] > 0), (i, norms)
            else:
                assert torch.all(norms > 0), (i, norms)   # the bidirectional model sees the future


def test_changing_future_tokens_leaves_past_logits_unchanged():
    model = _model()
    a, b = torch.tensor([[2, 0, 1, 0]]), torch.tensor([[2, 0, 0, 1]])
    with torch.no_grad():
        la, lb = model(a)[0], model(b)[0]
    # equal up to rounding (the masked scores enter the softmax as exact zeros, but no kernel promises bitwise
    # equality across different inputs); the change itself moves the later logits by far more
    torch.testing.assert_close(la[:, :2], lb[:, :2], atol=1e-6, rtol=0)
    assert (la[:, 2:] - lb[:, 2:]).abs().max() > 1e-3


def _all_sequences() -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(K), repeat=T)))


def test_log_likelihood_is_normalised_and_matches_the_chain_rule():
    model = _model()
    sequences = _all_sequences()                                                    # (16, 4)
    with torch.no_grad():
        log_p = log_likelihood(model, sequences, bos=K).double()
        assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-5)
        # the chain rule by hand, one cached step at a time
        total, cache, previous = torch.zeros(len(sequences)), None, torch.full((len(sequences), 1), K)
        for i in range(T):
            logits, cache = model(previous, cache)
            total += torch.log_softmax(logits[:, -1], -1).gather(1, sequences[:, i:i + 1]).squeeze(1)
            previous = sequences[:, i:i + 1]
    torch.testing.assert_close(log_p.float(), total, atol=1e-5, rtol=0)


def test_sample_frequencies_match_the_likelihood():
    model = _model(seed=2)
    n = 20_000
    draws = sample(model, n, T, bos=K, generator=torch.Generator().manual_seed(0))
    codes = (draws * (K ** torch.arange(T - 1, -1, -1))).sum(1)
    empirical = torch.bincount(codes, minlength=K ** T).double() / n
    with torch.no_grad():
        exact = log_likelihood(model, _all_sequences(), bos=K).double().exp()
    tolerance = 5 * torch.sqrt(exact * (1 - exact) / n) + 1e-3
    assert torch.all((empirical - exact).abs() < tolerance), (empirical, exact)


def _tempered_probabilities(model: CausalTransformer, temperature: float) -> torch.Tensor:
    """Exact probability of each of the K^T sequences under the sampler at temperature tau: the product over
    positions of softmax(logits / tau) at the sequence's tokens (every conditional is tempered, not the joint)."""
    sequences = _all_sequences()
    inputs = torch.cat([torch.full((len(sequences), 1), K), sequences[:, :-1]], dim=1)
    with torch.no_grad():
        logits, _ = model(inputs)
    log_q = torch.log_softmax(logits.double() / temperature, -1).gather(-1, sequences.unsqueeze(-1)).squeeze(-1)
    return log_q.sum(1).exp()


@pytest.mark.parametrize("temperature", [0.5, 0.05])
def test_temperature_tempers_every_conditional(temperature):
    model = _model(seed=2)
    exact = _tempered_probabilities(model, temperature)
    assert exact.sum().item() == pytest.approx(1.0, abs=1e-9)
    torch.testing.assert_close(_tempered_probabilities(model, 1.0),
                               log_likelihood(model, _all_sequences(), bos=K).double().exp().detach(),
                               atol=1e-6, rtol=0)
    assert exact.max() > _tempered_probabilities(model, 1.0).max()          # sharper than the model
    n = 20_000
    draws = sample(model, n, T, bos=K, temperature=temperature, generator=torch.Generator().manual_seed(0))
    codes = (draws * (K ** torch.arange(T - 1, -1, -1))).sum(1)
    empirical = torch.bincount(codes, minlength=K ** T).double() / n
    tolerance = 5 * torch.sqrt(exact * (1 - exact) / n) + 1e-3
    assert torch.all((empirical - exact).abs() < tolerance), (empirical, exact)


def test_training_learns_a_two_sequence_distribution():
    # half the sequences are 0101..., half 1010...: the first token costs log 2, the rest nothing (log 2 nats per
    # sequence, log(2)/6 = 0.116 per token); a model that ignores the context cannot beat 6 log 2 per sequence.
    # Seeds 0-29 (initialisation and minibatches): NLL of each sequence log 2 - 0.10 ... log 2 + 0.17, mass on the
    # two 0.94-0.99, mean loss of the last 20 steps 0.118-0.126 nats per token.
    length = 6
    data = torch.tensor([[0, 1] * 3, [1, 0] * 3]).repeat(64, 1)
    torch.manual_seed(0)
    model = CausalTransformer(3, length, d_model=16, n_heads=2, n_layers=1, output_size=2)
    losses = train_autoregressive(model, data, steps=150, bos=2, batch_size=32, lr=3e-3,
                                  generator=torch.Generator().manual_seed(0), progress=False)
    assert len(losses) == 150 and sum(losses[-20:]) / 20 < 2 * math.log(2) / length
    with torch.no_grad():
        nll = -log_likelihood(model, data[:2], bos=2).double()
    mass = torch.exp(-nll).sum().item()
    assert mass <= 1 + 1e-6                                    # a normalised model, whatever the training did
    assert mass > 0.8, nll                                     # most of it on the two training sequences
    assert torch.all(nll < 2 * math.log(2)), nll              # the context is used: far below 6 log 2
    assert not model.training


def test_bad_inputs_raise():
    model = _model()
    with pytest.raises(ValueError, match="d_model must be a multiple of n_heads"):
        CausalTransformer(3, 4, d_model=10, n_heads=3)
    with pytest.raises(ValueError, match="vocab_size must be a positive integer"):
        CausalTransformer(0, 4)
    with pytest.raises(ValueError, match="tokens must be an int64 tensor"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 3\)"):
        model(torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match="sequence too long"):
        model(torch.zeros(1, T + 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="cache is only supported for a causal model"):
        nc = _model(causal=False)
        nc(torch.zeros(1, 1, dtype=torch.int64), model(torch.zeros(1, 1, dtype=torch.int64))[1])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample(model, 2, T, bos=K, temperature=0)
    with pytest.raises(ValueError, match="bos must be a token id"):
        sample(model, 2, T, bos=K + 1)
    with pytest.raises(ValueError, match="length must be <= max_len"):
        sample(model, 2, T + 1, bos=K)
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 2\)"):
        log_likelihood(model, torch.tensor([[0, 2, 0, 0]]), bos=K)
    with pytest.raises(ValueError, match="model must be a CausalTransformer with causal=True"):
        log_likelihood(_model(causal=False), torch.zeros(1, T, dtype=torch.int64), bos=K)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        train_autoregressive(model, torch.zeros(4, T, dtype=torch.int64), steps=0, bos=K)
