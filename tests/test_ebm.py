"""Tests of dgmcourse.ebm against closed forms, numerical integration and autograd.

* Langevin: on a 2-D Gaussian energy with a non-diagonal covariance Σ the unadjusted chain with step ε has the
  stationary law N(μ, (Σ⁻¹ - ε Σ⁻²/4)⁻¹) (solve C = M C Mᵀ + ε I with M = I - ε Σ⁻¹/2); independent chains
  reproduce it, and Σ only within that step-size bias (which the test resolves). On a 1-D asymmetric double well
  the chain's moments match the Gibbs distribution's, integrated by scipy.integrate.quad, within the chain's own
  bias, computed exactly by the stationary vector of the discretised ULA transition kernel.
* Contrastive divergence: for an exponential family E_θ(x) = -θᵀT(x) the gradient of the loss is, exactly, the
  moment difference mean T(model) - mean T(data); with exact model samples its expectation is zero at the data's θ
  and E_θ'[T] - E_data[T] elsewhere.
* The replay buffer's fresh-noise fraction is binomial; pushed samples come back, first in first out.
* The score -∇E is the analytic score of a Gaussian and dgmcourse.diffusion.mixture_score of the course's ring.
* A short training run on a 4-mode ring puts its Langevin samples' mass near the modes (bounds checked over 20 seeds).

Monte Carlo checks are seeded and allow K_SE = 6 standard errors estimated from the samples: a correct
implementation fails any of them with probability below 1e-7 whatever the random stream, while the errors they guard
against (a wrong step coefficient, a missing noise term, the wrong sign of a moment) move the estimates by tens of
standard errors.
"""

import math

import numpy as np
import pytest
import torch
from scipy import integrate
from torch import nn
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from dgmcourse import diffusion, gan
from dgmcourse.ebm import (EnergyCNN, EnergyMLP, ReplayBuffer, contrastive_divergence_loss, langevin_sample, score,
                           train_ebm)

torch.set_num_threads(1)
K_SE = 6.0
MU = torch.tensor([0.5, -1.0], dtype=torch.float64)
SIGMA = torch.tensor([[1.0, 0.5], [0.5, 0.75]], dtype=torch.float64)
PRECISION = torch.linalg.inv(SIGMA)


def _gaussian_energy(x: torch.Tensor) -> torch.Tensor:
    """½ (x - μ)ᵀ Σ⁻¹ (x - μ) + 3: the constant is a normaliser, which nothing here may depend on."""
    d = x - MU
    return 0.5 * ((d @ PRECISION) * d).sum(1) + 3.0


def _ula_covariance(step: float) -> torch.Tensor:
    """The stationary covariance of x <- x - (ε/2) Σ⁻¹ (x - μ) + √ε ξ: (Σ⁻¹ - ε Σ⁻²/4)⁻¹."""
    return torch.linalg.inv(PRECISION - step / 4 * PRECISION @ PRECISION)


