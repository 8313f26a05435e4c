"""Alternatives and mistakes for a4_disentanglement (see dgmcourse.assessment)."""
from dgmcourse.assessment import Mistake

# --- correct answers written independently of the reference ------------------------------------
ENTANGLE_ORTHO_GROUP = '''import scipy.special as sp


def random_rotation(d, rng):
    \'\'\'Random orthogonal (d, d) matrix with all |entries| >= 0.01.\'\'\'
    A = st.ortho_group.rvs(d, random_state=rng)          # Haar measure on O(d)
    while np.min(np.abs(A)) < 0.01:
        A = st.ortho_group.rvs(d, random_state=rng)
    return A


def entangle_np(z, A, marginals):
    \'\'\'f(z) = g^-1(h^-1(A h(g(z)))) for z of shape (N, d); returns (N, d).\'\'\'
    gauss = np.column_stack([sp.ndtri(m.cdf(z[:, i])) for i, m in enumerate(marginals)])
    rotated = np.einsum("ij,nj->ni", A, gauss)
    return np.column_stack([m.ppf(sp.ndtr(rotated[:, i])) for i, m in enumerate(marginals)])
'''

ENTANGLE_GRAM_SCHMIDT = '''def random_rotation(d, rng):
    \'\'\'Random orthogonal (d, d) matrix with all |entries| >= 0.01.\'\'\'
    while True:
        g = rng.normal(size=(d, d))
        q = np.zeros((d, d))
        for j in range(d):
            v = g[:, j].copy()
            for _ in range(2):                      # modified Gram-Schmidt, twice for orthogonality
                for i in range(j):
                    v = v - (q[:, i] @ v) * q[:, i]
            q[:, j] = v / np.linalg.norm(v)
        if (np.abs(q) >= 0.01).all():
            return q


def entangle_np(z, A, marginals):
    \'\'\'f(z) = g^-1(h^-1(A h(g(z)))) for z of shape (N, d); returns (N, d).\'\'\'
    z = np.asarray(z, dtype=float)
    gauss = np.empty_like(z)
    for i, m in enumerate(marginals):
        gauss[:, i] = st.norm.ppf(m.cdf(z[:, i]))
    rotated = (A @ gauss.T).T
    out = np.empty_like(z)
    for i, m in enumerate(marginals):
        out[:, i] = m.ppf(st.norm.cdf(rotated[:, i]))
    return out
'''

PROPERTIES_GIVEN = '''
A = random_rotation(3, rng)
report = properties(z, A, MARGINALS)
report
'''

PROPERTIES_VECTORISED = '''def jacobian_fd(z0, A, marginals, eps=1e-6):
    \'\'\'Central finite-difference Jacobian (d, d) of f at z0 (d,).\'\'\'
    z0 = np.asarray(z0, dtype=float)
    d = z0.shape[0]
    steps = eps * np.eye(d)
    values = entangle_np(np.concatenate([z0 + steps, z0 - steps]), A, marginals)   # (2d, d): row j moves z_j
    return (values[:d] - values[d:]).T / (2 * eps)


def properties(z, A, marginals):
    \'\'\'{"round_trip": float, "ks_pvalues": [d floats], "min_abs_jacobian": float}.\'\'\'
    forward = entangle_np(z, A, marginals)
    back = entangle_np(forward, A.T, marginals)
    pvalues = [st.kstest(forward[:, i], m.dist.name, args=m.args).pvalue for i, m in enumerate(marginals)]
    jacobians = np.stack([jacobian_fd(point, A, marginals) for point in z[:50]])
    return {"round_trip": float(np.max(np.abs(back - z))),
            "ks_pvalues": [float(p) for p in pvalues],
            "min_abs_jacobian": float(np.abs(jacobians).min())}
''' + PROPERTIES_GIVEN

