import copy
import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import jensenshannon
from scipy.special import expit
from scipy.stats import kstest, norm
from torch.distributions import Normal

from dgmcourse import gan
from dgmcourse.divergences import js_divergence, kl_divergence

torch.set_num_threads(1)
CPU = torch.device("cpu")
X = np.linspace(-12.0, 13.0, 20001)
DX = X[1] - X[0]
P0, P1 = norm.pdf(X, 0, 1), norm.pdf(X, 1, 1)


# ---------------------------------------------------------------------- losses
def test_discriminator_loss_matches_bce():
    r, f = torch.tensor([2.0, -1.0, 0.3]), torch.tensor([-3.0, 0.5, 1.0])
    expected = (F.binary_cross_entropy_with_logits(r, torch.ones(3))
                + F.binary_cross_entropy_with_logits(f, torch.zeros(3)))
    torch.testing.assert_close(gan.discriminator_loss(r, f), expected)
    smoothed = (F.binary_cross_entropy_with_logits(r, torch.full((3,), 0.9))
                + F.binary_cross_entropy_with_logits(f, torch.zeros(3)))
    torch.testing.assert_close(gan.discriminator_loss(r, f, label_smoothing=0.1), smoothed)
    assert gan.discriminator_loss(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(math.log(4))


def test_losses_are_stable_for_confident_logits():
    assert gan.generator_loss(torch.tensor([-200.0]), "non_saturating").item() == pytest.approx(200.0)
    assert gan.discriminator_loss(torch.tensor([-300.0]), torch.tensor([300.0])).item() == pytest.approx(600.0)


def test_generator_loss_values_and_gradients():
    l0 = torch.zeros(2)
    assert gan.generator_loss(l0, "minimax").item() == pytest.approx(-math.log(2))
    assert gan.generator_loss(l0, "non_saturating").item() == pytest.approx(math.log(2))
    # D confidently rejects the fake (logit -5): the minimax gradient is -sigmoid(-5), the
    # non-saturating one -(1 - sigmoid(-5)).
    for kind, grad in [("minimax", -0.0066928509), ("non_saturating", -0.9933071491)]:
        logit = torch.tensor([-5.0], requires_grad=True)
        gan.generator_loss(logit, kind).backward()
        assert logit.grad.item() == pytest.approx(grad, rel=1e-6)


def test_loss_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        gan.discriminator_loss(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="label_smoothing"):
        gan.discriminator_loss(torch.zeros(3), torch.zeros(3), label_smoothing=1.0)
    with pytest.raises(ValueError, match="kind"):
        gan.generator_loss(torch.zeros(3), "saturating")
    with pytest.raises(ValueError, match="real_scores"):
        gan.wasserstein_critic_loss(torch.zeros(3), torch.zeros(2, 3))


def test_wasserstein_losses():
    r, f = torch.tensor([1.0, 3.0]), torch.tensor([0.5, -0.5])
    assert gan.wasserstein_critic_loss(r, f).item() == pytest.approx(-2.0)
    assert gan.wasserstein_generator_loss(f).item() == pytest.approx(0.0)


def test_gradient_penalty_of_linear_critic():
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    w = torch.tensor([3.0, 4.0])
    assert gan.gradient_penalty(lambda x: x @ w, real, fake).item() == pytest.approx(16.0)
    unit = torch.nn.Linear(2, 1)
    with torch.no_grad():
        unit.weight.copy_(torch.tensor([[0.6, 0.8]]))
    gp = gan.gradient_penalty(unit, real, fake)
    assert gp.item() == pytest.approx(0.0, abs=1e-10)
    # |x|^2 has gradient 2 x: penalty is the mean of (2|x_hat| - 1)^2, x_hat on the segment.
    g = torch.Generator().manual_seed(3)
    gp = gan.gradient_penalty(lambda x: (x ** 2).sum(1), real, fake, generator=g)
    eps = torch.rand(16, 1, generator=torch.Generator().manual_seed(3))
    x_hat = eps * real + (1 - eps) * fake
    torch.testing.assert_close(gp, ((2 * x_hat.norm(dim=1) - 1) ** 2).mean())
    with pytest.raises(ValueError, match="one score per sample"):
        gan.gradient_penalty(lambda x: x, real, fake)


def test_gradient_penalty_backpropagates_to_critic():
    critic = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    gan.gradient_penalty(critic, torch.randn(8, 2), torch.randn(8, 2)).backward()
    assert critic[0].weight.grad.abs().sum() > 0  # the penalty depends on the critic's input-side weights


def test_r1_penalty_known_values():
    real = torch.randn(8, 2).requires_grad_(True)
    w = torch.tensor([3.0, 4.0])
    assert gan.r1_penalty(real @ w + 1.0, real).item() == pytest.approx(25.0)
    # |x|^2 has gradient 2 x: the penalty is the mean of 4 |x|^2
    torch.testing.assert_close(gan.r1_penalty((real ** 2).sum(1), real), 4 * real.detach().pow(2).sum(1).mean())
    # packed in pairs: 4 logits, each with input gradient w4 on its 4 packed coordinates
    w4 = torch.tensor([1.0, 2.0, 2.0, 4.0])
    assert gan.r1_penalty(gan.pack(real, 2) @ w4, real).item() == pytest.approx(25.0)
    with pytest.raises(ValueError, match="require gradients"):
        gan.r1_penalty(real.detach() @ w, real.detach())
    with pytest.raises(ValueError, match="at most one logit"):
        gan.r1_penalty(real.flatten() * 2.0, real)


def test_train_toy_gan_adds_half_gamma_r1_to_the_discriminator_loss():
    gamma, seed, n_snapshot = 0.7, 3, 20
    losses = []
    for r1_weight in (0.0, gamma):
        g, d = small_pair()
        first_d = copy.deepcopy(d)
        config = gan.ToyGANConfig(steps=1, batch_size=32, r1_weight=r1_weight)
        h = gan.train_toy_gan(g, d, gan.ring_of_gaussians, config, seed=seed, n_snapshot=n_snapshot,
                              device=CPU, progress=False)
        losses.append(h["d_loss"][0])
    rng = torch.Generator().manual_seed(seed)  # the loop's stream: snapshot noise, then the first real batch
    torch.randn(n_snapshot, g.z_dim, generator=rng)
    real = gan.ring_of_gaussians(32, rng).requires_grad_(True)
    expected = gamma / 2 * gan.r1_penalty(first_d(real), real).item()
    assert losses[1] - losses[0] == pytest.approx(expected, rel=1e-4) and expected > 0


def test_clip_weights_clamps_parameters_only():
    m = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.BatchNorm1d(1))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[5.0, -5.0, 0.004]]))
        m[0].bias.fill_(-0.02)
        m[1].running_mean.fill_(7.0)
    gan.clip_weights(m, 0.01)
    assert m[0].weight.tolist() == [[pytest.approx(0.01), pytest.approx(-0.01), pytest.approx(0.004)]]
    assert m[0].bias.item() == pytest.approx(-0.01) and m[1].weight.item() == pytest.approx(0.01)
    assert m[1].running_mean.item() == 7.0  # a buffer, not a parameter
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="c must be positive"):
            gan.clip_weights(m, bad)


