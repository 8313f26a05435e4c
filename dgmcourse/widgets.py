"""Interactive ipywidgets for the lectures (they render in JupyterLab; executed headless they are inert)."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
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
        An ``ipywidgets.VBox`` (display it as a cell's last expression).

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

    def redraw(_=None):
        z = torch.tensor([[s.value for s in sliders]], dtype=torch.float32, device=device)
        with torch.no_grad():
            image = decode(z).detach().cpu().reshape(image_shape)
        with output:
            output.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(2.5, 2.5))
            ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_axis_off()
            plt.show()

    for slider in sliders:
        slider.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([widgets.VBox(sliders), output])])


def _as_device(device) -> torch.device:
    if device is None:
        return get_device()
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be a torch.device or a device string such as 'cpu' or 'cuda', "
                         f"got {device!r}") from err
