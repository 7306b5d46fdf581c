"""The training step: one pure function, the one region torch.compile fuses.

A step is a gradient function followed by an optimizer update. The gradient
function is what differs between one model and an ensemble (``vmap`` over the
models' leading axis) or a data-parallel run (:mod:`vaefunc.distributed`
shards it); :mod:`vaefunc.runners` decides how the step runs (eagerly in
place, compiled, as a CUDA graph).

Every step and gradient function takes the batch positionally:
``(params, [opt_state,] x, eps, beta, capacity[, y])`` with ``beta`` and
``capacity`` 0-d tensors (or (m,) for an ensemble), so a value that changes
from step to step never recompiles.

Axis letters: m ensemble members, b batch, d data features, k importance samples, z latent.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._types import Metrics, OptState, Params
from .donate import eager_grad_and_value
from .optim import Optimizer, apply_updates

LossFn = Callable[..., tuple[Tensor, Metrics]]
"""``loss_fn(params, x, eps, *hparams, **inputs) -> (loss, metrics)``, loss a 0-d tensor."""

Step = Callable[..., tuple[Params, OptState, Metrics]]
GradFn = Callable[..., tuple[Params, tuple[Tensor, Metrics]]]
"""``grads_fn(params, x, eps, *hparams) -> (grads, (loss, metrics))``."""


def make_step(loss_fn: LossFn, optimizer: Optimizer) -> Step:
    """A pure training step from a loss and an optimizer.

    ``step(params, opt_state, x, eps, *hparams, **inputs) -> (params, opt_state, metrics)``
    differentiates ``loss_fn`` with ``torch.func.grad_and_value``, applies the
    optimizer and returns new params and state; its inputs are untouched.
    ``hparams`` are 0-d tensors (beta, say) handed to ``loss_fn`` as they are,
    so a value that changes from step to step never recompiles. ``inputs``
    are further per-batch tensors handed to ``loss_fn`` by keyword (the
    labels ``y`` of a conditional VAE); they are not differentiated. ``metrics``
    holds ``loss`` and ``loss_fn``'s metrics as 0-d tensors.

    The result is uncompiled; ``torch.compile(step, fullgraph=True)`` gives one
    graph with no breaks.

    Example:
        >>> model = vaefunc.VAE((784,), latent_dim=20)
        >>> step = make_step(model.loss(), adam(1e-3))
        >>> params = model.init(seed=0)
        >>> opt_state = adam(1e-3).init(params)
        >>> x, eps, beta, capacity = torch.rand(128, 784), torch.randn(128, 20), torch.tensor(1.0), torch.tensor(0.0)
        >>> params, opt_state, metrics = step(params, opt_state, x, eps, beta, capacity)
    """
    return updating(torch.func.grad_and_value(loss_fn, has_aux=True), optimizer)


def updating(grads_fn: GradFn, optimizer: Optimizer) -> Step:
    """The pure step ``grads_fn`` then ``optimizer.update``: ``step(params, opt_state, *batch, **inputs)``."""

    def step(params: Params, opt_state: OptState, *batch: Tensor, **inputs: Tensor):
        grads, (loss, metrics) = grads_fn(params, *batch, **inputs)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return apply_updates(params, updates), opt_state, {"loss": loss, **metrics}

    return step


def make_ensemble_step(loss_fn: LossFn, optimizer: Optimizer, *, shared_data: bool = True) -> Step:
    """The training step of m stacked models, vmapped over the leading axis.

    ``step(params, opt_state, x, eps, *hparams) -> (params, opt_state, metrics)``
    with params (m, ...), hparams (m,) tensors (one value per model, e.g. beta),
    and metrics (m,) tensors. With ``shared_data=True`` every model sees the same
    x: (b, d) and eps: (b, z) (common random numbers, and x is read once); with
    ``shared_data=False`` they are x: (m, b, d), eps: (m, b, z). The gradients
    come from ``vmap(grad_and_value(loss_fn, has_aux=True))``; ``optimizer.update``
    runs on the stacked tensors outside vmap (its foreach ops have no batching
    rule, and are elementwise anyway), so an (m,) lr in its state applies per model.

    Example:
        >>> step = make_ensemble_step(model.loss(), adam(1e-3))
        >>> params = vaefunc.init_many(4, (784,))
        >>> beta, capacity = torch.ones(4), torch.zeros(4)
        >>> params, opt_state, metrics = step(params, adam(1e-3).init(params), x, eps, beta, capacity)
        >>> metrics["loss"].shape
        torch.Size([4])
    """
    return updating(ensemble_gradient(loss_fn, shared_data=shared_data), optimizer)


def gradient(loss_fn: LossFn, *, eager: bool) -> GradFn:
    """``grad_and_value(loss_fn, has_aux=True)``; eagerly, the same by ``torch.autograd.grad``
    (bit for bit, without importing ``torch._dynamo``: :func:`vaefunc.donate.eager_grad_and_value`)."""
    return eager_grad_and_value(loss_fn) if eager else torch.func.grad_and_value(loss_fn, has_aux=True)


def ensemble_gradient(loss_fn: LossFn, *, shared_data: bool) -> GradFn:
    """``vmap(grad_and_value(loss_fn))`` over the models' leading axis (and the batch's, unless shared).

    Params are (m, ...), the hparams (m,); x, eps and the labels ``y=`` are
    shared (in_dims None) or (m, ...) per model.
    """
    data_dim = None if shared_data else 0
    grad_fn = torch.func.grad_and_value(loss_fn, has_aux=True)

    def grads(params: Params, x: Tensor, eps: Tensor, *hparams: Tensor, y: Tensor | None = None):
        in_dims = (0, data_dim, data_dim, *(0,) * len(hparams))
        if y is None:
            return torch.func.vmap(grad_fn, in_dims=in_dims)(params, x, eps, *hparams)

        def labelled(p: Params, x: Tensor, eps: Tensor, y: Tensor, *hparams: Tensor):  # vmap maps positional args
            return grad_fn(p, x, eps, *hparams, y=y)

        return torch.func.vmap(labelled, in_dims=(*in_dims[:3], data_dim, *in_dims[3:]))(params, x, eps, y, *hparams)

    return grads
