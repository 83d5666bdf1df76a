-- harmonized.code_concept: the study concept of each distinct code signature.
-- Grain: (signature). Candidates come from code maps (ref.concept_map: the
-- package defaults, then site and study maps with a higher priority) and from text
-- patterns on code.text and coding displays (ref.text_pattern). The highest
-- priority wins; several concepts at that priority are ambiguous unless a
-- ref.concept_combination joins them (neutropenia + fever = febrile neutropenia).
-- A coding in a standard system (ref.code_system: LOINC, SNOMED CT, ICD-10(-CM/-PCS),
-- CPT, HCPCS, RxNorm..., also under their OIDs) is authoritative. Precedence: (1) a map
-- of any of the signature's codings (default, study or site map: an explicit map is a
-- decision, not a guess), which a text pattern of a higher priority may still refine
-- or exclude (lymphodepletion is a chemotherapy code told apart by its text); (2) text
-- patterns, only when no coding is in a standard system (local codes or text alone);
-- (3) otherwise unmapped: a standard code no map knows is never guessed from its
-- display ('Bilirubin.total ... in Urine by Test strip' is not serum bilirubin).
--   signature      text: see harmonized.resource_code
--   site, resource_type, code_text  text: the signature's parts
--   codings        json[]: the signature's codings
--   standard_coded boolean: a coding is in a standard code system
--   concept        text: the study concept (null when unmapped, ambiguous or excluded)
--   grade          integer: a grade the code itself carries (D89.833 -> 3), else null
--   status         text: mapped | unmapped | ambiguous | excluded
--   matched_by     text: the winning rule ('code <system>|<code>' or 'text /<pattern>/')
--   candidates     text[]: every concept at the winning priority
WITH signatures AS (
    SELECT DISTINCT signature, site, resource_type, code_text, codings
    FROM harmonized.resource_code
),
raw_codings AS (
    SELECT s.signature, s.site, s.resource_type,
           json_extract_string(u.coding, '$.system') AS system,
           json_extract_string(u.coding, '$.code') AS code,
           json_extract_string(u.coding, '$.display') AS display
    FROM signatures AS s, unnest(s.codings) AS u(coding)
),
codings AS (
    -- An OID spelling of a standard system matches maps written with its URI, too. A
    -- standard system without a code says nothing authoritative: its display is text.
    SELECT c.*, coalesce(k.canonical, c.system) AS canonical,
           k.system IS NOT NULL AND coalesce(trim(c.code), '') <> '' AS standard
    FROM raw_codings AS c
    LEFT JOIN ref.code_system AS k ON k.system = c.system
),
code_matches AS (
    SELECT c.signature, m.concept, m.grade, m.priority,
           'code ' || c.system || '|' || c.code AS matched_by
    FROM codings AS c
    JOIN ref.concept_map AS m
      ON m.resource_type = c.resource_type AND m.system IN (c.system, c.canonical)
     AND m.code = c.code AND (m.site IS NULL OR m.site = c.site)
),
standard_coded AS (
    SELECT DISTINCT signature FROM codings WHERE standard
),
text_allowed AS (
    -- Text may decide only where no standard coding speaks, or refine what a map decided.
    SELECT signature FROM signatures
    WHERE signature NOT IN (SELECT signature FROM standard_coded)
    UNION
    SELECT signature FROM code_matches
),
texts AS (
    SELECT signature, site, resource_type, lower(code_text) AS text
    FROM signatures WHERE code_text IS NOT NULL
    UNION
    SELECT signature, site, resource_type, lower(display) FROM codings WHERE display IS NOT NULL
),
text_matches AS (
    SELECT t.signature, p.concept, NULL::INTEGER AS grade, p.priority,
           'text /' || p.pattern || '/' AS matched_by
    FROM texts AS t
    JOIN ref.text_pattern AS p
      ON p.resource_type = t.resource_type AND (p.site IS NULL OR p.site = t.site)
     AND regexp_matches(t.text, p.pattern)
    WHERE t.signature IN (SELECT signature FROM text_allowed)
),
candidates AS (
    SELECT * FROM code_matches UNION ALL SELECT * FROM text_matches
),
winners AS (
    SELECT * FROM candidates
    QUALIFY priority = max(priority) OVER (PARTITION BY signature)
),
per_signature AS (
    SELECT signature,
           list(DISTINCT concept ORDER BY concept) AS candidates,
           max(grade) AS grade,
           min(matched_by) AS matched_by
    FROM winners GROUP BY signature
),
combined AS (
    SELECT p.signature, p.candidates, p.grade, p.matched_by,
           (SELECT min(k.concept) FROM ref.concept_combination AS k
             WHERE list_has_all(p.candidates, k.requires)) AS combination
    FROM per_signature AS p
)
SELECT s.signature, s.site, s.resource_type, s.code_text, s.codings,
       s.signature IN (SELECT signature FROM standard_coded) AS standard_coded,
       CASE WHEN c.combination IS NOT NULL THEN c.combination
            WHEN len(c.candidates) = 1 AND c.candidates[1] <> '_excluded' THEN c.candidates[1]
       END AS concept,
       c.grade,
       CASE WHEN c.signature IS NULL THEN 'unmapped'
            WHEN c.combination IS NOT NULL THEN 'mapped'
            WHEN len(c.candidates) > 1 THEN 'ambiguous'
            WHEN c.candidates[1] = '_excluded' THEN 'excluded'
            ELSE 'mapped'
       END AS status,
       c.matched_by,
       coalesce(c.candidates, []) AS candidates
FROM signatures AS s
LEFT JOIN combined AS c USING (signature)
