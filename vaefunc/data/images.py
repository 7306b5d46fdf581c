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

import warnings
from pathlib import Path

import numpy as np

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
        img = img if size is None or img.size == (size[1], size[0]) else img.resize((size[1], size[0]), Image.BILINEAR)
        return np.clip(np.asarray(img, dtype=np.float32) / 65535.0, 0.0, 1.0)
    img = img.convert(mode)
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def _read_all(files: list[Path], size: tuple[int, int] | None, color: str | None) -> np.ndarray:
    budget = [max_bytes()]
    opened = [_open(p, budget) for p in files]
    if color is None:
        color = "gray" if all(img.mode in _GRAY_MODES for img in opened) else "rgb"
    mode = "L" if color == "gray" else "RGB"
    if size is None:
        sizes = {img.size for img in opened}
        if len(sizes) > 1:
            (w0, h0), first = opened[0].size, files[0]
            other = next(i for i, img in enumerate(opened) if img.size != (w0, h0))
            w1, h1 = opened[other].size
            raise DatasetError(
                f"images of mixed sizes: {first} is {h0}x{w0} (height x width), {files[other]} is {h1}x{w1}; "
                "pass size=(height, width) (--size on the command line) to resize them"
            )
    return np.stack([_pixels(img, mode, size) for img in opened])


def load_image_folder(
    folder: Path,
    split: str = "train",
    *,
    size: int | tuple[int, int] | None = None,
    color: str | None = None,
) -> Dataset:
    """Images of a folder (layouts in the module docstring) as (n, c, h, w) in [0, 1].

    Args:
        size: resize every image to (height, width) (an int: square).
        color: ``"gray"`` (c = 1), ``"rgb"`` (c = 3), or None: gray when every
            image is, RGB otherwise.
    """
    check_split(split)
    hw = _size(size)
    if color not in COLORS:
        raise ValueError(f"color must be one of {COLORS}; got {color!r}")
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
    images = to_images(_read_all(files, hw, color), str(folder))
    labels = None
    if names is not None:
        labels = to_labels(np.array([classes.index(c) for c in names]), images.shape[0], str(folder))
    ds = Dataset(images, labels)
    return ds if own_split else take(ds, holdout(images.shape[0], split))

