"""Pictures of a trained VAE: image grids (PNG, via Pillow), loss curves and latent scatters (matplotlib, Agg).

The grid functions are pure: they take params and data (and the latent values
to show) and return images (n, c, h, w) in [0, 1]; :func:`image_grid` lays
them out, :func:`labelled_grid` adds a title and row and column labels (and
scales small images up), and :func:`save_png` writes atomically. Every word
in a picture is at least 12 pixels high: DejaVu Sans (matplotlib's own font)
at :data:`FONT_SIZE` pixels in the grids, :data:`PLOT_STYLE` in the plots. A grid of
``rows x cols`` images of h x w pixels with ``pad`` pixels around each is
``cols * w + (cols + 1) * pad`` pixels wide and ``rows * h + (rows + 1) * pad`` high.

Axis letters: n images, c channels, h height, w width, z latent.
"""

from __future__ import annotations

import functools
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import _check, network
from ._io import atomic_write_bytes
from ._plot import PLOT_DPI as PLOT_DPI
from ._plot import PLOT_STYLE as PLOT_STYLE
from ._plot import plot_png as plot_png
from ._types import Params
from ._resolve import resolve, spec_of
from .spec import VAE
from .traversal import traversal as latent_traversal

PAD = 2
PAD_VALUE = 0.5
MIN_WIDTH = 200
"""A labelled grid narrower than this (8x8 digits) is scaled up by a whole factor, nearest neighbour."""
FONT_SIZE = 16
"""Pixels per em of the grids' words: DejaVu Sans's capitals are then 12 pixels high."""
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
        title: above the grid, wrapped to its width (and at each ``\n``).
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
        return int(right - left), int(bottom)

    widest_col = max((size(t)[0] for t in col_labels or ()), default=0)
    scale = max(1, math.ceil(min_width / grid.width), math.ceil((widest_col + 2) / (w + pad)))
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
    line = size("Ag")[1]
    left = 2 * MARGIN + max((size(t)[0] for t in row_labels), default=0) if row_labels else 0
    room = max(left + grid.width - MARGIN, MIN_WIDTH)  # the title wraps to the grid's width, not wider
    title_lines = [part for text in (title or "").split("\n") for part in _wrap(text, room, lambda t: size(t)[0])]
    top = MARGIN + len(title_lines) * (line + MARGIN) if title else 0
    bottom = 2 * MARGIN + line if col_labels else 0
    labelled = bool(title or row_labels or col_labels)
    width = max(left + grid.width + MARGIN * labelled, max((2 * MARGIN + size(t)[0] for t in title_lines), default=0))
    white, black = (255, 0) if grid.mode == "L" else ((255, 255, 255), (0, 0, 0))
    canvas = Image.new(grid.mode, (width, top + grid.height + bottom), white)
    canvas.paste(grid, (left, top))
    pen = ImageDraw.Draw(canvas)
    for i, text in enumerate(title_lines):
        pen.text((MARGIN, MARGIN + i * (line + MARGIN)), text, fill=black, font=font)
    for r, text in enumerate(row_labels or ()):
        middle = top + (pad + r * (h + pad) + h / 2) * scale
        pen.text((left - MARGIN - size(text)[0], round(middle - line / 2)), text, fill=black, font=font)
    for c, text in enumerate(col_labels or ()):
        middle = left + (pad + c * (w + pad) + w / 2) * scale
        pen.text((round(middle - size(text)[0] / 2), top + grid.height + MARGIN), text, fill=black, font=font)
    canvas.info["scale"] = scale
    canvas.info["grid_box"] = (left, top, left + grid.width, top + grid.height)
    return canvas


def _wrap(text: str, room: int, width) -> list[str]:
    """``text`` in lines of at most ``room`` pixels (``width(text)``), broken at spaces and balanced (as
    few lines as greedy filling gives, each as narrow as that allows); a word wider than ``room`` gets a
    line of its own."""

    def fill(limit: int) -> list[str]:
        lines: list[str] = []
        for word in text.split(" "):
            if lines and width(f"{lines[-1]} {word}") <= limit:
                lines[-1] = f"{lines[-1]} {word}"
            else:
                lines.append(word)
        return lines

    lines = fill(room)
    lo, hi = max(width(word) for word in text.split(" ")), room
    while lo < hi:  # the narrowest limit that needs no more lines
        mid = (lo + hi) // 2
        if len(fill(mid)) <= len(lines):
            hi = mid
        else:
            lo = mid + 1
    return fill(hi) if hi < room else lines


