-- qa.quarantine: description, grain, columns and expectations in quarantine.yml
WITH observation AS (
    SELECT site, 'Observation' AS resource_type, observation_id AS resource_id, concept,
           problem_code AS reason_code, problem AS reason, value_original, unit_original
    FROM harmonized.observation_value WHERE problem IS NOT NULL
),
assessment AS (
    SELECT site, 'Observation', observation_id, concept || '_grade', problem_code, problem,
           CAST(grade AS DOUBLE), NULL
    FROM harmonized.grade_assessment WHERE problem IS NOT NULL
),
condition AS (
    SELECT site, 'Condition', condition_id, concept, problem_code, problem, CAST(NULL AS DOUBLE), NULL
    FROM harmonized.condition WHERE problem IS NOT NULL
),
procedure AS (
    -- Procedure or MedicationAdministration, as in harmonized.resource_code.
    SELECT site, resource_type, procedure_id, concept, problem_code, problem, CAST(NULL AS DOUBLE),
           NULL
    FROM harmonized.procedure WHERE problem IS NOT NULL
),
mapping AS (
    SELECT r.site, r.resource_type, r.resource_id, NULL,
           CASE c.status WHEN 'ambiguous' THEN 'ambiguous_code' ELSE 'excluded_code' END,
           CASE c.status
               WHEN 'ambiguous' THEN 'ambiguous mapping: ' || concat_ws(', ', c.candidates)
                                     || ' (add a site concept map to decide)'
               ELSE 'excluded by ' || c.matched_by END,
           CAST(NULL AS DOUBLE), NULL
    FROM harmonized.resource_code AS r
    JOIN harmonized.code_concept AS c USING (signature)
    WHERE c.status IN ('ambiguous', 'excluded')
),
quarantined AS (
    SELECT * FROM observation
    UNION ALL SELECT * FROM assessment
    UNION ALL SELECT * FROM condition
    UNION ALL SELECT * FROM procedure
    UNION ALL SELECT * FROM mapping
)
-- reason_code: the kind of reason (ref.quarantine_reason), named where the problem is decided.
SELECT site, resource_type, resource_id, concept, reason_code, reason, value_original,
       unit_original
FROM quarantined
