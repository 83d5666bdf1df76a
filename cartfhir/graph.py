"""The build graph: every table cartfhir writes, in build order, read from ``build.yaml``.

Each entry names one table and how it is made (a SQL file materialized as a table, a
ViewDefinition, a Python builder ``builder(con, context) -> rows``, or a DDL file a stage
runs and then fills itself) and where its sidecar (description, columns, expectations)
lives. A SQL model's dependencies are the known tables its SQL names; a builder declares
its own. ``load_graph`` checks the file once: files exist, dependencies are known and
built earlier, nothing depends on itself through a cycle.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import duckdb
import yaml

from cartfhir.db import quoted
from cartfhir.errors import GraphError, TransformError

PACKAGE = "cartfhir"
GRAPH_FILE = "build.yaml"
STAGES = ("land", "ref", "flat", "identity", "harmonized", "cohort", "qa", "analysis")
KINDS = ("sql", "view", "builder", "ddl")
WHEN = ("pooled",)
SCHEMAS = ("raw", "meta", "ref", "flat", "harmonized", "cohort", "qa", "analysis")
log = logging.getLogger(__name__)

_TABLE = re.compile(r"^([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)$")
_BUILDER = re.compile(r"^[a-z_][a-z0-9_.]*:[a-z_][a-z0-9_]*$")
# Comments and string literals, leftmost first, so "--" in a string and "'" in a comment
# are read as what they are.
_NOISE = re.compile(r"'(?:[^']|'')*'|--[^\n]*|/\*.*?\*/", re.S)
_NAMED = re.compile(r"\b(" + "|".join(SCHEMAS) + r")\.([a-z_][a-z0-9_]*)\b")


@dataclass(frozen=True)
class Node:
    """One table of the build and how it is made."""

    table: str
    stage: str
    kind: str  # sql | view | builder | ddl
    path: str | None  # file relative to the cartfhir package (sql, view, ddl)
    builder: str | None  # 'module:function' (builder)
    depends: tuple[str, ...]
    when: str | None  # None: every database; 'pooled': only a pooled one
    doc: str  # the sidecar, relative to the cartfhir package

    @property
    def schema(self) -> str:
        return self.table.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.table.split(".", 1)[1]

    @property
    def source(self) -> str:
        """Where the table is made, as a reader finds it: a file or a module."""
        if self.path is not None:
            return f"cartfhir/{self.path}"
        module = (self.builder or "").split(":", 1)[0]
        return module.replace(".", "/") + ".py"


@dataclass
class BuildContext:
    """What builders may need beyond the connection; each builder reads its own part."""

    run_id: str | None = None
    reference: Any = None  # cartfhir.transform.reference.Reference (ref builder)
    sites: list[Any] = field(default_factory=list)  # config sites (identity builder)
    settings: Any = None  # a stage's config section (analysis builders)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]
    macros: str | None = None  # SQL file of macros every model may call

    def stage(self, name: str, *, pooled: bool = False) -> list[Node]:
        """The stage's tables in build order (``when: pooled`` ones only when ``pooled``)."""
        if name not in STAGES:
            raise GraphError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
        return [n for n in self.nodes if n.stage == name and (pooled or n.when is None)]

    def steps(self, name: str, *, pooled: bool = False) -> list[list[Node]]:
        """The stage as build steps: one builder that makes several tables is one step."""
        steps: list[list[Node]] = []
        for node in self.stage(name, pooled=pooled):
            if steps and node.kind == "builder" and steps[-1][0].builder == node.builder:
                steps[-1].append(node)
            else:
                steps.append([node])
        return steps

    def node(self, table: str) -> Node:
        for node in self.nodes:
            if node.table == table:
                return node
        raise GraphError(f"{table} is not in cartfhir/{GRAPH_FILE}")

    def upstream(self, table: str) -> list[Node]:
        """Every table ``table`` needs, directly or not, in build order."""
        needed: set[str] = set()
        todo = list(self.node(table).depends)
        while todo:
            name = todo.pop()
            if name not in needed:
                needed.add(name)
                todo.extend(self.node(name).depends)
        return [n for n in self.nodes if n.table in needed]

    @property
    def tables(self) -> list[str]:
        return [n.table for n in self.nodes]


def _package() -> Traversable:
    return resources.files(PACKAGE)


def read_text(path: str) -> str:
    """A package file by its path relative to the cartfhir package."""
    return _package().joinpath(path).read_text(encoding="utf-8")


def sql_tables(sql: str) -> set[str]:
    """Every ``schema.table`` of a cartfhir schema the SQL names outside comments and strings."""
    code = _NOISE.sub(" ", sql)
    return {f"{m.group(1)}.{m.group(2)}" for m in _NAMED.finditer(code)}


