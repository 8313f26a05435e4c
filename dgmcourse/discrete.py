"""Discrete latent variables: a VAE with Bernoulli latents and the gradient estimators it needs.

The reparameterisation trick needs z to be a differentiable function of the parameters and of noise; a
binary code z in {0, 1}^K is not. Patrini's 2017 Deep Learning lecture (University of Amsterdam, "Unsupervised
learning, representation and generative models") names the score-function estimator REINFORCE as the way out.
This module puts it next to the two estimators used in practice, on the same model, so that their bias and
variance can be measured against the exact gradient (the ELBO of a small code space is a finite sum):

* ``"reinforce"``: the score-function estimator (Williams 1992, "Simple statistical gradient-following
  algorithms for connectionist reinforcement learning", eq. 11): unbiased, high variance;
* ``"reinforce_loo"``: the same with the leave-one-out baseline of S >= 2 samples per datum (Kool, van Hoof &
  Welling 2019, "Buy 4 REINFORCE samples, get a baseline for free!", eq. 8): still unbiased, lower variance;
* ``"gumbel_softmax"``: the binary Concrete / Gumbel-softmax relaxation (Maddison, Mnih & Teh 2017, "The
  Concrete Distribution", eq. 21; Jang, Gu & Poole 2017, "Categorical Reparameterization with Gumbel-Softmax"):
  the decoder sees a relaxed code in (0, 1); low variance, biased;
* ``"straight_through"``: the hard code forward, the relaxed code's gradient backward (Jang et al. 2017,
  section 2.2; Bengio, Léonard & Courville 2013): biased.

Encoder q_phi(z|x) = prod_k Bernoulli(z_k; sigmoid(l_k(x))), prior p(z) = Bernoulli(1/2)^K, decoder
p_theta(x|z) Bernoulli on grey levels in [0, 1] (:func:`dgmcourse.vae.log_likelihood`). All values in nats.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from tqdm.auto import tqdm

from dgmcourse.training import start_training, train_epoch
from dgmcourse.vae import log_likelihood

ESTIMATORS = ("reinforce", "reinforce_loo", "gumbel_softmax", "straight_through")
MAX_EXACT_LATENTS = 12


def bernoulli_kl(logits: torch.Tensor) -> torch.Tensor:
    """KL(q || p) between q = prod_k Bernoulli(sigmoid(logits_k)) and the uniform prior Bernoulli(1/2)^K.

    KL = sum_k [q_k log q_k + (1 - q_k) log(1 - q_k)] + K log 2, computed from the logits (stable for large |l|).

    Args:
        logits: ``(B, K)`` encoder logits.

    Returns:
        ``(B,)`` KL in nats, between 0 and K log 2.

    Raises:
        ValueError: if ``logits`` is not 2-D.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, K), got {tuple(logits.shape)}")
    q = torch.sigmoid(logits)
    neg_entropy = q * nn.functional.logsigmoid(logits) + (1 - q) * nn.functional.logsigmoid(-logits)
    return (neg_entropy + math.log(2)).sum(dim=1)


