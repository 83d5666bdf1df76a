-- cohort.episode_lab: description, grain, columns and expectations in episode_lab.yml
WITH bounds AS (
    SELECT min(lo) AS lo, max(hi) AS hi FROM ref.window
)
SELECT e.site, e.patient_key, e.round, l.observation_id, l.concept,
       date_diff('day', e.infusion_date, l.effective_date) AS day,
       l.effective_at, l.value, l.comparator, l.reference_low, l.reference_high
FROM cohort.episode AS e
JOIN harmonized.lab AS l ON l.site = e.site AND l.patient_key = e.patient_key
WHERE date_diff('day', e.infusion_date, l.effective_date)
      BETWEEN (SELECT lo FROM bounds) AND (SELECT hi FROM bounds)
