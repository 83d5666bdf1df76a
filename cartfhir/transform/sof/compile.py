"""Compile FHIRPath ASTs into DuckDB SQL expressions (set-based, no Python per row).

A FHIRPath collection is a DuckDB ``JSON[]``: path steps flatten with
``list_transform``, ``where`` is ``list_filter``, and so on, so DuckDB evaluates
every path for all resources at once. Rule breaks only visible in the data call
DuckDB's ``error()`` with a message starting with ``ERROR_MARK``.

Element paths (``code.text``, ``value.ofType(Quantity).unit``) are kept as one
JSON value instead (kind ``jv``): one ``->`` with a JSON path per chain, which
reads the common, array-free case with a single parse and falls back to the
list form only where an array is on the way.

FHIR's cardinality (``types.single_element``) removes even that check where it
can: a path from the resource whose every step FHIR allows at most once and
that ends on a primitive (``status``, ``subject.reference``,
``valueQuantity.value``, ``effective.ofType(dateTime)``) is read as one value
straight from the resource's one extraction (see ``PathCompiler.typed_member``).
Landed data is only checked structurally, so such a path may meet a shape FHIR
does not allow; the defined result is empty (SQL NULL), never an error: an array
or a non-object on the way, and at the end anything but the JSON type FHIR JSON
gives the primitive (``PRIMITIVE_JSON_TYPES``: an array, an object, a number where
a string belongs, a string where a number belongs). A complex singleton
(``code``, ``valueQuantity``) likewise counts only as a JSON object. Repeating
elements keep the list handling.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cartfhir.transform.sof import fhirpath as fp
from cartfhir.transform.sof.boundary import boundary_sql
from cartfhir.transform.sof.dialect import ERROR_MARK, DuckDB
from cartfhir.transform.sof.errors import UnsupportedFhirPath, ViewDefinitionError
from cartfhir.transform.sof.types import (
    TypeInference,
    choice_key,
    is_fhir_type,
    single_element,
)

ITEM, COLL, BOOL, JV = "item", "coll", "bool", "jv"
TEXT = "text"  # an output column's text (``Frag.text``), only in ``view``
INTEGER = "('BIGINT', 'UBIGINT')"
NUMERIC = "('BIGINT', 'UBIGINT', 'DOUBLE')"
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# A reference's type and id: "Patient/1", ".../fhir/Patient/1/_history/2".
_REFERENCE_RE = r"(?:^|/)([A-Za-z]+)/([A-Za-z0-9.-]{1,64})(?:/_history/[A-Za-z0-9.-]{1,64})?$"
_ID_RE = "[A-Za-z0-9.-]{1,64}"
# FHIR primitive types and the JSON types their values have, for ofType() checks.
_STRING = "('VARCHAR')"
PRIMITIVE_JSON_TYPES: dict[str, str] = {
    "boolean": "('BOOLEAN')", "integer": INTEGER, "positiveInt": INTEGER,
    "unsignedInt": INTEGER, "decimal": NUMERIC, "integer64": "('VARCHAR')",
    **{t: _STRING for t in ("string", "code", "id", "uri", "url", "canonical", "oid", "uuid",
                            "markdown", "base64Binary", "xhtml", "date", "dateTime", "instant",
                            "time")},
}



# Elements read as arrays by ``PathCompiler.wildcard`` (a guess, checked per row).
_REPEATING = frozenset({
    "address", "basedOn", "category", "coding", "component", "contact", "dosage",
    "extension", "given", "identifier", "interpretation", "line", "name", "note",
    "partOf", "performer", "reasonCode", "reasonReference", "referenceRange", "telecom",
})
_NOT_ARRAY = "['OBJECT', 'VARCHAR', 'BIGINT', 'UBIGINT', 'DOUBLE', 'BOOLEAN']"
_NOT_ARRAY_IN = "('OBJECT', 'VARCHAR', 'BIGINT', 'UBIGINT', 'DOUBLE', 'BOOLEAN')"


__all__ = ["ERROR_MARK"]


@dataclass(frozen=True)
class Frag:
    """A compiled expression: ``item`` is JSON (NULL = empty), ``coll`` JSON[], ``bool`` BOOLEAN.

    ``jv`` is one JSON value standing for a collection as ``as_list`` reads
    it: NULL or JSON null is empty, an array is its non-null items, anything
    else is one item. ``present`` marks fragments that are never empty
    (literals, constants, counts), which lets conversions skip their NULL checks.
    """

    sql: str
    kind: str
    present: bool = False
    # Set on the resource itself: its top-level elements are read from here.
    fields: Fields | None = field(default=None, compare=False)
    # For element paths: (root SQL, element names, whether root is a jv rather than an item).
    chain: tuple[str, tuple[str, ...], bool] | None = field(default=None, compare=False)
    # For chains behind a check (complex ``ofType``): (condition, error() SQL); the
    # chain is read from its root as usual and the check wraps the result.
    guard: tuple[str, str] | None = field(default=None, compare=False)
    # Set on a value read by FHIR cardinality (``PathCompiler.typed_member``).
    typed: Typed | None = field(default=None, compare=False)
    # For a value that is one primitive: (its text, SQL that is true when it is
    # present, or None when the text is NULL exactly when it is absent); an output
    # column reads the text instead of converting ``sql`` (``view.output_sql``).
    text: tuple[str, str | None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Typed:
    """A value FHIR allows once at every step from the resource: where it is read from.

    ``names`` is the element path from the resource and ``fhir_type`` the type it
    ends on; the fragment's SQL is that one value, NULL when the data's shape is
    not the one FHIR allows.
    """

    fields: Fields
    names: tuple[str, ...]
    fhir_type: str

    @property
    def kinds(self) -> str | None:
        """The JSON types (SQL tuple) a primitive's value has; None for a complex type."""
        return PRIMITIVE_JSON_TYPES.get(self.fhir_type)


