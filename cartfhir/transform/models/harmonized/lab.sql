-- harmonized.lab: description, grain, columns and expectations in lab.yml
SELECT site, observation_id, patient_key, concept, effective_date, effective_at,
       value, canonical_unit, comparator, value_original, unit_original,
       reference_low, reference_high, part_of_procedure_id, 'measured' AS derivation
FROM harmonized.observation_value
WHERE problem IS NULL AND duplicate_of IS NULL
UNION ALL
-- Values computed from other results of the same specimen (ANC from WBC and neutrophil %),
-- marked with how; their source records are in harmonized.derived_lab.
SELECT site, observation_id, patient_key, concept, effective_date, effective_at,
       value, canonical_unit, comparator, CAST(NULL AS DOUBLE), CAST(NULL AS STRING),
       CAST(NULL AS DOUBLE), CAST(NULL AS DOUBLE), CAST(NULL AS STRING), derivation
FROM harmonized.derived_lab
