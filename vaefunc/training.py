"""``vaefunc.training``: the module behind :func:`vaefunc.train`, which checks the inputs, sets a run up
and hands it to the one loop (``vaefunc.train``, its old dotted name, is the function; importing from it
still works, with a DeprecationWarning).

``train(params, data, model=model, config=TrainConfig(...))`` trains one
model; :func:`vaefunc.train_many` trains an ensemble through the same
:func:`fit_run`: the same checks, the same runner factory
(:func:`vaefunc.runners.build`), the same feed and the same loop
(:func:`vaefunc.loop.fit`). Everything is checked before the first step.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from . import _check, inputs, loop, runners, threads
from ._resolve import resolve, spec_of
from ._types import OptState, Params
from .accel import matmul_precision
from .config import FIELDS, TrainConfig
from .feed import Feed
from .inputs import labelled_repeats as labelled_repeats  # the data and labels live with the feed (vaefunc.inputs)
from .inputs import paper_alpha as paper_alpha
from .inputs import prepare_data as prepare_data
from .inputs import prepare_labels as prepare_labels
from .inputs import semi_supervised_pool as semi_supervised_pool
from .inputs import semi_supervised_rows as semi_supervised_rows
from .inputs import sum_alpha as sum_alpha
from .likelihoods import LOGSTD_KEY, init_params
from .loop import METRICS as METRICS
from .loop import Hooks, Outcome, TrainState
from .loop import NonFiniteLossError as NonFiniteLossError
from .losses import check_form
from .optim import Optimizer
from .plan import OPTIMIZER_FIELDS as OPTIMIZER_FIELDS  # a run's derived facts live in vaefunc.plan
from .plan import PER_MODEL, RunPlan, check_per_model, plan
from .plan import compiles as compiles
from .plan import default_optimizer as default_optimizer
from .rng import STREAMS
from .spec import VAE
from .state import TrainResult as TrainResult  # defined a floor below (vaefunc.state)
from .state import check_params as check_params

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
    outcome = fit_run(params, data, model=model, config=config, labels=labels, opt_state=opt_state, resume=resume,
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
    plan: RunPlan | None = None  # the run's derived facts (vaefunc.plan): steps, compiled, precision, ...


def fit_run(params: Params, data: Any, *, model: VAE | None, config: TrainConfig, members: int | None = None,
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

    ``run.plan`` holds what the run derived once (:func:`vaefunc.plan.plan`): steps per epoch, compiled
    or not, precision, CUDA graph, eps's shape, alpha; the feed and the runner were built from it.
    """
    config = config if config is not None else TrainConfig()
    check_per_model({name: getattr(config, name) for name in PER_MODEL}, members)
    if resume is not None:
        params, opt_state = _resume_parts(resume)
        resume = _plain_ints(resume)
    model, params = resolve_model(params, model, config, members=members, opt_state=opt_state)
    check_form(model, config.objective, config.schedule.form, config.gradient)  # the objective and the estimator
    ctx, device = _device(config, params, model)
    _check.device_available(device)
    params = {k: v.to(device) for k, v in params.items()}
    dtype = _dtype(params)
    x, y = inputs.data(data, labels, model, config, device, dtype)
    labelled = inputs.labelled_rows(y, model)
    facts = plan(model, config, rows=x.shape[0], device=device, dtype=dtype, members=members, labelled=labelled,
                 optimizer=optimizer)  # fmt: skip
    opt_state = _opt_state(config, facts.optimizer, params, opt_state, members, own=optimizer is None)
    # One host sync before the first step: a NaN start is the input's fault, not the lr's.
    _check.finite_tree("params", params, " before training (a non-finite checkpoint or init?)")
    _check.finite_tree("opt_state", opt_state, " before training (a corrupt optimizer state?)")
    feed = inputs.feed(x, y, config, seeds=facts.seeds, members=members, steps=facts.steps_per_epoch,
                       eps_shape=facts.eps_shape, pool=inputs.pool(y, model, config.labelled_share))  # fmt: skip
    if resume is not None:
        _check_position(resume, config, facts.steps_per_epoch, members)
        _check_batch_size(resume, feed.batch_size)
        feed.set_rng_state(resume.rng)
    count = run_threads(facts, params, opt_state, feed, ctx)
    runner = runners.build(facts.step_key(count), params, opt_state, feed.template(), parallel=ctx)
    start = _start(runner, feed, resume, device)
    hooks = _hooks(config, ctx, on_epoch, should_stop, likely_cause(config, facts.optimizer, params, device))
    return Run(runner, feed, start, hooks, device, count, facts)


