"""Every fact a run derives from its spec, its config, its data's counts and its device, computed once.

:func:`plan` is pure: the same inputs give an equal :class:`RunPlan`. ``vaefunc.training.setup``
builds one per run and hands its facts to the feed (steps per epoch, the seeds, eps's shape), the
runner (:meth:`RunPlan.step_key`, the key its step is built and cached by: compile or not, precision,
CUDA graph, the loss's form and alpha) and the loop (epochs); the command line's summary asks the
same function (``vaefunc.cli.session``), so it says what the run does.

Axis letters: m ensemble members, b batch, k importance samples, z latent.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from . import runners
from .accel import resolve_autocast
from .config import DEFAULTS, TrainConfig
from .inputs import alpha as run_alpha
from .inputs import semi_supervised_rows
from .optim import Optimizer, fused_adam
from .schedules import parse_lr
from .spec import VAE

PER_MODEL = ("lr", "beta", "seed")
"""The settings that take one value per model of an ensemble."""
OPTIMIZER_FIELDS = ("lr", "lr_schedule", "adam_b1", "adam_b2", "adam_eps")
"""The settings of the config's own Adam: with ``optimizer=`` they must be left at their defaults."""


class RunPlan(NamedTuple):
    """What a run is, derived once by :func:`plan`: read by the feed, the runner, the loop and the CLI."""

    model: VAE
    config: TrainConfig
    device_type: str  # "cpu" or "cuda"
    members: int | None  # m for an ensemble, None for one model
    seeds: tuple[int, ...]  # one (one model, or an ensemble's shared streams) or m
    steps_per_epoch: int  # the rows an epoch shuffles // batch_size (a semi-supervised run repeats its labels)
    total_steps: int  # steps_per_epoch * epochs
    compiled: bool  # config.compile, or the "auto" rule (vaefunc.runners.should_compile)
    autocast: str | None  # the forward's precision: None (the data's dtype) or "bf16"
    cuda_graph: bool  # replay the compiled step as one CUDA graph
    eps_shape: tuple[int, ...]  # one step's noise: (b, z), or (k, b, z) for IWAE
    alpha: float  # a semi-supervised model's classification weight (0 for any other)
    optimizer: Optimizer  # the one given, or the config's Adam (its lr schedule built for these steps)

    def step_key(self, threads: int | None = None, *, eager: bool = False) -> runners.Plan:
        """The :class:`vaefunc.runners.Plan` the run's runner is built from and its step cached by;
        ``eager``: the same step uncompiled (what the thread probe times); ``threads``: the count
        the step runs on (a compiled CPU step's kernels are built for it)."""
        c = self.config
        return runners.Plan(self.model, c.objective, c.schedule.form, c.schedule.free_bits, self.optimizer,
                            self.compiled and not eager, self.device_type, self.autocast, self.members,
                            len(self.seeds) == 1, self.cuda_graph and not eager, self.alpha, c.gradient,
                            threads)  # fmt: skip


def plan(model: VAE, config: TrainConfig, *, rows: int, device: torch.device, dtype: torch.dtype = torch.float32,
         members: int | None = None, labelled: int | None = None, optimizer: Optimizer | None = None) -> RunPlan:
    """A run's derived facts, from the spec, the config, its ``rows`` training examples (``labelled``
    of them labelled, for a semi-supervised model), the device, the data's dtype and ``members``.

    Example:
        >>> p = plan(VAE((784,), latent_dim=20), TrainConfig(objective="iwae", k=5), rows=1000,
        ...          device=torch.device("cpu"))
        >>> p.steps_per_epoch, p.eps_shape, p.compiled
        (7, (5, 128, 20), False)
    """
    check_per_model({name: getattr(config, name) for name in PER_MODEL}, members)
    steps = steps_per_epoch(model, config, rows, labelled)
    total = steps * config.epochs
    if_compiled = resolve_autocast(config.autocast, device, dtype, compiled=True)
    compiled = _compiles(model, config, device, members, total, bf16=if_compiled == "bf16")
    autocast = if_compiled if compiled else resolve_autocast(config.autocast, device, dtype, compiled=False)
    graph = runners.use_cuda_graph(device, compiled, binarize=config.binarize, labelled=model.n_classes > 0,
                                   members=members)  # fmt: skip
    b, z = config.batch_size, model.noise_dim
    alpha = 0.0 if labelled is None else run_alpha(config, labelled, rows - labelled)
    seeds = config.seed if isinstance(config.seed, tuple) else (config.seed,)
    return RunPlan(model, config, device.type, members, seeds, steps, total, compiled, autocast,
                   graph and not config.distributed, (config.k, b, z) if config.objective == "iwae" else (b, z),
                   alpha, run_optimizer(config, optimizer, steps))  # fmt: skip


