"""``vaefunc.training``: the module behind :func:`vaefunc.train`, which checks the inputs, sets a run up
and hands it to the one loop (``vaefunc.train``, its old dotted name, is the function; importing from it
still works, with a DeprecationWarning).

``train(params, data, model=model, config=TrainConfig(...))`` trains one
model; :func:`vaefunc.train_many` trains an ensemble through the same
:func:`fit`: the same checks, the same runner factory
(:func:`vaefunc.runners.build`), the same feed and the same loop
(:func:`vaefunc.loop.fit`). Everything is checked before the first step.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from . import _check, loop, runners, stream, threads
from ._resolve import spec_of
from ._types import OptState, Params
from .accel import matmul_precision, resolve_autocast
from .config import DEFAULTS, FIELDS, TrainConfig
from .feed import Feed
from .likelihoods import LOGSTD_KEY, UNIT_INTERVAL, init_params
from .loop import METRICS as METRICS
from .loop import Hooks, Outcome, TrainState
from .rng import STREAMS
from .loop import NonFiniteLossError as NonFiniteLossError
from .losses import loss_of_form
from .network import one_hot
from .optim import Optimizer, fused_adam
from .schedules import parse_lr
from .spec import VAE
from .state import TrainResult as TrainResult  # defined a floor below (vaefunc.state)
from .state import check_params as check_params

_NAMES = {"bernoulli": "Bernoulli", "continuous_bernoulli": "continuous Bernoulli"}
AUTO_COMPILE_MIN_SECONDS = runners.AUTO_COMPILE_MIN_SECONDS
AUTO_COMPILE_MIN_SECONDS_BF16 = runners.AUTO_COMPILE_MIN_SECONDS_BF16


def train(
    params: Params,
    data: Tensor | np.ndarray | Dataset | Iterable,
    *,
    model: VAE | None = None,
    config: TrainConfig | None = None,
    labels: Tensor | np.ndarray | Sequence[int] | None = None,
    opt_state: OptState | None = None,
    resume: TrainState | None = None,
    optimizer: Optimizer | None = None,
    on_epoch: Callable[[dict[str, float], TrainState], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    **settings: Any,
) -> TrainResult:
    """Train a VAE by maximising the ELBO (or the IWAE bound) with Adam; returns new params.

    Args:
        params: from ``model.init`` (or :func:`vaefunc.init`); never modified.
        data: (n, *input_shape) float tensor or NumPy array, values in [0, 1]
            for the (continuous) Bernoulli likelihood; never modified. It is
            copied to the device once. Or data that streams (:mod:`vaefunc.stream`):
            a map-style ``torch.utils.data.Dataset`` of x or (x, y) examples
            (vaefunc shuffles it as it shuffles a tensor: the same run, bit for
            bit, and an exact resume), a ``DataLoader`` or an iterable of
            batches of ``batch_size`` (read in its own order); read on the host
            and copied to the device one batch per step.
        model: the :class:`vaefunc.VAE` spec; default: the one the params'
            shapes describe (ReLU, Bernoulli, unless the soft-deprecated
            settings ``activation``, ``likelihood``, ``obs_std`` and
            ``learn_obs_std`` say otherwise).
        config: a :class:`vaefunc.TrainConfig`; default ``TrainConfig()``.
        labels: for a conditional model, the class of each example: ints (n,)
            or one-hot (n, n_classes), batched with the data's shuffled index.
            Streamed data carries its own as (x, y) pairs; with a map-style
            Dataset, ``labels=`` takes their place (a semi-supervised model's
            must be given so).
        opt_state: an optimizer state to continue from (``result.opt_state``);
            its learning rate is set to the config's ``lr``.
        resume: a :class:`TrainState` (``result.state``) to continue from
            exactly, mid-epoch included; it replaces ``params`` and ``opt_state``.
        optimizer: a pure :class:`vaefunc.Optimizer` to use instead of the
            config's Adam (e.g. ``adam(schedule, eps=1e-4)``).
        on_epoch: called after each epoch with its history entry and the state.
        should_stop: polled after every step (a host flag, e.g. set by a signal
            handler); when it returns True the run returns with
            ``interrupted=True`` and a resumable ``state``.
        **settings: fields of :class:`vaefunc.TrainConfig` (``epochs``,
            ``batch_size``, ``lr``, ``beta``, ``kl_schedule``, ``objective``,
            ``k``, ``binarize``, ``seed``, ``compile``, ``device``, ``progress``,
            ``distributed``, ``tf32``, ``autocast``, ``threads``, ...), overriding ``config``'s.
            ``threads``: torch's intra-op threads for the run (None: one, or the caller's count where
            the run's step times faster on it; :mod:`vaefunc.threads`); the caller's count is restored.

    Returns:
        :class:`TrainResult`: ``params``, ``opt_state``, ``history`` (one dict
        per epoch with "epoch", "loss", "recon", "kl", "elbo", "seconds",
        "examples_per_s", "threads"), ``state`` and ``interrupted``.

    Raises:
        ValueError, TypeError: for bad input, before any step.
        NonFiniteLossError: if training becomes NaN or inf; it carries the last
            finite params and optimizer state.

    Example:
        >>> model = vaefunc.VAE((784,), latent_dim=20, hidden=(400,))
        >>> result = vaefunc.train(model.init(seed=0), x_train, model=model, epochs=10)
        >>> result.history[-1]["loss"]
    """
    config = configure(config, settings)
    for name in ("lr", "beta", "seed"):
        if isinstance(getattr(config, name), tuple):
            raise ValueError(f"train takes one {name}; got {len(getattr(config, name))} (one per model is for "
                             "vaefunc.train_many)")  # fmt: skip
    outcome = fit(params, data, model=model, config=config, labels=labels, opt_state=opt_state, resume=resume,
                  optimizer=optimizer, on_epoch=on_epoch, should_stop=should_stop)  # fmt: skip
    return TrainResult(*outcome)


def configure(config: TrainConfig | None, settings: dict[str, Any]) -> TrainConfig:
    """``config`` (default ``TrainConfig()``) with the keyword ``settings`` applied, checked."""
    if config is None:
        return TrainConfig(**_known(settings))
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a vaefunc.TrainConfig; got {type(config).__name__}")
    return config.replace(**settings)


def _known(settings: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(settings) - FIELDS)
    if unknown:
        raise TypeError(f"unknown training settings {unknown}; TrainConfig has {sorted(FIELDS)}")
    return settings


class Run(NamedTuple):
    """A run set up and checked: what the loop needs."""

    runner: runners.Runner
    feed: Feed
    start: TrainState
    hooks: Hooks
    device: torch.device
    threads: int = 1  # torch's intra-op threads for the run's steps (vaefunc.threads); fit sets them


def fit(params: Params, data: Any, *, model: VAE | None, config: TrainConfig, members: int | None = None,
        labels: Any = None, opt_state: OptState | None = None, resume: TrainState | None = None,
        optimizer: Optimizer | None = None, on_epoch=None, should_stop=None) -> Outcome:  # fmt: skip
    """Set a run up (one model, or an ensemble of ``members`` stacked models), then run the loop."""
    run = setup(params, data, model=model, config=config, members=members, labels=labels, opt_state=opt_state,
                resume=resume, optimizer=optimizer, on_epoch=on_epoch, should_stop=should_stop)  # fmt: skip
    with threads.using(run.threads), matmul_precision(config.tf32, run.device):
        return loop.fit(run.runner, run.feed, run.start, epochs=config.epochs, hooks=run.hooks)


def setup(params: Params, data: Any, *, model: VAE | None = None, config: TrainConfig | None = None,
          members: int | None = None, labels: Any = None, opt_state: OptState | None = None,
          resume: TrainState | None = None, optimizer: Optimizer | None = None, on_epoch=None,
          should_stop=None) -> Run:  # fmt: skip
    """Check everything and build the runner, the feed, the start state and the hooks; no step runs.

    This is what :func:`train` runs, for a loop of one's own (the benchmarks time it this way)::

        run = setup(params, x, model=model, config=TrainConfig(batch_size=128, compile=True))
        draws = run.feed.draw(epoch=0)
        metrics = run.runner.advance(run.feed.batch(draws, 0))   # one step, in place
        params, opt_state = run.runner.state()
    """
    config = config if config is not None else TrainConfig()
    if resume is not None:
        params, opt_state = _resume_parts(resume)
        resume = _plain_ints(resume)
    model, params = resolve_model(params, model, config, members=members, opt_state=opt_state)
    loss_of_form(model, config.objective, config.schedule.form, config.schedule.free_bits,
                 gradient=config.gradient)  # checks the objective and the estimator
    ctx, device = _device(config, params, model)
    _check.device_available(device)
    params = {k: v.to(device) for k, v in params.items()}
    x, y = _data(data, labels, model, config, device, _dtype(params))
    pool, alpha = semi_supervised_pool(y, model, config)
    steps_per_epoch = (x.shape[0] if pool is None else pool.numel()) // config.batch_size
    optimizer, opt_state = _optimizer(config, optimizer, params, opt_state, steps_per_epoch, members)
    # One host sync before the first step: a NaN start is the input's fault, not the lr's.
    _check.finite_tree("params", params, " before training (a non-finite checkpoint or init?)")
    _check.finite_tree("opt_state", opt_state, " before training (a corrupt optimizer state?)")
    feed = _feed(x, y, model, config, members, pool)
    if resume is not None:
        _check_position(resume, config, steps_per_epoch, members)
        _check_batch_size(resume, feed.batch_size)
        feed.set_rng_state(resume.rng)
    labelled = model.n_classes > 0  # labels= given (checked above), or a stream's (x, y) pairs
    plan = _plan(model, config, optimizer, device, members, feed, steps_per_epoch, labelled=labelled)._replace(
        alpha=alpha)  # fmt: skip
    count = run_threads(plan, config, params, opt_state, feed, ctx, steps_per_epoch * config.epochs)
    plan = plan._replace(threads=count)  # a compiled step builds its kernels for this many threads
    runner = runners.build(plan, params, opt_state, feed.template(), parallel=ctx)
    start = _start(runner, feed, resume, device)
    hooks = _hooks(config, ctx, on_epoch, should_stop)._replace(cause=likely_cause(config, optimizer, params, device))
    return Run(runner, feed, start, hooks, device, count)


def run_threads(plan: runners.Plan, config: TrainConfig, params: Params, opt_state: OptState, feed: Feed, ctx,
                total_steps: int) -> int:  # fmt: skip
    """The run's intra-op thread count (:func:`vaefunc.threads.resolve`): ``config.threads``, or auto, which
    times the run's eager step on copies of its state (the caller's are untouched) and a zero batch."""
    eager = plan._replace(compiled=False, cuda_graph=False)
    template = feed.template()

    def probe():
        runner = runners.build(eager, params, opt_state, template)
        return lambda: runner.advance(template)

    key = (eager, tuple(None if t is None else tuple(t.shape) for t in template))
    return threads.resolve(config.threads, device=torch.device(plan.device_type), total_steps=total_steps,
                           distributed=ctx is not None, probe=probe, key=key)  # fmt: skip


def _data(data: Any, labels: Any, model: VAE, config: TrainConfig, device: torch.device,
          dtype: torch.dtype) -> tuple[Tensor | stream.Examples | stream.Batches, Tensor | None]:  # fmt: skip
    """The data copied to the device once (a tensor, statically binarized if asked) or its stream
    (:mod:`vaefunc.stream`, read per step), and the ``labels=`` of a conditional model, one-hot."""
    if stream.streams(data):
        seeds = len(config.seed) if isinstance(config.seed, tuple) else 1
        source = stream.source(data, model, batch_size=config.batch_size, seeds=seeds,
                               labels_given=labels is not None, device=device, dtype=dtype)  # fmt: skip
        y = None if labels is None else prepare_labels(labels, model, n=source.shape[0], device=device, dtype=dtype)
        return source, y
    x = prepare_data(data, model, batch_size=config.batch_size, device=device, dtype=dtype)
    if config.binarize == "static":
        x = (x > 0.5).to(x.dtype)
    return x, prepare_labels(labels, model, n=x.shape[0], device=device, dtype=dtype)


def resolve_model(params: Params, model: VAE | None, config: TrainConfig, *, members: int | None,
                  opt_state: OptState | None) -> tuple[VAE, Params]:  # fmt: skip
    """The spec and the params it trains (with a learned log-std added if the spec learns one), checked."""
    one = params if members is None or not isinstance(params, dict) else {k: v[0] for k, v in params.items()}
    choices = config.model_choices()
    if model is None:
        _check.param_dict(one)
        model = spec_of(one, **{k: v for k, v in choices.items() if k != "learn_obs_std"})
        if "learn_obs_std" in choices and LOGSTD_KEY not in one:
            model = dataclasses.replace(model, learn_obs_std=choices["learn_obs_std"])
    else:
        _check_agrees(model, choices)
    if model.learn_obs_std is not None and LOGSTD_KEY not in one:
        if opt_state is not None:
            raise ValueError(f"learn_obs_std adds {LOGSTD_KEY!r} to params whose opt_state lacks it; "
                             "pass params that have it")  # fmt: skip
        params = _with_logstd(model, params, members)
    model.check(params, stacked=members is not None)
    return model, params


def _check_agrees(model: Any, choices: dict[str, Any]) -> None:
    if not isinstance(model, VAE):
        raise TypeError(f"model must be a vaefunc.VAE spec; got {type(model).__name__}")
    for name, value in choices.items():
        if getattr(model, name) != value:
            raise ValueError(f"{name}={value!r} differs from the model's {getattr(model, name)!r}; with model= the "
                             f"spec holds the {name}")  # fmt: skip


def _with_logstd(model: VAE, params: Params, members: int | None) -> Params:
    if members is None:
        return init_params(model, params)
    logstd = init_params(model, {k: v[0] for k, v in params.items()})[LOGSTD_KEY]
    return params | {LOGSTD_KEY: logstd.expand(members, *logstd.shape).clone()}


def _device(config: TrainConfig, params: Params, model: VAE):
    """(the distributed context or None, the training device)."""
    device = torch.device(config.device) if config.device is not None else next(iter(params.values())).device
    if not config.distributed:
        return None, device
    from . import distributed as dp  # noqa: PLC0415

    dp.check_schedule(config.schedule)
    ctx = dp.setup(config.device if config.device is not None else device.type)  # "cuda" -> cuda:LOCAL_RANK
    return ctx, ctx.device


def _dtype(params: Params) -> torch.dtype:
    return next(iter(params.values())).dtype


def _resume_parts(resume: Any) -> tuple[Params, OptState]:
    if not isinstance(resume, TrainState):
        raise TypeError(f"resume must be a vaefunc.TrainState (result.state); got {type(resume).__name__}")
    if resume.opt_state is None:
        raise ValueError("resume.opt_state is None: a resumed run continues its optimizer's state, so a fresh one "
                         "would not be the same run (pass the params with opt_state=None to train on afresh)")
    return resume.params, resume.opt_state


def _plain_ints(resume: TrainState) -> TrainState:
    """numpy ints in the state's epoch, step and batch size (a state rebuilt by hand) as Python ints."""
    fields: dict[str, Any] = {f: int(getattr(resume, f)) for f in ("epoch", "step", "batch_size")
              if isinstance(getattr(resume, f), np.integer)}  # fmt: skip
    return resume._replace(**fields) if fields else resume


