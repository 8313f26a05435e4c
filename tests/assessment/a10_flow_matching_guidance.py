"""Alternatives and mistakes for a10_flow_matching_guidance (see dgmcourse.assessment)."""
from dgmcourse.assessment import Mistake

# --- correct alternatives -------------------------------------------------------------------
FLOW_LERP = '''def conditional_flow(x0, x1, t, sigma_min=0.0):
    """x_t = (1 - (1 - sigma_min) t) x0 + t x1: x0, x1 (B, *shape), t a float or (B,) -> (B, *shape)."""
    if not torch.is_tensor(t):
        t = torch.tensor(float(t))
    t = t.to(x0).view(-1, *([1] * (x0.ndim - 1)))
    return torch.lerp(x0, x1, t) + sigma_min * t * x0          # (1 - t) x0 + t x1, plus sigma_min t x0
'''

FLOW_LOOP = '''def conditional_flow(x0, x1, t, sigma_min=0.0):
    """x_t = (1 - (1 - sigma_min) t) x0 + t x1: x0, x1 (B, *shape), t a float or (B,) -> (B, *shape)."""
    if isinstance(t, (int, float)):
        times = [float(t)] * len(x0)
    else:
        times = [float(s) for s in t.reshape(-1)]
        if len(times) == 1:
            times = times * len(x0)
    rows = [(1 - (1 - sigma_min) * s) * a + s * b for s, a, b in zip(times, x0, x1)]
    return torch.stack(rows)
'''

FLOW_MU_SIGMA = '''def conditional_flow(x0, x1, t, sigma_min=0.0):
    """x_t = (1 - (1 - sigma_min) t) x0 + t x1: x0, x1 (B, *shape), t a float or (B,) -> (B, *shape)."""
    t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
    if t.dim() == 1:
        t = t.view(t.shape[0], *((1,) * (x0.dim() - 1)))
    sigma_t = 1.0 - (1.0 - sigma_min) * t
    mu_t = t * x1
    return mu_t + sigma_t * x0                  # Lipman et al., eq. 22: psi_t(x0) = sigma_t x0 + mu_t
'''

CFM_FIELD = '''def cfm_loss(v_model, x1, t=None, x0=None, sigma_min=0.0, generator=None):
    """The CFM loss: the batch mean of ||v(x_t, t) - (x1 - (1 - sigma_min) x0)||^2 summed over the data dimensions."""
    n = x1.shape[0]
    if t is None:
        t = torch.rand(n, generator=generator, dtype=x1.dtype, device=x1.device)
    if x0 is None:
        x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device)
    col = t.reshape(n, *([1] * (x1.dim() - 1)))
    sigma_t = 1 - (1 - sigma_min) * col
    xt = sigma_t * x0 + col * x1
    target = (x1 - (1 - sigma_min) * xt) / sigma_t          # Lipman et al., eq. 21: u_t(x_t | x1)
    return F.mse_loss(v_model(xt, t), target, reduction="sum") / n
'''

CFM_EINSUM = '''def cfm_loss(v_model, x1, t=None, x0=None, sigma_min=0.0, generator=None):
    """The CFM loss: the batch mean of ||v(x_t, t) - (x1 - (1 - sigma_min) x0)||^2 summed over the data dimensions."""
    B = len(x1)
    if t is None:
        t = torch.empty(B, dtype=x1.dtype, device=x1.device).uniform_(0.0, 1.0, generator=generator)
    if x0 is None:
        x0 = torch.empty_like(x1).normal_(generator=generator)
    xt = conditional_flow(x0, x1, t, sigma_min)
    residual = (v_model(xt, t) - x1 + (1 - sigma_min) * x0).reshape(B, -1)
    return torch.einsum("bi,bi->", residual, residual) / B
'''

CFM_NOISE_FIRST = '''def cfm_loss(v_model, x1, t=None, x0=None, sigma_min=0.0, generator=None):
    """The CFM loss: the batch mean of ||v(x_t, t) - (x1 - (1 - sigma_min) x0)||^2 summed over the data dimensions."""
    if x0 is None:             # the noise first, then the times: the tests do not depend on the order
        x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device)
    if t is None:
        t = torch.rand(x1.shape[:1], generator=generator, dtype=x1.dtype, device=x1.device)
    xt = conditional_flow(x0, x1, t, sigma_min)
    speed = x1 - (1 - sigma_min) * x0
    per_example = torch.stack([torch.sum((v - u) ** 2) for v, u in zip(v_model(xt, t), speed)])
    return per_example.mean()
'''

