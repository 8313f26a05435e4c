"""Alternatives and mistakes for a3_wasserstein (see dgmcourse.assessment)."""
from dgmcourse.assessment import Mistake

# --- correct answers, written independently ----------------------------------------------------
EMD_SPARSE = '''def emd_lp(a, b, cost):
    \'\'\'Earth mover's distance between piles a (n,) and b (m,) with cost (n, m): returns (W, gamma (n, m)).\'\'\'
    a, b, cost = np.asarray(a, float), np.asarray(b, float), np.asarray(cost, float)
    from scipy import sparse
    n, m = a.size, b.size
    if cost.ndim != 2 or cost.shape[0] != n or cost.shape[1] != m:
        raise ValueError("cost has the wrong shape")
    if abs(a.sum() - b.sum()) > 1e-9 * max(1.0, abs(a.sum())):
        raise ValueError("the two distributions have different total mass")
    variable = np.arange(n * m).reshape(n, m)          # gamma_ij is variable i * m + j
    rows = np.concatenate([np.repeat(np.arange(n), m), n + np.tile(np.arange(m), n)])
    cols = np.concatenate([variable.ravel(), variable.ravel()])
    A = sparse.csr_matrix((np.ones(2 * n * m), (rows, cols)), shape=(n + m, n * m))
    result = linprog(cost.reshape(-1), A_eq=A, b_eq=np.r_[a, b], bounds=(0, None), method="highs")
    if not result.success:
        raise RuntimeError(result.message)
    plan = result.x.reshape(n, m)
    return result.fun, plan
'''

EMD_LOOPS = '''def emd_lp(a, b, cost):
    \'\'\'Earth mover's distance between piles a (n,) and b (m,) with cost (n, m): returns (W, gamma (n, m)).\'\'\'
    a, b, cost = np.asarray(a, float), np.asarray(b, float), np.asarray(cost, float)
    n = len(a)
    m = len(b)
    if cost.shape != (n, m):
        raise ValueError("cost must be (len(a), len(b))")
    if not math.isclose(float(a.sum()), float(b.sum()), rel_tol=1e-9, abs_tol=1e-12):
        raise ValueError("total masses differ")
    c = np.zeros(n * m)
    A_eq = np.zeros((n + m, n * m))
    b_eq = np.zeros(n + m)
    for i in range(n):
        for j in range(m):
            k = i * m + j
            c[k] = cost[i, j]
            A_eq[i, k] = 1.0          # mass leaving pile i
            A_eq[n + j, k] = 1.0      # mass arriving at pile j
    for i in range(n):
        b_eq[i] = a[i]
    for j in range(m):
        b_eq[n + j] = b[j]
    sol = linprog(c, A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs-ds")
    gamma = np.zeros((n, m))
    for i in range(n):
        for j in range(m):
            gamma[i, j] = sol.x[i * m + j]
    W = 0.0
    for i in range(n):
        for j in range(m):
            W += cost[i, j] * gamma[i, j]
    return W, gamma
'''

EMD_IPM = '''def emd_lp(a, b, cost):
    \'\'\'Earth mover's distance between piles a (n,) and b (m,) with cost (n, m): returns (W, gamma (n, m)).\'\'\'
    a, b, cost = np.asarray(a, float), np.asarray(b, float), np.asarray(cost, float)
    n, m = a.shape[0], b.shape[0]
    if cost.shape != (n, m):
        raise ValueError(f"expected cost of shape {(n, m)}")
    if not np.allclose(a.sum(), b.sum(), rtol=1e-9, atol=0):
        raise ValueError("a and b do not balance")
    # one-hot rows: row i of the plan, column j of the plan
    row_of = np.arange(n * m) // m
    col_of = np.arange(n * m) % m
    A = np.vstack([(row_of[None, :] == np.arange(n)[:, None]).astype(float),
                   (col_of[None, :] == np.arange(m)[:, None]).astype(float)])
    out = linprog(c=cost.flatten(), A_eq=A, b_eq=np.hstack([a, b]), bounds=[(0, None)] * (n * m),
                  method="highs-ipm")
    gamma = np.clip(out.x, 0, None).reshape(n, m)
    return float(np.sum(gamma * cost)), gamma
'''

