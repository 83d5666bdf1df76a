-- raw.resources: the latest landed version of every FHIR resource, as received.
-- Grain: (site, resource_type, id), unique. One row per resource; a newer
-- version (by meta.lastUpdated, then meta.versionId) replaces the older one in
-- place. Uniqueness is kept by the landing code (cartfhir/extract/landing.py),
-- not by a PRIMARY KEY: maintaining that index doubled the cost of landing.
--   site           text: site id from the config the resource was landed for
--   resource_type  text: FHIR resourceType (e.g. Observation)
--   id             text: the resource's logical id (FHIR id pattern)
--   key_hash       ubigint: md5_number_lower(resource_type || '/' || id); lets
--                  landing find stored resources without comparing strings.
--                  Not an identifier: different resources may share it
--   version_id     text: meta.versionId, null when the resource has none
--   last_updated   timestamptz: meta.lastUpdated, null when the resource has none
--   resource       json: the resource exactly as received (one NDJSON line)
--   content_hash   text: sha256 of the resource's canonical JSON (keys sorted, no
--                  whitespace); equal hashes mean equal content
--   source_uri     text: file:// URI of the NDJSON file the stored version came from
--   line_no        bigint: line of that file (1-based)
--   run_id         text: meta.runs.run_id of the run that stored this version
--   loaded_at      timestamptz: when this version was stored; unchanged when
--                  the same version is landed again
CREATE SCHEMA IF NOT EXISTS raw;
CREATE TABLE IF NOT EXISTS raw.resources (
    site          VARCHAR NOT NULL,
    resource_type VARCHAR NOT NULL,
    id            VARCHAR NOT NULL,
    key_hash      UBIGINT NOT NULL,
    version_id    VARCHAR,
    last_updated  TIMESTAMPTZ,
    resource      JSON NOT NULL,
    content_hash  VARCHAR NOT NULL,
    source_uri    VARCHAR NOT NULL,
    line_no       BIGINT NOT NULL,
    run_id        VARCHAR NOT NULL,
    loaded_at     TIMESTAMPTZ NOT NULL
);
