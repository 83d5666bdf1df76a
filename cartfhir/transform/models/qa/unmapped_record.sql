-- qa.unmapped_record: description, grain, columns and expectations in unmapped_record.yml
SELECT r.site, r.resource_type, r.resource_id, r.signature, c.standard_coded
FROM harmonized.resource_code AS r
JOIN harmonized.code_concept AS c USING (signature)
WHERE c.status = 'unmapped'
  -- A panel whose results are its components is not itself a result to map.
  AND NOT EXISTS (SELECT 1 FROM flat.observation AS o
                  WHERE r.resource_type = 'Observation' AND o.site = r.site
                    AND o.observation_id = r.resource_id AND o.has_components
                    AND o.value_number IS NULL AND o.value_string IS NULL)