def test_feature_matching_and_historical_average():
    a, b = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.0, 0.0]])
    assert gan.feature_matching_loss(a, b).item() == pytest.approx(4.0 + 9.0)
    m = torch.nn.Linear(1, 1, bias=False)
    avg = gan.HistoricalAverage(m)
    with torch.no_grad():
        m.weight.fill_(0.0)
    first = float(avg.mean[0])
    avg.update()
    assert float(avg.mean[0]) == pytest.approx(first / 2)
    assert avg.penalty().item() == pytest.approx((first / 2) ** 2)


def test_pack():
    x = torch.arange(12.0).reshape(6, 2)
    torch.testing.assert_close(gan.pack(x, 2)[1], torch.tensor([4.0, 5.0, 6.0, 7.0]))
    with pytest.raises(ValueError, match="divisible"):
        gan.pack(x, 4)


# ---------------------------------------------------------------------- theory
def test_value_at_optimum_is_2jsd_minus_log4():
    jsd = js_divergence(P0, P1, dx=DX)
    assert jsd == pytest.approx(0.111421, abs=1e-6)
    # SciPy's jensenshannon on the discretised densities returns sqrt(JSD)
    assert jensenshannon(P0, P1) ** 2 == pytest.approx(jsd, abs=1e-9)
    d_star = gan.optimal_discriminator(P0, P1)
    value = gan.gan_value(d_star, P0, P1, DX)
    assert value == pytest.approx(-1.163451, abs=1e-6)
    assert value == pytest.approx(2 * jsd - math.log(4), abs=1e-10)


def test_optimal_discriminator_maximises_value():
    d_star = gan.optimal_discriminator(P0, P1)
    # N(0,1) vs N(1,1): p_g / p_data = exp(x - 1/2), so D*(x) = sigmoid(1/2 - x)
    np.testing.assert_allclose(d_star, expit(0.5 - X), rtol=1e-9, atol=1e-12)
    best = gan.gan_value(d_star, P0, P1, DX)
    for d in (np.full_like(X, 0.5), np.clip(d_star + 0.05, 0, 1), norm.cdf(-X)):
        assert gan.gan_value(d, P0, P1, DX) < best
    assert gan.gan_value(np.full_like(X, 0.5), P0, P0, DX) == pytest.approx(-math.log(4), abs=1e-9)
    np.testing.assert_allclose(gan.optimal_discriminator([0.0, 1.0, 3.0], [0.0, 1.0, 1.0]), [0.5, 0.5, 0.75])
    assert gan.gan_value([0.0, 0.5], [1.0, 0.0], [0.0, 1.0], 1.0) == -math.inf


@pytest.mark.parametrize("alpha, beta", [(0.1, 0.0), (0.3, 0.0), (0.2, 0.15)])
def test_smoothed_optimal_discriminator_closed_form_and_numerical_maximiser(alpha, beta):
    from scipy.optimize import minimize_scalar
    p_data, p_g = np.array([0.0, 0.2, 1.0, 3.0, 0.7]), np.array([1.0, 0.0, 1.0, 1.0, 0.05])
    d_star = gan.optimal_discriminator(p_data, p_g, label_smoothing=alpha, fake_label_smoothing=beta)
    np.testing.assert_allclose(d_star, ((1 - alpha) * p_data + beta * p_g) / (p_data + p_g), rtol=1e-12)
    for pi, p, d in zip(p_data, p_g, d_star):
        # pointwise objective of D: real targets 1 - alpha, fake targets beta (Salimans et al. 2016, §3.4)
        def negative(t, pi=pi, p=p):
            return -(((1 - alpha) * pi + beta * p) * np.log(t) + (alpha * pi + (1 - beta) * p) * np.log1p(-t))
        best = minimize_scalar(negative, bounds=(1e-12, 1 - 1e-12), method="bounded",
                               options={"xatol": 1e-12}).x
        assert best == pytest.approx(d, abs=1e-6)
    # one-sided: D* -> 0 where the data has no mass; two-sided: D* = beta there
    assert d_star[0] == pytest.approx(beta, abs=1e-15)
    assert d_star[1] == pytest.approx(1 - alpha, abs=1e-15)


def test_smoothed_optimal_discriminator_defaults_are_bit_identical():
    np.testing.assert_array_equal(gan.optimal_discriminator(P0, P1, label_smoothing=0.0),
                                  gan.optimal_discriminator(P0, P1))
    np.testing.assert_allclose(gan.optimal_discriminator(P0, P1, 0.2), 0.8 * gan.optimal_discriminator(P0, P1),
                               rtol=1e-14)
    np.testing.assert_allclose(gan.optimal_discriminator([0.0, 1.0], [0.0, 1.0], 0.2), [0.4, 0.4])
    for kwargs, name in (({"label_smoothing": 1.0}, "label_smoothing"), ({"label_smoothing": -0.1}, "label_smoothing"),
                         ({"fake_label_smoothing": 1.0}, "fake_label_smoothing")):
        with pytest.raises(ValueError, match=name):
            gan.optimal_discriminator(P0, P1, **kwargs)


