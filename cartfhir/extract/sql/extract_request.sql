-- meta.extract_request: description, grain, columns and expectations in extract_request.yml
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
