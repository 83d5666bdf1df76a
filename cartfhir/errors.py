"""One error tree for the whole tool.

Library code raises these and never prints or exits; the CLI maps them to exit
codes (``ConfigError`` and ``UsageError`` -> 2, everything else -> 1). Every
message says what failed, where, and what to do next.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The CLI's exit codes, each with a short label and what it means for a scheduler.

    The one list of them: ``cartfhir --help``, docs/logging.md and the README read
    or are checked against it (tests/test_cli_json.py).
    """

    label: str
    meaning: str

    def __new__(cls, code: int, label: str, meaning: str) -> ExitCode:
        member = int.__new__(cls, code)
        member._value_ = code
        member.label = label
        member.meaning = meaning
        return member

    SUCCESS = 0, "success", "every stage finished and the data passed its error expectations"
    FAILURE = 1, "failure", ("a stage, a source or the database failed, or the data failed "
                             "error expectations (validate, run); the error line says which")
    USAGE = 2, "bad config or usage", ("the config file or the command line is wrong; nothing "
                                       "was run, so retrying will not help until it is fixed")
    PARTIAL = 3, "partial extraction", ("extract or run landed what it could but some data is "
                                        "missing (a site or server failed part-way); "
                                        "the rest was transformed and validated")
    INTERRUPTED = 130, "interrupted", ("stopped by Ctrl-C or SIGINT; the run is recorded as "
                                       "interrupted and the next run starts cleanly")
    BROKEN_PIPE = 141, "output closed", ("the program reading stdout stopped early (e.g. "
                                         "head); nothing is wrong with the data (128 + "
                                         "SIGPIPE, as a shell pipeline reports it)")


# A stage result's status as the exit code the CLI returns for it (extract, run, demo).
_STATUS_EXIT = {"success": ExitCode.SUCCESS, "partial": ExitCode.PARTIAL,
                "invalid": ExitCode.FAILURE, "failed": ExitCode.FAILURE,
                "interrupted": ExitCode.INTERRUPTED}


def exit_code_for(status: str) -> ExitCode:
    """The exit code for a result's ``status``; an unknown status is a failure."""
    return _STATUS_EXIT.get(status, ExitCode.FAILURE)


def exit_code_epilog() -> str:
    """'Exit codes: 0 success, 1 failure, ...' for ``cartfhir --help``."""
    return "Exit codes: " + ", ".join(f"{c.value} {c.label}" for c in ExitCode) + "."


class CartfhirError(Exception):
    """Base of every error cartfhir raises on purpose."""

    exit_code = ExitCode.FAILURE


class UsageError(CartfhirError):
    """The command line asked for something that cannot be done as asked."""

    exit_code = ExitCode.USAGE


class ConfigError(CartfhirError):
    """The config file is missing, unreadable or does not match the schema."""

    exit_code = ExitCode.USAGE


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


class TlsError(FhirServerError):
    """The TLS handshake with a FHIR server failed: a certificate or CA problem that
    retrying cannot fix (configure ``http.tls``)."""


class DatabaseError(CartfhirError):
    """The output DuckDB file cannot be opened, or a query against it failed."""


class DatabaseBusyError(DatabaseError):
    """Another process holds the DuckDB file's lock (after ``--wait``, if given): a
    transient failure, so exit 1 (retry later), never the 'fix the config' exit 2."""


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
