-- raw.export_error: description, grain, columns and expectations in raw_export_error.yml
CREATE SCHEMA IF NOT EXISTS raw;
CREATE TABLE IF NOT EXISTS raw.export_error (
    site     VARCHAR NOT NULL,
    run_id   VARCHAR NOT NULL,
    url      VARCHAR NOT NULL,
    line_no  BIGINT NOT NULL,
    severity VARCHAR,
    text     VARCHAR,
    outcome  JSON
);