@functools.lru_cache(maxsize=1)
def _font():
    """DejaVu Sans at FONT_SIZE, from matplotlib's data (a dependency); else Pillow's default face at that
    size (its spaces are narrow: "64 samples" reads as "64samples" at small sizes), or its bitmap font
    without FreeType."""
    import importlib.util

    from PIL import ImageFont

    spec = importlib.util.find_spec("matplotlib")  # its location, without importing it
    folders = (spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        try:
            return ImageFont.truetype(os.path.join(folder, "mpl-data", "fonts", "ttf", "DejaVuSans.ttf"), FONT_SIZE)
        except (OSError, ImportError):
            pass
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
def traversal_stack(params: Params, input_shape: Sequence[int], *, steps: int = 11, span: float = 3.0,
              likelihood: str = "bernoulli", activation: str = "relu", model: VAE | None = None) -> Tensor:  # fmt: skip
    """One row per latent dimension, that dimension from -span to span, the others 0, as a flat
    stack of images: (z * steps, c, h, w), for :func:`image_grid`. (:func:`vaefunc.traversal.traversal`
    with ``x=None`` gives the same rows as (z, steps, c, h, w); ``pictures.traversal`` is this function's
    older, soft-deprecated name, which :mod:`vaefunc.traversal` shadows in meaning.)

    Example:
        >>> grid = image_grid(traversal_stack(params, (1, 28, 28), steps=11), 11)   # one row per latent dim
    """
    model = _model(params, model, input_shape, likelihood=likelihood, activation=activation)
    return latent_traversal(params, None, model=model, steps=steps, span=span).reshape(-1, *_image_shape(model))


traversal = traversal_stack
"""The older name of :func:`traversal_stack` (soft-deprecated: ``vaefunc.traversal.traversal`` is another function)."""


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
    y = None if ya is None or yb is None else ((1 - t) * ya[:, None] + t * yb[:, None]).reshape(-1, model.n_classes)
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
        path: the PNG to write (atomically), about 1000 x 320 pixels.
        objective, k: the run's training objective and its importance samples.

    Example:
        >>> plot_history([json.loads(line) for line in open("runs/mnist5k/metrics.jsonl")], "loss.png")
    """
    from matplotlib.ticker import MaxNLocator

    def draw(fig) -> None:
        epochs = [r["epoch"] for r in rows]
        for i, (title, lines) in enumerate(history_panels(objective, k)):
            ax = fig.add_subplot(1, 3, i + 1)
            for split, (key, sign, label) in lines.items():
                col = f"{split}_{key}"
                if all(col in r for r in rows):
                    ax.plot(epochs, [sign * r[col] for r in rows], marker="o", markersize=3, label=label)
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # 1 epoch: "1", not 0.96 ... 1.04
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_ylabel("nats per example")
                ax.legend()

    return atomic_write_bytes(path, plot_png(draw, figsize=(10, 3.2)))


@torch.no_grad()
def latent_means(params: Params, x: Tensor, *, model: VAE, labels: Tensor | None = None,
                 batch_size: int = 1000) -> Tensor:  # fmt: skip
    """E_q[z|x] of every example, in batches: (n, ...) -> (n, z) (a conditional model takes ``labels``)."""
    w = params[model.layout.enc_dense[0][0]]
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size].reshape(min(batch_size, x.shape[0] - i), -1).to(w.device, w.dtype)
        yb = None if labels is None else labels[i : i + batch_size]
        out.append(model.encode(params, xb, yb)[0])
    return torch.cat(out)


def plot_latent(z: Tensor, labels: Tensor | None, path: str | os.PathLike, *, title: str) -> Path:
    """A scatter of 2-D codes, coloured by label (with a legend), as a PNG: 600 x 600 pixels.

    Args:
        z: (n, 2), e.g. the test set's posterior means.
        labels: (n,) ints, or None for one colour.

    Example:
        >>> plot_latent(latent_means(params, x_test, model=model), y_test, "latent.png", title="test set")
    """
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"z must be (n, 2) codes; got {tuple(z.shape)}")
    z = z.detach().float().cpu()

    def draw(fig) -> None:
        ax = fig.add_subplot(1, 1, 1)
        if labels is None:
            ax.scatter(z[:, 0], z[:, 1], s=6, alpha=0.6)
        else:
            y = labels.detach().cpu()
            classes = y.unique().tolist()
            for c, colour in zip(classes, matplotlib_colours(len(classes))):
                mine = y == c
                ax.scatter(z[mine, 0], z[mine, 1], s=6, alpha=0.7, color=colour, label=str(c))
            ax.legend(title="label", markerscale=3, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        ax.set_title(title)
        ax.set_xlabel("latent dimension 0 (z0)")
        ax.set_ylabel("latent dimension 1 (z1)")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)

    return atomic_write_bytes(path, plot_png(draw, figsize=(6.6, 6)))


def matplotlib_colours(n: int) -> list:
    """n distinct colours: matplotlib's tab10 (tab20 beyond 10, then a continuous map)."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["viridis"](i / max(1, n - 1)) for i in range(n)]


@torch.no_grad()
def manifold(params: Params, *, steps: int = 15, span: float = 3.0, model: VAE, label: int | None = None) -> Tensor:
    """Decoder means on a square grid of 2-D codes: z0 from -span to span left to right, z1 from span to
    -span top to bottom (rows, as a plot's y axis): (steps * steps, c, h, w).

    Example:
        >>> image_grid(manifold(params, model=model), 15)   # latent_dim = 2
    """
    if model.latent_dim != 2:
        raise ValueError(f"a manifold is drawn for 2 latent dimensions; the model has {model.latent_dim}")
    _check.integer("steps", steps, minimum=2)
    _check.number("span", span, minimum=0.0, strict=True)
    w = params[model.layout.dec_dense[0][0]]
    values = torch.linspace(-span, span, steps, dtype=w.dtype, device=w.device)
    z0, z1 = values.expand(steps, steps), values.flip(0)[:, None].expand(steps, steps)
    z = torch.stack([z0.reshape(-1), z1.reshape(-1)], dim=1)
    labels = None if label is None else torch.full((z.shape[0],), label, device=w.device)
    return model.mean(params, z, labels).clamp(0.0, 1.0).reshape(z.shape[0], *_image_shape(model))
