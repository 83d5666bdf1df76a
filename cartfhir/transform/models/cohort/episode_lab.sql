-- cohort.episode_lab: description, grain, columns and expectations in episode_lab.yml
WITH bounds AS (
    SELECT min(lo) AS lo, max(hi) AS hi FROM ref.window
),
placed AS (
    SELECT e.site, e.patient_key, e.round, l.observation_id, l.concept,
           day_diff(e.infusion_date, l.effective_date) AS day,
           l.effective_at, l.value, l.comparator, l.reference_low, l.reference_high,
           l.derivation
    FROM cohort.episode AS e
    JOIN harmonized.lab AS l ON l.site = e.site AND l.patient_key = e.patient_key
    CROSS JOIN bounds AS b
    WHERE day_diff(e.infusion_date, l.effective_date) BETWEEN b.lo AND b.hi
),
result_days AS (
    -- The episode days with results, found from the distinct days results fall on (few),
    -- not from the placed results themselves.
    SELECT DISTINCT e.site, e.patient_key, e.round,
           day_diff(e.infusion_date, l.effective_date) AS day
    FROM cohort.episode AS e
    JOIN (SELECT DISTINCT site, patient_key, effective_date FROM harmonized.lab) AS l
      ON l.site = e.site AND l.patient_key = e.patient_key
    CROSS JOIN bounds AS b
    WHERE day_diff(e.infusion_date, l.effective_date) BETWEEN b.lo AND b.hi
),
day_windows AS (
    -- The one place a result's day meets the episode's windows (cut at its window end).
    -- Windows depend on the episode and the day only, so they are listed once per episode
    -- and day with results (however wide a configured window), ordered by (lo, name),
    -- and joined to the results by equality.
    SELECT d.site, d.patient_key, d.round, d.day,
           ranked_values(array_sort(array_agg(ranked(w.lo, w.name)))) AS windows
    FROM result_days AS d
    JOIN cohort.episode_window AS w
      ON w.site = d.site AND w.patient_key = d.patient_key AND w.round = d.round
     AND d.day BETWEEN w.lo AND w.hi
    GROUP BY d.site, d.patient_key, d.round, d.day
)
SELECT p.*, coalesce(w.windows, empty_list()) AS windows
FROM placed AS p
LEFT JOIN day_windows AS w USING (site, patient_key, round, day)
