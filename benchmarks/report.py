"""Render benchmarks/results/*.json into docs/BENCHMARKS.md and one PNG plot per machine.

Every number in the page comes from a results file; nothing is typed in by hand.
"""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path

from vaefunc._io import atomic_write_bytes

from .run import FLAGS, is_quiet

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "BENCHMARKS.md"

COMMAND = "python -m benchmarks --device {device}"
TARGETS = {
    "cpu": "steady state >= 2x the reference's epoch throughput and >= 80% of the matmul roofline at batch 128; "
    "the default `vaefunc.train` (compile=\"auto\") never slower end to end than the reference, cold cache included",
    "cuda": "full MNIST epoch (60,000, batch 128, 784-400-20) <= 50 ms steady state on one H100 and >= 20x the "
    "reference; >= 50% of the TF32 matmul rate at large batch",
}


def save_results(results: dict, folder: Path = RESULTS) -> Path:
    path = folder / f"{results['machine']}.json"
    atomic_write_bytes(path, (json.dumps(results, indent=1, sort_keys=True) + "\n").encode())
    return path


def load_results(folder: Path = RESULTS) -> list[dict]:
    """Every results file this harness wrote in ``folder`` (other JSON files there are ignored)."""
    found = (json.loads(p.read_text()) for p in sorted(folder.glob("*.json")))
    return [r for r in found if isinstance(r, dict) and r.get("schema") == 1 and "rows" in r and "machine" in r]


