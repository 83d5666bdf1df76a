-- qa.unmapped_record: every record no concept map or text pattern recognised.
-- Grain: (site, resource_type, resource_id). qa.unmapped_codes counts them by code;
-- the site-completeness expectation counts the ones that may be study data.
--   site, resource_type, resource_id  text: the record, as in harmonized.resource_code
--   signature       text: its code signature (harmonized.code_concept has the codings)
--   standard_coded  boolean: a coding is in a standard system (ref.code_system). No map
--                   knows that standard code, so the study's terminology has decided it is
--                   not a study concept (out of scope, not missing). False: only local codes
--                   or text, which may be study data a site concept map has to name.
SELECT r.site, r.resource_type, r.resource_id, r.signature, c.standard_coded
FROM harmonized.resource_code AS r
JOIN harmonized.code_concept AS c USING (signature)
WHERE c.status = 'unmapped'
  -- A panel whose results are its components is not itself a result to map.
  AND NOT EXISTS (SELECT 1 FROM flat.observation AS o
                  WHERE r.resource_type = 'Observation' AND o.site = r.site
                    AND o.observation_id = r.resource_id AND o.has_components
                    AND o.value_number IS NULL AND o.value_string IS NULL)
