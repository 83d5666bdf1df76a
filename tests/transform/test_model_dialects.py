"""Every SQL model runs on DuckDB and on Spark from one file: a lint of the common subset.

A model's .sql is run as written by both engines unless a ``<name>.spark.sql`` override sits
beside it, so it may call only functions both engines have (DuckDB's ``duckdb_functions()``
and Spark's catalog, derived here, not listed by hand) or the shared macros (defined in
both macros.sql and macros.spark.sql), and no construct only one engine parses or that the
two read differently. The linter itself is checked on bad snippets, so a lint that finds
nothing means something.

Two traps run on both engines and give other rows, so the lint makes them explicit:

- NULL order. An ascending ORDER BY puts NULLs last on DuckDB and first on Spark, so every
  ORDER BY item (query, window or aggregate, in a model or in either macro file) ends in
  ``NULLS FIRST`` or ``NULLS LAST``; the models say what DuckDB does by default (NULLS LAST).
- NULLs in a built list. ``array_agg``/``list`` keep a NULL element on DuckDB, Spark's
  ``collect_list`` drops it. A list aggregate passes only when no NULL can reach it: its value
  is followed by ``FILTER (WHERE <the same value> IS NOT NULL)``, or it is a ``ranked(r, v)``
  struct (a struct is never NULL on either engine, whatever its fields; macros.spark.sql
  orders a NULL field last, as DuckDB does). A WHERE elsewhere in the query is not taken as
  proof: the rule reads one call, so it cannot be fooled by a filter on another column.
"""

from __future__ import annotations

import re
from functools import cache

import duckdb
import pytest

from cartfhir.graph import load_graph, read_text
from cartfhir.spark.models import override_path, split_statements

MACROS, SPARK_MACROS = "transform/models/macros.sql", "transform/models/macros.spark.sql"

# Strings, quoted identifiers and comments, leftmost first: what a lint must not read as code.
_NOISE = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|--[^\n]*|/\*.*?\*/", re.S)
_CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(")
# Words that stand before '(' without being a function call; CAST, TRY_CAST and coalesce are
# syntax both engines parse the same (DuckDB does not list them among its functions).
_SYNTAX = {"as", "in", "exists", "over", "filter", "using", "on", "and", "or", "not", "from",
           "join", "where", "select", "then", "else", "when", "by", "distinct", "all",
           "union", "with", "case", "is", "between", "like", "cast", "try_cast", "coalesce",
           "values", "any", "some"}
# Types both engines spell alike in CAST (VARCHAR needs a length on Spark, JSON and
# TIMESTAMPTZ are DuckDB's, TIMESTAMP means local time on Spark and none on DuckDB).
_TYPES = {"string", "integer", "int", "bigint", "double", "boolean", "date", "decimal"}
# Functions both engines have under one name with different meanings.
_DIFFERENT = {
    "len": "string length on Spark, list length on DuckDB: cardinality()",
    "datediff": "arguments in another order on each engine",
    "date_diff": "arguments in another order on each engine",
    "date_add": "days on Spark, an interval on DuckDB",
    "date_sub": "days on Spark, an interval on DuckDB",
    "dayofweek": "Sunday is 1 on Spark, 0 on DuckDB",
    "log": "natural log on Spark, base 10 on DuckDB",
}
_CONSTRUCTS = [
    (re.compile(r"\bQUALIFY\b", re.I), "QUALIFY (filter a window column in an outer SELECT)"),
    (re.compile(r"\bLATERAL\b", re.I), "LATERAL (use explode() in the SELECT list)"),
    (re.compile(r"\bGROUP\s+BY\s+ALL\b", re.I), "GROUP BY ALL (name the columns)"),
    (re.compile(r"\bEXCLUDE\s*\(", re.I), "SELECT * EXCLUDE (name the columns)"),
    (re.compile(r"\bCOLUMNS\s*\(", re.I), "COLUMNS(...) (name the columns)"),
    (re.compile(r"\bASOF\b|\bPOSITIONAL\b", re.I), "ASOF/POSITIONAL join (DuckDB only)"),
    (re.compile(r"->>?"), "-> lambda or JSON arrow (keep lambdas in macro pairs)"),
    (re.compile(r"\blambda\b", re.I), "lambda (keep lambdas in macro pairs)"),
    (re.compile(r"::"), ":: cast (write CAST(x AS type))"),
    (re.compile(r"//"), "// integer division (DuckDB only)"),
    (re.compile(r"[\[\]]"), "[...] list literal or index (empty_list(), item_at())"),
    (re.compile(r"\{"), "{...} struct literal (DuckDB only)"),
    (re.compile(r"\bstruct_pack\b|\bnamed_struct\b", re.I), "struct constructor of one engine"),
    (re.compile(r"\blist_\w+|\blist\s*\(", re.I), "list_* function (DuckDB only)"),
    (re.compile(r"\bunnest\b", re.I), "unnest (use explode(), a shared macro)"),
]


def strip(sql: str) -> str:
    """``sql`` with string literals, quoted identifiers and comments blanked out."""
    return _NOISE.sub(lambda m: "''" if m.group(0).startswith("'") else " ", sql)


@cache
def duckdb_functions() -> frozenset[str]:
    with duckdb.connect() as con:
        return frozenset(r[0].lower() for r in con.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() "
            "WHERE schema_name IN ('main', 'pg_catalog') AND NOT internal IS NULL").fetchall())


