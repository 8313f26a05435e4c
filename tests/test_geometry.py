"""Tests of dgmcourse.geometry against closed forms (identity map, sphere) and torch.autograd / numpy."""

import math

import numpy as np
import pytest
import torch

from dgmcourse.gan import DCGANGenerator
from dgmcourse.geometry import (condition_number, curve_energy, curve_length, decoder_jacobian,
                                fit_rbf_std, geodesic, geodesic_distance_matrix, geodesic_energy_trace,
                                jacobian_penalty, local_lipschitz, magnification_factor, metric_heatmaps,
                                pullback_metric, straight_line, stochastic_decoder, swap_activations,
                                train_vae_with_jacobian_penalty)
from dgmcourse.vae import MLPVAE, train_vae

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


# --------------------------------------------------------------------------- Jacobian penalty


def _penalty_by_hand(decoder, z, target=None):
    """Brute force: one reverse-mode Jacobian per point (create_graph), G = J^T J, then the formula."""
    metrics = []
    for k in range(len(z)):
        jac = torch.autograd.functional.jacobian(lambda v: decoder(v[None]).reshape(-1), z[k], create_graph=True)
        metrics.append(jac.T @ jac)
    g = torch.stack(metrics)
    c2 = g.diagonal(dim1=1, dim2=2).mean() if target is None else target
    return ((g / c2 - torch.eye(z.shape[1], dtype=g.dtype)) ** 2).sum(dim=(1, 2)).mean()


def _linear(singular_values, seed=0):
    """z -> W z with W = U diag(s) V^T (U: 7 x d, orthonormal columns; V: d x d rotation)."""
    gen = torch.Generator().manual_seed(seed)
    d = len(singular_values)
    u, _ = torch.linalg.qr(torch.randn(7, d, dtype=torch.float64, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen))
    w = u @ torch.diag(torch.tensor(singular_values, dtype=torch.float64)) @ v.T
    return lambda z: z @ w.T


def test_jacobian_penalty_matches_brute_force_value_and_parameter_gradient(mlp):
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 6)).double()
    z = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    params = [net[0].weight, net[0].bias, net[2].weight]  # J does not depend on the last bias
    for target in (None, 0.7):
        value = jacobian_penalty(net, z, target)
        grads = torch.autograd.grad(value, params)
        ref = _penalty_by_hand(net, z, target)
        ref_grads = torch.autograd.grad(ref, params)
        torch.testing.assert_close(value, ref)
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g, r)
        assert all(g.abs().sum() > 0 for g in grads)  # the gradient reaches every layer of the decoder
    torch.testing.assert_close(jacobian_penalty(mlp, z), _penalty_by_hand(mlp, z))  # (B, 3, 4) outputs


def test_jacobian_penalty_closed_form_for_a_linear_decoder():
    z = torch.randn(5, 2, dtype=torch.float64)
    f = _linear([3.0, 0.5])
    kappa = 6.0  # every point: G has eigenvalues 9 and 0.25, c^2 = 4.625
    expected = 2 * ((kappa ** 2 - 1) / (kappa ** 2 + 1)) ** 2
    assert jacobian_penalty(f, z).item() == pytest.approx(expected, rel=1e-12)
    assert jacobian_penalty(f, z).item() == pytest.approx((9 / 4.625 - 1) ** 2 + (0.25 / 4.625 - 1) ** 2, rel=1e-12)
    assert jacobian_penalty(f, z, target=1.0).item() == pytest.approx(8.0 ** 2 + 0.75 ** 2, rel=1e-12)
    assert jacobian_penalty(_linear([2.0, 2.0, 2.0]), torch.randn(3, 3, dtype=torch.float64)).item() < 1e-24
    assert jacobian_penalty(_linear([2.0, 2.0]), z, target=4.0).item() < 1e-24  # c = 2: an exact scaled isometry


