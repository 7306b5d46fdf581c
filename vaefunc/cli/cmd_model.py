"""Commands on a trained model: ``eval``, ``sample``, ``reconstruct``, ``interpolate``, ``traverse``, ``latent``.

Each opens a run directory or a checkpoint file, takes the model spec from
the checkpoint (its activation, likelihood, prior, classes; an older
checkpoint's is the one its params and config describe, ReLU where it names
none) and the data, seed and binarization from the run's settings.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor

from .. import _progress
from .. import data as vdata
from .. import estimators, metrics, pictures
from .._types import Params
from ..checkpoint import load
from ..spec import VAE
from . import datasets, figures, rundir, session
from .parser import UsageError
from .settings import PER_MODEL, Settings, from_json, one_seed

_STATIC = ("activation", "likelihood", "obs_std", "input_shape")


class Opened(NamedTuple):
    """A trained model opened from a run directory or checkpoint file."""

    params: Params
    model: VAE  # with an image input shape (c, h, w), for the pictures
    settings: Settings
    path: Path  # the checkpoint file


def open_model(args: Any, device: torch.device) -> Opened:
    """The params, spec and settings that ``args.run`` holds (``--activation``, ``--member`` applied)."""
    path = rundir.checkpoint_path(args.run)
    ckpt = load(path, device=device)
    settings = from_json(ckpt.config if ckpt.config else rundir.read_config(path.parent))
    from safetensors import safe_open  # whether the checkpoint holds a spec, or load derived one

    with safe_open(path, "pt") as f:
        saved_spec = "model" in (f.metadata() or {})
    params, model, m = ckpt.params, cast(VAE, ckpt.model), rundir.members(ckpt)  # load always sets the spec
    if m is not None:
        params, settings = _member(params, settings, m, args.member, path)
    elif args.member is not None:
        raise UsageError(f"--member picks a model of a sweep; {path} holds one model")
    if not saved_spec and not ckpt.config and settings.model:  # a bare checkpoint beside its run's config.json
        model = VAE.from_params(params, **{k: _tuple(settings.model[k]) for k in _STATIC if k in settings.model})
    if args.activation is not None and args.activation != model.activation:
        if saved_spec or "activation" in settings.model:
            raise UsageError(f"--activation {args.activation} differs from the {model.activation} the model was "
                             f"trained with (saved in {path})")  # fmt: skip
        model = dataclasses.replace(model, activation=args.activation)
    return Opened(params, figures.image_model(model), settings, path)


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _member(params: Params, settings: Settings, m: int, i: int | None, path: Path) -> tuple[Params, Settings]:
    """Model i of a sweep's checkpoint, with its own beta, lr and seed."""
    if i is None or i >= m:
        raise UsageError(f"{path} holds a sweep of {m} models; pick one with --member I (0 to {m - 1})")
    c = settings.config
    own = {name: getattr(c, name)[i] for name in PER_MODEL if isinstance(getattr(c, name), tuple)}
    return {k: v[i] for k, v in params.items()}, settings._replace(config=c.replace(**own))


def _data(args: Any, opened: Opened, split: str = "test") -> vdata.Dataset:
    """The data a command reads: the run's, or the flags', checked against the model."""
    ds = datasets.load(datasets.with_flags(opened.settings.data, args), split)
    datasets.check_fits(opened.model, ds)
    return ds


def evaluate(args: Any) -> int:
    """``vaefunc eval``: the split's single-sample ELBO and its parts, and the importance-sampled NLL
    (off a terminal, with ``--progress auto``, a line on stderr every 10 s)."""
    with _progress.plain_lines("vaefunc eval"):
        return _evaluate(args)


def _evaluate(args: Any) -> int:
    device = session.device(args.device)
    opened = open_model(args, device)
    model, params, c = opened.model, opened.params, opened.settings.config
    ds = _data(args, opened, args.split)
    seed = one_seed(c) if args.seed is None else args.seed
    x, y = datasets.binarized(ds, c.binarize, seed, device), datasets.labels(model, ds)
    progress = session.PROGRESS[args.progress]
    rec, kl = metrics.elbo_per_example(params, x, labels=y, seed=seed, model=model, progress=progress)
    n = rec.shape[0]
    out: dict[str, Any] = {"elbo": float((rec - kl).mean()), "recon": float(rec.mean()), "kl": float(kl.mean())}
    out["loss"] = c.beta * out["kl"] - out["recon"]
    data = args.data or opened.settings.data["name"]
    if not args.json:  # the ELBO first: the NLL can take minutes
        print(f"{args.split} ELBO {out['elbo']:.2f} nats (reconstruction {out['recon']:.2f}, KL {out['kl']:.2f}) "
              f"on {n} examples of {data} ({args.split} split; single-sample, eps seed {seed})", flush=True)  # fmt: skip
    if model.semi_supervised:
        out["error"] = metrics.classification_error(params, x, y, model=model, progress=progress)
        if not args.json:
            print(f"{args.split} classification error {100 * out['error']:.2f}% (argmax q(y|x))", flush=True)
    if args.k > 0:
        autocast = None if args.autocast == "none" else args.autocast
        out |= _nll(model, params, x, y, k=args.k, seed=seed, elbo=rec - kl, progress=progress, autocast=autocast,
                    threads=getattr(args, "threads", None) or None)  # fmt: skip
    if args.json:
        print(json.dumps({"data": data, "split": args.split, "n": n, "seed": seed, "k": args.k, **out}))
        return 0
    if args.k > 0:
        print(f"{args.split} NLL  {out['nll']:.2f}{_pm(out['nll_se'])} nats (-log p(x), importance-sampled with "
              f"k={args.k}, seed {seed}; log p(x) - ELBO {out['gap']:.2f}{_pm(out['gap_se'])})")  # fmt: skip
    return 0


