"""Alternatives and mistakes for a6_autoregressive (see dgmcourse.assessment)."""
from dgmcourse.assessment import Mistake

# --- correct alternatives -------------------------------------------------------------------
MASK_RASTER = '''def causal_mask(kernel_size, mask_type):
    """(k, k) float mask of zeros and ones for raster-order masked convolutions; type 'A' or 'B'."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size <= 0 or kernel_size % 2 != 1:
        raise ValueError("kernel_size must be odd and positive")
    if mask_type not in {"A", "B"}:
        raise ValueError("mask_type must be A or B")
    k = kernel_size
    index = torch.arange(k * k).view(k, k)
    centre = (k // 2) * k + k // 2
    keep = index < centre if mask_type == "A" else index <= centre
    return keep.float()
'''

MASK_LOOPS = '''def causal_mask(kernel_size, mask_type):
    """(k, k) float mask of zeros and ones for raster-order masked convolutions; type 'A' or 'B'."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"bad kernel size {kernel_size}")
    if mask_type != "A" and mask_type != "B":
        raise ValueError(f"bad mask type {mask_type}")
    c = kernel_size // 2
    rows = []
    for r in range(kernel_size):
        row = []
        for col in range(kernel_size):
            if r < c or (r == c and col < c) or (r == c and col == c and mask_type == "B"):
                row.append(1.0)
            else:
                row.append(0.0)
        rows.append(row)
    return torch.tensor(rows)
'''

MASK_NUMPY = '''import numpy as np


def causal_mask(kernel_size, mask_type):
    """(k, k) float mask of zeros and ones for raster-order masked convolutions; type 'A' or 'B'."""
    if int(kernel_size) != kernel_size or kernel_size <= 0 or kernel_size % 2 == 0 or mask_type not in ("A", "B"):
        raise ValueError((kernel_size, mask_type))
    k = int(kernel_size)
    flat = np.zeros(k * k, dtype=np.float32)
    flat[: k * k // 2 + (mask_type == "B")] = 1
    return torch.from_numpy(flat.reshape(k, k))
'''

DEPENDS_JACOBIAN = '''def depends_on(model, x, i):
    """Boolean (H*W,): entry j is True when the logit of pixel i has a non-zero gradient w.r.t. input pixel j."""
    row = torch.autograd.functional.jacobian(lambda v: model(v).reshape(-1)[i], x)
    return row.reshape(-1) != 0
'''

DEPENDS_BACKWARD = '''def depends_on(model, x, i):
    """Boolean (H*W,): entry j is True when the logit of pixel i has a non-zero gradient w.r.t. input pixel j."""
    inp = x.detach().clone()
    inp.requires_grad = True
    h, w = x.shape[-2:]
    row, col = divmod(i, w)
    model(inp)[0, 0, row, col].backward()
    return inp.grad[0, 0].reshape(h * w).ne(0)
'''

DEPENDS_FUNC = '''def depends_on(model, x, i):
    """Boolean (H*W,): entry j is True when the logit of pixel i has a non-zero gradient w.r.t. input pixel j."""
    from torch.func import grad
    g = grad(lambda v: model(v).flatten()[i])(x)
    return (g.abs() > 0).flatten()
'''

BPD_DISTRIBUTIONS = '''def bits_per_dim(x, logits):
    """Exact negative log-likelihood of binary images in bits per dimension; (B,1,H,W), (B,1,H,W) -> (B,)."""
    if torch.any((x != 0) & (x != 1)):
        raise ValueError("x must be binary")
    log_p = torch.distributions.Bernoulli(logits=logits).log_prob(x)
    d = x.shape[-1] * x.shape[-2] * x.shape[-3]
    return -log_p.sum(dim=(1, 2, 3)) / d / math.log(2)
'''

BPD_BCE = '''def bits_per_dim(x, logits):
    """Exact negative log-likelihood of binary images in bits per dimension; (B,1,H,W), (B,1,H,W) -> (B,)."""
    if not torch.all(x * (1 - x) == 0):
        raise ValueError("x must hold zeros and ones only")
    nats = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return nats.flatten(1).mean(1) / math.log(2)
'''

BPD_LOG2 = '''def bits_per_dim(x, logits):
    """Exact negative log-likelihood of binary images in bits per dimension; (B,1,H,W), (B,1,H,W) -> (B,)."""
    if not torch.isin(x, torch.tensor([0.0, 1.0])).all():
        raise ValueError("x must be binary")
    signed = torch.where(x == 1, logits, -logits)     # log sigma(f) if x = 1, log sigma(-f) if x = 0
    bits = -F.logsigmoid(signed) / math.log(2)
    return bits.reshape(len(x), -1).mean(-1)
'''

