-- meta.pool_package: description, grain, columns and expectations in pool_package.yml
CREATE SCHEMA IF NOT EXISTS meta;
CREATE TABLE IF NOT EXISTS meta.pool_package (
    site            VARCHAR PRIMARY KEY,
    created         VARCHAR,
    manifest_sha256 VARCHAR,
    manifest        JSON,
    source          VARCHAR
);
-- Pooled databases made before packages were signed get the column (null for their rows).
ALTER TABLE meta.pool_package ADD COLUMN IF NOT EXISTS signed_by VARCHAR;