def test_jacobian_penalty_is_scale_invariant_and_sees_varying_magnification(mlp):
    z = torch.randn(6, 2, dtype=torch.float64)
    torch.testing.assert_close(jacobian_penalty(lambda v: 10 * mlp(v), z), jacobian_penalty(mlp, z))
    # conformal at every point (kappa = 1) but with a magnification that varies: d^2 E[tr G^2] / E[tr G]^2 - d
    def radial(v):  # complex square v -> v^2: conformal, |J| = 2 |v|
        return torch.stack([v[:, 0] ** 2 - v[:, 1] ** 2, 2 * v[:, 0] * v[:, 1]], dim=1)
    pts = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    lam = torch.tensor([4.0, 36.0], dtype=torch.float64)  # the double eigenvalue 4 |v|^2 at each point
    expected = 4 * (2 * lam ** 2).mean() / (2 * lam).mean() ** 2 - 2
    torch.testing.assert_close(condition_number(radial, pts), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(jacobian_penalty(radial, pts), expected)
    assert jacobian_penalty(radial, pts[:1]).item() < 1e-24


def test_jacobian_penalty_without_forward_mode_support():
    class NoJvpTanh(torch.autograd.Function):  # backward only: forward-mode AD raises NotImplementedError
        @staticmethod
        def forward(x):
            return torch.tanh(x)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(output)

        @staticmethod
        def backward(ctx, grad):
            (y,) = ctx.saved_tensors
            return grad * (1 - y ** 2)

    w = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    z = torch.randn(3, 2, dtype=torch.float64)
    value = jacobian_penalty(lambda v: NoJvpTanh.apply(v @ w.T), z)
    ref = _penalty_by_hand(lambda v: torch.tanh(v @ w.T), z)
    torch.testing.assert_close(value, ref)
    torch.testing.assert_close(torch.autograd.grad(value, w)[0], torch.autograd.grad(ref, w)[0])


def test_jacobian_penalty_bad_input():
    f = _linear([1.0, 2.0])
    with pytest.raises(ValueError, match="z must have shape"):
        jacobian_penalty(f, torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="target"):
        jacobian_penalty(f, torch.zeros(3, 2, dtype=torch.float64), target=0.0)
    with pytest.raises(ValueError, match="target"):
        jacobian_penalty(f, torch.zeros(3, 2, dtype=torch.float64), target=float("nan"))
    with pytest.raises(ValueError, match="not differentiable"):
        jacobian_penalty(lambda z: z.detach() * 2, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="zero on the whole batch"):
        jacobian_penalty(lambda z: 0 * z, torch.zeros(3, 2))


def test_train_with_jacobian_penalty_weight_zero_is_train_vae_and_weight_lowers_penalty():
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(96, 1, 6, 6, generator=gen) > 0.5).float()
    torch.manual_seed(0)
    start = MLPVAE((1, 6, 6), z_dim=2, hidden=16).state_dict()
    models = {}
    for weight in (None, 0.0, 50.0):
        models[weight] = MLPVAE((1, 6, 6), z_dim=2, hidden=16)
        models[weight].load_state_dict(start)
        kwargs = dict(epochs=3, batch_size=32, lr=1e-2, device=torch.device("cpu"), seed=1, progress=False)
        if weight is None:
            train_vae(models[weight], x, x_test=x[:10], **kwargs)
        else:
            hist = train_vae_with_jacobian_penalty(models[weight], x, weight, x_test=x[:10], n_mix=8, **kwargs)
            assert set(hist) == {"train_elbo", "train_recon", "train_kl", "train_penalty", "test_elbo"}
            assert all(len(v) == 3 for v in hist.values())
            models[weight].history = hist
    for a, b in zip(models[None].parameters(), models[0.0].parameters()):
        assert torch.equal(a, b)  # the mixing draws do not touch the global RNG
    assert models[50.0].history["train_penalty"][-1] < 0.5 * models[0.0].history["train_penalty"][-1]
    for kwargs, match in [(dict(weight=-1.0), "weight"), (dict(weight=1.0, n_mix=0), "n_mix"),
                          (dict(weight=1.0, target=-2.0), "target"), (dict(weight=1.0, epochs=0), "epochs")]:
        with pytest.raises(ValueError, match=match):
            train_vae_with_jacobian_penalty(models[0.0], x, **kwargs)


# --------------------------------------------------------------------------- solver traces, architecture variants


def test_energy_trace_lbfgs_is_the_geodesic_solver():
    a = torch.tensor([0.6, 0.0], dtype=torch.float64)
    b = torch.tensor([0.6, 2.0], dtype=torch.float64)
    curve, energies = geodesic_energy_trace(sphere, a, b, n_points=17, steps=60)
    torch.testing.assert_close(curve, geodesic(sphere, a, b, n_points=17, steps=60), rtol=0, atol=0)
    assert energies.dtype == torch.float64 and 2 <= len(energies) <= 60 * 5 // 4
    assert energies[0].item() == pytest.approx(curve_energy(sphere, straight_line(a, b, 17)).item(), rel=1e-12)
    final = curve_energy(sphere, curve).item()
    assert energies.min().item() == pytest.approx(final, rel=1e-9)     # the solver ends at its best evaluation
    assert final == pytest.approx(great_circle(a, b) ** 2, rel=2e-3)   # and that is the great circle's energy
    assert energies[0].item() > 1.1 * final                           # starting from the (longer) parallel


