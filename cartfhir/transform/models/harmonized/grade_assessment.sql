-- harmonized.grade_assessment: description, grain, columns and expectations in grade_assessment.yml
WITH mapped AS (
    SELECT o.*, k.patient_key, m.concept AS assessment, s.use AS status_use,
           to_int(c.plausible_min) AS lowest, to_int(c.plausible_max) AS highest,
           z.timezone AS site_timezone
    FROM flat.observation AS o
    JOIN harmonized.record_concept AS m
      ON m.site = o.site AND m.resource_type = 'Observation' AND m.resource_id = o.observation_id
     AND m.kind = 'assessment'
    JOIN ref.concept AS c ON c.concept = m.concept
    LEFT JOIN raw.patient_key AS k ON k.site = o.site AND k.patient_id = o.patient_id
    LEFT JOIN ref.record_status AS s
      ON s.resource_type = 'Observation' AND s.element = 'status' AND s.status = o.status
    LEFT JOIN ref.site AS z ON z.site = o.site
),
graded AS (
    SELECT *,
           replace(assessment, '_grade', '') AS concept,
           site_date(coalesce(effective_datetime, effective_start, effective_instant, issued),
                     site_timezone) AS assessed_date,
           coalesce(value_integer, to_int(value_number),
                    grade_from_text(value_concept_code), grade_from_text(value_concept_text),
                    grade_from_text(value_concept_display), grade_from_text(value_string)) AS grade
    FROM mapped
),
coded AS (
    -- The kind of problem (ref.quarantine_reason), decided once; the sentence follows from it.
    SELECT *,
           CASE
               WHEN status_use = 'void' THEN 'retracted'
               WHEN status_use IS DISTINCT FROM 'usable' THEN 'not_final'
               WHEN patient_key IS NULL THEN 'no_patient'
               WHEN assessed_date IS NULL THEN 'no_date'
               WHEN grade IS NULL OR grade NOT BETWEEN lowest AND highest THEN 'no_grade'
           END AS problem_code
    FROM graded
)
SELECT site, observation_id, patient_key, concept, assessed_date, grade, problem_code,
       CASE problem_code
           WHEN 'retracted' THEN 'status ' || status || ': the assessment was retracted'
           WHEN 'not_final'
               THEN 'status ' || coalesce(status, 'missing') || ': not a final assessment'
           WHEN 'no_patient' THEN 'no known patient (subject missing or not landed)'
           WHEN 'no_date' THEN 'no usable effective date'
           WHEN 'no_grade' THEN 'no grade ' || lowest || '-' || highest || ' in the value'
       END AS problem
FROM coded
