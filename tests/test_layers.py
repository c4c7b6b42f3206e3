"""The layers of diffc import only downwards, and no module imports itself back.

The layers, lowest first, are the folders of the package (the package root and its
`__init__` sit above them all):

    core -> transforms -> passes -> runtime -> compiler -> api

A module may import modules of its own layer or of lower ones; imports inside a layer must
not form a cycle; only the compiler imports llvmlite. The package root's modules (`__init__`,
`nn`, the public face of `transforms/nn.py`, `datasets`, `__main__`, and `distributed`, that of
`api/distributed.py`) sit above the layers. The check reads every `import` statement (also
those inside functions) of every module with `ast`, so that a late import cannot hide an upward
arrow.
"""
from __future__ import annotations

import ast
import functools
import pathlib

import pytest

import diffc

PACKAGE = pathlib.Path(diffc.__file__).parent
LAYERS = ["core", "transforms", "passes", "runtime", "compiler", "api"]
ROOT_MODULES = ("nn", "datasets", "__main__", "distributed")  # besides the layer folders


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: pathlib.Path) -> set[str]:
    """The diffc modules a file imports (absolute names; `from . import x` resolved), and
    `llvmlite` if it imports that."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "diffc"}
            found |= {"llvmlite" for a in node.names if a.name.split(".")[0] == "llvmlite"}
        elif isinstance(node, ast.ImportFrom):
            if not node.level and (node.module or "").split(".")[0] == "llvmlite":
                found.add("llvmlite")
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "diffc":
                continue
            for alias in node.names:  # `from pkg import module` imports the module
                sub = f"{target}.{alias.name}"
                found.add(sub if module_path(sub) is not None else target)
    return found - {name}


def module_path(name: str) -> pathlib.Path | None:
    rel = pathlib.Path(*name.split(".")[1:])
    for candidate in (PACKAGE / rel.with_suffix(".py"), PACKAGE / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def layer_of(name: str) -> int:
    """The layer index of a module; the package root is above every layer."""
    parts = name.split(".")
    if len(parts) == 1:
        return len(LAYERS)
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else len(LAYERS)


@functools.cache
def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_is_in_a_layer():
    outside = [m for m in graph() if layer_of(m) == len(LAYERS) and m.count(".") > 0
               and m.split(".")[1] not in ROOT_MODULES]
    assert outside == [], f"modules outside the layer folders: {outside}"


@pytest.mark.parametrize("module", sorted(graph()))
def test_imports_point_down(module):
    upward = [t for t in graph()[module] - {"llvmlite"} if layer_of(t) > layer_of(module)]
    assert upward == [], f"{module} imports upwards: {upward}"


def test_only_the_compiler_imports_llvmlite():
    users = sorted(m for m, targets in graph().items() if "llvmlite" in targets)
    assert users and all(m.startswith("diffc.compiler.") for m in users), users


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                cycle = path[path.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t in edges and state.get(t) is None:  # (llvmlite is no node)
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(edges):
        if state.get(m) is None:
            visit(m)
