"""Compile a ViewDefinition into one DuckDB SELECT built from lateral joins.

``forEach``, ``forEachOrNull`` and ``repeat`` become ``CROSS JOIN LATERAL``
unnests (so sibling selects give the spec's cross product), ``unionAll`` a
lateral ``UNION ALL``; columns are carried as JSON (one value, or a ``jv``)
or ``JSON[]`` and cast to their declared type only in the outermost SELECT.
A column over one primitive FHIR allows once (``compile.PathCompiler.typed_member``)
is carried as its text instead, which needs no check (``_text_sql``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from cartfhir.transform.sof import fhirpath as fp
from cartfhir.transform.sof.compile import (
    BOOL,
    COLL,
    INTEGER,
    ITEM,
    JV,
    NAME_RE,
    NUMERIC,
    TEXT,
    Fields,
    Frag,
    Names,
    PathCompiler,
    Scope,
    array_items,
    as_list,
    present_items,
)
from cartfhir.transform.sof.dialect import DIALECTS, DuckDB
from cartfhir.transform.sof.errors import ViewDefinitionError
from cartfhir.transform.sof.types import TypeInference, constant_type, resource_types

# FHIR column types and the DuckDB type each is returned as. Temporal types stay
# text: FHIR allows partial dates ("1970-06") and offsets DuckDB types would lose.
DUCKDB_TYPES: dict[str, str] = {
    "boolean": "BOOLEAN",
    "integer": "INTEGER", "positiveInt": "INTEGER", "unsignedInt": "INTEGER",
    "integer64": "BIGINT",
    "decimal": "DOUBLE",
    **{t: "VARCHAR" for t in (
        "string", "code", "id", "uri", "url", "canonical", "oid", "uuid", "markdown",
        "base64Binary", "xhtml", "date", "dateTime", "instant", "time")},
}
# The same on Spark; JSON values are returned as their JSON text.
SPARK_TYPES: dict[str, str] = {"JSON": "STRING", "VARCHAR": "STRING", "INTEGER": "INT",
                               "BIGINT": "BIGINT", "DOUBLE": "DOUBLE", "BOOLEAN": "BOOLEAN"}


def spark_type(duckdb_type: str) -> str:
    """The Spark SQL type of a column returned as ``duckdb_type`` on DuckDB."""
    if duckdb_type.endswith("[]"):
        return f"ARRAY<{SPARK_TYPES[duckdb_type[:-2]]}>"
    return SPARK_TYPES[duckdb_type]


@dataclass(frozen=True)
class ViewColumn:
    """One output column: its name, FHIR type, collection flag and DuckDB type."""

    name: str
    type: str | None
    collection: bool
    duckdb_type: str
    description: str | None = None

    @property
    def spark_type(self) -> str:
        """The column's Spark SQL type (JSON columns are STRING JSON text)."""
        return spark_type(self.duckdb_type)


@dataclass
class _Col:
    column: ViewColumn
    sql: str  # JSON (kind item or jv) or JSON[] (kind coll) expression
    kind: str = COLL
    declared: bool = False  # its type was given by the view (``type``), not inferred
    # For kind ``text``: the value as JSON (sql, kind), for a unionAll to carry.
    json: tuple[str, str] | None = None


@dataclass
class _Join:
    """One lateral join: an unnest of ``sql`` (forEach...) or a unionAll of ``branches``."""

    kind: str  # forEach, forEachOrNull, repeat or unionAll
    alias: str
    sql: str = ""
    branches: list[_Part] = field(default_factory=list)


@dataclass
class _Part:
    """The lateral joins and the columns that one select node adds to the query."""

    joins: list[_Join] = field(default_factory=list)
    cols: list[_Col] = field(default_factory=list)


_ITERATIONS = ("forEach", "forEachOrNull", "repeat")
_PASSTHROUGH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _constant_sql(d: DuckDB, constant: Any) -> tuple[str, str]:
    """A view constant as (name, JSON SQL literal); exactly one value[x] is required."""
    if not isinstance(constant, dict) or not isinstance(constant.get("name"), str):
        raise ViewDefinitionError(f"constant {constant!r} needs a 'name'")
    values = [k for k in constant if k.startswith("value")]
    if len(values) != 1:
        raise ViewDefinitionError(
            f"constant {constant['name']!r} needs exactly one value[x] (e.g. valueString), "
            f"found {values or 'none'}"
        )
    return constant["name"], d.json_lit(json.dumps(constant[values[0]]))


