"""The training step: one pure function, the one region torch.compile fuses."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._types import Metrics, OptState, Params
from .optim import Optimizer, apply_updates

LossFn = Callable[..., tuple[Tensor, Metrics]]
"""``loss_fn(params, x, eps, *hparams, **inputs) -> (loss, metrics)``, loss a 0-d tensor."""

Step = Callable[..., tuple[Params, OptState, Metrics]]


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
        >>> step = make_step(make_elbo_loss(), adam(1e-3))
        >>> params = init((784,), latent_dim=20, hidden=(400,))
        >>> opt_state = adam(1e-3).init(params)
        >>> x, eps, beta = torch.rand(128, 784), torch.randn(128, 20), torch.tensor(1.0)
        >>> params, opt_state, metrics = step(params, opt_state, x, eps, beta)
    """
    grad_fn = torch.func.grad_and_value(loss_fn, has_aux=True)

    def step(params: Params, opt_state: OptState, x: Tensor, eps: Tensor, *hparams: Tensor, **inputs: Tensor):
        grads, (loss, metrics) = grad_fn(params, x, eps, *hparams, **inputs)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return apply_updates(params, updates), opt_state, {"loss": loss, **metrics}

    return step
