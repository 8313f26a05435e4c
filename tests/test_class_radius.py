"""Tests of dgmcourse.class_radius against closed forms (half-spaces, orthants) and scipy."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from dgmcourse import gan
from dgmcourse.class_radius import (class_radius, class_radius_bound, classify_latents, clip_weights,
                                    collision_probability, expected_class_radius, halfspace_expected_radius,
                                    isoperimetric_bound, omega_regulariser, orthant_expected_radius,
                                    train_omega_vae)

torch.set_num_threads(1)


def identity(z):
    return z


def halfspace(a):
    """Two classes: 0 = {z_1 < a}, 1 = {z_1 >= a}."""
    return lambda x: torch.stack([torch.zeros_like(x[:, 0]), x[:, 0] - a], dim=1)


def orthants(m):
    """K = 2^m classes, one per sign pattern of the first m coordinates."""
    signs = torch.tensor([[(k >> i) & 1 for i in range(m)] for k in range(2 ** m)], dtype=torch.float32) * 2 - 1
    return lambda x: x[:, :m] @ signs.T


@pytest.mark.parametrize("a", [0.0, 0.7, 1.5, -2.0])
def test_halfspace_formula_is_mean_absolute_deviation(a):
    ref = sum(integrate.quad(lambda x: abs(x - a) * stats.norm.pdf(x), lo, hi)[0]
              for lo, hi in ((-np.inf, a), (a, np.inf)))
    assert halfspace_expected_radius(a) == pytest.approx(ref, rel=1e-9)
    p = [stats.norm.cdf(a), stats.norm.sf(a)]
    assert isoperimetric_bound(p) == pytest.approx(ref, rel=1e-9)  # half-spaces attain it


def test_orthant_formula_matches_monte_carlo():
    z = np.random.default_rng(0).standard_normal((400_000, 3))
    assert orthant_expected_radius(3) == pytest.approx(np.abs(z).min(1).mean(), abs=2e-3)
    assert orthant_expected_radius(1) == pytest.approx(math.sqrt(2 / math.pi), rel=1e-9)


def test_class_radius_halfspace_per_point_and_mean():
    a = 1.5
    z = torch.randn(3000, 2, generator=torch.Generator().manual_seed(0))
    radii = class_radius(identity, halfspace(a), z, max_radius=8.0)
    exact = (z[:, 0] - a).abs()
    assert (radii >= exact - 1e-5).all()  # an upper bound
    assert (radii - exact).max() <= 8.0 / 12 / 2 ** 8 + 1e-5  # within the bisection resolution
    res = expected_class_radius(identity, halfspace(a), z, max_radius=8.0)
    assert res["ci_low"] < halfspace_expected_radius(a) < res["ci_high"]
    assert res["n_not_found"] == 0 and res["evaluations_per_point"] == 1 + 5 * 20


def test_class_radius_orthants_in_higher_dimension():
    z = torch.randn(1000, 5, generator=torch.Generator().manual_seed(1))  # 2 extra coordinates unused
    radii = class_radius(identity, orthants(3), z)
    torch.testing.assert_close(radii, z[:, :3].abs().min(1).values, atol=6.0 / 12 / 2 ** 8 + 1e-5, rtol=0)
    res = expected_class_radius(identity, orthants(3), z)
    assert abs(res["mean"] - orthant_expected_radius(3)) < 3 * res["std_err"]


def test_random_directions_alone_give_upper_bound():
    """Without the gradient direction the search is looser but still an upper bound."""
    class NoGrad(torch.nn.Module):
        def forward(self, x):
            return halfspace(0.5)(x)
    z = torch.randn(500, 2, generator=torch.Generator().manual_seed(2))
    r_many = class_radius(identity, NoGrad(), z, n_directions=64, max_radius=8.0)
    r_few = class_radius(identity, NoGrad(), z, n_directions=0, max_radius=8.0)
    exact = (z[:, 0] - 0.5).abs()
    assert (r_many >= exact - 1e-5).all() and (r_many - exact).mean() < 0.01
    assert torch.allclose(r_few, exact, atol=1e-2)


def test_not_found_is_inf_and_warns():
    def one_class(x):
        return torch.stack([x[:, 0] * 0 + 1, x[:, 0] * 0], 1) + 0 * x[:, :1]
    z = torch.randn(10, 2)
    assert torch.isinf(class_radius(identity, one_class, z)).all()
    with pytest.warns(UserWarning, match="no other class"), pytest.raises(ValueError, match="max_radius"):
        expected_class_radius(identity, one_class, z)


def test_collision_probability_and_bound():
    p = torch.full((10,), 0.1)
    assert collision_probability(p).item() == pytest.approx(0.1)
    h = math.log(10)
    assert class_radius_bound(p) == pytest.approx(math.log(4 * math.pi * h) / math.sqrt(2 * h))
    rng = np.random.default_rng(0)
    for _ in range(20):  # the chain E[r] <= isoperimetric <= g(||p||^2) under the decay assumption
        q = rng.dirichlet(np.ones(12) * 5)
        if q.max() <= 0.2:
            assert isoperimetric_bound(q) <= class_radius_bound(q) + 1e-12


def test_bound_outside_assumption_warns_and_fails():
    a = 1.5
    p = torch.tensor([stats.norm.cdf(a), stats.norm.sf(a)])
    assert collision_probability(p).item() == pytest.approx(0.8754, abs=1e-4)
    with pytest.warns(UserWarning, match="probability-decay"):
        g = class_radius_bound(p)
    assert g == pytest.approx(0.998, abs=1e-3) and g < halfspace_expected_radius(a)
    with pytest.raises(ValueError, match="probability-decay"):
        class_radius_bound(p, strict=True)


def test_bound_bad_p():
    with pytest.raises(ValueError, match="p must"):
        class_radius_bound([0.5, 0.6])
    with pytest.raises(ValueError, match="p must"):
        class_radius_bound(torch.ones(2, 2) / 4)
    with pytest.raises(ValueError, match="two classes"):
        class_radius_bound([1.0, 0.0])
    with pytest.raises(ValueError, match="z must"):
        class_radius(identity, halfspace(0.0), torch.zeros(3))


def test_classify_latents_sums_to_one():
    probs = classify_latents(identity, orthants(2), torch.tensor([[1.0, 2.0], [-1.0, 0.5]]))
    assert probs.shape == (2, 4)
    assert torch.equal(probs.argmax(1), torch.tensor([3, 2]))
    torch.testing.assert_close(probs.sum(1), torch.ones(2))


def test_omega_known_value_and_gradient():
    images = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 4.0], [1.0, 1.0]])  # pairs (0, 2) and (1, 3)
    codes = torch.tensor([[0.0], [2.0], [1.0], [2.0]], requires_grad=True)
    value = omega_regulariser(images, codes)
    assert value.item() == pytest.approx(1.0 / 25.0)  # second pair: equal codes (0 despite identical images)
    value.backward()
    assert codes.grad[0].item() == pytest.approx(2 * (0 - 1) / 25)
    with pytest.raises(ValueError, match="even"):
        omega_regulariser(images[:3], codes[:3])


def test_clip_weights_and_omega_training_step():
    torch.manual_seed(0)
    from dgmcourse.vae import MLPVAE
    model = MLPVAE(x_shape=(1, 4, 4), z_dim=2, hidden=8)
    x = torch.rand(16, 1, 4, 4)
    history = train_omega_vae(model, x, lam=30.0, clip=0.3, epochs=2, batch_size=8, progress=False,
                              device=torch.device("cpu"))
    assert max(p.abs().max().item() for p in model.parameters()) <= np.float32(0.3)
    assert len(history["train_elbo"]) == 2 and history["omega"][0] > 0
    assert clip_weights is gan.clip_weights  # one implementation, shared with the WGAN critic
    lin = torch.nn.Linear(3, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -0.5, 0.005]] * 3))
    clip_weights(lin, 0.01)
    assert lin.weight[0].tolist() == [pytest.approx(0.01), pytest.approx(-0.01), pytest.approx(0.005)]
    with pytest.raises(ValueError, match="c must be positive"):
        clip_weights(lin, 0.0)
