"""Tests of the dSprites-compatible generator in dgmcourse.data."""

import numpy as np
import pytest

from dgmcourse.data import DSprites


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_factor_sizes_and_values_match_published_file():
    data = DSprites()
    assert data.factor_sizes == (3, 6, 40, 32, 32)
    np.testing.assert_allclose(data.factor_values[1], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert data.factor_values[2][0] == 0 and data.factor_values[2][-1] < 2 * np.pi
    # published layout: index = ((((shape*6 + scale)*40 + orientation)*32 + x)*32 + y
    f = np.array([[0, 0, 0, 0, 0], [2, 5, 39, 31, 31], [1, 2, 3, 4, 5]])
    np.testing.assert_array_equal(data.index(f), [0, 737279, (((1 * 6 + 2) * 40 + 3) * 32 + 4) * 32 + 5])


def test_sample_shapes_and_ranges(rng):
    data = DSprites(resolution=32, num_positions=16, num_orientations=10)
    factors, x = data.sample(500, rng)
    assert factors.shape == (500, 5) and factors.dtype == np.int64
    assert (factors.min(0) == 0).all() and (factors.max(0) == np.array(data.factor_sizes) - 1).all()
    assert x.shape == (500, 1, 32, 32) and x.dtype == np.float32
    assert set(np.unique(x)) <= {0.0, 1.0}
    assert (x.sum(axis=(1, 2, 3)) > 0).all()             # every sprite is visible


def test_factors_act_as_documented(rng):
    data = DSprites(resolution=64)
    base = np.array([[2, 5, 0, 16, 16]])
    img = lambda f: data.sample_observations_from_factors(np.array(f), rng)[0, 0]  # noqa: E731
    area = lambda f: img(f).sum()  # noqa: E731
    assert area([[2, 0, 0, 16, 16]]) < area(base)          # scale grows the sprite
    cols = lambda f: np.nonzero(img(f).sum(axis=0))[0].mean()  # noqa: E731
    rows = lambda f: np.nonzero(img(f).sum(axis=1))[0].mean()  # noqa: E731
    assert cols([[2, 5, 0, 31, 16]]) - cols([[2, 5, 0, 0, 16]]) > 30   # x moves along columns
    assert rows([[2, 5, 0, 16, 31]]) - rows([[2, 5, 0, 16, 0]]) > 30   # y moves along rows
    np.testing.assert_array_equal(img([[0, 5, 10, 16, 16]]), img([[0, 5, 10, 16, 16]]))  # deterministic
    # a square is invariant under a quarter turn (orientation 10 of 40), an ellipse is not
    np.testing.assert_array_equal(img([[0, 3, 0, 16, 16]]), img([[0, 3, 10, 16, 16]]))
    assert (img([[1, 3, 0, 16, 16]]) != img([[1, 3, 10, 16, 16]])).any()


def test_noisy_variant(rng):
    data = DSprites(resolution=32, num_positions=16, noisy=True)
    clean = DSprites(resolution=32, num_positions=16)
    factors = data.sample_factors(50, rng)
    x, x0 = data.sample_observations_from_factors(factors, rng), clean.sample_observations_from_factors(factors, rng)
    np.testing.assert_array_equal(x[x0 == 1], 1.0)                # sprite pixels stay on
    background = x[x0 == 0]
    assert abs(background.mean() - 0.5) < 0.01 and 0 <= background.min() and background.max() <= 1


class _FakeImages:
    """Stands in for the 3 GB ``imgs`` array: image i is filled with the value i mod 2 at pixel (0, 0)."""
    shape = (737280, 64, 64)

    def __getitem__(self, rows):
        out = np.zeros((len(rows), 64, 64), np.uint8)
        out[:, 0, 0] = np.asarray(rows) % 2
        return out


def test_published_file_is_used(tmp_path, monkeypatch, rng):
    import dgmcourse.data
    monkeypatch.setattr(dgmcourse.data.np, "load", lambda path: {"imgs": _FakeImages()})
    data = DSprites(path="published.npz")
    factors = np.array([[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [2, 5, 39, 31, 31]])
    x = data.sample_observations_from_factors(factors, rng)
    assert x.shape == (3, 1, 64, 64)
    np.testing.assert_array_equal(x[:, 0, 0, 0], [0, 1, 1])    # rows 0, 1, 737279 of the file


def test_published_file_bad_shape(tmp_path):
    path = tmp_path / "dsprites.npz"
    np.savez(path, imgs=np.zeros((3, 64, 64), np.uint8))
    with pytest.raises(ValueError, match="path"):
        DSprites(path=path)
    with pytest.raises(ValueError, match="path"):
        DSprites(resolution=32, path=path)


def test_bad_input(rng):
    data = DSprites(resolution=32, num_positions=16)
    with pytest.raises(ValueError, match="factors"):
        data.sample_observations_from_factors(np.zeros((2, 5)), rng)            # not integers
    with pytest.raises(ValueError, match="factors"):
        data.sample_observations_from_factors(np.array([[0, 0, 0, 16, 0]]), rng)  # out of range
    with pytest.raises(ValueError, match="factors"):
        data.sample_observations_from_factors(np.array([[-1, 0, 0, 0, 0]]), rng)
    with pytest.raises(ValueError, match="resolution"):
        DSprites(resolution=8)
