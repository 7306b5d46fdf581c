"""``train``: the one impure loop around the pure, compiled step.

What it does per epoch, all on the device and with no host work per step:
shuffle with a seeded ``torch.Generator``, take ``n // batch_size`` fixed-size
batches (the last partial batch is dropped, so the compiled step sees one shape),
draw the epoch's eps in one call, run the step, and accumulate the metrics on
the device. The host reads them only at sync points: a progress refresh (at
most twice a second) and the end of each epoch.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ._types import OptState, Params
from .accel import AUTOCAST, GraphedStep, autocast_loss, matmul_precision
from .donate import donated, fused_adam_step, owned
from .likelihoods import LIKELIHOODS, LOGSTD_KEY, UNIT_INTERVAL, init_obs_logstd
from .losses import OBJECTIVES, make_loss
from .model import architecture, data_dim, labels_tensor, latent_dim, macs_per_example, one_hot
from .nn import check_activation
from .optim import Optimizer, _check_lr, adam
from .priors import prior_kind
from .rng import get_states, make_streams, set_states
from .schedules import KLSchedule, constant_beta, schedule_values
from .step import make_step

METRICS = ("loss", "recon", "kl", "elbo")
BINARIZE = (None, "dynamic", "static")
LEARN_OBS_STD = (None, "global", "pixel")
_NAMES = {"bernoulli": "Bernoulli", "continuous_bernoulli": "continuous Bernoulli"}

# compile="auto": compile when the run's estimated eager time exceeds this many
# seconds. A cold torch.compile of the step costs about 17 s more than an eager
# first step on a 2-core CPU and the compiled step is 1.5x to 1.9x faster there,
# so compiling is repaid only after 38 to 50 s of eager training (two runs of
# python -m benchmarks; see README, "When does train compile?").
AUTO_COMPILE_MIN_SECONDS = 60.0
# Eager throughput (FLOP/s) and per-step overhead (s) used only for that
# estimate; deterministic, so the same call always makes the same choice. The
# 784-400-20 step at batch 128 (0.5 GFLOP) is estimated at 5.2 ms against 3.9 ms
# measured on the 2-core CPU, so the 60 s threshold falls near the measured
# crossover.
_EAGER_RATE = {"cpu": 1e11, "cuda": 5e12}
_EAGER_OVERHEAD = {"cpu": 2e-4, "cuda": 1e-3}


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    """Every setting of a training run; checked on construction, before any work."""

    epochs: int = 10  # full passes over the data
    batch_size: int = 128  # examples per step; the last partial batch is dropped
    lr: float = 1e-3  # Adam's learning rate
    beta: float = 1.0  # weight of the KL term (1: the ELBO; >1: beta-VAE)
    likelihood: str = "bernoulli"  # "bernoulli" (logits) or "gaussian" (mean)
    obs_std: float = 1.0  # the Gaussian likelihood's fixed standard deviation
    binarize: str | None = None  # None, "dynamic" (resampled every epoch) or "static"
    seed: int = 0  # seeds the shuffle, the noise and the binarization
    compile: bool | str = "auto"  # True, False, or "auto" (see AUTO_COMPILE_MIN_SECONDS)
    device: str | None = None  # None: the params' device
    progress: bool | str = True  # True: a bar when stderr is a terminal; "always"; False
    objective: str = "elbo"  # "elbo" or "iwae" (the importance-weighted bound)
    k: int = 5  # importance samples per example for objective="iwae"
    learn_obs_std: str | None = None  # Gaussian log-std to learn: None, "global" or "pixel"
    tf32: bool = False  # CUDA: allow TF32 float32 matmuls during the run (no effect on CPU)
    autocast: str | None = None  # None, or "bf16": the forward under bf16 autocast, the ELBO summed in float32
    activation: str = "relu"  # the hidden activation (vaefunc.model.ACTIVATIONS); params do not record it

    def __post_init__(self) -> None:
        _check_int("epochs", self.epochs, minimum=0)
        _check_int("batch_size", self.batch_size, minimum=1)
        _check_lr(self.lr)
        _check_number("beta", self.beta, minimum=0.0)
        _check_number("obs_std", self.obs_std, minimum=0.0, strict=True)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}; got {self.likelihood!r}")
        if self.binarize not in BINARIZE:
            raise ValueError(f"binarize must be one of {BINARIZE}; got {self.binarize!r}")
        _check_int("seed", self.seed, minimum=0)
        if self.compile not in (True, False, "auto"):
            raise ValueError(f"compile must be True, False or 'auto'; got {self.compile!r}")
        if self.progress not in (True, False, "always"):
            raise ValueError(f"progress must be True, False or 'always'; got {self.progress!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}; got {self.objective!r}")
        _check_int("k", self.k, minimum=1)
        if self.learn_obs_std not in LEARN_OBS_STD:
            raise ValueError(f"learn_obs_std must be one of {LEARN_OBS_STD}; got {self.learn_obs_std!r}")
        if self.learn_obs_std is not None and self.likelihood != "gaussian":
            raise ValueError(f"learn_obs_std needs likelihood='gaussian'; got likelihood={self.likelihood!r}")
        if not isinstance(self.tf32, bool):
            raise ValueError(f"tf32 must be True or False; got {self.tf32!r}")
        if self.autocast not in AUTOCAST:
            raise ValueError(f"autocast must be one of {AUTOCAST}; got {self.autocast!r}")
        check_activation(self.activation)


class TrainState(NamedTuple):
    """Where a run stands, enough to continue it bit for bit."""

    params: Params
    opt_state: OptState
    epoch: int  # epochs finished
    step: int  # steps finished inside the current epoch
    rng: dict[str, Tensor]  # generator states at the start of the current epoch
    sums: Tensor  # the current epoch's metric sums over its finished steps


class TrainResult(NamedTuple):
    """What :func:`train` returns: new params, the optimizer state, the history and a resumable state."""

    params: Params  # the trained params (the ones passed in are untouched)
    opt_state: OptState  # the optimizer state, to continue training
    history: list[dict[str, float]]  # one dict per finished epoch
    state: TrainState  # to resume: train(..., resume=result.state)
    interrupted: bool  # True when should_stop ended the run early


class NonFiniteLossError(FloatingPointError):
    """The loss, the params or the optimizer state became NaN or inf during training.

    Attributes:
        epoch, step: 1-based epoch and step within it whose loss (or update)
            was the first non-finite one.
        params, opt_state: the last finite state, from just before that step.
        history: the epochs finished before it.
    """

    def __init__(self, message: str, *, epoch: int, step: int, params: Params, opt_state: OptState, history):
        super().__init__(message)
        self.epoch, self.step = epoch, step
        self.params, self.opt_state, self.history = params, opt_state, history


def train(
    params: Params,
    data: Tensor | np.ndarray,
    *,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    beta: float = 1.0,
    likelihood: str = "bernoulli",
    obs_std: float = 1.0,
    binarize: str | None = None,
    seed: int = 0,
    compile: bool | str = "auto",
    device: str | torch.device | None = None,
    progress: bool | str = True,
    opt_state: OptState | None = None,
    resume: TrainState | None = None,
    on_epoch: Callable[[dict[str, float], TrainState], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    objective: str = "elbo",
    k: int = 5,
    kl_schedule: KLSchedule | None = None,
    learn_obs_std: str | None = None,
    optimizer: Optimizer | None = None,
    labels: Tensor | np.ndarray | Sequence[int] | None = None,
    distributed: bool = False,
    tf32: bool = False,
    autocast: str | None = None,
    activation: str = "relu",
) -> TrainResult:
    """Train a VAE by maximising the ELBO with Adam; returns new params.

    Args:
        params: from :func:`vaefunc.init`; never modified.
        data: (n, *input_shape) float tensor or NumPy array, values in [0, 1]
            for the Bernoulli likelihood; never modified. It is copied to the
            device once.
        epochs: passes over the data; each has ``n // batch_size`` steps.
        batch_size: examples per step. The last partial batch of every epoch is
            dropped, so every step has the same shape.
        lr, beta, likelihood, obs_std, binarize, seed: see :class:`TrainConfig`.
        compile: ``True`` wraps the step in ``torch.compile(fullgraph=True)``;
            ``"auto"`` does so on CUDA, and on CPU only when the run is long
            enough to repay the compile time (the rule is in the README). The
            compiled step is cached per configuration, so later calls with the
            same shapes do not compile again. On CUDA the compiled step is
            replayed as one CUDA graph (:class:`vaefunc.GraphedStep`), except
            with ``binarize="dynamic"``.
        device: where to train; default: the params' device.
        progress: a progress bar with the running loss (on stderr) when it is a
            terminal; ``"always"`` forces it; ``False`` turns it off. The bar's
            refresh (at most twice a second) is the only host sync inside an
            epoch; without a bar there is none.
        opt_state: an optimizer state to continue from (``result.opt_state``);
            its learning rate is set to ``lr``.
        resume: a :class:`TrainState` (``result.state``) to continue from
            exactly, mid-epoch included; it replaces ``params`` and ``opt_state`` (lr: ``lr``).
        on_epoch: called after each epoch with its history entry and the state.
        should_stop: polled after every step (a host flag, e.g. set by a signal
            handler); when it returns True the run stops and returns with
            ``interrupted=True`` and a resumable ``state``.
        objective: ``"elbo"``, or ``"iwae"``: the importance-weighted bound with
            ``k`` samples per example (eps drawn as (steps, k, b, z) per epoch).
        k: importance samples for ``objective="iwae"``.
        kl_schedule: a :class:`vaefunc.KLSchedule` (warm-up, capacity, free
            bits) of the global step; None: the constant ``beta``. Its values are
            computed per epoch on the device and enter the step as 0-d tensors.
        learn_obs_std: for the Gaussian likelihood, add a learned log-std to
            the params if they have none: ``"global"`` (one) or ``"pixel"`` (one
            per feature), initialised at ``obs_std``. Params that already hold
            ``"likelihood.logstd"`` use and learn it in any case.
        optimizer: a pure :class:`vaefunc.Optimizer` to use instead of
            ``adam(lr)`` (e.g. ``adam(schedule, eps=1e-4)``).
        labels: for a conditional VAE (``init(..., n_classes=n)``), the class
            of each example: ints (n,) or one-hot (n, n_classes). They are moved
            to the device once and batched with the same shuffled index as data;
            both objectives take them (the IWAE bound is then of log p(x|y)).
        distributed: data-parallel training in a process launched by
            ``torchrun`` (see :mod:`vaefunc.distributed`): ``batch_size`` is the
            global batch, split evenly across the processes; gradients are
            averaged with one all_reduce per step; only rank 0 shows progress
            and calls ``on_epoch``; the params equal single-process training
            within float rounding.
        tf32: on CUDA, allow TF32 matmuls for float32 params during the run.
        autocast: ``"bf16"`` runs the forward under ``torch.autocast`` in
            bfloat16; the log-likelihood, the KL and their means stay float32.
        activation: the hidden activation of the encoder and decoder, one of
            ``vaefunc.model.ACTIVATIONS`` (``"relu"``, ``"tanh"``, ...). The
            params do not record it: evaluate the result with the same
            ``activation=`` (the command line saves it in the run's config).

    Returns:
        :class:`TrainResult`: ``params``, ``opt_state``, ``history`` (one dict
        per epoch with "epoch", "loss", "recon", "kl", "elbo", "seconds",
        "examples_per_s"), ``state`` and ``interrupted``.

    Raises:
        ValueError, TypeError: for bad input, before any step.
        NonFiniteLossError: if the loss becomes NaN or inf; it carries the last
            finite params and optimizer state.

    Example:
        >>> params = vaefunc.init((784,), latent_dim=20, hidden=(400,), seed=0)
        >>> result = vaefunc.train(params, data, epochs=10, seed=0)
        >>> result.history[-1]["loss"]
    """
    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, beta=beta, likelihood=likelihood, obs_std=obs_std,
        binarize=binarize, seed=seed, compile=compile, progress=progress,
        device=None if device is None else str(device), objective=objective, k=k, learn_obs_std=learn_obs_std,
        tf32=tf32, autocast=autocast, activation=activation,
    )  # fmt: skip
    if resume is not None:
        params, opt_state = resume.params, resume.opt_state
    check_params(params)
    # -- objectives, KL schedules, learned likelihood params (see losses.make_loss)
    if kl_schedule is not None and beta != 1.0:
        raise ValueError(f"give either beta or kl_schedule, not both; got beta={beta!r} and a kl_schedule")
    if objective == "iwae" and (beta != 1.0 or kl_schedule is not None):
        raise ValueError("objective='iwae' takes no beta or kl_schedule (the bound has no KL weight)")
    schedule = kl_schedule if kl_schedule is not None else constant_beta(beta)
    if isinstance(schedule, KLSchedule) and schedule.form == "free_bits" and prior_kind(params) != "normal":
        raise ValueError(f"free bits need the standard normal prior (a closed-form KL per dimension); got {prior_kind(params)!r}")
    if learn_obs_std is not None and LOGSTD_KEY not in params:
        if opt_state is not None:
            raise ValueError(f"learn_obs_std adds {LOGSTD_KEY!r} to params whose opt_state lacks it; pass params that have it")
        params = init_obs_logstd(params, per_pixel=learn_obs_std == "pixel", std=obs_std)
    loss_options = dict(objective=objective, k=k, likelihood=likelihood, obs_std=obs_std, kl_schedule=kl_schedule,
                        activation=activation)  # fmt: skip
    make_loss(**loss_options)  # checks the options before any work
    # --
    dev = torch.device(device) if device is not None else next(iter(params.values())).device
    # --- data parallel (vaefunc.distributed), 1/3: join the process group ---
    ctx = None
    if distributed:
        from . import distributed as dp

        dp.check_schedule(schedule)
        ctx = dp.setup(device if device is not None else dev.type)  # "cuda" -> cuda:LOCAL_RANK
        dev = ctx.device
    # --- end data parallel 1/3 ---
    params = {k: v.to(dev) for k, v in params.items()}
    x_all = prepare_data(data, params, likelihood=likelihood, batch_size=batch_size, device=dev)
    if binarize == "static":
        x_all = (x_all > 0.5).to(x_all.dtype)
    y_all = prepare_labels(labels, params, n=x_all.shape[0], device=dev)

    own_optimizer = optimizer is None
    optimizer = adam(lr) if own_optimizer else optimizer
    if opt_state is None:
        opt_state = optimizer.init(params)
    elif own_optimizer:
        opt_state = _with_lr(opt_state, lr)
    n, b, z = x_all.shape[0], batch_size, latent_dim(params)
    steps_per_epoch = n // b
    samples = batch_size * (k if objective == "iwae" else 1)  # decoder passes per step
    compiled = should_compile(config.compile, dev, params, samples, steps_per_epoch * epochs)
    # The loop owns its params and optimizer state (copies: the caller's are never
    # written) and runs `advance`, which overwrites them with the next step's
    # values (vaefunc.donate); `step_fn` is the same step, pure, for the CUDA graph.
    params, opt_state = owned((params, opt_state))
    if ctx is None:
        step_fn, advance = _train_step(loss_options, None if own_optimizer else optimizer, autocast, dev.type, compiled)
    # --- data parallel (vaefunc.distributed), 2/3: the sharded step, same start on every rank ---
    else:
        loss_fn = autocast_loss(make_loss(**loss_options), dev.type, autocast)
        step_fn = dp.make_data_parallel_step(
            loss_fn, optimizer, rank=ctx.rank, world_size=ctx.world_size, batch_size=batch_size
        )
        params, opt_state = dp.broadcast_state((params, opt_state))
        advance = torch.compile(donated(step_fn), fullgraph=True) if compiled else donated(step_fn)
    # --- end data parallel 2/3 ---
    # --- data parallel (vaefunc.distributed), 3/3: clear errors, rank 0 reports, agreed stop ---
    if ctx is not None:
        advance = dp.guard(advance, ctx)
        if ctx.rank != 0:
            progress, on_epoch = False, None
        if should_stop is not None:
            should_stop = dp.any_rank(should_stop, ctx)
    # --- end data parallel 3/3 ---

    dtype = next(iter(params.values())).dtype
    eps_shape = (steps_per_epoch, k, b, z) if objective == "iwae" else (steps_per_epoch, b, z)
    streams = make_streams(seed, dev)
    start_epoch, start_step, sums = 0, 0, None
    if resume is not None:
        set_states(streams, resume.rng)
        start_epoch, start_step, sums = resume.epoch, resume.step, resume.sums.to(dev)

    history: list[dict[str, float]] = []
    graphed = None  # on CUDA: the step as one CUDA graph over its own buffers
    precision = matmul_precision(tf32, dev)  # TF32 for this run only (CUDA)
    precision.__enter__()
    show = progress == "always" or (progress is True and sys.stderr.isatty())
    bar = _progress_bar(show, total=(epochs - start_epoch) * steps_per_epoch - start_step, batch_size=b)
    # A snapshot (the loop overwrites params and opt_state in place): where each epoch starts.
    state = TrainState(*owned((params, opt_state)), start_epoch, start_step, get_states(streams), _zeros(sums, dev, dtype))
    try:
        for epoch in range(start_epoch, epochs):
            rng = get_states(streams)
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=streams.data, device=dev)[: steps_per_epoch * b].view(steps_per_epoch, b)
            eps = torch.randn(eps_shape, generator=streams.noise, device=dev, dtype=dtype)
            # The schedule's values for every step of the epoch, on the device: (s,) each.
            global_steps = torch.arange(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch, device=dev)
            hparams = tuple(v.to(dtype) for v in schedule_values(schedule, global_steps))
            first = start_step if epoch == start_epoch else 0
            for _ in range(first):  # replay the binarization draws of the steps already done
                if binarize == "dynamic":
                    torch.bernoulli(x_all[perm[0]], generator=streams.binarize)
            sums = _zeros(sums if epoch == start_epoch else None, dev, dtype)
            good = state  # the last state checked finite: this epoch's start, snapshot when the last one ended
            if graphed is None and ctx is None and y_all is None and _use_cuda_graph(dev, compiled, binarize):
                # From here on params and opt_state live in the graph's buffers.
                graphed = GraphedStep(step_fn, params, opt_state, x_all[perm[0]], eps[0], *(h[0] for h in hparams),
                                      capture=dev.type == "cuda")  # fmt: skip
            last_sync = time.perf_counter()
            for i in range(first, steps_per_epoch):
                x = x_all.index_select(0, perm[i])  # a plain row gather: cheaper than x_all[perm[i]]
                if binarize == "dynamic":
                    x = torch.bernoulli(x, generator=streams.binarize)
                if graphed is None:
                    inputs = {} if y_all is None else {"y": y_all[perm[i]]}
                    metrics = advance(params, opt_state, x, eps[i], *(h[i] for h in hparams), **inputs)  # in place
                else:
                    metrics = graphed(x, eps[i], *(h[i] for h in hparams))  # advances its buffers in place
                sums = sums + torch.stack([metrics[k] for k in METRICS])
                bar.update(1)
                stop = should_stop is not None and should_stop()
                now = time.perf_counter()
                if i == steps_per_epoch - 1 or stop or (show and now - last_sync > 0.5):
                    if graphed is not None:
                        params, opt_state = graphed.state()  # copies: the buffers change at the next replay
                    # A copy: params and opt_state change in place at the next step.
                    state = TrainState(*owned((params, opt_state)), epoch, i + 1, rng, sums)
                    # This is a CPU-GPU sync point: the metrics are read on the host.
                    if not _finite(sums, params, opt_state):
                        _raise_non_finite(good, advance, x_all, perm, eps, hparams, binarize, streams, history, y_all)
                    good, last_sync = state, now
                    if show:
                        mean = (sums / (i + 1)).tolist()
                        bar.set_postfix(epoch=epoch + 1, loss=f"{mean[0]:.2f}", kl=f"{mean[2]:.2f}", refresh=False)
                if stop:
                    return TrainResult(params, opt_state, history, state, True)
            seconds = time.perf_counter() - t0
            done = steps_per_epoch - (start_step if epoch == start_epoch else 0)
            entry = {"epoch": epoch + 1, **dict(zip(METRICS, (sums / steps_per_epoch).tolist()))}
            entry |= {"seconds": seconds, "examples_per_s": done * b / seconds if seconds > 0 else math.inf}
            history.append(entry)
            state = TrainState(*owned((params, opt_state)), epoch + 1, 0, get_states(streams), _zeros(None, dev, dtype))
            if on_epoch is not None:
                on_epoch(entry, state)
    finally:
        bar.close()
        precision.__exit__(None, None, None)
    return TrainResult(params, opt_state, history, state, False)


def check_params(params: Any) -> None:
    """Raise TypeError/ValueError unless ``params`` is a well-formed VAE param dict."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of tensors (from vaefunc.init); got {type(params).__name__}")
    for key, value in params.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise TypeError(
                f"params must map str keys to tensors; got {type(key).__name__} -> {type(value).__name__} at {key!r}"
            )
    for key in ("encoder.0.weight", "encoder.0.bias", "decoder.0.weight", "decoder.0.bias"):
        if key not in params:
            raise ValueError(f"params is missing {key!r}; expected the keys vaefunc.init makes, got {sorted(params)}")
    dtypes = {v.dtype for v in params.values()}
    devices = {v.device for v in params.values()}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise TypeError(f"params must all share one floating-point dtype; got {sorted(map(str, dtypes))}")
    if len(devices) != 1:
        raise ValueError(f"params must all be on one device; got {sorted(map(str, devices))}")
    architecture(params)  # the layer shapes: raises a ValueError naming the layer that does not fit


