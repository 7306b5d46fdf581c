"""Pure layers: (init, apply) pairs over flat param dicts in nn.Module's layout.

Weights are stored (out, in) as in ``torch.nn.Linear`` so that a dict made here
loads into the equivalent module with ``load_state_dict`` and back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._types import Params


def init_linear(
    gen: torch.Generator,
    d_in: int,
    d_out: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Params:
    """A linear layer initialised exactly as ``torch.nn.Linear`` does.

    ``nn.Linear`` draws its weight with ``kaiming_uniform_(a=sqrt(5))`` and its
    bias from U(-1/sqrt(d_in), 1/sqrt(d_in)), weight first. Doing the same draws
    from the same generator gives the same numbers.

    Returns:
        {"weight": (d_out, d_in), "bias": (d_out,)}
    """
    weight = torch.empty(d_out, d_in, dtype=dtype, device=device)
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=gen)
    bound = 1.0 / math.sqrt(d_in) if d_in > 0 else 0.0
    bias = torch.empty(d_out, dtype=dtype, device=device).uniform_(-bound, bound, generator=gen)
    return {"weight": weight, "bias": bias}


def linear(params: Params, x: Tensor) -> Tensor:
    """x: (..., d_in) -> (..., d_out)."""
    return F.linear(x, params["weight"], params["bias"])


def init_mlp(
    gen: torch.Generator,
    sizes: Sequence[int],
    *,
    prefix: str,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Params:
    """An MLP laid out as ``nn.Sequential(Linear, ReLU, Linear, ..., Linear)``.

    Linear layers sit at the even indices of the sequential, so the keys are
    ``f"{prefix}.0.weight"``, ``f"{prefix}.2.weight"``, ... as in a state dict.

    Args:
        sizes: layer widths, input first: (d, h1, ..., out).
    """
    params: Params = {}
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layer = init_linear(gen, d_in, d_out, dtype=dtype, device=device)
        params.update({f"{prefix}.{2 * i}.{name}": v for name, v in layer.items()})
    return params


def mlp_layers(params: Params, prefix: str) -> list[Params]:
    """The linear layers of an MLP made by :func:`init_mlp`, in order."""
    layers = []
    i = 0
    while f"{prefix}.{i}.weight" in params:
        layers.append({"weight": params[f"{prefix}.{i}.weight"], "bias": params[f"{prefix}.{i}.bias"]})
        i += 2
    return layers


def mlp(params: Params, x: Tensor, *, prefix: str) -> Tensor:
    """x: (..., d) -> (..., out); ReLU between layers, none after the last."""
    layers = mlp_layers(params, prefix)
    for layer in layers[:-1]:
        x = torch.relu(linear(layer, x))
    return linear(layers[-1], x)
