"""Guidance: steering a conditional diffusion or flow-matching model towards a class.

Bayes' rule on the noised marginals, :math:`p_t(x | y) \\propto p_t(x)\\,p_t(y | x)`, splits a conditional score into
the unconditional score and the gradient of a classifier of noisy inputs,

.. math:: \\nabla_x\\log p_t(x | y) = \\nabla_x\\log p_t(x) + \\nabla_x\\log p_t(y | x).

*Classifier guidance* (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis", Sec. 4 and
Algorithm 1) scales the second term by :math:`w`: it samples (approximately) from
:math:`p_t(x)\\,p_t(y | x)^w`, sharper class membership for :math:`w > 1`, at the cost of diversity.
*Classifier-free guidance* (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance", eq. 6 and Algorithms 1-2)
needs no classifier: one network learns the conditional and, with the label replaced by a "null" label on a
fraction of the training examples (label dropout), the unconditional model; their difference is the implicit
classifier's gradient, :math:`\\nabla\\log p_t(y | x) = \\nabla\\log p_t(x | y) - \\nabla\\log p_t(x)`. The guided
prediction is :math:`\\tilde f = f(x, \\varnothing) + w\\,(f(x, y) - f(x, \\varnothing))` for any prediction
:math:`f` affine in the score: the score itself, ε (:math:`\\epsilon = -\\sigma_t\\nabla\\log p_t`) or a
flow-matching velocity (:func:`dgmcourse.flow_matching.velocity_from_score`). Here :math:`w` is the *guidance
scale*: 0 is unconditional, 1 conditional, :math:`w > 1` guided; Ho & Salimans write :math:`(1 + w')\\epsilon(x, y)
- w'\\epsilon(x)`, i.e. :math:`w = 1 + w'`.

Contents: :func:`drop_labels` (training), :func:`classifier_free_guidance`, :func:`classifier_guidance` and
:func:`classifier_log_prob_grad` (sampling), :class:`ConditionalVelocityMLP` and :func:`train_conditional_cfm`
(a class-conditional flow-matching model with a null label, trained with label dropout) and
:func:`guided_velocity` (its guided field, ready for :func:`dgmcourse.flow_matching.euler_sample`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from dgmcourse.diffusion import _check_data, _check_same_shape
from dgmcourse.flow_matching import GaussianPath, _adam_linear_decay, _check_training, cfm_loss

__all__ = ["drop_labels", "classifier_free_guidance", "classifier_guidance", "classifier_log_prob_grad",
           "ConditionalVelocityMLP", "train_conditional_cfm", "guided_velocity"]


def _check_labels(y, name: str = "y") -> None:
    if not (torch.is_tensor(y) and y.dim() == 1 and not y.is_floating_point() and y.dtype != torch.bool):
        raise ValueError(f"{name} must be a 1-D integer tensor of class labels (B,), got {y!r:.80}")


def _check_scale(scale) -> None:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite float (0: unconditional, 1: conditional), got {scale!r}")


def drop_labels(y: torch.Tensor, p_uncond: float, null_label: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Label dropout: each label replaced by ``null_label`` with probability ``p_uncond``, independently.

    Ho & Salimans (2022), Algorithm 1 (:math:`c \\leftarrow \\varnothing` with probability :math:`p_{uncond}`; they
    use 0.1 or 0.2): one network is trained as the conditional model on the kept labels and as the unconditional
    model on the dropped ones.

    Args:
        y: class labels ``(B,)``, an integer tensor.
        p_uncond: the dropout probability in [0, 1].
        null_label: the label that stands for "no class" (e.g. the number of classes).
        generator: optional ``torch.Generator`` on ``y``'s device.

    Returns:
        a new ``(B,)`` tensor like ``y``.

    Raises:
        ValueError: ``y`` not a 1-D integer tensor, ``p_uncond`` outside [0, 1], ``null_label`` not an integer or
            one of the labels in ``y``.
    """
    _check_labels(y)
    if isinstance(p_uncond, bool) or not isinstance(p_uncond, (int, float)) or not 0 <= p_uncond <= 1:
        raise ValueError(f"p_uncond must be a probability in [0, 1], got {p_uncond!r}")
    if isinstance(null_label, bool) or not isinstance(null_label, int) or bool((y == null_label).any()):
        raise ValueError(f"null_label must be an integer that is not a class label in y, got {null_label!r}")
    drop = torch.rand(y.shape, generator=generator, device=y.device) < p_uncond
    return torch.where(drop, torch.full_like(y, null_label), y)


