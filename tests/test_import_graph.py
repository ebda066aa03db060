"""The import graph of fabricsim's own modules has no circles.

Every ``import`` statement counts, at module level or inside a function (a function-level import
is still a dependency, only a later one). Edges go from a module to the fabricsim module it names;
``from fabricsim.x import y`` goes to ``fabricsim.x.y`` when that is a module, else to
``fabricsim.x``. The implicit import of a parent package does not count (every module has it).
"""

from __future__ import annotations

import ast
import os

import fabricsim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = {"fabricsim": "fabricsim", "kernels": "fabricsim.kernels", "traces": "fabricsim.traces"}


def _modules() -> dict:
    """Module name -> source path, for every module of the three installed folders."""
    out = {}
    for folder, package in FOLDERS.items():
        base = os.path.join(ROOT, folder)
        for dirpath, _, files in os.walk(base):
            rel = os.path.relpath(dirpath, base)
            pkg = package if rel == "." else package + "." + rel.replace(os.sep, ".")
            for name in files:
                if name.endswith(".py"):
                    mod = pkg if name == "__init__.py" else f"{pkg}.{name[:-3]}"
                    out[mod] = os.path.join(dirpath, name)
    return out


def _edges(modules: dict) -> dict:
    graph = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.endswith("__init__.py")
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = mod.split(".")
                    anchor = parts if is_pkg else parts[:-1]
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for t in targets:
                while t and t not in modules and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in modules and t != mod:
                    graph[mod].add(t)
    return graph


def _cycle(graph: dict):
    """One cycle as a list of modules, or None (iterative depth-first search)."""
    state = {m: 0 for m in graph}  # 0 new, 1 on the stack, 2 done
    for start in sorted(graph):
        if state[start]:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state[child] == 1:
                return path[path.index(child):] + [child]
            elif state[child] == 0:
                state[child] = 1
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


def test_the_sources_are_the_installed_package():
    assert os.path.dirname(fabricsim.__file__) == os.path.join(ROOT, "fabricsim")


def test_the_graph_sees_known_edges():
    graph = _edges(_modules())
    assert "fabricsim.kernels.maxmin" in graph["fabricsim.kernels.flowsim"]
    assert "fabricsim.errors" in graph["fabricsim.config"]
    assert "fabricsim.cliutil" in graph["fabricsim.cli"]


def test_a_planted_circle_is_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circles():
    cycle = _cycle(_edges(_modules()))
    assert cycle is None, "import circle: " + " -> ".join(cycle)
