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
(:func:`kl_single_sample`). A spec with ``prior="mog"`` or ``"vamp"`` makes the keys in
:meth:`vaefunc.VAE.init` (:func:`init_params`).

Axis letters: c mixture components, d data features, z latent.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from . import network
from ._types import Params

if TYPE_CHECKING:
    from .spec import VAE

PRIORS = ("normal", "mog", "vamp")
MAX_SAMPLES = 2**24
"""The most draws one call of :func:`sample` makes (a larger n is a mistake, not a request)."""
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


def log_prior(model: VAE, params: Params, z: Tensor) -> Tensor:
    """log p(z) under the model's prior: (..., z) -> (...,). The VampPrior runs the encoder on its pseudo-inputs."""
    if model.prior == "normal":
        return standard_normal_log_prob(z)
    means, logvars, log_w = _mixture(model, params)
    return mixture_log_prob(z, means, logvars, log_w)


def _mixture(model: VAE, params: Params) -> tuple[Tensor, Tensor, Tensor]:
    """The prior's components (c, z), (c, z) and normalised log-weights (c,)."""
    if model.prior == "mog":
        return params["prior.means"], params["prior.logvars"], torch.log_softmax(params["prior.logits"], dim=-1)
    means, logvars = network.encode(model, params, params["prior.pseudo_inputs"])  # (c, z) each
    c = means.shape[0]
    return means, logvars, torch.full((c,), -math.log(c), dtype=means.dtype, device=means.device)


def kl_single_sample(model: VAE, params: Params, mu: Tensor, logvar: Tensor, z: Tensor) -> Tensor:
    """log q(z|x) - log p(z) at a sample z of q: the unbiased single-sample KL estimate, (...,)."""
    return normal_log_prob(z, mu, logvar) - log_prior(model, params, z)


def draw(model: VAE, params: Params, n: int, gen: torch.Generator) -> Tensor:
    """n draws of z from the model's prior p(z) (of a two-layer model: p(z2)): (n, z).

    The standard normal; or a component of the mixture (of Gaussians, or of
    the encoder's posteriors at the VampPrior's pseudo-inputs) picked by its
    weight, then a draw from that Gaussian.
    """
    w = next(iter(params.values()))
    eps = torch.randn(n, model.prior_dim, generator=gen, device=w.device, dtype=w.dtype)
    if model.prior == "normal":
        return eps
    means, logvars, log_w = _mixture(model, params)
    comp = torch.multinomial(log_w.exp(), n, replacement=True, generator=gen)
    return means[comp] + torch.exp(0.5 * logvars[comp]) * eps


def param_shapes(model: VAE) -> dict[str, tuple[int, ...]]:
    """The prior's keys and shapes (none for the standard normal)."""
    c, z = model.prior_components, model.prior_dim
    if model.prior == "mog":
        return {"prior.means": (c, z), "prior.logvars": (c, z), "prior.logits": (c,)}
    return {"prior.pseudo_inputs": (c, model.data_dim)} if model.prior == "vamp" else {}


def init_params(model: VAE, params: Params, *, seed: int) -> Params:
    """``params`` plus the prior's keys, drawn by :func:`prior_tensors` (nothing for N(0, I))."""
    if model.prior == "normal":
        return params
    return params | prior_tensors(model.prior, model.prior_components, model.prior_dim, model.data_dim,
                                  next(iter(params.values())), seed=seed)  # fmt: skip


def read_fields(params: Params) -> dict[str, object]:
    """The prior fields of :class:`vaefunc.VAE` a param dict records in its keys."""
    kind = prior_kind(params)
    if kind == "normal":
        return {"prior": "normal"}
    key = "prior.pseudo_inputs" if kind == "vamp" else "prior.means"
    return {"prior": kind, "prior_components": params[key].shape[0]}


def prior_tensors(kind: str, c: int, z: int, d: int, like: Tensor, *, seed: int, scale: float = 1.0) -> Params:
    """A fresh prior's keys: a mixture's means ~ N(0, scale^2 I), unit variances, equal weights (c, z);
    or the VampPrior's pseudo-inputs ~ U(0, 1) (c, d); drawn from a generator seeded with ``seed``, in
    ``like``'s dtype and on its device."""
    gen = torch.Generator(device=like.device).manual_seed(seed)
    dtype, device = like.dtype, like.device
    if kind == "mog":
        return {"prior.means": scale * torch.randn(c, z, generator=gen, dtype=dtype, device=device),
                "prior.logvars": torch.zeros(c, z, dtype=dtype, device=device),
                "prior.logits": torch.zeros(c, dtype=dtype, device=device)}  # fmt: skip
    return {"prior.pseudo_inputs": torch.rand(c, d, generator=gen, dtype=dtype, device=device)}