PROPERTIES_LOOPS = '''def jacobian_fd(z0, A, marginals, eps=1e-6):
    \'\'\'Central finite-difference Jacobian (d, d) of f at z0 (d,).\'\'\'
    d = len(z0)
    J = np.zeros((d, d))
    for j in range(d):
        plus, minus = np.array(z0, dtype=float), np.array(z0, dtype=float)
        plus[j] += eps
        minus[j] -= eps
        J[:, j] = (entangle_np(plus[None, :], A, marginals)[0]
                   - entangle_np(minus[None, :], A, marginals)[0]) / (2 * eps)
    return J


def properties(z, A, marginals):
    \'\'\'{"round_trip": float, "ks_pvalues": [d floats], "min_abs_jacobian": float}.\'\'\'
    x = entangle_np(z, A, marginals)
    z_back = entangle_np(x, np.transpose(A), marginals)        # f^-1 uses the inverse rotation A^T
    ks = []
    for i, m in enumerate(marginals):
        ks.append(float(st.ks_1samp(x[:, i], lambda t, m=m: m.cdf(t)).pvalue))
    smallest = np.inf
    for row in range(min(50, len(z))):
        smallest = min(smallest, float(np.min(np.abs(jacobian_fd(z[row], A, marginals)))))
    return {"round_trip": float(abs(z_back - z).max()), "ks_pvalues": ks, "min_abs_jacobian": smallest}
''' + PROPERTIES_GIVEN

MIG_COUNTS = '''def _entropy(labels):
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def _mutual_information(a, b):
    \'\'\'Plug-in I(a; b) in nats from the contingency table of two label arrays.\'\'\'
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(table, (ia, ib), 1.0)
    p = table / table.sum()
    outer = p.sum(axis=1, keepdims=True) * p.sum(axis=0, keepdims=True)
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / outer[nz])))


def mig_score(codes, factors, num_bins=20):
    \'\'\'Mutual Information Gap of codes (num_codes, N) for integer factors (num_factors, N).\'\'\'
    binned = []
    for c in np.asarray(codes, dtype=float):
        lo, hi = c.min(), c.max()
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, num_bins + 1)               # equal-width bins over the range
        binned.append(np.searchsorted(edges[:-1], c, side="right"))
    gaps = []
    for v in np.asarray(factors):
        info = sorted(_mutual_information(c, v) for c in binned)
        gaps.append((info[-1] - info[-2]) / _entropy(v))
    return float(np.mean(gaps))
'''

MIG_ENTROPIES = '''def _H(labels):
    counts = np.bincount(labels)
    p = counts[counts > 0] / len(labels)
    return -np.sum(p * np.log(p))


def mig_score(codes, factors, num_bins=20):
    \'\'\'Mutual Information Gap of codes (num_codes, N) for integer factors (num_factors, N).\'\'\'
    binned = np.array([np.digitize(c, np.histogram_bin_edges(c, bins=num_bins)[:-1])
                       for c in np.asarray(codes, dtype=float)])
    scores = []
    for v in np.asarray(factors):
        hv = _H(v)
        info = np.array([_H(c) + hv - _H(c * (v.max() + 1) + v) for c in binned])   # I = H(c) + H(v) - H(c, v)
        second, first = np.partition(info, -2)[-2:]
        scores.append((first - second) / hv)
    return float(np.mean(scores))
'''