LINES_CDIST = '''def parallel_lines_closed_form(theta):
    \'\'\'{"KL": KL(pi || p_theta), "JSD": JSD(pi || p_theta), "W": W(pi, p_theta)} for the parallel lines.\'\'\'
    same = float(theta) == 0.0
    kl = 0.0 if same else float("inf")             # pi puts mass where p_theta has density 0
    jsd = 0.0 if same else np.log(2.0)             # disjoint supports: each half of M is one line
    return {"KL": kl, "JSD": float(jsd), "W": float(np.abs(theta))}


def wasserstein_equal_samples(x, y):
    \'\'\'Exact W_1 between two samples x (n, d) and y (n, d) with masses 1/n, by optimal assignment.\'\'\'
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) != len(y) or x.shape[1:] != y.shape[1:]:
        raise ValueError("x and y must both be (n, d) with the same n and d")
    dist = torch.cdist(torch.from_numpy(x), torch.from_numpy(y)).numpy()   # float64
    # the best permutation maximises the negated total distance
    rows, match = linear_sum_assignment(-dist, maximize=True)
    return float(np.mean(dist[rows, match]))
'''

LINES_HUNGARIAN = '''def parallel_lines_closed_form(theta):
    \'\'\'{"KL": KL(pi || p_theta), "JSD": JSD(pi || p_theta), "W": W(pi, p_theta)} for the parallel lines.\'\'\'
    if theta != 0:
        # disjoint supports: KL infinite, JSD = 1/2 log 2 + 1/2 log 2, transport moves every point by |theta|
        return dict(KL=math.inf, JSD=0.5 * math.log(2) + 0.5 * math.log(2), W=math.fabs(theta))
    return dict(KL=0.0, JSD=0.0, W=0.0)


def wasserstein_equal_samples(x, y):
    \'\'\'Exact W_1 between two samples x (n, d) and y (n, d) with masses 1/n, by optimal assignment.\'\'\'
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError("the two samples must have the same size")
    cost = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))
    # Hungarian algorithm (Kuhn-Munkres with potentials u, v and shortest augmenting paths)
    u, v = np.zeros(n + 1), np.zeros(n + 1)
    owner = np.zeros(n + 1, dtype=int)          # owner[j]: row (1-based) assigned to column j, 0 = none
    way = np.zeros(n + 1, dtype=int)
    for i in range(1, n + 1):
        owner[0], j0 = i, 0
        minv = np.full(n + 1, np.inf)
        used = np.zeros(n + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            cols = np.flatnonzero(~used[1:]) + 1
            reduced = cost[i0 - 1, cols - 1] - u[i0] - v[cols]
            better = reduced < minv[cols]
            minv[cols[better]] = reduced[better]
            way[cols[better]] = j0
            j1 = cols[np.argmin(minv[cols])]
            delta = minv[j1]
            u[owner[used]] += delta
            v[used] -= delta
            minv[cols] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:                               # flip the augmenting path
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    rows = owner[1:] - 1
    return float(cost[rows, np.arange(n)].mean())
'''

LINES_NORM = '''def parallel_lines_closed_form(theta):
    \'\'\'{"KL": KL(pi || p_theta), "JSD": JSD(pi || p_theta), "W": W(pi, p_theta)} for the parallel lines.\'\'\'
    out = {"KL": 0.0, "JSD": 0.0, "W": 0.0}
    if theta:
        out["KL"] = np.inf
        out["JSD"] = -math.log(0.5)
        out["W"] = theta if theta > 0 else -theta
    return out


def wasserstein_equal_samples(x, y):
    \'\'\'Exact W_1 between two samples x (n, d) and y (n, d) with masses 1/n, by optimal assignment.\'\'\'
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.shape != y.shape:
        raise ValueError("need two samples of equal size")
    n = len(x)
    dist = np.empty((n, n))
    for i in range(n):
        dist[i] = np.linalg.norm(y - x[i], axis=1)
    r, c = linear_sum_assignment(dist)
    return dist[r, c].sum() / n
'''