def prepare_labels(labels: Any, params: Params, *, n: int, device: torch.device) -> Tensor | None:
    """Check the labels of a conditional VAE and move them to the device once, one-hot: (n, n_classes)."""
    k = architecture(params).n_classes
    if labels is None:
        if k:
            raise ValueError(f"these params are conditional on {k} classes (init(..., n_classes={k})); pass labels=")
        return None
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    if not isinstance(labels, (Tensor, list, tuple)):
        raise TypeError(f"labels must be a tensor, array or sequence of class indices; got {type(labels).__name__}")
    y = labels_tensor(labels, n, k)
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise ValueError("one-hot labels must be finite; got NaN or inf")
    dtype = next(iter(params.values())).dtype
    return one_hot(y.to(device), k, dtype)


def prepare_data(
    data: Any, params: Params, *, likelihood: str, batch_size: int, device: torch.device
) -> Tensor:
    """Check ``data`` and copy it to the device once, flattened: (n, *shape) -> (n, d)."""
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if not isinstance(data, Tensor):
        raise TypeError(f"data must be a torch.Tensor or numpy.ndarray of shape (n, *input_shape); got {type(data).__name__}")
    if not data.is_floating_point():
        raise TypeError(f"data must be floating point (scale images to [0, 1]); got dtype {data.dtype}")
    d = data_dim(params)
    if data.ndim < 2 or math.prod(data.shape[1:]) != d:
        raise ValueError(
            f"data must have shape (n, *input_shape) with {d} features per example to match the params; "
            f"got {tuple(data.shape)}"
        )
    n = data.shape[0]
    if n == 0:
        raise ValueError("data is empty: got 0 examples")
    if batch_size > n:
        raise ValueError(f"batch_size must be at most the number of examples ({n}); got {batch_size}")
    dtype = next(iter(params.values())).dtype
    x = data.reshape(n, d).to(device=device, dtype=dtype)
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"data must be finite; got {bad} NaN or inf values")
    if likelihood in UNIT_INTERVAL:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"data must lie in [0, 1] for the {_NAMES.get(likelihood, likelihood)} likelihood; got values in [{lo:g}, {hi:g}] "
                "(scale it, or use likelihood='gaussian')"
            )
    return x


