"""A small decoder-only transformer over discrete tokens, with a key/value cache for sampling.

The chain rule writes any distribution over a sequence of T tokens as
:math:`p(x) = \\prod_{i=1}^{T} p(x_i | x_{<i})` (the same factorisation as the PixelCNN of
:mod:`dgmcourse.autoregressive`). A causal transformer (Vaswani et al. 2017, "Attention Is All You Need", sec. 3.2.3:
the decoder's self-attention masks every key after the query) computes all T conditionals in one pass. The blocks are
*pre-LayerNorm* (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners", sec. 2.3; Xiong et al.
2020, "On Layer Normalization in the Transformer Architecture", Fig. 1b), :math:`h \\leftarrow h + \\mathrm{Attn}(
\\mathrm{LN}(h))`, :math:`h \\leftarrow h + \\mathrm{MLP}(\\mathrm{LN}(h))`, with learned position embeddings
(Radford et al. 2018, "Improving Language Understanding by Generative Pre-Training", sec. 4.1).

**ImageGPT.** Chen et al. (2020, "Generative Pretraining from Pixels", ICML, sec. 2.1 and 3.2) model an image as
such a sequence: its pixels (colour-quantised to a 9-bit palette) read in raster order, one token each. The course
applies the same model to the 7x7 grid of VQ-VAE code indices of :mod:`dgmcourse.vq` read in raster order (the
VQ-VAE's learned prior, van den Oord et al. 2017, sec. 3.3, with a transformer in place of the PixelCNN), or to
binarised pixels (vocabulary 2).

Conventions: tokens are int64 ``(B, T)`` with values in ``[0, vocab_size)``; logits are ``(B, T, output_size)``
(``output_size`` defaults to ``vocab_size``) and log-probabilities are in nats. Every sequence starts with a start
token ``bos``: the model reads ``[bos, x_1, ..., x_{T-1}]`` and its output at position i is the distribution of
:math:`x_{i+1}`. For K data tokens build ``CausalTransformer(K + 1, T, ..., output_size=K)`` and use ``bos=K``: the
start token is then an input only and is never sampled.

Contents: :class:`CausalTransformer` (``causal=False`` gives the bidirectional denoiser of
:mod:`dgmcourse.masked_diffusion`), :func:`log_likelihood`, :func:`sample` (with or without the cache: identical
samples), :func:`train_autoregressive`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dgmcourse.flow_matching import _adam_linear_decay, _check_training

__all__ = ["CausalTransformer", "log_likelihood", "sample", "train_autoregressive"]

Cache = list[tuple[torch.Tensor, torch.Tensor]]


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class _Block(nn.Module):
    """One pre-LayerNorm block: multi-head self-attention then a 4x-wide GELU MLP, each with a residual.

    The GELU is GPT-2's tanh approximation (Hendrycks and Gimpel 2016, "Gaussian Error Linear Units", sec. 2); on a
    CPU it costs a fifth of the exact one, which matters when sampling runs one position at a time.
    """

    def __init__(self, d_model: int, n_heads: int, causal: bool) -> None:
        super().__init__()
        self.n_heads, self.causal = n_heads, causal
        self.ln_attention, self.ln_mlp = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * d_model, d_model))

    def forward(self, h: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None):
        # (B, T, 3 d) -> three (B, heads, T, d / heads)
        q, k, v = self.qkv(self.ln_attention(h)).unflatten(-1, (3, self.n_heads, -1)).permute(2, 0, 3, 1, 4)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        if not self.causal or (past is not None and q.shape[2] == 1):
            # bidirectional, or one new query after the cache: it may see every key, so no mask
            attended = F.scaled_dot_product_attention(q, k, v)
        elif past is None:
            attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # query i of the T_new new tokens sits at absolute position T_past + i and sees keys 0..T_past + i
            # (is_causal=True would align the mask to the top-left corner, wrong when T_new < T_past + T_new)
            t_new, t_all = q.shape[2], k.shape[2]
            rows = torch.arange(t_new, device=h.device).unsqueeze(1) + (t_all - t_new)
            allowed = torch.arange(t_all, device=h.device).unsqueeze(0) <= rows
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        h = h + self.out(attended.transpose(1, 2).flatten(2))
        return h + self.mlp(self.ln_mlp(h)), (k, v)


class CausalTransformer(nn.Module):
    """A decoder-only transformer: token + learned position embeddings, pre-LN blocks, a final LayerNorm, logits.

    Vaswani et al. (2017), sec. 3 (attention through ``torch.nn.functional.scaled_dot_product_attention``), with the
    pre-LN blocks and learned positions of GPT-2 (Radford et al. 2019, sec. 2.3). With ``causal=True`` the output at
    position i depends on tokens 0..i only; with ``causal=False`` every position sees every other (a bidirectional
    encoder, the denoiser of :mod:`dgmcourse.masked_diffusion`).

    Args:
        vocab_size: number of input token ids V, >= 1 (include the start token's id).
        max_len: longest sequence the position embedding covers, >= 1.
        d_model: width, a multiple of ``n_heads``; n_heads: attention heads; n_layers: blocks (all >= 1).
        causal: mask attention to earlier positions (True) or not.
        output_size: number of logits per position, default ``vocab_size``.

    ``forward(tokens, cache=None) -> (logits, cache)``: ``tokens`` int64 ``(B, T_new)`` in ``[0, V)``; ``logits``
    float ``(B, T_new, output_size)``, unnormalised log-probabilities (nats). ``cache`` is None or the list returned
    by the previous call, one ``(keys, values)`` pair of ``(B, n_heads, T_past, d_model / n_heads)`` tensors per
    block: the new tokens then sit at positions ``T_past .. T_past + T_new - 1`` and attend to the cached keys and
    values and causally to each other (any ``T_new`` >= 1). The returned cache covers all ``T_past + T_new``
    positions, so ``forward(x)`` equals ``forward(x[:, :j])`` followed by ``forward(x[:, j:], cache)``.

    Raises:
        ValueError: a size not a positive integer or ``d_model`` not divisible by ``n_heads``; in ``forward``,
            ``tokens`` not an int64 ``(B, T)`` tensor in ``[0, V)``, ``T_past + T_new > max_len``, or a cache given
            to a non-causal model or of the wrong length.
    """

    def __init__(self, vocab_size: int, max_len: int, d_model: int = 64, n_heads: int = 4, n_layers: int = 2,
                 causal: bool = True, output_size: int | None = None) -> None:
        super().__init__()
        output_size = vocab_size if output_size is None else output_size
        for name, value in (("vocab_size", vocab_size), ("max_len", max_len), ("d_model", d_model),
                            ("n_heads", n_heads), ("n_layers", n_layers), ("output_size", output_size)):
            _check_positive_int(name, value)
        if d_model % n_heads:
            raise ValueError(f"d_model must be a multiple of n_heads, got d_model={d_model}, n_heads={n_heads}")
        self.vocab_size, self.max_len, self.causal, self.output_size = vocab_size, max_len, causal, output_size
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, causal) for _ in range(n_layers))
        self.ln_final = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, output_size)

    def embed(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Token plus position embeddings ``(B, T, d_model)`` of ``tokens`` ``(B, T)`` at positions ``start ...``.

        Raises:
            ValueError: as ``forward``.
        """
        if not (torch.is_tensor(tokens) and tokens.dtype == torch.int64 and tokens.dim() == 2 and tokens.shape[1]):
            raise ValueError(f"tokens must be an int64 tensor (B, T) with T >= 1, got {getattr(tokens, 'dtype', None)}"
                             f" {tuple(getattr(tokens, 'shape', ()))}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"tokens must lie in [0, {self.vocab_size}), got values in "
                             f"[{tokens.min().item()}, {tokens.max().item()}]")
        if start + tokens.shape[1] > self.max_len:
            raise ValueError(f"sequence too long: {start} cached + {tokens.shape[1]} new positions > max_len "
                             f"{self.max_len}")
        return self._embed(tokens, start)

    def _embed(self, tokens: torch.Tensor, start: int) -> torch.Tensor:  # embed without the checks
        return self.token_embedding(tokens) + self.position_embedding.weight[start:start + tokens.shape[1]]

    def forward_embeddings(self, h: torch.Tensor, cache: Cache | None = None) -> tuple[torch.Tensor, Cache]:
        """The blocks and head on given input embeddings ``h`` ``(B, T_new, d_model)`` (from :meth:`embed`).

        Split out of ``forward`` so that gradients with respect to the input embeddings can be taken (the test of
        causality). Returns ``(logits, cache)`` as ``forward``.

        Raises:
            ValueError: a cache given to a non-causal model or with one entry per block missing.
        """
        if cache is not None:
            if not self.causal:
                raise ValueError("cache is only supported for a causal model (causal=True)")
            if len(cache) != len(self.blocks):
                raise ValueError(f"cache must hold one (keys, values) pair per block ({len(self.blocks)}), "
                                 f"got {len(cache)}")
        new_cache = []
        for i, block in enumerate(self.blocks):
            h, kv = block(h, None if cache is None else cache[i])
            new_cache.append(kv)
        return self.head(self.ln_final(h)), new_cache

    def forward(self, tokens: torch.Tensor, cache: Cache | None = None) -> tuple[torch.Tensor, Cache]:
        start = 0 if not cache else cache[0][0].shape[2]
        return self.forward_embeddings(self.embed(tokens, start), cache)


def _check_model(model) -> None:
    if not isinstance(model, CausalTransformer) or not model.causal:
        raise ValueError(f"model must be a CausalTransformer with causal=True, got {type(model).__name__}")


def _check_bos(bos, model: CausalTransformer) -> None:
    if isinstance(bos, bool) or not isinstance(bos, int) or not 0 <= bos < model.vocab_size:
        raise ValueError(f"bos must be a token id in [0, {model.vocab_size}), got {bos!r}")


def _check_tokens(tokens, size: int, name: str = "tokens") -> None:
    if not (torch.is_tensor(tokens) and tokens.dtype == torch.int64 and tokens.dim() == 2 and tokens.numel()):
        raise ValueError(f"{name} must be a non-empty int64 tensor (N, T), got {getattr(tokens, 'dtype', None)} "
                         f"{tuple(getattr(tokens, 'shape', ()))}")
    if tokens.min() < 0 or tokens.max() >= size:
        raise ValueError(f"{name} must lie in [0, {size}), got values in [{tokens.min().item()}, "
                         f"{tokens.max().item()}]")


def _with_bos(tokens: torch.Tensor, bos: int) -> torch.Tensor:
    """``[bos, x_1, ..., x_{T-1}]``: the inputs whose outputs predict ``x_1, ..., x_T``."""
    return torch.cat([torch.full_like(tokens[:, :1], bos), tokens[:, :-1]], dim=1)


def log_likelihood(model: CausalTransformer, tokens: torch.Tensor, bos: int) -> torch.Tensor:
    """Exact :math:`\\log p(x) = \\sum_{i=1}^{T} \\log p_\\theta(x_i | \\mathrm{bos}, x_{<i})`, in nats per sequence.

    The chain rule (ImageGPT's autoregressive objective, Chen et al. 2020, sec. 2.1; van den Oord et al. 2016, eq. 1).
    Divide by ``T log 2`` for bits per token (:func:`dgmcourse.evaluation.bits_per_dim`). Gradients flow; wrap in
    ``torch.no_grad()`` to evaluate.

    Args:
        model: a causal :class:`CausalTransformer` with ``max_len`` >= T.
        tokens: int64 ``(B, T)`` in ``[0, output_size)``, on the model's device.
        bos: the start token's id, in ``[0, vocab_size)``.

    Returns:
        ``(B,)`` log-likelihoods in nats.

    Raises:
        ValueError: ``model`` not a causal :class:`CausalTransformer`, bad ``bos``, ``tokens`` not int64 ``(B, T)``
            in range, or T > ``max_len``.
    """
    _check_model(model)
    _check_bos(bos, model)
    _check_tokens(tokens, model.output_size)
    logits, _ = model(_with_bos(tokens, bos))
    return -F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none").sum(dim=1)


def sample(model: CausalTransformer, n: int, length: int, bos: int, temperature: float = 1.0,
           generator: torch.Generator | None = None, use_cache: bool = True, progress: bool = False) -> torch.Tensor:
    """Ancestral sampling :math:`x_i \\sim p_\\theta(\\cdot | \\mathrm{bos}, x_{<i})^{1/\\tau}`, one token per step.

    Chen et al. (2020), sec. 2.1 (ImageGPT samples pixel by pixel in raster order). With ``use_cache=True`` each
    step feeds only the newest token and reuses the keys and values of the earlier positions (one block-row of
    attention per step); with ``use_cache=False`` it recomputes the whole prefix (a full forward per step). The two
    compute the same logits up to rounding and draw the same uniforms, so the same ``generator`` state gives the same
    samples. Each step draws ``n`` uniforms u and picks the first token whose cumulative probability exceeds u.

    Args:
        model: a causal :class:`CausalTransformer` with ``max_len`` >= ``length``; its mode is restored afterwards.
        n: number of sequences, >= 1; length: tokens per sequence T, >= 1 (the start token is not returned).
        bos: the start token's id, in ``[0, vocab_size)``.
        temperature: τ > 0 dividing the logits (1 samples the model; below 1 sharpens it).
        generator: optional ``torch.Generator`` on the model's device.
        use_cache: use the key/value cache.
        progress: show a tqdm bar over positions.

    Returns:
        int64 ``(n, length)`` tokens in ``[0, output_size)`` on the model's device.

    Raises:
        ValueError: ``model`` not a causal :class:`CausalTransformer`, ``n`` or ``length`` not positive integers,
            ``length > max_len``, bad ``bos`` or ``temperature`` <= 0.
    """
    _check_model(model)
    _check_positive_int("n", n)
    _check_positive_int("length", length)
    _check_bos(bos, model)
    if length > model.max_len:
        raise ValueError(f"length must be <= max_len = {model.max_len}, got {length}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    tokens = torch.full((n, length + 1), bos, dtype=torch.int64, device=device)   # bos, then the draws
    cache = None
    # inference mode, not only no_grad: with one sequence a cached step is a few dozen tiny operations, and the
    # autograd bookkeeping no_grad still does is a fair part of their cost
    with torch.inference_mode():
        for i in tqdm(range(length), desc="sampling tokens", disable=not progress):
            if use_cache:   # the newest token at position i, after the cache of positions 0 .. i - 1
                logits, cache = model.forward_embeddings(model._embed(tokens[:, i:i + 1], i), cache)
            else:           # the whole prefix, positions 0 .. i
                logits, _ = model.forward_embeddings(model._embed(tokens[:, :i + 1], 0))
            probs = torch.softmax(logits[:, -1].double() / temperature, dim=-1)
            u = torch.rand(n, 1, generator=generator, device=device, dtype=torch.float64)
            draw = (probs.cumsum(dim=-1) <= u).sum(dim=-1, keepdim=True).clamp(max=probs.shape[-1] - 1)
            tokens[:, i + 1:i + 2] = draw
    model.train(was_training)
    return tokens[:, 1:].clone()   # a normal tensor: an inference-mode one could not be changed in place later


def train_autoregressive(model: CausalTransformer, tokens: torch.Tensor, steps: int, bos: int, batch_size: int = 64,
                         lr: float = 1e-3, generator: torch.Generator | None = None,
                         progress: bool = True) -> list[float]:
    """Adam on the next-token cross-entropy :math:`-\\frac1T \\log p_\\theta(x)` (:func:`log_likelihood`).

    Maximum likelihood, ImageGPT's autoregressive objective (Chen et al. 2020, sec. 2.1). Each step draws
    ``batch_size`` rows of ``tokens`` with replacement from ``generator``; the learning rate decays linearly from
    ``lr`` to 0 (as :func:`dgmcourse.flow_matching.train_cfm`).

    Args:
        model: a causal :class:`CausalTransformer`, trained in place on its own device, left in eval mode.
        tokens: int64 ``(N, T)`` training sequences.
        steps, batch_size: positive integers; lr: initial learning rate, > 0.
        bos: the start token's id.
        generator: CPU ``torch.Generator`` for the minibatches (seed 0 when None).
        progress: show a tqdm bar.

    Returns:
        the loss of every step, in nats per token (batch mean).

    Raises:
        ValueError: bad ``steps``, ``batch_size`` or ``lr``, or as :func:`log_likelihood`.
    """
    _check_model(model)
    _check_training(steps, batch_size, lr)
    _check_bos(bos, model)
    _check_tokens(tokens, model.output_size)
    device = next(model.parameters()).device
    generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def step_loss() -> torch.Tensor:
        idx = torch.randint(len(tokens), (batch_size,), generator=generator)
        batch = tokens[idx.to(tokens.device)].to(device)
        return -log_likelihood(model, batch, bos).mean() / batch.shape[1]

    return _adam_linear_decay(model, step_loss, steps, lr, "train transformer", progress)
