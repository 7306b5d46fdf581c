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


SAMPLES_PER_CLASS = 8
"""A conditional model's sample grid: this many samples in each class's row, unless ``n`` says otherwise."""


def sample_grid(model: VAE, params: Params, n: int | None, cols: int, seed: int, label: int | None = None):
    """Decoder means of n draws from the model's prior (default 64). A conditional model's draws are of
    class ``label`` in rows of ``cols``, or else one row per class, of n // n_classes draws each (default
    :data:`SAMPLES_PER_CLASS`)."""
    if label is not None and not model.n_classes:
        raise UsageError("--label is for a conditional model; this one is unconditional")
    if model.n_classes and label is None:  # one row per class
        k = model.n_classes
        per = SAMPLES_PER_CLASS if n is None else max(1, n // k)
        labels: Tensor | None = torch.arange(k).repeat_interleave(per)
        title = (f"{per} sample{'s' * (per != 1)} of each of the {k} classes, a row per class: "
                 "decoder means of z ~ p(z)")  # fmt: skip
        return pictures.labelled_grid(model.sample(params, k * per, seed=seed, labels=labels), per, title=title,
                                      row_labels=[f"class {c}" for c in range(k)])  # fmt: skip
    n = 64 if n is None else n
    labels = None if label is None else torch.full((n,), label)
    what = "" if label is None else f" of class {label}"
    title = f"{n} sample{'s' * (n != 1)}{what}: decoder means of z ~ p(z)"
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
    of = "" if not model.n_classes else f" (class {label or 0})"
    title = (f"latent traversal{of}: row zi decodes z with latent dimension i from {-span:g} to {span:g} "
             "and the other dimensions at 0; "
             + ("rows in index order" if kl is None else "rows sorted by each dimension's KL (nats, test split)"))
    return pictures.labelled_grid(images.reshape(-1, *model.input_shape), steps, title=title, row_labels=rows,
                                  col_labels=[_signed(v) for v in values])


def kl_order(model: VAE, params: Params, x: Tensor, y: Tensor | None) -> Tensor:
    """Each latent dimension's KL(q(z_u|x) || N(0, 1)) on x, in nats: (z,) (:func:`vaefunc.metrics.kl_per_dim`)."""
    return metrics.kl_per_dim(params, x, labels=y, model=model, progress=False).cpu()


def interpolate_grid(model: VAE, params: Params, x: Tensor, y: Tensor | None, n: int, steps: int, seed: int):
    """One row per pair of inputs: decodings along the straight line between their codes (and, for a
    conditional model, between their one-hot labels)."""
    xa, xb, ya, yb = pairs(x.reshape(-1, *model.input_shape), y, n, seed)
    rows = pictures.interpolation(params, xa, xb, steps=steps, model=model, labels_a=ya, labels_b=yb)
    ts = [f"{t:.2g}" for t in torch.linspace(0.0, 1.0, steps).tolist()]
    title = ("interpolations: each row decodes the straight line between the codes of two test inputs a (left) "
             "and b (right), z = (1 - t) mu(a) + t mu(b)")
    return pictures.labelled_grid(rows, steps, title=title,
                                  col_labels=[f"t={t}" if i in (0, steps - 1) else t.lstrip("0") for i, t in
                                              enumerate(ts)])  # fmt: skip


def manifold_grid(model: VAE, params: Params, steps: int, span: float, label: int | None = None):
    """A 2-D latent space decoded on a grid of codes: z0 left to right, z1 bottom to top, each from -span
    to span (of class ``label``, default 0, for a conditional model)."""
    if label is not None and not model.n_classes:
        raise UsageError("--label is for a conditional model; this one is unconditional")
    label = (label or 0) if model.n_classes else None
    values = [_signed(v) for v in torch.linspace(-span, span, steps).tolist()]
    of = "" if label is None else f" (class {label})"
    title = (f"the decoder over the latent plane{of}: decoder means of z = (z0, z1), z0 from {-span:g} to "
             f"{span:g} left to right, z1 from {-span:g} to {span:g} bottom to top")
    return pictures.labelled_grid(pictures.manifold(params, steps=steps, span=span, model=model, label=label), steps,
                                  title=title, row_labels=[f"z1 {v}" for v in reversed(values)],
                                  col_labels=values)  # fmt: skip


def _signed(v: float) -> str:
    return f"{v:+.1f}".replace("+0.0", "0").replace("-0.0", "0")


def latent_scatter(model: VAE, params: Params, x: Tensor, y: Tensor | None, colour: Tensor | None, path: Path,
                   what: str = "test split") -> Path:  # fmt: skip
    """latent.png: the posterior mean of each input of x (a 2-D latent space), coloured by ``colour`` (the
    data's labels, or None); ``y``: a conditional model's labels of x."""
    if model.latent_dim != 2:
        raise UsageError(f"a latent scatter needs 2 latent dimensions; the model has {model.latent_dim}")
    z = pictures.latent_means(params, x, model=model, labels=y)
    coloured = "" if colour is None else ", coloured by label"
    return pictures.plot_latent(z, colour, path, title=f"posterior means of the {x.shape[0]:,} inputs\n"
                                                         f"of the {what}{coloured}")  # fmt: skip


LATENT = ("latent.png", "manifold.png")
"""What :func:`write_pictures` adds for a model with 2 latent dimensions."""


def write_pictures(run: Path, model: VAE, params: Params, x: Tensor, y: Tensor | None, seed: int,
                   rows: list[dict[str, Any]], *, objective: str = "elbo", k: int = 1,
                   colour: Tensor | None = None) -> None:  # fmt: skip
    """A run's reconstructions.png, samples.png, traverse.png (rows by KL on x, the test split),
    interpolate.png (with two test examples or more) and loss.png (``objective`` and ``k`` label its bound);
    with 2 latent dimensions, latent.png (x's codes, coloured by ``colour``: the test split's labels) and
    manifold.png."""
    model = image_model(model)
    with torch.no_grad():
        pictures.save_png(reconstruction_grid(model, params, x, y, 10, seed), run / "reconstructions.png")
        pictures.save_png(sample_grid(model, params, None, 8, seed), run / "samples.png")
        kl = kl_order(model, params, x, y)
        pictures.save_png(traverse_grid(model, params, 11, 3.0, kl=kl), run / "traverse.png")
        if x.shape[0] >= 2:
            pictures.save_png(interpolate_grid(model, params, x, y, 5, 10, seed), run / "interpolate.png")
        if model.latent_dim == 2:
            latent_scatter(model, params, x, y, colour, run / "latent.png")
            pictures.save_png(manifold_grid(model, params, 15, 3.0), run / "manifold.png")
    pictures.plot_history(rows, run / "loss.png", objective=objective, k=k)
