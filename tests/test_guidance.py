"""dgmcourse.guidance and the velocity-score conversions of dgmcourse.flow_matching: Bayes' rule on exact
mixture scores, closed-form classifier gradients, label dropout's rate, and the training's wiring."""

import math

import pytest
import torch

from dgmcourse import diffusion, flow_matching as fm, gan, guidance

MEANS = gan.ring_means().double()            # 8 modes; class 0 = modes 0-3, class 1 = modes 4-7
SIGMA = 0.1


def _noised(t, path, classes=(0, 1)):
    """The noised mixture at time t of the path: means alpha_t mu_k, std sqrt(alpha^2 s^2 + sigma^2)."""
    alpha, sigma, _, _ = path.coefficients(t)
    means = torch.cat([MEANS[4 * c:4 * c + 4] for c in classes])
    return alpha * means, math.sqrt(alpha ** 2 * SIGMA ** 2 + sigma ** 2)


def _log_mixture(x, means, std):
    components = torch.distributions.Independent(torch.distributions.Normal(means, std), 1)
    return torch.logsumexp(components.log_prob(x[:, None, :]), 1) - math.log(len(means))


def _points(n=64, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("path", [fm.linear_path(), fm.linear_path(0.01), fm.vp_path()], ids=["linear", "sigma_min",
                                                                                                 "vp"])
@pytest.mark.parametrize("t", [0.2, 0.6, 0.95])
def test_velocity_and_score_are_one_field(path, t):
    x = _points()
    means, std = _noised(t, path)
    score = diffusion.mixture_score(x, means, std)
    velocity = fm.marginal_vector_field(x, t, path, MEANS, SIGMA)
    assert torch.allclose(fm.velocity_from_score(score, x, t, path), velocity, atol=1e-10)
    assert torch.allclose(fm.score_from_velocity(velocity, x, t, path), score, atol=1e-9)


def test_velocity_from_score_on_the_linear_path_in_closed_form():
    x, score, t = _points(5), _points(5, seed=1), 0.25
    assert torch.allclose(fm.velocity_from_score(score, x, t, fm.linear_path()), (x + (1 - t) * score) / t)


def test_velocity_score_conversions_reject_singular_times_and_shapes():
    x = _points(4)
    with pytest.raises(ValueError, match="alpha_t must be positive"):
        fm.velocity_from_score(x, x, 0.0, fm.linear_path())
    with pytest.raises(ValueError, match="sigma_t = 0"):
        fm.score_from_velocity(x, x, 1.0, fm.linear_path())
    with pytest.raises(ValueError, match="score must have the shape"):
        fm.velocity_from_score(x[:, :1], x, 0.5, fm.linear_path())
    with pytest.raises(ValueError, match="velocity must have the shape"):
        fm.score_from_velocity(x[:2], x, 0.5, fm.linear_path())


def _bayes(t=0.5, path=fm.linear_path(), label=0):
    """Exact unconditional and class-conditional scores, and the classifier p_t(y | x) as logits."""
    means, std = _noised(t, path)
    class_means = [_noised(t, path, (c,))[0] for c in (0, 1)]

    def classifier(x, _t):               # log p(y) + log p_t(x | y), equal priors: logits of p_t(y | x)
        return torch.stack([_log_mixture(x, m, std) for m in class_means], 1)

    x = _points()
    y = torch.full((len(x),), label)
    return (x, y, diffusion.mixture_score(x, means, std), diffusion.mixture_score(x, class_means[label], std),
            classifier)


@pytest.mark.parametrize("label", [0, 1])
def test_classifier_guidance_at_scale_one_is_the_conditional_score(label):
    x, y, score, conditional, classifier = _bayes(label=label)
    grad = guidance.classifier_log_prob_grad(classifier, x, torch.full((len(x),), 0.5), y)
    assert torch.allclose(guidance.classifier_guidance(score, grad, 1.0), conditional, atol=1e-9)
    assert torch.allclose(guidance.classifier_guidance(score, grad, 0.0), score)


@pytest.mark.parametrize("scale", [0.0, 1.0, 2.5, 7.0])
def test_classifier_free_guidance_equals_guidance_by_the_implicit_classifier(scale):
    """Ho & Salimans (2022): the conditional minus the unconditional score is grad log p_t(y | x)."""
    x, y, score, conditional, classifier = _bayes(t=0.3)
    grad = guidance.classifier_log_prob_grad(classifier, x, torch.full((len(x),), 0.3), y)
    free = guidance.classifier_free_guidance(conditional, score, scale)
    assert torch.allclose(free, guidance.classifier_guidance(score, grad, scale), atol=1e-8)


@pytest.mark.parametrize("scale", [0.0, 1.0, 3.0])
def test_guidance_on_velocities_is_guidance_on_scores(scale):
    path, t = fm.linear_path(), 0.4
    x, _, score, conditional, _ = _bayes(t=t, path=path)
    u_all = fm.marginal_vector_field(x, t, path, MEANS, SIGMA)
    u_class = fm.marginal_vector_field(x, t, path, MEANS[:4], SIGMA)
    guided_score = guidance.classifier_free_guidance(conditional, score, scale)
    assert torch.allclose(guidance.classifier_free_guidance(u_class, u_all, scale),
                          fm.velocity_from_score(guided_score, x, t, path), atol=1e-9)


def test_classifier_log_prob_grad_of_logistic_regression_in_closed_form():
    a, b = torch.tensor([1.5, -0.5], dtype=torch.float64), 0.3

    def classifier(x, t):
        return torch.stack([torch.zeros(len(x), dtype=x.dtype), x @ a + b], 1)

    x = _points(6)
    grad = guidance.classifier_log_prob_grad(classifier, x, torch.zeros(6), torch.ones(6, dtype=torch.long))
    assert torch.allclose(grad, (1 - torch.sigmoid(x @ a + b))[:, None] * a)
    grad0 = guidance.classifier_log_prob_grad(classifier, x, torch.zeros(6), torch.zeros(6, dtype=torch.long))
    assert torch.allclose(grad0, -torch.sigmoid(x @ a + b)[:, None] * a)
    assert not x.requires_grad


def test_classifier_log_prob_grad_rejects_bad_labels_and_logits():
    x = _points(3)
    with pytest.raises(ValueError, match=r"labels in \[0, 2\)"):
        guidance.classifier_log_prob_grad(lambda x, t: torch.zeros(len(x), 2), x, None, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="logits of shape"):
        guidance.classifier_log_prob_grad(lambda x, t: torch.zeros(len(x)), x, None, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="integer tensor"):
        guidance.classifier_log_prob_grad(lambda x, t: torch.zeros(len(x), 2), x, None, torch.tensor([0.0, 1, 1]))


def test_guidance_combinations_reject_bad_input():
    a = _points(3)
    with pytest.raises(ValueError, match="unconditional must have the shape"):
        guidance.classifier_free_guidance(a, a[:2], 2.0)
    with pytest.raises(ValueError, match="scale must be a finite float"):
        guidance.classifier_free_guidance(a, a, float("nan"))
    with pytest.raises(ValueError, match="classifier_grad must have the shape"):
        guidance.classifier_guidance(a, a[:, :1], 1.0)


def test_drop_labels_rate_and_extremes():
    y = torch.arange(10).repeat(10_000)
    dropped = guidance.drop_labels(y, 0.2, 10, torch.Generator().manual_seed(1))
    share = (dropped == 10).double().mean().item()
    assert abs(share - 0.2) < 5 * math.sqrt(0.2 * 0.8 / len(y))
    kept = dropped != 10
    assert torch.equal(dropped[kept], y[kept])
    for c in range(10):                                    # independent of the class
        rate = (dropped[y == c] == 10).double().mean().item()
        assert abs(rate - 0.2) < 5 * math.sqrt(0.2 * 0.8 / 10_000)
    assert torch.equal(guidance.drop_labels(y, 0.0, 10), y)
    assert (guidance.drop_labels(y, 1.0, 10) == 10).all()


def test_drop_labels_rejects_bad_input():
    y = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="p_uncond"):
        guidance.drop_labels(y, 1.5, 3)
    with pytest.raises(ValueError, match="null_label"):
        guidance.drop_labels(y, 0.1, 2)
    with pytest.raises(ValueError, match="integer tensor"):
        guidance.drop_labels(y.float(), 0.1, 3)