def _check_position(resume: TrainState, config: TrainConfig, steps_per_epoch: int, members: int | None) -> None:
    """A resumed state must lie inside this run: 0 <= epoch <= epochs, 0 <= step <= steps per epoch
    (a run stopped after an epoch's last step resumes to close that epoch)."""
    epoch, step = resume.epoch, resume.step
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= config.epochs:
        raise ValueError(f"resume.epoch must be an int in [0, epochs={config.epochs}]; got {epoch!r}")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= steps_per_epoch:
        raise ValueError(f"resume.step must be an int in [0, {steps_per_epoch}] (steps per epoch); got {step!r}")
    if epoch == config.epochs and step:
        raise ValueError(f"resume is at step {step} of epoch {epoch + 1}, past the run's {config.epochs} epochs")
    want = (len(METRICS),) if members is None else (members, len(METRICS))
    if not isinstance(resume.sums, Tensor) or tuple(resume.sums.shape) != want:
        got = tuple(resume.sums.shape) if isinstance(resume.sums, Tensor) else type(resume.sums).__name__
        raise ValueError(f"resume.sums must be a tensor of shape {want}; got {got}")
    _check.train_position("resume", epoch, step, resume.rng, resume.sums, STREAMS)  # the generator states


def _check_batch_size(resume: TrainState, batch_size: int) -> None:
    """A state saved mid-epoch continues that epoch's batches, so only at the batch size that drew them
    (a state at an epoch's end, step 0, may go on at another; a state that records none is not checked)."""
    saved = resume.batch_size
    if saved is not None and (isinstance(saved, bool) or not isinstance(saved, int) or saved < 1):
        raise ValueError(f"resume.batch_size must be a positive int or None; got {saved!r}")
    if resume.step and saved is not None and saved != batch_size:
        raise ValueError(f"resume is at step {resume.step} of epoch {resume.epoch + 1} of a run at batch_size={saved}; "
                         f"this run's batch_size is {batch_size}, so the rest of that epoch could not be the same "
                         f"batches (resume at batch_size={saved}, or from a state at an epoch's end)")  # fmt: skip


