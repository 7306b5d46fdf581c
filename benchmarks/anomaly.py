"""Anomaly detection, one held-out digit at a time, with each of vaefunc's three scores.

For each digit c: train a VAE on the training digits of the other 9 classes,
then score the test digits, binarized once with a fixed seed, by
``vaefunc.anomaly_score`` with ``score="nll"`` (-log p(x), k importance
samples), ``"elbo"`` (the negative single-sample ELBO) and ``"recon"`` (the
reconstruction error at z = mu), and report each score's ROC AUC of the test
digits of class c (positives) against the others (negatives).

    python benchmarks/anomaly.py --epochs 30 --k 1000                                  # the 5,000 digits
    python benchmarks/anomaly.py --data ../shared/data/mnist.pkl.gz --epochs 20 --k 500 --threads 1 \\
        --out benchmarks/results/anomaly_mnist.json                                     # full MNIST

prints one JSON line per held-out digit and a summary line (mean and standard deviation of each
score's AUC over the digits), and writes them to --out.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import vaefunc
from vaefunc import metrics


SCORES = ("nll", "elbo", "recon")


def digits(data: str):
    """A data set's train and test splits, flat (n, 784), with labels (mnist5k: 400 train / 100 test per class)."""
    from vaefunc.data import load

    tr, te = load(data), load(data, split="test")
    return tr.images.flatten(1), tr.labels, te.images.flatten(1), te.labels


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="mnist5k", help="mnist5k, or a path such as ../shared/data/mnist.pkl.gz")
    ap.add_argument("--out", default=None, help="a JSON file for the rows and the summary")
    ap.add_argument("--digits", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--latent-dim", type=int, default=20)
    ap.add_argument("--hidden", type=int, nargs="*", default=[400])
    ap.add_argument("--k", type=int, default=1000, help="importance samples of the log-likelihood")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    x_tr, y_tr, x_te, y_te = digits(args.data)
    x_te = torch.bernoulli(x_te, generator=torch.Generator().manual_seed(1))  # one fixed binarization
    rows = []
    for c in args.digits:
        t = time.perf_counter()
        params = vaefunc.init((784,), latent_dim=args.latent_dim, hidden=tuple(args.hidden), seed=args.seed)
        result = vaefunc.train(
            params, x_tr[y_tr != c], epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            binarize="dynamic", seed=args.seed, compile=False, progress=False,
        )  # fmt: skip
        train_seconds = time.perf_counter() - t
        outlier = y_te == c
        row = {"held_out": c}
        for name in SCORES:
            scores = vaefunc.anomaly_score(result.params, x_te, score=name, k=args.k, seed=0)
            row |= {f"auc_{name}": round(metrics.roc_auc(scores, outlier), 4),
                    f"{name}_normal": round(float(scores[~outlier].mean()), 2),
                    f"{name}_held_out": round(float(scores[outlier].mean()), 2)}  # fmt: skip
        row |= {"auc": row["auc_nll"], "train_loss": round(result.history[-1]["loss"], 2), "epochs": args.epochs,
                "k": args.k, "seconds": round(time.perf_counter() - t, 1), "train_seconds": round(train_seconds, 1)}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {"digits": args.digits, "data": args.data, "epochs": args.epochs, "k": args.k}
    for name in SCORES:
        aucs = torch.tensor([r[f"auc_{name}"] for r in rows], dtype=torch.float64)
        summary |= {f"mean_auc_{name}": round(float(aucs.mean()), 4),
                    f"sd_auc_{name}": round(float(aucs.std()), 4) if len(rows) > 1 else None}  # fmt: skip
    summary["mean_auc"] = summary["mean_auc_nll"]
    print(json.dumps(summary), flush=True)
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
