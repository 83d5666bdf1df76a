-- analysis.count_dynamics: description, grain, columns and expectations in dynamics.yml
-- Parameters, from the endpoint registry (cartfhir/analyze/dynamics.py):
--   $concepts  the lab concepts of the report's count_dynamics figure
--   $rounds    the rounds compared: CART1 and CART2 (threshold post_event_round)
--   $pooled    the site of the rows pooling every site ('all', config.POOLED_SITE)
WITH span AS (
    SELECT lo, hi FROM ref.window WHERE name = 'count_dynamics'
),
daily AS (
    SELECT d.site, d.concept, d.round, d.day, d.last_value AS value
    FROM cohort.lab_daily AS d
    JOIN span ON d.day BETWEEN span.lo AND span.hi
    WHERE list_contains($concepts, d.concept) AND list_contains($rounds, d.round)
),
both_levels AS (
    SELECT site, concept, round, day, value FROM daily
    UNION ALL
    SELECT $pooled, concept, round, day, value FROM daily
)
SELECT site, concept, round, day, count(*) AS n,
       quantile_cont(value, 0.5) AS median,
       quantile_cont(value, 0.25) AS q1,
       quantile_cont(value, 0.75) AS q3
FROM both_levels
GROUP BY ALL
