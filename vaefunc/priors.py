"""Priors p(z) over the latents, with their params in the model's flat dict.

Which prior a model has is read from its keys:

- none of the keys below: the standard normal N(0, I) (the default). Its KL
  against q(z|x) has a closed form, :func:`vaefunc.kl_normal`.
- ``"prior.means"`` (c, z), ``"prior.logvars"`` (c, z), ``"prior.logits"`` (c,):
  a learnable mixture of c diagonal Gaussians.
- ``"prior.pseudo_inputs"`` (c, d): the VampPrior (Tomczak and Welling 2018),
  p(z) = 1/c sum_i q(z | u_i), the encoder's posteriors at c learnable
  pseudo-inputs u_i.

For the last two the KL has no closed form, and the ELBO uses the
single-sample Monte Carlo term log q(z|x) - log p(z) at the reparameterized z
(:func:`kl_monte_carlo`). Make the keys with :func:`init_prior`.

Axis letters: c mixture components, d data features, z latent.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._types import Params
from .model import data_dim, encode, latent_dim
from .nn import check_activation

PRIORS = ("normal", "mog", "vamp")
_LOG_2PI = math.log(2.0 * math.pi)


def normal_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag exp(logvar)), normalising constant included: (..., z) -> (...,)."""
    return -0.5 * ((z - mu).square() * torch.exp(-logvar) + logvar + _LOG_2PI).sum(-1)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I): (..., z) -> (...,)."""
    return -0.5 * (z.square() + _LOG_2PI).sum(-1)


def prior_kind(params: Params) -> str:
    """"vamp", "mog" or "normal", from the params' keys (see the module docstring)."""
    if "prior.pseudo_inputs" in params:
        return "vamp"
    if "prior.means" in params:
        return "mog"
    return "normal"


def mixture_log_prob(z: Tensor, means: Tensor, logvars: Tensor, log_weights: Tensor) -> Tensor:
    """log sum_c w_c N(z; means_c, diag exp(logvars_c)), by logsumexp.

    Args:
        z: (..., z).
        means, logvars: (c, z).
        log_weights: (c,), normalised (logsumexp = 0).

    Returns:
        (...,)
    """
    comp = normal_log_prob(z.unsqueeze(-2), means, logvars)  # (..., c)
    return torch.logsumexp(comp + log_weights, dim=-1)


def prior_log_prob(params: Params, z: Tensor, *, activation: str = "relu") -> Tensor:
    """log p(z) under the model's prior: (..., z) -> (...,).

    Args:
        activation: the encoder's hidden activation (the VampPrior runs the
            encoder on its pseudo-inputs; the other priors ignore it).

    Example:
        >>> params = init_prior(init((784,), latent_dim=2), "mog", n_components=3)
        >>> prior_log_prob(params, torch.zeros(5, 2)).shape
        torch.Size([5])
    """
    check_activation(activation)
    kind = prior_kind(params)
    if kind == "normal":
        return standard_normal_log_prob(z)
    if kind == "mog":
        log_w = torch.log_softmax(params["prior.logits"], dim=-1)
        return mixture_log_prob(z, params["prior.means"], params["prior.logvars"], log_w)
    means, logvars = encode(params, params["prior.pseudo_inputs"], activation=activation)  # (c, z) each
    c = means.shape[0]
    log_w = torch.full((c,), -math.log(c), dtype=means.dtype, device=means.device)
    return mixture_log_prob(z, means, logvars, log_w)


def kl_monte_carlo(params: Params, mu: Tensor, logvar: Tensor, z: Tensor, *, activation: str = "relu") -> Tensor:
    """The single-sample KL estimate log q(z|x) - log p(z) at a sample z of q.

    Unbiased for KL(q(z|x) || p(z)) when z = mu + exp(logvar / 2) * eps,
    eps ~ N(0, I); it can be negative for one sample.

    Args:
        mu, logvar: (..., z), the posterior q(z|x).
        z: (..., z), broadcasting against mu (e.g. (k, z) samples of one (z,) posterior).
        activation: the encoder's hidden activation (used by the VampPrior only).

    Returns:
        (...,)

    Example:
        >>> params = init_prior(init((784,), latent_dim=20), "mog", n_components=10)
        >>> mu, logvar, eps = torch.zeros(8, 20), torch.zeros(8, 20), torch.randn(8, 20)
        >>> kl_monte_carlo(params, mu, logvar, mu + torch.exp(0.5 * logvar) * eps).shape
        torch.Size([8])
    """
    return normal_log_prob(z, mu, logvar) - prior_log_prob(params, z, activation=activation)


def init_prior(
    params: Params,
    kind: str,
    *,
    n_components: int = 10,
    seed: int = 0,
    scale: float = 1.0,
) -> Params:
    """A copy of ``params`` with the keys of a learnable prior.

    Args:
        params: VAE params (from :func:`vaefunc.init`); not modified. Prior keys
            it already has are replaced.
        kind: ``"normal"`` (removes any prior keys), ``"mog"`` (means drawn from
            N(0, scale^2 I), unit variances, equal weights) or ``"vamp"``
            (pseudo-inputs drawn from U(0, 1), the range of image data).
        n_components: c, the number of mixture components or pseudo-inputs.
        seed: seeds the local generator the means or pseudo-inputs are drawn from.

    Returns:
        A new dict with the prior's ``"prior.*"`` keys.

    Example:
        >>> params = init_prior(init((784,), latent_dim=20), "vamp", n_components=50)
        >>> params["prior.pseudo_inputs"].shape
        torch.Size([50, 784])
    """
    if kind not in PRIORS:
        raise ValueError(f"kind must be one of {PRIORS}; got {kind!r}")
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
        raise ValueError(f"n_components must be a positive int; got {n_components!r}")
    base = {k: v for k, v in params.items() if not k.startswith("prior.")}
    if kind == "normal":
        return base
    w = params["decoder.0.weight"]
    gen = torch.Generator(device=w.device).manual_seed(seed)
    c, z = n_components, latent_dim(params)
    if kind == "mog":
        means = scale * torch.randn(c, z, generator=gen, dtype=w.dtype, device=w.device)
        return base | {
            "prior.means": means,
            "prior.logvars": torch.zeros(c, z, dtype=w.dtype, device=w.device),
            "prior.logits": torch.zeros(c, dtype=w.dtype, device=w.device),
        }
    pseudo = torch.rand(c, data_dim(params), generator=gen, dtype=w.dtype, device=w.device)
    return base | {"prior.pseudo_inputs": pseudo}
