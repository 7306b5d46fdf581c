"""A beta sweep in one pass: the rate/distortion trade-off of the beta-VAE.

``python -m vaefunc.sweep`` trains one VAE per beta in {0.5, 1, 2, 4, 8} AT ONCE
(:func:`vaefunc.train_many`: one vmapped step, common data order and noise),
evaluates each on held-out digits and writes the rate/distortion plot: rate
R = KL(q(z|x) || p(z)) against distortion D = -E_q log p(x|z), both in nats.
Every model's negative ELBO is D + R, so the dashed lines of slope -1 are lines
of equal ELBO; beta = 1 sits closest to the best one, and a larger beta trades
rate for distortion (Alemi et al. 2018, "Fixing a Broken ELBO").

Axis letters: m models, b examples, d data features, z latent.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from . import _check, _progress
from ._types import Params
from .ensemble import train_many
from ._resolve import resolve
from .spec import VAE

BETAS = (0.5, 1.0, 2.0, 4.0, 8.0)


class SweepResult(NamedTuple):
    betas: list[float]
    params: Params  # the trained models, stacked (m, ...)
    rate: list[float]  # mean KL on the held-out data, nats, per model
    distortion: list[float]  # mean -log p(x|z) on the held-out data, nats, per model
    history: list[list[dict[str, float]]]  # per model, as train_many's


def rate_distortion(params_stack: Params, x: Tensor, *, seed: int = 0, likelihood: str = "bernoulli",
                    activation: str = "relu", model: VAE | None = None, labels=None) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Mean rate (KL) and distortion (-log p(x|z), one sample) of every stacked model.

    Args:
        params_stack: (m, ...) stacked params.
        x: (b, d) held-out data; every model sees the same eps (common random numbers).
        labels: a conditional model's labels of x: ints (b,) or one-hot (b, n_classes).
        likelihood, activation: the models' static choices, or
        model: their :class:`vaefunc.VAE` spec.

    Returns:
        rate, distortion: each (m,), in nats per example.

    Example:
        >>> rate, distortion = rate_distortion(result.params, x_test, model=model)
    """
    model = resolve({k: v[0] for k, v in params_stack.items()}, model, likelihood=likelihood, activation=activation)
    seed = _check.seed(seed)
    first = next(iter(params_stack.values()))
    gen = torch.Generator(device=first.device).manual_seed(seed)
    eps = torch.randn(x.shape[0], model.noise_dim, generator=gen, device=first.device, dtype=first.dtype)
    x = x.reshape(x.shape[0], -1).to(first.device, first.dtype)
    y = None if labels is None else _check.labels(labels, x.shape[0], model.n_classes, device=first.device)

    def terms(params: Params) -> tuple[Tensor, Tensor]:
        rec, kl = model.elbo_terms(params, x, eps, y)
        return kl.mean(), -rec.mean()

    with torch.no_grad():
        return torch.func.vmap(terms)(params_stack)


def beta_sweep(x_train: Tensor, x_test: Tensor, *, betas: Sequence[float] = BETAS, latent_dim: int = 20,
               hidden: Sequence[int] = (400,), epochs: int = 10, batch_size: int = 128, lr: float = 1e-3,
               seed: int = 0, compile: bool | str = "auto", progress: bool | str = True, activation: str = "relu",
               model: VAE | None = None) -> SweepResult:  # fmt: skip
    """Train one VAE per beta at once and measure each one's rate and distortion.

    Every model starts from the same init (seed) and sees the same batches and
    noise, so the only difference between them is beta.

    Args:
        x_train, x_test: (n, *input_shape) in [0, 1].
        betas: the KL weights, one model each.
        model: the spec of every model; default ``VAE(x_train.shape[1:],
            latent_dim=latent_dim, hidden=hidden, activation=activation)``.

    Returns:
        :class:`SweepResult`.

    Example:
        >>> sweep = beta_sweep(x_train, x_test, betas=(0.5, 1, 2, 4, 8), epochs=10)
        >>> plot_rate_distortion(sweep, "docs/beta_sweep.png")
    """
    if model is None:
        model = VAE(tuple(x_train.shape[1:]), latent_dim=latent_dim, hidden=tuple(hidden), activation=activation)
    betas = [float(b) for b in betas]
    one = model.init(seed)
    stacked = {k: v.expand(len(betas), *v.shape).clone() for k, v in one.items()}
    result = train_many(stacked, x_train, model=model, epochs=epochs, batch_size=batch_size, lr=lr, beta=betas,
                        seed=seed, compile=compile, progress=progress)  # fmt: skip
    rate, distortion = rate_distortion(result.params, x_test, seed=seed, model=model)
    return SweepResult(betas, result.params, rate.tolist(), distortion.tolist(), result.history)


