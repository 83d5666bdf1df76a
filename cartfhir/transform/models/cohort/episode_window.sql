-- cohort.episode_window: description, grain, columns and expectations in episode_window.yml
SELECT e.site, e.patient_key, e.round, w.name, w.lo,
       CAST(CASE WHEN w.hi < 0 THEN w.hi ELSE least(w.hi, e.window_end_day) END AS INTEGER)
           AS hi
FROM cohort.episode AS e
CROSS JOIN ref.window AS w
