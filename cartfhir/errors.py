"""One error tree for the whole tool.

Library code raises these and never prints or exits; the CLI maps them to exit
codes (``ConfigError`` and ``UsageError`` -> 2, everything else -> 1). Every
message says what failed, where, and what to do next.
"""

from __future__ import annotations


class CartfhirError(Exception):
    """Base of every error cartfhir raises on purpose."""

    exit_code = 1


class UsageError(CartfhirError):
    """The command line asked for something that cannot be done as asked."""

    exit_code = 2


class ConfigError(CartfhirError):
    """The config file is missing, unreadable or does not match the schema."""

    exit_code = 2


class SecretError(ConfigError):
    """A secret the config refers to (env var or file) is not available."""


class SourceError(CartfhirError):
    """A data source (folder, file, server) cannot be read."""


class AuthError(CartfhirError):
    """Getting or using credentials for a FHIR server failed."""


class FhirServerError(SourceError):
    """A FHIR server answered with an error, or with something that breaks the rules.

    Carries the HTTP status (None for connection-level failures), the URL with
    secrets masked, and the OperationOutcome diagnostics when the server sent one.
    """

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None,
                 outcome: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.url = url
        self.outcome = outcome


class DatabaseError(CartfhirError):
    """The output DuckDB file cannot be opened, or a query against it failed."""


class StrictLandingError(CartfhirError):
    """Lines were rejected while the config asks for strict landing."""


class TransformError(CartfhirError):
    """A view or model could not be built; the message names the file and the cause."""


class GraphError(CartfhirError):
    """cartfhir/build.yaml or a table's sidecar (``*.yml``) is inconsistent: a file is
    missing, a dependency unknown or built later, a column list differs from the table's."""


class IncompleteTransformError(TransformError):
    """The latest transform was interrupted or failed, so its tables are not from the raw data."""


class StaleResultError(CartfhirError):
    """A stage's results are older than the tables they describe; that stage must run again."""


class ExpectationError(CartfhirError):
    """The data failed 'error' expectations, or a suite could not be run at all."""


class PoolError(CartfhirError):
    """A site package cannot be exported or pooled; the message says which file and why."""
