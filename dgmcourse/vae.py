"""Variational auto-encoders: reparameterisation, the ELBO, the IWAE bound, models and training.

Notation follows the course (Grisi & Darcet's 2020 talk on Arvanitidis, Hansen & Hauberg,
"Latent Space Oddity: on the Curvature of Deep Generative Models", 2018; Patrini,
"Unsupervised learning, representation and generative models", Deep Learning lecture,
University of Amsterdam, 2017): encoder q_phi(z|x) = N(mu, diag(exp(logvar))),
prior p(z) = N(0, I), decoder p_theta(x|z). All log-densities are in nats, per sample (summed
over data and latent dimensions, not averaged).

Sources: Kingma & Welling 2013, "Auto-Encoding Variational Bayes" (ELBO eq. 3, reparameterisation
section 2.4, Gaussian KL appendix B, eq. 10); Burda, Grosse & Salakhutdinov 2015, "Importance Weighted
Autoencoders" (eq. 8); Williams 1992 for the score-function (REINFORCE) estimator.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

from dgmcourse.training import start_training, train_epoch

LIKELIHOODS = ("bernoulli", "gaussian")
_LOG_2PI = math.log(2 * math.pi)


def _check_gaussian_params(mu: torch.Tensor, logvar: torch.Tensor) -> None:
    if mu.dim() != 2:
        raise ValueError(f"mu must have shape (B, d), got {tuple(mu.shape)}")
    if logvar.shape != mu.shape:
        raise ValueError(f"logvar must have the shape of mu {tuple(mu.shape)}, got {tuple(logvar.shape)}")


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample z ~ N(mu, diag(exp(logvar))) as a differentiable function of (mu, logvar).

    z = mu + exp(logvar / 2) * eps with eps ~ N(0, I) (Kingma & Welling 2013, section 2.4).

    Args:
        mu: means, shape ``(B, d)``.
        logvar: log-variances, shape ``(B, d)``.
        generator: optional ``torch.Generator`` for eps.

    Returns:
        z of shape ``(B, d)``.

    Raises:
        ValueError: if ``mu`` is not 2-D or ``logvar`` has another shape.
    """
    _check_gaussian_params(mu, logvar)
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Analytic KL(q(z|x) || p(z)) between N(mu, diag(exp(logvar))) and N(0, I).

    KL = 1/2 * sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j)  (Kingma & Welling 2013, appendix B).

    Args:
        mu, logvar: shape ``(B, d)``.

    Returns:
        KL per sample in nats, shape ``(B,)``.

    Raises:
        ValueError: if the shapes are not both ``(B, d)``.
    """
    _check_gaussian_params(mu, logvar)
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def log_likelihood(x: torch.Tensor, decoder_output: torch.Tensor, likelihood: str = "bernoulli",
                   scale: float = 1.0) -> torch.Tensor:
    """log p_theta(x|z) per sample, summed over all data dimensions.

    Args:
        x: data, shape ``(B, ...)``; for ``"bernoulli"`` values must lie in [0, 1]
            (grey levels are used as soft targets, as is common on MNIST).
        decoder_output: same shape as ``x``: logits for ``"bernoulli"`` (numerically stable,
            ``binary_cross_entropy_with_logits``), means for ``"gaussian"``.
        likelihood: ``"bernoulli"`` or ``"gaussian"``.
        scale: standard deviation of the Gaussian likelihood (ignored for Bernoulli).

    Returns:
        log-likelihood in nats, shape ``(B,)``.

    Raises:
        ValueError: unknown ``likelihood``, mismatched shapes, Bernoulli ``x`` outside [0, 1],
            or ``scale`` <= 0.
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    if decoder_output.shape != x.shape:
        raise ValueError(f"decoder_output must have the shape of x {tuple(x.shape)}, "
                         f"got {tuple(decoder_output.shape)}")
    if likelihood == "bernoulli":
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError("x must hold probabilities in [0, 1] for a Bernoulli likelihood")
        log_px = -nn.functional.binary_cross_entropy_with_logits(decoder_output, x, reduction="none")
    else:
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        log_px = -0.5 * (((x - decoder_output) / scale).pow(2) + _LOG_2PI) - math.log(scale)
    return log_px.flatten(start_dim=1).sum(dim=1)


