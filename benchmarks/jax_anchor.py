"""The JAX anchor: the same VAE, data, batch and Adam in JAX + optax, in one process.

Two idioms: a jitted step called from a Python loop, and a whole epoch as one
jitted ``lax.scan`` (the fastest JAX idiom). The model is vaefunc's default,
784-400-20 with ReLU and a Bernoulli likelihood; each step takes a batch of a
seeded per-epoch shuffle, eps from ``jax.random``, and Adam (lr 1e-3). Per
idiom: examples/s over the steady epochs, the time to the first finished
epoch (compile included), and the test -ELBO at the end (single sample, fixed
noise), so speed is compared at equal quality. ``precision="bf16"`` runs the
matmuls in bfloat16 with float32 params, Adam state and ELBO sums.

    python -m benchmarks.jax_anchor --epochs 10           # needs the jax extra: pip install -e ".[jax]"
    python -m benchmarks.jax_anchor --data mnist5k.npz    # the digits from a file (x_train, x_test): no torch needed

prints one JSON line per idiom and precision. :func:`save_digits` writes that file for a JAX-only
interpreter. :func:`run` is what ``python -m benchmarks`` calls.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from .bands import quality

IDIOMS = ("jit-step", "lax-scan")


def save_digits(prefix: str) -> Path:
    """mnist5k's train and test digits, flattened float32 (n, 784), as ``x_train`` and ``x_test`` in a new
    .npz in a fresh temporary folder named by ``prefix``: the ``--data`` file of a JAX-only interpreter.
    Imports vaefunc (and torch)."""
    import tempfile

    import numpy as np

    import vaefunc

    path = Path(tempfile.mkdtemp(prefix=prefix)) / "mnist5k.npz"
    np.savez(path, **{f"x_{s}": vaefunc.data.load("mnist5k", split=s).images.reshape(-1, 784).numpy()
                      for s in ("train", "test")})  # fmt: skip
    return path


def available() -> bool:
    try:
        import jax  # noqa: F401
        import optax  # noqa: F401
    except ImportError:
        return False
    return True


def _model(jnp, jax, d: int, hidden: int, latent: int, compute):
    """init(key) -> params, and loss(params, x, eps) -> (-mean ELBO, (recon, kl)), as vaefunc computes them."""

    def dense(key, n_in, n_out):
        bound = 1.0 / math.sqrt(n_in)  # nn.Linear's bias bound; its weight's kaiming_uniform(a=sqrt(5)) has the same
        kw, kb = jax.random.split(key)
        return {"w": jax.random.uniform(kw, (n_in, n_out), minval=-bound, maxval=bound),
                "b": jax.random.uniform(kb, (n_out,), minval=-bound, maxval=bound)}  # fmt: skip

    def init(key):
        k = jax.random.split(key, 4)
        return {"e1": dense(k[0], d, hidden), "e2": dense(k[1], hidden, 2 * latent),
                "d1": dense(k[2], latent, hidden), "d2": dense(k[3], hidden, d)}  # fmt: skip

    def layer(p, h):
        return (h.astype(compute) @ p["w"].astype(compute)).astype(jnp.float32) + p["b"]

    def loss(params, x, eps):
        h = jax.nn.relu(layer(params["e1"], x))
        mu, logvar = jnp.split(layer(params["e2"], h), 2, axis=-1)
        logvar = jnp.clip(logvar, -30.0, 20.0)
        z = mu + jnp.exp(0.5 * logvar) * eps
        logits = layer(params["d2"], jax.nn.relu(layer(params["d1"], z)))
        rec = (x * logits - jax.nn.softplus(logits)).sum(-1)
        kl = 0.5 * (mu**2 + jnp.expm1(logvar) - logvar).sum(-1)
        return (kl - rec).mean(), (rec.mean(), kl.mean())

    return init, loss


def run(x_train, x_test, *, epochs: int = 10, batch: int = 128, hidden: int = 400, latent: int = 20,
        lr: float = 1e-3, seed: int = 0, precision: str = "float32",
        idioms: tuple[str, ...] = IDIOMS) -> list[dict]:  # fmt: skip
    """The ``idioms`` on NumPy float32 data (n, d) in [0, 1]; one result row per idiom, with the test -ELBO
    when ``x_test`` (m, d) is given (None: skipped). ``train_seconds``: all the epochs, compile included."""
    import jax
    import jax.numpy as jnp
    import optax

    compute = jnp.bfloat16 if precision == "bf16" else jnp.float32
    n, d = x_train.shape
    steps = n // batch
    init, loss = _model(jnp, jax, d, hidden, latent, compute)
    opt = optax.adam(lr)
    grad = jax.value_and_grad(loss, has_aux=True)

    def step(state, inputs):
        params, opt_state = state
        x, eps = inputs
        (value, _), g = grad(params, x, eps)
        updates, opt_state = opt.update(g, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    data = jnp.asarray(x_train)  # on the device once, as vaefunc.train copies its data once

    def epoch_inputs(key):
        kp, ke = jax.random.split(key)
        perm = jax.random.permutation(kp, n)[: steps * batch].reshape(steps, batch)
        return data[perm], jax.random.normal(ke, (steps, batch, latent))

    jit_step = jax.jit(step)
    scan_epoch = jax.jit(lambda state, xs, es: jax.lax.scan(step, state, (xs, es)))
    rows = []
    for idiom in idioms:
        key = jax.random.PRNGKey(seed)
        params = init(key)
        state = (params, opt.init(params))
        t0, seconds, losses = time.perf_counter(), [], []
        for e in range(epochs):
            xs, es = epoch_inputs(jax.random.fold_in(key, e))
            t = time.perf_counter()
            if idiom == "jit-step":
                values = []
                for i in range(steps):
                    state, value = jit_step(state, (xs[i], es[i]))
                    values.append(value)  # kept on the device: no host sync inside the epoch
                values = jnp.stack(values)
            else:
                state, values = scan_epoch(state, xs, es)
            values.block_until_ready()
            seconds.append(time.perf_counter() - t)
            losses.append(float(values.mean()))
            if e == 0:
                first = time.perf_counter() - t0
        row = {"case": "jax", "impl": f"jax-{idiom}", "precision": precision, "batch": batch, "hidden": hidden,
               "n": n, "epochs": epochs, "jax": jax.__version__}  # fmt: skip
        steady = statistics.median(seconds[1:]) if epochs > 1 else seconds[0]
        row.update(examples_per_s=steps * batch / steady, epoch_seconds=steady, first_epoch_seconds=first,
                   train_seconds=time.perf_counter() - t0)
        row.update(quality(losses))
        if x_test is not None:
            eps_test = jax.random.normal(jax.random.PRNGKey(1), (x_test.shape[0], latent))
            row["test_neg_elbo"] = float(loss(state[0], jnp.asarray(x_test), eps_test)[0])
        rows.append(row)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--precision", choices=("float32", "bf16"), nargs="+", default=["float32", "bf16"])
    ap.add_argument("--data", default=None, help="an .npz of float32 x_train and x_test (n, d); default: vaefunc's "
                    "mnist5k, which imports torch")  # fmt: skip
    ap.add_argument("--idiom", choices=IDIOMS, nargs="+", default=list(IDIOMS))
    ap.add_argument("--seed", type=int, default=0, help="the init, shuffle and noise seed")
    args = ap.parse_args(argv)
    if args.data is not None:
        import numpy as np

        with np.load(args.data) as f:
            x, x_test = f["x_train"], f["x_test"]
    else:
        import vaefunc

        x, x_test = (vaefunc.data.load("mnist5k", split=s)[0].flatten(1).numpy() for s in ("train", "test"))
    for precision in args.precision:
        for row in run(x, x_test, epochs=args.epochs, seed=args.seed, precision=precision, idioms=tuple(args.idiom)):
            print(json.dumps(row | {"seed": args.seed}), flush=True)


if __name__ == "__main__":
    main()
