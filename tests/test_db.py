"""cartfhir/db.py: identifiers quoted once, in one place."""

from __future__ import annotations

import duckdb

from cartfhir.db import quote_name, quoted


def test_a_name_with_quotes_and_dots_stays_one_identifier() -> None:
    con = duckdb.connect()
    name = 'a"b.c; DROP TABLE x --'
    con.execute(f"CREATE TABLE {quote_name(name)} ({quote_name('v')} INTEGER)")
    assert con.execute("SELECT table_name FROM information_schema.tables").fetchone() == (name,)


def test_a_table_name_is_quoted_part_by_part() -> None:
    con = duckdb.connect()
    con.execute(f"CREATE SCHEMA {quote_name('cohort')}")
    con.execute(f"CREATE TABLE {quoted('cohort.episode')} (x INTEGER)")
    assert con.execute("SELECT table_schema, table_name FROM information_schema.tables"
                       ).fetchone() == ("cohort", "episode")
    assert quoted('ref."x"') == '"ref"."""x"""'
