-- meta.extract_state: how far each incremental query has got, by the server's clock.
-- Grain: (site, query_key, resource_type). Advanced only after every request of
-- that query completed in a run; the next run asks for _lastUpdated=gt (REST)
-- or _since (bulk) a little before it.
--   site           text: site id
--   query_key      text: the query without patients or dates, e.g. 'Observation?category=laboratory'
--   resource_type  text: FHIR resource type the watermark covers
--   watermark      text: the server's instant (Bundle.meta.lastUpdated, Date header or
--                  the bulk manifest's transactionTime), exactly as the server wrote it
--   run_id         text: the run that advanced it
--   updated_at     timestamptz: when it was advanced (client clock, for people only)
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
