"""Tests of dgmcourse.flow_matching against closed forms, autograd, scipy and POT.

Monte Carlo checks are seeded and allow K_SE = 6 standard errors (estimated from the samples): a correct
implementation fails any of them with probability below 1e-7 whatever the random stream, while the errors they
guard against (a wrong coefficient, the wrong target, a mis-weighted posterior) move the estimates by tens of
standard errors. The exact marginal field of a mixture is checked three ways: against the closed form for one
Gaussian, against the continuity equation of the mixture path, and as the minimiser of the CFM objective. The
straightness of a trajectory is checked on curves with closed-form values, the training loop by replaying its draws
and by the loss floor of each coupling.
"""

import itertools
import math

import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from dgmcourse import flow_matching as F
from dgmcourse import sde as S

torch.set_num_threads(1)
K_SE = 6.0
# a 2-D mixture with unequal weights and widths
MEANS = torch.tensor([[-1.5, 0.0], [1.0, 1.0], [0.5, -1.5]], dtype=torch.float64)
SIGMAS = torch.tensor([0.4, 0.6, 0.3], dtype=torch.float64)
WEIGHTS = torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64)


def _sample_mixture(n: int, generator: torch.Generator) -> torch.Tensor:
    k = torch.multinomial(WEIGHTS, n, replacement=True, generator=generator)
    return MEANS[k] + SIGMAS[k, None] * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def _path_log_density(x: torch.Tensor, t: float, path: F.GaussianPath) -> torch.Tensor:
    """log p_t(x) of the marginal path of the mixture: sum_k w_k N(alpha_t mu_k, (alpha_t^2 s_k^2 + sigma_t^2) I)."""
    alpha, sigma, _, _ = path.coefficients(torch.tensor(t, dtype=torch.float64))
    loc = alpha * MEANS
    scale = torch.sqrt(alpha ** 2 * SIGMAS ** 2 + sigma ** 2).unsqueeze(-1).expand_as(loc)
    return MixtureSameFamily(Categorical(probs=WEIGHTS), Independent(Normal(loc, scale), 1)).log_prob(x)


# ------------------------------------------------------------------------------------ paths
def test_linear_path_is_eqs_20_to_23_by_hand():
    path = F.linear_path(0.1)
    alpha, sigma, d_alpha, d_sigma = path.coefficients(0.25)
    assert (alpha.item(), sigma.item(), d_alpha.item(), d_sigma.item()) == pytest.approx((0.25, 0.775, 1.0, -0.9))
    x0 = torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=torch.float64)
    x1 = torch.tensor([[3.0, 1.0], [-1.0, 2.0]], dtype=torch.float64)
    t = torch.tensor([0.25, 0.6], dtype=torch.float64)
    xt = F.conditional_flow(x0, x1, t, path)
    torch.testing.assert_close(xt, torch.tensor([[0.775 * 1 + 0.75, 0.775 * -2 + 0.25],
                                                 [0.46 * 0.5 - 0.6, 1.2]], dtype=torch.float64))
    # eq. 21 at any x, and at x = psi_t(x0) the constant target of eq. 23
    x = torch.tensor([[0.3, 0.7], [2.0, -1.0]], dtype=torch.float64)
    eq21 = (x1 - 0.9 * x) / (1 - 0.9 * t[:, None])
    torch.testing.assert_close(F.conditional_vector_field(x, x1, t, path), eq21)
    torch.testing.assert_close(F.conditional_vector_field(xt, x1, t, path), x1 - 0.9 * x0)
    # sigma_min = 0: rectified flow's interpolation (1 - t) x0 + t x1
    torch.testing.assert_close(F.conditional_flow(x0, x1, 0.3, F.linear_path()), 0.7 * x0 + 0.3 * x1)


