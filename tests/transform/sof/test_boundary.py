"""lowBoundary()/highBoundary() SQL gives the FHIRPath results on DuckDB and on Spark alike.

Every case runs on both real engines from one generated text. The cases hold every
fn_boundary.json expectation of the conformance suite, the FHIRPath specification's
examples, and edge cases (negative decimals, precisions past the value's, leap years,
month ends, time zones, precisions a type does not have).
"""

from __future__ import annotations

import duckdb
import pytest

from cartfhir.transform.sof.boundary import boundary_sql

pytestmark = pytest.mark.spark

# (kind, value, precision SQL or None, expected lowBoundary, expected highBoundary)
CASES: list[tuple[str, str | None, str | None, str | None, str | None]] = [
    # fn_boundary.json (expected values from the suite; 0.95 and 1.05 at 8 decimals)
    ("decimal", "1.0", None, "0.95000000", "1.05000000"),
    ("dateTime", "2010-10-10", None, "2010-10-10T00:00:00.000+14:00",
     "2010-10-10T23:59:59.999-12:00"),
    ("date", "1970-06", None, "1970-06-01", "1970-06-30"),
    ("time", "12:34:00", None, "12:34:00.000", "12:34:00.999"),
    # the FHIRPath specification's examples
    ("decimal", "1.587", None, "1.58650000", "1.58750000"),
    ("decimal", "1.587", "6", "1.586500", "1.587500"),
    ("decimal", "1.587", "2", "1.58", "1.59"),
    ("decimal", "1.587", "0", "1", "2"),
    ("decimal", "-1.587", None, "-1.58750000", "-1.58650000"),
    ("decimal", "-1.587", "6", "-1.587500", "-1.586500"),
    ("decimal", "-1.587", "2", "-1.59", "-1.58"),
    ("decimal", "-1.587", "0", "-2", "-1"),
    ("date", "2014", "6", "2014-01", "2014-12"),
    ("dateTime", "2014", "6", "2014-01", "2014-12"),
    ("dateTime", "2014-01-01T08", "17", "2014-01-01T08:00:00.000+14:00",
     "2014-01-01T08:59:59.999-12:00"),
    ("time", "T10:30", "9", "10:30:00.000", "10:30:59.999"),
    # decimals: integers, zero, signs, precision at, below and past the value's
    ("decimal", "1", None, "0.50000000", "1.50000000"),
    ("decimal", "5", "0", "4", "6"),
    ("decimal", "0", "0", "-1", "1"),
    ("decimal", "-0.4", "0", "-1", "0"),
    ("decimal", "-0.5", "1", "-0.6", "-0.4"),
    ("decimal", "1.587", "3", "1.586", "1.588"),
    ("decimal", "2.5", "12", "2.450000000000", "2.550000000000"),
    ("decimal", "0.00000000000000001", "17", "0.00000000000000000", "0.00000000000000002"),
    ("decimal", "123456789012345678.5", "1", "123456789012345678.4", "123456789012345678.6"),
    ("decimal", "1.587", "1 + 1", "1.58", "1.59"),
    # decimals nobody can serve: empty
    ("decimal", "1.587", "18", None, None),
    ("decimal", "1.587", "-1", None, None),
    ("decimal", "1.587", "NULL", None, None),
    ("decimal", "1234567890123456789", None, None, None),
    ("decimal", "0.123456789012345678", None, None, None),
    ("decimal", "1e5", None, None, None),
    ("decimal", "12.", None, None, None),
    ("decimal", "abc", None, None, None),
    ("decimal", None, None, None, None),
    # dates: month ends and leap years
    ("date", "2014", None, "2014-01-01", "2014-12-31"),
    ("date", "2014", "4", "2014", "2014"),
    ("date", "2014-06-15", "6", "2014-06", "2014-06"),
    ("date", "2014-06-15", None, "2014-06-15", "2014-06-15"),
    ("date", "2024-02", None, "2024-02-01", "2024-02-29"),
    ("date", "2023-02", None, "2023-02-01", "2023-02-28"),
    ("date", "1900-02", None, "1900-02-01", "1900-02-28"),
    ("date", "2000-02", None, "2000-02-01", "2000-02-29"),
    ("date", "2021-01", None, "2021-01-01", "2021-01-31"),
    ("date", "2021-04", None, "2021-04-01", "2021-04-30"),
    ("date", "2021-09", None, "2021-09-01", "2021-09-30"),
    ("date", "2021-11", None, "2021-11-01", "2021-11-30"),
    ("date", "2021-12", None, "2021-12-01", "2021-12-31"),
    ("date", "2014", "5", None, None),
    ("date", "2014", "10", None, None),
    ("date", "2014-6", None, None, None),
    ("date", "2014-06-15T10:00:00Z", None, None, None),
    # dateTimes: zones kept, zones supplied, milliseconds, every precision
    ("dateTime", "2014", "8", "2014-01-01", "2014-12-31"),
    ("dateTime", "2024-02", None, "2024-02-01T00:00:00.000+14:00",
     "2024-02-29T23:59:59.999-12:00"),
    ("dateTime", "2015-02-07T13:28:17-05:00", None, "2015-02-07T13:28:17.000-05:00",
     "2015-02-07T13:28:17.999-05:00"),
    ("dateTime", "2015-02-07T13:28:17Z", None, "2015-02-07T13:28:17.000Z",
     "2015-02-07T13:28:17.999Z"),
    ("dateTime", "2015-02-07T13:28:17.5+01:00", None, "2015-02-07T13:28:17.500+01:00",
     "2015-02-07T13:28:17.599+01:00"),
    ("dateTime", "2015-02-07T13:28:17.12345Z", None, "2015-02-07T13:28:17.123Z",
     "2015-02-07T13:28:17.123Z"),
    ("dateTime", "2015-02-07T13:28:17Z", "14", "2015-02-07T13:28:17Z", "2015-02-07T13:28:17Z"),
    ("dateTime", "2015-02-07T13:28:17Z", "12", "2015-02-07T13:28Z", "2015-02-07T13:28Z"),
    ("dateTime", "2015-02-07T13:28:17Z", "10", "2015-02-07T13Z", "2015-02-07T13Z"),
    ("dateTime", "2015-02-07", "12", "2015-02-07T00:00+14:00", "2015-02-07T23:59-12:00"),
    ("dateTime", "2015-02-07T13:28:17Z", "9", None, None),
    ("dateTime", "2015-02-07T13:28:17Z", "16", None, None),
    ("dateTime", "2015-02-07T13:28:17+0500", None, None, None),
    # times
    ("time", "10:30", "9", "10:30:00.000", "10:30:59.999"),
    ("time", "10", "4", "10:00", "10:59"),
    ("time", "10:30:15.5", None, "10:30:15.500", "10:30:15.599"),
    ("time", "10:30:15", "4", "10:30", "10:30"),
    ("time", "10:30:15", "2", "10", "10"),
    ("time", "10:30", "3", None, None),
    ("time", "10:30", "17", None, None),
    ("time", "1:30", None, None, None),
]


