-- harmonized.condition: description, grain, columns and expectations in condition.yml
WITH mapped AS (
    SELECT o.*, k.patient_key, m.concept AS mapped_concept, m.grade AS code_grade, m.matched_by,
           v.use AS verification_use, c.use AS clinical_use, z.timezone AS site_timezone
    FROM flat.condition AS o
    JOIN harmonized.record_concept AS m
      ON m.site = o.site AND m.resource_type = 'Condition' AND m.resource_id = o.condition_id
     AND m.kind = 'condition'
    LEFT JOIN raw.patient_key AS k ON k.site = o.site AND k.patient_id = o.patient_id
    LEFT JOIN ref.record_status AS v
      ON v.resource_type = 'Condition' AND v.element = 'verificationStatus'
     AND v.status = o.verification_status
    LEFT JOIN ref.record_status AS c
      ON c.resource_type = 'Condition' AND c.element = 'clinicalStatus'
     AND c.status = o.clinical_status
    LEFT JOIN ref.site AS z ON z.site = o.site
),
classified AS (
    SELECT *,
           CASE WHEN mapped_concept = 'b_all' AND clinical_use = 'relapse'
                THEN 'relapse' ELSE mapped_concept END AS concept,
           site_date(coalesce(onset_datetime, onset_start, recorded_date), site_timezone)
               AS onset_date
    FROM mapped
),
graded AS (
    SELECT c.*,
           CASE WHEN c.concept IN ('crs', 'icans') THEN grade_from_text(c.stage_summary) END
               AS stage_grade,
           CASE WHEN c.concept IN ('crs', 'icans') THEN s.grade END AS severity_grade,
           -- The kind of problem (ref.quarantine_reason), decided once; the sentence follows.
           CASE
               WHEN c.verification_use = 'void' THEN 'retracted'
               WHEN c.patient_key IS NULL THEN 'no_patient'
               WHEN c.onset_date IS NULL THEN 'no_date'
           END AS problem_code
    FROM classified AS c
    LEFT JOIN ref.severity_grade AS s ON s.code = c.severity_code
),
site_matches AS (
    SELECT DISTINCT g.site, g.condition_id, b.body_site, b.rank
    FROM graded AS g
    JOIN ref.body_site AS b
      ON array_contains(split(coalesce(g.body_site_codes, ''), ','), b.code)
      OR matches_regex(lower(coalesce(g.body_site_text, '')), b.pattern)
),
sites AS (
    SELECT site, condition_id,
           ranked_values(array_sort(array_agg(ranked(rank, body_site)))) AS body_sites
    FROM site_matches GROUP BY site, condition_id
)
SELECT g.site, g.condition_id, g.patient_key, g.concept, g.matched_by, g.onset_date,
       coalesce(g.code_grade, g.stage_grade, g.severity_grade) AS grade,
       CASE WHEN g.code_grade IS NOT NULL THEN 'code'
            WHEN g.stage_grade IS NOT NULL THEN 'stage'
            WHEN g.severity_grade IS NOT NULL THEN 'severity' END AS grade_source,
       coalesce(s.body_sites, empty_list()) AS body_sites,
       g.problem_code,
       CASE g.problem_code
           WHEN 'retracted'
               THEN 'verification ' || g.verification_status || ': the diagnosis was retracted'
           WHEN 'no_patient' THEN 'no known patient (subject missing or not landed)'
           WHEN 'no_date' THEN 'no usable onset or recorded date'
       END AS problem
FROM graded AS g
LEFT JOIN sites AS s ON s.site = g.site AND s.condition_id = g.condition_id
