"""Tests of dgmcourse.sde against closed forms, scipy, autograd and dgmcourse.diffusion.

Monte Carlo checks are seeded and allow K_SE = 6 standard errors (estimated from the samples); where a sampler
also has a discretisation bias, the test compares the samples with the scheme's own moments (computed exactly by
the linear-Gaussian recursion) to K_SE standard errors, and with the continuous-time answer to a tolerance that
the bias, computed in the test, fits in. Data are Gaussians or small mixtures whose scores are exact.
"""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.stats import multivariate_normal

from dgmcourse import diffusion as D
from dgmcourse import flow_matching as F
from dgmcourse import sde as S

torch.set_num_threads(1)
K_SE = 6.0
MEANS = torch.tensor([[-1.5, 0.0], [1.0, 1.0], [0.5, -1.5]], dtype=torch.float64)
SIGMAS = torch.tensor([0.4, 0.6, 0.3], dtype=torch.float64)
WEIGHTS = torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64)


def _scipy_mixture_logpdf(x: torch.Tensor, means, sigmas, weights) -> torch.Tensor:
    density = sum(w * multivariate_normal(m, s ** 2 * np.eye(len(m))).pdf(x.numpy())
                  for m, s, w in zip(means.numpy(), sigmas.numpy(), weights.numpy()))
    return torch.from_numpy(np.log(density))


def _variance_se(x: torch.Tensor) -> float:
    centred = x - x.mean()
    return math.sqrt(((centred ** 4).mean() - (centred ** 2).mean() ** 2).item() / len(x))


def _assert_moments(x: torch.Tensor, mean: float, var: float, what: str) -> None:
    se_mean = math.sqrt(x.var().item() / len(x))
    assert abs(x.mean().item() - mean) <= K_SE * se_mean, f"{what} mean {x.mean().item():.5f} vs {mean:.5f}"
    assert abs(x.var().item() - var) <= K_SE * _variance_se(x), f"{what} variance {x.var().item():.5f} vs {var:.5f}"


