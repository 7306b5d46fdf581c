"""The ``vaefunc`` argument parser: seven commands, one-line errors (exit 2), every default shown.

Flags are parsed and checked one by one here (a number's range, a choice, a
schedule's spelling); combinations of flags are checked by
:mod:`vaefunc.cli.settings`, and the values by :class:`vaefunc.VAE` and
:class:`vaefunc.TrainConfig`, before any work.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence

import torch

from .. import __version__
from .. import data as vdata
from ..losses import OBJECTIVES
from ..nn import ACTIVATIONS
from ..presets import SETUPS
from ..schedules import LR_SCHEDULES, SPECS, parse, parse_lr
from ..spec import ARCHS, LIKELIHOODS, PRIORS
from ..sweep import BETAS

DEFAULT_DATA = "mnist5k"


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
    """The ``vaefunc`` parser; ``args.command`` names the command to run."""
    parser = _Parser(prog="vaefunc", description="Train and inspect functional VAEs.", formatter_class=_Formatter,
                     allow_abbrev=False)  # fmt: skip
    parser.add_argument("--version", action="version", version=f"vaefunc {__version__} (torch {torch.__version__})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, formatter_class=_Formatter, allow_abbrev=False)
        p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda when available")
        p.add_argument("--threads", type=_nonneg_int, default=0, metavar="N",
                       help="torch's intra-op CPU threads; 0: train times its step on one thread and on all the "
                       "cores and keeps the faster (vaefunc.threads), other commands use torch's default")  # fmt: skip
        return p

    _train_parser(command("train", "Train a VAE and write a run directory (checkpoint, metrics, pictures)."))
    _sweep_parser(command("sweep", "Train several VAEs at once (one per --beta, --lr or --seed) and plot their "
                                   "rate against their distortion."))  # fmt: skip
    _model_parsers(command)
    return parser


def _train_parser(p: argparse.ArgumentParser) -> None:
    _data_options(p, DEFAULT_DATA)
    _model_options(p)
    p.add_argument("--beta", type=_nonneg_float, default=1.0, help="weight of the KL term (beta-VAE)")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam's learning rate")
    p.add_argument("--seed", type=_seed, default=0, help="seeds init, shuffle, noise and binarization")
    _training_options(p)
    p.add_argument("--log", choices=("none", "tensorboard"), default="none",
                   help="tensorboard: each epoch's train and test numbers, and the pictures at the end, as "
                   "TensorBoard event files in the run directory (needs the tensorboard package)")  # fmt: skip
    p.add_argument("--out", default=None, help="run directory; default: runs/DATA, numbered -2, -3, ... if taken")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")


def _sweep_parser(p: argparse.ArgumentParser) -> None:
    _data_options(p, DEFAULT_DATA)
    _model_options(p)
    p.add_argument("--beta", type=_nonneg_float, nargs="+", default=list(BETAS), metavar="B",
                   help="the KL weight, one for every model or one per model (with --kl-schedule or --objective iwae: "
                   "1)")  # fmt: skip
    p.add_argument("--lr", type=_positive_float, nargs="+", default=[1e-3], metavar="L",
                   help="Adam's learning rate, one for every model or one per model")  # fmt: skip
    p.add_argument("--seed", type=_seed, nargs="+", default=[0], metavar="S",
                   help="one seed: every model starts from the same init and sees the same batches and noise; "
                   "one per model: model i is seeded with S_i (an ensemble)")  # fmt: skip
    _training_options(p)
    p.add_argument("--out", default=None,
                   help="run directory; default: runs/DATA-sweep, numbered -2, -3, ... if taken")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue the sweep in --out from its checkpoint")


def _data_options(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--data", default=default, help=f"a dataset name {sorted(vdata.DATASETS)} or a path "
                   "(IDX files or their folder, mnist.pkl.gz, .npz, .npy, a folder of PNG/JPEG images; train and "
                   "sweep stream a folder's training images from disk when they would decode to more than "
                   "VAEFUNC_STREAM_BYTES, default 1 GiB)"
                   + ("" if default else "; default: the run's data"))  # fmt: skip
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="use at most N examples of each split (a fixed random subset)")  # fmt: skip
    p.add_argument("--size", type=_positive_int, nargs="+", metavar="PX", default=None,
                   help="resize images of a folder to H [W] pixels")  # fmt: skip
    p.add_argument("--color", choices=("gray", "rgb"), default=None, help="convert images of a folder")


def _model_options(p: argparse.ArgumentParser) -> None:
    """The flags of :class:`vaefunc.VAE`'s fields (the input shape is the data's)."""
    p.add_argument("--arch", choices=ARCHS, default="mlp",
                   help="mlp: linear layers; conv: stride-2 convolutions, then --hidden linear layers")  # fmt: skip
    p.add_argument("--latent-dim", type=_positive_int, default=20, help="latent dimensions")
    p.add_argument("--hidden", type=_positive_int, nargs="*", default=[400], metavar="H",
                   help="hidden layer widths (none: a linear encoder and decoder)")  # fmt: skip
    p.add_argument("--channels", type=_positive_int, nargs="+", default=None, metavar="C",
                   help="--arch conv: one width per stride-2 convolution (default: 32, 32, 64, 64 while the "
                   "image halves to at least 4 pixels)")  # fmt: skip
    p.add_argument("--kernel", type=_positive_int, default=4, help="--arch conv: the (even) kernel size")
    p.add_argument("--n-classes", type=_nonneg_int, default=0, metavar="N",
                   help="a conditional VAE on the data's labels (classes 0 .. N-1); 0: unconditional")  # fmt: skip
    p.add_argument("--semi-supervised", action="store_true",
                   help="with --n-classes: Kingma et al.'s M2, which also infers the class of unlabelled examples "
                   "(see --labels-per-class) and classifies them (the test error is logged each epoch)")  # fmt: skip
    p.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                   help="the hidden layers' activation (saved in the run's model spec; eval and the picture "
                   "commands use it)")  # fmt: skip
    p.add_argument("--likelihood", choices=LIKELIHOODS, default="bernoulli", help="p(x|z)")
    p.add_argument("--obs-std", type=_positive_float, default=1.0,
                   help="the gaussian likelihood's standard deviation (initial, with --learn-obs-std)")  # fmt: skip
    p.add_argument("--learn-obs-std", choices=("none", "global", "pixel"), default="none",
                   help="learn the gaussian likelihood's log-std: one, or one per pixel")  # fmt: skip
    p.add_argument("--prior", choices=PRIORS, default="normal",
                   help="p(z): the standard normal, a learnable mixture of Gaussians, or the VampPrior")  # fmt: skip
    p.add_argument("--prior-components", type=_positive_int, default=10, metavar="C",
                   help="mixture components or pseudo-inputs of --prior mog|vamp")  # fmt: skip
    p.add_argument("--posterior", choices=("gaussian", "iaf"), default="gaussian",
                   help="q(z|x): a diagonal Gaussian, or that Gaussian moved by --flow-steps inverse autoregressive "
                   "flow steps")  # fmt: skip
    p.add_argument("--flow-steps", type=_positive_int, default=None, metavar="T",
                   help="--posterior iaf: the number of IAF steps (default 2)")  # fmt: skip
    p.add_argument("--top-latent-dim", type=_nonneg_int, default=0, metavar="Z2",
                   help="a second stochastic layer of Z2 dimensions (the IWAE paper's two-layer model: "
                   "q(z1|x) q(z2|z1), p(z2) p(z1|z2) p(x|z1)); 0: one layer")  # fmt: skip
    p.add_argument("--top-hidden", type=_positive_int, nargs="+", default=None, metavar="W",
                   help="the hidden widths of q(z2|z1) and p(z1|z2) (default: Z2 Z2, as in the paper)")  # fmt: skip


def _training_options(p: argparse.ArgumentParser) -> None:
    """The flags of :class:`vaefunc.TrainConfig`'s fields (but --beta, --lr and --seed) and --preset."""
    p.add_argument("--epochs", type=_nonneg_int, default=10, help="passes over the training data")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="examples per step")
    p.add_argument("--preset", choices=sorted(SETUPS), default=None,
                   help="a named setup (vaefunc.presets): sets --latent-dim, --hidden, --activation, --likelihood, "
                   "--objective, --k, --batch-size, --epochs, --binarize, --lr-schedule (--lr: its base) and "
                   "Adam's eps; flags given explicitly override it")  # fmt: skip
    p.add_argument("--objective", choices=OBJECTIVES, default="elbo",
                   help="elbo, or iwae: the importance-weighted bound with --k samples")  # fmt: skip
    p.add_argument("--k", type=_positive_int, default=5, help="importance samples per example (--objective iwae)")
    p.add_argument("--gradient", choices=("reparam", "stl", "dreg"), default="reparam",
                   help="the gradient estimator: reparam; stl (sticking the landing, --objective elbo); dreg "
                   "(doubly reparameterized, --objective iwae)")  # fmt: skip
    p.add_argument("--kl-schedule", type=_kl_schedule, default=None, metavar="SPEC",
                   help=f"the KL term: {SPECS} (STEPS: optimizer steps; default: the constant --beta)")  # fmt: skip
    p.add_argument("--lr-schedule", type=_lr_schedule, default=None, metavar="SPEC",
                   help=f"Adam's learning rate over the epochs: none (constant --lr) or {LR_SCHEDULES}, the IWAE "
                   "paper's 3^i-epoch stages from --lr down")  # fmt: skip
    p.add_argument("--binarize", choices=("none", "static", "dynamic"), default="none",
                   help="static: x > 0.5 once; dynamic: a fresh Bernoulli sample at every step")  # fmt: skip
    p.add_argument("--labels-per-class", type=_positive_int, default=None, metavar="N",
                   help="--semi-supervised: keep N labels of each class of the training split (a fixed, balanced "
                   "choice: vaefunc.data.keep_labels, seed 0) and train on the rest unlabelled")  # fmt: skip
    p.add_argument("--alpha", type=_nonneg_float, default=None,
                   help="--semi-supervised: the classification loss's weight (default: Kingma et al.'s 0.1 N on "
                   "the mean labelled cross-entropy, vaefunc.paper_alpha)")  # fmt: skip
    p.add_argument("--labelled-share", type=_share, default=0.25, metavar="S",
                   help="--semi-supervised: the share of each epoch's examples drawn from the labelled ones")  # fmt: skip
    p.add_argument("--compile", choices=("auto", "yes", "no"), default="auto",
                   help="torch.compile the step; auto: on CUDA, or on CPU when the run is long enough "
                   "to repay the compile time")  # fmt: skip
    p.add_argument("--autocast", choices=("auto", "bf16", "none"), default="auto",
                   help="the forward's matmuls in bf16 with the ELBO summed in float32; auto: for a compiled "
                   "float32 step on a CPU whose bf16 matmuls are faster (AMX-BF16, or AVX512_BF16 where timed so); "
                   "none: float32 throughout")  # fmt: skip
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="the progress bar; auto: when stderr is a terminal")  # fmt: skip
    p.add_argument("--config", default=None, metavar="FILE",
                   help="settings from a JSON file (a run's config.json) or a TOML file (*.toml) with the sections "
                   "model, train, data and preset; flags given override it")  # fmt: skip


