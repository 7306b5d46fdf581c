"""The closed-form KL, the ELBO and the training losses, in nats.

The observation models live in :mod:`vaefunc.likelihoods`, the priors in
:mod:`vaefunc.priors`, the importance-weighted bound in :mod:`vaefunc.estimators`.

Signs are in the names: ``*_log_prob`` and ``elbo`` are to be maximised,
``kl_*`` is >= 0 and ``loss = -objective``.

Axis letters: b batch, d data features, z latent.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from . import _check, _values, estimators, gradients, latents, likelihoods, network
from ._types import Params
from .likelihoods import LIKELIHOODS as LIKELIHOODS
from .likelihoods import bernoulli_log_prob as bernoulli_log_prob
from .likelihoods import check_likelihood as check_likelihood
from .likelihoods import gaussian_log_prob as gaussian_log_prob
from .schedules import KLSchedule, constant_beta

if TYPE_CHECKING:
    from .spec import VAE

OBJECTIVES = ("elbo", "iwae")


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
    _values.float_tensors(mu=mu, logvar=logvar)
    _values.broadcast("mu", mu.shape, "logvar", logvar.shape)
    return kl_normal_dims(mu, logvar).sum(-1)


def kl_normal_dims(mu: Tensor, logvar: Tensor) -> Tensor:
    """:func:`kl_normal` per latent dimension, not summed: (..., z) -> (..., z)."""
    return 0.5 * (mu.square() + (torch.expm1(logvar) - logvar))


KL_ESTIMATORS = ("auto", "closed", "mc")


def check_kl(model: VAE, kl: str) -> None:
    """The KL estimator must be known, and ``"closed"`` needs the standard normal prior and one
    Gaussian stochastic layer."""
    _check.choice("kl", kl, KL_ESTIMATORS)
    if kl == "closed" and model.prior == "normal" and not model.closed_form_kl:
        raise ValueError(f"kl='closed' needs one Gaussian stochastic layer; this model has posterior="
                         f"{model.posterior!r} and top_latent_dim={model.top_latent_dim} (use kl='auto' or 'mc')")
    if kl == "closed" and model.prior != "normal":
        raise ValueError(
            f"kl='closed' needs the standard normal prior; these params have a {model.prior!r} prior "
            "(use kl='auto' or 'mc')"
        )


def example_terms(model: VAE, params: Params, x: Tensor, eps: Tensor, y: Tensor | None = None, *,
                  kl: str = "auto", per_dim: bool = False, stop_q: bool = False) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The single-sample ELBO's two terms for ONE example, JAX style (batched with ``vmap``).

    Args:
        x: (*input_shape) or (d,), one example.
        eps: (z,), standard-normal noise for the reparameterization.
        y: the example's label for a conditional model: 0-d int or one-hot (n,).
        kl: ``"closed"``: the closed-form KL against N(0, I); ``"mc"``: the
            single-sample term log q(z|x) - log p(z) at the same z as the
            reconstruction; ``"auto"``: closed when the prior is N(0, I).
        per_dim: return the closed-form KL per latent dimension, (z,).
        stop_q: the Monte Carlo KL term with q's parameters held constant in
            log q (the same value; the gradient of "sticking the landing",
            :mod:`vaefunc.gradients`).

    Returns:
        rec: 0-d, log p(x | z) at z = mu + sigma * eps; kl: 0-d (or (z,) with ``per_dim``).
    """
    return _terms(model, params, network.flatten_example(x, model.data_dim), eps, y,
                  kl=kl, per_dim=per_dim, stop_q=stop_q)  # fmt: skip


def _terms(model: VAE, params: Params, x: Tensor, eps: Tensor, y: Tensor | None, *,
           kl: str, per_dim: bool, stop_q: bool) -> tuple[Tensor, Tensor]:  # fmt: skip
    """:func:`example_terms` over any leading axes: x (..., d) flat, eps (..., z) -> (...,) each.
    Every layer, density and sum it calls works over leading axes, so a batch needs no vmap."""
    mu, logvar = network.encode(model, params, x, y)
    if stop_q or not (per_dim or kl == "closed" or (kl == "auto" and model.closed_form_kl)):
        s = latents.sample(model, params, mu, logvar, eps, y, stop_q=stop_q)  # the Monte Carlo KL term at the same z
        out = network.flat_output(model, network.decode(model, params, s.z, y)).to(x.dtype)
        return likelihoods.log_px(model, params, out, x), s.log_q - s.log_p
    z = mu + torch.exp(0.5 * logvar) * eps
    out = network.flat_output(model, network.decode(model, params, z, y))  # a conv decoder returns (c, h, w)
    # Under bf16 autocast the layers return bf16; every term is summed in the
    # data's dtype (float32). Without autocast these casts are no-ops.
    out, mu, logvar, z = out.to(x.dtype), mu.to(x.dtype), logvar.to(x.dtype), z.to(x.dtype)
    rec = likelihoods.log_px(model, params, out, x)
    if per_dim:
        return rec, kl_normal_dims(mu, logvar)
    return rec, kl_normal(mu, logvar)