def _nll(model: VAE, params: Params, x: Tensor, y: Tensor | None, *, k: int, seed: int, elbo: Tensor,
         progress: bool | str, autocast: str | None, threads: int | None = None) -> dict:  # fmt: skip
    """-mean log p(x) with its standard error, and the gap log p(x) - ELBO with its paired standard error
    (``elbo``: each example's single-sample ELBO, (n,) float64)."""
    ll = estimators.estimate_log_likelihood(model, params, x, y, k=k, seed=seed, progress=progress, autocast=autocast,
                                            threads=threads)  # fmt: skip
    ll = ll.to("cpu", torch.float64)
    mean_ll, se = _mean_se(ll)
    _, gap_se = _mean_se(ll - elbo)
    return {"nll": -mean_ll, "nll_se": se, "gap": mean_ll - float(elbo.mean()), "gap_se": gap_se}


def _mean_se(v: Tensor) -> tuple[float, float | None]:
    """The mean of (n,) values and its standard error (None for one value)."""
    return float(v.mean()), float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else None


def _pm(se: float | None) -> str:
    return "" if se is None else f" ± {se:.2f}"


def sample(args: Any) -> int:
    """``vaefunc sample``: decoder means of draws from the model's prior (a conditional model's: a row per
    class, or of ``--label``), into the run directory unless ``--out`` says otherwise."""
    out = rundir.picture_out(args.out, args.run, "samples.png")  # before any work
    opened = open_model(args, session.device(args.device))
    grid = figures.sample_grid(opened.model, opened.params, args.n, args.cols, args.seed, args.label)
    print(pictures.save_png(grid, out))
    return 0


def reconstruct(args: Any) -> int:
    """``vaefunc reconstruct``: test inputs above their reconstructions."""
    out = rundir.picture_out(args.out, args.run, "reconstructions.png")  # before any work
    opened, x, y = _picture_inputs(args)
    grid = figures.reconstruction_grid(opened.model, opened.params, x, y, args.n, args.seed)
    print(pictures.save_png(grid, out))
    return 0


def _picture_inputs(args: Any) -> tuple[Any, Tensor, Tensor | None]:
    """A picture command's opened model, its data's images on the device, and their labels (None for an
    unconditional model)."""
    device = session.device(args.device)
    opened = open_model(args, device)
    ds = _data(args, opened)
    return opened, datasets.in_memory(ds).to(device), datasets.labels(opened.model, ds)


def interpolate(args: Any) -> int:
    """``vaefunc interpolate``: decodings along the lines between the codes of test pairs."""
    out = rundir.picture_out(args.out, args.run, "interpolate.png")  # before any work
    opened, x, y = _picture_inputs(args)
    grid = figures.interpolate_grid(opened.model, opened.params, x, y, args.pairs, args.steps, args.seed)
    print(pictures.save_png(grid, out))
    return 0


def traverse(args: Any) -> int:
    """``vaefunc traverse``: one row per latent dimension, around z = 0, sorted by KL on the test split."""
    out = rundir.picture_out(args.out, args.run, "traverse.png")  # before any work
    device = session.device(args.device)
    opened = open_model(args, device)
    c = opened.settings.config
    try:
        ds = _data(args, opened)
    except (OSError, ValueError, UsageError) as e:  # the data moved, or is not the model's: draw it unsorted
        if args.data is not None:
            raise
        session.log(f"vaefunc traverse: note: rows in index order, without their KL ({e}; --data names the "
                    "test data)")  # fmt: skip
        kl = None
    else:
        x = datasets.binarized(ds, c.binarize, one_seed(c), device)  # as the run evaluated it
        kl = figures.kl_order(opened.model, opened.params, x, datasets.labels(opened.model, ds))
    grid = figures.traverse_grid(opened.model, opened.params, args.steps, args.span, args.label, kl=kl)
    print(pictures.save_png(grid, out))
    return 0


def latent(args: Any) -> int:
    """``vaefunc latent``: for a model with 2 latent dimensions, latent.png (the test split's codes,
    coloured by label) and manifold.png (the decoder over a grid of codes), into the run directory unless
    ``--out FOLDER`` says otherwise."""
    folder = rundir.picture_folder(args.out, args.run)  # checked before any work
    device = session.device(args.device)
    opened = open_model(args, device)
    model, c = opened.model, opened.settings.config
    if model.latent_dim != 2:
        raise UsageError(f"vaefunc latent draws a 2-D latent space; {opened.path} has {model.latent_dim} latent "
                         "dimensions (vaefunc traverse shows any number)")  # fmt: skip
    if args.label is not None and not model.n_classes:
        raise UsageError("--label is for a conditional model; this one is unconditional")
    ds = _data(args, opened)
    x = datasets.binarized(ds, c.binarize, one_seed(c), device)  # as the run evaluated it
    split = f"{args.data or opened.settings.data['name']} test split"
    print(figures.latent_scatter(model, opened.params, x, datasets.labels(model, ds), ds.labels, folder / "latent.png",
                                 what=split))  # fmt: skip
    grid = figures.manifold_grid(model, opened.params, args.steps, args.span, args.label)
    print(pictures.save_png(grid, folder / "manifold.png"))
    return 0
