"""Threads with the cores shared: the epoch rate at the default, 1 and all threads, idle and with one core busy.

    python -m benchmarks.threads [--rounds 3] [--quickstart 5] [--old PATH] [--jax-python PYTHON]

For each load ("as found": the machine as it is; "one core busy": this script
starts ``nice -n 10 python -c 'while True: pass'`` pinned to the last core and
stops it after), in alternating rounds, each row a fresh interpreter (so the
automatic choice is made afresh, as a new program makes it):

- the 784-400-20 eager epoch (mnist5k's 4,000 training digits, batch 128, Adam),
  at the default (``threads=None``: :mod:`vaefunc.threads` decides), 1 thread,
  all the cores (torch's default before vaefunc chose: OpenMP's default wait
  policy), and all the cores with ``OMP_WAIT_POLICY=PASSIVE`` (what the
  ``vaefunc`` command runs with ``--threads N``);
- the compiled epoch (float32, and ``autocast="auto"``) at the default thread count;
- with ``--jax-python``, JAX's jitted step and ``lax.scan`` epoch (:mod:`benchmarks.jax_anchor`,
  run by that interpreter, e.g. a separate venv with jax and optax) on the same digits;
- with ``--quickstart N``, the README's first command, ``vaefunc train``, N times with this
  checkout and (``--old PATH``: a copy of an earlier vaefunc) N times with that one, alternating;
  with ``--jax-python`` also the same 10-epoch run as a script (import, load, train, test -ELBO) in
  vaefunc (its defaults: eager here) and in JAX (jitted step; ``lax.scan``), compile included.

Each row records the load average and the share of the CPU other processes used
while it ran. Writes ``benchmarks/results/threads-<machine>.json``; ``python -m
benchmarks render`` puts it in docs/BENCHMARKS.md. Timings are never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
"""The CPU's ISA flags that decide its GEMM paths (float32 AVX-512, bf16 dot products, AMX tiles), when present."""
EAGER = {  # row name -> (threads, extra environment)
    "default": (None, {}),
    "1 thread": (1, {}),
    "all cores": ("all", {}),
    "all cores, passive wait": ("all", {"OMP_WAIT_POLICY": "PASSIVE"}),
}


def cpu_info() -> dict:
    """The CPU's model name, the ISA flags that decide the GEMM paths, and the cores this process may use."""
    model, flags = "unknown", set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    vendor = "AMD" if "AMD" in model else "Intel" if "Intel" in model else "unknown"
    return {"model": model, "vendor": vendor, "flags": [f for f in FLAGS if f in flags],
            "cores": len(os.sched_getaffinity(0))}  # fmt: skip


def _busy_seconds() -> float:
    with open("/proc/stat") as f:
        user, nice, system, _, _, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_seconds() -> float:
    t = os.times()
    return t.children_user + t.children_system


def measured(cmd: list[str], env: dict, spinner: subprocess.Popen | None, cwd: Path = ROOT) -> dict:
    """Run ``cmd``; its wall seconds, the load average before, and the CPU share other processes used
    meanwhile (neither this command nor this script's spinner, which the row's load names)."""
    load = os.getloadavg()[0]
    busy0, own0, t0 = _busy_seconds(), _children_seconds(), time.perf_counter()
    spin0 = _spinner_seconds(spinner)
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    others = (_busy_seconds() - busy0) - (_children_seconds() - own0) - (_spinner_seconds(spinner) - spin0)
    row = {"wall_seconds": wall, "load_average": load,
           "other_cpu_share": max(0.0, others) / (wall * len(os.sched_getaffinity(0)))}  # fmt: skip
    if out.returncode != 0:
        row["failed"] = f"exit {out.returncode}: {out.stderr[-400:]}"
    row["stdout"] = out.stdout
    return row


