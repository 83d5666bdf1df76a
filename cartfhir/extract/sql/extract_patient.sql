-- meta.extract_patient: description, grain, columns and expectations in extract_patient.yml
CREATE SCHEMA IF NOT EXISTS meta;
CREATE TABLE IF NOT EXISTS meta.extract_patient (
    site         VARCHAR NOT NULL,
    patient_id   VARCHAR NOT NULL,
    first_run_id VARCHAR NOT NULL,
    PRIMARY KEY (site, patient_id)
);
