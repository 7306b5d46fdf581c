"""The VAE as params-first functions: the form of vaefunc 0.1, kept working.

Each function builds the :class:`vaefunc.VAE` spec that the params' keys and
shapes and its keywords (``activation``, ``likelihood``) describe, and runs
the spec's method; the spec is the one place that says what every static
choice means (see :mod:`vaefunc.spec`, and :mod:`vaefunc.network` for the
layouts). ``labels`` is the name of a conditional model's labels everywhere;
``y`` is its older name, still taken.

Axis letters: b batch, d data features (c*h*w for images), c channels,
h w image height and width, z latent, n classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from . import _check
from ._compat import renamed, resolve, spec_of
from ._types import Params
from .layout import Architecture as Architecture
from .layout import architecture as architecture
from .network import LOGVAR_MAX as LOGVAR_MAX
from .network import LOGVAR_MIN as LOGVAR_MIN
from .network import flatten as flatten
from .network import flatten_example as flatten_example
from .network import one_hot as one_hot
from .nn import ACTIVATIONS as ACTIVATIONS
from .spec import ARCHS as ARCHS
from .spec import CONV_CHANNELS as CONV_CHANNELS
from .spec import VAE


def init(
    input_shape: int | Sequence[int],
    *,
    latent_dim: int = 20,
    hidden: Sequence[int] = (400,),
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    arch: str = "mlp",
    channels: Sequence[int] | None = None,
    n_classes: int | None = None,
) -> Params:
    """Fresh VAE params: ``VAE(input_shape, latent_dim=..., ...).init(seed, dtype=..., device=...)``.

    Args:
        input_shape: shape of one example, e.g. ``(784,)`` or ``(1, 28, 28)``.
        latent_dim, hidden, arch, channels, n_classes: see :class:`vaefunc.VAE`.
        seed: seeds the one ``torch.Generator`` every weight is drawn from.

    Returns:
        A dict of tensors with ``nn.Sequential`` state-dict keys (:mod:`vaefunc.network`).

    Example:
        >>> params = init((784,), latent_dim=20, hidden=(400,), seed=0)
        >>> params["encoder.0.weight"].shape
        torch.Size([400, 784])
        >>> params = init((1, 64, 64), latent_dim=10, arch="conv", n_classes=3)
        >>> params["encoder.0.weight"].shape, params["decoder.0.weight"].shape
        (torch.Size([32, 1, 4, 4]), torch.Size([400, 13]))
    """
    model = VAE(input_shape, latent_dim=latent_dim, hidden=hidden, arch=arch, channels=channels,
                n_classes=0 if n_classes is None else n_classes)  # fmt: skip
    return model.init(seed, dtype=dtype, device=device)


def encode(params: Params, x: Tensor, labels: Tensor | None = None, *, activation: str = "relu",
           y: Tensor | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The Gaussian posterior q(z|x[, y]) = N(mu, diag exp(logvar)): :meth:`vaefunc.VAE.encode`.

    Args:
        x: (b, *input_shape) or (b, d); one example without the batch axis works too.
        labels: labels of a conditional VAE: int (b,) or one-hot (b, n).
        activation: the hidden activation the params were trained with.

    Returns:
        mu, logvar: each (b, z). logvar is clamped to [-30, 20].

    Example:
        >>> mu, logvar = encode(init((1, 28, 28), latent_dim=8, arch="conv"), torch.rand(5, 1, 28, 28))
        >>> mu.shape
        torch.Size([5, 8])
    """
    return spec_of(params, activation=activation).encode(params, x, renamed(labels, y, new="labels", old="y"))


def decode(params: Params, z: Tensor, labels: Tensor | None = None, *, activation: str = "relu",
           y: Tensor | None = None) -> Tensor:  # fmt: skip
    """The decoder's output for latents z: :meth:`vaefunc.VAE.decode`; (b, z) -> (b, d) or (b, c, h, w).

    Logits for the Bernoulli likelihood, the mean for the Gaussian; any leading
    axes of z are kept.

    Example:
        >>> decode(init((1, 64, 64), latent_dim=10, arch="conv"), torch.randn(3, 10)).shape
        torch.Size([3, 1, 64, 64])
    """
    return spec_of(params, activation=activation).decode(params, z, renamed(labels, y, new="labels", old="y"))


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """z = mu + exp(logvar / 2) * eps; eps ~ N(0, I) is drawn by the caller.

    All arguments broadcast: (b, z) with eps (b, z), or eps (k, b, z) for k samples per example.
    """
    return VAE.reparameterize(mu, logvar, eps)


def sample(params: Params, n: int, *, seed: int = 0, likelihood: str = "bernoulli",
           labels: int | Sequence[int] | Tensor | None = None, activation: str = "relu",
           model: VAE | None = None) -> Tensor:  # fmt: skip
    """n draws of the decoder's mean, z from the model's prior: :meth:`vaefunc.VAE.sample`.

    Args:
        labels: for a conditional VAE, the class of each draw: one int for all,
            ints (n,) or one-hot (n, n_classes).
        likelihood, activation: the model's static choices (default Bernoulli, ReLU), or
        model: its :class:`vaefunc.VAE` spec.

    Returns:
        (n, *input_shape) ((n, d) for params alone, which do not record an image
        shape): probabilities for the Bernoulli, the mean for the others.

    Example:
        >>> sample(init((784,)), 16, seed=0).shape
        torch.Size([16, 784])
    """
    model = resolve(params, model, likelihood=likelihood, activation=activation)
    return model.sample(params, n, seed=seed, labels=labels)


def labels_tensor(labels, n: int, n_classes: int, *, device: torch.device | str | None = None) -> Tensor:
    """Check user labels (an int, ints (n,), or one-hot (n, n_classes)) and return them as a tensor."""
    return _check.labels(labels, n, n_classes, device=device)


def input_shape(params: Params) -> tuple[int, ...]:
    """The shape of one example: (d,) for an MLP, (c, h, w) for a conv VAE."""
    return architecture(params).input_shape


def data_dim(params: Params) -> int:
    """d, the number of input features the encoder reads (c * h * w for images)."""
    return math.prod(architecture(params).input_shape)


def latent_dim(params: Params) -> int:
    """z, the number of latent dimensions."""
    return architecture(params).latent_dim


def n_classes(params: Params) -> int:
    """The number of label classes of a conditional VAE; 0 when it is unconditional."""
    return architecture(params).n_classes


def macs_per_example(params: Params) -> int:
    """Multiply-accumulates of one encoder and one decoder pass over one example: :meth:`vaefunc.VAE.macs_per_example`."""
    return spec_of(params).macs_per_example()


def flat_features(params: Params, out: Tensor) -> Tensor:
    """The decoder's output as flat features: (..., c, h, w) -> (..., d) for conv; MLP output as it is."""
    return out if architecture(params).arch == "mlp" else out.flatten(-3)
