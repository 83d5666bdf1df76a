"""Sidecars: the one YAML description of each table (grain, columns, expectations).

Every entry of ``cartfhir/build.yaml`` has one, beside its SQL, ViewDefinition or DDL file
(``models/cohort/episode.sql`` -> ``models/cohort/episode.yml``) or at the entry's
``doc``. A ViewDefinition gives its own description and columns; every other sidecar
gives both. The format is checked strictly: an unknown key, an unknown type or a grain
column that is not a column raises GraphError naming the file.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cartfhir.errors import GraphError
from cartfhir.graph import Node, load_graph, read_text

# The types sidecars use, and what DuckDB calls them.
_BASE_TYPES = {
    "text": "VARCHAR", "integer": "INTEGER", "bigint": "BIGINT", "ubigint": "UBIGINT",
    "double": "DOUBLE", "boolean": "BOOLEAN", "date": "DATE", "json": "JSON",
    "timestamptz": "TIMESTAMP WITH TIME ZONE",
}
DUCKDB_TYPES = {**_BASE_TYPES, **{f"{k}[]": f"{v}[]" for k, v in _BASE_TYPES.items()}}
TYPE_NAMES = {v: k for k, v in DUCKDB_TYPES.items()}
ColumnType = Literal[tuple(DUCKDB_TYPES)]  # type: ignore[valid-type]
Name = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$")]
TableName = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SidecarColumn(_Strict):
    """One column: its type and meaning, or ``same_as`` another table's column."""

    name: Name
    type: ColumnType | None = None
    description: str | None = None
    same_as: TableName | None = None
    note: str | None = None  # appended in parentheses

    @model_validator(mode="after")
    def _typed(self) -> SidecarColumn:
        if self.same_as is None and self.type is None:
            raise ValueError(f"column {self.name}: give a type (or same_as: schema.table)")
        if self.same_as is not None and self.description is not None:
            raise ValueError(f"column {self.name}: same_as copies the description; give a "
                             "note instead of a description")
        return self


class Rule(_Strict):
    """One expectation: a GX expectation type, its kwargs, how bad a failure is and why."""

    type: Annotated[str, Field(pattern=r"^expect_[a-z_]+$")]
    kwargs: dict[str, Any] = Field(default_factory=dict)
    severity: Literal["error", "warn"]
    why: str | None = None


class Suite(_Strict):
    """The table's expectation suite, named after the table."""

    description: str
    query: str | None = None  # default: SELECT * FROM <table>
    chunk_by: list[Name] = Field(default_factory=list)
    rules: list[Rule]


class Sidecar(_Strict):
    table: TableName
    description: str | None = None
    grain: list[Name]
    optional: str | None = None  # why the table may be absent
    # 'withhold': with analysis.small_cell_k set, the table never leaves the site (its rows
    # are patients or single events, so any count in them can be a small cell).
    small_cells: Literal["withhold"] | None = None
    columns: list[SidecarColumn] = Field(default_factory=list)
    expectations: Suite | None = None

    @model_validator(mode="after")
    def _columns(self) -> Sidecar:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError("a column is listed twice")
        if self.columns and (missing := [g for g in self.grain if g not in names]):
            raise ValueError(f"grain column(s) {', '.join(missing)} are not columns")
        return self


def parse_sidecar(text: str, where: str) -> Sidecar:
    """A sidecar from its YAML text; GraphError names ``where`` and what is wrong."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GraphError(f"{where} is not valid YAML: {exc}") from None
    try:
        return Sidecar.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}"
                             for e in exc.errors())
        raise GraphError(f"{where}: {problems}") from None


def node_sidecar(node: Node) -> Sidecar:
    """The sidecar of one graph entry, checked against the entry."""
    where = f"cartfhir/{node.doc}"
    sidecar = parse_sidecar(read_text(node.doc), where)
    if sidecar.table != node.table:
        raise GraphError(f"{where} describes {sidecar.table}, but cartfhir/build.yaml points "
                         f"{node.table} at it")
    if node.kind == "view":
        if sidecar.description is not None or sidecar.columns:
            raise GraphError(f"{where}: a view's description and columns come from its "
                             f"ViewDefinition (cartfhir/{node.path}); remove them here")
    elif sidecar.description is None or not sidecar.columns:
        raise GraphError(f"{where}: give the table's description and every column")
    return sidecar


@cache
def load_sidecars() -> dict[str, tuple[Node, Sidecar, str]]:
    """Every graph table's sidecar, in build order: (graph entry, sidecar, its path)."""
    return {n.table: (n, node_sidecar(n), n.doc) for n in load_graph().nodes}


def table_columns(table: str) -> list[tuple[str, str]]:
    """(column, DuckDB type) of a non-view table, in order, from its sidecar."""
    node, sidecar, _ = load_sidecars()[table]
    out = []
    for column in sidecar.columns:
        kind = column.type
        if kind is None:
            kind = next((t for n, t in _typed_columns(column.same_as) if n == column.name),
                        None)
        if kind is None:
            raise GraphError(f"cartfhir/{node.doc} ({table}): column {column.name} is "
                             f"same_as {column.same_as}, which has no column {column.name}; "
                             "fix the table name or give the column a type and description")
        out.append((column.name, DUCKDB_TYPES[kind]))
    return out


def _typed_columns(table: str | None) -> list[tuple[str, str]]:
    found = load_sidecars().get(table or "")
    if found is None:
        raise GraphError(f"same_as {table}: no sidecar describes that table")
    return [(n, TYPE_NAMES[t]) for n, t in table_columns(table)]


def table_ddl(table: str) -> str:
    """The column list of CREATE TABLE for ``table``, from its sidecar (quoted names)."""
    return ", ".join(f'"{name}" {kind}' for name, kind in table_columns(table))


__all__ = ["DUCKDB_TYPES", "Rule", "Sidecar", "SidecarColumn", "Suite",
           "load_sidecars", "node_sidecar", "parse_sidecar", "table_columns", "table_ddl"]
