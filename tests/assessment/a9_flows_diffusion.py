"""Alternatives and mistakes for a9_flows_diffusion (see dgmcourse.assessment)."""
from dgmcourse.assessment import Mistake

# --- correct alternatives -------------------------------------------------------------------
COUPLING_WHERE = '''def coupling_forward(x, mask, s_net, t_net):
    """Affine coupling, data -> base: x (B, D), mask (D,) -> z (B, D) and log|det dz/dx| (B,) in nats."""
    if not torch.is_tensor(mask) or mask.dim() != 1 or len(mask) != x.size(1):
        raise ValueError("mask must have shape (D,)")
    if not torch.all((mask == 0) | (mask == 1)):
        raise ValueError("mask must hold zeros and ones")
    keep = mask.bool()
    inp = torch.where(keep, x, torch.zeros_like(x))
    s = s_net(inp)
    t = t_net(inp)
    z = torch.where(keep, x, x * s.exp() + t)
    log_det = torch.where(keep, torch.zeros_like(s), s).sum(dim=1)
    return z, log_det
'''

COUPLING_JACOBIAN = '''from torch.func import jacrev, vmap


def coupling_forward(x, mask, s_net, t_net):
    """Affine coupling, data -> base: x (B, D), mask (D,) -> z (B, D) and log|det dz/dx| (B,) in nats."""
    m = torch.as_tensor(mask, dtype=x.dtype)
    if m.shape != (x.shape[1],) or ((m != 0) & (m != 1)).any():
        raise ValueError(f"mask: expected {x.shape[1]} zeros and ones, got {mask}")
    free = (m == 0).nonzero().flatten()

    def layer(v):                                   # v (B, D) -> z (B, D)
        inp = v * m
        new = v[:, free] * torch.exp(s_net(inp)[:, free]) + t_net(inp)[:, free]
        return v.index_copy(1, free, new)

    # the log-determinant by brute force: log|det| of each example's exact Jacobian
    jac = vmap(jacrev(lambda v: layer(v.unsqueeze(0)).squeeze(0)))(x)
    return layer(x), torch.linalg.slogdet(jac).logabsdet
'''

COUPLING_LOOPS = '''def coupling_forward(x, mask, s_net, t_net):
    """Affine coupling, data -> base: x (B, D), mask (D,) -> z (B, D) and log|det dz/dx| (B,) in nats."""
    D = x.shape[1]
    if len(mask.shape) != 1 or mask.shape[0] != D:
        raise ValueError(f"mask must have length {D}")
    for value in mask.tolist():
        if value not in (0.0, 1.0):
            raise ValueError(f"mask entries must be 0 or 1, got {value}")
    inp = x * mask
    s, t = s_net(inp), t_net(inp)
    columns, log_det = [], torch.zeros(x.shape[0], dtype=s.dtype)
    for i in range(D):
        if mask[i] == 1:
            columns.append(x[:, i])
        else:
            columns.append(x[:, i] * torch.exp(s[:, i]) + t[:, i])
            log_det = log_det + s[:, i]
    return torch.stack(columns, dim=1), log_det
'''

Q_NORMAL = '''def q_sample(x0, t, schedule, noise=None, generator=None):
    """x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I); x0 (B, *shape)."""
    steps = torch.full((len(x0),), t) if isinstance(t, int) else t.long()
    if bool((steps < 1).any()) or bool((steps > schedule.T).any()):
        raise ValueError("t outside 1..T")
    ab = torch.gather(schedule.alpha_bars, 0, steps)
    shape = (len(x0),) + (1,) * (x0.ndim - 1)
    mean = ab.sqrt().view(shape).to(x0.dtype) * x0
    std = (1 - ab).sqrt().view(shape).to(x0.dtype).expand_as(x0)
    if noise is None:
        return torch.normal(mean, std, generator=generator)
    return mean + std * noise
'''

Q_LOOP = '''def q_sample(x0, t, schedule, noise=None, generator=None):
    """x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I); x0 (B, *shape)."""
    T = len(schedule.betas) - 1
    if torch.is_tensor(t) and t.dim() == 1:
        steps = [int(v) for v in t]
    else:
        steps = [int(t)] * x0.shape[0]
    if any(s < 1 or s > T for s in steps):
        raise ValueError(f"every t must lie in 1..{T}")
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator)
    rows = []
    for i, s in enumerate(steps):
        alpha_bar = float(schedule.alpha_bars[s])
        rows.append(math.sqrt(alpha_bar) * x0[i] + math.sqrt(1 - alpha_bar) * noise[i])
    return torch.stack(rows)
'''

