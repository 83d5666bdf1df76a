-- harmonized.resource_code: what each Observation, Condition, Procedure and
-- MedicationAdministration is coded as.
-- Grain: (site, resource_type, resource_id). Mapping works on distinct code
-- signatures (harmonized.code_concept), which are few, instead of on every row.
--   site           text: site id
--   resource_type  text: Observation | Condition | Procedure | MedicationAdministration
--   resource_id    text: the resource's id (raw identifier; stays in the site); an
--                  Observation.component is '<observation id>#<component index>'
--   code_text      text: code.text as recorded
--   codings        struct(system, code, display)[]: code.coding, sorted
--   signature      text: md5 of (site, type, code_text, codings); joins to code_concept
WITH observation AS (
    SELECT o.site, 'Observation' AS resource_type, o.observation_id AS resource_id, o.code_text,
           list(struct_pack(system := c.system, code := c.code, display := c.display)
                ORDER BY c.system, c.code, c.display) FILTER (WHERE c.observation_id IS NOT NULL)
               AS codings
    FROM flat.observation AS o
    LEFT JOIN flat.observation_coding AS c
           ON c.site = o.site AND c.observation_id = o.observation_id
    GROUP BY ALL
),
component AS (
    -- Results carried as Observation.component (a cytokine panel) are records of their own:
    -- '<observation id>#<component index>'.
    SELECT o.site, 'Observation', o.observation_id || '#' || o.component_index, o.code_text,
           list(struct_pack(system := c.system, code := c.code, display := c.display)
                ORDER BY c.system, c.code, c.display) FILTER (WHERE c.observation_id IS NOT NULL)
    FROM flat.observation_component AS o
    LEFT JOIN flat.observation_component_coding AS c
           ON c.site = o.site AND c.observation_id = o.observation_id
          AND c.component_index = o.component_index
    GROUP BY ALL
),
condition AS (
    SELECT o.site, 'Condition', o.condition_id, o.code_text,
           list(struct_pack(system := c.system, code := c.code, display := c.display)
                ORDER BY c.system, c.code, c.display) FILTER (WHERE c.condition_id IS NOT NULL)
    FROM flat.condition AS o
    LEFT JOIN flat.condition_coding AS c ON c.site = o.site AND c.condition_id = o.condition_id
    GROUP BY ALL
),
procedure AS (
    SELECT o.site, 'Procedure', o.procedure_id, o.code_text,
           list(struct_pack(system := c.system, code := c.code, display := c.display)
                ORDER BY c.system, c.code, c.display) FILTER (WHERE c.procedure_id IS NOT NULL)
    FROM flat.procedure AS o
    LEFT JOIN flat.procedure_coding AS c ON c.site = o.site AND c.procedure_id = o.procedure_id
    GROUP BY ALL
),
medication AS (
    SELECT o.site, 'MedicationAdministration', o.medication_administration_id, o.code_text,
           list(struct_pack(system := c.system, code := c.code, display := c.display)
                ORDER BY c.system, c.code, c.display)
               FILTER (WHERE c.medication_administration_id IS NOT NULL)
    FROM flat.medication_administration AS o
    LEFT JOIN flat.medication_administration_coding AS c
           ON c.site = o.site AND c.medication_administration_id = o.medication_administration_id
    GROUP BY ALL
),
all_codes AS (
    SELECT * FROM observation
    UNION ALL SELECT * FROM component
    UNION ALL SELECT * FROM condition
    UNION ALL SELECT * FROM procedure
    UNION ALL SELECT * FROM medication
)
SELECT site, resource_type, resource_id, code_text, coalesce(codings, []) AS codings,
       md5(concat_ws('|', site, resource_type, coalesce(code_text, ''),
                     CAST(coalesce(codings, []) AS VARCHAR))) AS signature
FROM all_codes
