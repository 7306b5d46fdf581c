"""Latent traversals: decode z while one latent dimension sweeps a range, the others held.

:func:`traversal` is pure (params and one example in, images out);
:func:`save_traversal_figure` draws one row per latent dimension with
matplotlib (Agg), labelled (e.g. with each dimension's KL), and writes the PNG
atomically. Unlike :func:`vaefunc.pictures.traversal`, which sweeps around
z = 0, these sweep through one example's posterior mean, and take its label for
a conditional VAE.

Axis letters: z latent, t traversal steps, c h w image.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ._io import atomic_write_bytes
from ._types import Params
from .model import architecture, decode, encode
from .nn import check_activation


@torch.no_grad()
def traversal(
    params: Params,
    x: Tensor,
    *,
    dims: Sequence[int] | None = None,
    span: float = 3.0,
    steps: int = 9,
    y: Tensor | None = None,
    likelihood: str = "bernoulli",
    activation: str = "relu",
) -> Tensor:
    """Decoded means along each latent axis through the encoder mean of one example.

    For each dimension u in ``dims``, z = E_q[z|x] with z_u replaced by each of
    ``linspace(-span, span, steps)``, decoded to probabilities (Bernoulli) or
    means (Gaussian).

    Args:
        x: one example, (*input_shape) or (d,).
        dims: the latent dimensions to sweep; default all of them.
        y: the example's label for a conditional VAE (0-d int or one-hot (n,)).
        activation: the hidden activation the params were trained with.

    Returns:
        (len(dims), steps, *decoded shape): (u, t, d) for an MLP, (u, t, c, h, w) for conv.

    Example:
        >>> traversal(params, x_test[0], steps=7).shape   # conv, z = 10, (1, 64, 64)
        torch.Size([10, 7, 1, 64, 64])
    """
    check_activation(activation)
    a = architecture(params)
    dims = list(range(a.latent_dim)) if dims is None else list(dims)
    if not dims or not all(isinstance(u, int) and 0 <= u < a.latent_dim for u in dims):
        raise ValueError(f"dims must be latent dimensions in [0, {a.latent_dim}); got {dims!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2; got {steps!r}")
    mu, _ = encode(params, x.unsqueeze(0), None if y is None else y.unsqueeze(0), activation=activation)  # (1, z)
    values = torch.linspace(-span, span, steps, dtype=mu.dtype, device=mu.device)
    z = mu.expand(len(dims), steps, a.latent_dim).clone()
    for row, u in enumerate(dims):
        z[row, :, u] = values
    out = decode(params, z, None if y is None else y.expand(len(dims), steps, *y.shape), activation=activation)
    return torch.sigmoid(out) if likelihood == "bernoulli" else out


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
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    images = traversal(params, x, span=span, steps=steps, activation=activation).float().cpu()
    rows = images.shape[0]
    if images.ndim == 3:  # an MLP's flat output
        h, w = image_shape or (int(images.shape[-1] ** 0.5),) * 2
        images = images.reshape(rows, steps, 1, h, w)
    labels = list(row_labels) if row_labels is not None else [f"z{u}" for u in range(rows)]
    fig = Figure(figsize=(steps * 0.9 + 1.2, rows * 0.9 + 0.6))
    axes = fig.subplots(rows, steps, squeeze=False)
    values = torch.linspace(-span, span, steps).tolist()
    for r in range(rows):
        for t in range(steps):
            ax = axes[r][t]
            img = images[r, t]
            pixels = (img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)).numpy()
            ax.imshow(pixels, cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == rows - 1:
                ax.set_xlabel(f"{values[t]:+.1f}", fontsize=7)
        axes[r][0].set_ylabel(labels[r], fontsize=7, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())

