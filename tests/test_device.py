import random

import numpy as np
import pytest
import torch

from dgmcourse.device import course_seed, get_device, seed_everything, smoke_mode


def test_get_device_default_and_override(monkeypatch):
    monkeypatch.delenv("DGMCOURSE_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert get_device().type == expected
    monkeypatch.setenv("DGMCOURSE_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")


def test_get_device_rejects_bad_override(monkeypatch):
    monkeypatch.setenv("DGMCOURSE_DEVICE", "gpu-please")
    with pytest.raises(ValueError, match="DGMCOURSE_DEVICE"):
        get_device()
    if not torch.cuda.is_available():
        monkeypatch.setenv("DGMCOURSE_DEVICE", "cuda")
        with pytest.raises(ValueError, match="CUDA"):
            get_device()


def test_seed_everything_repeats_all_generators():
    draws = []
    for _ in range(2):
        seed_everything(123)
        draws.append((random.random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("0", False), ("", False)])
def test_smoke_mode(monkeypatch, value, expected):
    monkeypatch.setenv("DGMCOURSE_SMOKE", value)
    assert smoke_mode() is expected


@pytest.mark.parametrize("value, expected", [(None, 0), ("", 0), ("7", 7), (" 12 ", 12)])
def test_course_seed(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("DGMCOURSE_SEED", raising=False)
    else:
        monkeypatch.setenv("DGMCOURSE_SEED", value)
    assert course_seed() == expected


@pytest.mark.parametrize("value", ["-1", "abc", "1.5"])
def test_course_seed_rejects_bad_values(monkeypatch, value):
    monkeypatch.setenv("DGMCOURSE_SEED", value)
    with pytest.raises(ValueError, match="DGMCOURSE_SEED"):
        course_seed()
