"""Datasets: ``vaefunc.data.load(name_or_path, split=..., binarize=...)`` -> :class:`Dataset`.

Every loader returns float32 images in [0, 1] shaped (n, c, h, w), on the CPU,
and int64 labels (n,) where the source has them (None otherwise); nothing is
downloaded. Names (offline, embedded; see :mod:`vaefunc.data.embedded`):
``"mnist5k"`` (the default of every command) and ``"digits"``; procedural:
``"dsprites"`` (``load("dsprites", n=...)``, :mod:`vaefunc.data.dsprites`, whose
labels are the (n, 5) factor indices). Paths:

- a folder of IDX files or one IDX file (MNIST, Fashion-MNIST: ``train-images-idx3-ubyte[.gz]``, ...);
- ``mnist.pkl.gz`` (read by a restricted unpickler that only rebuilds NumPy arrays);
- ``.npz`` / ``.npy`` arrays;
- a folder of PNG / JPEG images (``size=``, ``color=`` resize and convert them).

Splits are ``"train"``, ``"test"`` and ``"all"`` (and ``"valid"`` for
mnist.pkl.gz). A source without a split of its own (one file, an array, a
folder of images) keeps a fixed 10 % of its examples as "test".

To add a named dataset, add one entry to :data:`DATASETS`: a function
``fn(split="train", **options) -> Dataset``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from .. import _check
from ._base import (BINARIZE, HOLDOUT, SPLITS, Dataset, DatasetError, UnsafePickleError, binarize, holdout, keep_labels,
                    stream_bytes, take)
from .arrays import load_npy, load_npz
from .dsprites import load_dsprites
from .embedded import digits, mnist5k
from .idx import idx_files, is_idx_name, load_idx_file, load_idx_folder, read_idx
from .images import ImageFiles, has_images, is_image, load_image_folder, open_image_folder
from .pickled import SafeUnpickler, load_mnist_pkl, safe_loads

DATASETS: dict[str, Callable[..., Dataset]] = {
    "mnist5k": mnist5k,
    "digits": digits,
    "dsprites": load_dsprites,
}
"""Named datasets: name -> ``fn(split="train", **options) -> Dataset``."""


def load(
    name_or_path: str | os.PathLike,
    *,
    split: str = "train",
    binarize: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    **options,
) -> Dataset:
    """Load a named dataset or a file / folder as images in [0, 1].

    Args:
        name_or_path: a key of :data:`DATASETS` (``"mnist5k"``, ``"digits"``)
            or a path (formats in the module docstring).
        split: ``"train"``, ``"test"`` or ``"all"`` (mnist.pkl.gz: also ``"valid"``).
        binarize: None, ``"static"`` (``x > 0.5``) or ``"dynamic"`` (one
            Bernoulli sample drawn with ``seed``); see :func:`binarize`.
        limit: keep at most this many examples: a fixed random subset (seed 0),
            in the source's order.
        seed: seeds ``binarize="dynamic"``.
        **options: passed to the loader, e.g. ``size=(28, 28)``, ``color="gray"``
            for a folder of images (``stream_above=nbytes``: its images not
            decoded, a :class:`ImageFiles`, when they would take more).

    Returns:
        :class:`Dataset`: ``images`` (n, c, h, w) float32 in [0, 1] and
        ``labels`` (n,) int64 or None.

    Raises:
        ValueError: unknown name (the message lists the known ones), bad split,
            binarize or limit.
        FileNotFoundError: no such file or folder.
        DatasetError: truncated or corrupt file, wrong magic number, images of
            mixed sizes, labels that do not match the images in count.
        UnsafePickleError: a pickle that asks to run code.

    Example:
        >>> x, y = load("mnist5k", split="test")
        >>> x.shape, y.shape
        (torch.Size([1000, 1, 28, 28]), torch.Size([1000]))
    """
    if binarize not in BINARIZE:
        raise ValueError(f"binarize must be one of {BINARIZE}; got {binarize!r}")
    _check.seed(seed)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None; got {limit!r}")
    if not isinstance(split, str):
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    if isinstance(name_or_path, str) and name_or_path in DATASETS:
        ds = DATASETS[name_or_path](split=split, **options)
    elif isinstance(name_or_path, (str, os.PathLike)):
        ds = _load_path(Path(name_or_path), split, **options)
    else:
        raise TypeError(f"name_or_path must be a dataset name or a path; got {type(name_or_path).__name__}")
    if ds.images.shape[0] == 0:
        raise DatasetError(f"{name_or_path}: the {split!r} split is empty")
    if limit is not None and limit < ds.images.shape[0]:
        keep = torch.randperm(ds.images.shape[0], generator=torch.Generator().manual_seed(0))[:limit].sort().values
        ds = take(ds, keep)
    if binarize is not None:
        if not isinstance(ds.images, torch.Tensor):
            raise ValueError("binarize= needs the images decoded; images opened to stream are binarized by train's "
                             "binarize= as they are read")  # fmt: skip
        ds = Dataset(_binarize(ds.images, binarize, seed=seed), ds.labels)
    return ds


_binarize = binarize


def _load_path(path: Path, split: str, **options) -> Dataset:
    if not path.exists():
        if os.sep not in str(path) and not path.suffix:
            raise ValueError(f"unknown dataset {str(path)!r}: known names are {sorted(DATASETS)}, or give a path")
        raise FileNotFoundError(f"no such file or folder: {path} (known dataset names: {sorted(DATASETS)})")
    name = path.name.lower()
    if path.is_dir():
        if idx_files(path):
            return load_idx_folder(path, split, **options)
        if has_images(path):
            return load_image_folder(path, split, **options)
        raise DatasetError(
            f"{path}: no IDX files (train-images-idx3-ubyte[.gz], ...) and no images ({', '.join(('.png', '.jpg'))}) "
            "in this folder"
        )
    if name.endswith(".npz"):
        return load_npz(path, split, **options)
    if name.endswith(".npy"):
        return load_npy(path, split, **options)
    if name.endswith((".pkl", ".pkl.gz", ".pickle", ".pickle.gz")):
        return load_mnist_pkl(path, split, **options)
    if is_idx_name(path):
        return load_idx_file(path, split, **options)
    raise DatasetError(
        f"{path}: unsupported file type; expected a folder, an IDX file (*-ubyte[.gz]), mnist.pkl.gz, .npz or .npy"
    )


__all__ = [
    "BINARIZE",
    "DATASETS",
    "HOLDOUT",
    "SPLITS",
    "Dataset",
    "DatasetError",
    "ImageFiles",
    "SafeUnpickler",
    "UnsafePickleError",
    "binarize",
    "digits",
    "holdout",
    "is_image",
    "keep_labels",
    "load",
    "load_dsprites",
    "load_idx_file",
    "load_idx_folder",
    "load_image_folder",
    "load_mnist_pkl",
    "load_npy",
    "load_npz",
    "mnist5k",
    "open_image_folder",
    "read_idx",
    "safe_loads",
    "stream_bytes",
]
