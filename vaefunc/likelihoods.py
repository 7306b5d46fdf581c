"""Observation models log p(x|z), from the decoder's output, in nats.

- ``"bernoulli"``: the decoder returns logits.
- ``"gaussian"``: the decoder returns the mean; the standard deviation is fixed
  (``obs_std``), or learned when the params hold ``"likelihood.logstd"``: a 0-d
  tensor (one global log-std) or a (d,) tensor (one per pixel), made by a spec with
  ``learn_obs_std="global"`` or ``"pixel"``.
- ``"continuous_bernoulli"`` (Loaiza-Ganem and Cunningham 2019): the decoder
  returns logits; the density on [0, 1] is C(lambda) lambda^x (1 - lambda)^(1 - x).

Axis letters: b batch, d data features.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _values
from ._types import Params

if TYPE_CHECKING:
    from .spec import VAE

LIKELIHOODS = ("bernoulli", "gaussian", "continuous_bernoulli")
LOGSTD_KEY = "likelihood.logstd"
UNIT_INTERVAL = ("bernoulli", "continuous_bernoulli")
"""Likelihoods whose data must lie in [0, 1]."""

# Below this |logit| the continuous Bernoulli's log normaliser is its Taylor
# series: the closed form is 0/0 at logit 0, and its float32 rounding error
# grows as the logit shrinks. The series' first omitted term is O(logit^6).
_CB_TAYLOR_BELOW = 1e-2


def check_likelihood(likelihood: str) -> None:
    """Raise a ValueError naming the known likelihoods if ``likelihood`` is not one."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}; got {likelihood!r}")


def bernoulli_log_prob(logits: Tensor, x: Tensor) -> Tensor:
    """log p(x | logits) of independent Bernoullis, from logits: (..., d) -> (...,).

    log p = x * logits - softplus(logits), which is
    ``-binary_cross_entropy_with_logits(logits, x)`` (never log of a sigmoid)
    and also the right cross-entropy for intensities x in [0, 1].
    """
    _values.float_tensors(logits=logits, x=x)
    _values.broadcast("logits", logits.shape, "x", x.shape)
    return _neg_bce_with_logits(logits, x).sum(-1)


def _neg_bce_with_logits(logits: Tensor, x: Tensor) -> Tensor:
    # Equal to -F.binary_cross_entropy_with_logits(logits, x) elementwise (up to
    # exp(-50) where softplus returns its input), but written with softplus:
    # under vmap the fused BCE kernel has no batching rule and decomposes into
    # about ten ops, which made the vmapped ELBO's gradient 2.4x slower on CPU.
    return x * logits - F.softplus(logits, threshold=50.0)


def gaussian_log_prob(mean: Tensor, x: Tensor, obs_std: float | Tensor = 1.0) -> Tensor:
    """log N(x; mean, obs_std^2 I) with its normalising constant: (..., d) -> (...,)."""
    _values.float_tensors(mean=mean, x=x)
    _values.broadcast("mean", mean.shape, "x", x.shape)
    obs_std = torch.as_tensor(obs_std, dtype=mean.dtype, device=mean.device)
    d = torch.broadcast_shapes(mean.shape, x.shape)[-1]
    # One pass over the d features (the squared error), the scale and the constant applied to the sum.
    sse = (x - mean).square().sum(-1)
    return -0.5 * (sse / obs_std.square() + d * (2.0 * torch.log(obs_std) + math.log(2.0 * math.pi)))


def gaussian_log_prob_logstd(mean: Tensor, x: Tensor, logstd: Tensor) -> Tensor:
    """log N(x; mean, diag exp(2 logstd)), logstd 0-d or (d,): (..., d) -> (...,)."""
    se = (x - mean).square() * torch.exp(-2.0 * logstd)
    return -0.5 * (se + 2.0 * logstd + math.log(2.0 * math.pi)).sum(-1)


def continuous_bernoulli_log_norm(logits: Tensor) -> Tensor:
    """log C(lambda), the continuous Bernoulli's log normalising constant, from logits.

    With lambda = sigmoid(eta), C = 2 atanh(1 - 2 lambda) / (1 - 2 lambda)
    = eta / tanh(eta / 2), which is even in eta and tends to 2 at eta = 0.
    For |eta| >= 1e-2 this is computed as log|eta| - log tanh(|eta| / 2); below,
    from the Taylor series log 2 + eta^2 / 12 - 7 eta^4 / 1440 (error
    O(eta^6)), so the value and its gradient are finite and accurate at and
    near lambda = 1/2. Elementwise.

    Example:
        >>> continuous_bernoulli_log_norm(torch.tensor([0.0, 2.0]))  # log 2 at lambda = 1/2
        tensor([0.6931, 0.9655])
    """
    a = logits.abs()
    small = a < _CB_TAYLOR_BELOW
    safe = torch.where(small, torch.ones_like(a), a)  # keeps the unused branch's gradient finite
    exact = torch.log(safe) - torch.log(torch.tanh(0.5 * safe))
    a2 = a.square()
    taylor = math.log(2.0) + a2 / 12.0 - 7.0 * a2.square() / 1440.0
    return torch.where(small, taylor, exact)


