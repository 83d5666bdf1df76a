-- The functions the models share, on Spark: the same names and arguments as the DuckDB
-- macros in macros.sql, as temporary SQL functions (cartfhir.spark.models.create_functions
-- runs this file one statement at a time). Keep each pair's meaning identical.
-- Spark string literals treat a backslash as an escape: write '\\d' for the regex \d.
-- cohort and qa helpers
-- is_event(source_type, grade): see macros.sql.
CREATE OR REPLACE TEMPORARY FUNCTION is_event(source_type STRING, grade INT) RETURNS BOOLEAN
    RETURN NOT (source_type = 'Observation' AND grade = 0);
