"""The FHIR type a FHIRPath gives, read from the resource's structure, for columns without ``type``.

SQL-on-FHIR engines type a column by the element its path ends on (a
``Patient.birthDate`` column is a ``date``, so text; ``active`` a boolean),
and by the result of functions whose type is fixed (``count()`` is an
integer, ``join()`` a string). ``infer`` does the same over the element
table in ``fhir_types.json.gz`` (written by ``fhir_types_build`` from the R4B
models). A path it cannot follow (an element the table does not know, a
choice element not narrowed by ``ofType``, mixed branches) gives None: the
column stays JSON rather than being guessed.
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from importlib import resources
from typing import Any

from cartfhir.transform.sof import fhirpath as fp
from cartfhir.transform.sof.fhir_types_build import ABSTRACT_RESOURCES, PRIMITIVES

_TABLE_FILE = "fhir_types.json.gz"
_BOOLEAN_FUNCTIONS = frozenset({"exists", "empty", "not", "all"})
_SAME_AS_BASE = frozenset({"first", "last", "where"})
_STRING_FUNCTIONS = frozenset({"join", "getResourceKey", "getReferenceKey"})
_BOOLEAN_OPERATORS = frozenset({"=", "!=", "<", "<=", ">", ">=", "in", "contains", "and", "or",
                                "xor", "implies", "~", "!~"})
_INTEGERS = frozenset({"integer", "positiveInt", "unsignedInt"})


@cache
def element_table() -> dict[str, dict[str, list[Any]]]:
    """type name -> element name -> [type (or list of types for a choice), repeats]."""
    data = resources.files(__package__).joinpath(_TABLE_FILE).read_bytes()
    table: dict[str, dict[str, list[Any]]] = json.loads(gzip.decompress(data))
    return table


@cache
def resource_types() -> frozenset[str]:
    """The concrete FHIR R4B resource types: the table's types with a ``resourceType``."""
    return frozenset(t for t, elements in element_table().items()
                     if "resourceType" in elements and t not in ABSTRACT_RESOURCES)


def is_fhir_type(name: str) -> bool:
    """Whether ``name`` (``Quantity``, ``FHIR.string``, ``System.String``) names a FHIR type."""
    qualifier, _, bare = name.rpartition(".")
    if qualifier == "System":  # FHIRPath's own types: System.String, System.Integer ...
        return _primitive_name(bare) in PRIMITIVES or bare == "Quantity"
    return bare in PRIMITIVES or bare in element_table()


def _primitive_name(name: str) -> str:
    """``FHIR.Quantity`` / ``System.String`` / ``string`` -> the table's type name."""
    name = name.rsplit(".", 1)[-1]
    lowered = name[:1].lower() + name[1:]
    if lowered in {"string", "boolean", "integer", "decimal", "date", "dateTime", "time"}:
        return lowered
    table = element_table()
    return name if name in table else lowered


