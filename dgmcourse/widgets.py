"""Interactive ipywidgets for the lectures (they render in JupyterLab; executed headless they are inert).

Where no widget manager runs (the course website, nbconvert's HTML), a widget shows a still image of its
current view instead, with a note to run the notebook.
"""

from __future__ import annotations

import base64
import io

import ipywidgets as widgets
import matplotlib.pyplot as plt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import torch

from dgmcourse.device import get_device


def latent_explorer(decode, z_dim: int, z_range: float = 3.0, image_shape=(28, 28),
                    device: torch.device | str | None = None) -> widgets.VBox:
    """Sliders for each latent coordinate and the decoded image, redrawn as they move.

    Args:
        decode: function ``(1, z_dim) -> (1, ...)`` returning an image with values in [0, 1]
            (e.g. ``model.mean_image`` of a :class:`dgmcourse.vae.VAE`); it receives a float32
            ``z`` on ``device``.
        z_dim: latent dimension d (1 to 16 sliders).
        z_range: each slider spans [-z_range, z_range] (the prior N(0, I) puts 99.7% of its
            mass within 3 per coordinate).
        image_shape: ``(H, W)`` the decoded output is reshaped to.
        device: the device ``z`` is created on; pass the device of the decoder's parameters.
            ``None`` means :func:`dgmcourse.device.get_device`, where the lectures put their models.

    Returns:
        A :class:`LatentExplorer` (an ``ipywidgets.VBox``; display it as a cell's last expression).

    Raises:
        ValueError: if ``z_dim`` is not in 1..16, ``z_range`` <= 0 or ``device`` is not a torch device.

    Source: the latent traversals of Kingma & Welling (2013), Fig. 4, made interactive.
    """
    if not 1 <= z_dim <= 16:
        raise ValueError(f"z_dim must be between 1 and 16 for sliders, got {z_dim}")
    if z_range <= 0:
        raise ValueError(f"z_range must be > 0, got {z_range}")
    device = _as_device(device)
    sliders = [widgets.FloatSlider(value=0.0, min=-z_range, max=z_range, step=0.05, description=f"z{i + 1}",
                                   continuous_update=True) for i in range(z_dim)]
    output = widgets.Output()
    box = LatentExplorer([widgets.HBox([widgets.VBox(sliders), output])])

    def redraw(_=None):
        z = torch.tensor([[s.value for s in sliders]], dtype=torch.float32, device=device)
        with torch.no_grad():
            image = decode(z).detach().cpu().reshape(image_shape)
        box.image, box.z = image, tuple(s.value for s in sliders)
        with output:
            output.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(2.5, 2.5))
            ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_axis_off()
            plt.show()

    for slider in sliders:
        slider.observe(redraw, names="value")
    redraw()
    return box


class LatentExplorer(widgets.VBox):
    """The latent explorer's box: live sliders in JupyterLab; elsewhere a still of the decoded image.

    ``image`` holds the last decoded ``(H, W)`` image (values in [0, 1]) and ``z`` the sliders' values.
    The display bundle adds a ``text/html`` still of it (a PNG data URI with a "run this notebook" note),
    which static renderers such as the course website pick because they have no widget manager;
    JupyterLab prefers the live widget.
    """

    image: torch.Tensor | None = None
    z: tuple[float, ...] = ()

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        if self.image is not None:
            png = base64.b64encode(_png(self.image)).decode("ascii")
            z = ", ".join(f"{v:.2f}" for v in self.z)
            bundle["text/html"] = (
                '<figure class="dgmcourse-widget-still">'
                f'<img src="data:image/png;base64,{png}" alt="the decoded image" width="180">'
                f'<figcaption>A still of the latent explorer at z = ({z}). <a href="#">Run this notebook</a> '
                "(launch buttons at the top of the page, or <code>make lab</code>) to move the sliders.</figcaption>"
                "</figure>")
        return bundle


def _png(image: torch.Tensor) -> bytes:
    figure = Figure(figsize=(2.5, 2.5), dpi=72)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(image.numpy(), cmap="gray", vmin=0, vmax=1)
    axes.set_axis_off()
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def _as_device(device) -> torch.device:
    if device is None:
        return get_device()
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be a torch.device or a device string such as 'cpu' or 'cuda', "
                         f"got {device!r}") from err
