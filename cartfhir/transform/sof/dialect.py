"""The SQL primitives the SQL-on-FHIR compiler writes, one class per engine.

The planner (``compile.PathCompiler``, ``view.ViewCompiler``) decides *what* to
compute; every piece of SQL text it writes comes from a ``Dialect``: JSON access,
lists and lambdas, lateral unnest with position, regex, error raising and casts.
``DuckDB`` writes the text the compiler always wrote (a golden test keeps it byte
for byte); ``Spark`` writes Spark 4 SQL over VARIANT values, each resource parsed
once with ``parse_json``.

A FHIRPath item is a JSON value (DuckDB ``JSON``, Spark ``VARIANT``) and a
collection a list of them (``JSON[]`` / ``ARRAY<VARIANT>``). ``json_type`` gives
DuckDB's type names on both engines ('ARRAY', 'OBJECT', 'VARCHAR', 'BIGINT',
'DOUBLE', 'BOOLEAN', 'NULL'), so type checks are written once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cartfhir.db import quote_name

ERROR_MARK = "sql-on-fhir: "


class DuckDB:
    """DuckDB SQL: JSON and ``JSON[]`` with ``list_*`` functions and ``lambda`` syntax."""

    name = "duckdb"
    empty = "[]::JSON[]"
    json_null = "NULL::JSON"
    # JSON paths with wildcards (``$[*]."code"``) read a whole chain in one call.
    wildcards = True
    # Whether a text test (``may_hold_key``) saves parsing: not on DuckDB, whose JSON
    # reader finds a key about as fast as a scan of the text (and the test scans twice).
    key_prefilter = False

    # -- literals and errors ------------------------------------------------------------

    def str(self, text: str) -> str:
        """Quote text as a SQL string literal."""
        return "'" + text.replace("'", "''") + "'"

    def quote(self, name: str) -> str:
        """A column name as a quoted identifier."""
        return quote_name(name)

    def json_lit(self, json_text: str) -> str:
        """A JSON literal from its JSON text."""
        return self.str(json_text) + "::JSON"

    def error(self, message: str) -> str:
        """An expression that aborts the query with a recognisable message."""
        return f"error({self.str(ERROR_MARK + message)})"

    # -- JSON access --------------------------------------------------------------------

    def json_path(self, names: Sequence[str]) -> str:
        return "$" + "".join(f'."{n}"' for n in names)

    def json_type(self, x: str) -> str:
        return f"json_type({x})"

    def json_type_at(self, root: str, path: str) -> str:
        """The JSON type at one path (no wildcards) below ``root``."""
        return f"json_type({root}, {self.str(path)})"

    def any_array_at(self, root: str, paths: Sequence[str]) -> str:
        """BOOLEAN: some value at ``paths`` (two or more) below ``root`` is an array."""
        return f"list_contains(json_type({root}, [{', '.join(map(self.str, paths))}]), 'ARRAY')"

    def may_hold_key(self, text: str, key: str) -> str:
        """BOOLEAN: the JSON ``text`` may have an object key ``key`` (letters, digits, '_').

        A necessary condition only: such a key is written as itself unless one of its
        characters is a ``\\u`` escape, so a text holding neither the quoted key nor
        any ``\\u`` has no such key; a text that holds it may have it in a string.
        """
        raw = self.raw(text)
        return (f"(contains({raw}, {self.str(chr(34) + key + chr(34))}) "
                f"OR contains({raw}, {self.str(chr(92) + 'u')}))")

    def raw(self, text: str) -> str:
        """A resource's JSON text as a string."""
        return f"CAST({text} AS VARCHAR)"

    def member(self, x: str, name: str) -> str:
        """Element ``name`` of the JSON ``x`` (callers parenthesise ``x`` as needed)."""
        return f"({x} -> {self.str(name)})"

    def at_path(self, x: str, names: Sequence[str]) -> str:
        return f"(({x}) -> {self.str(self.json_path(names))})"

    def text(self, x: str) -> str:
        """A JSON string's text (other scalars as written, objects as JSON text)."""
        return f"({x} ->> '$')"

    def text_member(self, x: str, name: str) -> str:
        return f"({x} ->> {self.str(name)})"

    def string_text(self, x: str) -> tuple[str, str]:
        """(text, is a string) of the JSON value ``x``, for a value that should be a string.

        Read from the JSON text without parsing it where that is exact: a JSON
        string is written in quotes, and one without a backslash is its text as it is.
        """
        raw = f"{x}::VARCHAR"
        text = (f"CASE WHEN contains({raw}, '\\') THEN {self.text(x)} "
                f"ELSE substr({raw}, 2, length({raw}) - 2) END")
        return text, f"starts_with({raw}, '\"')"

    def json_text(self, x: str) -> str:
        """The JSON text of a value (strings quoted): a total order for equality."""
        return f"({x})::VARCHAR"

    def to_json(self, x: str) -> str:
        """A SQL value (number, text, boolean, JSON list) as one JSON value."""
        return f"to_json({x})"

    def json_out(self, x: str) -> str:
        """A JSON value as the engine returns JSON columns."""
        return x

    def json_list(self, x: str) -> str:
        """A JSON array as a list (JSON nulls in it become SQL NULLs)."""
        return f"({x})::JSON[]"

    def not_null(self, x: str) -> str:
        """An item that is a value (not SQL NULL, not JSON null inside a list)."""
        return f"{x} IS NOT NULL"

    def cast(self, x: str, sql_type: str) -> str:
        """A JSON scalar as BOOLEAN, BIGINT, INTEGER or DOUBLE."""
        return f"({x})::{sql_type}"

    def cast_text(self, x: str, sql_type: str) -> str:
        return f"CAST({x} AS {sql_type})"

    def try_cast_text(self, x: str, sql_type: str) -> str:
        """Text as ``sql_type``, NULL where it does not fit (an integer out of range)."""
        return f"TRY_CAST({x} AS {sql_type})"

    # -- lists and lambdas --------------------------------------------------------------

    def lst(self, *items: str) -> str:
        return f"[{', '.join(items)}]"

    def at(self, lst: str, pos: int | str) -> str:
        """Item ``pos`` (1-based, -1 the last) of a list; NULL when out of range."""
        return f"{lst}[{pos}]"

    def len(self, lst: str) -> str:
        return f"len({lst})"

    def transform(self, lst: str, var: str, body: str) -> str:
        return f"list_transform({lst}, lambda {var}: {body})"

    def filter(self, lst: str, var: str, body: str) -> str:
        return f"list_filter({lst}, lambda {var}: {body})"

    def filter_indexed(self, lst: str, var: str, index: str,
                       body: Callable[[str], str]) -> str:
        """Filter by ``body(position)``, the item's 1-based position given as SQL."""
        return f"list_filter({lst}, lambda {var}, {index}: {body(index)})"

    def flatten(self, lst: str) -> str:
        return f"flatten({lst})"

    def concat(self, a: str, b: str) -> str:
        return f"list_concat({a}, {b})"

    def slice(self, lst: str, start: str, end: str) -> str:
        """Items ``start``..``end`` (1-based, inclusive; -1 the last)."""
        return f"list_slice({lst}, {start}, {end})"

    def contains(self, lst: str, x: str) -> str:
        return f"list_contains({lst}, {x})"

    def all_of(self, lst: str, var: str, cond: str) -> str:
        """BOOLEAN: ``cond`` (never NULL) holds for every item; true for none."""
        return f"coalesce(list_bool_and({self.transform(lst, var, cond)}), true)"

    def any_of(self, lst: str, var: str, cond: str) -> str:
        """BOOLEAN: ``cond`` (never NULL) holds for some item; false for none."""
        return f"coalesce(list_bool_or({self.transform(lst, var, cond)}), false)"

    def all_pairs(self, a: str, b: str, index: str, cond: str) -> str:
        """``cond`` over positions 1..len(a) named ``index``; NULL for none."""
        return f"list_bool_and({self.transform(f'range(1, len({a}) + 1)', index, cond)})"

    def let(self, value: str, var: str, body: str) -> str:
        """Bind ``value`` to ``var`` for a body that uses it many times."""
        return f"{self.at(self.transform(self.lst(value), var, body), 1)}"

    def join_text(self, lst: str, sep: str) -> str:
        return f"array_to_string({lst}, {sep})"

    # -- regular expressions ------------------------------------------------------------

    def starts_with(self, x: str, prefix: str) -> str:
        return f"starts_with({x}, {prefix})"

    def full_match(self, x: str, pattern: str) -> str:
        """BOOLEAN: the regex ``pattern`` (text, not SQL) matches all of ``x``."""
        return f"regexp_full_match({x}, {self.str(pattern)})"

    def regex_group(self, x: str, pattern: str, group: int) -> str:
        """Group ``group`` of the first match of ``pattern`` (text), '' when there is none."""
        return f"regexp_extract({x}, {self.str(pattern)}, {group})"

    def regex_groups(self, x: str, pattern: str) -> str:
        """Groups 1 and 2 of the first match as a value read by ``group_of``."""
        return f"regexp_extract({x}, {self.str(pattern)}, ['t', 'i'])"

    def group_of(self, groups: str, n: int) -> str:
        return f"{groups}.{'ti'[n - 1]}"


