-- cohort.episode_window: every study window of every episode, in day offsets, already
-- cut at the episode's window end. Grain: (site, patient_key, round, name).
--   site, patient_key  text: the episode's site and patient
--   round          integer: the episode's round
--   name       text: window name (ref.window: crs, cytokine, nadir, response, ...)
--   lo, hi     integer: inclusive day offsets; hi = least(configured hi, window_end_day);
--              windows that end before day 0 (baseline, lymphodepletion) are not cut
SELECT e.site, e.patient_key, e.round, w.name, w.lo,
       CAST(CASE WHEN w.hi < 0 THEN w.hi ELSE least(w.hi, e.window_end_day) END AS INTEGER)
           AS hi
FROM cohort.episode AS e
CROSS JOIN ref.window AS w
