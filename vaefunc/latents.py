"""The stochastic layers between the encoder and the decoder: what z is and its log-densities.

A spec's latents are one Gaussian layer (the default), that layer with an
inverse autoregressive flow on its sample (``posterior="iaf"``,
:mod:`vaefunc.flows`), and either with a second stochastic layer on top
(``top_latent_dim``), the IWAE paper's two-layer model (Burda et al. 2015,
section 5)::

    q(z1, z2 | x) = q(z1 | x) q(z2 | z1)         p(x, z1, z2) = p(z2) p(z1 | z2) p(x | z1)

Every conditional is a diagonal Gaussian whose mean and log-variance an MLP
(or the encoder) outputs; p(z2) is the spec's prior. The decoder reads z1.
The noise eps of one sample is (z1 + z2,) = (noise_dim,): z1's part first.
For a conditional model the top networks read the one-hot label as well.

:func:`sample` gives, at one draw of eps, the decoder's input and
log q(z|x) and log p(z) of all the latents, densities with their normalising
constants; their difference is the single-sample KL term of the ELBO and,
with log p(x|z1), the log importance weight of the IWAE bound.

Axis letters: z latent (z1), n classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _check, flows, likelihoods, network, priors
from ._types import Params
from .nn import activation_fn

if TYPE_CHECKING:
    from .spec import VAE


class Sample(NamedTuple):
    """One draw of the latents for each of (...) leading positions."""

    z: Tensor  # (..., z): the decoder's input (z1 of a two-layer model)
    log_q: Tensor  # (...,): log q(z1[, z2] | x)
    log_p: Tensor  # (...,): log p(z1[, z2])


def sample(model: VAE, params: Params, mu: Tensor, logvar: Tensor, eps: Tensor, labels: Tensor | None, *,
           stop_q: bool = False) -> Sample:  # fmt: skip
    """The latents at noise eps (..., noise_dim), from the encoder's mu, logvar (..., z) broadcast against it.

    z1 = mu + exp(logvar / 2) * eps[..., :z], then the IAF steps; z2 from
    q(z2|z1) with the rest of eps. All in eps's dtype (the encoder's outputs
    are cast to it: under bf16 autocast the layers return bf16).

    ``stop_q``: log q(z|x) with q's parameters held constant (``detach``) while
    z keeps its path to them: the density of "sticking the landing" and of the
    doubly reparameterized gradients (:mod:`vaefunc.gradients`). Its value is the
    same; only the gradient changes. Not for IAF posteriors.
    """
    mu, logvar = mu.to(eps.dtype), logvar.to(eps.dtype)
    z1_dim = model.latent_dim
    e1 = eps[..., :z1_dim] if model.top_latent_dim else eps
    z = mu + torch.exp(0.5 * logvar) * e1
    if stop_q and model.flow_steps:
        raise ValueError("stop_q needs q(z|x)'s density at a point, which an IAF posterior gives only along its own "
                         "sample path; use the reparameterized gradient for posterior='iaf'")  # fmt: skip
    log_q = priors.normal_log_prob(z, mu.detach(), logvar.detach()) if stop_q else priors.normal_log_prob(z, mu, logvar)
    if model.flow_steps:
        z, log_det = flows.iaf(model, params, z)
        log_q = log_q - log_det
    if not model.top_latent_dim:
        return Sample(z, log_q, priors.log_prior(model, params, z))
    mu2, logvar2 = gaussian(model, params, model.layout.top_enc, z, labels)
    z2 = mu2 + torch.exp(0.5 * logvar2) * eps[..., z1_dim:]
    p_mu, p_logvar = gaussian(model, params, model.layout.top_dec, z2, labels)
    if stop_q:  # q(z2|z1)'s density at the live z1 and z2, its network's params held constant
        mu2, logvar2 = gaussian(model, {k: v.detach() for k, v in params.items()}, model.layout.top_enc, z, labels)
    log_q = log_q + priors.normal_log_prob(z2, mu2, logvar2)
    log_p = priors.log_prior(model, params, z2) + priors.normal_log_prob(z, p_mu, p_logvar)
    return Sample(z, log_q, log_p)


def gaussian(model: VAE, params: Params, layers: tuple, h: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
    """A top network's diagonal Gaussian: h (..., f) -> mean, log-variance (..., out / 2), log-variance
    clamped as the encoder's is, in h's dtype."""
    act = activation_fn(model.activation)
    h = network.condition(model, h, labels)
    for w, b in layers[:-1]:
        h = act(F.linear(h, params[w], params[b]))
    w, b = layers[-1]
    mu, logvar = F.linear(h, params[w], params[b]).to(h.dtype).chunk(2, dim=-1)
    return mu, logvar.clamp(network.LOGVAR_MIN, network.LOGVAR_MAX)


def draw(model: VAE, params: Params, n: int, gen: torch.Generator, labels: Tensor | None = None) -> Tensor:
    """n draws of the decoder's input from the prior: z (n, z); for two layers z2 ~ p(z2), then
    z1 ~ p(z1|z2[, y])."""
    top = priors.draw(model, params, n, gen)
    if not model.top_latent_dim:
        return top
    mu, logvar = gaussian(model, params, model.layout.top_dec, top, labels)
    eps = torch.randn(mu.shape, generator=gen, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def code(model: VAE, params: Params, x: Tensor, labels: Tensor | None = None) -> Tensor:
    """The posterior's central point in the decoder's input space: z at eps = 0, (b, z) (the encoder's
    mean, moved by the IAF steps), for reconstructions, traversals and interpolations."""
    mu, _ = network.encode(model, params, x, labels)
    return flows.iaf(model, params, mu)[0] if model.flow_steps else mu


@torch.no_grad()
def sample_means(model: VAE, params: Params, n: int, *, seed: int = 0, labels=None) -> Tensor:
    """n decoder means E[x|z(, y)] of z drawn from the prior: (n, *input_shape).

    Args:
        labels: a conditional model's class for each draw: one int for all,
            ints (n,) or one-hot (n, n_classes).
    """
    n = _check.positive_int("n", n, maximum=priors.MAX_SAMPLES)
    seed = _check.seed(seed)
    w = next(iter(params.values()))
    y = None if labels is None else _check.labels(labels, n, model.n_classes, device=w.device)
    gen = torch.Generator(device=w.device).manual_seed(seed)
    z = draw(model, params, n, gen, y)
    mean = likelihoods.decoder_mean(model, network.decode(model, params, z, y))
    return mean.reshape(n, *model.input_shape)
