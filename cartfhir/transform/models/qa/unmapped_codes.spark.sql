-- qa.unmapped_codes on Spark: unmapped_codes.sql but for the codings CTE (DuckDB's lateral
-- unnest is Spark's LATERAL VIEW explode; json_extract_string is get_json_object).
WITH signatures AS (
    -- Codes are read once per distinct signature, not once per record.
    SELECT site, resource_type, signature, count(*) AS records
    FROM qa.unmapped_record GROUP BY site, resource_type, signature
),
codings AS (
    SELECT DISTINCT s.site, s.resource_type, s.signature, s.records,
           get_json_object(u.coding, '$.system') AS system,
           get_json_object(u.coding, '$.code') AS code,
           coalesce(get_json_object(u.coding, '$.display'), c.code_text) AS display
    FROM signatures AS s
    JOIN harmonized.code_concept AS c USING (signature)
    -- A code without codings (text only) is one row with a NULL coding; NULL codings none.
    LATERAL VIEW explode(CASE WHEN size(c.codings) = 0 THEN array(CAST(NULL AS STRING))
                              ELSE c.codings END) u AS coding
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
               || concat_ws('; ', values_in_order(array_agg(keyed(n.rank, n.note)))) AS note
    FROM counted AS c
    JOIN ref.scope_note AS n
      ON n.system = c.canonical AND text_matches(lower(c.display), n.pattern)
    GROUP BY c.site, c.resource_type, c.system, c.code, c.display
)
SELECT c.site, c.resource_type, c.system, c.code, c.display, c.standard,
       n.note AS scope_note, CAST(c.count AS BIGINT) AS count
FROM counted AS c
LEFT JOIN notes AS n
  ON n.site = c.site AND n.resource_type = c.resource_type
 AND n.system IS NOT DISTINCT FROM c.system AND n.code IS NOT DISTINCT FROM c.code
 AND n.display IS NOT DISTINCT FROM c.display
