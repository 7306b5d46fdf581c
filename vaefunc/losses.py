"""The closed-form KL, the ELBO and the training losses, in nats.

The observation models live in :mod:`vaefunc.likelihoods`, the priors in
:mod:`vaefunc.priors`, the importance-weighted bound in :mod:`vaefunc.estimators`.

Signs are in the names: ``*_log_prob`` and ``elbo`` are to be maximised,
``kl_*`` is >= 0 and ``loss = -objective``.

Axis letters: b batch, d data features, z latent.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor
from torch.func import vmap

from ._types import Metrics, Params
from .estimators import iwae_terms
from .likelihoods import LIKELIHOODS as LIKELIHOODS
from .likelihoods import bernoulli_log_prob as bernoulli_log_prob
from .likelihoods import check_likelihood as check_likelihood
from .likelihoods import gaussian_log_prob as gaussian_log_prob
from .likelihoods import obs_log_prob
from .model import data_dim, decode, encode, flat_features, flatten_example, reparameterize
from .nn import check_activation
from .priors import kl_monte_carlo, prior_kind
from .schedules import KLSchedule, constant_beta

OBJECTIVES = ("elbo", "iwae")


def kl_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) in nats, summed over z.

    KL = 1/2 * sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j).

    ``exp(logvar) - 1`` is computed as ``expm1(logvar)``: for |logvar| below the
    float epsilon ``exp(logvar) - 1 - logvar`` rounds to ``-logvar``, a negative
    KL, while ``expm1(x) >= x`` survives rounding, so every term stays >= 0.

    ``exp(logvar) - 1`` is computed as ``expm1(logvar)``: for |logvar| below the
    float epsilon ``exp(logvar) - 1 - logvar`` rounds to ``-logvar``, a negative
    KL, while ``expm1(x) >= x`` survives rounding, so every term stays >= 0.

    Args:
        mu, logvar: (..., z).

    Returns:
        (...,), >= 0, and exactly 0 at mu = 0, logvar = 0.
    """
    return kl_normal_dims(mu, logvar).sum(-1)


def kl_normal_dims(mu: Tensor, logvar: Tensor) -> Tensor:
    """:func:`kl_normal` per latent dimension, not summed: (..., z) -> (..., z)."""
    return 0.5 * (mu.square() + (torch.expm1(logvar) - logvar))


def observation_log_prob(
    out: Tensor, x: Tensor, *, likelihood: str = "bernoulli", obs_std: float | Tensor = 1.0
) -> Tensor:
    """log p(x|z) from the decoder's output ``out`` with a fixed obs_std: (..., d) -> (...,)."""
    return obs_log_prob({}, out, x, likelihood=likelihood, obs_std=obs_std)


KL_ESTIMATORS = ("auto", "closed", "mc")


def _check_kl(params: Params, kl: str) -> None:
    if kl not in KL_ESTIMATORS:
        raise ValueError(f"kl must be one of {KL_ESTIMATORS}; got {kl!r}")
    if kl == "closed" and prior_kind(params) != "normal":
        raise ValueError(
            f"kl='closed' needs the standard normal prior; these params have a {prior_kind(params)!r} prior "
            "(use kl='auto' or 'mc')"
        )


def _use_closed_kl(params: Params, kl: str) -> bool:
    return kl == "closed" or (kl == "auto" and prior_kind(params) == "normal")


def elbo_parts(
    params: Params,
    x: Tensor,
    eps: Tensor,
    *,
    likelihood: str = "bernoulli",
    obs_std: float | Tensor = 1.0,
    kl: str = "auto",
    per_dim: bool = False,
    y: Tensor | None = None,
    activation: str = "relu",
) -> tuple[Tensor, Tensor]:
    """The single-sample ELBO's two terms for ONE example.

    Written for one example, JAX style; :func:`elbo` batches it with ``vmap``.

    Args:
        x: (*input_shape) or (d,), one example.
        eps: (z,), standard-normal noise for the reparameterization.
        kl: ``"closed"``: the closed-form KL against N(0, I); ``"mc"``: the
            single-sample term log q(z|x) - log p(z) at the same z as the
            reconstruction; ``"auto"``: closed when the prior is N(0, I).
        per_dim: return the closed-form KL per latent dimension, (z,).
        y: the example's label for a conditional VAE: 0-d int or one-hot (n,).
        activation: the hidden activation, as in :func:`vaefunc.encode`.

    Returns:
        rec: 0-d, log p(x | z) at z = mu + sigma * eps.
        kl: 0-d (or (z,) with ``per_dim``), the KL(q(z|x) || p(z)) term.
    """
    x = flatten_example(x, data_dim(params))
    mu, logvar = encode(params, x, y, activation=activation)
    z = reparameterize(mu, logvar, eps)
    out = flat_features(params, decode(params, z, y, activation=activation))  # a conv decoder returns (c, h, w)
    # Under bf16 autocast the layers return bf16; every term is summed in the
    # data's dtype (float32). Without autocast these casts are no-ops.
    out, mu, logvar, z = out.to(x.dtype), mu.to(x.dtype), logvar.to(x.dtype), z.to(x.dtype)
    rec = obs_log_prob(params, out, x, likelihood=likelihood, obs_std=obs_std)
    if per_dim:
        return rec, kl_normal_dims(mu, logvar)
    if _use_closed_kl(params, kl):
        return rec, kl_normal(mu, logvar)
    return rec, kl_monte_carlo(params, mu, logvar, z, activation=activation)


