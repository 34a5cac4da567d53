"""The package's import structure: every library layer imports only the layers below it, commands sit
on top, and no modules import each other in a circle (lazy imports inside functions included: they
are the same dependency, only later).

Layers, bottom-up (README, "Layout"). The commands -- ``stcn.commands.*``, the entry point ``stcn.cli``
and the package facade ``stcn/__init__.py`` -- may import any layer; no library module imports them.
Nothing else is exempt: a module is a command because it lives in ``stcn/commands/``, not because of
its name.
"""
from __future__ import annotations

import ast
from pathlib import Path

import stcn

LAYERS = ["_version", "errors", "utils", "guards", "io", "model", "weights", "data", "inference", "eval", "interactive",
          "train", "ui"]
ROOT = Path(stcn.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """Every stcn module or package named by an import anywhere in the file (ast: nothing is run)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "stcn")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "stcn":
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)  # "from pkg import module"
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        targets = set()
        for t in _imports(path, name):
            while t not in files and "." in t:  # "from stcn.x import function" names the module stcn.x
                t = t.rsplit(".", 1)[0]
            if t in files and t != name:
                targets.add(t)
        graph[name] = targets
    return graph


def _is_command(name: str) -> bool:
    return name in ("stcn", "stcn.cli", "stcn.commands") or name.startswith("stcn.commands.")


def _layer(name: str) -> str:
    return name.split(".")[1]


def test_every_module_has_a_layer():
    unplaced = sorted({_layer(m) for m in _graph() if not _is_command(m)} - set(LAYERS))
    assert not unplaced, f"place these packages in LAYERS (and the README's layout): {unplaced}"


def test_no_library_module_imports_upwards():
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = []
    for m, targets in sorted(_graph().items()):
        if _is_command(m):
            continue
        for t in sorted(targets):
            if _is_command(t):
                upward.append(f"{m} -> {t} (a command or the facade)")
            elif rank.get(_layer(t), -1) > rank.get(_layer(m), len(LAYERS)):
                upward.append(f"{m} -> {t}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_no_import_circles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, f"modules importing each other in a circle: {circles}"


def test_commands_live_in_one_package():
    """Command-line code is in stcn/commands/ only: no ``cli.py`` / ``*_cli.py`` left among the layers."""
    stray = sorted(m for m in _graph() if not _is_command(m)
                   and (m.rsplit(".", 1)[-1] == "cli" or m.rsplit(".", 1)[-1].endswith("_cli")))
    assert not stray, f"move these into stcn/commands/: {stray}"
