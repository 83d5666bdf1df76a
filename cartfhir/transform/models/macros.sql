-- Macros the models share. Loaded before every build.
-- unit_key(u): a unit string reduced to a comparable key, so that the spellings systems
-- send for one unit meet. Inside out: one spelling per sign (µ and μ are u, º is °, ％ is
-- %); spaces (also no-break ones) dropped; degree signs spelled out (℃, °C: Cel; ℉, °F:
-- degF); powers of ten as '*' ('^', a superscript after 10: '10⁹' is 10*9); superscript
-- digits as digits ('mm³' is mm3); lower case; UCUM annotations ({cells}), brackets and
-- 'cell(s)' dropped; a leading multiplication sign (x, ×, *) dropped; 'E' powers of ten
-- as '*'; 'mc' for micro as 'u' ('mcL', 'mcmol'); a power after a unit as its exponent
-- ('mm^3' is mm3). 'x10^9/L', '×10⁹/L', 'x10E9/L' and '10*9/L' give one key. Lower case
-- merges G/L (giga) with g/L (gram): only the unit group tells them apart.
CREATE OR REPLACE MACRO unit_key(u) AS
    regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
        lower(translate(
            regexp_replace(
                replace(replace(replace(replace(replace(
                    regexp_replace(translate(u, 'μµº％', 'uu°%'), '[\s\x{A0}]+', '', 'g'),
                    '℃', 'Cel'), '℉', 'degF'), '°C', 'Cel'), '°F', 'degF'), '^', '*'),
                '10([⁰¹²³⁴⁵⁶⁷⁸⁹]+)', '10*\1', 'g'),
            '⁰¹²³⁴⁵⁶⁷⁸⁹', '0123456789')),
        '\{[^}]*\}|\[|\]|cells?', '', 'g'),
        '^[x×*]', ''),
        '10e\+?([0-9])', '10*\1', 'g'),
        '(^|/)mc(g|l|mol|kat)', '\1u\2', 'g'),
        '([a-z])\*([0-9])', '\1\2', 'g');
-- local_date(t): the calendar day as written in a FHIR date/dateTime
-- ('2021-03-04T23:30:00+08:00' is 4 March), null when unparseable. The models take a
-- record's day with site_date(), which falls back to this.
CREATE OR REPLACE MACRO local_date(t) AS TRY_CAST(substr(CAST(t AS VARCHAR), 1, 10) AS DATE);
-- site_date(t, tz): the local day of a FHIR date/dateTime at a site in IANA zone tz
-- (ref.site.timezone; docs/clinical-definitions.md, "Episodes and study days"). A date-time
-- with a time and an offset or Z counts on its day in tz ('2021-03-05T04:30:00Z' in
-- America/New_York is 4 March); a date alone, a time without an offset, anything else, or
-- no tz: the day as written, local_date(t).
CREATE OR REPLACE MACRO site_date(t, tz) AS coalesce(
    CASE WHEN tz IS NOT NULL AND regexp_full_match(CAST(t AS VARCHAR),
             '[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]+)?)?'
             || '(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))')
         THEN CAST(timezone(tz, TRY_CAST(CAST(t AS VARCHAR) AS TIMESTAMPTZ)) AS DATE) END,
    local_date(t));
-- fhir_instant(t): a FHIR date/dateTime as a timestamp (a date alone is its midnight UTC),
-- used only to order results within a day.
CREATE OR REPLACE MACRO fhir_instant(t) AS coalesce(
    TRY_CAST(CAST(t AS VARCHAR) AS TIMESTAMPTZ),
    CAST(TRY_CAST(substr(CAST(t AS VARCHAR), 1, 10) AS DATE) AS TIMESTAMPTZ));
-- grade_from_text(t): a grade 0-5 written in text: '2级', 'Grade 3', 'ASTCT grade 2', 'III'.
CREATE OR REPLACE MACRO grade_from_text(t) AS coalesce(
    TRY_CAST(regexp_extract(CAST(t AS VARCHAR), '([0-5])', 1) AS INTEGER),
    CASE upper(regexp_extract(CAST(t AS VARCHAR), '\b(IV|V|I{1,3})\b', 1))
        WHEN 'I' THEN 1 WHEN 'II' THEN 2 WHEN 'III' THEN 3 WHEN 'IV' THEN 4 WHEN 'V' THEN 5
    END);
