"""The dataset type, its errors, and the conversions every loader shares.

Axis letters: n examples, c channels, h height, w width.
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from .images import ImageFiles

SPLITS = ("train", "test", "all")
BINARIZE = (None, "static", "dynamic")
HOLDOUT = 0.1
"""Sources without a split of their own keep this fraction (a fixed, seeded choice) as their test split."""


class Dataset(NamedTuple):
    """Images and their labels: ``x, y = vaefunc.data.load("mnist5k")``.

    Attributes:
        images: (n, c, h, w) float32 in [0, 1], on the CPU (or, from a folder of
            images opened to stream, a :class:`vaefunc.data.ImageFiles` of that shape).
        labels: (n,) int64, or None when the source has no labels.
    """

    images: Tensor | ImageFiles
    labels: Tensor | None


def concat(parts: list[Dataset]) -> Dataset:
    """Several splits' in-memory images as one Dataset, with labels where every split has them."""
    images = [p.images for p in parts if isinstance(p.images, Tensor)]
    labels = [p.labels for p in parts if p.labels is not None]
    if len(images) != len(parts):
        raise TypeError("concat joins images in memory (tensors), not image files")
    return Dataset(torch.cat(images), torch.cat(labels) if len(labels) == len(parts) else None)


class DatasetError(ValueError):
    """A data file is truncated, corrupt, or not in the format its name says."""


class UnsafePickleError(DatasetError):
    """A pickle asked to run code other than rebuilding NumPy arrays."""


def check_split(split: object, allowed: tuple[str, ...] = SPLITS) -> str:
    """Raise a ValueError naming the allowed splits unless ``split`` is one."""
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed}; got {split!r}")
    return split  # type: ignore[return-value]


DEFAULT_MAX_BYTES = 8 * 2**30
"""The most bytes a data file may hold or declare, decompressed: 8 GiB; the environment variable
``VAEFUNC_MAX_DATA_BYTES`` overrides it (full MNIST as float32 is 0.2 GiB)."""
BOMB_RATIO, BOMB_AFTER = 200, 64 * 2**20
"""A gzip stream that has expanded more than BOMB_RATIO-fold once past BOMB_AFTER bytes is a
decompression bomb (image data compresses 3 to 30-fold)."""


def max_bytes() -> int:
    """The size limit in bytes: ``VAEFUNC_MAX_DATA_BYTES`` or :data:`DEFAULT_MAX_BYTES`."""
    return _bytes_from_env("VAEFUNC_MAX_DATA_BYTES", DEFAULT_MAX_BYTES, minimum=1)


