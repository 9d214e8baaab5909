"""The house's rules, read from the code's own imports and sizes (docs/architecture.md).

Data flows one way: ground (errors, config, db, catalog, metrics, redact, who, textout) -> events ->
mapping -> target -> capture -> sync -> verify -> cutover -> ops. Nothing imports upward, no two
modules import each other (directly or in a ring, within a floor too), nothing imports another
module's underscore names, no file over 700 lines, no function over 80.

What still breaks a rule today is listed below as known debt, each entry with why it is still
there. A new break fails; so does an entry that no longer breaks anything (take it off the list:
the debt only shrinks).
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "services" / "crossfade"
FLOORS = ["ground", "events", "mapping", "target", "capture", "sync", "verify", "cutover", "ops"]
GROUND = {"errors", "config", "db", "catalog", "metrics", "redact", "who", "textout"}

#: upward imports still to remove: (importing module, imported module)
KNOWN_UPWARD: set[tuple[str, str]] = set()
#: files over 700 lines still to split
KNOWN_LONG_FILES: set[str] = set()
#: functions over 80 lines still to split
KNOWN_LONG_FUNCTIONS: set[str] = set()


def _floor(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "crossfade":
        return None
    if len(parts) == 1 or parts[1] in GROUND or parts[1] == "__init__":
        return "ground"
    if parts[1] == "embedded":  # the demo's and the tests' embedded servers: beside ops
        return "ops"
    return parts[1] if parts[1] in FLOORS else None


@functools.cache
def _modules() -> list[tuple[str, Path, ast.Module]]:
    out = []
    for f in sorted(ROOT.rglob("*.py")):
        rel = f.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out.append((name, f, ast.parse(f.read_text())))
    return out


def _imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "crossfade":  # from crossfade import metrics
                found += [(f"crossfade.{a.name}", []) for a in node.names]
            else:
                found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
    return found


def test_every_package_module_has_a_floor() -> None:
    unplaced = [name for name, _, _ in _modules() if _floor(name) is None]
    assert not unplaced, f"modules outside the floors {FLOORS}: {unplaced}"


def test_nothing_imports_upward() -> None:
    upward = set()
    for name, _, tree in _modules():
        mine = FLOORS.index(_floor(name) or "ops")
        for target, _names in _imports(tree):
            floor = _floor(target)
            if floor is not None and FLOORS.index(floor) > mine:
                upward.add((name, target))
    assert upward - KNOWN_UPWARD == set(), "new upward imports"
    assert KNOWN_UPWARD - upward == set(), "paid off: take these off KNOWN_UPWARD"


def test_no_module_imports_another_modules_underscore_names() -> None:
    private = []
    for name, _, tree in _modules():
        for target, names in _imports(tree):
            if _floor(target) is None or target == name:
                continue
            hidden = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if hidden:
                private.append(f"{name} imports {target}: {', '.join(hidden)}")
    assert not private, private


def _module_imports(tree: ast.Module, known: set[str]) -> set[str]:
    """The package's modules a module imports: at the top, under ``TYPE_CHECKING`` and inside
    functions alike (each is an import a reader follows). ``from a.b import c`` is module
    ``a.b.c`` when that is one, else ``a.b``."""
    out = set()
    for target, names in _imports(tree):
        subs = {f"{target}.{n}" for n in names} & known
        out |= subs if subs else {target} & known
        if subs and len(subs) < len(names):  # from a.b import c (a module), d (a name of a.b)
            out |= {target} & known
    return out


def _import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself):
    every import cycle, each as the sorted names of the modules in it (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def test_no_import_cycle_between_modules() -> None:
    known = {name for name, _, _ in _modules()}
    graph = {name: _module_imports(tree, known) - {name} for name, _, tree in _modules()}
    cycles = _import_cycles(graph)
    assert not cycles, (
        "modules that import each other (directly or in a ring; TYPE_CHECKING and function-local "
        "imports count): let imports flow one way, e.g. move the shared name down into a module "
        f"both import, or describe what the lower one uses with a Protocol: {cycles}"
    )


def test_the_cycle_check_finds_rings_and_reads_every_kind_of_import() -> None:
    assert _import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _import_cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
    code = """
from typing import TYPE_CHECKING
from crossfade import metrics
if TYPE_CHECKING:
    from crossfade.sync.parents import TargetParents
def f():
    from crossfade.sync.sinks import dedup, TableSink
    import crossfade.verify.run
