"""Data that streams: a map-style ``Dataset``, a ``DataLoader`` or an iterable of batches, read step by step.

:func:`vaefunc.train` copies a tensor to the device once (:class:`vaefunc.feed.Feed`,
the fast default). Anything else is read on the host one batch at a time and
copied to the device for its step by :class:`StreamFeed`, which has the Feed's
interface (the loop does not know which it runs) and draws eps, the KL
schedule's values and dynamic binarization from the same seeded streams
(:mod:`vaefunc.rng`). Every batch holds ``batch_size`` examples; the last
partial one is dropped, as for a tensor.

- A map-style ``torch.utils.data.Dataset`` (``__len__``, ``__getitem__`` giving x
  or (x, y)): :class:`Examples`. vaefunc shuffles its indices with the ``data``
  generator and the randperm a tensor's rows get, so a run over
  ``TensorDataset(x)`` equals the run over ``x`` bit for bit, and ``resume`` is
  exact. ``labels=`` (n,) may replace the items' y (a semi-supervised model needs it).
- A ``DataLoader`` or any re-iterable of batches (x (b, *input_shape) or (x, y)):
  :class:`Batches`, read in its own order, which vaefunc cannot reproduce. Its
  batches must hold ``batch_size`` examples (vaefunc does not re-batch); the
  steps of an epoch are ``len(sampler) // batch_size`` for a DataLoader that
  batches, ``len(data)`` for another iterable (one without ``__len__`` is
  refused). Each epoch, and a resumed one, starts a new pass (calling
  ``set_epoch(epoch)`` where the loader or its sampler has one), so resume is
  exact only where that order is reproducible.

Checked before the first step: the kind of data, the first example's (or
batch's) type, dtype, features, values and labels, the batch size against the
data. Checked per batch as it is read, before its step: the same, and values
finite and in [0, 1] for the (continuous) Bernoulli likelihood (a ValueError
naming the epoch and step).

Axis letters: m ensemble members, s steps of an epoch, b batch, d data features, n classes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from . import _check, _values
from .feed import Draws, Feed
from .likelihoods import UNIT_INTERVAL
from .network import one_hot
from .runners import Batch

KINDS = ("a torch.Tensor or numpy.ndarray of shape (n, *input_shape), a torch.utils.data.Dataset, a DataLoader or "
         "an iterable of batches")


def streams(data: Any) -> bool:
    """Whether :func:`vaefunc.train` streams ``data``: a Dataset, or an iterable other than an array or str."""
    if isinstance(data, (Tensor, np.ndarray, str, bytes, Mapping)):
        return False
    return isinstance(data, (Dataset, Iterable))


class Examples:
    """A map-style Dataset read by index: step i reads the rows vaefunc's shuffle gives it.

    ``shape`` (n, d), ``device`` and ``dtype`` are what :class:`vaefunc.feed.Feed`
    reads of a tensor (its shuffle and noise draws), so the Feed's draws serve it unchanged.
    """

    def __init__(self, dataset: Dataset, *, d: int, device: torch.device, dtype: torch.dtype, n_classes: int,
                 item_labels: bool, likelihood: str):  # fmt: skip
        self.dataset, self.n_classes, self.item_labels, self.likelihood = dataset, n_classes, item_labels, likelihood
        self.shape, self.device, self.dtype, self.epoch = (len(dataset), d), device, dtype, 0  # type: ignore[arg-type]  # map-style: sized

    def start(self, epoch: int) -> None:
        self.epoch = epoch

    def read(self, rows: Tensor, step: int) -> tuple[Tensor, Tensor | None]:
        """rows (b,) or (m, b), on the CPU -> x (..., b, d) and the items' labels or None, on the host, checked."""
        flat = rows.reshape(-1).tolist()
        fetch = getattr(self.dataset, "__getitems__", None)  # a batched fetch, where the Dataset has one
        items = fetch(flat) if fetch is not None else [self.dataset[j] for j in flat]
        where = f"(epoch {self.epoch + 1}, step {step + 1})"
        parts = [split(item, "each example of the Dataset") for item in items]
        x = stacked([p[0] for p in parts], self.shape[1], flat)
        values(x, self.likelihood, f"data {where}")
        x = x.reshape(*rows.shape, self.shape[1])
        if not self.item_labels:
            return x, None
        if any(p[1] is None for p in parts):
            j = flat[next(i for i, p in enumerate(parts) if p[1] is None)]
            raise ValueError(f"data[{j}] has no label; a conditional model needs every example as an (x, y) pair")
        ys = torch.stack([torch.as_tensor(p[1]) for p in parts])
        return x, labels(ys, self.n_classes, f"the labels {where}").reshape(*rows.shape, *ys.shape[1:])