Q_LOG_SPACE = '''def q_sample(x0, t, schedule, noise=None, generator=None):
    """x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I); x0 (B, *shape)."""
    log_alpha_bar = torch.cumsum(torch.log1p(-schedule.betas[1:]), 0)      # log alpha_bar_1 .. alpha_bar_T
    t = torch.as_tensor(t, dtype=torch.long)
    if (t < 1).any() or (t > len(log_alpha_bar)).any():
        raise ValueError(f"t must be in 1..{len(log_alpha_bar)}")
    la = log_alpha_bar[t - 1]
    la = la.reshape(la.shape + (1,) * (x0.dim() - la.dim())).to(x0.dtype)
    if noise is None:
        noise = torch.empty_like(x0).normal_(generator=generator)
    return torch.exp(0.5 * la) * x0 + torch.sqrt(-torch.expm1(la)) * noise
'''

LOSS_MSE_SUM = '''def epsilon_loss(eps_model, x0, schedule, t=None, noise=None, generator=None):
    """L_simple: batch mean of ||eps - eps_model(x_t, t)||^2 summed over the data dimensions."""
    B = x0.shape[0]
    if t is None:
        t = (torch.rand(B, generator=generator) * schedule.T).long() + 1
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator)
    ab = schedule.alpha_bars[t].float().view(B, *([1] * (x0.dim() - 1)))
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    return F.mse_loss(eps_model(xt, t), noise, reduction="sum") / B
'''

LOSS_MULTINOMIAL = '''def epsilon_loss(eps_model, x0, schedule, t=None, noise=None, generator=None):
    """L_simple: batch mean of ||eps - eps_model(x_t, t)||^2 summed over the data dimensions."""
    if t is None:
        t = torch.multinomial(torch.ones(schedule.T), len(x0), replacement=True, generator=generator) + 1
    if noise is None:
        noise = torch.normal(torch.zeros_like(x0), torch.ones_like(x0), generator=generator)
    x_t = q_sample(x0, t, schedule, noise=noise)
    residual = (noise - eps_model(x_t, t)).reshape(len(x0), -1)
    return torch.linalg.vector_norm(residual, dim=1).pow(2).mean()
'''

LOSS_EINSUM = '''def epsilon_loss(eps_model, x0, schedule, t=None, noise=None, generator=None):
    """L_simple: batch mean of ||eps - eps_model(x_t, t)||^2 summed over the data dimensions."""
    n = len(x0)
    if t is None:
        t = torch.randint(schedule.T, (n,), generator=generator) + 1
    eps = torch.randn(x0.shape, generator=generator) if noise is None else noise
    xt = q_sample(x0, t, schedule, noise=eps)
    r = (eps - eps_model(xt, t)).flatten(1)
    return torch.einsum("bi,bi->", r, r) / n
'''

STEP_POSTERIOR = '''def reverse_step(eps_model, xt, t, schedule, generator=None):
    """One DDPM step x_t -> x_(t-1), sigma_t^2 = beta_t; xt (B, *shape) -> (B, *shape)."""
    ab, ab_prev = float(schedule.alpha_bars[t]), float(schedule.alpha_bars[t - 1])
    beta, alpha = float(schedule.betas[t]), float(schedule.alphas[t])
    with torch.no_grad():
        eps = eps_model(xt, torch.full((xt.shape[0],), t, dtype=torch.long))
    x0_hat = (xt - math.sqrt(1 - ab) * eps) / math.sqrt(ab)            # Ho et al., eq. 4 solved for x0
    mean = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0_hat + (math.sqrt(alpha) * (1 - ab_prev) / (1 - ab)) * xt
    if t > 1:
        mean = mean + torch.normal(0.0, math.sqrt(beta), size=xt.shape, generator=generator)
    return mean
'''

