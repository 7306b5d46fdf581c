"""The step's GEMMs on every CPU path torch offers, beside XLA's, and the compiled epoch with Inductor's autotuning.

    python -m benchmarks.gemm_paths [--rounds 5] [--jax-python PYTHON] [--epoch-rounds 3]

GEMMs: every (m, k, n) of one 784-400-20 training step at batch 128
(:func:`benchmarks.roofline.step_gemms`: 128x784x400, 400x128x784, 128x400x784,
784x128x400 and the small 40- and 20-wide heads), each timed alone in GFLOP/s
(the best of ``--rounds`` rounds, paths alternating), at 1 thread and at all
the cores, on:

- ``mkl``: ``torch.mm`` on float32 (ATen's default CPU path: MKL's sgemm);
- ``onednn``: ``torch.ops.mkldnn._linear_pointwise`` (oneDNN's float32 inner product, as mkldnn linear runs);
- ``onednn-bf16-inside``: ``torch.mm`` on float32 with ``torch.backends.mkldnn.matmul.fp32_precision = "bf16"``
  (oneDNN rounds the inputs to bfloat16, AMX/AVX512_BF16 where the CPU has them; float32 in and out);
- ``inductor-max-autotune``: ``torch.compile(torch.mm, mode="max-autotune-no-cudagraphs")`` (Inductor's
  C++ GEMM template against ATen, the faster kept; each call also pays the compiled function's guards);
- ``bf16``: ``torch.mm`` on bfloat16 tensors;
- ``xla`` (``--jax-python``: an interpreter with jax): ``jax.jit(jnp.dot)`` at XLA's default threads and,
  with ``--xla_cpu_multi_thread_eigen=false``, one.

Epochs (``--epoch-rounds``): the compiled 784-400-20 epoch (float32, the default thread count) as
``vaefunc.train`` builds it, and the same with ``TORCHINDUCTOR_MAX_AUTOTUNE=1`` (C++ GEMM templates
autotuned against ATen), alternating, each a fresh interpreter.

Writes ``benchmarks/results/gemm-<machine>.json`` (rendered into docs/BENCHMARKS.md by ``python -m
benchmarks render``). Timings are never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .threads import ROOT, _env, _last_json, cpu_info, measured

PATHS = ("mkl", "onednn", "onednn-bf16-inside", "inductor-max-autotune", "bf16")


def step_shapes() -> list[tuple[int, int, int]]:
    """The (m, k, n) of the 784-400-20 step at batch 128, each once."""
    from .roofline import mlp_layers, step_gemms

    return list(dict.fromkeys(step_gemms(128, mlp_layers(784, (400,), 20))))


def _best(fn, *, seconds: float = 0.05) -> float:
    """Seconds of one call of ``fn``: the mean of a batch of calls lasting about ``seconds``."""
    fn()
    t0 = time.perf_counter()
    fn()
    reps = max(1, int(seconds / max(time.perf_counter() - t0, 1e-7)))
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def _calls(path: str, m: int, k: int, n: int):
    """A no-argument call that runs the (m, k, n) GEMM on ``path``."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
    if path == "mkl":
        out = torch.empty(m, n)
        return lambda: torch.mm(a, b, out=out)
    if path == "onednn":
        w = b.t().contiguous()  # (n, k): a linear layer's weight
        return lambda: torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], "")
    if path == "onednn-bf16-inside":
        out = torch.empty(m, n)

        def inside():
            before = torch.backends.mkldnn.matmul.fp32_precision
            torch.backends.mkldnn.matmul.fp32_precision = "bf16"
            try:
                torch.mm(a, b, out=out)
            finally:
                torch.backends.mkldnn.matmul.fp32_precision = before

        return inside
    if path == "bf16":
        a16, b16 = a.bfloat16(), b.bfloat16()
        out = torch.empty(m, n, dtype=torch.bfloat16)
        return lambda: torch.mm(a16, b16, out=out)
    if path == "inductor-max-autotune":
        import torch._inductor.config as inductor

        inductor.max_autotune_gemm_backends = "CPP,ATEN"
        mm = torch.compile(lambda x, y: torch.mm(x, y), mode="max-autotune-no-cudagraphs", dynamic=False)
        return lambda: mm(a, b)
    raise ValueError(path)


def torch_rates(rounds: int, counts: tuple[int, ...], log) -> list[dict]:
    """GFLOP/s of every path at every shape and thread count: the best of ``rounds`` rounds, alternating."""
    import torch

    rows = []
    for threads in counts:
        torch.set_num_threads(threads)
        for m, k, n in step_shapes():
            torch._dynamo.reset()  # one compiled mm per shape: no recompile limit, no guards for the others
            calls = {p: _calls(p, m, k, n) for p in PATHS}  # the max-autotune path compiles here, once per shape
            times = {p: [] for p in PATHS}
            for _ in range(rounds):
                for p, call in calls.items():
                    times[p].append(_best(call))
            for p in PATHS:
                best, med = min(times[p]), statistics.median(times[p])
                rows.append({"path": p, "m": m, "k": k, "n": n, "threads": threads,
                             "gflops": 2 * m * k * n / best / 1e9, "gflops_median": 2 * m * k * n / med / 1e9,
                             "load_average": os.getloadavg()[0]})  # fmt: skip
            log(f"{threads} thread(s) {m}x{k}x{n}: " + ", ".join(f"{r['path']} {r['gflops']:.0f}" for r in rows[-len(PATHS):]))
    return rows