def test_conditional_velocity_mlp_shapes_labels_and_errors():
    torch.manual_seed(0)
    model = guidance.ConditionalVelocityMLP(dim=3, num_classes=4, hidden=16)
    x, t = torch.randn(5, 3), torch.rand(5)
    out = model(x, t, torch.tensor([0, 1, 2, 3, 4]))             # 4 = the null label
    assert out.shape == (5, 3)
    assert not torch.allclose(model(x, t, torch.zeros(5, dtype=torch.long)),
                              model(x, t, torch.full((5,), 4)))
    with pytest.raises(ValueError, match=r"labels in \[0, 4\]"):
        model(x, t, torch.full((5,), 5))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3\)"):
        model(torch.randn(5, 2), t, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="emb must be even"):
        guidance.ConditionalVelocityMLP(dim=3, num_classes=4, emb=5)


def _trained_embeddings(p_uncond):
    torch.manual_seed(0)
    model = guidance.ConditionalVelocityMLP(dim=2, num_classes=3, hidden=16, n_layers=2)
    before = model.label_embedding.weight.detach().clone()
    x1, y = torch.randn(60, 2), torch.arange(3).repeat(20)
    losses = guidance.train_conditional_cfm(model, x1, y, fm.linear_path(), steps=5, batch_size=16,
                                            p_uncond=p_uncond, generator=torch.Generator().manual_seed(2),
                                            progress=False)
    assert len(losses) == 5 and all(math.isfinite(v) for v in losses)
    changed = (model.label_embedding.weight.detach() != before).any(1)
    return changed.tolist()