STEP_TENSORS = '''def reverse_step(eps_model, xt, t, schedule, generator=None):
    """One DDPM step x_t -> x_(t-1), sigma_t^2 = beta_t; xt (B, *shape) -> (B, *shape)."""
    coef = (schedule.betas[t] / (1 - schedule.alpha_bars[t]).sqrt()).to(xt.dtype)
    scale = schedule.alphas[t].rsqrt().to(xt.dtype)
    sigma = schedule.betas[t].sqrt().to(xt.dtype)
    with torch.no_grad():
        eps = eps_model(xt, torch.tensor([t] * len(xt)))
        z = torch.empty_like(xt).normal_(generator=generator)
        z = z * float(t > 1)                 # drawn, then dropped at t = 1
        return scale * (xt - coef * eps) + sigma * z
'''

STEP_LIBRARY_FREE_LOOP = '''def reverse_step(eps_model, xt, t, schedule, generator=None):
    """One DDPM step x_t -> x_(t-1), sigma_t^2 = beta_t; xt (B, *shape) -> (B, *shape)."""
    beta = schedule.betas[t].item()
    alpha_bar = torch.prod(1 - schedule.betas[1:t + 1]).item()     # alpha_bar_t from the betas
    with torch.no_grad():
        eps = eps_model(xt, torch.full((len(xt),), t))
    out = (xt - beta * eps / (1 - alpha_bar) ** 0.5) / (1 - beta) ** 0.5
    if t != 1:
        out = out + beta ** 0.5 * torch.randn(xt.shape, generator=generator, dtype=xt.dtype)
    return out
'''

ALTERNATIVES = {
    "where_normal_mse_posterior": {
        "coupling_forward": COUPLING_WHERE, "q_sample": Q_NORMAL, "epsilon_loss": LOSS_MSE_SUM,
        "reverse_step": STEP_POSTERIOR},
    "jacrev_loop_multinomial_tensors": {
        "coupling_forward": COUPLING_JACOBIAN, "q_sample": Q_LOOP, "epsilon_loss": LOSS_MULTINOMIAL,
        "reverse_step": STEP_TENSORS},
    "loops_logspace_einsum_betas": {
        "coupling_forward": COUPLING_LOOPS, "q_sample": Q_LOG_SPACE, "epsilon_loss": LOSS_EINSUM,
        "reverse_step": STEP_LIBRARY_FREE_LOOP},
}

# --- mistakes -------------------------------------------------------------------------------
_COUPLING_HEAD = '''def coupling_forward(x, mask, s_net, t_net):
    """Affine coupling, data -> base: x (B, D), mask (D,) -> z (B, D) and log|det dz/dx| (B,) in nats."""
    if mask.ndim != 1 or mask.shape[0] != x.shape[1] or not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask must be (D,) zeros and ones")
'''


def _coupling(body):
    return _COUPLING_HEAD + body


def _q(body):
    return '''def q_sample(x0, t, schedule, noise=None, generator=None):
    """x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I); x0 (B, *shape)."""
    t = torch.as_tensor(t)
    if t.min() < 1 or t.max() > schedule.T:
        raise ValueError("t outside 1..T")
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
''' + body


def _loss(body):
    return '''def epsilon_loss(eps_model, x0, schedule, t=None, noise=None, generator=None):
    """L_simple: batch mean of ||eps - eps_model(x_t, t)||^2 summed over the data dimensions."""
''' + body


def _step(body):
    return '''def reverse_step(eps_model, xt, t, schedule, generator=None):
    """One DDPM step x_t -> x_(t-1), sigma_t^2 = beta_t; xt (B, *shape) -> (B, *shape)."""
    beta, alpha, alpha_bar = (v[t].item() for v in (schedule.betas, schedule.alphas, schedule.alpha_bars))
    with torch.no_grad():
        eps = eps_model(xt, torch.full((len(xt),), t, dtype=torch.long))
''' + body


_AB = "    ab = schedule.alpha_bars[t].to(x0).reshape(-1, *[1] * (x0.dim() - 1))\n"
_DRAWS = '''    if t is None:
        t = torch.randint(1, schedule.T + 1, (len(x0),), generator=generator)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    xt = q_sample(x0, t, schedule, noise=noise)
'''
_MEAN = "    mean = (xt - beta / math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha)\n"