def single_sample_terms(model: VAE, params: Params, x: Tensor, eps: Tensor, labels: Tensor | None = None, *,
                        kl: str = "auto", per_dim: bool = False, stop_q: bool = False) -> tuple[Tensor, Tensor]:  # fmt: skip
    """:func:`example_terms` of a batch: x (b, ...), eps (b, z) -> (rec (b,), kl (b,) or (b, z)).

    The same function as ``vmap(example_terms)``, evaluated on the batch at once: the layers
    run as one matmul each (bias fused) and no op pays vmap's per-op dispatch, which made the
    eager training step 1.3x slower on a CPU (equal to the vmapped terms to rounding: tests/test_losses.py).
    """
    b = eps.shape[0]
    if x.ndim == 0 or x.shape[0] != b or x.numel() != b * model.data_dim:
        raise ValueError(f"expected x of {b} examples (eps's batch) with {model.data_dim} features each; "
                         f"got a tensor of shape {tuple(x.shape)}")  # fmt: skip
    return _terms(model, params, x.reshape(b, model.data_dim), eps, labels, kl=kl, per_dim=per_dim, stop_q=stop_q)


def training_loss(model: VAE, *, objective: str = "elbo", kl_schedule: KLSchedule | None = None, alpha: float = 0.0,
                  gradient: str = "reparam"):  # fmt: skip
    """The training loss for an objective and a KL schedule, with its parts as metrics.

    - ``objective="elbo"``, by the schedule's form: ``beta * KL - rec``;
      ``gamma * |KL - C| - rec`` (capacity); ``beta * sum_j max(lambda, KL_j) - rec``
      (free bits, KL_j the batch-mean closed-form KL of latent dimension j).
      Rec and KL are batch means; eps is (b, z).
    - ``objective="iwae"``: ``-mean_b iwae_k`` (Burda et al. 2015) with eps
      (k, b, z); the schedule must be None.
    - ``gradient``: the estimator of the loss's gradient (:mod:`vaefunc.gradients`):
      ``"reparam"`` (default), ``"stl"`` for the ELBO, ``"dreg"`` for IWAE; the
      loss's value is the same.

    Returns:
        ``loss_fn(params, x, eps, beta, capacity, y=None) -> (loss, metrics)``,
        beta and capacity 0-d tensors (the schedule's values at this step:
        changing them never recompiles), y the labels of a conditional model:
        int (b,) or one-hot (b, n). Metrics are the batch means of ``recon``,
        ``kl`` and ``elbo`` = recon - kl (for "iwae", over all k samples, KL the
        Monte Carlo term), plus ``iwae`` for that objective.
    """
    schedule = check_objective(objective, kl_schedule)
    return loss_of_form(model, objective, schedule.form, schedule.free_bits, alpha, gradient)


def loss_of_form(model: VAE, objective: str, form: str = "beta", free_bits_nats: float = 0.0, alpha: float = 0.0,
                 gradient: str = "reparam"):  # fmt: skip
    """:func:`training_loss` from the KL term's static form alone ("beta", "capacity" or
    "free_bits", and lambda), which is all the loss depends on: its values enter as tensors.
    ``alpha`` weighs a semi-supervised model's classification loss (:func:`semi_supervised_loss`);
    ``gradient`` names the gradient estimator (:mod:`vaefunc.gradients`)."""
    check_form(model, objective, form, gradient)
    if model.semi_supervised:
        return semi_supervised_loss(model, alpha)
    if objective == "iwae":
        return _iwae_loss(model, gradient)
    return _elbo_loss(model, form, free_bits_nats, stop_q=gradient == "stl")


def check_form(model: VAE, objective: str, form: str = "beta", gradient: str = "reparam") -> None:
    """Whether :func:`loss_of_form` can build the loss of this objective, KL form and gradient
    estimator for ``model``: a ValueError naming what is wrong, before any work."""
    gradients.check(model, objective, gradient)
    if model.semi_supervised:
        if objective != "elbo" or form != "beta":
            raise ValueError(f"a semi-supervised model trains on the ELBO with a beta (or a beta warm-up); got "
                             f"objective={objective!r} with a {form!r} KL term")  # fmt: skip
        return
    if objective == "iwae":
        return
    if form == "free_bits" and gradient == "stl":
        raise ValueError("free bits weigh the closed-form KL per dimension; gradient='stl' needs the Monte Carlo term")
    if form == "free_bits" and not model.closed_form_kl:
        raise ValueError(f"free bits need a closed-form KL per dimension: the standard normal prior and one Gaussian "
                         f"stochastic layer; got prior={model.prior!r}, posterior={model.posterior!r}, "
                         f"top_latent_dim={model.top_latent_dim}")  # fmt: skip


