"""Small matplotlib helpers shared by the notebooks."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import torch
from torchvision.utils import make_grid


def show_images(x: torch.Tensor, nrow: int = 8, title: str | None = None, ax=None, padding: int = 2):
    """Draw a grid of images.

    Args:
        x: tensor of shape ``(B, C, H, W)`` (C = 1 or 3) with values in [0, 1].
        nrow: images per row.
        title: optional axes title.
        ax: matplotlib axes to draw on (a new figure when ``None``).

    Returns:
        The matplotlib axes.

    Raises:
        ValueError: if ``x`` is not 4-D with 1 or 3 channels, or ``nrow`` < 1.
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x must have shape (B, C, H, W) with C in (1, 3), got {tuple(x.shape)}")
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    grid = make_grid(x.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=padding, pad_value=1.0)
    if ax is None:
        cols, rows = min(nrow, len(x)), -(-len(x) // nrow)
        _, ax = plt.subplots(figsize=(max(2.0, 0.9 * cols), max(2.0, 0.9 * rows)))
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray" if x.shape[1] == 1 else None,
              interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def plot_history(history: dict, keys=None, ax=None, xlabel: str = "epoch", ylabel: str = "nats",
                 labels: dict | None = None):
    """Plot training curves from a history dict of equal-length lists, one point per epoch (epoch 1 first).

    Args:
        history: mapping name -> list of floats (e.g. the output of ``train_vae``).
        keys: names to plot (default: all non-empty entries).
        ax: matplotlib axes (a new figure when ``None``); curves already there keep their epochs visible.
        labels: legend text per name (default: the name).

    Returns:
        The matplotlib axes.

    Raises:
        ValueError: if a requested key is not in ``history``.
    """
    keys = [k for k in history if len(history[k])] if keys is None else list(keys)
    missing = [k for k in keys if k not in history]
    if missing:
        raise ValueError(f"keys {missing} are not in history (has {list(history)})")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    right = ax.get_xlim()[1] if ax.has_data() else 0.0
    for key in keys:
        values = history[key]
        ax.plot(range(1, len(values) + 1), values, label=(labels or {}).get(key, key),
                marker="o" if len(values) < 30 else None)
    # epochs are whole numbers: integer ticks, and room for them also when a (smoke) run has one epoch
    ax.set_xlim(0.5, max([right] + [len(history[k]) + 0.5 for k in keys] + [1.5]))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    return ax