class TypeInference:
    """Infers the FHIR type of paths in one view (its resource type and constants)."""

    def __init__(self, resource_type: str, constants: dict[str, str]) -> None:
        self.resource_type = resource_type
        self.constants = constants  # constant name -> FHIR type

    def infer(self, path: str, focus: str | None, *, at_root: bool = False) -> str | None:
        """The FHIR type of ``path`` evaluated on a ``focus`` of that type, or None."""
        return self.node(fp.parse(path), focus, at_root)

    def node(self, node: fp.Node, focus: str | None, at_root: bool) -> str | None:
        if isinstance(node, fp.Literal):
            return {"string": "string", "integer": "integer", "decimal": "decimal",
                    "boolean": "boolean"}.get(node.kind)
        if isinstance(node, fp.Identifier):
            if at_root and node.name == self.resource_type:
                return focus
            return member(focus, node.name)
        if isinstance(node, fp.Variable):
            return focus if node.name == "this" else None
        if isinstance(node, fp.External):
            if node.name in ("resource", "rootResource"):
                return self.resource_type
            if node.name == "rowIndex":
                return "integer"
            return self.constants.get(node.name)
        if isinstance(node, fp.Member):
            return member(self.node(node.base, focus, at_root), node.name)
        if isinstance(node, fp.Index):
            return self.node(node.base, focus, at_root)
        if isinstance(node, fp.Call):
            return self.call(node, focus, at_root)
        if isinstance(node, fp.Binary):
            return self.binary(node, focus, at_root)
        return self.node(node.operand, focus, at_root)

    def call(self, node: fp.Call, focus: str | None, at_root: bool) -> str | None:
        name = node.name
        if name in _BOOLEAN_FUNCTIONS:
            return "boolean"
        if name == "count":
            return "integer"
        if name in _STRING_FUNCTIONS:
            return "string"
        if name == "ofType" and node.args:
            arg = node.args[0]
            if isinstance(arg, fp.Identifier):
                return _primitive_name(arg.name)
            if isinstance(arg, fp.Member) and isinstance(arg.base, fp.Identifier):
                return _primitive_name(arg.name)
            return None
        base = focus if node.base is None else self.node(node.base, focus, at_root)
        base_root = at_root and node.base is None
        if name in _SAME_AS_BASE:
            return base
        if name == "extension":
            return "Extension"
        if name == "select" and node.args:
            return self.node(node.args[0], base, base_root)
        if name == "iif" and len(node.args) > 1:
            branches = {self.node(a, base, base_root) for a in node.args[1:]}
            return branches.pop() if len(branches) == 1 else None
        return None

    def binary(self, node: fp.Binary, focus: str | None, at_root: bool) -> str | None:
        if node.op in _BOOLEAN_OPERATORS:
            return "boolean"
        if node.op == "&":
            return "string"
        left = self.node(node.left, focus, at_root)
        right = self.node(node.right, focus, at_root)
        if node.op == "|":
            return left if left == right else None
        if left in _INTEGERS and right in _INTEGERS and node.op in ("+", "-", "*", "div",
                                                                    "mod"):
            return "integer"
        numbers = _INTEGERS | {"decimal"}
        if left in numbers and right in numbers and node.op != "div":
            return "decimal"
        if node.op == "div" and left in numbers and right in numbers:
            return "integer"
        if node.op == "+" and left == right == "string":
            return "string"
        return None


def member(parent: str | None, name: str) -> str | None:
    """The type of element ``name`` of a ``parent``; None for unknowns and un-narrowed choices."""
    if parent is None:
        return None
    entry = element_table().get(parent, {}).get(name)
    if entry is None or isinstance(entry[0], list):
        return None
    return str(entry[0])


def single_element(parent: str | None, name: str) -> str | None:
    """The type of element ``name`` of ``parent`` when FHIR allows it at most once, else None.

    None also for unknown elements and for a choice's bare name (``value``): its JSON
    keys are the typed ones (``valueQuantity``), which the table lists on their own.
    """
    if parent is None:
        return None
    entry = element_table().get(parent, {}).get(name)
    if entry is None or entry[1] or isinstance(entry[0], list):
        return None
    return str(entry[0])


def choice_key(parent: str | None, name: str, type_name: str) -> str | None:
    """The JSON key of choice element ``name`` of ``parent`` as ``type_name``
    (``effective``, ``dateTime`` -> ``effectiveDateTime``) when FHIR allows that
    type there, else None (not a choice element, or not one of its types)."""
    if parent is None:
        return None
    entry = element_table().get(parent, {}).get(name)
    if entry is None or not isinstance(entry[0], list) or type_name not in entry[0]:
        return None
    return name + type_name[0].upper() + type_name[1:]


def constant_type(constant: dict[str, Any]) -> str | None:
    """A view constant's FHIR type from its ``value[x]`` key (``valueCode`` -> ``code``)."""
    keys = [k for k in constant if k.startswith("value") and len(k) > len("value")]
    if len(keys) != 1:
        return None
    return _primitive_name(keys[0][len("value"):])
