"""NumPy ``.npy`` and ``.npz`` files (read with ``allow_pickle=False``).

A ``.npz`` with ``x_train`` and ``x_test`` (and ``y_train``, ``y_test``: the
layout of Keras' ``mnist.npz``) gives those splits. Otherwise its images are
the array named ``images``, ``x``, ``data`` or ``arr_0`` (or its only array),
its labels the one named ``labels``, ``y``, ``targets`` or ``arr_1``, and the
split is the fixed hold-out of :func:`vaefunc.data.holdout`. A ``.npy`` holds
images only.
"""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import numpy as np

from ._base import Dataset, concat, DatasetError, check_size, check_split, holdout, take, to_images, to_labels

IMAGE_KEYS = ("images", "x", "data", "arr_0")
LABEL_KEYS = ("labels", "y", "targets", "arr_1")


def _read(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    check_size(path.stat().st_size, path, "the file holds")
    raw = path.read_bytes()
    try:
        if path.suffix == ".npy":
            _check_header(io.BytesIO(raw), str(path), len(raw))
        # From memory: np.load leaks its file handle when a zip is corrupt.
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DatasetError(f"{path}: truncated or corrupt {path.suffix} file ({type(e).__name__}: {e})") from e


def _check_header(f, source: str, available: int | None) -> None:
    """The array an .npy header declares must fit the size limit (and, uncompressed, the file)."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    nbytes = math.prod(shape) * dtype.itemsize
    check_size(nbytes, source, f"the header declares a {shape} {dtype} array of")
    if available is not None and nbytes > available:
        raise DatasetError(f"{source}: truncated .npy file: the header declares {nbytes} bytes of data, "
                           f"the file has {available}")  # fmt: skip


def _array(npz, key: str, path: Path) -> np.ndarray:
    info = npz.zip.getinfo(f"{key}.npy") if f"{key}.npy" in npz.zip.namelist() else None
    if info is not None:
        check_size(info.file_size, f"{path} ({key})", "the member declares")
        with npz.zip.open(info) as member:
            try:
                _check_header(member, f"{path} ({key})", None)
            except ValueError as e:
                raise DatasetError(f"{path}: cannot read array {key!r} ({e})") from e
    try:
        return npz[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise DatasetError(f"{path}: cannot read array {key!r} ({type(e).__name__}: {e})") from e


def load_npy(path: Path, split: str = "train") -> Dataset:
    """A ``.npy`` array of images; split by the fixed hold-out."""
    check_split(split)
    images = to_images(_read(path), str(path))
    return take(Dataset(images, None), holdout(images.shape[0], split))


def load_npz(path: Path, split: str = "train") -> Dataset:
    """A ``.npz`` archive of images and, optionally, labels (see the module docstring)."""
    check_split(split)
    with _read(path) as npz:
        keys = set(npz.files)
        names = npz.zip.namelist()
        if len(names) != len(set(names)):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise DatasetError(f"{path}: an .npz archive must name each array once; got {twice} more than once")
        if {"x_train", "x_test"} <= keys and any(k in keys for k in IMAGE_KEYS):
            raise DatasetError(f"{path}: the archive holds both layouts, x_train and x_test and "
                               f"{sorted(k for k in keys if k in IMAGE_KEYS)}; keep one")  # fmt: skip
        if {"x_train", "x_test"} <= keys:
            parts = []
            for s in ("train", "test") if split == "all" else (split,):
                images = to_images(_array(npz, f"x_{s}", path), f"{path} (x_{s})")
                y = _array(npz, f"y_{s}", path) if f"y_{s}" in keys else None
                parts.append(Dataset(images, to_labels(y, images.shape[0], f"{path} (y_{s})")))
            if len(parts) == 1:
                return parts[0]
            return concat(parts)
        image_key = next((k for k in IMAGE_KEYS if k in keys), None)
        if image_key is None and len(keys) == 1:
            image_key = next(iter(keys))
        if image_key is None:
            raise DatasetError(
                f"{path}: no images: expected an array named one of {IMAGE_KEYS} (or x_train and x_test); "
                f"got {sorted(keys)}"
            )
        images = to_images(_array(npz, image_key, path), f"{path} ({image_key})")
        label_key = next((k for k in LABEL_KEYS if k in keys and k != image_key), None)
        labels = None
        if label_key is not None:
            labels = to_labels(_array(npz, label_key, path), images.shape[0], f"{path} ({label_key})")
    return take(Dataset(images, labels), holdout(images.shape[0], split))
