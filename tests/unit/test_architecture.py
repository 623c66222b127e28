"""The house: no import circles, no import from a lower floor to a higher one, no private name
imported across modules (docs/architecture.md draws the floors)."""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "probing"

#: Floors, lowest first. A module may import from its own floor or below, never above.
FLOORS: list[tuple[str, ...]] = [
    ("errors", "constraints", "ownership", "seeding", "progress", "lazy", "threads", "crossprod"),
    ("layout", "selection", "style", "imageselect", "idx", "pngfile", "textlayout"),
    ("frames", "attention_frames", "shapes", "token_buffer", "image_cache"),
    ("data", "models", "foreign", "demo", "preprocessing"),
    ("attention_hooks", "hooks"),
    ("store",),
    ("extract",),
    ("views", "stats", "patchgrid", "targets", "maps", "tsne", "similarity"),
    ("probes", "posenc", "attention", "attribution", "lens"),
    ("plots",),
    ("findings", "figfiles", "figpickle", "sections", "report", "card"),
    ("run",),
    ("cli", ""),  # "" is the package face, probing/__init__.py
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, names, line)`` of every probing import in ``path`` (function-level ones too)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module == "probing" or module.startswith("probing."):
                names = [a.name for a in node.names]
                # "from . import x" may name a submodule
                subs = [f"{module}.{n}" for n in names
                        if (PACKAGE.parent / f"{module}.{n}".replace(".", "/")).with_suffix(
                            ".py").exists()
                        or (PACKAGE.parent / f"{module}.{n}".replace(".", "/")).is_dir()]
                out += [(s, [], node.lineno) for s in subs]
                rest = [n for n in names if f"{module}.{n}" not in subs]
                if rest or not subs:
                    out.append((module, rest, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names
                    if a.name == "probing" or a.name.startswith("probing.")]
    return out


@lru_cache(maxsize=1)
def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        me = _module_name(path)
        graph.setdefault(me, set())
        for module, _, _ in _imports(path):
            if module != me and not me.startswith(module + "."):  # a package's own face
                graph[me].add(module)
    return graph


def _floor(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, floor in enumerate(FLOORS):
        if top in floor:
            return i
    raise AssertionError(f"module {module} has no floor in FLOORS: add it")


def test_every_module_has_a_floor():
    for module in _graph():
        _floor(module)


def test_no_import_circles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_no_import_from_a_higher_floor():
    graph = _graph()
    upward = [f"{a} -> {b}" for a, deps in graph.items() for b in deps
              if b in graph and _floor(b) > _floor(a)]
    assert not upward, upward


def test_no_private_name_imported_across_modules():
    private = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for module, names, line in _imports(path):
            parts = module.split(".")
            bad = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if bad or any(p.startswith("_") for p in parts):
                private.append(f"{path.relative_to(ROOT)}:{line} {module} {bad}")
    assert not private, private


def test_no_module_imports_its_own_package_face():
    # modules of a package import their siblings, never the face that re-exports them (the
    # face imports them: that would be a circle the graph above does not see); a package whose
    # __init__ imports none of its modules (probing.demo: its constants) is a home, not a face
    faces = {_module_name(p) for p in PACKAGE.rglob("__init__.py")
             if any(m.startswith(_module_name(p) + ".") for m, _, _ in _imports(p))}
    through_face = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = _module_name(path)
        if path.name == "__init__.py":
            continue
        for module, _, line in _imports(path):
            if module in faces and me.startswith(module + "."):
                through_face.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not through_face, through_face


def test_the_checker_resolves_relative_imports():
    # the checker itself: relative imports one and two levels up name the right modules
    found = {m for m, _, _ in _imports(PACKAGE / "attention" / "rollout.py")}
    assert {"probing.attention.inputs", "probing.errors"} <= found
    found = {m for m, _, _ in _imports(PACKAGE / "report.py")}
    assert "probing.ownership" in found and "probing.sections" in found
