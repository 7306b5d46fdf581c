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

import math
import sys
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ._types import OptState, Params
from .donate import donated, fused_adam_update_, owned
from .losses import make_elbo_loss
from .model import init
from .optim import Optimizer, adam, apply_updates
from .rng import Streams, make_streams
from .step import LossFn, Step
from .train import METRICS, NonFiniteLossError, TrainConfig, check_params, prepare_data, should_compile


def init_many(k: int, input_shape: int | Sequence[int], *, seed: int = 0, **init_kwargs: Any) -> Params:
    """k fresh VAEs stacked on a leading axis; member i is ``init(..., seed=seed + i)``.

    Args:
        k: m, the number of models.
        input_shape, seed, **init_kwargs: as for :func:`vaefunc.init`.

    Returns:
        A param dict with :func:`vaefunc.init`'s keys, every leaf (m, *shape).

    Example:
        >>> params = init_many(4, (784,), latent_dim=20, hidden=(400,), seed=0)
        >>> params["encoder.0.weight"].shape
        torch.Size([4, 400, 784])
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int (the number of models); got {k!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    return stack([init(input_shape, seed=seed + i, **init_kwargs) for i in range(k)])


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
    return [{key: v[i] for key, v in params_stack.items()} for i in range(ensemble_size(params_stack))]


def ensemble_size(params_stack: Params) -> int:
    """m, the leading axis every leaf of a stacked param dict shares."""
    if not isinstance(params_stack, dict) or not params_stack:
        raise TypeError(f"expected a non-empty dict of stacked tensors; got {type(params_stack).__name__}")
    sizes = {key: v.shape[0] if isinstance(v, Tensor) and v.ndim > 0 else None for key, v in params_stack.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise ValueError(f"every leaf must share one leading ensemble axis (m, ...); got leading sizes {sizes}")
    return next(iter(sizes.values()))


def make_ensemble_step(loss_fn: LossFn, optimizer: Optimizer, *, shared_data: bool = True) -> Step:
    """The training step of m stacked models, vmapped over the leading axis.

    ``step(params, opt_state, x, eps, *hparams) -> (params, opt_state, metrics)``
    with params (m, ...), hparams (m,) tensors (one value per model, e.g. beta),
    and metrics (m,) tensors. With ``shared_data=True`` every model sees the same
    x: (b, d) and eps: (b, z) (in_dims None: common random numbers, and x is
    read once); with ``shared_data=False`` they are x: (m, b, d), eps: (m, b, z).
    The gradients come from ``vmap(grad_and_value(loss_fn, has_aux=True))``;
    ``optimizer.update`` runs on the stacked tensors outside vmap (its foreach
    ops have no batching rule, and are elementwise anyway), so an (m,) lr in its
    state applies per model. ``torch.compile(step, fullgraph=True)`` gives one
    graph.

    Example:
        >>> step = make_ensemble_step(make_elbo_loss(), adam(1e-3))
        >>> params = init_many(4, (784,))
        >>> opt_state = adam(1e-3).init(params)
        >>> x, eps, beta = torch.rand(128, 784), torch.randn(128, 20), torch.ones(4)
        >>> params, opt_state, metrics = step(params, opt_state, x, eps, beta)
        >>> metrics["loss"].shape
        torch.Size([4])
    """
    grads_fn = _ensemble_grads(loss_fn, shared_data)

    def step(params: Params, opt_state: OptState, x: Tensor, eps: Tensor, *hparams: Tensor):
        grads, (loss, metrics) = grads_fn(params, x, eps, *hparams)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return apply_updates(params, updates), opt_state, {"loss": loss, **metrics}

    return step


def _ensemble_grads(loss_fn: LossFn, shared_data: bool):
    """``vmap(grad_and_value(loss_fn))`` over the models' leading axis (and the data's, unless shared)."""
    data_dim = None if shared_data else 0
    grad_fn = torch.func.grad_and_value(loss_fn, has_aux=True)

    def grads(params: Params, x: Tensor, eps: Tensor, *hparams: Tensor):
        in_dims = (0, data_dim, data_dim) + (0,) * len(hparams)
        return torch.func.vmap(grad_fn, in_dims=in_dims)(params, x, eps, *hparams)

    return grads


def loop_step(loss_fn: LossFn, optimizer: Optimizer, *, shared_data: bool, compiled: bool, device_type: str) -> Step:
    """The ensemble step :func:`train_many` runs, on state it owns and overwrites (:mod:`vaefunc.donate`).

    ``step(params, opt_state, x, eps, *hparams) -> (params, opt_state, metrics)``
    returns the params and state it was given, advanced in place: compiled, the
    donated :func:`make_ensemble_step`; eager on a CPU, the fused Adam update
    that ``train`` applies (``optimizer`` must then be ``vaefunc.adam`` with
    its default constants, as train_many's is); otherwise the pure step plus a copy.
    """
    if compiled:
        return _in_place(torch.compile(donated(make_ensemble_step(loss_fn, optimizer, shared_data=shared_data)),
                                       fullgraph=True))  # fmt: skip
    if device_type == "cpu":
        return _fused_ensemble_step(loss_fn, shared_data)
    return _in_place(donated(make_ensemble_step(loss_fn, optimizer, shared_data=shared_data)))


def _in_place(advance) -> Step:
    """A donated ``advance`` as a step that returns the (overwritten) params and state it was given."""

    def step(params: Params, opt_state: OptState, *args: Tensor):
        return params, opt_state, advance(params, opt_state, *args)

    return step


def _fused_ensemble_step(loss_fn: LossFn, shared_data: bool) -> Step:
    """The ensemble step for eager CPU runs of the default Adam, in place.

    The gradients are :func:`make_ensemble_step`'s; the update is
    :func:`vaefunc.donate.fused_adam_update_`, the one ``train`` applies eagerly
    on a CPU, so each member keeps the bits of its lone run. ``params`` and
    ``opt_state`` are overwritten and returned.
    """
    grads_fn = _ensemble_grads(loss_fn, shared_data)

    def step(params: Params, opt_state: OptState, x: Tensor, eps: Tensor, *hparams: Tensor):
        grads, (loss, metrics) = grads_fn(params, x, eps, *hparams)
        fused_adam_update_(params, grads, opt_state)
        return params, opt_state, {"loss": loss, **metrics}

    return step


class EnsembleResult(NamedTuple):
    """What :func:`train_many` returns: the stacked models, their optimizer state and histories."""

    params: Params  # the trained models, stacked (m, ...); the ones passed in are untouched
    opt_state: OptState  # the stacked optimizer state, to continue training
    history: list[list[dict[str, float]]]  # history[i]: model i's entries, one per epoch, as train's


def train_many(
    params_stack: Params,
    data: Tensor | np.ndarray,
    *,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float | Sequence[float] | Tensor = 1e-3,
    beta: float | Sequence[float] | Tensor = 1.0,
    likelihood: str = "bernoulli",
    obs_std: float = 1.0,
    binarize: str | None = None,
    seed: int | Sequence[int] | Tensor = 0,
    compile: bool | str = "auto",
    device: str | torch.device | None = None,
    progress: bool | str = True,
    opt_state: OptState | None = None,
    activation: str = "relu",
) -> EnsembleResult:
    """Train m stacked VAEs at once, in one vmapped step; returns new params.

    Each model is trained exactly as ``train(unstack(params_stack)[i], data,
    lr=lr[i], beta=beta[i], seed=seed[i], ...)`` would train it (same batches,
    same noise, same Adam), only batched: on CPU in float64 each model ends bit
    for bit equal to its single run wherever the BLAS batched matmul matches
    the single one (see the README), and within float rounding otherwise.

    Args:
        params_stack: from :func:`init_many` or :func:`stack`; never modified.
        data: (n, *input_shape), as for :func:`vaefunc.train`; shared by all models.
        epochs, batch_size, likelihood, obs_std, binarize, compile, device,
            progress: as for :func:`vaefunc.train` (``compile="auto"`` counts the
            FLOPs of all m models).
        lr, beta: a number for every model, or m numbers (a sequence or an (m,)
            tensor) for a sweep.
        seed: an int gives every model the same data order and noise as
            ``train(..., seed=seed)`` (common random numbers: the cleanest sweep);
            m ints give model i the data order and noise of ``train(...,
            seed=seed[i])`` (an ensemble), at the cost of m gathered batches.
        opt_state: a stacked optimizer state to continue from (``result.opt_state``).
        activation: the hidden activation of every model, as for :func:`vaefunc.train`.

    Returns:
        :class:`EnsembleResult`: stacked ``params`` and ``opt_state``, and
        ``history[i]``, model i's epoch entries with train's keys ("epoch",
        "loss", "recon", "kl", "elbo", "seconds", "examples_per_s"; the last two
        are for the whole ensemble step, examples per model per second).

    Raises:
        ValueError, TypeError: for bad input, before any step.
        NonFiniteLossError: if any model's loss becomes NaN or inf; it names
            the epoch, step and models and carries the last finite stacked
            params and optimizer state.

    Example:
        >>> params = vaefunc.init_many(5, (784,), latent_dim=20, hidden=(400,), seed=0)
        >>> result = vaefunc.train_many(params, data, epochs=10, beta=[0.5, 1, 2, 4, 8], seed=0)
        >>> [h[-1]["kl"] for h in result.history]  # falls as beta grows
    """
    m = ensemble_size(params_stack)
    one = {key: v[0] for key, v in params_stack.items()}
    check_params(one)
    dtype = one["encoder.0.weight"].dtype
    dev = torch.device(device) if device is not None else one["encoder.0.weight"].device
    lr_t, lr0 = _per_model("lr", lr, m, dtype, dev, positive=True)
    beta_t, beta0 = _per_model("beta", beta, m, dtype, dev, positive=False)
    seeds = _seeds(seed, m)
    TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr0, beta=beta0, likelihood=likelihood, obs_std=obs_std,
        binarize=binarize, seed=seeds[0], compile=compile, progress=progress,
        device=None if device is None else str(device), activation=activation,
    )  # fmt: skip  # validates every other argument, before any work
    params = {key: v.to(dev) for key, v in params_stack.items()}
    x_all = prepare_data(data, one, likelihood=likelihood, batch_size=batch_size, device=dev)
    if binarize == "static":
        x_all = (x_all > 0.5).to(x_all.dtype)

    # A plain lr stays a 0-d tensor, exactly the single-model optimizer.
    optimizer = adam(lr0 if lr_t is None else lr_t)
    if opt_state is None:
        opt_state = optimizer.init(params)
    shared = len(seeds) == 1
    loss_fn = make_elbo_loss(likelihood=likelihood, obs_std=obs_std, activation=activation)
    n, b, z = x_all.shape[0], batch_size, one["decoder.0.weight"].shape[1]
    steps_per_epoch = n // b
    # The rule reads one model's layers; m models cost m times its FLOPs per step.
    # As in train: the loop owns copies of the state and every step overwrites them.
    params, opt_state = owned((params, opt_state))
    compiled = should_compile(compile, dev, one, m * batch_size, steps_per_epoch * epochs)
    step_fn = loop_step(loss_fn, optimizer, shared_data=shared, compiled=compiled, device_type=dev.type)
    if beta_t is None:
        beta_t = torch.full((m,), float(beta0), dtype=dtype, device=dev)
    streams = [make_streams(s, dev) for s in seeds]

    history: list[list[dict[str, float]]] = [[] for _ in range(m)]
    show = progress == "always" or (progress is True and sys.stderr.isatty())
    from tqdm.auto import tqdm

    bar = tqdm(total=epochs * steps_per_epoch, disable=not show, unit="step", dynamic_ncols=True, leave=True)
    good = (*owned((params, opt_state)), 0, _binarize_states(streams))  # a snapshot: the steps overwrite the state
    try:
        for epoch in range(epochs):
            t0 = time.perf_counter()
            # The same draws as train(), one model's streams at a time.
            perm = torch.stack([
                torch.randperm(n, generator=s.data, device=dev)[: steps_per_epoch * b].view(steps_per_epoch, b)
                for s in streams
            ])  # fmt: skip  # (m or 1, s, b)
            eps = torch.stack([
                torch.randn(steps_per_epoch, b, z, generator=s.noise, device=dev, dtype=dtype) for s in streams
            ])  # fmt: skip  # (m or 1, s, b, z)
            if shared:
                perm, eps = perm[0], eps[0]
            sums = torch.zeros(m, len(METRICS), device=dev, dtype=dtype)
            # The last state checked finite: the snapshot the previous epoch ended with (or the start), at step 0.
            good = (*good[:2], 0, good[3])
            last_sync = time.perf_counter()
            for i in range(steps_per_epoch):
                x = _batch(x_all, perm, i, streams, binarize, shared)
                params, opt_state, metrics = step_fn(params, opt_state, x, eps[..., i, :, :], beta_t)
                sums = sums + torch.stack([metrics[k] for k in METRICS], dim=-1)
                bar.update(1)
                now = time.perf_counter()
                if i == steps_per_epoch - 1 or (show and now - last_sync > 0.5):
                    # This is a CPU-GPU sync point: the metrics are read on the host.
                    if not _finite(sums, params):
                        _raise_non_finite(good, epoch, step_fn, x_all, perm, eps, beta_t, binarize, streams, history)
                    good, last_sync = (*owned((params, opt_state)), i + 1, _binarize_states(streams)), now
                    if show:
                        loss = float(sums[:, 0].mean()) / (i + 1)
                        bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.2f}", refresh=False)
            seconds = time.perf_counter() - t0
            means = (sums / steps_per_epoch).tolist()
            for k in range(m):
                entry = {"epoch": epoch + 1, **dict(zip(METRICS, means[k]))}
                rate = steps_per_epoch * b / seconds if seconds > 0 else math.inf
                entry |= {"seconds": seconds, "examples_per_s": rate}
                history[k].append(entry)
    finally:
        bar.close()
    return EnsembleResult(params, opt_state, history)


def _per_model(name: str, value: Any, m: int, dtype, device, *, positive: bool) -> tuple[Tensor | None, float]:
    """(None, value) for one number; (an (m,) tensor, its first value) for m numbers."""
    if isinstance(value, Tensor) and value.ndim == 0 and value.is_floating_point():
        value = float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None, value
    try:
        t = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a number or {m} numbers (one per model); got {value!r}") from None
    if t.shape != (m,):
        raise ValueError(f"{name} must be a number or {m} numbers (one per model); got shape {tuple(t.shape)}")
    ok = torch.isfinite(t).all() and ((t > 0).all() if positive else (t >= 0).all())
    if not bool(ok):
        raise ValueError(f"{name} must be finite numbers {'> 0' if positive else '>= 0'}; got {t.tolist()}")
    return t.to(dtype=dtype, device=device), float(t[0])


def _seeds(seed: Any, m: int) -> list[int]:
    """[seed] for one int (shared streams), else m ints."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return [int(seed)]
    seeds = None
    if isinstance(seed, (Tensor, np.ndarray)):
        seeds = seed.tolist()
    elif isinstance(seed, Sequence):
        seeds = list(seed)
    ok = isinstance(seeds, list) and len(seeds) == m
    if not ok or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ValueError(f"seed must be a non-negative int or {m} of them (one per model); got {seed!r}")
    return seeds


def _batch(x_all: Tensor, perm: Tensor, i: int, streams: list[Streams], binarize, shared: bool) -> Tensor:
    """Step i's batch: (b, d) shared, or (m, b, d) with one row of indices per model."""
    x = x_all[perm[..., i, :]]
    if binarize == "dynamic":
        x = torch.stack([torch.bernoulli(x if shared else x[k], generator=s.binarize) for k, s in enumerate(streams)])
        x = x[0] if shared else x
    return x


def _binarize_states(streams: list[Streams]) -> list[Tensor]:
    return [s.binarize.get_state() for s in streams]


def _finite(sums: Tensor, params: Params) -> bool:
    return bool(torch.isfinite(sums).all() and all(bool(torch.isfinite(v).all()) for v in params.values()))


def _bad_models(metrics_loss: Tensor, params: Params) -> list[int]:
    ok = torch.isfinite(metrics_loss)
    for v in params.values():
        ok = ok & torch.isfinite(v.flatten(1)).all(1)
    return torch.nonzero(~ok).flatten().tolist()


def _raise_non_finite(good, epoch, step_fn, x_all, perm, eps, beta_t, binarize, streams, history):
    """Replay from the last state checked finite to find the first bad step; raise."""
    params, opt_state, first, gen_states = good
    params, opt_state = owned((params, opt_state))  # the step may update them in place
    replay = [Streams(s.data, s.noise, torch.Generator(device=x_all.device)) for s in streams]
    for s, state in zip(replay, gen_states):
        s.binarize.set_state(state)
    for i in range(first, perm.shape[-2]):
        x = _batch(x_all, perm, i, replay, binarize, len(streams) == 1)
        before = owned((params, opt_state))
        new_params, new_opt_state, metrics = step_fn(params, opt_state, x, eps[..., i, :, :], beta_t)
        bad = _bad_models(metrics["loss"], new_params)
        if bad:
            raise NonFiniteLossError(
                f"the loss of model(s) {bad} became non-finite at epoch {epoch + 1}, step {i + 1} of {perm.shape[-2]}; "
                "the last finite stacked params and optimizer state are kept on this exception as .params and "
                ".opt_state (try a lower lr for those models)",
                epoch=epoch + 1, step=i + 1, params=before[0], opt_state=before[1], history=history,
            )  # fmt: skip
        params, opt_state = new_params, new_opt_state
    raise AssertionError("non-finite metrics that a replay could not reproduce")
