"""MNIST / Fashion-MNIST IDX files: ``train-images-idx3-ubyte[.gz]`` and friends.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number
of dimensions), the dimensions as big-endian uint32, then the data, big-endian.
Images are 3-d (magic 0x00000803 for uint8), labels 1-d (0x00000801).
"""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path

import numpy as np

from ._base import Dataset, concat, DatasetError, check_split, holdout, read_bytes, take, to_images, to_labels

MAX_IDX_DIMS = 8
"""The most dimensions an IDX file read may have (the format allows 255; numpy arrays take at most 32 or 64)."""
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# train-images-idx3-ubyte, t10k-labels.idx1-ubyte.gz, test-images-idx3-ubyte ...
NAME = re.compile(r"^(?P<split>train|t10k|test)-(?P<kind>images|labels)[-.]idx(?P<ndim>[13])-ubyte(\.gz)?$")
SPLIT_PREFIX = {"train": ("train",), "test": ("t10k", "test")}


def is_idx_name(path: Path) -> bool:
    """True for names like ``train-images-idx3-ubyte[.gz]`` or any ``*-ubyte[.gz]``."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return bool(NAME.match(path.name)) or name.endswith("-ubyte")


def read_idx(path: str | Path, *, ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or not) as a NumPy array.

    Args:
        ndim: the number of dimensions expected (3 for images, 1 for labels).

    Returns:
        The array, in native byte order, e.g. uint8 (n, 28, 28) for images.

    Raises:
        FileNotFoundError: no such file.
        DatasetError: wrong magic number, an unknown type code, more than
            :data:`MAX_IDX_DIMS` dimensions, dims whose product overflows or
            outgrows the file, or a file shorter or longer than its header says.

    Example:
        >>> read_idx("train-images-idx3-ubyte.gz", ndim=3).shape
        (60000, 28, 28)
    """
    path = Path(path)
    raw = read_bytes(path)
    if len(raw) < 4:
        raise DatasetError(f"{path}: truncated IDX file: {len(raw)} bytes, not even a magic number")
    magic = int.from_bytes(raw[:4], "big")
    code, nd = raw[2], raw[3]
    if raw[:2] != b"\0\0" or nd == 0 or (ndim is not None and nd != ndim):
        want = f"0x{0x0800 + (ndim or 3):08x}" if ndim is not None else "0x0000TTNN (TT a type code, NN the rank)"
        raise DatasetError(f"{path}: wrong magic number 0x{magic:08x} for an IDX{_kind(ndim)} file; expected {want}")
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02x} ({np.dtype(t).name})" for c, t in IDX_TYPES.items())
        raise DatasetError(f"{path}: unknown IDX type code 0x{code:02x} (magic number 0x{magic:08x}); "
                           f"expected one of {known}")  # fmt: skip
    if nd > MAX_IDX_DIMS:
        raise DatasetError(f"{path}: an IDX file of {nd} dimensions; vaefunc reads at most {MAX_IDX_DIMS} "
                           "(images are 3-d, labels 1-d)")  # fmt: skip
    header = 4 + 4 * nd
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX file: the header needs {header} bytes, the file has {len(raw)}")
    dims = struct.unpack(f">{nd}I", raw[4:header])
    if 0 in dims:
        raise DatasetError(f"{path}: an IDX file with a zero dimension {dims} holds no data")
    dtype = np.dtype(IDX_TYPES[code])
    count = math.prod(dims)  # a Python int: no overflow, however large the header's dims
    expected = header + count * dtype.itemsize
    if count >= 2**63 or expected > len(raw) * 2:
        raise DatasetError(f"{path}: corrupt IDX header: its dims {dims} ask for {count} values of {dtype.name}, "
                           f"{expected} bytes, far more than the file's {len(raw)}")  # fmt: skip
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "corrupt (trailing bytes)"
        raise DatasetError(
            f"{path}: {what} IDX file: its header says {dims} values of {dtype.name}, {expected} bytes in all; "
            f"the file has {len(raw)}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _kind(ndim: int | None) -> str:
    return {3: " images", 1: " labels"}.get(ndim, "") if ndim is not None else ""


def labels_path(images: Path) -> Path | None:
    """The labels file next to an images file (``images`` -> ``labels``, ``idx3`` -> ``idx1``), if present."""
    name = images.name.replace("images", "labels").replace("idx3", "idx1")
    candidate = images.with_name(name)
    return candidate if candidate != images and candidate.is_file() else None


def load_idx_file(path: Path, split: str = "train") -> Dataset:
    """One images file (and its labels file beside it, if any); split by :func:`holdout`."""
    check_split(split)
    images = to_images(read_idx(path, ndim=3), str(path))
    lp = labels_path(path)
    labels = to_labels(read_idx(lp, ndim=1), images.shape[0], str(lp)) if lp is not None else None
    ds = Dataset(images, labels)
    return take(ds, holdout(images.shape[0], split))


def idx_files(folder: Path) -> dict[tuple[str, str], Path]:
    """The IDX files of a folder by (split prefix, "images" or "labels")."""
    found: dict[tuple[str, str], Path] = {}
    for p in sorted(folder.iterdir()):
        m = NAME.match(p.name)
        if m and p.is_file():
            found.setdefault((m["split"], m["kind"]), p)
    return found


def load_idx_folder(folder: Path, split: str = "train") -> Dataset:
    """A folder holding the MNIST (or Fashion-MNIST) IDX files.

    "train" reads ``train-images-idx3-ubyte[.gz]`` and its labels, "test" the
    ``t10k-`` (or ``test-``) pair, "all" both, train first.
    """
    check_split(split)
    found = idx_files(folder)
    parts = []
    for s in ("train", "test") if split == "all" else (split,):
        images_path = next((found[(p, "images")] for p in SPLIT_PREFIX[s] if (p, "images") in found), None)
        if images_path is None:
            names = " or ".join(f"{p}-images-idx3-ubyte[.gz]" for p in SPLIT_PREFIX[s])
            raise FileNotFoundError(f"{folder}: no {s} images: expected a file named {names}")
        labels_file = next((found[(p, "labels")] for p in SPLIT_PREFIX[s] if (p, "labels") in found), None)
        images = to_images(read_idx(images_path, ndim=3), str(images_path))
        labels = None
        if labels_file is not None:
            labels = to_labels(read_idx(labels_file, ndim=1), images.shape[0], str(labels_file))
        parts.append(Dataset(images, labels))
    if len(parts) == 1:
        return parts[0]
    return concat(parts)
