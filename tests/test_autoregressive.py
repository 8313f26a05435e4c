"""Tests of dgmcourse.autoregressive: masks, causality, normalisation, sampling."""

import itertools

import pytest
import torch

from dgmcourse import autoregressive as ar
from dgmcourse.evaluation import bits_per_dim


def test_causal_masks_known_answer():
    expected_a = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=torch.float32)
    assert torch.equal(ar.causal_mask(3, "A"), expected_a)
    expected_b = expected_a.clone()
    expected_b[1, 1] = 1
    assert torch.equal(ar.causal_mask(3, "B"), expected_b)
    assert ar.causal_mask(7, "A").sum() == 24 and ar.causal_mask(1, "A").sum() == 0
    for bad in [(4, "A"), (0, "B"), (3, "C")]:
        with pytest.raises(ValueError, match="kernel_size|mask_type"):
            ar.causal_mask(*bad)


def test_output_depends_only_on_earlier_pixels():
    """d logit_i / d x_j is zero for every j >= i (raster order) and non-zero for some j < i."""
    torch.manual_seed(0)
    model = ar.PixelCNN(channels=8, layers=3)
    h = w = 6
    x = torch.bernoulli(torch.full((1, 1, h, w), 0.5)).requires_grad_(True)
    logits = model(x)
    for i in range(h * w):
        grad, = torch.autograd.grad(logits[0, 0].flatten()[i], x, retain_graph=True)
        grad = grad.flatten()
        assert grad[i:].abs().max() == 0, f"pixel {i} sees itself or a later pixel"
        r, c = divmod(i, w)
        if c > 0:
            assert grad[i - 1] != 0, f"pixel {i} ignores its left neighbour"
        if r > 0:
            assert grad[i - w] != 0, f"pixel {i} ignores the pixel above it"


def test_probabilities_sum_to_one_over_all_2x2_images():
    torch.manual_seed(1)
    model = ar.PixelCNN(channels=4, layers=2, first_kernel=3)
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4))).reshape(16, 1, 2, 2)
    with torch.no_grad():
        log_p = ar.log_likelihood(model, images)
    assert log_p.shape == (16,)
    assert torch.logsumexp(log_p.double(), 0).exp().item() == pytest.approx(1.0, abs=1e-5)


def test_log_likelihood_of_constant_logits_is_a_known_answer():
    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.logit = torch.nn.Parameter(torch.tensor(0.0))

        def forward(self, x):
            return self.logit.expand_as(x)

    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.3))
    # every pixel a fair coin: exactly 1 bit per dimension
    ll = ar.log_likelihood(Constant(), x)
    assert torch.allclose(bits_per_dim(ll.detach(), 16), torch.ones(5))
    with pytest.raises(ValueError, match="binary"):
        ar.log_likelihood(Constant(), x * 0.5)
    with pytest.raises(ValueError, match="shape"):
        ar.log_likelihood(Constant(), x[:, 0])


def test_sampling_follows_the_conditionals():
    """A model whose logit at pixel i is +20 if pixel i-1 is 1 else -20 copies the first pixel."""

    class CopyPrevious(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            flat = x.flatten(1)
            prev = torch.cat([torch.zeros(len(x), 1), flat[:, :-1]], 1)
            return (40 * prev - 20).reshape(x.shape)

    gen = torch.Generator().manual_seed(0)
    samples = ar.sample(CopyPrevious(), 4, shape=(3, 3), generator=gen)
    assert samples.shape == (4, 1, 3, 3)
    assert torch.equal(samples, torch.zeros(4, 1, 3, 3))  # the first pixel is 0 w.p. 1 - sigmoid(-20)
    start = torch.zeros(2, 1, 3, 3)
    start[:, 0, 0, 0] = 1
    completed = ar.sample(CopyPrevious(), 0, x=start, start=1, generator=gen)
    assert torch.equal(completed, torch.ones(2, 1, 3, 3))
    with pytest.raises(ValueError, match="start"):
        ar.sample(CopyPrevious(), 0, x=start, start=10)


def test_trained_pixelcnn_beats_a_fair_coin_and_samples_are_binary():
    torch.manual_seed(0)
    x = (torch.rand(64, 1, 8, 8) < torch.linspace(0.05, 0.95, 64).reshape(1, 1, 8, 8)).float()
    model = ar.PixelCNN(channels=8, layers=1, first_kernel=3)
    history = ar.train_pixelcnn(model, x, x[:16], epochs=15, batch_size=16, lr=1e-2, device=torch.device("cpu"),
                                progress=False)
    assert history["train_nll"][-1] < history["train_nll"][0]
    assert bits_per_dim(torch.tensor(history["test_nll"][-1]) * -1, 64) < 0.85
    s = ar.sample(model, 3, shape=(8, 8))
    assert ((s == 0) | (s == 1)).all()
