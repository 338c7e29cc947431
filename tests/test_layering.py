"""The package's layering: no import from a lower layer to a higher one, no import cycle.

Layers, lowest first (a module may import from its own group and from lower layers only; the
groups of one layer do not import each other):

    0  _version, errors
    1  data | layers
    2  models
    3  losses
    4  runtime                 (checkpoint I/O, shipped weights, torch/ONNX classifiers)
    5  engine | inference      (the trainer does not need the app, nor the app the trainer)
    6  export | explain
    7  cli, serve, the package root

Every import counts, also those inside functions (lazy imports are still dependencies).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import robustfer

PKG = Path(robustfer.__file__).parent

#: group -> layer.
LAYERS = {
    "_version": 0, "errors": 0,
    "data": 1, "layers": 1,
    "models": 2,
    "losses": 3,
    "runtime": 4,
    "engine": 5, "inference": 5,
    "export": 6, "explain": 6,
    "app": 7,
}
APP = {"cli", "serve", ""}  # "" is the package root (robustfer/__init__.py)


def group_of(module: str) -> str:
    """``robustfer.engine.train`` -> ``engine``; the root, cli and serve -> ``app``."""
    parts = module.split(".")
    assert parts[0] == "robustfer", module
    head = parts[1] if len(parts) > 1 else ""
    if head in APP:
        return "app"
    if head not in LAYERS:
        raise AssertionError(f"robustfer.{head} has no layer: add it to LAYERS in {__file__}")
    return head


def module_name(path: Path, root: Path = PKG) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, top_level_only: bool = False, root: Path = PKG) -> list[tuple[str, int]]:
    """``(imported robustfer module, line)`` for every import in a file."""
    tree = ast.parse(path.read_text(), str(path))
    me = module_name(path, root)
    is_pkg = path.name == "__init__.py"
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "robustfer"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = me.split(".") if is_pkg else me.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "robustfer":
                continue
            # `from robustfer.data import pose` imports robustfer.data.pose when that is a module
            for a in node.names:
                sub = f"{mod}.{a.name}"
                sub_path = root.parent.joinpath(*sub.split("."))
                is_module = sub_path.with_suffix(".py").is_file() or (sub_path / "__init__.py").is_file()
                out.append((sub if is_module else mod, node.lineno))
    return out


def upward_imports(root: Path = PKG) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        me = module_name(path, root)
        g = group_of(me)
        for target, line in imports_of(path, root=root):
            t = group_of(target)
            if t == g:
                continue
            if LAYERS[t] >= LAYERS[g]:
                bad.append(f"{path.relative_to(root.parent)}:{line}: {me} ({g}, layer {LAYERS[g]}) imports "
                           f"{target} ({t}, layer {LAYERS[t]})")
    return bad


def test_no_upward_or_sideways_import() -> None:
    bad = upward_imports()
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_import_cycle_at_import_time() -> None:
    graph: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        graph[module_name(path)] = {t for t, _ in imports_of(path, top_level_only=True)}
    # importing robustfer.a.b first runs robustfer.a: a parent package is a dependency too
    for m in list(graph):
        parts = m.split(".")
        for i in range(2, len(parts)):
            graph[m].add(".".join(parts[:i]))
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        seen[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if t == m or t not in graph or m.startswith(t + "."):
                continue  # a package's own children importing it while it loads is Python's normal case
            if seen.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in seen and (cyc := visit(t)):
                return cyc
        stack.pop()
        seen[m] = 2
        return None

    for m in sorted(graph):
        if m not in seen and (cyc := visit(m)):
            pytest.fail("import cycle: " + " -> ".join(cyc))


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    """The check itself can fail: a copy of the package with one upward import is caught."""
    import shutil

    copy = tmp_path / "robustfer"
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("weights", "__pycache__"))
    target = copy / "data" / "labels.py"
    target.write_text(target.read_text() + "\n\ndef _bad():\n    from robustfer.engine.train import train\n")
    bad = upward_imports(copy)
    assert len(bad) == 1 and "robustfer.data.labels (data, layer 1) imports robustfer.engine.train" in bad[0], bad


def test_every_subpackage_has_a_layer() -> None:
    for p in PKG.iterdir():
        name = p.stem if p.suffix == ".py" else p.name
        if (p.suffix == ".py" or (p / "__init__.py").is_file()) and name != "__init__":
            group_of(f"robustfer.{name}")
