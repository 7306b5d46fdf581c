"""Inverse autoregressive flow (Kingma et al. 2016) on the posterior's sample, as pure functions.

Each step t runs a MADE (Germain et al. 2015) on z and updates it in the
numerically stable form of the IAF paper (its equations 11-14)::

    m, s  = MADE_t(z)                       # output i depends on z_1..z_{i-1} only
    sigma = sigmoid(s + FORGET_BIAS)
    z'    = sigma * z + (1 - sigma) * m     # dz'/dz is lower triangular, diag sigma
    log q(z') = log q(z) - sum_i log sigma_i

and the latent order is reversed before every step after the first, so each
dimension depends on every other after two steps. The MADE's masks follow
from the shapes alone (made afresh at each call from ``arange``: constants to
torch.compile, nothing stored); its params are an MLP's, keys
``"flow.<t>.<2i>.weight"`` in ``nn.Sequential`` layout, with the spec's
hidden activation. The steps here are unconditional on x (the IAF paper's
context h is not used): the posterior still depends on x through the base
Gaussian's mean and variance.

Axis letters: z latent, h hidden.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ._types import Params
from .network import flow_sizes
from .nn import activation_fn

if TYPE_CHECKING:
    from .spec import VAE

FORGET_BIAS = 1.0
"""Added to s before the sigmoid, so that a fresh step (m = s = 0) keeps most of z: sigma = 0.73."""


def degrees(widths: tuple[int, ...]) -> list[Tensor]:
    """MADE's degrees: inputs 1..D, each hidden unit cycling through 1..max(D-1, 1), outputs 1..D
    twice (m, then s). A unit may read a unit of lower (hidden: lower or equal) degree."""
    d = widths[0]
    hidden = [torch.arange(h) % max(d - 1, 1) + 1 for h in widths[1:-1]]
    out = torch.arange(widths[-1]) % d + 1
    return [torch.arange(1, d + 1), *hidden, out]


def masks(widths: tuple[int, ...], *, dtype: torch.dtype, device) -> list[Tensor]:
    """One (out, in) 0/1 mask per layer: hidden layers see degrees <= theirs, the output < its own."""
    deg = degrees(widths)
    layers = [deg[i + 1][:, None] >= deg[i][None, :] for i in range(len(deg) - 2)]
    layers.append(deg[-1][:, None] > deg[-2][None, :])
    return [m.to(dtype=dtype, device=device) for m in layers]


def made(params: Params, prefix: str, widths: tuple[int, ...], z: Tensor, activation: str) -> tuple[Tensor, Tensor]:
    """The autoregressive network: z (..., z) -> m, s (..., z), each output i a function of z_<i."""
    act = activation_fn(activation)
    h = z
    layer_masks = masks(widths, dtype=z.dtype, device=z.device)
    for i, mask in enumerate(layer_masks):
        h = F.linear(h, params[f"{prefix}.{2 * i}.weight"] * mask, params[f"{prefix}.{2 * i}.bias"])
        if i < len(layer_masks) - 1:
            h = act(h)
    m, s = h.chunk(2, dim=-1)
    return m, s


def iaf(model: VAE, params: Params, z: Tensor) -> tuple[Tensor, Tensor]:
    """Every IAF step of the spec on z (..., z): z_T (..., z) and sum_t sum_i log sigma_ti (...,),
    the log-determinant of dz_T/dz (subtract it from log q(z) to get log q(z_T))."""
    widths = flow_sizes(model)
    log_det = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
    for t in range(model.flow_steps or 0):
        if t:
            z = z.flip(-1)
        m, s = made(params, f"flow.{t}", widths, z, model.activation)
        gate = s.to(z.dtype) + FORGET_BIAS
        sigma = torch.sigmoid(gate)
        z = sigma * z + (1.0 - sigma) * m.to(z.dtype)
        log_det = log_det + F.logsigmoid(gate).sum(-1)
    return z, log_det
