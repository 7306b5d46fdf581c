"""``TrainConfig``: every setting of a training run, in one frozen dataclass.

What a run is (epochs, batch size, Adam and its learning rate, the KL term,
the objective, the seed, how a step runs) lives here; what a model is lives
in :class:`vaefunc.VAE`. ``train(params, data, config=TrainConfig(...))``
takes it whole, and keyword arguments of :func:`vaefunc.train` are overrides
that it validates: ``train(params, data, epochs=20)`` is
``train(params, data, config=TrainConfig(epochs=20))``. A config is
JSON-ready through :meth:`TrainConfig.to_dict` (the KL schedule and the
learning-rate schedule as strings), so a run's ``config.json`` and a
checkpoint hold it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import _check, threads
from ._progress import PROGRESS
from .accel import AUTOCAST, COMPILE
from .gradients import GRADIENTS
from .losses import OBJECTIVES
from .optim import _check_lr
from .schedules import KLSchedule, constant_beta, parse, parse_lr
from .spec import check_output_fields

BINARIZE = (None, "dynamic", "static")
MODEL_FIELDS = ("likelihood", "obs_std", "learn_obs_std", "activation")
"""Model choices a TrainConfig once held; they belong to :class:`vaefunc.VAE` (soft-deprecated here)."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Every setting of a training run; checked on construction, before any work.

    ``lr``, ``beta`` and ``seed`` may be sequences of m values for
    :func:`vaefunc.train_many` (one per model); :func:`vaefunc.train` takes one.

    Example:
        >>> config = TrainConfig(epochs=20, kl_schedule="warmup:1000")
        >>> config.to_dict()["kl_schedule"]
        'warmup:1000:1.0'
    """

    epochs: int = 10  # full passes over the data
    batch_size: int = 128  # examples per step; the last partial batch is dropped
    lr: float | tuple[float, ...] = 1e-3  # Adam's learning rate (the schedule's base with lr_schedule)
    lr_schedule: str | None = None  # None (constant lr) or "iwae-paper[:STAGES]" (vaefunc.iwae_paper_lr)
    adam_b1: float = 0.9  # Adam's constants
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    beta: float | tuple[float, ...] = 1.0  # weight of the KL term (1: the ELBO; >1: beta-VAE)
    kl_schedule: KLSchedule | str | None = None  # the KL term over steps (replaces beta): a KLSchedule or its spec
    objective: str = "elbo"  # "elbo" or "iwae" (the importance-weighted bound)
    k: int = 5  # importance samples per example for objective="iwae"
    gradient: str = "reparam"  # the gradient estimator: "reparam", "stl" (elbo) or "dreg" (iwae); vaefunc.gradients
    binarize: str | None = None  # None, "dynamic" (a fresh Bernoulli draw every step) or "static"
    seed: int | tuple[int, ...] = 0  # seeds the shuffle, the noise and the binarization
    compile: bool | str = "auto"  # True, False, or "auto" (vaefunc.runners.should_compile)
    device: str | None = None  # None: the params' device
    progress: bool | str = True  # True: a bar when stderr is a terminal; "always"; False
    threads: int | None = None  # torch's intra-op threads during the run; None (or 0): decided per run
    # (vaefunc.threads: one thread, or the caller's count where it runs the step faster); the caller's count
    # is restored after
    distributed: bool = False  # data-parallel across the processes torchrun started
    tf32: bool = False  # CUDA: allow TF32 float32 matmuls during the run (no effect on CPU)
    autocast: str | None = "auto"  # None (float32), "bf16" (the forward's matmuls in bfloat16, the ELBO
    # summed in float32), or "auto": bf16 for a compiled float32 step on a CPU with AMX-BF16 tiles, or
    # with AVX512_BF16 where a timed GEMM runs faster in bf16 (vaefunc.accel.resolve_autocast);
    # float32 otherwise
    alpha: float | None = None  # a semi-supervised model's classification weight; None: Kingma et al.'s (vaefunc.paper_alpha)
    labelled_share: float = 0.25  # a semi-supervised run repeats its labelled examples to this share of each epoch
    # Soft-deprecated: model choices, which belong to vaefunc.VAE. With model=, they must be left at
    # these defaults (or agree with the spec); without, they describe the model the params are.
    likelihood: str = "bernoulli"
    obs_std: float = 1.0
    learn_obs_std: str | None = None
    activation: str = "relu"

    def __post_init__(self) -> None:
        for name, value in _checked(self).items():
            object.__setattr__(self, name, value)

    @property
    def schedule(self) -> KLSchedule:
        """The KL term as a :class:`vaefunc.KLSchedule`: the schedule, or the constant ``beta``."""
        if self.kl_schedule is None:
            return constant_beta(1.0 if isinstance(self.beta, tuple) else self.beta)
        return parse(self.kl_schedule) if isinstance(self.kl_schedule, str) else self.kl_schedule

    def learning_rate(self, steps_per_epoch: int):
        """The lr Adam takes: ``lr``, or the named schedule of the step count with base ``lr``."""
        return parse_lr(self.lr_schedule, steps_per_epoch, self.lr)  # type: ignore[arg-type]  # one model's lr

    def model_choices(self) -> dict[str, Any]:
        """The soft-deprecated model fields that differ from their defaults."""
        return {name: getattr(self, name) for name in MODEL_FIELDS if getattr(self, name) != DEFAULTS[name]}

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``, checked; an unknown name is a TypeError naming the known ones."""
        unknown = sorted(set(changes) - FIELDS)
        if unknown:
            raise TypeError(f"unknown training settings {unknown}; TrainConfig has {sorted(FIELDS)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready data (tuples as lists, the KL schedule as its spec string)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if isinstance(self.kl_schedule, KLSchedule):
            raise TypeError("kl_schedule is a hand-made KLSchedule with no spec string, so it cannot be saved; "
                            "build it with vaefunc.linear_warmup, capacity_annealing or free_bits")  # fmt: skip
        out = {k: v for k, v in out.items() if k not in MODEL_FIELDS or v != DEFAULTS[k]}
        if out["gradient"] == "reparam":  # left out at its default: the settings of older runs read the same
            del out["gradient"]
        if out["threads"] is None:  # likewise
            del out["threads"]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """A config from :meth:`to_dict`'s data; unknown keys are an error."""
        if not isinstance(data, dict):
            raise TypeError(f"a training config must be a dict of its fields; got {type(data).__name__}")
        unknown = sorted(set(data) - FIELDS)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; TrainConfig has {sorted(FIELDS)}")
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**fields)


