-- meta.bulk_job: description, grain, columns and expectations in bulk_job.yml
CREATE SCHEMA IF NOT EXISTS meta;
CREATE TABLE IF NOT EXISTS meta.bulk_job (
    site             VARCHAR NOT NULL,
    status_url       VARCHAR PRIMARY KEY,
    kickoff_url      VARCHAR NOT NULL,
    since            VARCHAR,
    status           VARCHAR NOT NULL,
    run_id           VARCHAR NOT NULL,
    started          TIMESTAMPTZ NOT NULL,
    finished         TIMESTAMPTZ,
    transaction_time VARCHAR
);
