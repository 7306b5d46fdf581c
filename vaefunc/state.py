"""Where a run stands and what it returns: :class:`TrainState` and :class:`TrainResult`.

A floor below the loop, the training module and checkpoints, so that each of them (and a
checkpoint in particular) reads a run's state without importing the code that trains.
:func:`check_params` is the check both a run and a checkpoint make of a param dict.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor

from . import _check
from ._types import OptState, Params
from ._resolve import spec_of


class TrainState(NamedTuple):
    """Where a run stands, enough to continue it bit for bit."""

    params: Params
    opt_state: OptState
    epoch: int  # epochs finished
    step: int  # steps finished inside the current epoch
    rng: dict[str, Tensor]  # generator states at the start of the current epoch
    sums: Tensor  # the current epoch's metric sums over its finished steps: (4,), or (m, 4) for an ensemble
    batch_size: int | None = None  # the run's batch size: a mid-epoch state resumes only at it (None: not recorded)


class TrainResult(NamedTuple):
    """What :func:`vaefunc.train` returns: new params, the optimizer state, the history and a resumable state."""

    params: Params  # the trained params (the ones passed in are untouched)
    opt_state: OptState  # the optimizer state, to continue training
    history: list[dict[str, float]]  # one dict per finished epoch
    state: TrainState  # to resume: train(..., resume=result.state)
    interrupted: bool  # True when should_stop ended the run early


def check_params(params: Any) -> None:
    """Raise TypeError/ValueError unless ``params`` is a well-formed VAE param dict."""
    _check.param_dict(params)
    spec_of(params)  # the layer shapes: raises a ValueError naming the layer that does not fit
