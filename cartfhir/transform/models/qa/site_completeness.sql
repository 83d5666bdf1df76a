-- qa.site_completeness: description, grain, columns and expectations in site_completeness.yml
WITH study_record AS (
    -- Records whose code mapped to a study concept, or ambiguously to several.
    SELECT r.site, r.resource_type, r.resource_id
    FROM harmonized.resource_code AS r
    JOIN harmonized.code_concept AS c USING (signature)
    WHERE c.status IN ('mapped', 'ambiguous')
),
episodes AS (
    SELECT site, count(*) AS episodes FROM cohort.episode GROUP BY site
),
resources AS (
    SELECT site, count(*) AS resources FROM harmonized.resource_code GROUP BY site
),
study_records AS (
    SELECT site, count(*) AS study_records FROM study_record GROUP BY site
),
quarantined AS (
    SELECT site, count(*) AS quarantined
    FROM (SELECT DISTINCT q.site, q.resource_type, q.resource_id
          FROM qa.quarantine AS q
          JOIN study_record AS r USING (site, resource_type, resource_id)) AS distinct_records
    GROUP BY site
),
unmapped AS (
    -- Local codes or text nothing recognised count; standard codes no map knows are out of
    -- scope (not the study's) and count in neither share.
    SELECT site, count(*) FILTER (WHERE NOT standard_coded) AS unmapped,
           count(*) FILTER (WHERE standard_coded) AS out_of_scope
    FROM qa.unmapped_record GROUP BY site
),
landed AS (
    SELECT site, count(*) AS landed FROM raw.resources GROUP BY site
),
rejected AS (
    SELECT site, count(*) AS rejected
    FROM (SELECT DISTINCT site, source_uri, line_no FROM raw.rejected) AS distinct_lines
    GROUP BY site
),
counts AS (
    SELECT s.site,
           coalesce(e.episodes, 0) AS episodes,
           coalesce(r.resources, 0) AS resources,
           coalesce(m.study_records, 0) AS study_records,
           coalesce(q.quarantined, 0) AS quarantined,
           coalesce(u.unmapped, 0) AS unmapped,
           coalesce(u.out_of_scope, 0) AS out_of_scope,
           coalesce(l.landed, 0) AS landed,
           coalesce(j.rejected, 0) AS rejected
    FROM ref.site AS s
    LEFT JOIN episodes AS e USING (site)
    LEFT JOIN resources AS r USING (site)
    LEFT JOIN study_records AS m USING (site)
    LEFT JOIN quarantined AS q USING (site)
    LEFT JOIN unmapped AS u USING (site)
    LEFT JOIN landed AS l USING (site)
    LEFT JOIN rejected AS j USING (site)
)
SELECT *,
       CAST(quarantined AS DOUBLE) / greatest(study_records, 1) AS quarantine_share,
       CAST(unmapped AS DOUBLE) / greatest(study_records + unmapped, 1) AS unmapped_share,
       CAST(rejected AS DOUBLE) / greatest(rejected + landed, 1) AS rejected_share
FROM counts
ORDER BY site NULLS LAST
