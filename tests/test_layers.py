"""The package's import graph: each layer imports only itself and the layers below, no module
imports itself in a circle, and imports sit at the top of their files.

An AST walk reads every ``import`` and ``from ... import`` of every module of ``facemark/``, at the
top of a file or inside a function: an import inside a function is an arrow too, one that
``sys.modules`` does not show until the function runs.

Function-level imports are allowed only for the optional extras (:mod:`facemark.extras`): a module
of an extra (its ``EXTRAS`` table: torch, dlib, fastapi, ...), or a facemark module that cannot be
imported without one (:func:`needs_extra`: ``facemark.train`` imports torch at its top), so that
the plain install (ONNX Runtime, no torch) runs the API and the CLI. The one other: the package's
``__init__`` gives ``facemark.Landmarker`` and ``facemark.Face`` on first use (PEP 562
``__getattr__``), so that ``import facemark.train`` does not load the inference API.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from facemark.extras import EXTRAS

PACKAGE = Path(__file__).resolve().parents[1] / "facemark"

#: the layers, bottom first: a module may import its own layer and the layers below it. A module
#: belongs to the longest prefix listed (``facemark.classical.train`` is training, the rest of
#: ``facemark.classical`` sits with the models); ``facemark`` itself is only the package's ``__init__``.
LAYERS = {
    # the floor, for everyone: conventions, files, images, schemes, the model spec and what it holds
    # (quality), metrics, figures, the optional extras, detectors, head pose, face alignment, the Face
    # record, the One-Euro filter and video tracking (which drives a Landmarker it is given, without
    # importing the API)
    "floor": ("facemark", "facemark._version", "facemark.extras", "facemark.files", "facemark.images", "facemark.onnx_session",
              "facemark.inputs", "facemark.geometry", "facemark.filters", "facemark.placement", "facemark.clips",
              "facemark.schemes", "facemark.spec", "facemark.quality", "facemark.metrics",
              "facemark.plots", "facemark.detectors", "facemark.pose", "facemark.align", "facemark.face", "facemark.track"),
    "data": ("facemark.data",),
    "models": ("facemark.models", "facemark.losses", "facemark.checkpoint", "facemark.classical"),
    "train": ("facemark.train", "facemark.config", "facemark.classical.train"),
    "evaluate / export": ("facemark.evaluate", "facemark.export", "facemark.baselines", "facemark.calibrate"),
    "runtime": ("facemark.runtime",),
    "api": ("facemark.api",),
    "apps": ("facemark.predict", "facemark.bulk", "facemark.annotate", "facemark.serve", "facemark.cli"),
}
RANK = {name: i for i, name in enumerate(LAYERS)}

#: the package's lazy re-export of the inference API (facemark/__init__.py's __getattr__)
LAZY_FRONT_DOOR = ("facemark", "facemark.api")



# --------------------------------------------------------------------------- the walk


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    """The modules an import statement names: ``from x import y`` is ``x.y`` when that is a module, else ``x``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the module's package (the module itself for an __init__)
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def parse_imports(source: str, module: str) -> list[tuple[str, int, bool]]:
    """``(imported module, line, inside a function)`` for every import statement of ``module``'s ``source``."""
    tree = ast.parse(source)
    inside = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(fn)}
    found = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    return [(target, node.lineno, id(node) in inside) for node in sorted(found, key=lambda n: n.lineno)
            for target in _targets(node, module)]


@cache
def imports(module: str) -> list[tuple[str, int, bool]]:
    """:func:`parse_imports` of the package's ``module``."""
    return parse_imports(MODULES[module].read_text(), module)


def _own(target: str) -> bool:
    return target == "facemark" or target.startswith("facemark.")


@cache
def needs_extra(module: str) -> bool:
    """Whether ``module`` cannot be imported without an optional extra: it (or a package above it)
    imports, at its top, an extra's module or a facemark module that needs one."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        parents = [".".join(m.split(".")[:i]) for i in range(1, m.count(".") + 1)]
        for target, _, in_function in imports(m) if m in MODULES else ():
            if in_function:
                continue
            if not _own(target) and target.split(".")[0] in EXTRAS:
                return True
            if _own(target):
                todo.append(target)
        todo.extend(parents)
    return False


def layer(module: str) -> str | None:
    """The layer of ``module``: that of the longest prefix in :data:`LAYERS` (None when none is)."""
    best, found = -1, None
    for name, prefixes in LAYERS.items():
        for prefix in prefixes:
            matches = module == prefix or (prefix != "facemark" and module.startswith(prefix + "."))
            if matches and len(prefix) > best:
                best, found = len(prefix), name
    return found


def _arrows():
    """Every import between facemark's modules: ``(importer, imported, line, inside a function)``."""
    for module in MODULES:
        for target, line, in_function in imports(module):
            if _own(target) and (module, target) != LAZY_FRONT_DOOR:
                yield module, target, line, in_function


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(PACKAGE.parent)}:{line}"


# --------------------------------------------------------------------------- the checks


def test_every_module_has_a_layer():
    assert [m for m in MODULES if layer(m) is None] == []


def test_imports_point_down_the_layers():
    upward = [f"{_where(m, line)}: {m} ({layer(m)}) imports {t} ({layer(t)})"
              for m, t, line, _ in _arrows() if RANK[layer(t)] > RANK[layer(m)]]
    assert upward == []


def test_no_module_imports_itself_in_a_circle():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m, t, _, _ in _arrows():
        if t in graph:
            graph[m].add(t)
    cycles, state = [], {}

    def visit(m: str, path: list[str]) -> None:  # depth first; a module met again on the path closes a cycle
        state[m] = "open"
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                cycles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_function_level_imports_are_only_of_optional_extras():
    hidden = [f"{_where(m, line)}: {m} imports {t} inside a function"
              for m in MODULES for t, line, in_function in imports(m)
              if in_function and (m, t) != LAZY_FRONT_DOOR
              and not (t.split(".")[0] in EXTRAS if not _own(t) else needs_extra(t))]
    assert hidden == []


def test_training_and_evaluation_never_reach_the_inference_api():
    """Layers point one way: training, evaluation and export reach nothing of the API, through any
    import, at a file's top or inside a function (``import facemark.train`` once showed only the first)."""
    graph: dict[str, set[str]] = {}
    for m, t, _, _ in _arrows():
        graph.setdefault(m, set()).add(t)
    for start in ("facemark.train", "facemark.evaluate", "facemark.export", "facemark.baselines",
                  "facemark.classical.train", "facemark.calibrate"):
        reached, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m not in reached:
                reached.add(m)
                todo.extend(graph.get(m, ()))
        assert not reached & {"facemark.api", "facemark.runtime"}, start


def test_the_walk_sees_every_import_and_where_it_is():
    """The walk itself: imports inside methods and nested functions are seen and marked, relative ones resolved."""
    source = ("import numpy\nfrom facemark import metrics, __version__\n\nclass A:\n    def f(self):\n"
              "        def g():\n            from facemark import api\n        from .models import registry\n")
    assert parse_imports(source, "facemark.train") == [
        ("numpy", 1, False), ("facemark.metrics", 2, False), ("facemark", 2, False),
        ("facemark.api", 7, True), ("facemark.models.registry", 8, True)]