def plot_rate_distortion(sweep: SweepResult, path: str | Path, *, title: str | None = None) -> Path:
    """Write the rate/distortion plot of a sweep as a PNG (matplotlib, a runtime dependency).

    Returns:
        The path written (atomically).
    """
    from ._io import atomic_write_bytes
    from ._plot import plot_png

    rate, dist = sweep.rate, sweep.distortion

    def draw(fig) -> None:
        ax = fig.subplots()
        lo, hi = min(r + d for r, d in zip(rate, dist)), max(r + d for r, d in zip(rate, dist))
        rmax = max(rate) * 1.15
        for level in torch.linspace(lo, hi, 4).tolist():  # lines of equal negative ELBO, D + R = level
            ax.plot([0, rmax], [level, level - rmax], ls="--", lw=0.7, color="0.75", zorder=0)
        ax.plot(rate, dist, "-o", color="tab:blue", zorder=2)
        for beta, r, d in zip(sweep.betas, rate, dist):
            ax.annotate(f"β={beta:g}", (r, d), textcoords="offset points", xytext=(6, 4))
        ax.set_xlim(0, rmax)
        ax.set_ylim(min(dist) - 0.08 * (max(dist) - min(dist) + 1), max(dist) + 0.12 * (max(dist) - min(dist) + 1))
        ax.set_xlabel("rate R = KL(q(z|x) ‖ p(z))  [nats]")
        ax.set_ylabel("distortion D = −log p(x|z)  [nats]")
        ax.set_title(title or "β-VAE sweep, trained at once (held-out digits)")
        ax.text(0.98, 0.97, "dashed: equal ELBO (D + R)", transform=ax.transAxes, ha="right", va="top", color="0.4")

    return atomic_write_bytes(path, plot_png(draw, figsize=(6.4, 4.8)))


def _mnist5k() -> tuple[Tensor, Tensor]:
    """The ``mnist5k`` split of :mod:`vaefunc.data`, flat: 4,000 train / 1,000 test digits."""
    from .data import load

    train, test = load("mnist5k").images, load("mnist5k", split="test").images
    assert isinstance(train, Tensor) and isinstance(test, Tensor)  # embedded data: in memory
    return train.flatten(1), test.flatten(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaefunc.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--betas", type=float, nargs="+", default=list(BETAS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("beta_sweep.png"), help="the PNG to write")
    args = parser.parse_args(argv)
    x_train, x_test = _mnist5k()
    with _progress.plain_lines("python -m vaefunc.sweep"):  # a bar in a terminal, else a line every 10 s
        sweep = beta_sweep(x_train, x_test, betas=args.betas, epochs=args.epochs, seed=args.seed)
    print(f"{'beta':>6} {'rate (KL)':>10} {'distortion':>11} {'-ELBO':>8}")
    for beta, r, d in zip(sweep.betas, sweep.rate, sweep.distortion):
        print(f"{beta:6g} {r:10.2f} {d:11.2f} {r + d:8.2f}")
    print(f"wrote {plot_rate_distortion(sweep, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