def _checked(c: TrainConfig) -> dict[str, Any]:
    """The fields checked, in canonical form (sequences as tuples, a named KL schedule as its spec)."""
    out: dict[str, Any] = {"epochs": _check.integer("epochs", c.epochs, minimum=0)}
    if out["epochs"] > _check.MAX_EPOCHS:
        raise ValueError(f"epochs must be an int >= 0 of at most {_check.MAX_EPOCHS}; got {c.epochs!r}")
    out["batch_size"] = _check.integer("batch_size", c.batch_size, minimum=1)  # numpy ints kept as ints
    lr = c.lr.tolist() if hasattr(c.lr, "tolist") else c.lr
    out["lr"] = _per_model("lr", lr, minimum=0.0, strict=True) if _is_seq(lr) else _lr(lr)
    out["beta"] = _per_model("beta", c.beta, minimum=0.0)
    seed: Any = c.seed.tolist() if hasattr(c.seed, "tolist") else c.seed
    if _is_seq(seed) and not len(seed):
        raise ValueError("seed must be an int >= 0, or a non-empty sequence of them (one per model); got []")
    out["seed"] = tuple(_check.seed(s) for s in seed) if _is_seq(seed) else _check.seed(seed)
    if c.lr_schedule is not None:
        parse_lr(c.lr_schedule, 1, 1e-3)
    for name, value in (("adam_b1", c.adam_b1), ("adam_b2", c.adam_b2)):
        out[name] = _check.number(name, value, minimum=0.0)  # numpy numbers kept as floats
        if out[name] >= 1.0:
            raise ValueError(f"{name} must be in [0, 1); got {value!r}")
    out["adam_eps"] = _check.number("adam_eps", c.adam_eps, minimum=0.0)
    out["kl_schedule"] = _schedule(c.kl_schedule)
    if out["kl_schedule"] is not None and c.beta != 1.0:
        raise ValueError(f"give either beta or kl_schedule, not both; got beta={c.beta!r} and a kl_schedule")
    _check.choice("objective", c.objective, OBJECTIVES)
    if c.objective == "iwae" and (c.beta != 1.0 or out["kl_schedule"] is not None):
        raise ValueError("objective='iwae' takes no beta or kl_schedule (the bound has no KL weight)")
    out["k"] = _check.positive_int("k", c.k, maximum=2**30)  # log_likelihood's cap on samples per example
    _check.choice(f"gradient (objective={c.objective!r})", c.gradient, GRADIENTS[c.objective])
    _check.choice("binarize", c.binarize, BINARIZE)
    _check.option("compile", c.compile, COMPILE)
    _check.option("progress", c.progress, PROGRESS)
    out["threads"] = threads.check(c.threads)
    for name in ("distributed", "tf32"):
        if not isinstance(getattr(c, name), bool):
            raise ValueError(f"{name} must be True or False; got {getattr(c, name)!r}")
    _check.choice("autocast", c.autocast, AUTOCAST)
    if c.alpha is not None:
        out["alpha"] = _check.number("alpha", c.alpha, minimum=0.0)
    share = out["labelled_share"] = _check.number("labelled_share", c.labelled_share, minimum=0.0, strict=True)
    if share >= 1.0:
        raise ValueError(f"labelled_share must be in (0, 1); got {c.labelled_share!r}")
    if c.device is not None:
        try:
            out["device"] = str(torch.device(c.device))
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(f"device must be a torch device such as 'cpu', 'cuda' or 'cuda:1'; got {c.device!r}") from None
    check_output_fields(c.activation, c.likelihood, c.obs_std, c.learn_obs_std)
    return out


