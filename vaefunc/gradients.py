"""Gradient estimators of the ELBO and the IWAE bound, as surrogate objectives.

Each estimator is a pure function whose value is the bound and whose gradient
(by ``torch.func.grad``) is the estimator's; they differ only in where
gradients are stopped. With z_i = z_phi(eps_i) the reparameterized sample of
q_phi(z|x), log w_i = log p_theta(x, z_i) - log q_phi(z_i|x) and
w~_i = w_i / sum_j w_j:

- ``"reparam"`` (Kingma and Welling 2014; Burda et al. 2015): the gradient of
  the bound itself. For the ELBO of a model with a closed-form KL, of the
  closed-form form.
- ``"stl"``, sticking the landing (Roeder et al. 2017), for the ELBO: log q is
  evaluated with phi held constant, so the encoder's gradient is the path
  derivative d log w / dz dz/dphi alone (the score term, zero in expectation,
  is dropped). Unbiased; at the exact posterior its variance is zero.
- ``"dreg"``, doubly reparameterized (Tucker et al. 2018), for the IWAE bound:
  the encoder's gradient is sum_i w~_i^2 d log w_i / dz_i dz_i/dphi (log q with
  phi held constant), the decoder's the usual sum_i w~_i d log w_i / dtheta.
  Unbiased for the IWAE bound's gradient, and its encoder signal-to-noise
  ratio grows with k where the reparameterized one's falls (Rainforth et al.
  2018). It evaluates log w twice (once with the sample's path to phi cut),
  about twice the decoder's work.

phi is every key of q: ``encoder.*`` and, for two stochastic layers,
``top_encoder.*``; theta the rest. STL and DReG need q's density at a point
with phi constant, so they are refused for IAF posteriors, for the VampPrior
(whose p(z) runs the encoder, so phi is also generative) and for
semi-supervised models.

Axis letters: k importance samples, b batch, z latent.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from . import _check, estimators
from ._types import Params

if TYPE_CHECKING:
    from .spec import VAE

GRADIENTS = {"elbo": ("reparam", "stl"), "iwae": ("reparam", "dreg")}
"""The gradient estimators each objective takes (the first is the default)."""
VARIATIONAL = ("encoder.", "top_encoder.", "flow.")
"""The key prefixes of q's parameters, phi."""


def check(model: VAE, objective: str, gradient: str) -> None:
    """The estimator must be one the objective takes, and one the model allows."""
    _check.choice("gradient", gradient, GRADIENTS.get(objective, ("reparam",)))
    if gradient == "reparam":
        return
    why = ("an IAF posterior" if model.flow_steps else "the VampPrior (its p(z) runs the encoder)"
           if model.prior == "vamp" else "a semi-supervised model" if model.semi_supervised else None)  # fmt: skip
    if why:
        raise ValueError(f"gradient={gradient!r} holds q(z|x)'s parameters constant in its density, which {why} "
                         "does not allow; use gradient='reparam'")  # fmt: skip


def cut_path(params: Params) -> Params:
    """The params with phi (q's keys) detached: the sample z keeps its value and loses its path to phi."""
    return {k: v.detach() if k.startswith(VARIATIONAL) else v for k, v in params.items()}


def dreg_iwae(model: VAE, params: Params, x: Tensor, eps: Tensor, labels: Tensor | None = None
              ) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """The IWAE bound per example with the doubly reparameterized gradient, eps (k, b, z).

    Returns:
        objective (b,): the bound's value, the DReG estimator's gradient;
        rec, kl (k, b): the parts of the log weights (their values).
    """
    rec, kl = estimators.importance_terms(model, params, x, eps, labels, stop_q=True)
    log_w = rec - kl  # (k, b): the path to phi kept, q's parameters constant
    cut_rec, cut_kl = estimators.importance_terms(model, cut_path(params), x, eps, labels)
    weights = torch.softmax(log_w.detach(), dim=0)
    squared = weights.square()
    # d/dphi: sum_i w~_i^2 dlog w_i (path only); d/dtheta: sum_i (w~_i^2 + w~_i - w~_i^2) dlog w_i/dtheta.
    surrogate = (squared * log_w + (weights - squared) * (cut_rec - cut_kl)).sum(0)
    bound = torch.logsumexp(log_w, dim=0) - math.log(eps.shape[0])
    return bound.detach() + surrogate - surrogate.detach(), rec, kl
