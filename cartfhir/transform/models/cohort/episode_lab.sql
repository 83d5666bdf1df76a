-- cohort.episode_lab: usable lab results placed on each episode's day axis.
-- Grain: (site, patient_key, round, observation_id). A result can belong to two
-- episodes (day +200 of CART1 may be day -7 of CART2); windows decide what counts.
--   site, patient_key  text: the episode's site and patient
--   round          integer: the episode's round
--   observation_id     text: provenance
--   concept            text: study concept
--   day                integer: local day offset from the infusion day
--   effective_at       timestamptz: time of the result (orders results within a day)
--   value              double: canonical value
--   comparator         text: '<', '<=', '>=' or '>' for censored values, else null
--   reference_low, reference_high  double: reference range (canonical unit), when reported
WITH bounds AS (
    SELECT min(lo) AS lo, max(hi) AS hi FROM ref.window
)
SELECT e.site, e.patient_key, e.round, l.observation_id, l.concept,
       date_diff('day', e.infusion_date, l.effective_date) AS day,
       l.effective_at, l.value, l.comparator, l.reference_low, l.reference_high
FROM cohort.episode AS e
JOIN harmonized.lab AS l ON l.site = e.site AND l.patient_key = e.patient_key
WHERE date_diff('day', e.infusion_date, l.effective_date)
      BETWEEN (SELECT lo FROM bounds) AND (SELECT hi FROM bounds)