def duckdb_macros() -> dict[str, int]:
    """name -> number of arguments of every macro in macros.sql."""
    with duckdb.connect() as con:
        con.execute(read_text(MACROS))
        return {r[0].lower(): len(r[1]) for r in con.execute(
            "SELECT function_name, parameters FROM duckdb_functions() "
            "WHERE function_type = 'macro' AND NOT internal").fetchall()}


def spark_macros() -> dict[str, int]:
    """name -> number of arguments of every function macros.spark.sql creates."""
    found = {}
    for statement in split_statements(read_text(SPARK_MACROS)):
        match = re.search(r"FUNCTION\s+(\w+)\s*\(((?:[^()]|\([^()]*\))*)\)", strip(statement),
                          re.I)
        assert match, f"not a CREATE FUNCTION statement: {statement[:80]}"
        found[match.group(1).lower()] = _arguments(match.group(2))
    return found


def calls(code: str) -> list[str]:
    """The names called in ``code`` (stripped SQL); 'AS e(endpoint)' names columns."""
    return [m.group(1) for m in _CALL.finditer(code)
            if not re.search(r"\bAS\s+$", code[max(0, m.start() - 8):m.start()], re.I)]


def _arguments(declared: str) -> int:
    """How many arguments a Spark parameter list declares (commas inside <> do not count)."""
    depth, count = 0, 1 if declared.strip() else 0
    for char in declared:
        depth += {"<": 1, ">": -1}.get(char, 0)
        count += char == "," and depth == 0
    return count


_ORDER_BY = re.compile(r"\bORDER\s+BY\b", re.I)
# Words that end an ORDER BY list at its own depth (a window frame, a set operation, ...).
_ORDER_END = re.compile(r"(?:LIMIT|OFFSET|ROWS|RANGE|GROUPS|UNION|EXCEPT|INTERSECT|WINDOW|"
                        r"FETCH|QUALIFY)\b", re.I)
_NULLS = re.compile(r"\bNULLS\s+(?:FIRST|LAST)\s*$", re.I)
_LIST_AGG = re.compile(r"\b(array_agg|list|collect_list)\s*\(", re.I)
_NOT_NULL_FILTER = re.compile(r"\s*FILTER\s*\(\s*WHERE\s+(.+?)\s+IS\s+NOT\s+NULL\s*\)", re.I | re.S)


def _order_items(code: str, start: int) -> list[str]:
    """The items of the ORDER BY list that begins at ``start`` in ``code`` (stripped SQL)."""
    depth, begin, items, i = 0, start, [], start
    while i < len(code):
        char = code[i]
        if char == "(":
            depth += 1
        elif char == ")":
            if depth == 0:
                break
            depth -= 1
        elif char == ";" and depth == 0:
            break
        elif char == "," and depth == 0:
            items.append(code[begin:i])
            begin = i + 1
        elif (depth == 0 and not (code[i - 1].isalnum() or code[i - 1] == "_")
              and _ORDER_END.match(code, i)):
            break
        i += 1
    items.append(code[begin:i])
    return [" ".join(item.split()) for item in items]


