-- harmonized.resource_code: description, grain, columns and expectations in resource_code.yml
WITH all_codes AS (
    SELECT site, 'Observation' AS resource_type, observation_id AS resource_id, code_text,
           codings
    FROM flat.observation
    UNION ALL
    SELECT site, 'Observation', observation_id || '#' || component_index, code_text, codings
    FROM flat.observation_component
    UNION ALL
    SELECT site, 'Condition', condition_id, code_text, codings FROM flat.condition
    UNION ALL
    SELECT site, 'Procedure', procedure_id, code_text, codings FROM flat.procedure
    UNION ALL
    SELECT site, 'MedicationAdministration', medication_administration_id, code_text, codings
    FROM flat.medication_administration
),
signatures AS (
    -- Codes are few (a handful per million records): each distinct one is keyed and hashed
    -- once, not once a record. code.text absent or empty hashes alike.
    SELECT site, resource_type, text_key, codings,
           md5(concat_ws('|', site, resource_type, text_key, codings_key(codings))) AS signature
    FROM (SELECT DISTINCT site, resource_type, coalesce(code_text, '') AS text_key,
                 coalesce(codings, empty_list()) AS codings
          FROM all_codes) AS codes
)
SELECT a.site, a.resource_type, a.resource_id, a.code_text, s.codings, s.signature
FROM all_codes AS a
JOIN signatures AS s
  ON s.site = a.site AND s.resource_type = a.resource_type
 AND s.text_key = coalesce(a.code_text, '') AND s.codings = coalesce(a.codings, empty_list())