FACTOR_VAE_VECTORISED = '''def factor_vae(sample_factors, represent, rng, batch_size=64, num_train=1000, num_eval=500,
               num_variance_estimate=5000):
    \'\'\'FactorVAE score (evaluation accuracy) in [0, 1].\'\'\'
    codes = np.asarray(represent(sample_factors(num_variance_estimate, rng), rng), dtype=float)
    scale = np.std(codes, axis=0, ddof=1)
    keep = scale >= 0.05
    num_factors = np.asarray(sample_factors(1, rng)).shape[1]
    num_codes = codes.shape[1]

    def vote_matrix(n):
        chosen = rng.choice(num_factors, size=n)
        batches = np.asarray(sample_factors(n * batch_size, rng)).reshape(n, batch_size, num_factors)
        rows = np.arange(n)
        batches[rows, :, chosen] = batches[rows, 0, chosen][:, None]
        z = np.asarray(represent(batches.reshape(n * batch_size, num_factors), rng), dtype=float)
        z = z.reshape(n, batch_size, num_codes)[:, :, keep] / scale[keep]
        winners = np.flatnonzero(keep)[np.argmin(np.var(z, axis=1, ddof=1), axis=1)]
        return np.bincount(chosen * num_codes + winners,
                           minlength=num_factors * num_codes).reshape(num_factors, num_codes)

    majority = np.argmax(vote_matrix(num_train), axis=0)        # code j -> its most voted factor
    test = vote_matrix(num_eval)
    return float(test[majority, np.arange(num_codes)].sum() / test.sum())
'''

FACTOR_VAE_COUNTER = '''from collections import Counter


def factor_vae(sample_factors, represent, rng, batch_size=64, num_train=1000, num_eval=500,
               num_variance_estimate=5000):
    \'\'\'FactorVAE score (evaluation accuracy) in [0, 1].\'\'\'
    sample = np.asarray(represent(sample_factors(num_variance_estimate, rng), rng), dtype=float)
    centred = sample - sample.mean(axis=0)
    sd = np.sqrt((centred ** 2).sum(axis=0) / (len(sample) - 1))
    active = [j for j in range(sample.shape[1]) if sd[j] >= 0.05]
    K = sample_factors(1, rng).shape[1]

    def one_vote():
        k = int(rng.choice(K))
        f = sample_factors(batch_size, rng)
        f[:, k] = f[0, k]
        z = np.asarray(represent(f, rng), dtype=float)
        return k, min(active, key=lambda j: np.var(z[:, j] / sd[j], ddof=1))

    train = Counter(one_vote() for _ in range(num_train))
    label = {j: max(range(K), key=lambda k: train[(k, j)]) for j in range(sample.shape[1])}
    correct = 0
    for _ in range(num_eval):
        k, j = one_vote()
        correct += int(label[j] == k)
    return correct / num_eval
'''

COLLAPSE_GIVEN = '''FACTOR_SIZES = (3, 6, 10, 8, 8)
N_CODES = 2000 if SMOKE else 10000
factors5 = np.stack([rng.integers(0, s, N_CODES) for s in FACTOR_SIZES])      # (5, N_CODES)
A5 = st.ortho_group.rvs(5, random_state=SEED + 1)                             # a random rotation
'''
COLLAPSE_PRINT = ('print(f"MIG perfect {mig_perfect:.3f}   MIG entangled {mig_entangled:.3f}   '
                  'KS p-values {np.round(ks_entangled, 3)}")')

COLLAPSE_SPECIAL = COLLAPSE_GIVEN + '''import scipy.special as sp
jitter = rng.random((N_CODES, len(FACTOR_SIZES))).T                        # U_k ~ Uniform(0, 1)
perfect = sp.ndtri((factors5 + jitter) / np.asarray(FACTOR_SIZES).reshape(-1, 1))
entangled = (perfect.T @ A5.T).T                                           # f(z) = A z for each sample
mig_perfect = mig_score(perfect, factors5)
mig_entangled = mig_score(entangled, factors5)
ks_entangled = [float(st.ks_1samp(c, sp.ndtr).pvalue) for c in entangled]
''' + COLLAPSE_PRINT

COLLAPSE_LOOP = COLLAPSE_GIVEN + '''perfect = np.empty(factors5.shape)
for k, size in enumerate(FACTOR_SIZES):
    u = st.uniform.rvs(size=N_CODES, random_state=rng)
    perfect[k] = st.norm.ppf((factors5[k] + u) / size)
entangled = np.einsum("ij,jn->in", A5, perfect)
mig_perfect = mig_score(perfect, factors5)
mig_entangled = mig_score(entangled, factors5)
ks_entangled = []
for code in entangled:
    ks_entangled.append(float(st.kstest(code, st.norm().cdf).pvalue))
''' + COLLAPSE_PRINT

