"""Alternatives and mistakes for a7_gan_practice (see dgmcourse.assessment)."""
from dgmcourse.assessment import Mistake

# --- correct alternatives -------------------------------------------------------------------
LOSS_BCE = '''def smoothed_discriminator_loss(real_logits, fake_logits, alpha):
    """-(1/B) sum [(1 - alpha) log D(x_i) + alpha log(1 - D(x_i))] - (1/B') sum log(1 - D(G(z_j))): scalar, nats."""
    if alpha < 0 or alpha >= 1:
        raise ValueError("alpha must be in [0, 1)")
    real_targets = torch.full_like(real_logits, 1.0 - alpha)
    fake_targets = torch.zeros_like(fake_logits)
    return (F.binary_cross_entropy_with_logits(real_logits, real_targets)
            + F.binary_cross_entropy_with_logits(fake_logits, fake_targets))
'''

LOSS_BERNOULLI = '''from torch.distributions import Bernoulli


def smoothed_discriminator_loss(real_logits, fake_logits, alpha):
    """-(1/B) sum [(1 - alpha) log D(x_i) + alpha log(1 - D(x_i))] - (1/B') sum log(1 - D(G(z_j))): scalar, nats."""
    if not (0.0 <= alpha < 1.0):
        raise ValueError(f"alpha = {alpha} is outside [0, 1)")
    # a soft target: Bernoulli's log_prob is minus the cross-entropy, computed from the logits
    real = Bernoulli(logits=real_logits, validate_args=False).log_prob(torch.full_like(real_logits, 1.0 - alpha))
    fake = Bernoulli(logits=fake_logits, validate_args=False).log_prob(torch.zeros_like(fake_logits))
    return -(real.mean() + fake.mean())
'''

LOSS_SHIFTED = '''def smoothed_discriminator_loss(real_logits, fake_logits, alpha):
    """-(1/B) sum [(1 - alpha) log D(x_i) + alpha log(1 - D(x_i))] - (1/B') sum log(1 - D(G(z_j))): scalar, nats."""
    if not 0 <= alpha < 1:
        raise ValueError("alpha")
    # (1 - a) softplus(-l) + a softplus(l) = softplus(-l) + a l, since softplus(l) - softplus(-l) = l
    real = torch.sum(F.softplus(-real_logits) + alpha * real_logits) / real_logits.numel()
    fake = -torch.sum(F.logsigmoid(-fake_logits)) / fake_logits.numel()
    return real + fake
'''

DSTAR_ERRSTATE = '''def smoothed_optimal_discriminator(p_data, p_g, alpha):
    """D*_alpha(x) for one-sided smoothed labels, from densities pi and p at N points: arrays (N,) -> (N,)."""
    pi = np.array(p_data, dtype=np.float64)
    p = np.array(p_g, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (1.0 - alpha) * pi / (pi + p)
    return np.where(pi + p > 0, d, 0.5 * (1.0 - alpha))
'''

DSTAR_TORCH = '''def smoothed_optimal_discriminator(p_data, p_g, alpha):
    """D*_alpha(x) for one-sided smoothed labels, from densities pi and p at N points: arrays (N,) -> (N,)."""
    pi = torch.as_tensor(np.asarray(p_data), dtype=torch.float64)
    p = torch.as_tensor(np.asarray(p_g), dtype=torch.float64)
    total = pi + p
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, (1 - alpha) * pi / safe, torch.full_like(total, (1 - alpha) / 2)).numpy()
'''

DSTAR_EXPIT = '''from scipy.special import expit


def smoothed_optimal_discriminator(p_data, p_g, alpha):
    """D*_alpha(x) for one-sided smoothed labels, from densities pi and p at N points: arrays (N,) -> (N,)."""
    pi, p = np.asarray(p_data, dtype=float), np.asarray(p_g, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (1 - alpha) * expit(np.log(pi) - np.log(p))        # pi / (pi + p) = sigmoid(log pi - log p)
    return np.where((pi == 0) & (p == 0), (1 - alpha) / 2, d)
'''

R1_GRAD_OUTPUTS = '''def r1_penalty(discriminator, x_real):
    """R1 = mean_i ||grad_x l(x_i)||^2 over the real batch (B, d), differentiable w.r.t. D's parameters: scalar."""
    x = x_real.clone().detach()
    x.requires_grad = True
    out = discriminator(x)
    grads = torch.autograd.grad(outputs=out, inputs=x, grad_outputs=torch.ones_like(out), create_graph=True)[0]
    return grads.norm(2, dim=1).pow(2).mean()
'''