EULER_ADD = '''def euler_step(v_model, x, t, h):
    """One Euler step of dx/dt = v(x, t) from time t to t + h: x (B, *shape) -> (B, *shape)."""
    return x.add(v_model(x, x.new_full((x.shape[0],), t)), alpha=h)
'''

EULER_ONES = '''def euler_step(v_model, x, t, h):
    """One Euler step of dx/dt = v(x, t) from time t to t + h: x (B, *shape) -> (B, *shape)."""
    times = torch.ones(len(x), dtype=x.dtype, device=x.device) * t
    velocity = v_model(x, times)
    return x + velocity * h
'''

EULER_LIST = '''def euler_step(v_model, x, t, h):
    """One Euler step of dx/dt = v(x, t) from time t to t + h: x (B, *shape) -> (B, *shape)."""
    return x + h * v_model(x, torch.tensor([t] * len(x), dtype=x.dtype, device=x.device))
'''

HEUN_TABLEAU = '''def heun_step(v_model, x, t, h):
    """One Heun step (explicit trapezoidal rule) of dx/dt = v(x, t) from t to t + h: x (B, *shape) -> (B, *shape)."""
    # an explicit Runge-Kutta method with the Butcher tableau c = (0, 1), a21 = 1, b = (1/2, 1/2)
    c, a, b = (0.0, 1.0), ((), (1.0,)), (0.5, 0.5)
    slopes = []
    for i in range(2):
        y = x + h * sum(a_ij * k for a_ij, k in zip(a[i], slopes)) if slopes else x
        slopes.append(v_model(y, x.new_full((len(x),), t + c[i] * h)))
    return x + h * sum(b_i * k for b_i, k in zip(b, slopes))
'''

HEUN_AVERAGE = '''def heun_step(v_model, x, t, h):
    """One Heun step (explicit trapezoidal rule) of dx/dt = v(x, t) from t to t + h: x (B, *shape) -> (B, *shape)."""
    def times(s):
        return torch.full((x.shape[0],), s, dtype=x.dtype, device=x.device)

    predictor = x + h * v_model(x, times(t))
    corrector = predictor + h * v_model(predictor, times(t + h))
    return 0.5 * (x + corrector)           # = x + h/2 (v(x, t) + v(predictor, t + h))
'''

HEUN_STACK = '''def heun_step(v_model, x, t, h):
    """One Heun step (explicit trapezoidal rule) of dx/dt = v(x, t) from t to t + h: x (B, *shape) -> (B, *shape)."""
    full = lambda s: torch.full((x.shape[0],), float(s), dtype=x.dtype, device=x.device)
    slopes = [v_model(x, full(t))]
    slopes.append(v_model(x + h * slopes[0], full(t + h)))
    return x + h * torch.stack(slopes).mean(0)
'''

DIV_JACOBIAN = '''from torch.autograd.functional import jacobian


def divergence_2d(fn, x):
    """The exact divergence d f_1 / d x_1 + d f_2 / d x_2 of fn: (B, 2) -> (B, 2) at each row of x (B, 2): (B,)."""
    with torch.enable_grad():
        # rows are independent, so the Jacobian of the summed outputs holds every row's own Jacobian: (2, B, 2)
        jac = jacobian(lambda y: fn(y).sum(0), x.detach())
    return (jac[0, :, 0] + jac[1, :, 1]).detach()
'''

DIV_FUNC = '''from torch.func import jacrev, vmap


def divergence_2d(fn, x):
    """The exact divergence d f_1 / d x_1 + d f_2 / d x_2 of fn: (B, 2) -> (B, 2) at each row of x (B, 2): (B,)."""
    jac = vmap(jacrev(lambda p: fn(p.unsqueeze(0)).squeeze(0)))(x.detach())      # (B, 2, 2), one per row
    return torch.diagonal(jac, dim1=-2, dim2=-1).sum(-1)
'''

