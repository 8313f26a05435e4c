"""Alternatives and mistakes for a1_vae (see dgmcourse.assessment)."""
from dgmcourse.assessment import Mistake

# --- correct answers written differently ------------------------------------------------------
REPARAMETERIZE_SQRT = '''def reparameterize(mu, logvar, generator=None):
    """Sample z ~ N(mu, diag(exp(logvar))) differentiably; mu, logvar: (B, d) -> z: (B, d)."""
    sigma = torch.sqrt(torch.exp(logvar))
    noise = torch.randn(mu.shape, generator=generator).to(mu)
    return torch.addcmul(mu, sigma, noise)
'''

REPARAMETERIZE_AFFINE = '''from torch.distributions.transforms import AffineTransform


def reparameterize(mu, logvar, generator=None):
    """Sample z ~ N(mu, diag(exp(logvar))) differentiably; mu, logvar: (B, d) -> z: (B, d)."""
    eps = torch.randn(mu.shape, generator=generator).to(mu.device)
    return AffineTransform(loc=mu, scale=logvar.mul(0.5).exp())(eps)
'''

KL_DISTRIBUTIONS = '''from torch.distributions import Normal, kl_divergence


def gaussian_kl(mu, logvar):
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) in nats; (B, d), (B, d) -> (B,)."""
    q = Normal(mu, torch.exp(logvar / 2))
    prior = Normal(torch.zeros_like(mu), torch.ones_like(mu))
    return kl_divergence(q, prior).sum(dim=-1)
'''

KL_KINGMA = '''def gaussian_kl(mu, logvar):
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) in nats; (B, d), (B, d) -> (B,)."""
    # Kingma & Welling (2013), appendix B: -KL = 1/2 sum (1 + log sigma^2 - mu^2 - sigma^2)
    return -0.5 * torch.sum(1 + logvar - mu * mu - torch.exp(logvar), dim=-1)
'''

BERNOULLI_BCE = '''import torch.nn.functional as F


def bernoulli_log_likelihood(x, logits):
    """log p(x|z) in nats for Bernoulli pixels given logits; (B, ...), (B, ...) -> (B,)."""
    nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return -nll.reshape(x.shape[0], -1).sum(dim=-1)
'''

BERNOULLI_DISTRIBUTION = '''from torch.distributions import Bernoulli


def bernoulli_log_likelihood(x, logits):
    """log p(x|z) in nats for Bernoulli pixels given logits; (B, ...), (B, ...) -> (B,)."""
    # grey-level pixels are not in the support {0, 1}: no validation, the formula is the same
    log_p = Bernoulli(logits=logits, validate_args=False).log_prob(x)
    return log_p.sum(dim=tuple(range(1, x.dim())))
'''

BERNOULLI_SOFTPLUS = '''def bernoulli_log_likelihood(x, logits):
    """log p(x|z) in nats for Bernoulli pixels given logits; (B, ...), (B, ...) -> (B,)."""
    # x log s(l) + (1 - x) log(1 - s(l)) = x l - log(1 + e^l)
    log_p = x * logits - torch.nn.functional.softplus(logits)
    return log_p.view(len(x), -1).sum(1)
'''

ELBO_DISTRIBUTIONS = '''from torch.distributions import Bernoulli, Independent, Normal, kl_divergence


def elbo(x, logits, mu, logvar):
    """One-sample ELBO = log p(x|z) - KL(q(z|x) || p(z)); returns (elbo, reconstruction, kl), each (B,)."""
    decoder = Independent(Bernoulli(logits=logits, validate_args=False), x.dim() - 1)
    reconstruction = decoder.log_prob(x)
    posterior = Independent(Normal(mu, (0.5 * logvar).exp()), 1)
    prior = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    kl = kl_divergence(posterior, prior)
    return reconstruction - kl, reconstruction, kl
'''

ELBO_CLOSED_FORM = '''def elbo(x, logits, mu, logvar):
    """One-sample ELBO = log p(x|z) - KL(q(z|x) || p(z)); returns (elbo, reconstruction, kl), each (B,)."""
    per_pixel = x * logits - torch.nn.functional.softplus(logits)
    reconstruction = per_pixel.flatten(1).sum(1)
    kl = 0.5 * (mu ** 2 + torch.exp(logvar) - logvar - 1).sum(1)
    value = reconstruction - kl
    return value, reconstruction, kl
'''

