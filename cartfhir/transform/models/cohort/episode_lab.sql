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
day_windows AS (
    -- The one place a result's day meets the episode's windows (cut at its window end).
    -- Windows depend on the episode and the day only, so they are listed per episode
    -- day, over the days the episode has results (however wide a configured window),
    -- and joined to the results by equality.
    SELECT w.site, w.patient_key, w.round, d.day,
           list(w.name ORDER BY w.lo, w.name) AS windows
    FROM cohort.episode_window AS w
    JOIN (SELECT site, patient_key, round, min(day) AS first_day, max(day) AS last_day
          FROM placed GROUP BY ALL) AS r USING (site, patient_key, round),
         range(greatest(w.lo, r.first_day), least(w.hi, r.last_day) + 1) AS d(day)
    GROUP BY ALL
)
SELECT p.*, coalesce(w.windows, []) AS windows
FROM placed AS p
LEFT JOIN day_windows AS w USING (site, patient_key, round, day)