def test_smoothed_discriminator_loss_is_minimised_by_the_smoothed_optimum():
    # for the per-sample loss at one point x, the logit minimising the expected smoothed loss is logit(D*)
    alpha, pi, p = 0.2, 0.7, 0.4
    logit = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([logit], lr=1, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure():
        opt.zero_grad()
        real = (1 - alpha) * F.softplus(-logit) + alpha * F.softplus(logit)
        loss = pi * real + p * F.softplus(logit)
        loss.sum().backward()
        return loss.sum()

    opt.step(closure)
    d_star = gan.optimal_discriminator([pi, 1.0], [p, 1.0], label_smoothing=alpha)[0]
    assert torch.sigmoid(logit).item() == pytest.approx(d_star, abs=1e-6)


def test_theory_bad_input():
    with pytest.raises(ValueError, match="p_data must be non-negative"):
        gan.gan_value(np.full_like(X, 0.5), -P0, P1, DX)
    with pytest.raises(ValueError, match="p_g must integrate to 1"):
        gan.gan_value(np.full_like(X, 0.5), P0, 2 * P1, DX)
    with pytest.raises(ValueError, match="D must"):
        gan.gan_value(np.full_like(X, 1.5), P0, P1, DX)
    with pytest.raises(ValueError, match="dx"):
        gan.gan_value(np.full_like(X, 0.5), P0, P1, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        gan.optimal_discriminator(P0, P1[:-1])


# ---------------------------------------------------------------------- toy data
def test_mixture_means_and_samples():
    means = gan.ring_means()
    assert means.shape == (8, 2)
    torch.testing.assert_close(means.norm(dim=1), torch.ones(8))
    torch.testing.assert_close(means[2], torch.tensor([0.0, 1.0]), atol=1e-6, rtol=0)
    grid = gan.grid_means()
    assert grid.shape == (25, 2) and set(grid[:, 0].tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}
    g = torch.Generator().manual_seed(0)
    x = gan.ring_of_gaussians(20000, generator=g)
    # a 2-D Gaussian falls within 3 sigma with probability 1 - exp(-9/2) = 0.98889
    modes, hq = gan.mode_coverage(x, means, gan.RING_SIGMA)
    assert modes == 8 and hq == pytest.approx(1 - math.exp(-4.5), abs=0.004)
    modes, hq = gan.mode_coverage(gan.grid_of_gaussians(20000, generator=g), grid, gan.GRID_SIGMA)
    assert modes == 25 and hq == pytest.approx(1 - math.exp(-4.5), abs=0.004)
    assert gan.mode_reverse_kl(x, means, gan.RING_SIGMA) == pytest.approx(0.0, abs=0.002)


def test_mode_coverage_known_answer():
    means = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    s = torch.tensor([[0.02, 0.0], [1.0, 0.029], [1.0, 0.031], [0.5, 0.5], [0.0, 0.0]])
    assert gan.mode_coverage(s, means, 0.01) == (2, 0.6)
    # 2 samples at mode 0, 1 at mode 1 -> p = (2/3, 1/3, 0)
    expected = (2 / 3) * math.log(3 * 2 / 3) + (1 / 3) * math.log(3 * 1 / 3)
    assert gan.mode_reverse_kl(s, means, 0.01) == pytest.approx(expected)
    assert gan.mode_reverse_kl(torch.zeros(5, 2), means, 0.01) == pytest.approx(math.log(3))
    with pytest.raises(ValueError, match="sigma"):
        gan.mode_coverage(s, means, 0.0)
    with pytest.raises(ValueError, match=r"means must be a non-empty \(K, 2\) tensor or array, got shape \(3, 1\)"):
        gan.mode_coverage(s, means[:, :1], 0.1)


def test_mode_coverage_accepts_numpy_and_lists():
    x = gan.ring_of_gaussians(2500, torch.Generator().manual_seed(1))
    x[:1000] = x[:1000] * 1.1  # 1,000 samples pushed 10 cm off the ring, far beyond 3 sigma = 3 cm
    means = gan.ring_means()
    expected = gan.mode_coverage(x, means, gan.RING_SIGMA)
    assert expected[0] == 8 and expected[1] == pytest.approx(0.6 * (1 - math.exp(-4.5)), abs=0.015)
    for samples, centres in ((x.numpy(), means), (x.numpy(), means.numpy()), (x.double().numpy(), means),
                             (x.tolist(), means.tolist())):
        assert gan.mode_coverage(samples, centres, gan.RING_SIGMA) == expected
        assert gan.mode_reverse_kl(samples, centres, gan.RING_SIGMA) == gan.mode_reverse_kl(x, means, gan.RING_SIGMA)
    s = np.array([[0.02, 0.0], [1.0, 0.029], [1.0, 0.031], [0.5, 0.5], [0.0, 0.0]])
    assert gan.mode_coverage(s, [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], 0.01) == (2, 0.6)
    with pytest.raises(ValueError, match=r"samples must be a non-empty \(n, d\) tensor or array, got shape \(2500,\)"):
        gan.mode_coverage(x.numpy()[:, 0], means, gan.RING_SIGMA)
    with pytest.raises(ValueError, match=r"samples must be a non-empty \(n, d\) tensor or array, got shape \(0, 2\)"):
        gan.mode_coverage(np.zeros((0, 2)), means, gan.RING_SIGMA)
    with pytest.raises(ValueError, match=r"samples must be a \(n, d\) tensor or array of numbers, got str"):
        gan.mode_coverage("ring", means, gan.RING_SIGMA)


# ---------------------------------------------------------------------- training
def small_pair(pack=1):
    torch.manual_seed(0)
    return gan.ToyGenerator(hidden=32, n_layers=2), gan.ToyDiscriminator(hidden=32, n_layers=2, pack=pack)


@pytest.mark.parametrize("loss", ["minimax", "non_saturating", "wgan", "wgan-gp"])
def test_train_toy_gan_runs_every_loss(loss):
    g, d = small_pair()
    config = gan.ToyGANConfig(steps=6, loss=loss, k=2, batch_size=32)
    h = gan.train_toy_gan(g, d, gan.ring_of_gaussians, config, device=CPU, progress=False, snapshot_every=3,
                          n_snapshot=50)
    assert len(h["d_loss"]) == len(h["g_loss"]) == 6 and np.all(np.isfinite(h["d_loss"]))
    assert [s for s, _ in h["snapshots"]] == [3, 6] and h["snapshots"][0][1].shape == (50, 2)
    assert len(h["wasserstein"]) == (6 if loss.startswith("wgan") else 0)
    if loss == "wgan":
        assert max(p.abs().max().item() for p in d.parameters()) <= 0.01 + 1e-7


STEP_RECIPES = {
    "non_saturating+R1+PacGAN2+smoothing+historical+decay": dict(k=2, r1_weight=0.5, pack_m=2, label_smoothing=0.1,
                                                                historical_weight=1e-3, lr_decay=True),
    "minimax+feature_matching+rmsprop": dict(loss="minimax", feature_matching=True, optimizer="rmsprop"),
    "wgan": dict(loss="wgan", k=3, optimizer="rmsprop", lr_d=1e-3, clip_value=0.05),
    "wgan-gp": dict(loss="wgan-gp", k=2, betas=(0.0, 0.9), gp_weight=1.0),
}


@pytest.mark.parametrize("options", STEP_RECIPES.values(), ids=STEP_RECIPES.keys())
def test_d_step_and_g_step_by_hand_equal_one_train_toy_gan_step(options):
    config = gan.ToyGANConfig(steps=1, batch_size=32, **options)
    seed, n_snapshot = 4, 10
    g_loop, d_loop = small_pair(config.pack_m)
    torch.manual_seed(1)  # WGAN-GP's interpolation weights come from the global stream
    h = gan.train_toy_gan(g_loop, d_loop, gan.ring_of_gaussians, config, seed=seed, n_snapshot=n_snapshot,
                          device=CPU, progress=False)
    # Algorithm 1 written out: the loop's stream holds the snapshot noise, then (data, noise) k times,
    # then the generator's noise (and data for feature matching)
    g, d = small_pair(config.pack_m)
    torch.manual_seed(1)
    optimizer = (lambda params, lr: torch.optim.Adam(params, lr=lr, betas=config.betas)) \
        if config.optimizer == "adam" else (lambda params, lr: torch.optim.RMSprop(params, lr=lr))
    opt_g, opt_d = optimizer(g.parameters(), config.lr_g), optimizer(d.parameters(), config.lr_d)
    avg_g, avg_d = ((gan.HistoricalAverage(g), gan.HistoricalAverage(d)) if config.historical_weight > 0
                    else (None, None))
    rng = torch.Generator().manual_seed(seed)
    torch.randn(n_snapshot, g.z_dim, generator=rng)
    for _ in range(config.k):
        real = gan.ring_of_gaussians(config.batch_size, rng)
        d_loss, w = gan.d_step(g, d, opt_d, real, torch.randn(config.batch_size, g.z_dim, generator=rng),
                               config, avg_d)
    z = torch.randn(config.batch_size, g.z_dim, generator=rng)
    real = gan.ring_of_gaussians(config.batch_size, rng) if config.feature_matching else None
    g_loss = gan.g_step(g, d, opt_g, z, config, real, avg_g)
    assert h["d_loss"] == [d_loss] and h["g_loss"] == [g_loss]
    assert h["wasserstein"] == ([w] if config.wgan else []) and (w is None) != config.wgan
    by_loop = {**g_loop.state_dict(), **{f"D.{k}": v for k, v in d_loop.state_dict().items()}}
    by_hand = {**g.state_dict(), **{f"D.{k}": v for k, v in d.state_dict().items()}}
    assert all(torch.equal(by_loop[k], by_hand[k]) for k in by_hand)  # weights and batch-norm statistics
    g_init, _ = small_pair(config.pack_m)
    assert not torch.equal(g_init.net[0].weight, g.net[0].weight)


def test_d_step_and_g_step_known_answer_with_a_linear_critic():
    # WGAN, critic f(x) = x_1, constant generator G(z) = (5, 0), plain SGD with lr 0.1
    critic, generator = torch.nn.Linear(2, 1), torch.nn.Linear(2, 2)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[1.0, 0.0]]))
        critic.bias.zero_()
        generator.weight.zero_()
        generator.bias.copy_(torch.tensor([5.0, 0.0]))
    config = gan.ToyGANConfig(steps=1, loss="wgan", clip_value=0.5, batch_size=2)
    real, z = torch.tensor([[1.0, 0.0], [3.0, 0.0]]), torch.zeros(2, 2)
    d_loss, w = gan.d_step(generator, critic, torch.optim.SGD(critic.parameters(), lr=0.1), real, z, config)
    # estimate E f(x) - E f(G(z)) = 2 - 5; the weight's gradient E G(z) - E x = (3, 0) takes it to 0.7, clipped to 0.5
    assert (d_loss, w) == (3.0, -3.0)
    assert critic.weight.tolist() == [[0.5, 0.0]] and critic.bias.item() == 0.0
    g_loss = gan.g_step(generator, critic, torch.optim.SGD(generator.parameters(), lr=0.1), z, config)
    # -E f(G(z)) = -0.5 * 5; the bias's gradient -(0.5, 0) moves it by 0.1 * 0.5
    assert g_loss == -2.5
    torch.testing.assert_close(generator.bias.detach(), torch.tensor([5.05, 0.0]))