DIV_VJP = '''def divergence_2d(fn, x):
    """The exact divergence d f_1 / d x_1 + d f_2 / d x_2 of fn: (B, 2) -> (B, 2) at each row of x (B, 2): (B,)."""
    with torch.enable_grad():
        y = x.detach().clone().requires_grad_()
        f = fn(y)
        total = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
        for i in range(2):
            e = torch.zeros_like(f)
            e[:, i] = 1.0
            (row,) = torch.autograd.grad(f, y, grad_outputs=e, retain_graph=True)
            total = total + row[:, i]
    return total.detach()
'''

LL_LINSPACE = '''def ode_log_likelihood(v_model, x, n_steps):
    """log p_1(x) of the flow of v_model from N(0, I) at t = 0 (instantaneous change of variables): x (B, 2) -> (B,)."""
    times = torch.linspace(1.0, 0.0, n_steps + 1, dtype=torch.float64).tolist()
    y = x.detach().clone()
    delta = torch.zeros(len(x), dtype=x.dtype, device=x.device)

    def velocity_and_divergence(z, s):
        s = torch.full((len(z),), s, dtype=z.dtype, device=z.device)
        with torch.no_grad():
            v = v_model(z, s)
        return v, divergence_2d(lambda w: v_model(w, s), z)

    for t_now, t_next in zip(times[:-1], times[1:]):
        h = t_next - t_now
        v, div = velocity_and_divergence(y, t_now)
        v_next, div_next = velocity_and_divergence(y + h * v, t_next)
        y = y + h / 2 * (v + v_next)
        delta = delta + h / 2 * (div + div_next)
    base = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=x.dtype), torch.eye(2, dtype=x.dtype))
    return (base.log_prob(y) + delta).detach()
'''

LL_AUGMENTED = '''def ode_log_likelihood(v_model, x, n_steps):
    """log p_1(x) of the flow of v_model from N(0, I) at t = 0 (instantaneous change of variables): x (B, 2) -> (B,)."""
    def flow(state, times):
        with torch.enable_grad():
            y = state[:, :2].detach().requires_grad_(True)
            v = v_model(y, times)
            div = sum(torch.autograd.grad(v[:, i].sum(), y, retain_graph=True)[0][:, i] for i in range(2))
        return torch.cat([v.detach(), div.detach().unsqueeze(1)], dim=1)

    state = torch.cat([x.detach(), x.new_zeros(len(x), 1)], dim=1)
    for k in range(n_steps):
        state = heun_step(flow, state, 1.0 - k / n_steps, -1.0 / n_steps)
    return (torch.distributions.Normal(0.0, 1.0).log_prob(state[:, :2]).sum(1) + state[:, 2]).detach()
'''

LL_EXPLICIT = '''def ode_log_likelihood(v_model, x, n_steps):
    """log p_1(x) of the flow of v_model from N(0, I) at t = 0 (instantaneous change of variables): x (B, 2) -> (B,)."""
    h = -1.0 / n_steps
    y = x.detach()
    integral = 0.0
    for k in range(n_steps):
        s0 = torch.full((len(y),), 1.0 + k * h, dtype=y.dtype, device=y.device)
        s1 = torch.full((len(y),), max(1.0 + (k + 1) * h, 0.0), dtype=y.dtype, device=y.device)
        with torch.no_grad():
            v0 = v_model(y, s0)
            y_trial = y + h * v0
            v1 = v_model(y_trial, s1)
        d0 = divergence_2d(lambda z: v_model(z, s0), y)
        d1 = divergence_2d(lambda z: v_model(z, s1), y_trial)
        integral = integral + 0.5 * h * (d0 + d1)        # the trapezoidal rule, as for y
        y = y + 0.5 * h * (v0 + v1)
    log_base = -0.5 * (y ** 2).sum(dim=1) - math.log(2 * math.pi)
    return (log_base + integral).detach()
'''

CFG_LERP = '''def classifier_free_guidance(cond, uncond, scale):
    """The guided prediction uncond + scale (cond - uncond): cond, uncond (B, *shape), scale a float -> (B, *shape)."""
    return torch.lerp(uncond, cond, float(scale))       # lerp extrapolates for scales outside [0, 1]
'''

CFG_WEIGHTS = '''def classifier_free_guidance(cond, uncond, scale):
    """The guided prediction uncond + scale (cond - uncond): cond, uncond (B, *shape), scale a float -> (B, *shape)."""
    return (1 - scale) * uncond + scale * cond
'''

