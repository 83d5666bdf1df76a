-- Write the winning versions of one batch into raw.resources in one statement.
-- Parameters: $site, $run_id. Reads the registered batch _landing_batch, which
-- holds only rows to write, one per key: the landing code has already dropped
-- unchanged, stale and conflicting lines, so every row here either inserts a
-- new resource or replaces the stored version.
MERGE INTO raw.resources AS t
USING (
    SELECT *,
           md5_number_lower(resource_type || '/' || id) AS key_hash,
           -- epoch microseconds -> instant; timezone('UTC', ...) so the session
           -- TimeZone setting cannot shift it
           timezone('UTC', make_timestamp(last_updated_us)) AS last_updated
    FROM _landing_batch
) AS s
ON t.site = $site
   AND t.key_hash = s.key_hash
   AND t.resource_type = s.resource_type
   AND t.id = s.id
WHEN MATCHED THEN UPDATE SET
    version_id   = s.version_id,
    last_updated = s.last_updated,
    resource     = s.resource,
    content_hash = s.content_hash,
    source_uri   = s.source_uri,
    line_no      = s.line_no,
    run_id       = $run_id,
    loaded_at    = now()
WHEN NOT MATCHED THEN INSERT
    (site, resource_type, id, key_hash, version_id, last_updated, resource,
     content_hash, source_uri, line_no, run_id, loaded_at)
VALUES
    ($site, s.resource_type, s.id, s.key_hash, s.version_id, s.last_updated,
     s.resource, s.content_hash, s.source_uri, s.line_no, $run_id, now());
