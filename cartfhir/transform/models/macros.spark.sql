-- The functions the models share, on Spark: the same names and arguments as the DuckDB
-- macros in macros.sql, as temporary SQL functions (cartfhir.spark.models.create_functions
-- runs this file one statement at a time). Keep each pair's meaning identical.
-- Spark string literals treat a backslash as an escape: write '\\d' for the regex \d.
-- RE2 (DuckDB) and Java (Spark) regexes differ in corners, so Spark's spell out what RE2
-- means: \s is [\t\n\f\r ], '.' is [^\n], '$' is \z (Java's '$' also matches before a final
-- line break), \b is ASCII (Java 17's \b counts any Unicode letter as a word character).
-- unit_key(u): see macros.sql.
CREATE OR REPLACE TEMPORARY FUNCTION unit_key(u STRING) RETURNS STRING RETURN
    regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
        lower(translate(
            regexp_replace(
                replace(replace(replace(replace(replace(
                    regexp_replace(translate(u, 'μµº％', 'uu°%'), '[\\t\\n\\f\\r \\x{A0}]+', ''),
                    '℃', 'Cel'), '℉', 'degF'), '°C', 'Cel'), '°F', 'degF'), '^', '*'),
                '10([⁰¹²³⁴⁵⁶⁷⁸⁹]+)', '10*$1'),
            '⁰¹²³⁴⁵⁶⁷⁸⁹', '0123456789')),
        '\\{[^}]*\\}|\\[|\\]|cells?', ''),
        '^[x×*]', ''),
        '10e\\+?([0-9])', '10*$1'),
        '(^|/)mc(g|l|mol|kat)', '$1u$2'),
        '([a-z])\\*([0-9])', '$1$2');
-- local_date(t): see macros.sql. Spark casts '2021-06' or '2021' to a day (DuckDB: NULL),
-- so the text must look like a day (DuckDB also takes single digits, spaces around and one
-- of '-', '/' or ' ' between the parts).
CREATE OR REPLACE TEMPORARY FUNCTION local_date(t STRING) RETURNS DATE RETURN
    CASE WHEN substr(t, 1, 10) RLIKE '^ *[0-9]{4}([-/ ])[0-9]{1,2}\\1[0-9]{1,2} *$'
         THEN try_cast(regexp_replace(trim(substr(t, 1, 10)), '[/ ]', '-') AS DATE) END;
-- site_date(t, tz): see macros.sql. from_utc_timestamp gives the wall time in tz of an
-- instant held as UTC (the session time zone); Spark wants the seconds before an offset.
CREATE OR REPLACE TEMPORARY FUNCTION site_date(t STRING, tz STRING) RETURNS DATE RETURN coalesce(
    CASE WHEN tz IS NOT NULL AND t RLIKE concat(
             '^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9]([.][0-9]+)?)?',
             '(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))\\z')
         THEN to_date(from_utc_timestamp(try_cast(
             regexp_replace(t, '(T[0-9]{2}:[0-9]{2})([^:0-9][^\\n]*)?\\z', '$1:00$2')
             AS TIMESTAMP), tz)) END,
    local_date(t));
-- fhir_instant(t): see macros.sql. A date-time needs a day and hh:mm; a date alone is
-- its midnight UTC (the session time zone is UTC). DuckDB reads 24:00 as the next midnight.
CREATE OR REPLACE TEMPORARY FUNCTION fhir_instant(t STRING) RETURNS TIMESTAMP RETURN coalesce(
    CASE WHEN t RLIKE '^ *[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}[T ]24:00(:00([.]0+)?)?([^0-9.:][^\\n]*)?$'
         THEN try_cast(regexp_replace(t, '[T ]24:00(:00)?', 'T00:00:00') AS TIMESTAMP)
              + INTERVAL 1 DAY
         WHEN t RLIKE '^ *[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([T ][0-9]{2}:[0-9]{2}([^\\n]*))?$'
         -- Spark wants the seconds before an offset ('23:30+08:00'); DuckDB does not
         THEN try_cast(regexp_replace(t, '([T ][0-9]{2}:[0-9]{2})([^:0-9][^\\n]*)?$', '$1:00$2')
                       AS TIMESTAMP) END,
    CAST(local_date(t) AS TIMESTAMP));
-- grade_from_text(t): see macros.sql.
CREATE OR REPLACE TEMPORARY FUNCTION grade_from_text(t STRING) RETURNS INT RETURN coalesce(
    try_cast(regexp_extract(t, '([0-5])', 1) AS INT),
    CASE upper(regexp_extract(t, '(?<![A-Za-z0-9_])(IV|V|I{1,3})(?![A-Za-z0-9_])', 1))
        WHEN 'I' THEN 1 WHEN 'II' THEN 2 WHEN 'III' THEN 3 WHEN 'IV' THEN 4 WHEN 'V' THEN 5
    END);
