"""The catalog: every table of the build graph as a reader sees it, from its sidecar.

``load_catalog()`` walks ``cartfhir/build.yaml``, reads each table's sidecar (and, for
``flat.*``, its ViewDefinition's description and columns), resolves ``same_as`` columns
and returns the tables by layer (raw, flat, ... ref) and name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache

from cartfhir.catalog.sidecars import TYPE_NAMES, Sidecar, SidecarColumn, load_sidecars
from cartfhir.errors import GraphError
from cartfhir.graph import Node, read_text

LAYERS = ("raw", "flat", "harmonized", "cohort", "qa", "analysis", "meta", "ref")


@dataclass(frozen=True)
class Column:
    name: str
    type: str | None
    description: str


@dataclass(frozen=True)
class Table:
    """One table: ``schema.name``, its grain, what it holds, its columns and where it is made."""

    schema: str
    name: str
    grain: str
    description: str
    columns: list[Column] = field(default_factory=list)
    source: str = ""  # the file or module that makes it
    optional: str | None = None  # why the table may be absent, when it may
    doc: str = ""  # its sidecar
    depends: tuple[str, ...] = ()
    withheld: bool = False  # kept at the site when analysis.small_cell_k is set

    @property
    def full_name(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text[:1].upper() + text[1:]


def view_columns(view: dict) -> list[Column]:
    """A ViewDefinition's columns after the leading ``site`` every flat table has.

    The type is the DuckDB type the SQL-on-FHIR engine returns the column as (its one
    mapping from FHIR types), named as sidecars name types, so the dictionary says what a
    query gets: a FHIR ``date`` is text, since FHIR allows partial dates. The FHIR type
    follows the description.
    """
    from cartfhir.transform.sof import compile_view  # the transform package reads the catalog

    columns = [Column("site", "text", "site id from the config")]
    for column in compile_view(view).columns:
        text = column.description or ""
        if column.type:
            fhir = f"FHIR {column.type}{'[]' if column.collection else ''}"
            text = f"{text} ({fhir})" if text else fhir
        columns.append(Column(column.name, TYPE_NAMES.get(column.duckdb_type,
                                                          column.duckdb_type.lower()), text))
    return columns


def view_description(view: dict) -> str:
    text = view.get("description") or view.get("title") or ""
    return _sentence(re.sub(r"^flat\.[a-z_]+:\s*", "", text))


def _grain(sidecar: Sidecar) -> str:
    return f"({', '.join(sidecar.grain)})"


def _column(column: SidecarColumn, where: str, resolved: dict[str, Table]) -> Column:
    if column.same_as is None:
        text = column.description or ""
        kind = column.type
    else:
        other = resolved.get(column.same_as)
        origin = other.column(column.name) if other is not None else None
        if origin is None:
            raise GraphError(f"{where}: column {column.name} is same_as {column.same_as}, "
                             "which has no such column")
        text, kind = origin.description, column.type or origin.type
    if column.note:
        text = f"{text} ({column.note})" if text else column.note
    return Column(column.name, kind, text)


def _table(node: Node, sidecar: Sidecar, doc: str,
           resolved: dict[str, Table]) -> Table:
    schema, name = sidecar.table.split(".", 1)
    if node.kind == "view":
        view = json.loads(read_text(node.path))
        if view.get("name") != name:
            raise GraphError(f"cartfhir/{node.path}: the ViewDefinition's name is "
                             f"{view.get('name')!r}, not {name!r}")
        description, columns = view_description(view), view_columns(view)
        names = {c.name for c in columns}
        if missing := [g for g in sidecar.grain if g not in names]:
            raise GraphError(f"cartfhir/{doc}: grain column(s) {', '.join(missing)} are not "
                             f"columns of the view cartfhir/{node.path}")
    else:
        description = _sentence(sidecar.description or "")
        columns = [_column(c, f"cartfhir/{doc}", resolved) for c in sidecar.columns]
    return Table(schema, name, _grain(sidecar), description, columns,
                 source=node.source, optional=sidecar.optional, doc=f"cartfhir/{doc}",
                 depends=node.depends, withheld=sidecar.small_cells == "withhold")


def _layer(table: Table) -> tuple[int, str]:
    return (LAYERS.index(table.schema) if table.schema in LAYERS else len(LAYERS), table.name)


@cache
def _catalog() -> tuple[Table, ...]:
    sidecars = load_sidecars()
    resolved: dict[str, Table] = {}
    pending = list(sidecars)
    while pending:  # a same_as column needs its table resolved first
        progress = False
        for table in list(pending):
            node, sidecar, doc = sidecars[table]
            needs = {c.same_as for c in sidecar.columns if c.same_as} - {table}
            if needs <= set(resolved) or not needs & set(pending):
                resolved[table] = _table(node, sidecar, doc, resolved)
                pending.remove(table)
                progress = True
        if not progress:
            raise GraphError(f"same_as columns point at each other in a circle: "
                             f"{', '.join(pending)}")
    return tuple(sorted(resolved.values(), key=_layer))


def load_catalog() -> list[Table]:
    """Every table cartfhir writes, by layer (raw, flat, ... ref) and then by name."""
    return list(_catalog())


def find_table(tables: list[Table], name: str) -> Table | None:
    """A table by 'schema.table', or by 'table' alone when only one schema has it."""
    exact = [t for t in tables if t.full_name == name]
    if exact:
        return exact[0]
    short = [t for t in tables if t.name == name]
    return short[0] if len(short) == 1 else None


__all__ = ["LAYERS", "Column", "Table", "find_table", "load_catalog", "view_columns"]