_IWAE_HELPER = '''def log_standard_normal(z):
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(dim=-1)


'''

IWAE_LOOP = _IWAE_HELPER + '''from torch.distributions import Normal


def iwae_bound(encode, decode, x, k, generator=None):
    """IWAE estimate of log p(x) in nats with k importance samples; x: (B, ...) -> (B,)."""
    mu, logvar = encode(x)
    sigma = logvar.mul(0.5).exp()
    q = Normal(mu, sigma)
    eps = torch.randn((k, *mu.shape), generator=generator).to(mu.device)
    log_weights = []
    for i in range(k):
        z = mu + sigma * eps[i]
        log_weights.append(bernoulli_log_likelihood(x, decode(z)) + log_standard_normal(z) - q.log_prob(z).sum(-1))
    log_w = torch.stack(log_weights)                       # (k, B)
    top = log_w.max(dim=0).values                          # log-mean-exp, shifted by the largest weight
    return top + torch.log(torch.exp(log_w - top).sum(dim=0) / k)
'''

IWAE_DISTRIBUTIONS = _IWAE_HELPER + '''from torch.distributions import Bernoulli, Independent, Normal


def iwae_bound(encode, decode, x, k, generator=None):
    """IWAE estimate of log p(x) in nats with k importance samples; x: (B, ...) -> (B,)."""
    mu, logvar = encode(x)
    batch, d = mu.shape
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    prior = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    eps = torch.randn((k, batch, d), generator=generator).to(mu.device)
    z = q.base_dist.loc + q.base_dist.scale * eps                    # (k, B, d)
    logits = decode(z.reshape(k * batch, d)).reshape(k, *x.shape)
    decoder = Independent(Bernoulli(logits=logits, validate_args=False), x.dim() - 1)
    log_w = decoder.log_prob(x.expand_as(logits)) + prior.log_prob(z) - q.log_prob(z)
    return torch.logsumexp(log_w, dim=0) - math.log(k)
'''

TRAIN_DATALOADER = '''from torch.utils.data import DataLoader, TensorDataset


def train_epoch(model, optimizer, x_train, batch_size=128):
    """One epoch of ELBO maximisation; returns the mean training ELBO per image (nats)."""
    model.train()
    loader = DataLoader(TensorDataset(x_train), batch_size=batch_size, shuffle=True)
    total = torch.zeros(())
    for (x,) in loader:
        x = x.to(device)
        mu, logvar = model.encode(x)
        z = reparameterize(mu, logvar)
        value = elbo(x, model.decode(z), mu, logvar)[0]
        loss = -value.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += value.detach().sum().cpu()
    return (total / len(x_train)).item()
'''

TRAIN_PERMUTED_SLICES = '''def train_epoch(model, optimizer, x_train, batch_size=128):
    """One epoch of ELBO maximisation; returns the mean training ELBO per image (nats)."""
    n = x_train.shape[0]
    shuffled = x_train[torch.randperm(n)]
    weighted, start = 0.0, 0
    while start < n:
        x = shuffled[start:start + batch_size].to(device)
        start += batch_size
        model.zero_grad()
        mu, logvar = model.encode(x)
        _, reconstruction, kl = elbo(x, model.decode(reparameterize(mu, logvar)), mu, logvar)
        loss = (kl - reconstruction).sum() / x.shape[0]
        loss.backward()
        optimizer.step()
        weighted += -loss.item() * x.shape[0]
    return weighted / n
'''

ALTERNATIVES = {
    "distributions": {
        "reparameterize": REPARAMETERIZE_AFFINE,
        "gaussian_kl": KL_DISTRIBUTIONS,
        "bernoulli_log_likelihood": BERNOULLI_DISTRIBUTION,
        "elbo": ELBO_DISTRIBUTIONS,
        "iwae_bound": IWAE_DISTRIBUTIONS,
        "train_epoch": TRAIN_DATALOADER,
    },
    "closed_forms_and_loops": {
        "reparameterize": REPARAMETERIZE_SQRT,
        "gaussian_kl": KL_KINGMA,
        "bernoulli_log_likelihood": BERNOULLI_SOFTPLUS,
        "elbo": ELBO_CLOSED_FORM,
        "iwae_bound": IWAE_LOOP,
        "train_epoch": TRAIN_PERMUTED_SLICES,
    },
    "bce_with_logits": {
        "bernoulli_log_likelihood": BERNOULLI_BCE,
    },
}