def should_compile(
    compile: bool | str, device: torch.device, params: Params, batch_size: int, total_steps: int
) -> bool:
    """The ``compile="auto"`` rule: compile when the run's eager time would exceed
    AUTO_COMPILE_MIN_SECONDS, estimated from its FLOPs (deterministic)."""
    if compile != "auto":
        return bool(compile)
    kind = "cuda" if device.type == "cuda" else "cpu"
    if kind == "cuda":
        return True
    flops_per_step = 6 * batch_size * macs_per_example(params)  # forward and backward
    seconds = total_steps * (flops_per_step / _EAGER_RATE[kind] + _EAGER_OVERHEAD[kind])
    return seconds > AUTO_COMPILE_MIN_SECONDS


def _use_cuda_graph(device: torch.device, compiled: bool, binarize: str | None) -> bool:
    """Replay the step as a CUDA graph: on CUDA when compiled, unless the inputs are
    binarized on the fly (that draw would have to be captured too)."""
    return compiled and device.type == "cuda" and binarize != "dynamic"


def _train_step(loss_options: dict, optimizer: Optimizer | None, autocast: str | None, device_type: str,
                compiled: bool):  # fmt: skip
    """The step ``train`` runs, built once per configuration and reused by later calls.

    Returns ``(step, advance)``: the pure step, and the same step run on buffers
    the loop owns and overwrites in place (:mod:`vaefunc.donate`; eager on a
    CPU with the default Adam, one fused optimizer pass).

    With ``train``'s own Adam (``optimizer=None``) the step reads the lr from the
    optimizer state (a 0-d tensor), so one step serves every lr. Reusing the
    compiled step means a second ``train`` call with the same shapes runs its
    compiled code instead of compiling a new closure (which would also count
    towards dynamo's recompile limit, past which it silently falls back to
    eager). ``dynamic=False``: a new batch size or width compiles a new static
    graph rather than a dynamic one. Unhashable options are built uncached.
    The key holds every loss option, the hidden activation included, so a relu
    and a tanh run never share a step.
    """
    key = (tuple(sorted(loss_options.items())), optimizer, autocast, device_type, compiled)
    try:
        hash(key)
    except TypeError:
        return _build_train_step(key)
    return _cached_train_step(key)


