"""Alternatives and mistakes for a2_gan (see dgmcourse.assessment)."""
from dgmcourse.assessment import Mistake

# ----------------------------------------------------------------------------- shared cells
_THEORY_HEAD = '''from scipy.special import xlogy

x = np.linspace(-12, 13, 20001)
dx = x[1] - x[0]
p_data, p_model = norm.pdf(x, 0, 1), norm.pdf(x, 1, 1)
'''
_THEORY_TAIL = '''

jsd = js_divergence(p_data, p_model, dx)
v_star = gan_value(optimal_discriminator(p_data, p_model), p_data, p_model, dx)
print(f"JSD = {jsd:.6f} nats, V(G, D*) = {v_star:.6f}, 2 JSD - log 4 = {2 * jsd - math.log(4):.6f}")
'''
_DSTAR_OK = '''

def optimal_discriminator(p_data, p_g):
    \'\'\'D*(x) = p_data / (p_data + p_g) on the grid; arrays (N,) -> (N,).\'\'\'
    total = p_data + p_g
    return np.divide(p_data, total, out=np.full_like(total, 0.5, dtype=float), where=total > 0)
'''
_VALUE_OK = '''

def gan_value(D, p_data, p_g, dx):
    \'\'\'V(G, D) by a Riemann sum; float, nats.\'\'\'
    return float(np.sum(xlogy(p_data, D) + xlogy(p_g, 1 - D)) * dx)
'''
_JSD_OK = '''

def js_divergence(p, q, dx):
    \'\'\'JSD(p || q) of densities on the grid; float, nats.\'\'\'
    m = 0.5 * (p + q)
    return float(np.sum(0.5 * (xlogy(p, p) - xlogy(p, m)) + 0.5 * (xlogy(q, q) - xlogy(q, m))) * dx)
'''


def _theory(dstar=_DSTAR_OK, value=_VALUE_OK, jsd=_JSD_OK):
    return _THEORY_HEAD + dstar + value + jsd + _THEORY_TAIL


def _train_step(body):
    return ("def train_step(G, D, opt_g, opt_d, real, z):\n"
            "    '''One discriminator step and one generator step; returns (d_loss, g_loss) as floats.'''\n"
            + body)