GP_ONES = '''def my_gradient_penalty(critic, real, fake, eps):
    \'\'\'WGAN-GP penalty E[(||grad f(x_hat)||_2 - 1)^2] for real, fake (B, d) and eps (B, 1).\'\'\'
    mixed = real.detach() + (1 - eps) * (fake.detach() - real.detach())
    mixed.requires_grad_()
    scores = critic(mixed)
    grads = torch.autograd.grad(outputs=scores, inputs=mixed, grad_outputs=torch.ones_like(scores),
                                create_graph=True, retain_graph=True)[0]
    norms = torch.sqrt((grads.reshape(len(grads), -1) ** 2).sum(dim=1))
    return torch.mean((norms - 1.0) ** 2)
'''

GP_LOOP = '''def my_gradient_penalty(critic, real, fake, eps):
    \'\'\'WGAN-GP penalty E[(||grad f(x_hat)||_2 - 1)^2] for real, fake (B, d) and eps (B, 1).\'\'\'
    with torch.no_grad():
        points = eps * real + (1 - eps) * fake
    total = 0.0
    for i in range(points.shape[0]):          # one backward pass per sample
        point = points[i:i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(critic(point).sum(), point, create_graph=True)
        total = total + (torch.linalg.vector_norm(g) - 1) ** 2
    return total / points.shape[0]
'''

GP_FUNC = '''def my_gradient_penalty(critic, real, fake, eps):
    \'\'\'WGAN-GP penalty E[(||grad f(x_hat)||_2 - 1)^2] for real, fake (B, d) and eps (B, 1).\'\'\'
    x_hat = torch.lerp(fake.detach(), real.detach(), eps)     # fake + eps * (real - fake)
    score = lambda point: critic(point.unsqueeze(0)).sum()
    grads = torch.func.vmap(torch.func.grad(score))(x_hat)
    return (torch.linalg.vector_norm(grads.flatten(1), dim=1) - 1).pow(2).mean()
'''

P2_STACK = '''def p2_log_likelihood(log_p, weight=0.01):
    \'\'\'log(weight * p(x) + (1 - weight) * 1) for log_p (B,) in nats; uniform noise on [0, 1]^D.\'\'\'
    terms = torch.stack([log_p + math.log(weight),
                         torch.full_like(log_p, math.log(1 - weight))], dim=0)
    return torch.logsumexp(terms, dim=0)


def sample_p2(model_samples, weight=0.01, generator=None):
    \'\'\'n samples of p2 from n samples of p (n, 1, 8, 8): keep each with probability weight, else uniform noise.\'\'\'
    out = torch.rand(model_samples.shape, generator=generator, dtype=model_samples.dtype)
    keep = torch.rand(len(model_samples), generator=generator) < weight
    out[keep] = model_samples[keep]
    return out
'''

P2_SOFTPLUS = '''def p2_log_likelihood(log_p, weight=0.01):
    \'\'\'log(weight * p(x) + (1 - weight) * 1) for log_p (B,) in nats; uniform noise on [0, 1]^D.\'\'\'
    # log(w p + 1 - w) = log(1 - w) + log(1 + exp(log p + log w - log(1 - w)))
    log_odds = math.log(weight) - math.log1p(-weight)
    return math.log1p(-weight) + torch.nn.functional.softplus(log_p + log_odds)


def sample_p2(model_samples, weight=0.01, generator=None):
    \'\'\'n samples of p2 from n samples of p (n, 1, 8, 8): keep each with probability weight, else uniform noise.\'\'\'
    n = model_samples.shape[0]
    coin = torch.bernoulli(torch.full((n,), float(weight)), generator=generator)
    coin = coin.reshape(n, *[1] * (model_samples.ndim - 1))
    noise = torch.rand(model_samples.shape, generator=generator)
    return coin * model_samples + (1 - coin) * noise
'''