class Batches:
    """A DataLoader or re-iterable of batches, read in its own order: step i takes its i-th batch.

    The first batch was read up front (to check it); the first epoch's pass
    goes on from it unless the loader has ``set_epoch``. Reading a step behind
    the pass (the replay that finds a non-finite step) starts a new pass.
    """

    def __init__(self, data: Iterable, *, steps: int, batch_size: int, d: int, device: torch.device,
                 dtype: torch.dtype, n_classes: int, likelihood: str, first: tuple[Iterator, Any]):  # fmt: skip
        self.data, self.batch_size, self.n_classes, self.likelihood = data, batch_size, n_classes, likelihood
        self.shape, self.device, self.dtype, self.epoch = (steps * batch_size, d), device, dtype, 0
        self.item_labels = n_classes > 0
        self._peeked: tuple[Iterator, Any] | None = first
        self._pass: Iterator = iter(())
        self._held: list = []  # a batch read but not yet taken (the peeked one)
        self._pos = 0  # the step the pass's next batch is for

    def start(self, epoch: int) -> None:
        """A new pass for ``epoch`` (the peeked one where the loader takes no ``set_epoch``)."""
        self.epoch = epoch
        peeked, self._peeked = self._peeked, None
        if peeked is not None and not _epoch_setters(self.data):
            self._pass, self._held, self._pos = peeked[0], [peeked[1]], 0
            return
        self._restart()

    def _restart(self) -> None:
        for owner in _epoch_setters(self.data):
            owner.set_epoch(self.epoch)
        self._pass, self._held, self._pos = iter(self.data), [], 0

    def read(self, rows: Tensor, step: int) -> tuple[Tensor, Tensor | None]:
        """Step ``step``'s batch (``rows``, vaefunc's shuffle, is not used): x (b, d), labels or None, checked."""
        del rows
        if step < self._pos:
            self._restart()
        while self._pos < step:  # a resumed epoch: pass the batches already trained
            self._take()
        return self.checked(self._take(), f"(epoch {self.epoch + 1}, step {step + 1})")

    def _take(self) -> Any:
        if self._held:
            batch = self._held.pop()
        else:
            try:
                batch = next(self._pass)
            except StopIteration:
                steps = self.shape[0] // self.batch_size
                raise ValueError(f"the data ran out after {self._pos} batches in epoch {self.epoch + 1}; an epoch "
                                 f"takes {steps} (its length said so)") from None  # fmt: skip
        self._pos += 1
        return batch

    def checked(self, batch: Any, where: str) -> tuple[Tensor, Tensor | None]:
        """A batch as x (b, d) and labels (b,) or (b, n) or None, on the host, checked."""
        x, y = split(batch, "each batch")
        x = floating(x, f"data {where}")
        b, d = self.batch_size, self.shape[1]
        if x.ndim < 1 or x.shape[0] != b:
            got = x.shape[0] if x.ndim else "no"
            raise ValueError(f"every batch must hold batch_size={b} examples (vaefunc does not re-batch; a "
                             f"DataLoader's last partial batch is dropped); the batch {where} holds {got}")  # fmt: skip
        if math.prod(x.shape[1:]) != d:
            raise ValueError(f"the batch {where} must be (b, *input_shape) with {d} features per example to match the "
                             f"params; got {tuple(x.shape)}")  # fmt: skip
        x = x.reshape(b, d)
        values(x, self.likelihood, f"data {where}")
        if not self.item_labels:
            return x, None
        if y is None:
            raise ValueError(f"these params are conditional on {self.n_classes} classes: every batch must be an "
                             f"(x, y) pair; the batch {where} has no labels")  # fmt: skip
        return x, labels(torch.as_tensor(y), self.n_classes, f"the labels {where}")


