"""A run's inputs, checked and on the device: the data (a tensor copied once, or its stream), the
labels one-hot, a semi-supervised run's pool of epoch rows, and the :class:`vaefunc.feed.Feed` over them.

``vaefunc.training.setup`` calls these before any step; the counts they find (rows, labelled rows)
are what :func:`vaefunc.plan.plan` derives a run's steps and alpha from.

Axis letters: n examples, d data features, c classes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import _check, stream
from .config import TrainConfig
from .feed import Feed
from .likelihoods import UNIT_INTERVAL
from .network import one_hot
from .spec import VAE

_NAMES = {"bernoulli": "Bernoulli", "continuous_bernoulli": "continuous Bernoulli"}


def data(values: Any, labels: Any, model: VAE, config: TrainConfig, device: torch.device,
         dtype: torch.dtype) -> tuple[Tensor | stream.Examples | stream.Batches, Tensor | None]:  # fmt: skip
    """The data copied to the device once (a tensor, statically binarized if asked) or its stream
    (:mod:`vaefunc.stream`, read per step), and the ``labels=`` of a conditional model, one-hot."""
    if stream.streams(values):
        seeds = len(config.seed) if isinstance(config.seed, tuple) else 1
        source = stream.source(values, model, batch_size=config.batch_size, seeds=seeds,
                               labels_given=labels is not None, device=device, dtype=dtype)  # fmt: skip
        y = None if labels is None else prepare_labels(labels, model, n=source.shape[0], device=device, dtype=dtype)
        return source, y
    x = prepare_data(values, model, batch_size=config.batch_size, device=device, dtype=dtype)
    if config.binarize == "static":
        x = (x > 0.5).to(x.dtype)
    return x, prepare_labels(labels, model, n=x.shape[0], device=device, dtype=dtype)


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


def labelled_repeats(n_labelled: int, n_unlabelled: int, share: float) -> int:
    """How many times a semi-supervised epoch holds each labelled example: enough that they make up
    about ``share`` of it, beside every unlabelled example once (at least once)."""
    return max(1, round(share * n_unlabelled / ((1 - share) * n_labelled)))


def semi_supervised_rows(n_labelled: int, n_unlabelled: int, share: float) -> int:
    """The rows a semi-supervised epoch shuffles (all the examples once when none is unlabelled)."""
    if not n_unlabelled:
        return n_labelled
    return n_unlabelled + n_labelled * labelled_repeats(n_labelled, n_unlabelled, share)


def labelled_rows(y: Tensor | None, model: VAE) -> int | None:
    """How many of a semi-supervised run's examples are labelled (a label row that is not all zeros);
    None for any other run."""
    if not model.semi_supervised:
        return None
    if y is None:
        raise ValueError("a semi-supervised model needs labels (labels=, or a stream's (x, y) pairs); got none")
    n_labelled = int((y.sum(-1) > 0).sum())  # one host sync, before the first step
    if n_labelled == 0:
        raise ValueError("a semi-supervised run needs some labelled examples; every label is -1")
    return n_labelled


def pool(y: Tensor | None, model: VAE, share: float) -> Tensor | None:
    """The rows a semi-supervised epoch shuffles: every unlabelled row once and the labelled ones
    repeated so they make up about ``share`` of it (each batch then holds labelled examples however
    few there are); None for any other run, or when every example is labelled (each row once)."""
    if labelled_rows(y, model) is None:
        return None
    assert y is not None  # labelled_rows refused None
    labelled = y.sum(-1) > 0
    lab, unlab = torch.nonzero(labelled).flatten(), torch.nonzero(~labelled).flatten()
    if not unlab.numel():
        return None
    return torch.cat([unlab, lab.repeat(labelled_repeats(lab.numel(), unlab.numel(), share))])


def alpha(config: TrainConfig, n_labelled: int, n_unlabelled: int) -> float:
    """A semi-supervised run's classification weight: ``config.alpha``, or :func:`paper_alpha`."""
    if config.alpha is not None:
        return float(config.alpha)
    return paper_alpha(n_labelled, n_unlabelled, labelled_repeats(n_labelled, n_unlabelled, config.labelled_share))


def semi_supervised_pool(y: Tensor | None, model: VAE, config: TrainConfig) -> tuple[Tensor | None, float]:
    """A semi-supervised run's epoch rows (:func:`pool`) and classification weight alpha
    (:func:`alpha`: Kingma et al.'s, :func:`paper_alpha`, by default); (None, 0) for any other run."""
    n_labelled = labelled_rows(y, model)
    if n_labelled is None:
        return None, 0.0
    assert y is not None
    return pool(y, model, config.labelled_share), alpha(config, n_labelled, y.shape[0] - n_labelled)


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


def feed(x: Tensor | stream.Examples | stream.Batches, y: Tensor | None, config: TrainConfig, *, seeds: tuple[int, ...],
         members: int | None, steps: int, eps_shape: tuple[int, ...], pool: Tensor | None = None) -> Feed:  # fmt: skip
    """The run's :class:`Feed` (a :class:`vaefunc.stream.StreamFeed` over streamed data); the seeds,
    steps per epoch and noise shape as :func:`vaefunc.plan.plan` derived them."""
    member_beta = None
    if isinstance(config.beta, tuple):  # its length was checked against the members (vaefunc.plan.check_per_model)
        member_beta = torch.tensor(config.beta, dtype=x.dtype, device=x.device)
    kw: dict[str, Any] = dict(seeds=list(seeds), members=members, batch_size=config.batch_size, steps=steps,
                              eps_shape=eps_shape, schedule=config.schedule, binarize=config.binarize,
                              member_beta=member_beta, pool=pool)  # fmt: skip
    return Feed(x, y, **kw) if isinstance(x, Tensor) else stream.StreamFeed(x, y, **kw)
