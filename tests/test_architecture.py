"""The house of docs/DESIGN.md, drawn from the code's own import statements (every `import` and
`from ... import`, those inside functions too): one installed package `stagecache` whose rooms are
the folders at the repo root, arrows between rooms one way only, no two modules importing each
other (directly or round a longer circle), and modules of a readable size."""
import ast
import importlib.metadata
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("core", "extract", "heads", "pipelines")
MAX_LINES = 400

# room -> the rooms it may import (besides itself). pipelines' own rooms, most dependent first:
# commands -> tools -> ablation -> training -> evaluation.
MAY_IMPORT = {
    "core": set(),
    "extract": {"core"},
    "heads": {"core"},
    "pipelines.evaluation": {"core", "extract"},
    "pipelines.training": {"core", "extract", "heads", "pipelines.evaluation"},
    # submitit job arrays: the extraction array runs extract's job, nothing of pipelines
    "pipelines.launch": {"core", "extract"},
    "pipelines.ablation": {"core", "extract", "heads", "pipelines.evaluation", "pipelines.training",
                           "pipelines.launch"},
    "pipelines.tools": {"core", "extract", "heads", "pipelines.evaluation", "pipelines.training",
                        "pipelines.ablation", "pipelines.launch"},
    "pipelines.commands": {"core", "extract", "heads", "pipelines.evaluation", "pipelines.training",
                           "pipelines.ablation", "pipelines.tools", "pipelines.launch"},
}


def _modules() -> dict[str, Path]:
    """'stagecache.pipelines.training.train' -> its file, for every module of the four rooms."""
    out = {}
    for room in ROOMS:
        for f in sorted((ROOT / room).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            name = ".".join(("stagecache",) + (parts[:-1] if parts[-1] == "__init__" else parts))
            out[name] = f
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The stagecache modules `name` imports: a `from pkg import x` names module pkg.x when x is one."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _room(module: str) -> str:
    parts = module.split(".")[1:]
    if parts[0] == "pipelines" and len(parts) > 1 and f"pipelines.{parts[1]}" in MAY_IMPORT:
        return f"pipelines.{parts[1]}"
    return parts[0]


def test_the_modules_are_found():
    assert "stagecache.pipelines.training.train" in MODULES and "stagecache.heads.stage" in MODULES
    # the graph holds real edges: the loop's one data seam, a relative import inside a room
    assert "stagecache.pipelines.training.split" in GRAPH["stagecache.pipelines.training.train"]
    assert "stagecache.heads.protocol" in GRAPH["stagecache.heads.linear"]


def test_every_room_imports_only_the_rooms_below_it():
    bad = {}
    for name, deps in GRAPH.items():
        room = _room(name)
        if room == "pipelines":  # pipelines/__init__.py: the package itself, importing nothing
            assert not deps, deps
            continue
        wrong = sorted(d for d in deps if _room(d) != room and _room(d) not in MAY_IMPORT[room])
        if wrong:
            bad[name] = wrong
    assert bad == {}


def test_no_two_modules_import_each_other_even_round_a_circle():
    # Tarjan's strongly connected components: a component of more than one module is a circle
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert circles == []


@pytest.mark.parametrize("room", ROOMS)
def test_modules_stay_readable(room):
    long = {str(p.relative_to(ROOT)): n for name, p in MODULES.items() if _room(name).split(".")[0] == room
            for n in [len(p.read_text().splitlines())] if n > MAX_LINES}
    assert long == {}


def test_pyproject_lists_every_package_of_the_rooms():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    folders = {"stagecache." + ".".join(p.parent.relative_to(ROOT).parts)
               for room in ROOMS for p in (ROOT / room).rglob("__init__.py")}
    assert folders - listed == set()
    assert cfg["package-dir"] == {f"stagecache.{r}": r for r in ROOMS}


def test_the_installed_distribution_is_one_top_level_package():
    dist = importlib.metadata.distribution("stagecache")
    assert (dist.read_text("top_level.txt") or "").split() == ["stagecache"]
    scripts = {e.name: e.value for e in dist.entry_points if e.group == "console_scripts"}
    assert scripts and all(v.startswith("stagecache.pipelines.commands.cli:") for v in scripts.values())