# --- realistic wrong answers ------------------------------------------------------------------
def _reparameterize(body):
    return ('def reparameterize(mu, logvar, generator=None):\n'
            '    """Sample z ~ N(mu, diag(exp(logvar))) differentiably; mu, logvar: (B, d) -> z: (B, d)."""\n'
            + body)


def _kl(body):
    return ('def gaussian_kl(mu, logvar):\n'
            '    """KL(N(mu, diag(exp(logvar))) || N(0, I)) in nats; (B, d), (B, d) -> (B,)."""\n' + body)


def _bernoulli(body):
    return ('def bernoulli_log_likelihood(x, logits):\n'
            '    """log p(x|z) in nats for Bernoulli pixels given logits; (B, ...), (B, ...) -> (B,)."""\n'
            + body)


def _elbo(body):
    return ('def elbo(x, logits, mu, logvar):\n'
            '    """One-sample ELBO = log p(x|z) - KL(q(z|x) || p(z)); returns (elbo, reconstruction, kl), '
            'each (B,)."""\n' + body)


def _iwae(body):
    return _IWAE_HELPER + (
        'def iwae_bound(encode, decode, x, k, generator=None):\n'
        '    """IWAE estimate of log p(x) in nats with k importance samples; x: (B, ...) -> (B,)."""\n'
        '    mu, logvar = encode(x)\n'
        '    std = torch.exp(0.5 * logvar)\n'
        '    eps = torch.randn((k, *mu.shape), generator=generator, dtype=mu.dtype).to(mu.device)\n'
        + body)


_IWAE_WEIGHTS = (
    '    z = mu + std * eps\n'
    '    logits = decode(z.flatten(0, 1))\n'
    '    x_repeated = x.unsqueeze(0).expand(k, *x.shape).flatten(0, 1)\n'
    '    log_px_z = bernoulli_log_likelihood(x_repeated, logits).view(k, -1)\n'
    '    log_q = log_standard_normal(eps) - torch.log(std).sum(dim=-1)\n'
    '    log_w = log_px_z + log_standard_normal(z) - log_q\n')


def _train(loop):
    return ('def train_epoch(model, optimizer, x_train, batch_size=128):\n'
            '    """One epoch of ELBO maximisation; returns the mean training ELBO per image (nats)."""\n'
            '    model.train()\n'
            '    total = 0.0\n' + loop)


_TRAIN_LOOP = (
    '    for idx in torch.randperm(len(x_train)).split(batch_size):\n'
    '        x = x_train[idx].to(device)\n'
    '        mu, logvar = model.encode(x)\n'
    '        value, _, _ = elbo(x, model.decode(reparameterize(mu, logvar)), mu, logvar)\n'
    '        optimizer.zero_grad()\n'
    '        (-value.mean()).backward()\n'
    '        optimizer.step()\n'
    '        total += value.sum().item()\n'
    '    return total / len(x_train)\n')

_EPS = '    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)\n'

