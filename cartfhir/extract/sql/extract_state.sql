-- meta.extract_state: description, grain, columns and expectations in extract_state.yml
CREATE SCHEMA IF NOT EXISTS meta;
CREATE TABLE IF NOT EXISTS meta.extract_state (
    site          VARCHAR NOT NULL,
    query_key     VARCHAR NOT NULL,
    resource_type VARCHAR NOT NULL,
    watermark     VARCHAR NOT NULL,
    run_id        VARCHAR NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (site, query_key, resource_type)
);
