-- qa.unmapped_codes: description, grain, columns and expectations in unmapped_codes.yml
WITH signatures AS (
    -- Codes are read once per distinct signature, not once per record.
    SELECT site, resource_type, signature, count(*) AS records
    FROM qa.unmapped_record GROUP BY site, resource_type, signature
),
codings AS (
    SELECT DISTINCT site, resource_type, signature, records,
           json_text(coding, '$.system') AS system,
           json_text(coding, '$.code') AS code,
           coalesce(json_text(coding, '$.display'), code_text) AS display
    FROM (SELECT s.site, s.resource_type, s.signature, s.records, c.code_text,
                 explode(c.codings) AS coding
          FROM signatures AS s JOIN harmonized.code_concept AS c USING (signature)
          UNION ALL
          -- A code without codings (text alone) is one row without a coding.
          SELECT s.site, s.resource_type, s.signature, s.records, c.code_text, NULL
          FROM signatures AS s JOIN harmonized.code_concept AS c USING (signature)
          WHERE c.codings IS NOT NULL AND item_at(c.codings, 1) IS NULL) AS coded
),
counted AS (
    SELECT c.site, c.resource_type, c.system, c.code, c.display,
           k.system IS NOT NULL AS standard, coalesce(k.canonical, system_key(c.system)) AS canonical,
           sum(c.records) AS count
    FROM codings AS c
    LEFT JOIN ref.code_system AS k ON k.system = system_key(c.system)
    GROUP BY c.site, c.resource_type, c.system, c.code, c.display, k.system IS NOT NULL,
             coalesce(k.canonical, system_key(c.system))
),
notes AS (
    SELECT c.site, c.resource_type, c.system, c.code, c.display,
           'out of study scope: '
               || concat_ws('; ', ranked_values(array_sort(array_agg(ranked(n.rank, n.note))))) AS note
    FROM counted AS c
    JOIN ref.scope_note AS n
      ON n.system = c.canonical AND matches_regex(lower(c.display), n.pattern)
    GROUP BY c.site, c.resource_type, c.system, c.code, c.display
)
SELECT c.site, c.resource_type, c.system, c.code, c.display, c.standard,
       n.note AS scope_note, CAST(c.count AS BIGINT) AS count
FROM counted AS c
LEFT JOIN notes AS n
  ON n.site = c.site AND n.resource_type = c.resource_type
 AND n.system IS NOT DISTINCT FROM c.system AND n.code IS NOT DISTINCT FROM c.code
 AND n.display IS NOT DISTINCT FROM c.display
