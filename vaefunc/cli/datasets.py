"""The data a command reads: a run's (or the flags') data options, loaded and checked against a model."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import data as vdata
from ..spec import VAE
from .parser import DEFAULT_DATA, UsageError


def load(options: dict[str, Any], split: str, *, stream: bool = False) -> vdata.Dataset:
    """One split of the data the options name: ``{"name", "limit", "size", "color"}``.

    A folder of images decodes only the split's files; with ``stream``, one
    whose split would decode to more than :func:`vaefunc.data.stream_bytes`
    comes back not decoded (``images`` is a :class:`vaefunc.data.ImageFiles`,
    which :func:`vaefunc.train` streams).
    """
    kwargs: dict[str, Any] = {}
    name = options.get("name") or DEFAULT_DATA
    if _image_folder(name):
        kwargs["stream_above"] = vdata.stream_bytes() if stream else sys.maxsize
    size = options.get("size")
    if size:
        if len(size) > 2:
            raise UsageError(f"--size takes H or H W; got {list(size)}")
        kwargs["size"] = tuple(size) if len(size) == 2 else size[0]
    if options.get("color"):
        kwargs["color"] = options["color"]
    return vdata.load(name, split=split, limit=options.get("limit"), **kwargs)


def _image_folder(name: str) -> bool:
    """Whether ``name`` is a folder that :func:`vaefunc.data.load` reads as images."""
    path = Path(name)
    return name not in vdata.DATASETS and path.is_dir() and not vdata.idx_files(path) and vdata.has_images(path)


def streamed(ds: vdata.Dataset) -> bool:
    """Whether the split's images are read from disk as they are trained on (not a tensor)."""
    return not isinstance(ds.images, Tensor)


def with_flags(options: dict[str, Any], args: Any) -> dict[str, Any]:
    """A run's data options with the data flags given to a command on it (--data, --limit, --size, --color)."""
    flags = {"name": args.data, "limit": args.limit, "size": args.size, "color": args.color}
    return options | {k: v for k, v in flags.items() if v is not None}


def check_fits(model: VAE, ds: vdata.Dataset) -> None:
    """The data's images must be the model's input: as many features (an MLP), or the same shape (conv)."""
    shape = list(ds.images.shape[1:])
    if math.prod(shape) != model.data_dim or (model.arch == "conv" and shape != list(model.input_shape)):
        reads = f"{model.data_dim}" + (f" as {list(model.input_shape)}" if model.arch == "conv" else "")
        raise UsageError(f"the data's images are {shape} ({math.prod(shape)} features); the model reads {reads}")


def labels(model: VAE, ds: vdata.Dataset) -> Tensor | None:
    """The class of each example for a conditional model (None for an unconditional one), checked."""
    k = model.n_classes
    if not k:
        return None
    y = ds.labels
    if y is None:
        raise UsageError(f"the model is conditional on {k} classes (--n-classes), but the data has no labels")
    if y.ndim != 1:
        raise UsageError(f"--n-classes needs one class per example; the data's labels are {tuple(y.shape[1:])} each")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= k):
        raise UsageError(f"the data's labels run from {int(y.min())} to {int(y.max())}; the model has {k} classes "
                         f"(--n-classes {k}: labels 0 to {k - 1})")  # fmt: skip
    return y


def training_labels(model: VAE, ds: vdata.Dataset, options: dict[str, Any]) -> Tensor | None:
    """The training split's labels (:func:`labels`); with ``labels_per_class`` (--labels-per-class), only
    that many of each class kept and the rest -1, unlabelled (:func:`vaefunc.data.keep_labels`, seed 0)."""
    y, per_class = labels(model, ds), options.get("labels_per_class")
    return y if y is None or per_class is None else vdata.keep_labels(y, per_class, seed=0)


def check_classes(n_classes: int, splits: tuple[vdata.Dataset, ...]) -> None:
    """--n-classes must be the number of classes the training data's labels hold (0 to max)."""
    if not n_classes:
        return
    ys = [ds.labels for ds in splits if ds.labels is not None]
    if len(ys) != len(splits):
        raise UsageError(f"--n-classes {n_classes} needs labelled data; this data has no labels")
    if any(y.ndim != 1 for y in ys):
        shape = next(tuple(y.shape[1:]) for y in ys if y.ndim != 1)
        raise UsageError(f"--n-classes needs one class per example; the data's labels are {shape} each")
    found = 1 + max(int(y.max()) for y in ys if y.numel())
    if found != n_classes:
        raise UsageError(f"--n-classes {n_classes} does not match the data, whose labels hold {found} classes "
                         f"(0 to {found - 1})")  # fmt: skip


def binarized(ds: vdata.Dataset, mode: str | None, seed: int, device: torch.device) -> Tensor:
    """The images as the model is evaluated on them: thresholded, or one seeded Bernoulli sample."""
    return vdata.binarize(in_memory(ds), mode, seed=seed).to(device)


def in_memory(ds: vdata.Dataset) -> Tensor:
    """A split's images as one tensor (a folder opened to stream is decoded here)."""
    return ds.images if isinstance(ds.images, Tensor) else ds.images.decode()
