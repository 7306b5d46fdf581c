"""Pictures of a trained VAE: image grids (PNG, via Pillow) and loss curves (matplotlib, Agg).

The grid functions are pure: they take params and data (and the latent values
to show) and return images (n, c, h, w) in [0, 1]; :func:`image_grid` lays
them out, :func:`labelled_grid` adds a title and row and column labels (and
scales small images up), and :func:`save_png` writes atomically. A grid of
``rows x cols`` images of h x w pixels with ``pad`` pixels around each is
``cols * w + (cols + 1) * pad`` pixels wide and ``rows * h + (rows + 1) * pad`` high.

Axis letters: n images, c channels, h height, w width, z latent.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import _check, network
from ._compat import resolve, spec_of
from ._io import atomic_write_bytes
from ._types import Params
from .spec import VAE
from .traversal import traversal as latent_traversal

PAD = 2
PAD_VALUE = 0.5
MIN_WIDTH = 200
"""A labelled grid narrower than this (8x8 digits) is scaled up by a whole factor, nearest neighbour."""
FONT_SIZE = 11
MARGIN = 4  # pixels between the grid, the labels and the edges


def grid_size(rows: int, cols: int, height: int, width: int, pad: int = PAD) -> tuple[int, int]:
    """(width, height) in pixels of a grid of rows x cols images of height x width."""
    return cols * width + (cols + 1) * pad, rows * height + (rows + 1) * pad


def image_grid(images: Tensor, cols: int, *, pad: int = PAD, pad_value: float = PAD_VALUE):
    """Lay out images row by row as one ``PIL.Image`` ("L" for 1 channel, "RGB" for 3).

    Args:
        images: (n, c, h, w) in [0, 1] (values outside are clipped), c in {1, 3}.
        cols: images per row; the last row is padded with ``pad_value``.

    Returns:
        A ``PIL.Image`` of :func:`grid_size` pixels.

    Example:
        >>> image_grid(torch.rand(64, 1, 28, 28), 8).size
        (242, 242)
    """
    from PIL import Image

    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (n, c, h, w) with c in (1, 3); got {tuple(images.shape)}")
    n, c, h, w = images.shape
    rows = max(1, math.ceil(n / cols))
    width, height = grid_size(rows, cols, h, w, pad)
    canvas = torch.full((c, height, width), pad_value)
    for i, img in enumerate(images.detach().float().cpu().clamp(0.0, 1.0)):
        r, k = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        canvas[:, top : top + h, left : left + w] = img
    pixels = (canvas * 255.0).round().to(torch.uint8).numpy()
    if c == 1:
        return Image.fromarray(pixels[0], mode="L")
    return Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)), mode="RGB")


def labelled_grid(images: Tensor, cols: int, *, title: str | None = None, row_labels: Sequence[str] | None = None,
                  col_labels: Sequence[str] | None = None, min_width: int = MIN_WIDTH, pad: int = PAD,
                  pad_value: float = PAD_VALUE):  # fmt: skip
    """:func:`image_grid` with words: a title above it, a label left of each row and under each column.

    A grid narrower than ``min_width`` pixels, or whose columns are narrower
    than their labels, is scaled up by a whole factor with nearest-neighbour
    sampling, so 8x8 digits stay sharp and readable. The labels are black on
    white, in Pillow's default font.

    Args:
        images: (n, c, h, w) in [0, 1], c in {1, 3}.
        cols: images per row.
        title: one line above the grid.
        row_labels: one per row (``ceil(n / cols)``), right-aligned left of it.
        col_labels: one per column, centred under it.

    Returns:
        A ``PIL.Image`` ("L" or "RGB"); ``info["scale"]`` is the factor and
        ``info["grid_box"]`` the (left, top, right, bottom) of the scaled grid in it.

    Example:
        >>> img = labelled_grid(torch.rand(20, 1, 8, 8), 10, row_labels=["inputs", "reconstructions"])
        >>> img.info["scale"], img.width >= 200
        (2, True)
    """
    from PIL import Image, ImageDraw

    grid = image_grid(images, cols, pad=pad, pad_value=pad_value)
    n, _, h, w = images.shape
    rows = max(1, math.ceil(n / cols))
    for name, labels, want in (("row_labels", row_labels, rows), ("col_labels", col_labels, cols)):
        if labels is not None and len(labels) != want:
            raise ValueError(f"{name} must have one label per {name[:3]} ({want}); got {len(labels)}")
    _check.integer("min_width", min_width, minimum=0)
    font = _font()
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))

    def size(text: str) -> tuple[int, int]:
        left, _, right, bottom = draw.textbbox((0, 0), text, font=font)
        return right - left, bottom

    widest_col = max((size(t)[0] for t in col_labels or ()), default=0)
    scale = max(1, math.ceil(min_width / grid.width), math.ceil((widest_col + 2) / (w + pad)))
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    line = size("Ag")[1]
    left = 2 * MARGIN + max((size(t)[0] for t in row_labels), default=0) if row_labels else 0
    top = 2 * MARGIN + line if title else 0
    bottom = 2 * MARGIN + line if col_labels else 0
    labelled = bool(title or row_labels or col_labels)
    width = max(left + grid.width + MARGIN * labelled, 2 * MARGIN + size(title)[0] if title else 0)
    white, black = (255, 0) if grid.mode == "L" else ((255, 255, 255), (0, 0, 0))
    canvas = Image.new(grid.mode, (width, top + grid.height + bottom), white)
    canvas.paste(grid, (left, top))
    pen = ImageDraw.Draw(canvas)
    if title:
        pen.text((MARGIN, MARGIN), title, fill=black, font=font)
    for r, text in enumerate(row_labels or ()):
        middle = top + (pad + r * (h + pad) + h / 2) * scale
        pen.text((left - MARGIN - size(text)[0], round(middle - line / 2)), text, fill=black, font=font)
    for c, text in enumerate(col_labels or ()):
        middle = left + (pad + c * (w + pad) + w / 2) * scale
        pen.text((round(middle - size(text)[0] / 2), top + grid.height + MARGIN), text, fill=black, font=font)
    canvas.info["scale"] = scale
    canvas.info["grid_box"] = (left, top, left + grid.width, top + grid.height)
    return canvas


def _font():
    """Pillow's default font at FONT_SIZE (a bundled TrueType face), or its bitmap font without FreeType."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1, or built without FreeType
        return ImageFont.load_default()