"""
    known = {
        "crossfade.metrics",
        "crossfade.sync.parents",
        "crossfade.sync.sinks",
        "crossfade.sync.sinks.dedup",
        "crossfade.verify.run",
    }
    assert _module_imports(ast.parse(code), known) == known


def test_files_and_functions_stay_small() -> None:
    long_files, long_functions = set(), set()
    for _, f, tree in _modules():
        rel = f.relative_to(ROOT).as_posix()
        if len(f.read_text().splitlines()) > 700:
            long_files.add(rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                if node.end_lineno - node.lineno + 1 > 80:
                    long_functions.add(f"{rel}:{node.name}")
    assert long_files - KNOWN_LONG_FILES == set(), "files grown over 700 lines"
    assert KNOWN_LONG_FILES - long_files == set(), "paid off: take these off KNOWN_LONG_FILES"
    assert long_functions - KNOWN_LONG_FUNCTIONS == set(), "functions grown over 80 lines"
    assert KNOWN_LONG_FUNCTIONS - long_functions == set(), "paid off: off KNOWN_LONG_FUNCTIONS"


#: files outside crossfade/target/ whose SQL still names a bookkeeping table: none (every query on
#: the bookkeeping schema is a function of crossfade.target.store); keep it empty
KNOWN_BOOKKEEPING_SQL: set[str] = set()


def _docstrings(tree: ast.Module) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


#: a string is SQL when it holds one of these (upper case, as the house writes SQL); a message
#: naming a table ("recorded in {bk}.cutover_audit") is not
_SQL_WORD = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|FROM|JOIN|INTO|TABLE|TRUNCATE)\b")


def _bookkeeping_tables_named(tree: ast.Module, tables: tuple[str, ...]) -> set[str]:
    """The bookkeeping tables a module's SQL names: ``{}.ledger``, ``{bk}."offsets"`` in a
    string (an f-string's ``{schema}.fences`` too), or ``sql.Identifier(schema, "meta")``.
    Docstrings and attribute names (``cp.offsets``) are not SQL and are not read."""
    names = "|".join(tables)
    placeholder = re.compile(rf'\{{\w*\}}"?\.\s*"?({names})\b')
    after_value = re.compile(rf'^"?\.\s*"?({names})\b')
    docs, found = _docstrings(tree), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if _SQL_WORD.search(node.value):
                found.update(placeholder.findall(node.value))
        elif isinstance(node, ast.JoinedStr):
            text = "".join(str(v.value) for v in node.values if isinstance(v, ast.Constant))
            pairs = (
                zip(node.values, node.values[1:], strict=False) if _SQL_WORD.search(text) else []
            )
            for before, part in pairs:
                if isinstance(before, ast.FormattedValue) and isinstance(part, ast.Constant):
                    found.update(after_value.findall(str(part.value)))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "Identifier"
            and len(node.args) >= 2
            and isinstance(node.args[-1], ast.Constant)
            and node.args[-1].value in tables
        ):
            found.add(str(node.args[-1].value))
    return found


def test_only_the_store_writes_sql_on_the_bookkeeping_schema() -> None:
    from crossfade.target.store.schema import TABLES

    offenders = {}
    for name, f, tree in _modules():
        if name.startswith("crossfade.target"):
            continue
        named = _bookkeeping_tables_named(tree, TABLES)
        if named:
            offenders[f.relative_to(ROOT).as_posix()] = sorted(named)
    new = {f: t for f, t in offenders.items() if f not in KNOWN_BOOKKEEPING_SQL}
    assert not new, f"bookkeeping SQL outside crossfade.target.store (add a store function): {new}"
    paid = KNOWN_BOOKKEEPING_SQL - offenders.keys()
    assert not paid, f"paid off: take these off KNOWN_BOOKKEEPING_SQL: {sorted(paid)}"


def test_the_bookkeeping_sql_check_reads_sql_not_attributes() -> None:
    tables = ("offsets", "ledger", "meta")
    code = '''
def f(cp, schema):
    """Reads {}.ledger in a docstring: not SQL."""
    n = cp.offsets
    a = sql.SQL("SELECT 1 FROM {}.ledger l JOIN {s}.\\"offsets\\" o ON true")
    b = f"SELECT * FROM {schema}.meta"
    c = sql.Identifier(schema, "ledger")
    d = "metadata: {}.metadata, report.offsets"
    e = f"recorded in the audit log ({schema}.ledger, run {n})"
    g = "SELECT 1 FROM {}.metadata"
'''
    assert _bookkeeping_tables_named(ast.parse(code), tables) == {"ledger", "offsets", "meta"}
    assert _bookkeeping_tables_named(ast.parse("x = cp.offsets\ny = 'a.ledger'"), tables) == set()