def _build_train_step(key: tuple):
    loss_options, optimizer, autocast, device_type, compiled = key
    loss_fn = autocast_loss(make_loss(**dict(loss_options)), device_type, autocast)
    return loop_step(loss_fn, optimizer, compiled=compiled, device_type=device_type)


def loop_step(loss_fn, optimizer: Optimizer | None = None, *, compiled: bool, device_type: str):
    """The step :func:`train` runs, as ``(step, advance)``.

    ``step`` is the pure ``make_step(loss_fn, optimizer)``; ``advance`` is the
    same step on state the caller owns, overwritten in place
    (:mod:`vaefunc.donate`): compiled, the donated step; eager on a CPU with
    the default Adam (``optimizer=None``: ``vaefunc.adam``, its lr read from
    the state), the fused in-place update; otherwise the pure step plus a copy.
    Compiled functions compile lazily, at their first call: the loop runs
    ``advance`` unless a CUDA graph captures ``step``.

    Example:
        >>> step, advance = loop_step(make_elbo_loss(), compiled=False, device_type="cpu")
        >>> params, opt_state = owned((params, adam(1e-3).init(params)))
        >>> metrics = advance(params, opt_state, x, eps, beta)
    """
    step_fn = make_step(loss_fn, adam(1e-3) if optimizer is None else optimizer)
    if compiled:
        return (torch.compile(step_fn, fullgraph=True, dynamic=False),
                torch.compile(donated(step_fn), fullgraph=True, dynamic=False))  # fmt: skip
    if optimizer is None and device_type == "cpu":
        return step_fn, fused_adam_step(loss_fn)
    return step_fn, donated(step_fn)