ALTERNATIVES = {
    "ortho_group_ndtri": {"entangle": ENTANGLE_ORTHO_GROUP, "properties": PROPERTIES_VECTORISED,
                          "mig": MIG_COUNTS, "factor_vae": FACTOR_VAE_VECTORISED, "collapse": COLLAPSE_SPECIAL},
    "gram_schmidt_loops": {"entangle": ENTANGLE_GRAM_SCHMIDT, "properties": PROPERTIES_LOOPS,
                           "mig": MIG_ENTROPIES, "factor_vae": FACTOR_VAE_COUNTER, "collapse": COLLAPSE_LOOP},
}


# --- mistakes: the reference cell with one realistic error ---------------------------------------
ENTANGLE_REF = '''def random_rotation(d, rng):
    \'\'\'Random orthogonal (d, d) matrix with all |entries| >= 0.01.\'\'\'
    while True:
        q, r = np.linalg.qr(rng.standard_normal((d, d)))
        q = q * np.sign(np.diag(r))
        if np.abs(q).min() >= 0.01:
            return q


def entangle_np(z, A, marginals):
    \'\'\'f(z) = g^-1(h^-1(A h(g(z)))) for z of shape (N, d); returns (N, d).\'\'\'
    y = np.stack([st.norm.ppf(m.cdf(z[:, i])) for i, m in enumerate(marginals)], axis=1)
    w = y @ A.T
    return np.stack([m.ppf(st.norm.cdf(w[:, i])) for i, m in enumerate(marginals)], axis=1)
'''

PROPERTIES_REF = '''def jacobian_fd(z0, A, marginals, eps=1e-6):
    \'\'\'Central finite-difference Jacobian (d, d) of f at z0 (d,).\'\'\'
    d = len(z0)
    columns = [(entangle_np((z0 + eps * e)[None], A, marginals)[0] - entangle_np((z0 - eps * e)[None], A, marginals)[0])
               / (2 * eps) for e in np.eye(d)]
    return np.stack(columns, axis=1)


def properties(z, A, marginals):
    \'\'\'{"round_trip": float, "ks_pvalues": [d floats], "min_abs_jacobian": float}.\'\'\'
    fz = entangle_np(z, A, marginals)
    return {"round_trip": float(np.abs(entangle_np(fz, A.T, marginals) - z).max()),
            "ks_pvalues": [float(st.kstest(fz[:, i], m.cdf).pvalue) for i, m in enumerate(marginals)],
            "min_abs_jacobian": float(min(np.abs(jacobian_fd(p, A, marginals)).min() for p in z[:50]))}
''' + PROPERTIES_GIVEN

MIG_REF = '''def mig_score(codes, factors, num_bins=20):
    \'\'\'Mutual Information Gap of codes (num_codes, N) for integer factors (num_factors, N).\'\'\'
    discrete = [np.digitize(c, np.histogram(c, num_bins)[1][:-1]) for c in codes]
    gaps = []
    for v in factors:
        info = np.sort([mutual_info_score(v, c) for c in discrete])
        gaps.append((info[-1] - info[-2]) / mutual_info_score(v, v))
    return float(np.mean(gaps))
'''

