"""Alternatives and mistakes for a5_geometry (see dgmcourse.assessment)."""
from dgmcourse.assessment import Mistake


def _edit(source: str, old: str, new: str) -> str:
    """``source`` with the one occurrence of ``old`` replaced by ``new`` (a mistake's edit)."""
    assert source.count(old) == 1, f"{old!r} occurs {source.count(old)} times"
    return source.replace(old, new)


# --- correct alternatives -------------------------------------------------------------------------
# Part 1: torch.autograd.functional.jacobian (vectorised) on the whole batch, its block diagonal;
# magnification as the product of the singular values of J.
JACOBIAN_AUTOGRAD = '''def jacobian(decoder, z):
    B = z.shape[0]
    full = torch.autograd.functional.jacobian(lambda zz: decoder(zz).reshape(B, -1), z,
                                              vectorize=True)          # (B, D, B, d)
    idx = torch.arange(B)
    return full[idx, :, idx]                                          # (B, D, d): sample b w.r.t. z[b]


def metric_and_magnification(decoder, z):
    J = jacobian(decoder, z)
    G = torch.einsum("bki,bkj->bij", J, J)
    m = torch.linalg.svdvals(J).prod(dim=-1)
    return G, m
'''

# One backward pass per output coordinate; magnification from log det G.
JACOBIAN_BACKWARD = '''def jacobian(decoder, z):
    z = z.detach().clone().requires_grad_(True)
    out = decoder(z).reshape(z.shape[0], -1)
    rows = []
    for k in range(out.shape[1]):
        (g,) = torch.autograd.grad(out[:, k].sum(), z, retain_graph=True, allow_unused=True)
        rows.append(torch.zeros_like(z) if g is None else g)
    return torch.stack(rows, dim=1)


def metric_and_magnification(decoder, z):
    J = jacobian(decoder, z)
    G = torch.matmul(J.mT, J)
    sign, logdet = torch.linalg.slogdet(G)
    m = torch.where(sign > 0, torch.exp(0.5 * logdet), torch.zeros_like(logdet))
    return G, m
'''

# Forward-mode torch.func.jacfwd under vmap; magnification from the Cholesky factor of G.
JACOBIAN_JACFWD = '''def jacobian(decoder, z):
    f = lambda zi: decoder(zi[None]).flatten()
    return torch.func.vmap(torch.func.jacfwd(f))(z)


def metric_and_magnification(decoder, z):
    J = jacobian(decoder, z)
    G = J.transpose(-1, -2) @ J
    L = torch.linalg.cholesky(G)
    return G, torch.diagonal(L, dim1=-2, dim2=-1).prod(-1)
'''

# Part 2: torch.diff energy, Adam on the interior points (lr 1e-2, `steps` iterations).
GEODESIC_ADAM = '''def curve_energy(decoder, curve):
    x = decoder(curve).flatten(1)
    d = torch.diff(x, dim=0)
    return (len(curve) - 1) * (d * d).sum()


def geodesic(decoder, z0, z1, n_points=20, steps=200):
    t = torch.linspace(0.0, 1.0, n_points, dtype=z0.dtype).unsqueeze(1)
    line = (1 - t) * z0 + t * z1
    interior = torch.nn.Parameter(line[1:-1].clone())
    opt = torch.optim.Adam([interior], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        energy = curve_energy(decoder, torch.cat([z0.unsqueeze(0), interior, z1.unsqueeze(0)]))
        energy.backward()
        opt.step()
    return torch.cat([z0.unsqueeze(0), interior.detach(), z1.unsqueeze(0)])
'''