def onednn_bf16_error() -> float:
    """The largest relative error of the bf16-inside path on the first layer's GEMM, against float64."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(128, 784, generator=gen), torch.randn(784, 400, generator=gen) / 28
    exact = a.double() @ b.double()
    before = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    try:
        inside = torch.mm(a, b)
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = before
    return float(((inside.double() - exact).abs().max() / exact.abs().max()))


def xla_main(argv: list[str]) -> None:
    """``python -m benchmarks.gemm_paths xla ROUNDS M,K,N ...``: one JSON line of XLA's GFLOP/s per shape."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rounds, shapes = int(argv[0]), [tuple(map(int, s.split(","))) for s in argv[1:]]
    dot = jax.jit(jnp.dot)
    out = []
    rng = np.random.default_rng(0)
    for m, k, n in shapes:
        a = jnp.asarray(rng.standard_normal((m, k), dtype=np.float32))
        b = jnp.asarray(rng.standard_normal((k, n), dtype=np.float32))
        best = min(_best(lambda: dot(a, b).block_until_ready()) for _ in range(rounds))
        out.append({"m": m, "k": k, "n": n, "gflops": 2 * m * k * n / best / 1e9})
    print(json.dumps({"jax": jax.__version__, "rows": out}))


def xla_rates(jax_python: str, rounds: int, log) -> list[dict]:
    shapes = [",".join(map(str, s)) for s in step_shapes()]
    rows = []
    for threads, flags in (("XLA default", ""), (1, "--xla_cpu_multi_thread_eigen=false")):
        env = _env({"XLA_FLAGS": flags} if flags else {})
        out = subprocess.run([jax_python, "-m", "benchmarks.gemm_paths", "xla", str(rounds), *shapes], cwd=ROOT,
                             env=env, capture_output=True, text=True, check=False)  # fmt: skip
        got = _last_json(out.stdout)
        if not got:
            log(f"xla ({threads}): failed {out.stderr[-300:]}")
            continue
        for r in got["rows"]:
            rows.append(r | {"path": "xla", "threads": threads, "jax": got["jax"], "load_average": os.getloadavg()[0]})
        log(f"xla ({threads} threads): " + ", ".join(f"{r['m']}x{r['k']}x{r['n']} {r['gflops']:.0f}" for r in got["rows"]))
    return rows


def epoch_rows(rounds: int, log) -> list[dict]:
    """The compiled float32 epoch, default Inductor options against max_autotune, alternating fresh interpreters."""
    rows = []
    for r in range(rounds):
        for name, extra in (("compiled", {}), ("compiled, max_autotune", {"TORCHINDUCTOR_MAX_AUTOTUNE": "1",
                                                                          "TORCHINDUCTOR_MAX_AUTOTUNE_GEMM_BACKENDS": "CPP,ATEN"})):
            cmd = [sys.executable, "-m", "benchmarks.threads", "epoch", "None", "True", "None", "4"]
            row = measured(cmd, _env(extra), None)
            row |= _last_json(row.pop("stdout")) | {"case": "epoch", "step": name, "round": r}
            rows.append(row)
            log(f"r{r} {name}: {row.get('examples_per_s', 0):,.0f} ex/s ({row.get('threads_used')} threads, "
                f"-ELBO {row.get('test_neg_elbo', 0):.2f}, load {row['load_average']:.2f}) {row.get('failed', '')}")
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["xla"]:
        xla_main(argv[1:])
        return 0
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gemm_paths", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epoch-rounds", type=int, default=3)
    ap.add_argument("--jax-python", default=None)
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    log = lambda s: print(s, flush=True)  # noqa: E731
    import torch

    cpu = cpu_info()
    results = {"kind": "gemm", "cpu": cpu, "torch": torch.__version__,
               "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "command": "python -m benchmarks.gemm_paths " + " ".join(argv), "load_before": os.getloadavg()[0]}  # fmt: skip
    counts = tuple(dict.fromkeys((1, torch.get_num_threads())))
    results["gemm"] = torch_rates(args.rounds, counts, log)
    results["bf16_inside_max_rel_error"] = onednn_bf16_error()
    if args.jax_python:
        results["gemm"] += xla_rates(args.jax_python, args.rounds, log)
    results["epochs"] = epoch_rows(args.epoch_rounds, log)
    results["load_after"] = os.getloadavg()[0]
    from vaefunc._io import atomic_write_bytes

    slug = re.sub(r"[^a-z0-9]+", "-", re.sub(r"\((r|tm)\)", "", cpu["model"].lower())).strip("-")
    path = args.results / f"gemm-cpu-{slug}-{cpu['cores']}c.json"
    atomic_write_bytes(path, (json.dumps(results, indent=1, sort_keys=True) + "\n").encode())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