class StreamFeed(Feed):
    """A :class:`vaefunc.feed.Feed` over :class:`Examples` or :class:`Batches`: read on the host, copied per step.

    It takes the Feed's arguments, with the source in place of x. Its draws are
    the Feed's (a Batches source leaves the shuffle unused), the rows moved to
    the host once an epoch.
    """

    def __init__(self, x: Examples | Batches, y: Tensor | None, **kwargs: Any):
        super().__init__(x, y, **kwargs)  # type: ignore[arg-type]
        self.source = x

    def draw(self, epoch: int) -> Draws:
        draws = super().draw(epoch)
        self.source.start(epoch)
        return draws._replace(perm=draws.perm.cpu())  # a sync once an epoch: the rows are read on the host

    def batch(self, draws: Draws, i: int) -> Batch:
        """Step i's batch, read, checked and copied to the device; then binarized as a tensor's would be."""
        idx = draws.perm[..., i, :]
        x, y = self.source.read(idx, i)
        x = x.to(device=self.x.device, dtype=self.x.dtype)
        if self.binarize == "static":
            x = (x > 0.5).to(x.dtype)
        elif self.binarize == "dynamic":
            x = self._binarized(x)
        if self.y is not None:
            y = self.y[idx.to(self.y.device)]
        elif y is not None:
            y = one_hot(y.to(self.x.device), self.source.n_classes, self.x.dtype)
        eps = draws.eps[i] if self.shared else draws.eps[:, i]
        return Batch(x, eps, draws.beta[i], draws.capacity[i], y)

    def skip(self, draws: Draws, steps: int) -> None:
        """Advance the binarize streams past ``steps`` batches (their draws depend on the shape only)."""
        if self.binarize == "dynamic":
            zeros = torch.zeros(*draws.perm.shape[:-2], self.batch_size, self.x.shape[1], dtype=self.x.dtype,
                                device=self.x.device)  # fmt: skip
            for _ in range(steps):
                self._binarized(zeros)

    def template(self) -> Batch:
        """A batch of zeros with the shapes of every step's (nothing is read)."""
        lead = [] if self.shared else [len(self.streams)]
        per_step = [] if self.members is None else [self.members]
        kw: dict[str, Any] = {"dtype": self.x.dtype, "device": self.x.device}
        k = self.source.n_classes
        y = torch.zeros(*lead, self.batch_size, k, **kw) if k else None
        x, eps = torch.zeros(*lead, self.batch_size, self.x.shape[1], **kw), torch.zeros(*lead, *self.eps_shape, **kw)
        return Batch(x, eps, torch.zeros(per_step, **kw), torch.zeros(per_step, **kw), y)


def source(data: Any, model: Any, *, batch_size: int, seeds: int, labels_given: bool, device: torch.device,
           dtype: torch.dtype) -> Examples | Batches:  # fmt: skip
    """Check streamed ``data`` before any step and wrap it: :class:`Examples` or :class:`Batches`.

    Args:
        data: a map-style Dataset, a DataLoader or a re-iterable of batches.
        model: the :class:`vaefunc.VAE` spec.
        seeds: how many seeds the run has (an ensemble's own streams shuffle per model).
        labels_given: whether ``labels=`` came with the data (a Dataset's only).
    """
    if isinstance(data, IterableDataset):
        raise TypeError("an IterableDataset yields examples, not batches: wrap it in "
                        f"DataLoader(dataset, batch_size={batch_size}) (or pass a map-style Dataset)")  # fmt: skip
    if model.semi_supervised and not (isinstance(data, Dataset) and labels_given):
        raise ValueError("a semi-supervised model builds each epoch from its labelled and unlabelled examples, which "
                         "it must know up front: stream a map-style Dataset with labels= (n,) beside it (-1 for an "
                         "unlabelled example), or pass the data as a tensor")  # fmt: skip
    kw = {"d": model.data_dim, "device": device, "dtype": dtype, "n_classes": model.n_classes,
          "likelihood": model.likelihood}  # fmt: skip
    if isinstance(data, Dataset):
        return _examples(data, batch_size, labels_given, kw)
    if labels_given:
        raise ValueError("labels= goes with a tensor or a map-style Dataset; a DataLoader's (or iterable's) "
                         "batches carry their labels as (x, y) pairs")  # fmt: skip
    if seeds > 1:
        raise ValueError(f"{seeds} seeds give each model its own shuffle, which a DataLoader (or iterable) of one "
                         "order cannot: pass one seed (every model sees the loader's batches), or a map-style Dataset")
    return _batches(data, batch_size, kw)