CFG_ADD = '''def classifier_free_guidance(cond, uncond, scale):
    """The guided prediction uncond + scale (cond - uncond): cond, uncond (B, *shape), scale a float -> (B, *shape)."""
    return torch.add(uncond, cond - uncond, alpha=scale)
'''

ALTERNATIVES = {
    "lerp_field_target_tableau_jacobian": {
        "conditional_flow": FLOW_LERP, "cfm_loss": CFM_FIELD, "euler_step": EULER_ADD, "heun_step": HEUN_TABLEAU,
        "divergence_2d": DIV_JACOBIAN, "ode_log_likelihood": LL_LINSPACE, "classifier_free_guidance": CFG_LERP},
    "loops_einsum_predictor_corrector_torch_func": {
        "conditional_flow": FLOW_LOOP, "cfm_loss": CFM_EINSUM, "euler_step": EULER_ONES, "heun_step": HEUN_AVERAGE,
        "divergence_2d": DIV_FUNC, "ode_log_likelihood": LL_AUGMENTED, "classifier_free_guidance": CFG_WEIGHTS},
    "mu_sigma_noise_first_vjp_explicit": {
        "conditional_flow": FLOW_MU_SIGMA, "cfm_loss": CFM_NOISE_FIRST, "euler_step": EULER_LIST,
        "heun_step": HEUN_STACK, "divergence_2d": DIV_VJP, "ode_log_likelihood": LL_EXPLICIT,
        "classifier_free_guidance": CFG_ADD},
}


# --- mistakes -------------------------------------------------------------------------------
def _flow(body):
    return '''def conditional_flow(x0, x1, t, sigma_min=0.0):
    """x_t = (1 - (1 - sigma_min) t) x0 + t x1: x0, x1 (B, *shape), t a float or (B,) -> (B, *shape)."""
    t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device).reshape(-1, *[1] * (x0.dim() - 1))
''' + body


def _cfm(body):
    return '''def cfm_loss(v_model, x1, t=None, x0=None, sigma_min=0.0, generator=None):
    """The CFM loss: the batch mean of ||v(x_t, t) - (x1 - (1 - sigma_min) x0)||^2 summed over the data dimensions."""
''' + body


_DRAWS = '''    if t is None:
        t = torch.rand(len(x1), generator=generator, dtype=x1.dtype, device=x1.device)
    if x0 is None:
        x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device)
    xt = conditional_flow(x0, x1, t, sigma_min)
'''


def _euler(body):
    return '''def euler_step(v_model, x, t, h):
    """One Euler step of dx/dt = v(x, t) from time t to t + h: x (B, *shape) -> (B, *shape)."""
''' + body


def _heun(body):
    return '''def heun_step(v_model, x, t, h):
    """One Heun step (explicit trapezoidal rule) of dx/dt = v(x, t) from t to t + h: x (B, *shape) -> (B, *shape)."""
    def times(s):
        return torch.full((len(x),), s, dtype=x.dtype, device=x.device)

    v = v_model(x, times(t))
''' + body


def _div(body):
    return '''def divergence_2d(fn, x):
    """The exact divergence d f_1 / d x_1 + d f_2 / d x_2 of fn: (B, 2) -> (B, 2) at each row of x (B, 2): (B,)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        f = fn(x)
''' + body


_END = "    return (-0.5 * y.pow(2).sum(1) - math.log(2 * math.pi) + delta).detach()\n"


def _ll(loop, end=_END):
    """A stand-alone ode_log_likelihood (no heun_step) whose loop over the steps is ``loop``."""
    return '''def ode_log_likelihood(v_model, x, n_steps):
    """log p_1(x) of the flow of v_model from N(0, I) at t = 0 (instantaneous change of variables): x (B, 2) -> (B,)."""
    def field(z, s):
        s = torch.full((len(z),), s, dtype=z.dtype, device=z.device)
        with torch.no_grad():
            v = v_model(z, s)
        return v, divergence_2d(lambda w: v_model(w, s), z)

    y, delta = x.detach(), torch.zeros(len(x), dtype=x.dtype, device=x.device)
''' + loop + end


_HEUN_BACKWARDS = '''    h = -1.0 / n_steps
    for k in range(n_steps):
        v, div = field(y, 1 - k / n_steps)
        v_next, div_next = field(y + h * v, 1 - (k + 1) / n_steps)
        y, delta = y + 0.5 * h * (v + v_next), delta + 0.5 * h * (div + div_next)
'''