def run_threads(facts: RunPlan, params: Params, opt_state: OptState, feed: Feed, ctx) -> int:
    """The run's intra-op thread count (:func:`vaefunc.threads.resolve`): ``config.threads``, or auto, which
    times the run's eager step on copies of its state (the caller's are untouched) and a zero batch."""
    eager = facts.step_key(eager=True)
    template = feed.template()

    def probe():
        runner = runners.build(eager, params, opt_state, template)
        return lambda: runner.advance(template)

    key = (eager, tuple(None if t is None else tuple(t.shape) for t in template))
    return threads.resolve(facts.config.threads, device=torch.device(facts.device_type),
                           total_steps=facts.total_steps, distributed=ctx is not None, probe=probe,
                           key=key)  # fmt: skip


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
        model = resolve(one, model, **choices)  # the keyword choices must agree with the spec
    if model.learn_obs_std is not None and LOGSTD_KEY not in one:
        if opt_state is not None:
            raise ValueError(f"learn_obs_std adds {LOGSTD_KEY!r} to params whose opt_state lacks it; "
                             "pass params that have it")  # fmt: skip
        params = _with_logstd(model, params, members)
    model.check(params, stacked=members is not None)
    return model, params


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
    ctx = dp.join(config.device if config.device is not None else device.type)  # "cuda" -> cuda:LOCAL_RANK
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


def _opt_state(config: TrainConfig, optimizer: Optimizer, params: Params, opt_state: OptState | None,
               members: int | None, *, own: bool) -> OptState:  # fmt: skip
    """The run's optimizer state: ``opt_state`` or a fresh one; the config's own Adam (``own``) with
    a constant lr takes the config's lr (a number, or (m,) per model)."""
    if opt_state is None:
        opt_state = optimizer.init(params)
    if own and config.lr_schedule is None:
        lr = config.lr
        opt_state = _with_lr(opt_state, torch.tensor(lr, dtype=torch.float64) if isinstance(lr, tuple) else lr)
    _check.opt_state(params, opt_state)
    return opt_state


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


def _start(runner: runners.Runner, feed: Feed, resume: TrainState | None, device: torch.device) -> TrainState:
    params, opt_state = runner.state()
    if resume is None:
        zeros = torch.zeros(*([] if feed.members is None else [feed.members]), len(METRICS), dtype=_dtype(params),
                            device=device)  # fmt: skip
        return TrainState(params, opt_state, 0, 0, feed.rng_state(), zeros, feed.batch_size)
    return TrainState(params, opt_state, resume.epoch, resume.step, resume.rng, resume.sums.to(device),
                      feed.batch_size)  # fmt: skip


def _hooks(config: TrainConfig, ctx, on_epoch, should_stop, cause: str) -> Hooks:
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
    return Hooks(show, on_epoch, should_stop, cause)


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


def compiles_for_params(compile: bool | str, device: torch.device, params: Params, batch_size: int,
                   total_steps: int, autocast: str | None = "auto") -> bool:  # fmt: skip
    """The ``compile="auto"`` rule for params (see :func:`vaefunc.runners.should_compile`)."""
    return runners.should_compile(compile, device, spec_of(params).macs_per_example(), batch_size, total_steps,
                                  autocast=autocast, dtype=next(iter(params.values())).dtype)  # fmt: skip


__all__: Sequence[str] = ("train", "TrainConfig", "TrainState", "TrainResult", "NonFiniteLossError")
