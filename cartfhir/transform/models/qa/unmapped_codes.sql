-- qa.unmapped_codes: codes no concept map or text pattern recognised, with how often
-- they occur, so a data engineer sees what to map next. Grain: (site, resource_type,
-- system, code, display). A resource with several codings lists each of them.
--   site, resource_type  text: where the code was seen
--   system, code         text: the coding (null for a resource coded by text only)
--   display              text: the coding's display, else code.text
--   standard             boolean: the system is a standard one (ref.code_system): the maps
--                        are authoritative for it, so its text was not used to guess
--   scope_note           text: why the code is out of the study's scope, from its LOINC
--                        name (ref.scope_note: 'out of study scope: urine specimen'); a
--                        note for humans, never used to map. Null when nothing is known
--   count                bigint: resources carrying it
WITH codings AS (
    SELECT u.site, u.resource_type, u.resource_id,
           json_extract_string(c.coding, '$.system') AS system,
           json_extract_string(c.coding, '$.code') AS code,
           coalesce(json_extract_string(c.coding, '$.display'), u.code_text) AS display
    FROM qa.unmapped_record AS u,
         unnest(CASE WHEN len(u.codings) = 0 THEN [NULL::JSON] ELSE u.codings END) AS c(coding)
),
distinct_codes AS (
    SELECT DISTINCT c.site, c.resource_type, c.system, c.code, c.display,
           k.system IS NOT NULL AS standard, coalesce(k.canonical, c.system) AS canonical
    FROM codings AS c
    LEFT JOIN ref.code_system AS k ON k.system = c.system
),
notes AS (
    SELECT d.site, d.resource_type, d.system, d.code, d.display,
           'out of study scope: ' || string_agg(n.note, '; ' ORDER BY n.rank) AS note
    FROM distinct_codes AS d
    JOIN ref.scope_note AS n
      ON n.system = d.canonical AND regexp_matches(lower(d.display), n.pattern)
    GROUP BY ALL
),
counts AS (
    SELECT site, resource_type, system, code, display, count(DISTINCT resource_id) AS count
    FROM codings GROUP BY ALL
)
SELECT c.site, c.resource_type, c.system, c.code, c.display, d.standard,
       n.note AS scope_note, c.count
FROM counts AS c
JOIN distinct_codes AS d
  ON d.site = c.site AND d.resource_type = c.resource_type
 AND d.system IS NOT DISTINCT FROM c.system AND d.code IS NOT DISTINCT FROM c.code
 AND d.display IS NOT DISTINCT FROM c.display
LEFT JOIN notes AS n
  ON n.site = c.site AND n.resource_type = c.resource_type
 AND n.system IS NOT DISTINCT FROM c.system AND n.code IS NOT DISTINCT FROM c.code
 AND n.display IS NOT DISTINCT FROM c.display