def check_objective(objective: str, kl_schedule: KLSchedule | None) -> KLSchedule:
    """The objective must be known and the schedule a KLSchedule (none for IWAE); returns the schedule."""
    _check.choice("objective", objective, OBJECTIVES)
    schedule = kl_schedule if kl_schedule is not None else constant_beta(1.0)
    if not isinstance(schedule, KLSchedule):
        raise TypeError(f"kl_schedule must be a KLSchedule (e.g. vaefunc.linear_warmup(...)); got {schedule!r}")
    if objective == "iwae" and kl_schedule is not None:
        raise ValueError(f"objective='iwae' takes no KL schedule (the bound has no KL weight); got {kl_schedule!r}")
    return schedule


def semi_supervised_loss(model: VAE, alpha: float):
    """Kingma et al. (2014), M2, equations 7 to 9: ``loss_fn(params, x, eps, beta, capacity, y)``.

    ``y`` (b, n) holds one-hot rows for labelled examples and rows of zeros for
    unlabelled ones. With the bound ELBO(x, y) = log p(x|y, z) + log p(y) - beta *
    KL(q(z|x, y) || p(z)) (p(y) uniform, one z per class at the shared eps):

    - labelled: -ELBO(x, y) + alpha * (-log q(y|x));
    - unlabelled: -sum_y q(y|x) ELBO(x, y) - H(q(y|x)).

    The ELBO of every class is one batched pass over (n_classes * b) examples,
    not a loop over classes. The loss is the batch mean; the metrics are the
    batch means of recon, kl and elbo (under the label, or under q(y|x)) and
    ``accuracy`` of q(y|x) on the batch's labelled examples.
    """
    n, log_prior = model.n_classes, -math.log(model.n_classes)

    def loss_fn(params: Params, x: Tensor, eps: Tensor, beta: Tensor, capacity: Tensor, y: Tensor | None = None):
        if y is None:
            raise ValueError(f"a semi-supervised model's loss needs y: one-hot rows (b, {n}) for labelled examples, "
                             "zeros for unlabelled ones")  # fmt: skip
        b = x.shape[0]
        logq = torch.log_softmax(network.classify(model, params, x), dim=-1)  # (b, n)
        eye = torch.eye(n, dtype=x.dtype, device=x.device)
        ys = eye[:, None, :].expand(n, b, n).reshape(n * b, n)  # class c for every example, class-major
        rec, kl = single_sample_terms(model, params, x.expand(n, *x.shape).reshape(n * b, -1),
                                      eps.expand(n, *eps.shape).reshape(n * b, -1), ys)  # fmt: skip
        rec, kl = rec.view(n, b).T, kl.view(n, b).T  # (b, n)
        labelled = y.sum(-1)  # 1 for a labelled example, 0 for an unlabelled one
        q = logq.exp()
        weight = torch.where(labelled[:, None] > 0, y, q)  # the one-hot label, or q(y|x)
        entropy = -(q * logq).sum(-1) * (1.0 - labelled)
        bound = (weight * (rec - beta * kl)).sum(-1) + log_prior + entropy
        cross_entropy = -(y * logq).sum(-1)
        loss = (alpha * cross_entropy - bound).mean()
        rec_m, kl_m = (weight * rec).sum(-1).mean(), (weight * kl).sum(-1).mean()
        hits = ((logq.argmax(-1) == y.argmax(-1)).to(x.dtype) * labelled).sum() / labelled.sum().clamp(min=1.0)
        elbo = ((weight * (rec - kl)).sum(-1) + log_prior + entropy).mean()
        return loss, {"recon": rec_m, "kl": kl_m, "elbo": elbo, "accuracy": hits}

    return loss_fn


def _iwae_loss(model: VAE, gradient: str = "reparam"):
    def iwae_loss(params: Params, x: Tensor, eps: Tensor, beta: Tensor, capacity: Tensor, y=None):
        if gradient == "dreg":
            bound, rec, kl = gradients.dreg_iwae(model, params, x, eps, y)
        else:
            rec, kl = estimators.importance_terms(model, params, x, eps, y)  # (k, b) each
            bound = torch.logsumexp(rec - kl, dim=0) - math.log(eps.shape[0])
        rec_m, kl_m, bound_m = rec.mean(), kl.mean(), bound.mean()
        return -bound_m, {"recon": rec_m, "kl": kl_m, "elbo": rec_m - kl_m, "iwae": bound_m}

    return iwae_loss


def _elbo_loss(model: VAE, form: str, free_bits_nats: float, *, stop_q: bool = False):
    def elbo_loss(params: Params, x: Tensor, eps: Tensor, beta: Tensor, capacity: Tensor, y=None):
        if form == "free_bits":
            rec, kl_dims = single_sample_terms(model, params, x, eps, y, per_dim=True)
            kl_dims = kl_dims.mean(0)  # (z,): batch mean per dimension
            kl = kl_dims.sum()
            kl_term = beta * torch.clamp(kl_dims, min=free_bits_nats).sum()
        else:
            rec, kl = single_sample_terms(model, params, x, eps, y, stop_q=stop_q)
            kl = kl.mean()
            kl_term = beta * (kl - capacity).abs() if form == "capacity" else beta * kl
        rec = rec.mean()
        return kl_term - rec, {"recon": rec, "kl": kl, "elbo": rec - kl}

    return elbo_loss