# schema_of_variant's leading word -> DuckDB's json_type name (VOID is JSON null), as
# one map lookup: function calls nested deeper make Spark 4's parser (whose function
# arguments may be named) slow exponentially, and a map literal's arguments are literals.
_JSON_TYPES = "map(" + ", ".join(
    f"'{kind}', '{name}'" for kind, name in (
        ("VOID", "NULL"), ("OBJECT", "OBJECT"), ("ARRAY", "ARRAY"), ("STRING", "VARCHAR"),
        ("BOOLEAN", "BOOLEAN"), ("BIGINT", "BIGINT"), ("INT", "BIGINT"),
        ("SMALLINT", "BIGINT"), ("TINYINT", "BIGINT"), ("DECIMAL", "DOUBLE"),
        ("DOUBLE", "DOUBLE"), ("FLOAT", "DOUBLE"), ("DATE", "DATE"),
        ("TIMESTAMP", "TIMESTAMP"), ("BINARY", "BINARY"))) + ")"


class Spark(DuckDB):
    """Spark 4 SQL: VARIANT values, ``ARRAY<VARIANT>`` lists and ``->`` lambdas.

    ANSI mode is on, so list reads use ``try_element_at`` and JSON reads
    ``try_variant_get``; JSON null is a variant null (``is_variant_null``), which
    ``json_type`` calls 'NULL' as DuckDB does.
    """

    name = "spark"
    empty = "CAST(array() AS ARRAY<VARIANT>)"
    json_null = "CAST(NULL AS VARIANT)"
    wildcards = False
    key_prefilter = True  # a row the text test drops is never parsed into a VARIANT

    def str(self, text: str) -> str:
        # Spark string literals unescape backslashes.
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def quote(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    def json_lit(self, json_text: str) -> str:
        return f"parse_json({self.str(json_text)})"

    def error(self, message: str) -> str:
        return f"raise_error({self.str(ERROR_MARK + message)})"

    def json_path(self, names: Sequence[str]) -> str:
        return "$" + "".join(f".{n}" for n in names)

    def json_type(self, x: str) -> str:
        # ``x`` appears once: a nested path repeats it at every level, so a CASE that
        # named it three times grew the SQL (and Spark's analysis) as 3^depth.
        kind = f"regexp_extract(schema_of_variant({x}), '^[A-Z]+', 0)"
        return f"try_element_at({_JSON_TYPES}, {kind})"

    def _get(self, root: str, path: str) -> str:
        return f"try_variant_get({root}, {self.str(path)}, 'variant')"

    def json_type_at(self, root: str, path: str) -> str:
        return self.json_type(self._get(root, path))

    def any_array_at(self, root: str, paths: Sequence[str]) -> str:
        return "(" + " OR ".join(
            f"coalesce({self.json_type_at(root, p)} = 'ARRAY', false)" for p in paths) + ")"

    def raw(self, text: str) -> str:
        return text  # the scan's resource column is the JSON text

    def member(self, x: str, name: str) -> str:
        return self._get(x, self.json_path([name]))

    def at_path(self, x: str, names: Sequence[str]) -> str:
        return self._get(f"({x})", self.json_path(names))

    def text(self, x: str) -> str:
        # A variant read as string is the JSON text of an object or array, the bare
        # text of a scalar, and NULL for JSON null (DuckDB's ->> does the same).
        return f"try_variant_get({x}, '$', 'string')"

    def text_member(self, x: str, name: str) -> str:
        return f"try_variant_get({x}, {self.str(self.json_path([name]))}, 'string')"

    def string_text(self, x: str) -> tuple[str, str]:
        return self.text(x), f"{self.json_type(x)} = 'VARCHAR'"

    def json_text(self, x: str) -> str:
        return f"to_json({x})"

    def to_json(self, x: str) -> str:
        return f"CAST({x} AS VARIANT)"

    def json_out(self, x: str) -> str:
        return f"to_json({x})"

    def json_list(self, x: str) -> str:
        return f"try_variant_get({x}, '$', 'array<variant>')"

    def not_null(self, x: str) -> str:
        # is_variant_null is false (not NULL) for a SQL NULL, so that is tested apart.
        return f"({x} IS NOT NULL AND NOT is_variant_null({x}))"

    def cast(self, x: str, sql_type: str) -> str:
        return f"try_variant_get({x}, '$', {self.str(sql_type.lower())})"

    def cast_text(self, x: str, sql_type: str) -> str:
        return f"CAST({x} AS {sql_type})"

    def try_cast_text(self, x: str, sql_type: str) -> str:
        return f"try_cast({x} AS {sql_type})"

    def lst(self, *items: str) -> str:
        return f"array({', '.join(items)})"

    def at(self, lst: str, pos: int | str) -> str:
        return f"try_element_at({lst}, {pos})"

    def len(self, lst: str) -> str:
        return f"size({lst})"

    def transform(self, lst: str, var: str, body: str) -> str:
        return f"transform({lst}, {var} -> {body})"

    def filter(self, lst: str, var: str, body: str) -> str:
        return f"filter({lst}, {var} -> {body})"

    def filter_indexed(self, lst: str, var: str, index: str,
                       body: Callable[[str], str]) -> str:
        # Spark's index is 0-based.
        return f"filter({lst}, ({var}, {index}) -> {body(f'({index} + 1)')})"

    def flatten(self, lst: str) -> str:
        return f"flatten({lst})"

    def concat(self, a: str, b: str) -> str:
        return f"concat({a}, {b})"

    def slice(self, lst: str, start: str, end: str) -> str:
        if start == end:
            return f"CASE WHEN {start} = 0 THEN NULL ELSE slice({lst}, {start}, 1) END"
        return f"slice({lst}, {start}, greatest(({end}) - ({start}) + 1, 0))"

    def contains(self, lst: str, x: str) -> str:
        return f"array_contains({lst}, {x})"

    def all_of(self, lst: str, var: str, cond: str) -> str:
        return f"forall({lst}, {var} -> {cond})"

    def any_of(self, lst: str, var: str, cond: str) -> str:
        return f"exists({lst}, {var} -> {cond})"

    def all_pairs(self, a: str, b: str, index: str, cond: str) -> str:
        return f"forall(sequence(1, size({a})), {index} -> {cond})"

    def let(self, value: str, var: str, body: str) -> str:
        return f"element_at(transform(array({value}), {var} -> {body}), 1)"

    def join_text(self, lst: str, sep: str) -> str:
        return f"array_join({lst}, {sep})"

    def starts_with(self, x: str, prefix: str) -> str:
        return f"startswith({x}, {prefix})"

    def full_match(self, x: str, pattern: str) -> str:
        return f"({x} RLIKE {self.str('^(?:' + pattern + ')$')})"

    def regex_groups(self, x: str, pattern: str) -> str:
        return (f"named_struct('t', {self.regex_group(x, pattern, 1)}, "
                f"'i', {self.regex_group(x, pattern, 2)})")


DIALECTS: dict[str, DuckDB] = {"duckdb": DuckDB(), "spark": Spark()}
