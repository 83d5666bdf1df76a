-- harmonized.record_concept: description, grain, columns and expectations in record_concept.yml
SELECT rc.site, rc.resource_type, rc.resource_id, cc.concept, c.kind, cc.grade, cc.matched_by
FROM harmonized.resource_code AS rc
JOIN harmonized.code_concept AS cc USING (signature)
JOIN ref.concept AS c ON c.concept = cc.concept
WHERE cc.status = 'mapped'
