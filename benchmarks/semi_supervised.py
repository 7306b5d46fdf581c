"""Semi-supervised classification (Kingma et al. 2014, M2) and data augmentation on full MNIST.

For each number of labels (balanced per class, a fixed seeded choice): train
M2 (``VAE(..., n_classes=10, semi_supervised=True)``, labels -1 on the rest of
the 50,000 training digits) and, in the same run, the same classifier network
on the labelled digits alone; report both test errors on the 10,000 test
digits. Then, with the 100-label model: a small classifier trained on the 100
labelled digits alone against the same classifier trained on them plus
augmented digits (``vaefunc.augment``: from the prior given the class, and
from the posterior of the labelled digits), over 5 seeds; and a picture of
class-conditional samples.

    python benchmarks/semi_supervised.py --data ../shared/data/mnist.pkl.gz --epochs 40 --threads 1 \\
        --out benchmarks/results/semi_supervised.json --picture docs/ssl_samples.png

Writes the JSON as it goes (one entry per label count) and prints a line per result.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import vaefunc
from vaefunc import pictures

PAPER = {100: 11.97, 600: 4.94, 1000: 3.60, 3000: 3.92}
"""Kingma et al. (2014), table 1, M2 test error (%)."""


def balanced(y: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n labelled indices, n // 10 per class: the ones ``vaefunc.data.keep_labels`` keeps."""
    return torch.nonzero(vaefunc.data.keep_labels(y, n // 10, seed=seed) >= 0).flatten()


def error(model: vaefunc.VAE, params, x: torch.Tensor, y: torch.Tensor) -> float:
    """Test error in %: :func:`vaefunc.metrics.classification_error`."""
    return 100.0 * vaefunc.metrics.classification_error(params, x, y, model=model, progress=False)


def classifier_alone(model: vaefunc.VAE, x: torch.Tensor, y: torch.Tensor, *, steps: int, seed: int, lr: float = 1e-3):
    """The M2 classifier network (same layers, same init) trained on labelled (x, y) alone, with Adam."""
    full = model.init(seed)
    params = {k: v for k, v in full.items() if k.startswith("classifier.")}
    opt = vaefunc.adam(lr)
    state = opt.init(params)
    gen = torch.Generator().manual_seed(seed)

    def loss(p, xb, yb):
        return torch.nn.functional.nll_loss(model.classify(full | p, xb), yb)

    grad = torch.func.grad(loss)
    b = min(100, x.shape[0])
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (b,), generator=gen)
        updates, state = opt.update(grad(params, x[idx], y[idx]), state, params)
        params = vaefunc.apply_updates(params, updates)
    return full | params


def small_classifier_error(x, y, x_test, y_test, *, seed: int, steps: int = 1500) -> float:
    """A small MLP (784-100-10, ReLU) trained with Adam on (x, y): test error in %."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(784, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (min(100, x.shape[0]),), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    with torch.no_grad():
        return 100.0 * float((net(x_test).argmax(-1) != y_test).double().mean())


def augmentation(model, params, x_lab, y_lab, x_test, y_test, seeds=range(5)) -> dict:
    """Test error of a small classifier: labelled alone, + prior samples, + posterior copies, + both."""
    prior_x, prior_y = vaefunc.augment(params, model=model, labels=torch.arange(10).repeat(100), seed=1)
    post_x, post_y = vaefunc.augment(params, model=model, x=x_lab, labels=y_lab, copies=10, scale=1.0, seed=2)
    sets = {"labelled": (x_lab, y_lab),
            "+ 1000 from the prior": (torch.cat([x_lab, prior_x.flatten(1)]), torch.cat([y_lab, prior_y])),
            "+ 1000 from the posterior": (torch.cat([x_lab, post_x.flatten(1)]), torch.cat([y_lab, post_y])),
            "+ both": (torch.cat([x_lab, prior_x.flatten(1), post_x.flatten(1)]), torch.cat([y_lab, prior_y, post_y]))}  # fmt: skip
    out = {}
    for name, (xs, ys) in sets.items():
        errs = torch.tensor([small_classifier_error(xs, ys, x_test, y_test, seed=s) for s in seeds], dtype=torch.float64)
        out[name] = {"error_mean": round(float(errs.mean()), 2), "error_sd": round(float(errs.std()), 2),
                     "errors": [round(float(e), 2) for e in errs], "n_train": int(xs.shape[0])}  # fmt: skip
        print(json.dumps({"augmentation": name, **out[name]}), flush=True)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/mnist.pkl.gz")
    ap.add_argument("--labels", type=int, nargs="+", default=[100, 600, 1000, 3000])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline-steps", type=int, default=3000)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/semi_supervised.json"))
    ap.add_argument("--picture", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (1 on a shared machine)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    x, y = vaefunc.data.load(args.data, split="train")
    x_test, y_test = vaefunc.data.load(args.data, split="test")
    x, x_test = x.flatten(1), x_test.flatten(1)
    model = vaefunc.VAE((784,), latent_dim=50, hidden=(500,), activation="softplus", n_classes=10,
                        semi_supervised=True)  # Kingma et al.'s M2 on MNIST  # fmt: skip
    results = {"settings": vars(args) | {"out": str(args.out), "picture": str(args.picture), "model": model.to_dict(),
                                         "torch": torch.__version__, "threads": torch.get_num_threads()},
               "runs": []}  # fmt: skip
    for n in args.labels:
        results["runs"].append(run_one(model, x, y, x_test, y_test, n, args, results))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return results


def run_one(model, x, y, x_test, y_test, n: int, args, results) -> dict:
    idx = balanced(y, n, args.seed)
    labels = torch.full_like(y, -1)
    labels[idx] = y[idx]
    errors = []

    def on_epoch(entry, state):
        if entry["epoch"] % 10 == 0 or entry["epoch"] == args.epochs:
            errors.append({"epoch": entry["epoch"], "test_error": round(error(model, state.params, x_test, y_test), 2),
                           "train_loss": round(entry["loss"], 2)})  # fmt: skip
            print(json.dumps({"labels": n, **errors[-1]}), flush=True)

    t = time.perf_counter()
    result = vaefunc.train(model.init(args.seed), x, labels=labels, model=model, epochs=args.epochs,
                           batch_size=args.batch_size, lr=args.lr, binarize="dynamic", seed=args.seed,
                           progress=False, on_epoch=on_epoch)  # fmt: skip
    seconds = time.perf_counter() - t
    base = classifier_alone(model, x[idx], y[idx], steps=args.baseline_steps, seed=args.seed, lr=args.lr)
    row = {"labels": n, "m2_test_error": errors[-1]["test_error"], "paper_m2_test_error": PAPER.get(n),
           "classifier_alone_test_error": round(error(model, base, x_test, y_test), 2), "epochs": args.epochs,
           "train_seconds": round(seconds, 1), "curve": errors}  # fmt: skip
    print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
    if n == 100:
        row["augmentation"] = augmentation(model, result.params, x[idx], y[idx], x_test, y_test)
        if args.picture is not None:
            images = model.sample(result.params, 100, seed=0, labels=torch.arange(10).repeat_interleave(10))
            pictures.save_png(pictures.image_grid(images.reshape(100, 1, 28, 28), 10), args.picture)
    return row


if __name__ == "__main__":
    main()
