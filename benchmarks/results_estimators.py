"""docs/RESULTS.md, gradient estimators: DReG against reparam for IWAE k=50, STL against reparam for the ELBO.

Full MNIST (``../shared/data/mnist.pkl.gz``), dynamically binarized; the IWAE
paper's one-layer model (784-200-200-50, tanh); for each seed, the two
estimators of an objective train from the same init with the same data order
and noise (same seed) for the same steps; test NLL (k = 5000) on one fixed
binarization of the first ``--n-test`` test digits. The difference of two
estimators is paired over the same digits and seed, with its standard error.

    python benchmarks/results_estimators.py --epochs 10
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vaefunc  # noqa: E402

from benchmarks.results_deep import MNIST, ONE, cpu_name, run_one, write  # noqa: E402

RUNS = (("iwae", 50, "reparam"), ("iwae", 50, "dreg"), ("elbo", 1, "reparam"), ("elbo", 1, "stl"))


def table(record: dict) -> str:
    runs = record["runs"]
    lines = [f"| objective | gradient | seed | steps | test NLL (k={record['args']['k_eval']}) | minus reparam's "
             "(paired) | train s |", "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for key, r in runs.items():
        objective, gradient, seed = key.split(" / ")
        nll = torch.tensor(r["nll"], dtype=torch.float64)
        diff = "—"
        base = runs.get(f"{objective} / reparam / {seed}")
        if gradient != "reparam" and base is not None:
            d = nll - torch.tensor(base["nll"], dtype=torch.float64)
            diff = f"{float(d.mean()):+.3f} ± {float(d.std() / math.sqrt(d.numel())):.3f}"
        lines.append(f"| {objective} | {gradient} | {seed} | {r['steps']} | {float(nll.mean()):.2f} ± "
                     f"{float(nll.std() / math.sqrt(nll.numel())):.2f} | {diff} | {r['train_seconds']:.0f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--k-eval", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compile", default="auto")
    ap.add_argument("--only", nargs="*", default=None, help='e.g. "iwae / dreg / 0"')
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "estimators_mnist.json"))
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    if args.table:
        print(table(json.loads(out.read_text())))
        return
    args.seed = args.seeds[0]
    torch.set_num_threads(args.threads)
    train = vaefunc.data.load(str(MNIST)).images.flatten(1)
    test = vaefunc.data.load(str(MNIST), split="test").images.flatten(1)[: args.n_test]
    x_test = torch.bernoulli(test, generator=torch.Generator().manual_seed(1234))
    record = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    record |= {"args": vars(args), "torch": torch.__version__, "cpu": cpu_name(), "threads": torch.get_num_threads()}
    for seed in args.seeds:
        for objective, k, gradient in RUNS:
            key = f"{objective} / {gradient} / {seed}"
            if args.only and key not in args.only:
                continue
            print(f"{key} ...", flush=True)
            record["runs"][key] = run_one(key, ONE, objective, k, train, x_test, args, gradient=gradient, seed=seed)
            write(out, record)
            print(f"{key}: test NLL {sum(record['runs'][key]['nll']) / len(x_test):.2f}", flush=True)
    print(table(record))


if __name__ == "__main__":
    main()
