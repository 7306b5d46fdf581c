"""The pictures of a trained model, as PNG grids: the run directory's and the picture commands'.

Each grid is one library call (:func:`vaefunc.pictures.reconstructions`,
:meth:`vaefunc.VAE.sample`, :func:`vaefunc.traversal.traversal`,
:func:`vaefunc.pictures.interpolation`) laid out by
:func:`vaefunc.pictures.labelled_grid`, with a caption saying what it shows
(small images scaled up to at least 200 pixels across); the spec given says
how to run the network (its activation, likelihood, classes). The traversal's
rows are sorted by each dimension's KL on the test split
(:func:`vaefunc.metrics.kl_per_dim`), the informative dimensions first.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import metrics, pictures
from .. import traversal as latent
from .._types import Params
from ..spec import VAE
from .parser import UsageError


def image_model(model: VAE) -> VAE:
    """The spec with an image input shape (c, h, w): a flat (d,) MLP input as a square gray image
    (1 x d when d is not a square), as older checkpoints without an input shape are drawn."""
    if len(model.input_shape) == 3:
        return model
    d = model.data_dim
    side = math.isqrt(d)
    return dataclasses.replace(model, input_shape=(1, side, side) if side * side == d else (1, 1, d))


def spread(x: Tensor, y: Tensor | None, n: int, seed: int) -> tuple[Tensor, Tensor | None]:
    """n examples (and their labels) picked by a seeded permutation (the embedded test sets are sorted by class)."""
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[perm.to(x.device)], None if y is None else y[perm.to(y.device)]


def pairs(x: Tensor, y: Tensor | None, n: int, seed: int):
    """n disjoint pairs of examples (fewer if the data is short), picked by a seeded permutation:
    (xa, xb, ya, yb), the labels None for an unconditional model."""
    if x.shape[0] < 2:
        raise UsageError(f"interpolation needs at least 2 examples; the data has {x.shape[0]}")
    n = min(n, x.shape[0] // 2)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[: 2 * n].to(x.device)
    a, b = perm[:n], perm[n:]
    return x[a], x[b], None if y is None else y[a.to(y.device)], None if y is None else y[b.to(y.device)]


def reconstruction_grid(model: VAE, params: Params, x: Tensor, y: Tensor | None, n: int, seed: int):
    """n inputs (top row) above their reconstructions, decoded at z = mu."""
    x, y = spread(x.reshape(-1, *model.input_shape), y, n, seed)
    return pictures.labelled_grid(pictures.reconstructions(params, x, model=model, labels=y), x.shape[0],
                                  title="test inputs and their reconstructions (decoded at z = mu)",
                                  row_labels=("inputs", "reconstructions"))  # fmt: skip


def sample_grid(model: VAE, params: Params, n: int, cols: int, seed: int, label: int | None = None):
    """Decoder means of n draws from the model's prior; a conditional model's draws are of class
    ``label``, or of each class in turn."""
    labels = None
    if label is not None and not model.n_classes:
        raise UsageError("--label is for a conditional model; this one is unconditional")
    what = ""
    if model.n_classes:
        labels = torch.arange(n) % model.n_classes if label is None else torch.full((n,), label)
        what = f" of classes 0 to {model.n_classes - 1} in turn" if label is None else f" of class {label}"
    title = f"{n} samples{what}: decoder means of z ~ p(z)"
    return pictures.labelled_grid(model.sample(params, n, seed=seed, labels=labels), cols, title=title)


def traverse_grid(model: VAE, params: Params, steps: int, span: float, label: int | None = None,
                  kl: Tensor | None = None):  # fmt: skip
    """One row per latent dimension, swept from -span to span around z = 0 (of class ``label``, default 0),
    each row labelled with its dimension and each column with its z value. Given ``kl`` (z,), each
    dimension's KL in nats, the rows are sorted by it, largest first, and labelled with it."""
    if label is not None and not model.n_classes:
        raise UsageError("--label is for a conditional model; this one is unconditional")
    dims = list(range(model.latent_dim)) if kl is None else kl.argsort(descending=True, stable=True).tolist()
    images = latent.traversal(params, None, dims=dims, model=model, steps=steps, span=span,
                              labels=(label or 0) if model.n_classes else None)  # fmt: skip
    values = torch.linspace(-span, span, steps).tolist()
    rows = [f"z{u}" if kl is None else f"z{u}  KL {float(kl[u]):.2f}" for u in dims]
    title = f"z_u from {-span:g} to {span:g}, the others 0" + ("" if kl is None else "; rows by KL (nats, test split)")
    return pictures.labelled_grid(images.reshape(-1, *model.input_shape), steps, title=title, row_labels=rows,
                                  col_labels=[f"{v:+.1f}".replace("+0.0", "0").replace("-0.0", "0")
                                              for v in values])  # fmt: skip


def kl_order(model: VAE, params: Params, x: Tensor, y: Tensor | None) -> Tensor:
    """Each latent dimension's KL(q(z_u|x) || N(0, 1)) on x, in nats: (z,) (:func:`vaefunc.metrics.kl_per_dim`)."""
    return metrics.kl_per_dim(params, x, labels=y, model=model, progress=False).cpu()


def interpolate_grid(model: VAE, params: Params, x: Tensor, y: Tensor | None, n: int, steps: int, seed: int):
    """One row per pair of inputs: decodings along the straight line between their codes (and, for a
    conditional model, between their one-hot labels)."""
    xa, xb, ya, yb = pairs(x.reshape(-1, *model.input_shape), y, n, seed)
    rows = pictures.interpolation(params, xa, xb, steps=steps, model=model, labels_a=ya, labels_b=yb)
    ts = [f"{t:.2g}" for t in torch.linspace(0.0, 1.0, steps).tolist()]
    return pictures.labelled_grid(rows, steps, title="decoded (1 - t) mu(a) + t mu(b): a pair of test inputs per row",
                                  col_labels=[f"t={t}" if i in (0, steps - 1) else t.lstrip("0") for i, t in
                                              enumerate(ts)])  # fmt: skip


def write_pictures(run: Path, model: VAE, params: Params, x: Tensor, y: Tensor | None, seed: int,
                   rows: list[dict[str, Any]], *, objective: str = "elbo", k: int = 1) -> None:  # fmt: skip
    """A run's reconstructions.png, samples.png, traverse.png (rows by KL on x, the test split),
    interpolate.png (with two test examples or more) and loss.png (``objective`` and ``k`` label its bound)."""
    model = image_model(model)
    with torch.no_grad():
        pictures.save_png(reconstruction_grid(model, params, x, y, 10, seed), run / "reconstructions.png")
        pictures.save_png(sample_grid(model, params, 64, 8, seed), run / "samples.png")
        kl = kl_order(model, params, x, y)
        pictures.save_png(traverse_grid(model, params, 11, 3.0, kl=kl), run / "traverse.png")
        if x.shape[0] >= 2:
            pictures.save_png(interpolate_grid(model, params, x, y, 5, 10, seed), run / "interpolate.png")
    pictures.plot_history(rows, run / "loss.png", objective=objective, k=k)
