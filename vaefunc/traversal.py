"""Latent traversals: decode z while one latent dimension sweeps a range, the others held.

:func:`traversal` is pure (params and one example in, images out);
:func:`save_traversal_figure` draws one row per latent dimension with
matplotlib (Agg), labelled (e.g. with each dimension's KL), and writes the PNG
atomically. Given an example, the sweep goes through its posterior mean (and
takes its label, for a conditional VAE); without one, through z = 0, as the
soft-deprecated :func:`vaefunc.pictures.traversal` (now :func:`vaefunc.pictures.traversal_stack`) did.

Axis letters: z latent, t traversal steps, c h w image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from . import _check
from ._io import atomic_write_bytes
from ._plot import plot_png
from ._types import Params
from ._resolve import resolve
from .spec import VAE

MAX_STEPS = 10_000
"""The most values one traversal sweeps (more would not fit a picture)."""


@torch.no_grad()
def traversal(params: Params, x: Tensor | None = None, *, dims: Sequence[int] | None = None, span: float = 3.0,
              steps: int = 9, labels: Tensor | int | None = None, y: Tensor | None = None,
              likelihood: str = "bernoulli", activation: str = "relu", model: VAE | None = None) -> Tensor:  # fmt: skip
    """Decoded means along each latent axis, the others held: (len(dims), steps, *input_shape).

    For each dimension u in ``dims``, z is held at E_q[z|x] (one example's
    posterior mean), or at 0 without ``x`` (the prior's mean), with z_u
    replaced by each of ``linspace(-span, span, steps)``, and decoded to
    :meth:`vaefunc.VAE.mean` (probabilities, the continuous Bernoulli's mean, or
    the Gaussian mean).

    Args:
        x: one example, (*input_shape) or (d,); None: sweep around z = 0.
        dims: the latent dimensions to sweep; default all of them.
        labels: the class of a conditional model (0-d int or one-hot (n,));
            ``y=`` is its older name.
        likelihood, activation: the model's static choices, or
        model: its :class:`vaefunc.VAE` spec.

    Example:
        >>> traversal(params, x_test[0], steps=7, model=model).shape   # conv, z = 10, (1, 64, 64)
        torch.Size([10, 7, 1, 64, 64])
    """
    model = resolve(params, model, likelihood=likelihood, activation=activation)
    labels = _check.renamed(labels, y, new="labels", old="y")
    z_dim = model.latent_dim
    dims = list(range(z_dim)) if dims is None else list(dims)
    if not dims or not all(isinstance(u, int) and not isinstance(u, bool) and 0 <= u < z_dim for u in dims):
        raise ValueError(f"dims must be latent dimensions in [0, {z_dim}); got {dims!r}")
    _check.integer("steps", steps, minimum=2, maximum=MAX_STEPS)
    _check.number("span", span, minimum=0.0, strict=True)
    w = next(iter(params.values()))
    label = None if labels is None else _one_label(labels, model.n_classes, w.device)
    if x is None:
        center = torch.zeros(1, z_dim, dtype=w.dtype, device=w.device)
    else:
        center, _ = model.encode(params, x.unsqueeze(0).to(w.device, w.dtype), label)  # (1, z)
    values = torch.linspace(-span, span, steps, dtype=center.dtype, device=center.device)
    z = center.expand(len(dims), steps, z_dim).clone()
    for row, u in enumerate(dims):
        z[row, :, u] = values
    rows = None if label is None else label.expand(len(dims) * steps, *label.shape[1:])
    return model.mean(params, z.reshape(-1, z_dim), rows).reshape(len(dims), steps, *model.input_shape)


def _one_label(labels, n_classes: int, device: torch.device) -> Tensor:
    """One example's label as a batch of one on ``device``: int (1,) or one-hot (1, n)."""
    label = torch.as_tensor(labels)
    label = label.reshape(1, -1) if label.is_floating_point() else label.reshape(1)
    return _check.labels(label, 1, n_classes, device=device)


def save_traversal_figure(
    params: Params,
    x: Tensor,
    path: str | os.PathLike,
    *,
    span: float = 3.0,
    steps: int = 9,
    row_labels: Sequence[str] | None = None,
    image_shape: tuple[int, int] | None = None,
    title: str | None = None,
    activation: str = "relu",
    model: VAE | None = None,
) -> Path:
    """Draw :func:`traversal` for every latent dimension, one row each, and save a PNG.

    Args:
        x: one example (*input_shape).
        row_labels: a label per latent dimension (e.g. its KL); default "z0", "z1", ...
        image_shape: (h, w) to show flat (MLP) outputs as images; default: square.
        title: the figure's title.
        activation: the hidden activation the params were trained with.

    Returns:
        The path written (atomically: a temporary file in the same folder, then os.replace).
    """
    images = traversal(params, x, span=span, steps=steps, activation=activation, model=model).float().cpu()
    rows = images.shape[0]
    if images.ndim == 3:  # an MLP's flat output
        h, w = image_shape or (int(images.shape[-1] ** 0.5),) * 2
        images = images.reshape(rows, steps, 1, h, w)
    labels = list(row_labels) if row_labels is not None else [f"z{u}" for u in range(rows)]
    values = torch.linspace(-span, span, steps).tolist()

    def draw(fig) -> None:
        axes = fig.subplots(rows, steps, squeeze=False)
        for r in range(rows):
            for t in range(steps):
                ax = axes[r][t]
                img = images[r, t]
                pixels = (img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)).numpy()
                ax.imshow(pixels, cmap="gray", vmin=0.0, vmax=1.0)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == rows - 1:
                    ax.set_xlabel(f"{values[t]:+.1f}")
            axes[r][0].set_ylabel(labels[r], rotation=0, ha="right", va="center")
        if title:
            fig.suptitle(title)

    return atomic_write_bytes(path, plot_png(draw, figsize=(steps * 0.9 + 1.6, rows * 0.9 + 0.8)))

