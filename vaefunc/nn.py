"""Pure layers: (init, apply) pairs over flat param dicts in nn.Module's layout.

Weights are stored (out, in) as in ``torch.nn.Linear`` so that a dict made here
loads into the equivalent module with ``load_state_dict`` and back. The hidden
activation is a static option named by a string (:data:`ACTIVATIONS`): a param
dict, like a state dict, does not record it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._types import Params

ACTIVATIONS = ("relu", "tanh", "elu", "softplus", "gelu", "silu")
"""The hidden activations by name; each is the default form of its ``torch.nn`` module
(``nn.ReLU()``, ``nn.Tanh()``, ``nn.ELU()``, ``nn.Softplus()``, ``nn.GELU()``, ``nn.SiLU()``)."""

_ACTIVATION_FNS = {"relu": torch.relu, "tanh": torch.tanh, "elu": F.elu, "softplus": F.softplus, "gelu": F.gelu,
                   "silu": F.silu}  # fmt: skip


def check_activation(activation: object) -> None:
    """Raise a ValueError naming :data:`ACTIVATIONS` unless ``activation`` is one of them."""
    if not isinstance(activation, str) or activation not in _ACTIVATION_FNS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}; got {activation!r}")


def activation_fn(activation: str):
    """The elementwise function an activation name stands for, e.g. ``torch.tanh`` for ``"tanh"``.

    Raises:
        ValueError: naming the allowed names, for any other.

    Example:
        >>> activation_fn("tanh")(torch.zeros(2))
        tensor([0., 0.])
    """
    check_activation(activation)
    return _ACTIVATION_FNS[activation]


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
    start: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Params:
    """An MLP laid out as ``nn.Sequential(Linear, act, Linear, ..., Linear)`` (act: e.g. ReLU).

    Linear layers sit at every other index of the sequential, so the keys are
    ``f"{prefix}.0.weight"``, ``f"{prefix}.2.weight"``, ... as in a state dict.

    Args:
        sizes: layer widths, input first: (d, h1, ..., out).
        start: the sequential index of the first linear layer (when other
            layers come before it, as the convolutions of a conv encoder do).
    """
    params: Params = {}
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layer = init_linear(gen, d_in, d_out, dtype=dtype, device=device)
        params.update({f"{prefix}.{start + 2 * i}.{name}": v for name, v in layer.items()})
    return params


def mlp_layers(params: Params, prefix: str) -> list[Params]:
    """The linear layers of an MLP made by :func:`init_mlp`, in order."""
    layers = []
    i = 0
    while f"{prefix}.{i}.weight" in params:
        layers.append({"weight": params[f"{prefix}.{i}.weight"], "bias": params[f"{prefix}.{i}.bias"]})
        i += 2
    return layers


def mlp(params: Params, x: Tensor, *, prefix: str, activation: str = "relu") -> Tensor:
    """x: (..., d) -> (..., out); ``activation`` (default ReLU) between layers, none after the last."""
    act = activation_fn(activation)
    layers = mlp_layers(params, prefix)
    for layer in layers[:-1]:
        x = act(linear(layer, x))
    return linear(layers[-1], x)


def init_conv(
    gen: torch.Generator,
    c_in: int,
    c_out: int,
    kernel_size: int,
    *,
    transpose: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Params:
    """A 2-d convolution initialised exactly as ``nn.Conv2d`` (or ``nn.ConvTranspose2d``) does.

    Both draw the weight with ``kaiming_uniform_(a=sqrt(5))`` and the bias from
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), where fan_in is computed from the
    weight's shape as torch does: ``weight.shape[1] * kernel_size**2``.

    Args:
        transpose: lay the weight out as ``nn.ConvTranspose2d`` does, (c_in, c_out, k, k),
            instead of ``nn.Conv2d``'s (c_out, c_in, k, k).

    Returns:
        {"weight": (c_out, c_in, k, k) or (c_in, c_out, k, k), "bias": (c_out,)}
    """
    shape = (c_in, c_out) if transpose else (c_out, c_in)
    weight = torch.empty(*shape, kernel_size, kernel_size, dtype=dtype, device=device)
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=gen)
    fan_in = weight.shape[1] * kernel_size * kernel_size
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    bias = torch.empty(c_out, dtype=dtype, device=device).uniform_(-bound, bound, generator=gen)
    return {"weight": weight, "bias": bias}


def conv(params: Params, x: Tensor) -> Tensor:
    """A stride-2 convolution that halves even sizes: (n, c_in, h, w) -> (n, c_out, h/2, w/2).

    Kernel k (even) with padding k/2 - 1, as ``nn.Conv2d(c_in, c_out, k, 2, k // 2 - 1)``.
    """
    k = params["weight"].shape[-1]
    return F.conv2d(x, params["weight"], params["bias"], stride=2, padding=k // 2 - 1)


def conv_transpose(params: Params, x: Tensor) -> Tensor:
    """The mirror of :func:`conv`, doubling sizes: (n, c_in, h, w) -> (n, c_out, 2h, 2w).

    As ``nn.ConvTranspose2d(c_in, c_out, k, 2, k // 2 - 1)``.
    """
    k = params["weight"].shape[-1]
    return F.conv_transpose2d(x, params["weight"], params["bias"], stride=2, padding=k // 2 - 1)


def sequential_layers(params: Params, prefix: str) -> list[tuple[int, Params]]:
    """The layers with params of an ``nn.Sequential`` state dict, by index, in order.

    Layers without params (activations, Flatten, Unflatten) leave gaps in the indices.

    Returns:
        [(index, {"weight": ..., "bias": ...}), ...] sorted by index.
    """
    start = prefix + "."
    found: dict[str, set[int]] = {"weight": set(), "bias": set()}
    for key in params:
        index, _, kind = key[len(start) :].partition(".")
        if key.startswith(start) and index.isdigit() and kind in found:
            found[kind].add(int(index))
    indices = sorted(found["weight"])
    missing = [f"{prefix}.{i}.{kind}" for kind, other in (("bias", "weight"), ("weight", "bias"))
               for i in sorted(found[other] - found[kind])]  # fmt: skip
    if missing:
        raise ValueError(f"every layer needs a weight and a bias; missing {missing}")
    return [(i, {"weight": params[f"{prefix}.{i}.weight"], "bias": params[f"{prefix}.{i}.bias"]}) for i in indices]
