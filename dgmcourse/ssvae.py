"""Semi-supervised learning with a VAE: the M2 model of Kingma, Rezende, Mohamed & Welling 2014,
"Semi-supervised learning with deep generative models" (as presented in Patrini, "Unsupervised
learning, representation and generative models", Deep Learning lecture, University of
Amsterdam, 2017).

Generative model (Kingma et al. 2014, Eq. 2):
    p(y) = Cat(y | pi) (uniform),  p(z) = N(0, I),  p_theta(x | y, z) = Bernoulli(x | f_theta(y, z)).
Inference model (Eq. 4): q_phi(y | x) = Cat(y | pi_phi(x)) -- the classifier -- and
q_phi(z | x, y) = N(z | mu_phi(x, y), diag sigma^2_phi(x, y)).

Bounds, written as objectives to maximise (the paper's ``-L`` and ``-U``):
* labelled (Eq. 6):   ``-L(x, y) = E_q(z|x,y)[log p(x|y,z)] + log p(y) - KL(q(z|x,y) || p(z))``;
* unlabelled (Eq. 7): ``-U(x) = sum_y q(y|x) (-L(x, y)) + H(q(y|x))`` -- y is summed out exactly;
* the classification term (Eq. 9): ``J^alpha = sum_l L + sum_u U + alpha E_l[-log q(y|x)]``,
  because q(y|x) otherwise only learns from unlabelled data.

Images are ``(B, 1, 28, 28)`` with values in [0, 1]; grey levels are soft Bernoulli targets, as in
:func:`dgmcourse.vae.log_likelihood`. Log-probabilities in nats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .training import start_training, train_epoch
from .vae import gaussian_kl, log_likelihood, reparameterize

__all__ = ["mlp_classifier", "M2", "labelled_subset", "m2_loss", "accuracy", "train_m2", "train_labels_only"]


def mlp_classifier(x_shape=(1, 28, 28), num_classes: int = 10, hidden: int = 256) -> nn.Sequential:
    """The classifier ``q(y|x)`` of M2, also used alone as the labels-only baseline.

    Two hidden ReLU layers; returns logits ``(B, num_classes)`` for inputs ``(B, *x_shape)``.
    """
    d = math.prod(x_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(0.2),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


class M2(nn.Module):
    """The M2 semi-supervised VAE (Kingma et al. 2014, Sec. 2.2) with MLP networks.

    Args:
        x_shape: shape of one image.
        z_dim: dimension of the continuous latent z (style).
        num_classes: K, the number of values of the discrete latent y (content).
        hidden: width of the hidden layers.

    Methods take one-hot labels ``y`` of shape ``(B, K)`` (float) or integer labels ``(B,)``.
    """

    def __init__(self, x_shape=(1, 28, 28), z_dim: int = 16, num_classes: int = 10, hidden: int = 256):
        super().__init__()
        if z_dim < 1 or num_classes < 2:
            raise ValueError(f"need z_dim >= 1 and num_classes >= 2, got {z_dim}, {num_classes}")
        self.x_shape, self.z_dim, self.num_classes = tuple(x_shape), z_dim, num_classes
        d = math.prod(self.x_shape)
        self.classifier = mlp_classifier(self.x_shape, num_classes, hidden)
        self.encoder = nn.Sequential(nn.Linear(d + num_classes, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z_dim))
        self.decoder = nn.Sequential(nn.Linear(z_dim + num_classes, hidden), nn.ReLU(), nn.Linear(hidden, d))

    # -- helpers
    def _check_x(self, x: torch.Tensor, name: str = "x") -> None:
        if tuple(x.shape[1:]) != self.x_shape:
            raise ValueError(f"{name} must have shape (B, {', '.join(map(str, self.x_shape))}), got {tuple(x.shape)}")
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"{name} must hold values in [0, 1] for the Bernoulli decoder")

    def one_hot(self, y: torch.Tensor) -> torch.Tensor:
        """Integer labels ``(B,)`` -> one-hot ``(B, K)`` floats; one-hot input is returned as is.

        Raises:
            ValueError: labels outside ``[0, K)`` or a wrong shape.
        """
        if y.ndim == 2 and y.shape[1] == self.num_classes:
            return y.float()
        if y.ndim != 1 or y.is_floating_point():
            raise ValueError(f"y must be integer labels (B,) or one-hot (B, {self.num_classes}), got {tuple(y.shape)}")
        if y.numel() and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(f"y must hold labels in [0, {self.num_classes}), got range [{y.min()}, {y.max()}]")
        return F.one_hot(y, self.num_classes).float()

    # -- the networks
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``q(y|x)``, shape ``(B, K)``."""
        self._check_x(x)
        return self.classifier(x)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of ``q(z|x,y)``, each ``(B, z_dim)``."""
        h = self.encoder(torch.cat([x.flatten(1), self.one_hot(y)], 1))
        return h.chunk(2, dim=1)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Logits of ``p(x|y,z)``, shape ``(B, *x_shape)``."""
        return self.decoder(torch.cat([z, self.one_hot(y)], 1)).reshape(-1, *self.x_shape)

    # -- the bounds
    def labelled_bound(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``-L(x, y)`` (Kingma et al. 2014, Eq. 6), one reparameterised z per example.

        ``log p(x|y,z) + log p(y) - KL(q(z|x,y) || N(0, I))`` with uniform ``p(y) = 1/K``.

        Args:
            x: ``(B, *x_shape)`` in [0, 1]; y: ``(B,)`` labels or ``(B, K)`` one-hot.

        Returns:
            ``(B,)`` lower bounds on ``log p(x, y)`` in nats.

        Raises:
            ValueError: wrong shapes, values outside [0, 1] or labels out of range.
        """
        self._check_x(x)
        y = self.one_hot(y)
        if len(y) != len(x):
            raise ValueError(f"x and y must have the same batch size, got {len(x)} and {len(y)}")
        mu, logvar = self.encode(x, y)
        z = reparameterize(mu, logvar)
        return log_likelihood(x, self.decode(z, y), "bernoulli") - math.log(self.num_classes) - gaussian_kl(mu, logvar)

    def unlabelled_bound(self, x: torch.Tensor) -> torch.Tensor:
        """``-U(x) = sum_y q(y|x) (-L(x, y)) + H(q(y|x))`` (Kingma et al. 2014, Eq. 7).

        The sum over the ``K`` classes is exact: every image is decoded once per class.

        Args:
            x: ``(B, *x_shape)`` in [0, 1].

        Returns:
            ``(B,)`` lower bounds on ``log p(x)`` in nats.

        Raises:
            ValueError: wrong shape or values outside [0, 1].
        """
        self._check_x(x)
        b, k = len(x), self.num_classes
        log_q = F.log_softmax(self.classifier(x), dim=1)  # (B, K)
        ys = torch.arange(k, device=x.device).repeat_interleave(b)  # (K*B,): class 0 for all x, then 1, ...
        bounds = self.labelled_bound(x.repeat(k, *[1] * len(self.x_shape)), ys).view(k, b).T  # (B, K)
        q = log_q.exp()
        return (q * bounds).sum(1) - (q * log_q).sum(1)

    # -- generation
    @torch.no_grad()
    def generate(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean images ``sigmoid(f(y, z))`` of ``p(x|y,z)``, shape ``(B, *x_shape)``.

        Fix ``y`` and vary ``z`` for class-conditional generation (Kingma et al. 2014, Fig. 1);
        fix ``z`` and vary ``y`` for analogies (Fig. 2).
        """
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (B, {self.z_dim}), got {tuple(z.shape)}")
        return torch.sigmoid(self.decode(z, y))

    @torch.no_grad()
    def analogies(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Keep the style of each image, change its class: ``g(y', mu(x, y))`` for every ``y'``.

        Args:
            x: ``(B, *x_shape)`` images; y: their labels ``(B,)`` (default: the classifier's guess).

        Returns:
            ``(B, K, *x_shape)`` mean images; entry ``[b, k]`` draws class ``k`` in the style of ``x[b]``.
        """
        self._check_x(x)
        if y is None:
            y = self.classifier(x).argmax(1)
        mu, _ = self.encode(x, y)
        k = self.num_classes
        z = mu.repeat_interleave(k, 0)
        ys = torch.arange(k, device=x.device).repeat(len(x))
        return self.generate(z, ys).view(len(x), k, *self.x_shape)


def labelled_subset(y: torch.Tensor, per_class: int, num_classes: int = 10, seed: int = 0) -> torch.Tensor:
    """Indices of a class-balanced labelled subset: ``per_class`` examples of every class.

    Args:
        y: ``(N,)`` integer labels.
        per_class: labelled examples per class (Kingma et al. 2014 use 10 for "100 labels").
        num_classes: K.
        seed: seed of the random choice.

    Returns:
        ``(per_class * K,)`` int64 indices into ``y``, sorted.

    Raises:
        ValueError: ``per_class < 1`` or a class with fewer than ``per_class`` examples.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(num_classes):
        members = (y == c).nonzero().flatten()
        if len(members) < per_class:
            raise ValueError(f"class {c} has {len(members)} examples, fewer than per_class={per_class}")
        picks.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.cat(picks).sort().values


def m2_loss(model: M2, x_l: torch.Tensor, y_l: torch.Tensor, x_u: torch.Tensor,
            alpha: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Mini-batch estimate of ``J^alpha`` per example (Kingma et al. 2014, Eq. 9), to minimise.

    ``mean_l L(x, y) + mean_u U(x) + alpha * mean_l [-log q(y|x)]``: each set's bound is averaged
    over its own mini-batch, so ``alpha`` weighs the cross-entropy of one labelled example
    against the bound of one example.

    Args:
        model: an :class:`M2`.
        x_l, y_l: labelled images ``(B_l, *x_shape)`` and labels ``(B_l,)``.
        x_u: unlabelled images ``(B_u, *x_shape)``.
        alpha: weight of the classification term, ``>= 0``.

    Returns:
        ``(loss, parts)``: scalar tensor and floats ``labelled``, ``unlabelled`` (mean bounds, nats)
        and ``cross_entropy`` (nats).

    Raises:
        ValueError: ``alpha < 0`` or invalid inputs.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    lab = model.labelled_bound(x_l, y_l).mean()
    unlab = model.unlabelled_bound(x_u).mean()
    ce = F.cross_entropy(model.classify(x_l), y_l)
    loss = -lab - unlab + alpha * ce
    return loss, {"labelled": lab.item(), "unlabelled": unlab.item(), "cross_entropy": ce.item()}


@torch.no_grad()
def accuracy(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of ``x`` ``(N, ...)`` whose arg-max logit equals ``y`` ``(N,)``; in [0, 1]."""
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty with the same length, got {len(x)} and {len(y)}")
    device = next(classifier.parameters()).device
    was_training = classifier.training
    classifier.eval()
    hits = sum((classifier(c.to(device)).argmax(1).cpu() == t).sum().item()
               for c, t in zip(x.split(batch_size), y.split(batch_size)))
    classifier.train(was_training)
    return hits / len(x)


def train_m2(model: M2, x_l: torch.Tensor, y_l: torch.Tensor, x_u: torch.Tensor, x_test=None, y_test=None,
             epochs: int = 20, batch_size: int = 100, labelled_batch: int = 50, alpha: float = 50.0,
             lr: float = 1e-3, device: torch.device | None = None, seed: int = 0,
             progress: bool = True) -> dict[str, list[float]]:
    """Train M2 on labelled ``(x_l, y_l)`` and unlabelled ``x_u`` with Adam.

    Each step pairs ``batch_size`` unlabelled images with ``labelled_batch`` labelled ones drawn
    at random (the labelled set is small and is revisited every step).

    Returns:
        per-epoch means ``"loss"``, ``"labelled"``, ``"unlabelled"`` (bounds in nats),
        ``"cross_entropy"``, and ``"test_accuracy"`` of ``q(y|x)`` (empty without test data).

    Raises:
        ValueError: bad sizes, ``alpha < 0``, or labels / images as in :class:`M2`.
    """
    if epochs < 1 or batch_size < 1 or labelled_batch < 1 or lr <= 0:
        raise ValueError("need epochs, batch_size, labelled_batch >= 1 and lr > 0")
    if len(x_l) != len(y_l):
        raise ValueError(f"x_l and y_l must have the same length, got {len(x_l)} and {len(y_l)}")
    device, optimizer = start_training(model, lr, seed, device)
    keys = ("loss", "labelled", "unlabelled", "cross_entropy")
    history = {k: [] for k in keys} | {"test_accuracy": []}

    def losses(idx):
        lab = torch.randint(len(x_l), (labelled_batch,))
        loss, parts = m2_loss(model, x_l[lab].to(device), y_l[lab].to(device), x_u[idx].to(device), alpha)
        return parts | {"loss": loss}

    for _ in tqdm(range(epochs), desc="train M2", disable=not progress):
        means = train_epoch(optimizer, len(x_u), batch_size, losses)
        for k in keys:
            history[k].append(means[k])
        if x_test is not None:
            history["test_accuracy"].append(accuracy(model.classifier, x_test, y_test))
    model.eval()
    return history


def train_labels_only(classifier: nn.Module, x_l: torch.Tensor, y_l: torch.Tensor, x_test=None, y_test=None,
                      epochs: int = 200, lr: float = 1e-3, weight_decay: float = 1e-4,
                      device: torch.device | None = None, seed: int = 0) -> dict[str, list[float]]:
    """The labels-only baseline: train ``classifier`` (e.g. :func:`mlp_classifier`) on the labelled
    examples alone, full batch, with cross-entropy.

    Returns:
        per-epoch ``"cross_entropy"`` (nats) and ``"test_accuracy"`` (empty without test data).

    Raises:
        ValueError: ``epochs < 1``, ``lr <= 0`` or mismatched lengths.
    """
    if epochs < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 1 and lr > 0, got {epochs}, {lr}")
    if len(x_l) != len(y_l):
        raise ValueError(f"x_l and y_l must have the same length, got {len(x_l)} and {len(y_l)}")
    device, optimizer = start_training(classifier, lr, seed, device, weight_decay=weight_decay)
    x, y = x_l.to(device), y_l.to(device)
    history = {"cross_entropy": [], "test_accuracy": []}
    for _ in range(epochs):
        loss = F.cross_entropy(classifier(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history["cross_entropy"].append(loss.item())
        if x_test is not None:
            history["test_accuracy"].append(accuracy(classifier, x_test, y_test))
    classifier.eval()
    return history