R1_EINSUM = '''def r1_penalty(discriminator, x_real):
    """R1 = mean_i ||grad_x l(x_i)||^2 over the real batch (B, d), differentiable w.r.t. D's parameters: scalar."""
    x = x_real.detach().clone().requires_grad_()
    g, = torch.autograd.grad(discriminator(x).sum(), [x], create_graph=True, retain_graph=True)
    g = g.reshape(len(x), -1)
    return torch.einsum("bi,bi->b", g, g).mean()
'''

R1_SUM_OVER_B = '''def r1_penalty(discriminator, x_real):
    """R1 = mean_i ||grad_x l(x_i)||^2 over the real batch (B, d), differentiable w.r.t. D's parameters: scalar."""
    inputs = torch.tensor(x_real.detach().cpu().numpy(), device=x_real.device, requires_grad=True)
    logits = discriminator(inputs)
    gradient = torch.autograd.grad(torch.sum(logits), inputs, create_graph=True)[0]
    return (gradient * gradient).sum() / inputs.shape[0]
'''

ALTERNATIVES = {
    "bce_errstate_grad_outputs": {
        "smoothed_discriminator_loss": LOSS_BCE, "smoothed_optimal_discriminator": DSTAR_ERRSTATE,
        "r1_penalty": R1_GRAD_OUTPUTS},
    "bernoulli_torch_einsum": {
        "smoothed_discriminator_loss": LOSS_BERNOULLI, "smoothed_optimal_discriminator": DSTAR_TORCH,
        "r1_penalty": R1_EINSUM},
    "shifted_softplus_expit_sum": {
        "smoothed_discriminator_loss": LOSS_SHIFTED, "smoothed_optimal_discriminator": DSTAR_EXPIT,
        "r1_penalty": R1_SUM_OVER_B},
}

# --- mistakes -------------------------------------------------------------------------------
_LOSS_HEAD = '''def smoothed_discriminator_loss(real_logits, fake_logits, alpha):
    """-(1/B) sum [(1 - alpha) log D(x_i) + alpha log(1 - D(x_i))] - (1/B') sum log(1 - D(G(z_j))): scalar, nats."""
    if not 0 <= alpha < 1:
        raise ValueError(f"alpha must lie in [0, 1), got {alpha!r}")
'''
_REAL = "    real = (1 - alpha) * F.softplus(-real_logits) + alpha * F.softplus(real_logits)\n"
_DSTAR_HEAD = '''def smoothed_optimal_discriminator(p_data, p_g, alpha):
    """D*_alpha(x) for one-sided smoothed labels, from densities pi and p at N points: arrays (N,) -> (N,)."""
    p_data, p_g = np.asarray(p_data, dtype=float), np.asarray(p_g, dtype=float)
    total = p_data + p_g
'''
_R1_HEAD = '''def r1_penalty(discriminator, x_real):
    """R1 = mean_i ||grad_x l(x_i)||^2 over the real batch (B, d), differentiable w.r.t. D's parameters: scalar."""
    x = x_real.detach().requires_grad_(True)
'''
_R1_GRAD = "    (grad,) = torch.autograd.grad(discriminator(x).sum(), x, create_graph=True)\n"


def _loss(body):
    return _LOSS_HEAD + body


def _dstar(body):
    return _DSTAR_HEAD + body


def _r1(body):
    return _R1_HEAD + body


# two-sided smoothing (fake target alpha), caught by the loss's values and by the trained discriminator
_BOTH_SIDED = _loss(_REAL + '''\
    fake = alpha * F.softplus(-fake_logits) + (1 - alpha) * F.softplus(fake_logits)
    return real.mean() + fake.mean()
''')