def steps_per_epoch(model: VAE, config: TrainConfig, rows: int, labelled: int | None = None) -> int:
    """The steps of one epoch of ``rows`` examples: the rows it shuffles // batch_size, where a
    semi-supervised run (``labelled`` of the rows labelled) repeats its labelled examples."""
    if model.semi_supervised:
        if labelled is None:
            raise ValueError("a semi-supervised run's steps need labelled=, how many of its rows are labelled")
        rows = semi_supervised_rows(labelled, rows - labelled, config.labelled_share)
    return rows // config.batch_size


def compiles(model: VAE, config: TrainConfig, device: torch.device, members: int | None, total_steps: int,
             dtype: torch.dtype = torch.float32) -> bool:  # fmt: skip
    """Whether a run's step is compiled: ``config.compile``, or for ``"auto"`` the rule of
    :func:`vaefunc.runners.should_compile` on the samples one step decodes, at the precision the
    compiled step would take (``dtype``: the data's); :func:`plan` decides so."""
    bf16 = resolve_autocast(config.autocast, device, dtype, compiled=True) == "bf16"
    return _compiles(model, config, device, members, total_steps, bf16=bf16)


def _compiles(model: VAE, config: TrainConfig, device: torch.device, members: int | None, total_steps: int, *,
              bf16: bool) -> bool:  # fmt: skip
    if config.compile != "auto":
        return bool(config.compile)
    samples = config.batch_size * (config.k if config.objective == "iwae" else 1) * (members or 1)
    samples *= model.n_classes + 1 if model.semi_supervised else 1  # M2 decodes every class, and classifies
    return runners.auto_compiles(device, model.macs_per_example(), samples, total_steps, bf16=bf16)


def check_per_model(values: Mapping[str, Any], members: int | None) -> None:
    """lr, beta and seed (those in ``values``): one value each, or for an ensemble of ``members``
    one value or exactly one per model; the one place these lengths are checked."""
    for name in PER_MODEL:
        value = values.get(name)
        if value is None or isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            continue
        if isinstance(value, Tensor) and value.ndim == 0:
            continue
        if members is None and isinstance(value, tuple):
            raise ValueError(f"train takes one {name}; got {len(value)} (one per model is for vaefunc.train_many)")
        kind = "a non-negative int or {m} of them" if name == "seed" else "a number or {m} numbers"
        what = f"{name} must be {kind.format(m=members or 1)} (one per model)"
        if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__"):
            raise TypeError(f"{what}; got {value!r}")
        if len(value) != members:
            raise ValueError(f"{what}; got {value!r}" if name == "seed" else f"{what}; got shape ({len(value)},)")


def run_optimizer(config: TrainConfig, optimizer: Optimizer | None, steps_per_epoch: int) -> Optimizer:
    """The run's optimizer: the given pure one (the config's Adam settings left at their defaults),
    or the config's Adam (:func:`default_optimizer`)."""
    if optimizer is None:
        schedule = config.lr_schedule is not None
        key = (config.lr_schedule, steps_per_epoch, config.lr) if schedule else None
        return default_optimizer(config.adam_b1, config.adam_b2, config.adam_eps, key)
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a vaefunc.Optimizer (init, update); got {type(optimizer).__name__}")
    ignored = [f"{k}={getattr(config, k)!r}" for k in OPTIMIZER_FIELDS if getattr(config, k) != DEFAULTS[k]]
    if ignored:
        raise ValueError(f"optimizer= holds its own learning rate and settings, so {', '.join(ignored)} would be "
                         "ignored; set them in the optimizer (e.g. vaefunc.adam(lr, b1, b2, eps)) or leave "
                         "optimizer= out")  # fmt: skip
    return optimizer


@functools.lru_cache(maxsize=16)
def default_optimizer(b1: float, b2: float, eps: float, schedule_key: tuple | None) -> Optimizer:
    """The config's Adam, cached so later runs reuse its compiled step: a constant lr is read from
    the state (so one optimizer serves every lr), a named schedule is built in."""
    if schedule_key is None:
        return fused_adam(1e-3, b1, b2, eps)  # the lr is set in the state
    spec, steps_per_epoch, base = schedule_key
    return fused_adam(parse_lr(spec, steps_per_epoch, base), b1, b2, eps)
