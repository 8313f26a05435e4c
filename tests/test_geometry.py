"""Tests of dgmcourse.geometry against closed forms (identity map, sphere) and torch.autograd / numpy."""

import math

import numpy as np
import pytest
import torch

from dgmcourse.geometry import (condition_number, curve_energy, curve_length, decoder_jacobian,
                                fit_rbf_std, geodesic, geodesic_distance_matrix, local_lipschitz,
                                magnification_factor, metric_heatmaps, pullback_metric, straight_line,
                                stochastic_decoder)

torch.set_num_threads(1)


def identity(z):
    return z


def sphere(z):
    """(latitude, longitude) -> point of the unit sphere in R^3; metric diag(1, cos^2 lat)."""
    lat, lon = z[:, 0], z[:, 1]
    return torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], dim=1)


def great_circle(a, b):
    (la, oa), (lb, ob) = a.tolist(), b.tolist()
    return math.acos(math.sin(la) * math.sin(lb) + math.cos(la) * math.cos(lb) * math.cos(ob - oa))


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, 12)).double()
    return lambda z: net(z).reshape(len(z), 3, 4)


def test_jacobian_matches_autograd(mlp):
    z = torch.randn(5, 2, dtype=torch.float64)
    jac = decoder_jacobian(mlp, z)
    assert jac.shape == (5, 12, 2)
    for k in range(5):
        ref = torch.autograd.functional.jacobian(lambda v: mlp(v[None]).reshape(-1), z[k])
        torch.testing.assert_close(jac[k], ref)


def test_metric_magnification_condition_match_numpy(mlp):
    z = torch.randn(6, 2, dtype=torch.float64)
    jac = decoder_jacobian(mlp, z).numpy()
    g = pullback_metric(mlp, z).numpy()
    np.testing.assert_allclose(g, np.einsum("bdi,bdj->bij", jac, jac), rtol=1e-10)
    np.testing.assert_allclose(magnification_factor(mlp, z).numpy(), np.sqrt(np.linalg.det(g)), rtol=1e-8)
    np.testing.assert_allclose(condition_number(mlp, z).numpy(), np.linalg.cond(jac), rtol=1e-8)
    np.testing.assert_allclose(local_lipschitz(mlp, z).numpy(), np.linalg.norm(jac, ord=2, axis=(1, 2)), rtol=1e-8)


def test_sphere_metric_closed_form():
    z = torch.tensor([[0.6, 0.3], [-1.0, 2.0]], dtype=torch.float64)
    g = pullback_metric(sphere, z)
    expected = torch.diag_embed(torch.stack([torch.ones(2, dtype=torch.float64), z[:, 0].cos() ** 2], 1))
    torch.testing.assert_close(g, expected)
    torch.testing.assert_close(magnification_factor(sphere, z), z[:, 0].cos())
    torch.testing.assert_close(condition_number(sphere, z), 1 / z[:, 0].cos())
    torch.testing.assert_close(local_lipschitz(sphere, z), torch.ones(2, dtype=torch.float64))


def test_heatmaps_grid_layout():
    def scale(z):  # J = [[1,0],[0,2],[z2,z1]]
        return torch.stack([z[:, 0], 2 * z[:, 1], z[:, 0] * z[:, 1]], 1)

    h = metric_heatmaps(scale, xlim=(-1, 1), ylim=(0, 2), n=5)
    i, j = 4, 1  # row i is z2 = h["z2"][i], column j is z1 = h["z1"][j]
    z = torch.tensor([[h["z1"][j], h["z2"][i]]])
    torch.testing.assert_close(h["magnification"][i, j], magnification_factor(scale, z)[0])
    torch.testing.assert_close(h["condition"][i, j], condition_number(scale, z)[0])


def test_identity_geodesic_is_straight_line():
    z0, z1 = torch.tensor([0.0, 1.0]), torch.tensor([2.0, -1.5])
    curve = geodesic(identity, z0, z1, n_points=12)
    torch.testing.assert_close(curve, straight_line(z0, z1, 12))
    sq = (z1 - z0).pow(2).sum()
    torch.testing.assert_close(curve_energy(identity, curve), sq)
    torch.testing.assert_close(curve_length(identity, curve), sq.sqrt())


