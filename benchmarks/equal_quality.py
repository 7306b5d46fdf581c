"""Speed at equal quality: the test -ELBO of the quick-start run over seeds, vaefunc's paths beside JAX's.

The same model (784-400-20), data (mnist5k's 4,000 training digits), batch 128, Adam
and epochs; for each seed, vaefunc eager float32, vaefunc compiled with
``autocast="auto"`` (bf16 matmuls on a CPU with AMX tiles), and JAX's ``lax.scan``
epoch in float32 and bf16 (:mod:`benchmarks.jax_anchor`, run by ``--jax-python``).
The test -ELBO is each library's single-sample estimate over the 1,000 test digits.
vaefunc's two paths share init and noise per seed, so their difference is paired;
JAX's init and noise differ, so it is compared by the mean over seeds.

    python -m benchmarks.equal_quality --seeds 5 --epochs 10 --jax-python /tmp/jaxenv/bin/python

writes benchmarks/results/equal_quality.json and prints a table. One thread each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def vaefunc_rows(seeds: int, epochs: int) -> list[dict]:
    import torch

    import vaefunc

    torch.set_num_threads(1)
    x = vaefunc.data.load("mnist5k", split="train").images.reshape(-1, 784)
    x_test = vaefunc.data.load("mnist5k", split="test").images.reshape(-1, 784)
    model = vaefunc.VAE((784,), latent_dim=20, hidden=(400,))
    rows = []
    for name, compile_, autocast in (("vaefunc eager float32", False, None), ("vaefunc compiled auto", True, "auto")):
        for seed in range(seeds):
            r = vaefunc.train(model.init(seed=seed), x, model=model, epochs=epochs, compile=compile_,
                              autocast=autocast, seed=seed, progress=False, threads=1)  # fmt: skip
            test = vaefunc.metrics.dataset_elbo(r.params, x_test, seed=0, model=model, progress=False)
            rows.append({"path": name, "seed": seed, "test_neg_elbo": -test["elbo"]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def jax_rows(seeds: int, epochs: int, jax_python: str) -> list[dict]:
    from .jax_anchor import save_digits

    data = save_digits("vaefunc-quality-")
    env = os.environ | {"PYTHONPATH": str(ROOT), "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}
    rows = []
    for seed in range(seeds):
        cmd = [jax_python, "-m", "benchmarks.jax_anchor", "--data", str(data), "--epochs", str(epochs),
               "--seed", str(seed), "--precision", "float32", "bf16", "--idiom", "lax-scan"]  # fmt: skip
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        for r in (json.loads(line) for line in out.splitlines() if line.startswith("{")):
            rows.append({"path": "jax lax-scan " + r["precision"], "seed": seed, "test_neg_elbo": r["test_neg_elbo"]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--jax-python", default=None, help="a Python with jax and optax")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "equal_quality.json")
    args = ap.parse_args(argv)
    rows = vaefunc_rows(args.seeds, args.epochs)
    if args.jax_python:
        rows += jax_rows(args.seeds, args.epochs, args.jax_python)
    from benchmarks.results_deep import cpu_name
    from vaefunc._io import atomic_write_bytes

    record = {"args": {k: str(v) for k, v in vars(args).items()}, "cpu": cpu_name(), "rows": rows}
    atomic_write_bytes(args.out, (json.dumps(record, indent=1) + "\n").encode())
    print("\n| path | test -ELBO per seed | mean | sd |\n|---|---|---:|---:|")
    for path in dict.fromkeys(r["path"] for r in rows):
        values = [r["test_neg_elbo"] for r in rows if r["path"] == path]
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"| {path} | {' / '.join(f'{v:.2f}' for v in values)} | {statistics.mean(values):.2f} | {sd:.2f} |")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