def _inside(code: str, start: int) -> tuple[str, int]:
    """The text from ``start`` to the parenthesis that closes the one before it, and its end."""
    depth = 0
    for i in range(start, len(code)):
        depth += {"(": 1, ")": -1}.get(code[i], 0)
        if depth < 0:
            return code[start:i], i + 1
    return code[start:], len(code)


def null_problems(sql: str) -> list[str]:
    """Where ``sql`` leaves NULL handling to the engine: an ORDER BY item without NULLS
    FIRST/LAST, or a list aggregate over a value that may be NULL (see the module docstring)."""
    code, found = strip(sql), []
    for match in _ORDER_BY.finditer(code):
        for item in _order_items(code, match.end()):
            if not _NULLS.search(item):
                found.append(f"ORDER BY item '{item}' without NULLS FIRST/LAST (an ascending "
                             "order puts NULLs last on DuckDB, first on Spark)")
    for match in _LIST_AGG.finditer(code):
        argument, end = _inside(code, match.end())
        value = re.sub(r"^\s*DISTINCT\b", "", _ORDER_BY.split(argument)[0], flags=re.I)
        value = " ".join(value.split())
        if re.match(r"ranked\s*\(", value, re.I):
            continue
        kept = _NOT_NULL_FILTER.match(code, end)
        if kept and " ".join(kept.group(1).split()).lower() == value.lower():
            continue
        found.append(f"list aggregate {match.group(1)}({value}) may hold NULL (DuckDB keeps "
                     f"it, Spark drops it): add FILTER (WHERE {value} IS NOT NULL)")
    return found


def problems(sql: str, allowed: frozenset[str]) -> list[str]:
    """What in ``sql`` (a model's text) one of the engines lacks or reads differently."""
    found = []
    uncommented = re.sub(r"--[^\n]*|/\*.*?\*/", "", sql, flags=re.S)
    for literal in re.findall(r"'(?:[^']|'')*'", uncommented):
        if "\\" in literal:
            found.append(f"backslash in the string {literal} (Spark unescapes it; use a "
                         "macro pair for a regex that needs one)")
        if "''" in literal[1:-1]:
            found.append(f"doubled quote in the string {literal} (Spark reads two adjacent "
                         "strings; use in_quotes())")
    if re.search(r'"|`', re.sub(r"'(?:[^']|'')*'|--[^\n]*|/\*.*?\*/", "", sql, flags=re.S)):
        found.append('quoted identifier ("x" is a string on Spark, `x` an error on DuckDB)')
    code = strip(sql)
    for pattern, why in _CONSTRUCTS:
        if pattern.search(code):
            found.append(why)
    if re.search(r"\bFILTER\s*\(\s*WHERE\b[^()]*(?:\([^()]*\)[^()]*)*\)\s*OVER\b", code, re.I):
        found.append("FILTER (WHERE ...) OVER (use CASE WHEN inside the window aggregate)")
    for kind in re.findall(r"\bCAST\s*\((?:[^()]|\([^()]*\))*?\bAS\s+([A-Za-z_]+)", code, re.I):
        if kind.lower() not in _TYPES:
            found.append(f"type {kind} (types both engines share: {', '.join(sorted(_TYPES))})")
    for name in calls(code):
        if name.lower() in _DIFFERENT:
            found.append(f"function {name} ({_DIFFERENT[name.lower()]})")
        elif name.lower() not in _SYNTAX and name.lower() not in allowed:
            found.append(f"function {name} (not on both engines nor a shared macro)")
    return found + null_problems(sql)


@pytest.fixture(scope="module")
def spark_functions(spark) -> frozenset[str]:  # noqa: ANN001 - pyspark is optional
    """Spark's built-in functions (SHOW FUNCTIONS of the catalog)."""
    return frozenset(r[0].lower() for r in spark.sql("SHOW SYSTEM FUNCTIONS").collect())


