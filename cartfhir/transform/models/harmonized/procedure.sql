-- harmonized.procedure: description, grain, columns and expectations in procedure.yml
WITH records AS (
    SELECT site, procedure_id, 'Procedure' AS resource_type, patient_id, status, code_text,
           coalesce(performed_datetime, performed_start) AS started, performed_end AS ended,
           used_text, CAST(NULL AS DOUBLE) AS dose_value, CAST(NULL AS STRING) AS dose_unit
    FROM flat.procedure
    UNION ALL
    SELECT site, medication_administration_id, 'MedicationAdministration', patient_id, status,
           code_text, coalesce(effective_datetime, effective_start), effective_end, code_text,
           CAST(dose_value AS DOUBLE), coalesce(nullif(dose_unit_code, ''), dose_unit)
    FROM flat.medication_administration
),
mapped AS (
    SELECT o.*, k.patient_key, m.concept, m.matched_by, s.use AS status_use,
           z.timezone AS site_timezone,
           -- The kind of problem (ref.quarantine_reason), decided once; the sentence follows.
           CASE
               WHEN s.use = 'void' THEN 'not_performed'
               WHEN s.use IS DISTINCT FROM 'usable' THEN 'not_final'
               WHEN k.patient_key IS NULL THEN 'no_patient'
               WHEN site_date(o.started, z.timezone) IS NULL THEN 'no_date'
           END AS problem_code
    FROM records AS o
    JOIN harmonized.record_concept AS m
      ON m.site = o.site AND m.resource_type = o.resource_type AND m.resource_id = o.procedure_id
     AND m.kind = 'procedure'
    LEFT JOIN raw.patient_key AS k ON k.site = o.site AND k.patient_id = o.patient_id
    LEFT JOIN ref.record_status AS s
      ON s.resource_type = o.resource_type AND s.element = 'status' AND s.status = o.status
    LEFT JOIN ref.site AS z ON z.site = o.site
),
target_matches AS (
    SELECT m.site, m.procedure_id, t.target,
           row_number() OVER (PARTITION BY m.site, m.procedure_id
                              ORDER BY t.priority DESC NULLS LAST, t.target NULLS LAST) AS pick
    FROM mapped AS m
    JOIN ref.target AS t
      ON matches_regex(lower(coalesce(m.used_text, '') || ' ' || coalesce(m.code_text, '')),
                       t.pattern)
),
targets AS (
    SELECT site, procedure_id, target FROM target_matches WHERE pick = 1
)
SELECT m.site, m.procedure_id, m.resource_type, m.patient_key, m.concept, m.matched_by,
       site_date(m.started, m.site_timezone) AS start_date,
       coalesce(site_date(m.ended, m.site_timezone), site_date(m.started, m.site_timezone))
           AS end_date,
       t.target, m.used_text AS product_text,
       m.dose_value * u.factor + u.offset AS dose,
       m.problem_code,
       CASE m.problem_code
           WHEN 'not_performed' THEN 'status ' || m.status || ': not performed'
           WHEN 'not_final'
               THEN 'status ' || coalesce(m.status, 'missing') || ': not known to be performed'
           WHEN 'no_patient' THEN 'no known patient (subject missing or not landed)'
           WHEN 'no_date' THEN 'no usable performed date'
       END AS problem
FROM mapped AS m
LEFT JOIN targets AS t ON t.site = m.site AND t.procedure_id = m.procedure_id
LEFT JOIN ref.unit AS u ON u.unit_group = 'cell_dose' AND u.unit_key = unit_key(m.dose_unit)