class ViewCompiler:
    """Builds the one SELECT for a ViewDefinition; see ``compile_view`` for the contract."""

    def __init__(self, view: Any, *, repeat_depth: int, dialect: str = "duckdb") -> None:
        if dialect not in DIALECTS:
            raise ViewDefinitionError(
                f"dialect must be one of {sorted(DIALECTS)}, not {dialect!r}")
        self.d = DIALECTS[dialect]
        if not isinstance(view, dict):
            raise ViewDefinitionError("a ViewDefinition must be a JSON object")
        resource = view.get("resource")
        if not isinstance(resource, str) or not NAME_RE.match(resource):
            raise ViewDefinitionError(
                "the ViewDefinition needs 'resource', a FHIR resource type such as 'Patient'"
            )
        if resource not in resource_types():  # else: no row ever matches, silently
            raise ViewDefinitionError(
                f"the ViewDefinition's resource {resource!r} is not a FHIR R4B resource type; "
                "name one such as 'Patient' or 'Observation' (case matters)")
        selects = view.get("select")
        if not isinstance(selects, list) or not selects:
            raise ViewDefinitionError("the ViewDefinition needs a non-empty 'select' list")
        if not isinstance(repeat_depth, int) or repeat_depth < 1:
            raise ViewDefinitionError(
                f"repeat_depth must be a positive integer, got {repeat_depth!r}")
        self.view = view
        self.resource_type = resource
        self.repeat_depth = repeat_depth
        self.names = Names()
        constants = dict(_constant_sql(self.d, c) for c in view.get("constant") or [])
        self.paths = PathCompiler(self.names, constants, resource, self.d)
        self.types = TypeInference(resource, {
            c["name"]: t for c in view.get("constant") or [] if (t := constant_type(c))})
        self.paths.types = self.types
        if self.d.name == "spark":
            self.paths.raw_text = "_t._raw"

    def build(self, source: str, passthrough: tuple[str, ...]) -> tuple[str, list[ViewColumn]]:
        """The SELECT over ``source`` and its view columns (passthrough columns go first).

        Shape: resources of the view's type that pass every ``where``, with
        the top-level elements the selects read parsed once (one
        ``json_extract`` call) into columns ``_x1``, ``_x2``... as ``_t``;
        lateral joins for the selects;
        internal columns (``_c0``...); and an outer SELECT that casts each to
        its declared type.
        """
        for name in passthrough:
            if not _PASSTHROUGH_RE.match(name) or name in ("resource", "resource_type"):
                raise ViewDefinitionError(
                    f"passthrough column {name!r} is not a usable column name")
        d = self.d
        spark = d.name == "spark"
        # ``where`` is a plain filter on the scan (so it runs before anything
        # else is parsed); the elements it reads are parsed once, into ``_w``.
        where_fields = Fields(d, "_w", columns=spark)
        where_root = Frag("_src.resource", ITEM, fields=where_fields)
        where = self.where_sql(Scope(where_root, "0", where_root, at_root=True))
        if where and where_fields.names and not spark:
            where = [f"list_transform([{where_fields.extract_sql('_src.resource')}], "
                     f"lambda _w: {' AND '.join(where)})[1]"]
        fields = Fields(d, "_t._x", columns=True)
        root = Frag("_t.resource", ITEM, fields=fields)
        part = self.body(Scope(root, "0", root, at_root=True, fhir_type=self.resource_type))
        columns = [c.column for c in part.cols]
        clash = set(passthrough) & {c.name for c in columns}
        if clash:
            raise ViewDefinitionError(
                f"view columns {sorted(clash)} clash with passthrough columns")
        inner_cols = ", ".join([*(f"_t.{d.quote(p)}" for p in passthrough),
                                *(f"{c.sql} AS _c{i}" for i, c in enumerate(part.cols))])
        outer_cols = ", ".join([*(d.quote(p) for p in passthrough),
                                *(f"{output_sql(c.column, f'_c{i}', c.kind, d=d)} "
                                  f"AS {d.quote(c.column.name)}"
                                  for i, c in enumerate(part.cols))])
        rendered = [self.join_sql(j) for j in part.joins]
        joins = "".join(f"\n  {j}" for j in rendered)
        used = " ".join([*(c.sql for c in part.cols), *rendered])
        numbers = fields.used(used)  # the elements read: only these are extracted
        if spark:
            table = self.spark_table(source, passthrough, where, where_fields, fields, numbers)
            sql = (f"SELECT {outer_cols}\nFROM (\n  SELECT {inner_cols}\n"
                   f"  FROM ({table}) AS _t{joins}\n) AS _v")
            return sql, columns
        # The whole resource is carried only when a path needs it as a value
        # (``$this`` or ``%resource`` on their own, ``where()`` on the resource...).
        carried = [d.quote(p) for p in passthrough]
        if "_t.resource" in used:
            carried.append("resource")
        prefilter = self.prefilter_sql("_src.resource")
        filters = " AND ".join([f"_src.resource_type = {d.str(self.resource_type)}",
                                *prefilter, *where])
        extract = fields.extract_sql("_src.resource", numbers)
        if extract:
            # Parsed once as a list, then spread into one column per element:
            # a LIST column correlated into the lateral joins would make DuckDB
            # number the rows single-threaded.
            rows = ", ".join([*(f"_src.{c}" for c in carried), f"{extract} AS _xs"])
            spread = [f"_xs[{j}] AS _x{i}" for j, i in enumerate(numbers, 1)]
            table = (f"SELECT {', '.join([*carried, *spread])} "
                     f"FROM (SELECT {rows} FROM {source} AS _src WHERE {filters})")
        else:
            rows = ", ".join(f"_src.{c}" for c in carried) or "1 AS _one"
            table = f"SELECT {rows} FROM {source} AS _src WHERE {filters}"
        sql = (f"SELECT {outer_cols}\nFROM (\n  SELECT {inner_cols}\n"
               f"  FROM ({table}) AS _t{joins}\n) AS _v")
        return sql, columns

    def spark_table(self, source: str, passthrough: tuple[str, ...], where: list[str],
                    where_fields: Fields, fields: Fields, numbers: list[int]) -> str:
        """Spark's ``_t``: each resource parsed once (``parse_json``) into a VARIANT,
        filtered by ``where``, with the elements read (``numbers``) as ``_x1``, ``_x2``..."""
        d = self.d
        carried = [d.quote(p) for p in passthrough]
        parsed = ", ".join([*(f"_src.{c}" for c in carried),
                            "parse_json(_src.resource) AS resource", "_src.resource AS _raw"])
        filters = " AND ".join([f"_src.resource_type = {d.str(self.resource_type)}",
                                *self.prefilter_sql("_src.resource")])
        scan = f"SELECT {parsed} FROM {source} AS _src WHERE {filters}"
        if where_fields.names:
            reads = ", ".join(f"{d.at_path('_src.resource', n)} AS _w{i}"
                              for i, n in enumerate(where_fields.names, 1))
            scan = f"SELECT _src.*, {reads} FROM ({scan}) AS _src"
        spread = [f"{d.at_path('_src.resource', fields.names[i - 1])} AS _x{i}"
                  for i in numbers]
        cols = ", ".join([*(f"_src.{c}" for c in carried), "_src.resource", "_src._raw",
                          *spread])
        filters = f" WHERE {' AND '.join(where)}" if where else ""
        return f"SELECT {cols} FROM ({scan}) AS _src{filters}"

    def join_sql(self, join: _Join) -> str:
        """One lateral join as SQL text (DuckDB ``CROSS JOIN LATERAL``, Spark ``LATERAL VIEW``)."""
        d = self.d
        if d.name == "spark":
            if join.kind == "unionAll":
                rows = d.flatten(d.lst(*(self.spark_rows(b) for b in join.branches)))
                width = len(join.branches[0].cols) or 1
                names = ", ".join(f"_k{i}" for i in range(width)) if join.branches[0].cols \
                    else "_k"
                del width
                return f"LATERAL VIEW inline({rows}) {join.alias} AS {names}"
            items = self.spark_items(join)
            return (f"LATERAL VIEW posexplode({items}) {join.alias} "
                    f"AS {join.alias}_i, {join.alias}_e")
        if join.kind == "unionAll":
            queries = []
            for branch in join.branches:
                cols = ", ".join(f"{_as_coll(c, d)} AS _k{i}"
                                 for i, c in enumerate(branch.cols)) or "1 AS _k"
                inner = " ".join(self.join_sql(j) for j in branch.joins)
                queries.append(f"SELECT {cols} FROM (SELECT 1) AS _one {inner}")
            return f"CROSS JOIN LATERAL ({' UNION ALL '.join(queries)}) AS {join.alias}"
        items = ("CASE WHEN len(_c) = 0 THEN [NULL::JSON] ELSE _c END"
                 if join.kind == "forEachOrNull" else "_c")
        return (f"CROSS JOIN LATERAL (SELECT unnest(_items) AS _e, unnest(range(len(_items))) "
                f"AS _i FROM (SELECT {items} AS _items FROM (SELECT {join.sql} AS _c))) "
                f"AS {join.alias}")

    def spark_items(self, join: _Join) -> str:
        """The list a Spark forEach/forEachOrNull/repeat join unnests."""
        d = self.d
        if join.kind != "forEachOrNull":
            return join.sql
        return d.let(join.sql, "_c", f"CASE WHEN size(_c) = 0 THEN array({d.json_null}) "
                                     "ELSE _c END")

    def spark_rows(self, branch: _Part) -> str:
        """A unionAll branch as an array of row structs (its joins become nested lambdas,
        whose variables carry the names the lateral views' columns would have)."""
        d = self.d
        fields = ", ".join(f"'_k{i}', {_as_coll(c, d)}" for i, c in enumerate(branch.cols))
        rows = d.lst(f"named_struct({fields or chr(39) + '_k' + chr(39) + ', 1'})")
        for join in reversed(branch.joins):
            if join.kind == "unionAll":
                union = d.flatten(d.lst(*(self.spark_rows(b) for b in join.branches)))
                rows = d.flatten(d.transform(union, join.alias, rows))
            else:
                rows = d.flatten(
                    f"transform({self.spark_items(join)}, ({join.alias}_e, {join.alias}_i) "
                    f"-> {rows})")
        return rows

    def prefilter_sql(self, text: str) -> list[str]:
        """Cheap tests on the resource's JSON ``text`` that the ``where`` entries imply.

        A ``where`` of the form ``a.b.exists()`` is true only if the resource has
        the keys ``a`` and ``b``, so rows whose text cannot hold them
        (``Dialect.may_hold_key``) are skipped before anything is parsed. The test
        is only a necessary condition: the real filter still decides every row.
        """
        if not self.d.key_prefilter:
            return []
        keys: list[str] = []
        for entry in self.view.get("where") or []:
            for key in exists_keys(fp.parse(entry["path"]), self.resource_type):
                if key not in keys:
                    keys.append(key)
        return [self.d.may_hold_key(text, k) for k in keys]

    def where_sql(self, scope: Scope) -> list[str]:
        """One strict boolean condition per ``where`` entry, over the resource."""
        conds = []
        for entry in self.view.get("where") or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                raise ViewDefinitionError(f"where entry {entry!r} needs a 'path' string")
            cond = self.paths.compile_bool(entry["path"], scope, strict=True)
            conds.append(f"coalesce({cond}, false)")
        return conds

    def body(self, scope: Scope) -> _Part:
        part = self.select({"select": self.view["select"]}, scope)
        seen: set[str] = set()
        for col in part.cols:
            if col.column.name in seen:
                raise ViewDefinitionError(
                    f"column name {col.column.name!r} is used twice; names must be unique"
                )
            seen.add(col.column.name)
        return part

    def select(self, node: Any, scope: Scope) -> _Part:
        if not isinstance(node, dict):
            raise ViewDefinitionError(f"a select must be an object, got {node!r}")
        part = _Part()
        iterations = [k for k in _ITERATIONS if k in node]
        if len(iterations) > 1:
            raise ViewDefinitionError(
                f"a select may set only one of forEach, forEachOrNull and repeat, got {iterations}"
            )
        if iterations:
            scope = self.iterate(iterations[0], node[iterations[0]], scope, part)
        for column in node.get("column") or []:
            part.cols.append(self.column(column, scope))
        for child in node.get("select") or []:
            sub = self.select(child, scope)
            part.joins += sub.joins
            part.cols += sub.cols
        if "unionAll" in node:
            self.union_all(node["unionAll"], scope, part)
        return part

    def iterate(self, kind: str, spec: Any, scope: Scope, part: _Part) -> Scope:
        """Add the lateral unnest for forEach/forEachOrNull/repeat; return the inner scope."""
        if kind == "repeat":
            if not (isinstance(spec, list) and spec and all(isinstance(p, str) for p in spec)):
                raise ViewDefinitionError(
                    f"repeat must be a non-empty list of FHIRPath strings, got {spec!r}")
            coll = self.repeat(spec, scope.focus.sql, scope, self.repeat_depth)
            fhir_type = self.repeat_type(spec, scope)
        else:
            if not isinstance(spec, str):
                raise ViewDefinitionError(f"{kind} must be a FHIRPath string, got {spec!r}")
            coll = self.paths.coll(self.paths.compile(spec, scope))
            fhir_type = self.types.infer(spec, scope.fhir_type, at_root=scope.at_root)
        alias = self.names.fresh("_f")
        part.joins.append(_Join(kind, alias, coll))
        sep = "" if self.d.name == "spark" else "."  # Spark: names usable as lambda vars
        return Scope(Frag(f"{alias}{sep}_e", ITEM), f"{alias}{sep}_i", scope.resource,
                     fhir_type=fhir_type)

    def repeat_type(self, paths: list[str], scope: Scope) -> str | None:
        """The items' type when every path leads from the focus to one type and back to it."""
        first = {self.types.infer(p, scope.fhir_type, at_root=scope.at_root) for p in paths}
        if len(first) != 1 or None in first:
            return None
        (item,) = first
        again = {self.types.infer(p, item) for p in paths}
        return item if again == {item} else None

    def repeat(self, paths: list[str], item_sql: str, scope: Scope, depth: int) -> str:
        """Depth-first, pre-order list of everything reachable through ``paths``.

        DuckDB lambdas cannot recurse, so the recursion is unrolled ``depth``
        levels; deeper data stops the query with an error instead of losing rows.
        """
        d = self.d
        inner = Scope(Frag(item_sql, ITEM), scope.row_index, scope.resource)
        children = [self.paths.coll(self.paths.compile(p, inner)) for p in paths]
        kids = children[0] if len(children) == 1 else d.flatten(d.lst(*children))
        if depth == 0:
            msg = d.error(f"repeat {paths!r} nests deeper than {self.repeat_depth} levels; "
                          "raise repeat_depth")
            return f"CASE WHEN {d.len(kids)} > 0 THEN {msg} ELSE {d.empty} END"
        var = self.names.fresh("_r")
        below = self.repeat(paths, var, scope, depth - 1)
        return d.flatten(d.transform(kids, var, d.concat(d.lst(var), below)))

    def column(self, column: Any, scope: Scope) -> _Col:
        if not isinstance(column, dict):
            raise ViewDefinitionError(f"a column must be an object, got {column!r}")
        name, path = column.get("name"), column.get("path")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ViewDefinitionError(
                f"column name {name!r} must start with a letter and hold only letters, "
                "digits and '_'"
            )
        if not isinstance(path, str):
            raise ViewDefinitionError(f"column {name!r} needs a FHIRPath 'path' string")
        frag = self.paths.compile(path, scope)
        fhir_type = column.get("type")
        declared = fhir_type is not None
        if fhir_type is None and frag.kind == BOOL:
            fhir_type = "boolean"
        elif fhir_type is None and column.get("collection") is not True:
            # As other SQL-on-FHIR engines do: the element's type from the resource's
            # structure; a complex type or an unknown one leaves the column JSON.
            fhir_type = self.types.infer(path, scope.fhir_type, at_root=scope.at_root)
        collection = column.get("collection") is True
        duck = DUCKDB_TYPES.get(fhir_type or "", "JSON")
        view_col = ViewColumn(name, fhir_type, collection,
                              f"{duck}[]" if collection else duck, column.get("description"))
        if frag.kind in (ITEM, JV):
            text = _text_sql(frag, duck) if not collection else None
            if text is not None:
                return _Col(view_col, text, TEXT, declared, (frag.sql, frag.kind))
            return _Col(view_col, frag.sql, frag.kind, declared)
        if frag.kind == BOOL:
            return _Col(view_col, self.paths.item(frag), ITEM, declared)
        return _Col(view_col, frag.sql, COLL, declared)

    def union_all(self, branches: Any, scope: Scope, part: _Part) -> None:
        if not isinstance(branches, list) or not branches:
            raise ViewDefinitionError("unionAll must be a non-empty list of selects")
        parts = [self.select(b, scope) for b in branches]
        names = [c.column.name for c in parts[0].cols]
        for other in parts[1:]:
            other_names = [c.column.name for c in other.cols]
            if other_names != names:
                raise ViewDefinitionError(
                    f"unionAll branches must have the same columns in the same order: "
                    f"{names} vs {other_names}"
                )
        alias = self.names.fresh("_u")
        part.joins.append(_Join("unionAll", alias, branches=parts))
        for i in range(len(parts[0].cols)):
            part.cols.append(_union_column([p.cols[i] for p in parts], f"{alias}._k{i}"))