# A loop energy; L-BFGS on the whole curve with the endpoints' gradient masked, `steps // 20`
# calls of 20 iterations each (torch's defaults otherwise).
GEODESIC_LBFGS_MASKED = '''def curve_energy(decoder, curve):
    x = decoder(curve).reshape(curve.shape[0], -1)
    T = curve.shape[0] - 1
    total = x.new_zeros(())
    for k in range(T):
        total = total + torch.sum((x[k + 1] - x[k]) ** 2)
    return T * total


def geodesic(decoder, z0, z1, n_points=20, steps=200):
    alphas = torch.linspace(0, 1, n_points, dtype=z0.dtype)
    curve = torch.stack([z0 + a * (z1 - z0) for a in alphas]).requires_grad_(True)
    mask = torch.ones_like(curve)
    mask[0] = 0
    mask[-1] = 0
    opt = torch.optim.LBFGS([curve], max_iter=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        e = curve_energy(decoder, curve)
        e.backward()
        curve.grad.mul_(mask)
        return e

    for _ in range(max(1, steps // 20)):
        opt.step(closure)
    return curve.detach()
'''

# Norm-based energy; Adam on the whole curve (endpoint gradients zeroed), lr 5e-2.
GEODESIC_ADAM_MASKED = '''def curve_energy(decoder, curve):
    x = decoder(curve).reshape(len(curve), -1)
    seg = torch.linalg.vector_norm(x[1:] - x[:-1], dim=1)
    return seg.numel() * seg.pow(2).sum()


def geodesic(decoder, z0, z1, n_points=20, steps=200):
    t = torch.linspace(0, 1, n_points, dtype=z0.dtype)[:, None]
    curve = (z0 + t * (z1 - z0)).requires_grad_(True)
    opt = torch.optim.Adam([curve], lr=5e-2)
    for _ in range(steps):
        opt.zero_grad()
        curve_energy(decoder, curve).backward()
        curve.grad[0] = 0
        curve.grad[-1] = 0
        opt.step()
    return curve.detach().clone()
'''

_PRINT = ('print(f"estimate {estimate:.4f} +- {1.96 * std_error:.4f}; closed form '
          '{halfspace_expected_radius(A_OFFSET):.4f}")\n')

# Part 3: a sequential scan that stops as soon as every ray has crossed, math.erf closed form,
# statistics in numpy.
RADIUS_SEQUENTIAL = '''def ray_radius(label_fn, z, u, max_radius=8.0, n_steps=16, n_bisect=20):
    own = label_fn(z)
    B = z.shape[0]
    dt = max_radius / n_steps
    hi = torch.full((B,), math.inf, dtype=z.dtype)
    lo = torch.zeros(B, dtype=z.dtype)
    for k in range(1, n_steps + 1):
        pending = torch.isinf(hi)
        if not pending.any():
            break
        t = k * dt
        changed = pending & (label_fn(z + t * u) != own)
        hi[changed] = t
        lo[changed] = t - dt
    found = torch.isfinite(hi)
    for _ in range(n_bisect):
        mid = 0.5 * (lo + hi)
        probe = torch.where(found, mid, torch.zeros_like(mid))
        other = found & (label_fn(z + probe[:, None] * u) != own)
        hi = torch.where(other, mid, hi)
        lo = torch.where(found & ~other, mid, lo)
    return hi


def halfspace_expected_radius(a):
    return a * math.erf(a / math.sqrt(2)) + 2 * math.exp(-a * a / 2) / math.sqrt(2 * math.pi)


towards = torch.where(z_samples[:, 0] >= A_OFFSET, -1.0, 1.0)
direction = torch.stack([towards, torch.zeros_like(towards)], dim=1)
radii = ray_radius(lambda z: halfspace_label(z, A_OFFSET), z_samples, direction).numpy()
estimate = float(radii.mean())
std_error = float(radii.std(ddof=1) / np.sqrt(radii.size))
''' + _PRINT

