"""What the distribution ships: one version, the license, the type-hint marker, a changelog entry."""

from __future__ import annotations

import re
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
    assert _pyproject()["project"]["license"] == {"text": "MIT"}
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "vaefunc authors" in text


def test_the_changelog_has_this_version():
    assert f"## {vaefunc.__version__}" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
