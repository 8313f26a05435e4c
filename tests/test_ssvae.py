"""Tests of dgmcourse.ssvae (M2) against torch.distributions and exact sums over y."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, Categorical, Normal, kl_divergence

from dgmcourse import ssvae


def _deterministic_m2(seed=0, x_shape=(1, 4, 4), z_dim=3, k=4):
    """An M2 whose q(z|x,y) has standard deviation e^-15, so one-sample bounds are deterministic."""
    torch.manual_seed(seed)
    model = ssvae.M2(x_shape=x_shape, z_dim=z_dim, num_classes=k, hidden=16)
    last = model.encoder[-1]
    with torch.no_grad():
        last.weight[z_dim:] = 0
        last.bias[z_dim:] = -30.0
    return model.eval()


def test_labelled_bound_matches_torch_distributions():
    model = _deterministic_m2()
    x, y = torch.rand(5, 1, 4, 4), torch.tensor([0, 3, 1, 2, 3])
    bound = model.labelled_bound(x, y)
    mu, logvar = model.encode(x, y)
    q_z = Normal(mu, (0.5 * logvar).exp())
    expected = (Bernoulli(logits=model.decode(mu, y), validate_args=False).log_prob(x).flatten(1).sum(1)
                + Categorical(probs=torch.full((4,), 0.25)).log_prob(y)
                - kl_divergence(q_z, Normal(0.0, 1.0)).sum(1))
    assert torch.allclose(bound, expected, atol=1e-4)


def test_unlabelled_bound_sums_over_every_class():
    model = _deterministic_m2(seed=1)
    x = torch.rand(6, 1, 4, 4)
    bounds = torch.stack([model.labelled_bound(x, torch.full((6,), c)) for c in range(4)], 1)  # (B, K)
    q = torch.softmax(model.classify(x), 1)
    expected = (q * bounds).sum(1) + Categorical(probs=q).entropy()
    assert torch.allclose(model.unlabelled_bound(x), expected, atol=1e-4)
    # -U(x) <= log sum_y exp(-L(x, y)), the bound obtained with the best q(y|x)
    assert (model.unlabelled_bound(x) <= torch.logsumexp(bounds, 1) + 1e-4).all()


def test_m2_loss_combines_the_three_terms():
    model = _deterministic_m2(seed=2)
    x_l, y_l, x_u = torch.rand(3, 1, 4, 4), torch.tensor([1, 0, 2]), torch.rand(4, 1, 4, 4)
    loss, parts = ssvae.m2_loss(model, x_l, y_l, x_u, alpha=7.0)
    ce = -Categorical(logits=model.classify(x_l)).log_prob(y_l).mean()
    assert parts["cross_entropy"] == pytest.approx(ce.item(), rel=1e-5)
    assert loss.item() == pytest.approx(-parts["labelled"] - parts["unlabelled"] + 7.0 * ce.item(), rel=1e-5)
    with pytest.raises(ValueError, match="alpha"):
        ssvae.m2_loss(model, x_l, y_l, x_u, alpha=-1)


def test_bad_inputs_raise():
    model = _deterministic_m2()
    with pytest.raises(ValueError, match="y must hold labels"):
        model.labelled_bound(torch.rand(2, 1, 4, 4), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="x must hold values"):
        model.unlabelled_bound(torch.rand(2, 1, 4, 4) * 2)
    with pytest.raises(ValueError, match="x must have shape"):
        model.classify(torch.rand(2, 16))
    with pytest.raises(ValueError, match="same batch size"):
        model.labelled_bound(torch.rand(2, 1, 4, 4), torch.tensor([0, 1, 2]))


def test_labelled_subset_is_balanced_and_checks_counts():
    y = torch.arange(10).repeat(5)
    idx = ssvae.labelled_subset(y, per_class=3, seed=1)
    assert len(idx) == 30 and len(set(idx.tolist())) == 30
    assert torch.equal(torch.bincount(y[idx], minlength=10), torch.full((10,), 3))
    with pytest.raises(ValueError, match="fewer than per_class"):
        ssvae.labelled_subset(y, per_class=6)


def test_generation_and_analogies_shapes_and_consistency():
    model = _deterministic_m2(seed=3)
    x = torch.rand(2, 1, 4, 4)
    grid = model.analogies(x, torch.tensor([1, 2]))
    assert grid.shape == (2, 4, 1, 4, 4)
    mu, _ = model.encode(x[:1], torch.tensor([1]))
    assert torch.allclose(grid[0, 3], model.generate(mu, torch.tensor([3]))[0])
    assert ((grid >= 0) & (grid <= 1)).all()


def test_m2_learns_two_classes_from_two_labels():
    torch.manual_seed(0)
    proto = torch.zeros(2, 1, 4, 4)
    proto[0, 0, :2] = 1  # top half
    proto[1, 0, 2:] = 1  # bottom half
    labels = torch.randint(2, (200,))
    x = (proto[labels] * 0.8 + 0.2 * torch.rand(200, 1, 4, 4)).clamp(0, 1)
    model = ssvae.M2(x_shape=(1, 4, 4), z_dim=2, num_classes=2, hidden=16)
    one_each = torch.stack([(labels == c).nonzero()[0, 0] for c in range(2)])  # one label per class
    ssvae.train_m2(model, x[one_each], labels[one_each], x, epochs=5, batch_size=50, labelled_batch=2, alpha=1.0,
                   lr=1e-2, device=torch.device("cpu"), progress=False)
    assert ssvae.accuracy(model.classifier, x, labels) > 0.95
    assert math.isfinite(model.unlabelled_bound(x).mean().item())
