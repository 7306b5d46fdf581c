"""Run every case on one device and collect the results into one JSON-ready dict."""

from __future__ import annotations

import datetime
import os
import platform
import re
import time
from dataclasses import asdict

import torch

import vaefunc.accel

from . import cases, custom_nets, roofline
from .cases import PRESETS, Sizes
from .threads import FLAGS

CASES = ("roofline", "sweep", "hidden", "epoch", "jax", "conv", "custom", "conv32", "log_likelihood", "subprocess")


def machine_info(device: torch.device) -> dict:
    """What the numbers were measured on."""
    cpu, flags = platform.processor() or "cpu", None
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        have = next(set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags"))
        flags = [f for f in FLAGS if f in have]
    except (OSError, StopIteration):
        pass
    info = {
        "device": device.type, "cpu": cpu, "flags": flags, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "gpu": None,
    }  # fmt: skip
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    # What train(compile=True) runs here by default (autocast="auto"): "bf16" or None (float32).
    info["compiled_autocast"] = vaefunc.accel.resolve_autocast("auto", device, torch.float32, compiled=True)
    return info


def machine_name(info: dict) -> str:
    """A file-name slug: ``cpu-intel-xeon-processor-2c`` or ``cuda-nvidia-h100-80gb-hbm3``."""
    name = info["gpu"] if info["device"] == "cuda" else f"{info['cpu']} {info['cores']}c"
    slug = re.sub(r"\((r|tm)\)|cpu @.*", "", name.lower())
    return f"{info['device']}-" + re.sub(r"[^a-z0-9]+", "-", slug).strip("-")


def load_average() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def _busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot (/proc/stat), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            user, nice, system, _, _, irq, softirq, steal = map(int, f.readline().split()[1:9])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU seconds used by this process and its finished children (the cold-start runs)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def is_quiet(results: dict) -> bool:
    """Whether a CPU run had the cores to itself: other processes used under 5% of
    them during the run (or, for runs without that record, the load average stayed
    under 0.5)."""
    others = results.get("other_cpu_share")
    if others is not None:
        return others < 0.05
    loads = [v[0] for v in (results.get("load_before"), results.get("load_after")) if v]
    return bool(loads) and max(loads) < 0.5


def run(
    device: str | torch.device = "cpu",
    preset: str = "quick",
    *,
    only: tuple[str, ...] = CASES,
    sizes: Sizes | None = None,
    log=print,
) -> dict:
    """Run the selected cases; return the results (see docs/BENCHMARKS.md for the fields)."""
    device = torch.device(device)
    sizes = sizes or PRESETS[(device.type, preset)]
    info = machine_info(device)
    started, busy0, own0 = time.perf_counter(), _busy_seconds(), _own_seconds()
    results: dict = {
        "schema": 1, "machine": machine_name(info), "preset": preset, "info": info,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_before": load_average(), "sizes": asdict(sizes),
        "rates": {}, "gemm": [], "rows": [],
    }  # fmt: skip
    x, results["data"] = cases.load_data(sizes.n, sizes.d, device=device)
    log(f"vaefunc benchmarks on {results['machine']} ({preset}); data: {results['data']}")

    layers = {h: roofline.mlp_layers(sizes.d, (h,), sizes.latent) for h in sizes.hiddens}
    sweep_h = 400 if 400 in layers else sizes.hiddens[0]  # the sweep's width
    base_b = 128 if 128 in sizes.batches else sizes.batches[0]  # the widths' batch size
    shapes = [(b, sweep_h) for b in sizes.batches] + [(base_b, h) for h in sizes.hiddens]
    shapes.append((128, cases.base_hidden(sizes)))  # the epoch case's step
    shapes = sorted(set(shapes))
    if "roofline" in only:
        results["rates"]["copy_bytes_per_s"] = roofline.copy_bandwidth(device=device)
        results["rates"]["square_gemm_flops_per_s"] = roofline.square_gemm_rate(
            4096 if device.type == "cuda" else 1024, device=device
        )
        bf16_units = device.type == "cuda" or vaefunc.accel.bf16_matmul_units(device)  # CUDA, or AMX-BF16 tiles
        if bf16_units:
            results["rates"]["square_gemm_bf16_flops_per_s"] = roofline.square_gemm_rate(
                8192 if device.type == "cuda" else 1024, device=device, dtype=torch.bfloat16
            )
        if device.type == "cuda":
            with _tf32():
                results["rates"]["square_gemm_tf32_flops_per_s"] = roofline.square_gemm_rate(8192, device=device)
        for b, h in shapes:
            g = roofline.gemm_rate(b, layers[h], device=device, min_seconds=0.3)
            if bf16_units:  # the fastest matrix rate the machine has, next to the float32 one
                g["bf16_flops_per_s"] = roofline.gemm_rate(b, layers[h], device=device, min_seconds=0.3,
                                                           dtype=torch.bfloat16)["flops_per_s"]  # fmt: skip
            if device.type == "cuda":
                with _tf32():
                    g["tf32_flops_per_s"] = roofline.gemm_rate(b, layers[h], device=device, min_seconds=0.3)["flops_per_s"]
            results["gemm"].append({"batch": b, "hidden": h, **g})
            log(f"  GEMMs b={b} h={h}: {g['flops_per_s'] / 1e9:.1f} GFLOP/s")

    impls = ["reference", "vaefunc-eager"] + (["vaefunc-compiled"] if sizes.compile else [])
    rows = results["rows"]
    for b, h in shapes:
        if ("sweep" in only and h == sweep_h and b in sizes.batches) or ("hidden" in only and b == base_b):
            for impl in impls:
                rows.append(cases.step_case(impl, x, batch=b, hidden=h, sizes=sizes, device=device))
                log(f"  step {impl} b={b} h={h}: {rows[-1]['examples_per_s']:.0f} examples/s")
    if "epoch" in only:
        for impl in [*impls, "vaefunc-streamed"]:
            rows.append(cases.epoch_case(impl, x, sizes=sizes, device=device))
            log(f"  epoch {impl}: {rows[-1]['examples_per_s']:.0f} examples/s")
        if sizes.compile:  # the matrix units: TF32 (CUDA) and bf16 (CUDA; AMX on CPUs that have it)
            for options in ({"tf32": True},) * (device.type == "cuda") + ({"autocast": "bf16"},):
                rows.append(cases.epoch_case("vaefunc-compiled", x, sizes=sizes, device=device, **options))
                log(f"  epoch compiled {options}: {rows[-1]['examples_per_s']:.0f} examples/s")
    if "jax" in only:
        for row in cases.jax_case(x, sizes=sizes, device=device):
            rows.append(row)
            rate = row.get("examples_per_s")
            log(f"  {row['impl']} {row.get('precision', '')}: "
                + (f"{rate:.0f} examples/s" if rate else f"skipped ({row['skipped']})"))
    if "conv" in only:
        rows.append(cases.conv_case(x, batch=128, sizes=sizes, device=device))
        rate = rows[-1].get("examples_per_s")
        log("  conv b=128: " + (f"{rate:.0f} examples/s" if rate else f"skipped ({rows[-1].get('skipped')})"))
    if "custom" in only:
        for row in custom_nets.custom_rows(x, sizes=sizes, device=device):
            rows.append(row)
            log(f"  custom {row['impl']} {row['model']}: {row['examples_per_s']:.0f} examples/s "
                f"({row['vs_built_in']:.2f}x the built-in)")  # fmt: skip
    if "conv32" in only:
        for row in custom_nets.conv32_rows(sizes=sizes, device=device):
            rows.append(row)
            log(f"  conv 3x32x32 {row['impl']}: {row['examples_per_s']:.0f} examples/s "
                f"({row['vs_reference']:.2f}x the plain loop)")  # fmt: skip
    if "log_likelihood" in only:
        impls = [impl for impl in cases.LL_IMPLS if sizes.compile or "compiled" not in impl]
        for row in cases.log_likelihood_rows(x, sizes=sizes, device=device, impls=impls):
            rows.append(row)
            log(f"  log-likelihood {row['impl']}: {row['us_per_sample']:.2f} us/sample"
                + (f", {row['vs_reference']:.2f}x the reference" if "vs_reference" in row else ""))
    if "subprocess" in only and sizes.subprocess:
        rows.extend(cases.run_subprocess_cases(sizes=sizes, device=device, log=log))

    attach_roofline(results, layers)
    results["load_after"] = load_average()
    results["seconds"] = time.perf_counter() - started
    # The load average counts this run too, so validity is judged by the CPU time
    # other processes used during the run (and the load before it started).
    busy1 = _busy_seconds()
    others = None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0) - (_own_seconds() - own0))
    results["other_cpu_share"] = None if others is None else others / (results["seconds"] * (os.cpu_count() or 1))
    results["quiet"] = is_quiet(results) if device.type == "cpu" else None
    return results