def _spinner_seconds(spinner: subprocess.Popen | None) -> float:
    if spinner is None:
        return 0.0
    with open(f"/proc/{spinner.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def one_core_busy(busy: bool):
    """Inside the block (when ``busy``), a Python spin loop at nice 10 pinned to the last core; stopped after."""
    if not busy:
        yield None
        return
    core = max(os.sched_getaffinity(0))
    spinner = subprocess.Popen(["nice", "-n", "10", sys.executable, "-c", "while True: pass"],
                               preexec_fn=lambda: os.sched_setaffinity(0, {core}))  # fmt: skip
    try:
        time.sleep(0.5)
        yield spinner
    finally:
        spinner.terminate()
        spinner.wait()


def epoch_main(argv: list[str]) -> None:
    """``python -m benchmarks.threads epoch THREADS COMPILE AUTOCAST EPOCHS``: one JSON line
    (THREADS: None, all or a count; COMPILE: True, False or auto; AUTOCAST: None, bf16 or auto)."""
    threads, compile_, autocast, epochs = argv
    import torch

    import vaefunc

    x = vaefunc.data.load("mnist5k", split="train").images.reshape(-1, 784)
    x_test = vaefunc.data.load("mnist5k", split="test").images.reshape(-1, 784)
    model = vaefunc.VAE((784,), latent_dim=20, hidden=(400,))
    count = None if threads == "None" else torch.get_num_threads() if threads == "all" else int(threads)
    compile_ = compile_ if compile_ == "auto" else compile_ == "True"
    t0 = time.perf_counter()
    result = vaefunc.train(model.init(seed=0), x, model=model, epochs=int(epochs), compile=compile_,
                           autocast=None if autocast == "None" else autocast, progress=False, threads=count)  # fmt: skip
    seconds = time.perf_counter() - t0
    test = vaefunc.metrics.dataset_elbo(result.params, x_test, seed=0, model=model, progress=False)
    steady = [h["examples_per_s"] for h in result.history[1:]]
    print(json.dumps({"examples_per_s": statistics.median(steady), "threads_used": result.history[-1]["threads"],
                      "train_seconds": seconds, "first_epoch_seconds": result.history[0]["seconds"],
                      "test_neg_elbo": -test["elbo"]}))  # fmt: skip


def _env(extra: dict, pythonpath: Path = ROOT) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "VAEFUNC_THREADS")}
    return env | {"PYTHONPATH": str(pythonpath)} | extra


def run(*, rounds: int, epochs: int, quickstart: int, old: Path | None, jax_python: str | None, log=print) -> dict:
    cpu = cpu_info()
    results = {"kind": "threads", "cpu": cpu, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "command": "python -m benchmarks.threads " + " ".join(sys.argv[1:]), "rows": []}  # fmt: skip
    import torch

    results["torch"] = torch.__version__
    del torch
    data = None
    if jax_python:
        from .jax_anchor import save_digits

        data = save_digits("vaefunc-threads-")
    plan = [("eager", name, (threads, "False", "None"), extra) for name, (threads, extra) in EAGER.items()]
    plan += [("compiled float32", "default", (None, "True", "None"), {}),
             ("compiled autocast=auto", "default", (None, "True", "auto"), {})]  # fmt: skip
    for load in ("as found", "one core busy"):
        with one_core_busy(load == "one core busy") as spinner:
            for r in range(rounds):
                for step, name, (threads, compile_, autocast), extra in plan:
                    cmd = [sys.executable, "-m", "benchmarks.threads", "epoch", str(threads), compile_, autocast,
                           str(epochs)]  # fmt: skip
                    row = measured(cmd, _env(extra), spinner)
                    row |= _last_json(row.pop("stdout"))
                    row |= {"case": "epoch", "load": load, "step": step, "threads": name, "round": r}
                    results["rows"].append(row)
                    log(f"{load} r{r} {step} {name}: {row.get('examples_per_s', 0):,.0f} ex/s "
                        f"({row.get('threads_used')} threads; load {row['load_average']:.2f}) {row.get('failed', '')}")
                if jax_python:
                    cmd = [jax_python, "-m", "benchmarks.jax_anchor", "--epochs", str(epochs), "--precision",
                           "float32", "--data", str(data)]  # fmt: skip
                    row = measured(cmd, _env({}), spinner)
                    lines = [json.loads(s) for s in row.pop("stdout").splitlines() if s.startswith("{")]
                    for line in lines:
                        results["rows"].append(row | line | {"case": "epoch", "load": load, "step": line["impl"],
                                                             "threads": "XLA's", "round": r})  # fmt: skip
                        log(f"{load} r{r} {line['impl']}: {line['examples_per_s']:,.0f} ex/s")
                    if not lines:
                        log(f"{load} r{r} jax: {row.get('failed')}")
            for i in range(quickstart):
                _quickstart(results, i, load, spinner, old, jax_python, data, log)
    return results


