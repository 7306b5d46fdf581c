"""The README's Python blocks run as written (each in a fresh namespace, in a scratch folder), and every
dotted name it writes (``vaefunc.x.y``) resolves.

A block whose first line says it needs a launcher (``(run it with torchrun``)
or a package the tests do not install (``(needs wandb``, ``(needs mlflow``) is
compiled, then skipped, saying why (it runs when the package is installed). A
snippet that breaks fails CI.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
NOT_HERE = {"(run it with torchrun": "it runs under torchrun, in several processes"}
NEEDS = {"(needs wandb": "wandb", "(needs mlflow": "mlflow"}  # first-line marker: the package it imports


def _blocks(path: Path) -> list[tuple[str, str]]:
    """(id, code) of every ```python block, the id from the nearest heading above it."""
    out, heading = [], "top"
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") and not line.startswith("#!"):
            heading = re.sub(r"[^a-z0-9]+", "-", line.lstrip("#").strip().lower()).strip("-")
        if line.strip() == "```python":
            end = lines.index("```", i + 1)
            out.append((f"{heading}-{len(out)}", "\n".join(lines[i + 1 : end])))
            i = end
        i += 1
    return out


BLOCKS = _blocks(README)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 8


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize(("name", "code"), BLOCKS, ids=[name for name, _ in BLOCKS])
def test_a_readme_block_runs_as_written(name, code, tmp_path, monkeypatch):
    compiled = compile(code, f"README.md:{name}", "exec")
    first = code.splitlines()[0]
    for marker, reason in NOT_HERE.items():
        if marker in first:
            pytest.skip(f"compiled only: {reason}")
    for marker, package in NEEDS.items():
        if marker in first:
            pytest.importorskip(package, reason=f"compiled only: the block needs {package}, not installed")
    monkeypatch.chdir(tmp_path)
    environ = dict(os.environ)  # a block may set variables (WANDB_MODE): none leaks into the other tests
    try:
        exec(compiled, {"__name__": f"readme_{name.replace('-', '_')}"})  # noqa: S102  (our own README)
    finally:
        os.environ.clear()
        os.environ.update(environ)


# vaefunc.x.y as the README writes it: in prose or code, not right after "import", "from" or "-m", where
# it names a module to import.
DOTTED = re.compile(r"(?<![\w./-])(?<!import )(?<!from )(?<!-m )vaefunc(?:\.[A-Za-z_]\w*)+")
IMPORTED = re.compile(r"\bimport (vaefunc\.[\w.]+)")


def test_every_dotted_name_in_the_readme_resolves_after_import_vaefunc():
    """``vaefunc.train`` is the function, which hides the module of that name, and some modules are not
    imported by ``import vaefunc``: the README may name those only where it also writes ``import vaefunc.x``
    (and then each name must resolve after that import). Checked in a fresh interpreter, since the tests
    import every module."""
    text = README.read_text(encoding="utf-8")
    names, modules = sorted(set(DOTTED.findall(text))), sorted(set(IMPORTED.findall(text)))
    assert len(names) > 30 and "vaefunc.runners.AUTO_COMPILE_MIN_SECONDS" in names
    probe = (
        "import importlib, sys\n"
        "import vaefunc\n"
        "plain, imported = sys.argv[1].split(), sys.argv[2].split()\n"
        "def resolves(name):\n"
        "    obj = vaefunc\n"
        "    try:\n"
        "        for part in name.split('.')[1:]:\n"
        "            obj = getattr(obj, part)\n"
        "    except AttributeError:\n"
        "        return False\n"
        "    return True\n"
        "missing = [n for n in plain if not resolves(n)]\n"
        "for m in imported:\n"
        "    importlib.import_module(m)\n"
        "print(' '.join(n for n in missing if not resolves(n)), '|', ' '.join(missing))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, " ".join(names), " ".join(modules)], capture_output=True,
                         text=True, timeout=120, cwd=README.parent)  # fmt: skip
    assert out.returncode == 0, out.stderr
    unresolved, needing_import = (part.split() for part in out.stdout.strip().split("|"))
    assert not unresolved, f"README names that resolve nowhere: {unresolved}"
    undeclared = [n for n in needing_import if not any(n == m or n.startswith(m + ".") for m in modules)]
    assert not undeclared, f"README names that need an import the README does not write: {undeclared}"
