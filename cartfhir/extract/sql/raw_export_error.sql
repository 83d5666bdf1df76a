-- raw.export_error: OperationOutcomes from a bulk export's error files.
-- Grain: one OperationOutcome line of one error file.
--   site, run_id   text: where and when
--   url            text: the error file's URL, secrets masked
--   line_no        bigint: line in that file
--   severity       text: the worst issue severity in the outcome
--   text           text: the issues' diagnostics, joined
--   outcome        json: the OperationOutcome as received
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