def _f(value, spec: str = ".0f", suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def _ratio(value, ref) -> str:
    return "–" if value is None or not ref else f"{value / ref:.2f}x"


def _rows(res: dict, case: str, **match) -> list[dict]:
    return [r for r in res["rows"] if r["case"] == case and all(r.get(k) == v for k, v in match.items())]


def _one(res: dict, case: str, **match) -> dict | None:
    rows = [r for r in _rows(res, case, **match) if "skipped" not in r]
    return rows[0] if rows else None


def _get(row: dict | None, key: str):
    return None if row is None else row.get(key)


def _quality(row: dict | None) -> str:
    if row is None:
        return "–"
    return "ok" if row.get("quality_ok") else "**FAILED**"


def _jax_lines(res: dict, jax_rows: list[dict]) -> list[str]:
    """vaefunc's epoch against the JAX anchor's in the same run, as ratios; or why the anchor was skipped."""
    skipped = [r["skipped"] for r in _rows(res, "jax") if "skipped" in r]
    if not jax_rows:
        return [f"The JAX anchor was skipped: {skipped[0]}.", ""] if skipped else []
    version = jax_rows[0].get("jax", "?")
    lines = [f"The jax rows run the same model, data, batch and Adam in JAX {version} + optax in the same process "
             "(`benchmarks/jax_anchor.py`): a jitted step called from a Python loop, and a whole epoch as one "
             "jitted `lax.scan`; bf16 rows cast the matmuls' inputs to bfloat16 and keep float32 params, Adam "
             "state and sums. vaefunc against JAX's fastest idiom at each precision (epoch examples/s; first "
             "epoch, compile included, in seconds):", ""]  # fmt: skip
    for precision, autocast in (("float32", None), ("bf16", "bf16")):
        scan = next((r for r in jax_rows if r["impl"] == "jax-lax-scan" and r["precision"] == precision), None)
        if scan is None:
            continue
        for row in _rows(res, "epoch"):
            if row.get("autocast") != autocast or row.get("tf32") or row["impl"] == "reference":
                continue
            lines.append(f"- {row['impl']}" + (f" (autocast={autocast})" if autocast else "")
                         + f" vs jax-lax-scan ({precision}): {_ratio(row.get('examples_per_s'), scan['examples_per_s'])}"
                         f"; first epoch {_f(row.get('first_epoch_seconds'), '.2f')} s vs "
                         f"{_f(scan['first_epoch_seconds'], '.2f')} s")  # fmt: skip
    ours = [r for r in _rows(res, "epoch") if r["impl"] != "reference" and r.get("examples_per_s")]
    if ours:
        best, theirs = (max(rows, key=lambda r: r["examples_per_s"]) for rows in (ours, jax_rows))
        opts = f" (autocast={best['autocast']})" if best.get("autocast") else ""
        lines.append(f"- the fastest of each, any precision: {best['impl']}{opts} vs {theirs['impl']} "
                     f"({theirs['precision']}): {_ratio(best['examples_per_s'], theirs['examples_per_s'])}")  # fmt: skip
    return lines + [""]


def render_machine(res: dict, plot_name: str | None) -> list[str]:
    """The section of the page for one results file."""
    info, sizes = res["info"], res["sizes"]
    device = info["device"]
    what = info["gpu"] if device == "cuda" else f"{info['cpu']}, {info['cores']} cores, {info['threads']} threads"
    if info.get("flags") is not None:
        what += f", ISA flags {' '.join(info['flags']) or 'none of ' + '/'.join(FLAGS)}"
    lines = [f"## {info['gpu'] if device == 'cuda' else info['cpu']} ({res['machine']})", ""]
    lines += [f"{what}; torch {info['torch']}, Python {info['python']}; measured {res['created']} in "
              f"{res['seconds']:.0f} s with `{COMMAND.format(device=device)}` (preset `{res['preset']}`). "
              f"Data: {res['data']}.", ""]  # fmt: skip
    load = (res.get("load_before") or [None])[0]
    others = res.get("other_cpu_share")
    if device == "cpu":
        what = (f"load average {_f(load, '.2f')} before the run; other processes used "
                f"{_pct(others)} of the cores during it")  # fmt: skip
        if is_quiet(res):
            lines += [f"Quiet machine: {what}.", ""]
        else:
            lines += [f"> **Not valid as a measurement**: {what} (other work shared the cores). "
                      "Rerun on a quiet machine.", ""]  # fmt: skip
    if res["preset"] != "full":
        lines += [f"> Preset `{res['preset']}`: small sizes to check that everything runs, not the published numbers.",
                  ""]  # fmt: skip
    rates = res["rates"]
    if rates:
        lines += [f"Measured in the same run: large square float32 GEMM "
                  f"{_f(rates.get('square_gemm_flops_per_s', 0) / 1e9, '.0f')} GFLOP/s; device copy "
                  f"{_f(rates.get('copy_bytes_per_s', 0) / 1e9, '.1f')} GB/s"
                  + (f"; TF32 {rates['square_gemm_tf32_flops_per_s'] / 1e12:.0f} TFLOP/s" if "square_gemm_tf32_flops_per_s"
                     in rates else "")
                  + (f"; bf16 {rates['square_gemm_bf16_flops_per_s'] / 1e9:,.0f} GFLOP/s" if "square_gemm_bf16_flops_per_s"
                     in rates else "") + ".", ""]  # fmt: skip

    # Steady state at batch 128: the headline.
    ref_epoch = _one(res, "epoch", impl="reference")
    hidden = 400 if 400 in sizes["hiddens"] else sizes["hiddens"][0]
    lines += [f"### Steady state: a whole epoch, batch 128, {sizes['d']}-{hidden}-{sizes['latent']}", "",
              "| implementation | epoch examples/s | vs reference | epoch seconds | roofline share | bound "
              "| share of GEMM + memory floor | share of the bf16 GEMM rate | quality |",
              "|---|---:|---:|---:|---:|---|---:|---:|---|"]  # fmt: skip
    jax_rows = [r for r in _rows(res, "jax") if "skipped" not in r]
    for row in _rows(res, "epoch") + jax_rows:
        opts = ", ".join(f"{k}={row[k]}" for k in ("tf32", "autocast") if k in row)
        opts = opts or ("bf16 matmuls" if row.get("precision") == "bf16" else "")
        name = row["impl"] + (f" ({opts})" if opts else "")
        lines.append(
            f"| {name} | {_f(row.get('examples_per_s'))} | {_ratio(row.get('examples_per_s'), _get(ref_epoch, 'examples_per_s'))} "
            f"| {_f(row.get('epoch_seconds'), '.3f')} | {_pct(row.get('roofline_share'))} | {row.get('bound', '–')} "
            f"| {_pct(row.get('serial_floor_share'))} | {_pct(row.get('bf16_share'))} | {_quality(row)} |"
        )
    lines += ["", "The reference is pytorch/examples' VAE loop (`benchmarks/reference.py`): DataLoader(shuffle=True), "
              "`loss.item()` every step. The vaefunc rows run `vaefunc.train`'s step: params and Adam state owned "
              "by the loop and updated in place (the runner `vaefunc.training.setup` builds; eager, `vaefunc.fused_adam`'s kernel); "
              "vaefunc-streamed is the eager row with the data a `TensorDataset` in host memory, read, checked and "
              "copied to the device per step (`vaefunc.stream`). "
              "Roofline share = the step's GEMM FLOPs over the measured rate of those same "
              "GEMMs (or its minimum bytes over the copy bandwidth, whichever is slower), divided by the measured "
              "step time; the GEMM + memory floor adds the two, since the GEMMs and the optimizer's passes over the "
              "params (10 reads or writes of every parameter per step) do not overlap. Shares are against float32 GEMMs (rows run with tf32 or bf16 can exceed 100%); "
              "where the machine has bf16 matrix units (AMX-BF16 tiles on a CPU, or CUDA) the last column is the step's "
              "GEMM FLOPs over the measured bf16 rate of those same GEMMs, the fastest matrix rate there; on CUDA the "
              "sweep also gives the share of the TF32 GEMM rate.", ""]  # fmt: skip
    lines += _jax_lines(res, jax_rows)

    # Batch sweep.
    sweep_h = 400 if 400 in sizes["hiddens"] else sizes["hiddens"][0]
    lines += [f"### Train-step throughput vs batch size (hidden {sweep_h})", "",
              "| batch | reference ex/s | vaefunc eager ex/s | vs ref | vaefunc compiled ex/s | vs ref | compiled roofline share "
              "| GEMM rate GFLOP/s | compiled share of TF32 GEMM rate |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    gemm = {(g["batch"], g["hidden"]): g for g in res["gemm"]}
    for b in sizes["batches"]:
        ref, eager, comp = (_one(res, "step", impl=i, batch=b, hidden=sweep_h)
                            for i in ("reference", "vaefunc-eager", "vaefunc-compiled"))  # fmt: skip
        rate = gemm.get((b, sweep_h), {}).get("flops_per_s")
        lines.append(
            f"| {b} | {_f(_get(ref, 'examples_per_s'))} | {_f(_get(eager, 'examples_per_s'))} "
            f"| {_ratio(_get(eager, 'examples_per_s'), _get(ref, 'examples_per_s'))} | {_f(_get(comp, 'examples_per_s'))} "
            f"| {_ratio(_get(comp, 'examples_per_s'), _get(ref, 'examples_per_s'))} | {_pct(_get(comp, 'roofline_share'))} "
            f"| {_f(None if rate is None else rate / 1e9)} | {_pct(_get(comp, 'tf32_share'))} |"
        )
    if plot_name:
        lines += ["", f"![throughput vs batch size]({plot_name})"]
    lines.append("")

    # Hidden widths.
    if len(sizes["hiddens"]) > 1:
        lines += ["### Hidden width at batch 128", "",
                  "| hidden | implementation | ex/s | vs reference | roofline share | quality |",
                  "|---:|---|---:|---:|---:|---|"]  # fmt: skip
        for h in sizes["hiddens"]:
            ref = _one(res, "step", impl="reference", batch=128, hidden=h)
            for row in _rows(res, "step", batch=128, hidden=h):
                lines.append(f"| {h} | {row['impl']} | {_f(row.get('examples_per_s'))} "
                             f"| {_ratio(row.get('examples_per_s'), _get(ref, 'examples_per_s'))} "
                             f"| {_pct(row.get('roofline_share'))} | {_quality(row)} |")  # fmt: skip
        lines.append("")

    # Cold start and the default run.
    sub = _rows(res, "subprocess")
    if sub:
        lines += ["### Cold start and the default run, each in a fresh interpreter", "",
                  "| what | Inductor cache | seconds (import to done, data loading excluded) | process seconds | quality |",
                  "|---|---|---:|---:|---|"]  # fmt: skip
        for row in sub:
            what = row["mode"]
            if row.get("compiled") is not None:
                what += f" (auto chose compile={row['compiled']})"
            if row.get("epochs"):
                what += f", {row['n']} examples x {row['epochs']} epochs"
            lines.append(f"| {what} | {row.get('cache') or '–'} | {_f(row.get('seconds'), '.2f')} "
                         f"| {_f(row.get('process_seconds'), '.2f')} | {row.get('skipped') or _quality(row)} |")  # fmt: skip
        lines.append("")
        lines += cold_compile_lines(res)
        lines += crossover_lines(res)

    # Conv and log-likelihood.
    other = _rows(res, "conv") + _rows(res, "log_likelihood")
    if other:
        lines += ["### Conv model and log-likelihood estimator", "", "| case | implementation | result |", "|---|---|---|"]
        for row in other:
            if "skipped" in row:
                result = f"skipped: {row['skipped']}"
            elif row["case"] == "conv":
                result = f"{row['examples_per_s']:.0f} ex/s at batch {row['batch']} ({_quality(row)})"
            else:
                result = (f"{row['seconds']:.2f} s for {row['n']} digits x k={row['k']} "
                          f"({1e6 * row['seconds'] / (row['n'] * row['k']):.2f} us a sample"
                          + (f", **{row['vs_reference']:.2f}x** the reference" if "vs_reference" in row else "")
                          + (f"; first call {row['first_seconds']:.1f} s" if row.get("first_seconds") else "")
                          + f"; mean log p(x) {row['mean_ll']:.1f} nats, untrained model; {_quality(row)})")  # fmt: skip
            impl = row["impl"] + (f" (autocast={row['autocast']})" if row.get("autocast") else "")
            lines.append(f"| {row['case']} | {impl} | {result} |")
        lines.append("")

    lines += reach_lines(res)
    lines += targets_lines(res)
    return lines


def reach_lines(res: dict) -> list[str]:
    """Custom networks against the built-in ones, and the conv model against a plain PyTorch conv VAE."""
    lines = []
    run = next((r["separate_run"] for r in _rows(res, "custom") + _rows(res, "conv32") if "separate_run" in r), None)
    if run:
        lines += [f"The next two tables come from a separate run at {run['measured_at']} (`{run['command']}`, "
                  f"{run['threads']} torch thread; other jobs used {100 * (run['other_cpu_share'] or 0):.0f}% of the "
                  "CPU meanwhile, so only the ratios in each table, from alternating rounds, are comparable).", ""]
    custom = [r for r in _rows(res, "custom") if "skipped" not in r]
    if custom:
        lines += ["### Your own networks (VAE.custom) against the built-in ones", "",
                  "The same 784-400-20 function and params, as the built-in MLP and as `nn.Sequential` modules "
                  "run through `functional_call`; steps through `vaefunc.train`'s runner (an epoch's work but its "
                  "draws) in alternating rounds, the median of each.", "",
                  "| step | model | examples/s | vs the built-in | quality |", "|---|---|---:|---:|---|"]  # fmt: skip
        for r in custom:
            lines.append(f"| {r['impl']} | {r['model']} | {r['examples_per_s']:,.0f} | {r['vs_built_in']:.2f}x "
                         f"| {_quality(r)} |")  # fmt: skip
        lines.append("")
    conv = [r for r in _rows(res, "conv32") if "skipped" not in r]
    if conv:
        lines += ["### The conv model on 3x32x32 against a plain PyTorch conv VAE", "",
                  "The same network (convolutions 32-32-64, 400, 20 latents, Gaussian likelihood) through "
                  "`vaefunc.train`'s step and as an `nn.Module` with autograd, `torch.optim.Adam` and `loss.item()` "
                  "per step; alternating rounds.", "",
                  "| implementation | batch | examples/s | vs the plain loop | quality |",
                  "|---|---:|---:|---:|---|"]  # fmt: skip
        for r in conv:
            lines.append(f"| {r['impl']} | {r['batch']} | {r['examples_per_s']:,.0f} | **{r['vs_reference']:.2f}x** "
                         f"| {_quality(r)} |")  # fmt: skip
        lines.append("")
    return lines


def crossover(res: dict) -> dict | None:
    """When compiling pays off on this machine: the compile cost over the per-example saving."""
    eager = _one(res, "epoch", impl="vaefunc-eager")
    # The compiled epoch train(compile=True) runs by default here (the cold-start case compiles that step).
    default = res["info"].get("compiled_autocast")
    comp = next((r for r in _rows(res, "epoch", impl="vaefunc-compiled") if r.get("autocast") == default
                 and not r.get("tf32")), None)  # fmt: skip
    cold = [r for r in _rows(res, "subprocess", mode="first-step-compiled") if r.get("cache") == "cold" and "seconds" in r]
    eager_first = _one(res, "subprocess", mode="first-step-eager")
    if not (eager and comp and cold and eager_first):
        return None
    cost = cold[0]["seconds"] - eager_first["seconds"]
    saving = 1 / eager["examples_per_s"] - 1 / comp["examples_per_s"]
    if saving <= 0:
        return {"compile_seconds": cost, "examples": None, "eager_seconds": None}
    examples = cost / saving
    return {"compile_seconds": cost, "examples": examples, "eager_seconds": examples / eager["examples_per_s"]}


def cold_compile_lines(res: dict) -> list[str]:
    """The first compiled step's own time (cold cache, after import and set-up) against JAX's first jitted epoch."""
    cold = next((r for r in _rows(res, "subprocess", mode="first-step-compiled")
                 if r.get("cache") == "cold" and r.get("step_seconds")), None)  # fmt: skip
    scan = next((r for r in _rows(res, "jax") if r.get("impl") == "jax-lax-scan" and r.get("precision") == "float32"
                 and r.get("first_epoch_seconds")), None)  # fmt: skip
    if cold is None:
        return []
    line = f"The first compiled step alone, cold Inductor cache, after import and set-up: {cold['step_seconds']:.1f} s"
    if scan is None:
        return [line + " (no JAX row to set it against).", ""]
    return [line + f"; JAX's first jitted `lax.scan` epoch, compile included: {scan['first_epoch_seconds']:.2f} s "
            f"({cold['step_seconds'] / scan['first_epoch_seconds']:.1f}x; issue 15 asks for at most 3x).", ""]  # fmt: skip


def crossover_lines(res: dict) -> list[str]:
    c = crossover(res)
    if c is None:
        return []
    if c["examples"] is None:
        return [f"Compiling never pays off here: the compiled step is not faster than eager "
                f"(cold compile {c['compile_seconds']:.1f} s).", ""]  # fmt: skip
    precision = "bf16 (autocast=\"auto\" here)" if res["info"].get("compiled_autocast") else "float32"
    return [f"**compile=\"auto\" crossover**: a cold compile costs {c['compile_seconds']:.1f} s more than the eager "
            f"first step; against the {precision} compiled epoch it is repaid after about "
            f"{c['examples']:,.0f} examples (about {c['eager_seconds']:.0f} s of eager training at batch 128).", ""]  # fmt: skip


def targets_lines(res: dict) -> list[str]:
    """The issue's targets next to what this run measured."""
    device = res["info"]["device"]
    lines = ["### Targets", "", f"Issue 5 asks for: {TARGETS[device]}.", ""]
    ref, comp = _one(res, "epoch", impl="reference"), _one(res, "epoch", impl="vaefunc-compiled")
    eager = _one(res, "epoch", impl="vaefunc-eager")
    best = max((r for r in (comp, eager) if r), key=lambda r: r["examples_per_s"], default=None)
    if best and ref:
        ratio = best["examples_per_s"] / ref["examples_per_s"]
        lines.append(f"- epoch throughput vs reference ({best['impl']}): {ratio:.2f}x")
        lines.append(f"- roofline share at batch 128 ({best['impl']}): {_pct(best.get('roofline_share'))}")
        if device == "cuda":
            lines.append(f"- epoch time: {1000 * best['epoch_seconds']:.1f} ms for {best['n']} examples")
    default, ref_run = _one(res, "subprocess", mode="train-default"), _one(res, "subprocess", mode="train-reference")
    if default and ref_run:
        verdict = "not slower" if default["seconds"] <= ref_run["seconds"] else "**slower**"
        lines.append(f"- default run end to end: vaefunc.train {default['seconds']:.1f} s vs reference "
                     f"{ref_run['seconds']:.1f} s ({verdict})")  # fmt: skip
    lines.append("")
    return lines


def plot(res: dict, path: Path) -> bool:
    """Throughput vs batch size, vaefunc vs reference, as a PNG (Agg). False if there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = res["sizes"]
    sweep_h = 400 if 400 in sizes["hiddens"] else sizes["hiddens"][0]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    drawn = False
    for impl, style in (("reference", "o--"), ("vaefunc-eager", "s-"), ("vaefunc-compiled", "^-")):
        pts = sorted((r["batch"], r["examples_per_s"]) for r in _rows(res, "step", impl=impl, hidden=sweep_h)
                     if "examples_per_s" in r)  # fmt: skip
        if pts:
            ax.plot(*zip(*pts), style, label=impl)
            drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ceiling = sorted((g["batch"], g["batch"] / g["seconds"]) for g in res["gemm"] if g["hidden"] == sweep_h)
    if ceiling:
        ax.plot(*zip(*ceiling), ":", color="gray", label="GEMM roofline (measured)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("train-step throughput (examples/s)")
    ax.set_title(f"{res['machine']}: {sizes['d']}-{sweep_h}-{sizes['latent']} VAE")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return True


def load_extra(folder: Path = RESULTS) -> list[dict]:
    """The thread and GEMM-path results (``benchmarks.threads``, ``benchmarks.gemm_paths``) in ``folder``."""
    found = (json.loads(p.read_text()) for p in sorted(folder.glob("*.json")))
    return [r for r in found if isinstance(r, dict) and r.get("kind") in ("threads", "gemm")]


def cpu_words(cpu: dict) -> str:
    """``Intel(R) Xeon(R) Processor (Intel; avx2 avx512f avx512_bf16 amx_tile amx_bf16; 2 cores)``."""
    return f"{cpu['model']} ({cpu['vendor']}; ISA flags {' '.join(cpu['flags']) or 'none of ' + 'avx2/avx512'}; {cpu['cores']} cores)"


def _spread(values: list[float], spec: str = ",.0f") -> str:
    if not values:
        return "–"
    med = statistics.median(values)
    return f"{med:{spec}} ({min(values):{spec}}–{max(values):{spec}})" if len(values) > 1 else f"{med:{spec}}"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def threads_lines(res: dict) -> list[str]:
    """The epoch at each thread count as found and with one core busy, and the quick-start's spread."""
    found = [r["other_cpu_share"] for r in res["rows"] if r["load"] == "as found" and r.get("other_cpu_share") is not None]
    quiet = bool(found) and _median(found) < 0.05
    machine = ("quiet (\"as found\": other processes used under 5% of the cores" if quiet else
               "shared with other jobs throughout (\"as found\": their load")  # fmt: skip
    lines = [f"## Threads with the cores shared: {cpu_words(res['cpu'])}, {'quiet' if quiet else 'shared'}, "
             f"{res['created'][:10]}", "",
             f"torch {res['torch']}; measured {res['created']} with `{res['command']}` (`benchmarks/threads.py`). "
             f"Each row is a fresh interpreter, rows alternating in rounds; the machine was {machine}; "
             "\"one core busy\": plus a `nice -n 10` Python spin loop "
             "pinned to one core, which the script starts and stops). Examples/s: the median of the steady epochs "
             "(784-400-20, mnist5k's 4,000 training digits, batch 128), then the median over rounds (fastest–slowest "
             "round); vs eager 1 thread: the median of each round's ratio.", ""]  # fmt: skip
    lines += ["| load | step | threads | threads used | epoch examples/s | vs eager 1 thread | test -ELBO | load average "
              "| others' CPU share |", "|---|---|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    epochs = [r for r in res["rows"] if r["case"] == "epoch" and "examples_per_s" in r]
    for load in dict.fromkeys(r["load"] for r in epochs):
        ones = {r["round"]: r["examples_per_s"] for r in epochs if r["load"] == load and r["threads"] == "1 thread"}
        for key in dict.fromkeys((r["step"], r["threads"]) for r in epochs if r["load"] == load):
            rows = [r for r in epochs if r["load"] == load and (r["step"], r["threads"]) == key]
            rates = [r["examples_per_s"] for r in rows]
            ratio = _median([r["examples_per_s"] / ones[r["round"]] for r in rows if r["round"] in ones])
            used = sorted({str(r.get("threads_used", "–")) for r in rows})
            neg = [r.get("test_neg_elbo") for r in rows if r.get("test_neg_elbo") is not None]
            lines.append(f"| {load} | {key[0]} | {key[1]} | {', '.join(used)} | {_spread(rates)} "
                         f"| {_f(ratio, '.2f', 'x')} | {_f(_median(neg), '.2f')} "
                         f"| {_spread([r['load_average'] for r in rows], '.1f')} "
                         f"| {_pct(_median([r['other_cpu_share'] for r in rows]))} |")  # fmt: skip
    lines += ["", "Threads: `default` is `threads=None` (`vaefunc.threads` decides: one thread unless all the cores "
              "run the step 1.1x faster); `all cores` is torch's default count with OpenMP's default wait policy "
              "(what `vaefunc.train` ran before it chose); `passive wait` adds `OMP_WAIT_POLICY=PASSIVE`, which the "
              "`vaefunc` command now sets. The test -ELBO is over the 1,000 test digits after the row's epochs "
              "(JAX's: its own single-sample estimate, the same model and Adam).", ""]  # fmt: skip
    quick = [r for r in res["rows"] if r["case"] == "quickstart" and r.get("wall_seconds")]
    if quick:
        against = (", alternating this vaefunc with the one before it chose threads (`--old`)"
                   if any(r["version"] == "old" for r in quick) else "")  # fmt: skip
        lines += ["The README's first command, `vaefunc train` (10 epochs, pictures and all), in a fresh process each "
                  f"time{against}:", "",
                  "| load | vaefunc | runs | wall seconds, median (fastest–slowest) | slowest / fastest "
                  "| training seconds | how it ran | load average |", "|---|---|---:|---:|---:|---:|---|---:|"]  # fmt: skip
        for load in dict.fromkeys(r["load"] for r in quick):
            for version in ("old", "this"):
                rows = [r for r in quick if r["load"] == load and r["version"] == version]
                if not rows:
                    continue
                walls = [r["wall_seconds"] for r in rows]
                trains = [r["train_seconds"] for r in rows if r.get("train_seconds")]
                how = "; ".join(sorted({r.get("how") or "?" for r in rows}))
                name = "before (torch's threads, spinning)" if version == "old" else "this (auto threads, passive wait)"
                lines.append(f"| {load} | {name} | {len(rows)} | {_spread(walls, '.1f')} | {max(walls) / min(walls):.2f}x "
                             f"| {_spread(trains, '.1f')} | {how} | {_spread([r['load_average'] for r in rows], '.1f')} |")
        lines.append("")
    return lines + jax_ratio_lines(epochs) + script_lines(res)


def jax_ratio_lines(epochs: list[dict]) -> list[str]:
    """The issue's ratios: each vaefunc epoch over JAX's in the same round and load (median over rounds)."""
    pairs = [("eager, default threads", ("eager", "default"), "jax-jit-step"),
             ("compiled float32", ("compiled float32", "default"), "jax-lax-scan"),
             ("compiled autocast=auto", ("compiled autocast=auto", "default"), "jax-lax-scan")]  # fmt: skip
    lines = ["Against JAX in the same rounds (each round's vaefunc epoch rate over JAX's, median over rounds):", "",
             "| load | vaefunc | against | ratio, median (lowest–highest) |", "|---|---|---|---:|"]  # fmt: skip
    found = False
    for load in dict.fromkeys(r["load"] for r in epochs):
        for name, key, jax in pairs:
            ours = {r["round"]: r["examples_per_s"] for r in epochs if r["load"] == load and (r["step"], r["threads"]) == key}
            theirs = {r["round"]: r["examples_per_s"] for r in epochs if r["load"] == load and r["step"] == jax}
            ratios = [ours[i] / theirs[i] for i in ours if i in theirs]
            if ratios:
                found = True
                lines.append(f"| {load} | {name} | JAX {jax[4:]} | {_spread(ratios, '.2f')} |")
    return lines + [""] if found else []


def script_lines(res: dict) -> list[str]:
    """The quick start as a script (import, load, 10 epochs, test -ELBO) in vaefunc and in JAX."""
    rows = [r for r in res["rows"] if r["case"] == "quickstart script" and "train_seconds" in r]
    if not rows:
        return []
    lines = ["The same 10-epoch run as a script in a fresh process (import, load mnist5k, train with compile "
             "included, test -ELBO), vaefunc at its defaults against JAX's two idioms, alternating:", "",
             "| load | script | runs | wall seconds | training seconds (compile included) | test -ELBO |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for load in dict.fromkeys(r["load"] for r in rows):
        for version in dict.fromkeys(r["version"] for r in rows):
            sel = [r for r in rows if r["load"] == load and r["version"] == version]
            lines.append(f"| {load} | {version} | {len(sel)} | {_spread([r['wall_seconds'] for r in sel], '.2f')} "
                         f"| {_spread([r['train_seconds'] for r in sel], '.2f')} "
                         f"| {_f(_median([r['test_neg_elbo'] for r in sel]), '.2f')} |")  # fmt: skip
    return lines + [""]


def gemm_lines(res: dict) -> list[str]:
    """GFLOP/s of the step's GEMMs on each path, and the compiled epoch with and without max_autotune."""
    gemm = res["gemm"]
    paths = list(dict.fromkeys(r["path"] for r in gemm))
    lines = [f"## GEMM paths at the step's shapes: {cpu_words(res['cpu'])}", "",
             f"torch {res['torch']}; measured {res['created']} with `{res['command']}` (`benchmarks/gemm_paths.py`), "
             f"load average {res['load_before']:.1f} before and {res['load_after']:.1f} after (a shared machine: "
             "compare paths within a row). GFLOP/s of each (m, k, n) GEMM of one 784-400-20 step at batch 128, "
             "alone, the best of the rounds (paths alternating). `mkl`: `torch.mm` (ATen's float32 default); "
             "`onednn`: `torch.ops.mkldnn._linear_pointwise` (mkldnn linear, float32); `onednn-bf16-inside`: "
             "`torch.mm` with `torch.backends.mkldnn.matmul.fp32_precision = \"bf16\"` (float32 in and out, "
             f"inputs rounded to bfloat16: largest error {res['bf16_inside_max_rel_error']:.1e} of the output's "
             "scale on 128x784x400); `inductor-max-autotune`: `torch.compile(torch.mm, "
             "mode=\"max-autotune-no-cudagraphs\")`, C++ GEMM template or ATen, the faster; `bf16`: `torch.mm` on "
             "bfloat16 tensors; `xla`: `jax.jit(jnp.dot)` in float32.", ""]  # fmt: skip
    for threads in dict.fromkeys(r["threads"] for r in gemm):
        here = [r for r in gemm if r["threads"] == threads]
        cols = [p for p in paths if any(r["path"] == p for r in here)]
        label = f"{threads} thread{'s' * (threads != 1)}" if isinstance(threads, int) else threads
        lines += [f"{label}:", "", "| m x k x n | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for shape in dict.fromkeys((r["m"], r["k"], r["n"]) for r in here):
            cells = []
            for p in cols:
                r = next((r for r in here if r["path"] == p and (r["m"], r["k"], r["n"]) == shape), None)
                cells.append(_f(None if r is None else r["gflops"]))
            lines.append(f"| {'x'.join(map(str, shape))} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Where another process held a core while a row was timed, the cells at more than one thread fall to "
              "a fraction of the one-thread rate: OpenMP's threads wait for the one that shares a core "
              "(\"Threads with the cores shared\" below measures that on the whole epoch).", ""]  # fmt: skip
    epochs = [r for r in res.get("epochs", []) if "examples_per_s" in r]
    if epochs:
        lines += ["The compiled float32 epoch (`vaefunc.train`, default thread count), Inductor's default against "
                  "`TORCHINDUCTOR_MAX_AUTOTUNE=1` with `max_autotune_gemm_backends=CPP,ATEN`, alternating fresh "
                  "interpreters:", "", "| step | epoch examples/s, median (fastest–slowest) | threads used | test -ELBO "
                  "| load average |", "|---|---:|---|---:|---:|"]  # fmt: skip
        for step in dict.fromkeys(r["step"] for r in epochs):
            rows = [r for r in epochs if r["step"] == step]
            lines.append(f"| {step} | {_spread([r['examples_per_s'] for r in rows])} "
                         f"| {', '.join(sorted({str(r.get('threads_used')) for r in rows}))} "
                         f"| {_f(_median([r['test_neg_elbo'] for r in rows if 'test_neg_elbo' in r]), '.2f')} "
                         f"| {_spread([r['load_average'] for r in rows], '.1f')} |")  # fmt: skip
        lines.append("")
    return lines


def render(results: list[dict], doc: Path = DOC, *, plots: bool = True, extra: list[dict] | None = None) -> str:
    """Write docs/BENCHMARKS.md (and the plots next to it) from the given results; return the text."""
    lines = ["# Benchmarks", "",
             "vaefunc against the canonical eager PyTorch VAE (pytorch/examples' `vae/main.py`), same data and model, "
             "measured in the same run, with a roofline measured alongside. Generated by `python -m benchmarks` from "
             "`benchmarks/results/*.json`; do not edit by hand.", "",
             "Reproduce: `python -m benchmarks --device cpu` (about 16 minutes on 2 cores: 973 s measured) or "
             "`python -m benchmarks --device cuda` (full MNIST size, 60,000 x 784 on a CUDA GPU). "
             "`--quick` checks that everything runs; `python -m benchmarks render` redraws this page. Every section "
             "names the CPU (and its ISA flags that decide the GEMM paths) its tables were measured on.", ""]  # fmt: skip
    devices = set()
    for res in results:
        devices.add(res["info"]["device"])
        plot_name = None
        if plots and plot(res, doc.parent / f"benchmarks-{res['machine']}.png"):
            plot_name = f"benchmarks-{res['machine']}.png"
        lines += render_machine(res, plot_name)
    for res in extra or []:
        lines += threads_lines(res) if res["kind"] == "threads" else gemm_lines(res)
    for device in ("cpu", "cuda"):
        if device not in devices:
            lines += [f"## {device.upper()}", "", f"Not yet measured. Run `{COMMAND.format(device=device)}` on "
                      f"{'a quiet machine' if device == 'cpu' else 'a machine with a GPU'} and commit "
                      f"`benchmarks/results/` and this page. Targets: {TARGETS[device]}.", ""]  # fmt: skip
    text = "\n".join(lines).rstrip() + "\n"
    atomic_write_bytes(doc, text.encode())
    return text
