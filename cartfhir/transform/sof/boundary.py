"""SQL for FHIRPath ``lowBoundary([precision])`` and ``highBoundary([precision])``.

``boundary_sql(kind, value_sql, precision_sql, high)`` takes a SQL expression of
text (the value as FHIR JSON writes it) and returns a SQL expression of text: the
least (or greatest) value the input can stand for, written at the precision asked,
or NULL (FHIRPath empty) for an input, kind or precision it cannot serve. ``kind``
is ``"decimal"``, ``"date"``, ``"dateTime"`` or ``"time"``; ``precision_sql`` is a
SQL integer expression, or None for the type's greatest precision (decimal 8,
date 8, dateTime 17, time 9). The text uses only functions DuckDB and Spark SQL
share with the same meaning (CASE, regexp_extract, substr, instr, length, concat,
repeat, rpad, TRY_CAST to INT / DECIMAL / STRING, ``%``), so one text serves both.
(concat never sees a NULL here: DuckDB's skips it where Spark's returns NULL.)

Rules (FHIRPath 3.0 STU, and the SQL-on-FHIR suite's fn_boundary tests):
- decimal: the input's own digits give its precision, so ``1.0`` spans
  [0.95, 1.05]; that bound is floored (low) or ceiled (high) to ``precision``
  decimals, 0 to 17 (the most DECIMAL(37, 18) holds beside the half unit).
  Inputs must be plain decimals (no exponent), at most 18 integer digits and 17
  decimals; anything else gives NULL.
- date / dateTime / time: missing parts are filled with their least (greatest)
  values, February by the leap-year rule, milliseconds padded with 0 (9).
  Precisions are digit counts: date 4, 6, 8; dateTime 4, 6, 8, 10, 12, 14, 17;
  time 2, 4, 6, 9. A dateTime written with a time part carries a zone: its own,
  else +14:00 for the low and -12:00 for the high boundary (the earliest and
  latest instants it can be).

``value_sql`` is repeated many times in the result, so pass a column or a cheap
expression (bind a costly one in a subquery first). A decimal's precision is read
from its text, so take the text the JSON reader keeps: DuckDB's json_extract and
Spark's get_json_object both give ``1.0`` for 1.0, but Spark's VARIANT gives ``1``.
"""

from __future__ import annotations

KINDS = ("decimal", "date", "dateTime", "time")

# Greatest precision used when none is given (a temporal kind's others are in _CUT).
DEFAULT_PRECISION = {"decimal": 8, "date": 8, "dateTime": 17, "time": 9}
DECIMAL_MAX_PRECISION = 17

# Regular expressions in the syntax RE2 (DuckDB) and java.util.regex (Spark) read
# alike; no backslashes, because Spark string literals unescape them and DuckDB's do not.
_DECIMAL_RE = "^(-?)([0-9]+)(?:[.]([0-9]+))?$"
_DATE_RE = "^([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?$"
_DATETIME_RE = (
    "^([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2})(?:T([0-9]{2})(?::([0-9]{2})"
    "(?::([0-9]{2})(?:[.]([0-9]+))?)?)?)?)?)?(Z|[+-][0-9]{2}:[0-9]{2})?$"
)
_TIME_RE = "^T?([0-9]{2})(?::([0-9]{2})(?::([0-9]{2})(?:[.]([0-9]+))?)?)?$"

_DEC = "DECIMAL(37, 18)"  # two of these add to DECIMAL(38, 18) on both engines


