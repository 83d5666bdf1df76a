-- cohort.lab_daily: per episode, concept and day offset, the day's canonical values.
-- Grain: (site, patient_key, round, concept, day), days in the lab_daily window
-- (default -7..+90) and not past the episode's window end.
--   site, patient_key  text: the episode's site and patient
--   round          integer: the episode's round
--   concept        text: study concept (ref.concept)
--   day            integer: day offset from the infusion
--   n              integer: usable results that day
--   min_value, max_value, last_value  double: in the concept's canonical unit
--   censored       integer: results reported as below/above a limit ('<0.01')
--   canonical_unit text: the concept's canonical UCUM unit
SELECT x.site, x.patient_key, x.round, x.concept, x.day,
       count(*) AS n,
       min(x.value) AS min_value, max(x.value) AS max_value,
       arg_max(x.value, x.effective_at) AS last_value,
       count(x.comparator) AS censored,
       any_value(c.canonical_unit) AS canonical_unit
FROM cohort.episode_lab AS x
JOIN cohort.episode_window AS w
  ON w.site = x.site AND w.patient_key = x.patient_key AND w.round = x.round
 AND w.name = 'lab_daily' AND x.day BETWEEN w.lo AND w.hi
JOIN ref.concept AS c ON c.concept = x.concept
GROUP BY ALL
