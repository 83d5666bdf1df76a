-- meta.runs: description, grain, columns and expectations in meta_runs.yml
CREATE SCHEMA IF NOT EXISTS meta;
CREATE TABLE IF NOT EXISTS meta.runs (
    run_id       VARCHAR PRIMARY KEY,
    started      TIMESTAMPTZ NOT NULL,
    finished     TIMESTAMPTZ,
    status       VARCHAR NOT NULL,
    command      VARCHAR NOT NULL,
    config_hash  VARCHAR,
    tool_version VARCHAR NOT NULL,
    counts       JSON,
    message      VARCHAR,
    stage        VARCHAR
);
-- Databases made before runs had a stage get the column (null for their old runs).
ALTER TABLE meta.runs ADD COLUMN IF NOT EXISTS stage VARCHAR;
