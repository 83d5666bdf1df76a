-- meta.extract_request: one row per request batch (a search and all its pages) of a run.
-- Grain: (run_id, site, seq). The provenance of every landed REST resource.
--   run_id, site     text: the run and site
--   seq              integer: order within the site's run
--   query_key        text: the query without patients or dates
--   resource_type    text: the searched type (or 'Group', 'metadata', '$export' ...)
--   url              text: the first request's URL, secrets masked
--   patients         integer: patients in this batch (null for cohort searches)
--   pages            integer: pages followed
--   matched          integer: distinct match resources received (by type and id)
--   included         integer: distinct _include resources received
--   total            integer: Bundle.total announced by the server (null when absent)
--   shortfall        integer: total minus matched when the server sent fewer
--   status           text: complete | partial | failed
--   message          text: what went wrong, or server warnings
--   seconds          double: wall time of the batch
--   server_software, server_version, fhir_version  text: from the CapabilityStatement
--   final_url        text: the last URL that answered, after redirects, secrets masked
CREATE SCHEMA IF NOT EXISTS meta;
CREATE TABLE IF NOT EXISTS meta.extract_request (
    run_id          VARCHAR NOT NULL,
    site            VARCHAR NOT NULL,
    seq             INTEGER NOT NULL,
    query_key       VARCHAR NOT NULL,
    resource_type   VARCHAR NOT NULL,
    url             VARCHAR NOT NULL,
    patients        INTEGER,
    pages           INTEGER NOT NULL,
    matched         INTEGER NOT NULL,
    included        INTEGER NOT NULL,
    total           INTEGER,
    shortfall       INTEGER NOT NULL,
    status          VARCHAR NOT NULL,
    message         VARCHAR,
    seconds         DOUBLE NOT NULL,
    server_software VARCHAR,
    server_version  VARCHAR,
    fhir_version    VARCHAR
);
-- Added after the first release; older files get it here.
ALTER TABLE meta.extract_request ADD COLUMN IF NOT EXISTS final_url VARCHAR;
