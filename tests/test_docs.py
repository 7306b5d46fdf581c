"""The README's Python blocks run as written (each in a fresh namespace, in a scratch folder).

A block whose first line says it is not run here (``(run it with torchrun``,
or that it needs a package the tests do not install: ``(needs wandb``,
``(needs mlflow``) is only compiled. A snippet that breaks fails CI.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
NOT_HERE = ("(run it with torchrun", "(needs wandb", "(needs mlflow")


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
    if any(marker in code.splitlines()[0] for marker in NOT_HERE):
        return
    monkeypatch.chdir(tmp_path)
    exec(compiled, {"__name__": f"readme_{name.replace('-', '_')}"})  # noqa: S102  (our own README)
