"""The ``vaefunc`` command: train, eval, sample, reconstruct, interpolate, traverse.

``vaefunc train`` with no arguments trains the default model (784-400-20 on the
embedded mnist5k digits, 10 epochs) and writes a run directory::

    runs/NAME/
      config.json              every setting, the data, the vaefunc and torch versions
      metrics.jsonl            one JSON line per epoch (train and test loss, ELBO, rec, KL), flushed as it goes
      checkpoint.safetensors   params, Adam state, step, epoch, RNG states (written every epoch, atomically)
      reconstructions.png      test inputs (top row) above their reconstructions
      samples.png              decoder means of 64 draws from the prior
      traverse.png             one row per latent dimension, from -3 to 3
      interpolate.png          straight lines between the codes of test pairs
      loss.png                 -ELBO, reconstruction and KL per epoch, train and test

Ctrl-C (SIGINT) or SIGTERM during training finishes the current step, writes
the checkpoint, prints how to resume, and exits with 128 + the signal number;
``vaefunc train --out runs/NAME --resume`` continues bit for bit.

``--preset NAME`` (see :mod:`vaefunc.presets`) sets the architecture and its
hidden activation, objective, k, batch size, epochs, likelihood, binarization
and Adam's lr schedule; flags given explicitly override it. The activation is
saved in the run's config (config.json and the checkpoint's metadata), and
``eval``, ``sample``, ``reconstruct``, ``interpolate`` and ``traverse`` run the
model with it (relu for runs and checkpoints saved without one). ``--kl-schedule`` takes
``warmup:STEPS[:BETA]`` (:func:`vaefunc.linear_warmup`),
``capacity:GAMMA:CMAX:STEPS`` (:func:`vaefunc.capacity_annealing`) or
``free-bits:LAMBDA`` (:func:`vaefunc.free_bits`), STEPS counting optimizer steps.

Bad arguments print one line and exit with 2; a non-finite loss exits with 1.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import __version__
from . import data as vdata
from ._io import atomic_write_text
from .checkpoint import load, model_config, save
from .estimators import log_likelihood
from .likelihoods import LIKELIHOODS, LOGSTD_KEY
from .losses import OBJECTIVES, elbo_terms
from .model import ACTIVATIONS, data_dim, encode, init, latent_dim
from .optim import Optimizer, adam
from .pictures import image_grid, interpolation, plot_history, reconstructions, save_png, traversal
from .presets import PRESETS
from .priors import PRIORS, init_prior, prior_kind
from .schedules import KLSchedule, capacity_annealing, free_bits, iwae_paper_lr, linear_warmup
from .train import NonFiniteLossError, TrainState, should_compile, train

DEFAULT_DATA = "mnist5k"
RUNS = Path("runs")
CHECKPOINT = "checkpoint.safetensors"
PICTURES = ("reconstructions.png", "samples.png", "traverse.png", "interpolate.png", "loss.png")
FILES = ("config.json", "metrics.jsonl", CHECKPOINT, *PICTURES)
EVAL_BATCH = 1000
# Settings that a resumed run may change; every other one must match the run's config.json.
RESUMABLE = ("epochs", "device", "progress", "out", "resume")
KL_SCHEDULES = "warmup:STEPS[:BETA], capacity:GAMMA:CMAX:STEPS or free-bits:LAMBDA"
# The settings a preset fixes, by the flag that overrides each: flag -> (section, key) of the preset.
PRESET_FLAGS = {
    "latent-dim": ("init", "latent_dim"), "hidden": ("init", "hidden"), "objective": ("train", "objective"),
    "k": ("train", "k"), "batch-size": ("train", "batch_size"), "epochs": ("train", "epochs"),
    "likelihood": ("train", "likelihood"), "binarize": ("train", "binarize"), "lr": ("optimizer", "base_lr"),
    "activation": ("train", "activation"),
}  # fmt: skip
# Adam as `train` builds it when no preset names another optimizer.
DEFAULT_OPTIMIZER = {"name": "adam", "lr": "constant", "b1": 0.9, "b2": 0.999, "eps": 1e-8}


class UsageError(Exception):
    """Bad arguments found after parsing: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``vaefunc train: error: ... (see --help)``, exit 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every default, except the uninformative None and False."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The ``vaefunc`` parser with its six commands."""
    fmt = _Formatter
    parser = _Parser(prog="vaefunc", description="Train and inspect functional VAEs.", formatter_class=fmt,
                     allow_abbrev=False)  # fmt: skip
    parser.add_argument("--version", action="version", version=f"vaefunc {__version__} (torch {torch.__version__})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, formatter_class=fmt, allow_abbrev=False)
        p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda when available")
        return p

    def data_options(p: argparse.ArgumentParser, default: str | None) -> None:
        p.add_argument("--data", default=default, help=f"a dataset name {sorted(vdata.DATASETS)} or a path "
                       "(IDX files or their folder, mnist.pkl.gz, .npz, .npy, a folder of PNG/JPEG images)"
                       + ("" if default else "; default: the run's data"))  # fmt: skip
        p.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                       help="use at most N examples of each split (a fixed random subset)")  # fmt: skip
        p.add_argument("--size", type=_positive_int, nargs="+", metavar="PX", default=None,
                       help="resize images of a folder to H [W] pixels")  # fmt: skip
        p.add_argument("--color", choices=("gray", "rgb"), default=None, help="convert images of a folder")

    def run_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="a run directory or a .safetensors checkpoint")
        p.add_argument("--activation", choices=ACTIVATIONS, default=None,
                       help="the model's hidden activation, for a checkpoint saved without one (default: the "
                       "run's; relu when none is saved); a run that saved one must be given the same")  # fmt: skip

    p = command("train", "Train a VAE and write a run directory (checkpoint, metrics, pictures).")
    data_options(p, DEFAULT_DATA)
    p.add_argument("--epochs", type=_nonneg_int, default=10, help="passes over the training data")
    p.add_argument("--latent-dim", type=_positive_int, default=20, help="latent dimensions")
    p.add_argument("--hidden", type=_positive_int, nargs="*", default=[400], metavar="H",
                   help="hidden layer widths (none: a linear encoder and decoder)")  # fmt: skip
    p.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                   help="the hidden layers' activation (saved in the run's config; eval and the picture "
                   "commands use it)")  # fmt: skip
    p.add_argument("--beta", type=_nonneg_float, default=1.0, help="weight of the KL term (beta-VAE)")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam's learning rate")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="examples per step")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seeds init, shuffle, noise and binarization")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="a named setup (vaefunc.presets): sets --latent-dim, --hidden, --activation, --objective, --k, "
                   "--batch-size, --epochs, --likelihood, --binarize and Adam's lr schedule (--lr: its base); "
                   "flags given explicitly override it")  # fmt: skip
    p.add_argument("--objective", choices=OBJECTIVES, default="elbo",
                   help="elbo, or iwae: the importance-weighted bound with --k samples")  # fmt: skip
    p.add_argument("--k", type=_positive_int, default=5, help="importance samples per example (--objective iwae)")
    p.add_argument("--likelihood", choices=LIKELIHOODS, default="bernoulli", help="p(x|z)")
    p.add_argument("--obs-std", type=_positive_float, default=1.0,
                   help="the gaussian likelihood's standard deviation (initial, with --learn-obs-std)")  # fmt: skip
    p.add_argument("--learn-obs-std", choices=("none", "global", "pixel"), default="none",
                   help="learn the gaussian likelihood's log-std: one, or one per pixel")  # fmt: skip
    p.add_argument("--kl-schedule", type=_kl_schedule, default=None, metavar="SPEC",
                   help=f"the KL term: {KL_SCHEDULES} (STEPS: optimizer steps; default: the constant --beta)")
    p.add_argument("--prior", choices=PRIORS, default="normal",
                   help="p(z): the standard normal, a learnable mixture of Gaussians, or the VampPrior")  # fmt: skip
    p.add_argument("--prior-components", type=_positive_int, default=10, metavar="C",
                   help="mixture components or pseudo-inputs of --prior mog|vamp")  # fmt: skip
    p.add_argument("--binarize", choices=("none", "static", "dynamic"), default="none",
                   help="static: x > 0.5 once; dynamic: a fresh Bernoulli sample at every step")  # fmt: skip
    p.add_argument("--compile", choices=("auto", "yes", "no"), default="auto",
                   help="torch.compile the step; auto: on CUDA, or on CPU when the run is long enough "
                   "to repay the compile time")  # fmt: skip
    p.add_argument("--out", default=None, help="run directory; default: runs/DATA, numbered -2, -3, ... if taken")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="the progress bar; auto: when stderr is a terminal")  # fmt: skip
    p.set_defaults(func=cmd_train)

    p = command("eval", "Test-set ELBO and its parts, and the importance-sampled NLL, for a run or checkpoint.")
    run_arg(p)
    data_options(p, None)
    p.add_argument("--split", default="test", help="the split to evaluate")
    p.add_argument("--k", type=_nonneg_int, default=5000,
                   help="importance samples per example of the NLL estimate (0: skip it)")  # fmt: skip
    p.add_argument("--seed", type=_nonneg_int, default=None, help="seeds eps (default: the run's seed)")
    p.add_argument("--json", action="store_true", help="print the numbers as one JSON object")
    p.set_defaults(func=cmd_eval)

    p = command("sample", "Decoder means of draws from the prior, as a PNG grid.")
    run_arg(p)
    p.add_argument("--n", type=_positive_int, default=64, help="number of samples")
    p.add_argument("--cols", type=_positive_int, default=8, help="images per row")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seeds z")
    p.add_argument("--out", default="samples.png", help="PNG file to write")
    p.set_defaults(func=cmd_sample)

    p = command("reconstruct", "Test inputs (top row) above their reconstructions, as a PNG grid.")
    run_arg(p)
    data_options(p, None)
    p.add_argument("--n", type=_positive_int, default=10, help="number of inputs")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="picks the inputs")
    p.add_argument("--out", default="reconstructions.png", help="PNG file to write")
    p.set_defaults(func=cmd_reconstruct)

    p = command("interpolate", "Decodings along straight lines between the codes of test pairs, as a PNG grid.")
    run_arg(p)
    data_options(p, None)
    p.add_argument("--pairs", type=_positive_int, default=5, help="rows: pairs of test inputs")
    p.add_argument("--steps", type=_positive_int, default=10, help="images per row")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="picks the pairs")
    p.add_argument("--out", default="interpolate.png", help="PNG file to write")
    p.set_defaults(func=cmd_interpolate)

    p = command("traverse", "Latent traversal: one row per latent dimension, values from -range to range.")
    run_arg(p)
    p.add_argument("--steps", type=_positive_int, default=11, help="images per row")
    p.add_argument("--range", type=_positive_float, default=3.0, dest="span", help="largest |z|")
    p.add_argument("--out", default="traverse.png", help="PNG file to write")
    p.set_defaults(func=cmd_traverse)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script's entry point)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    args.given = _given(parser, argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"vaefunc {args.command}: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"vaefunc {args.command}: error: {e}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, FileNotFoundError, ImportError) as e:
        # Bad input found by the library (unknown dataset, corrupt file, wrong shapes...): one line, exit 2.
        print(f"vaefunc {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vaefunc {args.command}: interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    device = _device(args.device)
    # --- data parallel: under torchrun (WORLD_SIZE > 1) train with distributed=True; only rank 0 writes ---
    ctx = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from . import distributed as dp

        ctx = dp.setup(device)
        device = ctx.device
    writer = ctx is None or ctx.rank == 0
    # --- end data parallel ---
    if args.resume:
        if args.out is None:
            raise UsageError("--resume needs --out RUN_DIR, the run to continue")
        run = Path(args.out)
        settings = _resume_settings(run, args)
    else:
        run = Path(args.out) if args.out is not None else _fresh_run_dir(args.data)
        if (run / CHECKPOINT).exists():  # a config.json alone: a run stopped before its first step
            raise UsageError(f"{run} already holds a run: pass --resume to continue it, or choose another --out")
        settings = _settings(args)
        _check_settings(settings, args.given)
    settings["device"] = str(device)

    train_ds, test_ds = _load_splits(settings)
    input_shape = list(train_ds.images.shape[1:])
    if args.resume:
        ckpt = load(run / CHECKPOINT, device=device)
        if ckpt.state is None:
            raise UsageError(f"{run / CHECKPOINT} holds no training state to resume from")
        params, state = ckpt.params, ckpt.state
        if list(settings["input_shape"]) != input_shape:
            raise UsageError(f"the data's images are {input_shape}; the run was trained on {settings['input_shape']}")
        if writer:
            atomic_write_text(run / "config.json", json.dumps(settings, indent=2) + "\n")
    else:
        params = init(input_shape, latent_dim=settings["latent_dim"], hidden=tuple(settings["hidden"]),
                      seed=settings["seed"], device=device)  # fmt: skip
        if settings["prior"] != "normal":
            params = init_prior(params, settings["prior"], n_components=settings["prior_components"],
                                seed=settings["seed"])  # fmt: skip
        state = None
        settings |= {"input_shape": input_shape, "n_train": train_ds.images.shape[0], "n_test": test_ds.images.shape[0]}
        if writer:
            run.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run / "config.json", json.dumps(settings, indent=2) + "\n")

    binarize = settings["binarize"]
    x_test = vdata.binarize(test_ds.images, binarize, seed=settings["seed"]).to(device)
    eps_test = _eval_eps(x_test.shape[0], latent_dim(params), settings["seed"], device)
    metrics_path = run / "metrics.jsonl"
    rows = _metrics_rows(metrics_path, upto=state.epoch if state is not None else 0)
    if writer:
        atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
    steps_per_epoch = train_ds.images.shape[0] // settings["batch_size"]
    samples = settings["batch_size"] * (settings["k"] if settings["objective"] == "iwae" else 1)  # as train counts
    compiled = should_compile(
        _compile_flag(settings["compile"]), device, params, samples, steps_per_epoch * settings["epochs"]
    )
    obs_std = settings["obs_std"]
    stop = _StopFlag()
    # Ranks other than 0 never call on_epoch (train(distributed=True) calls it on rank 0 only).
    with open(metrics_path if writer else os.devnull, "a", encoding="utf-8") as metrics_file:

        def on_epoch(entry: dict[str, float], st: TrainState) -> None:
            test = evaluate(st.params, x_test, eps_test, beta=settings["beta"], likelihood=settings["likelihood"],
                            obs_std=obs_std, activation=settings["activation"])  # fmt: skip
            row = {"epoch": entry["epoch"], "step": entry["epoch"] * steps_per_epoch}
            row |= {f"train_{k}": entry[k] for k in ("loss", "elbo", "recon", "kl")}
            row |= {f"test_{k}": v for k, v in test.items()}
            row |= {"seconds": entry["seconds"], "examples_per_s": entry["examples_per_s"]}
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()
            os.fsync(metrics_file.fileno())
            rows.append(row)
            save(run / CHECKPOINT, st.params, config=settings, state=st)
            _log(f"epoch {row['epoch']}/{settings['epochs']}  train loss {row['train_loss']:.2f}  "
                 f"test ELBO {row['test_elbo']:.2f}  KL {row['test_kl']:.2f}  "
                 f"{entry['examples_per_s']:,.0f} ex/s")  # fmt: skip

        t_train = time.perf_counter()
        with stop.installed():
            try:
                result = train(
                    params, train_ds.images, epochs=settings["epochs"], batch_size=settings["batch_size"],
                    lr=settings["lr"], beta=settings["beta"], likelihood=settings["likelihood"],
                    binarize=binarize, seed=settings["seed"], compile=_compile_flag(settings["compile"]),
                    device=device, progress={"auto": True, "always": "always", "never": False}[args.progress],
                    resume=state, on_epoch=on_epoch, should_stop=stop, objective=settings["objective"],
                    k=settings["k"], kl_schedule=parse_kl_schedule(settings["kl_schedule"]), obs_std=obs_std,
                    learn_obs_std=settings["learn_obs_std"], optimizer=_optimizer(settings, steps_per_epoch),
                    distributed=ctx is not None, activation=settings["activation"],
                )  # fmt: skip
            except NonFiniteLossError as e:
                if not writer:
                    raise
                path = save(run / "last_finite.safetensors", e.params, opt_state=e.opt_state, config=settings)
                raise NonFiniteLossError(
                    f"{e} The last finite params are in {path}.",
                    epoch=e.epoch, step=e.step, params=e.params, opt_state=e.opt_state, history=e.history,
                ) from e  # fmt: skip
        seconds = time.perf_counter() - t_train
    if not writer:
        return (128 + (stop.signum or 2)) if result.interrupted else 0  # 2: SIGINT on another rank
    if result.interrupted:
        path = save(run / CHECKPOINT, result.params, config=settings, state=result.state)
        st = result.state
        resume = f"vaefunc train --out {shlex.quote(str(run))} --resume"
        print(f"vaefunc: interrupted at epoch {st.epoch + 1}, step {st.step} of {steps_per_epoch}; "
              f"the checkpoint is in {path}\nresume with: {resume}", file=sys.stderr)  # fmt: skip
        return 128 + stop.signum
    save(run / CHECKPOINT, result.params, config=settings, state=result.state)  # also when epochs == 0
    write_pictures(run, result.params, x_test, settings)
    plot_history(rows, run / "loss.png")
    print(_summary(run, settings, rows, seconds, time.perf_counter() - t_start, compiled, device))
    return 0


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """config.json: every setting of a new run (the preset's, then the flags given), and the versions."""
    values = {flag: getattr(args, flag.replace("-", "_")) for flag in PRESET_FLAGS}
    optimizer = dict(DEFAULT_OPTIMIZER)
    if args.preset is not None:
        preset = PRESETS[args.preset]
        for flag, (section, key) in PRESET_FLAGS.items():
            if flag not in args.given and key in preset[section]:
                values[flag] = preset[section][key]
        optimizer = {k: v for k, v in preset["optimizer"].items() if k != "base_lr"}
    return {
        "data": _data_name(args.data),
        "limit": args.limit,
        "size": args.size,
        "color": args.color,
        "preset": args.preset,
        "latent_dim": values["latent-dim"],
        "hidden": list(values["hidden"]),
        "activation": values["activation"],
        "prior": args.prior,
        "prior_components": args.prior_components if args.prior != "normal" else None,
        "likelihood": values["likelihood"],
        "obs_std": args.obs_std,
        "learn_obs_std": None if args.learn_obs_std == "none" else args.learn_obs_std,
        "objective": values["objective"],
        "k": values["k"],
        "beta": args.beta,
        "kl_schedule": args.kl_schedule,
        "epochs": values["epochs"],
        "batch_size": values["batch-size"],
        "lr": values["lr"],
        "optimizer": optimizer,
        "seed": args.seed,
        "binarize": None if values["binarize"] in (None, "none") else values["binarize"],
        "compile": args.compile,
        "vaefunc_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "command": "vaefunc " + shlex.join(args.argv),
    }


