"""No import cycles inside python/deephash (docs/architecture.md).

The import graph is read from the source with ``ast``, without importing anything: an edge ``a -> b`` for
every import in ``a`` of a module ``b`` of the package, wherever the import statement is. A function-level
("lazy") import counts like a module-level one: it runs later, but it couples the two modules both ways
all the same, and the day it moves to the top it is an ImportError. Only imports under ``if TYPE_CHECKING:``
are left out (they never run).

Importing ``p.q.m`` first imports the packages ``p`` and ``p.q`` (their ``__init__``), so such an import is
also an edge to each of them, except to the packages that hold the importing module itself (they are
being imported already: a package's ``__init__`` that imports its own modules is not a cycle).
"""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "deephash"


def modules(root: Path, name: str) -> dict[str, Path]:
    """Every module of the package in ``root`` (called ``name``): dotted name -> file."""
    found = {}
    for f in sorted(root.rglob("*.py")):
        parts = [name, *f.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = f
    return found


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            t = node.test
            if (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
                    isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"):
                for stmt in node.body:
                    skip.update(id(n) for n in ast.walk(stmt))
    return skip


def import_graph(root: Path, name: str) -> dict[str, set[str]]:
    """module -> the modules of the package it imports (see the module docstring for what counts)."""
    mods = modules(root, name)
    graph = {}
    for mod, f in mods.items():
        package = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
        tree = ast.parse(f.read_text(), str(f))
        skip = _type_checking_only(tree)
        targets = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for a in node.names:  # `from p import m`: the module p.m if there is one, else p itself
                    sub = f"{source}.{a.name}"
                    targets.add(sub if sub in mods else source)
        edges = set()
        for t in targets:
            parts = t.split(".")
            for i in range(1, len(parts) + 1):
                step = ".".join(parts[:i])
                if step not in mods or step == mod:
                    continue
                if i < len(parts) and mod.startswith(step + "."):
                    continue  # a package holding mod, imported on the way: already being imported
                edges.add(step)
        graph[mod] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted; [] when acyclic."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def shortest_cycle(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """A shortest loop ``[a, b, ..., a]`` through the first module of the component ``comp``."""
    start, members = comp[0], set(comp)
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(graph[path[-1]] & members):
            if w == start:
                return path + [start]
            if w not in seen:
                seen.add(w)
                paths.append(path + [w])
    raise AssertionError(f"{comp} is not a cycle")


def _describe(graph, comp) -> str:
    return " -> ".join(shortest_cycle(graph, comp)) + f" (modules in this cycle: {', '.join(comp)})"


def test_no_import_cycles_in_deephash():
    graph = import_graph(PACKAGE, "deephash")
    assert len(graph) > 30 and "deephash.search.index" in graph  # the package was found and read
    found = cycles(graph)
    assert not found, "import cycles: " + " | ".join(_describe(graph, c) for c in found)


def test_at_most_eight_modules_at_the_top():
    """The layout by role (docs/architecture.md): the top of the package keeps few modules."""
    top = sorted(f.name for f in PACKAGE.glob("*.py"))
    assert len(top) <= 8, f"{len(top)} modules directly in python/deephash: {top}"
    assert all((d / "__init__.py").is_file() for d in PACKAGE.iterdir() if d.is_dir() and d.name != "__pycache__")


def _package(root: Path, spec: str) -> Path:
    """A package ``fake`` under ``root`` from ``spec``: each file starts with a line ``== path``."""
    for block in textwrap.dedent(spec).split("== ")[1:]:
        rel, _, text = block.partition("\n")
        p = root / "fake" / rel.strip()
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "fake"


def test_a_planted_cycle_is_found(tmp_path):
    """The checker itself: a lazy import closing a loop across subpackages is a cycle."""
    root = _package(tmp_path, """
        == __init__.py
        from .a import f
        == a.py
        from .sub.b import g
        def f():
            return g()
        == sub/__init__.py
        == sub/b.py
        def g():
            from ..a import f  # lazy, still a cycle
            return f
        == c.py
        import fake.sub.b
        """)
    graph = import_graph(root, "fake")
    assert graph["fake.a"] == {"fake.sub", "fake.sub.b"}
    assert graph["fake.c"] == {"fake.sub", "fake.sub.b"}
    assert cycles(graph) == [["fake.a", "fake.sub.b"]]
    assert shortest_cycle(graph, cycles(graph)[0]) == ["fake.a", "fake.sub.b", "fake.a"]


def test_a_cycle_through_a_package_init_is_found(tmp_path):
    """``methods.m`` imports ``training.progress``, which first runs ``training/__init__``; when that imports
    ``training.run`` and run imports ``methods.m``, it is a cycle though no module names another twice."""
    root = _package(tmp_path, """
        == __init__.py
        == methods/__init__.py
        from .m import M
        == methods/m.py
        from ..training.progress import bar
        == training/__init__.py
        from .run import train
        == training/progress.py
        bar = 1
        == training/run.py
        from ..methods.m import M
        """)
    graph = import_graph(root, "fake")
    assert "fake.training" in graph["fake.methods.m"]
    assert cycles(graph) == [["fake.methods", "fake.methods.m", "fake.training", "fake.training.run"]]


def test_no_cycle_is_reported_where_there_is_none(tmp_path):
    """A package ``__init__`` that re-exports its modules, modules that import siblings and the parent's
    other modules, and a ``TYPE_CHECKING`` import: no cycle."""
    root = _package(tmp_path, """
        == __init__.py
        from .data import load
        from .run import go
        == data/__init__.py
        from .datasets import load
        == data/datasets.py
        from ..codes import pack
        def load():
            from . import helpers
        == data/helpers.py
        == codes.py
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from .run import go
        pack = 1
        == run.py
        from .data import load
        from . import codes
        def go():
            pass
        """)
    graph = import_graph(root, "fake")
    assert graph["fake.run"] == {"fake.data", "fake.codes"}
    assert graph["fake.codes"] == set()
    assert graph["fake.data.datasets"] == {"fake.codes", "fake.data.helpers"}
    assert cycles(graph) == []