OPTIMIZER_FIELDS = ("lr", "lr_schedule", "adam_b1", "adam_b2", "adam_eps")
"""The settings of the config's own Adam: with ``optimizer=`` they must be left at their defaults."""


def _optimizer(config: TrainConfig, optimizer: Optimizer | None, params: Params, opt_state: OptState | None,
               steps_per_epoch: int, members: int | None) -> tuple[Optimizer, OptState]:  # fmt: skip
    """The run's optimizer and its state: the given pure one, or the config's fused Adam with its lr."""
    own = optimizer is None
    if own:
        schedule = config.lr_schedule is not None
        key = (config.lr_schedule, steps_per_epoch, config.lr) if schedule else None
        optimizer = default_optimizer(config.adam_b1, config.adam_b2, config.adam_eps, key)
    elif not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a vaefunc.Optimizer (init, update); got {type(optimizer).__name__}")
    else:
        ignored = [f"{k}={getattr(config, k)!r}" for k in OPTIMIZER_FIELDS if getattr(config, k) != DEFAULTS[k]]
        if ignored:
            raise ValueError(f"optimizer= holds its own learning rate and settings, so {', '.join(ignored)} would be "
                             "ignored; set them in the optimizer (e.g. vaefunc.adam(lr, b1, b2, eps)) or leave "
                             "optimizer= out")  # fmt: skip
    if opt_state is None:
        opt_state = optimizer.init(params)
    if own and config.lr_schedule is None:
        opt_state = _with_lr(opt_state, _lr_tensor(config.lr, members))
    _check.opt_state(params, opt_state)
    return optimizer, opt_state


