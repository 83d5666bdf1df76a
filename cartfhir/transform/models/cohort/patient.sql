-- cohort.patient: description, grain, columns and expectations in patient.yml
WITH infusion AS (
    SELECT site, patient_key, min(start_date) AS first_infusion_date,
           count(DISTINCT start_date) AS rounds
    FROM harmonized.procedure
    WHERE concept = 'cart_infusion' AND problem IS NULL
    GROUP BY site, patient_key
),
person AS (
    SELECT p.site, k.patient_key, p.gender AS sex, local_date(p.birth_date) AS birth_date,
           site_date(p.deceased_datetime, z.timezone) AS death_date
    FROM flat.patient AS p
    JOIN raw.patient_key AS k ON k.site = p.site AND k.patient_id = p.patient_id
    LEFT JOIN ref.site AS z ON z.site = p.site
),
contact AS (
    SELECT site, patient_key, max(d) AS last_record_date FROM (
        -- Any dated result but a retracted one (or one without a status) is a contact.
        SELECT site, patient_key, effective_date AS d FROM harmonized.observation_value
        WHERE status NOT IN (SELECT status FROM ref.record_status
                             WHERE resource_type = 'Observation' AND element = 'status'
                               AND use = 'void')
        UNION ALL
        SELECT site, patient_key, onset_date FROM harmonized.condition WHERE problem IS NULL
        UNION ALL
        SELECT site, patient_key, end_date FROM harmonized.procedure WHERE problem IS NULL
    ) AS dated GROUP BY site, patient_key
)
SELECT i.site, i.patient_key, p.sex, p.birth_date, year(p.birth_date) AS birth_year,
       i.first_infusion_date,
       year(i.first_infusion_date) - year(p.birth_date)
           - CASE WHEN month(i.first_infusion_date) * 100 + day(i.first_infusion_date)
                       < month(p.birth_date) * 100 + day(p.birth_date)
                  THEN 1 ELSE 0 END AS age_at_first_infusion,
       i.rounds, p.death_date,
       CASE WHEN p.death_date IS NOT NULL THEN p.death_date ELSE c.last_record_date END
           AS last_contact_date
FROM infusion AS i
LEFT JOIN person AS p USING (site, patient_key)
LEFT JOIN contact AS c USING (site, patient_key)
