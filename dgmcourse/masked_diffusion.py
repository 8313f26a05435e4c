"""Masked (absorbing-state) diffusion over tokens: forward masking, the continuous-time ELBO, ancestral unmasking.

D3PM (Austin et al. 2021, "Structured Denoising Diffusion Models in Discrete State-Spaces", sec. 3)
introduced the *absorbing* corruption: each token independently jumps to a special mask token ``m`` and stays there.
MDLM (Sahoo et al. 2024, "Simple and Effective Masked Diffusion Language Models") and MD4 (Shi et al. 2024,
"Simplified and Generalized Masked Diffusion for Discrete Data") write it in continuous time t in [0, 1] with a
schedule :math:`\\alpha_t` decreasing from :math:`\\alpha_0 = 1` (data) to :math:`\\alpha_1 = 0` (all masked):

.. math:: q(x_t^i | x_0^i) = \\alpha_t\\, [x_t^i = x_0^i] + (1 - \\alpha_t)\\, [x_t^i = m]

(MDLM sec. 3.1, per token; MD4 sec. 2). The model :math:`p_\\theta(\\cdot | x_t)` predicts, at every masked position,
a distribution over the V real tokens (MDLM's "zero masking probabilities": the mask is never predicted;
"carry-over unmasking": visible tokens are copied). The negative ELBO is (MDLM eq. 10; MD4 sec. 3)

.. math:: -\\mathrm{ELBO}(x_0) = \\int_0^1 \\frac{\\alpha_t'}{1 - \\alpha_t}\\,
          E_{q(x_t|x_0)}\\Big[\\sum_{i:\\,x_t^i = m} \\log p_\\theta(x_0^i | x_t)\\Big]\\, dt \\;\\ge\\; -\\log p(x_0),

a positive quantity since :math:`\\alpha_t' < 0`. For the linear schedule :math:`\\alpha_t = 1 - t` the weight is
:math:`-1/t`: a masked-token cross-entropy weighted by 1/t.

**The denoiser sees x_t only.** q factorises as :math:`g(t, M) \\cdot [x_0 \\text{ agrees with } x_t \\text{ off }
M]` for the mask set M, so the true posterior :math:`q(x_0 | x_t)` does not depend on t; the models here are called
``model(x_t)`` (Ou et al. 2025, "Your Absorbing Discrete Diffusion Secretly Models the Conditional Distributions of
Clean Data", ICLR, and Zheng et al. 2025, "Masked Diffusion Models are Secretly Time-Agnostic Masked Models and
Exploit Inaccurate Categorical Sampling", ICLR, make the same point). Then the integral can be done in closed
form: a mask set of size k has probability :math:`\\alpha_t^{L-k}(1-\\alpha_t)^k` and
:math:`\\int_0^1 -\\alpha_t'\\,\\alpha_t^{L-k} (1-\\alpha_t)^{k-1} dt
= B(L-k+1, k) = \\frac{(k-1)!(L-k)!}{L!}` **whatever the schedule** (substitute
:math:`a = \\alpha_t`; Shi et al. 2024 note the same invariance to the schedule), so

.. math:: \\mathrm{ELBO}(x_0) = \\sum_{k=1}^{L} \\frac{1}{k}\\, E_{|M| = k}\\Big[\\sum_{i \\in M}
          \\log p_\\theta(x_0^i | x_0 \\text{ with } M \\text{ masked})\\Big],

the bound of any-order autoregressive models (Hoogeboom et al. 2022, "Autoregressive Diffusion Models", sec. 3):
:func:`exact_elbo` enumerates it for short sequences.

Conventions: sequences are int64 ``(B, L)`` with tokens in ``[0, V)``; the mask token's id is ``V`` (so the
denoiser's input vocabulary is V + 1); a model maps ``x_t`` ``(B, L)`` to logits ``(B, L, V)``; log-probabilities
and ELBOs are in nats per sequence; randomness comes from an optional ``torch.Generator`` on the data's device.

Contents: :class:`MaskSchedule`, :func:`linear_schedule`, :func:`cosine_schedule`; :func:`q_sample`;
:func:`masked_diffusion_loss` (one-sample negative ELBO), :func:`elbo` (Monte Carlo), :func:`exact_elbo`
(enumeration); :func:`sample` (ancestral unmasking); :class:`MaskedDenoiser` (the bidirectional
:class:`dgmcourse.transformer.CausalTransformer` with ``causal=False``); :func:`train_masked_diffusion`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dgmcourse.flow_matching import _adam_linear_decay, _check_training
from dgmcourse.transformer import CausalTransformer

__all__ = ["MaskSchedule", "linear_schedule", "cosine_schedule", "q_sample", "masked_diffusion_loss", "elbo",
           "exact_elbo", "sample", "MaskedDenoiser", "train_masked_diffusion"]

Denoiser = Callable[[torch.Tensor], torch.Tensor]
MAX_EXACT_LENGTH = 12


@dataclass(frozen=True, eq=False)
class MaskSchedule:
    """A masking schedule: :math:`\\alpha_t` (probability that a token is still visible at time t) and its derivative.

    MDLM (Sahoo et al. 2024), sec. 3: :math:`\\alpha_t` strictly decreasing on [0, 1] with :math:`\\alpha_0 = 1`,
    :math:`\\alpha_1 = 0`. Both callables map a float64 tensor of times to a float64 tensor of the same shape.

    Fields:
        alpha: :math:`\\alpha_t`; d_alpha: :math:`\\alpha_t' = d\\alpha_t/dt` (negative, per unit time); name: a label.
    """

    alpha: Callable[[torch.Tensor], torch.Tensor]
    d_alpha: Callable[[torch.Tensor], torch.Tensor]
    name: str = "schedule"


def linear_schedule() -> MaskSchedule:
    """:math:`\\alpha_t = 1 - t`, :math:`\\alpha_t' = -1`: ELBO weight :math:`\\alpha_t'/(1-\\alpha_t) = -1/t`.

    The linear schedule of MDLM (Sahoo et al. 2024) and MD4 (Shi et al. 2024).
    """
    return MaskSchedule(alpha=lambda t: 1 - t, d_alpha=lambda t: -torch.ones_like(t), name="linear")


def cosine_schedule() -> MaskSchedule:
    """:math:`\\alpha_t = 1 - \\cos(\\pi (1 - t)/2)`, the cosine schedule of MD4 (Shi et al. 2024; MaskGIT's
    schedule, Chang et al. 2022), with :math:`\\alpha_t' = -\\frac{\\pi}{2}\\sin(\\pi(1 - t)/2)`."""
    return MaskSchedule(alpha=lambda t: 1 - torch.cos(math.pi / 2 * (1 - t)),
                        d_alpha=lambda t: -math.pi / 2 * torch.sin(math.pi / 2 * (1 - t)), name="cosine")


# ----------------------------------------------------------------------------------------- checks
def _check_vocab(vocab_size) -> None:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")


def _check_x0(x0, vocab_size: int) -> None:
    _check_vocab(vocab_size)
    if not (torch.is_tensor(x0) and x0.dtype == torch.int64 and x0.dim() == 2 and x0.numel()):
        raise ValueError(f"x0 must be a non-empty int64 tensor (B, L), got {getattr(x0, 'dtype', None)} "
                         f"{tuple(getattr(x0, 'shape', ()))}")
    if x0.min() < 0 or x0.max() >= vocab_size:
        raise ValueError(f"x0 must hold tokens in [0, {vocab_size}) (the mask id {vocab_size} is not data), got "
                         f"values in [{x0.min().item()}, {x0.max().item()}]")


def _check_schedule(schedule) -> MaskSchedule:
    schedule = linear_schedule() if schedule is None else schedule
    if not isinstance(schedule, MaskSchedule):
        raise ValueError(f"schedule must be a MaskSchedule (linear_schedule(), cosine_schedule()), got {schedule!r}")
    return schedule


def _times(t, batch: int) -> torch.Tensor:
    """``t`` as a float64 CPU tensor ``(batch,)`` of times in [0, 1]."""
    if isinstance(t, bool) or not (isinstance(t, (int, float)) or (torch.is_tensor(t) and t.is_floating_point())):
        raise ValueError(f"t must be a float or a floating tensor of times in [0, 1], got {t!r}")
    t = torch.as_tensor(t, dtype=torch.float64).detach().cpu()
    if t.shape not in ((), (batch,)) or not torch.all((t >= 0) & (t <= 1)):
        raise ValueError(f"t must be a scalar or a ({batch},) tensor of times in [0, 1], got {t}")
    return t.expand(batch)


def _model_device(model, default: torch.device) -> torch.device:
    params = list(model.parameters()) if isinstance(model, nn.Module) else []
    return params[0].device if params else default


def _log_probs(model: Denoiser, x_t: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``log p_theta(. | x_t)`` ``(B, L, V)`` from the model's logits, checked."""
    logits = model(x_t)
    if not torch.is_tensor(logits) or logits.shape != (*x_t.shape, vocab_size):
        raise ValueError(f"model(x_t) must return logits of shape {(*x_t.shape, vocab_size)}, got "
                         f"{tuple(getattr(logits, 'shape', ()))}")
    return F.log_softmax(logits.double(), dim=-1)