def _query(cases: list[tuple[str, str | None, str | None, str | None, str | None]]) -> str:
    """One row: a low and a high column per case.

    The values are made from a row of ``range(1)`` so neither engine can fold the
    expressions into constants while planning: they run as they would on data.
    """
    values, columns = [], []
    for i, (kind, value, precision, _, _) in enumerate(cases):
        text = "NULL" if value is None else f"'{value}'"
        values.append(f"concat({text}, substr(CAST(r.id AS STRING), 1, 0)) AS v{i}")
        for high in (False, True):
            columns.append(f"{boundary_sql(kind, f'v{i}', precision, high)} AS c{i}_{int(high)}")
    return (f"SELECT {', '.join(columns)} "
            f"FROM (SELECT {', '.join(values)} FROM range(1) AS r(id)) AS t")


# Cases a query on Spark. Its whole-stage code generation fails past Java's method size
# on a few dozen boundary columns and falls back to interpreting them, which took
# minutes and the driver's memory; five a query compile (measured ~0.3 s a case).
SPARK_BATCH = 5


@pytest.fixture(scope="module")
def duckdb_row() -> tuple:
    with duckdb.connect() as con:
        return con.execute(_query(CASES)).fetchone()


@pytest.fixture(scope="module")
def spark_row(spark) -> tuple:  # noqa: ANN001 - pyspark is optional
    row: tuple = ()
    for start in range(0, len(CASES), SPARK_BATCH):
        row += tuple(spark.sql(_query(CASES[start:start + SPARK_BATCH])).collect()[0])
    return row


@pytest.mark.parametrize("engine", ["duckdb", "spark"])
@pytest.mark.parametrize(
    "index", range(len(CASES)),
    ids=[f"{k}:{v}:{p}" for k, v, p, _, _ in CASES])
def test_boundary(engine: str, index: int, request: pytest.FixtureRequest) -> None:
    row = request.getfixturevalue(f"{engine}_row")
    _, _, _, low, high = CASES[index]
    assert (row[2 * index], row[2 * index + 1]) == (low, high)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        boundary_sql("Quantity", "v", None, high=False)