@functools.lru_cache(maxsize=16)
def default_optimizer(b1: float, b2: float, eps: float, schedule_key: tuple | None) -> Optimizer:
    """The config's Adam, cached so later runs reuse its compiled step: a constant lr is read from
    the state (so one optimizer serves every lr), a named schedule is built in."""
    if schedule_key is None:
        return fused_adam(1e-3, b1, b2, eps)  # the lr is set in the state
    spec, steps_per_epoch, base = schedule_key
    return fused_adam(parse_lr(spec, steps_per_epoch, base), b1, b2, eps)


def _lr_tensor(lr: float | tuple[float, ...], members: int | None) -> float | Tensor:
    if isinstance(lr, tuple):
        if members is None or len(lr) != members:
            raise ValueError(f"lr must be a number or {members} numbers (one per model); got {len(lr)}")
        return torch.tensor(lr, dtype=torch.float64)
    return lr


def _with_lr(opt_state: OptState, lr: float | Tensor) -> OptState:
    """``opt_state`` of Adam with its learning rate set to ``lr`` (a number, or (m,) per model).

    The lr lives in the state (so a compiled step never recompiles when it
    changes); a state handed back in must take this run's ``lr``, not keep the
    one it was saved with.
    """
    try:
        adam_state, lr_state = opt_state
        lr_t = lr_state.lr
    except (TypeError, ValueError, AttributeError):
        raise TypeError(
            "opt_state must be the state of vaefunc.adam, as in result.opt_state: "
            f"(AdamState, ScaleByLearningRateState); got {type(opt_state).__name__}"
        ) from None
    return (adam_state, lr_state._replace(lr=torch.as_tensor(lr, dtype=lr_t.dtype).to(lr_t.device)))


