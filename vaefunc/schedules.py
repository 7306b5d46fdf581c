"""KL schedules: how the KL term enters the loss, as pure functions of the step.

A :class:`KLSchedule` holds functions of the global step count (a 0-d or 1-d
int64 tensor, returning a float64 tensor of the same shape) and the static
form of the KL term:

- ``beta * KL`` (:func:`constant_beta`, :func:`linear_warmup`);
- ``gamma * |KL - C(step)|`` (:func:`capacity_annealing`);
- ``beta * sum_j max(lambda, KL_j)``, KL_j the batch-mean KL of latent
  dimension j (:func:`free_bits`).

``train`` evaluates the functions for all steps of an epoch at once, on the
device, and hands the compiled step each value as a 0-d tensor, so a value
that changes never recompiles the step.

Axis letters: s steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple, overload

import numpy as np
import torch
from torch import Tensor

from . import _check

StepFn = Callable[[Tensor], Tensor]
"""step (0-d or (s,) int64) -> value (float64, same shape)."""


class KLSchedule(NamedTuple):
    """The KL term of the loss at each step.

    Attributes:
        beta: step -> weight of the KL term (beta; gamma in the capacity form).
        capacity: step -> C in nats, or None for the ``beta * KL`` form.
        free_bits: lambda in nats per latent dimension; 0 turns free bits off.
    """

    beta: StepFn
    capacity: StepFn | None = None
    free_bits: float = 0.0
    spec: str | None = None  # the string :func:`parse` reads back (None for a hand-made schedule)

    @property
    def form(self) -> str:
        """"capacity", "free_bits" or "beta": the shape of the KL term in the loss."""
        if self.capacity is not None:
            return "capacity"
        return "free_bits" if self.free_bits > 0 else "beta"


def _float(step: Tensor) -> Tensor:
    _check_step(step)
    return step.to(torch.float64)


def _check_step(step: object) -> None:
    if not isinstance(step, Tensor) or step.dtype != torch.int64 or step.ndim > 1:
        got = f"{step.dtype} tensor of shape {tuple(step.shape)}" if isinstance(step, Tensor) else type(step).__name__
        raise TypeError(f"step must be a 0-d or 1-d int64 tensor; got {got}")


def _check_nonneg(name: str, value: Any, *, positive: bool = False) -> float:
    """``value`` as a float (numpy numbers included), finite and >= 0 (> 0 with ``positive``)."""
    ok = not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))
    ok = ok and math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} 0; got {_check.show(value)}")
    return float(value)


def _ramp(step: Tensor, steps: int) -> Tensor:
    """min(step / steps, 1), float64."""
    return torch.clamp(_float(step) / steps, max=1.0)


def constant_beta(beta: float = 1.0) -> KLSchedule:
    """beta * KL with a fixed beta (beta = 1: the ELBO; beta > 1: beta-VAE).

    Example:
        >>> constant_beta(4.0).beta(torch.tensor([0, 10]))
        tensor([4., 4.], dtype=torch.float64)
    """
    beta = _check_nonneg("beta", beta)
    return KLSchedule(beta=lambda step: torch.full_like(_float(step), float(beta)), spec=f"beta:{float(beta)!r}")


def linear_warmup(warmup_steps: int, *, beta: float = 1.0, start: float = 0.0) -> KLSchedule:
    """KL warm-up (Sonderby et al. 2016): beta rises linearly from ``start`` at
    step 0 to ``beta`` at ``warmup_steps``, and stays there.

    Example:
        >>> linear_warmup(100).beta(torch.tensor([0, 50, 100, 200]))
        tensor([0.0000, 0.5000, 1.0000, 1.0000], dtype=torch.float64)
    """
    warmup_steps = _check_positive_int("warmup_steps", warmup_steps)
    beta, start = _check_nonneg("beta", beta), _check_nonneg("start", start)
    spec = f"warmup:{warmup_steps}:{float(beta)!r}" + (f":{float(start)!r}" if start else "")
    return KLSchedule(beta=lambda step: start + (beta - start) * _ramp(step, warmup_steps), spec=spec)


def capacity_annealing(capacity: float, anneal_steps: int, *, gamma: float = 1000.0) -> KLSchedule:
    """Capacity annealing (Burgess et al. 2018): gamma * |KL - C(step)|, with the
    target C rising linearly from 0 at step 0 to ``capacity`` nats at
    ``anneal_steps``. KL is the batch mean of KL(q(z|x) || p(z)).

    Example:
        >>> capacity_annealing(25.0, 1000).capacity(torch.tensor([0, 500, 2000]))
        tensor([ 0.0000, 12.5000, 25.0000], dtype=torch.float64)
    """
    capacity, gamma = _check_nonneg("capacity", capacity), _check_nonneg("gamma", gamma)
    anneal_steps = _check_positive_int("anneal_steps", anneal_steps)
    return KLSchedule(
        beta=lambda step: torch.full_like(_float(step), float(gamma)),
        capacity=lambda step: capacity * _ramp(step, anneal_steps),
        spec=f"capacity:{float(gamma)!r}:{float(capacity)!r}:{anneal_steps}",
    )


def free_bits(lam: float, *, beta: float = 1.0) -> KLSchedule:
    """Free bits (Kingma et al. 2016): beta * sum_j max(lambda, KL_j), with KL_j the
    KL of latent dimension j averaged over the batch; dimensions below lambda nats
    get no gradient towards the prior. Needs the standard normal prior (KL_j is
    its closed form per dimension).

    Example:
        >>> free_bits(0.5).free_bits
        0.5
    """
    lam, beta = _check_nonneg("lam", lam, positive=True), _check_nonneg("beta", beta)
    spec = f"free-bits:{float(lam)!r}" + (f":{float(beta)!r}" if beta != 1.0 else "")
    return KLSchedule(beta=lambda step: torch.full_like(_float(step), float(beta)), free_bits=float(lam), spec=spec)


def schedule_values(schedule: KLSchedule, step: Tensor) -> tuple[Tensor, Tensor]:
    """The schedule's (beta, capacity) at ``step``; capacity is 0 without a capacity form.

    Args:
        step: 0-d or (s,) int64.

    Returns:
        beta, capacity: float64, each the shape of ``step``.
    """
    beta = schedule.beta(step)
    capacity = schedule.capacity(step) if schedule.capacity is not None else torch.zeros_like(beta)
    return beta, capacity


MAX_STAGES = 40
"""The most stages :func:`iwae_paper_lr` takes: stage 40 starts after about 2e18 epochs (3**39 / 2, near int64's end)."""


def _check_positive_int(name: str, value: object, maximum: int | None = 2**62) -> int:
    """``value`` as an int (numpy ints included), >= 1 and <= ``maximum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {_check.show(value)}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be a positive int of at most {maximum}; got {_check.show(value)}")
    return int(value)


def iwae_paper_lr(steps_per_epoch: int, *, base: float = 1e-3, stages: int = 8) -> StepFn:
    """The IWAE paper's learning rate (Burda et al. 2015, section 5): stage i = 0..7
    lasts 3^i epochs at lr = base * 10^(-i/7); after the last stage lr stays at
    its last value. A pure function of the step count, for :func:`vaefunc.adam`.

    Args:
        steps_per_epoch: optimizer steps in one epoch (n // batch_size).

    Returns:
        ``lr(step)``: int64 step (0-d or (s,)) -> float64 lr, same shape.

    Example:
        >>> lr = iwae_paper_lr(10)
        >>> lr(torch.tensor([0, 9, 10, 39, 40]))  # epochs 0, 0, 1, 3, 4
        tensor([0.0010, 0.0010, 0.0007, 0.0007, 0.0005], dtype=torch.float64)
    """
    steps_per_epoch = _check_positive_int("steps_per_epoch", steps_per_epoch)
    stages = _check_positive_int("stages", stages, MAX_STAGES)
    base = _check_nonneg("base", base, positive=True)
    # stage i ends after (3^(i+1) - 1) / 2 epochs in total
    ends = [(3 ** (i + 1) - 1) // 2 for i in range(stages - 1)]

    def lr(step: Tensor) -> Tensor:
        _check_step(step)
        epoch = torch.div(step, steps_per_epoch, rounding_mode="floor")
        bounds = torch.tensor(ends, dtype=torch.int64, device=step.device)
        stage = (epoch.unsqueeze(-1) >= bounds).sum(-1).to(torch.float64)
        return base * torch.pow(10.0, -stage / 7.0)

    return lr


def iwae_paper_epochs(stages: int = 8) -> int:
    """Total epochs of :func:`iwae_paper_lr`'s stages: sum_i 3^i = 3,280 for 8."""
    return (3**stages - 1) // 2


SPECS = "warmup:STEPS[:BETA[:START]], capacity:GAMMA:CMAX:STEPS, free-bits:LAMBDA[:BETA] or beta:BETA"


@overload
def parse(spec: str) -> KLSchedule: ...
@overload
def parse(spec: None) -> None: ...
def parse(spec: str | None) -> KLSchedule | None:
    """The :class:`KLSchedule` a string names (a schedule's ``spec``); None for None.

    ``warmup:STEPS[:BETA[:START]]`` is :func:`linear_warmup` (beta from START,
    default 0, to BETA, default 1, over STEPS optimizer steps);
    ``capacity:GAMMA:CMAX:STEPS`` is :func:`capacity_annealing` (gamma * |KL - C|,
    C from 0 to CMAX nats over STEPS); ``free-bits:LAMBDA[:BETA]`` is
    :func:`free_bits` (LAMBDA nats per latent dimension); ``beta:BETA`` is
    :func:`constant_beta`.

    Raises:
        ValueError: naming the forms, for anything else.

    Example:
        >>> parse("warmup:1000").beta(torch.tensor([0, 500]))
        tensor([0.0000, 0.5000], dtype=torch.float64)
        >>> parse(linear_warmup(1000, beta=4.0).spec).spec
        'warmup:1000:4.0'
    """
    if spec is None:
        return None
    if not isinstance(spec, str):
        raise TypeError(f"a KL schedule spec must be a string such as 'warmup:1000'; got {spec!r}")
    name, *fields = spec.split(":")
    try:
        if name == "warmup" and 1 <= len(fields) <= 3:
            extra = dict(zip(("beta", "start"), map(float, fields[1:])))
            return linear_warmup(int(fields[0]), **extra)
        if name == "capacity" and len(fields) == 3:
            return capacity_annealing(float(fields[1]), int(fields[2]), gamma=float(fields[0]))
        if name == "free-bits" and len(fields) in (1, 2):
            return free_bits(float(fields[0]), **({"beta": float(fields[1])} if len(fields) == 2 else {}))
        if name == "beta" and len(fields) == 1:
            return constant_beta(float(fields[0]))
    except ValueError as e:
        raise ValueError(f"expected {SPECS}; got {spec!r} ({e})") from None
    raise ValueError(f"expected {SPECS}; got {spec!r}")


LR_SCHEDULES = "iwae-paper[:STAGES]"


def parse_lr(spec: str | None, steps_per_epoch: int, base: float) -> float | StepFn:
    """The learning rate a ``TrainConfig.lr_schedule`` string names: ``base`` for None,
    :func:`iwae_paper_lr` for ``"iwae-paper[:STAGES]"`` (STAGES default 8)."""
    if spec is None:
        return base
    name, *fields = spec.split(":") if isinstance(spec, str) else ("", "")
    if name == "iwae-paper" and len(fields) <= 1:
        stages = fields[0] if fields else "8"
        if stages.isascii() and stages.isdigit() and (len(stages) > 3 or int(stages) > MAX_STAGES):
            raise ValueError(f"lr_schedule {LR_SCHEDULES}: STAGES must be at most {MAX_STAGES}; got {spec!r}")
        if stages.isascii() and stages.isdigit() and int(stages) >= 1:
            return iwae_paper_lr(steps_per_epoch, base=base, stages=int(stages))
    raise ValueError(f"lr_schedule must be None or {LR_SCHEDULES} (STAGES a positive int); got {spec!r}")