def classifier_free_guidance(conditional: torch.Tensor, unconditional: torch.Tensor, scale: float) -> torch.Tensor:
    """The guided prediction :math:`f(x, \\varnothing) + w\\,(f(x, y) - f(x, \\varnothing))`.

    Ho & Salimans (2022), eq. 6 with :math:`w = 1 + w'` (their :math:`w'` = 0 is our ``scale`` = 1). Valid for any
    prediction affine in the score (score, ε, flow-matching velocity, :math:`\\hat x_0`): it then equals
    :func:`classifier_guidance` with the implicit classifier's gradient.

    Args:
        conditional: :math:`f(x, y)`, ``(B, *shape)``.
        unconditional: :math:`f(x, \\varnothing)`, the same shape.
        scale: the guidance scale :math:`w` (0: unconditional, 1: conditional, > 1: guided).

    Returns:
        ``(B, *shape)``.

    Raises:
        ValueError: the shapes differ or are not a non-empty floating batch, or ``scale`` is not a finite float.
    """
    _check_data("conditional", conditional)
    _check_same_shape("conditional", conditional, "unconditional", unconditional)
    _check_scale(scale)
    return unconditional + scale * (conditional - unconditional)


def classifier_guidance(score: torch.Tensor, classifier_grad: torch.Tensor, scale: float) -> torch.Tensor:
    """The guided score :math:`\\nabla\\log p_t(x) + w\\,\\nabla\\log p_t(y | x)`.

    Dhariwal & Nichol (2021), Sec. 4.1-4.2 and Algorithm 1 (their "gradient scale" s is :math:`w`): with ``scale``
    = 1 it is the conditional score :math:`\\nabla\\log p_t(x | y)` by Bayes' rule; larger scales sample
    :math:`\\propto p_t(x)\\,p_t(y | x)^w`. For ε-predictions use :math:`\\epsilon - w\\sigma_t\\nabla\\log p_t(y | x)`.

    Args:
        score: the unconditional score :math:`\\nabla\\log p_t(x)`, ``(B, *shape)``.
        classifier_grad: :math:`\\nabla_x\\log p_t(y | x)` (:func:`classifier_log_prob_grad`), the same shape.
        scale: the guidance scale :math:`w`.

    Returns:
        ``(B, *shape)``, per data unit.

    Raises:
        ValueError: the shapes differ or are not a non-empty floating batch, or ``scale`` is not a finite float.
    """
    _check_data("score", score)
    _check_same_shape("score", score, "classifier_grad", classifier_grad)
    _check_scale(scale)
    return score + scale * classifier_grad


