"""docs/RESULTS.md, deeper models: 1 vs 2 stochastic layers, Gaussian vs IAF posterior, ELBO vs IWAE k=5.

On full MNIST (``../shared/data/mnist.pkl.gz``: 50,000 training digits),
dynamically binarized, every model trained for the same number of steps with
the same seed, batch and Adam, then scored by the importance-sampled test NLL
(k = 5000) on one fixed binarization of the first ``--n-test`` test digits
(the same digits for every model, so differences are paired). The
architectures are the IWAE paper's (Burda et al. 2015, section 5), tanh:

- 1 layer: 784-200-200-[z 50];
- 2 layers: 784-100-100-[z1 100]-50-50-[z2 50];
- "+ IAF": the same, with 2 IAF steps (MADE 784... z -> 2z -> 2z) on q(z1|x).

    python benchmarks/results_deep.py --epochs 10              # the table in docs/RESULTS.md
    python benchmarks/results_deep.py --epochs 1 --n-train 2000 --k-eval 50 --n-test 100   # a smoke run

Each finished model is added to benchmarks/results/deep_mnist.json at once (a
long run keeps what it finished); ``--only`` runs some of the models.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vaefunc  # noqa: E402
from vaefunc._io import atomic_write_bytes  # noqa: E402

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.pkl.gz"
ONE = {"latent_dim": 50, "hidden": (200, 200)}
TWO = {"latent_dim": 100, "hidden": (100, 100), "top_latent_dim": 50, "top_hidden": (50, 50)}
IAF = {"posterior": "iaf", "flow_steps": 2}
MODELS = {
    "1 layer": ONE,
    "2 layers": TWO,
    "1 layer + IAF": ONE | IAF,
    "2 layers + IAF": TWO | IAF,
}
OBJECTIVES = (("ELBO", "elbo", 1), ("IWAE k=5", "iwae", 5))
PAPER = {  # Burda et al. 2015, Table 1, MNIST test NLL after 3^8 passes (their VAE and IWAE at k=5)
    ("1 layer", "ELBO"): 86.76, ("1 layer", "IWAE k=5"): 85.54,
    ("2 layers", "ELBO"): 85.33, ("2 layers", "IWAE k=5"): 83.89,
}  # fmt: skip


def cpu_name() -> str:
    """The CPU's model name, as lscpu gives it."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                "unknown")  # fmt: skip


def write(out: Path, record: dict) -> None:
    """The record as JSON, written atomically (its folder created)."""
    atomic_write_bytes(out, json.dumps(record, indent=2).encode())


def run_one(name: str, fields: dict, objective: str, k: int, x_train, x_test, args, *, gradient: str = "reparam",
            seed: int | None = None) -> dict:  # fmt: skip
    seed = args.seed if seed is None else seed
    model = vaefunc.VAE((784,), activation="tanh", **fields)
    params = model.init(seed=seed)
    t0 = time.perf_counter()
    result = vaefunc.train(
        params, x_train, model=model, epochs=args.epochs, batch_size=args.batch_size, binarize="dynamic",
        seed=seed, objective=objective, k=k, optimizer=vaefunc.adam(args.lr, eps=1e-4), progress=False,
        compile=args.compile, gradient=gradient,
        on_epoch=lambda e, s: print(f"  {name} {objective}: epoch {e['epoch']} loss {e['loss']:.2f}", flush=True),
    )  # fmt: skip
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ll = model.log_likelihood(result.params, x_test, k=args.k_eval, seed=seed + 1, progress=False)
    eval_s = time.perf_counter() - t0
    eps = torch.randn(x_test.shape[0], model.noise_dim, generator=torch.Generator().manual_seed(seed + 2))
    with torch.no_grad():
        elbo = model.elbo(result.params, x_test, eps)
    return {"nll": (-ll).tolist(), "test_neg_elbo": float(-elbo.mean()), "train_seconds": train_s,
            "eval_seconds": eval_s, "steps": args.epochs * (x_train.shape[0] // args.batch_size),
            "train_loss_last_epoch": result.history[-1]["loss"], "spec": model.to_dict()}  # fmt: skip


def table(record: dict) -> str:
    """The markdown table: test NLL, paired difference against the 1-layer ELBO model, the paper's number."""
    runs = record["runs"]
    base = runs.get("1 layer / ELBO")
    lines = [f"| model | objective | steps | test NLL (k={record['args']['k_eval']}) | vs 1 layer ELBO (paired) "
             "| test -ELBO | paper (converged) | train s |", "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for key, r in runs.items():
        name, objective = key.split(" / ")
        nll = torch.tensor(r["nll"], dtype=torch.float64)
        se = float(nll.std() / math.sqrt(nll.numel()))
        diff = "—"
        if base is not None and key != "1 layer / ELBO":
            d = torch.tensor(base["nll"], dtype=torch.float64) - nll
            diff = f"{float(d.mean()):+.2f} ± {float(d.std() / math.sqrt(d.numel())):.2f}"
        paper = PAPER.get((name, objective))
        lines.append(f"| {name} | {objective} | {r['steps']} | {float(nll.mean()):.2f} ± {se:.2f} | {diff} | "
                     f"{r['test_neg_elbo']:.2f} | {paper if paper else '—'} | {r['train_seconds']:.0f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10, help="passes over the training digits, the same for every model")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--n-train", type=int, default=50_000)
    ap.add_argument("--n-test", type=int, default=1000, help="test digits of the NLL (the first n)")
    ap.add_argument("--k-eval", type=int, default=5000, help="importance samples of the test NLL")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: no spinning on a shared CPU)")
    ap.add_argument("--compile", default="auto", choices=("auto", "yes", "no"))
    ap.add_argument("--only", nargs="*", default=None, help='e.g. "2 layers / ELBO"')
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "deep_mnist.json"))
    ap.add_argument("--table", action="store_true", help="print the table of --out and exit")
    args = ap.parse_args()
    out = Path(args.out)
    if args.table:
        print(table(json.loads(out.read_text())))
        return
    args.compile = {"yes": True, "no": False}.get(args.compile, args.compile)
    torch.set_num_threads(args.threads)
    train = vaefunc.data.load(str(MNIST)).images.flatten(1)[: args.n_train]
    test = vaefunc.data.load(str(MNIST), split="test").images.flatten(1)[: args.n_test]
    x_test = torch.bernoulli(test, generator=torch.Generator().manual_seed(1234))  # one fixed binarization
    record = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    record |= {"args": vars(args), "torch": torch.__version__, "cpu": cpu_name(), "threads": torch.get_num_threads()}
    for name, fields in MODELS.items():
        for label, objective, k in OBJECTIVES:
            key = f"{name} / {label}"
            if args.only and key not in args.only:
                continue
            print(f"{key} ...", flush=True)
            record["runs"][key] = run_one(key, fields, objective, k, train, x_test, args)
            write(out, record)
            print(f"{key}: test NLL {sum(record['runs'][key]['nll']) / len(x_test):.2f}", flush=True)
    print(table(record))


if __name__ == "__main__":
    main()