def _lr(value: Any) -> float:
    _check_lr(value, "lr")
    return float(value)


def _is_seq(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _per_model(name: str, value: Any, *, minimum: float, strict: bool = False) -> float | tuple[float, ...]:
    """One number, or a sequence (or 1-d tensor) of them as a tuple."""
    if hasattr(value, "tolist") and not isinstance(value, (int, float)):
        value = value.tolist()
    if _is_seq(value):
        values = list(value)
        ok = all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) for v in values)
        if not values or not ok or not all(v > minimum if strict else v >= minimum for v in values):
            raise ValueError(f"{name} must be finite numbers {'>' if strict else '>='} {minimum:g}; got "
                             f"{_check.show(values)}")  # fmt: skip
        return tuple(float(v) for v in values)
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a number; got {value!r}")
    return _check.number(name, value, minimum=minimum, strict=strict)


def _schedule(value: Any) -> KLSchedule | str | None:
    """A KL schedule as its spec string where it has one (so configs compare and save), else as it is."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return parse(value).spec
        except ValueError as e:
            raise ValueError(f"kl_schedule: {e}") from None
    if not isinstance(value, KLSchedule):
        raise TypeError(f"kl_schedule must be a KLSchedule (e.g. vaefunc.linear_warmup(...)) or its spec string; "
                        f"got {value!r}")  # fmt: skip
    return value.spec if value.spec is not None else value


FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))
DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
"""Every TrainConfig field's default, by name."""
