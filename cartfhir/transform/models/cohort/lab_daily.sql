-- cohort.lab_daily: description, grain, columns and expectations in lab_daily.yml
SELECT x.site, x.patient_key, x.round, x.concept, x.day,
       count(*) AS n,
       min(x.value) AS min_value, max(x.value) AS max_value,
       max_by(x.value, latest_key(x.effective_at, x.value)) AS last_value,
       count(x.comparator) AS censored,
       any_value(c.canonical_unit) AS canonical_unit
FROM cohort.episode_lab AS x
JOIN ref.concept AS c ON c.concept = x.concept
WHERE array_contains(x.windows, 'lab_daily')
GROUP BY x.site, x.patient_key, x.round, x.concept, x.day
