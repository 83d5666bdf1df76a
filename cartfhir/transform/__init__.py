"""Transform stage: SQL-on-FHIR v2 views on DuckDB, harmonization, cohort tables.

Not built yet (see the transform issue); nothing here pretends otherwise.
"""
