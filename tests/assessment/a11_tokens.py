"""Alternatives and mistakes for a11_tokens (see dgmcourse.assessment)."""
from dgmcourse.assessment import Mistake

# --- correct alternatives -------------------------------------------------------------------
NEAREST_CDIST = '''def nearest_code(z_e, codebook):
    """The index of each row's nearest code (squared Euclidean distance): z_e (N, D), codebook (K, D) -> (N,) int64."""
    return torch.cdist(z_e, codebook).argmin(dim=1)      # the distance's argmin is the squared distance's
'''

NEAREST_EXPANDED = '''def nearest_code(z_e, codebook):
    """The index of each row's nearest code (squared Euclidean distance): z_e (N, D), codebook (K, D) -> (N,) int64."""
    # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2, as the VQ-VAE reference code computes it
    squared = z_e.pow(2).sum(1, keepdim=True) - 2 * z_e @ codebook.T + codebook.pow(2).sum(1)
    return torch.argmin(squared, dim=1)
'''

NEAREST_LOOP = '''def nearest_code(z_e, codebook):
    """The index of each row's nearest code (squared Euclidean distance): z_e (N, D), codebook (K, D) -> (N,) int64."""
    best = []
    for row in z_e:
        distances = [torch.sum((row - code) ** 2).item() for code in codebook]
        best.append(min(range(len(distances)), key=distances.__getitem__))     # the first minimum on ties
    return torch.tensor(best, dtype=torch.int64)
'''

QUANTIZE_INDEX = '''def quantize(z_e, codebook):
    """Nearest-code quantisation with the straight-through gradient and the two VQ losses."""
    indices = nearest_code(z_e.detach(), codebook.detach())
    e = codebook.index_select(0, indices)
    codebook_loss = F.mse_loss(e, z_e.detach(), reduction="sum") / len(z_e)
    commitment_loss = F.mse_loss(z_e, e.detach(), reduction="sum") / len(z_e)
    return e.detach() + z_e - z_e.detach(), indices, codebook_loss, commitment_loss
'''

QUANTIZE_ONE_HOT = '''def quantize(z_e, codebook):
    """Nearest-code quantisation with the straight-through gradient and the two VQ losses."""
    indices = nearest_code(z_e, codebook).detach()
    one_hot = F.one_hot(indices, len(codebook)).to(codebook.dtype)      # (N, K)
    e = one_hot @ codebook
    per_row = lambda a, b: ((a - b) ** 2).sum(dim=-1).mean()
    z_q = z_e - (z_e - e).detach()
    return z_q, indices, per_row(z_e.detach(), e), per_row(z_e, e.detach())
'''

QUANTIZE_NORM = '''def quantize(z_e, codebook):
    """Nearest-code quantisation with the straight-through gradient and the two VQ losses."""
    with torch.no_grad():
        indices = nearest_code(z_e, codebook)
    chosen = codebook[indices]
    sg_z, sg_e = z_e.detach(), chosen.detach()
    codebook_loss = torch.linalg.vector_norm(sg_z - chosen, dim=1).pow(2).mean()
    commitment_loss = torch.linalg.vector_norm(z_e - sg_e, dim=1).pow(2).mean()
    z_q = z_e + (sg_e - sg_z)
    return z_q, indices, codebook_loss, commitment_loss
'''

MASK_TRIL = '''def causal_mask(T):
    """The (T, T) boolean mask of causal attention: True at (i, j) where query i may attend to key j (j <= i)."""
    return torch.ones(T, T).tril().bool()
'''

MASK_ARANGE = '''def causal_mask(T):
    """The (T, T) boolean mask of causal attention: True at (i, j) where query i may attend to key j (j <= i)."""
    positions = torch.arange(T)
    return positions[None, :] <= positions[:, None]          # key j (columns) <= query i (rows)
'''

MASK_TRIU = '''def causal_mask(T):
    """The (T, T) boolean mask of causal attention: True at (i, j) where query i may attend to key j (j <= i)."""
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    return ~future
'''

