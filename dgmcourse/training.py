"""The minibatch epoch that the course's trainers share.

``train_vae``, ``train_autoencoder``, ``train_pixelcnn``, ``train_flow``, ``train_m2``, ``train_omega_vae`` and
``train_classifier`` differ in their loss and in what they record; the loop over shuffled minibatches (minibatch
stochastic gradient descent: Goodfellow, Bengio & Courville, *Deep Learning*, 2016, Algorithm 8.1) is this one, and
the set-up before it (seed, device, Adam) is :func:`start_training`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dgmcourse.device import get_device, seed_everything


def start_training(model: torch.nn.Module, lr: float, seed: int = 0, device: torch.device | None = None,
                   **adam_options) -> tuple[torch.device, torch.optim.Adam]:
    """The set-up every course trainer does before its first epoch, in this order.

    :func:`dgmcourse.device.seed_everything` ``(seed)`` (initialisation was done by the caller; shuffles, sampling and
    dropout from here on are reproducible), the model moved to ``device`` (default
    :func:`dgmcourse.device.get_device`) and put in training mode, and Adam (Kingma & Ba 2015) over its parameters.

    Args:
        model: the module to train; lr: Adam's learning rate, > 0; seed: the course seed.
        device: where to train; adam_options: other ``torch.optim.Adam`` arguments (e.g. ``weight_decay``).

    Returns:
        ``(device, optimizer)``.

    Raises:
        ValueError: if ``lr`` <= 0.
    """
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    seed_everything(seed)
    device = device or get_device()
    model.to(device).train()
    return device, torch.optim.Adam(model.parameters(), lr=lr, **adam_options)


def train_epoch(optimizer: torch.optim.Optimizer, n: int, batch_size: int,
                losses: Callable[[torch.Tensor], dict], generator: torch.Generator | None = None,
                after_step: Callable[[], None] | None = None) -> dict[str, float]:
    """One epoch of minibatch training over ``n`` examples.

    Visits ``range(n)`` once in a random order (``torch.randperm``, drawn from ``generator`` or else the global
    RNG) in batches of ``batch_size`` indices. For each batch ``idx`` (``(B,)`` int64, ``B <= batch_size``),
    ``losses(idx)`` returns a dict of scalars (0-d tensors or floats); its ``"loss"`` entry is minimised:
    ``optimizer.zero_grad()``, ``loss.backward()``, ``optimizer.step()``, then ``after_step()`` if given (e.g.
    weight clipping).

    Args:
        optimizer: a ``torch.optim`` optimizer over the parameters that ``losses`` depends on.
        n: number of training examples, >= 1.
        batch_size: indices per batch, >= 1 (the last batch may be smaller).
        losses: ``idx -> {"loss": tensor, **others}``; the other entries are only recorded.
        generator: optional CPU ``torch.Generator`` for the shuffle.
        after_step: optional callable run after every optimizer step.

    Returns:
        the epoch mean of every entry, each batch weighted by its size (so a per-example mean over the batch
        becomes a per-example mean over the epoch), as floats; units are those of ``losses``.

    Raises:
        ValueError: ``n`` or ``batch_size`` < 1, or ``losses`` returned no ``"loss"``.
    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    sums: dict[str, float] = {}
    for idx in torch.randperm(n, generator=generator).split(batch_size):
        values = losses(idx)
        if "loss" not in values:
            raise ValueError(f"losses(idx) must return a dict with a 'loss' entry, got keys {list(values)}")
        optimizer.zero_grad()
        values["loss"].backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        for key, value in values.items():
            value = value.item() if torch.is_tensor(value) else float(value)
            sums[key] = sums.get(key, 0.0) + value * len(idx)
    return {key: total / n for key, total in sums.items()}