FACTOR_VAE_REF = '''def factor_vae(sample_factors, represent, rng, batch_size=64, num_train=1000, num_eval=500,
               num_variance_estimate=5000):
    \'\'\'FactorVAE score (evaluation accuracy) in [0, 1].\'\'\'
    scale = represent(sample_factors(num_variance_estimate, rng), rng).std(axis=0, ddof=1)
    active = np.flatnonzero(scale >= 0.05)
    num_factors = sample_factors(1, rng).shape[1]

    def votes(num_points):
        counts = np.zeros((num_factors, len(scale)), dtype=int)
        for _ in range(num_points):
            k = rng.integers(num_factors)
            f = sample_factors(batch_size, rng)
            f[:, k] = f[0, k]
            codes = represent(f, rng)[:, active] / scale[active]
            counts[k, active[np.argmin(codes.var(axis=0, ddof=1))]] += 1
        return counts

    classifier = votes(num_train).argmax(axis=0)
    evaluation = votes(num_eval)
    return float(evaluation[classifier, np.arange(len(scale))].sum() / evaluation.sum())
'''

COLLAPSE_REF = COLLAPSE_GIVEN + '''\
perfect = st.norm.ppf((factors5 + rng.uniform(size=factors5.shape)) / np.array(FACTOR_SIZES)[:, None])
entangled = A5 @ perfect
mig_perfect, mig_entangled = mig_score(perfect, factors5), mig_score(entangled, factors5)
ks_entangled = [float(st.kstest(c, "norm").pvalue) for c in entangled]
''' + COLLAPSE_PRINT


def _swap(text, old, new):
    assert text.count(old) == 1, (old, text.count(old))
    return text.replace(old, new)