# ----------------------------------------------------------------------------- alternatives
ALTERNATIVES = {
    "bce_with_logits": {
        "discriminator_loss": '''def discriminator_loss(real_logits, fake_logits):
    \'\'\'-V(G, D) on a batch, from logits of shape (B,); scalar tensor in nats.\'\'\'
    if real_logits.size() != fake_logits.size():
        raise ValueError(f"shapes differ: {tuple(real_logits.shape)} vs {tuple(fake_logits.shape)}")
    real_term = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake_term = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real_term + fake_term
''',
        "generator_loss": '''def generator_loss(fake_logits, kind="non_saturating"):
    \'\'\'Generator loss from the logits (B,) of D on generated samples; scalar tensor in nats.\'\'\'
    if kind == "non_saturating":
        # -log D(G(z)): cross-entropy with the label "real"
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    elif kind == "minimax":
        # log(1 - D(G(z))) = -(cross-entropy with the label "fake")
        return -F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    else:
        raise ValueError("kind must be 'minimax' or 'non_saturating'")
''',
        "theory": _THEORY_HEAD + '''from scipy.special import rel_entr


def optimal_discriminator(p_data, p_g):
    \'\'\'D*(x) = p_data / (p_data + p_g) on the grid; arrays (N,) -> (N,).\'\'\'
    p_data, p_g = np.asarray(p_data, dtype=float), np.asarray(p_g, dtype=float)
    total = p_data + p_g
    return np.where(total > 0, p_data / np.where(total > 0, total, 1.0), 0.5)


def gan_value(D, p_data, p_g, dx):
    \'\'\'V(G, D) by a Riemann sum; float, nats.\'\'\'
    D = np.asarray(D, dtype=float)
    with np.errstate(divide="ignore"):
        log_d = np.where(p_data > 0, np.log(np.where(p_data > 0, D, 1.0)), 0.0)
        log_not_d = np.where(p_g > 0, np.log(np.where(p_g > 0, 1.0 - D, 1.0)), 0.0)
    return float(dx * np.sum(p_data * log_d + p_g * log_not_d))


def js_divergence(p, q, dx):
    \'\'\'JSD(p || q) of densities on the grid; float, nats.\'\'\'
    m = (p + q) / 2
    return float(0.5 * rel_entr(p, m).sum() * dx + 0.5 * rel_entr(q, m).sum() * dx)


jsd = js_divergence(p_data, p_model, dx)
D_star = optimal_discriminator(p_data, p_model)
v_star = gan_value(D_star, p_data, p_model, dx)
print(f"JSD = {jsd:.6f} nats, V(G, D*) = {v_star:.6f}, 2 JSD - log 4 = {2 * jsd - math.log(4):.6f}")
''',
        "mode_coverage": '''from scipy.spatial.distance import cdist


def mode_coverage(samples, means, sigma):
    \'\'\'(number of modes covered, fraction of high-quality samples).\'\'\'
    d = cdist(samples.detach().cpu().numpy().astype(np.float64), means.detach().cpu().numpy().astype(np.float64))
    nearest, closest = d.argmin(axis=1), d.min(axis=1)
    high_quality = closest <= 3 * sigma
    return len(np.unique(nearest[high_quality])), float(np.mean(high_quality))
''',
        "train_step": _train_step('''    opt_d.zero_grad()
    with torch.no_grad():
        fake = G(z)
    logits = D(torch.cat([real, fake], dim=0))
    d_loss = discriminator_loss(logits[:len(real)], logits[len(real):])
    d_loss.backward()
    opt_d.step()
    opt_g.zero_grad()
    g_loss = generator_loss(D(G(z)), kind="non_saturating")
    g_loss.backward()
    opt_g.step()
    return float(d_loss), float(g_loss)
'''),
    },
    "logsigmoid": {
        "discriminator_loss": '''def discriminator_loss(real_logits, fake_logits):
    \'\'\'-V(G, D) on a batch, from logits of shape (B,); scalar tensor in nats.\'\'\'
    if tuple(real_logits.shape) != tuple(fake_logits.shape):
        raise ValueError("real and fake logits need the same shape")
    # log D = logsigmoid(l), log(1 - D) = logsigmoid(-l)
    return -(F.logsigmoid(real_logits).mean() + F.logsigmoid(-fake_logits).mean())
''',
        "generator_loss": '''def generator_loss(fake_logits, kind="non_saturating"):
    \'\'\'Generator loss from the logits (B,) of D on generated samples; scalar tensor in nats.\'\'\'
    losses = {
        "minimax": lambda l: F.logsigmoid(-l).mean(),        # log(1 - D)
        "non_saturating": lambda l: -F.logsigmoid(l).mean(),  # -log D
    }
    if kind not in losses:
        raise ValueError(f"kind={kind!r} not in {sorted(losses)}")
    return losses[kind](fake_logits)
''',
        "theory": _THEORY_HEAD + '''from scipy.spatial.distance import jensenshannon


def optimal_discriminator(p_data, p_g):
    \'\'\'D*(x) = p_data / (p_data + p_g) on the grid; arrays (N,) -> (N,).\'\'\'
    out = np.full(np.shape(p_data), 0.5)
    some = (p_data + p_g) > 0
    out[some] = p_data[some] / (p_data[some] + p_g[some])
    return out


def gan_value(D, p_data, p_g, dx):
    \'\'\'V(G, D) by a Riemann sum; float, nats.\'\'\'
    on_data, on_model = p_data > 0, p_g > 0
    total = np.sum(p_data[on_data] * np.log(D[on_data])) + np.sum(p_g[on_model] * np.log1p(-D[on_model]))
    return float(total * dx)


def js_divergence(p, q, dx):
    \'\'\'JSD(p || q) of densities on the grid; float, nats.\'\'\'
    # scipy normalises p and q to sum 1 (the Riemann masses p dx) and returns sqrt(JSD), natural log by default
    return float(jensenshannon(p, q) ** 2)


jsd = js_divergence(p_data, p_model, dx)
v_star = gan_value(optimal_discriminator(p_data, p_model), p_data, p_model, dx)
print(f"JSD = {jsd:.6f} nats, V(G, D*) = {v_star:.6f}, 2 JSD - log 4 = {2 * jsd - math.log(4):.6f}")
''',
        "mode_coverage": '''def mode_coverage(samples, means, sigma):
    \'\'\'(number of modes covered, fraction of high-quality samples).\'\'\'
    centres = means.tolist()
    covered, n_good = set(), 0
    for point in samples.tolist():
        distances = [math.dist(point, c) for c in centres]
        k = min(range(len(centres)), key=distances.__getitem__)
        if distances[k] <= 3 * sigma:
            n_good += 1
            covered.add(k)
    return len(covered), n_good / len(samples)
''',
        "train_step": _train_step('''    fake_for_d = G(z).detach()
    d_loss = discriminator_loss(D(real), D(fake_for_d))
    D.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    for p in D.parameters():          # D is fixed during the generator step
        p.requires_grad_(False)
    fake_for_g = G(z)
    g_loss = generator_loss(D(fake_for_g), kind="non_saturating")
    G.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    for p in D.parameters():
        p.requires_grad_(True)
    return d_loss.detach().item(), g_loss.detach().item()
'''),
    },
    "manual_stable": {
        "discriminator_loss": '''def _softplus(t):
    # log(1 + e^t) = max(t, 0) + log(1 + e^{-|t|}), finite for any t
    return torch.clamp(t, min=0) + torch.log1p(torch.exp(-t.abs()))


def discriminator_loss(real_logits, fake_logits):
    \'\'\'-V(G, D) on a batch, from logits of shape (B,); scalar tensor in nats.\'\'\'
    if real_logits.shape != fake_logits.shape:
        raise ValueError("shape mismatch")
    B = real_logits.shape[0]
    return (_softplus(-real_logits).sum() + _softplus(fake_logits).sum()) / B
''',
        "generator_loss": '''def generator_loss(fake_logits, kind="non_saturating"):
    \'\'\'Generator loss from the logits (B,) of D on generated samples; scalar tensor in nats.\'\'\'
    l = fake_logits
    log1p_exp = lambda t: torch.clamp(t, min=0) + torch.log1p(torch.exp(-t.abs()))
    if kind == "minimax":
        return torch.mean(-log1p_exp(l))
    if kind == "non_saturating":
        return torch.mean(log1p_exp(-l))
    raise ValueError(kind)
''',
        "mode_coverage": '''def mode_coverage(samples, means, sigma):
    \'\'\'(number of modes covered, fraction of high-quality samples).\'\'\'
    dist = (samples[:, None, :] - means[None, :, :]).norm(dim=-1)     # (n, K), float32
    closest, nearest = dist.min(dim=1)
    good = closest <= 3 * sigma
    counts = torch.bincount(nearest[good], minlength=len(means))
    return int((counts > 0).sum().item()), good.sum().item() / len(samples)
''',
        "train_step": _train_step('''    real_labels, fake_labels = torch.ones(len(real)), torch.zeros(len(z))
    fake = G(z)
    opt_d.zero_grad()
    d_loss = (F.binary_cross_entropy_with_logits(D(real), real_labels)
              + F.binary_cross_entropy_with_logits(D(fake.detach()), fake_labels))
    d_loss.backward()
    opt_d.step()
    opt_g.zero_grad()
    g_loss = F.binary_cross_entropy_with_logits(D(fake), real_labels)
    g_loss.backward()
    opt_g.step()
    opt_d.zero_grad()                 # drop the generator step's gradients on D
    return d_loss.item(), g_loss.item()
'''),
    },
}