def exists_keys(node: fp.Node, resource_type: str) -> list[str]:
    """The element names of ``node`` when it is ``a.b.exists()`` (a plain element
    path from the resource, with no argument), else none."""
    if not (isinstance(node, fp.Call) and node.name == "exists" and not node.args):
        return []
    names: list[str] = []
    step = node.base
    while isinstance(step, fp.Member):
        names.append(step.name)
        step = step.base
    if not isinstance(step, fp.Identifier):
        return []
    if step.name != resource_type:  # ``Observation.component`` names the resource first
        names.append(step.name)
    return [n for n in reversed(names) if NAME_RE.match(n)]


def _union_column(branches: list[_Col], sql: str) -> _Col:
    """One unionAll column from its branches: a declared ``type`` wins (every branch's
    values are cast to it), else the type the branches agree on, else JSON.

    A type a branch was only inferred to have yields to one the view declares, so a
    ``type: string`` column stays text whatever the other branches' paths end on.
    """
    column = branches[0].column
    declared = {c.column.type for c in branches if c.declared}
    if len(declared) > 1:
        raise ViewDefinitionError(
            f"unionAll column {column.name!r} is declared with different types in its "
            f"branches ({', '.join(sorted(map(str, declared)))}); declare one type")
    if declared:
        fhir_type = declared.pop()
    elif len({c.column.type for c in branches}) == 1:
        fhir_type = column.type
    else:
        fhir_type = None  # branches inferred to different types meet as JSON
    duck = DUCKDB_TYPES.get(fhir_type or "", "JSON")
    column = ViewColumn(column.name, fhir_type, column.collection,
                        f"{duck}[]" if column.collection else duck, column.description)
    return _Col(column, sql, COLL, any(c.declared for c in branches))