# The settings of runs written before they existed, as those runs used them.
_OLD_RUN_DEFAULTS = {
    "preset": None, "prior": "normal", "prior_components": None, "likelihood": "bernoulli", "obs_std": 1.0,
    "learn_obs_std": None, "objective": "elbo", "k": 5, "beta": 1.0, "kl_schedule": None,
    "optimizer": DEFAULT_OPTIMIZER, "seed": 0, "binarize": None, "activation": "relu",
}  # fmt: skip


def _with_old_defaults(settings: dict[str, Any]) -> dict[str, Any]:
    return {**{k: copy.deepcopy(v) for k, v in _OLD_RUN_DEFAULTS.items()}, **settings}


def _check_settings(settings: dict[str, Any], given: set[str]) -> None:
    """Combinations of flags that train would reject, reported before any work, in terms of flags."""
    iwae = settings["objective"] == "iwae"
    if iwae and (settings["beta"] != 1.0 or settings["kl_schedule"] is not None):
        raise UsageError("the iwae objective takes no --beta or --kl-schedule (the bound has no KL weight)")
    if not iwae and "k" in given:
        raise UsageError(f"--k sets the samples of --objective iwae; this run's objective is {settings['objective']}")
    if settings["kl_schedule"] is not None and settings["beta"] != 1.0:
        raise UsageError("give --beta or --kl-schedule, not both (warmup:STEPS:BETA warms up to BETA)")
    if settings["learn_obs_std"] is not None and settings["likelihood"] != "gaussian":
        raise UsageError(f"--learn-obs-std needs --likelihood gaussian; got --likelihood {settings['likelihood']}")
    schedule = parse_kl_schedule(settings["kl_schedule"])
    if schedule is not None and schedule.form == "free_bits" and settings["prior"] != "normal":
        raise UsageError("--kl-schedule free-bits needs --prior normal (a closed-form KL per latent dimension)")
    if "prior-components" in given and settings["prior"] == "normal":
        raise UsageError("--prior-components sets the size of --prior mog or vamp; this run's prior is normal")
    if "obs-std" in given and settings["likelihood"] != "gaussian":
        raise UsageError(f"--obs-std needs --likelihood gaussian; got --likelihood {settings['likelihood']}")


