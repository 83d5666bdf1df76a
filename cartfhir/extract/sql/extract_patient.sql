-- meta.extract_patient: cohort members whose data has been pulled completely once.
-- Grain: (site, patient_id). A patient new to the cohort is pulled without a
-- _lastUpdated filter, because their older resources predate every watermark.
--   site          text: site id
--   patient_id    text: the server's Patient id (raw identifier; stays in the site)
--   first_run_id  text: the run that first pulled the patient completely
CREATE SCHEMA IF NOT EXISTS meta;
CREATE TABLE IF NOT EXISTS meta.extract_patient (
    site         VARCHAR NOT NULL,
    patient_id   VARCHAR NOT NULL,
    first_run_id VARCHAR NOT NULL,
    PRIMARY KEY (site, patient_id)
);
