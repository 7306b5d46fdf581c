"""What the distribution ships: one version, the license, the type-hint marker, a changelog entry, and a
wheel whose only top-level package is vaefunc (the console script's launcher lives inside it)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import vaefunc

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib" if __import__("sys").version_info >= (3, 11) else "tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_version_lives_in_one_place():
    project = _pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "vaefunc.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", vaefunc.__version__)


def test_the_package_ships_its_type_hints():
    assert (Path(vaefunc.__file__).parent / "py.typed").is_file()
    assert "py.typed" in _pyproject()["tool"]["setuptools"]["package-data"]["vaefunc"]


def test_the_license_is_the_one_pyproject_names():
    project = _pyproject()
    assert project["project"]["license"] == "MIT" and project["project"]["license-files"] == ["LICENSE"]  # SPDX
    assert project["build-system"]["requires"] == ["setuptools>=77"]  # the first to read an SPDX license
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "vaefunc authors" in text


def test_the_changelog_has_this_version():
    assert f"## {vaefunc.__version__}" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")


def test_the_console_script_is_the_launcher_inside_the_package():
    assert _pyproject()["project"]["scripts"] == {"vaefunc": "vaefunc._launch:main"}
    assert "py-modules" not in _pyproject()["tool"].get("setuptools", {})


@pytest.mark.slow
def test_the_wheel_installs_the_vaefunc_package_and_nothing_else_at_top_level(tmp_path):
    """Built from a copy of the sources (the tree stays clean) with this environment's setuptools."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} is older than the build-system's >=77")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "vaefunc", src / "vaefunc", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "out"), str(src)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "out").glob("vaefunc-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(f"vaefunc-{vaefunc.__version__}.dist-info/METADATA").decode()
        scripts = z.read(f"vaefunc-{vaefunc.__version__}.dist-info/entry_points.txt").decode()
    assert {n.split("/")[0] for n in names} == {"vaefunc", f"vaefunc-{vaefunc.__version__}.dist-info"}
    assert "vaefunc/_launch.py" in names and "vaefunc/py.typed" in names
    assert f"vaefunc-{vaefunc.__version__}.dist-info/licenses/LICENSE" in names
    assert "License-Expression: MIT" in metadata and "Author: vaefunc developers" in metadata
    assert "vaefunc = vaefunc._launch:main" in scripts


def test_the_launcher_imports_no_torch():
    """It must be in place before torch starts importing, to catch Ctrl-C and SIGTERM meanwhile."""
    source = (ROOT / "vaefunc" / "_launch.py").read_text(encoding="utf-8")
    imports = {m.group(1) for m in re.finditer(r"^\s*(?:from|import) (\S+)", source, re.MULTILINE)}
    assert imports <= {"__future__", "os", "signal", "sys", "threading", "vaefunc.cli"}, imports