# All scan points labelled in one batch, bisection on the rays that crossed only,
# torch.distributions.Normal closed form, torch.std_mean.
RADIUS_BATCHED = '''def ray_radius(label_fn, z, u, max_radius=8.0, n_steps=16, n_bisect=20):
    B, d = z.shape
    own = label_fn(z)
    ts = max_radius * torch.arange(1, n_steps + 1, dtype=z.dtype) / n_steps
    points = (z[:, None, :] + ts[None, :, None] * u[:, None, :]).reshape(B * n_steps, d)
    differs = label_fn(points).reshape(B, n_steps) != own[:, None]
    out = torch.full((B,), float("inf"), dtype=z.dtype)
    rows = torch.nonzero(differs.any(dim=1)).squeeze(1)
    if len(rows) == 0:
        return out
    first = differs[rows].float().argmax(dim=1)
    hi = ts[first]
    lo = hi - max_radius / n_steps
    zr, ur, own_r = z[rows], u[rows], own[rows]
    for _ in range(n_bisect):
        mid = (lo + hi) / 2
        crossed = label_fn(zr + mid[:, None] * ur) != own_r
        hi = torch.where(crossed, mid, hi)
        lo = torch.where(crossed, lo, mid)
    out[rows] = hi
    return out


def halfspace_expected_radius(a):
    std = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64),
                                     torch.tensor(1.0, dtype=torch.float64))
    a = torch.as_tensor(a, dtype=torch.float64)
    return (a * (2 * std.cdf(a) - 1) + 2 * std.log_prob(a).exp()).item()


sign = 1.0 - 2.0 * halfspace_label(z_samples, A_OFFSET).to(z_samples.dtype)   # +1 below a, -1 above
direction = torch.zeros_like(z_samples)
direction[:, 0] = sign
radii = ray_radius(lambda z: halfspace_label(z, A_OFFSET), z_samples, direction)
sd, mean = torch.std_mean(radii)
estimate = mean.item()
std_error = sd.item() / len(radii) ** 0.5
''' + _PRINT

# Part 4: a loop over the pairs; chunk and vector_norm.
OMEGA_LOOP = '''def omega_sum(images, codes):
    b = images.shape[0]
    if b % 2 != 0:
        raise ValueError(f"omega_sum needs an even batch, got {b}")
    flat = images.flatten(start_dim=1)
    total = codes.new_zeros(())
    for i in range(b // 2):
        j = i + b // 2
        total = total + ((codes[i] - codes[j]) ** 2).sum() / ((flat[i] - flat[j]) ** 2).sum()
    return total
'''

OMEGA_CHUNK = '''def omega_sum(images, codes):
    if images.shape[0] % 2:
        raise ValueError("the batch size must be even")
    x1, x2 = images.flatten(1).chunk(2)
    c1, c2 = codes.chunk(2)
    num = torch.linalg.vector_norm(c1 - c2, dim=1) ** 2
    den = torch.linalg.vector_norm(x1 - x2, dim=1) ** 2
    return (num / den).sum()
'''

ALTERNATIVES = {
    "autograd_adam_sequential": {"jacobian": JACOBIAN_AUTOGRAD, "geodesic": GEODESIC_ADAM,
                                 "radius": RADIUS_SEQUENTIAL, "omega": OMEGA_LOOP},
    "backward_lbfgs_batched": {"jacobian": JACOBIAN_BACKWARD, "geodesic": GEODESIC_LBFGS_MASKED,
                               "radius": RADIUS_BATCHED, "omega": OMEGA_CHUNK},
    "jacfwd_adam_masked": {"jacobian": JACOBIAN_JACFWD, "geodesic": GEODESIC_ADAM_MASKED},
}

# --- mistakes ------------------------------------------------------------------------------------
# The reference's cells, as the mistakes' starting points.
_JACOBIAN = '''def jacobian(decoder, z):
    def single(zi):
        return decoder(zi.unsqueeze(0)).reshape(-1)
    return torch.func.vmap(torch.func.jacrev(single))(z)


def metric_and_magnification(decoder, z):
    J = jacobian(decoder, z)
    G = J.transpose(1, 2) @ J
    return G, torch.linalg.det(G).clamp_min(0).sqrt()
'''

_GEODESIC = '''def curve_energy(decoder, curve):
    x = decoder(curve).reshape(len(curve), -1)
    steps = (x[1:] - x[:-1]).pow(2).sum(1)
    return len(steps) * steps.sum()


def geodesic(decoder, z0, z1, n_points=20, steps=200):
    t = torch.linspace(0, 1, n_points, dtype=z0.dtype)[:, None]
    line = z0 * (1 - t) + z1 * t
    inner = line[1:-1].clone().requires_grad_(True)
    opt = torch.optim.LBFGS([inner], max_iter=steps, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        energy = curve_energy(decoder, torch.cat([z0[None], inner, z1[None]]))
        energy.backward()
        return energy

    opt.step(closure)
    return torch.cat([z0[None], inner.detach(), z1[None]])
'''

