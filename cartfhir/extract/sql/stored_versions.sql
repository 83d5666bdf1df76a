-- The stored version of every resource in the batch being landed, so the
-- landing code can decide insert / replace / unchanged / stale / conflict.
-- Parameters: $site. Reads the registered keys _landing_keys(resource_type, id).
-- The semi-join on key_hash lets DuckDB skip non-matching rows with a filter
-- on one integer column instead of comparing strings across the whole table.
-- A rare hash collision returns an extra row; the caller matches exact keys.
-- last_updated comes back as epoch microseconds: exact, and no time zone
-- library is needed on the Python side.
SELECT r.resource_type,
       r.id,
       r.version_id,
       epoch_us(r.last_updated) AS last_updated_us,
       r.content_hash
FROM raw.resources AS r
WHERE r.site = $site
  AND r.key_hash IN (
      SELECT md5_number_lower(resource_type || '/' || id) FROM _landing_keys
  );
