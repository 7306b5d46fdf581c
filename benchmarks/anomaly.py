"""Target 4: anomaly detection on the 5,000 MNIST digits, one held-out digit at a time.

For each digit c: train a VAE on the training digits of the other 9 classes
(3,600 of the 4,000/1,000 stratified split), then score the 1,000 test digits,
binarized once with a fixed seed, by ``vaefunc.anomaly_score`` (the negative
importance-sampled log-likelihood, k samples) and report the ROC AUC of the
100 test digits of class c (positives) against the 900 others (negatives).

    python benchmarks/anomaly.py --epochs 30 --k 1000

prints one JSON line per held-out digit and a summary line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import vaefunc
from vaefunc import metrics


def mnist5k():
    """vaefunc.data's ``mnist5k`` split, flat (n, 784), with labels: 400 train / 100 test per class."""
    from vaefunc.data import load

    tr, te = load("mnist5k"), load("mnist5k", split="test")
    return tr.images.flatten(1), tr.labels, te.images.flatten(1), te.labels


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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

    x_tr, y_tr, x_te, y_te = mnist5k()
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
        scores = vaefunc.anomaly_score(result.params, x_te, k=args.k, seed=0)
        outlier = y_te == c
        row = {
            "held_out": c, "auc": round(metrics.roc_auc(scores, outlier), 4),
            "nll_normal": round(float(scores[~outlier].mean()), 2),
            "nll_held_out": round(float(scores[outlier].mean()), 2),
            "train_loss": round(result.history[-1]["loss"], 2), "epochs": args.epochs, "k": args.k,
            "seconds": round(time.perf_counter() - t, 1), "train_seconds": round(train_seconds, 1),
        }  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    aucs = [r["auc"] for r in rows]
    print(json.dumps({"mean_auc": round(sum(aucs) / len(aucs), 4), "digits": args.digits}), flush=True)
    return rows


if __name__ == "__main__":
    main()
