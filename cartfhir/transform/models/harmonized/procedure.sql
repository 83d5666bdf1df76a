-- harmonized.procedure: Procedures mapped to study concepts (CAR-T infusion,
-- lymphodepletion, chemotherapy, HSCT). Grain: (site, procedure_id).
--   site, procedure_id  text: provenance
--   patient_key         text: HMAC pseudonym
--   concept             text: cart_infusion | lymphodepletion | chemotherapy | hsct
--   matched_by          text: the mapping rule
--   start_date          date: local day performed (performedDateTime or performedPeriod.start)
--   end_date            date: performedPeriod.end, else start_date
--   target              text: CAR target from the product text (CD19, CD19/CD22, ...), else null
--   product_text        text: usedCode text as recorded
--   problem             text: why the row is unusable (status, no patient, no date)
WITH mapped AS (
    SELECT o.*, k.patient_key, cc.concept, cc.matched_by
    FROM flat.procedure AS o
    JOIN harmonized.resource_code AS rc
      ON rc.site = o.site AND rc.resource_type = 'Procedure' AND rc.resource_id = o.procedure_id
    JOIN harmonized.code_concept AS cc USING (signature)
    JOIN ref.concept AS c ON c.concept = cc.concept AND c.kind = 'procedure'
    LEFT JOIN raw.patient_key AS k ON k.site = o.site AND k.patient_id = o.patient_id
    WHERE cc.status = 'mapped'
),
targets AS (
    SELECT m.site, m.procedure_id, t.target
    FROM mapped AS m
    JOIN ref.target AS t
      ON regexp_matches(lower(coalesce(m.used_text, '') || ' ' || coalesce(m.code_text, '')),
                        t.pattern)
    QUALIFY row_number() OVER (PARTITION BY m.site, m.procedure_id
                               ORDER BY t.priority DESC, t.target) = 1
)
SELECT m.site, m.procedure_id, m.patient_key, m.concept, m.matched_by,
       local_date(coalesce(m.performed_datetime, m.performed_start)) AS start_date,
       coalesce(local_date(m.performed_end),
                local_date(coalesce(m.performed_datetime, m.performed_start))) AS end_date,
       t.target, m.used_text AS product_text,
       CASE
           WHEN m.status IN ('entered-in-error', 'not-done')
               THEN 'status ' || m.status || ': not performed'
           WHEN m.status NOT IN ('completed', 'in-progress', 'stopped') OR m.status IS NULL
               THEN 'status ' || coalesce(m.status, 'missing') || ': not known to be performed'
           WHEN m.patient_key IS NULL THEN 'no known patient (subject missing or not landed)'
           WHEN local_date(coalesce(m.performed_datetime, m.performed_start)) IS NULL
               THEN 'no usable performed date'
       END AS problem
FROM mapped AS m
LEFT JOIN targets AS t ON t.site = m.site AND t.procedure_id = m.procedure_id
