"""A pure optimizer in the optax style, over flat param dicts.

``Optimizer(init, update)``: ``state = init(params)`` and
``updates, state = update(grads, state, params)``; then
``params = apply_updates(params, updates)``. Nothing is modified in place: every
function returns new tensors. Whatever changes across steps (the step count, the
learning rate) lives in the state as 0-d tensors on the params' device, so a
compiled step never recompiles and never reads a host value.

Tree maps use the multi-tensor ``torch._foreach_*`` kernels over the dict's
values in a fixed key order (a new key order would recompile a compiled step).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from . import _check
from ._trees import copy_into
from ._types import OptState, Params

Schedule = Callable[[Tensor], Tensor]
"""A function of the step count (0-d int64 tensor) returning a 0-d tensor."""


class Optimizer(NamedTuple):
    """A pure gradient transformation: ``init(params) -> state`` and
    ``update(grads, state, params) -> (updates, state)``.

    ``step_in_place``, optional, is the same step run as one fused kernel on
    buffers the caller owns: ``step_in_place(params, grads, state)`` overwrites
    ``params`` and ``state`` with what :func:`apply_updates` of ``update`` would
    return, equal to rounding. A training loop that owns its buffers runs it
    (see :func:`in_place`); a compiled step runs the pure ``update``, which
    the compiler fuses itself.
    """

    init: Callable[[Params], OptState]
    update: Callable[..., tuple[Params, OptState]]
    step_in_place: Callable[[Params, Params, OptState], None] | None = None


class AdamState(NamedTuple):
    """The state of :func:`scale_by_adam`: the step count and Adam's two moments, per param."""

    count: Tensor  # type: ignore[assignment]  # 0-d int64: steps taken (optax's name; hides tuple.count)
    mu: Params  # first moment
    nu: Params  # second moment


class ScaleByLearningRateState(NamedTuple):
    count: Tensor  # type: ignore[assignment]  # 0-d int64: steps taken (hides tuple.count)
    lr: Tensor  # 0-d: the learning rate used at the last step; replace it to change lr


class EmptyState(NamedTuple):
    pass


def _first(params: Params) -> Tensor:
    if not params:
        raise ValueError("expected a non-empty dict of tensors; got an empty dict")
    return next(iter(params.values()))


def _zero_count(params: Params) -> Tensor:
    return torch.zeros((), dtype=torch.int64, device=_first(params).device)


def _once(scalars: Tensor) -> Tensor:
    """``scalars`` (n,), unchanged, through a reduction: Inductor stores a reduction's
    result in a buffer, so a compiled step computes these values once rather than
    inlining them into every element of the kernels that read them (for Adam's
    bias corrections, two ``pow`` calls per 16 floats: about 0.2 ms of a
    784-400-20 step on a 2-core CPU). The max over 16 copies is exact."""
    return scalars.unsqueeze(-1).expand(*scalars.shape, 16).amax(-1)


def _tree_map(fn, keys: tuple[str, ...], *trees: Params) -> list[Tensor]:
    return fn(*([t[k] for k in keys] for t in trees))


def apply_updates(params: Params, updates: Params) -> Params:
    """params + updates, leaf by leaf, as a new dict (optax.apply_updates)."""
    keys = tuple(params)
    return dict(zip(keys, _tree_map(torch._foreach_add, keys, params, updates)))


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """Adam's preconditioning, bias-corrected: m_hat / (sqrt(v_hat) + eps).

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  t = count + 1;
    update = (m / (1 - b1^t)) / (sqrt(v) / sqrt(1 - b2^t) + eps),
    as ``torch.optim.Adam`` defines it (equal to rounding: the two bias
    corrections are applied as multiplications by their reciprocals), with t a tensor.
    """
    b1, b2, eps = _check_adam(b1, b2, eps)

    def init(params: Params) -> AdamState:
        # mu and nu get tensors of their own: aliased state would make a compiled
        # step guard on the aliasing and recompile at step 2, when it is gone.
        mu = {k: torch.zeros_like(v) for k, v in params.items()}
        nu = {k: torch.zeros_like(v) for k, v in params.items()}
        return AdamState(_zero_count(params), mu, nu)

    def update(grads: Params, state: AdamState, params: Params | None = None):
        del params
        keys = tuple(grads)
        g = [grads[k] for k in keys]
        mu = torch._foreach_lerp([state.mu[k] for k in keys], g, 1.0 - b1)
        nu = torch._foreach_mul([state.nu[k] for k in keys], b2)
        torch._foreach_addcmul_(nu, g, g, 1.0 - b2)
        count = state.count + 1
        # Bias corrections in float64 from the tensor count: exact for any step,
        # as torch.optim.Adam's Python-float arithmetic is, and never a host read.
        # Their reciprocals are computed once per step, so each element costs one
        # division; _once keeps a compiled step from redoing the pow per element.
        t = count.to(torch.float64)
        inv_bc1, inv_bc2_sqrt = _once(torch.stack([1.0 / (1.0 - b1**t), torch.rsqrt(1.0 - b2**t)]).to(g[0].dtype))
        # The in-place ops below touch only tensors made in this function (the
        # inputs are never written): fewer allocations than out-of-place ops.
        denom = torch._foreach_sqrt(nu)
        torch._foreach_mul_(denom, inv_bc2_sqrt)
        torch._foreach_add_(denom, eps)
        updates = torch._foreach_mul(mu, inv_bc1)
        torch._foreach_div_(updates, denom)
        return dict(zip(keys, updates)), AdamState(count, dict(zip(keys, mu)), dict(zip(keys, nu)))

    return Optimizer(init, update)


