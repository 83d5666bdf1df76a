-- harmonized.record_concept: every record whose code mapped to a study concept, once,
-- for the models that turn records into values, grades, diagnoses and procedures.
-- Grain: (site, resource_type, resource_id).
--   site, resource_type, resource_id  text: the record, as in harmonized.resource_code
--   concept        text: the study concept (ref.concept)
--   kind           text: the concept's kind: observation | assessment | condition | procedure
--   grade          integer: a grade the code itself carries (D89.833 -> 3), else null
--   matched_by     text: the mapping rule that chose the concept
SELECT rc.site, rc.resource_type, rc.resource_id, cc.concept, c.kind, cc.grade, cc.matched_by
FROM harmonized.resource_code AS rc
JOIN harmonized.code_concept AS cc USING (signature)
JOIN ref.concept AS c ON c.concept = cc.concept
WHERE cc.status = 'mapped'