-- code_key(c): see macros.sql.
CREATE OR REPLACE TEMPORARY FUNCTION code_key(c STRING) RETURNS STRING RETURN
    upper(replace(trim(c), '.', ''));
-- system_key(s): see macros.sql.
CREATE OR REPLACE TEMPORARY FUNCTION system_key(s STRING) RETURNS STRING RETURN regexp_replace(
    regexp_replace(
        regexp_replace(
            regexp_replace(lower(trim(s)), '\\|[^\\n]*\\z', ''),
            '^https?://(www\\.)?', 'http://'),
        '^http://snomed\\.info/sct/[^\\n]*\\z', 'http://snomed.info/sct'),
    '/+\\z', '');
-- json_text(j, path): see macros.sql.
CREATE OR REPLACE TEMPORARY FUNCTION json_text(j STRING, path STRING) RETURNS STRING RETURN
    get_json_object(j, path);
-- codings_key(codings): see macros.sql. get_json_object is json_text's body: Spark cannot
-- call a SQL function on a lambda's variable.
CREATE OR REPLACE TEMPORARY FUNCTION codings_key(codings ARRAY<STRING>) RETURNS STRING RETURN
    array_join(transform(codings, c -> concat_ws('^',
        coalesce(get_json_object(c, '$.system'), ''), coalesce(get_json_object(c, '$.version'), ''),
        coalesce(get_json_object(c, '$.code'), ''), coalesce(get_json_object(c, '$.display'), ''))),
        '|');
-- matches_regex(t, p): see macros.sql (RLIKE finds p anywhere, as regexp_matches). A \b in
-- p (ref.text_pattern has them: '\bcar-?t\b') is spelled as RE2's ASCII word boundary, so
-- 'CAR-T细胞' matches as on DuckDB.
CREATE OR REPLACE TEMPORARY FUNCTION matches_regex(t STRING, p STRING) RETURNS BOOLEAN RETURN
    t RLIKE replace(p, '\\b',
        '(?:(?<![A-Za-z0-9_])(?=[A-Za-z0-9_])|(?<=[A-Za-z0-9_])(?![A-Za-z0-9_]))');
-- in_quotes(s): see macros.sql.
CREATE OR REPLACE TEMPORARY FUNCTION in_quotes(s STRING) RETURNS STRING RETURN '\'' || s || '\'';
-- empty_list(): see macros.sql.
CREATE OR REPLACE TEMPORARY FUNCTION empty_list() RETURNS ARRAY<STRING> RETURN array();
-- item_at(l, i): see macros.sql (ANSI element_at raises past the end; try_ does not).
CREATE OR REPLACE TEMPORARY FUNCTION item_at(l ARRAY<STRING>, i INT) RETURNS STRING RETURN
    try_element_at(l, i);
-- has_all(l, sub): see macros.sql.
CREATE OR REPLACE TEMPORARY FUNCTION has_all(l ARRAY<STRING>, sub ARRAY<STRING>)
    RETURNS BOOLEAN RETURN
    CASE WHEN l IS NOT NULL AND sub IS NOT NULL THEN size(array_except(sub, l)) = 0 END;
-- ranked(r, v), ranked_values(l): see macros.sql. Spark orders a NULL struct field first;
-- the flag before each field (false < true) orders it last, as DuckDB does.
CREATE OR REPLACE TEMPORARY FUNCTION ranked(r INT, v STRING)
    RETURNS STRUCT<r_null: BOOLEAN, r: INT, v_null: BOOLEAN, v: STRING>
    RETURN named_struct('r_null', r IS NULL, 'r', r, 'v_null', v IS NULL, 'v', v);
CREATE OR REPLACE TEMPORARY FUNCTION ranked_values(
    l ARRAY<STRUCT<r_null: BOOLEAN, r: INT, v_null: BOOLEAN, v: STRING>>)
    RETURNS ARRAY<STRING> RETURN transform(l, x -> x.v);
-- key_prefixes(c, n): see macros.sql (sequence(1, 0) counts down, so an empty key is no list).
CREATE OR REPLACE TEMPORARY FUNCTION key_prefixes(c STRING, n INT) RETURNS ARRAY<STRING> RETURN
    CASE WHEN least(length(code_key(c)), n) >= 1
         THEN transform(sequence(1, least(length(code_key(c)), n)), i -> left(code_key(c), i))
         WHEN c IS NOT NULL THEN array() END;
