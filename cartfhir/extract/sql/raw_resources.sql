-- raw.resources: description, grain, columns and expectations in raw_resources.yml
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