def elbo(x: torch.Tensor, x_logits: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
         likelihood: str = "bernoulli", beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-sample estimate of the ELBO = E_q[log p(x|z)] - beta * KL(q(z|x) || p(z)).

    ``x_logits`` is the decoder's output for one z ~ q(z|x) (reparameterised); the KL term is
    analytic. beta = 1 is the ELBO of Kingma & Welling 2013 (eq. 10); beta != 1 is the beta-VAE
    objective of Higgins et al. 2017 (eq. 4).

    Args:
        x: data, shape ``(B, ...)``.
        x_logits: decoder output for x, same shape as ``x``.
        mu, logvar: encoder outputs, shape ``(B, d)``.
        likelihood: ``"bernoulli"`` or ``"gaussian"`` (see :func:`log_likelihood`).
        beta: weight of the KL term, >= 0.

    Returns:
        ``(elbo, reconstruction, kl)``, each of shape ``(B,)`` in nats, with
        ``elbo = reconstruction - beta * kl``.

    Raises:
        ValueError: mismatched shapes, batch sizes that differ, or ``beta`` < 0.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if mu.shape[0] != x.shape[0]:
        raise ValueError(f"mu has batch size {mu.shape[0]} but x has {x.shape[0]}")
    reconstruction = log_likelihood(x, x_logits, likelihood)
    kl = gaussian_kl(mu, logvar)
    return reconstruction - beta * kl, reconstruction, kl


def _log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension."""
    return -0.5 * ((z - mu).pow(2) / logvar.exp() + logvar + _LOG_2PI).sum(dim=-1)


@torch.no_grad()
def iwae_bound(model: "VAE", x: torch.Tensor, k: int, batch_size: int = 50,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Importance-weighted estimate of log p(x) (Burda et al. 2015, eq. 8).

    L_k(x) = log (1/k) sum_{i=1..k} p(x, z_i) / q(z_i|x),  z_i ~ q(z|x),
    computed with logsumexp. L_1 is the ELBO; L_k increases with k towards log p(x).

    Args:
        model: a :class:`VAE` (``encode``, ``decode``, ``likelihood``).
        x: data, shape ``(B, ...)`` matching the model's input shape.
        k: number of importance samples, >= 1.
        batch_size: data points processed at once (memory grows as batch_size * k).

    Returns:
        Estimates of log p(x) in nats, shape ``(B,)``.

    Raises:
        ValueError: if ``k`` < 1 or ``batch_size`` < 1.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    bounds = []
    for chunk in x.split(batch_size):
        chunk = chunk.to(device)
        mu, logvar = model.encode(chunk)
        eps = torch.randn((k, *mu.shape), generator=generator, dtype=mu.dtype).to(device)
        z = mu + torch.exp(0.5 * logvar) * eps  # (k, B, d)
        decoded = model.decode(z.flatten(0, 1))  # (k*B, ...)
        log_px = log_likelihood(chunk.repeat(k, *[1] * (chunk.dim() - 1)), decoded, model.likelihood)
        log_pz = _log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
        log_w = log_px.view(k, -1) + log_pz - _log_normal(z, mu, logvar)
        bounds.append(torch.logsumexp(log_w, dim=0) - math.log(k))
    return torch.cat(bounds).cpu()


class VAE(nn.Module):
    """Base class: Gaussian encoder q(z|x), standard normal prior, decoder returning logits/means.

    Subclasses define ``encoder`` (x -> 2*z_dim features) and ``decoder`` (z -> x_shape).
    """

    def __init__(self, x_shape: tuple[int, ...], z_dim: int, likelihood: str) -> None:
        super().__init__()
        if z_dim < 1:
            raise ValueError(f"z_dim must be >= 1, got {z_dim}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        self.x_shape, self.z_dim, self.likelihood = tuple(x_shape), z_dim, likelihood

    def _check_x(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.x_shape:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.x_shape))}), got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x ``(B, *x_shape)`` -> (mu, logvar), each ``(B, z_dim)``. Raises ValueError on a wrong shape."""
        self._check_x(x)
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z ``(B, z_dim)`` -> logits (Bernoulli) or means (Gaussian) of shape ``(B, *x_shape)``."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (B, {self.z_dim}), got {tuple(z.shape)}")
        return self.decoder(z).view(-1, *self.x_shape)

    def forward(self, x: torch.Tensor):
        """Returns ``(x_logits, mu, logvar, z)`` for one reparameterised z ~ q(z|x)."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar)
        return self.decode(z), mu, logvar, z

    def elbo(self, x: torch.Tensor, beta: float = 1.0):
        """``(elbo, reconstruction, kl)`` per sample, shape ``(B,)``, nats (see :func:`elbo`)."""
        x_logits, mu, logvar, _ = self(x)
        return elbo(x, x_logits, mu, logvar, self.likelihood, beta)

    def mean_image(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z]: sigmoid of the logits (Bernoulli) or the mean (Gaussian), shape ``(B, *x_shape)``."""
        out = self.decode(z)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode n draws z ~ N(0, I): mean images of shape ``(n, *x_shape)``."""
        device = next(self.parameters()).device
        z = torch.randn((n, self.z_dim), generator=generator).to(device)
        return self.mean_image(z)


class MLPVAE(VAE):
    """Fully connected VAE (Kingma & Welling 2013, appendix C) with two hidden ReLU layers.

    Args:
        x_shape: shape of one datum, e.g. ``(1, 28, 28)``; it is flattened internally.
        z_dim: latent dimension d.
        hidden: width of the hidden layers.
        likelihood: ``"bernoulli"`` (decoder returns logits) or ``"gaussian"`` (means).
    """

    def __init__(self, x_shape=(1, 28, 28), z_dim: int = 2, hidden: int = 512, likelihood: str = "bernoulli"):
        super().__init__(x_shape, z_dim, likelihood)
        x_dim = math.prod(self.x_shape)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(x_dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z_dim))
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, x_dim))


class ConvVAE(VAE):
    """Small convolutional VAE for ``(1, 28, 28)`` images: two stride-2 convolutions each way.

    Args:
        z_dim: latent dimension d.
        channels: channels of the first convolution (the second has twice as many).
        likelihood: ``"bernoulli"`` or ``"gaussian"``.
    """

    def __init__(self, z_dim: int = 16, channels: int = 32, likelihood: str = "bernoulli"):
        super().__init__((1, 28, 28), z_dim, likelihood)
        c = channels
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1), nn.ReLU(), nn.Conv2d(c, 2 * c, 4, 2, 1), nn.ReLU(),  # 28 -> 14 -> 7
            nn.Flatten(), nn.Linear(2 * c * 7 * 7, 2 * z_dim))
        self.decoder = nn.Sequential(
            nn.Linear(z_dim, 2 * c * 7 * 7), nn.ReLU(), nn.Unflatten(1, (2 * c, 7, 7)),
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(c, 1, 4, 2, 1))


@torch.no_grad()
@torch.no_grad()
def encoder_means(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """The encoder means mu(x) of a VAE, ``(N, z_dim)`` on the model's device: ``model.encode`` in eval mode on
    chunks of ``batch_size`` images ``(N, *x_shape)``; the model's training mode is restored afterwards, also when
    encoding raises. Used for the mean representation (Locatello et al. 2019, Sec. 2) and latent diffusion's codes
    (Rombach et al. 2022, sec. 3).

    Raises:
        ValueError: from ``model.encode`` when ``x`` has the wrong shape.
    """
    device, was_training = next(model.parameters()).device, model.training
    model.eval()
    try:
        return torch.cat([model.encode(chunk.to(device))[0] for chunk in x.split(batch_size)])
    finally:
        model.train(was_training)


def evaluate_elbo(model: VAE, x: torch.Tensor, beta: float = 1.0, batch_size: int = 500) -> float:
    """Mean one-sample ELBO (nats per datum) of ``model`` on ``x`` ``(N, *x_shape)``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = sum(model.elbo(chunk.to(device), beta)[0].sum().item() for chunk in x.split(batch_size))
    model.train(was_training)
    return total / len(x)


