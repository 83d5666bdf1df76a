"""Errors raised while checking, compiling or running a SQL-on-FHIR ViewDefinition.

They live here rather than in ``cartfhir.errors`` because only the view engine
raises them; both still belong to the one ``CartfhirError`` tree.
"""

from __future__ import annotations

from cartfhir.errors import CartfhirError


class ViewDefinitionError(CartfhirError):
    """A ViewDefinition is invalid, or its rows break its own rules when run.

    Raised for a malformed view (missing ``resource``, bad FHIRPath, unknown
    constant, mismatched ``unionAll`` columns) and, at run time, when a
    non-collection column yields several values or a ``where`` path is not boolean.
    """


class UnsupportedFhirPath(ViewDefinitionError):
    """The view uses a FHIRPath construct this engine does not compile.

    The engine refuses rather than guessing, so a view never yields wrong rows.
    ``construct`` names the function or operator, e.g. ``descendants()``.
    """

    def __init__(self, construct: str, path: str) -> None:
        super().__init__(
            f"FHIRPath {construct} is not supported by the SQL-on-FHIR engine "
            f"(in path {path!r}); rewrite the path without it"
        )
        self.construct = construct
        self.path = path