def save_png(image, path: str | os.PathLike) -> Path:
    """Write a ``PIL.Image`` as PNG, atomically. A :func:`labelled_grid` keeps its layout in the PNG's
    text: ``vaefunc.grid_box`` (left top right bottom) and ``vaefunc.scale``."""
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    for key in ("grid_box", "scale"):
        if key in image.info:
            value = image.info[key]
            meta.add_text(f"vaefunc.{key}", " ".join(map(str, value)) if isinstance(value, tuple) else str(value))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=meta)
    return atomic_write_bytes(path, buf.getvalue())


def mean_images(params: Params, z: Tensor, input_shape: Sequence[int] | None = None, *, likelihood: str = "bernoulli",
                activation: str = "relu", model: VAE | None = None, labels: Tensor | None = None) -> Tensor:  # fmt: skip
    """The decoder's mean for latents z as images in [0, 1]: (n, z) -> (n, c, h, w).

    :meth:`vaefunc.VAE.mean` (the sigmoid of the logits, the continuous
    Bernoulli's mean, or the Gaussian mean), clipped to [0, 1]. ``input_shape``
    gives an MLP's flat output its image shape.

    Example:
        >>> mean_images(params, torch.randn(16, 20), (1, 28, 28)).shape
        torch.Size([16, 1, 28, 28])
    """
    model = _model(params, model, input_shape, likelihood=likelihood, activation=activation)
    return model.mean(params, z, labels).clamp(0.0, 1.0).reshape(z.shape[0], *_image_shape(model))


def _model(params: Params, model: VAE | None, input_shape, **choices) -> VAE:
    """The spec a picture runs: ``model``, or the params' with the image shape and choices given."""
    if model is None and input_shape is not None:
        return spec_of(params, input_shape=tuple(input_shape), **choices)
    return resolve(params, model, **choices)


def _image_shape(model: VAE) -> tuple[int, ...]:
    """(c, h, w) of the model's input: its own, or a square single-channel image of d pixels."""
    if len(model.input_shape) == 3:
        return model.input_shape
    side = math.isqrt(model.data_dim)
    if side * side != model.data_dim:
        raise ValueError(f"an image needs input_shape (c, h, w); the model reads {model.input_shape}")
    return (1, side, side)


@torch.no_grad()
def reconstructions(params: Params, x: Tensor, *, likelihood: str = "bernoulli", activation: str = "relu",
                    model: VAE | None = None, labels: Tensor | None = None) -> Tensor:  # fmt: skip
    """Inputs above their reconstructions (decoded at z = mu).

    Args:
        x: (n, c, h, w) in [0, 1].
        labels: a conditional model's labels of x.

    Returns:
        (2n, c, h, w): the n inputs, then their n reconstructions.

    Example:
        >>> grid = image_grid(reconstructions(params, x_test[:10], model=model), 10)   # 2 rows
    """
    model = _model(params, model, x.shape[1:], likelihood=likelihood, activation=activation)
    mu, _ = model.encode(params, x.reshape(x.shape[0], -1), labels)
    means = model.mean(params, mu, labels).clamp(0.0, 1.0).reshape(x.shape)
    return torch.cat([x.to(mu.dtype), means])


@torch.no_grad()
def traversal(params: Params, input_shape: Sequence[int], *, steps: int = 11, span: float = 3.0,
              likelihood: str = "bernoulli", activation: str = "relu", model: VAE | None = None) -> Tensor:  # fmt: skip
    """One row per latent dimension, that dimension from -span to span, the others 0, as a flat
    stack of images: (z * steps, c, h, w). (Soft-deprecated: :func:`vaefunc.traversal.traversal`
    with ``x=None`` gives the same rows as (z, steps, c, h, w).)

    Example:
        >>> grid = image_grid(traversal(params, (1, 28, 28), steps=11), 11)   # one row per latent dim
    """
    model = _model(params, model, input_shape, likelihood=likelihood, activation=activation)
    return latent_traversal(params, None, model=model, steps=steps, span=span).reshape(-1, *_image_shape(model))