@dataclass(frozen=True)
class Scope:
    """What a path is evaluated against: the focus item, ``%rowIndex`` and the resource."""

    focus: Frag
    row_index: str
    resource: Frag
    at_root: bool = False
    # The focus's FHIR type when known (for columns without ``type``; see ``types``).
    fhir_type: str | None = None


class Fields:
    """The resource's top-level elements that a view reads, parsed once per resource.

    Every path step on the resource itself reads one of the values that a
    single ``json_extract(resource, ['$.a', '$.b', ...])`` call computes in the
    query's innermost subquery, instead of re-parsing the resource per step:
    ``<prefix>[i]`` of that list, or with ``columns`` the column
    ``<prefix><i>`` (the list spread into columns, see ``ViewCompiler.build``).
    """

    def __init__(self, d: DuckDB, prefix: str, *, columns: bool = False) -> None:
        self.d = d
        self.prefix = prefix
        self.columns = columns
        # Element paths read: a top-level name, or a longer path (a chain's fast read).
        self.names: list[tuple[str, ...]] = []

    def ref(self, *names: str) -> str:
        """SQL for the element at ``names`` (JSON; NULL when absent or not reached)."""
        if names not in self.names:
            self.names.append(names)
        i = self.names.index(names) + 1
        return f"{self.prefix}{i}" if self.columns else f"{self.prefix}[{i}]"

    def used(self, sql: str) -> list[int]:
        """The numbers (1-based) of the paths whose ``ref`` occurs in ``sql``.

        A path is registered when a fragment is built, which may never be written
        out (``code`` under ``code.text``); those need not be extracted. A ref's
        text inside a string literal only adds a needless path.
        """
        tail = r"(\d+)(?!\d)" if self.columns else r"\[(\d+)\]"
        found = {int(n) for n in re.findall(re.escape(self.prefix) + tail, sql)}
        return [i for i in range(1, len(self.names) + 1) if i in found]

    def extract_sql(self, resource_sql: str, numbers: Sequence[int] | None = None) -> str:
        """The one ``json_extract`` call that reads the paths ``numbers`` (default all),
        in that order, or '' for none."""
        if numbers is None:
            numbers = range(1, len(self.names) + 1)
        if not numbers:
            return ""
        paths = ", ".join(self.d.str(self.d.json_path(self.names[i - 1])) for i in numbers)
        return f"json_extract({resource_sql}, [{paths}])"


@dataclass
class Names:
    """Hands out unique lambda-variable and alias names for one compiled view."""

    count: int = 0

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"


def as_list(d: DuckDB, json_sql: str) -> str:
    """A JSON value as a collection: arrays give their items, missing/null gives nothing."""
    # One json_type() (a simple CASE evaluates it once); the JSON[] cast turns
    # JSON nulls into SQL NULLs, so dropping them needs no parsing.
    # (A SQL NULL counts as a JSON null, so the value is written out only three times.)
    return (f"CASE coalesce({d.json_type(json_sql)}, 'NULL') "
            f"WHEN 'ARRAY' THEN {array_items(d, json_sql)} "
            f"WHEN 'NULL' THEN {d.empty} ELSE {d.lst(json_sql)} END")


def array_items(d: DuckDB, json_sql: str) -> str:
    """The non-null items of a JSON array as JSON[]."""
    return d.filter(d.json_list(json_sql), "_z", d.not_null("_z"))


def present_items(d: DuckDB, *items: str) -> str:
    """A list of the given items that are not NULL."""
    return d.filter(d.lst(*items), "_z", d.not_null("_z"))


def jv_nonempty(d: DuckDB, x: str) -> str:
    """BOOLEAN: the jv ``x`` holds at least one item."""
    return (f"CASE coalesce({d.json_type(x)}, 'NULL') "
            f"WHEN 'ARRAY' THEN {d.len(array_items(d, x))} > 0 WHEN 'NULL' THEN false "
            f"ELSE true END")


def jv_first(d: DuckDB, x: str, pos: int = 1) -> str:
    """The first (``pos`` 1) or last (``pos`` -1) item of the jv ``x`` as an item."""
    return (f"CASE {d.json_type(x)} WHEN 'ARRAY' THEN {d.at(array_items(d, x), pos)} "
            f"WHEN 'NULL' THEN NULL ELSE {x} END")


def jv_concat(d: DuckDB, a: str, b: str) -> str:
    return (f"CASE WHEN {b} IS NULL THEN {a} WHEN {a} IS NULL THEN {b} "
            f"ELSE {d.to_json(d.concat(as_list(d, a), as_list(d, b)))} END")


def json_eq(d: DuckDB, x: str, y: str) -> str:
    """FHIRPath ``=`` on two JSON items: numbers by value, strings by text."""
    return (f"CASE WHEN {d.json_type(x)} IN {NUMERIC} AND {d.json_type(y)} IN {NUMERIC} "
            f"THEN {d.cast(x, 'DOUBLE')} = {d.cast(y, 'DOUBLE')} "
            f"WHEN {d.json_type(x)} = 'VARCHAR' AND {d.json_type(y)} = 'VARCHAR' "
            f"THEN {d.text(f'({x})')} = {d.text(f'({y})')} "
            f"ELSE {d.json_text(x)} = {d.json_text(y)} END")


