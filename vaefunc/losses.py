"""Log-likelihoods, the closed-form KL and the ELBO, in nats.

Signs are in the names: ``*_log_prob`` and ``elbo`` are to be maximised,
``kl_*`` is >= 0 and ``loss = -objective``.

Axis letters: b batch, d data features, z latent.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import vmap

from ._types import Metrics, Params
from .model import data_dim, decode, encode, flatten_example, reparameterize

LIKELIHOODS = ("bernoulli", "gaussian")


def check_likelihood(likelihood: str) -> None:
    """Raise a ValueError naming the known likelihoods if ``likelihood`` is not one."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}; got {likelihood!r}")


def kl_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) in nats, summed over z.

    KL = 1/2 * sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j).

    ``exp(logvar) - 1`` is computed as ``expm1(logvar)``: for |logvar| below the
    float epsilon ``exp(logvar) - 1 - logvar`` rounds to ``-logvar``, a negative
    KL, while ``expm1(x) >= x`` survives rounding, so every term stays >= 0.

    Args:
        mu, logvar: (..., z).

    Returns:
        (...,), >= 0, and exactly 0 at mu = 0, logvar = 0.
    """
    return 0.5 * (mu.square() + (torch.expm1(logvar) - logvar)).sum(-1)


def bernoulli_log_prob(logits: Tensor, x: Tensor) -> Tensor:
    """log p(x | logits) of independent Bernoullis, from logits: (..., d) -> (...,).

    Uses ``binary_cross_entropy_with_logits`` (never log of a sigmoid), which is
    also the right cross-entropy for intensities x in [0, 1].
    """
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def gaussian_log_prob(mean: Tensor, x: Tensor, obs_std: float | Tensor = 1.0) -> Tensor:
    """log N(x; mean, obs_std^2 I) with its normalising constant: (..., d) -> (...,)."""
    obs_std = torch.as_tensor(obs_std, dtype=mean.dtype, device=mean.device)
    se = ((x - mean) / obs_std).square()
    return -0.5 * (se + 2.0 * torch.log(obs_std) + math.log(2.0 * math.pi)).sum(-1)


def observation_log_prob(
    out: Tensor, x: Tensor, *, likelihood: str = "bernoulli", obs_std: float | Tensor = 1.0
) -> Tensor:
    """log p(x|z) from the decoder's output ``out``: (..., d) -> (...,)."""
    if likelihood == "bernoulli":
        return bernoulli_log_prob(out, x)
    if likelihood == "gaussian":
        return gaussian_log_prob(out, x, obs_std)
    check_likelihood(likelihood)
    raise AssertionError("unreachable")


def elbo_parts(
    params: Params,
    x: Tensor,
    eps: Tensor,
    *,
    likelihood: str = "bernoulli",
    obs_std: float | Tensor = 1.0,
) -> tuple[Tensor, Tensor]:
    """The single-sample ELBO's two terms for ONE example.

    Written for one example, JAX style; :func:`elbo` batches it with ``vmap``.

    Args:
        x: (*input_shape) or (d,), one example.
        eps: (z,), standard-normal noise for the reparameterization.

    Returns:
        rec: 0-d, log p(x | z) at z = mu + sigma * eps.
        kl: 0-d, KL(q(z|x) || p(z)) in closed form.
    """
    x = flatten_example(x, data_dim(params))
    mu, logvar = encode(params, x)
    out = decode(params, reparameterize(mu, logvar, eps))
    return observation_log_prob(out, x, likelihood=likelihood, obs_std=obs_std), kl_normal(mu, logvar)


def elbo(
    params: Params,
    x: Tensor,
    eps: Tensor,
    *,
    beta: float | Tensor = 1.0,
    likelihood: str = "bernoulli",
    obs_std: float | Tensor = 1.0,
) -> Tensor:
    """Per-example single-sample ELBO, log p(x|z) - beta * KL(q(z|x) || p(z)), in nats.

    With beta = 1 it is an unbiased estimate of the evidence lower bound
    E_q[log p(x|z)] - KL <= log p(x); beta != 1 gives the beta-VAE objective.

    Args:
        x: (b, *input_shape) or (b, d).
        eps: (b, z), eps ~ N(0, I).

    Returns:
        (b,)

    Example:
        >>> params = init((784,), latent_dim=20, hidden=(400,))
        >>> x, eps = torch.rand(8, 784), torch.randn(8, 20)
        >>> elbo(params, x, eps).shape
        torch.Size([8])
    """
    check_likelihood(likelihood)
    rec, kl = elbo_terms(params, x, eps, likelihood=likelihood, obs_std=obs_std)
    return rec - beta * kl


def elbo_terms(
    params: Params,
    x: Tensor,
    eps: Tensor,
    *,
    likelihood: str = "bernoulli",
    obs_std: float | Tensor = 1.0,
) -> tuple[Tensor, Tensor]:
    """:func:`elbo_parts` batched over examples with vmap: (b, ...) -> (rec (b,), kl (b,))."""
    part = partial(elbo_parts, likelihood=likelihood, obs_std=obs_std)
    return vmap(part, in_dims=(None, 0, 0))(params, x, eps)


def make_elbo_loss(*, likelihood: str = "bernoulli", obs_std: float = 1.0):
    """The training loss, -mean_b(rec - beta * kl), with its parts as metrics.

    Returns:
        ``loss_fn(params, x, eps, beta) -> (loss, metrics)`` where beta is a
        0-d tensor (so changing it never recompiles) and metrics holds the
        batch means of ``recon`` (log p(x|z)), ``kl`` and ``elbo`` (= rec - kl, whatever beta).
    """
    check_likelihood(likelihood)

    def loss_fn(params: Params, x: Tensor, eps: Tensor, beta: Tensor) -> tuple[Tensor, Metrics]:
        rec, kl = elbo_terms(params, x, eps, likelihood=likelihood, obs_std=obs_std)
        rec, kl = rec.mean(), kl.mean()
        return beta * kl - rec, {"recon": rec, "kl": kl, "elbo": rec - kl}

    return loss_fn
