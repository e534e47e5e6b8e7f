"""The package layout shows the architecture, and the import graph keeps it (issue 12, Layout).

The graph is built from the source with ``ast``: every import counts, module-level, inside a
function or under ``TYPE_CHECKING``, and ``importlib.import_module("name")`` too, so neither
a lazy import nor a type-only one can hide a cycle.  Rules:

* no import cycles among shipped modules (every strongly connected component has one module);
* ``alc`` and ``norm`` never import ``tesla``; ``alc`` never imports ``norm``;
* nothing under ``alc``/``norm``/``tesla`` imports ``tests`` (shipped code stands alone);
* ``tesla.core`` (the protocol) never imports the CLI, the simulator or the asyncio API;
* ``tesla.mac`` (native and parallel MAC) sits below the receiver: it imports at most
  ``tesla.core.params``, ``tesla.core.crypto`` and the sender ``tesla.core.authenticator``
  (``sign_batch`` signs for it); the receiver calls the MAC, never the reverse;
* ``tesla.sim`` never imports ``tesla.cli``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("alc", "norm", "tesla")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(f): f for pkg in PACKAGES for f in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules ``name`` imports, resolved to the shipped module (or the outside top name)."""
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    raw: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            raw.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import mod`` imports the submodule pkg.mod; any other name is
            # read from pkg itself
            subs = {f"{base}.{a.name}" for a in node.names} & known
            raw.update(subs)
            if len(subs) < len(node.names):
                raw.add(base)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name)
              and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            raw.add(node.args[0].value)  # importlib.import_module("pkg.mod")
    out: set[str] = set()
    for mod in raw:
        if mod in known:
            out.add(mod)
        elif mod.split(".")[0] in PACKAGES:
            # ``from tesla.x import name``: the longest shipped prefix
            parts = mod.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts:
                out.add(".".join(parts))
        else:
            out.add(mod.split(".")[0])
    out.discard(name)
    return out


def _graph() -> dict[str, set[str]]:
    src = _sources()
    known = set(src)
    return {name: _imports(name, path, known) for name, path in src.items()}


def _sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root] & graph.keys())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w] & graph.keys()))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    out.append(sorted(comp))
    return out


def _under(mod: str, pkg: str) -> bool:
    return mod == pkg or mod.startswith(pkg + ".")


GRAPH = _graph()


def test_graph_sees_the_packages() -> None:
    # the check below is only as good as the graph: it must see the layers and their edges
    assert {"tesla.core.receiver", "tesla.mac.kernel", "tesla.cli.main", "tesla.sim.core"} <= GRAPH.keys()
    assert "tesla.mac.kernel" in GRAPH["tesla.core.receiver"]
    assert "alc.lct" in GRAPH["tesla.core.receiver"]


def test_no_import_cycles() -> None:
    cycles = [c for c in _sccs(GRAPH) if len(c) > 1]
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


# (importer package, forbidden imported packages, allowed exceptions)
RULES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("alc", ("tesla", "norm", "tests"), ()),
    ("norm", ("tesla", "tests"), ()),
    ("tesla", ("tests",), ()),
    ("tesla.core", ("tesla.cli", "tesla.sim", "tesla.aio"), ()),
    # the receiver calls the MAC kernel, never the reverse; sign_batch (tesla.mac.batch) is
    # the batch form of TeslaSender.wrap and reads the sender's interval state
    ("tesla.mac", ("tesla.core",),
     ("tesla.core.params", "tesla.core.crypto", "tesla.core.authenticator")),
    ("tesla.sim", ("tesla.cli",), ()),
]


@pytest.mark.parametrize("importer,forbidden,allowed", RULES, ids=[r[0] for r in RULES])
def test_dependencies_point_one_way(importer: str, forbidden: tuple[str, ...],
                                    allowed: tuple[str, ...]) -> None:
    mods = [m for m in GRAPH if _under(m, importer)]
    assert mods, f"no modules under {importer}"
    offences = sorted(
        f"{m} imports {d}"
        for m in mods
        for d in GRAPH[m]
        if any(_under(d, f) for f in forbidden) and d not in allowed
    )
    assert not offences, "layering violated:\n" + "\n".join(offences)