def classifier_log_prob_grad(classifier: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                             t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """:math:`\\nabla_x\\log p_\\phi(y | x, t)` of a time-aware classifier, by automatic differentiation.

    The classifier of noisy inputs of Dhariwal & Nichol (2021, Sec. 4): ``classifier(x, t)`` returns logits ``(B,
    K)``; :math:`\\log p_\\phi(y | x, t)` is their log-softmax at ``y``. Each example's log-probability depends on
    its own input only, so the gradient of their sum is every example's own gradient.

    Args:
        classifier: ``classifier(x, t) -> logits (B, K)``.
        x: inputs ``(B, *shape)`` (not modified; gradients are taken on a detached copy).
        t: times ``(B,)`` passed through to the classifier.
        y: labels ``(B,)`` in [0, K).

    Returns:
        ``(B, *shape)``, in nats per data unit, detached.

    Raises:
        ValueError: ``x`` not a non-empty floating batch, ``y`` not ``(B,)`` integer labels in [0, K), or the
            logits not ``(B, K)``.
    """
    _check_data("x", x)
    _check_labels(y)
    if len(y) != len(x):
        raise ValueError(f"y must have shape ({len(x)},), got {tuple(y.shape)}")
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = classifier(x, t)
        if logits.dim() != 2 or len(logits) != len(x):
            raise ValueError(f"classifier must return logits of shape ({len(x)}, K), got {tuple(logits.shape)}")
        if bool(((y < 0) | (y >= logits.shape[1])).any()):
            raise ValueError(f"y must hold labels in [0, {logits.shape[1]}), got {y.tolist()[:10]}")
        log_p = torch.log_softmax(logits, dim=1).gather(1, y[:, None]).sum()
        (grad,) = torch.autograd.grad(log_p, x)
    return grad


class ConditionalVelocityMLP(nn.Module):
    """A class-conditional velocity field :math:`v_\\theta(x, t, y)` with a null label: an MLP on
    ``[x, embedding(t), embedding(y)]``.

    The time enters by sines and cosines of ``emb // 2`` geometrically spaced frequencies from 1 to 1000 applied to
    t in [0, 1] (Vaswani et al. 2017, Sec. 3.5, as :class:`dgmcourse.diffusion.EpsMLP`), the label by a learned
    embedding of ``num_classes + 1`` rows, the last being the null label :math:`\\varnothing` (``null_label``)
    that label dropout trains as the unconditional model (Ho & Salimans 2022, Sec. 3.2). A flattening MLP: the
    CPU-sized stand-in for the U-Nets of the papers, meant for 2-D points and the course VAE's latent codes.

    Args:
        dim: size of one (flattened) data point.
        num_classes: number of classes K.
        hidden: width of the hidden layers; ``n_layers``: their number (SiLU).
        emb: size of the time embedding (even) and of the label embedding.

    ``forward(x, t, y)``: ``x (B, dim)``, ``t (B,)`` times in [0, 1], ``y (B,)`` labels in [0, K] (K = null)
    -> ``(B, dim)``.

    Raises:
        ValueError: a size not a positive integer or ``emb`` odd; in ``forward``, inputs of the wrong shape or
            labels outside [0, K].
    """

    def __init__(self, dim: int, num_classes: int, hidden: int = 128, n_layers: int = 3, emb: int = 32):
        super().__init__()
        for name, value in (("dim", dim), ("num_classes", num_classes), ("hidden", hidden), ("n_layers", n_layers),
                            ("emb", emb)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if emb % 2:
            raise ValueError(f"emb must be even (sines and cosines), got {emb}")
        self.dim, self.num_classes, self.null_label = dim, num_classes, num_classes
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(1000), emb // 2)))
        self.label_embedding = nn.Embedding(num_classes + 1, emb)
        layers, width = [], dim + 2 * emb
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        if t.shape != (len(x),):
            raise ValueError(f"t must have shape ({len(x)},), got {tuple(t.shape)}")
        _check_labels(y)
        if y.shape != (len(x),) or bool(((y < 0) | (y > self.null_label)).any()):
            raise ValueError(f"y must be ({len(x)},) labels in [0, {self.null_label}] ({self.null_label}: null)")
        angle = t.to(x.dtype).unsqueeze(1) * self.freqs
        return self.net(torch.cat([x, torch.sin(angle), torch.cos(angle), self.label_embedding(y)], 1))


def train_conditional_cfm(model: ConditionalVelocityMLP, x1: torch.Tensor, y: torch.Tensor, path: GaussianPath,
                          steps: int, batch_size: int = 256, lr: float = 2e-3, p_uncond: float = 0.2,
                          generator: torch.Generator | None = None, progress: bool = True) -> list[float]:
    """Conditional flow matching with label dropout: the training of classifier-free guidance.

    Each Adam step draws ``batch_size`` examples of ``(x1, y)`` with replacement, drops their labels with
    probability ``p_uncond`` (:func:`drop_labels`, Ho & Salimans 2022, Algorithm 1) and takes a step on
    :func:`dgmcourse.flow_matching.cfm_loss` (Lipman et al. 2023, eq. 14) of :math:`v_\\theta(\\cdot, \\cdot, y)`;
    the learning rate decays linearly from ``lr`` to 0.

    Args:
        model: a :class:`ConditionalVelocityMLP` (trained in place on its own device).
        x1: data ``(N, dim)``; ``y``: their labels ``(N,)`` in [0, K).
        path: the probability path (e.g. ``flow_matching.linear_path()``).
        steps: Adam steps; ``batch_size``: examples per step; ``lr``: initial learning rate.
        p_uncond: label dropout probability in [0, 1].
        generator: a CPU ``torch.Generator`` for the batches, label dropout, times and noise.
        progress: show a tqdm bar.

    Returns:
        the loss of every step (squared error summed over the data dimensions, batch mean).

    Raises:
        ValueError: ``x1`` not ``(N, dim)``, ``y`` not ``(N,)`` labels in [0, K), ``steps``/``batch_size`` not positive
            integers, ``lr`` <= 0; as :func:`drop_labels` for ``p_uncond``.
    """
    if x1.dim() != 2 or x1.shape[1] != model.dim:
        raise ValueError(f"x1 must have shape (N, {model.dim}), got {tuple(x1.shape)}")
    _check_labels(y)
    if y.shape != (len(x1),) or bool(((y < 0) | (y >= model.num_classes)).any()):
        raise ValueError(f"y must be ({len(x1)},) labels in [0, {model.num_classes})")
    _check_training(steps, batch_size, lr)
    device = next(model.parameters()).device
    generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def step_loss() -> torch.Tensor:
        idx = torch.randint(len(x1), (batch_size,), generator=generator)
        labels = drop_labels(y[idx], p_uncond, model.null_label, generator).to(device)
        t = torch.rand(batch_size, generator=generator, dtype=torch.float64)
        x0 = torch.randn(batch_size, model.dim, generator=generator).to(device)
        return cfm_loss(lambda x, s: model(x, s, labels), x1[idx].to(device), path, t=t, x0=x0)

    return _adam_linear_decay(model, step_loss, steps, lr, "conditional flow matching", progress)


def guided_velocity(model: ConditionalVelocityMLP, y: torch.Tensor, scale: float
                    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The classifier-free guided field :math:`v(x, t, \\varnothing) + w\\,(v(x, t, y) - v(x, t, \\varnothing))`
    of a model trained by :func:`train_conditional_cfm`, as a ``v_model(x, t)`` for
    :func:`dgmcourse.flow_matching.euler_sample` (Ho & Salimans 2022, eq. 6, on velocities: they are affine in the
    score, :func:`dgmcourse.flow_matching.velocity_from_score`).

    Args:
        model: the conditional model; ``y``: the target labels ``(B,)`` in [0, K), one per sample.
        scale: the guidance scale :math:`w` (0: unconditional, 1: conditional).

    Returns:
        a function ``v_model(x, t)`` with ``x (B, dim)``, ``t (B,)``; scale 0 or 1 costs one network call, others two.

    Raises:
        ValueError: ``y`` not labels in [0, K); ``scale`` not a finite float.
    """
    _check_labels(y)
    if bool(((y < 0) | (y >= model.num_classes)).any()):
        raise ValueError(f"y must hold labels in [0, {model.num_classes}), got {y.tolist()[:10]}")
    _check_scale(scale)

    def v_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        labels = y.to(x.device)
        if scale == 1:
            return model(x, t, labels)
        null = model(x, t, torch.full_like(labels, model.null_label))
        return null if scale == 0 else classifier_free_guidance(model(x, t, labels), null, scale)

    return v_model