def train_vae(model: VAE, x_train: torch.Tensor, x_test: torch.Tensor | None = None, epochs: int = 10,
              batch_size: int = 128, lr: float = 1e-3, beta: float = 1.0, device: torch.device | None = None,
              seed: int = 0, progress: bool = True, penalty=None,
              penalty_weight: float = 1.0) -> dict[str, list[float]]:
    """Maximise the (beta-)ELBO with Adam, one reparameterised sample per datum, optionally regularised.

    Args:
        model: a :class:`VAE`; moved to ``device`` (default :func:`dgmcourse.device.get_device`).
        x_train: training data ``(N, *x_shape)``; ``x_test``: optional held-out data.
        epochs, batch_size, lr: optimisation settings (Kingma & Ba's Adam).
        beta: KL weight (1 = ELBO; beta-VAE otherwise).
        seed: seeds initialisation order, shuffling and sampling via :func:`seed_everything`.
        progress: show a tqdm bar over epochs.
        penalty: optional regulariser, a function of the minibatch's encoder means ``mu`` ``(B, z_dim)``
            returning a scalar tensor (e.g. :func:`dgmcourse.geometry.mixup_jacobian_penalty`); the loss
            becomes ``-ELBO + penalty_weight * penalty(mu)``.
        penalty_weight: its weight (a finite number >= 0); with 0 the penalty is only recorded (computed
            without gradients), and the run is the same as without ``penalty``.

    Returns:
        History of per-epoch means in nats per datum: ``"train_elbo"``, ``"train_recon"``,
        ``"train_kl"`` (averaged over the epoch's mini-batches) and ``"test_elbo"`` (empty
        without ``x_test``); with ``penalty``, also ``"train_penalty"`` (the unweighted penalty).

    Raises:
        ValueError: if ``epochs`` < 1, ``batch_size`` < 1, ``lr`` <= 0, ``penalty`` not callable,
            ``penalty_weight`` not a finite number >= 0, or data of the wrong shape.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    if penalty is not None and not callable(penalty):
        raise ValueError(f"penalty must be None or a function of the encoder means, got {penalty!r}")
    if (isinstance(penalty_weight, bool) or not isinstance(penalty_weight, (int, float))
            or not 0 <= penalty_weight < math.inf):
        raise ValueError(f"penalty_weight must be a finite number >= 0, got {penalty_weight!r}")
    model._check_x(x_train)
    device, optimizer = start_training(model, lr, seed, device)
    keys = ("elbo", "recon", "kl") + (("penalty",) if penalty is not None else ())
    history = {f"train_{key}": [] for key in keys} | {"test_elbo": []}
    bar = tqdm(range(epochs), desc="train VAE", disable=not progress)

    def losses(idx):
        x = x_train[idx].to(device)
        x_logits, mu, logvar, _ = model(x)
        value, recon, kl = elbo(x, x_logits, mu, logvar, model.likelihood, beta)
        out = {"loss": -value.mean(), "elbo": value.mean(), "recon": recon.mean(), "kl": kl.mean()}
        if penalty is not None:
            with torch.set_grad_enabled(penalty_weight > 0):  # weight 0: only recorded
                out["penalty"] = penalty(mu)
            if penalty_weight > 0:
                out["loss"] = out["loss"] + penalty_weight * out["penalty"]
        return out

    for _ in bar:
        means = train_epoch(optimizer, len(x_train), batch_size, losses)
        for key in keys:
            history[f"train_{key}"].append(means[key])
        if x_test is not None:
            history["test_elbo"].append(evaluate_elbo(model, x_test, beta))
        bar.set_postfix(elbo=f"{history['train_elbo'][-1]:.1f}")
    model.eval()
    return history


def latent_grid(n: int, z_range: float = 0.95) -> torch.Tensor:
    """The 2-D latent grid of Kingma & Welling 2013 (figure 4): equally spaced quantiles
    of the unit square mapped through the inverse Gaussian CDF.

    Args:
        n: points per axis, >= 2.
        z_range: the quantiles span [1 - z_range, z_range], in (0.5, 1).

    Returns:
        Tensor ``(n * n, 2)``, row-major with the first coordinate varying along a row and the
        second decreasing down the rows, so that decoding it and drawing with ``nrow=n``
        shows the manifold with the usual orientation.

    Raises:
        ValueError: if ``n`` < 2 or ``z_range`` outside (0.5, 1).
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    if not 0.5 < z_range < 1:
        raise ValueError(f"z_range must lie in (0.5, 1), got {z_range}")
    values = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(1 - z_range, z_range, n))
    rows, cols = torch.meshgrid(values.flip(0), values, indexing="ij")
    return torch.stack([cols.flatten(), rows.flatten()], dim=1)