MISTAKES = [
    # smoothed_discriminator_loss: values
    Mistake("loss_both_sided", test="test_smoothed_loss",
            replaces={"smoothed_discriminator_loss": _BOTH_SIDED},
            description="both labels smoothed: the fake target alpha instead of 0 (two-sided smoothing)"),
    Mistake("loss_fake_side_smoothed", test="test_smoothed_loss",
            replaces={"smoothed_discriminator_loss": _loss('''\
    fake = alpha * F.softplus(-fake_logits) + (1 - alpha) * F.softplus(fake_logits)
    return F.softplus(-real_logits).mean() + fake.mean()
''')}, description="the smoothing put on the wrong side: real target 1, fake target alpha"),
    Mistake("loss_alpha_ignored", test="test_smoothed_loss",
            replaces={"smoothed_discriminator_loss": _loss('''\
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
''')}, description="the standard loss whatever alpha: the real target stays 1"),
    Mistake("loss_real_target_alpha", test="test_smoothed_loss",
            replaces={"smoothed_discriminator_loss": _loss('''\
    real = alpha * F.softplus(-real_logits) + (1 - alpha) * F.softplus(real_logits)
    return real.mean() + F.softplus(fake_logits).mean()
''')}, description="the real target alpha instead of 1 - alpha"),
    Mistake("loss_real_term_scaled", test="test_smoothed_loss",
            replaces={"smoothed_discriminator_loss": _loss('''\
    return (1 - alpha) * F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
''')}, description="the real term scaled by 1 - alpha, without its alpha log(1 - D) part"),
    Mistake("loss_pooled_mean", test="test_smoothed_loss",
            replaces={"smoothed_discriminator_loss": _loss('''\
    logits = torch.cat([real_logits, fake_logits])
    targets = torch.cat([torch.full_like(real_logits, 1 - alpha), torch.zeros_like(fake_logits)])
    return F.binary_cross_entropy_with_logits(logits, targets)
''')}, description="one mean over the real and fake logits together: half the loss, each batch weighted by its size"),
    Mistake("loss_sums", test="test_smoothed_loss",
            replaces={"smoothed_discriminator_loss": _loss(_REAL + '''\
    return real.sum() + F.softplus(fake_logits).sum()
''')}, description="summed over the batches instead of averaged"),
    Mistake("loss_no_validation", test="test_smoothed_loss",
            replaces={"smoothed_discriminator_loss": '''\
def smoothed_discriminator_loss(real_logits, fake_logits, alpha):
    """-(1/B) sum [(1 - alpha) log D(x_i) + alpha log(1 - D(x_i))] - (1/B') sum log(1 - D(G(z_j))): scalar, nats."""
    real = (1 - alpha) * F.softplus(-real_logits) + alpha * F.softplus(real_logits)
    return real.mean() + F.softplus(fake_logits).mean()
'''}, description="no ValueError for alpha outside [0, 1)"),
    Mistake("loss_detached", test="test_smoothed_loss",
            replaces={"smoothed_discriminator_loss": _loss(_REAL + '''\
    return torch.tensor((real.mean() + F.softplus(fake_logits).mean()).item())
''')}, description="the loss rebuilt from a Python float: right value, no gradient"),
    Mistake("loss_library_answer", test="test_smoothed_loss",
            replaces={"smoothed_discriminator_loss": '''from dgmcourse.gan import discriminator_loss


def smoothed_discriminator_loss(real_logits, fake_logits, alpha):
    """-(1/B) sum [(1 - alpha) log D(x_i) + alpha log(1 - D(x_i))] - (1/B') sum log(1 - D(G(z_j))): scalar, nats."""
    return discriminator_loss(real_logits, fake_logits, label_smoothing=alpha)
'''}, description="calls the course library's gan.discriminator_loss (not an answer: the grader gives no points)"),
    # smoothed_discriminator_loss: stability
    Mistake("loss_from_probabilities", test="test_smoothed_loss_stable",
            replaces={"smoothed_discriminator_loss": _loss('''\
    d_real, d_fake = torch.sigmoid(real_logits), torch.sigmoid(fake_logits)
    real = -((1 - alpha) * torch.log(d_real) + alpha * torch.log(1 - d_real))
    return real.mean() - torch.log(1 - d_fake).mean()
''')}, description="log of sigmoid probabilities: -inf / NaN once sigmoid rounds to 0 or 1 (|l| > ~17 in float32)"),
    Mistake("loss_clamped_probabilities", test="test_smoothed_loss_stable",
            replaces={"smoothed_discriminator_loss": _loss('''\
    d_real = torch.sigmoid(real_logits).clamp(1e-7, 1 - 1e-7)
    d_fake = torch.sigmoid(fake_logits).clamp(1e-7, 1 - 1e-7)
    real = -((1 - alpha) * torch.log(d_real) + alpha * torch.log(1 - d_real))
    return real.mean() - torch.log(1 - d_fake).mean()
''')}, description="clamped probabilities: finite, but wrong (at most ~16 nats per term) for large logits"),
    Mistake("loss_bce_on_probabilities", test="test_smoothed_loss_stable",
            replaces={"smoothed_discriminator_loss": _loss('''\
    real = F.binary_cross_entropy(torch.sigmoid(real_logits), torch.full_like(real_logits, 1 - alpha))
    fake = F.binary_cross_entropy(torch.sigmoid(fake_logits), torch.zeros_like(fake_logits))
    return real + fake
''')}, description="F.binary_cross_entropy on sigmoid probabilities: its log is clipped at -100"),
    Mistake("loss_naive_softplus", test="test_smoothed_loss_stable",
            replaces={"smoothed_discriminator_loss": _loss('''\
    sp = lambda t: torch.log1p(torch.exp(t))                 # softplus written out: exp overflows
    real = (1 - alpha) * sp(-real_logits) + alpha * sp(real_logits)
    return real.mean() + sp(fake_logits).mean()
''')}, description="softplus written as log(1 + exp(l)): exp overflows to inf for l > 88 in float32"),
    # smoothed_optimal_discriminator
    Mistake("dstar_both_sided", test="test_smoothed_optimum",
            replaces={"smoothed_optimal_discriminator": _dstar('''\
    return np.divide((1 - alpha) * p_data + alpha * p_g, total, out=np.full_like(total, 0.5), where=total > 0)
''')}, description="the optimum of two-sided smoothing ((1 - alpha) pi + alpha p) / (pi + p)"),
    Mistake("dstar_unsmoothed", test="test_smoothed_optimum",
            replaces={"smoothed_optimal_discriminator": _dstar('''\
    return np.divide(p_data, total, out=np.full_like(total, 0.5), where=total > 0)
''')}, description="Proposition 1's pi / (pi + p), alpha ignored"),
    Mistake("dstar_renormalised", test="test_smoothed_optimum",
            replaces={"smoothed_optimal_discriminator": _dstar('''\
    scaled = (1 - alpha) * p_data
    return np.divide(scaled, scaled + p_g, out=np.full_like(total, (1 - alpha) / 2), where=total > 0)
''')}, description="(1 - alpha) pi / ((1 - alpha) pi + p): the weights of log(1 - D) forgotten"),
    Mistake("dstar_subtracts_alpha", test="test_smoothed_optimum",
            replaces={"smoothed_optimal_discriminator": _dstar('''\
    return np.divide(p_data, total, out=np.full_like(total, 0.5), where=total > 0) - alpha
''')}, description="pi / (pi + p) - alpha: the target shifted instead of the optimum derived"),
    Mistake("dstar_nan_where_no_mass", test="test_smoothed_optimum",
            replaces={"smoothed_optimal_discriminator": _dstar('''\
    return (1 - alpha) * p_data / total
''')}, description="a plain division: NaN and a warning where both densities are 0"),
    Mistake("dstar_library_answer", test="test_smoothed_optimum",
            replaces={"smoothed_optimal_discriminator": '''from dgmcourse.gan import optimal_discriminator


def smoothed_optimal_discriminator(p_data, p_g, alpha):
    """D*_alpha(x) for one-sided smoothed labels, from densities pi and p at N points: arrays (N,) -> (N,)."""
    return (1 - alpha) * optimal_discriminator(p_data, p_g)
'''}, description="scales the course library's gan.optimal_discriminator (not an answer: the grader gives no points)"),
    # r1_penalty: values
    Mistake("r1_sum_over_batch", test="test_r1_values",
            replaces={"r1_penalty": _r1(_R1_GRAD + '''    return grad.pow(2).sum()
''')}, description="summed over the batch instead of averaged"),
    Mistake("r1_norm_not_squared", test="test_r1_values",
            replaces={"r1_penalty": _r1(_R1_GRAD + '''    return grad.norm(dim=1).mean()
''')}, description="the gradient norm, not its square"),
    Mistake("r1_mean_over_coordinates", test="test_r1_values",
            replaces={"r1_penalty": _r1(_R1_GRAD + '''    return grad.pow(2).mean()
''')}, description="averaged over the input coordinates too: divided by d"),
    Mistake("r1_of_probabilities", test="test_r1_values",
            replaces={"r1_penalty": _r1('''\
    (grad,) = torch.autograd.grad(torch.sigmoid(discriminator(x)).sum(), x, create_graph=True)
    return grad.pow(2).sum(1).mean()
''')}, description="the gradient of D = sigmoid(l) instead of the logit l"),
    Mistake("r1_gradient_of_mean", test="test_r1_values",
            replaces={"r1_penalty": _r1('''\
    (grad,) = torch.autograd.grad(discriminator(x).mean(), x, create_graph=True)
    return grad.pow(2).sum(1).mean()
''')}, description="the gradient of the batch mean of the logits: each sample's gradient divided by B"),
    Mistake("r1_gradient_penalty_form", test="test_r1_values",
            replaces={"r1_penalty": _r1(_R1_GRAD + '''    return (grad.norm(dim=1) - 1).pow(2).mean()
''')}, description="WGAN-GP's (||grad|| - 1)^2 instead of ||grad||^2"),
    Mistake("r1_changes_caller_tensor", test="test_r1_values",
            replaces={"r1_penalty": '''def r1_penalty(discriminator, x_real):
    """R1 = mean_i ||grad_x l(x_i)||^2 over the real batch (B, d), differentiable w.r.t. D's parameters: scalar."""
    x_real.requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x_real).sum(), x_real, create_graph=True)
    return grad.pow(2).sum(1).mean()
'''}, description="requires_grad set on the caller's tensor (fails for non-leaf inputs, changes the caller's data)"),
    Mistake("r1_library_answer", test="test_r1_values",
            replaces={"r1_penalty": '''from dgmcourse import gan


def r1_penalty(discriminator, x_real):
    """R1 = mean_i ||grad_x l(x_i)||^2 over the real batch (B, d), differentiable w.r.t. D's parameters: scalar."""
    x = x_real.detach().requires_grad_(True)
    return gan.r1_penalty(discriminator(x), x)
'''}, description="calls the course library's gan.r1_penalty (not an answer: the grader gives no points)"),
    # r1_penalty: a penalty that trains D
    Mistake("r1_no_create_graph", test="test_r1_trains_discriminator",
            replaces={"r1_penalty": _r1('''\
    (grad,) = torch.autograd.grad(discriminator(x).sum(), x)
    return grad.pow(2).sum(1).mean()
''')}, description="create_graph forgotten: the right value, but no gradient reaches D's parameters"),
    Mistake("r1_detached", test="test_r1_trains_discriminator",
            replaces={"r1_penalty": _r1(_R1_GRAD + '''    return grad.detach().pow(2).sum(1).mean()
''')}, description="the input gradient detached before squaring: the penalty does not train D"),
    Mistake("r1_returns_float", test="test_r1_trains_discriminator",
            replaces={"r1_penalty": _r1(_R1_GRAD + '''    return grad.pow(2).sum(1).mean().item()
''')}, description="a Python float (.item()): no graph back to D's parameters"),
    # the trained discriminator against D*_alpha
    Mistake("dstar_run_alpha_ignored", test="test_dstar",
            replaces={"smoothed_discriminator_loss": _loss('''\
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
''')}, description="the real target stays 1: the trained D approaches pi / (pi + p), not (1 - alpha) pi / (pi + p)"),
    Mistake("dstar_run_both_sided", test="test_dstar",
            replaces={"smoothed_discriminator_loss": _BOTH_SIDED},
            description="two-sided smoothing: the trained D stays near alpha where only the fakes are"),
    Mistake("dstar_run_target_alpha", test="test_dstar",
            replaces={"smoothed_discriminator_loss": _loss('''\
    real = alpha * F.softplus(-real_logits) + (1 - alpha) * F.softplus(real_logits)
    return real.mean() + F.softplus(fake_logits).mean()
''')}, description="the real target alpha: the trained D is about alpha pi / (pi + p)"),
    # the GANs on the ring
    Mistake("ring_loss_negated", test="test_ring",
            replaces={"smoothed_discriminator_loss": _loss(_REAL + '''\
    return -(real.mean() + F.softplus(fake_logits).mean())
''')}, description="the loss negated (V instead of -V): the discriminator learns to call data fake"),
    Mistake("ring_r1_negated", test="test_ring",
            replaces={"r1_penalty": _r1(_R1_GRAD + '''    return -grad.pow(2).sum(1).mean()
''')}, description="the penalty's sign flipped: minimising -R1 makes D's gradients on the data grow"),
]