def scale_by_learning_rate(learning_rate: float | Tensor | Schedule) -> Optimizer:
    """Multiply updates by -lr (descent). lr is a number or a schedule of the step count.

    The lr in effect is kept in the state as a 0-d tensor; with a fixed number
    it is carried over from step to step, so ``state._replace(lr=...)`` changes it
    without recompiling a compiled step.

    For stacked ensemble params (every leaf (m, ...)), ``learning_rate`` may be
    an (m,) tensor: member i's leaves are scaled by ``learning_rate[i]``.
    """
    if not callable(learning_rate):
        _check_lr(learning_rate)

    def init(params: Params) -> ScaleByLearningRateState:
        first = _first(params)
        count = _zero_count(params)
        lr = learning_rate(count) if callable(learning_rate) else learning_rate
        return ScaleByLearningRateState(count, torch.as_tensor(lr, dtype=first.dtype, device=first.device))

    def update(updates: Params, state: ScaleByLearningRateState, params: Params | None = None):
        del params
        lr = learning_rate(state.count).to(state.lr.dtype) if callable(learning_rate) else state.lr
        keys = tuple(updates)
        u = [updates[k] for k in keys]
        if lr.ndim == 0:
            scaled = torch._foreach_mul(u, -lr)
        else:  # one lr per ensemble member: (m,) broadcast over each (m, ...) leaf
            scaled = torch._foreach_mul(u, [-lr.reshape(lr.shape + (1,) * (v.ndim - lr.ndim)) for v in u])
        return dict(zip(keys, scaled)), ScaleByLearningRateState(state.count + 1, lr)

    return Optimizer(init, update)


def chain(*transforms: Optimizer) -> Optimizer:
    """Apply transforms in order; the state is the tuple of their states."""

    def init(params: Params) -> tuple:
        return tuple(t.init(params) for t in transforms)

    def update(updates: Params, state: tuple, params: Params | None = None):
        new_state = []
        for t, s in zip(transforms, state):
            updates, s = t.update(updates, s, params)
            new_state.append(s)
        return updates, tuple(new_state)

    return Optimizer(init, update)