-- code_key(c): a code as hierarchical systems compare it (ref.code_system.hierarchy =
-- 'prefix', the ICD-10 family): dots and surrounding spaces dropped, upper case, so
-- 'A41.9', 'a41.9' and 'A419' are one code and 'A41.900' or 'J18.900x001' extend them.
CREATE OR REPLACE MACRO code_key(c) AS upper(replace(trim(CAST(c AS VARCHAR)), '.', ''));
-- system_key(s): a code system URI as the maps and ref.code_system compare it. Servers send
-- one system in many spellings: surrounding spaces, any case, https, a trailing '/', a
-- 'www.' host, a '|version' suffix, and SNOMED CT edition or version URIs
-- (http://snomed.info/sct/900000000000207008/version/20230131). All reduce to one key:
-- 'HTTPS://www.LOINC.org/' and 'http://snomed.info/sct|20230131' are http://loinc.org and
-- http://snomed.info/sct. ref.concept_map, ref.code_system and ref.scope_note hold keys.
CREATE OR REPLACE MACRO system_key(s) AS regexp_replace(
    regexp_replace(
        regexp_replace(
            regexp_replace(lower(trim(CAST(s AS VARCHAR))), '\|.*$', ''),
            '^https?://(www\.)?', 'http://'),
        '^http://snomed\.info/sct/.*$', 'http://snomed.info/sct'),
    '/+$', '');
-- Macros that spell one meaning in the SQL both engines accept: a model calls these where
-- DuckDB and Spark name or write a primitive differently (macros.spark.sql holds Spark's).
-- explode(l): one row per element, in the SELECT list (Spark's generator; DuckDB's unnest).
CREATE OR REPLACE MACRO explode(l) AS unnest(l);
-- json_text(j, path): the text of a JSON value at a '$.name' path, NULL when absent.
CREATE OR REPLACE MACRO json_text(j, path) AS json_extract_string(j, path);
-- codings_key(codings): a list of Coding JSON as text that does not depend on how the JSON
-- was written (key order, spacing): each coding's system, version, code and display. The
-- engines keep a coding's keys in different orders (Spark's VARIANT sorts them), so a
-- hash of the JSON text itself would differ between them.
CREATE OR REPLACE MACRO codings_key(codings) AS array_to_string(list_transform(codings,
    lambda c: concat_ws('^', coalesce(json_text(c, '$.system'), ''),
                        coalesce(json_text(c, '$.version'), ''),
                        coalesce(json_text(c, '$.code'), ''),
                        coalesce(json_text(c, '$.display'), ''))), '|');
-- matches_regex(t, p): whether the regular expression p occurs anywhere in t.
CREATE OR REPLACE MACRO matches_regex(t, p) AS regexp_matches(t, p);
-- in_quotes(s): s between single quotes, for messages (Spark reads '''' otherwise).
CREATE OR REPLACE MACRO in_quotes(s) AS '''' || s || '''';
-- empty_list(): a list of no elements, for coalesce(l, empty_list()).
CREATE OR REPLACE MACRO empty_list() AS [];
-- item_at(l, i): the i-th element of l counted from 1, NULL when l is shorter.
CREATE OR REPLACE MACRO item_at(l, i) AS l[i];
-- has_all(l, sub): whether every element of sub is in l.
CREATE OR REPLACE MACRO has_all(l, sub) AS list_has_all(l, sub);
-- ranked(r, v) and ranked_values(l): a list ordered by rank is built as
-- ranked_values(array_sort(array_agg(ranked(rank, value)))), ties broken by value. The rank
-- is an INTEGER and the value text (Spark's functions declare INT and STRING: a DOUBLE rank
-- would be cut to an integer there).
-- array_sort puts a NULL rank or value last on DuckDB; Spark would put a NULL struct field
-- first, so its ranked() carries an is-NULL flag before each field to order it last too.
CREATE OR REPLACE MACRO ranked(r, v) AS {'r': r, 'v': v};
CREATE OR REPLACE MACRO ranked_values(l) AS list_transform(l, lambda x: x.v);
-- key_prefixes(c, n): the leading parts of code_key(c), 1 to min(its length, n) characters.
CREATE OR REPLACE MACRO key_prefixes(c, n) AS list_transform(
    range(1, least(length(code_key(c)), n) + 1), lambda i: left(code_key(c), i));
-- to_int(x): a number as INTEGER, a half rounded to even (DuckDB's cast of a DOUBLE).
CREATE OR REPLACE MACRO to_int(x) AS CAST(x AS INTEGER);
-- num_text(x): a DOUBLE as text in messages, as DuckDB writes it ('5.2', '100.0').
CREATE OR REPLACE MACRO num_text(x) AS CAST(x AS VARCHAR);
-- value_token(s), value_number(s), value_comparator(s), value_unit(s): a result written as
-- text ('< 5.2 mg/L', '＜2.0', '≤0,5 pg/mL') taken apart: the number as written, the number,
-- the comparator (ASCII: '＜' is '<', '≤' and '≦' are '<=') and the unit after the number.
-- A point is a decimal point and an exponent is read ('1e3' is 1000). A comma is a decimal
-- comma only where no thousands separator can be meant ('0,5', '12,5', '0,500'); '1,250'
-- (1.25 or 1250), '1,250,000' and '1.250,5' give no number, so the model can say why
-- (value_token keeps what was written) instead of reading 0 with the unit ',5'.
CREATE OR REPLACE MACRO value_token(s) AS nullif(regexp_extract(s,
    '^\s*(<=|>=|<|>|≤|≥|≦|≧|＜|＞)?\s*([0-9.,]*[0-9]([eE][+-]?[0-9]+)?)', 2), '');
CREATE OR REPLACE MACRO value_number(s) AS CASE
    WHEN regexp_matches(value_token(s), '^[0-9]*\.?[0-9]+([eE][+-]?[0-9]+)?$')
        THEN TRY_CAST(value_token(s) AS DOUBLE)
    WHEN regexp_matches(value_token(s), '^[0-9]+,[0-9]+([eE][+-]?[0-9]+)?$')
         AND NOT regexp_matches(value_token(s), '^[1-9][0-9]?[0-9]?,[0-9][0-9][0-9]([eE]|$)')
        THEN TRY_CAST(replace(value_token(s), ',', '.') AS DOUBLE)
END;
CREATE OR REPLACE MACRO value_comparator(s) AS CASE regexp_extract(s,
        '^\s*(<=|>=|<|>|≤|≥|≦|≧|＜|＞)\s*[0-9.,]*[0-9]', 1)
    WHEN '<' THEN '<' WHEN '＜' THEN '<'
    WHEN '<=' THEN '<=' WHEN '≤' THEN '<=' WHEN '≦' THEN '<='
    WHEN '>' THEN '>' WHEN '＞' THEN '>'
    WHEN '>=' THEN '>=' WHEN '≥' THEN '>=' WHEN '≧' THEN '>='
END;
CREATE OR REPLACE MACRO value_unit(s) AS nullif(trim(regexp_extract(s,
    '^\s*(<=|>=|<|>|≤|≥|≦|≧|＜|＞)?\s*[0-9.,]*[0-9]([eE][+-]?[0-9]+)?\s*(.*)$', 3)), '');
-- cohort and qa helpers
-- is_event(source_type, grade): whether a cohort.adverse_event row is an event. A grade
-- assessment (an Observation) of grade 0 records that there was none.
CREATE OR REPLACE MACRO is_event(source_type, grade) AS
    NOT (source_type = 'Observation' AND grade = 0);
-- day_diff(a, b): whole days from date a to date b (b - a), as a BIGINT.
CREATE OR REPLACE MACRO day_diff(a, b) AS date_diff('day', a, b);
-- latest_key(t, v): the key max_by orders a patient's results by to take the latest: the
-- time, then on a tie (two results of the same day given without a time) the larger
-- value, so the pick is the same on every run and engine; NULL (skipped) when either is.
CREATE OR REPLACE MACRO latest_key(t, v) AS
    CASE WHEN t IS NOT NULL AND v IS NOT NULL THEN [epoch_us(t)::DOUBLE, v::DOUBLE] END;
-- lab_reading(value, comparator): a result's value and comparator as one struct, so that
-- arg_max picks both from the same row (a NULL comparator is kept, not skipped).
CREATE OR REPLACE MACRO lab_reading(value, comparator) AS
    struct_pack(value := value, comparator := comparator);
