"""``python -m benchmarks [--quick] [--device cpu|cuda] [--only CASE ...]``; ``python -m benchmarks render``.

Only a full run (the default preset) writes the published numbers, benchmarks/results/*.json and
docs/BENCHMARKS.md with its plot. A ``--quick`` (or ``tiny``) run writes its results, page and plot
to a fresh scratch folder, printed, unless ``--results`` and ``--doc`` name other places.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

from . import report
from .run import CASES, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("command", nargs="?", choices=("run", "render"), default="run",
                        help="run the cases (default), or only re-render docs/BENCHMARKS.md from the results")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that everything runs")
    parser.add_argument("--preset", default=None, help="full, quick or tiny (overrides --quick)")
    parser.add_argument("--only", nargs="+", choices=CASES, default=list(CASES), help="run only these cases")
    parser.add_argument("--results", type=Path, default=None,
                        help="folder of results/*.json (default: benchmarks/results for a full run, a scratch "
                        "folder for --quick)")  # fmt: skip
    parser.add_argument("--doc", type=Path, default=None,
                        help="the Markdown page to write (default: docs/BENCHMARKS.md for a full run, a scratch "
                        "folder for --quick)")  # fmt: skip
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)
    if args.command == "run" and (problem := _device_problem(args.device)):
        print(f"python -m benchmarks: error: {problem}", file=sys.stderr)  # before any work, as vaefunc's CLI does
        return 2
    preset = args.preset or ("quick" if args.quick else "full")
    if args.command == "run" and preset != "full" and (args.results is None or args.doc is None):
        scratch = Path(tempfile.mkdtemp(prefix=f"vaefunc-benchmarks-{preset}-"))
        args.results = args.results or scratch / "results"
        args.doc = args.doc or scratch / "BENCHMARKS.md"
        print(f"a {preset} run writes to {scratch} (only a full run replaces benchmarks/results and "
              "docs/BENCHMARKS.md)", flush=True)  # fmt: skip
    args.results = args.results or report.RESULTS
    args.doc = args.doc or report.DOC

    if args.command == "run":
        import torch

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        if device == "cpu" and load > 0.5:
            print(f"warning: load average {load:.2f}: other processes share the cores, so this run's CPU "
                  "numbers will be marked not valid", file=sys.stderr)  # fmt: skip
        with _one_thread(device == "cpu" and load > 0.5 and preset != "full"):
            results = run(device, preset, only=tuple(args.only), log=lambda s: print(s, flush=True))
        path = report.save_results(results, args.results)
        print(f"wrote {path}")
        if not all(r.get("quality_ok", True) for r in results["rows"] if "skipped" not in r):
            print("a quality band failed (see the rows with quality_ok false)", file=sys.stderr)
            report.render(report.load_results(args.results), args.doc, plots=not args.no_plot,
                  extra=report.load_extra(args.results))
            return 1
    report.render(report.load_results(args.results), args.doc, plots=not args.no_plot,
                  extra=report.load_extra(args.results))
    print(f"wrote {args.doc}")
    return 0


def _device_problem(device: str | None) -> str | None:
    """Why ``--device`` cannot run here, in one line (None when it can: cpu, or cuda with a GPU)."""
    if device is None or device == "cpu":
        return None
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        kind = None
    if kind != "cuda":
        return f"--device must be cpu or cuda (cuda:N); got {device!r}"
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        return f"--device {device} needs a CUDA GPU, and torch {torch.__version__} ({build}) sees none here"
    index, count = torch.device(device).index, torch.cuda.device_count()
    if index is not None and index >= count:
        return f"--device {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
    return None


@contextlib.contextmanager
def _one_thread(busy: bool):
    """Inside the block, torch on one thread when ``busy`` (restored after): a check on a busy CPU, not a
    measurement. torch's OpenMP threads spin-wait for a core another process holds (a 2-thread quick run
    took 100 s instead of 22 s on a busy 2-core machine)."""
    if not busy:
        yield
        return
    import torch

    print("so this check runs torch on one thread", file=sys.stderr)
    threads, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # and in the fresh interpreters of the subprocess cases
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = env


if __name__ == "__main__":
    sys.exit(main())
