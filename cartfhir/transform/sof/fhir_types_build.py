"""Write ``fhir_types.json.gz``: every FHIR R4B element's type, read from fhir.resources.

The SQL-on-FHIR engine infers the SQL type of a column without ``type`` from
the element its path ends on, so it needs each element's FHIR type: that
comes from the R4B model classes of ``fhir.resources`` (generated from the
specification's StructureDefinitions), written once into a small data file
so that running a view never imports the models. Regenerate after changing
the fhir.resources version::

    python -m cartfhir.transform.sof.fhir_types_build

The table maps a type name (a resource, a datatype, or a backbone element
named as the models name it, e.g. ``ObservationComponent``) to its
elements: ``name -> [type, repeats, required]`` (required: minimum cardinality
at least 1, which full landing validation checks). A choice element appears
under its FHIRPath name (``value``) with the list of its types (required when
one of them must be given), and under each JSON name (``valueQuantity``) with
one type (never required on its own). Every resource (and only a resource)
has a ``resourceType`` element of type ``string``, as in FHIR JSON: that is how
the engine tells a resource type from a datatype (``types.resource_types``).
"""

from __future__ import annotations

import gzip
import importlib
import json
import pkgutil
import typing
from pathlib import Path
from typing import Any

TARGET = Path(__file__).with_name("fhir_types.json.gz")
PACKAGE = "fhir.resources.R4B"
# The resource types FHIR defines as abstract: no resource has them as its resourceType.
ABSTRACT_RESOURCES = frozenset({"Resource", "DomainResource"})
PRIMITIVES = frozenset({
    "boolean", "integer", "positiveInt", "unsignedInt", "integer64", "decimal", "string",
    "code", "id", "uri", "url", "canonical", "oid", "uuid", "markdown", "base64Binary",
    "xhtml", "date", "dateTime", "instant", "time",
})


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


def _element_type(annotation: Any) -> tuple[str | None, bool]:
    """(FHIR type name, repeats) of one model field's annotation; None when unrecognised."""
    repeats = False
    pending = [annotation]
    while pending:
        hint = pending.pop(0)
        origin = typing.get_origin(hint)
        if origin is typing.Annotated:
            for meta in getattr(hint, "__metadata__", ()):
                name = _lower_first(type(meta).__name__)
                if name in PRIMITIVES:
                    return name, repeats
                if name == "uuidVersion":  # uuid is pydantic's UUID4, not a fhir_core marker
                    return "uuid", repeats
            pending.append(typing.get_args(hint)[0])
        elif origin in (list, typing.List):  # noqa: UP006 - the models use typing.List
            repeats = True
            pending.extend(typing.get_args(hint))
        elif origin is not None:  # Optional / Union
            pending.extend(a for a in typing.get_args(hint) if a is not type(None))
        elif hint is bool:
            return "boolean", repeats
        elif isinstance(hint, type) and hint.__name__.endswith("Type"):
            return hint.__name__[: -len("Type")], repeats
    return None, repeats


def _required(field: Any, extra: dict[str, Any]) -> bool:
    """Whether an element has minimum cardinality 1 (choice types: see ``build``).

    The models declare a required complex element as a required field, and a
    required primitive as optional with ``element_required`` (its value may be
    replaced by an extension in ``_name``).
    """
    if extra.get("one_of_many"):
        return False
    return bool(field.is_required() or extra.get("element_required") is True)


def build() -> dict[str, dict[str, list[Any]]]:
    """The element table from the installed R4B models, sorted for a stable file."""
    package = importlib.import_module(PACKAGE)
    resource = importlib.import_module(f"{PACKAGE}.resource").Resource
    table: dict[str, dict[str, list[Any]]] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_") or info.name in ("fhirtypes", "fhirtypesvalidators"):
            continue
        module = importlib.import_module(f"{PACKAGE}.{info.name}")
        for cls in vars(module).values():
            if (not isinstance(cls, type) or cls.__module__ != module.__name__
                    or not hasattr(cls, "elements_sequence")):
                continue
            elements: dict[str, list[Any]] = {}
            choices: dict[str, list[str]] = {}
            required_choices: set[str] = set()
            for field in cls.model_fields.values():
                alias = field.alias or ""
                if not alias or alias.startswith("_") or alias == "fhir_comments":
                    continue
                fhir_type, repeats = _element_type(field.annotation)
                if fhir_type is None:
                    continue
                extra = field.json_schema_extra if isinstance(field.json_schema_extra,
                                                              dict) else {}
                elements[alias] = [fhir_type, repeats, _required(field, extra)]
                choice = extra.get("one_of_many")
                if isinstance(choice, str):
                    choices.setdefault(choice, []).append(fhir_type)
                    if extra.get("one_of_many_required") is True:
                        required_choices.add(choice)
            for name, types in choices.items():
                elements[name] = [sorted(set(types)), False, name in required_choices]
            if issubclass(cls, resource):
                elements["resourceType"] = ["string", False, True]
            if elements:
                table[cls.__name__] = dict(sorted(elements.items()))
    return dict(sorted(table.items()))


def encode(table: dict[str, Any]) -> bytes:
    """The file's bytes: compact JSON, gzip without a timestamp (same input, same bytes)."""
    text = json.dumps(table, separators=(",", ":"), sort_keys=True).encode()
    return gzip.compress(text, compresslevel=9, mtime=0)


def main() -> None:
    TARGET.write_bytes(encode(build()))
    print(f"wrote {TARGET} ({TARGET.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
