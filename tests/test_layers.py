"""Layers that import one way: every import of every module, read with ``ast``.

Imports inside functions count as much as those at the top (a lazy import is still a
dependency); only ``if TYPE_CHECKING:`` imports are left out of the cycle check, since
they never run.  The layers (docs: "Who may import whom" in the design brief):

    ground     errors, _io, _procs, _forkserver, _dist, _imports, _lazy, _checks, _markdown, _yaml, power_law, config,
               executors (datatrove executors), models (the model shapes)
    formats    formats, playground                      (import the ground only)
    clustering clustering                               (formats; nothing of mixtures)
    mixture    mixture                                  (formats; no callbacks, search, Hub);
               mixture.target: the target of a search and of the callbacks, read by both
    callbacks  callbacks                                (the mixture's live state)
    top        search, train, train_cli, hub, cli, climb, plotting, __main__
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where each installed package's files are (pyproject's package-dir).
PACKAGE_DIRS = {"hf_mixture": ROOT / "hf_mixture", "hf_mixture.callbacks": ROOT / "callbacks",
                "hf_mixture.hub_cards": ROOT / "hub_cards"}

GROUND = {"", "errors", "_io", "_procs", "_forkserver", "_dist", "_imports", "_lazy", "_checks", "_markdown", "_progress",
          "power_law", "config", "hub_cards", "metrics", "_yaml", "executors", "models"}
GROUPS = {name: "ground" for name in GROUND}
GROUPS.update({"formats": "formats", "playground": "formats", "clustering": "clustering",
               "mixture": "mixture", "callbacks": "callbacks"})
TOP = {"search", "train", "recipe", "throughput", "train_cli", "hub", "cli", "climb", "plotting", "__main__"}
GROUPS.update({name: "top" for name in TOP})
ALLOWED = {
    "ground": {"ground"},
    "formats": {"ground", "formats"},
    "clustering": {"ground", "formats", "clustering"},
    "mixture": {"ground", "formats", "mixture"},
    "callbacks": {"ground", "formats", "mixture", "callbacks"},
    "top": {"ground", "formats", "clustering", "mixture", "callbacks", "top"},
}
# Import cycles inside one package that are known and not yet broken: (package, reason).
KNOWN_CYCLES: dict = {}


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            if package == "hf_mixture" and path.relative_to(folder).parts[0] == "callbacks":
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _lazy_exports(path: Path) -> dict[str, str]:
    """A package's ``_EXPORTS = {name: sub-module}`` (hf_mixture._lazy), if it has one."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS"
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


EXPORTS = {m: _lazy_exports(p) for m, p in MODULES.items() if p.name == "__init__.py"}


def _resolve(target: str, name: str | None) -> str:
    """The module ``from target import name`` (or ``import target``) depends on."""
    if name is not None:
        if f"{target}.{name}" in MODULES:
            return f"{target}.{name}"
        if name in EXPORTS.get(target, {}):
            return f"{target}.{EXPORTS[target][name]}"
    return target


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(module: str) -> list[tuple[str, int, bool]]:
    """``(imported module, line, runs)`` for every hf_mixture import in ``module``, at any depth;
    ``runs`` is False under ``if TYPE_CHECKING:``."""
    path = MODULES[module]
    is_package = path.name == "__init__.py"
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, runs: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, runs)
            return
        if isinstance(node, ast.Import):
            found.extend((a.name, node.lineno, runs) for a in node.names
                         if a.name.split(".")[0] == "hf_mixture")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "hf_mixture":
                found.extend((_resolve(target, a.name), node.lineno, runs) for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child, runs)

    visit(ast.parse(path.read_text(encoding="utf-8")), True)
    return found


def group(module: str) -> str:
    parts = module.split(".")
    if parts[:2] == ["hf_mixture", "callbacks"]:
        return "callbacks"
    key = parts[1] if len(parts) > 1 else ""
    if key not in GROUPS:
        raise AssertionError(f"{module} belongs to no layer: add {key!r} to tests/test_layers.py.")
    return GROUPS[key]


def test_every_module_has_a_layer():
    assert len(MODULES) > 40
    for module in MODULES:
        group(module)


def test_no_module_imports_a_higher_layer():
    bad = []
    for module in MODULES:
        mine = group(module)
        for target, line, _ in imports(module):
            if group(target) not in ALLOWED[mine]:
                bad.append(f"{MODULES[module].relative_to(ROOT)}:{line} ({mine}) imports "
                           f"{target} ({group(target)})")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def _cycles() -> list[frozenset[str]]:
    """Strongly connected components (more than one module) of the run-time import graph."""
    graph = {m: sorted({t for t, _, runs in imports(m) if runs and t in MODULES and t != m})
             for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def connect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in graph:
        if v not in index:
            connect(v)
    return out


def test_no_import_cycles():
    cycles = [sorted(c) for c in _cycles() if c not in KNOWN_CYCLES]
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_function_level_and_lazy_imports(tmp_path, monkeypatch):
    # The old cycle, rebuilt: a method importing the Hub layer inside its body is caught.
    fake = tmp_path / "mixture.py"
    fake.write_text("class Mixture:\n    def push_to_hub(self):\n"
                    "        from ..hub import push_mixture_to_hub\n"
                    "        from ..search import run_search\n")
    monkeypatch.setitem(MODULES, "hf_mixture.mixture.mixture", fake)
    found = {t for t, _, _ in imports("hf_mixture.mixture.mixture")}
    assert found == {"hf_mixture.hub", "hf_mixture.search.search"}  # lazy export resolved
    assert {group(t) for t in found} - ALLOWED["mixture"] == {"top"}


@pytest.mark.parametrize("name", ["push_to_hub", "from_pretrained"])
def test_mixture_hub_methods_are_the_hub_functions(name):
    from hf_mixture import hub
    from hf_mixture.mixture.mixture import hub_function

    expected = {"push_to_hub": hub.push_mixture_to_hub, "from_pretrained": hub.load_mixture}
    assert hub_function(name) is expected[name]


def test_missing_hub_entry_point_is_one_sentence(monkeypatch):
    import importlib.metadata

    from hf_mixture.errors import HFMixtureError
    from hf_mixture.mixture import Component, Mixture

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: [])
    with pytest.raises(HFMixtureError, match="entry point 'push_to_hub' of group "
                                             "'hf_mixture.mixture_hub'.*reinstall hf_mixture"):
        Mixture([Component("a")]).push_to_hub("me/mix")


def _package(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]


def test_no_private_name_crosses_packages():
    bad = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            for alias in node.names:
                if not alias.name.startswith("_") or alias.name.startswith("__"):
                    continue
                for target, line, _ in imports(module):
                    if line == node.lineno and target in MODULES \
                            and _package(target) != _package(module):
                        bad.append(f"{path.relative_to(ROOT)}:{line} imports {alias.name} "
                                   f"from {target}")
    assert not bad, "private helpers used from another package:\n" + "\n".join(sorted(set(bad)))