def reparameterization_gradient(f, mu: float, sigma: float, n: int,
                                generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample pathwise estimates of d/dmu E_{z ~ N(mu, sigma^2)}[f(z)].

    z = mu + sigma * eps, so each estimate is f'(z) (Kingma & Welling 2013, section 2.4).

    Args:
        f: differentiable scalar function applied elementwise to a tensor.
        mu, sigma: parameters of the Gaussian, sigma > 0.
        n: number of samples, >= 1.

    Returns:
        Tensor ``(n,)`` of single-sample gradient estimates (their mean estimates the gradient).

    Raises:
        ValueError: if ``sigma`` <= 0 or ``n`` < 1.
    """
    if sigma <= 0 or n < 1:
        raise ValueError(f"need sigma > 0 and n >= 1, got sigma={sigma}, n={n}")
    mu_t = torch.full((n,), float(mu), requires_grad=True)
    z = mu_t + sigma * torch.randn(n, generator=generator)
    (grad,) = torch.autograd.grad(f(z).sum(), mu_t)
    return grad


def score_function_gradient(f, mu: float, sigma: float, n: int,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample score-function (REINFORCE, Williams 1992) estimates of d/dmu E_{N(mu, sigma^2)}[f(z)].

    Each estimate is f(z) * d/dmu log N(z; mu, sigma^2) = f(z) (z - mu) / sigma^2; f need not be
    differentiable (this is what makes it usable for discrete latents), but its variance is larger.

    Args / Returns / Raises: as :func:`reparameterization_gradient`.
    """
    if sigma <= 0 or n < 1:
        raise ValueError(f"need sigma > 0 and n >= 1, got sigma={sigma}, n={n}")
    z = mu + sigma * torch.randn(n, generator=generator)
    with torch.no_grad():
        return f(z) * (z - mu) / sigma**2