class PathCompiler:
    """Turns FHIRPath ASTs into SQL fragments over a scope."""

    def __init__(self, names: Names, constants: Mapping[str, str], resource_type: str,
                 d: DuckDB) -> None:
        self.d = d
        self.names = names
        self.constants = constants
        self.resource_type = resource_type
        self.path = ""
        # Resource field SQL -> its fields and element name.
        self.field_names: dict[str, tuple[Fields, str]] = {}
        # Types of paths (for lowBoundary/highBoundary) and, on Spark, the resource's
        # JSON text (decimal text keeps its digits there, not in the VARIANT).
        self.types: TypeInference | None = None
        self.raw_text: str | None = None

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
        return self.d.let(value_sql, var, body(var))

    def coll(self, frag: Frag) -> str:
        d = self.d
        if frag.kind == COLL:
            return frag.sql
        if frag.kind == JV:
            return as_list(d, frag.sql)
        value = frag.sql if frag.kind == ITEM else d.to_json(frag.sql)
        if frag.present:
            return d.lst(value)
        return present_items(d, value)

    def item(self, frag: Frag) -> str:
        """A singleton as one JSON value (NULL when empty); more than one item is an error."""
        if frag.kind == ITEM:
            return frag.sql
        d = self.d
        if frag.kind == BOOL:
            return d.to_json(frag.sql)
        msg = d.error(f"expected a single value in {self.path!r}")
        if frag.kind == JV:
            x = frag.sql
            many = self.let(array_items(d, x), lambda c: (
                f"CASE WHEN {d.len(c)} > 1 THEN {msg} ELSE {d.at(c, 1)} END"))
            return (f"CASE WHEN {d.json_type(x)} = 'ARRAY' THEN {many} "
                    f"WHEN {d.json_type(x)} <> 'NULL' THEN {x} END")
        return self.let(frag.sql, lambda c: (
            f"CASE WHEN {d.len(c)} > 1 THEN {msg} ELSE {d.at(c, 1)} END"))

    def boolean(self, frag: Frag, *, strict: bool = False) -> str:
        """FHIRPath singleton evaluation to BOOLEAN (NULL when empty).

        A single non-boolean item counts as true, as FHIRPath says, unless
        ``strict`` (view ``where`` paths must really be boolean).
        """
        if frag.kind == BOOL:
            return frag.sql
        if frag.kind == JV:
            frag = Frag(self.item(frag), ITEM)
        d = self.d
        other = (d.error(f"path {self.path!r} did not return a boolean") if strict
                 else "true")

        def body(x: str) -> str:
            return (f"CASE WHEN {x} IS NULL THEN NULL WHEN {d.json_type(x)} = 'BOOLEAN' "
                    f"THEN {d.cast(x, 'BOOLEAN')} ELSE {other} END")

        if frag.kind == ITEM:
            return self.let(frag.sql, body)
        many = d.error(f"path {self.path!r} returned several values where one boolean "
                       "was expected")
        return self.let(frag.sql, lambda c: (
            f"CASE WHEN {d.len(c)} > 1 THEN {many} ELSE {body(d.at(c, 1))} END"))

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
            return Frag(self.d.json_lit(json.dumps(node.value)), ITEM, present=True)
        if node.kind in ("integer", "decimal"):
            return Frag(self.d.json_lit(str(node.value)), ITEM, present=True)
        if node.kind == "boolean":
            return Frag("true" if node.value else "false", BOOL, present=True)
        if node.kind == "empty":
            return Frag(self.d.empty, COLL)
        raise self.unsupported(f"{node.kind} literal")

    def external(self, name: str, scope: Scope) -> Frag:
        if name == "rowIndex":
            return Frag(self.d.to_json(scope.row_index), ITEM, present=True)
        if name in ("resource", "rootResource"):
            return scope.resource
        if name in self.constants:
            return Frag(self.constants[name], ITEM, present=True)
        raise ViewDefinitionError(
            f"FHIRPath {self.path!r} uses %{name}, which is not a constant of the view; "
            "add it to the view's 'constant' list"
        )

    def member(self, base: Frag, name: str) -> Frag:
        if not NAME_RE.match(name):
            raise self.unsupported(f"element name {name!r}")
        typed = self.typed_member(base, name)
        if typed is not None:
            return typed
        if base.typed is not None:  # a repeating (or unknown) element below a singleton
            base = self.untyped(base.typed)
        if base.fields is not None:
            return self.resource_member(base.fields, name)
        if base.kind == ITEM:
            return self.chain(base.sql, (name,), jv=False)
        if base.kind == JV:
            root, names, jv = base.chain or (base.sql, (), True)
            frag = self.chain(root, (*names, name), jv=jv)
            if base.guard is None:
                return frag
            cond, msg = base.guard
            return Frag(f"CASE WHEN {cond} THEN {msg} ELSE {frag.sql} END", JV,
                        chain=frag.chain, guard=base.guard)
        return self.step(base, name)

    def typed_member(self, base: Frag, name: str) -> Frag | None:
        """``base.name`` as one value when FHIR allows one at every step from the resource.

        The value is read at its whole JSON path by the resource's one extraction
        (a path through an array or a non-object reads NULL), then kept only when
        it has the JSON type FHIR gives it: a primitive's (``Typed.kinds``), or an
        object for a complex type. None when the path is not known to be single.
        """
        parent = self.typed_parent(base)
        fhir_type = single_element(parent.fhir_type, name) if parent else None
        if parent is None or fhir_type is None:
            return None
        typed = Typed(parent.fields, (*parent.names, name), fhir_type)
        ref = typed.fields.ref(*typed.names)
        kinds = typed.kinds or "('OBJECT')"
        return Frag(f"CASE WHEN {self.d.json_type(ref)} IN {kinds} THEN {ref} END", ITEM,
                    typed=typed, text=self.typed_text(typed, ref))

    def typed_text(self, typed: Typed, ref: str) -> tuple[str, str] | None:
        """A primitive's (text, present) for an output column (``Frag.text``); None for a
        complex type. A string's is read off its JSON text (``Dialect.string_text``)."""
        if typed.kinds == _STRING:
            return self.d.string_text(ref)
        if typed.kinds is None:
            return None
        return self.d.text(ref), f"{self.d.json_type(ref)} IN {typed.kinds}"

    def typed_parent(self, base: Frag) -> Typed | None:
        """Where ``base`` is read from, if it is the resource itself or a ``typed`` value."""
        if base.fields is not None and base.kind == ITEM:
            return Typed(base.fields, (), self.resource_type)
        return base.typed

    def untyped(self, typed: Typed) -> Frag:
        """The same path read as a jv with FHIRPath's list handling, for repeating children."""
        top, *rest = typed.names
        frag = self.resource_member(typed.fields, top)
        return self.chain(frag.sql, tuple(rest), jv=True) if rest else frag

    def resource_member(self, fields: Fields, name: str) -> Frag:
        """Top-level element ``name`` as a jv, read by the resource's one extraction."""
        ref = fields.ref(name)
        self.field_names[ref] = (fields, name)
        return Frag(ref, JV, chain=(ref, (), True))

    def step(self, base: Frag, name: str) -> Frag:
        """One path step in list form: the ``name`` children of every item of ``base``."""
        d = self.d
        if base.kind == ITEM:
            return Frag(as_list(d, d.member(f"({base.sql})", name)), COLL)
        var = self.names.fresh("_v")
        step = as_list(d, d.member(var, name))
        return Frag(d.flatten(d.transform(self.coll(base), var, step)), COLL)

    def chain(self, root: str, names: tuple[str, ...], *, jv: bool) -> Frag:
        """``root.n1.n2...`` as a jv: one JSON-path read, exact when no array is on the way.

        The read gives NULL when something on the path is missing, null, not an
        object or an array; only then is the root checked for arrays on the
        way (the root itself too when it is a jv), and only those rows take
        the list form, flattening as FHIRPath does.
        """
        d = self.d
        fast = d.at_path(root, names)
        if jv and names and root in self.field_names:
            # Read by the resource's one json_extract call, not by parsing the root again.
            fields, top = self.field_names[root]
            fast = fields.ref(top, *names)
        prefixes = [d.json_path(names[:k]) for k in range(0 if jv else 1, len(names))]
        if not prefixes:
            return Frag(fast, JV, chain=(root, names, jv))
        if len(prefixes) == 1:
            arrays = f"{d.json_type_at(root, prefixes[0])} = 'ARRAY'"
        else:
            arrays = d.any_array_at(root, prefixes)
        general = Frag(root, JV if jv else ITEM)
        for name in names:
            general = self.step(general, name)
        sql = f"coalesce({fast}, CASE WHEN {arrays} THEN {d.to_json(general.sql)} END)"
        return Frag(sql, JV, chain=(root, names, jv))

    def wildcard(self, frag: Frag) -> tuple[str, str, str] | None:
        """A chain jv read with one wildcard JSON path: (root, path, exactness check).

        Elements that usually repeat in FHIR (``_REPEATING``) are read as
        arrays (``[*]``), the others as objects, so ``category.coding.code``
        becomes ``$[*]."coding"[*]."code"`` on ``category``. The read is exact
        (the flattened collection, plus JSON nulls) when the data has that
        shape: no non-array where ``[*]`` is used and no array where it is
        not (the check is false otherwise, and for a NULL root).
        """
        if frag.kind != JV or frag.chain is None or frag.guard is not None:
            return None
        if not self.d.wildcards:
            return None
        root, names, jv = frag.chain
        if not names and not jv:
            return None
        levels: list[tuple[str, bool]] = []  # (path to the level's values, read as array)
        if jv:
            if root not in self.field_names:
                return None
            name = self.field_names[root][1]
            levels.append(("$", name in _REPEATING))
        path = "$"
        for name in names:
            if levels and levels[-1][1]:
                path += "[*]"
            path += f'."{name}"'
            levels.append((path, name in _REPEATING))
        if levels[-1][1]:
            path += "[*]"
        checks = []
        for i, (at, array) in enumerate(levels):
            # Only an object where [*] reads (or, at the end, anything but an
            # array) and an array where it does not change the result: other
            # values give no items both ways.
            if array and i < len(levels) - 1:
                bad = "'OBJECT'"
            elif array:
                bad = _NOT_ARRAY
            else:
                bad = "'ARRAY'"
            types = f"json_type({root}, {self.d.str(at)})"
            if "[*]" not in at:
                checks.append(f"coalesce({types}, 'NULL') "
                              f"{'NOT IN' if bad == _NOT_ARRAY else '<>'} "
                              f"{_NOT_ARRAY_IN if bad == _NOT_ARRAY else bad}")
            elif bad == _NOT_ARRAY:
                checks.append(f"NOT list_has_any({types}, {bad})")
            else:
                checks.append(f"NOT list_contains({types}, {bad})")
        return root, path, " AND ".join(checks)

    def index(self, node: fp.Index, scope: Scope) -> Frag:
        base = self.coll(self.node(node.base, scope))
        idx = node.index
        if isinstance(idx, fp.Literal) and idx.kind == "integer":
            pos = str(int(str(idx.value)) + 1)
        else:
            pos = f"({self.d.cast(self.item(self.node(idx, scope)), 'BIGINT')} + 1)"
        return Frag(f"coalesce({self.d.slice(base, pos, pos)}, {self.d.empty})", COLL)

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
        if name in ("lowBoundary", "highBoundary"):
            return self.boundary(node, scope)
        handler = _FUNCTIONS[name]
        base = scope.focus if node.base is None else self.node(node.base, scope)
        return handler(self, base, args, scope)

    def boundary(self, node: fp.Call, scope: Scope) -> Frag:
        """``x.lowBoundary([precision])`` / ``highBoundary``: ``boundary.boundary_sql`` over
        the text of ``x``, whose FHIR type (decimal, date, dateTime, time) is read from
        the resource's structure."""
        d = self.d
        base_node = node.base if node.base is not None else fp.Variable("this")
        kind = None
        if self.types is not None:
            kind = self.types.node(base_node, scope.fhir_type, scope.at_root)
        kind = {"instant": "dateTime"}.get(kind or "", kind)
        if kind not in ("decimal", "date", "dateTime", "time"):
            raise self.unsupported(f"{node.name}() on a value whose type is not known to be "
                                   "decimal, date, dateTime or time")
        base = self.node(base_node, scope)
        text = (self.decimal_text(base) if kind == "decimal"
                else d.text(f"({self.item(base)})"))
        precision = None
        if node.args:
            arg = node.args[0]
            if isinstance(arg, fp.Literal) and arg.kind == "integer":
                precision = str(int(str(arg.value)))
            else:
                precision = d.cast(self.item(self.node(arg, scope)), "BIGINT")
        high = node.name == "highBoundary"
        value = self.let(text, lambda v: boundary_sql(kind, v, precision, high))
        parse = (lambda t: f"({t})::JSON") if d.name == "duckdb" else "parse_json({})".format
        return Frag(parse(value) if kind == "decimal" else d.to_json(value), ITEM)

    def decimal_text(self, base: Frag) -> str:
        """A decimal's text as written, so ``1.0`` keeps its precision.

        DuckDB's JSON keeps the text; Spark's VARIANT does not, so there the value is
        read again from the resource's text, which needs a path from the resource.
        """
        if self.d.name == "duckdb":
            return self.d.json_text(self.item(base))
        if self.raw_text is not None and base.typed is not None:
            path = self.d.str(self.d.json_path(base.typed.names))
            # Only where the typed read finds a number (see typed_member).
            return (f"CASE WHEN {base.sql} IS NOT NULL "
                    f"THEN get_json_object({self.raw_text}, {path}) END")
        chain = base.chain
        if self.raw_text is None or chain is None or chain[0] not in self.field_names:
            raise self.unsupported("a decimal lowBoundary()/highBoundary() on Spark below a "
                                   "forEach or a function (its text is read from the resource)")
        top = self.field_names[chain[0]][1]
        path = self.d.json_path([top, *chain[1]])
        return f"get_json_object({self.raw_text}, {self.d.str(path)})"

    def of_type(self, node: fp.Call, scope: Scope) -> Frag:
        """``x.ofType(T)``: the choice field ``xT``, plus items of a plain ``x`` that are T.

        Without a FHIR schema a plain element can only be type-checked by its JSON
        type, so that works for primitive T; for a complex T a plain ``x`` that
        is present stops the query rather than being guessed at.
        """
        type_name = self.type_name(node.args[0])
        arg = node.args[0]
        written = f"{arg.base.name}.{type_name}" if isinstance(arg, fp.Member) else type_name
        if not is_fhir_type(written):  # else: no value is ever of it, an all-null column
            raise ViewDefinitionError(
                f"FHIRPath {self.path!r}: ofType({written}): {written!r} is not a FHIR type "
                "(R4B); name a datatype, primitive or resource, e.g. Quantity, string, "
                "dateTime (case matters)")
        primitive = PRIMITIVE_JSON_TYPES.get(type_name[0].lower() + type_name[1:])
        base = node.base
        if isinstance(base, fp.Member | fp.Identifier):
            parent = scope.focus if isinstance(base, fp.Identifier) else self.node(base.base, scope)
            typed = self.typed_choice(parent, base.name, type_name)
            if typed is not None:
                return typed
            choice = self.member(parent, base.name + type_name[0].upper() + type_name[1:])
            plain_frag = self.member(parent, base.name)
            if choice.kind == JV and plain_frag.kind == JV:
                return self.of_type_jv(choice, plain_frag.sql, type_name, primitive)
            choice = Frag(self.coll(choice), COLL)
            plain = self.coll(plain_frag)
        elif primitive is not None:
            choice, plain = (Frag(self.d.empty, COLL),
                             self.node_sql(base or fp.Variable("this"), scope))
        else:
            raise self.unsupported(f"ofType({type_name}) on something other than an element")
        d = self.d
        var = self.names.fresh("_v")
        if primitive is not None:
            rest = d.filter(plain, var, f"{d.json_type(var)} IN {primitive}")
        else:
            msg = d.error(f"ofType({type_name}) in {self.path!r}: the element is not a "
                          "choice element, so its type cannot be checked")
            rest = f"CASE WHEN {d.len(plain)} > 0 THEN {msg} ELSE {d.empty} END"
        return Frag(d.concat(choice.sql, rest), COLL)

    def typed_choice(self, parent: Frag, name: str, type_name: str) -> Frag | None:
        """``parent.name.ofType(T)`` for a choice element FHIR allows once: its key ``nameT``.

        FHIR JSON writes a choice only under its typed keys, so the bare ``name``
        is not read (a bare key is a shape FHIR does not allow: empty, as the
        module docstring says). None unless ``parent`` is read by cardinality.
        """
        typed = self.typed_parent(parent)
        key = choice_key(typed.fhir_type, name, type_name) if typed else None
        return None if key is None else self.typed_member(parent, key)

    def of_type_jv(self, choice_frag: Frag, plain: str, type_name: str,
                   primitive: str | None) -> Frag:
        """``of_type`` when both the choice element and the plain element are jv."""
        d = self.d
        choice = choice_frag.sql
        if primitive is not None:
            var = self.names.fresh("_v")
            kept = d.filter(array_items(d, plain), var, f"{d.json_type(var)} IN {primitive}")
            rest = (f"CASE WHEN {d.json_type(plain)} IN {primitive} THEN {plain} "
                    f"WHEN {d.json_type(plain)} = 'ARRAY' THEN {d.to_json(kept)} END")
            return Frag(jv_concat(d, choice, rest), JV)
        msg = d.error(f"ofType({type_name}) in {self.path!r}: the element is not a "
                      "choice element, so its type cannot be checked")
        cond = f"{plain} IS NOT NULL AND {jv_nonempty(d, plain)}"
        chain = choice_frag.chain if choice_frag.guard is None else None
        return Frag(f"CASE WHEN {cond} THEN {msg} ELSE {choice} END", JV, chain=chain,
                    guard=(cond, msg) if chain is not None else None)

    def type_name(self, node: fp.Node) -> str:
        if isinstance(node, fp.Identifier):
            return node.name
        if isinstance(node, fp.Member) and isinstance(node.base, fp.Identifier):
            return node.name  # FHIR.Quantity, System.String
        raise ViewDefinitionError(f"FHIRPath {self.path!r}: expected a type name")

    def string_arg(self, node: fp.Node, what: str) -> str:
        """A function argument that must be a string literal or constant, as SQL text."""
        if isinstance(node, fp.Literal) and node.kind == "string":
            return self.d.str(str(node.value))
        if isinstance(node, fp.External) and node.name in self.constants:
            return self.d.text(f"({self.constants[node.name]})")
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
        d = self.d
        bad = d.error(f"unary minus needs a number in {self.path!r}")
        return Frag(self.let(self.item(operand), lambda x: (
            f"CASE WHEN {x} IS NULL THEN NULL WHEN {d.json_type(x)} IN {INTEGER} "
            f"THEN {d.to_json('-' + d.cast(x, 'BIGINT'))} WHEN {d.json_type(x)} = 'DOUBLE' "
            f"THEN {d.to_json('-' + d.cast(x, 'DOUBLE'))} ELSE {bad} END")), ITEM)

    def pair(self, op: str, left: str, right: str, body: Callable[[str, str], str],
             null: str) -> str:
        """Apply ``body`` to two singletons; empty gives ``null``, several items an error."""
        d = self.d
        many = d.error(f"operator '{op}' needs single values in {self.path!r}")

        def cases(p: str) -> str:
            a, b = d.at(p, 1), d.at(p, 2)
            return (f"CASE WHEN {d.len(a)} = 0 OR {d.len(b)} = 0 THEN {null} "
                    f"WHEN {d.len(a)} > 1 OR {d.len(b)} > 1 THEN {many} "
                    f"ELSE {body(d.at(a, 1), d.at(b, 1))} END")

        return self.let(d.lst(left, right), cases)


