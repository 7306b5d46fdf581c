"""A folder of PNG / JPEG images, read with Pillow.

Layouts:
- flat: ``folder/*.png``: no labels;
- one subfolder per class: ``folder/cat/*.png``, ``folder/dog/*.png``: the
  label is the index of the subfolder's name in sorted order;
- ``folder/train/`` and ``folder/test/`` (each flat or with class subfolders):
  those are the splits. Otherwise the split is the fixed hold-out of
  :func:`vaefunc.data.holdout`.

Files are read in sorted order. All images must share one size unless
``size`` is given; then each is resized (bilinear) to it.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset as TorchDataset

from ._base import Dataset, DatasetError, check_size, check_split, holdout, max_bytes, take, to_images, to_labels

SUFFIXES = (".png", ".jpg", ".jpeg")
COLORS = (None, "gray", "rgb")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SUFFIXES


def has_images(folder: Path) -> bool:
    """True if the folder, or any of its subfolders one or two levels down, holds an image."""
    return any(is_image(p) for pattern in ("*", "*/*", "*/*/*") for p in folder.glob(pattern))


def _size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(s, int) and s > 0 for s in hw):
        raise ValueError(f"size must be a positive int or (height, width); got {size!r}")
    return hw  # type: ignore[return-value]


def _listing(folder: Path) -> tuple[list[Path], list[str] | None]:
    """Image files of one folder and, for class subfolders, each file's class name."""
    flat = sorted(p for p in folder.iterdir() if is_image(p))
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and any(is_image(q) for q in p.iterdir()))
    if flat and classes:
        raise DatasetError(f"{folder}: holds both images and class subfolders ({classes}); use one layout")
    if flat:
        return flat, None
    files, names = [], []
    for c in classes:
        for p in sorted(q for q in (folder / c).iterdir() if is_image(q)):
            files.append(p)
            names.append(c)
    return files, names


_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I")
"""Pillow's modes of 16-bit grayscale PNGs (and 32-bit integer images), scaled by 65535, not clipped."""


def _open(p: Path, budget: list[int]):
    """One image, its pixel count checked against the size limit before its data is decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(p)
        budget[0] -= img.size[0] * img.size[1] * len(img.getbands()) * 4  # float32 pixels
        if budget[0] < 0:
            check_size(max_bytes() - budget[0], p, "the images so far decode to")
        img.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise DatasetError(f"{p}: refusing a decompression bomb ({e})") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"{p}: truncated or corrupt image ({type(e).__name__}: {e})") from e
    return img


def _pixels(img, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """An image as float32 (h, w[, 3]) in [0, 1], scaled by its bit depth."""
    from PIL import Image

    if img.mode in _SIXTEEN_BIT and mode == "L":
        img = img.convert("I")  # 32-bit integer pixels: Pillow resizes those
        img = img if size is None or img.size == (size[1], size[0]) else img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.clip(np.asarray(img, dtype=np.float32) / 65535.0, 0.0, 1.0)
    img = img.convert(mode)
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def _read_all(files: list[Path], size: tuple[int, int] | None, color: str | None) -> np.ndarray:
    budget = [max_bytes()]
    opened = [_open(p, budget) for p in files]
    if color is None:
        color = "gray" if all(img.mode in _GRAY_MODES for img in opened) else "rgb"
    mode = "L" if color == "gray" else "RGB"
    if size is None:
        _same_size(files, [img.size for img in opened])
    return np.stack([_pixels(img, mode, size) for img in opened])


def _same_size(files: list[Path], sizes: list[tuple[int, int]]) -> None:
    """Raise naming the first image whose (width, height) is not the first one's."""
    if len(set(sizes)) > 1:
        (w0, h0), first = sizes[0], files[0]
        other = next(i for i, wh in enumerate(sizes) if wh != (w0, h0))
        w1, h1 = sizes[other]
        raise DatasetError(
            f"images of mixed sizes: {first} is {h0}x{w0} (height x width), {files[other]} is {h1}x{w1}; "
            "pass size=(height, width) (--size on the command line) to resize them"
        )


def load_image_folder(
    folder: Path,
    split: str = "train",
    *,
    size: int | tuple[int, int] | None = None,
    color: str | None = None,
    stream_above: int | None = None,
) -> Dataset:
    """Images of a folder (layouts in the module docstring) as (n, c, h, w) in [0, 1].

    Args:
        size: resize every image to (height, width) (an int: square).
        color: ``"gray"`` (c = 1), ``"rgb"`` (c = 3), or None: gray when every
            image is, RGB otherwise.
        stream_above: when the split's images would decode to more than this
            many bytes (float32), return them as :class:`ImageFiles` (decoded
            one at a time on access, e.g. by :func:`vaefunc.train`) instead of
            a tensor; below it, decode only the split's files (the same values
            as with None, which decodes the whole folder, then takes the split).
    """
    check_split(split)
    hw = _size(size)
    if color not in COLORS:
        raise ValueError(f"color must be one of {COLORS}; got {color!r}")
    if stream_above is not None:
        ds = open_image_folder(folder, split, size=size, color=color)
        if ds.images.nbytes > stream_above:
            return ds
        check_size(ds.images.nbytes, folder, "the split's images decode to")
        return Dataset(ds.images.decode() if isinstance(ds.images, ImageFiles) else ds.images, ds.labels)
    files, labels, own_split = _split_files(folder, split)
    images = to_images(_read_all(files, hw, color), str(folder))
    ds = Dataset(images, labels)
    return ds if own_split else take(ds, holdout(images.shape[0], split))


