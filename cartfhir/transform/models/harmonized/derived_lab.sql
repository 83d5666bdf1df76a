-- harmonized.derived_lab: description, grain, columns and expectations in derived_lab.yml
WITH usable AS (
    -- The results a derivation reads: usable, re-sent copies removed (as in harmonized.lab),
    -- with a time, which is what ties a differential to its WBC (one specimen, one time).
    SELECT site, patient_key, concept, effective_date, effective_at, observation_id, value,
           comparator
    FROM harmonized.observation_value
    WHERE problem IS NULL AND duplicate_of IS NULL AND effective_at IS NOT NULL
      AND concept IN ('anc', 'wbc', 'neutrophil_pct', 'segmented_neutrophil_pct',
                      'band_neutrophil_pct')
),
per_time AS (
    -- One result per concept and specimen time. Copies that agree (a re-send spelled
    -- otherwise) are one result, under the smallest id; results that disagree (two WBCs at
    -- one time) are none, as which of them the differential belongs to is unknown.
    SELECT site, patient_key, effective_date, effective_at, concept,
           min(observation_id) AS observation_id, min(value) AS value,
           min(comparator) AS comparator,
           count(DISTINCT value) = 1 AND count(DISTINCT coalesce(comparator, '=')) = 1
               AS agreed
    FROM usable
    GROUP BY site, patient_key, effective_date, effective_at, concept
),
specimen AS (
    SELECT site, patient_key, effective_date, effective_at,
           bool_or(concept = 'anc') AS anc_measured,
           max(observation_id) FILTER (WHERE concept = 'wbc' AND agreed) AS wbc_id,
           max(value) FILTER (WHERE concept = 'wbc' AND agreed) AS wbc,
           max(comparator) FILTER (WHERE concept = 'wbc' AND agreed) AS wbc_comparator,
           max(observation_id) FILTER (WHERE concept = 'neutrophil_pct' AND agreed) AS total_id,
           max(value) FILTER (WHERE concept = 'neutrophil_pct' AND agreed) AS total,
           max(comparator) FILTER (WHERE concept = 'neutrophil_pct' AND agreed)
               AS total_comparator,
           max(observation_id) FILTER (WHERE concept = 'segmented_neutrophil_pct' AND agreed)
               AS segmented_id,
           max(value) FILTER (WHERE concept = 'segmented_neutrophil_pct' AND agreed)
               AS segmented,
           max(comparator) FILTER (WHERE concept = 'segmented_neutrophil_pct' AND agreed)
               AS segmented_comparator,
           max(observation_id) FILTER (WHERE concept = 'band_neutrophil_pct' AND agreed)
               AS band_id,
           max(value) FILTER (WHERE concept = 'band_neutrophil_pct' AND agreed) AS band,
           max(comparator) FILTER (WHERE concept = 'band_neutrophil_pct' AND agreed)
               AS band_comparator
    FROM per_time
    GROUP BY site, patient_key, effective_date, effective_at
),
shares AS (
    -- The neutrophil share of the leukocytes: the total when reported (it counts the band
    -- forms), else segmented plus band forms, else segmented alone (no band form reported).
    SELECT site, patient_key, effective_date, effective_at, wbc_id, wbc, wbc_comparator,
           CASE WHEN total_id IS NOT NULL THEN 'wbc_x_neutrophil_pct'
                WHEN band_id IS NOT NULL THEN 'wbc_x_segmented_band_pct'
                ELSE 'wbc_x_segmented_pct' END AS derivation,
           coalesce(total_id, segmented_id) AS percent_id,
           CASE WHEN total_id IS NULL THEN band_id END AS band_id,
           coalesce(total, segmented + coalesce(band, 0)) AS percent,
           coalesce(total_comparator, segmented_comparator) AS percent_comparator,
           CASE WHEN total_id IS NULL THEN band_comparator END AS band_comparator
    FROM specimen
    WHERE NOT anc_measured AND wbc_id IS NOT NULL
      AND (total_id IS NOT NULL OR segmented_id IS NOT NULL)
),
bounded AS (
    -- Only exact values and upper bounds ('<0.5') combine: a product or sum of upper bounds
    -- of counts is an upper bound, '<' when any input is '<'. A lower bound gives nothing,
    -- nor do parts adding up to more than the whole (segmented 80 % + band 30 %).
    SELECT *
    FROM shares
    WHERE percent <= 100
      AND coalesce(wbc_comparator, '<') IN ('<', '<=')
      AND coalesce(percent_comparator, '<') IN ('<', '<=')
      AND coalesce(band_comparator, '<') IN ('<', '<=')
),
anc AS (
    -- ANC's canonical unit and the factor from WBC's canonical unit into it (same unit group).
    SELECT a.canonical_unit, a.plausible_min, a.plausible_max, wu.factor / au.factor AS factor
    FROM ref.concept AS a
    JOIN ref.concept AS w ON w.concept = 'wbc' AND w.unit_group = a.unit_group
    JOIN ref.unit AS au
      ON au.unit_group = a.unit_group AND au.unit_key = unit_key(a.canonical_unit)
    JOIN ref.unit AS wu
      ON wu.unit_group = w.unit_group AND wu.unit_key = unit_key(w.canonical_unit)
    WHERE a.concept = 'anc'
),
derived AS (
    SELECT b.*, a.canonical_unit, a.plausible_min, a.plausible_max,
           -- Rounded to 9 decimals as measured values are (observation_value.sql).
           round(b.wbc * a.factor * b.percent / 100, 9) AS value
    FROM bounded AS b
    CROSS JOIN anc AS a
)
SELECT site, wbc_id || '*' || percent_id || coalesce('+' || band_id, '') AS observation_id,
       patient_key, 'anc' AS concept, effective_date, effective_at, value, canonical_unit,
       CASE WHEN value = 0 THEN NULL  -- a factor was an exact 0
            WHEN '<' IN (wbc_comparator, percent_comparator, band_comparator) THEN '<'
            WHEN '<=' IN (wbc_comparator, percent_comparator, band_comparator) THEN '<='
       END AS comparator,
       derivation, wbc_id AS count_observation_id, percent_id AS percent_observation_id,
       band_id AS band_observation_id
FROM derived
WHERE (value >= plausible_min OR plausible_min IS NULL)
  AND (value <= plausible_max OR plausible_max IS NULL)
