"""docs/RESULTS.md, gradient signal-to-noise: Rainforth et al.'s (2018) slopes on a trained MNIST model.

Trains the IWAE paper's one-layer model (784-200-200-50, tanh) on full MNIST
(``../shared/data/mnist.pkl.gz``, dynamically binarized) with the ELBO, then
measures each network's gradient SNR (``vaefunc.diagnostics.gradient_snr``)
of the IWAE bound on a fixed batch of test digits for k = 1 .. 1000, with the
reparameterized and the doubly reparameterized (DReG) encoder gradients, and
fits log SNR against log k by least squares (the slope's standard error from
the residuals). Rainforth et al.: encoder O(1/sqrt(k)) under reparam (slope
-0.5), decoder O(sqrt(k)) (+0.5); Tucker et al.: DReG's encoder grows with k.

    python benchmarks/results_snr.py                   # writes results/snr_mnist.json and docs/snr.png

The rates are asymptotic: they hold once k is large against the spread of the
importance weights, chi^2(p(z|x) || q(z|x)) = E_q[w^2] / E_q[w]^2 - 1, which on a
trained model differs by orders of magnitude from digit to digit. ``--per-digit N``
estimates the chi^2 of each of the first N test digits (``--chi2-draws`` samples),
then measures the first ``--measure`` digits with chi^2 <= ``--max-chi2``, each
alone: its SNR at each k, sqrt(sum_j E[g_j]^2 / sum_j Var g_j), the signal read
from DReG's draws (both estimators are unbiased for the same gradient; DReG's
variance is far lower) and debiased by var / samples, and fits the slope over
the k >= 10 chi^2 of that digit:

    python benchmarks/results_snr.py --per-digit 64 --measure 8 --latent-dim 2 --epochs 5 --samples 1000 \
        --ks 1 3 10 30 100 300 1000 --out benchmarks/results/snr_digits_z2.json --figure docs/snr_digits.png
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vaefunc  # noqa: E402
from vaefunc.diagnostics import gradient_snr  # noqa: E402

from benchmarks.results_deep import MNIST, cpu_name, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def fit_slope(ks: list[int], snrs: list[float]) -> tuple[float, float]:
    """The least-squares slope of log SNR on log k and its standard error."""
    x, y = torch.tensor(ks, dtype=torch.float64).log(), torch.tensor(snrs, dtype=torch.float64).log()
    xc = x - x.mean()
    slope = float((xc * (y - y.mean())).sum() / xc.square().sum())
    resid = y - y.mean() - slope * xc
    se = math.sqrt(float(resid.square().sum()) / max(1, len(ks) - 2) / float(xc.square().sum()))
    return slope, se


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 3, 10, 30, 100, 300, 1000])
    ap.add_argument("--batch", type=int, default=16, help="test digits in the differentiated batch")
    ap.add_argument("--samples", type=int, default=400, help="noise draws per SNR")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--latent-dim", type=int, default=50, help="z (the IWAE paper's 50; a small z reaches large-k rates sooner)")
    ap.add_argument("--per-digit", type=int, default=0, help="measure each of the first N test digits alone")
    ap.add_argument("--chi2-draws", type=int, default=20000, help="samples of q per digit for its chi^2")
    ap.add_argument("--max-chi2", type=float, default=3.0, help="--per-digit measures the digits with chi^2 at most this")
    ap.add_argument("--measure", type=int, default=8, help="--per-digit measures at most this many of those digits")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "snr_mnist.json"))
    ap.add_argument("--figure", default=str(ROOT / "docs" / "snr.png"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = vaefunc.data.load(str(MNIST)).images.flatten(1)
    test = vaefunc.data.load(str(MNIST), split="test").images.flatten(1)[: args.batch]
    test = torch.bernoulli(test, generator=torch.Generator().manual_seed(1234))
    model = vaefunc.VAE((784,), latent_dim=args.latent_dim, hidden=(200, 200), activation="tanh")
    t0 = time.perf_counter()
    result = vaefunc.train(model.init(seed=0), x, model=model, epochs=args.epochs, batch_size=100, binarize="dynamic",
                           optimizer=vaefunc.adam(1e-3, eps=1e-4), progress=False)  # fmt: skip
    print(f"trained {args.epochs} epochs in {time.perf_counter() - t0:.0f} s; loss {result.history[-1]['loss']:.2f}")
    if args.per_digit:
        test = vaefunc.data.load(str(MNIST), split="test").images.flatten(1)[: args.per_digit]
        test = torch.bernoulli(test, generator=torch.Generator().manual_seed(1234))
        return per_digit(args, model, result, test)
    rows = []
    for k in args.ks:
        for gradient in ("reparam", "dreg"):
            t0 = time.perf_counter()
            out = gradient_snr(model, result.params, test, objective="iwae", gradient=gradient, k=k,
                               samples=args.samples, chunk=max(1, 4000 // k))  # fmt: skip
            rows.append({"k": k, "gradient": gradient, **{f"{net}_{key}": v for net, d in out.items()
                                                          for key, v in d.items()}})  # fmt: skip
            print(f"k={k} {gradient}: encoder SNR {out['encoder']['snr']:.4f}, decoder SNR {out['decoder']['snr']:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    slopes = {}
    for gradient in ("reparam", "dreg"):
        for net in ("encoder", "decoder"):
            sel = [r for r in rows if r["gradient"] == gradient]
            slopes[f"{net} {gradient}"] = fit_slope([r["k"] for r in sel], [r[f"{net}_snr"] for r in sel])
    record = {"args": vars(args), "torch": torch.__version__, "cpu": cpu_name(), "rows": rows,
              "slopes": {k: {"slope": s, "se": se} for k, (s, se) in slopes.items()},
              "train_loss": result.history[-1]["loss"]}  # fmt: skip
    write(Path(args.out), record)
    plot(rows, Path(args.figure))
    print("\n| network | gradient | slope of log SNR on log k | standard error | Rainforth et al. |")
    print("|---|---|---:|---:|---:|")
    expected = {"encoder reparam": "-0.5", "decoder reparam": "+0.5", "encoder dreg": "> 0", "decoder dreg": "+0.5"}
    for key, (s, se) in slopes.items():
        net, gradient = key.split()
        print(f"| {net} | {gradient} | {s:+.3f} | {se:.3f} | {expected[key]} |")


def chi2(model: vaefunc.VAE, params: dict, x: torch.Tensor, draws: int, seed: int = 0) -> list[float]:
    """Each row's chi^2 divergence E_q[w^2] / E_q[w]^2 - 1 of its posterior from q, from ``draws`` samples."""
    gen, out = torch.Generator().manual_seed(seed), []
    for row in x:
        eps = torch.randn(draws, 1, model.noise_dim, generator=gen, dtype=row.dtype)
        lw = model.log_weights(params, row[None], eps).double()[:, 0]  # (draws,)
        log_m1, log_m2 = lw.logsumexp(0) - math.log(draws), (2 * lw).logsumexp(0) - math.log(draws)
        out.append(float((log_m2 - 2 * log_m1).exp() - 1))
    return out