SAMPLE_RAND = '''def ancestral_sample(model, n, shape=(28, 28), generator=None):
    """n binary images (n, 1, H, W) drawn pixel by pixel from an auto-regressive Bernoulli model."""
    height, width = shape
    x = torch.zeros(n, 1, height, width)
    with torch.no_grad():
        for i in range(height * width):
            r, c = divmod(i, width)
            p = torch.sigmoid(model(x)[:, 0, r, c])
            x[:, 0, r, c] = (torch.rand(n, generator=generator) < p).float()
    return x
'''

SAMPLE_FLAT = '''@torch.no_grad()
def ancestral_sample(model, n, shape=(28, 28), generator=None):
    """n binary images (n, 1, H, W) drawn pixel by pixel from an auto-regressive Bernoulli model."""
    x = torch.zeros(n, 1, *shape)
    flat = x.view(n, -1)                      # a view: writing flat writes x
    for i in range(flat.shape[1]):
        logit = model(x).reshape(n, -1)[:, i]
        flat[:, i] = torch.bernoulli(torch.sigmoid(logit), generator=generator)
    return x
'''

SAMPLE_UNIFORM_LOGIT = '''def ancestral_sample(model, n, shape=(28, 28), generator=None):
    """n binary images (n, 1, H, W) drawn pixel by pixel from an auto-regressive Bernoulli model."""
    h, w = shape
    x = torch.zeros(n, 1, h, w)
    for r in range(h):
        for c in range(w):
            with torch.no_grad():
                logit = model(x)[:, 0, r, c]
            u = torch.rand(n, generator=generator).clamp_min(1e-12)
            # x = 1 iff logit > log(u / (1 - u)), i.e. u < sigmoid(logit)
            x[:, 0, r, c] = (torch.log(u) - torch.log1p(-u) < logit).to(x.dtype)
    return x
'''

PENALTY_JACOBIAN = '''def contractive_penalty(encoder, x):
    """Squared Frobenius norm of the encoder Jacobian per example; x: (B, ...) -> (B,)."""
    penalties = []
    for example in x:
        jac = torch.autograd.functional.jacobian(lambda v: encoder(v[None])[0], example, create_graph=True)
        penalties.append((jac ** 2).sum())
    return torch.stack(penalties)
'''

PENALTY_UNITS = '''def contractive_penalty(encoder, x):
    """Squared Frobenius norm of the encoder Jacobian per example; x: (B, ...) -> (B,)."""
    x = x.detach().requires_grad_(True)
    h = encoder(x)
    total = torch.zeros(len(x), dtype=h.dtype)
    for j in range(h.shape[1]):
        # examples are independent: the gradient of sum_b h[b, j] w.r.t. x[b] is row j of example b's Jacobian
        row, = torch.autograd.grad(h[:, j].sum(), x, create_graph=True)
        total = total + row.pow(2).flatten(1).sum(1)
    return total
'''

PENALTY_JACFWD = '''def contractive_penalty(encoder, x):
    """Squared Frobenius norm of the encoder Jacobian per example; x: (B, ...) -> (B,)."""
    from torch.func import jacfwd, vmap

    def single(v):
        return encoder(v.unsqueeze(0)).squeeze(0)

    jac = vmap(jacfwd(single))(x)
    return torch.linalg.matrix_norm(jac.reshape(len(x), jac.shape[1], -1)) ** 2
'''

ALTERNATIVES = {
    "raster_index_jacobian_distributions_rand": {
        "causal_mask": MASK_RASTER, "depends_on": DEPENDS_JACOBIAN, "bits_per_dim": BPD_DISTRIBUTIONS,
        "ancestral_sample": SAMPLE_RAND, "contractive_penalty": PENALTY_JACOBIAN},
    "loops_backward_bce_flat_view": {
        "causal_mask": MASK_LOOPS, "depends_on": DEPENDS_BACKWARD, "bits_per_dim": BPD_BCE,
        "ancestral_sample": SAMPLE_FLAT, "contractive_penalty": PENALTY_UNITS},
    "numpy_func_grad_logsigmoid_logistic_jacfwd": {
        "causal_mask": MASK_NUMPY, "depends_on": DEPENDS_FUNC, "bits_per_dim": BPD_LOG2,
        "ancestral_sample": SAMPLE_UNIFORM_LOGIT, "contractive_penalty": PENALTY_JACFWD},
}

