"""Importance sampling: the IWAE bound and the log-likelihood estimate.

With k samples z_i = mu + sigma * eps_i of q(z|x), the log importance weights are

    log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x),

every density with its normalising constant, and

    iwae_k(x) = log (1/k) sum_i w_i   (Burda, Grosse and Salakhutdinov 2015),

computed with ``logsumexp``. E[iwae_k] <= E[iwae_{k+1}] <= log p(x); iwae_1 is the
single-sample ELBO with the Monte Carlo KL term, and iwae_k -> log p(x) as k grows.
For a conditional VAE every density is conditioned on the label y as well:
log w_i = log p(x|z_i, y) + log p(z_i) - log q(z_i|x, y), and the estimates are
of log p(x|y).

Axis letters: b batch, d data features, k importance samples, z latent, n classes.
"""

from __future__ import annotations

import functools
import math
import types
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.func import vmap

from . import _check, _progress, _values, latents, likelihoods, network
from . import threads as _threads
from ._types import Params
from .accel import AUTOCAST, COMPILE, compile_graph, resolve_autocast

if TYPE_CHECKING:
    from .spec import VAE

# log_likelihood's default chunk over k keeps at most this many floats alive per
# layer (k_chunk * batch * widest layer): 2^22 floats, 16 MiB in float32, and at most
# _CHUNK_SAMPLES samples (batch x chunk): the fastest measured on the 2-core CPU, eager and
# compiled (784-400-20 at batch 100: chunk 20 took 4.4 us a sample eagerly against 5.1 at 10,
# 7.7 at 50 and 7.8 at the 16 MiB budget's 53; compiled, 100 x 20 beat 100 x 10, 100 x 40,
# 250 x 4 and 500 x 2), its logits near the cache rather than streamed through memory.
_CHUNK_BUDGET = 2**22
_CHUNK_SAMPLES = 2000
# compile="auto": compile the chunk when the estimate's eager time, from its FLOPs at this rate,
# would exceed LL_AUTO_COMPILE_SECONDS. Measured there (500 test digits, k = 1000): eager 5.9 us a
# sample (2 x 651k FLOPs: 2.2e11 FLOP/s), compiled 3.8 in float32 and 1.75 with bf16 matmuls, and a
# first compiled call of 9 s (18 s with a cold Inductor cache); so the compile is repaid after
# 2-4 million samples, about 30 s of eager work.
LL_AUTO_COMPILE_SECONDS = 30.0
_LL_EAGER_FLOPS = 2.2e11
MAX_SAMPLES = 2**30
"""The most importance samples per example :func:`log_likelihood` takes (k beyond it would not finish)."""