def labelled_repeats(n_labelled: int, n_unlabelled: int, share: float) -> int:
    """How many times a semi-supervised epoch holds each labelled example: enough that they make up
    about ``share`` of it, beside every unlabelled example once (at least once)."""
    return max(1, round(share * n_unlabelled / ((1 - share) * n_labelled)))


def semi_supervised_rows(n_labelled: int, n_unlabelled: int, share: float) -> int:
    """The rows a semi-supervised epoch shuffles (all the examples once when none is unlabelled)."""
    if not n_unlabelled:
        return n_labelled
    return n_unlabelled + n_labelled * labelled_repeats(n_labelled, n_unlabelled, share)


def semi_supervised_pool(y: Tensor | None, model: VAE, config: TrainConfig) -> tuple[Tensor | None, float]:
    """A semi-supervised run's epoch rows and classification weight alpha; (None, 0) for any other run.

    Unlabelled rows (a zero label row) appear once per epoch; the labelled ones
    are repeated so they make up about ``labelled_share`` of it (each batch then
    holds labelled examples however few there are). alpha defaults to
    :func:`paper_alpha`, Kingma et al.'s weighting.
    """
    if not model.semi_supervised:
        return None, 0.0
    if y is None:
        raise ValueError("a semi-supervised model needs labels (labels=, or a stream's (x, y) pairs); got none")
    labelled = y.sum(-1) > 0
    lab, unlab = torch.nonzero(labelled).flatten(), torch.nonzero(~labelled).flatten()
    if lab.numel() == 0:
        raise ValueError("a semi-supervised run needs some labelled examples; every label is -1")
    repeats = labelled_repeats(lab.numel(), unlab.numel(), config.labelled_share)
    pool = torch.cat([unlab, lab.repeat(repeats)]) if unlab.numel() else None
    alpha = config.alpha if config.alpha is not None else paper_alpha(lab.numel(), unlab.numel(), repeats)
    return pool, float(alpha)


