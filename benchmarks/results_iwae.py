"""Target 1 of docs/RESULTS.md: test NLL of the VAE against IWAE k=5 and k=50.

On the 5,000 embedded MNIST digits (the stratified 4,000/1,000 split of the
``mnist5k`` test fixture), dynamically binarized: three models of the same
architecture (784-200-200-50, the IWAE paper's one-stochastic-layer net with
the core MLP's ReLU) trained for the same number of steps with the same seed,
then scored by the importance-sampled log-likelihood with k=5000 on one fixed
binarization of the 1,000 test digits (the same for all three models). The
differences are paired over the same test digits, with their standard errors.

    python benchmarks/results_iwae.py            # about 10 minutes on 2 quiet CPU cores
    python benchmarks/results_iwae.py --epochs 2 --k-eval 100   # a smoke run

Writes benchmarks/results/iwae_mnist5k.json and prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vaefunc  # noqa: E402
from vaefunc.estimators import iwae, log_likelihood  # noqa: E402

RUNS = (("VAE", "elbo", 1), ("IWAE k=5", "iwae", 5), ("IWAE k=50", "iwae", 50))


def mnist5k() -> tuple[torch.Tensor, torch.Tensor]:
    """vaefunc.data's ``mnist5k`` split, flat: 400 train / 100 test digits per class."""
    from vaefunc.data import load

    return load("mnist5k").images.flatten(1), load("mnist5k", split="test").images.flatten(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20, help="epochs of 200 steps (batch 20) for every model")
    ap.add_argument("--k-eval", type=int, default=5000, help="importance samples of the test NLL")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 is much faster than 2 on a CPU shared with other work (no spinning)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "iwae_mnist5k.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    x_train, x_test = mnist5k()
    x_test_bin = torch.bernoulli(x_test, generator=torch.Generator().manual_seed(1234))  # one fixed binarization
    rows, nll = [], {}
    for name, objective, k in RUNS:
        params = vaefunc.init((784,), latent_dim=50, hidden=(200, 200), seed=args.seed)
        t0 = time.perf_counter()
        result = vaefunc.train(
            params, x_train, epochs=args.epochs, batch_size=20, binarize="dynamic", seed=args.seed,
            objective=objective, k=k, optimizer=vaefunc.adam(1e-3, eps=1e-4), progress=False,
            on_epoch=lambda entry, state: print(f"  {name} epoch {entry['epoch']}: loss {entry['loss']:.2f}", flush=True),
        )  # fmt: skip
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ll = log_likelihood(result.params, x_test_bin, k=args.k_eval, seed=args.seed + 1)
        eval_s = time.perf_counter() - t0
        eps = torch.randn(1, x_test_bin.shape[0], 50, generator=torch.Generator().manual_seed(args.seed + 2))
        with torch.no_grad():
            test_elbo = iwae(result.params, x_test_bin, eps)  # k=1: the single-sample ELBO
        nll[name] = -ll
        steps = args.epochs * (x_train.shape[0] // 20)
        rows.append({
            "model": name, "objective": objective, "k": k, "steps": steps,
            "test_nll": float(-ll.mean()), "test_nll_se": float(ll.std() / math.sqrt(ll.numel())),
            "test_neg_elbo": float(-test_elbo.mean()), "train_loss_last_epoch": result.history[-1]["loss"],
            "train_seconds": train_s, "eval_seconds": eval_s,
        })  # fmt: skip
        print(f"{name}: test NLL {rows[-1]['test_nll']:.2f} (train {train_s:.0f} s, eval {eval_s:.0f} s)", flush=True)
    base = nll["VAE"]
    for row in rows:
        diff = base - nll[row["model"]]  # > 0: better than the VAE, paired over the same digits
        row["better_than_vae"] = float(diff.mean())
        row["better_than_vae_se"] = float(diff.std() / math.sqrt(diff.numel()))

    record = {
        "args": vars(args), "torch": torch.__version__, "machine": platform.machine(),
        "threads": torch.get_num_threads(), "rows": rows,
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out.parent, delete=False, suffix=".tmp") as f:
        json.dump(record, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, out)

    print(f"\n| model | steps | test NLL (k={args.k_eval}) | better than the VAE (paired) | test -ELBO |")
    print("|---|---|---|---|---|")
    for r in rows:
        better = "—" if r["model"] == "VAE" else f"{r['better_than_vae']:.2f} ± {r['better_than_vae_se']:.2f}"
        print(f"| {r['model']} | {r['steps']} | {r['test_nll']:.2f} ± {r['test_nll_se']:.2f} | {better} | {r['test_neg_elbo']:.2f} |")


if __name__ == "__main__":
    main()