def relaxed_bernoulli(logits: torch.Tensor, temperature: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """A binary Concrete (relaxed Bernoulli) sample sigmoid((logits + L) / temperature), L ~ Logistic(0, 1).

    Maddison, Mnih & Teh 2017, eq. 21 (the distribution of ``torch.distributions.RelaxedBernoulli``; written out
    here so that a ``generator`` can seed it). P(sample > 1/2) = sigmoid(logits) at every temperature, and the
    sample tends to the Bernoulli draw as the temperature tends to 0.

    Args:
        logits: any shape; temperature: > 0.
        generator: optional ``torch.Generator`` on the device of ``logits``.

    Returns:
        Tensor of the shape of ``logits``, values in (0, 1), differentiable in ``logits``.

    Raises:
        ValueError: if ``temperature`` <= 0.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp(1e-6, 1 - 1e-6)
    return torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / temperature)


class BernoulliVAE(nn.Module):
    """A VAE with K binary latents: MLP encoder x -> K logits, MLP decoder z -> logits of x.

    Args:
        x_dim: data dimension D (flattened), >= 1.
        n_latents: K, >= 1.
        hidden: width of the one hidden layer of each network.

    Raises:
        ValueError: if ``x_dim``, ``n_latents`` or ``hidden`` < 1.
    """

    def __init__(self, x_dim: int = 64, n_latents: int = 8, hidden: int = 128) -> None:
        super().__init__()
        if min(x_dim, n_latents, hidden) < 1:
            raise ValueError(f"x_dim, n_latents and hidden must be >= 1, got {x_dim}, {n_latents}, {hidden}")
        self.x_dim, self.n_latents = x_dim, n_latents
        self.encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_latents))
        self.decoder = nn.Sequential(nn.Linear(n_latents, hidden), nn.ReLU(), nn.Linear(hidden, x_dim))

    def _check_x(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.x_dim:
            raise ValueError(f"x must have shape (B, {self.x_dim}), got {tuple(x.shape)}")

    def log_px(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p_theta(x|z) in nats: ``x`` ``(B, D)`` in [0, 1], ``z`` ``(B, K)`` (binary or relaxed) -> ``(B,)``."""
        return log_likelihood(x, self.decoder(z), "bernoulli")


def exact_elbo(model: BernoulliVAE, x: torch.Tensor) -> torch.Tensor:
    """The ELBO E_q[log p(x|z)] - KL(q(z|x) || p(z)) computed exactly, by summing over all 2^K codes.

    Differentiable in every parameter, so its gradient is the exact gradient the estimators estimate.

    Args:
        model: a :class:`BernoulliVAE` with K <= 12 latents.
        x: ``(B, D)`` data in [0, 1].

    Returns:
        ``(B,)`` ELBO in nats.

    Raises:
        ValueError: if K > 12 (4,096 codes) or ``x`` has the wrong shape.
    """
    model._check_x(x)
    k = model.n_latents
    if k > MAX_EXACT_LATENTS:
        raise ValueError(f"exact_elbo enumerates 2^K codes; needs K <= {MAX_EXACT_LATENTS}, got K={k}")
    logits = model.encoder(x)
    codes = torch.tensor(list(itertools.product((0.0, 1.0), repeat=k)), device=x.device)      # (C, K)
    log_q = nn.functional.logsigmoid(logits) @ codes.T + nn.functional.logsigmoid(-logits) @ (1 - codes).T
    x_logits = model.decoder(codes)                                                             # (C, D)
    log_px = x @ nn.functional.logsigmoid(x_logits).T + (1 - x) @ nn.functional.logsigmoid(-x_logits).T
    return (log_q.exp() * log_px).sum(dim=1) - bernoulli_kl(logits)                             # sum over C


def surrogate_elbo(model: BernoulliVAE, x: torch.Tensor, estimator: str, samples: int = 1,
                   temperature: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """A scalar whose gradient is the chosen estimator's estimate of the gradient of the mean ELBO over ``x``.

    Each estimator draws ``samples`` codes per datum; the KL term is exact (a sum over K Bernoullis) in all of
    them, so they differ only in the gradient of E_q[log p(x|z)] with respect to the encoder:

    * ``"reinforce"``: mean_s log p(x|z_s) * grad log q(z_s|x), z_s ~ q hard;
    * ``"reinforce_loo"``: the same with log p(x|z_s) - mean_{s' != s} log p(x|z_s') (needs ``samples`` >= 2);
    * ``"gumbel_softmax"``: log p(x|z~), z~ = :func:`relaxed_bernoulli` at ``temperature``, differentiated
      through z~;
    * ``"straight_through"``: the hard code round(z~) forward, the gradient of z~ backward.

    The decoder's gradient is the pathwise one in every case. The returned value is the ELBO estimate for
    the REINFORCE estimators (their score term is zero in value) and the relaxed ELBO otherwise.

    Args:
        model: a :class:`BernoulliVAE`; x: ``(B, D)`` in [0, 1].
        estimator: one of ``ESTIMATORS``.
        samples: S >= 1 codes per datum (>= 2 for ``"reinforce_loo"``).
        temperature: > 0, for the relaxed estimators.
        generator: optional ``torch.Generator`` on the model's device.

    Returns:
        0-d tensor (nats per datum); maximise it.

    Raises:
        ValueError: unknown ``estimator``, ``samples`` too small, ``temperature`` <= 0, or ``x`` of the wrong
            shape.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if samples < (2 if estimator == "reinforce_loo" else 1):
        raise ValueError(f"samples must be >= {2 if estimator == 'reinforce_loo' else 1} for {estimator!r}, "
                         f"got {samples}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    model._check_x(x)
    logits = model.encoder(x)
    logits_s = logits.expand(samples, *logits.shape)                       # (S, B, K)
    x_s = x.expand(samples, *x.shape).reshape(-1, x.shape[1])              # (S*B, D)
    if estimator.startswith("reinforce"):
        with torch.no_grad():
            z = torch.bernoulli(torch.sigmoid(logits_s), generator=generator)
        log_q = -nn.functional.binary_cross_entropy_with_logits(logits_s, z, reduction="none").sum(dim=2)
        log_px = model.log_px(x_s, z.reshape(-1, z.shape[2])).view(samples, -1)  # (S, B)
        signal = log_px.detach()
        if estimator == "reinforce_loo":
            signal = signal - (signal.sum(dim=0, keepdim=True) - signal) / (samples - 1)
        expected = (log_px + signal * (log_q - log_q.detach())).mean(dim=0)
    else:
        relaxed = relaxed_bernoulli(logits_s, temperature, generator)
        if estimator == "straight_through":
            relaxed = relaxed + ((relaxed > 0.5).float() - relaxed).detach()
        expected = model.log_px(x_s, relaxed.reshape(-1, relaxed.shape[2])).view(samples, -1).mean(dim=0)
    return (expected - bernoulli_kl(logits)).mean()


def encoder_gradients(model: BernoulliVAE, x: torch.Tensor, estimator: str | None, draws: int,
                      samples: int = 1, temperature: float = 0.5,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Repeated estimates of the gradient of the mean ELBO over ``x`` with respect to the encoder's parameters.

    Args:
        model, x, samples, temperature, generator: as :func:`surrogate_elbo`.
        estimator: one of ``ESTIMATORS``, or ``None`` for the exact gradient (:func:`exact_elbo`; ``draws`` = 1).
        draws: number of independent estimates, >= 1.

    Returns:
        ``(draws, P)`` tensor, P = number of encoder parameters; row i is the i-th estimate, flattened.

    Raises:
        ValueError: ``draws`` < 1, or as :func:`surrogate_elbo` / :func:`exact_elbo`.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    params = list(model.encoder.parameters())
    rows = []
    for _ in range(1 if estimator is None else draws):
        value = (exact_elbo(model, x).mean() if estimator is None
                 else surrogate_elbo(model, x, estimator, samples, temperature, generator))
        rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(value, params)]))
    return torch.stack(rows)


def train_bernoulli_vae(model: BernoulliVAE, x_train: torch.Tensor, estimator: str, epochs: int = 20,
                        batch_size: int = 64, lr: float = 1e-3, samples: int = 1, temperature: float = 0.5,
                        device: torch.device | None = None, seed: int = 0,
                        progress: bool = True) -> dict[str, list[float]]:
    """Train with Adam on the chosen estimator's gradient; record the exact ELBO after every epoch.

    Args:
        model: a :class:`BernoulliVAE` (K <= 12, so the exact ELBO can be recorded); moved to ``device``
            (default :func:`dgmcourse.device.get_device`).
        x_train: ``(N, D)`` data in [0, 1].
        estimator, samples, temperature: as :func:`surrogate_elbo`.
        epochs, batch_size, lr: optimisation settings; seed: :func:`seed_everything` before training.
        progress: show a tqdm bar over epochs.

    Returns:
        ``{"train_elbo": [...]}``: the exact ELBO (nats per datum, mean over ``x_train``) after each epoch.

    Raises:
        ValueError: ``epochs``, ``batch_size`` < 1 or ``lr`` <= 0, or as :func:`surrogate_elbo`.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    model._check_x(x_train)
    device, optimizer = start_training(model, lr, seed, device)
    x_train = x_train.to(device)
    history = {"train_elbo": []}
    bar = tqdm(range(epochs), desc=f"train Bernoulli VAE ({estimator})", disable=not progress)
    for _ in bar:
        train_epoch(optimizer, len(x_train), batch_size,
                    lambda idx: {"loss": -surrogate_elbo(model, x_train[idx], estimator, samples, temperature)})
        with torch.no_grad():
            history["train_elbo"].append(exact_elbo(model, x_train).mean().item())
        bar.set_postfix(elbo=f"{history['train_elbo'][-1]:.1f}")
    model.eval()
    return history