_RADIUS = '''def ray_radius(label_fn, z, u, max_radius=8.0, n_steps=16, n_bisect=20):
    own = label_fn(z)
    t = torch.arange(1, n_steps + 1, dtype=z.dtype) * (max_radius / n_steps)
    other = torch.stack([label_fn(z + tk * u) != own for tk in t], dim=1)  # (B, n_steps)
    found = other.any(1)
    first = other.int().argmax(1)
    hi = torch.where(found, t[first], torch.full_like(z[:, 0], math.inf))
    lo = torch.where(first > 0, t[(first - 1).clamp_min(0)], torch.zeros_like(hi))
    for _ in range(n_bisect):
        mid = (lo + hi) / 2
        crossed = label_fn(z + torch.where(found, mid, 0.0)[:, None] * u) != own
        hi, lo = torch.where(found & crossed, mid, hi), torch.where(found & ~crossed, mid, lo)
    return hi


def halfspace_expected_radius(a):
    return a * (2 * norm.cdf(a) - 1) + 2 * norm.pdf(a)


direction = torch.zeros_like(z_samples)
direction[:, 0] = torch.where(z_samples[:, 0] < A_OFFSET, 1.0, -1.0)
radii = ray_radius(lambda z: halfspace_label(z, A_OFFSET), z_samples, direction)
estimate = radii.mean().item()
std_error = (radii.std() / math.sqrt(len(radii))).item()
''' + _PRINT

_OMEGA = '''def omega_sum(images, codes):
    b = len(images)
    if b % 2:
        raise ValueError(f"images must hold an even batch, got {b}")
    x, h = images.reshape(b, -1), b // 2
    return ((codes[:h] - codes[h:]).pow(2).sum(1) / (x[:h] - x[h:]).pow(2).sum(1)).sum()
'''