def test_energy_at_least_length_squared_equality_at_constant_speed():
    z0, z1 = torch.tensor([0.0, 0.0]), torch.tensor([3.0, 4.0])
    uneven = z0 + torch.tensor([0.0, 0.1, 0.5, 0.6, 1.0])[:, None] * (z1 - z0)
    assert curve_length(identity, uneven).item() == pytest.approx(5.0)
    assert curve_energy(identity, uneven).item() == pytest.approx(4 * 25 * (0.01 + 0.16 + 0.01 + 0.16))
    assert curve_energy(identity, uneven) > curve_length(identity, uneven) ** 2 + 1
    even = straight_line(z0, z1, 5)
    assert curve_energy(identity, even).item() == pytest.approx(curve_length(identity, even).item() ** 2)


def test_sphere_geodesic_is_great_circle():
    a = torch.tensor([0.6, 0.0], dtype=torch.float64)
    b = torch.tensor([0.6, 2.0], dtype=torch.float64)
    line = straight_line(a, b, 64)
    curve = geodesic(sphere, a, b, n_points=64, steps=300)
    exact = great_circle(a, b)
    assert curve_length(sphere, line).item() > exact + 0.1  # the parallel is much longer
    assert curve_length(sphere, curve).item() == pytest.approx(exact, rel=1e-3)
    assert curve_energy(sphere, curve).item() == pytest.approx(exact ** 2, rel=2e-3)  # constant speed
    assert curve[1:-1, 0].max() > 0.9  # the great circle bends towards the pole


def test_distance_matrix_identity_and_sphere():
    z = torch.tensor([[0.0, 0.0], [1.0, 0.5], [-0.5, 2.0]], dtype=torch.float64)
    d_id = geodesic_distance_matrix(identity, z, n_points=6)
    torch.testing.assert_close(d_id, torch.cdist(z, z))
    d_sph = geodesic_distance_matrix(sphere, z, n_points=48, steps=300)
    assert torch.equal(d_sph, d_sph.T) and (d_sph.diagonal() == 0).all()
    assert d_sph[0, 2].item() == pytest.approx(great_circle(z[0], z[2]), rel=1e-3)


def test_zero_length_geodesic():
    z0 = torch.tensor([0.3, -0.2])
    curve = geodesic(sphere, z0, z0.clone(), n_points=5)
    assert torch.equal(curve, z0.expand(5, 2))
    assert curve_length(sphere, curve).item() == 0.0


def test_rbf_std_grows_away_from_data():
    torch.manual_seed(0)
    z_train = torch.randn(200, 2) * 0.5
    x_train = torch.sin(z_train @ torch.randn(2, 6)) + 0.05 * torch.randn(200, 6)
    w = torch.randn(2, 6)

    def mean_fn(z):
        return torch.sin(z @ w)

    std = fit_rbf_std(z_train, x_train, mean_fn, n_centres=8, steps=200)
    near, far = std(torch.zeros(1, 2)), std(torch.tensor([[6.0, 6.0]]))
    assert far.min() > 5 * near.max()
    torch.testing.assert_close(far, torch.full_like(far, 0.01 ** -0.5), rtol=1e-3, atol=0)
    dec = stochastic_decoder(mean_fn, std)
    z = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    jm, js = decoder_jacobian(mean_fn, z), decoder_jacobian(std, z)
    torch.testing.assert_close(pullback_metric(dec, z), jm.mT @ jm + js.mT @ js)
    assert magnification_factor(dec, z[1:]) > 10 * magnification_factor(mean_fn, z[1:])


def test_bad_input():
    with pytest.raises(ValueError, match="latent dimension"):
        geodesic(sphere, torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="z must have shape"):
        pullback_metric(sphere, torch.zeros(2))
    with pytest.raises(ValueError, match="not differentiable"):
        decoder_jacobian(lambda z: z.detach() * 2, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="not differentiable"):
        magnification_factor(lambda z: torch.as_tensor(z.detach().numpy() ** 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="curve"):
        curve_energy(identity, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="n must be"):
        metric_heatmaps(sphere, n=1)
