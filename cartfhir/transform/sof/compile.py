"""Compile FHIRPath ASTs into DuckDB SQL expressions (set-based, no Python per row).

A FHIRPath collection is a DuckDB ``JSON[]``: path steps flatten with
``list_transform``, ``where`` is ``list_filter``, and so on, so DuckDB evaluates
every path for all resources at once. Rule breaks only visible in the data call
DuckDB's ``error()`` with a message starting with ``ERROR_MARK``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cartfhir.transform.sof import fhirpath as fp
from cartfhir.transform.sof.errors import UnsupportedFhirPath, ViewDefinitionError

ERROR_MARK = "sql-on-fhir: "
EMPTY = "[]::JSON[]"
ITEM, COLL, BOOL = "item", "coll", "bool"
INTEGER = "('BIGINT', 'UBIGINT')"
NUMERIC = "('BIGINT', 'UBIGINT', 'DOUBLE')"
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# A reference's type and id: "Patient/1", ".../fhir/Patient/1/_history/2".
_REFERENCE_RE = r"(?:^|/)([A-Za-z]+)/([A-Za-z0-9.-]{1,64})(?:/_history/[A-Za-z0-9.-]{1,64})?$"
# FHIR primitive types and the JSON types their values have, for ofType() checks.
_STRING = "('VARCHAR')"
PRIMITIVE_JSON_TYPES: dict[str, str] = {
    "boolean": "('BOOLEAN')", "integer": INTEGER, "positiveInt": INTEGER,
    "unsignedInt": INTEGER, "decimal": NUMERIC, "integer64": "('VARCHAR')",
    **{t: _STRING for t in ("string", "code", "id", "uri", "url", "canonical", "oid", "uuid",
                            "markdown", "base64Binary", "xhtml", "date", "dateTime", "instant",
                            "time")},
}



def sql_str(text: str) -> str:
    """Quote text as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def sql_ident(name: str) -> str:
    """Quote a name as a SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def sql_error(message: str) -> str:
    """A SQL expression that aborts the query with a recognisable message."""
    return f"error({sql_str(ERROR_MARK + message)})"


@dataclass(frozen=True)
class Frag:
    """A compiled expression: ``item`` is JSON (NULL = empty), ``coll`` JSON[], ``bool`` BOOLEAN.

    ``present`` marks fragments that are never empty (literals, constants,
    counts), which lets conversions skip their NULL checks.
    """

    sql: str
    kind: str
    present: bool = False


@dataclass(frozen=True)
class Scope:
    """What a path is evaluated against: the focus item, ``%rowIndex`` and the resource."""

    focus: Frag
    row_index: str
    resource: str
    at_root: bool = False


@dataclass
class Names:
    """Hands out unique lambda-variable and alias names for one compiled view."""

    count: int = 0

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"


def as_list(json_sql: str) -> str:
    """A JSON value as a collection: arrays give their items, missing/null gives nothing."""
    return (f"CASE WHEN {json_sql} IS NULL OR json_type({json_sql}) = 'NULL' THEN {EMPTY} "
            f"WHEN json_type({json_sql}) = 'ARRAY' THEN list_filter(({json_sql})::JSON[], "
            f"lambda _z: json_type(_z) <> 'NULL') ELSE [{json_sql}] END")


def json_eq(x: str, y: str) -> str:
    """FHIRPath ``=`` on two JSON items: numbers by value, strings by text."""
    return (f"CASE WHEN json_type({x}) IN {NUMERIC} AND json_type({y}) IN {NUMERIC} "
            f"THEN ({x})::DOUBLE = ({y})::DOUBLE "
            f"WHEN json_type({x}) = 'VARCHAR' AND json_type({y}) = 'VARCHAR' "
            f"THEN (({x}) ->> '$') = (({y}) ->> '$') ELSE ({x})::VARCHAR = ({y})::VARCHAR END")


class PathCompiler:
    """Turns FHIRPath ASTs into SQL fragments over a scope."""

    def __init__(self, names: Names, constants: Mapping[str, str], resource_type: str) -> None:
        self.names = names
        self.constants = constants
        self.resource_type = resource_type
        self.path = ""

    # -- entry points -------------------------------------------------------------------

    def compile(self, path: str, scope: Scope) -> Frag:
        """Parse and compile one path; errors name the path."""
        outer, self.path = self.path, path
        try:
            return self.node(fp.parse(path), scope)
        finally:
            self.path = outer

    def compile_bool(self, path: str, scope: Scope, *, strict: bool) -> str:
        """Compile a path that must give a boolean (view ``where`` entries)."""
        outer, self.path = self.path, path
        try:
            return self.boolean(self.node(fp.parse(path), scope), strict=strict)
        finally:
            self.path = outer

    def unsupported(self, construct: str) -> UnsupportedFhirPath:
        return UnsupportedFhirPath(construct, self.path)

    # -- conversions between fragment kinds ----------------------------------------------

    def let(self, value_sql: str, body: Callable[[str], str]) -> str:
        """Bind a value to a lambda variable so the body can use it many times cheaply."""
        var = self.names.fresh("_p")
        return f"list_transform([{value_sql}], lambda {var}: {body(var)})[1]"

    def coll(self, frag: Frag) -> str:
        if frag.kind == COLL:
            return frag.sql
        value = frag.sql if frag.kind == ITEM else f"to_json({frag.sql})"
        if frag.present:
            return f"[{value}]"
        return f"list_filter([{value}], lambda _z: _z IS NOT NULL)"

    def item(self, frag: Frag) -> str:
        """A singleton as one JSON value (NULL when empty); more than one item is an error."""
        if frag.kind == ITEM:
            return frag.sql
        if frag.kind == BOOL:
            return f"to_json({frag.sql})"
        msg = sql_error(f"expected a single value in {self.path!r}")
        return self.let(frag.sql, lambda c: f"CASE WHEN len({c}) > 1 THEN {msg} ELSE {c}[1] END")

    def boolean(self, frag: Frag, *, strict: bool = False) -> str:
        """FHIRPath singleton evaluation to BOOLEAN (NULL when empty).

        A single non-boolean item counts as true, as FHIRPath says, unless
        ``strict`` (view ``where`` paths must really be boolean).
        """
        if frag.kind == BOOL:
            return frag.sql
        other = (sql_error(f"path {self.path!r} did not return a boolean") if strict
                 else "true")

        def body(x: str) -> str:
            return (f"CASE WHEN {x} IS NULL THEN NULL WHEN json_type({x}) = 'BOOLEAN' "
                    f"THEN ({x})::BOOLEAN ELSE {other} END")

        if frag.kind == ITEM:
            return self.let(frag.sql, body)
        many = sql_error(f"path {self.path!r} returned several values where one boolean "
                         "was expected")
        return self.let(frag.sql, lambda c: (
            f"CASE WHEN len({c}) > 1 THEN {many} ELSE {body(f'{c}[1]')} END"))

    # -- AST dispatch ---------------------------------------------------------------------

    def node(self, node: fp.Node, scope: Scope) -> Frag:
        if isinstance(node, fp.Literal):
            return self.literal(node)
        if isinstance(node, fp.Identifier):
            if scope.at_root and node.name == self.resource_type:
                return scope.focus
            return self.member(scope.focus, node.name)
        if isinstance(node, fp.Variable):
            if node.name != "this":
                raise self.unsupported(f"${node.name}")
            return scope.focus
        if isinstance(node, fp.External):
            return self.external(node.name, scope)
        if isinstance(node, fp.Member):
            return self.member(self.node(node.base, scope), node.name)
        if isinstance(node, fp.Index):
            return self.index(node, scope)
        if isinstance(node, fp.Call):
            return self.call(node, scope)
        if isinstance(node, fp.Binary):
            return self.binary(node, scope)
        return self.unary(node, scope)

    def literal(self, node: fp.Literal) -> Frag:
        if node.kind == "string":
            return Frag(sql_str(json.dumps(node.value)) + "::JSON", ITEM, present=True)
        if node.kind in ("integer", "decimal"):
            return Frag(sql_str(str(node.value)) + "::JSON", ITEM, present=True)
        if node.kind == "boolean":
            return Frag("true" if node.value else "false", BOOL, present=True)
        if node.kind == "empty":
            return Frag(EMPTY, COLL)
        raise self.unsupported(f"{node.kind} literal")

    def external(self, name: str, scope: Scope) -> Frag:
        if name == "rowIndex":
            return Frag(f"to_json({scope.row_index})", ITEM, present=True)
        if name in ("resource", "rootResource"):
            return Frag(scope.resource, ITEM)
        if name in self.constants:
            return Frag(self.constants[name], ITEM, present=True)
        raise ViewDefinitionError(
            f"FHIRPath {self.path!r} uses %{name}, which is not a constant of the view; "
            "add it to the view's 'constant' list"
        )

    def member(self, base: Frag, name: str) -> Frag:
        if not NAME_RE.match(name):
            raise self.unsupported(f"element name {name!r}")
        if base.kind == ITEM:
            return Frag(as_list(f"(({base.sql}) -> {sql_str(name)})"), COLL)
        var = self.names.fresh("_v")
        step = as_list(f"({var} -> {sql_str(name)})")
        return Frag(f"flatten(list_transform({self.coll(base)}, lambda {var}: {step}))", COLL)

    def index(self, node: fp.Index, scope: Scope) -> Frag:
        base = self.coll(self.node(node.base, scope))
        idx = node.index
        if isinstance(idx, fp.Literal) and idx.kind == "integer":
            pos = str(int(str(idx.value)) + 1)
        else:
            pos = f"(({self.item(self.node(idx, scope))})::BIGINT + 1)"
        return Frag(f"coalesce(list_slice({base}, {pos}, {pos}), {EMPTY})", COLL)

    # -- functions ----------------------------------------------------------------------

    def per_item(self, base: Frag, scope: Scope, arg: fp.Node) -> tuple[str, str]:
        """Compile ``arg`` once per item of ``base`` (as in where/select); returns (var, sql)."""
        var = self.names.fresh("_v")
        inner = Scope(Frag(var, ITEM), scope.row_index, scope.resource)
        return var, self.node_sql(arg, inner)

    def node_sql(self, node: fp.Node, scope: Scope) -> str:
        return self.coll(self.node(node, scope))

    def call(self, node: fp.Call, scope: Scope) -> Frag:
        name, args = node.name, node.args
        if name not in _ARITY:
            raise self.unsupported(f"function {name}()")
        arity = _ARITY[name]
        if len(args) not in arity:
            raise ViewDefinitionError(
                f"FHIRPath {self.path!r}: {name}() takes {' or '.join(map(str, arity))} "
                f"argument(s), got {len(args)}"
            )
        if name == "ofType":
            return self.of_type(node, scope)
        handler = _FUNCTIONS[name]
        base = scope.focus if node.base is None else self.node(node.base, scope)
        return handler(self, base, args, scope)

    def of_type(self, node: fp.Call, scope: Scope) -> Frag:
        """``x.ofType(T)``: the choice field ``xT``, plus items of a plain ``x`` that are T.

        Without a FHIR schema a plain element can only be type-checked by its JSON
        type, so that works for primitive T; for a complex T a plain ``x`` that
        is present stops the query rather than being guessed at.
        """
        type_name = self.type_name(node.args[0])
        primitive = PRIMITIVE_JSON_TYPES.get(type_name[0].lower() + type_name[1:])
        base = node.base
        if isinstance(base, fp.Member | fp.Identifier):
            parent = scope.focus if isinstance(base, fp.Identifier) else self.node(base.base, scope)
            choice = self.member(parent, base.name + type_name[0].upper() + type_name[1:])
            plain = self.member(parent, base.name).sql
        elif primitive is not None:
            choice, plain = Frag(EMPTY, COLL), self.node_sql(base or fp.Variable("this"), scope)
        else:
            raise self.unsupported(f"ofType({type_name}) on something other than an element")
        var = self.names.fresh("_v")
        if primitive is not None:
            rest = f"list_filter({plain}, lambda {var}: json_type({var}) IN {primitive})"
        else:
            msg = sql_error(f"ofType({type_name}) in {self.path!r}: the element is not a "
                            "choice element, so its type cannot be checked")
            rest = f"CASE WHEN len({plain}) > 0 THEN {msg} ELSE {EMPTY} END"
        return Frag(f"list_concat({choice.sql}, {rest})", COLL)

    def type_name(self, node: fp.Node) -> str:
        if isinstance(node, fp.Identifier):
            return node.name
        if isinstance(node, fp.Member) and isinstance(node.base, fp.Identifier):
            return node.name  # FHIR.Quantity, System.String
        raise ViewDefinitionError(f"FHIRPath {self.path!r}: expected a type name")

    def string_arg(self, node: fp.Node, what: str) -> str:
        """A function argument that must be a string literal or constant, as SQL text."""
        if isinstance(node, fp.Literal) and node.kind == "string":
            return sql_str(str(node.value))
        if isinstance(node, fp.External) and node.name in self.constants:
            return f"(({self.constants[node.name]}) ->> '$')"
        raise self.unsupported(f"{what} argument that is not a string literal or constant")

    # -- operators ------------------------------------------------------------------------

    def binary(self, node: fp.Binary, scope: Scope) -> Frag:
        op = node.op
        if op in ("and", "or", "xor", "implies"):
            left = self.boolean(self.node(node.left, scope))
            right = self.boolean(self.node(node.right, scope))
            sql = {"and": f"(({left}) AND ({right}))", "or": f"(({left}) OR ({right}))",
                   "xor": f"(({left}) <> ({right}))",
                   "implies": f"((NOT ({left})) OR ({right}))"}[op]
            return Frag(sql, BOOL)
        if op not in _OPERATORS:
            raise self.unsupported(f"operator '{op}'")
        left = self.node_sql(node.left, scope)
        right = self.node_sql(node.right, scope)
        return _OPERATORS[op](self, op, left, right)

    def unary(self, node: fp.Unary, scope: Scope) -> Frag:
        operand = self.node(node.operand, scope)
        if node.op == "+":
            return operand
        bad = sql_error(f"unary minus needs a number in {self.path!r}")
        return Frag(self.let(self.item(operand), lambda x: (
            f"CASE WHEN {x} IS NULL THEN NULL WHEN json_type({x}) IN {INTEGER} "
            f"THEN to_json(-({x})::BIGINT) WHEN json_type({x}) = 'DOUBLE' "
            f"THEN to_json(-({x})::DOUBLE) ELSE {bad} END")), ITEM)

    def pair(self, op: str, left: str, right: str, body: Callable[[str, str], str],
             null: str) -> str:
        """Apply ``body`` to two singletons; empty gives ``null``, several items an error."""
        many = sql_error(f"operator '{op}' needs single values in {self.path!r}")
        return self.let(f"[{left}, {right}]", lambda p: (
            f"CASE WHEN len({p}[1]) = 0 OR len({p}[2]) = 0 THEN {null} "
            f"WHEN len({p}[1]) > 1 OR len({p}[2]) > 1 THEN {many} "
            f"ELSE {body(f'{p}[1][1]', f'{p}[2][1]')} END"))


# -- function handlers: (compiler, base fragment, args, scope) -> fragment ---------------

def _where(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    var = c.names.fresh("_v")
    inner = Scope(Frag(var, ITEM), scope.row_index, scope.resource)
    cond = c.boolean(c.node(args[0], inner))
    return Frag(f"list_filter({c.coll(base)}, lambda {var}: coalesce({cond}, false))", COLL)


def _select(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    var, sql = c.per_item(base, scope, args[0])
    return Frag(f"flatten(list_transform({c.coll(base)}, lambda {var}: {sql}))", COLL)


def _exists(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    if args:
        base = _where(c, base, args, scope)
    if base.kind == ITEM:
        return Frag(f"(({base.sql}) IS NOT NULL)", BOOL)
    return Frag(f"(len({c.coll(base)}) > 0)", BOOL)


def _empty(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    if base.kind == ITEM:
        return Frag(f"(({base.sql}) IS NULL)", BOOL)
    return Frag(f"(len({c.coll(base)}) = 0)", BOOL)


def _all(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    var = c.names.fresh("_v")
    cond = c.boolean(c.node(args[0], Scope(Frag(var, ITEM), scope.row_index, scope.resource)))
    return Frag(f"coalesce(list_bool_and(list_transform({c.coll(base)}, "
                f"lambda {var}: coalesce({cond}, false))), true)", BOOL)


def _first(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    if base.kind == ITEM:
        return base
    return Frag(f"list_slice({c.coll(base)}, 1, 1)", COLL)


def _last(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    if base.kind == ITEM:
        return base
    return Frag(f"list_slice({c.coll(base)}, -1, -1)", COLL)


def _count(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    return Frag(f"to_json(len({c.coll(base)}))", ITEM, present=True)


def _not(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    return Frag(f"(NOT ({c.boolean(base)}))", BOOL)


def _join(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    sep = c.string_arg(args[0], "join()") if args else "''"
    var = c.names.fresh("_v")
    return Frag(f"to_json(array_to_string(list_transform({c.coll(base)}, "
                f"lambda {var}: ({var} ->> '$')), {sep}))", ITEM)


def _extension(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    url = c.string_arg(args[0], "extension()")
    exts = c.member(base, "extension")
    var = c.names.fresh("_v")
    return Frag(f"list_filter({exts.sql}, lambda {var}: ({var} ->> 'url') = {url})", COLL)


def _resource_key(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    return c.member(base, "id")


def _reference_key(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    var = c.names.fresh("_v")
    ref = f"({var} ->> 'reference')"
    pattern = sql_str(_REFERENCE_RE)
    cond = f"regexp_matches({ref}, {pattern})"
    if args:
        cond += f" AND regexp_extract({ref}, {pattern}, 1) = {sql_str(c.type_name(args[0]))}"
    key = f"CASE WHEN {cond} THEN to_json(regexp_extract({ref}, {pattern}, 2)) END"
    return Frag(f"list_filter(list_transform({c.coll(base)}, lambda {var}: {key}), "
                "lambda _z: _z IS NOT NULL)", COLL)


def _iif(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    # Arguments see the input collection as their focus.
    inner = scope if base is scope.focus else Scope(base, scope.row_index, scope.resource)
    cond = c.boolean(c.node(args[0], inner))
    then = c.node_sql(args[1], inner)
    other = c.node_sql(args[2], inner) if len(args) > 2 else EMPTY
    return Frag(f"CASE WHEN {cond} THEN {then} ELSE {other} END", COLL)


_Handler = Callable[[PathCompiler, Frag, Sequence[fp.Node], Scope], Frag]
_FUNCTIONS: dict[str, _Handler] = {
    "where": _where, "select": _select, "exists": _exists, "empty": _empty, "all": _all,
    "first": _first, "last": _last, "count": _count, "not": _not, "join": _join,
    "extension": _extension, "getResourceKey": _resource_key,
    "getReferenceKey": _reference_key, "iif": _iif,
}
_ARITY: dict[str, tuple[int, ...]] = {
    "where": (1,), "select": (1,), "exists": (0, 1), "empty": (0,), "all": (1,),
    "first": (0,), "last": (0,), "count": (0,), "not": (0,), "join": (0, 1),
    "extension": (1,), "getResourceKey": (0,), "getReferenceKey": (0, 1), "iif": (2, 3),
    "ofType": (1,),  # compiled by PathCompiler.of_type: it needs the unevaluated base
}


# -- operator handlers: (compiler, op, left JSON[], right JSON[]) -> fragment -------------

def _equality(c: PathCompiler, op: str, left: str, right: str) -> Frag:
    def body(p: str) -> str:
        a, b = f"{p}[1]", f"{p}[2]"
        return (f"CASE WHEN len({a}) = 0 OR len({b}) = 0 THEN NULL "
                f"WHEN len({a}) <> len({b}) THEN false "
                f"ELSE list_bool_and(list_transform(range(1, len({a}) + 1), "
                f"lambda _zi: {json_eq(a + '[_zi]', b + '[_zi]')})) END")

    sql = c.let(f"[{left}, {right}]", body)
    return Frag(sql if op == "=" else f"(NOT ({sql}))", BOOL)


def _comparison(c: PathCompiler, op: str, left: str, right: str) -> Frag:
    bad = sql_error(f"operator '{op}' cannot compare these values in {c.path!r}")

    def body(x: str, y: str) -> str:
        return (f"CASE WHEN json_type({x}) IN {NUMERIC} AND json_type({y}) IN {NUMERIC} "
                f"THEN ({x})::DOUBLE {op} ({y})::DOUBLE "
                f"WHEN json_type({x}) = 'VARCHAR' AND json_type({y}) = 'VARCHAR' "
                f"THEN ({x} ->> '$') {op} ({y} ->> '$') ELSE {bad} END")

    return Frag(c.pair(op, left, right, body, "NULL"), BOOL)


def _arithmetic(c: PathCompiler, op: str, left: str, right: str) -> Frag:
    bad = sql_error(f"operator '{op}' cannot combine these values in {c.path!r}")

    def body(x: str, y: str) -> str:
        ints = f"json_type({x}) IN {INTEGER} AND json_type({y}) IN {INTEGER}"
        nums = f"json_type({x}) IN {NUMERIC} AND json_type({y}) IN {NUMERIC}"
        xi, yi, xd, yd = f"({x})::BIGINT", f"({y})::BIGINT", f"({x})::DOUBLE", f"({y})::DOUBLE"
        branches = []
        if op in ("+", "-", "*"):
            branches.append(f"WHEN {ints} THEN to_json({xi} {op} {yi})")
            branches.append(f"WHEN {nums} THEN to_json({xd} {op} {yd})")
        elif op == "/":
            branches.append(f"WHEN {nums} THEN to_json({xd} / nullif({yd}, 0))")
        elif op == "div":
            branches.append(f"WHEN {nums} THEN to_json(CAST(trunc({xd} / nullif({yd}, 0)) "
                            "AS BIGINT))")
        elif op == "mod":
            branches.append(f"WHEN {ints} THEN to_json({xi} % nullif({yi}, 0))")
            branches.append(f"WHEN {nums} THEN to_json({xd} % nullif({yd}, 0))")
        if op == "+":
            branches.append(f"WHEN json_type({x}) = 'VARCHAR' AND json_type({y}) = 'VARCHAR' "
                            f"THEN to_json(({x} ->> '$') || ({y} ->> '$'))")
        return f"CASE {' '.join(branches)} ELSE {bad} END"

    result = c.pair(op, left, right, body, "NULL::JSON")
    return Frag(result, ITEM)


def _concat(c: PathCompiler, op: str, left: str, right: str) -> Frag:
    def text(coll: str) -> str:
        return f"coalesce(({c.item(Frag(coll, COLL))}) ->> '$', '')"

    return Frag(f"to_json({text(left)} || {text(right)})", ITEM)


def _membership(c: PathCompiler, op: str, left: str, right: str) -> Frag:
    item, coll = (left, right) if op == "in" else (right, left)

    def body(p: str) -> str:
        x, items = f"{p}[1]", f"{p}[2]"
        many = sql_error(f"operator '{op}' needs a single value in {c.path!r}")
        return (f"CASE WHEN len({x}) = 0 THEN NULL WHEN len({x}) > 1 THEN {many} "
                f"ELSE coalesce(list_bool_or(list_transform({items}, "
                f"lambda _zm: {json_eq(x + '[1]', '_zm')})), false) END")

    return Frag(c.let(f"[{item}, {coll}]", body), BOOL)


def _union(c: PathCompiler, op: str, left: str, right: str) -> Frag:
    var = c.names.fresh("_v")

    def body(p: str) -> str:
        return (f"list_filter({p}, lambda {var}, _zi: NOT list_contains("
                f"list_transform(list_slice({p}, 1, _zi - 1), lambda _z: _z::VARCHAR), "
                f"{var}::VARCHAR))")

    return Frag(c.let(f"list_concat({left}, {right})", body), COLL)


_Operator = Callable[[PathCompiler, str, str, str], Frag]
_OPERATORS: dict[str, _Operator] = {
    "=": _equality, "!=": _equality,
    "<": _comparison, "<=": _comparison, ">": _comparison, ">=": _comparison,
    "+": _arithmetic, "-": _arithmetic, "*": _arithmetic, "/": _arithmetic,
    "div": _arithmetic, "mod": _arithmetic,
    "&": _concat, "in": _membership, "contains": _membership, "|": _union,
}