def parse_kl_schedule(spec: str | None) -> KLSchedule | None:
    """The :class:`vaefunc.KLSchedule` that a ``--kl-schedule`` string names; None for None.

    ``warmup:STEPS[:BETA]`` is :func:`vaefunc.linear_warmup` (beta from 0 to BETA,
    default 1, over STEPS optimizer steps); ``capacity:GAMMA:CMAX:STEPS`` is
    :func:`vaefunc.capacity_annealing` (gamma * |KL - C|, C from 0 to CMAX nats
    over STEPS); ``free-bits:LAMBDA`` is :func:`vaefunc.free_bits` (LAMBDA nats
    per latent dimension).

    Raises:
        ValueError: naming the forms, for anything else.

    Example:
        >>> parse_kl_schedule("warmup:1000").beta(torch.tensor([0, 500]))
        tensor([0.0000, 0.5000], dtype=torch.float64)
    """
    if spec is None:
        return None
    name, *fields = spec.split(":")
    try:
        if name == "warmup" and len(fields) in (1, 2):
            return linear_warmup(int(fields[0]), beta=float(fields[1]) if len(fields) == 2 else 1.0)
        if name == "capacity" and len(fields) == 3:
            return capacity_annealing(float(fields[1]), int(fields[2]), gamma=float(fields[0]))
        if name == "free-bits" and len(fields) == 1:
            return free_bits(float(fields[0]))
    except ValueError as e:
        raise ValueError(f"expected {KL_SCHEDULES}; got {spec!r} ({e})") from None
    raise ValueError(f"expected {KL_SCHEDULES}; got {spec!r}")