def _model_parsers(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """eval, sample, reconstruct, interpolate, traverse and latent: commands on a trained model."""
    _eval_parser(command)
    _picture_parsers(command)


def _eval_parser(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """eval: the test-set ELBO and the importance-sampled NLL."""
    p = command("eval", "Test-set ELBO and its parts, and the importance-sampled NLL, for a run or checkpoint.")
    _run_arg(p)
    _data_options(p, None)
    p.add_argument("--split", default="test", help="the split to evaluate")
    p.add_argument("--k", type=_nonneg_int, default=5000,
                   help="importance samples per example of the NLL estimate (0: skip it)")  # fmt: skip
    p.add_argument("--seed", type=_seed, default=None, help="seeds eps (default: the run's seed)")
    p.add_argument("--json", action="store_true", help="print the numbers as one JSON object")
    p.add_argument("--autocast", choices=("auto", "bf16", "none"), default="auto",
                   help="the NLL estimate's matmuls in bf16, its sums in float32; auto: when its chunks are "
                   "compiled (a long estimate) on a CPU whose bf16 matmuls are faster (AMX-BF16, or AVX512_BF16 where "
                   "timed so); none: float32 throughout")  # fmt: skip
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="a progress bar of the NLL's importance samples; auto: when stderr is a terminal")  # fmt: skip


def _picture_parsers(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """sample, reconstruct, interpolate, traverse and latent: the pictures of a trained model."""
    p = command("sample", "Decoder means of draws from the prior, as a PNG grid.")
    _run_arg(p)
    p.add_argument("--n", type=_picture_count, default=None,
                   help=f"number of samples (at most {MAX_PICTURES}); default 64, or for a conditional model "
                   "without --label 8 of each class, a row per class (--n N: N // classes of each)")  # fmt: skip
    p.add_argument("--cols", type=_picture_count, default=8, help="images per row (of one class: its row)")
    p.add_argument("--seed", type=_seed, default=0, help="seeds z")
    p.add_argument("--label", type=_nonneg_int, default=None, metavar="Y",
                   help="a conditional model's class for every sample (default: the classes in turn)")  # fmt: skip
    _out_arg(p, "samples.png")

    p = command("reconstruct", "Test inputs (top row) above their reconstructions, as a PNG grid.")
    _run_arg(p)
    _data_options(p, None)
    p.add_argument("--n", type=_picture_count, default=10, help="number of inputs")
    p.add_argument("--seed", type=_seed, default=0, help="picks the inputs")
    _out_arg(p, "reconstructions.png")

    p = command("interpolate", "Decodings along straight lines between the codes of test pairs, as a PNG grid.")
    _run_arg(p)
    _data_options(p, None)
    p.add_argument("--pairs", type=_picture_count, default=5, help="rows: pairs of test inputs")
    p.add_argument("--steps", type=_steps, default=10, help="images per row")
    p.add_argument("--seed", type=_seed, default=0, help="picks the pairs")
    _out_arg(p, "interpolate.png")

    p = command("traverse", "Latent traversal: one row per latent dimension, values from -range to range, the "
                            "rows sorted by each dimension's KL on the test split.")  # fmt: skip
    _run_arg(p)
    _data_options(p, None)
    p.add_argument("--steps", type=_steps, default=11, help="images per row")
    p.add_argument("--range", type=_span, default=3.0, dest="span", help=f"largest |z| (at most {MAX_SPAN:g})")
    p.add_argument("--label", type=_nonneg_int, default=None, metavar="Y",
                   help="a conditional model's class (default: 0)")  # fmt: skip
    _out_arg(p, "traverse.png")

    p = command("latent", "A model with 2 latent dimensions: its test inputs' codes as a scatter coloured by "
                          "label (latent.png), and the decoder over a grid of codes (manifold.png).")  # fmt: skip
    _run_arg(p)
    _data_options(p, None)
    p.add_argument("--steps", type=_steps, default=15, help="codes per side of the manifold's grid")
    p.add_argument("--range", type=_span, default=3.0, dest="span", help=f"largest |z| (at most {MAX_SPAN:g})")
    p.add_argument("--label", type=_nonneg_int, default=None, metavar="Y",
                   help="a conditional model's class for the manifold (default: 0)")  # fmt: skip
    p.add_argument("--out", default=None, metavar="FOLDER",
                   help="where to write latent.png and manifold.png (default: the run directory, or beside the "
                   "checkpoint file)")  # fmt: skip


def _out_arg(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--out", default=None, metavar="FILE.png",
                   help=f"PNG file to write (default: {name} in the run directory, or beside the checkpoint file)")


def _run_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="a run directory or a .safetensors checkpoint")
    p.add_argument("--activation", choices=ACTIVATIONS, default=None,
                   help="the model's hidden activation, for a checkpoint saved without one (default: the "
                   "run's; relu when none is saved); a run that saved one must be given the same")  # fmt: skip
    p.add_argument("--member", type=_nonneg_int, default=None, metavar="I",
                   help="the model of a sweep's checkpoint to use (0 .. m-1)")  # fmt: skip


def given(argv: Sequence[str]) -> set[str]:
    """The long options present on the command line, without dashes (``latent-dim``)."""
    return {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")}


# ---------------------------------------------------------------- argument types


def _positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def _share(text: str) -> float:
    return _number(text, float, lambda v: 0 < v < 1, "a number between 0 and 1 (exclusive)")


def _nonneg_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def _steps(text: str) -> int:
    return _number(text, int, lambda v: 2 <= v <= MAX_PICTURES, f"an integer from 2 to {MAX_PICTURES}")


MAX_PICTURES = 10_000
"""The most images one picture command draws, and the longest row (a larger number is a typo)."""
MAX_SPAN = 100.0
"""The largest |z| a traversal sweeps (latent codes live within a few units of 0)."""


def _picture_count(text: str) -> int:
    return _number(text, int, lambda v: 1 <= v <= MAX_PICTURES, f"an integer from 1 to {MAX_PICTURES}")


def _span(text: str) -> float:
    return _number(text, float, lambda v: math.isfinite(v) and 0 < v <= MAX_SPAN, f"a number in (0, {MAX_SPAN:g}]")


def _seed(text: str) -> int:
    return _number(text, int, lambda v: 0 <= v <= 2**63 - 1, "an integer from 0 to 2**63 - 1")


def _positive_float(text: str) -> float:
    return _number(text, float, lambda v: math.isfinite(v) and v > 0, "a positive finite number")


def _nonneg_float(text: str) -> float:
    return _number(text, float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def _kl_schedule(text: str) -> str:
    try:
        parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _lr_schedule(text: str) -> str | None:
    if text == "none":
        return None
    try:
        parse_lr(text, 1, 1e-3)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected none or {LR_SCHEDULES}; got {text!r} ({e})") from None
    return text


def _number(text: str, kind, ok, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}")
    return value
