"""Great Expectations engine: validate a DuckDB query in bounded, hash-partitioned chunks.

GX's SQL datasource on DuckDB (through duckdb-engine) fails every expectation with
"list index out of range", so rows are fetched from DuckDB a chunk at a time into
pandas (``batching``) and validated with GX's pandas datasource (``engine``); a
million-row table never sits in memory at once. Per-chunk results are combined per
expectation (``tally``), which is sound only for the types ``spec`` allows; ``docs``
stores the results as GX Data Docs.
"""

from cartfhir.expectations.gx.docs import DocsSite
from cartfhir.expectations.gx.engine import validate_suite
from cartfhir.expectations.gx.spec import ALLOWED_TYPES, SuiteSpec, expectation_column
from cartfhir.expectations.gx.tally import Outcome

__all__ = ["ALLOWED_TYPES", "DocsSite", "Outcome", "SuiteSpec", "expectation_column",
           "validate_suite"]
