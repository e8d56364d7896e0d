"""The size and shape of the UI layer, as tables (markdown): what issue 15 asks to compare before and
after its restructuring.

    .venv/bin/python benchmarks/ui_structure.py            # this checkout
    .venv/bin/python benchmarks/ui_structure.py /tmp/before  # another checkout (git worktree add /tmp/before REV)

Per module of ``src/pocoviz/ui`` and ``src/pocoviz/controllers``: lines, functions and methods
(every ``def``), and threading primitives created there (calls of ``Thread``, ``Lock``, ``RLock``,
``Event``, ``Queue``, ``LatestRunner``, ``JobRunner``, however imported). Per class whose name
ends in ``View`` or ``Controller``: methods, and distinct instance attributes assigned in its body
(``self.x = ...``, ``self._x: T = ...``, ``self.x += ...``, tuple targets; ``param`` parameters
declared on the class counted apart). Tests: accesses of private attributes on views and controllers,
found by a name heuristic (below). Reads source only; imports nothing from the project.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import Counter
from pathlib import Path

PRIMITIVES = ("Thread", "Lock", "RLock", "Event", "Queue", "LatestRunner", "JobRunner")
#: Private attributes read or written on a view or controller in the tests. Heuristic: the tests
#: name a view ``view``/``v``/``app`` (or ``<something>view``: ``fview``, ``forecast_view``) and a
#: controller ``c``/``ctrl``/``controller`` (or ``<something>controller``/``<something>ctrl``); any
#: ``<such name>._<lowercase>...`` counts (dunders do not). It misses views held under other names
#: (``self.x._y``, ``tab._y``) and counts a non-view that happens to be called ``c`` or ``app``.
PRIVATE_ACCESS = re.compile(r"\b(\w*view|v|app|c|\w*ctrl|\w*controller)\._[a-z]\w*", re.IGNORECASE)


STDLIB_PRIMITIVES = {"Thread", "Lock", "RLock", "Event", "Queue"}


def _primitive(node: ast.Call, from_stdlib: set[str]) -> str | None:
    """The primitive ``node`` creates: ``threading.X(...)``/``queue.Queue(...)``, a bare ``X(...)``
    imported from threading or queue (not, say, ``param.Event``), or ``LatestRunner``/``JobRunner``
    however reached."""
    func = node.func
    if isinstance(func, ast.Name):
        name = func.id
        ok = name in from_stdlib or name in ("LatestRunner", "JobRunner")
    elif isinstance(func, ast.Attribute):
        name = func.attr
        base = func.value.id if isinstance(func.value, ast.Name) else ""
        ok = base in ("threading", "queue") if name in STDLIB_PRIMITIVES else name in ("LatestRunner", "JobRunner")
    else:
        return None
    return name if ok and name in PRIMITIVES else None


def _self_targets(target: ast.AST) -> list[str]:
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
        return [target.attr]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for elt in target.elts for name in _self_targets(elt)]
    if isinstance(target, ast.Starred):
        return _self_targets(target.value)
    return []


def _class_stats(cls: ast.ClassDef) -> dict:
    attrs: set[str] = set()
    params = 0
    methods = 0
    for stmt in cls.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            methods += 1
        value = getattr(stmt, "value", None)
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and isinstance(value, ast.Call):
            func = value.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "param":
                params += 1
    for node in ast.walk(cls):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                attrs.update(_self_targets(target))
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            attrs.update(_self_targets(node.target))
    return {"methods": methods, "attributes": len(attrs), "private": sum(a.startswith("_") for a in attrs), "params": params}


def module_table(root: Path) -> tuple[list[list], list[list]]:
    modules, classes = [], []
    for folder in ("ui", "controllers"):
        for path in sorted((root / "src" / "pocoviz" / folder).glob("*.py")):
            text = path.read_text()
            tree = ast.parse(text)
            defs = sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(tree))
            from_stdlib = {
                a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module in ("threading", "queue") for a in n.names
            }
            prims = Counter(name for n in ast.walk(tree) if isinstance(n, ast.Call) and (name := _primitive(n, from_stdlib)))
            rel = f"{folder}/{path.name}"
            modules.append([rel, len(text.splitlines()), defs, *(prims.get(p, 0) for p in PRIMITIVES)])
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and node.name.endswith(("View", "Controller")):
                    st = _class_stats(node)
                    classes.append([f"{rel}:{node.name}", st["methods"], st["attributes"], st["private"], st["params"]])
    return modules, classes


def test_table(root: Path) -> tuple[list[list], int, int]:
    rows, total, names = [], 0, set()
    for path in sorted((root / "tests").rglob("test_*.py")):
        hits = [m.group(0) for m in PRIVATE_ACCESS.finditer(path.read_text())]
        if hits:
            attrs = {h.split(".", 1)[1] for h in hits}
            rows.append([str(path.relative_to(root)), len(hits), len(attrs)])
            total += len(hits)
            names |= attrs
    return rows, total, len(names)


def markdown(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    root = Path(argv[0] if argv else Path(__file__).resolve().parents[1]).resolve()
    modules, classes = module_table(root)
    totals = ["**total**", *(sum(r[i] for r in modules) for i in range(1, len(modules[0])))]
    print(f"## {root}\n")
    print(markdown(["module", "lines", "functions + methods", *PRIMITIVES], [*modules, totals]))
    print()
    print(markdown(["class", "methods", "instance attributes", "of which private", "param parameters"], classes))
    print()
    rows, total, distinct = test_table(root)
    print(markdown(["test file", "private accesses on views/controllers", "distinct attributes"], rows))
    print(f"\n{total} accesses of {distinct} distinct private attributes (regex {PRIVATE_ACCESS.pattern!r}, case-insensitive)")


if __name__ == "__main__":
    main(sys.argv[1:])
