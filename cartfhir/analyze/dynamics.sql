-- analysis.count_dynamics: blood counts day by day after each round.
-- Grain: (site, concept, round, day). Each episode contributes its last value of the
-- day (cohort.lab_daily.last_value); 'all' pools the sites.
--   site      text: site id, or 'all'
--   concept   text: anc | hemoglobin | platelets (canonical units: 10*9/L, g/L, 10*9/L)
--   round     integer: 1 = CART1, 2 = CART2
--   day       integer: 0..30 after infusion
--   n         integer: episodes with a value that day
--   median, q1, q3  double: median and quartiles (linear interpolation)
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
