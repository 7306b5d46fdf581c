"""Procedural dSprites: 64x64 binary images of 2-d shapes with known generative factors.

A stand-in for the dSprites data set (Matthey et al. 2017), rendered on the fly
with torch (no download), with the same factor grid::

    shape        3   square, ellipse, heart
    scale        6   0.5 ... 1 (linearly spaced)
    orientation 40   0, 2 pi / 40, ..., 39 * 2 pi / 40 radians
    pos_x       32   0 ... 1 (linearly spaced), left to right
    pos_y       32   0 ... 1 (linearly spaced), top to bottom

737,280 combinations. A sprite's centre lies in [0.2, 0.8] of the image in
each direction; at scale 1 the square is 16 pixels wide. A pixel is on when
its centre lies inside the rotated, scaled shape, so the same factors always
give the same image. The pixels are not the original files' (whose sprites
are drawn slightly differently); the factor grid and the task are the same.

Axis letters: n images, f factors (5), h w height and width (64).
"""

from __future__ import annotations

import math
import numpy as np
import torch
from torch import Tensor

from ._base import Dataset

FACTORS = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
SIZE = 64
HALF_WIDTH = 0.125
"""Half the square's side at scale 1, as a fraction of the image width."""
MARGIN = 0.2
"""Sprite centres lie in [MARGIN, 1 - MARGIN] of the image."""
CHUNK = 4096
WINDOW = 24
"""Pixels are evaluated in a WINDOW x WINDOW square around the sprite's centre (the sprite fits in 23)."""
SPLITS = ("train", "test")


def factor_values(factors: Tensor) -> Tensor:
    """The factors' values from their indices: ints (n, 5) -> float64 (n, 5).

    shape stays an index (0 square, 1 ellipse, 2 heart); scale in [0.5, 1];
    orientation in radians; positions in [0, 1].
    """
    f = _check_factors(factors).double()
    scale = 0.5 + 0.5 * f[:, 1] / (FACTOR_SIZES[1] - 1)
    theta = 2.0 * math.pi * f[:, 2] / FACTOR_SIZES[2]
    px, py = f[:, 3] / (FACTOR_SIZES[3] - 1), f[:, 4] / (FACTOR_SIZES[4] - 1)
    return torch.stack([f[:, 0], scale, theta, px, py], dim=1)


def render(factors: Tensor) -> Tensor:
    """The image of each combination of factor indices: ints (n, 5) -> float32 (n, 1, 64, 64).

    Pure and deterministic; rendered CHUNK images at a time to bound memory.

    Example:
        >>> render(torch.tensor([[0, 5, 0, 16, 16]])).sum()  # a 16 x 16 square
        tensor(256.)
    """
    values = factor_values(factors).float()
    out = torch.zeros(values.shape[0], 1, SIZE, SIZE)
    offsets = torch.arange(WINDOW)
    for kind, inside in enumerate((_square, _ellipse, _heart)):
        (idx,) = torch.nonzero(values[:, 0] == kind, as_tuple=True)
        for i in range(0, idx.shape[0], CHUNK):
            rows = idx[i : i + CHUNK]
            v = values[rows]
            scale, theta = v[:, 1, None, None], v[:, 2, None, None]
            cx, cy = MARGIN + (1 - 2 * MARGIN) * v[:, 3], MARGIN + (1 - 2 * MARGIN) * v[:, 4]
            # only a WINDOW x WINDOW square of pixels around the centre can be on
            left = (cx * SIZE).round().long() - WINDOW // 2
            top = (cy * SIZE).round().long() - WINDOW // 2
            cols, lines = left[:, None] + offsets, top[:, None] + offsets  # (n, WINDOW) pixel indices
            dx = ((cols + 0.5) / SIZE - cx[:, None])[:, None, :]  # (n, 1, WINDOW)
            dy = ((lines + 0.5) / SIZE - cy[:, None])[:, :, None]  # (n, WINDOW, 1)
            cos, sin = torch.cos(theta) / (HALF_WIDTH * scale), torch.sin(theta) / (HALF_WIDTH * scale)
            # rotate the pixel back into the sprite's frame, in units of its half-width
            u, w = cos * dx + sin * dy, cos * dy - sin * dx
            flat = (rows[:, None, None] * SIZE + lines[:, :, None]) * SIZE + cols[:, None, :]
            out.view(-1)[flat.view(-1)] = inside(u, w).view(-1).float()
    return out


def _square(u: Tensor, w: Tensor) -> Tensor:
    return torch.maximum(u.abs(), w.abs()) <= 1.0


def _ellipse(u: Tensor, w: Tensor) -> Tensor:
    return u.square() + (2.0 * w).square() <= 1.0


def _heart(u: Tensor, w: Tensor) -> Tensor:
    # (x^2 + y^2 - 1)^3 <= x^2 y^3 spans x in [-1.14, 1.14], y in [-1, 1.25]: mapped onto [-1, 1]^2, point down
    x2, y = (1.14 * u).square(), 0.125 - 1.125 * w
    return (x2 + y.square() - 1.0) ** 3 <= x2 * y**3


def sample_factors(n: int, *, seed: int = 0) -> Tensor:
    """n combinations of factor indices, each factor uniform and independent: (n, 5) int64."""
    _check_n(n)
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, s, (n,), generator=gen) for s in FACTOR_SIZES], dim=1)


def generate(n: int, *, seed: int = 0) -> Dataset:
    """n random dSprites images with their factors; the same n and seed give the same data.

    Returns:
        :class:`vaefunc.data.Dataset`: ``images`` (n, 1, 64, 64) float32 in {0, 1};
        ``labels`` (n, 5) int64, the index of each factor's value, in the order of
        :data:`FACTORS` (shape, scale, orientation, pos_x, pos_y).

    Example:
        >>> images, factors = generate(1000, seed=0)
        >>> images.shape, factors.shape
        (torch.Size([1000, 1, 64, 64]), torch.Size([1000, 5]))
    """
    factors = sample_factors(n, seed=seed)
    return Dataset(render(factors), factors)


def load_dsprites(split: str = "train", *, n: int = 10_000, seed: int = 0) -> Dataset:
    """The loader behind ``vaefunc.data.load("dsprites", n=...)``: n images of a split, see :func:`generate`.

    "train" and "test" draw their factors from two unrelated streams of ``seed``
    (``load`` keeps its own ``seed=`` for binarization, so through ``load`` the
    stream is seed 0; call this function for others). ``"all"`` is not offered:
    the grid has 737,280 images (3 GB as float32).

    Example:
        >>> x, factors = vaefunc.data.load("dsprites", n=1000, split="test")
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    child = np.random.SeedSequence([seed, SPLITS.index(split)]).generate_state(1, dtype=np.uint64)[0]
    return generate(n, seed=int(child >> np.uint64(1)))


def _check_n(n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}")


def _check_factors(factors: Tensor) -> Tensor:
    if not isinstance(factors, Tensor) or factors.ndim != 2 or factors.shape[1] != len(FACTORS):
        got = tuple(factors.shape) if isinstance(factors, Tensor) else type(factors).__name__
        raise ValueError(f"factors must be an int tensor (n, {len(FACTORS)}) of {FACTORS}; got {got}")
    if factors.is_floating_point() or factors.is_complex() or factors.dtype == torch.bool:
        raise TypeError(f"factors must be integer indices; got dtype {factors.dtype}")
    sizes = torch.tensor(FACTOR_SIZES)
    if bool(((factors < 0) | (factors >= sizes)).any()):
        raise ValueError(f"factor indices must lie in [0, size) for sizes {FACTOR_SIZES}")
    return factors