# ------------------------------------------------------------------------------------- SDEs
def test_drift_diffusion_and_prior_by_hand():
    vp, ve = S.VPSDE(0.1, 20.0), S.VESDE(0.01, 50.0)
    x = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    torch.testing.assert_close(vp.drift(x, 0.5), -0.5 * 10.05 * x)  # beta(0.5) = 0.1 + 0.5 * 19.9
    assert vp.diffusion(0.5).item() == pytest.approx(math.sqrt(10.05))
    assert vp.integrated_beta(1.0).item() == pytest.approx(0.1 + 9.95)
    torch.testing.assert_close(ve.drift(x, 0.3), torch.zeros_like(x))
    assert ve.sigma(0.5).item() == pytest.approx(0.01 * math.sqrt(5000))
    assert ve.diffusion(0.5).item() == pytest.approx(0.01 * math.sqrt(5000) * math.sqrt(2 * math.log(5000)))
    assert ve.prior_log_prob(x).item() == pytest.approx(
        multivariate_normal(np.zeros(2), 2500 * np.eye(2)).logpdf(x.numpy()[0]), rel=1e-12)
    assert vp.prior_log_prob(x).item() == pytest.approx(multivariate_normal(np.zeros(2)).logpdf([1, -2]), rel=1e-12)
    prior = ve.prior_sample((20_000, 1), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _assert_moments(prior[:, 0], 0.0, 2500.0, "VE prior")


@pytest.mark.parametrize("sde", [S.VPSDE(0.1, 20.0), S.VESDE(0.05, 10.0), S.VPSDE.from_schedule(D.cosine_schedule(4))],
                         ids=["vp", "ve", "vp-cosine"])
def test_marginals_solve_the_moment_equations_of_the_sde(sde):
    """The moment equations of a linear SDE, dm/dt = f'(t) m and dv/dt = 2 f'(t) v + g(t)^2 for the drift
    f(x, t) = f'(t) x, integrated by scipy from m(0) = 1, v(0) = 0."""
    def rate(t):
        return sde.drift(torch.ones(1, 1, dtype=torch.float64), float(t)).item()

    def moments(t, y):
        g2 = sde.diffusion(float(t)).item() ** 2
        return [rate(t) * y[0], 2 * rate(t) * y[1] + g2]

    times = [0.13, 0.5, 0.77, 1.0]
    solution = solve_ivp(moments, (0, 1), [1.0, 0.0], t_eval=times, rtol=1e-10, atol=1e-12)
    scale, std = sde.scale_std(torch.tensor(times, dtype=torch.float64))
    np.testing.assert_allclose(scale.numpy(), solution.y[0], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(std.numpy() ** 2, solution.y[1], rtol=1e-6, atol=1e-9)
    x0 = torch.tensor([[2.0, -1.0], [0.5, 0.0]], dtype=torch.float64)
    mean, sd = sde.marginal_mean_std(x0, torch.tensor([0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(mean, scale[[1, 3], None] * x0)
    torch.testing.assert_close(sd, std[[1, 3], None])


def test_vp_sde_discretisation_is_ddpm_and_its_marginals_are_ddpm_q():
    vp = S.VPSDE(0.1, 20.0)
    torch.testing.assert_close(vp.discretize(1000).betas, D.linear_schedule().betas, rtol=0, atol=1e-18)
    # DDPM's alpha_bar_i approaches exp(-B(i/N)) at rate O(1/N)
    errors = []
    for n in (500, 1000, 2000):
        schedule = vp.discretize(n)
        times = torch.arange(1, n + 1, dtype=torch.float64) / n
        errors.append((schedule.alpha_bars[1:].log() + vp.integrated_beta(times)).abs().max().item())
    assert errors[0] / errors[1] == pytest.approx(2, rel=0.05) and errors[1] / errors[2] == pytest.approx(2, rel=0.05)
    assert (vp.discretize(1000).alpha_bars[1:] - torch.exp(-vp.integrated_beta(
        torch.arange(1, 1001, dtype=torch.float64) / 1000))).abs().max().item() < 1e-3
    # the VP SDE of any schedule (here the cosine one) has DDPM's q(x_i | x_0) at t = i/T exactly
    cosine = D.cosine_schedule(50)
    sde = S.VPSDE.from_schedule(cosine)
    x0 = torch.randn(50, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    noise = torch.randn(50, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    steps = torch.arange(1, 51)
    torch.testing.assert_close(sde.marginal_sample(x0, steps.double() / 50, noise),
                               D.q_sample(x0, steps, cosine, noise), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sde.discretize(50).betas, cosine.betas, rtol=1e-10, atol=1e-14)
    assert sde.beta(0.011).item() == pytest.approx(-50 * math.log(cosine.alphas[1].item()))
    assert sde.beta(0.03).item() == pytest.approx(-50 * math.log(cosine.alphas[2].item()))


def test_mixture_marginal_density_and_score_against_scipy_and_autograd():
    x = (torch.randn(9, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2).requires_grad_()
    for sde in (S.VPSDE(), S.VESDE(0.01, 5.0)):
        for t in (0.0, 0.3, 1.0):
            scale, std = (v.item() for v in sde.scale_std(t))
            log_p = S.mixture_marginal_log_prob(sde, x, t, MEANS, SIGMAS, WEIGHTS)
            expected = _scipy_mixture_logpdf(x.detach(), scale * MEANS, torch.sqrt(scale ** 2 * SIGMAS ** 2 + std ** 2),
                                             WEIGHTS)
            torch.testing.assert_close(log_p.detach(), expected, rtol=1e-10, atol=1e-10)
            grad = torch.autograd.grad(log_p.sum(), x)[0]
            torch.testing.assert_close(S.mixture_marginal_score(sde, x, t, MEANS, SIGMAS, WEIGHTS), grad)
    # at t = 0 it is the data density, for a single Gaussian the score is linear
    score = S.mixture_marginal_score(S.VPSDE(), x.detach(), 0.4, MEANS[:1], 0.5)
    scale, std = (v.item() for v in S.VPSDE().scale_std(0.4))
    torch.testing.assert_close(score, -(x.detach() - scale * MEANS[:1]) / (scale ** 2 * 0.25 + std ** 2))


# ------------------------------------------------------------------------------------ samplers
def test_euler_maruyama_on_the_ornstein_uhlenbeck_process():
    """dx = -theta x dt + s dw from x(0) = 1.5: the scheme's moments are (1 - theta h)^n x0 and
    s^2 h sum_k (1 - theta h)^(2k); the process's, x0 e^(-theta) and s^2 (1 - e^(-2 theta)) / (2 theta)."""
    theta, s, x0, n, b = 2.0, 0.8, 1.5, 50, 40_000
    x = S.euler_maruyama(lambda y, t: -theta * y, lambda t: s, torch.full((b, 1), x0, dtype=torch.float64), 0.0,
                         1.0, n, generator=torch.Generator().manual_seed(4), progress=False)[:, 0]
    h, a = 1 / n, 1 - theta / n
    scheme_mean, scheme_var = a ** n * x0, s ** 2 * h * sum(a ** (2 * k) for k in range(n))
    _assert_moments(x, scheme_mean, scheme_var, "Euler-Maruyama scheme")
    exact_mean, exact_var = x0 * math.exp(-theta), s ** 2 * (1 - math.exp(-2 * theta)) / (2 * theta)
    bias = abs(scheme_mean - exact_mean), abs(scheme_var - exact_var)
    assert abs(x.mean().item() - exact_mean) <= bias[0] + K_SE * x.std().item() / math.sqrt(b)
    assert abs(x.var().item() - exact_var) <= bias[1] + K_SE * _variance_se(x)
    assert bias[0] < 0.01 and bias[1] < 0.005  # weak order 1: the scheme is close to the process
    # the VP SDE with a constant beta is this process with theta = beta / 2, s = sqrt(beta)
    ou = S.VPSDE(4.0, 4.0)
    mean, std = ou.marginal_mean_std(torch.tensor([[x0]]), 1.0)
    assert mean.item() == pytest.approx(x0 * math.exp(-2.0)) and std.item() ** 2 == pytest.approx(1 - math.exp(-4.0))
    # the trajectory, and denoise: a last step without noise
    path = S.euler_maruyama(lambda y, t: -y, lambda t: 1.0, torch.ones(3, 2), 0.0, 1.0, 4, return_trajectory=True,
                            progress=False)
    assert path.shape == (5, 3, 2) and torch.equal(path[0], torch.ones(3, 2))
    one = S.euler_maruyama(lambda y, t: -y, lambda t: 1.0, torch.ones(3, 2), 0.0, 0.5, 1, denoise=True, progress=False)
    torch.testing.assert_close(one, torch.full((3, 2), 0.5))


def _reverse_scheme_moments(sde, mu: float, sd: float, n: int, eps: float, denoise: bool) -> tuple[float, float]:
    """Exact mean and variance of the reverse Euler-Maruyama chain for N(mu, sd^2) data (a linear recursion)."""
    m, v = 0.0, sde.prior_std() ** 2
    h = (eps - 1.0) / n
    for k in range(n):
        t = 1.0 + k * h
        scale, std = (c.item() for c in sde.scale_std(t))
        var_t = scale ** 2 * sd ** 2 + std ** 2
        rate = sde.drift(torch.ones(1, 1, dtype=torch.float64), t).item()
        g2 = sde.diffusion(t).item() ** 2
        a = 1 + h * (rate + g2 / var_t)  # x + h (f - g^2 s), s = -(x - scale mu) / var_t
        m, v = a * m - h * g2 * scale * mu / var_t, a ** 2 * v + (0 if denoise and k == n - 1 else g2 * abs(h))
    return m, v


@pytest.mark.parametrize("sde", [S.VPSDE(), S.VESDE(0.01, 3.0)], ids=["vp", "ve"])
def test_reverse_sde_sample_with_the_exact_score_recovers_gaussian_data(sde):
    mu, sd, n, b = 0.7, 0.5, 100, 20_000
    means = torch.tensor([[mu]], dtype=torch.float64)
    score = lambda x, t: S.mixture_marginal_score(sde, x, t, means, sd)  # noqa: E731
    g = torch.Generator().manual_seed(5)
    x = S.reverse_sde_sample(sde, score, sde.prior_sample((b, 1), generator=g, dtype=torch.float64), n, eps=1e-3,
                             generator=g, progress=False)[:, 0]
    scheme_mean, scheme_var = _reverse_scheme_moments(sde, mu, sd, n, 1e-3, denoise=True)
    _assert_moments(x, scheme_mean, scheme_var, f"{sde} scheme")
    assert abs(scheme_mean - mu) < 0.03 and abs(scheme_var - sd ** 2) < 0.01  # 100 steps: close to the data


def test_langevin_corrector_step_by_hand_and_pc_sampling():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    z = torch.tensor([[0.3, -0.4], [1.2, 0.5]], dtype=torch.float64)
    score = lambda y, t: -y  # noqa: E731  N(0, I)
    # eps = 2 alpha (r mean|z| / mean|s|)^2 = 2 * 0.9 * (0.1 * 0.9 / 1.5)^2
    step = 2 * 0.9 * (0.1 * ((0.5 + 1.3) / 2) / ((1.0 + 2.0) / 2)) ** 2
    torch.testing.assert_close(S.langevin_corrector_step(score, x, 0.5, snr=0.1, alpha=0.9, noise=z),
                               x - step * x + math.sqrt(2 * step) * z)
    # pc_sample is corrector-then-predictor at each time; for the VP SDE alpha = exp(-(B(t) - B(t - dt)))
    vp, x_T = S.VPSDE(), torch.randn(4, 2, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    gauss = lambda y, t: S.mixture_marginal_score(vp, y, t, MEANS[:1], 0.5)  # noqa: E731
    got = S.pc_sample(vp, gauss, x_T, 2, snr=0.2, eps=0.0, generator=torch.Generator().manual_seed(14),
                      progress=False)
    g = torch.Generator().manual_seed(14)
    y = x_T
    for t, last in ((1.0, False), (0.5, True)):
        alpha = math.exp(-(vp.integrated_beta(t) - vp.integrated_beta(t - 0.5)).item())
        z = torch.randn(4, 2, generator=g, dtype=torch.float64)
        y = S.langevin_corrector_step(gauss, y, t, 0.2, alpha, noise=z)
        y = y - 0.5 * S.reverse_sde_drift(vp, gauss, y, t)
        if not last:
            y = y + vp.diffusion(t).item() * math.sqrt(0.5) * torch.randn(4, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(got, y)
    # the corrector alone relaxes a wrong start towards p_t (at the Langevin step's small stationary bias:
    # in 1-D eps is about 2 (0.16)^2 v, and the chain's variance v / (1 - eps / (2 v)) is 2.6 % above v)
    sde, mu, sd, b = S.VESDE(0.01, 3.0), 0.7, 0.5, 10_000
    means = torch.tensor([[mu]], dtype=torch.float64)
    exact = lambda y, t: S.mixture_marginal_score(sde, y, t, means, sd)  # noqa: E731
    g = torch.Generator().manual_seed(6)
    v = sd ** 2 + sde.scale_std(0.3)[1].item() ** 2
    y = torch.randn(b, 1, generator=g, dtype=torch.float64)
    for _ in range(400):
        y = S.langevin_corrector_step(exact, y, 0.3, snr=0.16, generator=g)
    assert abs(y.mean().item() - mu) < K_SE * math.sqrt(v / b)
    assert y.var().item() / v == pytest.approx(1.026, abs=0.03 + K_SE * _variance_se(y[:, 0]) / v)
    # predictor-corrector sampling ends near the data, VE and VP (alpha < 1)
    for sde in (S.VESDE(0.01, 3.0), S.VPSDE()):
        exact = lambda y, t: S.mixture_marginal_score(sde, y, t, means, sd)  # noqa: E731
        pc = S.pc_sample(sde, exact, sde.prior_sample((b, 1), generator=g, dtype=torch.float64), 50, n_corrector=2,
                         generator=g, progress=False)[:, 0]
        assert abs(pc.mean().item() - mu) < 0.02 and abs(pc.std().item() - sd) < 0.02, sde


def test_probability_flow_ode_maps_the_diffused_gaussian_onto_the_data():
    """For N(mu, sd^2) data the flow of the PF-ODE is affine: it carries scale(T) mu + sqrt(v_T) z to mu + sd z."""
    mu, sd = torch.tensor([[1.0, -0.5]], dtype=torch.float64), 0.6
    z = torch.randn(100, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for sde in (S.VPSDE(), S.VESDE(0.01, 3.0)):
        scale, std = (c.item() for c in sde.scale_std(1.0))
        x_T = scale * mu + math.sqrt(scale ** 2 * sd ** 2 + std ** 2) * z
        score = lambda x, t: S.mixture_marginal_score(sde, x, t, mu, sd)  # noqa: E731
        drift = lambda x, t: S.probability_flow_drift(sde, score, x, t)  # noqa: E731
        x0 = F.heun_sample(drift, x_T, 400, t_start=1.0, t_end=0.0, progress=False)
        torch.testing.assert_close(x0, mu + sd * z, rtol=0, atol=2e-3)
        # f - g^2 s / 2 by hand at one time
        x, t = z[:3], 0.4
        g2 = sde.diffusion(t).item() ** 2
        torch.testing.assert_close(drift(x, t), sde.drift(x, t) - 0.5 * g2 * score(x, torch.full((3,), t)))
        torch.testing.assert_close(S.reverse_sde_drift(sde, score, x, t), sde.drift(x, t) - g2 * score(x, t))


# ------------------------------------------------------------------------- divergence and likelihood
def _tanh_field(a: torch.Tensor, b: torch.Tensor):
    """f(x) = tanh(x A^T + b): Jacobian diag(1 - tanh^2) A, divergence sum_i (1 - tanh^2(z_i)) A_ii."""
    return lambda x: torch.tanh(x @ a.T + b), lambda x: ((1 - torch.tanh(x @ a.T + b) ** 2) * a.diagonal()).sum(1)


def test_exact_divergence_in_closed_form():
    g = torch.Generator().manual_seed(8)
    a, b = torch.randn(4, 4, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64)
    fn, div = _tanh_field(a, b)
    value, exact = S.exact_divergence(fn, x)
    torch.testing.assert_close(value, fn(x))
    torch.testing.assert_close(exact, div(x))
    assert not exact.requires_grad
    _, linear = S.exact_divergence(lambda y: y @ a.T, x)
    torch.testing.assert_close(linear, torch.full((5,), a.trace().item(), dtype=torch.float64))
    # create_graph: the divergence can be differentiated (its gradient by autograd of the closed form)
    xg = x.clone().requires_grad_()
    _, kept = S.exact_divergence(fn, xg, create_graph=True)
    torch.testing.assert_close(torch.autograd.grad(kept.sum(), xg)[0],
                               torch.autograd.grad(div(xg).sum(), xg)[0])
    # image-shaped data: divergence over all non-batch dimensions
    _, image = S.exact_divergence(lambda y: 3 * y, torch.zeros(2, 1, 2, 2))
    torch.testing.assert_close(image, torch.full((2,), 12.0))


def test_hutchinson_estimator_is_unbiased_with_the_predicted_variance():
    g = torch.Generator().manual_seed(9)
    a, b = torch.randn(5, 5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    fn, div = _tanh_field(a, b)
    point = torch.randn(1, 5, generator=g, dtype=torch.float64)
    copies = point.expand(20_000, 5)  # one independent probe per copy
    jac = (1 - torch.tanh(point @ a.T + b) ** 2).T * a  # (5, 5)
    sym = jac + jac.T
    off_diagonal, diagonal = (sym.triu(1) ** 2).sum().item(), (jac.diagonal() ** 2).sum().item()
    for distribution, variance in [("rademacher", off_diagonal), ("gaussian", off_diagonal + 2 * diagonal)]:
        _, estimates = S.hutchinson_divergence(fn, copies, distribution=distribution, generator=g)
        _assert_moments(estimates, div(point).item(), variance, distribution)
    # eps^T J eps exactly: probes sqrt(D) e_i average to the trace
    probes = math.sqrt(5) * torch.eye(5, dtype=torch.float64)[:, None, :]
    torch.testing.assert_close(S.hutchinson_divergence(fn, point, noise=probes)[1], div(point))


def test_pf_ode_log_likelihood_of_the_exact_score_is_the_mixture_density():
    """Heun's method with 600 steps, the exact divergence and the true p_T as prior: within 1e-3 nats of scipy."""
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(10), dtype=torch.float64) * 1.2
    expected = _scipy_mixture_logpdf(x, MEANS, SIGMAS, WEIGHTS)
    sde = S.VPSDE()
    score = lambda y, t: S.mixture_marginal_score(sde, y, t, MEANS, SIGMAS, WEIGHTS)  # noqa: E731
    prior = lambda y: S.mixture_marginal_log_prob(sde, y, 1.0, MEANS, SIGMAS, WEIGHTS)  # noqa: E731
    log_p = S.pf_ode_log_likelihood(sde, score, x, n_steps=600, eps=0.0, prior_log_prob=prior, progress=False)
    assert (log_p - expected).abs().max().item() <= 1e-3
    # the N(0, I) prior the samplers use is close to p_T but not equal: the gap is its log-density ratio
    coarse = S.pf_ode_log_likelihood(sde, score, x, n_steps=40, eps=0.0, prior_log_prob=prior, progress=False)
    with_normal = S.pf_ode_log_likelihood(sde, score, x, n_steps=40, eps=0.0, progress=False)
    assert 1e-3 < (with_normal - coarse).abs().max().item() < 0.1
    assert (coarse - expected).abs().max().item() > 1e-3  # and 40 steps are too few for 1e-3


def test_hutchinson_log_likelihood_is_unbiased_for_the_discretised_integral():
    sde, b = S.VPSDE(), 4000
    score = lambda y, t: S.mixture_marginal_score(sde, y, t, MEANS, SIGMAS, WEIGHTS)  # noqa: E731
    x = torch.tensor([[0.3, -0.2]], dtype=torch.float64).expand(b, 2)
    exact = S.pf_ode_log_likelihood(sde, score, x[:1], n_steps=10, method="euler", progress=False)
    estimates = S.pf_ode_log_likelihood(sde, score, x, n_steps=10, method="euler", divergence="hutchinson",
                                        generator=torch.Generator().manual_seed(11), progress=False)
    assert estimates.std().item() > 0.01
    assert abs(estimates.mean().item() - exact.item()) <= K_SE * estimates.std().item() / math.sqrt(b)
    # a flow-matching model integrates the other way: data at t = 1, noise at t = 0
    mu = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    field = lambda y, t: F.marginal_vector_field(y, t, F.linear_path(0.01), mu, 0.5)  # noqa: E731
    points = torch.randn(6, 2, generator=torch.Generator().manual_seed(12), dtype=torch.float64) * 0.5 + mu
    fm = S.ode_log_likelihood(field, points, lambda y: S.VPSDE().prior_log_prob(y), 1.0, 0.0, n_steps=200,
                              progress=False)
    var = 0.01 ** 2 + 0.25  # the path's marginal at t = 1: N(mu, (sigma_min^2 + s^2) I)
    expected = torch.from_numpy(multivariate_normal(mu[0].numpy(), var * np.eye(2)).logpdf(points.numpy()))
    torch.testing.assert_close(fm, expected, rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------------- errors
_X = torch.zeros(3, 2)


@pytest.mark.parametrize("call, match", [
    (lambda: S.VPSDE(0.0, 1.0), "0 < beta_min <= beta_max"),
    (lambda: S.VPSDE(2.0, 1.0), "0 < beta_min <= beta_max"),
    (lambda: S.VESDE(1.0, 1.0), "0 < sigma_min < sigma_max"),
    (lambda: S.VPSDE().beta(1.5), r"times in \[0, 1.0\]"),
    (lambda: S.VPSDE().drift(_X, torch.zeros(2)), r"t must be a scalar or have shape \(3,\)"),
    (lambda: S.VESDE().marginal_mean_std(_X, -0.1), r"times in \[0, 1.0\]"),
    (lambda: S.VESDE().marginal_mean_std(_X, True), "t must be a float or a floating tensor"),
    (lambda: S.VPSDE().marginal_sample(_X, 0.5, noise=torch.zeros(3, 1)), "noise must have the shape of x0"),
    (lambda: S.VPSDE().discretize(1), "N must be an integer >= 2"),
    (lambda: S.VPSDE().discretize(10), "beta_max / N must be below 1"),
    (lambda: S.VPSDE.from_schedule([0.1, 0.2]), "schedule must be a NoiseSchedule"),
    (lambda: S.VPSDE().prior_sample((0, 2)), "shape must be a tuple"),
    (lambda: S.mixture_marginal_score("vp", _X, 0.5, MEANS.float(), 0.1), "sde must be an SDE"),
    (lambda: S.mixture_marginal_log_prob(S.VPSDE(), _X, 0.5, torch.zeros(2, 3), 0.1), r"means must be a tensor"),
    (lambda: S.euler_maruyama(lambda x, t: x, lambda t: 1.0, _X, 0.0, 1.0, 0), "n_steps must be a positive integer"),
    (lambda: S.euler_maruyama(lambda x, t: x[:1], lambda t: 1.0, _X, 0.0, 1.0, 2), "drift_fn must return"),
    (lambda: S.euler_maruyama(lambda x, t: x, lambda t: 1.0, _X, 0.0, math.inf, 2), "t_end must be a finite float"),
    (lambda: S.reverse_sde_sample(S.VPSDE(), lambda x, t: x, _X, 2, eps=1.0), r"eps must be a float in \[0, 1.0\)"),
    (lambda: S.reverse_sde_drift(S.VPSDE(), lambda x, t: x[:, :1], _X, 0.5), "score_fn must return"),
    (lambda: S.langevin_corrector_step(lambda x, t: x, _X, 0.5, snr=0.0), "snr must be a positive float"),
    (lambda: S.langevin_corrector_step(lambda x, t: x, _X, 0.5, snr=0.1, alpha=1.5), r"alpha must lie in \(0, 1\]"),
    (lambda: S.langevin_corrector_step(lambda x, t: x, _X, 0.5, 0.1, noise=torch.zeros(2, 2)), "noise must have"),
    (lambda: S.pc_sample(S.VPSDE(), lambda x, t: x, _X, 2, n_corrector=-1), "n_corrector must be an integer >= 0"),
    (lambda: S.pc_sample(S.VESDE(), lambda x, t: x, _X, 0), "n_steps must be a positive integer"),
    (lambda: S.probability_flow_drift(S.VPSDE(), lambda x, t: x, _X, 2.0), r"times in \[0, 1.0\]"),
    (lambda: S.exact_divergence(lambda x: x[:, :1], _X), "fn must return"),
    (lambda: S.hutchinson_divergence(lambda x: x, _X, distribution="uniform"), "distribution must be one of"),
    (lambda: S.hutchinson_divergence(lambda x: x, _X, n_probes=0), "n_probes must be a positive integer"),
    (lambda: S.hutchinson_divergence(lambda x: x, _X, noise=torch.zeros(3, 2)), r"noise must have shape \(P, 3, 2\)"),
    (lambda: S.ode_log_likelihood(lambda x, t: x, _X, lambda y: y.sum(1), 0.0, 1.0, method="rk4"), "method"),
    (lambda: S.ode_log_likelihood(lambda x, t: x, _X, lambda y: y.sum(1), 0.0, 1.0, divergence="trace"), "divergence"),
    (lambda: S.ode_log_likelihood(lambda x, t: x, _X, lambda y: y.sum(1), 0.5, 0.5), "t_start and t_end must differ"),
    (lambda: S.ode_log_likelihood(lambda x, t: x, _X, lambda y: y, 0.0, 1.0, n_steps=2), "prior_log_prob must return"),
    (lambda: S.pf_ode_log_likelihood(S.VPSDE(), lambda x, t: x, _X, eps=-1e-3), r"eps must be a float in \[0, 1.0\)"),
])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------ against torchsde and torchdiffeq
def test_euler_maruyama_is_torchsdes_euler_on_the_same_brownian_path():
    """torchsde's Ito Euler scheme driven by the Brownian increments our generator draws (sqrt(h) z_k per step)
    reproduces our Euler-Maruyama path on the Ornstein-Uhlenbeck process to rounding."""
    import torchsde
    from torchsde._brownian import BaseBrownian

    theta, s, n, b = 2.0, 0.8, 50, 256
    h = 1.0 / n
    x0 = torch.full((b, 1), 1.5, dtype=torch.float64)
    ours = S.euler_maruyama(lambda y, t: -theta * y, lambda t: s, x0, 0.0, 1.0, n,
                            generator=torch.Generator().manual_seed(30), return_trajectory=True, progress=False)
    g = torch.Generator().manual_seed(30)
    z = torch.stack([torch.randn(x0.shape, generator=g, dtype=torch.float64) for _ in range(n)])
    w = torch.cat([torch.zeros(1, b, 1, dtype=torch.float64), torch.cumsum(math.sqrt(h) * z, 0)])

    class GridBrownian(BaseBrownian):  # W on our grid, W(t_b) - W(t_a) for grid times
        dtype, device, shape, levy_area_approximation = torch.float64, torch.device("cpu"), (b, 1), "none"

        def __call__(self, ta, tb=None, return_U=False, return_A=False):
            return w[round(float(tb) / h)] - w[round(float(ta) / h)]

        def __repr__(self):
            return "GridBrownian"

    class OU(torch.nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return -theta * y

        def g(self, t, y):
            return torch.full_like(y, s)

    reference = torchsde.sdeint(OU(), x0, torch.linspace(0, 1, n + 1, dtype=torch.float64), method="euler", dt=h,
                                bm=GridBrownian())
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-10)


def test_euler_maruyama_moments_agree_with_torchsdes_on_the_reverse_vp_sde():
    """The reverse VP SDE from its prior with the exact score of Gaussian data N(1, 0.5^2): our sampler and
    torchsde's Euler scheme (its own Brownian motion) give the same mean and variance, K_SE standard errors."""
    import torchsde

    sde, mu, sd, n, b = S.VPSDE(), 1.0, 0.5, 200, 40_000
    score = lambda y, t: S.mixture_marginal_score(sde, y, t, torch.tensor([[mu]], dtype=torch.float64),  # noqa: E731
                                                  torch.tensor([sd], dtype=torch.float64))
    x_T = torch.randn(b, 1, generator=torch.Generator().manual_seed(31), dtype=torch.float64)
    ours = S.euler_maruyama(lambda y, t: S.reverse_sde_drift(sde, score, y, t), sde.diffusion, x_T, 1.0, 1e-3, n,
                            generator=torch.Generator().manual_seed(32), progress=False)[:, 0]

    class Reverse(torch.nn.Module):  # in s = 1 - t the reverse SDE runs forward: dx = -f_rev ds + g dw
        noise_type, sde_type = "diagonal", "ito"

        def f(self, s, y):
            return -S.reverse_sde_drift(sde, score, y, (1.0 - s).expand(len(y)))

        def g(self, s, y):
            return sde.diffusion(1.0 - s).expand_as(y).to(y.dtype)

    torch.manual_seed(33)
    theirs = torchsde.sdeint(Reverse(), x_T, torch.tensor([0.0, 1.0 - 1e-3], dtype=torch.float64), method="euler",
                             dt=(1.0 - 1e-3) / n)[-1, :, 0]
    se_mean = math.sqrt((ours.var() + theirs.var()).item() / b)
    se_var = math.hypot(_variance_se(ours), _variance_se(theirs))
    assert abs(ours.mean().item() - theirs.mean().item()) <= K_SE * se_mean
    assert abs(ours.var().item() - theirs.var().item()) <= K_SE * se_var
    assert abs(ours.mean().item() - mu) < 0.02 and abs(ours.std().item() - sd) < 0.02  # and both recover the data


def test_pf_ode_log_likelihood_agrees_with_torchdiffeqs_adaptive_solve():
    """The instantaneous change of variables integrated by dopri5 (state and log-density together, exact
    divergence) is the mixture density to 1e-6 nats; our Heun solve of the PF-ODE converges to it at second order
    (the gap quarters from 200 to 400 steps, under 5e-4 nats at 400)."""
    from torchdiffeq import odeint

    sde = S.VPSDE()
    score = lambda y, t: S.mixture_marginal_score(sde, y, t, MEANS, SIGMAS, WEIGHTS)  # noqa: E731
    prior = lambda y: S.mixture_marginal_log_prob(sde, y, 1.0, MEANS, SIGMAS, WEIGHTS)  # noqa: E731
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(34), dtype=torch.float64)
    ours = S.pf_ode_log_likelihood(sde, score, x, n_steps=400, eps=0.0, prior_log_prob=prior, progress=False)

    def augmented(t, state):
        y = state[:, :2]
        v, div = S.exact_divergence(lambda z: S.probability_flow_drift(sde, score, z, t.expand(len(z))), y)
        return torch.cat([v, div[:, None]], 1)

    end = odeint(augmented, torch.cat([x, torch.zeros(16, 1, dtype=torch.float64)], 1),
                 torch.tensor([0.0, 1.0], dtype=torch.float64), method="dopri5", rtol=1e-9, atol=1e-9,
                 options={"step_t": torch.tensor([1.0])})[-1]
    reference = prior(end[:, :2]) + end[:, 2]
    coarse = S.pf_ode_log_likelihood(sde, score, x, n_steps=200, eps=0.0, prior_log_prob=prior, progress=False)
    gaps = [(ll - reference).abs().max().item() for ll in (coarse, ours)]
    assert gaps[1] < 5e-4 and abs(math.log2(gaps[0] / gaps[1]) - 2) < 0.3, gaps  # Heun: second order
    assert (reference - _scipy_mixture_logpdf(x, MEANS, SIGMAS, WEIGHTS)).abs().max().item() < 1e-6
