"""Alternatives and mistakes for a8_semi_supervised (see dgmcourse.assessment)."""
from dgmcourse.assessment import Mistake

# --- correct alternatives -------------------------------------------------------------------
LABELLED_DISTRIBUTIONS = '''from torch.distributions import Bernoulli, Normal, kl_divergence


def labelled_loss(model, x, y):
    """L(x, y) = -(E_q(z|x,y)[log p(x|y,z)] + log p(y) - KL(q(z|x,y) || p(z))), one draw of z: (B,) nats."""
    mu, logvar = model.encode(x, y)
    q_z = Normal(mu, torch.exp(0.5 * logvar))
    z = q_z.rsample()
    # grey levels are soft targets: Bernoulli's log_prob is minus the binary cross-entropy, without validation
    log_px = Bernoulli(logits=model.decode(z, y), validate_args=False).log_prob(x).flatten(1).sum(1)
    kl = kl_divergence(q_z, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(1)
    log_py = -math.log(model.num_classes)
    return -(log_px + log_py - kl)
'''

LABELLED_SOFTPLUS = '''def labelled_loss(model, x, y):
    """L(x, y) = -(E_q(z|x,y)[log p(x|y,z)] + log p(y) - KL(q(z|x,y) || p(z))), one draw of z: (B,) nats."""
    mu, logvar = model.encode(x, y)
    std = logvar.mul(0.5).exp()
    eps = torch.empty_like(std).normal_()
    z = eps.mul(std).add(mu)
    logits = model.decode(z, y).reshape(len(x), -1)
    target = x.reshape(len(x), -1)
    rec = (target * logits - F.softplus(logits)).sum(dim=-1)      # x log s(l) + (1 - x) log s(-l) = x l - softplus(l)
    kl = -0.5 * torch.sum(1 + logvar - mu ** 2 - torch.exp(logvar), dim=-1)
    log_prior_y = -math.log(model.num_classes)
    return kl - rec - log_prior_y
'''

LABELLED_ONE_HOT = '''def labelled_loss(model, x, y):
    """L(x, y) = -(E_q(z|x,y)[log p(x|y,z)] + log p(y) - KL(q(z|x,y) || p(z))), one draw of z: (B,) nats."""
    y_onehot = F.one_hot(y, model.num_classes).float()          # the networks take one-hot labels too
    mu, logvar = model.encode(x, y_onehot)
    sigma = torch.sqrt(torch.exp(logvar))
    z = mu + sigma * torch.randn(mu.shape, device=mu.device)
    p = torch.sigmoid(model.decode(z, y_onehot))
    bce = F.binary_cross_entropy(p, x, reduction="none")
    rec = -bce.sum(dim=tuple(range(1, x.dim())))
    kl = torch.sum(mu * mu + sigma * sigma - 1 - 2 * torch.log(sigma), dim=1) / 2
    return kl - rec + math.log(model.num_classes)
'''

UNLABELLED_CATEGORICAL = '''from torch.distributions import Categorical


def unlabelled_loss(model, x):
    """U(x) = sum_y q(y|x) L(x, y) - H(q(y|x)), the K classes enumerated: (B,) nats."""
    q_y = Categorical(logits=model.classify(x))
    per_class = []
    for k in range(model.num_classes):
        labels = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
        per_class.append(labelled_loss(model, x, labels))
    L = torch.stack(per_class, dim=-1)
    return torch.einsum("bk,bk->b", q_y.probs, L) - q_y.entropy()
'''

UNLABELLED_BATCHED = '''def unlabelled_loss(model, x):
    """U(x) = sum_y q(y|x) L(x, y) - H(q(y|x)), the K classes enumerated: (B,) nats."""
    B, K = len(x), model.num_classes
    logits = model.classify(x)
    q = F.softmax(logits, dim=-1)
    ys = torch.arange(K, device=x.device).repeat_interleave(B)          # class 0 for every image, then 1, ...
    xs = x.repeat(K, *[1] * (x.dim() - 1))
    losses = labelled_loss(model, xs, ys).view(K, B).t()                # (B, K)
    # L holds -log p(y) = log K; written as sum_y q (L - log K) + KL(q(y|x) || p(y)), p(y) uniform
    kl_y = (q * (F.log_softmax(logits, dim=-1) + math.log(K))).sum(-1)
    return (q * (losses - math.log(K))).sum(-1) + kl_y
'''

