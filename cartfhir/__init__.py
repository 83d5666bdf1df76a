"""cartfhir: FHIR -> validated DuckDB cohort tables -> CART1 vs CART2 endpoints.

The stages (``extract``, ``transform``, ``expectations``, ``analyze``) exchange
data only through the DuckDB file. ``cartfhir.api`` is the thin Python entry
point; the CLI is a shell around it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cartfhir")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