@torch.no_grad()
def interpolation(params: Params, xa: Tensor, xb: Tensor, *, steps: int = 10, likelihood: str = "bernoulli",
                  activation: str = "relu", model: VAE | None = None, labels_a: Tensor | None = None,
                  labels_b: Tensor | None = None) -> Tensor:  # fmt: skip
    """Straight lines between the posterior means of pairs: one row per pair.

    Args:
        xa, xb: (n, c, h, w), the two ends of each row.
        labels_a, labels_b: a conditional model's labels of xa and xb (ints (n,) or
            one-hot (n, n_classes)); each end is encoded with its own, and the row is
            decoded with the one-hot labels interpolated along with z.

    Returns:
        (n * steps, c, h, w): row i decodes (1 - t) mu(xa_i) + t mu(xb_i), t from 0 to 1.

    Example:
        >>> grid = image_grid(interpolation(params, x[:5], x[5:10], steps=10, model=model), 10)
    """
    _check.integer("steps", steps, minimum=2)
    model = _model(params, model, xa.shape[1:], likelihood=likelihood, activation=activation)
    ya, yb = (None if y is None else network.one_hot(_check.labels(y, x.shape[0], model.n_classes, device=x.device),
                                                     model.n_classes, x.dtype)
              for y, x in ((labels_a, xa), (labels_b, xb)))  # fmt: skip
    mu_a, _ = model.encode(params, xa.reshape(xa.shape[0], -1), ya)
    mu_b, _ = model.encode(params, xb.reshape(xb.shape[0], -1), yb)
    t = torch.linspace(0.0, 1.0, steps, dtype=mu_a.dtype, device=mu_a.device)[None, :, None]
    z = ((1 - t) * mu_a[:, None] + t * mu_b[:, None]).reshape(-1, mu_a.shape[1])
    y = None if ya is None else ((1 - t) * ya[:, None] + t * yb[:, None]).reshape(-1, model.n_classes)
    return model.mean(params, z, y).clamp(0.0, 1.0).reshape(z.shape[0], *xa.shape[1:])


def history_panels(objective: str = "elbo", k: int = 1) -> list[tuple[str, dict[str, tuple[str, float, str]]]]:
    """What each panel of :func:`plot_history` draws: (title, {split: (metric, sign, legend label)}).

    For ``objective="iwae"`` the train loss is -IWAE_k and the test metric the
    single-sample ELBO, so the first panel names both rather than calling them "-ELBO".
    """
    first = ("-ELBO", {"train": ("elbo", -1.0, "train"), "test": ("elbo", -1.0, "test")})
    if objective == "iwae":
        first = (f"-IWAE_{k} (train), -ELBO (test)",
                 {"train": ("loss", 1.0, f"train -IWAE_{k}"), "test": ("elbo", -1.0, "test -ELBO")})  # fmt: skip
    rest = (("reconstruction  -log p(x|z)", "recon", -1.0), ("KL(q(z|x) || p(z))", "kl", 1.0))
    return [first, *((title, {split: (key, sign, split) for split in ("train", "test")}) for title, key, sign in rest)]


def plot_history(rows: Sequence[dict], path: str | os.PathLike, *, objective: str = "elbo", k: int = 1) -> Path:
    """loss.png: the objective, reconstruction (-log p(x|z)) and KL per epoch, train and test, in nats.

    The first panel is -ELBO, train and test; with ``objective="iwae"`` its
    train line is the training bound -IWAE_k (the epoch's mean loss) and its
    test line the single-sample -ELBO, each labelled as what it is.

    Args:
        rows: the lines of metrics.jsonl: dicts with "epoch" and ``train_``/``test_``
            ``elbo``, ``recon``, ``kl`` (and ``train_loss`` for IWAE).
        path: the PNG to write (atomically), 800 x 240 pixels.
        objective, k: the run's training objective and its importance samples.

    Example:
        >>> plot_history([json.loads(line) for line in open("runs/mnist5k/metrics.jsonl")], "loss.png")
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 3), dpi=80)
    FigureCanvasAgg(fig)
    epochs = [r["epoch"] for r in rows]
    for i, (title, lines) in enumerate(history_panels(objective, k)):
        ax = fig.add_subplot(1, 3, i + 1)
        for split, (key, sign, label) in lines.items():
            col = f"{split}_{key}"
            if all(col in r for r in rows):
                ax.plot(epochs, [sign * r[col] for r in rows], marker="o", markersize=3, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # 1 epoch: "1", not 0.96 ... 1.04
        ax.grid(alpha=0.3)
        if i == 0:
            ax.set_ylabel("nats per example")
            ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())
