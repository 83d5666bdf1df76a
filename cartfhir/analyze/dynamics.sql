-- analysis.count_dynamics: description, grain, columns and expectations in dynamics.yml
WITH daily AS (
    SELECT site, concept, round, day, last_value AS value
    FROM cohort.lab_daily
    WHERE concept IN ('anc', 'hemoglobin', 'platelets') AND day BETWEEN 0 AND 30
      AND round IN (1, 2)
),
both_levels AS (
    SELECT site, concept, round, day, value FROM daily
    UNION ALL
    SELECT 'all', concept, round, day, value FROM daily
)
SELECT site, concept, round, day, count(*) AS n,
       quantile_cont(value, 0.5) AS median,
       quantile_cont(value, 0.25) AS q1,
       quantile_cont(value, 0.75) AS q3
FROM both_levels
GROUP BY ALL