def _examples(dataset: Dataset, batch_size: int, labels_given: bool, kw: dict[str, Any]) -> Examples:
    n = _length(dataset, "a map-style Dataset")
    if n == 0:
        raise ValueError("data is empty: the Dataset has 0 examples")
    if batch_size > n:
        raise ValueError(f"batch_size must be at most the number of examples ({n}); got {batch_size}")
    x0, y0 = split(dataset[0], "each example of the Dataset")
    values(example(x0, kw["d"], "data[0]")[None], kw["likelihood"], "data[0]")
    k = kw["n_classes"]
    item_labels = bool(k) and not labels_given
    if item_labels:
        if y0 is None:
            raise ValueError(f"these params are conditional on {k} classes (init(..., n_classes={k})): each example "
                             "of the Dataset must be an (x, y) pair, or pass labels=")  # fmt: skip
        labels(torch.as_tensor(y0)[None], k, "data[0]'s label")
    return Examples(dataset, item_labels=item_labels, **kw)


def _batches(data: Any, batch_size: int, kw: dict[str, Any]) -> Batches:
    if isinstance(data, Iterator):
        raise TypeError(f"data is an iterator ({type(data).__name__}), which can be read only once; train reads the "
                        "data once an epoch: pass a list of batches, a DataLoader, or an object whose __iter__ "
                        "starts a new pass")  # fmt: skip
    if isinstance(data, DataLoader) and data.batch_size is not None and data.batch_size != batch_size:
        raise ValueError(f"the DataLoader's batch_size is {data.batch_size}, train's batch_size {batch_size}: "
                         f"vaefunc does not re-batch; make them equal")  # fmt: skip
    it = iter(data)
    first = next(it, None)
    if first is None:
        raise ValueError("data is empty: it yields no batches")
    split(first, "each batch", data)  # a clear TypeError for data of another kind (a list of lists)
    steps = _steps(data, batch_size)
    src = Batches(data, steps=steps, batch_size=batch_size, first=(it, first), **kw)
    src.checked(first, "(its first batch)")
    return src


def _steps(data: Any, batch_size: int) -> int:
    """Full batches an epoch: a batching DataLoader's examples // batch_size, else the data's length
    (a list's last batch may be short: it is dropped)."""
    if isinstance(data, DataLoader) and data.batch_size is not None:
        examples = data.dataset if isinstance(data.dataset, IterableDataset) else data.sampler
        n = _length(examples, "a DataLoader's dataset (or sampler)")
        if batch_size > n:
            raise ValueError(f"batch_size must be at most the number of examples ({n}); got {batch_size}")
        return n // batch_size
    steps = _length(data, "an iterable of batches")
    if isinstance(data, Sequence):
        sizes = [_rows(batch) for batch in data]
        wrong = [j for j, s in enumerate(sizes) if s != batch_size and not (j == steps - 1 and s < batch_size)]
        if wrong:
            raise ValueError(f"every batch must hold batch_size={batch_size} examples (the last may hold fewer: it "
                             f"is dropped); batch {wrong[0]} holds {sizes[wrong[0]]}")  # fmt: skip
        steps -= sizes[-1] < batch_size
        if steps == 0:
            raise ValueError(f"batch_size must be at most the number of examples ({sizes[-1]}); got {batch_size}")
    return steps


def _rows(batch: Any) -> int:
    x, _ = split(batch, "each batch")
    return x.shape[0] if isinstance(x, (Tensor, np.ndarray)) and x.ndim else 0