_cached_train_step = functools.lru_cache(maxsize=16)(_build_train_step)


def config_dict(config: TrainConfig) -> dict[str, Any]:
    """The config as a JSON-ready dict."""
    return asdict(config)


def _raise_non_finite(good: TrainState, advance, x_all, perm, eps, hparams, binarize, streams, history, y_all=None):
    """Replay from the last state checked finite to find the first bad step; raise."""
    params, opt_state = owned((good.params, good.opt_state))
    binarize_gen = None
    if binarize == "dynamic":
        # Re-create the binarization stream as it stood at step `good.step` of this epoch.
        binarize_gen = torch.Generator(device=x_all.device)
        binarize_gen.set_state(good.rng["binarize"])
        for _ in range(good.step):
            torch.bernoulli(x_all[perm[0]], generator=binarize_gen)
    for i in range(good.step, perm.shape[0]):
        x = x_all[perm[i]]
        if binarize_gen is not None:
            x = torch.bernoulli(x, generator=binarize_gen)
        inputs = {} if y_all is None else {"y": y_all[perm[i]]}
        before = owned((params, opt_state))
        metrics = advance(params, opt_state, x, eps[i], *(h[i] for h in hparams), **inputs)  # in place
        if not _finite(metrics["loss"].reshape(1), params, opt_state):
            raise NonFiniteLossError(
                f"training became non-finite (loss, params or optimizer state) at epoch {good.epoch + 1}, "
                f"step {i + 1} of {perm.shape[0]} "
                f"(loss {float(metrics['loss']):g}); the last finite params and optimizer state are kept "
                "on this exception as .params and .opt_state (try a lower lr)",
                epoch=good.epoch + 1, step=i + 1, params=before[0], opt_state=before[1], history=history,
            )  # fmt: skip
    raise AssertionError("non-finite metrics that a replay could not reproduce")