MISTAKES = [
    # test_metric
    Mistake("metric_jjt", test="test_metric",
            replaces={"jacobian": _edit(_JACOBIAN, "G = J.transpose(1, 2) @ J", "G = J @ J.transpose(1, 2)")},
            description="pullback metric with the wrong Jacobian transpose: J J^T (D x D) instead of J^T J"),
    Mistake("magnification_det", test="test_metric",
            replaces={"jacobian": _edit(_JACOBIAN, "torch.linalg.det(G).clamp_min(0).sqrt()",
                                        "torch.linalg.det(G)")},
            description="magnification factor det(J^T J) without the square root"),
    Mistake("jacobian_unflattened", test="test_metric",
            replaces={"jacobian": _edit(_JACOBIAN, "return decoder(zi.unsqueeze(0)).reshape(-1)",
                                        "return decoder(zi.unsqueeze(0))[0]")},
            description="decoder output not flattened per sample: (B, C, H, d) Jacobian for image decoders"),
    # test_energy
    Mistake("energy_no_T", test="test_energy",
            replaces={"geodesic": _edit(_GEODESIC, "return len(steps) * steps.sum()", "return steps.sum()")},
            description="energy without the factor T"),
    Mistake("energy_is_length", test="test_energy",
            replaces={"geodesic": _edit(_GEODESIC, "return len(steps) * steps.sum()",
                                        "return steps.sqrt().sum()")},
            description="the length L returned instead of the energy E"),
    Mistake("energy_latent", test="test_energy",
            replaces={"geodesic": _edit(_GEODESIC, "x = decoder(curve).reshape(len(curve), -1)",
                                        "x = curve.reshape(len(curve), -1)")},
            description="differences measured in latent space instead of image space"),
    # test_geodesic
    Mistake("geodesic_endpoints_free", test="test_geodesic",
            replaces={"geodesic": _edit(_edit(_GEODESIC, "inner = line[1:-1].clone()", "inner = line.clone()"),
                                        "torch.cat([z0[None], inner, z1[None]])", "inner").replace(
                "return torch.cat([z0[None], inner.detach(), z1[None]])", "return inner.detach()")},
            description="all points optimised, endpoints included"),
    Mistake("geodesic_straight_line", test="test_geodesic",
            replaces={"geodesic": _edit(_GEODESIC, "    opt.step(closure)\n", "")},
            description="no optimisation step: the straight line in latent coordinates is returned"),
    Mistake("geodesic_adam_default_lr", test="test_geodesic",
            replaces={"geodesic": _edit(
                _edit(_GEODESIC,
                      '''opt = torch.optim.LBFGS([inner], max_iter=steps, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-12)''',
                      "opt = torch.optim.Adam([inner])"),
                "    opt.step(closure)\n",
                "    for _ in range(steps):\n        opt.step(closure)\n")},
            description="Adam with its default lr 1e-3: 300 steps move a point by 0.3 at most, short of the geodesic"),
    # test_radius
    Mistake("bisection_wrong_end", test="test_radius",
            replaces={"radius": _edit(_RADIUS, "hi, lo = torch.where(found & crossed, mid, hi), "
                                               "torch.where(found & ~crossed, mid, lo)",
                                      "hi, lo = torch.where(found & ~crossed, mid, hi), "
                                      "torch.where(found & crossed, mid, lo)")},
            description="bisection moves the wrong end of the bracket (keeps the end in the own class)"),
    Mistake("scan_from_zero", test="test_radius",
            replaces={"radius": _edit(_RADIUS, "torch.arange(1, n_steps + 1, dtype=z.dtype)",
                                      "torch.arange(0, n_steps, dtype=z.dtype)")},
            description="scan k = 0..n_steps-1: t = 0 wasted, t = max_radius never tried"),
    Mistake("no_bisection", test="test_radius",
            replaces={"radius": _edit(_RADIUS, """    for _ in range(n_bisect):
        mid = (lo + hi) / 2
        crossed = label_fn(z + torch.where(found, mid, 0.0)[:, None] * u) != own
        hi, lo = torch.where(found & crossed, mid, hi), torch.where(found & ~crossed, mid, lo)
""", "")},
            description="returns the first scan point past the boundary, without refining"),
    Mistake("closed_form_phi", test="test_radius",
            replaces={"radius": _edit(_RADIUS, "a * (2 * norm.cdf(a) - 1)", "a * norm.cdf(a)")},
            description="closed form with Phi(a) instead of 2 Phi(a) - 1"),
    # test_omega
    Mistake("omega_adjacent_pairs", test="test_omega",
            replaces={"omega": _edit(_OMEGA, "return ((codes[:h] - codes[h:]).pow(2).sum(1) / "
                                             "(x[:h] - x[h:]).pow(2).sum(1)).sum()",
                                     "return ((codes[0::2] - codes[1::2]).pow(2).sum(1) / "
                                     "(x[0::2] - x[1::2]).pow(2).sum(1)).sum()")},
            description="pairs (i, i+1) instead of (i, i+b/2)"),
    Mistake("omega_inverted", test="test_omega",
            replaces={"omega": _edit(_OMEGA, "return ((codes[:h] - codes[h:]).pow(2).sum(1) / "
                                             "(x[:h] - x[h:]).pow(2).sum(1)).sum()",
                                     "return ((x[:h] - x[h:]).pow(2).sum(1) / "
                                     "(codes[:h] - codes[h:]).pow(2).sum(1)).sum()")},
            description="ratio inverted: image distance over code distance"),
    Mistake("omega_no_value_error", test="test_omega",
            replaces={"omega": _edit(_OMEGA, '''    if b % 2:
        raise ValueError(f"images must hold an even batch, got {b}")
''', "")},
            description="no ValueError for an odd batch (the halves silently broadcast)"),
    Mistake("library_answer", test="test_omega",
            replaces={"omega": 'from dgmcourse.class_radius import omega_regulariser as omega_sum\n'},
            description="calls the course library's own implementation of the task "
                        "(not an answer: the grader gives no points)"),
]