@pytest.mark.parametrize("path", [F.linear_path(0.05), F.vp_path()], ids=["linear", "vp"])
def test_path_derivatives_are_the_derivatives(path):
    t, h = torch.tensor([0.0 + 1e-3, 0.3, 0.7, 0.95], dtype=torch.float64), 1e-6
    alpha, sigma, d_alpha, d_sigma = path.coefficients(t)
    torch.testing.assert_close(d_alpha, (path.alpha(t + h) - path.alpha(t - h)) / (2 * h), rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(d_sigma, (path.sigma(t + h) - path.sigma(t - h)) / (2 * h), rtol=1e-7, atol=1e-8)
    assert path.coefficients(0.0)[1].item() == pytest.approx(1.0, abs=1e-4)  # noise at t = 0


def test_vp_path_is_the_vp_sde_read_backwards():
    sde, path = S.VPSDE(0.1, 20.0), F.vp_path(0.1, 20.0)
    t = torch.tensor([0.0, 0.2, 0.5, 0.9, 0.999], dtype=torch.float64)
    scale, std = sde.scale_std(1 - t)
    alpha, sigma, _, _ = path.coefficients(t)
    torch.testing.assert_close(alpha, scale, rtol=1e-12, atol=0)
    torch.testing.assert_close(sigma, std, rtol=1e-12, atol=0)
    # the marginal field is minus the probability-flow drift at time 1 - t (Lipman et al., sec. 4.1)
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2
    for time in (0.1, 0.5, 0.9):
        field = F.marginal_vector_field(x, time, path, MEANS, SIGMAS, WEIGHTS)
        score = lambda y, s: S.mixture_marginal_score(sde, y, s, MEANS, SIGMAS, WEIGHTS)  # noqa: E731
        torch.testing.assert_close(field, -S.probability_flow_drift(sde, score, x, 1 - time), rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------ the exact marginal field
@pytest.mark.parametrize("sigma_min", [0.0, 0.1])
def test_marginal_field_of_one_gaussian_in_closed_form(sigma_min):
    """x1 ~ N(mu, s^2 I): p_t = N(t mu, v_t I), v_t = sigma_t^2 + t^2 s^2, and u_t(x) = mu + v_t'/(2 v_t) (x - t mu)."""
    mu, s = torch.tensor([[1.0, -2.0]], dtype=torch.float64), 0.7
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    for t in (0.0, 0.3, 0.8, 1.0):
        sigma, d_sigma = 1 - (1 - sigma_min) * t, -(1 - sigma_min)
        expected = mu + (sigma * d_sigma + t * s ** 2) / (sigma ** 2 + t ** 2 * s ** 2) * (x - t * mu)
        torch.testing.assert_close(F.marginal_vector_field(x, t, F.linear_path(sigma_min), mu, s), expected)
    # t = 0: u_0(x) = E[x1] - (1 - sigma_min) x; t = 1, sigma_min = 0: u_1(x) = x
    torch.testing.assert_close(F.marginal_vector_field(x, 0.0, F.linear_path(sigma_min), mu, s),
                               mu - (1 - sigma_min) * x)
    if sigma_min == 0:
        torch.testing.assert_close(F.marginal_vector_field(x, 1.0, F.linear_path(), mu, s), x)


@pytest.mark.parametrize("path", [F.linear_path(0.05), F.linear_path(), F.vp_path()], ids=["linear", "ot", "vp"])
def test_marginal_field_solves_the_continuity_equation_of_the_mixture_path(path):
    """d/dt log p_t + u . grad log p_t + div u = 0 (the continuity equation), by finite differences and autograd."""
    x = (torch.randn(8, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.5).requires_grad_()
    largest = 0.0
    for t in (0.2, 0.5, 0.85):
        h = 1e-5
        dlogp_dt = (_path_log_density(x, t + h, path) - _path_log_density(x, t - h, path)) / (2 * h)
        grad_logp = torch.autograd.grad(_path_log_density(x, t, path).sum(), x)[0]
        u = F.marginal_vector_field(x, t, path, MEANS, SIGMAS, WEIGHTS)
        div = sum(torch.autograd.grad(u[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(2))
        residual = dlogp_dt + (u * grad_logp).sum(1) + div
        assert residual.abs().max().item() < 1e-6, (t, residual)
        largest = max(largest, div.abs().max().item(), dlogp_dt.abs().max().item())
    assert largest > 0.5  # the check is not vacuous


def test_cfm_target_regressed_on_x_is_the_marginal_field():
    """The minimiser of E||v(x_t, t) - u_t(x_t|x_1)||^2 is E[u_t(x|x_1) | x_t = x]: estimated on a grid of (x, t) by
    weighting data draws with p_t(x | x_1) (self-normalised importance sampling), standard error by the delta method."""
    g = torch.Generator().manual_seed(2)
    x1 = _sample_mixture(40_000, g)
    path = F.linear_path(0.05)
    grid = torch.tensor([[-1.0, 0.0], [0.5, 0.5], [0.0, -0.8], [0.8, 1.0]], dtype=torch.float64)
    for t in (0.2, 0.5, 0.7):
        alpha, sigma, _, _ = path.coefficients(t)
        exact = F.marginal_vector_field(grid, t, path, MEANS, SIGMAS, WEIGHTS)
        for x, u_exact in zip(grid, exact):
            log_w = -0.5 * (x - alpha * x1).pow(2).sum(1) / sigma ** 2
            w = torch.softmax(log_w, 0)
            u = F.conditional_vector_field(x.expand_as(x1), x1, t, path)
            estimate = (w[:, None] * u).sum(0)
            se = ((w[:, None] ** 2) * (u - estimate) ** 2).sum(0).sqrt()
            assert 1 / (w ** 2).sum() > 300  # enough effective samples for the delta method
            assert torch.all((estimate - u_exact).abs() <= K_SE * se), (t, x, estimate, u_exact, se)


def test_cfm_loss_value_and_its_minimiser():
    g = torch.Generator().manual_seed(4)
    n, path = 50_000, F.linear_path(0.1)
    x1, x0 = _sample_mixture(n, g), torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64)
    target = x1 - 0.9 * x0  # eq. 23
    xt = (1 - 0.9 * t[:, None]) * x0 + t[:, None] * x1
    seen = {}

    def v_star(x, time):
        seen["x"], seen["t"] = x, time
        return F.marginal_vector_field(x, time, path, MEANS, SIGMAS, WEIGHTS)

    loss = F.cfm_loss(v_star, x1, path, t=t, x0=x0)
    torch.testing.assert_close(seen["x"], xt)
    torch.testing.assert_close(seen["t"], t)
    residual = v_star(xt, t) - target
    assert loss.item() == pytest.approx(residual.pow(2).sum(1).mean().item(), rel=1e-12)
    # any perturbation c(x, t) raises the loss by E||c||^2: the cross term E[c . (u* - target)] vanishes
    perturbations = [lambda x, s: 0.3 * torch.ones_like(x), lambda x, s: torch.sin(x) * s[:, None],
                     lambda x, s: x.flip(1) * (1 - s[:, None])]
    for c in perturbations:
        shifted = F.cfm_loss(lambda x, s: v_star(x, s) + c(x, s), x1, path, t=t, x0=x0)
        cross = 2 * (c(xt, t) * residual).sum(1)
        excess = shifted - loss - c(xt, t).pow(2).sum(1).mean()
        assert excess.item() == pytest.approx(cross.mean().item(), abs=1e-9)
        assert abs(cross.mean().item()) <= K_SE * cross.std().item() / math.sqrt(n)
    # a field of another path does not minimise it: its cross term is many standard errors away
    wrong = F.cfm_loss(lambda x, s: F.marginal_vector_field(x, s, F.linear_path(), MEANS, SIGMAS, WEIGHTS),
                       x1, path, t=t, x0=x0)
    assert wrong.item() > loss.item() + 0.01


def test_cfm_loss_draws_are_seeded_and_gradients_flow():
    model = torch.nn.Linear(3, 2).double()
    v = lambda x, t: model(torch.cat([x, t[:, None]], 1))  # noqa: E731
    x1 = _sample_mixture(64, torch.Generator().manual_seed(0))
    a = F.cfm_loss(v, x1, F.linear_path(), generator=torch.Generator().manual_seed(5))
    b = F.cfm_loss(v, x1, F.linear_path(), generator=torch.Generator().manual_seed(5))
    assert a.item() == b.item() and a.dim() == 0
    a.backward()
    assert model.weight.grad.abs().sum() > 0
    # a scalar t is one time for the whole batch
    assert F.cfm_loss(v, x1, F.linear_path(), t=0.5, x0=torch.zeros_like(x1)).item() == pytest.approx(
        (v(0.5 * x1, torch.full((64,), 0.5, dtype=torch.float64)) - x1).pow(2).sum(1).mean().item())


# ------------------------------------------------------------------------------------ samplers
def test_euler_is_first_order_and_heun_second_order_on_dx_dt_minus_x():
    x0 = torch.tensor([[1.0], [-2.0]], dtype=torch.float64)
    v = lambda x, t: -x  # noqa: E731
    errors = {}
    for n in (20, 40, 80):
        h = 1 / n
        euler = F.euler_sample(v, x0, n, progress=False)
        heun = F.heun_sample(v, x0, n, progress=False)
        torch.testing.assert_close(euler, (1 - h) ** n * x0, rtol=1e-13, atol=0)  # the schemes' own closed forms
        torch.testing.assert_close(heun, (1 - h + h ** 2 / 2) ** n * x0, rtol=1e-13, atol=0)
        errors[n] = ((euler - math.exp(-1) * x0).abs().max().item(), (heun - math.exp(-1) * x0).abs().max().item())
    for n in (20, 40):
        assert errors[n][0] / errors[2 * n][0] == pytest.approx(2, rel=0.05)  # O(h)
        assert errors[n][1] / errors[2 * n][1] == pytest.approx(4, rel=0.05)  # O(h^2)
    assert errors[80][1] < errors[80][0] / 100
    # backwards from t = 1 to t = 0 undoes the decay; the time argument reaches the model
    back = F.heun_sample(v, x0, 40, t_start=1.0, t_end=0.0, progress=False)
    torch.testing.assert_close(back, (1 + 1 / 40 + 1 / 3200) ** 40 * x0, rtol=1e-13, atol=0)
    drift = lambda x, t: t[:, None].expand_as(x)  # dx/dt = t: x(1) = x(0) + 1/2  # noqa: E731
    torch.testing.assert_close(F.euler_sample(drift, x0, 10, progress=False), x0 + 0.45)  # sum of left points
    torch.testing.assert_close(F.heun_sample(drift, x0, 10, progress=False), x0 + 0.5)  # trapezoid: exact


def test_trajectory_and_sampler_errors():
    x0 = torch.zeros(3, 2)
    path = F.euler_sample(lambda x, t: torch.ones_like(x), x0, 4, return_trajectory=True, progress=False)
    assert path.shape == (5, 3, 2)
    torch.testing.assert_close(path[:, 0, 0], torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    assert F.heun_sample(lambda x, t: x, x0, 3, return_trajectory=True, progress=False).shape == (4, 3, 2)
    with pytest.raises(ValueError, match="n_steps must be a positive integer"):
        F.euler_sample(lambda x, t: x, x0, 0)
    with pytest.raises(ValueError, match="n_steps must be a positive integer"):
        F.heun_sample(lambda x, t: x, x0, 2.0)
    with pytest.raises(ValueError, match="t_end must be a finite float"):
        F.euler_sample(lambda x, t: x, x0, 2, t_end=math.nan)
    with pytest.raises(ValueError, match="v_model must return a tensor of the input's shape"):
        F.heun_sample(lambda x, t: x[:, :1], x0, 2)
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        F.euler_sample(lambda x, t: x, torch.zeros(3, 2, dtype=torch.long), 2)


# ----------------------------------------------------------------------------------- couplings
def test_ot_coupling_on_hand_checked_batches():
    x0 = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    x1 = torch.tensor([[10.0, 1.0], [0.0, 1.0]])
    paired, same = F.ot_coupling(x0, x1)
    assert same is x1
    torch.testing.assert_close(paired, torch.tensor([[10.0, 0.0], [0.0, 0.0]]))
    torch.testing.assert_close(F.ot_plan(x0, x1), torch.tensor([[0.0, 0.5], [0.5, 0.0]], dtype=torch.float64))
    # in 1-D the optimal pairing is monotone: sorted sources to sorted targets
    a, b = torch.tensor([[3.0], [-1.0], [2.0], [0.0]]), torch.tensor([[10.0], [-5.0], [1.0], [7.0]])
    torch.testing.assert_close(F.ot_coupling(a, b)[0], torch.tensor([[3.0], [-1.0], [0.0], [2.0]]))
    # unequal batches: each source splits its mass between its two neighbours
    a, b = torch.tensor([[0.0], [10.0]]), torch.tensor([[-1.0], [1.0], [9.0], [11.0]])
    plan = F.ot_plan(a, b)
    torch.testing.assert_close(plan, torch.tensor([[0.25, 0.25, 0, 0], [0, 0, 0.25, 0.25]], dtype=torch.float64))
    for seed in range(5):
        pa, pb = F.ot_coupling(a, b, replace=True, generator=torch.Generator().manual_seed(seed))
        assert pa.shape == (2, 1) and torch.all((pa - pb).abs() == 1)  # every drawn pair is in the plan's support


def test_ot_coupling_minimises_the_cost_like_brute_force_and_scipy():
    g = torch.Generator().manual_seed(6)
    x0, x1 = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g) + 1
    paired, _ = F.ot_coupling(x0, x1)
    cost = (paired - x1).pow(2).sum(1).sum().item()
    cost_matrix = torch.cdist(x0.double(), x1.double()).pow(2).numpy()
    brute = min(sum(cost_matrix[p[j], j] for j in range(6)) for p in itertools.permutations(range(6)))
    rows, cols = linear_sum_assignment(cost_matrix)
    assert cost == pytest.approx(brute, rel=1e-6)
    assert cost == pytest.approx(cost_matrix[rows, cols].sum(), rel=1e-6)
    assert cost < (x0 - x1).pow(2).sum().item()  # better than the independent pairing
    plan = F.ot_plan(x0, x1)
    assert plan.sum(0).numpy() == pytest.approx(np.full(6, 1 / 6)) and plan.sum(1).numpy() == pytest.approx(
        np.full(6, 1 / 6))
    assert (plan * torch.from_numpy(cost_matrix)).sum().item() == pytest.approx(
        ot.emd2(np.full(6, 1 / 6), np.full(6, 1 / 6), cost_matrix), rel=1e-9)


def test_reflow_of_gaussian_data_is_the_monotone_affine_map_and_pairs_like_ot():
    """For x1 ~ N(mu, s^2 I) the marginal field of the linear path is affine and its flow maps x0 to mu + s x0."""
    mu, s = torch.tensor([[1.0, -2.0]], dtype=torch.float64), 0.5
    x0 = torch.randn(200, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    field = lambda x, t: F.marginal_vector_field(x, t, F.linear_path(), mu, s)  # noqa: E731
    z0, z1 = F.reflow_coupling(field, x0, n_steps=100, progress=False)
    assert z0 is x0
    torch.testing.assert_close(z1, mu + s * x0, rtol=0, atol=1e-4)
    # 1-D mixture: the flow is monotone, so its pairs are already the optimal transport pairing of the batch
    means, sigmas = torch.tensor([[-2.0], [1.0]], dtype=torch.float64), torch.tensor([0.3, 0.5], dtype=torch.float64)
    a = torch.randn(100, 1, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    _, b = F.reflow_coupling(lambda x, t: F.marginal_vector_field(x, t, F.linear_path(), means, sigmas), a,
                             n_steps=100, method="euler", progress=False)
    order = a[:, 0].argsort()
    assert torch.all(b[order, 0].diff() > 0)
    torch.testing.assert_close(F.ot_coupling(a, b)[0], a)
    assert (b < 0).double().mean().item() == pytest.approx(0.5, abs=0.15)  # both modes are reached


# ------------------------------------------------------------- the path's density, straightness, a model
@pytest.mark.parametrize("path", [F.linear_path(0.05), F.linear_path(), F.vp_path()], ids=["linear", "ot", "vp"])
def test_marginal_log_prob_is_the_mixture_path_density(path):
    x = torch.randn(9, 2, generator=torch.Generator().manual_seed(11), dtype=torch.float64) * 1.5
    for t in (0.0, 0.3, 0.7, 0.95):
        torch.testing.assert_close(F.marginal_log_prob(x, t, path, MEANS, SIGMAS, WEIGHTS),
                                   _path_log_density(x, t, path), rtol=1e-12, atol=1e-12)
    # one time per point
    t = torch.tensor([0.1, 0.4, 0.9] * 3, dtype=torch.float64)
    rows = torch.stack([F.marginal_log_prob(x[i:i + 1], t[i].item(), path, MEANS, SIGMAS, WEIGHTS)[0]
                        for i in range(9)])
    torch.testing.assert_close(F.marginal_log_prob(x, t, path, MEANS, SIGMAS, WEIGHTS), rows)


def test_marginal_log_prob_ends_and_the_vp_sde():
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    standard = -0.5 * x.pow(2).sum(1) - math.log(2 * math.pi)
    torch.testing.assert_close(F.marginal_log_prob(x, 0.0, F.linear_path(), MEANS, SIGMAS, WEIGHTS), standard)
    data = MixtureSameFamily(Categorical(probs=WEIGHTS), Independent(Normal(MEANS, SIGMAS[:, None].expand(3, 2)), 1))
    torch.testing.assert_close(F.marginal_log_prob(x, 1.0, F.linear_path(), MEANS, SIGMAS, WEIGHTS), data.log_prob(x))
    sde = S.VPSDE(0.1, 20.0)
    for t in (0.1, 0.5, 0.9):
        torch.testing.assert_close(F.marginal_log_prob(x, t, F.vp_path(0.1, 20.0), MEANS, SIGMAS, WEIGHTS),
                                   S.mixture_marginal_log_prob(sde, x, 1 - t, MEANS, SIGMAS, WEIGHTS),
                                   rtol=1e-10, atol=1e-10)
    # with marginal_vector_field it solves the continuity equation d/dt log p + u . grad log p + div u = 0
    y = x.clone().requires_grad_()
    path, t, h = F.linear_path(), 0.6, 1e-5
    dlogp_dt = (F.marginal_log_prob(y, t + h, path, MEANS, SIGMAS, WEIGHTS)
                - F.marginal_log_prob(y, t - h, path, MEANS, SIGMAS, WEIGHTS)) / (2 * h)
    grad = torch.autograd.grad(F.marginal_log_prob(y, t, path, MEANS, SIGMAS, WEIGHTS).sum(), y)[0]
    u, div = S.exact_divergence(lambda z: F.marginal_vector_field(z, t, path, MEANS, SIGMAS, WEIGHTS), x)
    residual = dlogp_dt.detach() + (u * grad).sum(1) + div
    assert residual.abs().max().item() < 1e-6 and dlogp_dt.abs().max().item() > 0.1


def test_straightness_in_closed_form():
    K = 8
    t = torch.linspace(0, 1, K + 1, dtype=torch.float64)
    e = torch.tensor([0.6, -0.8], dtype=torch.float64)                      # a unit vector
    line = (1 + t[:, None] * 3.0 * e)[:, None, :]                          # constant speed: S = 0
    assert F.straightness(line).item() == pytest.approx(0.0, abs=1e-24)
    # x_t = t^2 e: the same line at a varying speed; its K segments give S = (K^2 - 1) / (3 K^2) -> 1/3
    parabola = (t[:, None] ** 2 * e)[:, None, :]
    assert F.straightness(parabola).item() == pytest.approx((K ** 2 - 1) / (3 * K ** 2), rel=1e-12)
    # the same points stretched over two time units: velocities halve, S divides by 4
    assert F.straightness(parabola, 0.0, 2.0).item() == pytest.approx((K ** 2 - 1) / (12 * K ** 2), rel=1e-12)
    # a half circle of radius r at constant angular speed: r^2 ((2 sin(pi h / 2) / h)^2 - 4) -> r^2 (pi^2 - 4)
    r = 1.5
    for k in (4, 64, 4096):
        s = torch.linspace(0, 1, k + 1, dtype=torch.float64)
        arc = (r * torch.stack([torch.cos(math.pi * s), torch.sin(math.pi * s)], 1))[:, None, :]
        h = 1 / k
        assert F.straightness(arc).item() == pytest.approx(r ** 2 * ((2 * math.sin(math.pi * h / 2) / h) ** 2 - 4),
                                                           rel=1e-9)
    assert F.straightness(arc).item() == pytest.approx(r ** 2 * (math.pi ** 2 - 4), rel=1e-6)
    # per sample, any shape; one segment is always straight
    batch = torch.stack([line[:, 0], parabola[:, 0], arc[::512, 0]], 1)    # (9, 3, 2)
    assert F.straightness(batch.view(K + 1, 3, 1, 2)).shape == (3,)
    assert F.straightness(torch.randn(2, 5, 3)).abs().max().item() == 0.0


def test_straightness_of_the_flows_of_gaussian_data():
    """x1 ~ N(mu, s^2 I) on the linear path. The marginal field of the independent coupling moves x0 along
    x_t = t mu + r_t x0, r_t = sqrt((1 - t)^2 + t^2 s^2): a curve, with S = |x0|^2 int_0^1 (r_t' - (s - 1))^2 dt.
    Its reflow coupling (x0, mu + s x0) is transported along straight lines at constant speed: S = 0."""
    from scipy.integrate import quad

    mu, s = torch.tensor([[2.0, -1.0]], dtype=torch.float64), 0.5
    x0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    field = lambda x, t: F.marginal_vector_field(x, t, F.linear_path(), mu, s)  # noqa: E731
    trajectory = F.heun_sample(field, x0, 400, return_trajectory=True, progress=False)
    torch.testing.assert_close(trajectory[-1], mu + s * x0, rtol=0, atol=1e-4)

    def rate_gap(t):  # r_t' - (s - 1)
        return (t * s ** 2 - (1 - t)) / math.sqrt((1 - t) ** 2 + t ** 2 * s ** 2) - (s - 1)

    integral = quad(lambda t: rate_gap(t) ** 2, 0, 1)[0]
    torch.testing.assert_close(F.straightness(trajectory), x0.pow(2).sum(1) * integral, rtol=1e-4, atol=0)
    assert integral > 0.01
    # the reflow pairs' field: v(x, t) = mu + (s - 1) x0(x, t), x0 = (x - t mu) / (1 - t + t s), constant along lines
    reflow = lambda x, t: mu + (s - 1) * (x - t[:, None] * mu) / (1 - t[:, None] + t[:, None] * s)  # noqa: E731
    trajectory = F.euler_sample(reflow, x0, 50, return_trajectory=True, progress=False)
    torch.testing.assert_close(trajectory[-1], mu + s * x0)
    assert F.straightness(trajectory).max().item() < 1e-20


def test_velocity_mlp_shapes_time_and_errors():
    torch.manual_seed(0)
    model = F.VelocityMLP(3, hidden=16, n_layers=2, emb=8)
    x = torch.randn(5, 3)
    out = model(x, torch.full((5,), 0.5))
    assert out.shape == (5, 3) and out.dtype == torch.float32
    assert not torch.allclose(out, model(x, torch.full((5,), 0.9)))            # the time reaches the network
    assert model.double()(x.double(), torch.full((5,), 0.5, dtype=torch.float64)).dtype == torch.float64
    assert sum(p.numel() for p in model.parameters()) == (3 + 8) * 16 + 16 + 16 * 16 + 16 + 16 * 3 + 3
    for kwargs, match in [(dict(dim=0), "dim must be a positive integer"), (dict(dim=2, emb=7), "emb must be even"),
                          (dict(dim=2, hidden=True), "hidden must be a positive integer")]:
        with pytest.raises(ValueError, match=match):
            F.VelocityMLP(**kwargs)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3\)"):
        model(torch.zeros(5, 2), torch.zeros(5))
    with pytest.raises(ValueError, match=r"t must have shape \(5,\)"):
        model(torch.zeros(5, 3), torch.zeros(5, 1))


LOGIT_NORMAL = (0.75, 1.0)


@pytest.mark.parametrize("coupling, logit_normal", [("independent", None), ("ot", None), ("pairs", None),
                                                    ("independent", LOGIT_NORMAL)])
def test_train_cfm_first_step_is_the_cfm_loss_of_its_draws(coupling, logit_normal):
    """Replaying the documented draws (rows, then noise, then uniforms u, the times t = u or, for the logit-normal
    density, t = sigmoid(m + s * Phi^-1(u)) by scipy) gives the first step's loss exactly."""
    import copy

    from scipy.special import expit
    from scipy.stats import norm
    from torch.distributions import Normal, SigmoidTransform, TransformedDistribution

    x1 = _sample_mixture(40, torch.Generator().manual_seed(14)).float()
    pairs = torch.randn(40, 2, generator=torch.Generator().manual_seed(15)) if coupling == "pairs" else None
    torch.manual_seed(1)
    model = F.VelocityMLP(2, hidden=16, n_layers=2, emb=8)
    before = copy.deepcopy(model)
    times = TransformedDistribution(Normal(*logit_normal), SigmoidTransform()) if logit_normal else None
    losses = F.train_cfm(model, x1, F.linear_path(), 2, batch_size=8, coupling=coupling, x0=pairs,
                         t_distribution=times, generator=torch.Generator().manual_seed(3), progress=False)
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(40, (8,), generator=g)
    noise = pairs[idx] if coupling == "pairs" else torch.randn(8, 2, generator=g)
    t = torch.rand(8, generator=g, dtype=torch.float64)
    if logit_normal:
        t = torch.from_numpy(expit(logit_normal[0] + logit_normal[1] * norm.ppf(t.numpy())))
    if coupling == "ot":
        noise = F.ot_coupling(noise, x1[idx])[0]
    with torch.no_grad():
        expected = F.cfm_loss(before, x1[idx], F.linear_path(), t=t, x0=noise).item()
    assert len(losses) == 2 and losses[0] == pytest.approx(expected, rel=1e-6)
    assert not model.training and any(not torch.equal(a, b) for a, b in zip(model.parameters(), before.parameters()))


def test_train_cfm_reaches_the_floor_of_its_coupling():
    """Data x1 = x0 + c. Paired with their own noise the target x1 - x0 = c is a constant field: the loss goes to 0.
    With independent noise x1 ~ N(c, I) and the conditional target keeps a variance whose mean over t is
    2 - int_0^1 (2t - 1)^2 / (t^2 + (1 - t)^2) dt = pi / 2 per coordinate: the loss cannot go below pi in 2-D."""
    g = torch.Generator().manual_seed(16)
    x0 = torch.randn(4000, 2, generator=g)
    c = torch.tensor([3.0, -1.0])
    ends = {}
    for coupling in ("pairs", "independent"):
        torch.manual_seed(2)
        model = F.VelocityMLP(2, hidden=32, n_layers=2, emb=8)
        losses = F.train_cfm(model, x0 + c, F.linear_path(), 400, batch_size=128, lr=5e-3, coupling=coupling,
                             x0=x0 if coupling == "pairs" else None, generator=torch.Generator().manual_seed(4),
                             progress=False)
        ends[coupling] = sum(losses[-100:]) / 100
        if coupling == "pairs":
            with torch.no_grad():
                v = model(torch.randn(200, 2, generator=g) + c / 2, torch.full((200,), 0.5))
            assert (v - c).abs().max().item() < 0.2
    assert ends["pairs"] < 0.02 and ends["independent"] > 0.85 * math.pi


@pytest.mark.parametrize("kwargs, match", [
    (dict(coupling="sinkhorn"), "coupling must be one of"),
    (dict(coupling="pairs"), "x0 must be given"),
    (dict(x0=torch.zeros(10, 2)), "x0 is only used with coupling='pairs'"),
    (dict(coupling="pairs", x0=torch.zeros(9, 2)), "x0 must have the shape of x1"),
    (dict(steps=0), "steps must be a positive integer"),
    (dict(batch_size=2.0), "batch_size must be a positive integer"),
    (dict(lr=0.0), "lr must be positive"),
    (dict(t_distribution=0.5), "t_distribution must be a torch.distributions.Distribution"),
    (dict(t_distribution=torch.distributions.Beta(2.0, 2.0)), "t_distribution must have an icdf"),
    (dict(t_distribution=torch.distributions.Normal(0.5, 1.0)),
     r"t_distribution must be a scalar distribution on \[0, 1\]"),
])
def test_train_cfm_rejects_bad_input(kwargs, match):
    settings = dict(steps=1, progress=False) | kwargs
    with pytest.raises(ValueError, match=match):
        F.train_cfm(F.VelocityMLP(2, hidden=4, n_layers=1, emb=2), torch.zeros(10, 2), F.linear_path(), **settings)


# ------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("call, match", [
    (lambda: F.linear_path(-0.1), r"sigma_min must lie in \[0, 1\)"),
    (lambda: F.linear_path(1.0), r"sigma_min must lie in \[0, 1\)"),
    (lambda: F.vp_path(0.0, 1.0), "0 < beta_min <= beta_max"),
    (lambda: F.vp_path(2.0, 1.0), "0 < beta_min <= beta_max"),
    (lambda: F.linear_path().coefficients(1.5), r"t must be a scalar or a 1-D tensor of times in \[0, 1\]"),
    (lambda: F.linear_path().coefficients(True), "t must be a float or a floating tensor"),
    (lambda: F.linear_path().coefficients(torch.tensor([1])), "t must be a float or a floating tensor"),
    (lambda: F.vp_path().coefficients(1.0), r"\[0, 1\) \(the vp path is singular at t = 1\)"),
    (lambda: F.conditional_flow(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(2), F.linear_path()),
     r"t must be a scalar or have shape \(3,\)"),
    (lambda: F.conditional_flow(torch.zeros(3, 2), torch.zeros(3, 1), 0.5, F.linear_path()),
     "x1 must have the shape of x0"),
    (lambda: F.conditional_flow(torch.zeros(3, 2), torch.zeros(3, 2), 0.5, "linear"), "path must be a GaussianPath"),
    (lambda: F.conditional_vector_field(torch.zeros(3, 2), torch.zeros(3, 2), 1.0, F.linear_path()),
     "the conditional field is singular"),
    (lambda: F.cfm_loss(lambda x, t: x[:1], torch.zeros(3, 2), F.linear_path()), "v_model must return"),
    (lambda: F.cfm_loss(lambda x, t: x, torch.zeros(3, 2), F.linear_path(), x0=torch.zeros(2, 2)),
     "x0 must have the shape of x1"),
    (lambda: F.cfm_loss(lambda x, t: x, torch.zeros(3, 2), F.linear_path(), t=-0.5), r"times in \[0, 1\]"),
    (lambda: F.marginal_vector_field(torch.zeros(3, 2), 0.5, F.linear_path(), torch.zeros(2, 3), 0.1),
     r"means must be a tensor \(K, 2\)"),
    (lambda: F.marginal_vector_field(torch.zeros(3, 2), 0.5, F.linear_path(), torch.zeros(2, 2), -0.1), "sigmas"),
    (lambda: F.ot_coupling(torch.zeros(3, 2), torch.zeros(4, 2)), "equal batch sizes without replace"),
    (lambda: F.ot_plan(torch.zeros(3, 2), torch.zeros(3, 3)), "points of one shape"),
    (lambda: F.reflow_coupling(lambda x, t: x, torch.zeros(3, 2), method="rk4"), "method must be one of"),
    (lambda: F.marginal_log_prob(torch.zeros(3, 2), 1.5, F.linear_path(), torch.zeros(2, 2), 0.1),
     r"times in \[0, 1\]"),
    (lambda: F.marginal_log_prob(torch.zeros(3, 2), 0.5, F.linear_path(), torch.zeros(2, 3), 0.1),
     r"means must be a tensor \(K, 2\)"),
    (lambda: F.straightness(torch.zeros(4, 3)), r"trajectory must be a floating tensor \(K \+ 1, B, \*shape\)"),
    (lambda: F.straightness(torch.zeros(1, 3, 2)), "K \\+ 1 >= 2 points"),
    (lambda: F.straightness(torch.zeros(4, 3, 2, dtype=torch.long)), "trajectory must be a floating tensor"),
    (lambda: F.straightness(torch.zeros(4, 3, 2), 0.5, 0.5), "t_start and t_end must differ"),
    (lambda: F.straightness(torch.zeros(4, 3, 2), 0.0, math.inf), "t_end must be a finite float"),
])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------ against torchcfm and torchdiffeq
def _mixture_field(path: F.GaussianPath):
    return lambda x, t: F.marginal_vector_field(x, t, path, MEANS, SIGMAS, WEIGHTS)  # noqa: E731


@pytest.mark.parametrize("sigma_min", [0.0, 0.1])
def test_conditional_path_and_cfm_target_agree_with_torchcfm(sigma_min):
    """torchcfm's TargetConditionalFlowMatcher is Lipman et al.'s path (eqs. 20-21) and its ConditionalFlowMatcher
    with sigma = 0 is rectified flow's; on the same draws both give our x_t and targets, and our cfm_loss."""
    from torchcfm.conditional_flow_matching import ConditionalFlowMatcher, TargetConditionalFlowMatcher

    g = torch.Generator().manual_seed(20)
    x1, eps = _sample_mixture(64, g), torch.randn(64, 2, generator=g, dtype=torch.float64)
    t = torch.rand(64, generator=g, dtype=torch.float64) * 0.99
    path = F.linear_path(sigma_min)
    lipman = TargetConditionalFlowMatcher(sigma=sigma_min)
    xt = lipman.sample_xt(eps, x1, t, eps)
    torch.testing.assert_close(F.conditional_flow(eps, x1, t, path), xt, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(F.conditional_vector_field(xt, x1, t, path),
                               lipman.compute_conditional_flow(eps, x1, t, xt), rtol=1e-10, atol=1e-10)
    # the loss: our target d sigma x0 + d alpha x1 is the conditional field at x_t
    model = F.VelocityMLP(2, hidden=16).double()
    ut = lipman.compute_conditional_flow(eps, x1, t, xt)
    expected = (model(xt, t) - ut).pow(2).sum(1).mean()
    torch.testing.assert_close(F.cfm_loss(model, x1, path, t=t, x0=eps), expected, rtol=1e-10, atol=1e-12)
    if sigma_min == 0.0:  # Tong et al.'s independent CFM with sigma = 0: x_t = t x1 + (1 - t) x0, u_t = x1 - x0
        t_, xt_, ut_ = ConditionalFlowMatcher(sigma=0.0).sample_location_and_conditional_flow(eps, x1, t)
        torch.testing.assert_close(xt_, xt, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ut_, ut, rtol=1e-10, atol=1e-10)


def test_ot_plan_and_ot_cfm_pairs_agree_with_torchcfm():
    """torchcfm's exact OT sampler solves the same minibatch problem: the same plan, and every pair its OT-CFM
    matcher draws (with replacement, from that plan) is a pair of our permutation, with target x1 - x0."""
    from torchcfm.conditional_flow_matching import ExactOptimalTransportConditionalFlowMatcher
    from torchcfm.optimal_transport import OTPlanSampler

    g = torch.Generator().manual_seed(21)
    x0, x1 = torch.randn(48, 2, generator=g, dtype=torch.float64), _sample_mixture(48, g)
    plan = F.ot_plan(x0, x1)
    reference = torch.from_numpy(OTPlanSampler(method="exact").get_map(x0, x1))
    torch.testing.assert_close(plan, reference, rtol=0, atol=1e-12)
    x0_paired, _ = F.ot_coupling(x0, x1)
    ours = {tuple(np.round(torch.cat([a, b]).numpy(), 9)) for a, b in zip(x0_paired, x1)}
    np.random.seed(0)  # torchcfm draws its pairs with numpy's global stream
    t = torch.full((48,), 0.3, dtype=torch.float64)
    _, xt, ut = ExactOptimalTransportConditionalFlowMatcher(sigma=0.0).sample_location_and_conditional_flow(x0, x1, t)
    a, b = xt - 0.3 * ut, xt + 0.7 * ut  # x_t = x0 + t u_t with u_t = x1 - x0 recovers the pair
    theirs = {tuple(np.round(torch.cat([p, q]).numpy(), 9)) for p, q in zip(a, b)}
    assert len(theirs) > 20 and theirs <= ours


@pytest.mark.parametrize("method, theirs", [("euler", "euler"), ("heun", "heun2")])
def test_fixed_step_samplers_are_torchdiffeqs_on_the_same_grid(method, theirs):
    """Euler and Heun (explicit trapezoid) are torchdiffeq's 'euler' and 'heun2' tableaux: on the same grid
    they agree to rounding on the exact mixture field."""
    from torchdiffeq import odeint

    path, n = F.linear_path(0.01), 12
    v = _mixture_field(path)
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(22), dtype=torch.float64)
    sampler = F.euler_sample if method == "euler" else F.heun_sample
    ours = sampler(v, x, n, progress=False)
    grid = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    reference = odeint(lambda t, y: v(y, t.expand(len(y))), x, grid, method=theirs)[-1]
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-10)


def test_samplers_converge_to_torchdiffeqs_adaptive_solution_at_their_orders():
    """Against dopri5 at rtol 1e-10 (made to step onto t = 1, not past it, where the field is not defined):
    Euler's error halves and Heun's quarters when the steps double."""
    from torchdiffeq import odeint

    path = F.linear_path(0.01)
    v = _mixture_field(path)
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(23), dtype=torch.float64)
    exact = odeint(lambda t, y: v(y, t.expand(len(y))), x, torch.tensor([0.0, 1.0], dtype=torch.float64),
                   method="dopri5", rtol=1e-10, atol=1e-10, options={"step_t": torch.tensor([1.0])})[-1]
    errors = {name: [(sampler(v, x, n, progress=False) - exact).abs().max().item() for n in (100, 200, 400)]
              for name, sampler in (("euler", F.euler_sample), ("heun", F.heun_sample))}
    for name, order in (("euler", 1), ("heun", 2)):
        ratios = [a / b for a, b in zip(errors[name], errors[name][1:])]
        assert all(abs(math.log2(r) - order) < 0.3 for r in ratios), (name, errors[name])
    assert errors["heun"][-1] < 1e-4 < errors["euler"][-1]