def _split_files(folder: Path, split: str) -> tuple[list[Path], Tensor | None, bool]:
    """The image files a split reads (all of the folder's where it has no train/ and test/), their labels
    (the index of the class subfolder's name, or None), and whether the split is the folder's own."""
    split_dirs = {s: folder / s for s in ("train", "test") if (folder / s).is_dir()}
    if len(split_dirs) == 2:
        listings = {s: _listing(d) for s, d in split_dirs.items()}
        chosen = ("train", "test") if split == "all" else (split,)
        files = [f for s in chosen for f in listings[s][0]]
        has_classes = [listings[s][1] is not None for s in ("train", "test")]
        if any(has_classes) and not all(has_classes):
            raise DatasetError(f"{folder}: train/ and test/ must both be flat or both have class subfolders")
        names = [c for s in chosen for c in (listings[s][1] or [])] if all(has_classes) else None
        classes = sorted({c for s in ("train", "test") for c in (listings[s][1] or [])})
        own_split = True
    else:
        files, names = _listing(folder)
        classes = sorted(set(names)) if names is not None else []
        own_split = False
    if not files:
        raise DatasetError(f"{folder}: no images (expected files ending in {', '.join(SUFFIXES)})")
    labels = None
    if names is not None:
        labels = to_labels(np.array([classes.index(c) for c in names]), len(files), str(folder))
    return files, labels, own_split


def open_image_folder(
    folder: Path,
    split: str = "train",
    *,
    size: int | tuple[int, int] | None = None,
    color: str | None = None,
) -> Dataset:
    """The examples of :func:`load_image_folder`, not decoded: ``images`` is an :class:`ImageFiles`.

    Only the files' headers are read here (every file's, for the colour and
    the sizes, as :func:`load_image_folder` decides them); each image is
    decoded when it is indexed, to the same values.
    """
    check_split(split)
    hw = _size(size)
    if color not in COLORS:
        raise ValueError(f"color must be one of {COLORS}; got {color!r}")
    files, labels, own_split = _split_files(folder, split)
    heads = [_header(p) for p in files]
    if color is None:
        color = "gray" if all(mode in _GRAY_MODES for _, mode in heads) else "rgb"
    if hw is None:
        _same_size(files, [wh for wh, _ in heads])
    ds = Dataset(ImageFiles(files, "L" if color == "gray" else "RGB", hw), labels)
    return ds if own_split else take(ds, holdout(len(files), split))


def _header(p: Path) -> tuple[tuple[int, int], str]:
    """An image's (width, height) and mode, read from its header (nothing is decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                return img.size, img.mode
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise DatasetError(f"{p}: refusing a decompression bomb ({e})") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"{p}: truncated or corrupt image ({type(e).__name__}: {e})") from e


class ImageFiles(TorchDataset):
    """Image files decoded one at a time: a map-style ``torch.utils.data.Dataset`` of (c, h, w) float32 in [0, 1].

    What :func:`open_image_folder` returns as ``images``; :func:`vaefunc.train`
    streams it (vaefunc shuffles its indices). Each image is decoded as
    :func:`load_image_folder` decodes it: the same values.

    Attributes:
        shape: (n, c, h, w), as the tensor of the decoded images would have.
        nbytes: the bytes that tensor would take.
    """

    def __init__(self, files: list[Path], mode: str, size: tuple[int, int] | None):
        self.files, self.mode, self.size = list(files), mode, size
        first = self[0] if self.files else torch.zeros(0, 0, 0)
        self.shape = (len(self.files), *first.shape)
        self.nbytes = math.prod(self.shape) * first.element_size()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tensor:
        """Image i as (c, h, w) float32 in [0, 1]."""
        path = self.files[i]
        return to_images(_pixels(_open(path, [max_bytes()]), self.mode, self.size)[None], str(path))[0]

    def decode(self) -> Tensor:
        """All the images as one tensor (n, c, h, w)."""
        return torch.stack([self[i] for i in range(len(self))]) if self.files else torch.zeros(self.shape)

    def take(self, idx: Tensor) -> ImageFiles:
        """The images at ``idx``, still not decoded."""
        return ImageFiles([self.files[i] for i in idx.tolist()], self.mode, self.size)