def _quickstart(results: dict, i: int, load: str, spinner, old: Path | None, jax_python: str | None,
                data: Path | None, log) -> None:  # fmt: skip
    """One round of quick starts, each a fresh process: the README's ``vaefunc train`` (this checkout, and
    ``old``), and with ``jax_python`` the same 10-epoch run as a script, in vaefunc and in JAX (import,
    load, train, test -ELBO)."""
    for version, path in [("this", ROOT)] + ([("old", old)] if old else []):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "vaefunc", "train", "--out", str(Path(tmp) / "run"), "--progress", "never"]
            row = measured(cmd, _env({}, path), spinner, cwd=Path(tmp))  # not ROOT: -m imports from cwd
        out = row.pop("stdout")
        m = re.search(r"for 10 epochs in ([0-9.]+) s \(([^;]*);", out)
        row |= {"case": "quickstart", "load": load, "version": version, "round": i,
                "train_seconds": float(m.group(1)) if m else None, "how": m.group(2) if m else None}
        results["rows"].append(row)
        log(f"{load} quick-start {version} #{i}: {row['wall_seconds']:.1f} s wall "
            f"(train {row['train_seconds']} s; {row['how']}) {row.get('failed', '')}")
    if not jax_python:
        return
    scripts = [("vaefunc", [sys.executable, "-m", "benchmarks.threads", "epoch", "None", "auto", "auto", "10"])]
    scripts += [(f"jax {idiom}", [jax_python, "-m", "benchmarks.jax_anchor", "--epochs", "10", "--precision",
                                  "float32", "--idiom", idiom, "--data", str(data)]) for idiom in ("jit-step", "lax-scan")]
    for name, cmd in scripts:
        row = measured(cmd, _env({}), spinner)
        row |= _last_json(row.pop("stdout"))
        row |= {"case": "quickstart script", "load": load, "version": name, "round": i}
        results["rows"].append(row)
        log(f"{load} quick-start script {name} #{i}: {row['wall_seconds']:.1f} s wall (train "
            f"{row.get('train_seconds', 0):.2f} s, test -ELBO {row.get('test_neg_elbo', 0):.2f}) {row.get('failed', '')}")


def _last_json(text: str) -> dict:
    lines = [s for s in text.splitlines() if s.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["epoch"]:
        epoch_main(argv[1:])
        return 0
    ap = argparse.ArgumentParser(prog="python -m benchmarks.threads", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4, help="epochs per row (the first, a warm-up, is not counted)")
    ap.add_argument("--quickstart", type=int, default=5, help="quick-start runs per version and load")
    ap.add_argument("--old", type=Path, default=None, help="a folder holding an earlier vaefunc package to compare")
    ap.add_argument("--jax-python", default=None, help="a Python with jax and optax, for the JAX rows")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    results = run(rounds=args.rounds, epochs=args.epochs, quickstart=args.quickstart, old=args.old,
                  jax_python=args.jax_python, log=lambda s: print(s, flush=True))  # fmt: skip
    from vaefunc._io import atomic_write_bytes

    slug = re.sub(r"[^a-z0-9]+", "-", re.sub(r"\((r|tm)\)", "", results["cpu"]["model"].lower())).strip("-")
    path = args.results / f"threads-cpu-{slug}-{results['cpu']['cores']}c.json"
    atomic_write_bytes(path, (json.dumps(results, indent=1, sort_keys=True) + "\n").encode())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
