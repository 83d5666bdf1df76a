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
)
SELECT site, resource_type, resource_id, code_text, coalesce(codings, empty_list()) AS codings,
       md5(concat_ws('|', site, resource_type, coalesce(code_text, ''),
                     codings_key(coalesce(codings, empty_list())))) AS signature
FROM all_codes