def _cfg(body):
    return '''def classifier_free_guidance(cond, uncond, scale):
    """The guided prediction uncond + scale (cond - uncond): cond, uncond (B, *shape), scale a float -> (B, *shape)."""
''' + body


MISTAKES = [
    # conditional_flow
    Mistake("flow_sigma_min_ignored", test="test_conditional_flow",
            replaces={"conditional_flow": _flow("    return (1 - t) * x0 + t * x1\n")},
            description="(1 - t) x0 + t x1 whatever sigma_min: the path ends on the data point, not around it"),
    Mistake("flow_sigma_min_misplaced", test="test_conditional_flow",
            replaces={"conditional_flow": _flow("    return (1 - sigma_min * t) * x0 + t * x1\n")},
            description="sigma_t = 1 - sigma_min t instead of 1 - (1 - sigma_min) t"),
    Mistake("flow_time_reversed", test="test_conditional_flow",
            replaces={"conditional_flow": _flow("    return t * x0 + (1 - (1 - sigma_min) * t) * x1\n")},
            description="the diffusion direction of lecture 11: noise at t = 1 and data at t = 0"),
    Mistake("flow_broadcast_last_axis", test="test_conditional_flow",
            replaces={"conditional_flow": '''def conditional_flow(x0, x1, t, sigma_min=0.0):
    """x_t = (1 - (1 - sigma_min) t) x0 + t x1: x0, x1 (B, *shape), t a float or (B,) -> (B, *shape)."""
    t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
    return (1 - (1 - sigma_min) * t) * x0 + t * x1
'''}, description="one time per example broadcast along the last axis instead of the batch axis"),
    # cfm_loss
    Mistake("cfm_target_reversed", test="test_cfm_loss",
            replaces={"cfm_loss": _cfm(_DRAWS + '''    target = (1 - sigma_min) * x0 - x1
    return (v_model(xt, t) - target).pow(2).flatten(1).sum(1).mean()
''')}, description="the target x0 - x1: the velocity of the path from data to noise"),
    Mistake("cfm_target_without_sigma_min", test="test_cfm_loss",
            replaces={"cfm_loss": _cfm(_DRAWS + '''    target = x1 - x0
    return (v_model(xt, t) - target).pow(2).flatten(1).sum(1).mean()
''')}, description="the target x1 - x0 even when sigma_min > 0: not the speed of the path x_t is drawn from"),
    Mistake("cfm_mean_over_dimensions", test="test_cfm_loss",
            replaces={"cfm_loss": _cfm(_DRAWS + '''    return F.mse_loss(v_model(xt, t), x1 - (1 - sigma_min) * x0)
''')}, description="F.mse_loss: averaged over the data dimensions too (a factor D too small)"),
    Mistake("cfm_noise_redrawn", test="test_cfm_loss", replaces={"cfm_loss": _cfm('''    if t is None:
        t = torch.rand(len(x1), generator=generator, dtype=x1.dtype, device=x1.device)
    noise = x0 if x0 is not None else torch.randn(x1.shape, generator=generator, dtype=x1.dtype)
    xt = conditional_flow(noise, x1, t, sigma_min)
    if x0 is None:
        x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype)       # a second, different draw
    return (v_model(xt, t) - (x1 - (1 - sigma_min) * x0)).pow(2).flatten(1).sum(1).mean()
''')}, description="x_t built with one noise draw, the target with another"),
    Mistake("cfm_one_time_per_batch", test="test_cfm_loss", replaces={"cfm_loss": _cfm('''    if t is None:
        t = torch.rand(1, generator=generator, dtype=x1.dtype, device=x1.device).expand(len(x1))
    if x0 is None:
        x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device)
    xt = conditional_flow(x0, x1, t, sigma_min)
    return (v_model(xt, t) - (x1 - (1 - sigma_min) * x0)).pow(2).flatten(1).sum(1).mean()
''')}, description="one time drawn for the whole batch instead of one per example"),
    Mistake("cfm_ignores_generator", test="test_cfm_loss", replaces={"cfm_loss": _cfm('''    if t is None:
        t = torch.rand(len(x1), dtype=x1.dtype, device=x1.device)
    if x0 is None:
        x0 = torch.randn_like(x1)
    xt = conditional_flow(x0, x1, t, sigma_min)
    return (v_model(xt, t) - (x1 - (1 - sigma_min) * x0)).pow(2).flatten(1).sum(1).mean()
''')}, description="draws from the global random stream: the generator is ignored"),
    # euler_step
    Mistake("euler_time_at_end", test="test_euler_step",
            replaces={"euler_step": _euler('''    end = torch.full((len(x),), t + h, dtype=x.dtype, device=x.device)
    return x + h * v_model(x, end)
''')}, description="the field evaluated at the end time t + h instead of t"),
    Mistake("euler_float_time", test="test_euler_step",
            replaces={"euler_step": _euler("    return x + h * v_model(x, t)\n")},
            description="the time passed to v_model as the float t, not as a (B,) tensor"),
    Mistake("euler_time_shape_one", test="test_euler_step",
            replaces={"euler_step": _euler("    return x + h * v_model(x, torch.tensor([t]))\n")},
            description="the time passed as a tensor (1,) in float32, not (B,) in x's dtype (models that check "
                        "the shape, like VelocityMLP, fail)"),
    # heun_step
    Mistake("heun_second_call_at_t", test="test_heun_step",
            replaces={"heun_step": _heun('''    v_next = v_model(x + h * v, times(t))
    return x + 0.5 * h * (v + v_next)
''')}, description="the second evaluation at time t instead of t + h (order 1 on time-dependent fields)"),
    Mistake("heun_midpoint", test="test_heun_step",
            replaces={"heun_step": _heun('''    return x + h * v_model(x + 0.5 * h * v, times(t + 0.5 * h))
''')}, description="the explicit midpoint rule (another order-2 method), not Heun's trapezoidal rule"),
    Mistake("heun_no_half", test="test_heun_step",
            replaces={"heun_step": _heun('''    v_next = v_model(x + h * v, times(t + h))
    return x + h * (v + v_next)
''')}, description="the sum of the two velocities instead of their average: a step twice too long"),
    Mistake("heun_corrector_at_start", test="test_heun_step",
            replaces={"heun_step": _heun('''    v_next = v_model(x, times(t + h))
    return x + 0.5 * h * (v + v_next)
''')}, description="the second velocity taken at the start point x, not at the trial point x + h v"),
    # divergence_2d
    Mistake("div_all_jacobian_entries", test="test_divergence_2d",
            replaces={"divergence_2d": _div('''        grad = torch.autograd.grad(f.sum(), x)[0]
    return grad.sum(1).detach()
''')}, description="the gradient of the summed outputs: the sum of every Jacobian entry, not the trace"),
    Mistake("div_anti_diagonal", test="test_divergence_2d",
            replaces={"divergence_2d": _div('''        d1 = torch.autograd.grad(f[:, 0].sum(), x, retain_graph=True)[0]
        d2 = torch.autograd.grad(f[:, 1].sum(), x)[0]
        d1, d2 = d1[:, 1], d2[:, 0]
    return (d1 + d2).detach()
''')}, description="d f_1 / d x_2 + d f_2 / d x_1: the off-diagonal entries"),
    Mistake("div_hutchinson_probe", test="test_divergence_2d",
            replaces={"divergence_2d": _div('''        probe = torch.randint(0, 2, x.shape, dtype=x.dtype) * 2 - 1
        vjp = torch.autograd.grad(f, x, probe)[0]
    return (vjp * probe).sum(1).detach()
''')}, description="Hutchinson's estimate with one Rademacher probe: unbiased, but not the exact divergence"),
    Mistake("div_fails_under_no_grad", test="test_divergence_2d",
            replaces={"divergence_2d": '''def divergence_2d(fn, x):
    """The exact divergence d f_1 / d x_1 + d f_2 / d x_2 of fn: (B, 2) -> (B, 2) at each row of x (B, 2): (B,)."""
    x = x.detach().requires_grad_(True)
    f = fn(x)
    d1 = torch.autograd.grad(f[:, 0].sum(), x, retain_graph=True)[0][:, 0]
    d2 = torch.autograd.grad(f[:, 1].sum(), x)[0][:, 1]
    return (d1 + d2).detach()
'''}, description="no torch.enable_grad(): inside torch.no_grad() the field has no graph and autograd fails"),
    # ode_log_likelihood
    Mistake("ll_divergence_sign", test="test_ode_log_likelihood",
            replaces={"ode_log_likelihood": _ll(_HEUN_BACKWARDS, end=_END.replace("+ delta", "- delta"))},
            description="the divergence's integral with the wrong sign (the volume change counted the other way)"),
    Mistake("ll_forward_in_time", test="test_ode_log_likelihood",
            replaces={"ode_log_likelihood": _ll('''    h = 1.0 / n_steps
    for k in range(n_steps):
        v, div = field(y, k / n_steps)
        v_next, div_next = field(y + h * v, (k + 1) / n_steps)
        y, delta = y + 0.5 * h * (v + v_next), delta + 0.5 * h * (div + div_next)
''')}, description="integrated from t = 0 to t = 1, as if the data point were noise"),
    Mistake("ll_base_without_normaliser", test="test_ode_log_likelihood",
            replaces={"ode_log_likelihood": _ll(_HEUN_BACKWARDS, end=_END.replace(" - math.log(2 * math.pi)", ""))},
            description="log N(x0; 0, I) without its normalising constant -log(2 pi)"),
    Mistake("ll_euler", test="test_ode_log_likelihood",
            replaces={"ode_log_likelihood": _ll('''    h = -1.0 / n_steps
    for k in range(n_steps):
        v, div = field(y, 1 - k / n_steps)
        y, delta = y + h * v, delta + h * div
''')}, description="Euler's method instead of Heun's: an error of order h, far above the tolerance with 50 steps"),
    Mistake("ll_diffusion_time", test="test_ode_log_likelihood",
            replaces={"ode_log_likelihood": _ll('''    h = -1.0 / n_steps
    for k in range(n_steps):
        v, div = field(y, k / n_steps)                  # lecture 11's time: 0 at the data
        v_next, div_next = field(y + h * v, (k + 1) / n_steps)
        y, delta = y + 0.5 * h * (v + v_next), delta + 0.5 * h * (div + div_next)
''')}, description="the field evaluated at the diffusion time 1 - t while integrating from the data to the noise"),
    Mistake("ll_divergence_euler", test="test_ode_log_likelihood",
            replaces={"ode_log_likelihood": _ll('''    h = -1.0 / n_steps
    for k in range(n_steps):
        v, div = field(y, 1 - k / n_steps)
        v_next, _ = field(y + h * v, 1 - (k + 1) / n_steps)
        y, delta = y + 0.5 * h * (v + v_next), delta + h * div
''')}, description="Heun's rule for x but the divergence only at the start of each step (Euler for its integral)"),
    Mistake("library_answer", test="test_ode_log_likelihood",
            replaces={"ode_log_likelihood": '''from dgmcourse.sde import ode_log_likelihood as _library_answer


def ode_log_likelihood(v_model, x, n_steps):
    """log p_1(x) of the flow of v_model from N(0, I) at t = 0 (instantaneous change of variables): x (B, 2) -> (B,)."""
    prior = lambda z: -0.5 * z.pow(2).sum(1) - math.log(2 * math.pi)
    return _library_answer(v_model, x, prior, 1.0, 0.0, n_steps=n_steps, method="heun", progress=False)
'''}, description="calls the course library's own implementation of the task "
                  "(not an answer: the grader gives no points)"),
    # classifier_free_guidance
    Mistake("cfg_ho_salimans_convention", test="test_classifier_free_guidance",
            replaces={"classifier_free_guidance": _cfg("    return cond + scale * (cond - uncond)\n")},
            description="Ho & Salimans' (1 + w) cond - w uncond with w = scale: scale 0 is then conditional"),
    Mistake("cfg_roles_swapped", test="test_classifier_free_guidance",
            replaces={"classifier_free_guidance": _cfg("    return cond + scale * (uncond - cond)\n")},
            description="the roles of the two predictions swapped: guides away from the class"),
    Mistake("cfg_adds_conditional", test="test_classifier_free_guidance",
            replaces={"classifier_free_guidance": _cfg("    return uncond + scale * cond\n")},
            description="uncond + scale cond: the conditional prediction added instead of the difference"),
    Mistake("cfg_normalised_mixture", test="test_classifier_free_guidance",
            replaces={"classifier_free_guidance": _cfg("    return (uncond + scale * cond) / (1 + scale)\n")},
            description="a weighted average (uncond + scale cond) / (1 + scale): never leaves the segment, "
                        "scale 1 gives the mean of the two"),
]
