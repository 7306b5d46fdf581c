"""Importance sampling: the IWAE bound and the log-likelihood estimate.

With k samples z_i = mu + sigma * eps_i of q(z|x), the log importance weights are

    log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x),

every density with its normalising constant, and

    iwae_k(x) = log (1/k) sum_i w_i   (Burda, Grosse and Salakhutdinov 2015),

computed with ``logsumexp``. E[iwae_k] <= E[iwae_{k+1}] <= log p(x); iwae_1 is the
single-sample ELBO with the Monte Carlo KL term, and iwae_k -> log p(x) as k grows.
For a conditional VAE every density is conditioned on the label y as well:
log w_i = log p(x|z_i, y) + log p(z_i) - log q(z_i|x, y), and the estimates are
of log p(x|y).

Axis letters: b batch, d data features, k importance samples, z latent, n classes.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch
from torch import Tensor
from torch.func import vmap

from ._types import Params
from .likelihoods import check_likelihood, obs_log_prob
from .model import (
    architecture,
    data_dim,
    decode,
    encode,
    flat_features,
    flatten,
    flatten_example,
    labels_tensor,
    latent_dim,
    one_hot,
    reparameterize,
)
from .nn import check_activation
from .priors import kl_monte_carlo

# log_likelihood's default chunk over k keeps about this many floats alive per
# layer (k_chunk * batch * widest layer): 2^22 floats, 16 MiB in float32.
_CHUNK_BUDGET = 2**22


def iwae_parts(
    params: Params,
    x: Tensor,
    eps: Tensor,
    *,
    likelihood: str = "bernoulli",
    obs_std: float | Tensor = 1.0,
    y: Tensor | None = None,
    activation: str = "relu",
) -> tuple[Tensor, Tensor]:
    """The two parts of the log importance weights of ONE example.

    Written for one example; :func:`iwae_terms` batches it with ``vmap``.

    Args:
        x: (*input_shape) or (d,).
        eps: (k, z), eps ~ N(0, I).
        y: the example's label for a conditional VAE: 0-d int or one-hot (n,).
        activation: the hidden activation, as in :func:`vaefunc.encode`.

    Returns:
        rec: (k,), log p(x | z_i[, y]).
        kl: (k,), log q(z_i | x[, y]) - log p(z_i); log w = rec - kl.
    """
    x = flatten_example(x, data_dim(params))
    mu, logvar = encode(params, x, y, activation=activation)  # (z,)
    z = reparameterize(mu, logvar, eps)  # (k, z)
    out = flat_features(params, decode(params, z, y, activation=activation))  # a conv decoder returns (k, c, h, w)
    rec = obs_log_prob(params, out, x, likelihood=likelihood, obs_std=obs_std)
    return rec, kl_monte_carlo(params, mu, logvar, z, activation=activation)


def iwae_terms(
    params: Params,
    x: Tensor,
    eps: Tensor,
    *,
    likelihood: str = "bernoulli",
    obs_std: float | Tensor = 1.0,
    y: Tensor | None = None,
    activation: str = "relu",
) -> tuple[Tensor, Tensor]:
    """:func:`iwae_parts` batched over examples with vmap.

    Args:
        x: (b, *input_shape) or (b, d).
        eps: (k, b, z).
        y: labels of a conditional VAE: int (b,) or one-hot (b, n).

    Returns:
        rec, kl: each (k, b).
    """
    part = partial(iwae_parts, likelihood=likelihood, obs_std=obs_std, activation=activation)
    if y is not None:  # vmap batches positional arguments only
        fn = lambda p, x, e, y: part(p, x, e, y=y)  # noqa: E731
        return vmap(fn, in_dims=(None, 0, 1, 0), out_dims=1)(params, x, eps, y)
    return vmap(part, in_dims=(None, 0, 1), out_dims=1)(params, x, eps)


def log_weights(
    params: Params,
    x: Tensor,
    eps: Tensor,
    *,
    likelihood: str = "bernoulli",
    obs_std: float | Tensor = 1.0,
    y: Tensor | None = None,
    activation: str = "relu",
) -> Tensor:
    """log w = log p(x|z) + log p(z) - log q(z|x) at z = mu + sigma * eps: (k, b).

    Args:
        x: (b, *input_shape) or (b, d).
        eps: (k, b, z), eps ~ N(0, I).
        y: labels of a conditional VAE: int (b,) or one-hot (b, n).
        activation: the hidden activation, as in :func:`vaefunc.encode`.

    Example:
        >>> params = init((784,), latent_dim=20)
        >>> log_weights(params, torch.rand(8, 784), torch.randn(5, 8, 20)).shape
        torch.Size([5, 8])
    """
    rec, kl = iwae_terms(params, x, eps, likelihood=likelihood, obs_std=obs_std, y=y, activation=activation)
    return rec - kl


def iwae(
    params: Params,
    x: Tensor,
    eps: Tensor,
    *,
    y: Tensor | None = None,
    likelihood: str = "bernoulli",
    obs_std: float | Tensor = 1.0,
    activation: str = "relu",
) -> Tensor:
    """The importance-weighted bound, log (1/k) sum_i w_i per example, in nats.

    A lower bound on log p(x) (log p(x|y) for a conditional VAE) in expectation
    that tightens as k grows; with k = 1 it equals
    ``elbo(params, x, eps[0], kl="mc", y=y)``.

    Args:
        x: (b, *input_shape) or (b, d).
        eps: (k, b, z), eps ~ N(0, I): k samples per example.
        y: labels of a conditional VAE (``init(..., n_classes=n)``): int (b,)
            or one-hot (b, n); required for conditional params, refused otherwise.
        likelihood, obs_std: the observation model, as in :func:`vaefunc.elbo`.
        activation: the hidden activation, as in :func:`vaefunc.encode`.

    Returns:
        (b,)

    Example:
        >>> params = init((784,), latent_dim=20)
        >>> iwae(params, torch.rand(8, 784), torch.randn(5, 8, 20)).shape
        torch.Size([8])
        >>> cond = init((784,), latent_dim=20, n_classes=10)
        >>> iwae(cond, torch.rand(8, 784), torch.randn(5, 8, 20), y=torch.arange(8)).shape
        torch.Size([8])
    """
    check_likelihood(likelihood)
    check_activation(activation)
    _check_eps(params, x, eps)
    _check_y(params, x, y)
    lw = log_weights(params, x, eps, likelihood=likelihood, obs_std=obs_std, y=y, activation=activation)
    return torch.logsumexp(lw, dim=0) - math.log(eps.shape[0])


def log_likelihood(
    params: Params,
    x: Tensor,
    *,
    y: Tensor | None = None,
    k: int = 5000,
    seed: int = 0,
    chunk: int | None = None,
    likelihood: str = "bernoulli",
    obs_std: float | Tensor = 1.0,
    batch_size: int = 100,
    activation: str = "relu",
) -> Tensor:
    """Importance-sampled log p(x) per example, in nats: :func:`iwae` with k samples.

    Memory is bounded: examples go ``batch_size`` at a time and the k samples
    ``chunk`` at a time, with a running ``logaddexp``, so at most
    chunk x batch_size samples are alive, whatever k and the number of
    examples. eps comes from a local ``torch.Generator`` seeded with ``seed``
    (the same seed, chunk and batch_size give the same numbers). No gradient
    is recorded.

    In expectation the estimate lies below log p(x) (Jensen) and rises to it as
    k grows; on average it is at least the ELBO. For a conditional VAE it
    estimates log p(x|y).

    Args:
        x: (n, *input_shape) or (n, d).
        y: labels of a conditional VAE: ints (n,) or one-hot (n, n_classes) (a
            tensor, array or sequence); required for conditional params,
            refused otherwise.
        k: importance samples per example.
        seed: seeds the noise.
        chunk: samples per chunk; default: as many as keep chunk x batch_size x
            the widest layer at about 2^22 floats.
        likelihood, obs_std: the observation model, as in :func:`vaefunc.elbo`.
        batch_size: examples per chunk.
        activation: the hidden activation, as in :func:`vaefunc.encode`.

    Returns:
        (n,)

    Example:
        >>> params = init((784,), latent_dim=20)
        >>> log_likelihood(params, torch.rand(10, 784), k=100).shape
        torch.Size([10])
        >>> cond = init((784,), latent_dim=20, n_classes=10)
        >>> log_likelihood(cond, torch.rand(10, 784), y=torch.arange(10), k=100).shape
        torch.Size([10])
    """
    check_likelihood(likelihood)
    check_activation(activation)
    for name, value in (("k", k), ("batch_size", batch_size), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "seed" else 1):
            raise ValueError(f"{name} must be a {'non-negative' if name == 'seed' else 'positive'} int; got {value!r}")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk must be None or a positive int; got {chunk!r}")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (n, *input_shape); got {type(x).__name__}")
    d, zdim = data_dim(params), latent_dim(params)
    w = params["decoder.0.weight"]
    x = flatten(x, d).to(dtype=w.dtype, device=w.device)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (n, *input_shape); got {tuple(x.shape)}")
    n_classes = architecture(params).n_classes
    if y is None and n_classes:
        raise ValueError(f"these params are conditional on {n_classes} classes; pass labels y")
    if y is not None:
        if isinstance(y, np.ndarray):
            y = torch.from_numpy(y)
        y = one_hot(labels_tensor(y, x.shape[0], n_classes, device=w.device), n_classes, w.dtype)
    if chunk is None:
        widest = max([d, zdim] + [v.shape[0] for key, v in params.items() if key.endswith("weight") and v.ndim == 2])
        chunk = max(1, min(k, _CHUNK_BUDGET // (batch_size * widest)))
    gen = torch.Generator(device=w.device).manual_seed(seed)
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            yb = None if y is None else y[start : start + batch_size]
            acc = torch.full((xb.shape[0],), -math.inf, dtype=w.dtype, device=w.device)
            for done in range(0, k, chunk):
                kk = min(chunk, k - done)
                eps = torch.randn(kk, xb.shape[0], zdim, generator=gen, dtype=w.dtype, device=w.device)
                lw = log_weights(params, xb, eps, likelihood=likelihood, obs_std=obs_std, y=yb, activation=activation)
                acc = torch.logaddexp(acc, torch.logsumexp(lw, dim=0))
            out.append(acc - math.log(k))
    return torch.cat(out)


def _check_eps(params: Params, x: Tensor, eps: Tensor) -> None:
    z = latent_dim(params)
    if eps.ndim != 3 or eps.shape[1] != x.shape[0] or eps.shape[2] != z:
        raise ValueError(
            f"eps must have shape (k, b, z) = (k, {x.shape[0]}, {z}) for x of batch {x.shape[0]}; "
            f"got {tuple(eps.shape)}"
        )


def _check_y(params: Params, x: Tensor, y: Tensor | None) -> None:
    """Labels exactly when the params are conditional, one per example of x."""
    n = architecture(params).n_classes
    if y is None:
        if n:
            raise ValueError(f"these params are conditional on {n} classes; pass labels y")
        return
    if not n:
        raise ValueError("these params are unconditional (n_classes=0); got labels y")
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a tensor of ints (b,) or one-hot rows (b, {n}); got {type(y).__name__}")
    want = (x.shape[0], n) if y.is_floating_point() else (x.shape[0],)
    if tuple(y.shape) != want:
        kind = "one-hot" if y.is_floating_point() else "integer"
        raise ValueError(f"{kind} labels y must have shape {want} for x of batch {x.shape[0]}; got {tuple(y.shape)}")
