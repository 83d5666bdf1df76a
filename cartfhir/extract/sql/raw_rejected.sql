-- raw.rejected: input lines that were not landed, with the reason.
-- Grain: one row per rejected line per run (landing the same bad file twice
-- gives two rows, told apart by run_id). Nothing here is in raw.resources.
--   site           text: site id from the config
--   source_uri     text: file:// URI of the NDJSON file
--   line_no        bigint: line in that file (1-based); for a corrupt gzip file,
--                  the first line that could not be read
--   resource_type  text: FHIR resourceType when the line named a known one, else null
--   reason         text: why the line was rejected, e.g. "not valid JSON: ...",
--                  "missing id", "fails FHIR R4B validation: ...",
--                  "conflicts with stored version ..."
--   payload        text: the line as read, cut to its first 65,536 characters
--                  (invalid UTF-8 shown as U+FFFD); empty for a corrupt gzip
--   run_id         text: meta.runs.run_id of the run that rejected it
--   rejected_at    timestamptz: when the row was written
CREATE SCHEMA IF NOT EXISTS raw;
CREATE TABLE IF NOT EXISTS raw.rejected (
    site          VARCHAR NOT NULL,
    source_uri    VARCHAR NOT NULL,
    line_no       BIGINT NOT NULL,
    resource_type VARCHAR,
    reason        VARCHAR NOT NULL,
    payload       VARCHAR NOT NULL,
    run_id        VARCHAR NOT NULL,
    rejected_at   TIMESTAMPTZ NOT NULL
);