MISTAKES = [
    # coupling: z
    Mistake("coupling_mask_inverted", test="test_coupling_forward",
            replaces={"coupling_forward": _coupling('''    free = mask
    keep = 1 - mask
    s, t = s_net(keep * x), t_net(keep * x)
    return keep * x + free * (x * torch.exp(s) + t), (free * s).sum(-1)
''')}, description="the scale and shift applied to the passed half (b and 1 - b swapped)"),
    Mistake("coupling_conditions_on_all_of_x", test="test_coupling_forward",
            replaces={"coupling_forward": _coupling('''    s, t = s_net(x), t_net(x)
    return mask * x + (1 - mask) * (x * torch.exp(s) + t), ((1 - mask) * s).sum(-1)
''')}, description="s and t computed from x instead of b * x: the layer is no longer triangular"),
    Mistake("coupling_shift_before_scale", test="test_coupling_forward",
            replaces={"coupling_forward": _coupling('''    s, t = s_net(mask * x), t_net(mask * x)
    return mask * x + (1 - mask) * ((x + t) * torch.exp(s)), ((1 - mask) * s).sum(-1)
''')}, description="(x + t) exp(s) instead of x exp(s) + t"),
    Mistake("coupling_exp_minus_s", test="test_coupling_forward",
            replaces={"coupling_forward": _coupling('''    s, t = s_net(mask * x), t_net(mask * x)
    return mask * x + (1 - mask) * (x * torch.exp(-s) + t), -((1 - mask) * s).sum(-1)
''')}, description="the scale exp(-s) of the inverse direction"),
    Mistake("coupling_no_valueerror", test="test_coupling_forward",
            replaces={"coupling_forward": '''def coupling_forward(x, mask, s_net, t_net):
    """Affine coupling, data -> base: x (B, D), mask (D,) -> z (B, D) and log|det dz/dx| (B,) in nats."""
    s, t = s_net(mask * x), t_net(mask * x)
    return mask * x + (1 - mask) * (x * torch.exp(s) + t), ((1 - mask) * s).sum(-1)
'''}, description="no ValueError for a mask of the wrong length or with values other than 0 and 1"),
    # coupling: log-determinant
    Mistake("logdet_sign", test="test_coupling_log_det",
            replaces={"coupling_forward": _coupling('''    s, t = s_net(mask * x), t_net(mask * x)
    return mask * x + (1 - mask) * (x * torch.exp(s) + t), -((1 - mask) * s).sum(-1)
''')}, description="the log-determinant with the wrong sign (that of the inverse map)"),
    Mistake("logdet_every_coordinate", test="test_coupling_log_det",
            replaces={"coupling_forward": _coupling('''    s, t = s_net(mask * x), t_net(mask * x)
    return mask * x + (1 - mask) * (x * torch.exp(s) + t), s.sum(-1)
''')}, description="s summed over every coordinate, the passed ones included"),
    Mistake("logdet_not_summed", test="test_coupling_log_det",
            replaces={"coupling_forward": _coupling('''    s, t = s_net(mask * x), t_net(mask * x)
    return mask * x + (1 - mask) * (x * torch.exp(s) + t), (1 - mask) * s
''')}, description="the per-coordinate log-scales (B, D), not their sum"),
    Mistake("logdet_of_the_scale", test="test_coupling_log_det",
            replaces={"coupling_forward": _coupling('''    s, t = s_net(mask * x), t_net(mask * x)
    return mask * x + (1 - mask) * (x * torch.exp(s) + t), ((1 - mask) * torch.exp(s)).sum(-1)
''')}, description="the sum of the scales exp(s) instead of their logarithms"),
    Mistake("logdet_detached", test="test_coupling_log_det",
            replaces={"coupling_forward": _coupling('''    s, t = s_net(mask * x), t_net(mask * x)
    return mask * x + (1 - mask) * (x * torch.exp(s) + t), ((1 - mask) * s).sum(-1).detach()
''')}, description="the log-determinant detached: a flow trained with it ignores the volume change"),
    # q_sample
    Mistake("q_sqrt_missing", test="test_q_sample",
            replaces={"q_sample": _q(_AB + '''    return ab * x0 + (1 - ab) * noise
''')}, description="alpha_bar_t x0 + (1 - alpha_bar_t) eps: the square roots missing"),
    Mistake("q_alpha_not_alpha_bar", test="test_q_sample",
            replaces={"q_sample": _q('''    a = schedule.alphas[t].to(x0).reshape(-1, *[1] * (x0.dim() - 1))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise
''')}, description="alpha_t (one step) instead of alpha_bar_t (t steps)"),
    Mistake("q_index_off_by_one", test="test_q_sample",
            replaces={"q_sample": _q('''    ab = schedule.alpha_bars[t - 1].to(x0).reshape(-1, *[1] * (x0.dim() - 1))
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise
''')}, description="alpha_bar_(t-1): the schedule's entry 0 taken for step 1"),
    Mistake("q_broadcast_last_axis", test="test_q_sample",
            replaces={"q_sample": _q('''    ab = schedule.alpha_bars[t].to(x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise
''')}, description="one step per example broadcast along the last axis instead of the batch axis"),
    Mistake("q_noise_shared_across_batch", test="test_q_sample",
            replaces={"q_sample": '''def q_sample(x0, t, schedule, noise=None, generator=None):
    """x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I); x0 (B, *shape)."""
    t = torch.as_tensor(t)
    if t.min() < 1 or t.max() > schedule.T:
        raise ValueError("t outside 1..T")
    if noise is None:
        noise = torch.randn(x0.shape[1:], generator=generator, dtype=x0.dtype)    # one eps for the whole batch
''' + _AB + '''    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise
'''}, description="one noise vector reused for every example of the batch"),
    Mistake("q_ignores_generator", test="test_q_sample",
            replaces={"q_sample": '''def q_sample(x0, t, schedule, noise=None, generator=None):
    """x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I); x0 (B, *shape)."""
    t = torch.as_tensor(t)
    if t.min() < 1 or t.max() > schedule.T:
        raise ValueError("t outside 1..T")
    if noise is None:
        noise = torch.randn_like(x0)
''' + _AB + '''    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise
'''}, description="draws from the global random stream: the generator is ignored"),
    Mistake("q_no_valueerror", test="test_q_sample",
            replaces={"q_sample": '''def q_sample(x0, t, schedule, noise=None, generator=None):
    """x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I); x0 (B, *shape)."""
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    ab = schedule.alpha_bars[torch.as_tensor(t)].to(x0).reshape(-1, *[1] * (x0.dim() - 1))
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise
'''}, description="no ValueError for t = 0 (the data) or t > T (wraps around or fails with an IndexError)"),
    # epsilon_loss
    Mistake("loss_predicts_x0", test="test_epsilon_loss",
            replaces={"epsilon_loss": _loss(_DRAWS + '''    target = x0
    return (target - eps_model(xt, t)).pow(2).flatten(1).sum(1).mean()
''')}, description="the model's output compared with x0 instead of the noise eps"),
    Mistake("loss_batch_sum", test="test_epsilon_loss",
            replaces={"epsilon_loss": _loss(_DRAWS + '''    return (noise - eps_model(xt, t)).pow(2).sum()
''')}, description="summed over the batch instead of averaged"),
    Mistake("loss_mean_over_dimensions", test="test_epsilon_loss",
            replaces={"epsilon_loss": _loss(_DRAWS + '''    return F.mse_loss(eps_model(xt, t), noise)
''')}, description="F.mse_loss: averaged over the data dimensions too (a factor D too small)"),
    Mistake("loss_last_axis_only", test="test_epsilon_loss",
            replaces={"epsilon_loss": _loss(_DRAWS + '''    return (noise - eps_model(xt, t)).pow(2).sum(-1).mean()
''')}, description="the squared norm over the last axis only: images lose a factor C * H"),
    Mistake("loss_noise_redrawn", test="test_epsilon_loss", replaces={"epsilon_loss": _loss('''    if t is None:
        t = torch.randint(1, schedule.T + 1, (len(x0),), generator=generator)
    xt = q_sample(x0, t, schedule, noise=noise, generator=generator)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)   # a second, different draw
    return (noise - eps_model(xt, t)).pow(2).flatten(1).sum(1).mean()
''')}, description="x_t built with one noise draw, the loss compared with another"),
    Mistake("loss_t_from_zero", test="test_epsilon_loss", replaces={"epsilon_loss": _loss('''    if t is None:
        t = torch.randint(0, schedule.T, (len(x0),), generator=generator)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    ab = schedule.alpha_bars[t].to(x0).reshape(-1, *[1] * (x0.dim() - 1))
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    return (noise - eps_model(xt, t)).pow(2).flatten(1).sum(1).mean()
''')}, description="t drawn from 0..T-1: step 0 (no noise) included, step T never trained"),
    Mistake("loss_t_never_T", test="test_epsilon_loss", replaces={"epsilon_loss": _loss('''    if t is None:
        t = torch.randint(1, schedule.T, (len(x0),), generator=generator)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    xt = q_sample(x0, t, schedule, noise=noise)
    return (noise - eps_model(xt, t)).pow(2).flatten(1).sum(1).mean()
''')}, description="torch.randint(1, T): the upper bound is exclusive, so step T is never drawn"),
    # reverse_step
    Mistake("step_noise_at_t1", test="test_reverse_step",
            replaces={"reverse_step": _step(_MEAN + '''    z = torch.randn(xt.shape, generator=generator)
    return mean + math.sqrt(beta) * z
''')}, description="noise added at t = 1 as well: the sample ends with a blur of variance beta_1"),
    Mistake("step_sigma_is_beta", test="test_reverse_step", replaces={"reverse_step": _step(_MEAN + '''    if t == 1:
        return mean
    return mean + beta * torch.randn(xt.shape, generator=generator, dtype=xt.dtype)
''')}, description="sigma_t = beta_t: the variance used as the standard deviation"),
    Mistake("step_posterior_variance", test="test_reverse_step",
            replaces={"reverse_step": _step(_MEAN + '''    if t == 1:
        return mean
    alpha_bar_prev = schedule.alpha_bars[t - 1].item()
    sigma2 = (1 - alpha_bar_prev) / (1 - alpha_bar) * beta
    return mean + math.sqrt(sigma2) * torch.randn(xt.shape, generator=generator, dtype=xt.dtype)
''')}, description="sigma_t^2 = the posterior variance beta~_t, not the beta_t the task asks for"),
    Mistake("step_alpha_bar_in_mean", test="test_reverse_step",
            replaces={"reverse_step": _step('''    coef = beta / math.sqrt(1 - alpha_bar)
    mean = (xt - coef * eps) / math.sqrt(alpha_bar)
    if t == 1:
        return mean
    return mean + math.sqrt(beta) * torch.randn(xt.shape, generator=generator, dtype=xt.dtype)
''')}, description="1 / sqrt(alpha_bar_t) in place of 1 / sqrt(alpha_t) in the mean"),
    Mistake("step_sqrt_missing_in_mean", test="test_reverse_step",
            replaces={"reverse_step": _step('''    mean = (xt - beta / (1 - alpha_bar) * eps) / math.sqrt(alpha)
    if t == 1:
        return mean
    return mean + math.sqrt(beta) * torch.randn(xt.shape, generator=generator, dtype=xt.dtype)
''')}, description="beta_t / (1 - alpha_bar_t): the square root of 1 - alpha_bar_t missing"),
    Mistake("step_noise_shared_across_batch", test="test_reverse_step",
            replaces={"reverse_step": _step(_MEAN + '''    if t == 1:
        return mean
    return mean + math.sqrt(beta) * torch.randn(xt.shape[1:], generator=generator, dtype=xt.dtype)
''')}, description="one z reused for every example of the batch"),
    Mistake("step_ignores_generator", test="test_reverse_step",
            replaces={"reverse_step": _step(_MEAN + '''    if t == 1:
        return mean
    return mean + math.sqrt(beta) * torch.randn_like(xt)
''')}, description="draws from the global random stream: the generator is ignored"),
    Mistake("library_answer", test="test_q_sample",
            replaces={"q_sample": '''from dgmcourse.diffusion import q_sample as _library_q_sample


def q_sample(x0, t, schedule, noise=None, generator=None):
    """x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I); x0 (B, *shape)."""
    return _library_q_sample(x0, t, schedule, noise=noise, generator=generator)
'''}, description="calls the course library's own implementation of the task "
                  "(not an answer: the grader gives no points)"),
]