def paper_alpha(n_labelled: int, n_unlabelled: int, repeats: int) -> float:
    """M2's default classification weight: Kingma et al.'s (2014) alpha = 0.1 N on the MEAN labelled
    cross-entropy (their code, ``learn_yz_x_ss.py``), N all the training examples, per labelled example
    of this loss: each labelled example's cross-entropy weighs 0.1 N / n_labelled against one unlabelled
    example's bound over an epoch, in which it appears ``repeats`` times:

        alpha = 0.1 * (n_labelled + n_unlabelled) / (n_labelled * repeats).

    vaefunc 0.2 used 0.1 * n_labelled / share (0.1 N on the cross-entropy's SUM), 133x this at 100 of
    50,000 labels and 787x at 600 (:func:`sum_alpha`): pass ``alpha=`` that value to train as it did.
    """
    return 0.1 * (n_labelled + n_unlabelled) / (n_labelled * repeats)


def sum_alpha(n_labelled: int, n_unlabelled: int, repeats: int) -> float:
    """vaefunc 0.2's default alpha, 0.1 * n_labelled / share (see :func:`paper_alpha`)."""
    share = repeats * n_labelled / (n_unlabelled + repeats * n_labelled)
    return 0.1 * n_labelled / share


def _feed(x: Tensor | stream.Examples | stream.Batches, y: Tensor | None, model: VAE, config: TrainConfig, members: int | None,
          pool: Tensor | None = None) -> Feed:  # fmt: skip
    seeds = list(config.seed) if isinstance(config.seed, tuple) else [config.seed]
    if members is not None and len(seeds) not in (1, members):
        raise ValueError(f"seed must be a non-negative int or {members} of them (one per model); got {len(seeds)}")
    b, z = config.batch_size, model.noise_dim
    eps_shape = (config.k, b, z) if config.objective == "iwae" else (b, z)
    member_beta = None
    if isinstance(config.beta, tuple):
        if members is None or len(config.beta) != members:
            raise ValueError(f"beta must be a number or {members} numbers (one per model); got {len(config.beta)}")
        member_beta = torch.tensor(config.beta, dtype=x.dtype, device=x.device)
    kw: dict[str, Any] = dict(seeds=seeds, members=members, batch_size=b, eps_shape=eps_shape,
                              schedule=config.schedule, binarize=config.binarize, member_beta=member_beta, pool=pool)
    return Feed(x, y, **kw) if isinstance(x, Tensor) else stream.StreamFeed(x, y, **kw)


