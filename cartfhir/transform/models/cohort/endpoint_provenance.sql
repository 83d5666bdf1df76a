-- cohort.endpoint_provenance: description, grain, columns and expectations in endpoint_provenance.yml
WITH lab AS (
    -- One row per result and window it falls in (window names are unique in ref.window).
    SELECT x.*, w.name AS window_name
    FROM cohort.episode_lab AS x
    JOIN ref.window AS w ON array_contains(x.windows, w.name)
),
peaks AS (
    SELECT site, patient_key, round, concept || '_peak' AS endpoint, 'Observation' AS resource_type,
           observation_id AS resource_id, 'peak value' AS role
    FROM (SELECT *, max(value) OVER (PARTITION BY site, patient_key, round, concept) AS top
          FROM lab
          WHERE window_name = 'cytokine' AND comparator IS NULL
            AND concept IN (SELECT concept FROM ref.concept WHERE category = 'cytokine'))
         AS cytokine
    WHERE value = top
),
nadir_values AS (
    SELECT site, patient_key, round, observation_id, derivation,
           CASE concept WHEN 'platelets' THEN 'platelet_nadir' ELSE concept || '_nadir' END
               AS endpoint
    FROM (SELECT *, min(value) OVER (PARTITION BY site, patient_key, round, concept) AS bottom
          FROM lab
          WHERE window_name = 'nadir' AND concept IN ('anc', 'platelets', 'hemoglobin'))
         AS count_lab
    WHERE value = bottom
),
nadirs AS (
    SELECT site, patient_key, round, endpoint, 'Observation', observation_id, 'nadir value'
    FROM nadir_values
    WHERE derivation = 'measured'
    UNION ALL
    -- A derived value is no record: the records it was computed from are listed instead.
    SELECT n.site, n.patient_key, n.round, n.endpoint, 'Observation',
           CASE s.part WHEN 'count' THEN d.count_observation_id
                       WHEN 'percent' THEN d.percent_observation_id
                       ELSE d.band_observation_id END,
           'nadir value: the ' || s.label || ' it was derived from'
    FROM nadir_values AS n
    JOIN harmonized.derived_lab AS d
      ON d.site = n.site AND d.observation_id = n.observation_id
    CROSS JOIN (VALUES ('count', 'WBC'), ('percent', 'neutrophil %'), ('band', 'band-form %'))
         AS s(part, label)
    WHERE n.derivation <> 'measured'
      AND CASE s.part WHEN 'count' THEN d.count_observation_id
                      WHEN 'percent' THEN d.percent_observation_id
                      ELSE d.band_observation_id END IS NOT NULL
),
organ AS (
    SELECT x.site, x.patient_key, x.round,
           CASE c.category WHEN 'liver' THEN 'liver_injury_grade'
                           WHEN 'kidney' THEN 'kidney_injury_grade'
                           ELSE 'coagulopathy_grade' END,
           'Observation', x.observation_id,
           CASE x.window_name WHEN 'baseline' THEN 'baseline value' ELSE 'graded result' END
    FROM lab AS x
    JOIN ref.concept AS c USING (concept)
    WHERE c.category IN ('liver', 'kidney', 'coagulation')
      AND (x.window_name = 'organ' OR (x.window_name = 'baseline' AND c.category = 'kidney'))
),
events AS (
    SELECT site, patient_key, round,
           CASE category WHEN 'icans' THEN 'cres'
                         WHEN 'infection' THEN CASE phase WHEN 'early' THEN 'early_infection'
                                                          WHEN 'late' THEN 'late_infection'
                                                          ELSE 'lymphodepletion_infection' END
                         ELSE category END,
           source_type, source_id, 'event in window'
    FROM cohort.adverse_event
    WHERE phase IS NOT NULL AND is_event(source_type, grade)
),
marrow AS (
    SELECT m.site, m.patient_key, m.round, e.endpoint, 'Observation', m.observation_id,
           'marrow assessment'
    FROM lab AS m
    CROSS JOIN (VALUES ('best_response'), ('mrd_negative')) AS e(endpoint)
    WHERE m.window_name = 'response' AND m.concept = 'marrow_blasts'
    UNION ALL
    SELECT r.site, r.patient_key, r.round, 'mrd_negative', 'Observation', r.observation_id,
           'MRD at a marrow assessment'
    FROM cohort.episode_lab AS r
    JOIN lab AS m ON m.site = r.site AND m.patient_key = r.patient_key AND m.round = r.round
     AND m.day = r.day AND m.window_name = 'response' AND m.concept = 'marrow_blasts'
    WHERE r.concept = 'mrd_flow'
),
episode_records AS (
    SELECT e.site, e.patient_key, e.round, 'infusion', p.resource_type, p.procedure_id,
           'infusion record'
    FROM cohort.episode AS e
    JOIN harmonized.procedure AS p
      ON p.site = e.site AND array_contains(e.procedure_ids, p.procedure_id)
    UNION ALL
    SELECT site, patient_key, round, 'dose', 'Observation', dose_observation_id, 'dose result'
    FROM cohort.episode WHERE dose_observation_id IS NOT NULL
),
post AS (
    SELECT e.site, e.patient_key, e.round, 'post_event', 'Condition', c.condition_id,
           'first relapse after the infusion'
    FROM cohort.episode_endpoints AS e
    JOIN harmonized.condition AS c
      ON c.site = e.site AND c.patient_key = e.patient_key AND c.concept = 'relapse'
     AND c.problem IS NULL AND c.onset_date = e.relapse_after_date
    UNION ALL
    SELECT e.site, e.patient_key, e.round, 'post_event', x.resource_type, x.procedure_id,
           'first ' || x.concept || ' after the infusion'
    FROM cohort.episode_endpoints AS e
    JOIN harmonized.procedure AS x
      ON x.site = e.site AND x.patient_key = e.patient_key AND x.problem IS NULL
     AND ((x.concept = 'chemotherapy' AND x.start_date = e.chemotherapy_after_date)
       OR (x.concept = 'hsct' AND x.start_date = e.hsct_after_date))
)
SELECT * FROM peaks
UNION ALL SELECT * FROM nadirs
UNION ALL SELECT * FROM organ
UNION ALL SELECT * FROM events
UNION ALL SELECT * FROM marrow
UNION ALL SELECT * FROM episode_records
UNION ALL SELECT * FROM post