def boundary_sql(kind: str, value_sql: str, precision_sql: str | None, high: bool) -> str:
    """The SQL text expression of ``value.lowBoundary(precision)`` (``high`` False) or
    ``value.highBoundary(precision)`` for a text ``value_sql`` of FHIRPath type ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"lowBoundary()/highBoundary() kind must be one of {KINDS}, not {kind!r}")
    p = (str(DEFAULT_PRECISION[kind]) if precision_sql is None
         else f"TRY_CAST(({precision_sql}) AS INT)")
    if kind == "decimal":
        return _decimal(value_sql, p, high)
    return _temporal(kind, value_sql, p, high)


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _group(value: str, pattern: str, index: int) -> str:
    return f"regexp_extract({value}, {_lit(pattern)}, {index})"


def _decimal(v: str, p: str, high: bool) -> str:
    int_digits = _group(v, _DECIMAL_RE, 2)
    scale = f"length({_group(v, _DECIMAL_RE, 3)})"
    # Half a unit of the input's last digit: 1.587 spans 1.5865 .. 1.5875.
    half = f"TRY_CAST(concat('0.', repeat('0', {scale}), '5') AS {_DEC})"
    bound = f"(TRY_CAST({v} AS {_DEC}) {'+' if high else '-'} {half})"
    text = f"CAST({bound} AS STRING)"  # always 18 decimals, e.g. 1.586500000000000000
    dot = f"instr({text}, '.')"
    kept = f"substr({text}, 1, {dot} + {p})"
    dropped_nonzero = f"regexp_extract(substr({text}, {dot} + {p} + 1), '[1-9]', 0) <> ''"
    # Truncation goes toward zero; step one unit of the last kept digit away from
    # zero when that is the floor (low, negative) or the ceiling (high, positive).
    away = f"{text} NOT LIKE '-%'" if high else f"{text} LIKE '-%'"
    unit = (f"TRY_CAST(CASE WHEN {p} = 0 THEN '1' "
            f"ELSE concat('0.', repeat('0', {p} - 1), '1') END AS {_DEC})")
    step = f"CASE WHEN {away} AND {dropped_nonzero} THEN {unit} ELSE TRY_CAST('0' AS {_DEC}) END"
    rounded = (f"CAST(TRY_CAST({kept} AS {_DEC}) {'+' if high else '-'} {step} AS STRING)")
    # Written again at exactly p decimals (the round trip also turns -0 into 0).
    out = f"substr({rounded}, 1, instr({rounded}, '.') + {p} - CASE WHEN {p} = 0 THEN 1 ELSE 0 END)"
    valid = (f"{_group(v, _DECIMAL_RE, 0)} = {v} AND length({int_digits}) <= 18 "
             f"AND {scale} <= {DECIMAL_MAX_PRECISION} "
             f"AND {p} BETWEEN 0 AND {DECIMAL_MAX_PRECISION}")
    return f"(CASE WHEN {valid} THEN {out} END)"


def _part(value: str, pattern: str, index: int, fill: str) -> str:
    """A matched part, or ``fill`` when the input stops before it."""
    got = _group(value, pattern, index)
    return f"CASE WHEN {got} = '' THEN {fill} ELSE {got} END"


def _month_end(year: str, month: str) -> str:
    y = f"TRY_CAST({year} AS INT)"
    leap = f"(({y} % 4 = 0 AND {y} % 100 <> 0) OR {y} % 400 = 0)"
    return (f"CASE WHEN ({month}) = '02' THEN CASE WHEN {leap} THEN '29' ELSE '28' END "
            f"WHEN ({month}) IN ('04', '06', '09', '11') THEN '30' ELSE '31' END")


def _millis(value: str, pattern: str, index: int, high: bool) -> str:
    # Fewer than three digits stand for a span: .5 is .500 .. .599; more are cut.
    got = _group(value, pattern, index)
    return f"rpad({got}, 3, {_lit('9' if high else '0')})"


# Where each precision ends in the fully filled text (YYYY-MM-DDThh:mm:ss.fff, hh:mm:ss.fff).
_CUT = {
    "date": {4: 4, 6: 7, 8: 10},
    "dateTime": {4: 4, 6: 7, 8: 10, 10: 13, 12: 16, 14: 19, 17: 23},
    "time": {2: 2, 4: 5, 6: 8, 9: 12},
}


def _temporal(kind: str, v: str, p: str, high: bool) -> str:
    def pick(low: str, greatest: str) -> str:
        return _lit(greatest if high else low)

    rx = {"date": _DATE_RE, "dateTime": _DATETIME_RE, "time": _TIME_RE}[kind]
    first = 1
    full = ""
    if kind != "time":
        year = _group(v, rx, 1)
        month = _part(v, rx, 2, pick("01", "12"))
        day = _part(v, rx, 3, _month_end(year, month) if high else "'01'")
        full = f"{year}, '-', {month}, '-', {day}"
        first = 4
    if kind != "date":
        hour = _part(v, rx, first, pick("00", "23"))
        minute = _part(v, rx, first + 1, pick("00", "59"))
        second = _part(v, rx, first + 2, pick("00", "59"))
        clock = f"{hour}, ':', {minute}, ':', {second}, '.', {_millis(v, rx, first + 3, high)}"
        full = f"{full}, 'T', {clock}" if full else clock
    cut = " ".join(f"WHEN {n} THEN {end}" for n, end in _CUT[kind].items())
    text = f"substr(concat({full}), 1, CASE {p} {cut} END)"
    if kind == "dateTime":  # a time part carries a zone
        zone = _part(v, rx, 8, pick("+14:00", "-12:00"))
        text = f"concat({text}, CASE WHEN {p} >= 10 THEN {zone} ELSE '' END)"
    # The precision is checked up front: DuckDB's concat skips a NULL, Spark's returns NULL.
    valid = ", ".join(str(n) for n in _CUT[kind])
    return f"(CASE WHEN {_group(v, rx, 0)} = {v} AND {p} IN ({valid}) THEN {text} END)"