P2_MAX = '''def p2_log_likelihood(log_p, weight=0.01):
    \'\'\'log(weight * p(x) + (1 - weight) * 1) for log_p (B,) in nats; uniform noise on [0, 1]^D.\'\'\'
    a = log_p + math.log(weight)
    b = torch.full_like(log_p, math.log(1 - weight))
    top = torch.maximum(a, b)
    return top + torch.log(torch.exp(a - top) + torch.exp(b - top))


def sample_p2(model_samples, weight=0.01, generator=None):
    \'\'\'n samples of p2 from n samples of p (n, 1, 8, 8): keep each with probability weight, else uniform noise.\'\'\'
    n = len(model_samples)
    replace = torch.rand(n, generator=generator) >= weight
    out = model_samples.clone()
    out[replace] = torch.rand((int(replace.sum()), *model_samples.shape[1:]), generator=generator)
    return out
'''

ALTERNATIVES = {
    "sparse_cdist_ones_stack": {"emd_lp": EMD_SPARSE, "parallel_lines": LINES_CDIST,
                                "gradient_penalty": GP_ONES, "p2": P2_STACK},
    "loops_hungarian_per_sample_softplus": {"emd_lp": EMD_LOOPS, "parallel_lines": LINES_HUNGARIAN,
                                            "gradient_penalty": GP_LOOP, "p2": P2_SOFTPLUS},
    "ipm_norm_loops_func_max": {"emd_lp": EMD_IPM, "parallel_lines": LINES_NORM,
                                "gradient_penalty": GP_FUNC, "p2": P2_MAX},
}

# --- common mistakes -----------------------------------------------------------------------
_EMD_HEAD = '''def emd_lp(a, b, cost):
    \'\'\'Earth mover's distance between piles a (n,) and b (m,) with cost (n, m): returns (W, gamma (n, m)).\'\'\'
    a, b, cost = np.asarray(a, float), np.asarray(b, float), np.asarray(cost, float)
    n, m = len(a), len(b)
'''
_CHECKS = '''    if cost.shape != (n, m):
        raise ValueError(f"cost must have shape ({n}, {m}), got {cost.shape}")
    if not np.isclose(a.sum(), b.sum()):
        raise ValueError("a and b must have the same total mass")
'''
_CONSTRAINTS = '''    leave = np.kron(np.eye(n), np.ones((1, m)))
    arrive = np.kron(np.ones((1, n)), np.eye(m))
'''

_LINES = '''def parallel_lines_closed_form(theta):
    \'\'\'{"KL": KL(pi || p_theta), "JSD": JSD(pi || p_theta), "W": W(pi, p_theta)} for the parallel lines.\'\'\'
    if theta == 0:
        return {"KL": 0.0, "JSD": 0.0, "W": 0.0}
    return {"KL": KL_VALUE, "JSD": JSD_VALUE, "W": W_VALUE}


def wasserstein_equal_samples(x, y):
    \'\'\'Exact W_1 between two samples x (n, d) and y (n, d) with masses 1/n, by optimal assignment.\'\'\'
    x, y = np.asarray(x, float), np.asarray(y, float)
'''
_W_GOOD = '''    if x.shape != y.shape:
        raise ValueError("x and y must have the same shape")
    distances = cdist(x, y)
    rows, cols = linear_sum_assignment(distances)
    return float(distances[rows, cols].mean())
'''


def _lines(kl="math.inf", jsd="math.log(2)", w="abs(theta)", body=_W_GOOD):
    return (_LINES.replace("KL_VALUE", kl).replace("JSD_VALUE", jsd).replace("W_VALUE", w) + body)


_GP = '''def my_gradient_penalty(critic, real, fake, eps):
    \'\'\'WGAN-GP penalty E[(||grad f(x_hat)||_2 - 1)^2] for real, fake (B, d) and eps (B, 1).\'\'\'
'''

_P2_LL = '''def p2_log_likelihood(log_p, weight=0.01):
    \'\'\'log(weight * p(x) + (1 - weight) * 1) for log_p (B,) in nats; uniform noise on [0, 1]^D.\'\'\'
    return torch.logaddexp(log_p + math.log(weight), torch.full_like(log_p, math.log1p(-weight)))
'''
_P2_SAMPLE = '''def sample_p2(model_samples, weight=0.01, generator=None):
    \'\'\'n samples of p2 from n samples of p (n, 1, 8, 8): keep each with probability weight, else uniform noise.\'\'\'
    n = len(model_samples)
    keep = (torch.rand(n, generator=generator) < weight).view(n, *([1] * (model_samples.dim() - 1)))
    return torch.where(keep, model_samples, torch.rand(model_samples.shape, generator=generator))
'''