def _where(i: int, stage: str) -> str:
    return f"cartfhir/{GRAPH_FILE}, stage {stage}, entry {i + 1}"


def _inside(path: Any, where: str) -> str:
    """``path`` when it is relative to the cartfhir package and stays inside it."""
    if (not isinstance(path, str) or not path or path.startswith(("/", "\\"))
            or ".." in path.replace("\\", "/").split("/") or ":" in path):
        raise GraphError(f"{where}: {path!r} must be a path relative to the cartfhir "
                         "package and stay inside it")
    return path


def _entry(stage: str, i: int, entry: Any) -> Node:
    where = _where(i, stage)
    if not isinstance(entry, dict):
        raise GraphError(f"{where}: an entry is a mapping with 'table' and one of "
                         f"{', '.join(KINDS)}")
    unknown = sorted(set(entry) - {"table", *KINDS, "depends", "when", "doc"})
    if unknown:
        raise GraphError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: table, "
                         f"{', '.join(KINDS)}, depends, when, doc")
    table = entry.get("table")
    if not isinstance(table, str) or not (m := _TABLE.match(table)) or m.group(1) not in SCHEMAS:
        raise GraphError(f"{where}: 'table' must be schema.table with a schema of "
                         f"{', '.join(SCHEMAS)}, not {table!r}")
    kinds = [k for k in KINDS if k in entry]
    if len(kinds) != 1:
        raise GraphError(f"{where} ({table}): give exactly one of {', '.join(KINDS)}")
    kind = kinds[0]
    value = entry[kind]
    if not isinstance(value, str) or not value:
        raise GraphError(f"{where} ({table}): {kind} must be a path or 'module:function'")
    when = entry.get("when")
    if when is not None and when not in WHEN:
        raise GraphError(f"{where} ({table}): when must be one of {', '.join(WHEN)}")
    depends = entry.get("depends")
    if kind == "builder":
        if not _BUILDER.match(value):
            raise GraphError(f"{where} ({table}): builder must be 'module:function', "
                             f"not {value!r}")
        if depends is None:
            raise GraphError(f"{where} ({table}): a builder declares 'depends' (the tables "
                             "it reads; [] for none)")
    path = None if kind == "builder" else _inside(value, f"{where} ({table}): {kind}")
    if depends is not None and (not isinstance(depends, list)
                                or not all(isinstance(d, str) for d in depends)):
        raise GraphError(f"{where} ({table}): depends must be a list of schema.table names")
    doc = entry.get("doc")
    if doc is not None:
        doc = _inside(doc, f"{where} ({table}): doc")
    else:
        if path is None:
            raise GraphError(f"{where} ({table}): a builder entry names its sidecar ('doc')")
        doc = path.rsplit(".", 1)[0] + ".yml"
    return Node(table=table, stage=stage, kind=kind, path=path,
                builder=value if kind == "builder" else None,
                depends=tuple(depends or ()), when=when, doc=doc)


def _derive(node: Node, known: set[str]) -> Node:
    """A SQL model's dependencies from its SQL; a view reads raw.resources."""
    if node.kind == "view":
        derived = ("raw.resources",)
    elif node.kind == "sql":
        named = sql_tables(read_text(node.path))
        if unknown := sorted(named - known):
            raise GraphError(f"cartfhir/{node.path} ({node.table}) reads {', '.join(unknown)}, "
                             f"which no entry of cartfhir/{GRAPH_FILE} builds; add it or fix "
                             "the name")
        derived = tuple(sorted(named - {node.table}))
    else:
        return node
    if node.depends and tuple(sorted(node.depends)) != tuple(sorted(derived)):
        raise GraphError(f"cartfhir/{GRAPH_FILE}: {node.table} declares depends "
                         f"{sorted(node.depends)} but its {node.kind} reads {list(derived)}; "
                         "drop 'depends' (it is derived) or make it match")
    return replace(node, depends=derived)


def _check_files(nodes: list[Node]) -> None:
    root = _package()
    for node in nodes:
        for what, path in ((node.kind, node.path), ("sidecar", node.doc)):
            if path is not None and not root.joinpath(path).is_file():
                raise GraphError(f"cartfhir/{GRAPH_FILE}: {node.table}: its {what} "
                                 f"cartfhir/{path} does not exist; create it or fix the path")


