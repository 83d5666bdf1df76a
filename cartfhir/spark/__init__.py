"""Apache Spark as a second engine for the heavy layers (views, harmonized, cohort, qa).

DuckDB stays the default engine and the reference; with ``engine: {kind: spark}`` the
transform runs the same ViewDefinitions (compiled to Spark SQL by
``cartfhir.transform.sof``) and the same models on a SparkSession, and writes the tables
as Parquet partitioned by site, which the small statistical stages read with DuckDB.

``pyspark`` is an optional dependency (``pip install 'cartfhir[spark]'``); nothing here
is imported unless the Spark engine is used.
"""
