"""Where computations run, how they are seeded, and how long notebooks train.

* :func:`get_device` picks the device once (CUDA when available, else CPU); the
  environment variable ``DGMCOURSE_DEVICE`` (e.g. ``cpu``, ``cuda``, ``cuda:1``)
  overrides it.
* :func:`seed_everything` seeds Python, NumPy and PyTorch.
* :func:`smoke_mode` reads ``DGMCOURSE_SMOKE``: when it is ``1``/``true``/``yes``,
  notebooks shrink epochs and sample counts so the test suite can execute them
  in seconds. Unset (the default) means the full setting that users run.
* :func:`course_seed` reads ``DGMCOURSE_SEED`` (default 0): the seed every assignment derives
  its random draws from, so that ``benchmarks/assessment.py`` can re-run the graded training
  and sampling on other seeds.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

SMOKE_ENV = "DGMCOURSE_SMOKE"
DEVICE_ENV = "DGMCOURSE_DEVICE"
SEED_ENV = "DGMCOURSE_SEED"


def get_device() -> torch.device:
    """Return the device notebooks and training loops should use.

    ``DGMCOURSE_DEVICE`` wins when set; otherwise ``cuda`` if
    ``torch.cuda.is_available()``, else ``cpu``.

    Raises:
        ValueError: if ``DGMCOURSE_DEVICE`` names a device torch does not know,
            or a CUDA device while CUDA is unavailable.
    """
    requested = os.environ.get(DEVICE_ENV, "").strip()
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise ValueError(f"{DEVICE_ENV}={requested!r} is not a torch device string "
                         "(expected e.g. 'cpu', 'cuda' or 'cuda:0')") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{DEVICE_ENV}={requested!r} but CUDA is not available on this machine")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and PyTorch (CPU and CUDA).

    Raises:
        ValueError: if ``seed`` is not a non-negative integer.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))  # also seeds every CUDA device


def smoke_mode() -> bool:
    """True when ``DGMCOURSE_SMOKE`` asks for the fast setting used by the tests."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def course_seed() -> int:
    """The seed notebooks derive their random draws from: ``DGMCOURSE_SEED``, default 0.

    Graders and students leave it unset (seed 0); the assessment benchmark sets it to check that
    graded tests of training and sampling pass on every seed, not only on the one they were
    written on.

    Raises:
        ValueError: if ``DGMCOURSE_SEED`` is set but is not a non-negative integer.
    """
    value = os.environ.get(SEED_ENV, "").strip()
    if not value:
        return 0
    if not value.isdigit():
        raise ValueError(f"{SEED_ENV}={value!r} is not a non-negative integer")
    return int(value)