def _check_order(nodes: list[Node]) -> None:
    position = {n.table: i for i, n in enumerate(nodes)}
    by_table = {n.table: n for n in nodes}
    for node in nodes:
        for dep in node.depends:
            if dep not in position:
                raise GraphError(f"cartfhir/{GRAPH_FILE}: {node.table} depends on {dep}, "
                                 "which no entry builds; add it or fix the name")
    for node in nodes:  # a cycle first: moving entries cannot fix it
        path = _cycle(node.table, by_table, [])
        if path:
            raise GraphError(f"cartfhir/{GRAPH_FILE}: dependency cycle "
                             f"{' -> '.join(path)}; one of these must not read the other")
    for node in nodes:
        for dep in node.depends:
            if position[dep] > position[node.table]:
                raise GraphError(f"cartfhir/{GRAPH_FILE}: {node.table} depends on {dep}, "
                                 "which is built later; move it before "
                                 f"{node.table}")


def _cycle(table: str, by_table: dict[str, Node], trail: list[str]) -> list[str]:
    if table in trail:
        return [*trail[trail.index(table):], table]
    for dep in by_table[table].depends:
        found = _cycle(dep, by_table, [*trail, table])
        if found:
            return found
    return []


def parse_graph(text: str) -> Graph:
    """The graph in ``text`` (build.yaml's format), checked; GraphError says what is wrong."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GraphError(f"cartfhir/{GRAPH_FILE} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        raise GraphError(f"cartfhir/{GRAPH_FILE} needs a 'stages' mapping")
    stages = list(data["stages"])
    if stages != [s for s in STAGES if s in stages] or set(stages) - set(STAGES):
        raise GraphError(f"cartfhir/{GRAPH_FILE}: stages must be some of "
                         f"{', '.join(STAGES)}, in that order; found {', '.join(stages)}")
    nodes = [_entry(stage, i, entry) for stage in stages
             for i, entry in enumerate(data["stages"][stage] or [])]
    seen: set[str] = set()
    for node in nodes:
        if node.table in seen:
            raise GraphError(f"cartfhir/{GRAPH_FILE}: {node.table} is listed twice")
        seen.add(node.table)
    _check_files(nodes)
    nodes = [_derive(n, seen) for n in nodes]
    _check_order(nodes)
    macros = data.get("macros")
    if macros is not None:
        macros = _inside(macros, f"cartfhir/{GRAPH_FILE}: macros")
    if macros is not None and not _package().joinpath(macros).is_file():
        raise GraphError(f"cartfhir/{GRAPH_FILE}: macros file cartfhir/{macros} does not exist")
    return Graph(nodes=tuple(nodes), macros=macros)


@cache
def load_graph() -> Graph:
    """The package's build graph (read and checked once per process)."""
    return parse_graph(read_text(GRAPH_FILE))


def builder_function(node: Node) -> Callable[[duckdb.DuckDBPyConnection, BuildContext], int]:
    """Import a builder entry's 'module:function'."""
    module, function = (node.builder or "").split(":", 1)
    try:
        found = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as exc:
        raise GraphError(f"cartfhir/{GRAPH_FILE}: {node.table}: builder {node.builder} "
                         f"cannot be imported ({exc})") from None
    if not callable(found):
        raise GraphError(f"cartfhir/{GRAPH_FILE}: {node.table}: {node.builder} is not a "
                         "function")
    return found


def create_macros(con: duckdb.DuckDBPyConnection, graph: Graph | None = None) -> None:
    """Define the macros the models share (build.yaml's ``macros``)."""
    graph = graph or load_graph()
    if graph.macros:
        con.execute(read_text(graph.macros))


def build_node(con: duckdb.DuckDBPyConnection, node: Node,
               context: BuildContext | None = None) -> int:
    """Make ``node``'s table; return its rows (a builder's own count for a builder).

    A builder that makes several tables (one step of ``Graph.steps``) makes them all.
    """
    context = context or BuildContext()
    log.info("building %s", node.table, extra={"table": node.table})
    if node.kind == "builder":
        return int(builder_function(node)(con, context))
    con.execute(f'CREATE SCHEMA IF NOT EXISTS "{node.schema}"')
    if node.kind == "ddl":
        con.execute(read_text(node.path))
    elif node.kind == "view":
        from cartfhir.transform.views import materialize, require_raw  # the view compiler

        require_raw(con)
        materialize(con, json.loads(read_text(node.path)), quoted(node.table))
    else:
        try:
            con.execute(f"CREATE OR REPLACE TABLE {quoted(node.table)} AS\n"
                        f"{read_text(node.path)}")
        except duckdb.Error as exc:
            raise TransformError(f"model {node.table} ({node.source}) failed: {exc}") from None
    return con.execute(f"SELECT count(*) FROM {quoted(node.table)}").fetchone()[0]


__all__ = ["STAGES", "BuildContext", "Graph", "Node", "build_node", "create_macros",
           "load_graph", "parse_graph", "sql_tables"]