@pytest.fixture(scope="module")
def allowed(spark_functions: frozenset[str]) -> frozenset[str]:
    """Functions both engines have, and the shared macros."""
    shared = set(duckdb_macros()) & (set(spark_macros()) | spark_functions)
    return (duckdb_functions() & spark_functions) | frozenset(shared)


def _models() -> list[str]:
    return sorted(n.path for n in load_graph().nodes
                  if n.kind == "sql" and n.path and n.path.startswith("transform/models/"))


@pytest.mark.spark
def test_every_macro_has_its_pair(spark_functions: frozenset[str]) -> None:
    # a DuckDB macro may name a Spark built-in (explode) instead of a Spark function
    duck = {k: v for k, v in duckdb_macros().items() if k not in spark_functions}
    spark = spark_macros()
    counts = [(k, duck[k], spark[k]) for k in duck if k in spark and duck[k] != spark[k]]
    assert duck == spark, (f"only in macros.sql: {sorted(set(duck) - set(spark))}; only in "
                           f"macros.spark.sql: {sorted(set(spark) - set(duck))}; argument "
                           f"counts differ: {counts}")


@pytest.mark.spark
@pytest.mark.parametrize("path", _models())
def test_a_model_is_in_the_common_subset(path: str, allowed: frozenset[str],
                                         spark_functions: frozenset[str]) -> None:
    node = next(n for n in load_graph().nodes if n.path == path)
    override = override_path(node)
    if override is not None:
        # The base is then DuckDB's text alone; the override may call only what Spark has.
        spark_has = spark_functions | set(spark_macros())
        called = {n.lower() for n in calls(strip(read_text(override)))}
        assert not called - _SYNTAX - spark_has, f"{override} calls what Spark lacks"
        return
    found = problems(read_text(path), allowed)
    assert not found, f"{path} is outside what DuckDB and Spark share:\n  " + "\n  ".join(found)


def _null_checked() -> list[str]:
    """Every model, its Spark override if any, and both macro files."""
    paths = [MACROS, SPARK_MACROS]
    for node in load_graph().nodes:
        if node.kind == "sql" and node.path and node.path.startswith("transform/models/"):
            paths.append(node.path)
            override = override_path(node)
            if override is not None:
                paths.append(str(override))
    return sorted(paths)


@pytest.mark.parametrize("path", _null_checked())
def test_nulls_are_ordered_and_listed_alike(path: str) -> None:
    found = null_problems(read_text(path))
    assert not found, f"{path} leaves NULLs to the engine:\n  " + "\n  ".join(found)


@pytest.mark.spark
def test_a_ranked_list_orders_null_fields_alike(spark) -> None:  # noqa: ANN001 - pyspark optional
    # The one sort the lint cannot see: array_sort over ranked() structs, whose NULL fields
    # DuckDB orders last and Spark (without the macro's flags) first.
    from cartfhir.spark.models import create_functions

    rows = "(1, 'b'), (1, NULL), (NULL, 'a'), (0, 'c'), (1, 'a'), (NULL, NULL), (0, 'c')"
    query = ("SELECT ranked_values(array_sort(array_agg(ranked(r, v)))) AS l "
             f"FROM (VALUES {rows}) AS t(r, v)")
    with duckdb.connect() as con:
        con.execute(read_text(MACROS))
        duck = con.execute(query).fetchone()[0]
    create_functions(spark)
    assert list(spark.sql(query).collect()[0][0]) == duck == ["c", "c", "a", "b", None, "a", None]


BAD_NULLS = {
    "window": "SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t",
    "second item": "SELECT row_number() OVER (ORDER BY b DESC NULLS LAST, c) FROM t",
    "query": "SELECT a FROM t ORDER BY a",
    "before a frame": "SELECT sum(a) OVER (ORDER BY b ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)",
    "before a limit": "SELECT a FROM t ORDER BY a DESC LIMIT 3",
    "in an aggregate": "SELECT string_agg(a, ',' ORDER BY a) FROM t",
    "array_agg": "SELECT array_sort(array_agg(a)) FROM t",
    "distinct": "SELECT array_agg(DISTINCT a) FROM t",
    "list": "SELECT list(a ORDER BY b NULLS LAST) FROM t",
    "collect_list": "SELECT collect_list(a) FROM t",
    "filter on another value": "SELECT array_agg(a) FILTER (WHERE b IS NOT NULL) FROM t",
    "filter of another kind": "SELECT array_agg(a) FILTER (WHERE a > 0) FROM t",
    "not the ranked macro": "SELECT array_agg(coalesce(ranked(1, a), NULL)) FROM t",
}