def elbo(
    params: Params,
    x: Tensor,
    eps: Tensor,
    *,
    beta: float | Tensor = 1.0,
    likelihood: str = "bernoulli",
    obs_std: float | Tensor = 1.0,
    kl: str = "auto",
    y: Tensor | None = None,
    activation: str = "relu",
) -> Tensor:
    """Per-example single-sample ELBO, log p(x|z) - beta * KL(q(z|x) || p(z)), in nats.

    With beta = 1 it is an unbiased estimate of the evidence lower bound
    E_q[log p(x|z)] - KL <= log p(x); beta != 1 gives the beta-VAE objective.
    The KL is in closed form for the standard normal prior, and otherwise the
    single-sample Monte Carlo term log q(z|x) - log p(z) (see ``kl``).

    Args:
        x: (b, *input_shape) or (b, d).
        eps: (b, z), eps ~ N(0, I).
        kl: ``"auto"`` (closed form when the prior has one), ``"closed"`` or ``"mc"``.
        y: labels of a conditional VAE: int (b,) or one-hot (b, n).
        activation: the hidden activation, one of :data:`vaefunc.model.ACTIVATIONS`
            (default ``"relu"``); it must be the one the params were trained with.

    Returns:
        (b,)

    Example:
        >>> params = init((784,), latent_dim=20, hidden=(400,))
        >>> x, eps = torch.rand(8, 784), torch.randn(8, 20)
        >>> elbo(params, x, eps).shape
        torch.Size([8])
        >>> elbo(params, x, eps, activation="tanh").shape   # the same params read as a tanh network
        torch.Size([8])
    """
    check_likelihood(likelihood)
    check_activation(activation)
    _check_kl(params, kl)
    rec, kl_term = elbo_terms(params, x, eps, likelihood=likelihood, obs_std=obs_std, kl=kl, y=y, activation=activation)
    return rec - beta * kl_term


def elbo_terms(
    params: Params,
    x: Tensor,
    eps: Tensor,
    *,
    likelihood: str = "bernoulli",
    obs_std: float | Tensor = 1.0,
    kl: str = "auto",
    per_dim: bool = False,
    y: Tensor | None = None,
    activation: str = "relu",
) -> tuple[Tensor, Tensor]:
    """:func:`elbo_parts` batched over examples with vmap: (b, ...) -> (rec (b,), kl (b,) or (b, z))."""
    part = partial(elbo_parts, likelihood=likelihood, obs_std=obs_std, kl=kl, per_dim=per_dim, activation=activation)
    if y is not None:  # vmap batches positional arguments only
        return vmap(lambda p, x, e, y: part(p, x, e, y=y), in_dims=(None, 0, 0, 0))(params, x, eps, y)
    return vmap(part, in_dims=(None, 0, 0))(params, x, eps)


def make_elbo_loss(*, likelihood: str = "bernoulli", obs_std: float = 1.0, activation: str = "relu"):
    """The training loss, -mean_b(rec - beta * kl), with its parts as metrics.

    Args:
        likelihood, obs_std: the observation model, as in :func:`elbo`.
        activation: the hidden activation, one of :data:`vaefunc.model.ACTIVATIONS`.

    Returns:
        ``loss_fn(params, x, eps, beta, *, y=None) -> (loss, metrics)`` where beta
        is a 0-d tensor (so changing it never recompiles), y the batch's labels
        for a conditional VAE, and metrics holds the batch means of ``recon``
        (log p(x|z)), ``kl`` and ``elbo`` (= rec - kl, whatever beta).
    """
    check_likelihood(likelihood)
    check_activation(activation)

    def loss_fn(
        params: Params, x: Tensor, eps: Tensor, beta: Tensor, *, y: Tensor | None = None
    ) -> tuple[Tensor, Metrics]:
        rec, kl = elbo_terms(params, x, eps, likelihood=likelihood, obs_std=obs_std, y=y, activation=activation)
        rec, kl = rec.mean(), kl.mean()
        return beta * kl - rec, {"recon": rec, "kl": kl, "elbo": rec - kl}

    return loss_fn


