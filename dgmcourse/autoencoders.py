"""Manifolds and auto-encoders: PCA as the linear auto-encoder; undercomplete, denoising and
contractive auto-encoders (Patrini, "Unsupervised learning, representation and generative
models", Deep Learning lecture, University of Amsterdam, 2017; Goodfellow, Bengio & Courville
2016, Sec. 5.8.1, 13.5 and ch. 14).

* :func:`pca` -- principal subspace, eigenvalues of the covariance, and
  :func:`pca_reconstruct`; the mean squared reconstruction error of ``k`` components equals the
  sum of the discarded eigenvalues (Goodfellow et al. Sec. 2.12).
* :func:`subspace_distance` -- how far two ``k``-dimensional subspaces are apart.
* :class:`Autoencoder` -- an MLP (or linear) encoder ``h = f(x)`` and decoder ``r = g(h)``.
  A linear auto-encoder trained on squared error learns the PCA subspace (Baldi & Hornik 1989).
* :func:`corrupt` -- the corruption process ``C(x~|x)`` of a denoising auto-encoder
  (Vincent et al. 2008).
* :func:`contractive_penalty` -- ``||J_f(x)||_F^2``, the squared Frobenius norm of the encoder
  Jacobian (Rifai et al. 2011, Eq. 3), computed exactly with ``torch.func``.
* :func:`train_autoencoder` -- minimise ``L(x, g(f(x~))) + lambda ||J_f(x)||_F^2``.
* :func:`denoising_chain` -- sample a denoising auto-encoder with the Markov chain that alternates
  corruption and denoising (Bengio, Yao, Alain & Vincent 2013).

Reconstruction losses are squared errors summed over pixels, averaged over examples.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import jacrev, vmap
from tqdm.auto import tqdm

from .training import start_training, train_epoch

__all__ = ["pca", "pca_reconstruct", "subspace_distance", "Autoencoder", "corrupt", "contractive_penalty",
           "reconstruction_error", "train_autoencoder"]


def _flat(x, name: str = "x") -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must have shape (N, ...) with N >= 2, got {tuple(x.shape)}")
    return x.reshape(len(x), -1).to(torch.float64)


def pca(x, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Principal component analysis by eigen-decomposition of the covariance.

    ``C = (1/N) sum_n (x_n - m)(x_n - m)^T = U diag(lambda) U^T`` with ``lambda`` sorted in
    decreasing order; the code of ``x`` is ``U_k^T (x - m)`` (Goodfellow et al. 2016, Sec. 2.12
    and 5.8.1). The covariance is normalised by ``N`` (not ``N - 1``) so that the mean squared
    reconstruction error is exactly the sum of the discarded eigenvalues.

    Args:
        x: data ``(N, ...)``, flattened to ``(N, D)``.
        k: number of components, ``1 <= k <= D``.

    Returns:
        ``(mean, components, eigenvalues)``: float64 ``(D,)``, ``(k, D)`` orthonormal rows (the
        principal directions), and all ``D`` eigenvalues ``(D,)`` in decreasing order.

    Raises:
        ValueError: fewer than two examples or ``k`` out of range.
    """
    x = _flat(x)
    d = x.shape[1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d:
        raise ValueError(f"k must be an integer in [1, {d}], got {k!r}")
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / len(x)
    eigenvalues, vectors = torch.linalg.eigh(cov)
    eigenvalues, vectors = eigenvalues.flip(0).clamp_min(0), vectors.flip(1)
    return mean, vectors[:, :k].T.contiguous(), eigenvalues


def pca_reconstruct(x, mean: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """Project onto the principal subspace and back: ``m + U_k U_k^T (x - m)``.

    PCA as a linear auto-encoder with tied weights: encoder ``h = U_k^T (x - m)``, decoder
    ``r = m + U_k h``.

    Args:
        x: ``(N, ...)`` data with ``D`` features each.
        mean: ``(D,)``; components: ``(k, D)`` from :func:`pca`.

    Returns:
        float64 reconstructions with the shape of ``x``.

    Raises:
        ValueError: sizes that do not match.
    """
    x = torch.as_tensor(x)
    flat = x.reshape(len(x), -1).to(torch.float64)
    if mean.shape != (flat.shape[1],) or components.ndim != 2 or components.shape[1] != flat.shape[1]:
        raise ValueError(f"mean must be ({flat.shape[1]},) and components (k, {flat.shape[1]}); "
                         f"got {tuple(mean.shape)} and {tuple(components.shape)}")
    codes = (flat - mean) @ components.T
    return (mean + codes @ components).reshape(x.shape)


def subspace_distance(a, b) -> float:
    """Distance between the row spaces of two ``(k, D)`` matrices.

    ``||P_a - P_b||_F / sqrt(2)`` where ``P`` is the orthogonal projector onto the span of the
    rows; equals ``sqrt(sum_i sin^2 theta_i)`` over the principal angles ``theta_i``
    (Golub & Van Loan 2013, Sec. 6.4.3): 0 for the same subspace, ``sqrt(k)`` for orthogonal ones.

    Args:
        a, b: ``(k, D)`` matrices of full row rank (rows need not be orthonormal).

    Returns:
        float in ``[0, sqrt(k)]``.

    Raises:
        ValueError: shapes that differ or are not 2-D.
    """
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"a and b must be (k, D) matrices of the same shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    qa, qb = torch.linalg.qr(a.T)[0], torch.linalg.qr(b.T)[0]
    return (torch.linalg.norm(qa @ qa.T - qb @ qb.T) / math.sqrt(2)).item()


class Autoencoder(nn.Module):
    """Encoder ``h = f(x)`` and decoder ``r = g(h)`` for images ``(B, *x_shape)``.

    Args:
        x_shape: shape of one input, e.g. ``(1, 28, 28)``.
        code_dim: size of the code ``h``; ``code_dim < D`` makes the auto-encoder undercomplete.
        hidden: width of the one hidden layer of encoder and decoder; ``0`` gives the *linear*
            auto-encoder ``h = W_e x + b_e``, ``r = W_d h + b_d``.
        code_activation: ``"sigmoid"`` (Rifai et al. 2011's contractive AE) or ``"linear"``.

    ``forward(x)`` returns the reconstruction ``(B, *x_shape)`` (no output non-linearity: the
    loss is a squared error).

    Raises:
        ValueError: non-positive ``code_dim``, negative ``hidden`` or unknown ``code_activation``.
    """

    def __init__(self, x_shape=(1, 28, 28), code_dim: int = 32, hidden: int = 256, code_activation: str = "linear"):
        super().__init__()
        if code_dim < 1 or hidden < 0:
            raise ValueError(f"need code_dim >= 1 and hidden >= 0, got {code_dim}, {hidden}")
        if code_activation not in ("linear", "sigmoid"):
            raise ValueError(f"code_activation must be 'linear' or 'sigmoid', got {code_activation!r}")
        self.x_shape = tuple(x_shape)
        d = math.prod(self.x_shape)
        code_act = [nn.Sigmoid()] if code_activation == "sigmoid" else []
        if hidden == 0:
            self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, code_dim), *code_act)
            self.decoder = nn.Sequential(nn.Linear(code_dim, d), nn.Unflatten(1, self.x_shape))
        else:
            self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, code_dim),
                                         *code_act)
            self.decoder = nn.Sequential(nn.Linear(code_dim, hidden), nn.ReLU(), nn.Linear(hidden, d),
                                         nn.Unflatten(1, self.x_shape))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, code_dim)`` of inputs ``(B, *x_shape)``."""
        if tuple(x.shape[1:]) != self.x_shape:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.x_shape))}), got {tuple(x.shape)}")
        return self.encoder(x)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Reconstructions ``(B, *x_shape)`` of codes ``(B, code_dim)``."""
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def corrupt(x: torch.Tensor, kind: str = "gaussian", level: float = 0.3,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``x~ ~ C(x~ | x)``, the corruption process of a denoising auto-encoder.

    Vincent et al. 2008 (Sec. 2.3, masking noise) and Goodfellow et al. 2016, Sec. 14.5.

    Args:
        x: tensor of any shape, values in [0, 1].
        kind: ``"gaussian"`` -- add ``N(0, level^2)`` noise; ``"masking"`` -- set each entry to 0
            with probability ``level``; ``"salt_pepper"`` -- set each entry, with probability
            ``level``, to 0 or 1 (fair coin).
        level: noise standard deviation (gaussian) or corruption probability, ``level >= 0``
            (and ``<= 1`` for the probabilities).
        generator: optional ``torch.Generator`` (CPU tensors).

    Returns:
        corrupted tensor of the shape of ``x`` (values may leave [0, 1] for gaussian noise).

    Raises:
        ValueError: unknown ``kind`` or ``level`` out of range.
    """
    if kind not in ("gaussian", "masking", "salt_pepper"):
        raise ValueError(f"kind must be 'gaussian', 'masking' or 'salt_pepper', got {kind!r}")
    if not level >= 0 or (kind != "gaussian" and level > 1):
        raise ValueError(f"level must be >= 0 (and <= 1 for {kind!r}), got {level!r}")
    if kind == "gaussian":
        return x + level * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    hit = torch.rand(x.shape, generator=generator, device=x.device) < level
    if kind == "masking":
        return x.masked_fill(hit, 0.0)
    coin = (torch.rand(x.shape, generator=generator, device=x.device) < 0.5).to(x.dtype)
    return torch.where(hit, coin, x)


def contractive_penalty(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius norm of the encoder Jacobian, ``||J_f(x)||_F^2 = sum_ij (dh_j/dx_i)^2``.

    Rifai et al. 2011, Eq. 3 (contractive auto-encoder). Computed exactly, per example, with
    ``torch.func.vmap(torch.func.jacrev(f))`` -- no finite differences -- and differentiable,
    so it can be added to the training loss. Cost: one backward pass per code unit.

    Args:
        encoder: module mapping ``(B, *x_shape)`` to codes ``(B, code_dim)``; it must treat
            examples independently (no batch norm in training mode).
        x: inputs ``(B, *x_shape)``.

    Returns:
        ``(B,)`` penalties (squared code units per squared input unit).

    Raises:
        ValueError: ``x`` without a batch dimension.
    """
    if x.ndim < 2:
        raise ValueError(f"x must have a batch dimension, got shape {tuple(x.shape)}")

    def f(single):
        return encoder(single.unsqueeze(0)).squeeze(0)

    jac = vmap(jacrev(f))(x)  # (B, code_dim, *x_shape)
    return jac.pow(2).flatten(1).sum(1)


def reconstruction_error(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> float:
    """Mean over examples of the squared error summed over pixels, ``||x - g(f(x))||^2``.

    Args:
        model: an auto-encoder ``(B, *x_shape) -> (B, *x_shape)``.
        x: data ``(N, *x_shape)``.

    Returns:
        float.
    """
    device = next(model.parameters()).device
    with torch.no_grad():
        total = sum((model(c.to(device)) - c.to(device)).pow(2).flatten(1).sum(1).sum().item()
                    for c in x.split(batch_size))
    return total / len(x)


def train_autoencoder(model: Autoencoder, x_train: torch.Tensor, x_test: torch.Tensor | None = None,
                      epochs: int = 10, batch_size: int = 128, lr: float = 1e-3, noise: str | None = None,
                      noise_level: float = 0.3, contractive: float = 0.0, device: torch.device | None = None,
                      seed: int = 0, progress: bool = True) -> dict[str, list[float]]:
    """Train an (undercomplete / denoising / contractive) auto-encoder with Adam.

    Loss per example: ``||x - g(f(x~))||^2 + contractive * ||J_f(x)||_F^2`` where ``x~ = x``
    or ``x~ ~ C(x~|x)`` (:func:`corrupt`) when ``noise`` is given (Goodfellow et al. 2016,
    Eq. 14.1, 14.9 and 14.18).

    Args:
        model: an :class:`Autoencoder`; moved to ``device`` (default :func:`get_device`).
        x_train: ``(N, *x_shape)``; ``x_test``: optional held-out data (clean reconstruction error).
        epochs, batch_size, lr: optimisation settings.
        noise: ``None`` or a :func:`corrupt` kind; noise_level: its level.
        contractive: weight ``lambda >= 0`` of the contractive penalty.
        seed: passed to :func:`seed_everything`.
        progress: tqdm bar over epochs.

    Returns:
        ``{"train_loss", "train_recon", "train_penalty", "test_recon"}``: per-epoch means per
        example (``test_recon`` empty without ``x_test``).

    Raises:
        ValueError: bad ``epochs``/``batch_size``/``lr``, negative ``contractive``, unknown ``noise``.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    if contractive < 0:
        raise ValueError(f"contractive must be >= 0, got {contractive}")
    if noise is not None:
        corrupt(x_train[:1], noise, noise_level)  # validates kind and level
    device, optimizer = start_training(model, lr, seed, device)
    history = {"train_loss": [], "train_recon": [], "train_penalty": [], "test_recon": []}

    def losses(idx):
        x = x_train[idx].to(device)
        x_in = corrupt(x, noise, noise_level) if noise else x
        recon = (model(x_in) - x).pow(2).flatten(1).sum(1).mean()
        penalty = contractive_penalty(model.encoder, x).mean() if contractive > 0 else torch.zeros((), device=device)
        return {"loss": recon + contractive * penalty, "recon": recon, "penalty": penalty}

    for _ in tqdm(range(epochs), desc="train auto-encoder", disable=not progress):
        means = train_epoch(optimizer, len(x_train), batch_size, losses)
        for key in ("loss", "recon", "penalty"):
            history[f"train_{key}"].append(means[key])
        if x_test is not None:
            history["test_recon"].append(reconstruction_error(model, x_test))
    model.eval()
    return history


def denoising_chain(denoiser, x0: torch.Tensor, steps: int, kind: str = "gaussian", level: float = 0.3,
                    sample_std: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Run the Markov chain of a denoising auto-encoder: corrupt, then denoise, ``steps`` times.

    Bengio, Yao, Alain & Vincent, "Generalized Denoising Auto-Encoders as Generative Models",
    NIPS 2013 (the sampling chain and its Theorem 1): starting from ``x_0``,

        ``x~_t ~ C(x~ | x_t)``,   ``x_{t+1} ~ P_theta(x | x~_t) = N(r(x~_t), sample_std^2 I)``,

    where ``C`` is :func:`corrupt` with ``kind`` and ``level`` (use the corruption the auto-encoder
    was trained with) and ``r`` is the denoiser. A squared-error reconstruction is the log-likelihood
    of a Gaussian ``P_theta(x|x~)`` with mean ``r(x~)``; ``sample_std = 0`` keeps only its mean (the
    deterministic chain ``x_{t+1} = r(x~_t)``). If ``P_theta(x|x~)`` is a consistent estimator of the
    true ``P(x|x~)`` and the chain is ergodic, its stationary distribution tends to the data
    distribution. Worked case: data ``N(mu, tau^2)``, Gaussian corruption ``level = s`` and the exact
    posterior (``r(x~) = mu + k (x~ - mu)``, ``sample_std^2 = k s^2``, ``k = tau^2 / (tau^2 + s^2)``)
    give the stationary law ``N(mu, tau^2)``; with ``sample_std = 0`` its variance shrinks to
    ``tau^2 k / (1 + k)``. From a fixed ``x_0`` the chain's mean is ``mu + k^t (x_0 - mu)`` and its
    variance ``v_inf (1 - k^(2t))`` after ``t`` steps, ``v_inf`` the stationary variance.

    Args:
        denoiser: callable ``(B, *x_shape) -> (B, *x_shape)``, e.g. a trained :class:`Autoencoder`
            (called under ``torch.no_grad``; put it in eval mode yourself).
        x0: starting states ``(B, *x_shape)`` (B chains), on the denoiser's device.
        steps: number of transitions, ``>= 0``.
        kind, level: the corruption process, as in :func:`corrupt`.
        sample_std: standard deviation (pixel units) of the Gaussian ``P_theta(x|x~)``, ``>= 0``.
        generator: optional ``torch.Generator`` on ``x0``'s device, for a reproducible chain.

    Returns:
        ``(steps + 1, B, *x_shape)`` tensor of the states ``x_0, ..., x_steps`` (``x_0`` is a copy of
        ``x0``), on ``x0``'s device and in its dtype.

    Raises:
        ValueError: ``x0`` without a batch dimension, negative or non-integer ``steps``, negative
        ``sample_std``, or an unknown ``kind`` / ``level`` out of range (from :func:`corrupt`).
    """
    x0 = torch.as_tensor(x0)
    if x0.ndim < 2:
        raise ValueError(f"x0 must have shape (B, *x_shape), got {tuple(x0.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not sample_std >= 0:
        raise ValueError(f"sample_std must be >= 0, got {sample_std!r}")
    corrupt(x0[:1], kind, level)  # validates kind and level before any work
    states = [x0.detach().clone()]
    x = states[0]
    with torch.no_grad():
        for _ in range(steps):
            x = denoiser(corrupt(x, kind, level, generator=generator)).to(x0.dtype)
            if sample_std > 0:
                x = x + sample_std * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            states.append(x)
    return torch.stack(states)