MISTAKES = [
    Mistake("emd_cost_column_major", test="test_emd_lp",
            replaces={"emd_lp": _EMD_HEAD + _CHECKS + _CONSTRAINTS + '''\
    res = linprog(cost.ravel(order="F"), A_eq=np.vstack([leave, arrive]), b_eq=np.concatenate([a, b]),
                  bounds=(0, None), method="highs")
    return res.fun, res.x.reshape(n, m)
'''}, description="cost flattened column-major while the constraints index the plan row-major"),
    Mistake("emd_only_row_constraints", test="test_emd_lp",
            replaces={"emd_lp": _EMD_HEAD + _CHECKS + _CONSTRAINTS + '''\
    res = linprog(cost.ravel(), A_eq=leave, b_eq=a, bounds=(0, None), method="highs")
    gamma = res.x.reshape(n, m)
    return float((gamma * cost).sum()), gamma
'''}, description="only the 'mass leaving each pile' constraints: the arrivals b are never imposed"),
    Mistake("emd_no_total_check", test="test_emd_lp", replaces={"emd_lp": _EMD_HEAD + '''    if cost.shape != (n, m):
        raise ValueError(f"cost must have shape ({n}, {m}), got {cost.shape}")
''' + _CONSTRAINTS + '''    res = linprog(cost.ravel(), A_eq=np.vstack([leave, arrive]), b_eq=np.concatenate([a, b]),
                  bounds=(0, None), method="highs")
    gamma = res.x.reshape(n, m)
    return float((gamma * cost).sum()), gamma
'''}, description="no ValueError when the totals of a and b differ"),
    Mistake("jsd_in_bits", test="test_closed_form", replaces={"parallel_lines": _lines(jsd="1.0")},
            description="JSD = log2(2) = 1 bit instead of log 2 nats"),
    Mistake("kl_finite", test="test_closed_form", replaces={"parallel_lines": _lines(kl="theta ** 2 / 2")},
            description="KL of the disjoint lines taken finite (a Gaussian-like theta^2 / 2)"),
    Mistake("w_without_abs", test="test_closed_form", replaces={"parallel_lines": _lines(w="theta")},
            description="W = theta without the absolute value"),
    Mistake("w_identity_matching", test="test_w_samples",
            replaces={"parallel_lines": _lines(body='''    if x.shape != y.shape:
        raise ValueError("x and y must have the same shape")
    return float(np.linalg.norm(x - y, axis=1).mean())
''')}, description="points matched in the order given (x_i with y_i) instead of by optimal assignment"),
    Mistake("w_sizes_unchecked", test="test_w_samples",
            replaces={"parallel_lines": _lines(body='''    distances = cdist(x, y)
    rows, cols = linear_sum_assignment(distances)
    return float(distances[rows, cols].mean())
''')}, description="no ValueError for samples of different sizes (linear_sum_assignment accepts rectangles)"),
    Mistake("w_squared_cost_plan", test="test_w_samples",
            replaces={"parallel_lines": _lines(body='''    if x.shape != y.shape:
        raise ValueError("x and y must have the same shape")
    rows, cols = linear_sum_assignment(cdist(x, y, "sqeuclidean"))
    return float(np.linalg.norm(x[rows] - y[cols], axis=1).mean())
''')}, description="assignment on squared distances (the W_2 plan), then its Euclidean cost"),
    Mistake("gp_no_create_graph", test="test_gradient_penalty",
            replaces={"gradient_penalty": _GP + '''\
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
'''}, description="torch.autograd.grad without create_graph: the penalty does not train the critic"),
    Mistake("gp_squared_norm", test="test_gradient_penalty",
            replaces={"gradient_penalty": _GP + '''\
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1) ** 2).sum(1).mean()
'''}, description="||grad||^2 instead of (||grad|| - 1)^2"),
    Mistake("gp_into_fake", test="test_gradient_penalty",
            replaces={"gradient_penalty": _GP + '''    x_hat = eps * real + (1 - eps) * fake
    x_hat.requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
'''}, description="fake not detached: the penalty back-propagates into the generator's samples"),
    Mistake("gp_batch_norm", test="test_gradient_penalty",
            replaces={"gradient_penalty": _GP + '''\
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.norm() - 1) ** 2
'''}, description="one norm of the whole batch's gradient instead of one norm per sample"),
    Mistake("gp_mean_scores", test="test_gradient_penalty",
            replaces={"gradient_penalty": _GP + '''\
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).mean(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
'''}, description="gradient of the mean score: every per-sample gradient is divided by the batch size"),
    Mistake("p2_ignores_noise", test="test_p2", replaces={"p2": '''def p2_log_likelihood(log_p, weight=0.01):
    \'\'\'log(weight * p(x) + (1 - weight) * 1) for log_p (B,) in nats; uniform noise on [0, 1]^D.\'\'\'
    return log_p + math.log(weight)
''' + "\n\n" + _P2_SAMPLE}, description="log p2 = log w + log p, the noise component's density dropped"),
    Mistake("p2_unstable_exp", test="test_p2", replaces={"p2": '''def p2_log_likelihood(log_p, weight=0.01):
    \'\'\'log(weight * p(x) + (1 - weight) * 1) for log_p (B,) in nats; uniform noise on [0, 1]^D.\'\'\'
    return torch.log(weight * torch.exp(log_p) + (1 - weight))
''' + "\n\n" + _P2_SAMPLE}, description="exponentiates log p: overflows to inf for large log p"),
    Mistake("p2_weight_on_noise", test="test_p2",
            replaces={"p2": _P2_LL + "\n\n" + '''def sample_p2(model_samples, weight=0.01, generator=None):
    \'\'\'n samples of p2 from n samples of p (n, 1, 8, 8): keep each with probability weight, else uniform noise.\'\'\'
    n = len(model_samples)
    noise = (torch.rand(n, generator=generator) < weight).view(n, *([1] * (model_samples.dim() - 1)))
    return torch.where(noise, torch.rand(model_samples.shape, generator=generator), model_samples)
'''}, description="the weight w applied to the noise: 99% of the samples kept instead of 1%"),
]