def _as_coll(col: _Col, d: DuckDB) -> str:
    if col.kind == TEXT and col.json is not None:
        col = _Col(col.column, *col.json)
    if col.kind == JV:
        return as_list(d, col.sql)
    if col.kind == ITEM:
        return present_items(d, col.sql)
    return col.sql


def output_sql(col: ViewColumn, internal: str, kind: str = COLL, *,
               d: DuckDB = DIALECTS["duckdb"]) -> str:
    """Turn an internal column (JSON[], a jv, one JSON item or a text) into the declared type."""
    duck = DUCKDB_TYPES.get(col.type or "", "JSON")
    if kind == TEXT:  # a text _text_sql chose: it converts without a check
        return internal if duck == "VARCHAR" else d.try_cast_text(internal, duck)
    if col.collection:
        items = _as_coll(_Col(col, internal, kind), d)
        each = _convert(d, "_z", duck, col.name)
        return items if each == "_z" else d.transform(items, "_z", each)
    if kind == ITEM:
        return _convert(d, internal, duck, col.name)
    many = d.error(f"column {col.name!r} returned several values: "
                   "set collection: true, or narrow the path with first()")
    if kind == JV:
        # An array holds 0, 1 or several items; anything else is one item, or none if null.
        items = array_items(d, internal)
        return (f"CASE WHEN {d.json_type(internal)} = 'ARRAY' THEN CASE WHEN "
                f"{d.len(items)} > 1 THEN {many} ELSE "
                f"{_convert(d, d.at(items, 1), duck, col.name)} END "
                f"WHEN {d.json_type(internal)} = 'NULL' THEN NULL "
                f"ELSE {_convert(d, internal, duck, col.name, nullable=False)} END")
    first = d.at(internal, 1)
    return (f"CASE WHEN {d.len(internal)} > 1 THEN {many} "
            f"ELSE {_convert(d, first, duck, col.name)} END")


