-- qa.validation_result: description, grain, columns and expectations in qa_validation_result.yml
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