# --------------------------------------------------------------------------- forward process and the ELBO
def q_sample(x0: torch.Tensor, t, vocab_size: int, schedule: MaskSchedule | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """A draw of :math:`x_t \\sim q(x_t | x_0)`: each token kept with probability :math:`\\alpha_t`, else masked.

    MDLM (Sahoo et al. 2024), sec. 3.1, applied independently per token (D3PM's absorbing process, Austin et al.
    2021). Draws one uniform per token from ``generator``: token i is masked where :math:`u_i \\ge \\alpha_t`.

    Args:
        x0: int64 ``(B, L)`` tokens in ``[0, V)``.
        t: time(s) in [0, 1]: a float or a floating tensor ``()`` or ``(B,)``.
        vocab_size: V; the mask token's id is V.
        schedule: the :class:`MaskSchedule` (default :func:`linear_schedule`).
        generator: optional ``torch.Generator`` on ``x0``'s device.

    Returns:
        int64 ``(B, L)`` tokens in ``[0, V]`` (V = masked), on ``x0``'s device.

    Raises:
        ValueError: ``x0`` not int64 ``(B, L)`` in ``[0, V)``, ``vocab_size`` not a positive integer, ``t`` outside
            [0, 1] or of the wrong shape, ``schedule`` not a :class:`MaskSchedule`.
    """
    _check_x0(x0, vocab_size)
    schedule = _check_schedule(schedule)
    alpha = schedule.alpha(_times(t, len(x0))).to(x0.device).unsqueeze(1)
    u = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64)
    return torch.where(u < alpha, x0, torch.full_like(x0, vocab_size))


