"""Tests of dgmcourse.widgets: the latent explorer builds z where the decoder lives."""

import pytest
import torch

from dgmcourse import widgets


class _RecordingDecode:
    """A decoder stand-in: records the device, dtype and shape of each z, returns a CPU image."""

    def __init__(self):
        self.seen = []

    def __call__(self, z):
        self.seen.append((z.device, z.dtype, tuple(z.shape)))
        return torch.full((1, 1, 4, 4), 0.5)


@pytest.mark.parametrize("device", ["meta", torch.device("meta")])
def test_latent_explorer_builds_z_on_the_requested_device(device):
    decode = _RecordingDecode()
    box = widgets.latent_explorer(decode, z_dim=3, image_shape=(4, 4), device=device)
    box.children[0].children[0].children[2].value = 1.0        # moving a slider redraws
    assert decode.seen == [(torch.device("meta"), torch.float32, (1, 3))] * 2


def test_latent_explorer_defaults_to_get_device(monkeypatch):
    monkeypatch.setattr(widgets, "get_device", lambda: torch.device("meta"))
    decode = _RecordingDecode()
    widgets.latent_explorer(decode, z_dim=2, image_shape=(4, 4))
    assert decode.seen == [(torch.device("meta"), torch.float32, (1, 2))]


def test_latent_explorer_passes_slider_values_on_cpu():
    values = []

    def decode(z):
        values.append(z.tolist())
        return torch.zeros(1, 16)

    box = widgets.latent_explorer(decode, z_dim=2, image_shape=(4, 4), device="cpu")
    box.children[0].children[0].children[0].value = -2.0
    assert values == [[[0.0, 0.0]], [[-2.0, 0.0]]]


@pytest.mark.parametrize("kwargs, name", [
    (dict(device="gpu0"), "device"),
    (dict(device=3.5), "device"),
    (dict(z_dim=17), "z_dim"),
    (dict(z_range=0.0), "z_range"),
])
def test_latent_explorer_rejects_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        widgets.latent_explorer(_RecordingDecode(), **{"z_dim": 2, "image_shape": (4, 4), **kwargs})


def test_latent_explorer_shows_a_still_where_no_widget_manager_runs():
    """Static renderers (the website) get a PNG of the current view; JupyterLab still gets the live widget."""
    import base64
    import io
    import re

    import matplotlib.image

    box = widgets.latent_explorer(lambda z: torch.full((1, 16), 0.25), z_dim=2, image_shape=(4, 4), device="cpu")
    bundle = box._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    png = re.search(r'src="data:image/png;base64,([^"]+)"', bundle["text/html"]).group(1)
    pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(png)), format="png")
    assert pixels.shape[:2] == (180, 180) and abs(float(pixels[90, 90, 0]) - 0.25) < 0.01   # gray 0.25 in the middle
    assert "Run this notebook" in bundle["text/html"] and "z = (0.00, 0.00)" in bundle["text/html"]