# The JSON types that convert to a DuckDB column type without a check.
_CONVERTIBLE: dict[str, str] = {"DOUBLE": NUMERIC, "INTEGER": INTEGER, "BOOLEAN": "('BOOLEAN')"}


def _sql_tuple(kinds: str) -> frozenset[str]:
    """The names in an SQL tuple of JSON types such as ``('BIGINT', 'UBIGINT')``."""
    return frozenset(re.findall(r"'([A-Z]+)'", kinds))


def _text_sql(frag: Frag, duck: str) -> str | None:
    """A column's value as text (NULL when absent) when ``frag`` has one that converts
    to ``duck`` without a check, else None (the column converts ``frag.sql``).

    A primitive's text is what ``_convert`` would give a text column; it converts to
    a number or boolean column when every JSON type the element may have fits that
    column (a decimal to DOUBLE, not a string to DOUBLE), an integer out of range
    reading NULL rather than failing the cast.
    """
    if frag.text is None or duck == "JSON":
        return None
    kinds = frag.typed.kinds if frag.typed is not None else None
    target = _CONVERTIBLE.get(duck)
    if duck != "VARCHAR" and (target is None or kinds is None
                              or not _sql_tuple(kinds) <= _sql_tuple(target)):
        return None
    text, present = frag.text
    return text if present is None else f"CASE WHEN {present} THEN {text} END"