DECODE_SDPA = '''def decode_step(q, k, v, cache=None):
    """One cached attention step."""
    if cache is not None:
        past_k, past_v = cache
        k, v = torch.cat((past_k, k), dim=-2), torch.cat((past_v, v), dim=-2)
    # one query attends to every cached position: no mask (is_causal would keep only the first key)
    return F.scaled_dot_product_attention(q, k, v), (k, v)
'''

DECODE_EINSUM = '''def decode_step(q, k, v, cache=None):
    """One cached attention step."""
    keys = k if cache is None else torch.cat([cache[0], k], dim=2)
    values = v if cache is None else torch.cat([cache[1], v], dim=2)
    scores = torch.einsum("bhqd,bhkd->bhqk", q, keys) * q.shape[-1] ** -0.5
    weights = scores.softmax(dim=-1)
    return torch.einsum("bhqk,bhkd->bhqd", weights, values), (keys, values)
'''

DECODE_STABLE = '''def decode_step(q, k, v, cache=None):
    """One cached attention step."""
    K_all = torch.cat([cache[0], k], 2) if cache else k
    V_all = torch.cat([cache[1], v], 2) if cache else v
    logits = (q * K_all).sum(-1, keepdim=True) / math.sqrt(q.size(-1))      # (B, H, t + 1, 1) by broadcasting
    logits = logits - logits.max(dim=2, keepdim=True).values
    w = logits.exp() / logits.exp().sum(dim=2, keepdim=True)
    return (w * V_all).sum(dim=2, keepdim=True), (K_all, V_all)
'''

TOKENS_BERNOULLI = '''def mask_tokens(x0, t, vocab_size, generator=None):
    """x_t ~ q(x_t | x0) of the linear schedule."""
    t = torch.as_tensor(t, dtype=torch.float32, device=x0.device)
    t = t.view(-1, 1) if t.dim() else t
    hit = torch.rand(x0.shape, generator=generator, device=x0.device) < t
    x_t = x0.clone()
    x_t[hit] = vocab_size
    return x_t
'''

TOKENS_MASKED_FILL = '''def mask_tokens(x0, t, vocab_size, generator=None):
    """x_t ~ q(x_t | x0) of the linear schedule."""
    if not torch.is_tensor(t):
        t = torch.full((x0.shape[0],), float(t))
    keep_prob = 1 - t.to(x0.device, torch.float64).unsqueeze(1)
    u = torch.rand(x0.shape, generator=generator, device=x0.device)
    return x0.masked_fill(u >= keep_prob, vocab_size)        # masked with probability 1 - keep_prob = t
'''

TOKENS_ROWS = '''def mask_tokens(x0, t, vocab_size, generator=None):
    """x_t ~ q(x_t | x0) of the linear schedule."""
    u = torch.rand(x0.shape, generator=generator, device=x0.device)
    times = t if torch.is_tensor(t) and t.dim() == 1 else torch.as_tensor(t).expand(len(x0))
    rows = [torch.where(u_row < float(s), vocab_size, row) for u_row, s, row in zip(u, times, x0)]
    return torch.stack(rows).to(torch.int64)
'''

LOSS_CROSS_ENTROPY = '''def masked_diffusion_loss(model, x0, vocab_size, t=None, generator=None):
    """One draw of the negative ELBO of the linear schedule per sequence, averaged over the batch."""
    if t is None:
        t = 1 - torch.rand(x0.shape[0], generator=generator, device=x0.device)
    x_t = mask_tokens(x0, t, vocab_size, generator)
    logits = model(x_t)
    ce = F.cross_entropy(logits.transpose(1, 2).double(), x0, reduction="none")       # (B, L)
    ce = ce.masked_fill(x_t != vocab_size, 0.0)
    return (ce.sum(1) / t.double()).mean()
'''

