"""How noisy a gradient estimator is: its signal-to-noise ratio per network, over many noise draws.

For a parameter j, SNR_j = |E[g_j]| / sd[g_j] over the estimator's draws g
(Rainforth et al. 2018, "Tighter variational bounds are not necessarily
better"). Under the IWAE bound with the reparameterized gradient the
encoder's SNR falls as O(1/sqrt(k)) while the decoder's grows as O(sqrt(k));
with DReG the encoder's grows too. A functional library makes the draws cheap:
one ``vmap`` of ``grad`` over a chunk of noise draws, summed into running
moments, so memory stays at ``chunk`` gradients whatever ``samples`` is.

Axis letters: s noise draws, k importance samples, b batch, z latent.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.func import grad, vmap

from . import _check
from ._types import Params
from .gradients import VARIATIONAL

if TYPE_CHECKING:
    from .spec import VAE


def gradient_draws(model: VAE, params: Params, x: Tensor, eps: Tensor, *, objective: str = "iwae",
                   gradient: str = "reparam", labels: Tensor | None = None) -> Params:  # fmt: skip
    """The estimator's gradient of the batch-mean bound at each noise draw: eps (s, k, b, z) for IWAE,
    (s, b, z) for the ELBO -> {key: (s, *shape)}."""
    loss = model.loss(objective, gradient=gradient)
    one = torch.ones((), dtype=x.dtype, device=x.device)

    def bound(p: Params, e: Tensor) -> Tensor:
        return -loss(p, x, e, one, one * 0, labels)[0]

    return vmap(grad(bound), in_dims=(None, 0))(params, eps)


def gradient_snr(model: VAE, params: Params, x: Tensor, *, objective: str = "iwae", gradient: str = "reparam",
                 k: int = 1, samples: int = 1000, seed: int = 0, chunk: int = 50, labels: Tensor | None = None
                 ) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Each network's gradient signal-to-noise ratio and variance over ``samples`` noise draws.

    Args:
        x: (b, *input_shape), the batch whose mean bound is differentiated.
        objective, gradient: the bound and its estimator (:mod:`vaefunc.gradients`).
        k: importance samples (``objective="iwae"``).
        samples: noise draws; ``chunk`` of them are vmapped at once.
        seed: seeds the draws.

    Returns:
        ``{"encoder": {...}, "decoder": {...}}`` (the encoder: q's params,
        ``encoder.*`` and ``top_encoder.*``; the decoder: the rest), each with
        ``snr`` (the mean over the network's parameters of |mean| / sd),
        ``snr_median``, ``snr_pooled`` (sqrt(sum_j E[g_j]^2 / sum_j Var g_j), with
        the squared means debiased by var / samples, so it stays readable where
        the per-parameter SNR falls below 1/sqrt(samples)), ``variance`` (the
        mean per-parameter variance), ``mean_sq`` (the mean squared mean
        gradient) and ``n`` (parameters).

    Example:
        >>> out = gradient_snr(model, params, x[:8], objective="iwae", gradient="dreg", k=16, samples=200)
        >>> out["encoder"]["snr"]
    """
    _check.positive_int("k", k)
    _check.integer("samples", samples, minimum=2)
    _check.positive_int("chunk", chunk)
    seed = _check.seed(seed)
    first = next(iter(params.values()))
    gen = torch.Generator(device=first.device).manual_seed(seed)
    lead = (k,) if objective == "iwae" else ()
    total = {key: torch.zeros_like(v, dtype=torch.float64) for key, v in params.items()}
    squares = {key: torch.zeros_like(v, dtype=torch.float64) for key, v in params.items()}
    for start in range(0, samples, chunk):
        n = min(chunk, samples - start)
        eps = torch.randn(n, *lead, x.shape[0], model.noise_dim, generator=gen, device=first.device, dtype=first.dtype)
        draws = gradient_draws(model, params, x, eps, objective=objective, gradient=gradient, labels=labels)
        for key, g in draws.items():
            g = g.to(torch.float64)
            total[key] += g.sum(0)
            squares[key] += g.square().sum(0)
    return {name: _summary(total, squares, samples, keep) for name, keep in
            (("encoder", lambda key: key.startswith(VARIATIONAL)),
             ("decoder", lambda key: not key.startswith(VARIATIONAL)))}  # fmt: skip


def _summary(total: Params, squares: Params, n: int, keep) -> dict[str, Any]:
    keys = [key for key in total if keep(key)]
    mean = torch.cat([total[key].flatten() / n for key in keys])
    var = torch.cat([(squares[key].flatten() - total[key].flatten().square() / n) / (n - 1) for key in keys])
    snr = mean.abs() / var.clamp(min=0).sqrt()
    snr = snr[torch.isfinite(snr)]  # a parameter the estimator never moves (sd 0) has no SNR
    signal = float((mean.square() - var / n).sum())  # unbiased for sum_j E[g_j]^2
    noise = float(var.sum())
    pooled = math.sqrt(max(signal, 0.0) / noise) if noise > 0 else math.nan
    return {"snr": float(snr.mean()), "snr_median": float(snr.median()), "snr_pooled": pooled,
            "variance": float(var.mean()),
            "mean_sq": float(mean.square().mean()), "n": int(mean.numel()),
            "log_snr_se": float(snr.log().std() / math.sqrt(max(1, snr.numel())))}  # fmt: skip
