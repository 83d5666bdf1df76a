-- meta.runs: one row per cartfhir command run against this database.
-- Grain: run_id. Written at start (status 'running') and updated at the end.
--   run_id        text: unique id of the run (UTC timestamp + random suffix)
--   started       timestamptz: when the run began
--   finished      timestamptz: when it ended (null while running or if the process died)
--   status        text: running | success | partial | failed
--   command       text: the CLI command or API call, secrets never included
--   config_hash   text: sha256 of the config's content
--   tool_version  text: cartfhir version
--   counts        json: per site and resource type, what the run did
--   message       text: error or summary message
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
    message      VARCHAR
);
