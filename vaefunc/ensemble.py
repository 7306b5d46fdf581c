"""Many VAEs at once: stacked params, one vmapped step, per-model hyperparameters.

An ensemble (or a sweep) of m models with the same architecture is ONE param dict
whose leaves gain a leading axis: ``encoder.0.weight`` is (m, h, d). The step is
``vmap(grad_and_value(loss_fn))`` over that axis, so the m models cost one set of
batched matmuls per layer instead of m small ones; the optimizer (elementwise,
foreach ops, which have no vmap batching rule) runs on the stacked tensors
outside vmap. A per-model lr is an (m,) tensor in the optimizer state.

Axis letters: m ensemble members, s steps of an epoch, b batch, d data features,
z latent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from . import _check
from ._types import OptState, Params
from .config import TrainConfig
from .optim import Optimizer
from .plan import PER_MODEL, check_per_model
from .spec import VAE
from .step import make_ensemble_step as make_ensemble_step
from .state import TrainState
from .training import configure, fit_run


def init_many(m: int | None = None, input_shape: int | Sequence[int] | None = None, *, seed: int = 0,
              model: VAE | None = None, k: int | None = None, **init_kwargs: Any) -> Params:  # fmt: skip
    """m fresh VAEs stacked on a leading axis; member i is ``model.init(seed=seed + i)``.

    Args:
        m: the number of models (``k=`` is its older name).
        input_shape, **init_kwargs: as for :func:`vaefunc.init`; or
        model: the :class:`vaefunc.VAE` spec of every member.
        seed: member i is drawn from ``seed + i``.

    Returns:
        A param dict with :func:`vaefunc.init`'s keys, every leaf (m, *shape).

    Example:
        >>> params = init_many(4, (784,), latent_dim=20, hidden=(400,), seed=0)
        >>> params["encoder.0.weight"].shape
        torch.Size([4, 400, 784])
    """
    m = _check.positive_int("m", _check.renamed(m, k, new="m", old="k"), maximum=MAX_MEMBERS)
    seed = _check.seed(seed)
    if model is None:
        if input_shape is None:
            raise TypeError("init_many needs input_shape (or model=)")
        inits = {k: v for k, v in init_kwargs.items() if k in ("dtype", "device")}
        shape_kw = {k: v for k, v in init_kwargs.items() if k not in ("dtype", "device")}
        model, init_kwargs = VAE(input_shape, **shape_kw), inits  # type: ignore[arg-type]  # VAE takes an int too
    elif input_shape is not None or init_kwargs.keys() - {"dtype", "device"}:
        raise TypeError("give either model= or input_shape and init's keywords, not both")
    _check.param_bytes(model.param_shapes(), init_kwargs.get("dtype", torch.float32), members=m)
    _check.seed(seed + m - 1)
    return stack([model.init(seed + i, **init_kwargs) for i in range(m)])


MAX_MEMBERS = 2**20
"""The most models ``init_many`` stacks (a larger count is a typo)."""


def stack(params_list: Sequence[Params]) -> Params:
    """Stack m param dicts of one architecture into one: every leaf (m, *shape).

    Example:
        >>> stacked = stack([init((64,), seed=0), init((64,), seed=1)])
        >>> stacked["decoder.0.bias"].shape
        torch.Size([2, 400])
    """
    params_list = list(params_list)
    if not params_list or not all(isinstance(p, dict) for p in params_list):
        raise TypeError(f"expected a non-empty sequence of param dicts; got {params_list!r:.200}")
    keys = list(params_list[0])
    for i, p in enumerate(params_list):
        if list(p) != keys:
            raise ValueError(
                f"every param dict must have the same keys in the same order; dict {i} has {list(p)}, dict 0 {keys}"
            )
        for key in keys:
            if not isinstance(p[key], Tensor):
                got = type(p[key]).__name__
                raise TypeError(f"params must map str keys to tensors; got {got} at {key!r} of dict {i}")
            if p[key].shape != params_list[0][key].shape:
                raise ValueError(
                    f"{key!r} must have one shape in every dict; dict {i} has {tuple(p[key].shape)}, "
                    f"dict 0 {tuple(params_list[0][key].shape)}"
                )
    return {key: torch.stack([p[key] for p in params_list]) for key in keys}


def unstack(params_stack: Params) -> list[Params]:
    """The inverse of :func:`stack`: m param dicts (views into the stacked leaves).

    Example:
        >>> models = unstack(init_many(3, (64,)))
        >>> len(models), models[0]["encoder.0.weight"].shape
        (3, torch.Size([400, 64]))
    """
    flat = sorted(k for k, v in params_stack.items() if k.endswith("bias") and isinstance(v, Tensor) and v.ndim < 2) \
        if isinstance(params_stack, dict) else []  # fmt: skip
    if flat:
        raise ValueError(f"params_stack must be stacked params (m, ...) from init_many or stack; got one model's "
                         f"params ({flat[0]!r} has shape {tuple(params_stack[flat[0]].shape)}, a layer's bias)")
    return [{key: v[i] for key, v in params_stack.items()} for i in range(ensemble_size(params_stack))]


def ensemble_size(params_stack: Params) -> int:
    """m, the leading axis every leaf of a stacked param dict shares."""
    if not isinstance(params_stack, dict) or not params_stack:
        raise TypeError(f"expected a non-empty dict of stacked tensors; got {type(params_stack).__name__}")
    sizes = {key: v.shape[0] if isinstance(v, Tensor) and v.ndim > 0 else None for key, v in params_stack.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise ValueError(f"every leaf must share one leading ensemble axis (m, ...); got leading sizes {sizes}")
    return int(next(iter(sizes.values())) or 0)  # every size is an int here (None was refused above)


class EnsembleResult(NamedTuple):
    """What :func:`train_many` returns: the stacked models, their optimizer state, histories and state."""

    params: Params  # the trained models, stacked (m, ...); the ones passed in are untouched
    opt_state: OptState  # the stacked optimizer state, to continue training
    history: list[list[dict[str, float]]]  # history[i]: model i's entries, one per epoch, as train's
    state: TrainState | None = None  # to resume: train_many(..., resume=result.state)
    interrupted: bool = False  # True when should_stop ended the run early


def train_many(
    params_stack: Params,
    data: Tensor | np.ndarray | Dataset | Iterable,
    *,
    model: VAE | None = None,
    config: TrainConfig | None = None,
    labels: Tensor | np.ndarray | Sequence[int] | None = None,
    opt_state: OptState | None = None,
    resume: TrainState | None = None,
    optimizer: Optimizer | None = None,
    on_epoch: Callable[[list[dict[str, float]], TrainState], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    **settings: Any,
) -> EnsembleResult:
    """Train m stacked VAEs at once, in one vmapped step; returns new params.

    Each model is trained exactly as ``train(unstack(params_stack)[i], data,
    lr=lr[i], beta=beta[i], seed=seed[i], ...)`` would train it (same batches,
    same noise, same Adam), only batched, by the same loop as :func:`vaefunc.train`:
    labels, IWAE, KL schedules, learned observation std, ``resume``,
    ``should_stop``, ``on_epoch`` and the finite check work as they do there.
    On a CPU in float64 each model ends bit for bit equal to its lone run
    wherever the BLAS batched matmul matches the single one (see the README),
    and within float rounding otherwise.

    Args:
        params_stack: from :func:`init_many` or :func:`stack`; never modified.
        data: (n, *input_shape), or data that streams (a Dataset, a DataLoader, an
            iterable of batches), as for :func:`vaefunc.train`; shared by all models
            (a DataLoader's one order takes one seed).
        model: the spec of every member (default: what one member's shapes say).
        config, labels, opt_state, resume, optimizer, should_stop: as for :func:`vaefunc.train`
            (``compile="auto"`` counts the FLOPs of all m models; the optimizer updates
            the stacked params, one shared ``lr``).
        on_epoch: called after each epoch with the m members' history entries and the state.
        **settings: :class:`vaefunc.TrainConfig` fields; ``lr`` and ``beta``
            take a number for every model or m numbers, ``seed`` an int (every
            model sees the data order and noise of ``train(..., seed=seed)``:
            common random numbers, the cleanest sweep) or m ints (model i sees
            those of ``seed[i]``: an ensemble).

    Returns:
        :class:`EnsembleResult`: stacked ``params`` and ``opt_state``,
        ``history[i]`` (model i's epoch entries with train's keys; "seconds"
        and "examples_per_s" are for the whole ensemble step, examples per model
        per second), ``state`` and ``interrupted``.

    Raises:
        ValueError, TypeError: for bad input, before any step.
        NonFiniteLossError: if any model becomes NaN or inf; it names the
            epoch, step and models (``.members``) and carries the last finite
            stacked params and optimizer state.

    Example:
        >>> params = vaefunc.init_many(5, (784,), latent_dim=20, hidden=(400,), seed=0)
        >>> result = vaefunc.train_many(params, data, epochs=10, beta=[0.5, 1, 2, 4, 8], seed=0)
        >>> [h[-1]["kl"] for h in result.history]  # falls as beta grows
    """
    m = ensemble_size(params_stack if resume is None else resume.params)
    # lr, beta and seed named against the model count before the config checks their values
    check_per_model({name: settings.get(name, getattr(config, name, None)) for name in PER_MODEL}, m)
    config = configure(config, settings)
    outcome = fit_run(params_stack, data, model=model, config=config, members=m, labels=labels, opt_state=opt_state,
                  resume=resume, optimizer=optimizer, on_epoch=on_epoch, should_stop=should_stop)  # fmt: skip
    return EnsembleResult(*outcome)