def _covariance_and_errors(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample covariance (d, d) and the standard error of each entry (the sd of the centred products / √N)."""
    centred = x - x.mean(0)
    products = centred.unsqueeze(2) * centred.unsqueeze(1)                     # (N, d, d)
    return products.mean(0), products.std(0) / math.sqrt(len(x))


# ------------------------------------------------------------------------------------------- Langevin
@pytest.mark.parametrize("temperature", [1.0, 0.25])
def test_langevin_on_a_gaussian_energy_reaches_the_ula_stationary_law(temperature):
    step, n = 0.4, 20_000
    g = torch.Generator().manual_seed(0)
    x0 = 6 * torch.rand(n, 2, generator=g, dtype=torch.float64) - 3          # far from stationary
    # the slowest direction contracts by 1 - ε a_min / 2 = 0.856 per step: 150 steps leave 1e-10 of the start
    x = langevin_sample(_gaussian_energy, x0, 150, step, noise_scale=math.sqrt(temperature * step), generator=g)
    expected = temperature * _ula_covariance(step)
    cov, cov_se = _covariance_and_errors(x)
    mean_se = cov.diagonal().sqrt() / math.sqrt(n)
    assert torch.all((x.mean(0) - MU).abs() <= K_SE * mean_se)
    assert torch.all((cov - expected).abs() <= K_SE * cov_se), (cov, expected)
    if temperature == 1.0:
        # Σ itself is reproduced only within the step-size bias, and at ε = 0.4 the bias is resolved
        bias = (expected - SIGMA).abs()
        assert torch.all((cov - SIGMA).abs() <= bias + K_SE * cov_se)
        assert ((cov - SIGMA).abs() / cov_se).max() > K_SE


def test_langevin_with_a_small_step_approaches_the_gibbs_covariance():
    step, n = 0.02, 20_000
    g = torch.Generator().manual_seed(1)
    x0 = MU + torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(SIGMA).T   # exact N(μ, Σ)
    x = langevin_sample(_gaussian_energy, x0, 50, step, generator=g)
    cov, cov_se = _covariance_and_errors(x)
    bias = (_ula_covariance(step) - SIGMA).abs()                             # at most 1.4 % of Σ here
    assert bias.max() < 0.015
    assert torch.all((cov - SIGMA).abs() <= bias + K_SE * cov_se)


def _double_well(x):
    return x ** 4 / 4 - x ** 2 + 0.5 * x


def _ula_stationary_moments(step: float, h: float = 0.04, half_width: float = 4.0) -> np.ndarray:
    """E[x], E[x²] under the stationary law of the 1-D ULA chain on the double well, from its transition kernel.

    The kernel N(y; x - (ε/2) E'(x), ε) on a grid of spacing h (rows normalised): its leading left eigenvector is
    the stationary law; the Gaussian kernel is resolved so finely that h = 0.04 and 0.01 agree to 1e-12.
    """
    x = np.arange(-half_width, half_width + h / 2, h)
    mean = x - step / 2 * (x ** 3 - 2 * x + 0.5)
    kernel = np.exp(-(x[None, :] - mean[:, None]) ** 2 / (2 * step))
    kernel /= kernel.sum(1, keepdims=True)
    values, vectors = np.linalg.eig(kernel.T)
    stationary = np.abs(np.real(vectors[:, np.argmax(np.real(values))]))
    stationary /= stationary.sum()
    return np.array([(stationary * x).sum(), (stationary * x ** 2).sum()])


def test_langevin_on_a_double_well_matches_the_gibbs_moments_within_the_step_bias():
    step, n = 0.05, 20_000
    z = integrate.quad(lambda u: math.exp(-_double_well(u)), -np.inf, np.inf)[0]
    gibbs = np.array([integrate.quad(lambda u, k=k: u ** k * math.exp(-_double_well(u)), -np.inf, np.inf)[0] / z
                      for k in (1, 2)])                                     # E[x] = -0.760, E[x²] = 1.839
    ula = _ula_stationary_moments(step)                                       # -0.747, 1.819
    g = torch.Generator().manual_seed(2)
    x0 = 4 * torch.rand(n, 1, generator=g, dtype=torch.float64) - 2
    # the kernel's second eigenvalue is 0.989 (crossing the barrier): 1000 steps leave 2e-5 of the start
    x = langevin_sample(lambda y: _double_well(y).squeeze(1), x0, 1000, step, generator=g).squeeze(1)
    moments = torch.stack([x.mean(), x.pow(2).mean()]).numpy()
    se = torch.stack([x.std(), x.pow(2).std()]).numpy() / math.sqrt(n)
    assert np.all(np.abs(moments - ula) <= K_SE * se), (moments, ula, se)
    assert np.all(np.abs(moments - gibbs) <= np.abs(ula - gibbs) + K_SE * se), (moments, gibbs, se)
    assert np.all(np.abs(ula - gibbs) < 0.03)                                # the bias is O(ε) and small here


def test_langevin_leaks_no_gradient_runs_under_no_grad_clips_and_is_reproducible():
    net = EnergyMLP(2, 16, 2).double()
    x0 = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3), requires_grad=True)
    with torch.no_grad():
        x = langevin_sample(net, x0, 5, 0.1, clip=(-0.5, 0.5), generator=torch.Generator().manual_seed(4))
    assert not x.requires_grad and x0.grad is None
    assert all(p.grad is None for p in net.parameters())
    assert x.min() >= -0.5 and x.max() <= 0.5
    again = langevin_sample(net, x0, 5, 0.1, clip=(-0.5, 0.5), generator=torch.Generator().manual_seed(4))
    assert torch.equal(x, again)
    # one step by hand, and zero steps
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    one = langevin_sample(_gaussian_energy, MU.expand(3, 2) + 1, 1, 0.3, noise_scale=0.2, generator=g1)
    by_hand = MU + 1 - 0.15 * (PRECISION @ torch.ones(2, dtype=torch.float64)) + 0.2 * torch.randn(
        3, 2, generator=g2, dtype=torch.float64)
    torch.testing.assert_close(one, by_hand)
    assert torch.equal(langevin_sample(_gaussian_energy, x0, 0, 0.3), x0.detach())
    # noise_scale 0: gradient descent on the energy, converging to its minimum μ
    descent = langevin_sample(_gaussian_energy, x0.detach()[:4], 200, 0.5, noise_scale=0.0)
    torch.testing.assert_close(descent, MU.expand(4, 2))


# ---------------------------------------------------------------------------------------------- score
def test_score_is_the_analytic_gaussian_score_whatever_the_normaliser():
    x = torch.randn(10, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    s = score(_gaussian_energy, x)
    torch.testing.assert_close(s, -(x - MU) @ PRECISION)
    torch.testing.assert_close(score(lambda y: _gaussian_energy(y) - 100.0, x), s)
    with torch.no_grad():
        assert not score(_gaussian_energy, x).requires_grad


def test_score_of_the_ring_energy_is_the_course_mixture_score():
    means, sigma = gan.ring_means().double(), gan.RING_SIGMA
    ring = MixtureSameFamily(Categorical(logits=torch.zeros(len(means), dtype=torch.float64)),
                             Independent(Normal(means, torch.full_like(means, sigma)), 1))
    x = (means[torch.arange(20) % 8] + 0.02 * torch.randn(20, 2, dtype=torch.float64,
                                                           generator=torch.Generator().manual_seed(7)))
    torch.testing.assert_close(score(lambda y: -ring.log_prob(y), x), diffusion.mixture_score(x, means, sigma))


class _ExponentialFamily(nn.Module):
    """E_θ(x) = -θᵀ T(x) with T(x) = (x, x²) for 1-D x ``(B, 1)``: the Gaussian family, θ = (μ/s², -1/(2s²))."""

    def __init__(self, theta) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.as_tensor(theta, dtype=torch.float64))

    @staticmethod
    def statistics(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x ** 2], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.statistics(x) @ self.theta


def test_score_with_create_graph_is_differentiable_in_the_parameters():
    model = _ExponentialFamily([0.3, -0.7])
    x = torch.randn(50, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    s = score(model, x, create_graph=True)                                  # θ1 + 2 θ2 x
    torch.testing.assert_close(s, (0.3 - 1.4 * x).detach())
    (0.5 * s.pow(2).sum(1).mean()).backward()                                # ∂/∂θ = (mean s, mean 2 x s)
    torch.testing.assert_close(model.theta.grad, torch.stack([s.mean(), (2 * x * s).mean()]).detach())


def test_denoising_score_matching_through_the_score_reaches_every_parameter_but_the_constant():
    """diffusion.dsm_loss on score(energy, ., create_graph=True) trains the energy; the output bias, an additive
    constant (a log-normaliser), has no effect on the score and gets no gradient."""
    net = EnergyMLP(2, 16, 1)
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(14))
    loss = diffusion.dsm_loss(lambda y, s: score(net, y, create_graph=True), x, 0.1,
                              generator=torch.Generator().manual_seed(15))
    loss.backward()
    grads = {name: p.grad for name, p in net.named_parameters()}
    assert grads.pop("net.2.bias") is None
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())


# ------------------------------------------------------------------------------ contrastive divergence
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_cd_gradient_on_an_exponential_family_is_the_moment_difference(alpha):
    model = _ExponentialFamily([0.4, -0.6])
    g = torch.Generator().manual_seed(9)
    x_data = 1.0 + 0.5 * torch.randn(40, 1, dtype=torch.float64, generator=g)
    x_model = torch.randn(30, 1, dtype=torch.float64, generator=g)
    loss = contrastive_divergence_loss(model, x_data, x_model, alpha=alpha)
    loss.backward()
    t_data, t_model = model.statistics(x_data), model.statistics(x_model)
    expected = t_model.mean(0) - t_data.mean(0)
    # α (mean E(x+)² + mean E(x-)²), with E = -θᵀT, has gradient -2α (mean E(x+) T(x+) + mean E(x-) T(x-))
    e_data, e_model = -(t_data @ model.theta), -(t_model @ model.theta)
    expected = expected - 2 * alpha * ((e_data[:, None] * t_data).mean(0) + (e_model[:, None] * t_model).mean(0))
    torch.testing.assert_close(model.theta.grad, expected.detach(), rtol=1e-12, atol=1e-12)
    value = e_data.mean() - e_model.mean() + alpha * (e_data.pow(2).mean() + e_model.pow(2).mean())
    torch.testing.assert_close(loss, value)


@pytest.mark.parametrize("model_mean, model_std", [(1.0, 0.5), (0.2, 0.8)])
def test_cd_gradient_with_exact_model_samples_is_the_expected_moment_difference(model_mean, model_std):
    """Data N(1, 0.5²); model samples drawn exactly from N(m, s²), the model of θ = (m/s², -1/(2s²)).

    E[grad] = E_model[T] - E_data[T] = (m - 1, m² + s² - 1.25): zero at the data's θ."""
    n = 50_000
    model = _ExponentialFamily([model_mean / model_std ** 2, -0.5 / model_std ** 2])
    g = torch.Generator().manual_seed(10)
    x_data = 1.0 + 0.5 * torch.randn(n, 1, dtype=torch.float64, generator=g)
    x_model = model_mean + model_std * torch.randn(n, 1, dtype=torch.float64, generator=g)
    contrastive_divergence_loss(model, x_data, x_model).backward()
    expected = torch.tensor([model_mean - 1.0, model_mean ** 2 + model_std ** 2 - 1.25], dtype=torch.float64)
    se = torch.sqrt(model.statistics(x_data).var(0) / n + model.statistics(x_model).var(0) / n)
    assert torch.all((model.theta.grad - expected).abs() <= K_SE * se), (model.theta.grad, expected, se)


# ------------------------------------------------------------------------------------- replay buffer
def test_replay_buffer_reinitialises_a_binomial_fraction_and_returns_pushed_samples():
    buffer = ReplayBuffer((2,), capacity=100, reinit=0.05, noise_range=(-1.0, 1.0))
    assert len(buffer) == 0
    g = torch.Generator().manual_seed(11)
    first = buffer.sample(500, g)                                             # empty: all noise
    assert first.shape == (500, 2) and first.abs().max() <= 1
    stored = 10.0 + torch.arange(20, dtype=torch.float32).repeat_interleave(2).reshape(20, 2)
    buffer.push(stored)
    assert len(buffer) == 20 and torch.equal(buffer.samples, stored)
    draws, n = 50, 2_000
    fresh, counts = 0, torch.zeros(20)
    for _ in range(draws):
        x = buffer.sample(n, g)
        is_fresh = x.abs().max(1).values <= 1
        fresh += int(is_fresh.sum())
        old = x[~is_fresh]
        assert torch.all(old[:, 0] == old[:, 1]) and torch.all(torch.isin(old[:, 0], stored[:, 0]))
        counts += torch.bincount((old[:, 0] - 10).long(), minlength=20)
    total = draws * n                                                         # Binomial(100,000, 0.05)
    assert abs(fresh - 0.05 * total) <= K_SE * math.sqrt(total * 0.05 * 0.95)
    share = (total - fresh) / 20                                              # each stored sample equally often
    assert torch.all((counts - share).abs() <= K_SE * math.sqrt(share))
    # first in first out: 90 more fill the buffer to 100 and overwrite the 10 oldest
    buffer.push(torch.full((90, 2), -5.0))
    assert len(buffer) == 100
    assert torch.equal(buffer.samples[:10], torch.full((10, 2), -5.0))
    assert torch.equal(buffer.samples[10:20], stored[10:])


def test_replay_buffer_extremes_and_gaussian_noise():
    g = torch.Generator().manual_seed(12)
    never = ReplayBuffer((1, 3, 3), capacity=5, reinit=0.0)
    never.push(torch.full((5, 1, 3, 3), 7.0))
    assert torch.all(never.sample(200, g) == 7.0)
    always = ReplayBuffer((2,), capacity=5, reinit=1.0, noise="gaussian")
    always.push(torch.full((5, 2), 7.0))
    x = always.sample(20_000, g)
    assert x.abs().max() < 7                                                   # all fresh N(0, I) draws
    assert abs(x.mean().item()) <= K_SE / math.sqrt(x.numel())
    assert abs(x.std().item() - 1) <= K_SE / math.sqrt(2 * x.numel())


# ------------------------------------------------------------------------------------------ networks
def test_energy_networks_return_one_energy_per_sample():
    assert EnergyMLP(3, 8, 1)(torch.randn(5, 3)).shape == (5,)
    net = EnergyCNN(1, 8)
    assert net(torch.rand(4, 1, 28, 28) * 2 - 1).shape == (4,)
    assert net(torch.rand(4, 1, 8, 8)).shape == (4,)                         # scikit-learn's 8x8 digits too


# ------------------------------------------------------------------------------------------- training
def test_a_short_run_on_the_four_mode_ring_puts_the_samples_near_the_modes():
    """400 steps of CD on gan.ring_means(4) with σ = 0.1, then 100 Langevin steps from uniform noise.

    The data put 1 - e⁻² = 86 % of their mass within 2σ of a mode; uniform mass on the ring would put 25 %, uniform
    noise on the box 6 % (an untrained EnergyMLP's samples: 4-6 %). Over seeds 0-19 (data, initialisation and
    chains all seeded by the one seed) the trained model's samples put 79-92 % there and every mode got 20-29 % of
    them; the test, on seed 0, asks for 60 % and 15 %."""
    means, sigma = gan.ring_means(4), 0.1
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    data = gan.sample_mixture(2000, means, sigma, g)
    net = EnergyMLP(2, 64, 2)
    buffer = ReplayBuffer((2,), noise_range=(-1.5, 1.5))
    history = train_ebm(net, data, 400, batch_size=128, lr=3e-3, alpha=0.01, langevin_steps=20, step_size=0.003,
                        buffer=buffer, generator=g, progress=False)
    assert len(history["loss"]) == 400 and len(buffer) == buffer.capacity
    x0 = 3 * torch.rand(1000, 2, generator=g) - 1.5
    x = langevin_sample(net, x0, 100, 0.003, generator=g)
    distance, mode = torch.cdist(x, means).min(1)
    near = distance < 2 * sigma
    assert near.float().mean() >= 0.6
    assert torch.bincount(mode[near], minlength=4).min() >= 0.15 * near.sum()


def test_train_ebm_on_digits_runs_clipped_chains_and_is_reproducible():
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(13)) * 2 - 1
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        net = EnergyCNN(1, 4)
        buffer = ReplayBuffer((1, 8, 8), capacity=50)
        history = train_ebm(net, x, 3, batch_size=16, lr=1e-4, langevin_steps=4, step_size=1.0, noise_scale=0.01,
                            buffer=buffer, clip=(-1.0, 1.0), generator=torch.Generator().manual_seed(1),
                            progress=False)
        assert len(buffer) == 48 and buffer.samples.abs().max() <= 1
        assert not net.training
        runs.append(history)
    assert runs[0] == runs[1]
    assert all(len(v) == 3 and all(math.isfinite(e) for e in v) for v in runs[0].values())
    no_buffer = train_ebm(EnergyMLP(2, 8, 1), torch.randn(32, 2), 2, batch_size=8, buffer=False, progress=False)
    assert len(no_buffer["loss"]) == 2


# -------------------------------------------------------------------------------------------- errors
def test_bad_input_raises_value_error_naming_the_argument():
    x = torch.zeros(4, 2)                                                     # constant: no default noise range
    cases = [
        (lambda: langevin_sample(_gaussian_energy, torch.zeros(4, 2, dtype=torch.long), 1, 0.1), "x_init"),
        (lambda: langevin_sample(_gaussian_energy, x, -1, 0.1), "n_steps"),
        (lambda: langevin_sample(_gaussian_energy, x, 1.5, 0.1), "n_steps"),
        (lambda: langevin_sample(_gaussian_energy, x, 1, 0.0), "step_size"),
        (lambda: langevin_sample(_gaussian_energy, x, 1, float("nan")), "step_size"),
        (lambda: langevin_sample(_gaussian_energy, x, 1, 0.1, noise_scale=-1.0), "noise_scale"),
        (lambda: langevin_sample(_gaussian_energy, x, 1, 0.1, clip=(1.0, 0.0)), "clip"),
        (lambda: langevin_sample(_gaussian_energy, x, 1, 0.1, clip=(1.0,)), "clip"),
        (lambda: langevin_sample(lambda y: y.sum(1, keepdim=True), x, 1, 0.1), "energy"),
        (lambda: score(_gaussian_energy, torch.zeros(0, 2)), "x"),
        (lambda: ReplayBuffer((0,)), "shape"),
        (lambda: ReplayBuffer((2,), capacity=0), "capacity"),
        (lambda: ReplayBuffer((2,), reinit=1.5), "reinit"),
        (lambda: ReplayBuffer((2,), noise="laplace"), "noise"),
        (lambda: ReplayBuffer((2,), noise_range=(1.0, 1.0)), "noise_range"),
        (lambda: ReplayBuffer((2,)).sample(0), "n"),
        (lambda: ReplayBuffer((2,)).push(torch.zeros(3, 3)), "x"),
        (lambda: contrastive_divergence_loss(_gaussian_energy, x, torch.zeros(4, 3)), "x_model"),
        (lambda: contrastive_divergence_loss(_gaussian_energy, x, x, alpha=-1.0), "alpha"),
        (lambda: EnergyMLP(dim=0), "dim"),
        (lambda: EnergyCNN(width=0), "width"),
        (lambda: train_ebm(EnergyMLP(), x, 0, progress=False), "steps"),
        (lambda: train_ebm(EnergyMLP(), x, 1, lr=0.0, progress=False), "lr"),
        (lambda: train_ebm(EnergyMLP(), x, 1, buffer="yes", progress=False), "buffer"),
        (lambda: train_ebm(EnergyMLP(), x, 1, buffer=ReplayBuffer((3,)), progress=False), "buffer"),
        (lambda: train_ebm(EnergyMLP(), x, 1, noise_range=(2.0, -2.0), progress=False), "noise_range"),
        (lambda: train_ebm(EnergyMLP(), x, 1, progress=False), "noise_range"),          # constant data, no range
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=rf"^{name}\b"):
            call()
