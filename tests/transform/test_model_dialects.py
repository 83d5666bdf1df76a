"""Every SQL model runs on DuckDB and on Spark from one file: a lint of the common subset.

A model's .sql is run as written by both engines unless a ``<name>.spark.sql`` override sits
beside it, so it may call only functions both engines have (DuckDB's ``duckdb_functions()``
and Spark's catalog, derived here, not listed by hand) or the shared macros (defined in
both macros.sql and macros.spark.sql), and no construct only one engine parses or that the
two read differently. The linter itself is checked on bad snippets, so a lint that finds
nothing means something.
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
    return found


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