# The course library's implementation is not an answer (the test cells' "# Not an answer:" lines).
MISTAKES += [
    Mistake("emd_calls_library", test="test_emd_lp",
            replaces={"emd_lp": _EMD_HEAD + _CHECKS + '''    from dgmcourse import divergences
    return divergences.earth_movers_distance(a, b, cost)
'''}, description="emd_lp hands the problem to dgmcourse.divergences.earth_movers_distance "
                  "(not an answer: the grader gives no points)"),
    Mistake("p2_calls_library", test="test_p2", replaces={"p2": '''def p2_log_likelihood(log_p, weight=0.01):
    \'\'\'log(weight * p(x) + (1 - weight) * 1) for log_p (B,) in nats; uniform noise on [0, 1]^D.\'\'\'
    from dgmcourse.divergences import noise_mixture_log_likelihood
    return noise_mixture_log_likelihood(log_p, torch.zeros_like(log_p), weight)
''' + "\n\n" + _P2_SAMPLE}, description="p2_log_likelihood calls dgmcourse.divergences.noise_mixture_log_likelihood "
                                                 "(not an answer: the grader gives no points)"),
    Mistake("library_answer", test="test_closed_form",
            replaces={"parallel_lines": '''\
from dgmcourse.divergences import parallel_lines_divergences, point_cloud_wasserstein


def parallel_lines_closed_form(theta):
    \'\'\'{"KL": KL(pi || p_theta), "JSD": JSD(pi || p_theta), "W": W(pi, p_theta)} for the parallel lines.\'\'\'
    return parallel_lines_divergences(theta)


def wasserstein_equal_samples(x, y):
    \'\'\'Exact W_1 between two samples x (n, d) and y (n, d) with masses 1/n, by optimal assignment.\'\'\'
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    return float(point_cloud_wasserstein(x, y)[0])
'''},
            description="calls the course library's own implementation of the task "
                        "(not an answer: the grader gives no points)"),
]
