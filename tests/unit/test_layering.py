"""The house of DESIGN §1, checked on the source: every import (lazy ones and TYPE_CHECKING ones
included) goes to the same room or a room below, no module imports another module's private
name, and at most six modules live at the top level."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "nbcontainer"

# Lowest first. A module may import its own room and any room of a lower rank.
RANKS = {
    "errors": 0, "oci": 0, "compression": 0,
    "store": 1,
    "layers": 2,
    "snapshot": 3,
    "runtime": 4,
    "transfer": 5,
    "analysis": 6,
    "engine": 7, "build": 7, "remote": 7,
    "verbs": 8,
    "cli": 9, "notebook": 9,  # the two faces; the notebook shares the CLI's progress sinks
    "__init__": 10, "__main__": 10,
}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
    return [f for f in found if f[0].split(".")[0] == "nbcontainer"]


def test_every_import_goes_to_the_same_room_or_a_lower_one():
    wrong = []
    for name, path in modules().items():
        mine = room(name)
        for target, names, line in imports(path):
            targets = [target] + [f"{target}.{n}" for n in names if f"{target}.{n}" in modules()]
            for t in targets:
                theirs = room(t) if t != "nbcontainer" else "__init__"
                if t == "nbcontainer" and names:
                    continue  # ``from nbcontainer import x``: judged by the submodule x above
                if RANKS[theirs] > RANKS[mine] and theirs != mine:
                    where = f"{path.relative_to(PKG.parent)}:{line}"
                    wrong.append(f"{where} {name} ({mine}) imports {t} ({theirs})")
    assert wrong == []


def test_no_module_imports_a_private_name_of_another_module():
    wrong = []
    for name, path in modules().items():
        for target, names, line in imports(path):
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            # the runtime's ctypes module is private to the runtime room by design (DESIGN §1)
            private = [n for n in private if not (n == "_libc" and room(name) == "runtime")]
            if private and target != name:
                wrong.append(f"{path.relative_to(PKG.parent)}:{line} takes {private} from {target}")
    assert wrong == []


def test_at_most_six_modules_at_the_top_level():
    top = sorted(p.name for p in PKG.glob("*.py"))
    assert len(top) <= 6, top


def test_no_import_circle_between_rooms_at_import_time():
    """Module-level imports only (lazy imports run after both modules exist)."""
    graph: dict[str, set[str]] = {}
    mods = modules()
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        deps = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nbcontainer"):
                deps.add(node.module)
                subs = (f"{node.module}.{a.name}" for a in node.names)
                deps.update(s for s in subs if s in mods)
        graph[name] = {d for d in deps if d in mods and d != name}
    seen: dict[str, int] = {}
    cycle: list[str] = []

    def visit(n: str, stack: list[str]) -> None:
        seen[n] = 1
        for d in sorted(graph.get(n, ())):
            if d == n.rsplit(".", 1)[0] and n.startswith(d + "."):
                continue  # a submodule importing its own package's __init__ is Python's normal order
            if seen.get(d) == 1 and not cycle:
                cycle.extend([*stack[stack.index(d):], d] if d in stack else [n, d])
            elif d not in seen:
                visit(d, [*stack, d])
        seen[n] = 2

    for n in sorted(graph):
        if n not in seen:
            visit(n, [n])
    assert cycle == []
