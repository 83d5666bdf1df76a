-- cohort.episode: description, grain, columns and expectations in episode.yml
WITH infusion AS (
    SELECT site, patient_key, start_date AS infusion_date,
           -- procedure_id is never NULL (harmonized.procedure's key); the FILTER says so to
           -- both engines (a NULL stays in DuckDB's list, Spark's drops it).
           array_sort(array_agg(procedure_id) FILTER (WHERE procedure_id IS NOT NULL))
               AS procedure_ids,
           max(target) AS target, max(dose) AS recorded_dose
    FROM harmonized.procedure
    WHERE concept = 'cart_infusion' AND problem IS NULL
    GROUP BY site, patient_key, start_date
),
numbered AS (
    SELECT *,
           row_number() OVER (PARTITION BY site, patient_key
                              ORDER BY infusion_date NULLS LAST) AS round,
           lead(infusion_date) OVER (PARTITION BY site, patient_key
                                     ORDER BY infusion_date NULLS LAST) AS next_infusion_date
    FROM infusion
),
hsct AS (
    SELECT site, patient_key, start_date FROM harmonized.procedure
    WHERE concept = 'hsct' AND problem IS NULL
),
with_limits AS (
    SELECT n.*, p.sex, p.birth_date, p.death_date,
           (SELECT min(h.start_date) FROM hsct AS h
             WHERE h.site = n.site AND h.patient_key = n.patient_key
               AND h.start_date > n.infusion_date) AS next_hsct_date
    FROM numbered AS n
    LEFT JOIN cohort.patient AS p USING (site, patient_key)
),
limited AS (
    SELECT *,
           least(day_diff(infusion_date, next_infusion_date) - 1,
                 day_diff(infusion_date, next_hsct_date) - 1,
                 day_diff(infusion_date, death_date)) AS limit_day
    FROM with_limits
),
dose AS (
    SELECT e.site, e.patient_key, e.round,
           -- min_by skips a NULL key on both engines; a NULL value only on DuckDB: guard it.
           min_by(l.value, CASE WHEN l.value IS NOT NULL THEN l.effective_at END) AS dose,
           min_by(l.observation_id, CASE WHEN l.observation_id IS NOT NULL
                                         THEN l.effective_at END) AS dose_observation_id
    FROM limited AS e
    JOIN harmonized.lab AS l
      ON l.site = e.site AND l.patient_key = e.patient_key AND l.concept = 'cart_dose'
     AND day_diff(e.infusion_date, l.effective_date)
         BETWEEN (SELECT lo FROM ref.window WHERE name = 'dose')
             AND (SELECT hi FROM ref.window WHERE name = 'dose')
    GROUP BY e.site, e.patient_key, e.round
),
relapse AS (
    SELECT e.site, e.patient_key, e.round,
           max_by(concat_ws('+', c.body_sites),
                  CASE WHEN c.body_sites IS NOT NULL THEN c.onset_date END) AS relapse_site_before
    FROM limited AS e
    JOIN harmonized.condition AS c
      ON c.site = e.site AND c.patient_key = e.patient_key AND c.concept = 'relapse'
     AND c.problem IS NULL AND c.onset_date < e.infusion_date
    GROUP BY e.site, e.patient_key, e.round
)
SELECT e.site, e.patient_key, e.round, e.infusion_date, e.procedure_ids, e.target,
       coalesce(d.dose, e.recorded_dose) AS dose, d.dose_observation_id, nullif(r.relapse_site_before, '') AS relapse_site_before,
       e.sex,
       year(e.infusion_date) - year(e.birth_date)
           - CASE WHEN month(e.infusion_date) * 100 + day(e.infusion_date)
                       < month(e.birth_date) * 100 + day(e.birth_date)
                  THEN 1 ELSE 0 END AS age_years,
       e.next_infusion_date, e.next_hsct_date, e.death_date, e.limit_day,
       CAST(least(e.limit_day, (SELECT value FROM ref.threshold WHERE name = 'horizon_days'))
            AS INTEGER) AS window_end_day
FROM limited AS e
LEFT JOIN dose AS d USING (site, patient_key, round)
LEFT JOIN relapse AS r USING (site, patient_key, round)
