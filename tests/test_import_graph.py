"""The package's import graph: no module imports, at any depth, a module that imports it back; every import
across rooms is one docs/architecture.md's "may import" table allows; the top level is light."""
from __future__ import annotations

import ast
import importlib.util
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import fl_lightning

#: the document whose rooms table the package must follow
ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
#: optional back-ends and plotting that ``import fl_lightning`` must not pull in
HEAVY_OPTIONAL = ("ray", "flwr", "matplotlib", "torchvision", "sklearn")


def package_modules() -> dict[str, Path]:
    """Every module of fl_lightning (packages by their ``__init__.py``) and its source file."""
    modules = {"fl_lightning": Path(fl_lightning.__file__)}
    for info in pkgutil.walk_packages(fl_lightning.__path__, "fl_lightning."):
        spec = importlib.util.find_spec(info.name)
        assert spec is not None and spec.origin, info.name
        modules[info.name] = Path(spec.origin)
    return modules


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Import statements at any depth (functions included), except those only type checkers see."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_type_checking_block(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The fl_lightning modules that module ``name`` imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
            continue
        base = node.module or ""
        if node.level:
            parts = package.split(".")
            base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            targets.add(submodule if submodule in known else base)
    return {t for t in targets if t in known and t != name}


def import_graph() -> dict[str, set[str]]:
    """Module -> the fl_lightning modules it imports."""
    modules = package_modules()
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (each is a set of mutual imports)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0

    def visit(root: str) -> None:  # iterative, so deep graphs do not hit the recursion limit
        nonlocal counter
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return components


def a_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete import cycle inside ``component``: ``a -> b -> ... -> a``."""
    members = set(component)
    start = component[0]
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:  # breadth-first from start until an edge comes back to it
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return list(reversed(path)) + [start]
                if child not in parents:
                    parents[child] = node
                    following.append(child)
        frontier = following
    return component


def test_the_cycle_search_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    components = strongly_connected(graph)
    assert components == [["a", "b", "c"]]
    assert a_cycle(graph, components[0]) == ["a", "b", "c", "a"]


def test_function_level_and_relative_imports_are_edges(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("from . import sibling\n"
                      "def f():\n    from fl_lightning.other import thing\n"
                      "if TYPE_CHECKING:\n    import fl_lightning.typing_only\n")
    known = {"fl_lightning.pkg.mod", "fl_lightning.pkg.sibling", "fl_lightning.other", "fl_lightning.typing_only"}
    assert imported_modules("fl_lightning.pkg.mod", source, known) == {"fl_lightning.pkg.sibling",
                                                                       "fl_lightning.other"}


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "fl_lightning.cli" in graph and "fl_lightning.sweeps.runner" in graph
    cycles = [" -> ".join(a_cycle(graph, c)) for c in strongly_connected(graph)]
    for cycle in cycles:
        print("import cycle:", cycle)
    assert not cycles, "modules that import each other (at any depth, function-level included):\n" + "\n".join(cycles)


def test_importing_the_package_loads_no_optional_back_end() -> None:
    wanted = "{" + ", ".join(repr(m) for m in HEAVY_OPTIONAL) + "}"
    code = f"import fl_lightning, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in {wanted}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(fl_lightning.__file__).parents[1])
    assert out.stdout.strip() == "[]", out.stdout


def test_the_public_names_still_import_from_the_top_level() -> None:
    from fl_lightning import Aggregator, FederatedTrainer, RoundContext

    assert FederatedTrainer.__name__ == "FederatedTrainer"
    assert Aggregator.__module__ == "fl_lightning.aggregators.base"
    assert "RoundContext" in dir(fl_lightning) and RoundContext is fl_lightning.RoundContext


# --- the rooms table of docs/architecture.md, enforced -------------------------------------------------------

ANYTHING = "anything in the package"
LEAVES = "shared leaves"


def _module_of(token: str) -> str:
    """A backticked name of the table as a module: ``trainer/`` -> ``fl_lightning.trainer``, ``cli.py`` ->
    ``fl_lightning.cli``, ``aggregators/base.py`` or ``data.base`` -> that module, ``__init__.py`` -> the package."""
    if token == "__init__.py":
        return "fl_lightning"
    token = token.rstrip("/")
    token = token[:-3] if token.endswith(".py") else token
    return "fl_lightning." + token.replace("/", ".")


def _covers(owner: str, module: str) -> bool:
    """Whether the table's name ``owner`` stands for ``module`` (a folder stands for every module in it)."""
    return module == owner or (owner != "fl_lightning" and module.startswith(owner + "."))


