-- The functions the models share, on Spark: the same names and arguments as the DuckDB
-- macros in macros.sql, as temporary SQL functions (cartfhir.spark.models.create_functions
-- runs this file one statement at a time). Keep each pair's meaning identical.
-- Spark string literals treat a backslash as an escape: write '\\d' for the regex \d.
-- cohort and qa helpers
-- is_event(source_type, grade): see macros.sql.
CREATE OR REPLACE TEMPORARY FUNCTION is_event(source_type STRING, grade INT) RETURNS BOOLEAN
    RETURN NOT (source_type = 'Observation' AND grade = 0);
-- day_diff(a, b): see macros.sql.
CREATE OR REPLACE TEMPORARY FUNCTION day_diff(a DATE, b DATE) RETURNS BIGINT
    RETURN CAST(datediff(b, a) AS BIGINT);
-- lab_reading(value, comparator): see macros.sql.
CREATE OR REPLACE TEMPORARY FUNCTION lab_reading(value DOUBLE, comparator STRING)
    RETURNS STRUCT<value: DOUBLE, comparator: STRING>
    RETURN named_struct('value', value, 'comparator', comparator);
-- keyed(k, v) and values_in_order(list): see macros.sql (array_sort orders structs by
-- their fields in turn, as DuckDB's list_sort).
CREATE OR REPLACE TEMPORARY FUNCTION keyed(k BIGINT, v STRING) RETURNS STRUCT<k: BIGINT, v: STRING>
    RETURN named_struct('k', k, 'v', v);
CREATE OR REPLACE TEMPORARY FUNCTION values_in_order(l ARRAY<STRUCT<k: BIGINT, v: STRING>>)
    RETURNS ARRAY<STRING>
    RETURN transform(array_sort(l), s -> s.v);
-- text_matches(s, pattern): see macros.sql (Java regular expressions, found anywhere in s).
CREATE OR REPLACE TEMPORARY FUNCTION text_matches(s STRING, pattern STRING) RETURNS BOOLEAN
    RETURN regexp_like(s, pattern);
-- empty_texts(): see macros.sql.
CREATE OR REPLACE TEMPORARY FUNCTION empty_texts() RETURNS ARRAY<STRING>
    RETURN CAST(array() AS ARRAY<STRING>);