def test_label_dropout_decides_which_label_rows_learn():
    assert _trained_embeddings(1.0) == [False, False, False, True]      # only the null label was ever seen
    assert _trained_embeddings(0.0) == [True, True, True, False]        # the null row is never trained


def test_train_conditional_cfm_rejects_bad_input():
    model = guidance.ConditionalVelocityMLP(dim=2, num_classes=3, hidden=8)
    x1, y = torch.randn(6, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match=r"labels in \[0, 3\)"):
        guidance.train_conditional_cfm(model, x1, torch.full((6,), 3), fm.linear_path(), steps=1)
    with pytest.raises(ValueError, match=r"x1 must have shape \(N, 2\)"):
        guidance.train_conditional_cfm(model, torch.randn(6, 3), y, fm.linear_path(), steps=1)
    with pytest.raises(ValueError, match="steps"):
        guidance.train_conditional_cfm(model, x1, y, fm.linear_path(), steps=0)


def test_guided_velocity_combines_the_conditional_and_null_predictions():
    torch.manual_seed(0)
    model = guidance.ConditionalVelocityMLP(dim=2, num_classes=3, hidden=16)
    x, t, y = torch.randn(4, 2), torch.rand(4), torch.tensor([0, 2, 1, 0])
    with torch.no_grad():
        cond, null = model(x, t, y), model(x, t, torch.full((4,), 3))
        for scale, want in ((0.0, null), (1.0, cond), (2.5, null + 2.5 * (cond - null))):
            assert torch.allclose(guidance.guided_velocity(model, y, scale)(x, t), want, atol=1e-6)
    with pytest.raises(ValueError, match=r"labels in \[0, 3\)"):
        guidance.guided_velocity(model, torch.tensor([3]), 1.0)
    samples = fm.euler_sample(guidance.guided_velocity(model, y, 2.0), torch.randn(4, 2), 4, progress=False)
    assert samples.shape == (4, 2) and torch.isfinite(samples).all()