LOSS_WEIGHTED = '''def masked_diffusion_loss(model, x0, vocab_size, t=None, generator=None):
    """One draw of the negative ELBO of the linear schedule per sequence, averaged over the batch."""
    B = len(x0)
    if t is None:
        u = torch.rand(B, generator=generator, device=x0.device)
        t = 1.0 - u
    x_t = mask_tokens(x0, t, vocab_size, generator)
    log_probs = torch.log_softmax(model(x_t).to(torch.float64), dim=-1)
    picked = torch.take_along_dim(log_probs, x0[..., None], dim=-1)[..., 0]
    weight = (x_t == vocab_size).to(torch.float64) / t.to(torch.float64)[:, None]        # 1/t on masked tokens
    return -(weight * picked).sum() / B
'''

LOSS_LOOP = '''def masked_diffusion_loss(model, x0, vocab_size, t=None, generator=None):
    """One draw of the negative ELBO of the linear schedule per sequence, averaged over the batch."""
    if t is None:
        t = 1 - torch.rand(len(x0), generator=generator, device=x0.device)
    x_t = mask_tokens(x0, t, vocab_size, generator)
    log_p = F.log_softmax(model(x_t).double(), dim=-1)
    terms = []
    for b in range(len(x0)):
        where = (x_t[b] == vocab_size).nonzero().flatten()
        terms.append(-log_p[b, where, x0[b, where]].sum() / float(t[b]))
    return torch.stack(terms).mean()
'''

ALTERNATIVES = {
    "cdist_index_select_tril_sdpa_bernoulli_cross_entropy": {
        "nearest_code": NEAREST_CDIST, "quantize": QUANTIZE_INDEX, "causal_mask": MASK_TRIL,
        "decode_step": DECODE_SDPA, "mask_tokens": TOKENS_BERNOULLI, "masked_diffusion_loss": LOSS_CROSS_ENTROPY},
    "expanded_one_hot_arange_einsum_masked_fill_weighted": {
        "nearest_code": NEAREST_EXPANDED, "quantize": QUANTIZE_ONE_HOT, "causal_mask": MASK_ARANGE,
        "decode_step": DECODE_EINSUM, "mask_tokens": TOKENS_MASKED_FILL, "masked_diffusion_loss": LOSS_WEIGHTED},
    "loops_norms_triu_stable_softmax_rows": {
        "nearest_code": NEAREST_LOOP, "quantize": QUANTIZE_NORM, "causal_mask": MASK_TRIU,
        "decode_step": DECODE_STABLE, "mask_tokens": TOKENS_ROWS, "masked_diffusion_loss": LOSS_LOOP},
}


# --- mistakes -------------------------------------------------------------------------------
def _nearest(body):
    return '''def nearest_code(z_e, codebook):
    """The index of each row's nearest code (squared Euclidean distance): z_e (N, D), codebook (K, D) -> (N,) int64."""
''' + body


def _quantize(body):
    return '''def quantize(z_e, codebook):
    """Nearest-code quantisation with the straight-through gradient and the two VQ losses."""
    indices = nearest_code(z_e.detach(), codebook.detach())
    e = codebook[indices]
''' + body


def _mask(body):
    return '''def causal_mask(T):
    """The (T, T) boolean mask of causal attention: True at (i, j) where query i may attend to key j (j <= i)."""
''' + body


def _decode(body):
    return '''def decode_step(q, k, v, cache=None):
    """One cached attention step."""
''' + body


_RETURN = "    return {}, (k, v)\n"
_APPEND = '''    if cache is not None:
        k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
'''


def _tokens(body):
    return '''def mask_tokens(x0, t, vocab_size, generator=None):
    """x_t ~ q(x_t | x0) of the linear schedule."""
''' + body


_DRAW = "    u = torch.rand(x0.shape, generator=generator, device=x0.device)\n"
_TIMES = "    t = torch.as_tensor(t, dtype=torch.float64, device=x0.device).reshape(-1, 1)\n"