def room_table(text: str) -> list[dict]:
    """The rows of the table headed ``| Room | Job | May import |``: each row's room names, what it may import,
    and whether it may import anything or the shared leaves."""
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if re.match(r"\|\s*Room\s*\|\s*Job\s*\|\s*May import\s*\|", line))
    rows = []
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        room, _job, may = [cell.strip() for cell in line.strip().strip("|").split("|")]
        allowed_text = may.split(";", 1)[0]
        rows.append({"room": room,
                     "owns": [_module_of(t) for t in re.findall(r"`([^`]+)`", room)],
                     "leaves": room.startswith(LEAVES),
                     "may": [_module_of(t) for t in re.findall(r"`([^`]+)`", allowed_text)],
                     "anything": ANYTHING in allowed_text,
                     "may_leaves": LEAVES in allowed_text})
    return rows


def row_of(module: str, rows: list[dict]) -> dict | None:
    """The row whose room names ``module`` (the longest name wins: ``data.base`` before ``data/``)."""
    best, length = None, -1
    for row in rows:
        for owner in row["owns"]:
            if _covers(owner, module) and len(owner) > length:
                best, length = row, len(owner)
    return best


def table_violations(graph: dict[str, set[str]], rows: list[dict]) -> list[str]:
    """Every module the table does not place, and every cross-room import its row does not allow."""
    leaves = [owner for row in rows if row["leaves"] for owner in row["owns"]]
    problems = []
    for module in sorted(graph):
        row = row_of(module, rows)
        if row is None:
            problems.append(f"{module} is in no row of the rooms table; add it to the room it belongs to")
            continue
        allowed = row["may"] + (leaves if row["may_leaves"] else [])
        for target in sorted(graph[module]):
            if row_of(target, rows) is row or row["anything"] or any(_covers(a, target) for a in allowed):
                continue
            problems.append(f"{module} imports {target}, which the row '{row['room'][:40]}' does not allow; "
                            "import something the row lists, or add it to the row with the reason")
    return problems


def test_the_table_check_finds_an_unlisted_module_and_a_forbidden_import() -> None:
    text = ("| Room | Job | May import |\n|---|---|---|\n"
            "| `engines/` | x | `context`, `data.base`; never `trainer/` |\n"
            "| `data/` | x | shared leaves |\n"
            "| `cli.py` | x | anything in the package |\n"
            "| shared leaves: `context.py`, `seeding.py` | x | shared leaves |\n")
    rows = room_table(text)
    graph = {"fl_lightning.engines.a": {"fl_lightning.context", "fl_lightning.data.base", "fl_lightning.engines.b"},
             "fl_lightning.engines.b": {"fl_lightning.data.other"},
             "fl_lightning.data.base": {"fl_lightning.seeding"},
             "fl_lightning.cli": {"fl_lightning.engines.a"},
             "fl_lightning.context": set(), "fl_lightning.seeding": set(),
             "fl_lightning.stray": set()}
    assert table_violations(graph, rows) == [
        "fl_lightning.engines.b imports fl_lightning.data.other, which the row '`engines/`' does not allow; "
        "import something the row lists, or add it to the row with the reason",
        "fl_lightning.stray is in no row of the rooms table; add it to the room it belongs to"]


def test_every_import_across_rooms_is_one_the_architecture_table_allows() -> None:
    rows = room_table(ARCHITECTURE.read_text())
    assert len(rows) >= 10 and any(row["leaves"] for row in rows)
    problems = table_violations(import_graph(), rows)
    assert not problems, "docs/architecture.md's rooms table and the code disagree:\n" + "\n".join(problems)