def _bytes_from_env(name: str, default: int, *, minimum: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        what = "a positive number" if minimum == 1 else f"a number >= {minimum}"
        raise ValueError(f"{name} must be {what} of bytes; got {text!r}")
    return value


DEFAULT_STREAM_BYTES = 2**30
"""``vaefunc train`` streams a folder of images from disk when its training images would decode to
more than this many bytes (float32): 1 GiB, about 340,000 28x28 gray images; the environment variable
``VAEFUNC_STREAM_BYTES`` overrides it."""


def stream_bytes() -> int:
    """The streaming threshold in bytes: ``VAEFUNC_STREAM_BYTES`` or :data:`DEFAULT_STREAM_BYTES`."""
    return _bytes_from_env("VAEFUNC_STREAM_BYTES", DEFAULT_STREAM_BYTES, minimum=0)


def check_size(nbytes: int, path: Path | str, what: str) -> None:
    """Refuse data that would take more than :func:`max_bytes`, before allocating it."""
    limit = max_bytes()
    if nbytes > limit:
        raise DatasetError(f"{path}: {what} {nbytes / 2**30:.3g} GiB, over the {limit / 2**30:.3g} GiB limit "
                           "(set VAEFUNC_MAX_DATA_BYTES to allow more)")  # fmt: skip


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when its name ends in ``.gz``, within :func:`max_bytes`."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    check_size(path.stat().st_size, path, "the file holds")
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        return _gunzip(path)
    except (EOFError, OSError, zlib.error) as e:
        raise DatasetError(f"{path}: truncated or corrupt gzip file ({e})") from e


def _gunzip(path: Path) -> bytes:
    """Decompress in chunks, stopping at the size limit or at a bomb's expansion ratio."""
    out, read, written, limit = [], 0, 0, max_bytes()
    with open(path, "rb") as f:
        inflate = zlib.decompressobj(wbits=31)
        while chunk := f.read(2**16):
            read += len(chunk)
            data = chunk
            while data:
                piece = inflate.decompress(data, 2**24)
                out.append(piece)
                written += len(piece)
                if written > limit or (written > BOMB_AFTER and written > BOMB_RATIO * read):
                    raise DatasetError(f"{path}: refusing a gzip stream that expands {written / read:.0f}-fold "
                                       f"({read} bytes to more than {written}): a decompression bomb or more than "
                                       f"the {limit / 2**30:.3g} GiB limit (VAEFUNC_MAX_DATA_BYTES)")  # fmt: skip
                data = inflate.unconsumed_tail
                if inflate.eof and inflate.unused_data:  # a further gzip member
                    data, inflate = inflate.unused_data, zlib.decompressobj(wbits=31)
        if not inflate.eof:
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")
    return b"".join(out)


def to_images(array: np.ndarray, source: str) -> Tensor:
    """An array of images as float32 (n, c, h, w) in [0, 1].

    Accepted layouts: (n, d) (a square d becomes one (1, s, s) channel, any
    other d a (1, 1, d) row), (n, h, w), (n, c, h, w) and (n, h, w, c) with c in
    {1, 3} (channels first when both read so). uint8 is divided by 255, uint16 by 65535, bool becomes 0/1;
    float arrays must already lie in [0, 1].
    """
    a = np.asarray(array)
    if a.dtype == np.bool_:
        a = a.astype(np.float32)
    elif a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        a = a.astype(np.float32) / 65535.0
    elif a.dtype.kind == "f":
        a = a.astype(np.float32)
        if a.size and not np.isfinite(a).all():
            raise DatasetError(f"{source}: images contain NaN or inf")
        if a.size and (a.min() < 0.0 or a.max() > 1.0):
            raise DatasetError(
                f"{source}: float images must lie in [0, 1]; got values in [{a.min():g}, {a.max():g}] "
                "(divide 8-bit intensities by 255)"
            )
    else:
        raise DatasetError(f"{source}: images must be uint8, uint16, bool or float; got dtype {a.dtype}")
    if a.ndim == 2:
        n, d = a.shape
        s = math.isqrt(d)
        a = a.reshape(n, 1, s, s) if s * s == d else a.reshape(n, 1, 1, d)
    elif a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4:
        if a.shape[1] not in (1, 3) and a.shape[3] in (1, 3):
            a = a.transpose(0, 3, 1, 2)
        elif a.shape[1] not in (1, 3):
            raise DatasetError(f"{source}: expected (n, c, h, w) or (n, h, w, c) with c in (1, 3); got {a.shape}")
    else:
        raise DatasetError(f"{source}: expected images shaped (n, d), (n, h, w) or (n, c, h, w); got {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a))


def to_labels(array: np.ndarray | None, n: int, source: str) -> Tensor | None:
    """Integer class labels as int64 (n,), checked against the number of images."""
    if array is None:
        return None
    a = np.asarray(array)
    if a.ndim != 1 or a.dtype.kind not in "iub":
        raise DatasetError(f"{source}: labels must be a 1-d integer array; got dtype {a.dtype} and shape {a.shape}")
    if a.shape[0] != n:
        raise DatasetError(f"{source}: labels do not match images in count: {n} images, {a.shape[0]} labels")
    if a.size and (int(a.min()) < 0 or int(a.max()) >= 2**31 - 1):
        raise DatasetError(f"{source}: labels must be class indices >= 0 (and below 2**31 - 1); got values in "
                           f"[{int(a.min())}, {int(a.max())}]")  # fmt: skip
    return torch.from_numpy(a.astype(np.int64))


def holdout(n: int, split: str) -> Tensor:
    """Indices of ``split`` for a source without a split of its own.

    A fixed permutation (seed 0) puts ``round(HOLDOUT * n)`` examples (at least
    one when n >= 2) in "test" and the rest in "train"; both keep the source's
    order. "all" is every index.
    """
    if split == "all":
        return torch.arange(n)
    n_test = max(1, round(HOLDOUT * n)) if n >= 2 else 0
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    idx = perm[:n_test] if split == "test" else perm[n_test:]
    return idx.sort().values


def take(ds: Dataset, idx: Tensor) -> Dataset:
    """The examples at ``idx`` (of a tensor, or of images not yet decoded: ``images.take(idx)``)."""
    images = ds.images[idx] if isinstance(ds.images, Tensor) else ds.images.take(idx)
    return Dataset(images, None if ds.labels is None else ds.labels[idx])


def binarize(images: Tensor, mode: str | None, *, seed: int = 0) -> Tensor:
    """Binarize intensities in [0, 1]; returns a new tensor of the same shape and dtype.

    Args:
        images: (n, ...) in [0, 1].
        mode: None (unchanged), ``"static"`` (``images > 0.5``, exactly what
            ``train(binarize="static")`` does) or ``"dynamic"`` (one Bernoulli
            sample of the intensities drawn with ``seed``: the fixed stochastic
            binarization of a test set; ``train(binarize="dynamic")`` instead
            draws a fresh sample at every step).
        seed: seeds the local generator of ``"dynamic"``.

    Example:
        >>> binarize(torch.tensor([0.2, 0.7]), "static")
        tensor([0., 1.])
    """
    if mode not in BINARIZE:
        raise ValueError(f"binarize must be one of {BINARIZE}; got {mode!r}")
    if mode is None:
        return images.clone()
    if mode == "static":
        return (images > 0.5).to(images.dtype)
    gen = torch.Generator(device=images.device).manual_seed(seed)
    return torch.bernoulli(images, generator=gen)


def keep_labels(labels: Tensor, per_class: int, *, seed: int = 0) -> Tensor:
    """Labels for semi-supervised training: ``per_class`` kept in every class, the rest -1 (unlabelled).

    The kept examples are a fixed, seeded choice, balanced over the classes: a
    seeded permutation of the examples, then the first ``per_class`` of each
    class in it. A class with fewer examples keeps them all.

    Example:
        >>> y = keep_labels(torch.tensor([0, 1, 0, 1, 0]), 1, seed=0)
        >>> int((y >= 0).sum())
        2
    """
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise TypeError(f"labels must be an integer tensor (n,); got {got}")
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a positive int; got {per_class!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**63 - 1:
        raise ValueError(f"seed must be an int >= 0 (at most 2**63 - 1); got {seed!r}")
    perm = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(seed))
    kept = torch.cat([perm[labels[perm] == c][:per_class] for c in torch.unique(labels).tolist()])
    out = torch.full_like(labels, -1)
    out[kept] = labels[kept]
    return out