def example_weights(model: VAE, params: Params, x: Tensor, eps: Tensor, y: Tensor | None = None, *,
                    stop_q: bool = False) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The two parts of the log importance weights of ONE example (batched with ``vmap``).

    Args:
        x: (*input_shape) or (d,).
        eps: (k, noise_dim), eps ~ N(0, I) (:attr:`vaefunc.VAE.noise_dim`: z, or z1 + z2 for two layers).
        y: the example's label for a conditional model: 0-d int or one-hot (n,).
        stop_q: q's density with its parameters held constant (:func:`vaefunc.latents.sample`).

    Returns:
        rec: (k,), log p(x | z_i[, y]); kl: (k,), log q(z_i | x[, y]) - log p(z_i) (all the latents,
        the IAF's log-determinant included: :func:`vaefunc.latents.sample`); log w = rec - kl.
    """
    x = network.flatten_example(x, model.data_dim)
    mu, logvar = network.encode(model, params, x, y)  # (z,)
    s = latents.sample(model, params, mu, logvar, eps, y, stop_q=stop_q)  # (k, z), (k,), (k,)
    out = network.flat_output(model, network.decode(model, params, s.z, y))  # a conv decoder returns (k, c, h, w)
    return likelihoods.log_px(model, params, out, x), s.log_q - s.log_p


def importance_terms(model: VAE, params: Params, x: Tensor, eps: Tensor, labels: Tensor | None = None, *,
                     stop_q: bool = False) -> tuple[Tensor, Tensor]:  # fmt: skip
    """:func:`example_weights` batched over examples: x (b, ...), eps (k, b, z) -> rec, kl (k, b) each."""

    def one(p: Params, x: Tensor, e: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        return example_weights(model, p, x, e, y, stop_q=stop_q)

    in_dims = (None, 0, 1, None if labels is None else 0)
    return vmap(one, in_dims=in_dims, out_dims=1)(params, x, eps, labels)


def importance_bound(model: VAE, params: Params, x: Tensor, eps: Tensor, labels: Tensor | None = None) -> Tensor:
    """iwae_k = log (1/k) sum_i w_i per example, eps (k, b, z): (b,). Checks eps's shape first (the
    labels are the caller's to check: :func:`vaefunc._values.call_inputs`)."""
    check_eps(model, x, eps)
    rec, kl = importance_terms(model, params, x, eps, labels)
    return torch.logsumexp(rec - kl, dim=0) - math.log(eps.shape[0])


@torch.no_grad()
def estimate_log_likelihood(model: VAE, params: Params, x: Tensor, labels=None, *, k: int = 5000, seed: int = 0,
                            chunk: int | None = None, batch_size: int = 100, progress: bool | str = True,
                            compile: bool | str = "auto", autocast: str | None = "auto",
                            threads: int | None = None) -> Tensor:  # fmt: skip
    """Importance-sampled log p(x) (log p(x|y)) per example with k samples, in bounded memory: (n,).

    Examples go ``batch_size`` at a time and the k samples ``chunk`` at a
    time, with a running ``logaddexp``, so at most chunk x batch_size samples
    are alive. eps comes from a local generator seeded with ``seed`` (the same
    seed, chunk, batch_size, compile and autocast give the same numbers).
    ``progress``: a bar of importance samples (n x k) on stderr; True: when
    stderr is a terminal, ``"always"``, or False. ``compile``: run each full
    chunk as one compiled function (:func:`compiles_estimate` decides for
    ``"auto"``); ``autocast``: its matmuls in bf16 (:func:`vaefunc.accel.resolve_autocast`).
    ``threads``: the intra-op threads it runs on (the caller's count is restored after); None: one or
    the caller's count, whichever runs a chunk faster, as :func:`vaefunc.threads.resolve` decides for
    a training run (the same seed and thread count give the same numbers).
    """
    _check.params_dict(params)
    seed = _check.seed(seed)
    threads = _threads.check(threads)
    w = next(iter(params.values()))
    x, y, chunk, compiled = _estimate_inputs(model, params, x, labels, k, seed, chunk, batch_size, compile, autocast)
    bf16 = resolve_autocast(autocast, w.device, w.dtype, compiled=compiled) == "bf16"
    fast = _compiled_chunk(model) if compiled else None
    n_threads = _chunk_threads(model, params, x, y, k, chunk, batch_size, threads, fast)
    gen = torch.Generator(device=w.device).manual_seed(seed)
    out = []
    with _threads.using(n_threads), _progress.bar(progress, x.shape[0] * k, unit="sample", desc="log p(x)") as bar:
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            yb = None if y is None else y[start : start + batch_size]
            acc = torch.full((xb.shape[0],), -math.inf, dtype=w.dtype, device=w.device)
            for done in range(0, k, chunk):
                eps = torch.randn(min(chunk, k - done), xb.shape[0], model.noise_dim, generator=gen, dtype=w.dtype,
                                  device=w.device)  # fmt: skip
                full = eps.shape[:2] == (chunk, batch_size)  # one shape: one compile
                run = fast if fast is not None and full else chunk_log_mean_exp
                with torch.autocast(w.device.type, dtype=torch.bfloat16, enabled=bf16):
                    acc = torch.logaddexp(acc, run(model, params, xb, eps, yb))
                bar.update(eps.shape[0] * xb.shape[0])
            out.append(acc - math.log(k))
            if not bar.disable and acc.device.type == "cuda":
                torch.cuda.synchronize(acc.device)  # a sync point, only with a bar: its rate counts finished work
    return torch.cat(out) if out else torch.zeros(0, dtype=w.dtype, device=w.device)  # an empty batch: no scores


def _chunk_threads(model: VAE, params: Params, x: Tensor, y: Tensor | None, k: int, chunk: int, batch_size: int,
                   threads: int | None, fast: Any) -> int:  # fmt: skip
    """The estimate's thread count: ``threads`` if given, else :func:`vaefunc.threads.resolve` timing one
    full chunk (zero noise: the generator's draws stay the estimate's) at one thread and at the caller's."""
    k, chunk, batch_size = int(k), int(chunk), int(batch_size)  # numpy ints (checked) as Python's: no wrap-around
    chunks = -(-x.shape[0] // batch_size) * -(-k // chunk)
    device = next(iter(params.values())).device

    def probe():
        xb, yb = x[:batch_size], None if y is None else y[:batch_size]
        eps = torch.zeros(min(chunk, k), xb.shape[0], model.noise_dim, dtype=x.dtype, device=device)
        return lambda: chunk_log_mean_exp(model, params, xb, eps, yb)

    key: Any = ("log_likelihood", model, min(chunk, k), min(batch_size, x.shape[0]), fast is not None)
    try:
        hash(key)
    except TypeError:  # a custom network's spec that does not hash: not cached
        key = None
    return _threads.resolve(threads, device=device, total_steps=chunks, probe=probe, key=key)


def chunk_log_mean_exp(model: VAE, params: Params, x: Tensor, eps: Tensor, y: Tensor | None) -> Tensor:
    """logsumexp_i log w_i over a chunk of samples, eps (c, b, z): (b,), in the params' dtype."""
    rec, kl = importance_terms(model, params, x, eps, y)
    return torch.logsumexp((rec - kl).to(x.dtype), dim=0)


@functools.lru_cache(maxsize=16)
def _compiled_chunk(model: VAE):
    """:func:`chunk_log_mean_exp` compiled (fullgraph, static shapes), once per spec.

    Each spec's function gets its own code object, hence its own Dynamo cache:
    evaluating many models in one process never meets Dynamo's limit of
    recompilations per code object.
    """
    fn = chunk_log_mean_exp
    fresh = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    return compile_graph(fresh)


def compiles_estimate(model: VAE, n: int, k: int, compile: bool | str, device: torch.device) -> bool:
    """Whether :func:`estimate_log_likelihood` compiles its chunks: ``compile``, or for ``"auto"``
    on a CPU, when the estimated eager time of n x k samples exceeds LL_AUTO_COMPILE_SECONDS
    (deterministic; on CUDA "auto" stays eager: not measured there)."""
    _check.option("compile", compile, COMPILE)
    if compile != "auto":
        return bool(compile)
    seconds = n * k * 2 * model.macs_per_example() / _LL_EAGER_FLOPS
    return device.type == "cpu" and seconds > LL_AUTO_COMPILE_SECONDS


def _estimate_inputs(model: VAE, params: Params, x, labels, k, seed, chunk, batch_size, compile, autocast):
    """Checked inputs of :func:`estimate_log_likelihood`: x (n, d) and one-hot y on the params' device,
    the chunk, and whether the chunks are compiled."""
    model.check(params)  # one model's params, each leaf of this spec's shape
    _check.finite_tree("params", params, " (a non-finite checkpoint?)")
    _check.positive_int("k", k, maximum=MAX_SAMPLES)
    _check.positive_int("batch_size", batch_size, maximum=MAX_SAMPLES)
    _check.choice("autocast", autocast, AUTOCAST)
    seed = _check.seed(seed)
    if chunk is not None:
        _check.positive_int("chunk", chunk, maximum=MAX_SAMPLES)
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = f"dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"x must be a floating-point tensor of shape (n, *input_shape) (scale images to [0, 1]); "
                        f"got {got}")  # fmt: skip
    w = next(iter(params.values()))
    x = network.flatten(x, model.data_dim).to(dtype=w.dtype, device=w.device)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (n, *input_shape); got {tuple(x.shape)}")
    _values.finite("x", x)
    _values.unit_interval("x", x, model.likelihood)
    if labels is None and model.n_classes:
        raise ValueError(f"these params are conditional on {model.n_classes} classes; pass labels y")
    y = None
    if labels is not None:
        y = network.one_hot(_check.labels(labels, x.shape[0], model.n_classes, device=w.device), model.n_classes,
                            w.dtype)  # fmt: skip
    compiled = compiles_estimate(model, x.shape[0], k, compile, w.device)
    if chunk is None:
        widest = max([model.data_dim, model.latent_dim, *(s[0] for s in model.layout.shapes.values() if len(s) == 2)])
        chunk = max(1, min(k, _CHUNK_SAMPLES // batch_size, _CHUNK_BUDGET // (batch_size * widest)))
    return x, y, chunk, compiled


def check_eps(model: VAE, x: Tensor, eps: Tensor) -> None:
    z = model.noise_dim
    if eps.ndim != 3 or eps.shape[1] != x.shape[0] or eps.shape[2] != z:
        raise ValueError(
            f"eps must have shape (k, b, z) = (k, {x.shape[0]}, {z}) for x of batch {x.shape[0]}; "
            f"got {tuple(eps.shape)}"
        )