UNLABELLED_LOGSUMEXP = '''def unlabelled_loss(model, x):
    """U(x) = sum_y q(y|x) L(x, y) - H(q(y|x)), the K classes enumerated: (B,) nats."""
    L = torch.stack([labelled_loss(model, x, torch.full((len(x),), k, dtype=torch.long, device=x.device))
                     for k in range(model.num_classes)], 1)
    log_q = torch.log_softmax(model.classify(x), 1)
    log_post = torch.log_softmax(-L, 1)                 # the posterior pi(y|x) proportional to exp(-L(x, y))
    gap = (log_q.exp() * (log_q - log_post)).sum(1)     # KL(q(y|x) || pi(y|x))
    return -torch.logsumexp(-L, 1) + gap                # lecture 8: U = -log sum_y exp(-L) + KL(q || pi)
'''

OBJECTIVE_NLL = '''def m2_objective(model, x_l, y_l, x_u, alpha):
    """J^alpha per example: mean_l L(x, y) + mean_u U(x) + alpha mean_l [-log q(y|x)], a scalar in nats."""
    log_q = torch.log_softmax(model.classify(x_l), dim=1)
    nll = F.nll_loss(log_q, y_l)
    return torch.mean(labelled_loss(model, x_l, y_l)) + torch.mean(unlabelled_loss(model, x_u)) + alpha * nll
'''

OBJECTIVE_GATHER = '''def m2_objective(model, x_l, y_l, x_u, alpha):
    """J^alpha per example: mean_l L(x, y) + mean_u U(x) + alpha mean_l [-log q(y|x)], a scalar in nats."""
    n_l, n_u = x_l.shape[0], x_u.shape[0]
    labelled = labelled_loss(model, x_l, y_l).sum() / n_l
    unlabelled = unlabelled_loss(model, x_u).sum() / n_u
    log_q = model.classify(x_l).log_softmax(-1).gather(1, y_l.view(-1, 1)).squeeze(1)
    return labelled + unlabelled - alpha * log_q.sum() / n_l
'''

OBJECTIVE_CATEGORICAL = '''from torch.distributions import Categorical


def m2_objective(model, x_l, y_l, x_u, alpha):
    """J^alpha per example: mean_l L(x, y) + mean_u U(x) + alpha mean_l [-log q(y|x)], a scalar in nats."""
    cross_entropy = -Categorical(logits=model.classify(x_l)).log_prob(y_l).mean()
    terms = torch.stack([labelled_loss(model, x_l, y_l).mean(), unlabelled_loss(model, x_u).mean(),
                         alpha * cross_entropy])
    return terms.sum()
'''

ALTERNATIVES = {
    "distributions_categorical_nll": {
        "labelled_loss": LABELLED_DISTRIBUTIONS, "unlabelled_loss": UNLABELLED_CATEGORICAL,
        "m2_objective": OBJECTIVE_NLL},
    "softplus_batched_gather": {
        "labelled_loss": LABELLED_SOFTPLUS, "unlabelled_loss": UNLABELLED_BATCHED, "m2_objective": OBJECTIVE_GATHER},
    "one_hot_logsumexp_categorical": {
        "labelled_loss": LABELLED_ONE_HOT, "unlabelled_loss": UNLABELLED_LOGSUMEXP,
        "m2_objective": OBJECTIVE_CATEGORICAL},
}

# --- mistakes -------------------------------------------------------------------------------
_LABELLED_HEAD = '''def labelled_loss(model, x, y):
    """L(x, y) = -(E_q(z|x,y)[log p(x|y,z)] + log p(y) - KL(q(z|x,y) || p(z))), one draw of z: (B,) nats."""
    mu, logvar = model.encode(x, y)
'''
_SAMPLE = "    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)\n"
_LOG_PX = ("    log_px = -F.binary_cross_entropy_with_logits(model.decode(z, y), x, reduction=\"none\")"
           ".flatten(1).sum(1)\n")
