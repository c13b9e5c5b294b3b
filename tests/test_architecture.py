"""The import graph: no circles, and dependencies point one way (docs/architecture.md).

Layers, lowest first: ``imcsim.kernels`` -> the core (``imcsim`` without the modules below)
-> ``imcsim.training`` -> orchestration (sweeps, sharded verification, Monte-Carlo chips:
modules that run training or many runs) -> ``imcsim.cli``.  A module may import its own layer
and those below.  Every import counts, those inside functions too (a lazy import is still a
dependency).  Read from the source with ``ast``: nothing is imported to check it.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: installed package name -> source folder (pyproject's package-dir mapping)
FOLDERS = {"imcsim": ROOT / "imcsim", "imcsim.kernels": ROOT / "kernels",
           "imcsim.training": ROOT / "training"}
ORCHESTRATION = ("imcsim.sweep", "imcsim.verify.shard", "imcsim.calibration.montecarlo")
LAYERS = ("kernels", "core", "training", "orchestration", "cli")


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts
                     if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


MODULES = modules()


def layer(module: str) -> str:
    def under(prefix):
        return module == prefix or module.startswith(prefix + ".")
    if under("imcsim.kernels"):
        return "kernels"
    if under("imcsim.training"):
        return "training"
    if under("imcsim.cli") or module == "imcsim.__main__":
        return "cli"
    if any(under(p) for p in ORCHESTRATION):
        return "orchestration"
    return "core"


def imports(path: Path) -> set[str]:
    """The project modules ``path`` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in MODULES}


GRAPH = {m: imports(p) for m, p in MODULES.items()}


def test_the_source_folders_hold_the_packages():
    assert {"imcsim.macro", "imcsim.kernels.hw", "imcsim.training.engine",
            "imcsim.cli.main"} <= set(MODULES)


def test_dependencies_point_one_way():
    wrong = sorted(f"{m} ({layer(m)}) -> {d} ({layer(d)})"
                   for m, deps in GRAPH.items() for d in deps
                   if LAYERS.index(layer(d)) > LAYERS.index(layer(m)))
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    index, low, stack, on_stack, circles = {}, {}, [], set(), []
    counter = [0]

    def visit(v):                                   # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not circles, circles


def test_a_circle_and_an_upward_import_would_be_caught():
    """The checks above can fail: a made-up graph with a circle and a core -> training edge."""
    saved = dict(GRAPH)
    try:
        GRAPH["imcsim.macro"] = GRAPH["imcsim.macro"] | {"imcsim.training.engine"}
        GRAPH["imcsim.counters"] = GRAPH["imcsim.counters"] | {"imcsim.macro"}
        GRAPH["imcsim.macro"] = GRAPH["imcsim.macro"] | {"imcsim.counters"}
        for check in (test_dependencies_point_one_way, test_no_import_circle):
            try:
                check()
            except AssertionError:
                continue
            raise AssertionError(f"{check.__name__} missed the made-up defect")
    finally:
        GRAPH.clear()
        GRAPH.update(saved)
