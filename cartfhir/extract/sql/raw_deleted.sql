-- raw.deleted: description, grain, columns and expectations in raw_deleted.yml
CREATE SCHEMA IF NOT EXISTS raw;
CREATE TABLE IF NOT EXISTS raw.deleted (
    site          VARCHAR NOT NULL,
    resource_type VARCHAR NOT NULL,
    id            VARCHAR NOT NULL,
    run_id        VARCHAR NOT NULL,
    resource      JSON
);