MISTAKES = [
    Mistake("rotation_no_redraw", test="test_entangle",
            replaces={"entangle": _swap(ENTANGLE_REF, """    while True:
        q, r = np.linalg.qr(rng.standard_normal((d, d)))
        q = q * np.sign(np.diag(r))
        if np.abs(q).min() >= 0.01:
            return q""", """    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))""")},
            description="the QR rotation is returned without redrawing when an entry is below 0.01"),
    Mistake("rotate_with_A", test="test_entangle",
            replaces={"entangle": _swap(ENTANGLE_REF, "w = y @ A.T", "w = y @ A")},
            description="rows multiplied by A instead of A^T, i.e. the rotation A^T is applied"),
    Mistake("h_is_cdf", test="test_entangle",
            replaces={"entangle": _swap(_swap(ENTANGLE_REF, "st.norm.ppf(m.cdf(", "st.norm.cdf(m.cdf("),
                                        "m.ppf(st.norm.cdf(", "m.ppf(st.norm.ppf(")},
            description="h taken as the standard-normal CDF instead of its inverse (and h^-1 as the ppf)"),
    Mistake("jacobian_transposed", test="test_jacobian",
            replaces={"properties": _swap(PROPERTIES_REF, "np.stack(columns, axis=1)", "np.stack(columns, axis=0)")},
            description="the Jacobian with rows and columns swapped (J[j, i] = df_i/dz_j)"),
    Mistake("jacobian_sign", test="test_jacobian",
            replaces={"properties": _swap(PROPERTIES_REF,
                                          "entangle_np((z0 + eps * e)[None], A, marginals)[0] "
                                          "- entangle_np((z0 - eps * e)[None], A, marginals)[0]",
                                          "entangle_np((z0 - eps * e)[None], A, marginals)[0] "
                                          "- entangle_np((z0 + eps * e)[None], A, marginals)[0]")},
            description="central differences f(z - eps) - f(z + eps): the Jacobian's sign flipped"),
    Mistake("jacobian_one_eps", test="test_jacobian",
            replaces={"properties": _swap(PROPERTIES_REF, "/ (2 * eps) for e", "/ eps for e")},
            description="central difference divided by eps instead of 2 eps"),
    Mistake("inverse_with_A", test="test_properties",
            replaces={"properties": _swap(PROPERTIES_REF, "entangle_np(fz, A.T, marginals)",
                                          "entangle_np(fz, A, marginals)")},
            description="f^-1 built with A instead of A^T: the round trip does not return z"),
    Mistake("ks_against_normal", test="test_properties",
            replaces={"properties": _swap(PROPERTIES_REF, "st.kstest(fz[:, i], m.cdf)", 'st.kstest(fz[:, i], "norm")')},
            description="KS p-values of f(z)_i against N(0, 1) instead of the marginal p(z_i)"),
    Mistake("jacobian_whole_sample", test="test_properties",
            replaces={"properties": _swap(PROPERTIES_REF, "for p in z[:50]", "for p in z")},
            description="the smallest Jacobian entry over the whole sample instead of the first 50 rows"),
    Mistake("mig_quantile_bins", test="test_mig",
            replaces={"mig": _swap(MIG_REF, "np.histogram(c, num_bins)[1][:-1]",
                                   "np.quantile(c, np.linspace(0, 1, num_bins + 1))[:-1]")},
            description="equal-frequency (quantile) bins instead of equal-width histogram bins"),
    Mistake("mig_sum_top_two", test="test_mig",
            replaces={"mig": _swap(MIG_REF, "info[-1] - info[-2]", "info[-1] + info[-2]")},
            description="the top two mutual informations added instead of subtracted"),
    Mistake("mig_not_normalised", test="test_mig",
            replaces={"mig": _swap(MIG_REF, "(info[-1] - info[-2]) / mutual_info_score(v, v)", "info[-1] - info[-2]")},
            description="the gap not divided by the factor's entropy H(v_k)"),
    Mistake("mig_raw_codes", test="test_mig",
            replaces={"mig": _swap(MIG_REF,
                                   "discrete = [np.digitize(c, np.histogram(c, num_bins)[1][:-1]) for c in codes]",
                                   "discrete = list(codes)")},
            description="mutual_info_score on the raw continuous codes, without discretisation"),
    Mistake("fvae_no_scale", test="test_factor_vae",
            replaces={"factor_vae": _swap(FACTOR_VAE_REF, "represent(f, rng)[:, active] / scale[active]",
                                          "represent(f, rng)[:, active]")},
            description="code variances compared without dividing by the global standard deviation"),
    Mistake("fvae_no_pruning", test="test_factor_vae",
            replaces={"factor_vae": _swap(FACTOR_VAE_REF, "active = np.flatnonzero(scale >= 0.05)",
                                          "active = np.arange(len(scale))")},
            description="inactive (collapsed, s_j < 0.05) codes not pruned"),
    Mistake("fvae_argmax_axis", test="test_factor_vae",
            replaces={"factor_vae": _swap(FACTOR_VAE_REF, "votes(num_train).argmax(axis=0)",
                                          "votes(num_train).argmax(axis=1)")},
            description="the majority vote taken over codes for each factor (argmax over the wrong axis)"),
    Mistake("fvae_argmax_variance", test="test_factor_vae",
            replaces={"factor_vae": _swap(FACTOR_VAE_REF, "active[np.argmin(codes.var(axis=0, ddof=1))]",
                                          "active[np.argmax(codes.var(axis=0, ddof=1))]")},
            description="votes for the most varying code instead of the least varying one"),
    Mistake("collapse_no_jitter", test="test_collapse",
            replaces={"collapse": _swap(COLLAPSE_REF, "(factors5 + rng.uniform(size=factors5.shape))",
                                        "(factors5 + 0.5)")},
            description="perfect codes at the bin midpoints (no uniform jitter): not N(0, 1), MIG near 1"),
    Mistake("collapse_rotate_factors", test="test_collapse",
            replaces={"collapse": _swap(COLLAPSE_REF, "entangled = A5 @ perfect", "entangled = A5 @ factors5")},
            description="the raw integer factors rotated instead of the Gaussian codes"),
    Mistake("library_answer", test="test_mig",
            replaces={"mig": '''import importlib


def mig_score(codes, factors, num_bins=20):
    \'\'\'Mutual Information Gap of codes (num_codes, N) for integer factors (num_factors, N).\'\'\'
    return float(importlib.import_module("dgmcourse.disentanglement").mig(codes, factors))
'''},
            description="calls the course library's own implementation of the task "
                        "(not an answer: the grader gives no points)"),
]