@pytest.mark.parametrize("why", sorted(BAD_NULLS))
def test_the_null_lint_finds_a_bad_model(why: str) -> None:
    assert null_problems(BAD_NULLS[why]), BAD_NULLS[why]


def test_the_null_lint_passes_explicit_nulls() -> None:
    good = """SELECT row_number() OVER (PARTITION BY a ORDER BY b DESC NULLS LAST,
                                           c ASC NULLS FIRST) AS n,
                     sum(a) OVER (ORDER BY b NULLS LAST ROWS BETWEEN 1 PRECEDING
                                  AND CURRENT ROW) AS s,
                     array_sort(array_agg(DISTINCT lower(a)) FILTER (WHERE lower(a) IS NOT NULL)),
                     ranked_values(array_sort(array_agg(ranked(r, v)))),
                     '-- ORDER BY x' AS text  -- ORDER BY y in a comment
              FROM t ORDER BY a NULLS LAST, b DESC NULLS FIRST LIMIT 3"""
    assert null_problems(good) == []


BAD = {
    "QUALIFY": "SELECT a FROM t QUALIFY row_number() OVER (PARTITION BY a ORDER BY b) = 1",
    "FILTER (WHERE": "SELECT min(a) FILTER (WHERE b IS NULL) OVER (PARTITION BY c) FROM t",
    "LATERAL": "SELECT x FROM t, LATERAL (VALUES (1), (2)) AS v(x)",
    "->": "SELECT list_transform(l, x -> x + 1) FROM t",
    ":: cast": "SELECT NULL::INTEGER AS g FROM t",
    "struct": "SELECT struct_pack(a := 1) FROM t",
    "list_": "SELECT list_contains(l, 1) FROM t",
    "GROUP BY ALL": "SELECT a, count(*) FROM t GROUP BY ALL",
    "backslash": r"SELECT regexp_extract(s, '^\s*([0-9]+)', 1) FROM t",
    "function json_extract_string": "SELECT json_extract_string(j, '$.a') FROM t",
    "function collect_list": "SELECT collect_list(a) FROM t",
    "function len": "SELECT len(l) FROM t",
    "[...]": "SELECT coalesce(l, []) FROM t",
    "type VARCHAR": "SELECT CAST(a AS VARCHAR) FROM t",
    "type TIMESTAMPTZ": "SELECT CAST(a AS TIMESTAMPTZ) FROM t",
    "quoted identifier": 'SELECT "a b" FROM t',
    "unnest": "SELECT unnest(l) AS x FROM t",
    "doubled quote": "SELECT 'unit ''' || u || '''' FROM t",
}


@pytest.mark.spark
@pytest.mark.parametrize("why", sorted(BAD))
def test_the_lint_finds_a_bad_model(why: str, allowed: frozenset[str]) -> None:
    found = problems(BAD[why], allowed)
    assert any(why.lower() in f.lower() for f in found), found


@pytest.mark.spark
def test_the_lint_passes_a_good_model(allowed: frozenset[str]) -> None:
    good = """-- a comment with QUALIFY, list_x( and a \\ backslash is no code
        WITH w AS (SELECT a, max(b) OVER (PARTITION BY a) AS top, CAST(b AS STRING) AS s,
                          min(CASE WHEN c IS NULL THEN d END) OVER (PARTITION BY a) AS first
                   FROM t)
        SELECT a, array_sort(array_agg(DISTINCT s) FILTER (WHERE s IS NOT NULL)) AS l,
               explode(key_prefixes(s, 3)) AS p, '[x] {y} ::z -> QUALIFY' AS text,
               TRY_CAST(s AS DOUBLE) AS n, coalesce(local_date(s), current_date) AS d
        FROM w WHERE top = b AND matches_regex(s, '(?i)a|b') GROUP BY a, s"""
    assert problems(good, allowed) == []