# ----------------------------------------------------------------------------- mistakes
_D_HEAD = '''def discriminator_loss(real_logits, fake_logits):
    \'\'\'-V(G, D) on a batch, from logits of shape (B,); scalar tensor in nats.\'\'\'
'''
_D_CHECK = '''    if real_logits.shape != fake_logits.shape:
        raise ValueError("real_logits and fake_logits must have the same shape")
'''
_G_HEAD = '''def generator_loss(fake_logits, kind="non_saturating"):
    \'\'\'Generator loss from the logits (B,) of D on generated samples; scalar tensor in nats.\'\'\'
'''
_MC_HEAD = '''def mode_coverage(samples, means, sigma):
    \'\'\'(number of modes covered, fraction of high-quality samples).\'\'\'
'''
_STEP_OK = '''    fake = G(z)
    d_loss = discriminator_loss(D(real), D(fake.detach()))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    g_loss = generator_loss(D(fake), "non_saturating")
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    return d_loss.item(), g_loss.item()
'''

MISTAKES = [
    # --- discriminator_loss
    Mistake("d_softplus_signs", test="test_discriminator_loss",
            replaces={"discriminator_loss": _D_HEAD + _D_CHECK + '''\
    return F.softplus(real_logits).mean() + F.softplus(-fake_logits).mean()
'''}, description="softplus signs swapped: rewards D for calling data fake"),
    Mistake("d_sum_not_mean", test="test_discriminator_loss",
            replaces={"discriminator_loss": _D_HEAD + _D_CHECK + '''\
    return F.softplus(-real_logits).sum() + F.softplus(fake_logits).sum()
'''}, description="sum over the batch instead of the mean"),
    Mistake("d_no_value_error", test="test_discriminator_loss",
            replaces={"discriminator_loss": _D_HEAD + '''\
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
'''}, description="no ValueError when the two shapes differ"),
    Mistake("d_naive_log", test="test_discriminator_loss",
            replaces={"discriminator_loss": _D_HEAD + _D_CHECK + '''\
    return -(torch.log(torch.sigmoid(real_logits)).mean() + torch.log(1 - torch.sigmoid(fake_logits)).mean())
'''}, description="log of sigmoid probabilities: infinite for logits of +-1000"),
    # --- generator_loss
    Mistake("g_kinds_swapped", test="test_generator_loss",
            replaces={"generator_loss": _G_HEAD + '''    if kind == "non_saturating":
        return -F.softplus(fake_logits).mean()
    if kind == "minimax":
        return F.softplus(-fake_logits).mean()
    raise ValueError(f"unknown kind {kind!r}")
'''}, description="minimax and non-saturating losses swapped"),
    Mistake("g_minimax_sign", test="test_generator_loss",
            replaces={"generator_loss": _G_HEAD + '''    if kind == "minimax":
        return F.softplus(fake_logits).mean()
    if kind == "non_saturating":
        return F.softplus(-fake_logits).mean()
    raise ValueError(f"unknown kind {kind!r}")
'''}, description="minimax loss -log(1 - D) (the discriminator's term) instead of log(1 - D)"),
    Mistake("g_naive_log", test="test_generator_loss",
            replaces={"generator_loss": _G_HEAD + '''    D = torch.sigmoid(fake_logits)
    if kind == "minimax":
        return torch.log(1 - D).mean()
    if kind == "non_saturating":
        return -torch.log(D).mean()
    raise ValueError(f"unknown kind {kind!r}")
'''}, description="logs of probabilities: the non-saturating loss is infinite at a logit of -1000"),
    Mistake("g_no_value_error", test="test_generator_loss",
            replaces={"generator_loss": _G_HEAD + '''    if kind == "minimax":
        return -F.softplus(fake_logits).mean()
    return F.softplus(-fake_logits).mean()
'''}, description="any unknown kind silently falls back to the non-saturating loss"),
    # --- theory
    Mistake("dstar_flipped", test="test_optimal_discriminator", replaces={"theory": _theory(dstar='''

def optimal_discriminator(p_data, p_g):
    \'\'\'D*(x) = p_data / (p_data + p_g) on the grid; arrays (N,) -> (N,).\'\'\'
    total = p_data + p_g
    return np.divide(p_g, total, out=np.full_like(total, 0.5, dtype=float), where=total > 0)
''')}, description="D* = p_g / (p_data + p_g)"),
    Mistake("dstar_nan_at_zero", test="test_optimal_discriminator", replaces={"theory": _theory(dstar='''

def optimal_discriminator(p_data, p_g):
    \'\'\'D*(x) = p_data / (p_data + p_g) on the grid; arrays (N,) -> (N,).\'\'\'
    with np.errstate(invalid="ignore", divide="ignore"):
        return p_data / (p_data + p_g)
''')}, description="nan instead of 1/2 where both densities vanish"),
    Mistake("jsd_no_half", test="test_theorem_1", replaces={"theory": _theory(jsd='''

def js_divergence(p, q, dx):
    \'\'\'JSD(p || q) of densities on the grid; float, nats.\'\'\'
    m = 0.5 * (p + q)
    return float(np.sum((xlogy(p, p) - xlogy(p, m)) + (xlogy(q, q) - xlogy(q, m))) * dx)
''')}, description="JSD without the factors 1/2"),
    Mistake("jsd_is_kl", test="test_theorem_1", replaces={"theory": _theory(jsd='''

def js_divergence(p, q, dx):
    \'\'\'JSD(p || q) of densities on the grid; float, nats.\'\'\'
    return float(np.sum(xlogy(p, p) - xlogy(p, q)) * dx)
''')}, description="KL(p || q) instead of the JSD"),
    Mistake("gan_value_no_dx", test="test_theorem_1", replaces={"theory": _theory(value='''

def gan_value(D, p_data, p_g, dx):
    \'\'\'V(G, D) by a Riemann sum; float, nats.\'\'\'
    return float(np.sum(xlogy(p_data, D) + xlogy(p_g, 1 - D)))
''')}, description="the Riemann sum of V without the cell width dx"),
    Mistake("jsd_bits", test="test_theorem_1", replaces={"theory": _theory(jsd='''

def js_divergence(p, q, dx):
    \'\'\'JSD(p || q) of densities on the grid; float, nats.\'\'\'
    m = 0.5 * (p + q)
    nats = np.sum(0.5 * (xlogy(p, p) - xlogy(p, m)) + 0.5 * (xlogy(q, q) - xlogy(q, m))) * dx
    return float(nats / np.log(2))
''')}, description="JSD in bits instead of nats"),
    # --- mode_coverage
    Mistake("mc_sigma_not_3sigma", test="test_mode_coverage",
            replaces={"mode_coverage": _MC_HEAD + '''\
    dist, nearest = torch.cdist(samples.double(), means.double()).min(1)
    good = dist <= sigma
    return int(torch.unique(nearest[good]).numel()), float(good.double().mean())
'''}, description="high quality within sigma instead of 3 sigma"),
    Mistake("mc_no_hq_filter", test="test_mode_coverage",
            replaces={"mode_coverage": _MC_HEAD + '''\
    dist, nearest = torch.cdist(samples.double(), means.double()).min(1)
    good = dist <= 3 * sigma
    return int(torch.unique(nearest).numel()), float(good.double().mean())
'''}, description="a mode counts as covered by any sample nearest to it, high quality or not"),
    Mistake("mc_squared_distance", test="test_mode_coverage",
            replaces={"mode_coverage": _MC_HEAD + '''    sq = ((samples[:, None, :] - means[None, :, :]) ** 2).sum(-1)
    d2, nearest = sq.min(1)
    good = d2 <= 3 * sigma
    return int(torch.unique(nearest[good]).numel()), float(good.double().mean())
'''}, description="squared distance compared with 3 sigma"),
    # --- train_step
    Mistake("ts_no_detach", test="test_train_step", replaces={"train_step": _train_step('''    opt_d.zero_grad()
    opt_g.zero_grad()
    fake = G(z)
    d_loss = discriminator_loss(D(real), D(fake))
    d_loss.backward(retain_graph=True)
    opt_d.step()
    g_loss = generator_loss(D(fake), "non_saturating")
    g_loss.backward()
    opt_g.step()
    return d_loss.item(), g_loss.item()
''')}, description="no detach in the discriminator step: G also receives the gradient of D's loss"),
    Mistake("ts_stale_logits", test="test_train_step", replaces={"train_step": _train_step('''    fake = G(z)
    real_logits, fake_logits = D(real), D(fake)      # fake_logits reused below, after D's update
    d_loss = discriminator_loss(real_logits, D(fake.detach()))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    g_loss = generator_loss(fake_logits, "non_saturating")
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    return d_loss.item(), g_loss.item()
''')}, description="generator step on the stale logits of D computed before D's update"),
    Mistake("ts_no_zero_grad", test="test_train_step", replaces={"train_step": _train_step('''    fake = G(z)
    d_loss = discriminator_loss(D(real), D(fake.detach()))
    d_loss.backward()
    opt_d.step()
    g_loss = generator_loss(D(fake), "non_saturating")
    g_loss.backward()
    opt_g.step()
    return d_loss.item(), g_loss.item()
''')}, description="no zero_grad: gradients accumulate over steps"),
    Mistake("ts_returns_tensors", test="test_train_step", replaces={"train_step": _train_step(
        _STEP_OK.replace("return d_loss.item(), g_loss.item()", "return d_loss.detach(), g_loss.detach()"))},
        description="returns tensors instead of Python floats"),
    Mistake("ts_minimax", test="test_train_step", replaces={"train_step": _train_step(
        _STEP_OK.replace('generator_loss(D(fake), "non_saturating")', 'generator_loss(D(fake), "minimax")'))},
        description="generator step with the minimax loss instead of the non-saturating one"),
    # --- the trained model (the training recipe is being tuned: see the report)
    Mistake("ring_no_generator_update", test="test_trained_ring", replaces={"train_step": _train_step(
        _STEP_OK.replace("    opt_g.step()\n", ""))},
        description="train_step never calls opt_g.step(): the generator never learns"),
    Mistake("ring_no_discriminator_step", test="test_trained_ring",
            replaces={"train_step": _train_step('''    fake = G(z)
    with torch.no_grad():
        d_loss = discriminator_loss(D(real), D(fake))
    g_loss = generator_loss(D(fake), "non_saturating")
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    return d_loss.item(), g_loss.item()
''')}, description="skips the discriminator step: G chases the initial, random D"),
    Mistake("ring_minimax_frozen_d", test="test_trained_ring", replaces={"train_step": _train_step('''    fake = G(z)
    d_loss = discriminator_loss(D(real), D(fake.detach()))
    opt_d.zero_grad()
    d_loss.backward()
    g_loss = generator_loss(D(fake), "minimax")
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    return d_loss.item(), g_loss.item()
''')}, description="forgets opt_d.step() and trains G with the minimax loss against the frozen D"),
    Mistake("library_answer", test="test_discriminator_loss",
            replaces={"discriminator_loss": """import dgmcourse.gan as _gan


def discriminator_loss(real_logits, fake_logits):
    '''-V(G, D) on a batch, from logits of shape (B,); scalar tensor in nats.'''
    return _gan.discriminator_loss(real_logits, fake_logits)
"""},
            description="calls the course library's own implementation of the task "
                        "(not an answer: the grader gives no points)"),
]