_KL = "    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)\n"


def _labelled(body):
    return _LABELLED_HEAD + body


def _unlabelled(body):
    return '''def unlabelled_loss(model, x):
    """U(x) = sum_y q(y|x) L(x, y) - H(q(y|x)), the K classes enumerated: (B,) nats."""
    losses = torch.stack([labelled_loss(model, x, torch.full((len(x),), c, dtype=torch.long, device=x.device))
                          for c in range(model.num_classes)], dim=1)
''' + body


def _objective(body):
    return '''def m2_objective(model, x_l, y_l, x_u, alpha):
    """J^alpha per example: mean_l L(x, y) + mean_u U(x) + alpha mean_l [-log q(y|x)], a scalar in nats."""
''' + body


_LOG_Q = "    log_q = F.log_softmax(model.classify(x), dim=1)\n"
_CE = "    ce = F.cross_entropy(model.classify(x_l), y_l)\n"

MISTAKES = [
    # labelled_loss: values
    Mistake("labelled_kl_sign", test="test_labelled_loss",
            replaces={"labelled_loss": _labelled(_SAMPLE + _LOG_PX + _KL + '''\
    return -log_px + math.log(model.num_classes) - kl
''')}, description="the KL term added to the bound instead of subtracted: L = -log p(x|y,z) - log p(y) - KL"),
    Mistake("labelled_log_py_missing", test="test_labelled_loss",
            replaces={"labelled_loss": _labelled(_SAMPLE + _LOG_PX + _KL + '''    return -log_px + kl
''')}, description="log p(y) left out: the loss of the plain VAE, not a bound on -log p(x, y)"),
    Mistake("labelled_returns_bound", test="test_labelled_loss",
            replaces={"labelled_loss": _labelled(_SAMPLE + _LOG_PX + _KL + '''\
    return log_px - math.log(model.num_classes) - kl
''')}, description="returns the bound -L(x, y) that lecture 8 plots, not the loss L(x, y)"),
    Mistake("labelled_pixels_averaged", test="test_labelled_loss",
            replaces={"labelled_loss": _labelled(_SAMPLE + '''\
    log_px = -F.binary_cross_entropy_with_logits(model.decode(z, y), x, reduction="none").flatten(1).mean(1)
''' + _KL + '''    return -log_px + math.log(model.num_classes) + kl
''')}, description="the reconstruction term averaged over the pixels instead of summed"),
    Mistake("labelled_kl_averaged_over_z", test="test_labelled_loss",
            replaces={"labelled_loss": _labelled(_SAMPLE + _LOG_PX + '''\
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean(1)
    return -log_px + math.log(model.num_classes) + kl
''')}, description="the KL averaged over the dimensions of z instead of summed"),
    Mistake("labelled_logvar_read_as_log_std", test="test_labelled_loss",
            replaces={"labelled_loss": _labelled('''    z = mu + torch.exp(logvar) * torch.randn_like(mu)
''' + _LOG_PX + '''    kl = 0.5 * (mu.pow(2) + torch.exp(2 * logvar) - 1 - 2 * logvar).sum(1)
    return -log_px + math.log(model.num_classes) + kl
''')}, description="logvar read as log sigma throughout (sampling and KL)"),
    Mistake("labelled_ten_classes", test="test_labelled_loss",
            replaces={"labelled_loss": _labelled(_SAMPLE + _LOG_PX + _KL + '''    return -log_px + math.log(10) + kl
''')}, description="log p(y) = -log 10 hard-coded for MNIST instead of -log K"),
    Mistake("labelled_library_answer", test="test_labelled_loss",
            replaces={"labelled_loss": '''def labelled_loss(model, x, y):
    """L(x, y) = -(E_q(z|x,y)[log p(x|y,z)] + log p(y) - KL(q(z|x,y) || p(z))), one draw of z: (B,) nats."""
    return -model.labelled_bound(x, y)
'''}, description="calls the course library's M2.labelled_bound (not an answer: the grader gives no points)"),
    # labelled_loss: the draw of z
    Mistake("labelled_no_sampling", test="test_labelled_sampling",
            replaces={"labelled_loss": _labelled('''    z = mu
''' + _LOG_PX + _KL + '''    return -log_px + math.log(model.num_classes) + kl
''')}, description="the decoder evaluated at the mean: log p(x|y,mu) is not E_q[log p(x|y,z)]"),
    Mistake("labelled_std_is_variance", test="test_labelled_sampling",
            replaces={"labelled_loss": _labelled('''    z = mu + logvar.exp() * torch.randn_like(mu)
''' + _LOG_PX + _KL + '''    return -log_px + math.log(model.num_classes) + kl
''')}, description="z = mu + sigma^2 eps: the variance used as the standard deviation"),
    Mistake("labelled_noise_shared_across_batch", test="test_labelled_sampling",
            replaces={"labelled_loss": _labelled('''    z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape[1:])
''' + _LOG_PX + _KL + '''    return -log_px + math.log(model.num_classes) + kl
''')}, description="one eps for the whole batch: the examples' estimates are not independent"),
    Mistake("labelled_sample_detached", test="test_labelled_sampling",
            replaces={"labelled_loss": _labelled('''\
    z = (mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)).detach()
''' + _LOG_PX + _KL + '''    return -log_px + math.log(model.num_classes) + kl
''')}, description="z detached: the reconstruction term sends no gradient to the encoder"),
    # unlabelled_loss: values
    Mistake("unlabelled_entropy_sign", test="test_unlabelled_loss",
            replaces={"unlabelled_loss": _unlabelled(_LOG_Q + '''    q = log_q.exp()
    return (q * losses).sum(1) - (q * log_q).sum(1)
''')}, description="+H(q(y|x)) instead of -H: the sign of the entropy term flipped"),
    Mistake("unlabelled_prior_counted_twice", test="test_unlabelled_loss",
            replaces={"unlabelled_loss": _unlabelled(_LOG_Q + '''    q = log_q.exp()
    kl_y = (q * (log_q + math.log(model.num_classes))).sum(1)       # KL(q(y|x) || p(y))
    return (q * losses).sum(1) + kl_y
''')}, description="sum_y q L + KL(q(y|x) || p(y)) with L already holding -log p(y): log K counted twice"),
    Mistake("unlabelled_hard_assignment", test="test_unlabelled_loss",
            replaces={"unlabelled_loss": _unlabelled(_LOG_Q + '''    best = log_q.argmax(1)
    return losses.gather(1, best[:, None]).squeeze(1)
''')}, description="L(x, y) at the classifier's most likely class instead of the expectation over q(y|x)"),
    Mistake("unlabelled_sigmoid_not_softmax", test="test_unlabelled_loss",
            replaces={"unlabelled_loss": _unlabelled('''    q = torch.sigmoid(model.classify(x))
    return (q * losses).sum(1) + (q * torch.log(q)).sum(1)
''')}, description="q(y|x) from a sigmoid of each logit instead of a softmax: it does not sum to 1"),
    Mistake("unlabelled_ten_classes", test="test_unlabelled_loss",
            replaces={"unlabelled_loss": '''def unlabelled_loss(model, x):
    """U(x) = sum_y q(y|x) L(x, y) - H(q(y|x)), the K classes enumerated: (B,) nats."""
    log_q = F.log_softmax(model.classify(x), dim=1)
    losses = torch.stack([labelled_loss(model, x, torch.full((len(x),), c, dtype=torch.long, device=x.device))
                          for c in range(10)], dim=1)
    q = log_q.exp()
    return (q * losses).sum(1) + (q * log_q).sum(1)
'''}, description="the classes 0..9 of MNIST hard-coded instead of the model's K"),
    Mistake("unlabelled_library_answer", test="test_unlabelled_loss",
            replaces={"unlabelled_loss": '''def unlabelled_loss(model, x):
    """U(x) = sum_y q(y|x) L(x, y) - H(q(y|x)), the K classes enumerated: (B,) nats."""
    return -model.unlabelled_bound(x)
'''}, description="calls the course library's M2.unlabelled_bound (not an answer: the grader gives no points)"),
    # unlabelled_loss: properties
    Mistake("unlabelled_q_detached", test="test_unlabelled_identity",
            replaces={"unlabelled_loss": _unlabelled('''    with torch.no_grad():
        log_q = F.log_softmax(model.classify(x), dim=1)
    q = log_q.exp()
    return (q * losses).sum(1) + (q * log_q).sum(1)
''')}, description="q(y|x) computed without gradient: the classifier never learns from unlabelled digits"),
    Mistake("unlabelled_softmax_over_batch", test="test_unlabelled_identity",
            replaces={"unlabelled_loss": _unlabelled('''    log_q = F.log_softmax(model.classify(x), dim=0)
    q = log_q.exp()
    return (q * losses).sum(1) + (q * log_q).sum(1)
''')}, description="the softmax taken over the batch (dim 0) instead of the classes"),
    Mistake("unlabelled_entropy_missing", test="test_unlabelled_identity",
            replaces={"unlabelled_loss": _unlabelled(_LOG_Q + '''    return (log_q.exp() * losses).sum(1)
''')}, description="the entropy term left out: sum_y q(y|x) L(x, y) alone"),
    # m2_objective
    Mistake("objective_sums", test="test_m2_objective",
            replaces={"m2_objective": _objective(_CE + '''\
    return labelled_loss(model, x_l, y_l).sum() + unlabelled_loss(model, x_u).sum() + alpha * ce
''')}, description="the bounds summed over the minibatches instead of averaged (J grows with the batch size)"),
    Mistake("objective_pooled_mean", test="test_m2_objective",
            replaces={"m2_objective": _objective(_CE + '''\
    bounds = torch.cat([labelled_loss(model, x_l, y_l), unlabelled_loss(model, x_u)])
    return bounds.mean() + alpha * ce
''')}, description="one mean over the labelled and unlabelled losses together: each set weighted by its size"),
    Mistake("objective_alpha_on_unlabelled", test="test_m2_objective",
            replaces={"m2_objective": _objective(_CE + '''\
    return labelled_loss(model, x_l, y_l).mean() + alpha * unlabelled_loss(model, x_u).mean() + ce
''')}, description="alpha weighs the unlabelled term instead of the cross-entropy"),
    Mistake("objective_alpha_dropped", test="test_m2_objective",
            replaces={"m2_objective": _objective('''\
    return labelled_loss(model, x_l, y_l).mean() + unlabelled_loss(model, x_u).mean()
''')}, description="the classification term left out: J = mean L + mean U (Kingma et al.'s eq. 8, not eq. 9)"),
    Mistake("objective_double_softmax", test="test_m2_objective",
            replaces={"m2_objective": _objective('''    ce = F.cross_entropy(F.softmax(model.classify(x_l), dim=1), y_l)
    return labelled_loss(model, x_l, y_l).mean() + unlabelled_loss(model, x_u).mean() + alpha * ce
''')}, description="F.cross_entropy given probabilities: it applies a second softmax"),
    Mistake("objective_library_answer", test="test_m2_objective",
            replaces={"m2_objective": '''from dgmcourse.ssvae import m2_loss


def m2_objective(model, x_l, y_l, x_u, alpha):
    """J^alpha per example: mean_l L(x, y) + mean_u U(x) + alpha mean_l [-log q(y|x)], a scalar in nats."""
    return m2_loss(model, x_l, y_l, x_u, alpha)[0]
'''}, description="calls the course library's m2_loss (not an answer: the grader gives no points)"),
    # training
    Mistake("objective_negated", test="test_training",
            replaces={"m2_objective": _objective(_CE + '''\
    return -(labelled_loss(model, x_l, y_l).mean() + unlabelled_loss(model, x_u).mean() + alpha * ce)
''')}, description="-J returned (the bounds to maximise): training maximises the losses and the cross-entropy"),
    Mistake("objective_bounds_maximised", test="test_training",
            replaces={"m2_objective": _objective(_CE + '''\
    return -(labelled_loss(model, x_l, y_l).mean() + unlabelled_loss(model, x_u).mean()) + alpha * ce
''')}, description="L and U taken for bounds to maximise (lecture 8 plots -L and -U), the cross-entropy minimised"),
]
