-- raw.deleted: resources a bulk export reported deleted (manifest 'deleted' Bundles),
-- removed from raw.resources. Grain: (site, resource_type, id, run_id).
--   site, resource_type, id  text: the resource that was deleted at the server
--   run_id                   text: the run that applied the deletion
--   resource                 json: the version raw.resources held before (null if none)
CREATE SCHEMA IF NOT EXISTS raw;
CREATE TABLE IF NOT EXISTS raw.deleted (
    site          VARCHAR NOT NULL,
    resource_type VARCHAR NOT NULL,
    id            VARCHAR NOT NULL,
    run_id        VARCHAR NOT NULL,
    resource      JSON
);
