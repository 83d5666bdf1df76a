-- meta.runs: one row per cartfhir command run against this database.
-- Grain: run_id. Written at start (status 'running') and updated at the end; the next
-- command to open the database for writing marks a run whose process died 'interrupted'.
--   run_id        text: unique id of the run (UTC timestamp + random suffix)
--   started       timestamptz: when the run began
--   finished      timestamptz: when it ended (null while running or if the process died)
--   status        text: running | success | partial | failed | interrupted
--   command       text: the CLI command or API call, secrets never included
--   config_hash   text: sha256 of the config's content
--   tool_version  text: cartfhir version
--   counts        json: per site and resource type, what the run did
--   message       text: error or summary message
--   stage         text: extract | transform | validate | analyze (one command line can run several)
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