def compiles(model: VAE, config: TrainConfig, device: torch.device, members: int | None, total_steps: int,
             dtype: torch.dtype = torch.float32) -> bool:  # fmt: skip
    """Whether a run's step is compiled: ``config.compile``, or for ``"auto"`` the rule of
    :func:`vaefunc.runners.should_compile` on the samples one step decodes, at the precision the
    compiled step would take (``dtype``: the data's)."""
    samples = config.batch_size * (config.k if config.objective == "iwae" else 1) * (members or 1)
    samples *= model.n_classes + 1 if model.semi_supervised else 1  # M2 decodes every class, and classifies
    return runners.should_compile(config.compile, device, model.macs_per_example(), samples, total_steps,
                                  autocast=config.autocast, dtype=dtype)  # fmt: skip


def _plan(model: VAE, config: TrainConfig, optimizer: Optimizer, device: torch.device, members: int | None,
          feed: Feed, steps_per_epoch: int, *, labelled: bool) -> runners.Plan:  # fmt: skip
    schedule = config.schedule
    compiled = compiles(model, config, device, members, steps_per_epoch * config.epochs, feed.x.dtype)
    graph = runners.use_cuda_graph(device, compiled, binarize=config.binarize, labelled=labelled, members=members)
    autocast = resolve_autocast(config.autocast, device, feed.x.dtype, compiled=compiled)
    return runners.Plan(model, config.objective, schedule.form, schedule.free_bits, optimizer, compiled, device.type,
                        autocast, members, feed.shared, graph and not config.distributed,
                        gradient=config.gradient)  # fmt: skip


def _start(runner: runners.Runner, feed: Feed, resume: TrainState | None, device: torch.device) -> TrainState:
    params, opt_state = runner.state()
    if resume is None:
        zeros = torch.zeros(*([] if feed.members is None else [feed.members]), len(METRICS), dtype=_dtype(params),
                            device=device)  # fmt: skip
        return TrainState(params, opt_state, 0, 0, feed.rng_state(), zeros, feed.batch_size)
    return TrainState(params, opt_state, resume.epoch, resume.step, resume.rng, resume.sums.to(device),
                      feed.batch_size)  # fmt: skip


