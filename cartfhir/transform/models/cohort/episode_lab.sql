-- cohort.episode_lab: description, grain, columns and expectations in episode_lab.yml
WITH bounds AS (
    SELECT min(lo) AS lo, max(hi) AS hi FROM ref.window
),
placed AS (
    SELECT e.site, e.patient_key, e.round, l.observation_id, l.concept,
           date_diff('day', e.infusion_date, l.effective_date) AS day,
           l.effective_at, l.value, l.comparator, l.reference_low, l.reference_high
    FROM cohort.episode AS e
    JOIN harmonized.lab AS l ON l.site = e.site AND l.patient_key = e.patient_key
    WHERE date_diff('day', e.infusion_date, l.effective_date)
          BETWEEN (SELECT lo FROM bounds) AND (SELECT hi FROM bounds)
),
windowed AS (
    -- The one place a result's day meets the episode's windows (cut at its window end).
    SELECT p.site, p.patient_key, p.round, p.observation_id,
           list(w.name ORDER BY w.lo, w.name) AS windows
    FROM placed AS p
    JOIN cohort.episode_window AS w
      ON w.site = p.site AND w.patient_key = p.patient_key AND w.round = p.round
     AND p.day BETWEEN w.lo AND w.hi
    GROUP BY ALL
)
SELECT p.*, coalesce(w.windows, []) AS windows
FROM placed AS p
LEFT JOIN windowed AS w USING (site, patient_key, round, observation_id)
