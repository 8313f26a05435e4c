"""A small CNN classifier of 28x28 MNIST digits, used to evaluate generative models.

The classifier is trained once on the embedded training split
(``load_mnist("train", source="embedded")``, 4,000 digits), cached as
``data_dir() / "mnist_classifier.pt"`` and retrained when the cache is missing or
unreadable. It reaches about 96 % accuracy on the embedded test split (the benchmark
``benchmarks/gan_modes.py`` reports the measured figure).

Inputs are images ``(B, 1, 28, 28)`` with values in [0, 1] (map a tanh generator's
output ``y`` in [-1, 1] to ``(y + 1) / 2`` first). The penultimate layer
(:meth:`MNISTClassifier.features`) is the feature space used for Fréchet distances and
nearest-neighbour checks; the class probabilities (:func:`predict_proba`) give the
generated class histogram (Salimans et al. 2016 use a classifier the same way for the
Inception score).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import data_dir, load_mnist
from .device import get_device
from .training import train_epoch

CACHE_NAME = "mnist_classifier.pt"
FEATURE_DIM = 128


class MNISTClassifier(nn.Module):
    """Two conv blocks (32, 64 channels, 3x3, max-pool) and a 128-unit hidden layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 14x14
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 7x7
        )
        self.hidden = nn.Linear(64 * 7 * 7, FEATURE_DIM)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features ``(B, 128)`` of images ``x`` ``(B, 1, 28, 28)`` in [0, 1].

        Raises:
            ValueError: if ``x`` is not of shape ``(B, 1, 28, 28)``.
        """
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"x must have shape (B, 1, 28, 28), got {tuple(x.shape)}")
        return F.relu(self.hidden(self.conv(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, 10)`` of images ``x`` ``(B, 1, 28, 28)`` in [0, 1]."""
        return self.head(self.dropout(self.features(x)))


def train_classifier(x: torch.Tensor, y: torch.Tensor, epochs: int = 10, batch_size: int = 64,
                     lr: float = 1e-3, seed: int = 0, device: torch.device | None = None,
                     progress: bool = True) -> MNISTClassifier:
    """Train :class:`MNISTClassifier` with Adam on cross-entropy; returns it in eval mode.

    Args:
        x: images ``(N, 1, 28, 28)`` in [0, 1]; y: int64 labels ``(N,)`` in 0..9.
        epochs, batch_size, lr: Adam settings; seed: seeds initialisation and shuffling.

    Raises:
        ValueError: if shapes or label range are wrong, or ``epochs``/``batch_size`` < 1.
    """
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ValueError(f"x must have shape (N, 1, 28, 28), got {tuple(x.shape)}")
    if y.shape != (x.shape[0],) or y.min() < 0 or y.max() > 9:
        raise ValueError(f"y must hold {x.shape[0]} labels in 0..9, got shape {tuple(y.shape)}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    device = device or get_device()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MNISTClassifier().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in tqdm(range(epochs), desc="train MNIST classifier", disable=not progress):
        train_epoch(opt, len(x), batch_size,
                    lambda idx: {"loss": F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))}, generator=gen)
    return model.eval()


def cache_path() -> Path:
    """Where the trained classifier is cached: ``data_dir() / "mnist_classifier.pt"``."""
    return data_dir() / CACHE_NAME


def load_classifier(device: torch.device | None = None, retrain: bool = False) -> MNISTClassifier:
    """The course's MNIST classifier in eval mode, trained on first use and cached.

    Trains (10 epochs on the 4,000 embedded training digits, seed 0, about 15 s on one
    CPU core) when the cache is missing, unreadable or ``retrain=True``; the cache is
    written atomically so concurrent notebooks do not read half a file.

    Returns:
        :class:`MNISTClassifier` on ``device`` (default :func:`get_device`) with
        ``.features(x) -> (B, 128)`` and ``forward(x) -> logits (B, 10)``.
    """
    device = device or get_device()
    path = cache_path()
    model = MNISTClassifier()
    if path.exists() and not retrain:
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.to(device).eval()
        except (RuntimeError, OSError, EOFError, KeyError, pickle.UnpicklingError):
            pass  # stale or corrupt cache: retrain below
    x, y = load_mnist("train", source="embedded")
    model = train_classifier(x, y, device=device)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)
    return model


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Class probabilities ``(B, 10)`` (softmax of the logits) of images ``x`` ``(B, 1, 28, 28)`` in [0, 1].

    Runs in batches of ``batch_size`` on the model's device; returns a CPU tensor.

    Raises:
        ValueError: if ``x`` is not ``(B, 1, 28, 28)``, has values outside [0, 1]
            (a tanh output must be mapped with ``(y + 1) / 2``), or ``batch_size`` < 1.
    """
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ValueError(f"x must have shape (B, 1, 28, 28), got {tuple(x.shape)}")
    if x.numel() and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
        raise ValueError("x must hold values in [0, 1]; map tanh outputs y with (y + 1) / 2")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    probs = torch.cat([F.softmax(model(b.to(device)), dim=1).cpu() for b in x.split(batch_size)])
    model.train(was_training)
    return probs
