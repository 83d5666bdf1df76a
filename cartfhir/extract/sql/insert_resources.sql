-- Append the resources of one batch that no stored row can share a key with.
-- Parameters: $site, $run_id. Reads the registered batch _landing_batch (the
-- columns upsert_resources.sql reads). The landing code takes this statement
-- instead of the MERGE only when it knows that no key of the batch is stored:
-- the site had no rows when landing began and no earlier batch wrote the key.
-- Appending skips the MERGE's join against the table, the larger part of its cost.
INSERT INTO raw.resources
    (site, resource_type, id, key_hash, version_id, last_updated, resource,
     content_hash, source_uri, line_no, run_id, loaded_at)
SELECT $site, resource_type, id,
       md5_number_lower(resource_type || '/' || id),
       version_id,
       -- as in upsert_resources.sql: UTC whatever the session's TimeZone
       timezone('UTC', make_timestamp(last_updated_us)),
       resource, content_hash, source_uri, line_no, $run_id, now()
FROM _landing_batch;