def per_digit(args: argparse.Namespace, model: vaefunc.VAE, result, test: torch.Tensor) -> None:
    """The SNR against k of each digit with chi^2 <= ``--max-chi2``, and its slopes over its k >= 10 chi^2."""
    divergence = chi2(model, result.params, test, args.chi2_draws)
    chosen = [i for i, c in enumerate(divergence) if c <= args.max_chi2 and sum(k >= 10 * c for k in args.ks) >= 3]
    chosen = chosen[: args.measure]
    print(f"chi^2 of the {len(test)} digits: {[round(c, 2) for c in divergence]}; measured: {chosen}", flush=True)
    rows, digits = [], []
    for i in chosen:
        for k in args.ks:
            rows += digit_rows(args, model, result.params, test[i], i, divergence[i], k)
        ks = [k for k in args.ks if k >= 10 * divergence[i]]
        fits = {}
        for name, gradient, column in CURVES:
            sel = [r for r in rows if r["digit"] == i and r["gradient"] == gradient and r["k"] in ks]
            fits[name] = fit_slope(ks, [r[column] for r in sel])
        digits.append({"digit": i, "chi2": divergence[i], "ks": ks,
                       "slopes": {n: {"slope": s, "se": se} for n, (s, se) in fits.items()}})  # fmt: skip
    summary = {}
    for name, _, _ in CURVES:
        t = torch.tensor([d["slopes"][name]["slope"] for d in digits], dtype=torch.float64)
        se = float(t.std() / math.sqrt(len(t))) if len(t) > 1 else math.nan
        summary[name] = {"mean": float(t.mean()), "se": se, "digits": len(t)}
    record = {"args": vars(args), "torch": torch.__version__, "cpu": cpu_name(), "chi2": divergence, "rows": rows,
              "digits": digits, "summary": summary, "train_loss": result.history[-1]["loss"]}  # fmt: skip
    write(Path(args.out), record)
    plot_digits(rows, digits, Path(args.figure))
    print("\n| test digit | chi^2 | k fitted | encoder, reparam | encoder, DReG | decoder |")
    print("|---:|---:|---|---:|---:|---:|")
    for d in digits:
        cells = [f"{d['slopes'][n]['slope']:+.2f} ± {d['slopes'][n]['se']:.2f}" for n, _, _ in CURVES]
        print(f"| {d['digit']} | {d['chi2']:.2f} | {d['ks'][0]}-{d['ks'][-1]} | " + " | ".join(cells) + " |")
    print("| mean ± se over digits | | | " + " | ".join(
        f"{summary[n]['mean']:+.3f} ± {summary[n]['se']:.3f}" for n, _, _ in CURVES) + " |")  # fmt: skip


