-- cohort.episode_endpoints: description, grain, columns and expectations in episode_endpoints.yml
WITH p AS (
    SELECT max(value) FILTER (WHERE name = 'severe_min_grade') AS severe_min_grade,
           max(value) FILTER (WHERE name = 'organ_injury_min_grade') AS organ_min_grade,
           max(value) FILTER (WHERE name = 'mrd_negative_below') AS mrd_below,
           max(value) FILTER (WHERE name = 'blast_cr_below') AS blast_below,
           max(value) FILTER (WHERE name = 'cr_anc_min') AS cr_anc,
           max(value) FILTER (WHERE name = 'cr_platelets_min') AS cr_plt,
           max(value) FILTER (WHERE name = 'count_lookback_days') AS lookback,
           max(value) FILTER (WHERE name = 'post_event_round') AS post_round
    FROM ref.threshold
),
lab AS (
    -- One row per result and window it falls in (window names are unique in ref.window).
    SELECT x.*, w.name AS window_name
    FROM cohort.episode_lab AS x
    JOIN ref.window AS w ON array_contains(x.windows, w.name)
),
cytokine AS (
    SELECT site, patient_key, round,
           max(value) FILTER (WHERE concept = 'il2') AS il2_peak,
           max(value) FILTER (WHERE concept = 'il4') AS il4_peak,
           max(value) FILTER (WHERE concept = 'il6') AS il6_peak,
           max(value) FILTER (WHERE concept = 'il10') AS il10_peak,
           max(value) FILTER (WHERE concept = 'il17a') AS il17a_peak,
           max(value) FILTER (WHERE concept = 'ifng') AS ifng_peak,
           max(value) FILTER (WHERE concept = 'tnfa') AS tnfa_peak
    FROM lab WHERE window_name = 'cytokine' AND comparator IS NULL
    GROUP BY site, patient_key, round
),
nadir AS (
    SELECT site, patient_key, round,
           min(value) FILTER (WHERE concept = 'anc') AS anc_nadir,
           -- derived ANCs (harmonized.derived_lab) count, and the nadir says when it is one
           min(value) FILTER (WHERE concept = 'anc' AND derivation = 'measured')
               AS anc_measured_nadir,
           min(value) FILTER (WHERE concept = 'platelets') AS platelet_nadir,
           min(value) FILTER (WHERE concept = 'hemoglobin') AS hemoglobin_nadir
    FROM lab WHERE window_name = 'nadir'
    GROUP BY site, patient_key, round
),
nadir_grade AS (
    SELECT n.*,
           CASE WHEN n.anc_nadir IS NOT NULL
                THEN n.anc_measured_nadir IS NULL OR n.anc_nadir < n.anc_measured_nadir
           END AS anc_nadir_derived,
           (SELECT coalesce(max(g.grade), 0) FROM ref.grade_cut AS g WHERE g.concept = 'anc'
               AND g.basis = 'absolute' AND g.direction = 'below' AND n.anc_nadir < g.bound)
               AS anc_nadir_grade,
           (SELECT coalesce(max(g.grade), 0) FROM ref.grade_cut AS g WHERE g.concept = 'platelets'
               AND g.basis = 'absolute' AND g.direction = 'below' AND n.platelet_nadir < g.bound)
               AS platelet_nadir_grade,
           (SELECT coalesce(max(g.grade), 0) FROM ref.grade_cut AS g WHERE g.concept = 'hemoglobin'
               AND g.basis = 'absolute' AND g.direction = 'below' AND n.hemoglobin_nadir < g.bound)
               AS hemoglobin_nadir_grade
    FROM nadir AS n
),
baseline AS (
    SELECT site, patient_key, round, concept,
           max_by(value, latest_key(effective_at, value)) AS baseline
    FROM lab WHERE window_name = 'baseline'
    GROUP BY site, patient_key, round, concept
),
organ_lab AS (
    SELECT l.site, l.patient_key, l.round, l.concept, l.observation_id, l.value,
           CAST(l.value AS DOUBLE) / nullif(coalesce(l.reference_high, d.high), 0) AS uln_ratio,
           CAST(l.value AS DOUBLE) / nullif(coalesce(l.reference_low, d.low), 0) AS lln_ratio,
           CAST(l.value AS DOUBLE) / nullif(b.baseline, 0) AS baseline_ratio
    FROM lab AS l
    LEFT JOIN ref.reference_range AS d ON d.concept = l.concept
    LEFT JOIN baseline AS b
      ON b.site = l.site AND b.patient_key = l.patient_key AND b.round = l.round
     AND b.concept = l.concept
    WHERE l.window_name = 'organ'
      AND l.concept IN (SELECT concept FROM ref.concept WHERE category IN ('liver', 'kidney',
                                                                         'coagulation'))
),
organ_graded AS (
    SELECT o.*, c.category,
           coalesce((SELECT max(g.grade) FROM ref.grade_cut AS g
                     WHERE g.concept = o.concept AND (
                        (g.basis = 'uln' AND g.direction = 'above' AND o.uln_ratio > g.bound)
                     OR (g.basis = 'lln' AND g.direction = 'below' AND o.lln_ratio < g.bound)
                     OR (g.basis = 'baseline' AND g.direction = 'above'
                         AND o.baseline_ratio > g.bound)
                     OR (g.basis = 'absolute' AND g.direction = 'below' AND o.value < g.bound)
                     OR (g.basis = 'absolute' AND g.direction = 'above' AND o.value > g.bound))),
                    0) AS grade
    FROM organ_lab AS o
    JOIN ref.concept AS c USING (concept)
),
organ AS (
    SELECT site, patient_key, round,
           max(grade) FILTER (WHERE category = 'liver') AS liver_injury_grade,
           max(grade) FILTER (WHERE category = 'kidney') AS kidney_injury_grade,
           max(grade) FILTER (WHERE category = 'coagulation') AS coagulopathy_grade
    FROM organ_graded GROUP BY site, patient_key, round
),
toxicity AS (
    SELECT site, patient_key, round,
           bool_or(category = 'crs' AND phase IS NOT NULL) AS crs_any,
           coalesce(max(grade) FILTER (WHERE category = 'crs' AND phase IS NOT NULL), 0)
               AS crs_max_grade,
           min(day) FILTER (WHERE category = 'crs' AND phase IS NOT NULL) AS crs_onset_day,
           bool_or(category = 'icans' AND phase IS NOT NULL) AS cres_any,
           coalesce(max(grade) FILTER (WHERE category = 'icans' AND phase IS NOT NULL), 0)
               AS cres_max_grade,
           min(day) FILTER (WHERE category = 'icans' AND phase IS NOT NULL) AS cres_onset_day,
           count(*) FILTER (WHERE category = 'infection' AND phase = 'early') AS early_infection_n,
           count(*) FILTER (WHERE category = 'infection' AND phase = 'late') AS late_infection_n,
           count(*) FILTER (WHERE category = 'infection' AND phase = 'lymphodepletion')
               AS lymphodepletion_infection_n,
           bool_or(category = 'febrile_neutropenia' AND phase IS NOT NULL) AS febrile_neutropenia
    FROM cohort.adverse_event
    WHERE is_event(source_type, grade)
    GROUP BY site, patient_key, round
),
marrow AS (
    SELECT site, patient_key, round, day,
           max_by(value, latest_key(effective_at, value)) AS blasts
    FROM lab WHERE window_name = 'response' AND concept = 'marrow_blasts'
    GROUP BY site, patient_key, round, day
),
mrd AS (
    SELECT site, patient_key, round, day,
           max_by(lab_reading(value, comparator), effective_at) AS mrd
    FROM cohort.episode_lab WHERE concept = 'mrd_flow'
    GROUP BY site, patient_key, round, day
),
assessment AS (
    SELECT m.*,
           (SELECT max_by(d.last_value, CASE WHEN d.last_value IS NOT NULL THEN d.day END)
             FROM cohort.lab_daily AS d
             WHERE d.site = m.site AND d.patient_key = m.patient_key AND d.round = m.round
               AND d.concept = 'anc' AND d.day BETWEEN m.day - p.lookback AND m.day) AS anc,
           (SELECT max_by(d.last_value, CASE WHEN d.last_value IS NOT NULL THEN d.day END)
             FROM cohort.lab_daily AS d
             WHERE d.site = m.site AND d.patient_key = m.patient_key AND d.round = m.round
               AND d.concept = 'platelets' AND d.day BETWEEN m.day - p.lookback AND m.day)
               AS platelets,
           r.mrd
    FROM marrow AS m
    CROSS JOIN p
    LEFT JOIN mrd AS r USING (site, patient_key, round, day)
),
judged AS (
    -- A marrow remission is CR or CRi whatever the counts; they only tell the two apart,
    -- so one missing where it could decide leaves the response not evaluable (NE).
    SELECT a.*,
           CASE WHEN a.blasts >= p.blast_below THEN 'NR'
                WHEN a.anc < p.cr_anc OR a.platelets < p.cr_plt THEN 'CRi'
                WHEN a.anc >= p.cr_anc AND a.platelets >= p.cr_plt THEN 'CR'
                ELSE 'NE' END AS response,
           -- what an NE lacks (read only for NE, where a count is missing)
           'no ' || CASE WHEN a.anc IS NULL AND a.platelets IS NULL THEN 'ANC or platelet count'
                         WHEN a.anc IS NULL THEN 'ANC' ELSE 'platelet count' END
               || ' from day ' || CAST(CAST(a.day - p.lookback AS BIGINT) AS STRING)
               || ' to the day-' || CAST(a.day AS STRING) || ' marrow' AS missing_counts,
           coalesce((a.mrd.comparator IN ('<', '<=') AND a.mrd.value <= p.mrd_below)
                    OR (a.mrd.comparator IS NULL AND a.mrd.value < p.mrd_below), false)
               AS mrd_negative
    FROM assessment AS a CROSS JOIN p
),
response AS (
    -- Best: CR > CRi > NE > NR. An evaluable remission is the documented best; NE's
    -- marrow was in remission, so it beats NR. An NE episode's reason is its earliest NE.
    SELECT site, patient_key, round,
           max_by(response, CASE response WHEN 'CR' THEN 3 WHEN 'CRi' THEN 2 WHEN 'NE' THEN 1
                                          WHEN 'NR' THEN 0 END) AS best_response,
           min_by(missing_counts, day) FILTER (WHERE response = 'NE') AS ne_reason,
           bool_or(mrd_negative) AS mrd_negative,
           bool_or(mrd_negative AND response IN ('CR', 'CRi', 'NE')) AS mrd_negative_cr
    FROM judged GROUP BY site, patient_key, round
),
after AS (
    SELECT e.site, e.patient_key, e.round,
           (SELECT min(c.onset_date) FROM harmonized.condition AS c
             WHERE c.site = e.site AND c.patient_key = e.patient_key AND c.concept = 'relapse'
               AND c.problem IS NULL AND c.onset_date > e.infusion_date) AS relapse_after_date,
           (SELECT min(x.start_date) FROM harmonized.procedure AS x
             WHERE x.site = e.site AND x.patient_key = e.patient_key
               AND x.concept = 'chemotherapy' AND x.problem IS NULL
               AND x.start_date > e.infusion_date) AS chemotherapy_after_date,
           (SELECT min(x.start_date) FROM harmonized.procedure AS x
             WHERE x.site = e.site AND x.patient_key = e.patient_key AND x.concept = 'hsct'
               AND x.problem IS NULL AND x.start_date > e.infusion_date) AS hsct_after_date,
           CASE WHEN e.death_date > e.infusion_date THEN e.death_date END AS death_after_date
    FROM cohort.episode AS e CROSS JOIN p
    WHERE e.round = p.post_round
),
after_event AS (
    -- One row per kind of event after the infusion, with its date.
    SELECT site, patient_key, round, 'relapse' AS event, relapse_after_date AS d FROM after
    UNION ALL
    SELECT site, patient_key, round, 'chemotherapy', chemotherapy_after_date FROM after
    UNION ALL
    SELECT site, patient_key, round, 'hsct', hsct_after_date FROM after
    UNION ALL
    SELECT site, patient_key, round, 'death', death_after_date FROM after
),
first_after AS (
    -- The earliest event; on one day, the first by ref.post_event's priority.
    SELECT site, patient_key, round, event AS post_event_type, d AS post_event_date
    FROM (SELECT x.site, x.patient_key, x.round, x.event, x.d,
                 row_number() OVER (PARTITION BY x.site, x.patient_key, x.round
                                    ORDER BY x.d NULLS LAST, pe.priority NULLS LAST) AS nth
          FROM after_event AS x
          JOIN ref.post_event AS pe ON pe.event = x.event
          WHERE x.d IS NOT NULL) AS ranked
    WHERE nth = 1
)
SELECT e.site, e.patient_key, e.round, e.infusion_date, e.limit_day, e.sex, e.age_years,
       e.target, e.dose, e.relapse_site_before,
       coalesce(t.crs_any, false) AS crs_any, coalesce(t.crs_max_grade, 0) AS crs_max_grade,
       t.crs_onset_day,
       coalesce(t.cres_any, false) AS cres_any, coalesce(t.cres_max_grade, 0) AS cres_max_grade,
       t.cres_onset_day,
       c.il2_peak, c.il4_peak, c.il6_peak, c.il10_peak, c.il17a_peak, c.ifng_peak, c.tnfa_peak,
       n.anc_nadir, n.platelet_nadir, n.hemoglobin_nadir,
       n.anc_nadir_grade, n.platelet_nadir_grade, n.hemoglobin_nadir_grade,
       n.anc_nadir_derived,
       CASE WHEN n.anc_nadir IS NOT NULL THEN n.anc_nadir_grade >= p.severe_min_grade END
           AS severe_neutropenia,
       CASE WHEN n.platelet_nadir IS NOT NULL THEN n.platelet_nadir_grade >= p.severe_min_grade END
           AS severe_thrombocytopenia,
       CASE WHEN n.hemoglobin_nadir IS NOT NULL
            THEN n.hemoglobin_nadir_grade >= p.severe_min_grade END AS severe_anemia,
       coalesce(o.liver_injury_grade, 0) AS liver_injury_grade,
       coalesce(o.kidney_injury_grade, 0) AS kidney_injury_grade,
       coalesce(o.coagulopathy_grade, 0) AS coagulopathy_grade,
       greatest(coalesce(o.liver_injury_grade, 0), coalesce(o.kidney_injury_grade, 0),
                coalesce(o.coagulopathy_grade, 0)) >= p.organ_min_grade AS organ_injury_any,
       coalesce(t.early_infection_n, 0) > 0 AS early_infection,
       coalesce(t.early_infection_n, 0) AS early_infection_n,
       coalesce(t.late_infection_n, 0) > 0 AS late_infection,
       coalesce(t.late_infection_n, 0) AS late_infection_n,
       coalesce(t.lymphodepletion_infection_n, 0) > 0 AS lymphodepletion_infection,
       coalesce(t.febrile_neutropenia, false) AS febrile_neutropenia,
       r.best_response,
       CASE WHEN r.best_response = 'NE' THEN r.ne_reason END AS response_reason,
       coalesce(r.mrd_negative, false) AS mrd_negative,
       coalesce(r.mrd_negative_cr, false) AS mrd_negative_cr,
       CASE WHEN e.round = p.post_round THEN coalesce(f.post_event_type, 'none') END
           AS post_event_type,
       f.post_event_date, a.relapse_after_date, a.chemotherapy_after_date, a.hsct_after_date,
       pt.death_date, pt.last_contact_date
FROM cohort.episode AS e
CROSS JOIN p
LEFT JOIN cohort.patient AS pt USING (site, patient_key)
LEFT JOIN toxicity AS t USING (site, patient_key, round)
LEFT JOIN cytokine AS c USING (site, patient_key, round)
LEFT JOIN nadir_grade AS n USING (site, patient_key, round)
LEFT JOIN organ AS o USING (site, patient_key, round)
LEFT JOIN response AS r USING (site, patient_key, round)
LEFT JOIN after AS a USING (site, patient_key, round)
LEFT JOIN first_after AS f USING (site, patient_key, round)
