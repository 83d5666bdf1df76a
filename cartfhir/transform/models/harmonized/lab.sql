-- harmonized.lab: description, grain, columns and expectations in lab.yml
SELECT site, observation_id, patient_key, concept, effective_date, effective_at,
       value, canonical_unit, comparator, value_original, unit_original,
       reference_low, reference_high, part_of_procedure_id
FROM harmonized.observation_value
WHERE problem IS NULL AND duplicate_of IS NULL
