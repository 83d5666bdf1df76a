-- harmonized.resource_code: what each Observation (and each Observation.component),
-- Condition, Procedure and MedicationAdministration is coded as.
-- Grain: (site, resource_type, resource_id). Mapping works on distinct code
-- signatures (harmonized.code_concept), which are few, instead of on every row.
--   site           text: site id
--   resource_type  text: Observation | Condition | Procedure | MedicationAdministration
--   resource_id    text: the resource's id (raw identifier; stays in the site); an
--                  Observation.component is '<observation id>#<component index>'
--   code_text      text: code.text as recorded
--   codings        json[]: code.coding as recorded ({system, code, display} objects)
--   signature      text: md5 of (site, type, code_text, codings); joins to code_concept
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
SELECT site, resource_type, resource_id, code_text, coalesce(codings, []) AS codings,
       md5(concat_ws('|', site, resource_type, coalesce(code_text, ''),
                     CAST(coalesce(codings, []) AS VARCHAR))) AS signature
FROM all_codes