@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, "steps must be an integer >= 1, got 0"), ("k", 1.5, "k must be an integer >= 1, got 1.5"),
    ("loss", "hinge", "loss must be one of"), ("optimizer", "sgd", "optimizer must be one of"),
    ("batch_size", 33, r"batch_size \(33\) must be divisible by pack_m \(2\)"), ("lr_d", 0.0, "lr_d must be > 0"),
    ("clip_value", -0.01, "clip_value must be > 0"), ("r1_weight", -1.0, "r1_weight must be >= 0"),
    ("betas", (0.5, 1.0), r"betas must be two numbers in \[0, 1\)"), ("label_smoothing", 1.0, "label_smoothing"),
])
def test_toy_gan_config_rejects_bad_fields(field, value, message):
    with pytest.raises(ValueError, match=message):
        gan.ToyGANConfig(**{"steps": 10, "pack_m": 2, field: value})


def test_toy_gan_config_is_frozen_and_checks_feature_matching():
    config = gan.ToyGANConfig(steps=10)
    assert (config.loss, config.k, config.batch_size, config.lr_g, config.betas) == (
        "non_saturating", 1, 256, 1e-4, (0.5, 0.999))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.steps = 20
    assert dataclasses.replace(config, loss="wgan").wgan and not config.wgan
    with pytest.raises(ValueError, match="feature_matching needs loss"):
        gan.ToyGANConfig(steps=10, loss="wgan-gp", feature_matching=True)