def digit_rows(args: argparse.Namespace, model: vaefunc.VAE, params: dict, row: torch.Tensor, i: int, c: float,
               k: int) -> list[dict]:  # fmt: skip
    """One digit's two estimators at one k, sharing their noise draws. Both are unbiased for the same
    gradient, so its squared norm (the signal) is read from DReG's draws, whose variance is far lower,
    and each estimator's SNR is sqrt(signal / its own summed variance): ``encoder_snr_common``."""
    out = {}
    for gradient in ("reparam", "dreg"):
        t0 = time.perf_counter()
        snr = gradient_snr(model, params, row[None], objective="iwae", gradient=gradient, k=k, samples=args.samples,
                           chunk=max(1, min(50, 20000 // k)), seed=1000 * i + k)  # fmt: skip
        out[gradient] = {"digit": i, "chi2": c, "k": k, "gradient": gradient, "seconds": time.perf_counter() - t0,
                         **{f"{net}_{key}": v for net, d in snr.items() for key, v in d.items()}}  # fmt: skip
    d = out["dreg"]
    signal = d["encoder_n"] * (d["encoder_mean_sq"] - d["encoder_variance"] / args.samples)
    for r in out.values():
        r["encoder_snr_common"] = math.sqrt(max(signal, 0.0) / (r["encoder_n"] * r["encoder_variance"]))
        print(f"digit {i} (chi2 {c:.2f}) k={k} {r['gradient']}: encoder {r['encoder_snr_common']:.4f} "
              f"(own mean: {r['encoder_snr_pooled']:.4f}), decoder {r['decoder_snr_pooled']:.3f} "
              f"({r['seconds']:.0f} s)", flush=True)  # fmt: skip
    return list(out.values())


CURVES = (("encoder reparam", "reparam", "encoder_snr_common"), ("encoder dreg", "dreg", "encoder_snr_common"),
          ("decoder", "reparam", "decoder_snr_pooled"))  # fmt: skip
"""The three slopes Rainforth et al. and Tucker et al. predict: -0.5, +0.5, +0.5 (name, estimator, column)."""


def plot_digits(rows: list[dict], digits: list[dict], path: Path) -> None:
    """One panel per curve: each digit's SNR against k (the fitted k solid), and the predicted rate dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12.8, 4.0), dpi=100, sharex=True)
    for ax, (name, gradient, column), rate in zip(axes, CURVES, (-0.5, 0.5, 0.5)):
        for d in digits:
            sel = [r for r in rows if r["digit"] == d["digit"] and r["gradient"] == gradient]
            line = ax.loglog([r["k"] for r in sel], [r[column] for r in sel], ":", lw=1)[0]
            fit = [r for r in sel if r["k"] in d["ks"]]
            ax.loglog([r["k"] for r in fit], [r[column] for r in fit], "-o", ms=3, color=line.get_color(),
                      label=f"digit {d['digit']} (chi2 {d['chi2']:.1f})")  # fmt: skip
        start = max(d["ks"][0] for d in digits) if digits else None  # the first k every digit's fit has
        at = [r[column] for r in rows if r["gradient"] == gradient and r["k"] == start and r[column] > 0]
        if at:  # the predicted rate through the digits' geometric mean there
            ks = [k for k in sorted({r["k"] for r in rows}) if k >= start]
            mid = math.exp(sum(map(math.log, at)) / len(at))
            ax.loglog(ks, [mid * (k / start) ** rate for k in ks], "k--", lw=2, label=f"k^{rate:+.1f}")
        ax.set_title(name)
        ax.set_xlabel("k, importance samples")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("SNR of one digit's gradient")
    axes[2].legend(fontsize=7)
    fig.suptitle("IWAE gradient SNR per test digit, trained MNIST VAE (z = 2)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=100)
    for gradient, style in (("reparam", "-o"), ("dreg", "--s")):
        sel = [r for r in rows if r["gradient"] == gradient]
        ks = [r["k"] for r in sel]
        ax.loglog(ks, [r["encoder_snr"] for r in sel], style, label=f"encoder, {gradient}")
        if gradient == "reparam":
            ax.loglog(ks, [r["decoder_snr"] for r in sel], ":^", label="decoder (both estimators)")
    ax.set_xlabel("k, importance samples")
    ax.set_ylabel("mean gradient SNR, |E g| / sd g")
    ax.set_title("Gradient signal-to-noise of the IWAE bound, trained MNIST VAE")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


if __name__ == "__main__":
    main()