def adam(learning_rate: float | Tensor | Schedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """Adam (Kingma and Ba 2015), step for step equal to ``torch.optim.Adam``.

    Example:
        >>> opt = adam(1e-3)
        >>> params = {"w": torch.ones(3)}
        >>> state = opt.init(params)
        >>> updates, state = opt.update({"w": torch.ones(3)}, state, params)
        >>> apply_updates(params, updates)["w"]
        tensor([0.9990, 0.9990, 0.9990])
    """
    b1, b2, eps = _check_adam(b1, b2, eps)
    return chain(scale_by_adam(b1, b2, eps), scale_by_learning_rate(learning_rate))


def _check_adam(b1: Any, b2: Any, eps: Any) -> tuple[float, float, float]:
    """(b1, b2, eps) checked, as floats (numpy numbers and huge ints included: torch takes floats)."""
    for name, value in (("b1", b1), ("b2", b2)):
        if _check.number(name, value) < 0.0 or value >= 1.0:
            raise ValueError(f"{name} must be in [0, 1); got {value!r}")
    if _check.number("eps", eps) < 0.0:
        raise ValueError(f"eps must be >= 0; got {eps!r}")
    return float(b1), float(b2), float(eps)


def fused_adam(
    learning_rate: float | Tensor | Schedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> Optimizer:
    """:func:`adam` with its in-place step: PyTorch's fused multi-tensor Adam kernel.

    ``init`` and ``update`` are :func:`adam`'s (a compiled step fuses those);
    ``step_in_place`` runs ``torch._fused_adam_`` over every param at once, one
    pass over memory instead of about ten foreach passes, with the learning
    rate read from the state (or the schedule of its step count). It computes
    Adam as ``torch.optim.Adam(fused=True)`` does, equal to :func:`adam` to
    rounding (about one ulp per step). This is the optimizer ``vaefunc.train``
    builds from its config.

    Example:
        >>> opt = fused_adam(1e-3)
        >>> params = {"w": torch.ones(3)}
        >>> state = opt.init(params)
        >>> opt.step_in_place(params, {"w": torch.ones(3)}, state)
        >>> params["w"]
        tensor([0.9990, 0.9990, 0.9990])
    """
    pure = adam(learning_rate, b1, b2, eps)
    schedule = learning_rate if callable(learning_rate) else None

    def step_in_place(params: Params, grads: Params, state: OptState) -> None:
        fused_adam_update_(params, grads, state, b1=b1, b2=b2, eps=eps, schedule=schedule)

    return pure._replace(step_in_place=step_in_place)


def in_place(optimizer: Optimizer) -> Callable[[Params, Params, OptState], None]:
    """``step_in_place(params, grads, state)`` for any optimizer: its own fused one, or its pure
    ``update`` with the results copied into ``params`` and ``state``."""
    if optimizer.step_in_place is not None:
        return optimizer.step_in_place

    def step_in_place(params: Params, grads: Params, state: OptState) -> None:
        updates, new_state = optimizer.update(grads, state, params)
        keys = tuple(params)
        torch._foreach_add_([params[k] for k in keys], [updates[k] for k in keys])
        copy_into(state, new_state, mismatch="the optimizer's update must return a state with the structure it was given")

    return step_in_place


def fused_adam_update_(
    params: Params, grads: Params, opt_state: OptState, *, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
    schedule: Schedule | None = None,
) -> None:  # fmt: skip
    """Apply one step of :func:`adam` in place, with PyTorch's fused Adam kernel.

    ``params`` and ``opt_state`` (the state of ``adam``) are overwritten;
    ``grads`` is only read. With stacked ensemble params (every leaf (m, ...))
    the state's lr may be (m,): member i's slices are updated with lr[i] (one
    kernel call per member; the kernel is elementwise, so a slice gets exactly
    the bits a lone model would). With a ``schedule``, the lr is
    ``schedule(count)`` (stored in the state, as ``adam``'s update does).
    """
    adam_state, lr_state = _adam_states(opt_state)
    if schedule is not None:
        lr_state.lr.copy_(schedule(lr_state.count))
    keys = tuple(params)
    adam_state.count.add_(1)
    lr_state.count.add_(1)
    lists = [[tree[k] for k in keys] for tree in (params, grads, adam_state.mu, adam_state.nu)]
    constants = dict(beta1=b1, beta2=b2, weight_decay=0.0, eps=eps, amsgrad=False, maximize=False)
    lrs = [lr_state.lr] if lr_state.lr.ndim == 0 else list(lr_state.lr)
    for i, lr in enumerate(lrs):
        member = lists if lr_state.lr.ndim == 0 else [[t[i] for t in ts] for ts in lists]
        torch._fused_adam_(*member, [], [adam_state.count] * len(keys), lr=lr, **constants)  # type: ignore[call-overload]  # a private op: its stub's overloads take no **dict


def _adam_states(opt_state: OptState) -> tuple[AdamState, ScaleByLearningRateState]:
    try:
        adam_state, lr_state = opt_state
    except (TypeError, ValueError):
        adam_state = lr_state = None
    if not (isinstance(adam_state, AdamState) and isinstance(lr_state, ScaleByLearningRateState)):
        raise TypeError(f"the fused Adam update needs the state of vaefunc.adam; got {type(opt_state).__name__}")
    return adam_state, lr_state


def sgd(learning_rate: float | Tensor | Schedule) -> Optimizer:
    """Plain gradient descent: params - lr * grads."""
    return scale_by_learning_rate(learning_rate)


def clip_by_global_norm(max_norm: float) -> Optimizer:
    """Scale all updates together so their joint L2 norm is at most max_norm."""
    max_norm = _check.number("max_norm", max_norm, minimum=0.0, strict=True)  # a float: torch takes no huge ints

    def init(params: Params) -> EmptyState:
        return EmptyState()

    def update(updates: Params, state: EmptyState, params: Params | None = None):
        keys = tuple(updates)
        u = [updates[k] for k in keys]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(u)))
        scale = torch.clamp(max_norm / (norm + 1e-12), max=1.0)
        return dict(zip(keys, torch._foreach_mul(u, scale))), state

    return Optimizer(init, update)


def _check_lr(lr: object, name: str = "learning_rate") -> None:
    if isinstance(lr, Tensor):
        if lr.is_floating_point() and bool(torch.isfinite(lr).all() and (lr > 0).all()):
            return
    elif not isinstance(lr, (bool, np.bool_)) and isinstance(lr, (int, float, np.integer, np.floating)) \
            and math.isfinite(lr) and lr > 0:  # fmt: skip
        return
    raise ValueError(f"{name} must be a positive finite number; got {_check.show(lr)}")
