-- qa.validation_result: one row per expectation per validation run.
-- Grain: (run_id, suite, expectation_index).
--   run_id             text: meta.runs.run_id of the validation
--   suite              text: suite name (cartfhir/expectations/suites/<suite>.json)
--   expectation_index  integer: position in the suite
--   expectation        text: GX expectation type, e.g. expect_column_values_to_be_between
--   column_name        text: the column(s) it checks ('a,b' for pairs and compounds)
--   severity           text: error (fails the run) | warn (reported)
--   success            boolean: true only when GX evaluated it and it held on every batch
--   observed_value     text: GX's observed value (JSON), when it gives one
--   unexpected_count   bigint: rows that broke it
--   element_count      bigint: rows it looked at
--   unexpected_examples text: up to 5 offending values (JSON)
--   error              text: the exception GX raised while evaluating it (then success is false)
--   kwargs             text: the expectation's arguments (JSON)
--   validated_at       timestamptz: when the result was stored
CREATE SCHEMA IF NOT EXISTS qa;
CREATE TABLE IF NOT EXISTS qa.validation_result (
    run_id              VARCHAR NOT NULL,
    suite               VARCHAR NOT NULL,
    expectation_index   INTEGER NOT NULL,
    expectation         VARCHAR NOT NULL,
    column_name         VARCHAR,
    severity            VARCHAR NOT NULL,
    success             BOOLEAN NOT NULL,
    observed_value      VARCHAR,
    unexpected_count    BIGINT,
    element_count       BIGINT,
    unexpected_examples VARCHAR,
    error               VARCHAR,
    kwargs              VARCHAR,
    validated_at        TIMESTAMPTZ NOT NULL
);
