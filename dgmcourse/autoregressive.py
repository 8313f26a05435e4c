"""An auto-regressive model of binary images: a small masked-convolution PixelCNN.

The chain rule writes any distribution over the ``D = H x W`` pixels in raster order
(Patrini, "Unsupervised learning, representation and generative models", Deep Learning
lecture, University of Amsterdam, 2017; van den Oord, Kalchbrenner & Kavukcuoglu 2016, Eq. 1):

    p(x) = prod_{i=1}^{D} p(x_i | x_1, ..., x_{i-1}).

The PixelCNN computes all ``D`` conditionals in one pass with convolutions whose kernels are
*masked* so that output ``i`` only sees inputs ``< i`` (van den Oord et al. 2016, Sec. 3.4,
Fig. 2): the first layer uses mask **A** (the centre pixel is hidden), later layers mask **B**
(the centre is visible: it already holds features of earlier pixels only). For binary pixels
each conditional is a Bernoulli with logit ``f_i(x_<i)``, so

    log p(x) = sum_i [x_i log sigma(f_i) + (1 - x_i) log(1 - sigma(f_i))]

is **exact** (no bound, unlike a VAE), in nats; :func:`dgmcourse.evaluation.bits_per_dim`
converts it. Sampling is ancestral and sequential: ``D`` network passes, one per pixel.

This single-stack PixelCNN has the known "blind spot" (pixels up-right of a receptive field
are never seen; van den Oord et al. 2016b fix it with gated vertical/horizontal stacks); it is
still a valid, exactly normalised model, which is all the course needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .training import start_training, train_epoch

__all__ = ["causal_mask", "MaskedConv2d", "PixelCNN", "log_likelihood", "sample", "train_pixelcnn"]


def causal_mask(kernel_size: int, mask_type: str) -> torch.Tensor:
    """Raster-order causal mask of a ``kernel_size x kernel_size`` convolution kernel.

    Ones on every row above the centre and on the centre row left of the centre; the centre
    itself is 1 for type ``"B"`` and 0 for type ``"A"`` (van den Oord et al. 2016, Sec. 3.4).

    Args:
        kernel_size: odd positive integer ``k``.
        mask_type: ``"A"`` (first layer) or ``"B"`` (later layers).

    Returns:
        float32 tensor ``(k, k)`` of zeros and ones.

    Raises:
        ValueError: even or non-positive ``kernel_size``, unknown ``mask_type``.
    """
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size!r}")
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    c = kernel_size // 2
    mask = torch.zeros(kernel_size, kernel_size)
    mask[:c] = 1
    mask[c, :c] = 1
    if mask_type == "B":
        mask[c, c] = 1
    return mask


class MaskedConv2d(nn.Conv2d):
    """``nn.Conv2d`` (stride 1, 'same' padding) whose kernel is multiplied by :func:`causal_mask`.

    Input ``(B, C_in, H, W)`` -> output ``(B, C_out, H, W)``.
    """

    def __init__(self, mask_type: str, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.register_buffer("mask", causal_mask(kernel_size, mask_type))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class PixelCNN(nn.Module):
    """A small PixelCNN for binary single-channel images.

    One 7x7 type-A masked convolution, ``layers`` residual 3x3 type-B masked convolutions, and
    two 1x1 convolutions to one Bernoulli logit per pixel.

    Args:
        channels: feature maps per layer.
        layers: number of type-B layers.
        first_kernel: kernel size of the type-A layer (odd).

    ``forward(x)``: binary images ``(B, 1, H, W)`` -> logits ``(B, 1, H, W)`` where the logit at
    pixel ``i`` depends only on pixels before ``i`` in raster order.
    """

    def __init__(self, channels: int = 32, layers: int = 4, first_kernel: int = 7):
        super().__init__()
        self.input = MaskedConv2d("A", 1, channels, first_kernel)
        self.hidden = nn.ModuleList(MaskedConv2d("B", channels, channels, 3) for _ in range(layers))
        self.output = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"x must have shape (B, 1, H, W), got {tuple(x.shape)}")
        h = self.input(2 * x - 1)  # centre {0, 1} inputs at 0
        for layer in self.hidden:
            h = h + layer(F.relu(h))
        return self.output(h)


def _check_binary(x: torch.Tensor, name: str = "x") -> None:
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"{name} must have shape (B, 1, H, W), got {tuple(x.shape)}")
    if not ((x == 0) | (x == 1)).all():
        raise ValueError(f"{name} must be binary (values in {{0, 1}}); use dgmcourse.data.binarize")


def log_likelihood(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Exact ``log p(x)`` of binary images under an auto-regressive Bernoulli model, in nats.

    ``log p(x) = sum_i log Bernoulli(x_i; sigmoid(f_i(x_<i)))`` (the chain rule, van den Oord
    et al. 2016, Eq. 1), i.e. minus the summed binary cross-entropy of the logits.

    Args:
        model: maps ``(B, 1, H, W)`` images to ``(B, 1, H, W)`` causal logits (a :class:`PixelCNN`).
        x: binary images ``(B, 1, H, W)``.
        batch_size: images per forward pass (gradients flow; wrap in ``torch.no_grad()`` to
            evaluate).

    Returns:
        ``(B,)`` log-likelihoods in nats (on the model's device).

    Raises:
        ValueError: ``x`` not ``(B, 1, H, W)`` or not binary.
    """
    _check_binary(x)
    device = next(model.parameters()).device
    out = []
    for chunk in x.split(batch_size):
        chunk = chunk.to(device)
        logits = model(chunk)
        out.append(-F.binary_cross_entropy_with_logits(logits, chunk, reduction="none").flatten(1).sum(1))
    return torch.cat(out)