def _finite(sums: Tensor, params: Params, opt_state: OptState) -> bool:
    """Whether the metric sums, the params and the optimizer state are all finite.

    The state matters too: Adam's second moment can overflow to inf while the
    params are still finite, and every later step is then NaN. Each tensor is
    multiplied by 0 first (0 where finite, NaN where not), so the norms that
    reduce it to one flag cannot overflow on large finite values.
    """
    leaves = [sums, *params.values(), *(t for t in _tensors(opt_state) if t.is_floating_point())]
    norms = torch._foreach_norm(torch._foreach_mul(leaves, 0.0))
    return bool(torch.isfinite(torch.stack(norms)).all())


def _with_lr(opt_state: OptState, lr: float) -> OptState:
    """``opt_state`` of ``adam`` with its learning rate set to ``lr``.

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
    return (adam_state, lr_state._replace(lr=torch.tensor(lr, dtype=lr_t.dtype, device=lr_t.device)))


def _tensors(tree: Any) -> list[Tensor]:
    """The tensors of a tree of NamedTuples, tuples, lists and dicts."""
    if isinstance(tree, Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in _tensors(v)]
    if isinstance(tree, (tuple, list)):
        return [t for v in tree for t in _tensors(v)]
    return []


def _zeros(sums: Tensor | None, device: torch.device, dtype: torch.dtype) -> Tensor:
    return sums if sums is not None else torch.zeros(len(METRICS), device=device, dtype=dtype)


def _progress_bar(show: bool, total: int, batch_size: int):
    """Counts steps, shown as examples: the rate is examples/s, with the ETA."""
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not show, unit="ex", unit_scale=batch_size, dynamic_ncols=True, leave=True)


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")


def _check_number(name: str, value: object, *, minimum: float, strict: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value > minimum if strict else value >= minimum)
    if not ok:
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {minimum}; got {value!r}")


__all__: Sequence[str] = ("train", "TrainConfig", "TrainState", "TrainResult", "NonFiniteLossError")
