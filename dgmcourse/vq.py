"""Vector quantisation and the VQ-VAE: discrete codes learned with a straight-through gradient.

The VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation Learning", NeurIPS) maps an
image to a grid of encoder vectors :math:`z_e(x) \\in R^D` and replaces each by its nearest entry of a codebook
:math:`e_1, ..., e_K` (their eq. 1-2, squared Euclidean distance):

.. math:: k = \\arg\\min_j \\|z_e - e_j\\|_2^2, \\qquad z_q = e_k.

The argmin has no gradient, so the decoder's gradient with respect to :math:`z_q` is copied to :math:`z_e`
(straight-through, sec. 3.2): the forward value is :math:`z_e + \\mathrm{sg}[z_q - z_e] = z_q`, its derivative the
identity. The training loss is their eq. 3,

.. math:: L = -\\log p(x | z_q(x)) + \\|\\mathrm{sg}[z_e(x)] - e\\|_2^2 + \\beta\\,\\|z_e(x) - \\mathrm{sg}[e]\\|_2^2,

the *codebook loss* moving the codes towards the encoder outputs and the *commitment loss* (β = 0.25 in the paper)
keeping the encoder near its codes. The codebook may instead follow exponential moving averages of the encoder
outputs assigned to each code (van den Oord et al. 2017, App. A.1, eqs. 6-8; used by Razavi, van den Oord &
Vinyals 2019, "Generating Diverse High-Fidelity Images with VQ-VAE-2", NeurIPS): :class:`EMACodebook`.

Unused ("dead") codes get no gradient and no EMA update; :func:`restart_dead_codes` moves them onto random encoder
outputs (the "random restarts for embeddings" of Dhariwal et al. 2020, "Jukebox: A Generative Model for Music"), and
:func:`codebook_usage` and :func:`codebook_perplexity` measure how many codes are in use.

Conventions: encoder outputs ``z_e`` are float ``(N, D)`` (N vectors) or channel-first grids ``(B, D, H, W)``;
a codebook is ``(K, D)``; indices are int64 ``(N,)`` or ``(B, H, W)``; losses are mean squared distances per
vector (summed over D, averaged over vectors); log-likelihoods and entropies are in nats. The course's 7x7 grids of
indices are the tokens of :mod:`dgmcourse.transformer` (a learned prior over codes, van den Oord et al. 2017,
sec. 3.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dgmcourse.training import train_epoch
from dgmcourse.vae import log_likelihood

__all__ = ["quantize", "EMACodebook", "codebook_usage", "codebook_perplexity", "restart_dead_codes", "VQVAE",
           "train_vqvae"]


# ------------------------------------------------------------------------------------------------ checks
def _check_codebook(codebook) -> None:
    if not (torch.is_tensor(codebook) and codebook.is_floating_point() and codebook.dim() == 2 and codebook.numel()):
        raise ValueError(f"codebook must be a non-empty floating tensor (K, D), got "
                         f"{getattr(codebook, 'dtype', None)} {tuple(getattr(codebook, 'shape', ()))}")


def _flatten(z_e, codebook: torch.Tensor) -> torch.Tensor:
    """``z_e`` ``(N, D)`` or ``(B, D, H, W)`` as ``(N, D)`` rows (channel-last), checked against the codebook."""
    _check_codebook(codebook)
    if not (torch.is_tensor(z_e) and z_e.is_floating_point() and z_e.dim() in (2, 4) and z_e.numel()):
        raise ValueError(f"z_e must be a non-empty floating tensor (N, D) or (B, D, H, W), got "
                         f"{getattr(z_e, 'dtype', None)} {tuple(getattr(z_e, 'shape', ()))}")
    if z_e.shape[1] != codebook.shape[1]:
        raise ValueError(f"z_e must have D = {codebook.shape[1]} channels (the codebook's width) in dim 1, got "
                         f"shape {tuple(z_e.shape)}")
    return z_e if z_e.dim() == 2 else z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])


def _unflatten(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_flatten`: ``(N, ...)`` rows back to ``like``'s layout (``(B, ..., H, W)`` for grids)."""
    if like.dim() == 2:
        return rows
    b, _, h, w = like.shape
    out = rows.reshape(b, h, w, *rows.shape[1:])
    return out.permute(0, 3, 1, 2) if rows.dim() == 2 else out


