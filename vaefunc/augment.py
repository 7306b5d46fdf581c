"""Data augmentation with a trained VAE: new labelled examples, from the prior or from the posterior.

Two ways to make examples of a class:

- **from the prior** (a conditional or semi-supervised model): draw z from the
  prior and decode it with the class, ``E[x | y, z]``;
- **from the posterior** (any model): encode a labelled example, perturb its
  code, ``z = mu + scale * sigma * eps``, and decode it (with its label, for a
  conditional model), so the new example stays close to the original: ``scale``
  0 gives its reconstruction, 1 a draw from q(z|x).

The images are the decoder's means (:meth:`vaefunc.VAE.mean`) in [0, 1], the
labels int64; both deterministic given ``seed``.

Axis letters: n examples, z latent.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _check, _values
from ._types import Params
from .network import one_hot
from .spec import VAE

MODES = ("prior", "posterior")
MAX_EXAMPLES = 2**24
"""The most examples one call makes."""


@torch.no_grad()
def augment(params: Params, *, model: VAE, labels=None, x: Tensor | None = None, copies: int = 1,
            scale: float = 1.0, seed: int = 0) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    """New examples from a trained VAE: ``(images (n, *input_shape), labels (n,))``.

    Args:
        model: the :class:`vaefunc.VAE` spec of ``params``.
        labels: without ``x``: the class of each new example (ints (n,), or
            one int for n = 1), drawn from the prior and decoded with it (a
            conditional or semi-supervised model). With ``x``: the labels of x
            (required for a conditional model, passed through otherwise).
        x: examples (m, *input_shape) to perturb in the posterior: each gives
            ``copies`` new ones at ``z = mu + scale * sigma * eps``.
        copies: new examples per example of x.
        scale: the noise's scale in units of the posterior's std (posterior only).
        seed: seeds the noise (and the prior's draws).

    Example:
        >>> images, y = augment(params, model=model, labels=torch.arange(10).repeat(50))   # 50 per class
        >>> more, y2 = augment(params, model=model, x=x_few, labels=y_few, copies=10, scale=0.5)
    """
    if not isinstance(model, VAE):
        raise TypeError(f"model must be a vaefunc.VAE spec; got {type(model).__name__}")
    model.check(params)  # params of another model would decode garbage
    _check.finite_tree("params", params, " (a non-finite checkpoint?)")
    seed = _check.seed(seed)
    _check.positive_int("copies", copies, maximum=MAX_EXAMPLES)
    scale = _check.number("scale", scale, minimum=0.0)
    if x is None:
        return _from_prior(params, model, labels, seed)
    return _from_posterior(params, model, x, labels, copies, scale, seed)


def _from_prior(params: Params, model: VAE, labels, seed: int) -> tuple[Tensor, Tensor]:
    if not model.n_classes:
        raise ValueError("augmenting from the prior needs a conditional model (n_classes > 0) to draw given a "
                         "class; pass x= to augment from the posterior of given examples")  # fmt: skip
    if labels is None:
        raise ValueError("pass labels=: the class of each new example (e.g. torch.arange(10).repeat(100))")
    n = _count(labels)
    y = _check.labels(labels, n, model.n_classes)
    y = y if not y.is_floating_point() else y.argmax(-1)
    return model.sample(params, n, seed=seed, labels=y), y.to(torch.int64)


def _from_posterior(params: Params, model: VAE, x: Tensor, labels, copies: int, scale: float, seed: int):
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 2:
        raise TypeError(f"x must be a floating-point tensor of examples (m, *input_shape); got "
                        f"{type(x).__name__ if not isinstance(x, Tensor) else (x.dtype, tuple(x.shape))}")  # fmt: skip
    w = next(iter(params.values()))
    x = x.to(w.device, w.dtype)
    _values.finite("x", x)
    _values.unit_interval("x", x, model.likelihood)
    m = x.shape[0]
    if m == 0:
        raise ValueError(f"x must hold at least one example to augment; got shape {tuple(x.shape)}")
    _check.positive_int("m * copies", m * copies, maximum=MAX_EXAMPLES)
    y = _labels_of_x(labels, m, model, w.device)
    cond = None if not model.n_classes or y is None else one_hot(y, model.n_classes, w.dtype)
    mu, logvar = model.encode(params, x.reshape(m, -1), cond)
    gen = torch.Generator(device=w.device).manual_seed(seed)
    eps = torch.randn(copies, *mu.shape, generator=gen, device=w.device, dtype=w.dtype)
    z = (mu + scale * torch.exp(0.5 * logvar) * eps).reshape(copies * m, -1)  # copy-major
    rows = None if cond is None else cond.repeat(copies, 1)
    images = model.mean(params, z, rows)
    y_new = None if y is None else (y if not y.is_floating_point() else y.argmax(-1)).repeat(copies)
    return images, None if y_new is None else y_new.to(torch.int64)


def _labels_of_x(labels, m: int, model: VAE, device) -> Tensor | None:
    """x's labels: checked against the model's classes, or (an unconditional model) any ints (m,), passed through."""
    if model.n_classes:
        if labels is None:
            raise ValueError(f"this model is conditional on {model.n_classes} classes; pass the labels of x")
        return _check.labels(labels, m, model.n_classes, device=device)
    if labels is None:
        return None
    y = torch.as_tensor(labels)
    if y.shape != (m,) or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"labels must be ints (m,) = ({m},), one per example of x; got {y.dtype} {tuple(y.shape)}")
    return y.to(device)


def _count(labels) -> int:
    if isinstance(labels, int) and not isinstance(labels, bool):
        return 1
    try:
        return len(labels)
    except TypeError:
        raise TypeError(f"labels must be ints (n,) or one-hot rows (n, n_classes); got {type(labels).__name__}") from None
