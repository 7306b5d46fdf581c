"""Target 3: the Mutual Information Gap of a beta-VAE on procedural dSprites, beta=4 against beta=1.

Both runs share everything but beta: the same initial params, data, batch order,
noise and number of steps. The MIG is measured on a held-out set of dSprites
images (the "test" split) from the encoder means, over the 5 factors.

    python benchmarks/dsprites_mig.py --n 20000 --steps 3000 --out docs/figures

prints one JSON line per beta and writes a traversal figure per beta.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import vaefunc
from vaefunc import metrics
from vaefunc.data.dsprites import FACTORS, load_dsprites
from vaefunc.traversal import save_traversal_figure


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="training images")
    ap.add_argument("--n-eval", type=int, default=10_000, help="held-out images for the MIG")
    ap.add_argument("--steps", type=int, default=3000, help="training steps (the same for every beta)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--latent-dim", type=int, default=10)
    ap.add_argument("--arch", choices=("mlp", "conv"), default="mlp")
    ap.add_argument("--hidden", type=int, nargs="*", default=[256])
    ap.add_argument("--channels", type=int, nargs="*", default=None, help="conv channel widths")
    ap.add_argument("--betas", type=float, nargs="+", default=[1.0, 4.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--bins", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--out", type=Path, default=None, help="folder for the traversal figures")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    x_train, _ = load_dsprites("train", n=args.n, seed=0)
    x_eval, factors = load_dsprites("test", n=args.n_eval, seed=0)
    data_seconds = time.perf_counter() - t0
    steps_per_epoch = args.n // args.batch_size
    epochs = math.ceil(args.steps / steps_per_epoch)
    results = []
    for seed in args.seeds:
        kw = {"arch": args.arch, "hidden": tuple(args.hidden)}
        if args.channels:
            kw["channels"] = tuple(args.channels)
        params = vaefunc.init((1, 64, 64), latent_dim=args.latent_dim, seed=seed, **kw)
        for beta in args.betas:
            t = time.perf_counter()
            result = vaefunc.train(
                params, x_train, epochs=epochs, batch_size=args.batch_size, lr=args.lr, beta=beta,
                seed=seed, compile=False, progress=False,
            )  # fmt: skip
            train_seconds = time.perf_counter() - t
            p = result.params
            mu = metrics.encoder_means(p, x_eval)
            mig = metrics.mutual_info_gap(factors, mu, bins=args.bins)
            kl = metrics.kl_per_dim(p, x_eval)
            row = {
                "seed": seed, "beta": beta, "arch": args.arch, "steps": epochs * steps_per_epoch,
                "mig": round(mig["mig"], 4),
                "gaps": dict(zip(FACTORS, [None if g is None else round(g, 4) for g in mig["gaps"]])),
                "active_units": metrics.active_units(p, x_eval),
                "kl_per_dim": [round(v, 3) for v in kl.tolist()],
                "test_elbo": round(metrics.dataset_elbo(p, x_eval, seed=0)["elbo"], 2),
                "train_seconds": round(train_seconds, 1), "data_seconds": round(data_seconds, 1),
            }  # fmt: skip
            results.append(row)
            print(json.dumps(row), flush=True)
            if args.out is not None:
                labels = [f"z{u} KL {kl[u]:.2f}" for u in range(len(kl))]
                name = f"dsprites_traversal_{args.arch}_beta{beta:g}_seed{seed}_steps{epochs * steps_per_epoch}.png"
                fig = save_traversal_figure(
                    p, x_eval[0], args.out / name, row_labels=labels,
                    title=f"dSprites, beta={beta:g}, MIG {mig['mig']:.3f} (rows: latent dims)",
                )  # fmt: skip
                print(f"wrote {fig}", flush=True)
    return results


if __name__ == "__main__":
    main()