def _loss(body, draw=True):
    head = '''def masked_diffusion_loss(model, x0, vocab_size, t=None, generator=None):
    """One draw of the negative ELBO of the linear schedule per sequence, averaged over the batch."""
'''
    if draw:
        head += '''    if t is None:
        t = 1 - torch.rand(len(x0), generator=generator, device=x0.device)
    t = t.double()
    x_t = mask_tokens(x0, t, vocab_size, generator)
    log_p = F.log_softmax(model(x_t).double(), dim=-1).gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    masked = x_t == vocab_size
'''
    return head + body


MISTAKES = [
    # nearest_code
    Mistake("nearest_inner_product", test="test_nearest_code",
            replaces={"nearest_code": _nearest("    return (z_e @ codebook.T).argmax(dim=1)\n")},
            description="the code with the largest inner product z.e: the nearest only when every code has one norm"),
    Mistake("nearest_l1", test="test_nearest_code",
            replaces={"nearest_code": _nearest("    return torch.cdist(z_e, codebook, p=1).argmin(dim=1)\n")},
            description="the L1 (Manhattan) distance instead of the Euclidean one"),
    Mistake("nearest_farthest", test="test_nearest_code",
            replaces={"nearest_code": _nearest("    return torch.cdist(z_e, codebook).argmax(dim=1)\n")},
            description="argmax of the distances: the farthest code"),
    Mistake("nearest_wrong_axis", test="test_nearest_code",
            replaces={"nearest_code": _nearest("    return torch.cdist(z_e, codebook).argmin(dim=0)\n")},
            description="argmin over the rows: for each code its nearest row, shape (K,)"),
    # quantize
    Mistake("quantize_no_straight_through", test="test_quantize",
            replaces={"quantize": _quantize('''    codebook_loss = (z_e.detach() - e).pow(2).sum(1).mean()
    return e, indices, codebook_loss, (z_e - e.detach()).pow(2).sum(1).mean()
''')}, description="z_q = e_k: the decoder's gradient goes to the codebook and never reaches the encoder"),
    Mistake("quantize_mse_mean", test="test_quantize",
            replaces={"quantize": _quantize('''    z_q = z_e + (e - z_e).detach()
    return z_q, indices, F.mse_loss(e, z_e.detach()), F.mse_loss(z_e, e.detach())
''')}, description="F.mse_loss: averaged over the D coordinates too (a factor D too small)"),
    Mistake("quantize_losses_swapped", test="test_quantize",
            replaces={"quantize": _quantize('''    z_q = z_e + (e - z_e).detach()
    return z_q, indices, (z_e - e.detach()).pow(2).sum(1).mean(), (z_e.detach() - e).pow(2).sum(1).mean()
''')}, description="the stop-gradients swapped: the codebook loss moves the encoder and the commitment loss the codes"),
    Mistake("quantize_no_stop_gradient", test="test_quantize",
            replaces={"quantize": _quantize('''    z_q = z_e + (e - z_e).detach()
    loss = (z_e - e).pow(2).sum(1).mean()
    return z_q, indices, loss, loss
''')}, description="no stop-gradient in either loss: both move the encoder and the codes"),
    Mistake("quantize_commitment_moves_codes", test="test_quantize",
            replaces={"quantize": _quantize('''    z_q = z_e + (e - z_e).detach()
    return z_q, indices, (z_e.detach() - e).pow(2).sum(1).mean(), (z_e - e).pow(2).sum(1).mean()
''')}, description="the commitment loss without sg[e]: it pulls the codes towards the encoder as well"),
    Mistake("library_answer", test="test_quantize",
            replaces={"quantize": '''from dgmcourse.vq import quantize as _library_answer


def quantize(z_e, codebook):
    """Nearest-code quantisation with the straight-through gradient and the two VQ losses."""
    return _library_answer(z_e, codebook)
'''}, description="calls the course library's own implementation of the task "
                  "(not an answer: the grader gives no points)"),
    # causal_mask
    Mistake("mask_strict", test="test_causal_mask",
            replaces={"causal_mask": _mask("    return torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1)\n")},
            description="the diagonal excluded: a position cannot see itself, and the first sees nothing (NaN)"),
    Mistake("mask_multihead_convention", test="test_causal_mask",
            replaces={"causal_mask": _mask("    return torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)\n")},
            description="nn.MultiheadAttention's convention (True = masked out) where True must mean 'attends'"),
    Mistake("mask_float", test="test_causal_mask",
            replaces={"causal_mask": _mask("    return torch.tril(torch.ones(T, T))\n")},
            description="a float 0/1 mask: scaled_dot_product_attention adds it to the scores instead of masking"),
    Mistake("mask_transposed", test="test_causal_mask",
            replaces={"causal_mask": _mask("    return torch.triu(torch.ones(T, T, dtype=torch.bool))\n")},
            description="the transpose: query i attends to the keys j >= i, the future"),
    # decode_step
    Mistake("decode_is_causal_single_query", test="test_decode_step",
            replaces={"decode_step": _decode(_APPEND + _RETURN.format("F.scaled_dot_product_attention(q, k, v, "
                                                                     "is_causal=True)"))},
            description="is_causal=True with one query: the mask is aligned top-left, so the query sees only the first "
                        "key"),
    Mistake("decode_attend_before_append", test="test_decode_step",
            replaces={"decode_step": _decode('''    keys, values = (k, v) if cache is None else cache
    out = torch.softmax(q @ keys.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1) @ values
    if cache is not None:
        k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
    return out, (k, v)
''')}, description="attends to the cache before appending the new key and value: the position misses itself"),
    Mistake("decode_no_scale", test="test_decode_step",
            replaces={"decode_step": _decode(_APPEND + _RETURN.format("torch.softmax(q @ k.mT, dim=-1) @ v"))},
            description="scores q.k without the 1/sqrt(d) scale"),
    Mistake("decode_softmax_over_queries", test="test_decode_step",
            replaces={"decode_step": _decode(_APPEND + _RETURN.format(
                "torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), dim=-2) @ v"))},
            description="softmax over the (single) query axis: every weight is 1, the output the sum of the values"),
    Mistake("decode_cat_heads", test="test_decode_step",
            replaces={"decode_step": _decode('''    if cache is not None:
        k, v = torch.cat([cache[0], k], dim=1), torch.cat([cache[1], v], dim=1)
    return F.scaled_dot_product_attention(q, k, v), (k, v)
''')}, description="the cache grows along the head axis (dim 1) instead of the positions (dim 2)"),
    Mistake("decode_scale_by_length", test="test_decode_step",
            replaces={"decode_step": _decode(_APPEND + _RETURN.format(
                "torch.softmax(q @ k.mT / math.sqrt(k.shape[-2]), dim=-1) @ v"))},
            description="scores divided by the square root of the number of keys instead of the head width"),
    # mask_tokens
    Mistake("tokens_keep_with_probability_t", test="test_mask_tokens",
            replaces={"mask_tokens": _tokens(
                _TIMES + _DRAW + "    return torch.where(u < t, x0, torch.full_like(x0, vocab_size))\n")},
            description="keeps a token with probability t: the time reversed (alpha_t = t)"),
    Mistake("tokens_mask_id_zero", test="test_mask_tokens",
            replaces={"mask_tokens": _tokens(_TIMES + _DRAW + '''    return torch.where(u < t, torch.zeros_like(x0), x0)
''')}, description="the mask written as token 0, a real token, instead of the id vocab_size"),
    Mistake("tokens_shared_mask", test="test_mask_tokens",
            replaces={"mask_tokens": _tokens(_TIMES + '''
    u = torch.rand(x0.shape[1], generator=generator)    # one uniform per position
    return torch.where(u < t, torch.full_like(x0, vocab_size), x0)
''')}, description="one uniform per position shared by the whole batch: every sequence gets the same mask"),
    Mistake("tokens_time_last_axis", test="test_mask_tokens",
            replaces={"mask_tokens": _tokens('''    t = torch.as_tensor(t, dtype=torch.float64, device=x0.device)
    u = torch.rand(x0.shape, generator=generator, device=x0.device)
    return torch.where(u < t, torch.full_like(x0, vocab_size), x0)
''')}, description="one time per sequence broadcast along the positions (last axis) instead of the batch"),
    Mistake("tokens_in_place", test="test_mask_tokens",
            replaces={"mask_tokens": _tokens(_TIMES + _DRAW + '''    x0[u < t] = vocab_size
    return x0
''')}, description="masks x0 in place: the caller's clean tokens are overwritten"),
    Mistake("tokens_ignores_generator", test="test_mask_tokens",
            replaces={"mask_tokens": _tokens(_TIMES + '''    u = torch.rand(x0.shape, device=x0.device)
    return torch.where(u < t, torch.full_like(x0, vocab_size), x0)
''')}, description="draws from the global random stream: the generator is ignored"),
    # masked_diffusion_loss
    Mistake("loss_no_weight", test="test_masked_diffusion_loss",
            replaces={"masked_diffusion_loss": _loss("    return (-(log_p * masked).sum(dim=1)).mean()\n")},
            description="the masked cross-entropy without the 1/t weight: not the ELBO"),
    Mistake("loss_all_positions", test="test_masked_diffusion_loss",
            replaces={"masked_diffusion_loss": _loss("    return (-log_p.sum(dim=1) / t).mean()\n")},
            description="the cross-entropy of every position, the visible ones included"),
    Mistake("loss_mean_over_masked", test="test_masked_diffusion_loss",
            replaces={"masked_diffusion_loss": _loss(
                "    return (-(log_p * masked).sum(dim=1) / masked.sum(dim=1).clamp(min=1) / t).mean()\n")},
            description="the mean over the masked positions instead of their sum"),
    Mistake("loss_weight_one_minus_t", test="test_masked_diffusion_loss",
            replaces={"masked_diffusion_loss": _loss(
                "    return (-(log_p * masked).sum(dim=1) / (1 - t + 1e-6)).mean()\n")},
            description="the weight 1/(1 - t), as if alpha_t = t"),
    Mistake("loss_one_time_per_batch", test="test_masked_diffusion_loss",
            replaces={"masked_diffusion_loss": _loss('''    if t is None:
        t = 1 - torch.rand(1, generator=generator, device=x0.device).expand(len(x0))
    t = t.double()
    x_t = mask_tokens(x0, t, vocab_size, generator)
    log_p = F.log_softmax(model(x_t).double(), dim=-1).gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    return (-(log_p * (x_t == vocab_size)).sum(dim=1) / t).mean()
''', draw=False)}, description="one time drawn for the whole batch instead of one per sequence"),
    Mistake("loss_time_drawn_twice", test="test_masked_diffusion_loss",
            replaces={"masked_diffusion_loss": _loss('''    draw = t is None
    if draw:
        t = 1 - torch.rand(len(x0), generator=generator, device=x0.device)
    x_t = mask_tokens(x0, t, vocab_size, generator)
    if draw:
        t = 1 - torch.rand(len(x0), generator=generator, device=x0.device)      # a second, different draw
    log_p = F.log_softmax(model(x_t).double(), dim=-1).gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    return (-(log_p * (x_t == vocab_size)).sum(dim=1) / t.double()).mean()
''', draw=False)}, description="x_t masked with one time, the weight 1/t taken from another draw"),
    Mistake("library_answer_loss", test="test_masked_diffusion_loss",
            replaces={"masked_diffusion_loss": '''from dgmcourse.masked_diffusion import masked_diffusion_loss as _lib


def masked_diffusion_loss(model, x0, vocab_size, t=None, generator=None):
    """One draw of the negative ELBO of the linear schedule per sequence, averaged over the batch."""
    return _lib(model, x0, vocab_size, generator=generator)
'''}, description="calls the course library's own implementation of the task (not an answer: the grader gives no "
                  "points)"),
]