@torch.no_grad()
def sample(model: nn.Module, n: int, shape: tuple[int, int] = (28, 28), generator: torch.Generator | None = None,
           x: torch.Tensor | None = None, start: int = 0, progress: bool = False) -> torch.Tensor:
    """Ancestral sampling, pixel by pixel in raster order: ``x_i ~ Bernoulli(sigmoid(f_i(x_<i)))``.

    Each of the ``H*W - start`` steps runs the whole network and keeps only the logit of the
    next pixel: exact, and slow (no parallelism), as the lecture's comparison table says.
    With ``x`` and ``start`` it completes images whose first ``start`` pixels are given
    (the PixelRNN in-painting demo of Patrini, 2017, after van den Oord et al., 2016).

    Args:
        model: causal model returning logits ``(B, 1, H, W)``.
        n: number of images (ignored when ``x`` is given).
        shape: ``(H, W)``.
        generator: optional CPU ``torch.Generator`` for the Bernoulli draws.
        x: optional ``(B, 1, H, W)`` binary images whose pixels before ``start`` are kept.
        start: raster index of the first pixel to sample, ``0 <= start <= H*W``.
        progress: show a tqdm bar over pixels.

    Returns:
        float32 binary images ``(n, 1, H, W)`` on the CPU.

    Raises:
        ValueError: ``n < 1``, bad ``start`` or a non-binary ``x``.
    """
    if x is None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        x = torch.zeros(n, 1, *shape)
    else:
        _check_binary(x)
        x = x.detach().cpu().float().clone()
    h, w = x.shape[-2:]
    if not 0 <= start <= h * w:
        raise ValueError(f"start must lie in [0, {h * w}], got {start}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    for i in tqdm(range(start, h * w), desc="sampling pixels", disable=not progress):
        r, c = divmod(i, w)
        p = torch.sigmoid(model(x.to(device))[:, 0, r, c]).cpu()
        x[:, 0, r, c] = torch.bernoulli(p, generator=generator)
    model.train(was_training)
    return x


def train_pixelcnn(model: nn.Module, x_train: torch.Tensor, x_test: torch.Tensor | None = None, epochs: int = 5,
                   batch_size: int = 64, lr: float = 1e-3, device: torch.device | None = None, seed: int = 0,
                   progress: bool = True) -> dict[str, list[float]]:
    """Maximum likelihood training with Adam: minimise ``-mean log p(x)``.

    Args:
        model: a :class:`PixelCNN`; moved to ``device`` (default :func:`get_device`).
        x_train: binary images ``(N, 1, H, W)``; ``x_test``: optional held-out binary images.
        epochs, batch_size, lr: optimisation settings.
        seed: passed to :func:`dgmcourse.device.seed_everything`.
        progress: tqdm bar over epochs.

    Returns:
        ``{"train_nll": [...], "test_nll": [...]}``: per-epoch mean negative log-likelihood in
        nats per image (``test_nll`` empty without ``x_test``).

    Raises:
        ValueError: non-binary data, ``epochs``/``batch_size`` < 1 or ``lr`` <= 0.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    _check_binary(x_train, "x_train")
    if x_test is not None:
        _check_binary(x_test, "x_test")
    device, optimizer = start_training(model, lr, seed, device)
    history = {"train_nll": [], "test_nll": []}
    bar = tqdm(range(epochs), desc="train PixelCNN", disable=not progress)
    for _ in bar:
        means = train_epoch(optimizer, len(x_train), batch_size,
                            lambda idx: {"loss": -log_likelihood(model, x_train[idx]).mean()})
        history["train_nll"].append(means["loss"])
        if x_test is not None:
            model.eval()
            with torch.no_grad():
                history["test_nll"].append(-log_likelihood(model, x_test).mean().item())
            model.train()
        bar.set_postfix(nll=f"{history['train_nll'][-1]:.1f}")
    model.eval()
    return history
