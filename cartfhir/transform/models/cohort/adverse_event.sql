-- cohort.adverse_event: description, grain, columns and expectations in adverse_event.yml
WITH events AS (
    SELECT c.site, c.patient_key, c.concept AS event,
           CASE WHEN k.category = 'infection' THEN 'infection' ELSE c.concept END AS category,
           'Condition' AS source_type, c.condition_id AS source_id, c.onset_date AS event_date,
           c.grade, c.grade_source
    FROM harmonized.condition AS c
    JOIN ref.concept AS k ON k.concept = c.concept
    WHERE c.problem IS NULL
      AND (c.concept IN ('crs', 'icans', 'febrile_neutropenia') OR k.category = 'infection')
    UNION ALL
    SELECT site, patient_key, concept, concept, 'Observation', observation_id, assessed_date,
           grade, 'observation'
    FROM harmonized.grade_assessment
    WHERE problem IS NULL
),
placed AS (
    SELECT v.site, v.patient_key, ep.round, v.event, v.category, v.source_type, v.source_id,
           day_diff(ep.infusion_date, v.event_date) AS day, v.grade, v.grade_source
    FROM events AS v
    JOIN cohort.episode AS ep ON ep.site = v.site AND ep.patient_key = v.patient_key
)
SELECT p.*,
       -- The phase of the first-starting window of the event's category holding its day.
       (SELECT min_by(CASE w.name WHEN 'lymphodepletion_infection' THEN 'lymphodepletion'
                                  WHEN 'early_infection' THEN 'early'
                                  WHEN 'late_infection' THEN 'late'
                                  ELSE 'in_window' END, w.lo)
        FROM cohort.episode_window AS w
        WHERE w.site = p.site AND w.patient_key = p.patient_key AND w.round = p.round
          AND p.day BETWEEN w.lo AND w.hi
          AND CASE p.category
                  WHEN 'infection' THEN w.name IN ('lymphodepletion_infection',
                                                   'early_infection', 'late_infection')
                  WHEN 'crs' THEN w.name = 'crs'
                  WHEN 'icans' THEN w.name = 'icans'
                  ELSE w.name = 'febrile_neutropenia' END) AS phase
FROM placed AS p
WHERE p.day BETWEEN (SELECT min(lo) FROM ref.window) AND (SELECT max(hi) FROM ref.window)
