-- harmonized.code_concept: description, grain, columns and expectations in code_concept.yml
WITH signatures AS (
    -- One row a signature: codings written differently (key order, extra keys such as
    -- userSelected) share a signature (codings_key), one of their lists stands for them.
    SELECT signature, site, resource_type, code_text, min(codings) AS codings
    FROM harmonized.resource_code
    GROUP BY signature, site, resource_type, code_text
),
signature_codings AS (
    SELECT signature, site, resource_type, explode(codings) AS coding FROM signatures
),
raw_codings AS (
    SELECT signature, site, resource_type,
           json_text(coding, '$.system') AS system,
           json_text(coding, '$.code') AS code,
           json_text(coding, '$.display') AS display
    FROM signature_codings
),
keyed_codings AS (
    SELECT c.*, system_key(c.system) AS system_key FROM raw_codings AS c
),
codings AS (
    -- Systems compare as system_key()s ('https://loinc.org/' is LOINC). An OID spelling
    -- of a standard system matches maps written with its URI, too, and takes its
    -- canonical system's hierarchy and code case rule. A standard system without a code
    -- says nothing authoritative: its display is text.
    SELECT c.*, coalesce(k.canonical, c.system_key) AS canonical,
           k.system IS NOT NULL AND coalesce(trim(c.code), '') <> '' AS standard,
           coalesce(h.hierarchy = 'prefix', false) AS prefix_coded,
           CASE WHEN h.case_insensitive THEN upper(trim(c.code)) ELSE c.code END AS match_code
    FROM keyed_codings AS c
    LEFT JOIN ref.code_system AS k ON k.system = c.system_key
    LEFT JOIN ref.code_system AS h ON h.system = k.canonical
),
map_rows AS (
    -- ref.concept_map.system is already a system_key (reference.write_reference).
    SELECT m.*, code_key(m.code) AS key,
           CASE WHEN h.case_insensitive THEN upper(trim(m.code)) ELSE m.code END AS match_code
    FROM ref.concept_map AS m
    LEFT JOIN ref.code_system AS k ON k.system = m.system
    LEFT JOIN ref.code_system AS h ON h.system = k.canonical
),
coding_prefix_lists AS (
    -- A prefix-system coding is looked up under each leading part of its key (no longer
    -- than the longest map code), so matching it is an equality join, not a scan.
    SELECT c.signature, c.site, c.resource_type, c.system, c.system_key, c.canonical, c.code,
           key_prefixes(c.code, l.longest) AS prefixes
    FROM codings AS c
    -- a join, not a subquery argument: Spark cannot pass a subquery to a SQL function
    CROSS JOIN (SELECT max(length(key)) AS longest FROM map_rows) AS l
    WHERE c.prefix_coded AND c.standard
),
coding_prefixes AS (
    -- Spark runs no SQL function inside explode(): the list is a column first.
    SELECT signature, site, resource_type, system, system_key, canonical, code,
           explode(prefixes) AS prefix
    FROM coding_prefix_lists
),
code_matches AS (
    -- Exact codes in other systems; in a prefix system the longest map code it extends.
    SELECT c.signature, c.system, c.code, m.code AS map_code, m.key, m.concept, m.grade,
           m.tier, m.priority
    FROM codings AS c
    JOIN map_rows AS m
      ON m.resource_type = c.resource_type AND m.match_code = c.match_code
     AND m.system IN (c.system_key, c.canonical) AND (m.site IS NULL OR m.site = c.site)
    WHERE NOT c.prefix_coded
    UNION ALL
    SELECT p.signature, p.system, p.code, m.code, m.key, m.concept, m.grade, m.tier,
           m.priority
    FROM coding_prefixes AS p
    JOIN map_rows AS m
      ON m.resource_type = p.resource_type AND m.key = p.prefix
     AND m.system IN (p.system_key, p.canonical) AND (m.site IS NULL OR m.site = p.site)
),
code_lengths AS (
    SELECT *, max(length(key)) OVER (PARTITION BY signature, system, code) AS longest
    FROM code_matches
),
code_winners AS (
    SELECT signature, concept, grade, tier, priority,
           'code ' || system || '|' || code
               || CASE WHEN key <> code_key(code) THEN ' under ' || map_code ELSE '' END
               AS matched_by
    FROM code_lengths
    WHERE length(key) = longest
),
standard_coded AS (
    SELECT DISTINCT signature FROM codings WHERE standard
),
code_decided AS (
    -- What the maps decided: the concept(s) of the highest tier, at its highest priority.
    SELECT signature, concept FROM (
        SELECT signature, concept,
               rank() OVER (PARTITION BY signature
                            ORDER BY tier DESC NULLS LAST, priority DESC NULLS LAST) AS place
        FROM code_winners)
    WHERE place = 1
),
text_decides AS (
    -- Text decides only where no map decided and no standard coding speaks.
    SELECT signature FROM signatures
    WHERE signature NOT IN (SELECT signature FROM standard_coded)
      AND signature NOT IN (SELECT signature FROM code_winners)
),
texts AS (
    SELECT signature, site, resource_type, lower(code_text) AS text
    FROM signatures WHERE code_text IS NOT NULL
    UNION
    SELECT signature, site, resource_type, lower(display) FROM codings WHERE display IS NOT NULL
),
text_matches AS (
    SELECT t.signature, p.concept, CAST(NULL AS INTEGER) AS grade, p.tier, p.priority,
           'text /' || p.pattern || '/' AS matched_by
    FROM texts AS t
    JOIN ref.text_pattern AS p
      ON p.resource_type = t.resource_type AND (p.site IS NULL OR p.site = t.site)
     AND matches_regex(t.text, '(?i)' || p.pattern)
    WHERE t.signature IN (SELECT signature FROM text_decides)
       -- Where a map decided, only a pattern declared to refine that concept may speak
       -- (lymphodepletion refines chemotherapy): never an exclusion or another concept,
       -- so a CAR-T product code whose descriptor says 'leukapheresis' stays an infusion.
       OR EXISTS (SELECT 1 FROM code_decided AS d
                  WHERE d.signature = t.signature AND d.concept = p.refines)
),
candidates AS (
    SELECT * FROM code_winners UNION ALL SELECT * FROM text_matches
),
winners AS (
    -- Maps and patterns alike: the highest tier, then its highest priority (code_concept.yml).
    SELECT * FROM (
        SELECT *, rank() OVER (PARTITION BY signature
                               ORDER BY tier DESC NULLS LAST, priority DESC NULLS LAST) AS place
        FROM candidates)
    WHERE place = 1
),
per_signature AS (
    SELECT signature,
           array_sort(array_agg(DISTINCT concept) FILTER (WHERE concept IS NOT NULL))
               AS candidates,
           max(grade) AS grade,
           min(matched_by) AS matched_by
    FROM winners GROUP BY signature
),
combined AS (
    SELECT p.signature, p.candidates, p.grade, p.matched_by, min(k.concept) AS combination
    FROM per_signature AS p
    LEFT JOIN ref.concept_combination AS k ON has_all(p.candidates, k.requires)
    GROUP BY p.signature, p.candidates, p.grade, p.matched_by
)
SELECT s.signature, s.site, s.resource_type, s.code_text, s.codings,
       s.signature IN (SELECT signature FROM standard_coded) AS standard_coded,
       CASE WHEN c.combination IS NOT NULL THEN c.combination
            WHEN cardinality(c.candidates) = 1 AND item_at(c.candidates, 1) <> '_excluded'
                THEN item_at(c.candidates, 1)
       END AS concept,
       c.grade,
       CASE WHEN c.signature IS NULL THEN 'unmapped'
            WHEN c.combination IS NOT NULL THEN 'mapped'
            WHEN cardinality(c.candidates) > 1 THEN 'ambiguous'
            WHEN item_at(c.candidates, 1) = '_excluded' THEN 'excluded'
            ELSE 'mapped'
       END AS status,
       c.matched_by,
       coalesce(c.candidates, empty_list()) AS candidates
FROM signatures AS s
LEFT JOIN combined AS c USING (signature)