def test_train_toy_gan_remedies_run_and_validate():
    g, d = small_pair(pack=2)
    config = gan.ToyGANConfig(steps=3, batch_size=32, pack_m=2, label_smoothing=0.1, feature_matching=True,
                              historical_weight=1e-3)
    h = gan.train_toy_gan(g, d, gan.grid_of_gaussians, config, device=CPU, progress=False)
    assert len(h["g_loss"]) == 3
    with pytest.raises(ValueError, match="config must be a ToyGANConfig, got dict"):
        gan.train_toy_gan(g, d, gan.ring_of_gaussians, {"steps": 1})
    with pytest.raises(ValueError, match="features method"):
        gan.train_toy_gan(g, torch.nn.Linear(4, 1), gan.ring_of_gaussians, config)
    opt = torch.optim.SGD(g.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="average must be a HistoricalAverage exactly when"):
        gan.d_step(g, d, opt, torch.zeros(32, 2), torch.zeros(32, 2), config)
    with pytest.raises(ValueError, match="real must be given exactly when"):
        gan.g_step(g, d, opt, torch.zeros(32, 2), config, average=gan.HistoricalAverage(g))


def test_toy_gan_learns_a_single_gaussian():
    g, d = small_pair()
    target = torch.tensor([2.0, -1.0])
    config = gan.ToyGANConfig(steps=300, batch_size=64, lr_g=2e-3, lr_d=2e-3)
    gan.train_toy_gan(g, d, lambda n, rng: target + 0.1 * torch.randn(n, 2, generator=rng), config,
                      device=CPU, progress=False)
    x = gan.sample_toy(g, 500)
    assert (x.mean(0) - target).norm().item() < 0.3


