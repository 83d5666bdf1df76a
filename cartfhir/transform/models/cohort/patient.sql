-- cohort.patient: one row per patient per site who has at least one CAR-T infusion.
-- Grain: (site, patient_key).
--   site                    text: site id
--   patient_key             text: HMAC-SHA256 of site and patient id (per-site secret)
--   sex                     text: administrative gender (male | female | other | unknown)
--   birth_date              date: exact date of birth (stays in the site; pooling coarsens it)
--   birth_year              integer: year of birth
--   first_infusion_date     date: day of the first CAR-T infusion
--   age_at_first_infusion   integer: completed years at the first infusion
--   rounds                  integer: number of CAR-T infusions (same-day records merged)
--   death_date              date: local day of death, null when alive at last contact
--   last_contact_date       date: latest day with any record, or the day of death
WITH infusion AS (
    SELECT site, patient_key, min(start_date) AS first_infusion_date,
           count(DISTINCT start_date) AS rounds
    FROM harmonized.procedure
    WHERE concept = 'cart_infusion' AND problem IS NULL
    GROUP BY site, patient_key
),
person AS (
    SELECT p.site, k.patient_key, p.gender AS sex, local_date(p.birth_date) AS birth_date,
           local_date(p.deceased_datetime) AS death_date
    FROM flat.patient AS p
    JOIN raw.patient_key AS k ON k.site = p.site AND k.patient_id = p.patient_id
),
contact AS (
    SELECT site, patient_key, max(d) AS last_record_date FROM (
        SELECT site, patient_key, effective_date AS d FROM harmonized.observation_value
        WHERE status NOT IN ('entered-in-error', 'cancelled')
        UNION ALL
        SELECT site, patient_key, onset_date FROM harmonized.condition WHERE problem IS NULL
        UNION ALL
        SELECT site, patient_key, end_date FROM harmonized.procedure WHERE problem IS NULL
    ) GROUP BY site, patient_key
)
SELECT i.site, i.patient_key, p.sex, p.birth_date, year(p.birth_date) AS birth_year,
       i.first_infusion_date,
       year(i.first_infusion_date) - year(p.birth_date)
           - CASE WHEN strftime(i.first_infusion_date, '%m%d') < strftime(p.birth_date, '%m%d')
                  THEN 1 ELSE 0 END AS age_at_first_infusion,
       i.rounds, p.death_date,
       CASE WHEN p.death_date IS NOT NULL THEN p.death_date ELSE c.last_record_date END
           AS last_contact_date
FROM infusion AS i
LEFT JOIN person AS p USING (site, patient_key)
LEFT JOIN contact AS c USING (site, patient_key)