def _check_indices(indices, n_codes) -> torch.Tensor:
    if isinstance(n_codes, bool) or not isinstance(n_codes, int) or n_codes < 1:
        raise ValueError(f"K must be a positive integer, got {n_codes!r}")
    if not (torch.is_tensor(indices) and indices.dtype == torch.int64 and indices.numel()):
        raise ValueError(f"indices must be a non-empty int64 tensor, got {getattr(indices, 'dtype', None)} "
                         f"{tuple(getattr(indices, 'shape', ()))}")
    if indices.min() < 0 or indices.max() >= n_codes:
        raise ValueError(f"indices must lie in [0, {n_codes}), got values in [{indices.min().item()}, "
                         f"{indices.max().item()}]")
    return indices.flatten()


# ------------------------------------------------------------------------------------------ quantisation
def quantize(z_e: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                   torch.Tensor]:
    """Nearest-code quantisation with the straight-through gradient and the two VQ losses.

    van den Oord et al. (2017), eqs. 1-3: :math:`k = \\arg\\min_j \\|z_e - e_j\\|^2` (``torch.cdist``; ties go to the
    lowest index), output :math:`z_e + \\mathrm{sg}[e_k - z_e]` (equal to :math:`e_k`, with gradient 1 with respect
    to :math:`z_e` and none to the codebook), codebook loss :math:`\\|\\mathrm{sg}[z_e] - e_k\\|^2` (gradient to the
    codebook only) and commitment loss :math:`\\|z_e - \\mathrm{sg}[e_k]\\|^2` (gradient to the encoder only). The two
    losses have the same value; each is the squared distance summed over the D coordinates and **averaged over the N
    vectors** (for a grid, N = B H W: multiply by H W for the paper's per-image sum).

    Args:
        z_e: encoder outputs, float ``(N, D)`` or channel-first ``(B, D, H, W)``.
        codebook: float ``(K, D)`` codes :math:`e_j`.

    Returns:
        ``(z_q, indices, codebook_loss, commitment_loss)``: ``z_q`` shaped like ``z_e`` (straight-through),
        ``indices`` int64 ``(N,)`` or ``(B, H, W)`` in ``[0, K)``, the losses 0-d tensors (squared ``z_e`` units).

    Raises:
        ValueError: ``z_e`` not a floating ``(N, D)`` / ``(B, D, H, W)`` tensor with the codebook's D, or
            ``codebook`` not a floating ``(K, D)`` tensor.
    """
    rows = _flatten(z_e, codebook)
    indices = torch.cdist(rows.detach(), codebook.detach()).argmin(dim=1)
    e = codebook[indices]                                                       # (N, D)
    codebook_loss = (rows.detach() - e).pow(2).sum(dim=1).mean()
    commitment_loss = (rows - e.detach()).pow(2).sum(dim=1).mean()
    z_q = _unflatten(rows + (e - rows).detach(), z_e)
    return z_q, _unflatten(indices, z_e), codebook_loss, commitment_loss