class _LogRatio(torch.nn.Module):
    """The optimal discriminator's logit log π(x)/p(x) for data N(0, scale²) against proposals N(0, 1), in 1-D."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(scale, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.squeeze(-1).double()
        return Normal(0.0, self.scale).log_prob(x) - Normal(0.0, 1.0).log_prob(x)


def _identity_generator() -> torch.nn.Module:
    g = torch.nn.Linear(1, 1)            # G(z) = z: the proposal is the prior N(0, 1)
    torch.nn.init.ones_(g.weight), torch.nn.init.zeros_(g.bias)
    g.z_dim = 1
    return g


def test_rejection_sample_with_the_optimal_discriminator_samples_the_data():
    d = _LogRatio(0.8)
    x, acceptance = gan.rejection_sample(_identity_generator(), d, 20_000,   # default gamma_quantile=None: γ = 0
                                         generator_rng=torch.Generator().manual_seed(0))
    assert x.shape == (20_000, 1)
    assert kstest(x.squeeze(1).numpy(), norm(0, 0.8).cdf).pvalue > 0.01
    assert kstest(x.squeeze(1).numpy(), norm(0, 1).cdf).pvalue < 1e-6      # the proposals' law is rejected
    assert acceptance == pytest.approx(0.8, abs=0.01)                          # 1/M, M = max π/p = 1/0.8 at x = 0


def test_rejection_sample_follows_azadi_eq_8_by_hand():
    burn_in, q, eps = 400, 0.9, 1e-6
    d = _LogRatio(0.5)
    x, acceptance = gan.rejection_sample(_identity_generator(), d, 50, gamma_quantile=q, burn_in=burn_in,
                                         epsilon=eps, generator_rng=torch.Generator().manual_seed(3))
    rng = torch.Generator().manual_seed(3)               # the same stream: burn-in, proposals, uniforms
    z_burn, z = torch.randn(burn_in, 1, generator=rng), torch.randn(burn_in, 1, generator=rng)
    u = torch.rand(burn_in, generator=rng, dtype=torch.float64)
    with torch.no_grad():
        logits = d(z)
        d_max = torch.maximum(d(z_burn).max(), logits.max())
    gap = (logits - d_max).numpy()
    f = gap - np.log1p(-np.exp(gap - eps))
    keep = expit(f - np.quantile(f, q)) > u.numpy()
    assert keep.sum() >= 50 and acceptance == keep.mean()
    torch.testing.assert_close(x, z[torch.from_numpy(keep)][:50])


def test_rejection_sample_restores_modes_and_rejects_bad_input():
    g, d = small_pair()
    d.train()
    x, _ = gan.rejection_sample(g, d, 10, burn_in=100)
    assert x.shape == (10, 2) and d.training and g.training
    for kwargs, message in [(dict(n=0), "n and burn_in must be >= 1"), (dict(burn_in=0), "n and burn_in"),
                            (dict(gamma_quantile=1.0), "gamma_quantile must be in"),
                            (dict(epsilon=0.0), "epsilon must be > 0")]:
        with pytest.raises(ValueError, match=message):
            gan.rejection_sample(g, d, **{"n": 10, **kwargs})
    with pytest.raises(ValueError, match="packed one"):
        gan.rejection_sample(g, gan.ToyDiscriminator(hidden=8, pack=2), 10)
    with pytest.raises(ValueError, match="one finite logit per sample"):
        gan.rejection_sample(g, torch.nn.Linear(2, 2), 10)
    nan_d = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Flatten(0))
    torch.nn.init.constant_(nan_d[0].bias, float("nan"))
    with pytest.raises(ValueError, match="one finite logit per sample"):
        gan.rejection_sample(g, nan_d, 10)
    assert nan_d.training                                # restored after the error too


def test_dcgan_shapes_and_training_step():
    torch.manual_seed(0)
    g, d = gan.DCGANGenerator(z_dim=8, channels=8), gan.DCGANDiscriminator(channels=8)
    z = torch.randn(4, 8)
    y = g(z)
    assert y.shape == (4, 1, 28, 28) and y.abs().max() <= 1
    assert d(y).shape == (4,) and d.features(y).shape == (4, 49 * 16)
    h = gan.train_dcgan(g, d, torch.rand(40, 1, 28, 28), epochs=2, batch_size=16, n_fixed=6,
                        device=torch.device("cpu"), progress=False)
    assert len(h["d_loss"]) == 2 and h["fixed_samples"][-1].shape == (6, 1, 28, 28)
    s = h["fixed_samples"][-1]
    assert s.min() >= 0 and s.max() <= 1
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gan.train_dcgan(g, d, torch.rand(4, 1, 28, 28) * 2 - 1, epochs=1)


# ---------------------------------------------------------------------- virtual batch norm
def test_virtual_batch_norm_matches_hand_computation():
    torch.manual_seed(0)
    vbn = gan.VirtualBatchNorm1d(3, eps=1e-5)
    with torch.no_grad():
        vbn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        vbn.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    reference = torch.randn(7, 3)
    x = torch.randn(5, 3) * 3 + 1
    out_ref = vbn.set_reference(reference)
    out = vbn(x)
    ref64, x64 = reference.double(), x.double()
    w, b = vbn.weight.detach().double(), vbn.bias.detach().double()
    # reference batch: ordinary batch norm with its own (biased) statistics
    expected_ref = (ref64 - ref64.mean(0)) / torch.sqrt(ref64.var(0, unbiased=False) + 1e-5) * w + b
    torch.testing.assert_close(out_ref.double(), expected_ref, rtol=1e-5, atol=1e-5)
    for i in range(len(x)):
        pooled = torch.cat([ref64, x64[i:i + 1]])        # the reference batch together with the sample, weight 1/(n+1)
        mean, var = pooled.mean(0), pooled.var(0, unbiased=False)
        expected = (x64[i] - mean) / torch.sqrt(var + 1e-5) * w + b
        torch.testing.assert_close(out[i].double(), expected, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert vbn.weight.grad is not None and vbn.bias.grad is not None


def test_virtual_batch_norm_output_of_a_sample_ignores_the_rest_of_the_batch():
    torch.manual_seed(1)
    x = torch.randn(16, 4)
    other = torch.cat([x[:1], 10 * torch.randn(15, 4) + 5])   # same first sample, very different companions
    vbn = gan.VirtualBatchNorm1d(4)
    vbn.set_reference(torch.randn(32, 4))
    torch.testing.assert_close(vbn(x)[:1], vbn(other)[:1], rtol=0, atol=0)
    torch.testing.assert_close(vbn(x)[:1], vbn(x[:1]), rtol=1e-6, atol=1e-6)
    bn = torch.nn.BatchNorm1d(4)                              # ordinary batch norm: the first output changes
    assert (bn(x)[0] - bn(other)[0]).abs().max() > 0.1


def test_virtual_batch_norm_bad_input():
    with pytest.raises(ValueError, match="num_features"):
        gan.VirtualBatchNorm1d(0)
    with pytest.raises(ValueError, match="eps"):
        gan.VirtualBatchNorm1d(3, eps=0.0)
    vbn = gan.VirtualBatchNorm1d(3)
    with pytest.raises(ValueError, match="reference is not set"):
        vbn(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"reference must be .*\(B, 3\)"):
        vbn.set_reference(torch.randn(4, 2))
    with pytest.raises(ValueError, match="reference must be"):
        vbn.set_reference(torch.randn(0, 3))
    vbn.set_reference(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"x must be .*got \(4, 5\)"):
        vbn(torch.randn(4, 5))
    with pytest.raises(ValueError, match="x must be"):
        vbn(torch.randn(3))


def test_toy_generator_batch_norm_options():
    torch.manual_seed(0)
    plain = gan.ToyGenerator(hidden=16, n_layers=2, batch_norm=False)
    torch.manual_seed(0)
    virtual = gan.ToyGenerator(hidden=16, n_layers=2, batch_norm="virtual", reference_size=20)
    torch.manual_seed(0)
    ordinary = gan.ToyGenerator(hidden=16, n_layers=2, batch_norm=True)
    assert sum(isinstance(m, gan.VirtualBatchNorm1d) for m in virtual.modules()) == 2
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in ordinary.modules()) == 2
    assert not any(isinstance(m, (gan.VirtualBatchNorm1d, torch.nn.BatchNorm1d)) for m in plain.modules())
    assert virtual.reference_z.shape == (20, 2) and not hasattr(plain, "reference_z")
    linears = [m.weight for m in virtual.modules() if isinstance(m, torch.nn.Linear)]
    for w, w_plain in zip(linears, [m.weight for m in plain.modules() if isinstance(m, torch.nn.Linear)]):
        torch.testing.assert_close(w, w_plain, rtol=0, atol=0)   # same layers as batch_norm=False for one seed
    z = torch.randn(8, 2)
    out = virtual(z)
    assert out.shape == (8, 2)
    torch.testing.assert_close(virtual(z[3:4]), out[3:4], rtol=1e-5, atol=1e-6)   # per-sample, in training mode
    assert (ordinary(z[:4])[0] - ordinary(z)[0]).abs().max() > 1e-4             # batch norm mixes the batch
    out.sum().backward()
    assert all(p.grad is not None for p in virtual.parameters())
    config = gan.ToyGANConfig(steps=3, batch_size=32)
    gan.train_toy_gan(virtual, gan.ToyDiscriminator(hidden=16, n_layers=2), gan.ring_of_gaussians, config,
                      device=CPU, progress=False)
    assert gan.sample_toy(virtual, 5).shape == (5, 2)
    for bad in ("virtual_bn", 2, None):
        with pytest.raises(ValueError, match="batch_norm"):
            gan.ToyGenerator(batch_norm=bad)
    with pytest.raises(ValueError, match="reference_size"):
        gan.ToyGenerator(batch_norm="virtual", reference_size=0)


# ------------------------------------------------------- minibatch discrimination (Salimans et al. 2016, §3.2)
def _minibatch_layer(T):
    layer = gan.MinibatchDiscrimination(*T.shape)
    with torch.no_grad():
        layer.T.copy_(T)
    return layer


def test_minibatch_discrimination_known_answer():
    # A = B_k = C = 1, T = 1: M_i = x_i, so o_i = sum_j exp(-|x_i - x_j|), j = i included
    layer = _minibatch_layer(torch.ones(1, 1, 1))
    x = torch.tensor([[0.0], [1.0], [3.0]])
    e = math.exp
    want = torch.tensor([[0.0, 1 + e(-1) + e(-3)], [1.0, e(-1) + 1 + e(-2)], [3.0, e(-3) + e(-2) + 1]])
    torch.testing.assert_close(layer(x), want)
    # two kernels, C = 2: kernel 0 projects by the identity (L1 distances 1, 2, 3), kernel 1 by twice it (2, 4, 6)
    T = torch.zeros(2, 2, 2)
    T[:, 0, :], T[:, 1, :] = torch.eye(2), 2 * torch.eye(2)
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    o = _minibatch_layer(T).similarity(x)
    want = torch.tensor([[1 + e(-1) + e(-2), 1 + e(-2) + e(-4)],
                         [e(-1) + 1 + e(-3), e(-2) + 1 + e(-6)],
                         [e(-2) + e(-3) + 1, e(-4) + e(-6) + 1]])
    torch.testing.assert_close(o, want)
    out = _minibatch_layer(T)(x)
    assert out.shape == (3, 4)
    torch.testing.assert_close(out[:, :2], x, rtol=0, atol=0)   # f(x_i) passes through unchanged


def test_minibatch_discrimination_matches_the_definition_by_loops():
    layer = gan.MinibatchDiscrimination(3, 4, 2, generator=torch.Generator().manual_seed(0)).double()
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    M = [[x[i] @ layer.T[:, b, :] for b in range(4)] for i in range(6)]   # M_{i,b} = f(x_i) T_{:, b, :}
    want = torch.tensor([[sum(math.exp(-(M[i][b] - M[j][b]).abs().sum().item()) for j in range(6))
                          for b in range(4)] for i in range(6)], dtype=torch.float64)
    torch.testing.assert_close(layer.similarity(x), want, rtol=1e-12, atol=1e-12)


def test_minibatch_discrimination_sees_collapse():
    layer = gan.MinibatchDiscrimination(2, 5, 3, generator=torch.Generator().manual_seed(0))
    copies = torch.tensor([[0.3, -1.2]]).repeat(16, 1)              # a collapsed batch: 16 identical samples
    torch.testing.assert_close(layer.similarity(copies), torch.full((16, 5), 16.0), rtol=0, atol=0)
    assert torch.equal(layer.similarity(copies[:1]), torch.ones(1, 5))  # a batch of one: o = 1 (only j = i)
    far = 1e4 * torch.arange(16.0)[:, None] * torch.tensor([[1.0, 0.7]])   # samples far apart: only j = i counts
    torch.testing.assert_close(layer.similarity(far), torch.ones(16, 5), rtol=0, atol=1e-12)


def test_minibatch_discrimination_gradients():
    layer = gan.MinibatchDiscrimination(3, 2, 4, generator=torch.Generator().manual_seed(2)).double()
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))                                  # d output / d x
    T = layer.T.detach().clone().requires_grad_(True)

    def output_of_T(T):
        return torch.exp(-torch.cdist(torch.einsum("ia,abc->bic", x.detach(), T),
                                      torch.einsum("ia,abc->bic", x.detach(), T), p=1)).sum(2).T
    assert torch.autograd.gradcheck(output_of_T, (T,))
    layer.similarity(x).sum().backward()
    assert layer.T.grad is not None and layer.T.grad.abs().sum() > 0             # T is trained through o
    # the gradient w.r.t. T agrees with the formula's autograd gradient
    output_of_T(T).sum().backward()
    torch.testing.assert_close(layer.T.grad, T.grad)


def test_minibatch_discrimination_bad_input():
    for kwargs, name in (({"in_features": 0}, "in_features"), ({"n_kernels": 1.5}, "n_kernels"),
                         ({"kernel_dim": True}, "kernel_dim"), ({"init_std": 0.0}, "init_std"),
                         ({"init_std": float("nan")}, "init_std")):
        args = {"in_features": 3, "n_kernels": 2, "kernel_dim": 2, **kwargs}
        with pytest.raises(ValueError, match=name):
            gan.MinibatchDiscrimination(**args)
    layer = gan.MinibatchDiscrimination(3, 2, 2)
    for bad in (torch.zeros(4, 2), torch.zeros(3), torch.zeros(0, 3), torch.zeros(4, 3, dtype=torch.long),
                np.zeros((4, 3))):
        with pytest.raises(ValueError, match=r"x must be a floating-point tensor \(n, 3\)"):
            layer(bad)


# ------------------------------------------------------ PacGAN's packed total variation (Lin et al. 2018)
def _brute_force_packed_tv(p, q, m):
    """1/2 sum over all K^m packs of |prod p - prod q|."""
    return 0.5 * sum(abs(math.prod(p[i] for i in pack) - math.prod(q[i] for i in pack))
                     for pack in itertools.product(range(len(p)), repeat=m))


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_packed_total_variation_matches_enumeration(m):
    rng = np.random.default_rng(m)
    for p, q in [(rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(3))),
                 (np.array([0.5, 0.0, 0.3, 0.2]), rng.dirichlet(np.ones(4))),
                 (np.array([0.0, 0.4, 0.6]), np.array([0.7, 0.3, 0.0]))]:
        assert gan.packed_total_variation(p, q, m) == pytest.approx(_brute_force_packed_tv(p, q, m), abs=1e-13)


def test_packed_total_variation_known_answers():
    uniform = np.full(8, 1 / 8)
    dropped = np.r_[0.0, np.full(7, 1 / 7)]                          # one of 8 modes dropped, mass 1/8 spread
    for m in range(1, 7):                                            # packs that hit the dropped mode: 1 - (7/8)^m
        assert gan.packed_total_variation(uniform, dropped, m) == pytest.approx(1 - (7 / 8) ** m, abs=1e-14)
    p = np.array([0.1, 0.2, 0.3, 0.4])                               # drop two outcomes of mass eps = 0.3
    q = np.array([0.0, 0.0, 0.3, 0.4]) / 0.7
    for m in (1, 3, 5):
        assert gan.packed_total_variation(p, q, m) == pytest.approx(1 - 0.7 ** m, abs=1e-14)
    spread = np.array([5 / 32, 3 / 32] * 4)                          # every mode kept, TV 1/8 too
    assert gan.packed_total_variation(uniform, spread, 1) == pytest.approx(1 / 8, abs=1e-15)
    assert gan.packed_total_variation(uniform, spread, 2) == pytest.approx(9 / 64, abs=1e-15)   # by hand: 144/1024
    assert gan.packed_total_variation(uniform, uniform, 5) == pytest.approx(0.0, abs=1e-15)
    assert gan.packed_total_variation([1.0, 0.0], [0.0, 1.0], 4) == pytest.approx(1.0, abs=1e-15)
    assert gan.packed_total_variation(torch.tensor([0.25, 0.75]), [0.5, 0.5], 1) == pytest.approx(0.25, abs=1e-15)
    # d_TV(p, q) <= d_TV(p^m, q^m) <= min(1, m d_TV(p, q)), increasing in m
    tv = [gan.packed_total_variation(uniform, spread, m) for m in range(1, 6)]
    assert all(a < b for a, b in zip(tv, tv[1:]))
    assert all(tv[0] <= t <= min(1.0, (m + 1) * tv[0]) + 1e-15 for m, t in enumerate(tv))


def test_packed_total_variation_bad_input():
    with pytest.raises(ValueError, match="p must be"):
        gan.packed_total_variation([0.5, 0.6], [0.5, 0.5], 2)
    with pytest.raises(ValueError, match="q must be"):
        gan.packed_total_variation([0.5, 0.5], [1.5, -0.5], 2)
    with pytest.raises(ValueError, match="p must be"):
        gan.packed_total_variation(np.full((2, 2), 0.25), np.full((2, 2), 0.25), 1)
    with pytest.raises(ValueError, match="same number of outcomes"):
        gan.packed_total_variation([0.5, 0.5], [0.2, 0.3, 0.5], 1)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="m must be an integer"):
            gan.packed_total_variation([0.5, 0.5], [0.5, 0.5], bad)
    with pytest.raises(ValueError, match="count vectors"):
        gan.packed_total_variation(np.full(100, 0.01), np.full(100, 0.01), 10)


# ------------------------------------- Proposition 2: Algorithm 1 in function space (Goodfellow et al. 2014)
def _random_pair(rng, k):
    return rng.dirichlet(np.full(k, 0.7)), rng.dirichlet(np.full(k, 2.0))


def test_function_space_step_with_lr_one_moves_halfway_to_the_data():
    rng = np.random.default_rng(0)
    for k in (2, 5, 10, 40):
        pi, p = _random_pair(rng, k)
        new = gan.function_space_generator_step(pi, p, lr=1.0)
        np.testing.assert_allclose(new, 0.5 * (pi + p), rtol=1e-12, atol=0)         # p^0 (pi + p)^1 / 2
        assert js_divergence(pi, new) <= 0.5 * js_divergence(pi, p) + 1e-15           # JSD convex in p


def test_function_space_step_is_exponentiated_gradient_of_v_at_the_optimal_discriminator():
    rng = np.random.default_rng(1)
    pi, p = _random_pair(rng, 8)
    # C(p) = V(G, D*_p) with D* depending on p: autograd differentiates through D*, which changes nothing at D*
    p_t = torch.tensor(p, requires_grad=True)
    pi_t = torch.tensor(pi)
    d_star_t = pi_t / (pi_t + p_t)
    value = (pi_t * torch.log(d_star_t) + p_t * torch.log(1 - d_star_t)).sum()
    (grad,) = torch.autograd.grad(value, p_t)
    d_star = gan.optimal_discriminator(pi, p)
    assert value.item() == pytest.approx(gan.gan_value(d_star, pi, p, dx=1.0), abs=1e-14)
    assert value.item() == pytest.approx(2 * js_divergence(pi, p) - math.log(4), abs=1e-14)   # Theorem 1
    np.testing.assert_allclose(grad.numpy(), np.log(1 - d_star), rtol=1e-12, atol=1e-14)  # grad of V at fixed D*
    for lr in (0.05, 0.5, 2.0):
        want = p * np.exp(-lr * grad.numpy())
        np.testing.assert_allclose(gan.function_space_generator_step(pi, p, lr), want / want.sum(), rtol=1e-12)


def test_function_space_steps_converge_to_the_data_at_the_relative_smoothness_rate():
    rng = np.random.default_rng(2)
    for lr in (0.1, 0.5, 1.0):
        pi, p = _random_pair(rng, 10)
        kl0, gaps = kl_divergence(pi, p), []
        for t in range(1, 301):
            p = gan.function_space_generator_step(pi, p, lr)
            gaps.append(gan.gan_value(gan.optimal_discriminator(pi, p), pi, p, dx=1.0) + math.log(4))
            assert gaps[-1] <= kl0 / (lr * t) + 1e-12          # 2 JSD_t <= KL(pi || p_0) / (lr t)
        assert np.all(np.diff(gaps) <= 1e-15)                  # C decreases monotonically for lr <= 1
        np.testing.assert_allclose(p, pi, atol=1e-6)            # Proposition 2: p_g -> pi
        assert gaps[-1] < 1e-10


def test_function_space_step_keeps_a_distribution_and_handles_data_zeros():
    pi = np.array([0.5, 0.5, 0.0])
    p = np.array([0.2, 0.3, 0.5])
    for _ in range(60):
        p = gan.function_space_generator_step(pi, p, 1.0)
    assert p.sum() == pytest.approx(1.0, abs=1e-15) and np.all(p > 0)
    assert p[2] == pytest.approx(0.5 * 2.0 ** -60, rel=1e-9)   # mass off the data's support halves each step


def test_function_space_step_bad_input():
    pi, p = np.array([0.3, 0.7]), np.array([0.5, 0.5])
    for args, match in (((pi, np.array([1 / 3] * 3), 0.5), "same shape"),
                        ((np.array([1.2, -0.2]), p, 0.5), "p_data must be non-negative"),
                        ((pi, np.array([1.0, 0.0]), 0.5), "p_g must be strictly positive"),
                        ((np.array([0.3, 0.6]), p, 0.5), "p_data must sum to 1"),
                        ((pi, np.array([0.5, 0.6]), 0.5), "p_g must sum to 1"),
                        ((pi, p, 0.0), "lr must be a positive"),
                        ((pi, p, float("inf")), "lr must be a positive"),
                        ((np.array([1.0]), np.array([1.0]), 0.5), "p_data must be a 1-D array"),
                        ((pi, np.array([0.5, np.nan]), 0.5), "p_g must be finite")):
        with pytest.raises(ValueError, match=match):
            gan.function_space_generator_step(*args)