def make_loss(
    *,
    objective: str = "elbo",
    k: int = 1,
    likelihood: str = "bernoulli",
    obs_std: float = 1.0,
    kl_schedule: KLSchedule | None = None,
    activation: str = "relu",
):
    """The training loss for an objective and a KL schedule, with its parts as metrics.

    - ``objective="elbo"``, by the schedule's form: ``beta * KL - rec``;
      ``gamma * |KL - C| - rec`` (capacity); ``beta * sum_j max(lambda, KL_j) - rec``
      (free bits, KL_j the batch-mean closed-form KL of latent dimension j).
      Rec and KL are batch means; eps is (b, z).
    - ``objective="iwae"``: ``-mean_b iwae_k`` (Burda et al. 2015) with eps
      (k, b, z); the schedule must be the constant beta = 1.

    Args:
        k: importance samples per example (``"iwae"`` only).
        kl_schedule: the KL term's form; None is :func:`vaefunc.constant_beta`.
        activation: the hidden activation, one of :data:`vaefunc.model.ACTIVATIONS`
            (a static option: a different one builds a different loss).

    Returns:
        ``loss_fn(params, x, eps, beta, capacity, *, y=None) -> (loss, metrics)``,
        beta and capacity 0-d tensors (the schedule's values at this step:
        changing them never recompiles), y the labels of a conditional VAE:
        int (b,) or one-hot (b, n). Metrics are the batch means of ``recon``, ``kl`` and
        ``elbo`` = recon - kl (for "iwae", over all k samples, KL the Monte Carlo
        term), plus ``iwae`` for that objective.

    Example:
        >>> loss_fn = make_loss(objective="iwae", k=5)
        >>> params = init((784,), latent_dim=20)
        >>> one = torch.tensor(1.0)
        >>> loss, metrics = loss_fn(params, torch.rand(8, 784), torch.randn(5, 8, 20), one, one)
    """
    check_likelihood(likelihood)
    check_activation(activation)
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}; got {objective!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int; got {k!r}")
    schedule = kl_schedule if kl_schedule is not None else constant_beta(1.0)
    if not isinstance(schedule, KLSchedule):
        raise TypeError(f"kl_schedule must be a KLSchedule (e.g. vaefunc.linear_warmup(...)); got {schedule!r}")
    form = schedule.form
    if objective == "iwae":
        if kl_schedule is not None:
            raise ValueError(f"objective='iwae' takes no KL schedule (the bound has no KL weight); got {kl_schedule!r}")

        def iwae_loss(params: Params, x: Tensor, eps: Tensor, beta: Tensor, capacity: Tensor, *, y=None):
            # (k, b) each
            rec, kl = iwae_terms(params, x, eps, likelihood=likelihood, obs_std=obs_std, y=y, activation=activation)
            bound = torch.logsumexp(rec - kl, dim=0) - math.log(eps.shape[0])
            rec_m, kl_m, bound_m = rec.mean(), kl.mean(), bound.mean()
            return -bound_m, {"recon": rec_m, "kl": kl_m, "elbo": rec_m - kl_m, "iwae": bound_m}

        return iwae_loss

    def elbo_loss(params: Params, x: Tensor, eps: Tensor, beta: Tensor, capacity: Tensor, *, y=None):
        if form == "free_bits":
            if prior_kind(params) != "normal":
                raise ValueError("free bits need the standard normal prior (a closed-form KL per dimension)")
            rec, kl_dims = elbo_terms(
                params, x, eps, likelihood=likelihood, obs_std=obs_std, per_dim=True, y=y, activation=activation
            )
            kl_dims = kl_dims.mean(0)  # (z,): batch mean per dimension
            kl = kl_dims.sum()
            kl_term = beta * torch.clamp(kl_dims, min=schedule.free_bits).sum()
        else:
            rec, kl = elbo_terms(params, x, eps, likelihood=likelihood, obs_std=obs_std, y=y, activation=activation)
            kl = kl.mean()
            kl_term = beta * (kl - capacity).abs() if form == "capacity" else beta * kl
        rec = rec.mean()
        return kl_term - rec, {"recon": rec, "kl": kl, "elbo": rec - kl}

    return elbo_loss