# -- function handlers: (compiler, base fragment, args, scope) -> fragment ---------------

def _where(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    var = c.names.fresh("_v")
    inner = Scope(Frag(var, ITEM), scope.row_index, scope.resource)
    cond = c.boolean(c.node(args[0], inner))
    return Frag(c.d.filter(c.coll(base), var, f"coalesce({cond}, false)"), COLL)


def _select(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    var, sql = c.per_item(base, scope, args[0])
    return Frag(c.d.flatten(c.d.transform(c.coll(base), var, sql)), COLL)


def _exists(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    if args:
        base = _where(c, base, args, scope)
    if base.kind == ITEM:
        return Frag(f"(({base.sql}) IS NOT NULL)", BOOL)
    if base.kind == JV:
        return Frag(jv_nonempty(c.d, base.sql), BOOL)
    return Frag(f"({c.d.len(c.coll(base))} > 0)", BOOL)


def _empty(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    if base.kind == ITEM:
        return Frag(f"(({base.sql}) IS NULL)", BOOL)
    if base.kind == JV:
        return Frag(f"(NOT {jv_nonempty(c.d, base.sql)})", BOOL)
    return Frag(f"({c.d.len(c.coll(base))} = 0)", BOOL)


def _all(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    var = c.names.fresh("_v")
    cond = c.boolean(c.node(args[0], Scope(Frag(var, ITEM), scope.row_index, scope.resource)))
    return Frag(c.d.all_of(c.coll(base), var, f"coalesce({cond}, false)"), BOOL)


def _first(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    if base.kind == ITEM:
        return base
    if base.kind == JV:
        return Frag(jv_first(c.d, base.sql), ITEM)
    return Frag(c.d.slice(c.coll(base), "1", "1"), COLL)


def _last(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    if base.kind == ITEM:
        return base
    if base.kind == JV:
        return Frag(jv_first(c.d, base.sql, -1), ITEM)
    return Frag(c.d.slice(c.coll(base), "-1", "-1"), COLL)


def _count(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    return Frag(c.d.to_json(c.d.len(c.coll(base))), ITEM, present=True)


def _not(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    return Frag(f"(NOT ({c.boolean(base)}))", BOOL)


def _join(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    d = c.d
    sep = c.string_arg(args[0], "join()") if args else "''"
    var = c.names.fresh("_v")
    wild = c.wildcard(base)
    texts = d.join_text(d.transform(c.coll(base), var, d.text(var)), sep)
    if wild is not None:
        # One wildcard read for rows of the expected shape (JSON nulls read as
        # NULL, which array_to_string skips); a missing root joins nothing.
        root, path, ok = wild
        texts = (f"CASE WHEN {root} IS NULL THEN '' WHEN {ok} THEN array_to_string("
                 f"json_extract_string({root}, {d.str(path)}), {sep}) ELSE {texts} END")
    # A text column takes the joined text as it is, not parsed back from JSON.
    return Frag(d.to_json(texts), ITEM, text=(texts, None))


def _extension(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    url = c.string_arg(args[0], "extension()")
    exts = c.member(base, "extension")
    var = c.names.fresh("_v")
    return Frag(c.d.filter(c.coll(exts), var, f"{c.d.text_member(var, 'url')} = {url}"), COLL)


def _resource_key(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    return c.member(base, "id")


def _reference_key(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    d = c.d
    type_text = c.type_name(args[0]) if args else None
    type_name = d.str(type_text) if type_text is not None else None

    def key(x: str) -> str:
        return key_of(d.text_member(x, "reference"))

    def key_of(ref: str, as_json: bool = True) -> str:
        """The key in the reference text ``ref``: JSON, or with ``as_json`` False its text."""
        to_json = d.to_json if as_json else str
        if type_text is not None and re.fullmatch("[A-Za-z]+", type_text):
            # The type is fixed by the match's start (letters up to a '/'), so a
            # pattern with the type written in finds the same id; '' = no match.
            # The usual "Type/id" needs only a prefix test and a check of the id.
            typed = _REFERENCE_RE.replace("([A-Za-z]+)", type_text, 1)
            prefix = d.str(type_text + "/")
            start = len(type_text) + 2
            plain = (f"{d.starts_with(ref, prefix)} AND "
                     f"{d.full_match(f'substr({ref}, {start})', _ID_RE)}")
            return to_json(f"CASE WHEN {plain} THEN substr({ref}, {start}) "
                           f"ELSE nullif({d.regex_group(ref, typed, 1)}, '') END")
        # One regex run gives both groups ('' for no match; a match has a non-empty id).
        groups = d.regex_groups(ref, _REFERENCE_RE)

        def cond(m: str) -> str:
            if type_name:
                return f"{d.group_of(m, 1)} = {type_name}"
            return f"{d.group_of(m, 2)} <> ''"

        return c.let(groups, lambda m: (
            f"CASE WHEN {cond(m)} THEN {to_json(d.group_of(m, 2))} END"))

    if base.typed is not None and base.typed.fhir_type == "Reference":
        # FHIR allows one reference here: its one text, no list (see typed_member).
        ref = c.member(base, "reference")
        if ref.text is not None:
            text, present = ref.text
            key_text = key_of(text, as_json=False)
            if present is not None:
                key_text = f"CASE WHEN {present} THEN {key_text} END"
            return Frag(d.to_json(key_text), ITEM, text=(key_text, None))
        return Frag(c.let(d.text(f"({ref.sql})"), key_of), ITEM)
    var = c.names.fresh("_v")
    if base.kind == JV:  # one reference (the usual case) needs no list
        many = d.filter(d.transform(array_items(d, base.sql), var, key(var)), "_z",
                        d.not_null("_z"))
        return Frag(f"CASE WHEN {d.json_type(base.sql)} = 'ARRAY' THEN {d.to_json(many)} "
                    f"ELSE {key(base.sql)} END", JV)
    return Frag(d.filter(d.transform(c.coll(base), var, key(var)), "_z", d.not_null("_z")),
                COLL)


def _iif(c: PathCompiler, base: Frag, args: Sequence[fp.Node], scope: Scope) -> Frag:
    # Arguments see the input collection as their focus.
    inner = scope if base is scope.focus else Scope(base, scope.row_index, scope.resource)
    cond = c.boolean(c.node(args[0], inner))
    then = c.node_sql(args[1], inner)
    other = c.node_sql(args[2], inner) if len(args) > 2 else c.d.empty
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
    "lowBoundary": (0, 1), "highBoundary": (0, 1),  # PathCompiler.boundary: needs the type
}


# -- operator handlers: (compiler, op, left JSON[], right JSON[]) -> fragment -------------

def _equality(c: PathCompiler, op: str, left: str, right: str) -> Frag:
    d = c.d

    def body(p: str) -> str:
        a, b = d.at(p, 1), d.at(p, 2)
        same = json_eq(d, d.at(a, "_zi"), d.at(b, "_zi"))
        return (f"CASE WHEN {d.len(a)} = 0 OR {d.len(b)} = 0 THEN NULL "
                f"WHEN {d.len(a)} <> {d.len(b)} THEN false "
                f"ELSE {d.all_pairs(a, b, '_zi', same)} END")

    sql = c.let(d.lst(left, right), body)
    return Frag(sql if op == "=" else f"(NOT ({sql}))", BOOL)


def _comparison(c: PathCompiler, op: str, left: str, right: str) -> Frag:
    d = c.d
    bad = d.error(f"operator '{op}' cannot compare these values in {c.path!r}")

    def body(x: str, y: str) -> str:
        return (f"CASE WHEN {d.json_type(x)} IN {NUMERIC} AND {d.json_type(y)} IN {NUMERIC} "
                f"THEN {d.cast(x, 'DOUBLE')} {op} {d.cast(y, 'DOUBLE')} "
                f"WHEN {d.json_type(x)} = 'VARCHAR' AND {d.json_type(y)} = 'VARCHAR' "
                f"THEN {d.text(x)} {op} {d.text(y)} ELSE {bad} END")

    return Frag(c.pair(op, left, right, body, "NULL"), BOOL)


def _arithmetic(c: PathCompiler, op: str, left: str, right: str) -> Frag:
    d = c.d
    bad = d.error(f"operator '{op}' cannot combine these values in {c.path!r}")

    def body(x: str, y: str) -> str:
        jx, jy = d.json_type(x), d.json_type(y)
        ints = f"{jx} IN {INTEGER} AND {jy} IN {INTEGER}"
        nums = f"{jx} IN {NUMERIC} AND {jy} IN {NUMERIC}"
        xi, yi = d.cast(x, "BIGINT"), d.cast(y, "BIGINT")
        xd, yd = d.cast(x, "DOUBLE"), d.cast(y, "DOUBLE")
        branches = []
        if op in ("+", "-", "*"):
            branches.append(f"WHEN {ints} THEN {d.to_json(f'{xi} {op} {yi}')}")
            branches.append(f"WHEN {nums} THEN {d.to_json(f'{xd} {op} {yd}')}")
        elif op == "/":
            branches.append(f"WHEN {nums} THEN {d.to_json(f'{xd} / nullif({yd}, 0)')}")
        elif op == "div":
            branches.append(f"WHEN {nums} THEN "
                            f"{d.to_json(f'CAST(trunc({xd} / nullif({yd}, 0)) AS BIGINT)')}")
        elif op == "mod":
            branches.append(f"WHEN {ints} THEN {d.to_json(f'{xi} % nullif({yi}, 0)')}")
            branches.append(f"WHEN {nums} THEN {d.to_json(f'{xd} % nullif({yd}, 0)')}")
        if op == "+":
            branches.append(f"WHEN {jx} = 'VARCHAR' AND {jy} = 'VARCHAR' "
                            f"THEN {d.to_json(f'{d.text(x)} || {d.text(y)}')}")
        return f"CASE {' '.join(branches)} ELSE {bad} END"

    result = c.pair(op, left, right, body, d.json_null)
    return Frag(result, ITEM)


def _concat(c: PathCompiler, op: str, left: str, right: str) -> Frag:
    def text(coll: str) -> str:
        value = c.d.text("(" + c.item(Frag(coll, COLL)) + ")")
        if c.d.name == "duckdb":  # the golden DuckDB text has no parentheses here
            value = value[1:-1]
        return f"coalesce({value}, '')"

    return Frag(c.d.to_json(f"{text(left)} || {text(right)}"), ITEM)


def _membership(c: PathCompiler, op: str, left: str, right: str) -> Frag:
    item, coll = (left, right) if op == "in" else (right, left)

    d = c.d

    def body(p: str) -> str:
        x, items = d.at(p, 1), d.at(p, 2)
        many = d.error(f"operator '{op}' needs a single value in {c.path!r}")
        return (f"CASE WHEN {d.len(x)} = 0 THEN NULL WHEN {d.len(x)} > 1 THEN {many} "
                f"ELSE {d.any_of(items, '_zm', json_eq(d, d.at(x, 1), '_zm'))} END")

    return Frag(c.let(d.lst(item, coll), body), BOOL)


def _union(c: PathCompiler, op: str, left: str, right: str) -> Frag:
    d = c.d
    var = c.names.fresh("_v")

    def body(p: str) -> str:
        def fresh(i: str) -> str:
            earlier = d.transform(d.slice(p, "1", f"{i} - 1"), "_z", _text_of(d, "_z"))
            return f"NOT {d.contains(earlier, _text_of(d, var))}"

        return d.filter_indexed(p, var, "_zi", fresh)

    return Frag(c.let(d.concat(left, right), body), COLL)


def _text_of(d: DuckDB, x: str) -> str:
    """JSON text of a lambda variable (DuckDB's plain ``::VARCHAR`` cast)."""
    return f"{x}::VARCHAR" if d.name == "duckdb" else d.json_text(x)


_Operator = Callable[[PathCompiler, str, str, str], Frag]
_OPERATORS: dict[str, _Operator] = {
    "=": _equality, "!=": _equality,
    "<": _comparison, "<=": _comparison, ">": _comparison, ">=": _comparison,
    "+": _arithmetic, "-": _arithmetic, "*": _arithmetic, "/": _arithmetic,
    "div": _arithmetic, "mod": _arithmetic,
    "&": _concat, "in": _membership, "contains": _membership, "|": _union,
}