@pytest.mark.parametrize("mode, step_factor", [(1, 0.5), (7, 0.9), (7, 1.1)])
def test_energy_trace_gd_closed_form_for_the_identity_decoder(mode, step_factor):
    # E = T sum_k |c_{k+1} - c_k|^2 is quadratic with Hessian 2 T L (L = tridiag(-1, 2, -1)); the perturbation
    # eps sin(pi m k / T) of the straight line is an eigenvector of L with eigenvalue mu = 2 - 2 cos(pi m / T),
    # so gradient descent multiplies it by r = 1 - 2 T lr mu per step: stable iff lr < 1 / (T mu). The step is
    # step_factor times the largest stable step for the fastest mode m = T - 1 (round-off excites every mode).
    n_points, steps, eps = 9, 12, 0.3
    T = n_points - 1
    z0, z1 = torch.tensor([0.0, 0.0], dtype=torch.float64), torch.tensor([1.0, 0.5], dtype=torch.float64)
    k = torch.arange(n_points, dtype=torch.float64)
    bump = eps * torch.sin(math.pi * mode * k / T)
    init = straight_line(z0, z1, n_points) + bump[:, None] * torch.tensor([0.6, -0.8], dtype=torch.float64)
    mu = 2 - 2 * math.cos(math.pi * mode / T)
    lr = step_factor / (T * (2 - 2 * math.cos(math.pi * (T - 1) / T)))
    r = 1 - 2 * T * lr * mu
    excess0 = T * (bump[1:] - bump[:-1]).pow(2).sum().item()
    expected = torch.tensor([1.25 + excess0 * r ** (2 * n) for n in range(steps + 1)], dtype=torch.float64)
    curve, energies = geodesic_energy_trace(identity, z0, z1, n_points, steps, method="gd", lr=lr, init=init)
    torch.testing.assert_close(energies, expected, rtol=1e-10, atol=1e-12)
    assert torch.equal(curve[0], z0) and torch.equal(curve[-1], z1)
    line = straight_line(z0, z1, n_points)
    torch.testing.assert_close(curve, line + r ** steps * (init - line), rtol=1e-10, atol=1e-12)
    assert (energies[-1] > energies[0]) == (step_factor > 1)  # above the stable step the descent diverges


def test_energy_trace_gd_stops_at_a_non_finite_energy_and_trivial_cases():
    z0, z1 = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0])
    init = straight_line(z0, z1, 5) + torch.tensor([0.0, 0.1, -0.1, 0.1, 0.0])[:, None] * torch.tensor([0.0, 1.0])
    _, energies = geodesic_energy_trace(identity, z0, z1, 5, steps=100, method="gd", lr=1e6, init=init)
    assert len(energies) < 101 and not math.isfinite(energies[-1].item()) and torch.isfinite(energies[:-1]).all()
    for n_points, steps in ((2, 50), (6, 0)):
        curve, energies = geodesic_energy_trace(sphere, z0, z1, n_points, steps)
        torch.testing.assert_close(curve, straight_line(z0, z1, n_points))
        torch.testing.assert_close(energies, curve_energy(sphere, curve).double()[None])


def test_energy_trace_bad_input():
    z0, z1 = torch.zeros(2), torch.ones(2)
    for kwargs, match in [(dict(method="adam"), "method"), (dict(method="gd"), "lr"),
                          (dict(method="gd", lr=0.0), "lr"), (dict(lr=float("inf")), "lr"), (dict(steps=-1), "steps"),
                          (dict(n_points=4, init=torch.zeros(5, 2)), r"init must be a \(4, 2\)"),
                          (dict(n_points=3, init=torch.zeros(3, 2)), "from z0"), (dict(n_points=1), "n_points")]:
        with pytest.raises(ValueError, match=match):
            geodesic_energy_trace(identity, z0, z1, **kwargs)
    with pytest.raises(ValueError, match="latent dimension"):
        geodesic_energy_trace(identity, z0, torch.ones(3))


def test_swap_activations_replaces_relu_only_and_keeps_the_weights():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(),
                              torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()), torch.nn.Linear(8, 2),
                              torch.nn.Sigmoid())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert swap_activations(net, torch.nn.Tanh) is net
    assert not any(isinstance(m, torch.nn.ReLU) for m in net.modules())
    assert sum(isinstance(m, torch.nn.Tanh) for m in net.modules()) == 2
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    x = torch.randn(4, 3)
    lin1, lin2, lin3 = net[0], net[2][0], net[3]
    torch.testing.assert_close(net(x), torch.sigmoid(lin3(torch.tanh(lin2(torch.tanh(lin1(x)))))))
    gen = DCGANGenerator(z_dim=2, channels=4)
    swap_activations(gen, lambda: torch.nn.ELU(alpha=0.5))
    elus = [m for m in gen.modules() if isinstance(m, torch.nn.ELU)]
    assert len(elus) == 2 and elus[0] is not elus[1] and elus[0].alpha == 0.5
    assert isinstance(gen.net[-1], torch.nn.Tanh)  # the output non-linearity is not a hidden ReLU: kept
    with pytest.raises(ValueError, match="no ReLU"):
        swap_activations(net, torch.nn.Tanh)
    with pytest.raises(ValueError, match="without arguments"):
        swap_activations(MLPVAE(z_dim=2, hidden=4), torch.tanh)
    with pytest.raises(ValueError, match="must return"):
        swap_activations(MLPVAE(z_dim=2, hidden=4), lambda: torch.tanh)
    with pytest.raises(ValueError, match="module must be"):
        swap_activations(lambda z: z, torch.nn.Tanh)
