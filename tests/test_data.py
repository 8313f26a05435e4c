import struct

import numpy as np
import pytest
import torch

from dgmcourse.data import binarize, load_digits, load_mnist


def _write_idx(path, array: np.ndarray):
    """Write an IDX file (the MNIST format: magic 0x08 = ubyte, then the number of dimensions)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_mnist(tmp_path):
    """Full-MNIST folder layout with 6 training and 3 test images that the test writes itself."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 3)):
        images = rng.integers(0, 256, size=(n, 28, 28))
        images[0, 0, 0], images[0, 0, 1] = 0, 255
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return tmp_path, images


def test_embedded_split_is_fixed_and_real():
    x_train, y_train = load_mnist("train", source="embedded")
    x_test, y_test = load_mnist("test", source="embedded")
    assert x_train.shape == (4000, 1, 28, 28) and x_test.shape == (1000, 1, 28, 28)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert 0.0 == x_train.min() and x_train.max() == 1.0
    assert set(y_test.tolist()) == set(range(10))
    # the same split every time, disjoint train/test
    assert torch.equal(load_mnist("test", source="embedded")[0], x_test)
    flat_train = {tuple(row) for row in (x_train.flatten(1) * 255).round().to(torch.uint8).tolist()[:500]}
    flat_test = {tuple(row) for row in (x_test.flatten(1) * 255).round().to(torch.uint8).tolist()}
    assert not flat_train & flat_test
    # real MNIST has mean pixel intensity 0.1307 (the usual normalisation constant)
    assert abs(x_train.mean().item() - 0.1307) < 0.01


def test_torchvision_path_reads_idx_files(tiny_mnist):
    root, test_images = tiny_mnist
    x, y = load_mnist("test", source="torchvision", root=root)
    assert x.shape == (3, 1, 28, 28) and y.tolist() == [0, 1, 2]
    assert torch.allclose(x[:, 0] * 255, torch.as_tensor(test_images, dtype=torch.float32))
    assert x[0, 0, 0, 0] == 0.0 and x[0, 0, 0, 1] == 1.0
    x_train, _ = load_mnist("train", source="torchvision", root=root)
    assert x_train.shape == (6, 1, 28, 28)


def test_auto_prefers_full_mnist_and_falls_back(tiny_mnist, tmp_path_factory, capsys):
    root, _ = tiny_mnist
    assert load_mnist("train", root=root)[0].shape[0] == 6
    assert "full MNIST" in capsys.readouterr().out
    empty = tmp_path_factory.mktemp("empty")
    assert load_mnist("train", root=empty)[0].shape[0] == 4000
    assert "embedded" in capsys.readouterr().out


def test_missing_full_mnist_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_mnist("train", source="torchvision", root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "download=True" in message


@pytest.mark.parametrize("kwargs, name", [({"split": "valid"}, "split"), ({"source": "web"}, "source")])
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        load_mnist(**kwargs)


def test_load_digits_matches_sklearn():
    from sklearn.datasets import load_digits as sklearn_digits

    x, y = load_digits()
    assert x.shape == (1797, 1, 8, 8) and y.shape == (1797,)
    np.testing.assert_allclose(x.numpy().reshape(1797, 64) * 16, sklearn_digits().data)


def test_binarize_static_and_dynamic():
    x = torch.tensor([[0.0, 0.2, 0.5, 0.7, 1.0]])
    assert binarize(x).tolist() == [[0.0, 0.0, 0.0, 1.0, 1.0]]
    generator = torch.Generator().manual_seed(0)
    draws = binarize(torch.full((20000,), 0.3), mode="dynamic", generator=generator)
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    assert abs(draws.mean().item() - 0.3) < 0.02  # 5 standard errors
    with pytest.raises(ValueError, match="mode"):
        binarize(x, mode="otsu")
    with pytest.raises(ValueError, match="x"):
        binarize(x * 2)