# --- mistakes -------------------------------------------------------------------------------
_MASK_HEAD = '''def causal_mask(kernel_size, mask_type):
    """(k, k) float mask of zeros and ones for raster-order masked convolutions; type 'A' or 'B'."""
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size!r}")
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    c = kernel_size // 2
    mask = torch.zeros(kernel_size, kernel_size)
'''

MISTAKES = [
    Mistake("mask_off_by_one", test="test_causal_mask", replaces={"causal_mask": _MASK_HEAD + '''    mask[:c] = 1
    mask[c, :c + 1] = 1
    if mask_type == "B":
        mask[c, c + 1] = 1
    return mask
'''}, description="the centre row keeps one pixel too many: mask A shows the centre, mask B the pixel right of it"),
    Mistake("mask_rows_below", test="test_causal_mask", replaces={"causal_mask": _MASK_HEAD + '''    mask[c + 1:] = 1
    mask[c, :c] = 1
    if mask_type == "B":
        mask[c, c] = 1
    return mask
'''}, description="the rows below the centre are kept instead of the rows above"),
    Mistake("mask_no_valueerror_even_k", test="test_causal_mask",
            replaces={"causal_mask": '''def causal_mask(kernel_size, mask_type):
    """(k, k) float mask of zeros and ones for raster-order masked convolutions; type 'A' or 'B'."""
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    c = kernel_size // 2
    mask = torch.zeros(kernel_size, kernel_size)
    mask[:c] = 1
    mask[c, :c] = 1
    if mask_type == "B":
        mask[c, c] = 1
    return mask
'''}, description="no ValueError for an even or non-positive kernel size"),
    Mistake("mask_centre_row_only_left_half", test="test_causal_mask",
            replaces={"causal_mask": _MASK_HEAD + '''    mask[:c, :c + 1] = 1
    mask[c, :c] = 1
    if mask_type == "B":
        mask[c, c] = 1
    return mask
'''}, description="the rows above keep only the columns up to the centre (the 'blind spot' made worse)"),

    Mistake("depends_on_output_sum", test="test_depends_on", replaces={"depends_on": '''def depends_on(model, x, i):
    """Boolean (H*W,): entry j is True when the logit of pixel i has a non-zero gradient w.r.t. input pixel j."""
    x = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(model(x).sum(), x)
    return grad.flatten() != 0
'''}, description="the gradient of the sum of all logits instead of the logit of pixel i"),
    Mistake("depends_on_column_major", test="test_depends_on", replaces={"depends_on": '''def depends_on(model, x, i):
    """Boolean (H*W,): entry j is True when the logit of pixel i has a non-zero gradient w.r.t. input pixel j."""
    x = x.clone().requires_grad_(True)
    h, w = x.shape[-2:]
    grad, = torch.autograd.grad(model(x)[0, 0, i % h, i // h], x)
    return grad.flatten() != 0
'''}, description="pixel i located column by column (row = i % H) instead of in raster order"),
    Mistake("depends_on_positive_only", test="test_depends_on", replaces={"depends_on": '''def depends_on(model, x, i):
    """Boolean (H*W,): entry j is True when the logit of pixel i has a non-zero gradient w.r.t. input pixel j."""
    x = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(model(x)[0, 0].flatten()[i], x)
    return grad.flatten() > 0
'''}, description="only positive gradients count as a dependence"),

    Mistake("bpd_nats", test="test_bits_per_dim", replaces={"bits_per_dim": '''def bits_per_dim(x, logits):
    """Exact negative log-likelihood of binary images in bits per dimension; (B,1,H,W), (B,1,H,W) -> (B,)."""
    if not ((x == 0) | (x == 1)).all():
        raise ValueError("x must be binary")
    log_p = x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)
    return -log_p.flatten(1).sum(1) / x[0].numel()
'''}, description="nats per dimension: no division by log 2"),
    Mistake("bpd_mean_then_divide_by_d", test="test_bits_per_dim",
            replaces={"bits_per_dim": '''def bits_per_dim(x, logits):
    """Exact negative log-likelihood of binary images in bits per dimension; (B,1,H,W), (B,1,H,W) -> (B,)."""
    if not ((x == 0) | (x == 1)).all():
        raise ValueError("x must be binary")
    log_p = x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)
    return -log_p.flatten(1).mean(1) / (x[0].numel() * math.log(2))
'''}, description="the mean over pixels, then divided by D again"),
    Mistake("bpd_logits_as_probabilities", test="test_bits_per_dim",
            replaces={"bits_per_dim": '''def bits_per_dim(x, logits):
    """Exact negative log-likelihood of binary images in bits per dimension; (B,1,H,W), (B,1,H,W) -> (B,)."""
    if not ((x == 0) | (x == 1)).all():
        raise ValueError("x must be binary")
    p = logits.clamp(1e-6, 1 - 1e-6)
    log_p = x * torch.log(p) + (1 - x) * torch.log(1 - p)
    return -log_p.flatten(1).sum(1) / (x[0].numel() * math.log(2))
'''}, description="the logits used as probabilities (clamped into (0, 1))"),
    Mistake("bpd_unstable_log_sigmoid", test="test_bits_per_dim",
            replaces={"bits_per_dim": '''def bits_per_dim(x, logits):
    """Exact negative log-likelihood of binary images in bits per dimension; (B,1,H,W), (B,1,H,W) -> (B,)."""
    if not ((x == 0) | (x == 1)).all():
        raise ValueError("x must be binary")
    p = torch.sigmoid(logits)
    log_p = x * torch.log(p) + (1 - x) * torch.log(1 - p)
    return -log_p.flatten(1).sum(1) / (x[0].numel() * math.log(2))
'''}, description="log(sigmoid(f)) instead of logsigmoid: -inf for large logits"),
    Mistake("bpd_no_valueerror", test="test_bits_per_dim", replaces={"bits_per_dim": '''def bits_per_dim(x, logits):
    """Exact negative log-likelihood of binary images in bits per dimension; (B,1,H,W), (B,1,H,W) -> (B,)."""
    log_p = x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)
    return -log_p.flatten(1).sum(1) / (x[0].numel() * math.log(2))
'''}, description="no ValueError for non-binary images"),

    Mistake("sample_threshold", test="test_ancestral_sample",
            replaces={"ancestral_sample": '''def ancestral_sample(model, n, shape=(28, 28), generator=None):
    """n binary images (n, 1, H, W) drawn pixel by pixel from an auto-regressive Bernoulli model."""
    h, w = shape
    x = torch.zeros(n, 1, h, w)
    with torch.no_grad():
        for r in range(h):
            for c in range(w):
                p = torch.sigmoid(model(x)[:, 0, r, c])
                x[:, 0, r, c] = (p > 0.5).float()
    return x
'''}, description="thresholding p > 0.5 instead of sampling"),
    Mistake("sample_one_pass", test="test_ancestral_sample",
            replaces={"ancestral_sample": '''def ancestral_sample(model, n, shape=(28, 28), generator=None):
    """n binary images (n, 1, H, W) drawn pixel by pixel from an auto-regressive Bernoulli model."""
    h, w = shape
    x = torch.zeros(n, 1, h, w)
    with torch.no_grad():
        p = torch.sigmoid(model(x))
        x = torch.bernoulli(p, generator=generator)
    return x
'''}, description="every pixel drawn from one forward pass of the empty canvas"),
    Mistake("sample_column_major", test="test_ancestral_sample",
            replaces={"ancestral_sample": '''def ancestral_sample(model, n, shape=(28, 28), generator=None):
    """n binary images (n, 1, H, W) drawn pixel by pixel from an auto-regressive Bernoulli model."""
    h, w = shape
    x = torch.zeros(n, 1, h, w)
    with torch.no_grad():
        for c in range(w):
            for r in range(h):
                p = torch.sigmoid(model(x)[:, 0, r, c])
                x[:, 0, r, c] = torch.bernoulli(p, generator=generator)
    return x
'''}, description="pixels visited column by column instead of in raster order"),
    Mistake("sample_ignores_generator", test="test_ancestral_sample",
            replaces={"ancestral_sample": '''def ancestral_sample(model, n, shape=(28, 28), generator=None):
    """n binary images (n, 1, H, W) drawn pixel by pixel from an auto-regressive Bernoulli model."""
    h, w = shape
    x = torch.zeros(n, 1, h, w)
    with torch.no_grad():
        for r in range(h):
            for c in range(w):
                p = torch.sigmoid(model(x)[:, 0, r, c])
                x[:, 0, r, c] = torch.distributions.Bernoulli(probs=p).sample()
    return x
'''}, description="draws from the global random stream: the generator is ignored, samples are not reproducible"),

    Mistake("training_mask_a_shows_centre", test="test_training",
            replaces={"causal_mask": '''def causal_mask(kernel_size, mask_type):
    """(k, k) float mask of zeros and ones for raster-order masked convolutions; type 'A' or 'B'."""
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size!r}")
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    c = kernel_size // 2
    mask = torch.zeros(kernel_size, kernel_size)
    mask[:c] = 1
    mask[c, :c + 1] = 1                 # the centre is shown for both types
    return mask
'''}, description="mask A that shows the centre: the trained model copies each pixel (written question 7a)"),
    Mistake("training_bpd_nats", test="test_training", replaces={"bits_per_dim": '''def bits_per_dim(x, logits):
    """Exact negative log-likelihood of binary images in bits per dimension; (B,1,H,W), (B,1,H,W) -> (B,)."""
    if not ((x == 0) | (x == 1)).all():
        raise ValueError("x must be binary")
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).mean(1)
'''}, description="the loss and the reported test value in nats per dimension, not bits"),

    Mistake("penalty_not_squared", test="test_contractive_penalty",
            replaces={"contractive_penalty": '''def contractive_penalty(encoder, x):
    """Squared Frobenius norm of the encoder Jacobian per example; x: (B, ...) -> (B,)."""
    from torch.func import jacrev, vmap
    jac = vmap(jacrev(lambda v: encoder(v.unsqueeze(0)).squeeze(0)))(x)
    return jac.abs().flatten(1).sum(1)
'''}, description="sum of absolute Jacobian entries instead of their squares"),
    Mistake("penalty_norm_not_squared", test="test_contractive_penalty",
            replaces={"contractive_penalty": '''def contractive_penalty(encoder, x):
    """Squared Frobenius norm of the encoder Jacobian per example; x: (B, ...) -> (B,)."""
    from torch.func import jacrev, vmap
    jac = vmap(jacrev(lambda v: encoder(v.unsqueeze(0)).squeeze(0)))(x)
    return jac.flatten(1).norm(dim=1)
'''}, description="the Frobenius norm, not its square"),
    Mistake("penalty_finite_differences", test="test_contractive_penalty",
            replaces={"contractive_penalty": '''def contractive_penalty(encoder, x):
    """Squared Frobenius norm of the encoder Jacobian per example; x: (B, ...) -> (B,)."""
    eps = 1e-3
    flat = x.flatten(1)
    total = torch.zeros(len(x))
    for i in range(flat.shape[1]):
        step = torch.zeros_like(flat)
        step[:, i] = eps
        diff = (encoder((flat + step).view_as(x)) - encoder((flat - step).view_as(x))) / (2 * eps)
        total = total + diff.pow(2).sum(1)
    return total
'''}, description="central finite differences instead of the exact Jacobian"),
    Mistake("penalty_detached", test="test_contractive_penalty",
            replaces={"contractive_penalty": '''def contractive_penalty(encoder, x):
    """Squared Frobenius norm of the encoder Jacobian per example; x: (B, ...) -> (B,)."""
    out = []
    for example in x:
        jac = torch.autograd.functional.jacobian(lambda v: encoder(v[None])[0], example)
        out.append(jac.pow(2).sum())
    return torch.stack(out)
'''}, description="the Jacobian without create_graph: the penalty is not differentiable w.r.t. the encoder"),
    Mistake("penalty_summed_over_batch", test="test_contractive_penalty",
            replaces={"contractive_penalty": '''def contractive_penalty(encoder, x):
    """Squared Frobenius norm of the encoder Jacobian per example; x: (B, ...) -> (B,)."""
    from torch.func import jacrev, vmap
    jac = vmap(jacrev(lambda v: encoder(v.unsqueeze(0)).squeeze(0)))(x)
    return jac.pow(2).sum()
'''}, description="one number for the batch (shape ()) instead of one per example"),
    Mistake("penalty_gradient_of_code_sum", test="test_contractive_penalty",
            replaces={"contractive_penalty": '''def contractive_penalty(encoder, x):
    """Squared Frobenius norm of the encoder Jacobian per example; x: (B, ...) -> (B,)."""
    x = x.detach().requires_grad_(True)
    grad, = torch.autograd.grad(encoder(x).sum(), x, create_graph=True)
    return grad.pow(2).flatten(1).sum(1)
'''}, description="the gradient of the summed code (sum_j dh_j/dx) squared, not the whole Jacobian"),
    Mistake("library_answer", test="test_causal_mask",
            replaces={"causal_mask": '''from dgmcourse.autoregressive import causal_mask as _library_mask


def causal_mask(kernel_size, mask_type):
    """(k, k) float mask of zeros and ones for raster-order masked convolutions; type 'A' or 'B'."""
    return _library_mask(kernel_size, mask_type).float()
'''},
            description="calls the course library's own implementation of the task "
                        "(not an answer: the grader gives no points)"),
]
