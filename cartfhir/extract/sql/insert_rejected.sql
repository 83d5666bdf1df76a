-- Append one batch of rejected lines to raw.rejected.
-- Parameters: $site, $run_id. Reads the registered batch _landing_rejected.
INSERT INTO raw.rejected
    (site, source_uri, line_no, resource_type, reason, payload, run_id, rejected_at)
SELECT $site, source_uri, line_no, resource_type, reason, payload, $run_id, now()
FROM _landing_rejected;
