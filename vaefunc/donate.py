"""Buffer donation: run a pure step on params and optimizer state that the caller owns.

A pure step returns new params and a new optimizer state and leaves its inputs
alone. Inside :func:`vaefunc.train` nobody else holds the old values (the loop
made its own copies of what the user passed in), so they may be overwritten:
the step's results are written into the same tensors, which is what JAX's
``donate_argnums`` does. Nothing changes in what a step computes; it saves the
allocation of a fresh set of params and moments every step, and lets the
optimizer run as one pass over memory:

* compiled: :func:`donated` wraps the pure step and copies its results into
  the inputs inside the same graph, so Inductor's fused optimizer kernel
  stores straight into the param and moment buffers;
* eager on a CPU with vaefunc's own Adam: the gradient by
  :func:`eager_grad_and_value`, then :func:`fused_adam_update_`, PyTorch's fused
  multi-tensor Adam kernel applied in place, one pass instead of about ten
  (:func:`vaefunc.fused_adam`); :func:`vaefunc.train_many` applies it to stacked
  ensembles too, so each member keeps its bits equal to a lone ``train`` run.

:func:`donated` gives ``advance(params, opt_state, x, eps, *hparams, **inputs) -> metrics``,
which overwrites ``params`` and ``opt_state`` in place; :func:`owned` makes the
copies it may overwrite.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils._pytree import tree_map

from ._trees import copy_into
from ._types import Metrics, OptState, Params
from .optim import fused_adam_update_ as fused_adam_update_

Advance = Callable[..., Metrics]
"""``advance(params, opt_state, x, eps, *hparams, **inputs) -> metrics``; overwrites params and opt_state."""


def owned(tree):
    """A copy of every tensor in ``tree`` (dicts, tuples, NamedTuples), detached.

    The buffers a loop may donate, or a snapshot of them safe to keep while
    they go on changing.

    Example:
        >>> params, opt_state = owned((params, opt_state))  # the caller's tensors stay as they are
    """
    return tree_map(lambda t: t.detach().clone() if isinstance(t, Tensor) else t, tree)


def donated(step: Callable[..., tuple[Params, OptState, Metrics]]) -> Advance:
    """The pure ``step`` as an ``advance`` that writes its results into its inputs.

    ``step(params, opt_state, x, eps, *hparams, **inputs) -> (params, opt_state,
    metrics)`` must return params and a state with the structure, shapes and
    dtypes it was given (every optax-style optimizer does). Compile the result
    (``torch.compile(donated(step), fullgraph=True)``) and the copies fuse into
    the kernels that compute the new values; run eagerly it is the step plus
    one copy of the state.

    Example:
        >>> advance = torch.compile(donated(make_step(make_elbo_loss(), adam(1e-3))), fullgraph=True)
        >>> params, opt_state = owned((params, opt_state))
        >>> metrics = advance(params, opt_state, x, eps, beta)  # params and opt_state are now one step on
    """

    def advance(params: Params, opt_state: OptState, *args: Tensor, **inputs: Tensor) -> Metrics:
        new_params, new_state, metrics = step(params, opt_state, *args, **inputs)
        copy_into((params, opt_state), (new_params, new_state),
                  mismatch="the step must return params and an optimizer state with the structure it was given")
        return metrics

    return advance


def eager_grad_and_value(loss_fn: Callable) -> Callable:
    """``torch.func.grad_and_value(loss_fn, has_aux=True)`` for eager use, by ``torch.autograd.grad``.

    The same gradients, bit for bit (tested): the same backward graph, run by
    the same engine. The reason for it: the first call of
    ``torch.func.grad_and_value`` imports ``torch._dynamo`` (about 1.2 s on a
    2-core CPU), which an eager run never needs otherwise; it would be a third
    of a default ``vaefunc train``. Params that do not reach the loss get zero
    gradients, as with ``torch.func``. Not for use inside ``torch.compile`` or
    under other transforms; :func:`vaefunc.make_step` keeps ``torch.func``.
    """

    def grad_and_value(params: Params, *args: Tensor, **inputs: Tensor):
        leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
        with torch.enable_grad():
            loss, metrics = loss_fn(leaves, *args, **inputs)
        found = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        grads = {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(leaves.items(), found)}
        return grads, (loss.detach(), {k: m.detach() for k, m in metrics.items()})

    return grad_and_value