def attach_roofline(results: dict, layers: dict) -> None:
    """Give every step and epoch row its FLOPs, bytes, floor and roofline share."""
    gemm = {(g["batch"], g["hidden"]): g for g in results["gemm"]}
    bw = results["rates"].get("copy_bytes_per_s")
    for row in results["rows"]:
        key = (row.get("batch"), row.get("hidden"))
        if row["case"] not in ("step", "epoch", "jax") or key not in gemm or bw is None or "skipped" in row:
            continue
        b, h = key
        flops, nbytes = roofline.step_flops(b, layers[h]), roofline.step_bytes(b, layers[h])
        floor, bound = roofline.floor_seconds(flops, nbytes, flops_per_s=gemm[key]["flops_per_s"], bytes_per_s=bw)
        per_step = row.get("seconds_per_step") or b / row["examples_per_s"]
        # GEMMs and the optimizer's memory traffic run one after the other, so
        # their sum is the floor when nothing overlaps: report both shares.
        serial = flops / gemm[key]["flops_per_s"] + nbytes / bw
        row.update(flops_per_step=flops, bytes_per_step=nbytes, floor_seconds=floor, bound=bound,
                   roofline_share=floor / per_step, serial_floor_share=serial / per_step)  # fmt: skip
        for rate in ("tf32", "bf16"):
            if f"{rate}_flops_per_s" in gemm[key]:
                row[f"{rate}_share"] = flops / gemm[key][f"{rate}_flops_per_s"] / per_step


class _tf32:
    """Allow TF32 matmuls inside the block (CUDA only), restoring the setting after."""

    def __enter__(self):
        self.old = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high")

    def __exit__(self, *exc):
        torch.set_float32_matmul_precision(self.old)
