"""Validators of the tensors a call computes on: types, dtypes and shapes without a host sync (fine
under torch.compile, vmap and grad), and values (finite, in [0, 1], labels) where they can be read.

The argument validators of :mod:`vaefunc._check` cover settings and params; these cover the data,
the noise and the latents a function is given, in the same message style.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import network
from ._check import labels, number, readable, show


def tensor_input(name: str, value: Any, dtype: torch.dtype) -> torch.Tensor:
    """A model input: a real floating-point tensor of the params' dtype (no host sync: safe under transforms)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (scale images to [0, 1]); got dtype {value.dtype}")
    if value.dtype != dtype:
        raise TypeError(f"{name} must have the params' dtype {dtype}; got {value.dtype} (convert it with .to({dtype}))")
    return value


def float_tensors(**named: Any) -> None:
    """Each argument a floating-point tensor (a type check only: no host sync, fine inside a step)."""
    for name, value in named.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            got = f"a {value.dtype} tensor" if isinstance(value, torch.Tensor) else show(value)
            raise TypeError(f"{name} must be a floating-point torch.Tensor; got {got}")


def broadcast(name: str, shape: Sequence[int], other_name: str, other: Sequence[int], *, onto: bool = False) -> None:
    """Two shapes broadcast together (shapes only: fine inside a step); with ``onto``, to ``other``."""
    try:
        both = torch.broadcast_shapes(shape, other)
    except RuntimeError:
        both = None
    if both is None or (onto and tuple(both) != tuple(other)):
        how = f"onto {other_name}'s shape" if onto else f"with {other_name}'s shape"
        raise ValueError(f"{name} of shape {tuple(shape)} must broadcast {how} {tuple(other)}") from None


def finite(name: str, value: torch.Tensor) -> None:
    """No NaN or inf in ``value`` (a host sync: once per call, never inside a step)."""
    if readable(value) and value.numel() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} must be finite; got {int((~torch.isfinite(value)).sum())} NaN or inf values")


def unit_interval(name: str, value: torch.Tensor, likelihood: str) -> None:
    """Values in [0, 1] for the likelihoods of data in [0, 1] (a host sync, once per call)."""
    if likelihood in ("bernoulli", "continuous_bernoulli") and value.numel() and readable(value):
        lo, hi = float(value.min()), float(value.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{name} must lie in [0, 1] for the {likelihood} likelihood; got values in "
                             f"[{lo:g}, {hi:g}] (scale it, or use likelihood='gaussian')")  # fmt: skip


def weight(name: str, value: Any) -> None:
    """A KL weight: a finite number >= 0, or a tensor of them."""
    if isinstance(value, torch.Tensor):
        if not readable(value):
            return
        if value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"{name} must be a real number or tensor >= 0; got {show(value)}")
        if value.numel() and not bool((torch.isfinite(value) & (value >= 0)).all()):
            raise ValueError(f"{name} must be finite and >= 0; got {show(value)}")
        return
    number(name, value, minimum=0.0)


def call_inputs(model: Any, params: dict, x: Any, eps: Any, given: Any) -> torch.Tensor | None:
    """The inputs of a bound (:meth:`vaefunc.VAE.elbo`, ``iwae``, ``log_weights``, and the params-first
    functions through them), once per call: x and eps real tensors of the params' dtype, x finite (in
    [0, 1] for the Bernoulli likelihoods), eps finite, labels given exactly for a conditional model,
    of the right shape and in range. Returns the labels (a tensor). The value checks stand aside
    where values cannot be read (:func:`readable`)."""
    finite("x", tensor_input("x", x, next(iter(params.values())).dtype))
    unit_interval("x", x, model.likelihood)
    finite("eps", tensor_input("eps", eps, x.dtype))
    if given is None:
        if model.n_classes:
            raise ValueError(f"these params are conditional on {model.n_classes} classes; pass labels y")
        return None
    if not model.n_classes:
        raise ValueError("these params are unconditional (n_classes=0); got labels y")
    if not isinstance(given, torch.Tensor) or readable(given):
        return labels(given, x.shape[0], model.n_classes, device=x.device)
    return given


def method_input(model: Any, name: str, value: Any, params: Any) -> torch.Tensor:
    """An input of a spec method (``x`` or ``z``, or another tensor by its name): a floating-point
    tensor of the (non-empty) params' dtype, x in the model's layout (flat (..., d) or images (..., c,
    h, w): the network's own reading of it, a view) and z (..., latent_dim). Shapes only, no host
    sync, so the methods stay usable under torch.compile and vmap."""
    if not isinstance(params, dict) or not params:
        raise TypeError(f"params must be a non-empty dict of tensors; got {type(params).__name__}")
    value = tensor_input(name, value, next(iter(params.values())).dtype)
    shape = tuple(value.shape)
    if name == "z" and (not shape or shape[-1] != model.latent_dim):
        raise ValueError(f"z must have shape (..., {model.latent_dim}) (latent_dim={model.latent_dim}); got {shape}")
    if name == "x" and not shape:
        raise ValueError(f"x must have shape (..., {', '.join(map(str, model.input_shape))}) for this model; got ()")
    if name == "x":
        try:
            network.to_image(value, model.input_shape) if model.arch == "conv" else network.flatten(value, model.data_dim)
        except ValueError as e:
            raise ValueError(f"x: {e}") from None
    return value