def _optimizer(settings: dict[str, Any], steps_per_epoch: int) -> Optimizer | None:
    """The run's optimizer; None for train's own ``adam(lr)``."""
    opt = settings["optimizer"]
    if opt == DEFAULT_OPTIMIZER:
        return None
    if opt.get("name") != "adam" or opt.get("lr") not in ("constant", "iwae-paper"):
        raise UsageError(f"unknown optimizer {opt} in the run's settings; expected adam, lr constant or iwae-paper")
    lr = settings["lr"]
    if opt["lr"] == "iwae-paper":
        lr = iwae_paper_lr(max(1, steps_per_epoch), base=settings["lr"], stages=opt["stages"])
    return adam(lr, b1=opt["b1"], b2=opt["b2"], eps=opt["eps"])


def _data_name(data: str) -> str:
    """A dataset name as it is; a path made absolute, so --resume and eval work from any folder."""
    if data in vdata.DATASETS or not Path(data).exists():
        return data
    return str(Path(data).resolve())


def _resume_settings(run: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The run's config.json, with --epochs (and --device) from the command line; other
    settings given on the command line must equal the run's."""
    config_path = run / "config.json"
    if not config_path.is_file() or not (run / CHECKPOINT).is_file():
        raise UsageError(f"{run} holds no run to resume (expected {config_path} and {run / CHECKPOINT})")
    settings = _with_old_defaults(json.loads(config_path.read_text(encoding="utf-8")))
    new = _settings(args)
    for key in args.given:
        name = {"latent-dim": "latent_dim", "batch-size": "batch_size"}.get(key, key).replace("-", "_")
        if name in RESUMABLE or name not in new:
            continue
        if new[name] != settings.get(name):
            raise UsageError(
                f"--{key} {new[name]!r} differs from the run's {settings.get(name)!r}; a resumed run keeps its "
                "settings (only --epochs and --device may change)"
            )
    device = _device(args.device)
    if torch.device(settings.get("device", "cpu")).type != device.type:
        raise UsageError(
            f"the run trained on {settings.get('device')}; resume it there (--device "
            f"{torch.device(settings.get('device', 'cpu')).type}): its random generators' states are device-specific"
        )
    settings["epochs"] = args.epochs if "epochs" in args.given else settings["epochs"]
    settings["resumed_with"] = "vaefunc " + shlex.join(args.argv)
    return settings


def _given(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The long options present on the command line, without dashes (``latent-dim``)."""
    del parser
    return {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")}


def _fresh_run_dir(data: str) -> Path:
    stem = Path(str(data)).name.split(".")[0] or "run"
    run, k = RUNS / stem, 2
    while run.exists():
        run, k = RUNS / f"{stem}-{k}", k + 1
    return run


def _metrics_rows(path: Path, *, upto: int) -> list[dict[str, Any]]:
    """The metrics lines of the epochs up to ``upto`` (a resumed run rewrites the rest)."""
    if upto == 0 or not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if r["epoch"] <= upto]


def _compile_flag(value: str) -> bool | str:
    return {"auto": "auto", "yes": True, "no": False}[value]


class _StopFlag:
    """Set by SIGINT / SIGTERM; ``train`` polls it after every step. A second signal quits at once."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        _log(f"\nvaefunc: {signal.Signals(signum).name}: finishing this step and writing a checkpoint "
             "(send it again to quit at once)")  # fmt: skip

    @contextlib.contextmanager
    def installed(self):
        """Handle SIGINT and SIGTERM inside the block; the previous handlers come back after it."""
        old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def _summary(run: Path, settings: dict, rows: list[dict], train_s: float, total_s: float, compiled: bool,
             device: torch.device) -> str:  # fmt: skip
    arch = "-".join(str(v) for v in (math.prod(settings["input_shape"]), *settings["hidden"], settings["latent_dim"]))
    if settings["activation"] != "relu":
        arch += f" ({settings['activation']})"
    last = rows[-1] if rows else None
    lines = [
        f"vaefunc: trained {arch} on {settings['data']} ({settings['n_train']} train / {settings['n_test']} test "
        f"examples) for {settings['epochs']} epochs in {train_s:.1f} s ({'compiled' if compiled else 'eager'}, "
        f"{device}; {total_s:.1f} s in all)"
    ]
    objective = f"IWAE k={settings['k']}" if settings["objective"] == "iwae" else "ELBO"
    lines.append(f"  objective {objective}, {settings['likelihood']} likelihood, {settings['prior']} prior"
                 + (f", KL schedule {settings['kl_schedule']}" if settings["kl_schedule"] else "")
                 + (f", preset {settings['preset']}" if settings["preset"] else ""))  # fmt: skip
    if last is not None:
        lines.append(f"  test ELBO  {last['test_elbo']:.2f} nats  (reconstruction {last['test_recon']:.2f}, "
                     f"KL {last['test_kl']:.2f})")  # fmt: skip
        lines.append(f"  train ELBO {last['train_elbo']:.2f} nats  (mean over the last epoch's steps)")
    lines.append(f"  files in {run}/: {' '.join(FILES)}")
    lines.append(f"  next: vaefunc eval {shlex.quote(str(run))}   vaefunc sample {shlex.quote(str(run))}")
    return "\n".join(lines)


def _log(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


# ---------------------------------------------------------------- evaluation


def _eval_eps(n: int, zdim: int, seed: int, device: torch.device) -> Tensor:
    """Fixed noise for test ELBOs: the same eps at every epoch, from a generator seeded with ``seed``."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(n, zdim, generator=gen, device=device)


@torch.no_grad()
def evaluate(
    params,
    x: Tensor,
    eps: Tensor,
    *,
    beta: float = 1.0,
    likelihood: str = "bernoulli",
    obs_std: float = 1.0,
    activation: str = "relu",
) -> dict[str, float]:
    """Mean single-sample ELBO of ``x`` with the given eps, and its parts, in nats.

    Args:
        x: (n, *input_shape); eps: (n, z).

    Returns:
        {"loss": -(rec - beta * kl), "elbo": rec - kl, "recon": log p(x|z), "kl": KL}, means over n.

    Example:
        >>> evaluate(params, x_test, torch.randn(len(x_test), 20, generator=g))["elbo"]
    """
    rec, kl = elbo_per_example(params, x, eps, likelihood=likelihood, obs_std=obs_std, activation=activation)
    rec, kl = float(rec.mean()), float(kl.mean())
    return {"loss": beta * kl - rec, "elbo": rec - kl, "recon": rec, "kl": kl}


@torch.no_grad()
def elbo_per_example(
    params, x: Tensor, eps: Tensor, *, likelihood: str = "bernoulli", obs_std: float = 1.0, activation: str = "relu"
) -> tuple[Tensor, Tensor]:
    """log p(x|z) at z = mu + sigma * eps, and the KL, of each example, in chunks.

    Args:
        x: (n, *input_shape); eps: (n, z).

    Returns:
        rec, kl: (n,) each, float64 on the CPU.
    """
    dtype = next(iter(params.values())).dtype
    recs, kls = [], []
    for i in range(0, x.shape[0], EVAL_BATCH):
        xb = x[i : i + EVAL_BATCH].reshape(-1, data_dim(params)).to(dtype)
        rec, kl = elbo_terms(params, xb, eps[i : i + EVAL_BATCH], likelihood=likelihood, obs_std=obs_std,
                             activation=activation)  # fmt: skip
        recs.append(rec.to("cpu", torch.float64))  # a sync point, once per chunk
        kls.append(kl.to("cpu", torch.float64))
    return torch.cat(recs), torch.cat(kls)


def _pm(se: float | None) -> str:
    return "" if se is None else f" ± {se:.2f}"


def _mean_se(v: Tensor) -> tuple[float, float | None]:
    """The mean of (n,) values and its standard error (None for one value)."""
    return float(v.mean()), float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else None


# ---------------------------------------------------------------- commands on a trained model


def _open_run(path: str, device: torch.device, activation: str | None = None) -> tuple[dict, dict[str, Any], Path]:
    """params, settings and the run folder of a run directory or a checkpoint file.

    ``activation`` (``--activation``) is for checkpoints saved without one; a
    run that saved one is run with it, and a different one is a usage error.
    """
    p = Path(path)
    ckpt_path = p / CHECKPOINT if p.is_dir() else p
    if p.is_dir() and not ckpt_path.is_file():
        raise FileNotFoundError(f"{p} holds no {CHECKPOINT}; is it a run directory?")
    ckpt = load(ckpt_path, device=device)
    settings = dict(ckpt.config or {})
    if not settings and (ckpt_path.parent / "config.json").is_file():
        settings = json.loads((ckpt_path.parent / "config.json").read_text(encoding="utf-8"))
    if activation is not None:
        if settings.get("activation", activation) != activation:
            raise UsageError(f"--activation {activation} differs from the {settings['activation']} the model was "
                             f"trained with (saved in {ckpt_path})")  # fmt: skip
        settings["activation"] = activation
    if "likelihood" not in settings and LOGSTD_KEY in ckpt.params:  # a bare checkpoint of a learned-std model
        settings["likelihood"] = "gaussian"
    if not settings.get("input_shape"):
        d = model_config(ckpt.params)["data_dim"]
        s = math.isqrt(d)
        settings["input_shape"] = [1, s, s] if s * s == d else [1, 1, d]
    return ckpt.params, _with_old_defaults(settings), ckpt_path.parent


def _load_splits(settings: dict[str, Any]) -> tuple[vdata.Dataset, vdata.Dataset]:
    return _load(settings, "train"), _load(settings, "test")


def _load(settings: dict[str, Any], split: str, data: str | None = None, limit: int | None = None) -> vdata.Dataset:
    options: dict[str, Any] = {}
    size = settings.get("size")
    if size:
        if len(size) > 2:
            raise UsageError(f"--size takes H or H W; got {size}")
        options["size"] = tuple(size) if len(size) == 2 else size[0]
    if settings.get("color"):
        options["color"] = settings["color"]
    return vdata.load(data or settings.get("data") or DEFAULT_DATA, split=split,
                      limit=limit if limit is not None else settings.get("limit"), **options)  # fmt: skip


def _data_for(args: argparse.Namespace, settings: dict[str, Any], params, split: str = "test") -> vdata.Dataset:
    """The data a command on a trained model reads: --data or the run's, checked against the model."""
    merged = dict(settings)
    for key in ("size", "color"):
        if getattr(args, key, None) is not None:
            merged[key] = getattr(args, key)
    ds = _load(merged, split, data=args.data, limit=args.limit)
    d, shape = model_config(params)["data_dim"], list(ds.images.shape[1:])
    if math.prod(shape) != d:
        raise UsageError(f"the data's images are {shape} ({math.prod(shape)} features); the model reads {d}")
    return ds


def cmd_eval(args: argparse.Namespace) -> int:
    device = _device(args.device)
    params, settings, _ = _open_run(args.run, device, args.activation)
    ds = _data_for(args, settings, params, split=args.split)
    seed = settings["seed"] if args.seed is None else args.seed
    lik, obs_std, act = settings["likelihood"], settings["obs_std"], settings["activation"]
    x = vdata.binarize(ds.images, settings["binarize"], seed=seed).to(device)
    eps = _eval_eps(x.shape[0], latent_dim(params), seed, device)
    rec, kl = elbo_per_example(params, x, eps, likelihood=lik, obs_std=obs_std, activation=act)
    out: dict[str, Any] = {"elbo": float((rec - kl).mean()), "recon": float(rec.mean()), "kl": float(kl.mean())}
    out["loss"] = settings["beta"] * out["kl"] - out["recon"]
    if args.k > 0:
        ll = log_likelihood(params, x, k=args.k, seed=seed, likelihood=lik, obs_std=obs_std, activation=act)
        ll = ll.to("cpu", torch.float64)
        mean_ll, se = _mean_se(ll)
        gap, gap_se = _mean_se(ll - (rec - kl))
        out |= {"nll": -mean_ll, "nll_se": se, "gap": gap, "gap_se": gap_se}
    data = args.data or settings.get("data") or DEFAULT_DATA
    if args.json:
        print(json.dumps({"data": data, "split": args.split, "n": x.shape[0], "seed": seed, "k": args.k, **out}))
        return 0
    print(f"{args.split} ELBO {out['elbo']:.2f} nats (reconstruction {out['recon']:.2f}, KL {out['kl']:.2f}) "
          f"on {x.shape[0]} examples of {data} ({args.split} split; single-sample, eps seed {seed})")  # fmt: skip
    if args.k > 0:
        print(f"{args.split} NLL  {out['nll']:.2f}{_pm(out['nll_se'])} nats (-log p(x), importance-sampled with "
              f"k={args.k}, seed {seed}; log p(x) - ELBO {out['gap']:.2f}{_pm(out['gap_se'])})")  # fmt: skip
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    device = _device(args.device)
    params, settings, _ = _open_run(args.run, device, args.activation)
    images = sample_images(params, settings, args.n, seed=args.seed)
    print(save_png(image_grid(images, args.cols), args.out))
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    device = _device(args.device)
    params, settings, _ = _open_run(args.run, device, args.activation)
    ds = _data_for(args, settings, params)
    x = _spread(ds.images.reshape(-1, *settings["input_shape"]), args.n, args.seed).to(device)
    images = reconstructions(params, x, likelihood=settings["likelihood"], activation=settings["activation"])
    print(save_png(image_grid(images, x.shape[0]), args.out))
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    device = _device(args.device)
    params, settings, _ = _open_run(args.run, device, args.activation)
    ds = _data_for(args, settings, params)
    xa, xb = _pairs(ds.images.reshape(-1, *settings["input_shape"]).to(device), args.pairs, args.seed)
    images = interpolation(params, xa, xb, steps=args.steps, likelihood=settings["likelihood"],
                           activation=settings["activation"])  # fmt: skip
    print(save_png(image_grid(images, args.steps), args.out))
    return 0


def cmd_traverse(args: argparse.Namespace) -> int:
    device = _device(args.device)
    params, settings, _ = _open_run(args.run, device, args.activation)
    images = traversal(params, settings["input_shape"], steps=args.steps, span=args.span,
                       likelihood=settings["likelihood"], activation=settings["activation"])  # fmt: skip
    print(save_png(image_grid(images, args.steps), args.out))
    return 0


def sample_images(params, settings: dict[str, Any], n: int, *, seed: int = 0) -> Tensor:
    from .pictures import mean_images

    w = params["decoder.0.weight"]
    gen = torch.Generator(device=w.device).manual_seed(seed)
    act = settings.get("activation", "relu")
    with torch.no_grad():
        z = prior_draws(params, n, gen, activation=act)
        return mean_images(params, z, settings["input_shape"], likelihood=settings["likelihood"], activation=act)


def prior_draws(params, n: int, gen: torch.Generator, *, activation: str = "relu") -> Tensor:
    """n draws of z from the model's prior (see :mod:`vaefunc.priors`): (n, z).

    The standard normal; or a component of the mixture (of Gaussians, or of the
    encoder's posteriors at the VampPrior's pseudo-inputs) picked by its
    weight, then a draw from that Gaussian.
    """
    w = params["decoder.0.weight"]
    kind = prior_kind(params)
    eps = torch.randn(n, latent_dim(params), generator=gen, device=w.device, dtype=w.dtype)
    if kind == "normal":
        return eps
    if kind == "mog":
        means, logvars = params["prior.means"], params["prior.logvars"]
        probs = torch.softmax(params["prior.logits"], dim=-1)
    else:
        means, logvars = encode(params, params["prior.pseudo_inputs"], activation=activation)
        probs = torch.full((means.shape[0],), 1.0 / means.shape[0], device=w.device, dtype=w.dtype)
    comp = torch.multinomial(probs, n, replacement=True, generator=gen)
    return means[comp] + torch.exp(0.5 * logvars[comp]) * eps


def _spread(x: Tensor, n: int, seed: int) -> Tensor:
    """n examples picked by a seeded permutation (the embedded test sets are sorted by class)."""
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[perm.to(x.device)]


def _pairs(x: Tensor, pairs: int, seed: int) -> tuple[Tensor, Tensor]:
    """``pairs`` disjoint pairs of examples, picked by a seeded permutation."""
    if x.shape[0] < 2:
        raise UsageError(f"interpolation needs at least 2 examples; the data has {x.shape[0]}")
    pairs = min(pairs, x.shape[0] // 2)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[: 2 * pairs].to(x.device)
    return x[perm[:pairs]], x[perm[pairs:]]


def write_pictures(run: Path, params, x_test: Tensor, settings: dict[str, Any]) -> None:
    """reconstructions.png, samples.png, traverse.png and interpolate.png of a run."""
    shape, kw = settings["input_shape"], {"likelihood": settings["likelihood"], "activation": settings["activation"]}
    x = x_test.reshape(-1, *shape)
    inputs = _spread(x, 10, settings["seed"])
    save_png(image_grid(reconstructions(params, inputs, **kw), inputs.shape[0]), run / "reconstructions.png")
    save_png(image_grid(sample_images(params, settings, 64, seed=settings["seed"]), 8), run / "samples.png")
    save_png(image_grid(traversal(params, shape, steps=11, span=3.0, **kw), 11), run / "traverse.png")
    if x.shape[0] >= 2:
        xa, xb = _pairs(x, 5, settings["seed"])
        save_png(image_grid(interpolation(params, xa, xb, steps=10, **kw), 10), run / "interpolate.png")


# ---------------------------------------------------------------- argument helpers


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here (torch sees none); use --device cpu")
    return torch.device(name)


def _positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def _nonneg_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def _positive_float(text: str) -> float:
    return _number(text, float, lambda v: math.isfinite(v) and v > 0, "a positive finite number")


def _nonneg_float(text: str) -> float:
    return _number(text, float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def _kl_schedule(text: str) -> str:
    try:
        parse_kl_schedule(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _number(text: str, kind, ok, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}")
    return value


if __name__ == "__main__":
    raise SystemExit(main())
