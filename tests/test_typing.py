"""The package type-checks: ``python -m mypy vaefunc`` (with pyproject's [tool.mypy]: untyped third-party
modules read as Any, and a one-module allow-list, each entry with its reason) reports no error.

About 17 s with a cold cache on 2 shared CPU cores and under 2 s warm (mypy keeps .mypy_cache in the
repository root); skipped where mypy is not installed (it is in the ``test`` extra).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_reports_no_error_in_the_package():
    pytest.importorskip("mypy", reason="mypy is not installed (pip install vaefunc[test] brings it)")
    out = subprocess.run([sys.executable, "-m", "mypy", "vaefunc"], capture_output=True, text=True, timeout=300,
                         cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, f"mypy found errors:\n{out.stdout[-6000:]}{out.stderr[-2000:]}"
    assert "Success: no issues found" in out.stdout


def test_the_check_can_fail(tmp_path):
    """The negative control: mypy, run the same way, reports a wrong annotation."""
    pytest.importorskip("mypy", reason="mypy is not installed (pip install vaefunc[test] brings it)")
    bad = tmp_path / "bad.py"
    bad.write_text("def f(x: int) -> str:\n    return x\n")
    out = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), str(bad)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 1 and "Incompatible return value type" in out.stdout
