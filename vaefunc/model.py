"""The VAE as pure functions of a flat param dict.

Layout (the state dict of ``encoder = Sequential(Linear, ReLU, ..., Linear)`` and
``decoder = Sequential(Linear, ReLU, ..., Linear)``)::

    encoder.0.weight (h1, d)   ... encoder.{2n}.weight (2z, h_n)   # mu and logvar, stacked
    decoder.0.weight (h_n, z)  ... decoder.{2n}.weight (d, h1)     # Bernoulli logits or Gaussian mean

Axis letters: b batch, d data features, h hidden, z latent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._types import Params
from .nn import init_mlp, mlp

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0
"""The encoder's log-variance is clamped here so exp(logvar) stays finite in float32."""


def init(
    input_shape: int | Sequence[int],
    *,
    latent_dim: int = 20,
    hidden: Sequence[int] = (400,),
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Params:
    """Fresh VAE params, initialised as the equivalent ``nn.Linear`` stack would be.

    Args:
        input_shape: shape of one example, e.g. ``(784,)`` or ``(1, 28, 28)``; the
            MLP sees it flattened to d features.
        latent_dim: z, the number of latent dimensions.
        hidden: widths of the hidden layers of the encoder; the decoder mirrors
            them. ``()`` gives a linear encoder and a linear decoder.
        seed: seeds the one ``torch.Generator`` every weight is drawn from.

    Returns:
        A dict of tensors with the keys in the module docstring.

    Example:
        >>> params = init((784,), latent_dim=20, hidden=(400,), seed=0)
        >>> params["encoder.0.weight"].shape
        torch.Size([400, 784])
    """
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    if not shape or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"input_shape must be positive ints, e.g. (784,); got {input_shape!r}")
    if not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive int; got {latent_dim!r}")
    hidden = tuple(hidden)
    if not all(isinstance(h, int) and h > 0 for h in hidden):
        raise ValueError(f"hidden must be a sequence of positive ints, e.g. (400,); got {hidden!r}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype; got {dtype}")
    d = math.prod(shape)
    gen = torch.Generator(device=device or "cpu").manual_seed(seed)
    params = init_mlp(gen, (d, *hidden, 2 * latent_dim), prefix="encoder", dtype=dtype, device=device)
    params |= init_mlp(gen, (latent_dim, *hidden[::-1], d), prefix="decoder", dtype=dtype, device=device)
    return params


def data_dim(params: Params) -> int:
    """d, the number of input features the encoder reads."""
    return params["encoder.0.weight"].shape[1]


def latent_dim(params: Params) -> int:
    """z, the number of latent dimensions."""
    return params["decoder.0.weight"].shape[1]


def flatten(x: Tensor, d: int) -> Tensor:
    """(..., *shape) -> (..., d), flattening the trailing dims whose product is d.

    The params know d but not the input shape. An x whose last axis has d
    elements is returned as it is; otherwise the widest trailing block with d
    elements is taken, keeping at least one leading (batch) axis: (b, 1, 28, 28)
    becomes (b, 784), not (b, 1, 784).
    """
    if x.ndim >= 1 and x.shape[-1] == d:
        return x
    size, found = 1, None
    for k in range(1, x.ndim):
        size *= x.shape[-k]
        if size == d:
            found = k
    if found is None:
        raise ValueError(f"expected examples with {d} features in total; got a tensor of shape {tuple(x.shape)}")
    return x.reshape(*x.shape[:-found], d)


def flatten_example(x: Tensor, d: int) -> Tensor:
    """One example, (*shape) -> (d,); raises a ValueError if it does not have d elements."""
    if x.numel() != d:
        raise ValueError(f"expected one example with {d} features in total; got a tensor of shape {tuple(x.shape)}")
    return x.reshape(d)


def encode(params: Params, x: Tensor) -> tuple[Tensor, Tensor]:
    """The Gaussian posterior q(z|x) = N(mu, diag exp(logvar)).

    Args:
        x: (b, *input_shape) or (b, d); a single example without the batch axis
            works too, which is what :func:`torch.func.vmap` hands in.

    Returns:
        mu, logvar: each (b, z). logvar is clamped to [-30, 20].
    """
    h = mlp(params, flatten(x, data_dim(params)), prefix="encoder")
    mu, logvar = h.chunk(2, dim=-1)
    return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


def decode(params: Params, z: Tensor) -> Tensor:
    """The decoder's output for latents z: (b, z) -> (b, d).

    For the Bernoulli likelihood these are logits (apply ``sigmoid`` for
    probabilities); for the Gaussian likelihood, the mean.
    """
    return mlp(params, z, prefix="decoder")


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """z = mu + exp(logvar / 2) * eps; eps ~ N(0, I) is drawn by the caller.

    All arguments broadcast: (b, z) with eps (b, z), or eps (k, b, z) for k
    samples per example.
    """
    return mu + torch.exp(0.5 * logvar) * eps


def sample(
    params: Params,
    n: int,
    *,
    seed: int = 0,
    likelihood: str = "bernoulli",
) -> Tensor:
    """n draws of the decoder's mean from the prior: z ~ N(0, I), x = E[x|z].

    Returns:
        (n, d): probabilities (sigmoid of the logits) for ``"bernoulli"``, the
        mean for ``"gaussian"``.

    Example:
        >>> xs = sample(init((784,)), 16, seed=0)
        >>> xs.shape
        torch.Size([16, 784])
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}")
    w = params["decoder.0.weight"]
    gen = torch.Generator(device=w.device).manual_seed(seed)
    z = torch.randn(n, latent_dim(params), generator=gen, device=w.device, dtype=w.dtype)
    out = decode(params, z)
    if likelihood == "bernoulli":
        return torch.sigmoid(out)
    if likelihood == "gaussian":
        return out
    raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian'; got {likelihood!r}")