def continuous_bernoulli_log_prob(logits: Tensor, x: Tensor) -> Tensor:
    """log CB(x | lambda = sigmoid(logits)) for x in [0, 1]: (..., d) -> (...,).

    log p = log C(lambda) + x log lambda + (1 - x) log(1 - lambda), the last two
    terms as in :func:`bernoulli_log_prob`.

    Example:
        >>> continuous_bernoulli_log_prob(torch.zeros(3, 784), torch.rand(3, 784)).shape
        torch.Size([3])
    """
    return (continuous_bernoulli_log_norm(logits) + _neg_bce_with_logits(logits, x)).sum(-1)


def continuous_bernoulli_mean(logits: Tensor) -> Tensor:
    """E[x] under CB(sigmoid(logits)): lambda/(2 lambda - 1) + 1/(2 atanh(1 - 2 lambda)),
    which is 1/2 at lambda = 1/2; elementwise. In logits: 1/(1 - e^-eta) - 1/eta."""
    a = logits
    small = a.abs() < _CB_TAYLOR_BELOW
    safe = torch.where(small, torch.ones_like(a), a)
    exact = -torch.expm1(-safe).reciprocal() - safe.reciprocal()
    return torch.where(small, 0.5 + a / 12.0, exact)


def log_px(model: VAE, params: Params, out: Tensor, x: Tensor) -> Tensor:
    """log p(x|z) under the model's likelihood, from the decoder's output ``out``: (..., d) -> (...,).

    Args:
        params: read only for a learned Gaussian log-std (``"likelihood.logstd"``).
        out: the decoder's output for z: logits, or the Gaussian mean.
        x: (..., d), broadcasting against ``out``.
    """
    logstd = params[LOGSTD_KEY] if model.learn_obs_std is not None else None
    return _log_prob(model.likelihood, out, x, model.obs_std, logstd)


def _log_prob(family: str, out: Tensor, x: Tensor, std: float | Tensor, logstd: Tensor | None) -> Tensor:
    if family == "bernoulli":
        return bernoulli_log_prob(out, x)
    if family == "continuous_bernoulli":
        return continuous_bernoulli_log_prob(out, x)
    return gaussian_log_prob(out, x, std) if logstd is None else gaussian_log_prob_logstd(out, x, logstd)


def decoder_mean(model: VAE, out: Tensor) -> Tensor:
    """E[x|z] from the decoder's output: the sigmoid of the logits, the continuous
    Bernoulli's mean, or the Gaussian mean as it is. Elementwise."""
    if model.likelihood == "bernoulli":
        return torch.sigmoid(out)
    if model.likelihood == "continuous_bernoulli":
        return continuous_bernoulli_mean(out)
    return out


def param_shapes(model: VAE) -> dict[str, tuple[int, ...]]:
    """The learned log-std's key and shape, if the model learns one: () global, (d,) per pixel."""
    if model.learn_obs_std is None:
        return {}
    return {LOGSTD_KEY: () if model.learn_obs_std == "global" else (model.data_dim,)}


def init_params(model: VAE, params: Params) -> Params:
    """``params`` plus the learned log-std at log(obs_std), if the model learns one and they lack it."""
    if model.learn_obs_std is None or LOGSTD_KEY in params:
        return params
    return params | {LOGSTD_KEY: logstd_tensor(param_shapes(model)[LOGSTD_KEY], model.obs_std,
                                               params["decoder.0.weight"])}  # fmt: skip


def read_fields(params: Params, likelihood: str | None) -> dict[str, object]:
    """The likelihood fields of :class:`vaefunc.VAE` a param dict records: a learned log-std makes it Gaussian."""
    if LOGSTD_KEY not in params or likelihood not in (None, "gaussian"):
        return {}
    return {"likelihood": "gaussian", "learn_obs_std": "global" if params[LOGSTD_KEY].ndim == 0 else "pixel"}


def logstd_tensor(shape: tuple[int, ...], std: float, like: Tensor) -> Tensor:
    """A learned Gaussian log-std at log(std): () global or (d,) per pixel, in ``like``'s dtype and on its device."""
    return torch.full(shape, math.log(std), dtype=like.dtype, device=like.device)