def _length(data: Any, what: str) -> int:
    try:
        return len(data)
    except TypeError:
        raise TypeError(f"{what} needs __len__: train sets an epoch's steps from it (the progress bar, lr "
                        f"schedules and resume count them); got {type(data).__name__} without one") from None


def _epoch_setters(data: Any) -> list[Any]:
    """The loader, its sampler and its batch sampler, those of them that have ``set_epoch`` (each once)."""
    batch_sampler = getattr(data, "batch_sampler", None)
    owners = [data, getattr(data, "sampler", None), batch_sampler, getattr(batch_sampler, "sampler", None)]
    found: list[Any] = []
    for owner in owners:
        if owner is not None and all(owner is not f for f in found) and callable(getattr(owner, "set_epoch", None)):
            found.append(owner)
    return found


def split(item: Any, what: str, data: Any = None) -> tuple[Any, Any]:
    """An example or batch as (x, y or None): x itself, (x,) or (x, y), x a tensor or array."""
    if isinstance(item, (Tensor, np.ndarray)):
        return item, None
    if isinstance(item, (tuple, list)) and len(item) in (1, 2) and isinstance(item[0], (Tensor, np.ndarray)):
        return item[0], (item[1] if len(item) == 2 else None)
    inner = f" of {len(item)} {type(item[0]).__name__}s" if isinstance(item, (tuple, list)) and item else ""
    if data is not None:
        raise TypeError(f"data must be {KINDS} (each batch a tensor or an (x, y) pair); got {type(data).__name__} "
                        f"(its first batch is a {type(item).__name__}{inner})")  # fmt: skip
    raise TypeError(f"{what} must be a tensor or array x, or an (x, y) pair; got a {type(item).__name__}{inner}")


def floating(x: Any, where: str) -> Tensor:
    """A tensor or array as a floating-point tensor (the data's scale is the user's: ints are refused)."""
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        raise TypeError(f"data must be floating point (scale images to [0, 1]); got dtype {x.dtype} in {where}")
    return x


def stacked(xs: list[Any], d: int, rows: list[int]) -> Tensor:
    """Examples stacked as (B, d), checked: one stack, then each example only if the whole fails a check."""
    try:
        x = torch.stack([torch.as_tensor(v) for v in xs])
    except (RuntimeError, TypeError, ValueError):  # shapes that differ, or not numbers
        x = None
    if x is not None and x.is_floating_point() and math.prod(x.shape[1:]) == d:
        return x.reshape(len(xs), d)
    return torch.stack([example(v, d, f"data[{j}]") for v, j in zip(xs, rows)])


def example(x: Any, d: int, where: str) -> Tensor:
    """One example as (d,), checked: floating point, d features."""
    x = floating(x, where)
    if math.prod(x.shape) != d:
        raise ValueError(f"each example must have {d} features to match the params; got shape {tuple(x.shape)} "
                         f"({math.prod(x.shape)} features) in {where}")  # fmt: skip
    return x.reshape(d)


def values(x: Tensor, likelihood: str, where: str) -> None:
    """Finite, and in [0, 1] for the (continuous) Bernoulli likelihood: the checks a tensor gets once, per batch.

    One ``aminmax`` pass (NaN and inf reach the min or max); the messages are
    those of :func:`vaefunc._values.finite` and :func:`vaefunc._values.unit_interval`.
    """
    if not x.numel():
        return
    lo, hi = (float(v) for v in torch.aminmax(x))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        _values.finite(where, x)
    if likelihood in UNIT_INTERVAL and (lo < 0.0 or hi > 1.0):
        _values.unit_interval(where, x, likelihood)


def labels(y: Tensor, n_classes: int, where: str) -> Tensor:
    """A batch's labels, ints (..., b) or one-hot rows (..., b, n), checked as ``labels=`` would be: (B,) or (B, n)."""
    if y.is_floating_point():
        if y.ndim == 0 or y.shape[-1] != n_classes:
            raise ValueError(f"{where} must be ints or one-hot rows of {n_classes}; got floats shaped {tuple(y.shape)}")
        flat = y.reshape(-1, n_classes)
    else:
        flat = y.reshape(-1)
    return _check.labels(flat, flat.shape[0], n_classes, name=where)