MISTAKES = [
    # reparameterize
    Mistake("reparam_variance_as_std", test="test_reparameterize",
            replaces={"reparameterize": _reparameterize(_EPS + '    return mu + torch.exp(logvar) * eps\n')},
            description="forgets the 1/2: scales eps by exp(logvar), the variance, instead of the std"),
    Mistake("reparam_ignores_generator", test="test_reparameterize",
            replaces={"reparameterize": _reparameterize(
                '    eps = torch.randn_like(mu)\n    return mu + torch.exp(0.5 * logvar) * eps\n')},
            description="draws eps from the global generator, ignoring `generator`"),
    Mistake("reparam_std_detached", test="test_reparameterize",
            replaces={"reparameterize": _reparameterize(
                _EPS + '    with torch.no_grad():\n        std = torch.exp(0.5 * logvar)\n'
                       '    return mu + std * eps\n')},
            description="computes the std under no_grad: no gradient reaches logvar"),
    # gaussian_kl
    Mistake("kl_sign", test="test_gaussian_kl",
            replaces={"gaussian_kl": _kl('    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 + logvar).sum(dim=1)\n')},
            description="KL with the sign of the log-variance term flipped"),
    Mistake("kl_no_half", test="test_gaussian_kl",
            replaces={"gaussian_kl": _kl('    return (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)\n')},
            description="forgets the factor 1/2 of the closed form"),
    Mistake("kl_mean_over_dims", test="test_gaussian_kl",
            replaces={"gaussian_kl": _kl('    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean(dim=1)\n')},
            description="averages over the latent dimensions instead of summing"),
    Mistake("kl_std_as_variance", test="test_gaussian_kl",
            replaces={"gaussian_kl": _kl(
                '    std = torch.exp(0.5 * logvar)\n    return 0.5 * (mu.pow(2) + std - 1.0 - logvar).sum(dim=1)\n')},
            description="uses the std where the closed form has the variance sigma^2"),
    # bernoulli_log_likelihood
    Mistake("bernoulli_logits_as_probabilities", test="test_bernoulli_log_likelihood",
            replaces={"bernoulli_log_likelihood": _bernoulli(
                '    log_p = x * torch.log(logits) + (1 - x) * torch.log(1 - logits)\n'
                '    return log_p.flatten(start_dim=1).sum(dim=1)\n')},
            description="uses the logits as probabilities"),
    Mistake("bernoulli_mean_over_pixels", test="test_bernoulli_log_likelihood",
            replaces={"bernoulli_log_likelihood": _bernoulli(
                '    F = torch.nn.functional\n'
                '    log_p = x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)\n'
                '    return log_p.flatten(start_dim=1).mean(dim=1)\n')},
            description="averages over pixels instead of summing"),
    Mistake("bernoulli_bits", test="test_bernoulli_log_likelihood",
            replaces={"bernoulli_log_likelihood": _bernoulli(
                '    F = torch.nn.functional\n'
                '    log_p = x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)\n'
                '    return log_p.flatten(start_dim=1).sum(dim=1) / math.log(2)\n')},
            description="returns bits instead of nats"),
    Mistake("bernoulli_sigmoid_then_log", test="test_bernoulli_log_likelihood",
            replaces={"bernoulli_log_likelihood": _bernoulli(
                '    p = torch.sigmoid(logits)\n'
                '    log_p = x * torch.log(p) + (1 - x) * torch.log(1 - p)\n'
                '    return log_p.flatten(start_dim=1).sum(dim=1)\n')},
            description="sigmoid then log: -inf or nan for large |logits|"),
    # elbo
    Mistake("elbo_plus_kl", test="test_elbo",
            replaces={"elbo": _elbo(
                '    reconstruction = bernoulli_log_likelihood(x, logits)\n'
                '    kl = gaussian_kl(mu, logvar)\n'
                '    return reconstruction + kl, reconstruction, kl\n')},
            description="adds the KL instead of subtracting it"),
    Mistake("elbo_variance_for_logvar", test="test_elbo",
            replaces={"elbo": _elbo(
                '    reconstruction = bernoulli_log_likelihood(x, logits)\n'
                '    kl = gaussian_kl(mu, logvar.exp())\n'
                '    return reconstruction - kl, reconstruction, kl\n')},
            description="passes the variance where gaussian_kl expects the log-variance"),
    Mistake("elbo_batch_means", test="test_elbo",
            replaces={"elbo": _elbo(
                '    reconstruction = bernoulli_log_likelihood(x, logits).mean()\n'
                '    kl = gaussian_kl(mu, logvar).mean()\n'
                '    return reconstruction - kl, reconstruction, kl\n')},
            description="returns batch means instead of one value per image"),
    Mistake("elbo_probabilities_as_logits", test="test_elbo",
            replaces={"elbo": _elbo(
                '    reconstruction = bernoulli_log_likelihood(x, torch.sigmoid(logits))\n'
                '    kl = gaussian_kl(mu, logvar)\n'
                '    return reconstruction - kl, reconstruction, kl\n')},
            description="passes sigmoid(logits), probabilities, to a function that expects logits"),
    # iwae_bound on known densities
    Mistake("iwae_no_log_k", test="test_iwae_bound",
            replaces={"iwae_bound": _iwae(_IWAE_WEIGHTS + '    return torch.logsumexp(log_w, dim=0)\n')},
            description="forgets the 1/k inside the log (no - log k)"),
    Mistake("iwae_naive_exp", test="test_iwae_bound",
            replaces={"iwae_bound": _iwae(_IWAE_WEIGHTS + '    return torch.log(torch.exp(log_w).mean(dim=0))\n')},
            description="averages exp(log-weights) directly: underflows to log 0 for large images"),
    Mistake("iwae_q_without_std", test="test_iwae_bound",
            replaces={"iwae_bound": _iwae(
                '    z = mu + std * eps\n'
                '    logits = decode(z.flatten(0, 1))\n'
                '    x_repeated = x.unsqueeze(0).expand(k, *x.shape).flatten(0, 1)\n'
                '    log_px_z = bernoulli_log_likelihood(x_repeated, logits).view(k, -1)\n'
                '    log_w = log_px_z + log_standard_normal(z) - log_standard_normal(eps)\n'
                '    return torch.logsumexp(log_w, dim=0) - math.log(k)\n')},
            description="log q(z|x) as log N(eps; 0, I), forgetting the -sum log std of the change of variables"),
    # iwae_bound on the trained model
    Mistake("iwae_mean_log_weights", test="test_iwae_trained",
            replaces={"iwae_bound": _iwae(_IWAE_WEIGHTS + '    return log_w.mean(dim=0)\n')},
            description="averages the log-weights (outside the log): that is the ELBO for every k"),
    Mistake("iwae_one_sample_repeated", test="test_iwae_trained",
            replaces={"iwae_bound": _iwae(
                '    eps = eps[:1].expand_as(eps)\n' + _IWAE_WEIGHTS
                + '    return torch.logsumexp(log_w, dim=0) - math.log(k)\n')},
            description="one sample copied k times: k equal weights, L_k = L_1"),
    # train_epoch
    Mistake("train_no_zero_grad", test="test_training",
            replaces={"train_epoch": _train(_TRAIN_LOOP.replace('        optimizer.zero_grad()\n', ''))},
            description="forgets optimizer.zero_grad(): gradients accumulate over the epoch"),
    Mistake("train_zero_grad_after_backward", test="test_training",
            replaces={"train_epoch": _train(_TRAIN_LOOP.replace(
                '        optimizer.zero_grad()\n        (-value.mean()).backward()\n',
                '        (-value.mean()).backward()\n        optimizer.zero_grad()\n'))},
            description="zero_grad between backward and step: every step has zero gradients"),
    Mistake("train_no_shuffle", test="test_training",
            replaces={"train_epoch": _train(_TRAIN_LOOP.replace(
                'for idx in torch.randperm(len(x_train)).split(batch_size):',
                'for idx in torch.arange(len(x_train)).split(batch_size):'))},
            description="minibatches in the same order every epoch (no shuffling)"),
    Mistake("train_returns_sum", test="test_training",
            replaces={"train_epoch": _train(_TRAIN_LOOP.replace('    return total / len(x_train)\n',
                                                                '    return total\n'))},
            description="returns the epoch's summed ELBO instead of the mean per image"),
    Mistake("train_decodes_mean", test="test_training",
            replaces={"train_epoch": _train(_TRAIN_LOOP.replace('model.decode(reparameterize(mu, logvar))',
                                                                'model.decode(mu)'))},
            description="decodes the encoder mean instead of a reparameterised sample"),
    Mistake("library_answer", test="test_gaussian_kl",
            replaces={"gaussian_kl": '''from dgmcourse.vae import gaussian_kl as _library_kl


def gaussian_kl(mu, logvar):
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) in nats; (B, d), (B, d) -> (B,)."""
    return _library_kl(mu, logvar)
'''},
            description="calls the course library's own implementation of the task "
                        "(not an answer: the grader gives no points)"),
]
