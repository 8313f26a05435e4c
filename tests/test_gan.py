import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import jensenshannon
from scipy.special import expit
from scipy.stats import norm

from dgmcourse import gan
from dgmcourse.divergences import js_divergence

torch.set_num_threads(1)
X = np.linspace(-12.0, 13.0, 20001)
DX = X[1] - X[0]
P0, P1 = norm.pdf(X, 0, 1), norm.pdf(X, 1, 1)


# ---------------------------------------------------------------------- losses
def test_discriminator_loss_matches_bce():
    r, f = torch.tensor([2.0, -1.0, 0.3]), torch.tensor([-3.0, 0.5, 1.0])
    expected = F.binary_cross_entropy_with_logits(r, torch.ones(3)) + F.binary_cross_entropy_with_logits(f, torch.zeros(3))
    torch.testing.assert_close(gan.discriminator_loss(r, f), expected)
    smoothed = F.binary_cross_entropy_with_logits(r, torch.full((3,), 0.9)) + F.binary_cross_entropy_with_logits(f, torch.zeros(3))
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
        l = torch.tensor([-5.0], requires_grad=True)
        gan.generator_loss(l, kind).backward()
        assert l.grad.item() == pytest.approx(grad, rel=1e-6)


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
        h = gan.train_toy_gan(g, d, gan.ring_of_gaussians, steps=1, batch_size=32, r1_weight=r1_weight,
                              seed=seed, n_snapshot=n_snapshot, device=torch.device("cpu"), progress=False)
        losses.append(h["d_loss"][0])
    rng = torch.Generator().manual_seed(seed)  # the loop's stream: snapshot noise, then the first real batch
    torch.randn(n_snapshot, g.z_dim, generator=rng)
    real = gan.ring_of_gaussians(32, rng).requires_grad_(True)
    expected = gamma / 2 * gan.r1_penalty(first_d(real), real).item()
    assert losses[1] - losses[0] == pytest.approx(expected, rel=1e-4) and expected > 0
    with pytest.raises(ValueError, match="r1_weight"):
        gan.train_toy_gan(g, d, gan.ring_of_gaussians, steps=1, r1_weight=-1.0)


def test_clip_weights():
    m = torch.nn.Linear(3, 3)
    with torch.no_grad():
        m.weight.fill_(5.0)
    gan.clip_weights(m, 0.01)
    assert m.weight.abs().max().item() == pytest.approx(0.01)
    with pytest.raises(ValueError, match="c must"):
        gan.clip_weights(m, 0.0)


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
    with pytest.raises(ValueError, match="means"):
        gan.mode_coverage(s, means[:, :1], 0.1)


# ---------------------------------------------------------------------- training
def small_pair(pack=1):
    torch.manual_seed(0)
    return gan.ToyGenerator(hidden=32, n_layers=2), gan.ToyDiscriminator(hidden=32, n_layers=2, pack=pack)


@pytest.mark.parametrize("loss", ["minimax", "non_saturating", "wgan", "wgan-gp"])
def test_train_toy_gan_runs_every_loss(loss):
    g, d = small_pair()
    h = gan.train_toy_gan(g, d, gan.ring_of_gaussians, steps=6, loss=loss, k=2, batch_size=32,
                          device=torch.device("cpu"), progress=False, snapshot_every=3, n_snapshot=50)
    assert len(h["d_loss"]) == len(h["g_loss"]) == 6 and np.all(np.isfinite(h["d_loss"]))
    assert [s for s, _ in h["snapshots"]] == [3, 6] and h["snapshots"][0][1].shape == (50, 2)
    assert len(h["wasserstein"]) == (6 if loss.startswith("wgan") else 0)
    if loss == "wgan":
        assert max(p.abs().max().item() for p in d.parameters()) <= 0.01 + 1e-7


def test_train_toy_gan_remedies_run_and_validate():
    g, d = small_pair(pack=2)
    h = gan.train_toy_gan(g, d, gan.grid_of_gaussians, steps=3, batch_size=32, pack_m=2, label_smoothing=0.1,
                          feature_matching=True, historical_weight=1e-3, device=torch.device("cpu"), progress=False)
    assert len(h["g_loss"]) == 3
    with pytest.raises(ValueError, match="divisible"):
        gan.train_toy_gan(g, d, gan.ring_of_gaussians, steps=1, batch_size=33, pack_m=2)
    with pytest.raises(ValueError, match="loss"):
        gan.train_toy_gan(g, d, gan.ring_of_gaussians, steps=1, loss="hinge")


def test_toy_gan_learns_a_single_gaussian():
    g, d = small_pair()
    target = torch.tensor([2.0, -1.0])
    gan.train_toy_gan(g, d, lambda n, rng: target + 0.1 * torch.randn(n, 2, generator=rng), steps=300,
                      batch_size=64, lr_g=2e-3, lr_d=2e-3, device=torch.device("cpu"), progress=False)
    x = gan.sample_toy(g, 500)
    assert (x.mean(0) - target).norm().item() < 0.3


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