def _convert(d: DuckDB, x: str, duck: str, name: str, *, nullable: bool = True) -> str:
    """One JSON item (NULL for none) as ``duck``; a value of the wrong kind stops the query."""
    bad = d.error(f"column {name!r} holds a value that is not a FHIR {duck} value")
    jx = d.json_type(x)
    if duck == "JSON":
        return d.json_out(x)
    if duck == "VARCHAR" and not nullable:
        return f"CASE WHEN {jx} = 'OBJECT' THEN {bad} ELSE {d.text(x)} END"
    if duck == "BOOLEAN":
        good = f"{jx} = 'BOOLEAN' THEN {d.cast(x, 'BOOLEAN')}"
    elif duck in ("INTEGER", "BIGINT"):
        good = (f"{jx} IN {INTEGER} THEN {d.cast(x, duck)} "
                f"WHEN {jx} = 'VARCHAR' THEN {d.cast_text(d.text(x), duck)}")
    elif duck == "DOUBLE":
        good = f"{jx} IN {NUMERIC} THEN {d.cast(x, 'DOUBLE')}"
    else:
        good = f"{jx} NOT IN ('OBJECT', 'ARRAY') THEN {d.text(x)}"
    return f"CASE WHEN {x} IS NULL THEN NULL WHEN {good} ELSE {bad} END"
