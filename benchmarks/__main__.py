"""``python -m benchmarks [--quick] [--device cpu|cuda] [--only CASE ...]``; ``python -m benchmarks render``."""

from __future__ import annotations

import argparse
import os
import sys
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
    parser.add_argument("--results", type=Path, default=report.RESULTS, help="folder of results/*.json")
    parser.add_argument("--doc", type=Path, default=report.DOC, help="the Markdown page to write")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)

    if args.command == "run":
        import torch

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        preset = args.preset or ("quick" if args.quick else "full")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        if device == "cpu" and load > 0.5:
            print(f"warning: load average {load:.2f}: other processes share the cores, so this run's CPU "
                  "numbers will be marked not valid", file=sys.stderr)  # fmt: skip
        results = run(device, preset, only=tuple(args.only), log=lambda s: print(s, flush=True))
        path = report.save_results(results, args.results)
        print(f"wrote {path}")
        if not all(r.get("quality_ok", True) for r in results["rows"] if "skipped" not in r):
            print("a quality band failed (see the rows with quality_ok false)", file=sys.stderr)
            report.render(report.load_results(args.results), args.doc, plots=not args.no_plot)
            return 1
    report.render(report.load_results(args.results), args.doc, plots=not args.no_plot)
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