def _negative_elbo_sample(model: Denoiser, x0: torch.Tensor, t: torch.Tensor, vocab_size: int,
                                    schedule: MaskSchedule, generator: torch.Generator | None) -> torch.Tensor:
    """The negative-ELBO integrand at one draw of (t, x_t): ``(B,)`` nats (see masked_diffusion_loss)."""
    x_t = q_sample(x0, t, vocab_size, schedule, generator)
    device = _model_device(model, x0.device)
    x0, x_t = x0.to(device), x_t.to(device)
    log_p = _log_probs(model, x_t, vocab_size).gather(-1, x0.unsqueeze(-1)).squeeze(-1)     # (B, L)
    masked_sum = (log_p * (x_t == vocab_size)).sum(dim=1)
    weight = (schedule.d_alpha(t) / (1 - schedule.alpha(t))).to(x0.device)                   # (B,), < 0
    return weight * masked_sum


def masked_diffusion_loss(model: Denoiser, x0: torch.Tensor, vocab_size: int, schedule: MaskSchedule | None = None,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """The continuous-time negative ELBO, one draw of (t, x_t) per sequence, averaged over the batch.

    MDLM (Sahoo et al. 2024), eq. 10 (MD4, Shi et al. 2024, sec. 3): with :math:`t \\sim U(0, 1]` and
    :math:`x_t \\sim q(x_t | x_0)` (:func:`q_sample`),
    :math:`\\frac{\\alpha_t'}{1 - \\alpha_t} \\sum_{i: x_t^i = m} \\log p_\\theta(x_0^i | x_t)` is an unbiased
    estimate of the negative ELBO (positive, nats per sequence); for :func:`linear_schedule` it is
    :math:`\\frac1t \\sum_{masked\\,i} -\\log p_\\theta(x_0^i | x_t)`. Times are drawn as ``1 - u``, u ~ U[0, 1), so
    t > 0 and the weight stays finite. Differentiable in the model's parameters (computed in float64).

    Args:
        model: ``model(x_t) -> logits (B, L, V)`` (e.g. :class:`MaskedDenoiser`).
        x0: int64 ``(B, L)`` clean tokens in ``[0, V)``, on the model's device.
        vocab_size: V (the mask id).
        schedule: default :func:`linear_schedule`.
        generator: optional ``torch.Generator`` on ``x0``'s device (first the B times, then the masks).

    Returns:
        0-d float64 tensor: the mean negative ELBO estimate, nats per sequence.

    Raises:
        ValueError: as :func:`q_sample`, or the model's logits not ``(B, L, V)``.
    """
    _check_x0(x0, vocab_size)
    schedule = _check_schedule(schedule)
    t = 1 - torch.rand(len(x0), generator=generator, device=x0.device, dtype=torch.float64).cpu()
    return _negative_elbo_sample(model, x0, t, vocab_size, schedule, generator).mean()


@torch.no_grad()
def elbo(model: Denoiser, x0: torch.Tensor, vocab_size: int, n_t: int = 64, schedule: MaskSchedule | None = None,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """A Monte Carlo estimate of the ELBO of each sequence, with ``n_t`` stratified times.

    MDLM (Sahoo et al. 2024), eq. 10, with the t-integral estimated at the stratified times
    :math:`t_j = (j + u_j)/n_t`, j = 0..n_t - 1, u_j ~ U(0, 1] (MDLM's low-discrepancy sampling of t), and one mask
    draw at each. Unbiased; converges to :func:`exact_elbo` as ``n_t`` grows.

    Args:
        model: ``model(x_t) -> logits (B, L, V)``; x0: int64 ``(B, L)`` in ``[0, V)``; vocab_size: V.
        n_t: number of times, >= 1.
        schedule: default :func:`linear_schedule`; generator: optional, on ``x0``'s device.

    Returns:
        ``(B,)`` float64 ELBO estimates, nats per sequence (<= 0).

    Raises:
        ValueError: ``n_t`` not a positive integer, or as :func:`masked_diffusion_loss`.
    """
    _check_x0(x0, vocab_size)
    if isinstance(n_t, bool) or not isinstance(n_t, int) or n_t < 1:
        raise ValueError(f"n_t must be a positive integer, got {n_t!r}")
    schedule = _check_schedule(schedule)
    total = 0
    for j in range(n_t):
        u = 1 - torch.rand(len(x0), generator=generator, device=x0.device, dtype=torch.float64).cpu()
        total -= _negative_elbo_sample(model, x0, (j + u) / n_t, vocab_size, schedule, generator)
    return total / n_t


@torch.no_grad()
def exact_elbo(model: Denoiser, x0: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The ELBO of each sequence computed exactly, by enumerating all :math:`2^L - 1` non-empty mask sets.

    The t-integral of MDLM eq. 10 done in closed form (module docstring): for a denoiser that sees ``x_t`` only,
    :math:`\\mathrm{ELBO}(x_0) = \\sum_{M \\ne \\emptyset} \\frac{(|M|-1)!\\,(L-|M|)!}{L!}
    \\sum_{i \\in M} \\log p_\\theta(x_0^i | x_0 \\text{ with } M \\text{ masked})`, the same for every schedule;
    equivalently :math:`E_\\sigma \\sum_i \\log p_\\theta(x_0^{\\sigma(i)} | x_0^{\\sigma(<i)})` over uniformly
    random orders σ (Hoogeboom et al. 2022, sec. 3). It is at most :math:`\\log p(x_0)` of the distribution that the
    sampler with one token per step draws from (Jensen over σ).

    Args:
        model: ``model(x_t) -> logits (B, L, V)``, independent of t; x0: int64 ``(B, L)`` in ``[0, V)``, L <= 12.
        vocab_size: V (the mask id).

    Returns:
        ``(B,)`` float64 ELBOs, nats per sequence.

    Raises:
        ValueError: L > 12 (4,095 mask sets), or as :func:`masked_diffusion_loss`.
    """
    _check_x0(x0, vocab_size)
    length = x0.shape[1]
    if length > MAX_EXACT_LENGTH:
        raise ValueError(f"exact_elbo enumerates 2^L mask sets; needs L <= {MAX_EXACT_LENGTH}, got L={length}")
    masks = torch.tensor(list(itertools.product((False, True), repeat=length))[1:], device=x0.device)  # (S, L)
    sizes = masks.sum(dim=1)
    weights = torch.tensor([math.factorial(k - 1) * math.factorial(length - k) / math.factorial(length)
                            for k in sizes.tolist()], dtype=torch.float64, device=x0.device)
    total = torch.zeros(len(x0), dtype=torch.float64, device=x0.device)
    for mask, weight in zip(masks, weights):
        x_t = torch.where(mask, torch.full_like(x0, vocab_size), x0)
        log_p = _log_probs(model, x_t, vocab_size).gather(-1, x0.unsqueeze(-1)).squeeze(-1)
        total += weight * (log_p * mask).sum(dim=1)
    return total


# ---------------------------------------------------------------------------------------------- sampling
@torch.no_grad()
def sample(model: Denoiser, n: int, length: int, vocab_size: int, steps: int = 64,
           schedule: MaskSchedule | None = None, generator: torch.Generator | None = None,
           device: torch.device | str | None = None, progress: bool = False) -> torch.Tensor:
    """Ancestral unmasking from the all-masked sequence at t = 1 to clean tokens at t = 0.

    MDLM (Sahoo et al. 2024), the reverse unmasking process with the SUBS parameterisation (sec. 3.2): on the grid
    :math:`t_j = j/\\text{steps}`, each step from t to s = t - 1/steps unmasks every still-masked position
    independently with probability :math:`(\\alpha_s - \\alpha_t)/(1 - \\alpha_t)` and draws its token from
    :math:`p_\\theta(\\cdot | x_t)`; visible tokens never change (carry-over unmasking), and the last step
    (:math:`\\alpha_0 = 1`) unmasks everything left. Since the model does not see t, its logits are recomputed only
    after a step that changed ``x_t`` (MDLM's caching of the denoiser's output). With many steps at most one token
    is unmasked per step, so the samples follow the any-order distribution bounded by :func:`exact_elbo`;
    with ``steps=1`` all tokens are drawn at once, independently, from :math:`p_\\theta(\\cdot | \\text{all masked})`.
    Each step draws two ``(n, L)`` uniforms: whether to unmask, and which token (inverse CDF).

    Args:
        model: ``model(x_t) -> logits (n, L, V)``; an ``nn.Module`` is put in eval mode and restored afterwards.
        n: number of sequences; length: L; steps: number of steps (all >= 1).
        vocab_size: V (the mask id).
        schedule: default :func:`linear_schedule`.
        generator: optional ``torch.Generator`` on ``device``.
        device: where to sample; default the model's parameters' device, else the CPU.
        progress: show a tqdm bar over steps.

    Returns:
        int64 ``(n, length)`` tokens in ``[0, V)``.

    Raises:
        ValueError: ``n``, ``length``, ``steps``, ``vocab_size`` not positive integers, a bad ``schedule``, or the
            model's logits not ``(n, L, V)``.
    """
    for name, value in (("n", n), ("length", length), ("steps", steps), ("vocab_size", vocab_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    schedule = _check_schedule(schedule)
    device = _model_device(model, torch.device("cpu")) if device is None else device
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    x = torch.full((n, length), vocab_size, dtype=torch.int64, device=device)
    alphas = schedule.alpha(torch.linspace(0, 1, steps + 1, dtype=torch.float64))
    probs = None
    for j in tqdm(range(steps, 0, -1), desc="unmasking", disable=not progress):
        alpha_t, alpha_s = alphas[j].item(), alphas[j - 1].item()
        p_unmask = 1.0 if j == 1 else (alpha_s - alpha_t) / (1 - alpha_t)
        if probs is None:
            probs = _log_probs(model, x, vocab_size).exp()
        u_unmask = torch.rand(x.shape, generator=generator, device=device, dtype=torch.float64)
        u_token = torch.rand(x.shape, generator=generator, device=device, dtype=torch.float64)
        unmask = (x == vocab_size) & (u_unmask < p_unmask)
        if unmask.any():
            draw = (probs.cumsum(dim=-1) <= u_token.unsqueeze(-1)).sum(dim=-1).clamp(max=vocab_size - 1)
            x = torch.where(unmask, draw, x)
            probs = None
    if isinstance(model, nn.Module):
        model.train(was_training)
    return x


# ------------------------------------------------------------------------------------ a denoiser, training
class MaskedDenoiser(nn.Module):
    """A bidirectional transformer denoiser :math:`x_t \\mapsto` logits of :math:`p_\\theta(x_0^i | x_t)`.

    :class:`dgmcourse.transformer.CausalTransformer` with ``causal=False``, input vocabulary V + 1 (the mask id V)
    and V outputs (the mask is never predicted: MDLM's zero masking probabilities, Sahoo et al. 2024, sec. 3.2).
    It does not see t (module docstring). MDLM uses a DiT-style bidirectional transformer; this is its CPU-sized
    stand-in.

    Args:
        vocab_size: V, >= 1; length: L, the sequence length (>= 1).
        d_model, n_heads, n_layers: as :class:`CausalTransformer`.

    ``forward(x_t)``: int64 ``(B, L)`` in ``[0, V]`` -> logits ``(B, L, V)``.

    Raises:
        ValueError: as :class:`CausalTransformer`.
    """

    def __init__(self, vocab_size: int, length: int, d_model: int = 64, n_heads: int = 4, n_layers: int = 2) -> None:
        super().__init__()
        _check_vocab(vocab_size)
        self.vocab_size = vocab_size
        self.transformer = CausalTransformer(vocab_size + 1, length, d_model, n_heads, n_layers, causal=False,
                                             output_size=vocab_size)

    def forward(self, x_t: torch.Tensor) -> torch.Tensor:
        return self.transformer(x_t)[0]


def train_masked_diffusion(model: nn.Module, x0: torch.Tensor, vocab_size: int, steps: int, batch_size: int = 64,
                           lr: float = 1e-3, schedule: MaskSchedule | None = None,
                           generator: torch.Generator | None = None, progress: bool = True) -> list[float]:
    """Adam on :func:`masked_diffusion_loss` (MDLM's training, Sahoo et al. 2024), learning rate decayed to 0.

    Each step draws ``batch_size`` rows of ``x0`` with replacement, then the times and masks, from ``generator``.

    Args:
        model: e.g. :class:`MaskedDenoiser`, trained in place on its own device, left in eval mode.
        x0: int64 ``(N, L)`` training sequences in ``[0, V)``; vocab_size: V.
        steps, batch_size: positive integers; lr: > 0; schedule: default :func:`linear_schedule`.
        generator: CPU ``torch.Generator`` (seed 0 when None); progress: show a tqdm bar.

    Returns:
        the loss of every step (negative ELBO estimate, nats per sequence, batch mean).

    Raises:
        ValueError: bad ``steps``, ``batch_size`` or ``lr``, or as :func:`masked_diffusion_loss`.
    """
    _check_x0(x0, vocab_size)
    _check_training(steps, batch_size, lr)
    schedule = _check_schedule(schedule)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    cpu_x0 = x0.cpu()

    def step_loss() -> torch.Tensor:
        batch = cpu_x0[torch.randint(len(x0), (batch_size,), generator=generator)]
        return masked_diffusion_loss(model, batch, vocab_size, schedule, generator)

    return _adam_linear_decay(model, step_loss, steps, lr, "train masked diffusion", progress)
