-- raw.rejected: description, grain, columns and expectations in raw_rejected.yml
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
