"""The package's layout, read from its source with ``ast`` (nothing is imported):

- the modules import each other without a cycle, counting every ``import`` statement, at module
  level and inside functions alike; only imports under ``if TYPE_CHECKING:`` are left out (they
  never run), and the CLI's reading of ``vaefunc.__version__`` from the front door
  (:data:`FRONT_DOOR_READERS`);
- vaefunc 0.1's params-first API lives in ``vaefunc/legacy.py`` alone: only the package's front
  door and ``vaefunc.model`` (legacy's 0.1 name) import it, and the spec-first modules below it
  define no function that builds a spec from a param dict and keyword choices;
- no function has over 50 code lines (blank lines, comments and the docstring not counted), and
  no module over 450 lines, except those in the allow-lists below at no more than their sizes
  today (so they can shrink, never grow).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "vaefunc"
MAX_FUNCTION_LINES, MAX_MODULE_LINES = 50, 450
LONG_FUNCTIONS: dict[str, int] = {}
"""Functions over the limit today, with their code lines: they may shrink, not grow."""
LONG_MODULES: dict[str, int] = {}
"""Modules over the limit today, with their lines: they may shrink, not grow."""
SPEC_FIRST = ("vaefunc.losses", "vaefunc.estimators", "vaefunc.priors", "vaefunc.likelihoods", "vaefunc.presets",
              "vaefunc.spec", "vaefunc._fields", "vaefunc._check")  # fmt: skip
STATIC_CHOICES = {"activation", "likelihood", "obs_std"}
LEGACY_IMPORTERS = {"vaefunc", "vaefunc.model"}
FRONT_DOOR_READERS = {"vaefunc.cli.parser", "vaefunc.cli.settings"}
"""Modules that read ``__version__`` from the front door (``from .. import __version__``), which imports
every module: the one set of edges the cycle test leaves out, by name, until the version has a module of its own."""


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = (path, ast.parse(path.read_text(), str(path)))
    return out


MODULES = _modules()


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:``."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return hidden


def _imports(name: str) -> set[str]:
    """The vaefunc modules ``name`` imports anywhere in its source (not under TYPE_CHECKING)."""
    path, tree = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    hidden, found = _type_checking_nodes(tree), set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "vaefunc"}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] != "vaefunc":
                continue
            subs = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES}
            found |= subs if subs and len(subs) == len(node.names) else {target} | subs
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name) - ({"vaefunc"} if name in FRONT_DOOR_READERS else set()) for name in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path of module names, or [] if there is none (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return []

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return []


def test_the_import_graph_is_read():
    """The reader sees the edges it must (a check that the cycle test below can fail)."""
    assert "vaefunc.spec" in GRAPH["vaefunc.legacy"] and "vaefunc.losses" in GRAPH["vaefunc.spec"]
    assert "vaefunc.presets" in GRAPH["vaefunc.cli.parser"]  # a parent-relative import (from ..presets)
    assert "vaefunc.spec" not in GRAPH["vaefunc.losses"]  # under TYPE_CHECKING only
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_among_vaefunc_modules():
    assert _cycle(GRAPH) == []


def test_the_legacy_module_is_imported_only_by_the_front_door_and_its_old_name():
    importers = {name for name, deps in GRAPH.items() if "vaefunc.legacy" in deps}
    assert importers == LEGACY_IMPORTERS
    assert "vaefunc._compat" not in MODULES


def _params_first_with_choices(tree: ast.Module) -> list[str]:
    """Functions taking ``params`` first and a model's static choices as keywords: vaefunc 0.1's form."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.args.args:
            keywords = {a.arg for a in node.args.kwonlyargs}
            if node.args.args[0].arg == "params" and keywords & STATIC_CHOICES:
                found.append(node.name)
    return found


@pytest.mark.parametrize("name", SPEC_FIRST)
def test_the_spec_first_modules_hold_no_params_first_form(name):
    assert _params_first_with_choices(MODULES[name][1]) == []


def test_the_params_first_forms_are_found_where_they_are():
    """The negative control: legacy's own functions are what the test above looks for."""
    assert {"elbo", "iwae", "encode", "log_likelihood"} <= set(_params_first_with_choices(MODULES["vaefunc.legacy"][1]))


def test_only_legacy_warns_of_deprecation():
    for name, (path, tree) in MODULES.items():
        if name != "vaefunc.legacy":
            assert "DeprecationWarning" not in {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}, name


def _code_lines(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    first = node.body[0]
    doc = set()
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        doc = set(range(first.lineno, first.end_lineno + 1))
    return sum(1 for i in range(node.lineno, node.end_lineno + 1)
               if i not in doc and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#"))  # fmt: skip


def function_sizes() -> dict[str, int]:
    """Every function's code lines, by module-qualified name (methods and nested functions included)."""
    sizes = {}
    for name, (path, tree) in MODULES.items():
        lines = path.read_text().splitlines()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                key = f"{name}.{node.name}"
                sizes[key] = max(sizes.get(key, 0), _code_lines(lines, node))
    return sizes


def test_no_function_is_over_50_code_lines():
    sizes = function_sizes()
    over = {k: n for k, n in sizes.items() if n > MAX_FUNCTION_LINES and n > LONG_FUNCTIONS.get(k, 0)}
    assert over == {}, f"over {MAX_FUNCTION_LINES} code lines (or longer than allowed): {over}"
    assert sizes["vaefunc._resolve.spec_of"] > 10  # the counter counts


def test_no_module_is_over_450_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, (path, _) in MODULES.items()}
    over = {k: n for k, n in sizes.items() if n > MAX_MODULE_LINES and n > LONG_MODULES.get(k, 0)}
    assert over == {}, f"over {MAX_MODULE_LINES} lines (or longer than allowed): {over}"


def test_checkpoints_read_a_runs_state_without_importing_the_training_code():
    assert "vaefunc.state" in GRAPH["vaefunc.checkpoint"]
    assert "vaefunc.training" not in GRAPH["vaefunc.checkpoint"] and "vaefunc.loop" not in GRAPH["vaefunc.checkpoint"]
    assert not GRAPH["vaefunc.state"] & {"vaefunc.training", "vaefunc.loop", "vaefunc.runners", "vaefunc.checkpoint"}