def _hooks(config: TrainConfig, ctx, on_epoch, should_stop) -> Hooks:
    """What the loop reports: on rank 0 only under torchrun, with the stop flag agreed by every rank."""
    for name, fn in (("on_epoch", on_epoch), ("should_stop", should_stop)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable or None; got {type(fn).__name__}")
    show = config.progress == "always" or (config.progress is True and sys.stderr.isatty())
    if ctx is not None:
        from . import distributed as dp  # noqa: PLC0415

        if ctx.rank != 0:
            show, on_epoch = False, None
        if should_stop is not None:
            should_stop = dp.any_rank(should_stop, ctx)
    return Hooks(show, on_epoch, should_stop)


def likely_cause(config: TrainConfig, optimizer: Optimizer, params: Params, device: torch.device) -> str:
    """What a diverging run's error names: the settings most likely to blow a VAE up."""
    causes = []
    lr = max(config.lr) if isinstance(config.lr, tuple) else config.lr
    if optimizer.step_in_place is not None and lr > 1e-2:  # the config's Adam: 1e-3 is the usual lr
        causes.append(f"the learning rate {lr:g} is large for Adam; try 1e-3 or lower")
    beta = max(config.beta) if isinstance(config.beta, tuple) else config.beta
    if beta > 10.0:
        causes.append(f"the KL weight beta={beta:g} is large")
    elif config.kl_schedule is not None and float(config.schedule.beta(torch.tensor([0])).max()) > 100.0:
        causes.append("the KL schedule's weight is large (capacity annealing's gamma multiplies |KL - C|)")
    dtype = next(iter(params.values())).dtype
    if dtype in (torch.float16, torch.bfloat16) and device.type == "cpu":
        causes.append(f"{dtype} params on a CPU: train in float32 (autocast='bf16' keeps the sums in float32)")
    return "; ".join(causes) if causes else "try a lower lr, or a KL warm-up"


def prepare_labels(labels: Any, model: VAE, *, n: int, device: torch.device, dtype: torch.dtype) -> Tensor | None:
    """Check the labels of a conditional model and move them to the device once, one-hot: (n, n_classes)."""
    k = model.n_classes
    if labels is None:
        if k:
            raise ValueError(f"these params are conditional on {k} classes (init(..., n_classes={k})); pass labels=")
        return None
    if not isinstance(labels, (Tensor, np.ndarray, list, tuple)):
        raise TypeError(f"labels must be a tensor, array or sequence of class indices; got {type(labels).__name__}")
    y = _check.labels(labels, n, k, unlabelled=model.semi_supervised)
    return one_hot(y.to(device), k, dtype)  # an unlabelled example (-1) is a row of zeros


def prepare_data(data: Any, model: VAE, *, batch_size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Check ``data`` and copy it to the device once, flattened: (n, *shape) -> (n, d)."""
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if not isinstance(data, Tensor):
        raise TypeError(f"data must be {stream.KINDS}; got {type(data).__name__}")
    if not data.is_floating_point():
        raise TypeError(f"data must be floating point (scale images to [0, 1]); got dtype {data.dtype}")
    d = model.data_dim
    if data.ndim < 2 or math.prod(data.shape[1:]) != d:
        raise ValueError(
            f"data must have shape (n, *input_shape) with {d} features per example to match the params; "
            f"got {tuple(data.shape)}"
        )
    if model.arch == "conv" and data.ndim > 2 and tuple(data.shape[1:]) != tuple(model.input_shape):
        raise ValueError(f"data must have shape (n, {', '.join(map(str, model.input_shape))}) or flat (n, {d}) for "
                         f"this convolutional model; got {tuple(data.shape)} (its rows would be read as other "
                         "images)")  # fmt: skip
    n = data.shape[0]
    if n == 0:
        raise ValueError("data is empty: got 0 examples")
    if batch_size > n:
        raise ValueError(f"batch_size must be at most the number of examples ({n}); got {batch_size}")
    x = data.reshape(n, d).to(device=device, dtype=dtype)
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"data must be finite; got {bad} NaN or inf values")
    if model.likelihood in UNIT_INTERVAL:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"data must lie in [0, 1] for the {_NAMES.get(model.likelihood, model.likelihood)} likelihood; "
                f"got values in [{lo:g}, {hi:g}] (scale it, or use likelihood='gaussian')"
            )
    return x


def should_compile(compile: bool | str, device: torch.device, params: Params, batch_size: int,
                   total_steps: int, autocast: str | None = "auto") -> bool:  # fmt: skip
    """The ``compile="auto"`` rule for params (see :func:`vaefunc.runners.should_compile`)."""
    return runners.should_compile(compile, device, spec_of(params).macs_per_example(), batch_size, total_steps,
                                  autocast=autocast, dtype=next(iter(params.values())).dtype)  # fmt: skip


__all__: Sequence[str] = ("train", "TrainConfig", "TrainState", "TrainResult", "NonFiniteLossError")