-- to_int(x): see macros.sql (Spark's cast truncates; bround rounds a half to even).
CREATE OR REPLACE TEMPORARY FUNCTION to_int(x DOUBLE) RETURNS INT RETURN CAST(bround(x, 0) AS INT);
-- num_text(x): see macros.sql. Java writes 1.0E7 from ten million on; DuckDB 10000000.0 up
-- to 1e15, a zero without sign.
CREATE OR REPLACE TEMPORARY FUNCTION num_text(x DOUBLE) RETURNS STRING RETURN CASE
    WHEN x = 0 THEN '0.0'
    WHEN abs(x) >= 1e7 AND abs(x) < 1e15 AND x = floor(x)
        THEN CAST(CAST(x AS BIGINT) AS STRING) || '.0'
    ELSE CAST(x AS STRING) END;
-- value_token(s), value_number(s), value_comparator(s), value_unit(s): see macros.sql.
CREATE OR REPLACE TEMPORARY FUNCTION value_token(s STRING) RETURNS STRING RETURN nullif(
    regexp_extract(s,
        '^[\\t\\n\\f\\r ]*(<=|>=|<|>|≤|≥|≦|≧|＜|＞)?[\\t\\n\\f\\r ]*([0-9.,]*[0-9]([eE][+-]?[0-9]+)?)',
        2),
    '');
CREATE OR REPLACE TEMPORARY FUNCTION value_number(s STRING) RETURNS DOUBLE RETURN CASE
    WHEN value_token(s) RLIKE '^[0-9]*\\.?[0-9]+([eE][+-]?[0-9]+)?\\z'
        THEN try_cast(value_token(s) AS DOUBLE)
    WHEN value_token(s) RLIKE '^[0-9]+,[0-9]+([eE][+-]?[0-9]+)?\\z'
         AND NOT value_token(s) RLIKE '^[1-9][0-9]?[0-9]?,[0-9][0-9][0-9]([eE]|\\z)'
        THEN try_cast(replace(value_token(s), ',', '.') AS DOUBLE)
END;
CREATE OR REPLACE TEMPORARY FUNCTION value_comparator(s STRING) RETURNS STRING RETURN
    CASE regexp_extract(s, '^[\\t\\n\\f\\r ]*(<=|>=|<|>|≤|≥|≦|≧|＜|＞)[\\t\\n\\f\\r ]*[0-9.,]*[0-9]', 1)
        WHEN '<' THEN '<' WHEN '＜' THEN '<'
        WHEN '<=' THEN '<=' WHEN '≤' THEN '<=' WHEN '≦' THEN '<='
        WHEN '>' THEN '>' WHEN '＞' THEN '>'
        WHEN '>=' THEN '>=' WHEN '≥' THEN '>=' WHEN '≧' THEN '>='
    END;
CREATE OR REPLACE TEMPORARY FUNCTION value_unit(s STRING) RETURNS STRING RETURN nullif(trim(
    regexp_extract(s,
        '^[\\t\\n\\f\\r ]*(<=|>=|<|>|≤|≥|≦|≧|＜|＞)?[\\t\\n\\f\\r ]*[0-9.,]*[0-9]([eE][+-]?[0-9]+)?[\\t\\n\\f\\r ]*([^\\n]*)\\z',
        3)),
    '');
-- cohort and qa helpers
-- is_event(source_type, grade): see macros.sql.
CREATE OR REPLACE TEMPORARY FUNCTION is_event(source_type STRING, grade INT) RETURNS BOOLEAN
    RETURN NOT (source_type = 'Observation' AND grade = 0);
-- day_diff(a, b): see macros.sql.
CREATE OR REPLACE TEMPORARY FUNCTION day_diff(a DATE, b DATE) RETURNS BIGINT
    RETURN CAST(datediff(b, a) AS BIGINT);
-- latest_key(t, v): see macros.sql.
CREATE OR REPLACE TEMPORARY FUNCTION latest_key(t TIMESTAMP, v DOUBLE) RETURNS ARRAY<DOUBLE>
    RETURN CASE WHEN t IS NOT NULL AND v IS NOT NULL
                THEN array(CAST(unix_micros(t) AS DOUBLE), v) END;
-- lab_reading(value, comparator): see macros.sql.
CREATE OR REPLACE TEMPORARY FUNCTION lab_reading(value DOUBLE, comparator STRING)
    RETURNS STRUCT<value: DOUBLE, comparator: STRING>
    RETURN named_struct('value', value, 'comparator', comparator);
