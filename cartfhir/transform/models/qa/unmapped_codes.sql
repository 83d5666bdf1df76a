-- qa.unmapped_codes: codes no concept map or text pattern recognised, with how often
-- they occur, so a data engineer sees what to map next. Grain: (site, resource_type,
-- system, code, display). A resource with several codings lists each of them.
--   site, resource_type  text: where the code was seen
--   system, code         text: the coding (null for a resource coded by text only)
--   display              text: the coding's display, else code.text
--   count                bigint: resources carrying it
WITH unmapped AS (
    SELECT r.site, r.resource_type, r.resource_id, r.code_text, r.codings
    FROM harmonized.resource_code AS r
    JOIN harmonized.code_concept AS c USING (signature)
    WHERE c.status = 'unmapped'
      -- A panel whose results are its components is not itself a result to map.
      AND NOT EXISTS (SELECT 1 FROM flat.observation AS o
                      WHERE r.resource_type = 'Observation' AND o.site = r.site
                        AND o.observation_id = r.resource_id AND o.has_components
                        AND o.value_number IS NULL AND o.value_string IS NULL)
),
codings AS (
    SELECT u.site, u.resource_type, u.resource_id, u.code_text,
           json_extract_string(c.coding, '$.system') AS system,
           json_extract_string(c.coding, '$.code') AS code,
           json_extract_string(c.coding, '$.display') AS display
    FROM unmapped AS u,
         unnest(CASE WHEN len(u.codings) = 0 THEN [NULL::JSON] ELSE u.codings END) AS c(coding)
)
SELECT site, resource_type, system, code, coalesce(display, code_text) AS display,
       count(DISTINCT resource_id) AS count
FROM codings
GROUP BY ALL
