-- harmonized.observation_value: description, grain, columns and expectations in observation_value.yml
WITH records AS (
    SELECT site, observation_id, patient_id, status, effective_datetime, effective_start,
           effective_instant, issued, value_number, value_unit, value_unit_system,
           value_unit_code, value_comparator, value_string, value_integer, value_concept_text,
           value_concept_code, value_concept_display, reference_low, reference_low_unit,
           reference_low_unit_code, reference_high, reference_high_unit,
           reference_high_unit_code, part_of_procedure_id
    FROM flat.observation
    UNION ALL
    -- Components inherit the parent's subject, status, time and partOf.
    SELECT c.site, c.observation_id || '#' || c.component_index, o.patient_id, o.status,
           o.effective_datetime, o.effective_start, o.effective_instant, o.issued,
           c.value_number, c.value_unit, c.value_unit_system, c.value_unit_code,
           c.value_comparator, c.value_string, c.value_integer, c.value_concept_text,
           c.value_concept_code, c.value_concept_display, c.reference_low,
           c.reference_low_unit, c.reference_low_unit_code, c.reference_high,
           c.reference_high_unit, c.reference_high_unit_code, o.part_of_procedure_id
    FROM flat.observation_component AS c
    JOIN flat.observation AS o ON o.site = c.site AND o.observation_id = c.observation_id
),
mapped AS (
    SELECT o.*, k.patient_key, m.concept, m.matched_by,
           c.unit_group, c.canonical_unit, c.plausible_min, c.plausible_max,
           s.use AS status_use, z.timezone AS site_timezone
    FROM records AS o
    JOIN harmonized.record_concept AS m
      ON m.site = o.site AND m.resource_type = 'Observation' AND m.resource_id = o.observation_id
     AND m.kind = 'observation'
    JOIN ref.concept AS c ON c.concept = m.concept
    LEFT JOIN raw.patient_key AS k ON k.site = o.site AND k.patient_id = o.patient_id
    LEFT JOIN ref.record_status AS s
      ON s.resource_type = 'Observation' AND s.element = 'status' AND s.status = o.status
    LEFT JOIN ref.site AS z ON z.site = o.site
),
parsed AS (
    SELECT *,
           coalesce(effective_datetime, effective_start, effective_instant, issued) AS effective,
           CAST(value_number AS DOUBLE) AS number_quantity,
           value_token(value_string) AS token_string,
           value_number(value_string) AS number_string,
           value_comparator(value_string) AS comparator_string,
           value_unit(value_string) AS unit_string
    FROM mapped
),
worded AS (
    -- The text a qualitative word is looked for in, and the word family (ref.qualitative_word)
    -- it starts with, if any, with what follows the word.
    SELECT p.*, w.result AS word_result,
           regexp_replace(p.word_text, w.pattern, '') AS after_word
    FROM (SELECT *, lower(coalesce(value_string, value_concept_text, value_concept_display,
                                   value_concept_code, '')) AS word_text
          FROM parsed) AS p
    LEFT JOIN ref.qualitative_word AS w
      ON p.number_quantity IS NULL AND p.number_string IS NULL
     AND matches_regex(p.word_text, w.pattern)
),
qualified AS (
    -- Words written instead of a number ('阴性', ref.qualitative_word) and what they mean for
    -- the concept (ref.qualitative_result): a censored limit ('negative' MRD is < 0.01 %),
    -- or a limit the study does not know (a cytokine kit's). A word counts only written bare:
    -- followed by nothing but punctuation, or a note in brackets without a digit ('Negative
    -- (qualifier value)', a SNOMED display). A word with a digit anywhere ('Negative
    -- (<0.1%)', '阴性 0.3%') states a limit or a result of its own, which the word's value
    -- would overwrite: it is quarantined (ambiguous_number), never read as the word.
    SELECT p.*, q.result AS qualitative, q.concept IS NOT NULL AS qualitative_known,
           q.value AS qualitative_value, q.comparator AS qualitative_comparator,
           p.word_result IS NOT NULL AND matches_regex(p.word_text, '[0-9０-９]')
               AS word_with_number
    FROM worded AS p
    LEFT JOIN ref.qualitative_result AS q
      ON q.concept = p.concept AND q.result = p.word_result
     AND NOT matches_regex(p.word_text, '[0-9０-９]')
     -- line breaks and tabs as spaces: '$' then means the end on both engines (Java's '$'
     -- also matches before a final line break)
     AND matches_regex(trim(translate(p.after_word, chr(9) || chr(10) || chr(13), '   ')),
                       '^([(（][a-z ]*[)）])?[ .。,，;；!！)）]*$')
),
valued AS (
    SELECT *,
           coalesce(number_quantity, number_string, qualitative_value) AS value_original,
           coalesce(value_comparator, comparator_string, qualitative_comparator) AS comparator,
           CASE WHEN number_quantity IS NOT NULL THEN
                    coalesce(CASE WHEN value_unit_system = 'http://unitsofmeasure.org'
                                  THEN nullif(value_unit_code, '') END,
                             nullif(value_unit, ''), nullif(value_unit_code, ''))
                -- a text result's unit: in the text, else where the Observation states it
                -- (its reference range), never assumed from the concept
                WHEN number_string IS NOT NULL THEN
                    coalesce(unit_string, nullif(reference_low_unit_code, ''),
                             nullif(reference_low_unit, ''), nullif(reference_high_unit_code, ''),
                             nullif(reference_high_unit, ''))
                WHEN qualitative_value IS NOT NULL THEN canonical_unit
           END AS unit_original
    FROM qualified
),
reported_units AS (
    -- The columns a unit is read from, distinct: few combinations, however many records.
    SELECT value_unit, value_unit_code, value_string, reference_low_unit,
           reference_low_unit_code, reference_high_unit, reference_high_unit_code
    FROM flat.observation
    UNION
    SELECT value_unit, value_unit_code, value_string, reference_low_unit,
           reference_low_unit_code, reference_high_unit, reference_high_unit_code
    FROM flat.observation_component
),
spellings AS (
    -- Every unit string a record can use (its unit, the unit in a text value, its reference
    -- range's units, a qualitative result's canonical unit), from distinct values, so each
    -- becomes a conversion once, not per row.
    SELECT DISTINCT unit FROM (
        SELECT value_unit AS unit FROM reported_units
        UNION ALL SELECT value_unit_code FROM reported_units
        UNION ALL SELECT value_unit(value_string) FROM reported_units
        UNION ALL SELECT reference_low_unit FROM reported_units
        UNION ALL SELECT reference_low_unit_code FROM reported_units
        UNION ALL SELECT reference_high_unit FROM reported_units
        UNION ALL SELECT reference_high_unit_code FROM reported_units
        UNION ALL SELECT canonical_unit FROM ref.concept)
    WHERE unit IS NOT NULL
),
measured AS (
    -- The sites' measured concepts, each with its unit group.
    SELECT DISTINCT m.site, m.concept, c.unit_group
    FROM harmonized.record_concept AS m
    JOIN ref.concept AS c ON c.concept = m.concept
    WHERE m.resource_type = 'Observation' AND m.kind = 'observation'
      AND c.unit_group IS NOT NULL
),
conversion AS (
    -- A spelling's conversion for a site's concept: the site's own (ref.unit_map, from
    -- sites[].unit_maps) before its unit group's (ref.unit).
    SELECT c.site, c.concept, s.unit,
           coalesce(m.factor, u.factor) AS factor,
           CASE WHEN m.factor IS NULL THEN u.offset ELSE m.offset END AS offset
    FROM (SELECT unit, unit_key(unit) AS unit_key FROM spellings) AS s
    CROSS JOIN measured AS c
    LEFT JOIN ref.unit AS u ON u.unit_group = c.unit_group AND u.unit_key = s.unit_key
    LEFT JOIN ref.unit_map AS m
      ON m.site = c.site AND m.concept = c.concept AND m.unit_key = s.unit_key
    WHERE u.factor IS NOT NULL OR m.factor IS NOT NULL
),
converted AS (
    SELECT v.*, u.factor, u.offset,
           -- Rounded to 9 decimals: 0.0052 ng/mL is 5.2 pg/mL, not 5.199999999999999.
           round(v.value_original * u.factor + u.offset, 9) AS value,
           rl.factor * v.reference_low + rl.offset AS reference_low_canonical,
           rh.factor * v.reference_high + rh.offset AS reference_high_canonical
    FROM valued AS v
    LEFT JOIN conversion AS u
      ON u.site = v.site AND u.concept = v.concept AND u.unit = v.unit_original
    LEFT JOIN conversion AS rl
      ON rl.site = v.site AND rl.concept = v.concept AND rl.unit = coalesce(
          nullif(v.reference_low_unit_code, ''), nullif(v.reference_low_unit, ''),
          v.unit_original)
    LEFT JOIN conversion AS rh
      ON rh.site = v.site AND rh.concept = v.concept AND rh.unit = coalesce(
          nullif(v.reference_high_unit_code, ''), nullif(v.reference_high_unit, ''),
          v.unit_original)
),
flagged AS (
    SELECT *,
           unit_group = 'count' AND value >= (SELECT value FROM ref.threshold
                                               WHERE name = 'implausible_count_min')
               AS count_mislabelled
    FROM converted
),
coded AS (
    -- The kind of problem (ref.quarantine_reason), decided once; the sentence follows from it.
    SELECT *,
           CASE
               WHEN status_use = 'void' THEN 'retracted'
               WHEN status_use IS DISTINCT FROM 'usable' THEN 'not_final'
               WHEN patient_key IS NULL THEN 'no_patient'
               WHEN site_date(effective, site_timezone) IS NULL THEN 'no_date'
               WHEN value_original IS NULL AND qualitative_known THEN 'no_detection_limit'
               WHEN value_original IS NULL AND (token_string IS NOT NULL OR word_with_number)
                   THEN 'ambiguous_number'
               WHEN value_original IS NULL THEN 'no_value'
               WHEN unit_original IS NULL AND comparator IS NOT NULL THEN 'censored_no_unit'
               WHEN unit_original IS NULL THEN 'no_unit'
               WHEN factor IS NULL THEN 'unit_not_convertible'
               WHEN count_mislabelled OR value < plausible_min OR value > plausible_max
                   THEN 'implausible_magnitude'
           END AS problem_code
    FROM flagged
),
judged AS (
    SELECT *,
           CASE problem_code
               WHEN 'retracted' THEN 'status ' || status || ': the result was retracted'
               WHEN 'not_final'
                   THEN 'status ' || coalesce(status, 'missing') || ': not a final result'
               WHEN 'no_patient' THEN 'no known patient (subject missing or not landed)'
               WHEN 'no_date' THEN 'no usable effective date'
               WHEN 'no_detection_limit' THEN 'no detection limit: ' || in_quotes(coalesce(
                   value_string, value_concept_text, value_concept_display, value_concept_code))
                   || ' is ' || qualitative || ' for ' || concept
                   || ', below a limit the study does not know (send the limit, as '
                   || in_quotes('<limit ' || canonical_unit) || ')'
               WHEN 'ambiguous_number' THEN CASE
                   WHEN word_with_number THEN 'ambiguous number: ' || in_quotes(coalesce(
                       value_string, value_concept_text, value_concept_display))
                       || ' writes a number with the word ' || word_result
                       || ', which the study reads only bare; send the number alone ('
                       || in_quotes('<limit ' || canonical_unit) || ')'
                   ELSE 'ambiguous number: ' || in_quotes(token_string)
                       || ' may group thousands with its comma or mark decimals; '
                       || 'send a decimal point'
               END
               WHEN 'censored_no_unit' THEN 'censored result without a unit: '
                   || in_quotes(coalesce(value_string, comparator || num_text(value_original)))
                   || ' states no unit (in its text or reference range), so its limit cannot '
                   || 'be placed in ' || canonical_unit
               WHEN 'no_value' THEN 'no numeric value (and no known qualitative result)'
               WHEN 'no_unit' THEN 'no unit: cannot convert to ' || canonical_unit
               WHEN 'unit_not_convertible' THEN 'unit ' || in_quotes(unit_original)
                   || ' is not convertible to ' || canonical_unit || ' for ' || concept
                   || '; if it is a spelling of a convertible unit, map it for ' || site
                   || ' in sites[].unit_maps'
               WHEN 'implausible_magnitude' THEN CASE
                   WHEN count_mislabelled THEN 'implausible: ' || num_text(value_original)
                        || ' ' || unit_original || ' (a per-uL count labelled as 10*9/L?)'
                   ELSE 'implausible: ' || num_text(round(value, 4)) || ' ' || canonical_unit
                        || ' for ' || concept || ' (plausible ' || num_text(plausible_min) || '-'
                        || num_text(plausible_max) || ')'
               END
           END AS problem
    FROM coded
),
numbered AS (
    SELECT *,
           CASE WHEN problem IS NULL THEN
               min(CASE WHEN problem IS NULL THEN observation_id END) OVER (
                   PARTITION BY site, patient_key, concept, effective, value_original,
                                unit_original, comparator)
           END AS first_id
    FROM judged
)
SELECT site, observation_id, patient_key, concept, matched_by, status,
       site_date(effective, site_timezone) AS effective_date,
       fhir_instant(effective) AS effective_at,
       value_original, unit_original, comparator,
       CASE WHEN problem IS NULL THEN value END AS value, canonical_unit,
       reference_low_canonical AS reference_low, reference_high_canonical AS reference_high,
       part_of_procedure_id AS part_of_procedure_id, problem_code, problem,
       CASE WHEN first_id <> observation_id THEN first_id END AS duplicate_of
FROM numbered
