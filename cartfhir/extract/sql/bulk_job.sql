-- meta.bulk_job: Bulk Data $export jobs, so a crashed run resumes polling instead of
-- starting over. Grain: status_url.
--   site           text: site id
--   status_url     text: the Content-Location the server gave at kick-off, secret-looking
--                  query values masked (such a job cannot be resumed after a crash)
--   kickoff_url    text: the kick-off request, secrets masked
--   since          text: the _since sent (null for a full export)
--   status         text: running | downloaded | failed | cancelled | abandoned (a running
--                  job whose masked status URL could not be polled again)
--   run_id         text: the run that kicked it off
--   started        timestamptz: kick-off time (client clock)
--   finished       timestamptz: when it left 'running'
--   transaction_time text: the manifest's transactionTime (the server's clock)
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