class EMACodebook(nn.Module):
    """A codebook updated by exponential moving averages of its assigned encoder outputs, with Laplace smoothing.

    van den Oord et al. (2017), App. A.1, eqs. 6-8: with :math:`n_j` the number of the batch's vectors assigned to
    code j and :math:`s_j` their sum,

    .. math:: N_j \\leftarrow \\gamma N_j + (1 - \\gamma) n_j, \\quad m_j \\leftarrow \\gamma m_j + (1 - \\gamma) s_j,
              \\quad e_j = m_j / \\hat N_j,

    where :math:`\\hat N_j = (N_j + \\epsilon) / (n + K\\epsilon) \\cdot n`, :math:`n = \\sum_j N_j`, is the
    Laplace-smoothed count (additive smoothing that keeps :math:`\\hat N_j > 0` and :math:`\\sum_j \\hat N_j = n`, as
    in the VQ-VAE's public Sonnet implementation) used by Razavi et al. (2019). The state starts as if every code had
    been assigned once to itself: :math:`N_j = 1`, :math:`m_j = e_j`. A code that stops being used decays towards 0
    as :math:`\\gamma^t`, the failure :func:`restart_dead_codes` repairs.

    Args:
        n_codes: K >= 1; code_dim: D >= 1.
        decay: γ in [0, 1); eps: ε > 0.
        generator: optional CPU ``torch.Generator`` for the initial codes, drawn from N(0, 1).

    Buffers: ``embedding`` ``(K, D)`` (the codes e), ``counts`` ``(K,)`` (N), ``sums`` ``(K, D)`` (m).

    Raises:
        ValueError: ``n_codes`` or ``code_dim`` not positive integers, ``decay`` outside [0, 1), ``eps`` <= 0.
    """

    def __init__(self, n_codes: int, code_dim: int, decay: float = 0.99, eps: float = 1e-5,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        for name, value in (("n_codes", n_codes), ("code_dim", code_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(decay, (int, float)) and 0 <= decay < 1):
            raise ValueError(f"decay must lie in [0, 1), got {decay!r}")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.decay, self.eps = float(decay), float(eps)
        codes = torch.randn(n_codes, code_dim, generator=generator)
        self.register_buffer("embedding", codes)
        self.register_buffer("counts", torch.ones(n_codes))
        self.register_buffer("sums", codes.clone())

    @torch.no_grad()
    def update(self, z_e: torch.Tensor, indices: torch.Tensor) -> None:
        """One EMA step (eqs. 6-8) from a batch's encoder outputs and their code indices; updates the buffers.

        Args:
            z_e: float ``(N, D)`` or ``(B, D, H, W)`` encoder outputs.
            indices: int64 ``(N,)`` or ``(B, H, W)`` codes assigned to them (from :func:`quantize`).

        Raises:
            ValueError: shapes that do not match the codebook or each other, indices outside ``[0, K)``.
        """
        rows = _flatten(z_e, self.embedding).detach().to(self.sums.dtype)
        flat = _check_indices(indices, len(self.embedding))
        if len(flat) != len(rows):
            raise ValueError(f"indices must give one code per vector of z_e ({len(rows)}), got {len(flat)}")
        one_hot = F.one_hot(flat, len(self.embedding)).to(rows.dtype)                 # (N, K)
        self.counts.mul_(self.decay).add_((1 - self.decay) * one_hot.sum(dim=0))
        self.sums.mul_(self.decay).add_((1 - self.decay) * one_hot.T @ rows)
        total = self.counts.sum()
        smoothed = (self.counts + self.eps) / (total + len(self.counts) * self.eps) * total
        self.embedding.copy_(self.sums / smoothed.unsqueeze(1))

    @torch.no_grad()
    def reset_codes(self, dead: torch.Tensor, codes: torch.Tensor) -> None:
        """Set the codes where ``dead`` (bool ``(K,)``) is True to ``codes[dead]`` and restart their EMA state
        (:math:`N_j = 1`, :math:`m_j = e_j`). ``codes``: ``(K, D)``, e.g. from :func:`restart_dead_codes`."""
        self.embedding[dead] = codes[dead].to(self.embedding)
        self.counts[dead] = 1.0
        self.sums[dead] = self.embedding[dead]


# ------------------------------------------------------------------------------------------- diagnostics
def codebook_usage(indices: torch.Tensor, K: int) -> float:
    """Fraction of the K codes used at least once by ``indices``, in [1/K, 1].

    Args:
        indices: int64 tensor of any shape, values in ``[0, K)``; K: codebook size.

    Raises:
        ValueError: ``K`` not a positive integer, ``indices`` empty, not int64 or out of range.
    """
    flat = _check_indices(indices, K)
    return (torch.bincount(flat, minlength=K) > 0).sum().item() / K


def codebook_perplexity(indices: torch.Tensor, K: int) -> float:
    """:math:`\\exp(H)` of the code histogram, :math:`H = -\\sum_j p_j \\log p_j` in nats: the effective number of
    codes in use, from 1 (one code) to K (all used equally often).

    The perplexity reported for VQ-VAE codebooks (e.g. in the Sonnet VQ-VAE examples of van den Oord et al. 2017);
    :math:`p_j` is the fraction of ``indices`` equal to j.

    Args:
        indices: int64 tensor of any shape, values in ``[0, K)``; K: codebook size.

    Raises:
        ValueError: as :func:`codebook_usage`.
    """
    flat = _check_indices(indices, K)
    p = torch.bincount(flat, minlength=K).double() / len(flat)
    return torch.exp(-torch.special.xlogy(p, p).sum()).item()


def restart_dead_codes(codebook: torch.Tensor, counts: torch.Tensor, z_e: torch.Tensor, threshold: float = 1.0,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace every code used fewer than ``threshold`` times by a random encoder output.

    The random restarts of Dhariwal et al. (2020, Jukebox: codes whose usage falls below a threshold are moved to
    random encoder outputs of the current batch). Each dead code gets a different row of
    ``z_e`` when there are enough rows (drawn without replacement by ``torch.randperm``).

    Args:
        codebook: float ``(K, D)``; counts: ``(K,)`` usage of each code (e.g. ``torch.bincount`` over an epoch, or an
            :class:`EMACodebook`'s ``counts``).
        z_e: float ``(N, D)`` or ``(B, D, H, W)`` encoder outputs to draw from.
        threshold: codes with ``counts < threshold`` are dead.
        generator: optional CPU ``torch.Generator`` for the choice of rows.

    Returns:
        ``(new_codebook, dead)``: a detached copy of ``codebook`` with the dead rows replaced, and the bool ``(K,)``
        mask of dead codes.

    Raises:
        ValueError: bad ``codebook`` or ``z_e`` (as :func:`quantize`), ``counts`` not ``(K,)``, ``threshold`` negative.
    """
    rows = _flatten(z_e, codebook).detach()
    if not (torch.is_tensor(counts) and counts.shape == (len(codebook),)):
        raise ValueError(f"counts must have shape ({len(codebook)},), got {tuple(getattr(counts, 'shape', ()))}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold < 0:
        raise ValueError(f"threshold must be a number >= 0, got {threshold!r}")
    dead = (counts < threshold).to(codebook.device)
    new = codebook.detach().clone()
    n_dead = int(dead.sum())
    if n_dead:
        order = torch.randperm(len(rows), generator=generator).to(rows.device)
        picks = order.repeat((n_dead + len(rows) - 1) // len(rows))[:n_dead]
        new[dead] = rows[picks].to(new)
    return new, dead


# ---------------------------------------------------------------------------------------- the VQ-VAE
class VQVAE(nn.Module):
    """A small convolutional VQ-VAE for 1x28x28 images: a 7x7 grid of D-dim vectors, each quantised to one of K codes.

    van den Oord et al. (2017), sec. 3 and 4 (there: two stride-2 convolutions and residual blocks; here plain
    convolutions, CPU-sized). Encoder: Conv(4, stride 2) 28 -> 14, ReLU, Conv(4, stride 2) 14 -> 7, ReLU, Conv(1) to D
    channels. Decoder: Conv(3), ReLU, two transposed Conv(4, stride 2) 7 -> 14 -> 28, giving Bernoulli logits
    (:func:`dgmcourse.vae.log_likelihood`). The codebook is a parameter trained by the codebook loss, or with
    ``ema=True`` an :class:`EMACodebook` updated in every training-mode forward pass.

    Args:
        n_codes: K; code_dim: D; hidden: channels of the hidden layers (all positive integers).
        ema: use an :class:`EMACodebook` (decay γ = ``decay``, smoothing ``eps``) instead of a learned parameter.
        generator: optional CPU ``torch.Generator`` for the initial codebook (N(0, 1) entries).

    ``forward(x)``: ``x`` float ``(B, 1, 28, 28)`` in [0, 1] -> dict with ``"logits"`` ``(B, 1, 28, 28)``,
    ``"indices"`` int64 ``(B, 7, 7)``, ``"reconstruction"`` (mean over the batch of :math:`-\\log p(x | z_q)`,
    nats per image), ``"codebook"`` and ``"commitment"`` (:func:`quantize`'s per-vector means).

    Raises:
        ValueError: a size not a positive integer, or as :class:`EMACodebook`; in ``forward``, ``x`` not
            ``(B, 1, 28, 28)`` in [0, 1].
    """

    grid = 7

    def __init__(self, n_codes: int = 32, code_dim: int = 16, hidden: int = 32, ema: bool = True,
                 decay: float = 0.99, eps: float = 1e-5, generator: torch.Generator | None = None) -> None:
        super().__init__()
        for name, value in (("n_codes", n_codes), ("code_dim", code_dim), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.n_codes, self.code_dim, self.ema = n_codes, code_dim, ema
        self.encoder = nn.Sequential(nn.Conv2d(1, hidden, 4, 2, 1), nn.ReLU(), nn.Conv2d(hidden, hidden, 4, 2, 1),
                                     nn.ReLU(), nn.Conv2d(hidden, code_dim, 1))
        self.decoder = nn.Sequential(nn.Conv2d(code_dim, hidden, 3, 1, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(hidden, hidden, 4, 2, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(hidden, 1, 4, 2, 1))
        if ema:
            self.ema_codebook = EMACodebook(n_codes, code_dim, decay, eps, generator)
        else:
            self.codebook_weight = nn.Parameter(torch.randn(n_codes, code_dim, generator=generator))

    @property
    def codebook(self) -> torch.Tensor:
        """The current codes ``(K, D)``."""
        return self.ema_codebook.embedding if self.ema else self.codebook_weight

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits ``(B, 1, 28, 28)`` of the images whose codes are ``indices`` int64 ``(B, 7, 7)``."""
        _check_indices(indices, self.n_codes)
        return self.decoder(self.codebook[indices].permute(0, 3, 1, 2))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not (torch.is_tensor(x) and x.dim() == 4 and tuple(x.shape[1:]) == (1, 28, 28)):
            raise ValueError(f"x must have shape (B, 1, 28, 28), got {tuple(getattr(x, 'shape', ()))}")
        z_e = self.encoder(x)
        z_q, indices, codebook_loss, commitment_loss = quantize(z_e, self.codebook)
        if self.ema and self.training:
            self.ema_codebook.update(z_e, indices)
        logits = self.decoder(z_q)
        return {"logits": logits, "indices": indices, "reconstruction": -log_likelihood(x, logits).mean(),
                "codebook": codebook_loss, "commitment": commitment_loss}


def train_vqvae(model: VQVAE, x: torch.Tensor, epochs: int = 5, batch_size: int = 64, lr: float = 1e-3,
                beta: float = 0.25, restart_threshold: float | None = None, generator: torch.Generator | None = None,
                progress: bool = True) -> dict[str, list[float]]:
    """Adam on the VQ-VAE loss (van den Oord et al. 2017, eq. 3), per image:
    :math:`-\\log p(x|z_q) + HW\\,(\\text{codebook} + \\beta\\,\\text{commitment})`, H W = 49 vectors per image.

    With ``model.ema`` the codebook term has no parameter to move (the EMA updates the codes instead, App. A.1) and
    only the commitment term trains the encoder. With ``restart_threshold``, after every epoch the codes used fewer
    than that many times during the epoch are moved onto random encoder outputs of the last batch
    (:func:`restart_dead_codes`).

    Args:
        model: a :class:`VQVAE`, trained in place on its own device, left in eval mode.
        x: float ``(N, 1, 28, 28)`` images in [0, 1] (e.g. :func:`dgmcourse.data.load_mnist`).
        epochs, batch_size: positive integers; lr: Adam's learning rate, > 0; beta: β >= 0.
        restart_threshold: None (no restarts) or a usage count >= 0.
        generator: CPU ``torch.Generator`` for the shuffles and restarts (seed 0 when None).
        progress: show a tqdm bar over epochs.

    Returns:
        per-epoch means ``{"reconstruction": [...] (nats per image), "codebook": [...], "commitment": [...]}``
        (per vector) and, over the epoch's codes, ``"perplexity"`` (:func:`codebook_perplexity`), ``"usage"``
        (:func:`codebook_usage`) and ``"restarted"`` (number of codes restarted).

    Raises:
        ValueError: ``model`` not a :class:`VQVAE`, ``x`` not ``(N, 1, 28, 28)`` in [0, 1], bad ``epochs``,
            ``batch_size``, ``lr``, ``beta`` or ``restart_threshold``.
    """
    if not isinstance(model, VQVAE):
        raise ValueError(f"model must be a VQVAE, got {type(model).__name__}")
    if not (torch.is_tensor(x) and x.dim() == 4 and tuple(x.shape[1:]) == (1, 28, 28) and len(x)):
        raise ValueError(f"x must have shape (N, 1, 28, 28) with N >= 1, got {tuple(getattr(x, 'shape', ()))}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta!r}")
    if restart_threshold is not None and not (isinstance(restart_threshold, (int, float)) and restart_threshold >= 0):
        raise ValueError(f"restart_threshold must be None or a number >= 0, got {restart_threshold!r}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    cells = model.grid ** 2
    history = {key: [] for key in ("reconstruction", "codebook", "commitment", "perplexity", "usage", "restarted")}
    model.train()
    for _ in tqdm(range(epochs), desc="train VQ-VAE", disable=not progress):
        epoch_indices, last = [], {}

        def losses(idx: torch.Tensor) -> dict:
            batch = x[idx.to(x.device)].to(device)
            out = model(batch)
            epoch_indices.append(out["indices"].detach().flatten())
            last["x"] = batch
            loss = out["reconstruction"] + cells * (out["codebook"] + beta * out["commitment"])
            return {"loss": loss, **{k: out[k].detach() for k in ("reconstruction", "codebook", "commitment")}}

        means = train_epoch(optimizer, len(x), batch_size, losses, generator=generator)
        for key in ("reconstruction", "codebook", "commitment"):
            history[key].append(means[key])
        used = torch.cat(epoch_indices)
        history["perplexity"].append(codebook_perplexity(used, model.n_codes))
        history["usage"].append(codebook_usage(used, model.n_codes))
        restarted = 0
        if restart_threshold is not None:
            with torch.no_grad():
                z_e = model.encoder(last["x"])
            counts = torch.bincount(used, minlength=model.n_codes).to(device)
            new, dead = restart_dead_codes(model.codebook, counts, z_e, restart_threshold, generator)
            restarted = int(dead.sum())
            if model.ema:
                model.ema_codebook.reset_codes(dead, new)
            else:
                with torch.no_grad():
                    model.codebook_weight.copy_(new)
        history["restarted"].append(restarted)
    model.eval()
    return history
