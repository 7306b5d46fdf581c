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
