"""fhir_validate against the fhir.resources R4B models: the same accept/reject decisions.

The differential corpus: the synthetic cohort of every site profile (with its
injected bad lines and bundles), the resources of the SQL-on-FHIR conformance and
broad-hospital fixtures, one resource of every R4B type generated from the element
table, and seeded mutations of the first two (required elements dropped, unknown keys,
kinds swapped, lists wrapped and unwrapped, dates, codes and ids broken, a
second type of a choice, nested resources). Where the two disagree, the FHIR
R4B specification decides: every such case is listed in ``SPEC_CASES`` with
its reason, checked on its own, and recognised in the differential run.
"""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from cartfhir.extract import fhir_validate
from cartfhir.extract.checks import MAX_DEPTH, json_depth, resource_model
from cartfhir.extract.fhir_validate import (
    is_resource_type,
    validation_problem,
)
from cartfhir.synth import generate
from cartfhir.synth.profiles import available_profiles
from cartfhir.transform.sof.types import element_table
from tests.transform.broad_hospital import broad_resources

FIXTURES = Path(__file__).parents[1] / "data" / "sof-conformance"
# Another seed explores other mutants: CARTFHIR_FUZZ_SEED=7 pytest <this file>
SEED = int(os.environ.get("CARTFHIR_FUZZ_SEED", "15"))
MUTANTS_PER_RESOURCE = 5


# --- the reference: fhir.resources -------------------------------------------------


def model_accepts(resource: dict[str, Any]) -> bool:
    """The old 'full' decision: does the fhir.resources R4B model take ``resource``?"""
    model = resource_model(resource["resourceType"])
    assert model is not None
    try:
        model.model_validate(resource)
    except (ValidationError, ValueError, TypeError, KeyError, AttributeError):
        # KeyError (a contained resource of unknown type) and AttributeError (a JSON
        # number in a string for _name) escape the models unwrapped: 'full' crashed.
        return False
    return True


def accepts(resource: dict[str, Any]) -> bool:
    return validation_problem(resource["resourceType"], resource) is None


# --- where the models are laxer (or stricter) than R4B, and R4B decides --------------

def patient(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p1", **elements}


def observation(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"text": "Hb"}, **elements}


# (resource, what R4B says: valid?, why). The models decide the other way.
SPEC_CASES: list[tuple[dict[str, Any], bool, str]] = [
    (patient(active="true"), False,
     "boolean is a JSON true/false; the models coerce the strings 'true'/'false'"),
    (patient(active=1), False, "boolean is a JSON true/false; the models coerce 0 and 1"),
    (patient(multipleBirthInteger=2.0), False,
     "integer is a JSON number without fraction or exponent; the models take 2.0"),
    (patient(multipleBirthInteger="2"), False,
     "integer is a JSON number, not a string; the models parse '2'"),
    (patient(multipleBirthInteger=True), False,
     "integer is a JSON number; the models take true as 1"),
    (observation(valueQuantity={"value": "1.5"}), False,
     "decimal is a JSON number, not a string; the models parse '1.5'"),
    (patient(birthDate=1672531200), False,
     "date is a JSON string; the models read a number as a Unix time (at midnight)"),
    (observation(effectiveDateTime=1676444820), False,
     "dateTime is a JSON string; the models read a number as a Unix time"),
    (observation(issued=1676444820.5), False,
     "instant is a JSON string; the models read a number as a Unix time"),
    (observation(code='{"text": "Hb"}'), False,
     "a complex element is a JSON object; the models parse a string holding JSON"),
    (patient(photo=[{"title": "x", "data": "AAAA", "contentType": "text/plain",
                     "language": "en", "url": "http://a.example/p"}],
             text={"status": "generated", "div": ""}), False,
     "xhtml: a primitive's string is never empty; the models accept ''"),
    (patient(telecom=[{"system": "url", "value": "http://a.example/x y"}]), True,
     "ContactPoint.value is a string, where spaces are fine (control case)"),
    (patient(identifier=[{"system": "http://a.example/ x"}]), False,
     "uri matches \\S* (no whitespace); the models accept any string"),
    (patient(identifier=[{"system": " http://a.example/x "}]), True,
     "a uri padded with spaces breaks R4B's \\S*, but servers send coding systems so "
     "(' http://loinc.org '), the models accept it and harmonization trims it: tolerated "
     "(control case)"),
    (patient(identifier=[{"system": "   "}]), False,
     "a uri of whitespace only is empty once trimmed; the models accept it"),
    (patient(identifier=[{"system": ""}]), False,
     "uri: a primitive's string is never empty; the models accept ''"),
    (patient(contained=[{"resourceType": "Patient", "id": "c" * 65}]), False,
     "id is at most 64 characters; the models allow 255"),
    (patient(contained=[{"id": "c1"}]), False,
     "a contained resource names its resourceType; the models check it as a bare Resource"),
    (observation(code=None), False,
     "a required element (min 1) given as null is missing; the models take null as a value"),
    (patient(meta={"versionId": "v" * 65}), False,
     "meta.versionId is an id: at most 64 characters; the models allow 255"),
    (patient(extension=[{"url": "http://a.example/x", "valueBoolean": True,
                         "_valueBoolean": {"id": "e1"}}]), True,
     "an extension's primitive value may have its own _value extension object, as every "
     "primitive in FHIR JSON; the models refuse _value* in Extension"),
    (observation(code={"text": "Hb", "resourceType": "CodeableConcept"}), False,
     "resourceType is a key of resources only; the models drop it from any object "
     "when it is null or names the object's own type"),
    (observation(meta={"resourceType": None}), False,
     "resourceType is a key of resources only, null or not"),
    (patient(name=[{"text": "\u00a0"}]), True,
     "string: R4B's [ \\r\\n\\t\\S]+ is an XML Schema regex, where \\S is all but "
     "space, tab, CR, LF: a no-break space is content; the models' Unicode \\s refuses it"),
    (patient(photo=[{"data": "@@@@"}]), False,
     "base64Binary is the base64 alphabet; the models skip characters outside it"),
    (patient(photo=[{"data": "ééé="}]), False,
     "base64Binary is the base64 alphabet (ASCII); the models skip characters outside it"),
    (patient(extension=[{"url": "http://a.example/x",
                         "valueUuid": "53fefa32-fcbb-4ff8-8a92-55ee120877b7"}]), False,
     "uuid is written urn:uuid:...; the models take a bare UUID"),
    (patient(extension=[{"url": "http://a.example/x",
                         "valueUuid": "urn:uuid:53fefa32-fcbb-1ff8-8a92-55ee120877b7"}]), True,
     "uuid is any RFC 4122 UUID; the models take version 4 only"),
    (patient(fhir_comments=["a comment"]), False,
     "fhir_comments is not an R4B element (it was DSTU2 JSON); the models allow it"),
    (patient(photo=[{"url": "not a url"}]), False,
     "url matches \\S* (no whitespace); the models accept a relative path with spaces"),
]


def known_disagreement(resource: dict[str, Any]) -> str | None:
    """The reason from ``SPEC_CASES`` that explains why the two differ on ``resource``."""
    for finder in _FINDERS:
        reason = finder(resource)
        if reason is not None:
            return reason
    return None


def _typed_values(resource: dict[str, Any]) -> Iterator[tuple[str, Any, str]]:
    """(FHIR type, value, key) of every element in ``resource``, as the table types them;
    a required element given as null comes as type 'required'."""
    table = element_table()
    stack: list[tuple[str, Any]] = [(resource.get("resourceType", ""), resource)]
    while stack:
        type_name, obj = stack.pop()
        if not isinstance(obj, dict) or type_name not in table:
            continue
        for key, value in obj.items():
            entry = table[type_name].get(key.removeprefix("_"))
            if entry is None or isinstance(entry[0], list):
                yield "", value, key
                continue
            fhir_type = "FHIRPrimitiveExtension" if key.startswith("_") else entry[0]
            if value is None and entry[2] and not key.startswith("_"):
                yield "required", value, key
            if type_name == "Extension" and key.startswith("_"):
                yield "Extension._value", value, key
            for item in value if isinstance(value, list) else [value]:
                yield fhir_type, item, key
                if fhir_type == "Resource" and isinstance(item, dict):
                    stack.append((str(item.get("resourceType", "Resource")), item))
                elif isinstance(item, dict):
                    stack.append((fhir_type, item))


STRING_KINDS = frozenset({"string", "code", "id", "uri", "url", "canonical", "markdown",
                          "oid", "xhtml", "date", "dateTime", "instant", "time",
                          "base64Binary"})
URI_KINDS = frozenset({"uri", "url", "canonical"})
# The kinds whose pattern in the models matches '' (the others reject it, as R4B does).
EMPTY_OK = URI_KINDS | {"markdown", "xhtml"}


def _find(check: Callable[[str, Any, str], bool], reason: str) -> Callable[
        [dict[str, Any]], str | None]:
    def finder(resource: dict[str, Any]) -> str | None:
        hit = any(check(t, v, k) for t, v, k in _typed_values(resource))
        return reason if hit else None
    return finder


_FINDERS = [
    _find(lambda t, v, k: t == "boolean" and type(v) is not bool, "lax boolean"),
    _find(lambda t, v, k: t in ("integer", "positiveInt", "unsignedInt")
          and type(v) is not int, "lax integer"),
    _find(lambda t, v, k: t == "decimal" and type(v) not in (int, float), "lax decimal"),
    _find(lambda t, v, k: t in STRING_KINDS and type(v) is not str, "lax string kind"),
    _find(lambda t, v, k: t in EMPTY_OK and v == "", "empty string"),
    _find(lambda t, v, k: t in URI_KINDS and isinstance(v, str) and (not v.strip() or any(
        c.isspace() for c in v.strip())), "whitespace in a uri"),
    _find(lambda t, v, k: t not in STRING_KINDS and t not in ("boolean", "decimal")
          and isinstance(v, str) and t != "", "string for an object"),
    _find(lambda t, v, k: t == "Resource" and isinstance(v, dict) and not is_resource_type(
        str(v.get("resourceType"))), "nested resource without a known type"),
    _find(lambda t, v, k: k == "fhir_comments", "fhir_comments"),
    _find(lambda t, v, k: t in ("base64Binary", "uuid"), "base64Binary or uuid"),
    _find(lambda t, v, k: t in ("string", "markdown") and isinstance(v, str)
          and not v.strip() and v.strip(" \t\r\n") != "", "Unicode space in a string"),
    _find(lambda t, v, k: k == "resourceType" and t == "", "resourceType in an element"),
    _find(lambda t, v, k: t == "id" and isinstance(v, str) and 64 < len(v) <= 255,
          "id longer than 64"),
    _find(lambda t, v, k: t == "required", "required element null"),
    _find(lambda t, v, k: t == "Extension._value", "Extension._value[x]"),
]


@pytest.mark.parametrize(("resource", "valid", "reason"), SPEC_CASES,
                         ids=[reason[:50] for _, _, reason in SPEC_CASES])
def test_where_the_models_differ_r4b_decides(resource: dict[str, Any], valid: bool,
                                             reason: str) -> None:
    assert accepts(resource) is valid, validation_problem(resource["resourceType"], resource)
    if "control case" not in reason:
        assert model_accepts(resource) is not valid, "the models now agree: drop the case"
        assert known_disagreement(resource) is not None


def test_a_contained_resource_of_unknown_type_is_a_rejection_not_a_crash() -> None:
    """The models raise KeyError for it, which 'full' did not catch: the check crashed."""
    resource = patient(contained=[{"resourceType": "NotAType", "id": "c1"}])
    assert validation_problem("Patient", resource) == (
        "fails FHIR R4B validation: contained[0].resourceType: unknown resourceType 'NotAType'")
    with pytest.raises(KeyError):
        resource_model("Patient").model_validate(resource)  # type: ignore[union-attr]


def test_a_primitive_extension_given_as_a_number_in_a_string_is_a_rejection_not_a_crash() -> None:
    """The models parse the string as JSON and fail on the number with AttributeError."""
    resource = patient(_gender="1")
    assert validation_problem("Patient", resource) == (
        "fails FHIR R4B validation: _gender: Input should be a JSON object (got string)")
    with pytest.raises(AttributeError):
        resource_model("Patient").model_validate(resource)  # type: ignore[union-attr]


# --- the corpus -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every resource of a small synthetic cohort over all site profiles, bad lines too."""
    out = tmp_path_factory.mktemp("synth")
    generate(out, patients=6, seed=SEED, sites=available_profiles(), bad_rate=0.2,
             bundles=False)
    generate(out / "bundled", patients=3, seed=SEED, sites=available_profiles()[:1],
             bundles=True)
    found = []
    for path in sorted(out.rglob("*.ndjson")):
        for raw in path.read_bytes().splitlines():
            found.extend(_resources_of(raw))
    return found


def _resources_of(raw: bytes) -> list[dict[str, Any]]:
    """The resource on a line (none when it is not JSON, not a resource, or too deep)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    if (not isinstance(value, dict) or not isinstance(value.get("resourceType"), str)
            or not is_resource_type(value["resourceType"])
            or json_depth(value) > MAX_DEPTH):
        return []
    return [value]


def fixture_resources() -> list[dict[str, Any]]:
    """The resources of the SQL-on-FHIR conformance fixtures (R4, all valid R4B too)
    and of the broad-hospital transform fixture (claims, immunizations, reports...)."""
    found = []
    for path in sorted(FIXTURES.glob("*.json")):
        for resource in json.loads(path.read_text()).get("resources", []):
            found.extend(_resources_of(orjson.dumps(resource)))
    broad = broad_resources(patients=2, visits=1)
    kept = [r for r in broad if r["resourceType"] != "Observation"] + [
        r for r in broad if r["resourceType"] == "Observation"][:10]
    for resource in kept:
        found.extend(_resources_of(orjson.dumps(resource)))
    return found


# --- the mutation fuzzer ----------------------------------------------------------------

KIND_SWAPS: list[Any] = ["x", "", "true", "5", "1.5", "2023-02-30", 5, 0, -1, 2**31, 1.5,
                         True, False, {}, {"a": 1}, {"id": "e"}, [], [1], ["x"], [None],
                         [{}], None]
BROKEN_STRINGS = ["2023-02-30", "2023-13-01", "2023-02-15T06:07:00", "2023-02-15T24:00:00Z",
                  "2023-02-15T06:07:00+14:30", "0000-01-01", "2016-12-31T23:59:60Z",
                  "2024-02-29", "12:30:00", "25:00:00", " final", "a  b", "a b", "x" * 65,
                  "urn:oid:1.2.3", "urn:oid:3.4", "not a uri", "AAAA", "AAA=", "@@@@",
                  "2023", "2023-02", "2023-02-15T06:07:00.123456789Z"]
NESTED = [{"resourceType": "Patient", "id": "c1"}, {"resourceType": "Patient"},
          {"resourceType": "Observation", "id": "c2"}, {"id": "c3"},
          {"resourceType": "Nope", "id": "c4"}, {"resourceType": "Resource", "id": "c5"},
          {"resourceType": "Patient", "id": "c6", "gender": 5}]


def _places(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value inside ``value`` (the root excluded)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if path == () and key == "resourceType":
                continue
            yield (*path, key)
            yield from _places(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*path, index)
            yield from _places(item, (*path, index))


def _parent(resource: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        resource = resource[step]
    return resource


def _objects(resource: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [()] + [p for p in _places(resource) if isinstance(_get(resource, p), dict)]


def _get(resource: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        resource = resource[step]
    return resource


def _choice_sibling(rng: random.Random, obj: dict[str, Any]) -> None:
    """Add a second type of a choice element ``obj`` already has one type of."""
    for key in list(obj):
        for prefix in ("value", "effective", "onset", "abatement", "performed", "deceased",
                       "multipleBirth", "occurrence", "medication", "timing"):
            if key.startswith(prefix) and key != prefix and key[len(prefix)].isupper():
                obj[prefix + rng.choice(["String", "Boolean", "DateTime", "Period"])] = (
                    copy.deepcopy(obj[key]) if rng.random() < 0.3 else "x")
                return


def mutate(rng: random.Random, original: dict[str, Any]) -> dict[str, Any]:
    """One random damage to a copy of ``original`` (which it leaves alone)."""
    resource = copy.deepcopy(original)
    places = list(_places(resource))
    kind = rng.choice(["drop", "unknown", "swap", "wrap", "unwrap", "break", "choice",
                       "contained", "null"])
    if kind == "drop" and places:
        path = rng.choice(places)
        del _parent(resource, path)[path[-1]]
    elif kind == "unknown":
        obj = _get(resource, rng.choice(_objects(resource)))
        obj[rng.choice(["extra", "_extra", "_id", "_status", "fhir_comments", "value",
                        "Value", "resourceType"])] = rng.choice(["x", 1, {}, {"extension": []}])
    elif kind in ("swap", "null") and places:
        path = rng.choice(places)
        _parent(resource, path)[path[-1]] = (None if kind == "null"
                                             else copy.deepcopy(rng.choice(KIND_SWAPS)))
    elif kind == "wrap" and places:
        path = rng.choice(places)
        holder = _parent(resource, path)
        holder[path[-1]] = [holder[path[-1]]]
    elif kind == "unwrap":
        lists = [p for p in places if isinstance(_get(resource, p), list)]
        if lists:
            path = rng.choice(lists)
            items = _get(resource, path)
            _parent(resource, path)[path[-1]] = items[0] if items else None
    elif kind == "break":
        strings = [p for p in places if isinstance(_get(resource, p), str)]
        if strings:
            path = rng.choice(strings)
            _parent(resource, path)[path[-1]] = rng.choice(BROKEN_STRINGS)
    elif kind == "choice":
        _choice_sibling(rng, _get(resource, rng.choice(_objects(resource))))
    elif kind == "contained":
        nested = copy.deepcopy(rng.choice([*NESTED, original]))
        if rng.random() < 0.5 and nested is not original:
            nested = mutate(rng, nested) if "resourceType" in nested and is_resource_type(
                str(nested["resourceType"])) else nested
        resource.setdefault("contained", [])
        if isinstance(resource["contained"], list):
            resource["contained"].append(nested)
    return resource


def corpus(base: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``base`` and, seeded, ``MUTANTS_PER_RESOURCE`` mutants of each (some twice damaged)."""
    rng = random.Random(SEED)
    for resource in base:
        yield resource
        for _ in range(MUTANTS_PER_RESOURCE):
            mutant = mutate(rng, resource)
            yield mutate(rng, mutant) if rng.random() < 0.25 else mutant


def disagreements(resources: list[dict[str, Any]]) -> list[tuple[dict[str, Any], bool]]:
    """The resources the two validators decide differently, with the new decision,
    leaving out those a case of ``SPEC_CASES`` explains."""
    found = []
    for resource in corpus(resources):
        resource_type = resource.get("resourceType")
        if (json_depth(resource) > MAX_DEPTH or not isinstance(resource_type, str)
                or not is_resource_type(resource_type)):
            continue  # check_line rejects these before validation
        new = accepts(resource)
        if new != model_accepts(resource) and known_disagreement(resource) is None:
            found.append((resource, new))
    return found


def _show(found: list[tuple[dict[str, Any], bool]]) -> str:
    return "\n".join(f"new accepts={new}: {orjson.dumps(r).decode()[:400]}"
                     for r, new in found[:5])


def test_same_decisions_on_the_synthetic_cohort_and_its_mutants(
        synthetic: list[dict[str, Any]]) -> None:
    assert len(synthetic) > 100
    found = disagreements(synthetic[::5])
    assert not found, _show(found)


def test_same_decisions_on_the_fixtures_and_their_mutants() -> None:
    resources = fixture_resources()
    assert len(resources) > 20
    found = disagreements(resources)
    assert not found, _show(found)


# --- every resource type, generated from the element table ---------------------------

# A valid value of each primitive type.
GOOD_PRIMITIVES: dict[str, Any] = {
    "boolean": True, "integer": 3, "positiveInt": 2, "unsignedInt": 0, "decimal": 1.5,
    "string": "s", "markdown": "m", "xhtml": "<div>x</div>", "code": "c", "id": "i1",
    "uri": "http://a.example/u", "url": "http://a.example/u", "canonical": "http://a.example/c|1",
    "oid": "urn:oid:1.2.3", "uuid": "urn:uuid:53fefa32-fcbb-4ff8-8a92-55ee120877b7",
    "base64Binary": "AAAA", "date": "2020-01-02", "dateTime": "2020-01-02T03:04:05Z",
    "instant": "2020-01-02T03:04:05Z", "time": "03:04:05",
}


def generated(rng: random.Random, type_name: str, depth: int = 0) -> Any:
    """A value of ``type_name``: its required elements (now and then one left out), some
    optional ones and one type of some choices, nested four levels at most."""
    if type_name in GOOD_PRIMITIVES:
        return GOOD_PRIMITIVES[type_name]
    if type_name == "Resource":
        type_name = rng.choice(["Patient", "Observation", "Basic"])
        return {"resourceType": type_name, **generated(rng, type_name, depth)}
    table = element_table()[type_name]
    value: dict[str, Any] = {}
    if depth > 4:
        return value
    choice_keys = {name + t[0].upper() + t[1:] for name, (types, _, _) in table.items()
                   if isinstance(types, list) for t in types}
    for name, (fhir_type, repeats, required) in table.items():
        if name == "resourceType" and fhir_type == "string":
            continue
        if isinstance(fhir_type, list):
            if required or rng.random() < 0.3:
                chosen = rng.choice(fhir_type)
                value[name + chosen[0].upper() + chosen[1:]] = generated(rng, chosen, depth + 1)
        elif name not in choice_keys and ((required and rng.random() < 0.95)
                                          or rng.random() < 0.15):
            item = generated(rng, fhir_type, depth + 1)
            value[name] = [item] if repeats else item
    return value


def test_same_decisions_on_every_resource_type_generated_from_the_table() -> None:
    rng = random.Random(SEED)
    types = sorted(name for name in element_table() if is_resource_type(name))
    found = []
    for resource_type in types:
        resource = {**generated(rng, resource_type), "resourceType": resource_type, "id": "x"}
        new = accepts(resource)
        if new != model_accepts(resource) and known_disagreement(resource) is None:
            found.append((resource, new))
    assert not found, _show(found)


# --- hostile input: a reason, never an exception -------------------------------------


def _every_element_wrong(resource_type: str) -> Iterator[dict[str, Any]]:
    """``resource_type`` with each of its elements in turn given each kind of wrong value."""
    for key in element_table()[resource_type]:
        for value in KIND_SWAPS:
            yield {"resourceType": resource_type, "id": "x", key: copy.deepcopy(value),
                   "_" + key: copy.deepcopy(value)}


HOSTILE: list[dict[str, Any]] = [
    patient(name=[{"given": ["x"] * 100_000, "family": 5}]),
    patient(name=[{"given": [5] * 100_000}]),
    patient(identifier=[None] * 10_000),
    patient(multipleBirthInteger=10**40, extension=[{"url": "u", "valueDecimal": 10**400}]),
    patient(extension=[{"url": "u", "valueDecimal": float("inf")}]),
    patient(**{"": 1, "_": 2, "__proto__": {}, "résumé": [], "_id": {"id": "x"}}),
    {"resourceType": "Bundle", "id": "b", "type": "collection",
     "entry": [{"resource": v} for v in KIND_SWAPS]},
    {"resourceType": "Bundle", "id": "b", "type": "collection",
     "entry": [{"resource": {"resourceType": "Bundle", "type": "collection", "entry": [
         {"resource": {"resourceType": "Parameters", "parameter": [
             {"name": "p", "resource": {"resourceType": 5}}]}}]}}]},
    {"resourceType": "Parameters", "id": "p", "parameter": [
        {"name": "n", "part": [{"name": "m", "valueString": "x", "valueInteger": 1}] * 3}]},
]


@pytest.mark.parametrize("resource_type", ["Patient", "Observation", "Bundle", "Parameters"])
def test_every_wrong_kind_of_every_element_gives_a_reason(resource_type: str) -> None:
    for resource in _every_element_wrong(resource_type):
        problem = validation_problem(resource_type, resource)
        assert problem is None or problem.startswith("fails FHIR R4B validation: ")


@pytest.mark.parametrize("resource", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_resources_give_a_reason_not_an_exception(resource: dict[str, Any]) -> None:
    problem = validation_problem(resource["resourceType"], resource)
    assert problem is not None and problem.startswith("fails FHIR R4B validation: ")
    assert len(problem) < 2000


def test_nesting_to_the_depth_limit_validates_without_recursion_trouble() -> None:
    extension: dict[str, Any] = {"url": "http://a.example/x", "valueString": "leaf"}
    for _ in range((MAX_DEPTH - 3) // 2):
        extension = {"url": "http://a.example/x", "extension": [extension]}
    assert validation_problem("Patient", patient(extension=[extension])) is None
    contained: dict[str, Any] = patient()
    for _ in range((MAX_DEPTH - 2) // 2):
        contained = patient(contained=[contained])
    assert validation_problem("Patient", contained) is None


# --- one table, cheap in every check process ---------------------------------------


def test_the_validator_reads_the_element_table_of_the_sql_engine() -> None:
    assert fhir_validate._table() == element_table()


def test_the_resource_types_are_those_the_models_know() -> None:
    for name in element_table():
        assert is_resource_type(name) is (resource_model(name) is not None), name


def test_a_check_process_validates_without_the_models_or_the_transform_stage() -> None:
    """check_chunk runs in spawned processes: each builds what it needs on first use."""
    code = (
        "import sys, time\n"
        "from cartfhir.extract.checks import check_line, Accepted\n"
        "start = time.perf_counter()\n"
        "line = b'{\"resourceType\":\"Observation\",\"id\":\"o\",\"status\":\"final\","
        "\"code\":{\"text\":\"Hb\"}}'\n"
        "assert isinstance(check_line(line, 'full'), Accepted)\n"
        "print(time.perf_counter() - start)\n"
        "heavy = ('fhir', 'fhir_core', 'cartfhir.transform')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)
    first_line_seconds, loaded = done.stdout.splitlines()
    assert loaded == "[]"
    assert float(first_line_seconds) < 1.0  # the table and a few types: milliseconds


# --- what the validator remembers ------------------------------------------------------


def test_remembered_verdicts_keep_kinds_and_types_apart() -> None:
    """Verdicts are remembered by JSON text and element type: 1 and true are equal in
    Python, and the same object can be a valid CodeableConcept but not a Reference."""
    for _ in range(2):  # the second time from memory
        assert accepts(observation(valueQuantity={"value": 1}))
        assert not accepts(observation(valueQuantity={"value": True}))
        assert accepts(observation(valueQuantity={"value": 1.0}))
        assert accepts(observation(code={"text": "x"}))
        assert not accepts(observation(subject={"text": "x"}))
        assert not accepts(observation(category={"text": "x"}))  # a list, not one object
        assert accepts(observation(category=[{"text": "x"}]))


def test_memory_stays_bounded() -> None:
    for index in range(fhir_validate._MEMO_MAX_ENTRIES + 10):
        accepts(observation(subject={"reference": f"Patient/{index}"}))
    assert len(fhir_validate._MEMO) <= fhir_validate._MEMO_MAX_ENTRIES
    accepts(observation(subject={"reference": "Patient/" + "x" * 5000}))
    assert all(len(text) <= fhir_validate._MEMO_MAX_BYTES for _, text in fhir_validate._MEMO)


# --- red team: bounds, kinds and messages ---------------------------------------------


def test_unknown_resource_types_are_not_remembered() -> None:
    """Every line names its resourceType; a hostile file naming a new long one per
    line must not grow a cache for the life of the process."""
    before = fhir_validate.is_resource_type.cache_info().currsize if hasattr(
        fhir_validate.is_resource_type, "cache_info") else 0
    for index in range(200):
        assert not is_resource_type(f"Nope{index}" + "x" * 1000)
        bundle = {"resourceType": "Bundle", "id": "b", "type": "collection",
                  "entry": [{"resource": {"resourceType": f"Zz{index}" + "y" * 1000}}]}
        assert not accepts(bundle)
    after = fhir_validate.is_resource_type.cache_info().currsize if hasattr(
        fhir_validate.is_resource_type, "cache_info") else 0
    assert after - before < 10


def _problem_and_peak(resource: dict[str, Any]) -> tuple[str | None, int]:
    """validation_problem for ``resource``, and the peak of memory it allocated."""
    import tracemalloc
    tracemalloc.start()
    try:
        problem = validation_problem(resource["resourceType"], resource)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return problem, peak


def test_a_list_of_many_bad_items_keeps_few_errors() -> None:
    """A 64 MiB line of [0,0,0...] is 32 million bad items: the errors kept stay few
    (memory), the reason still says there are more."""
    problem, peak = _problem_and_peak(observation(category=[0] * 200_000))
    assert problem is not None and "category[0]: Input should be a JSON object" in problem
    assert "more" in problem
    assert peak < 5_000_000  # not hundreds of bytes per bad item
    problem, peak = _problem_and_peak(observation(code={f"k{i}": 1 for i in range(200_000)}))
    assert problem is not None and "code.k0: Extra inputs are not permitted" in problem
    assert peak < 5_000_000


def test_remembered_verdicts_stay_small() -> None:
    """The memory of verdicts is bounded in entries and in key bytes: a verdict that is
    a long list of errors is not kept (16,384 of them would be gigabytes)."""
    fhir_validate._MEMO.clear()
    for index in range(50):
        items: list[Any] = [0] * 500
        items[index] = 1
        assert not accepts(observation(category=items))
    kept = [v for v in fhir_validate._MEMO.values() if isinstance(v, list)]
    assert all(len(v) <= fhir_validate.MAX_ERRORS_SHOWN + 1 for v in kept)


def test_a_remembered_verdict_never_answers_for_a_value_of_another_python_kind() -> None:
    """The key is the value written as JSON; orjson writes inf and nan as null and a
    str, dict or int subclass as its base: such values are checked, not looked up."""
    import collections
    import enum

    class Level(enum.IntEnum):
        ONE = 1

    pairs = [
        (patient(extension=[{"url": "u", "valueDecimal": None}]),
         patient(extension=[{"url": "u", "valueDecimal": float("inf")}])),
        (patient(extension=[{"url": "u", "valueDecimal": None}]),
         patient(extension=[{"url": "u", "valueDecimal": float("nan")}])),
        (patient(maritalStatus={"text": "x"}),
         patient(maritalStatus=collections.OrderedDict(text="x"))),
        (patient(communication=[{"language": {"text": "x"}, "preferred": True}]),
         patient(communication=[{"language": {"text": "x"}, "preferred": Level.ONE}])),
    ]
    for good, bad in pairs:
        fresh = validation_problem("Patient", bad)
        assert fresh is not None
        assert accepts(good)
        assert validation_problem("Patient", bad) == fresh


def test_a_huge_integer_resource_type_in_a_nested_resource_is_a_reason() -> None:
    """str() of an int over 4,300 digits raises ValueError in Python 3.11+."""
    bundle = {"resourceType": "Bundle", "id": "b", "type": "collection",
              "entry": [{"resource": {"resourceType": 10**5000}}]}
    problem = validation_problem("Bundle", bundle)
    assert problem is not None and len(problem) < 500


def test_reasons_stay_one_bounded_line_whatever_the_keys() -> None:
    """Unknown keys are named in the reason: a key with a newline or of 100,000
    characters must not make the reason several lines or 100 kB long."""
    resource = patient(**{"gender\nSet-Cookie: x": "1", "k" * 100_000: 1,
                          "a\u2028b": 1})
    problem = validation_problem("Patient", resource)
    assert problem is not None
    assert "\n" not in problem and "\u2028" not in problem
    assert len(problem) < 1000
    deep: dict[str, Any] = {"url": "u", "valueString": "x", "y" * 300: 1}
    for _ in range(40):
        deep = {"url": "u", "extension": [deep]}
    problem = validation_problem("Patient", patient(extension=[deep]))
    assert problem is not None and len(problem) < 2000


def test_a_secret_in_a_long_key_is_redacted_before_the_key_is_cut() -> None:
    """A reason is redacted where it is stored; cut first, a registered secret longer
    than the cut would no longer be found there and its start would show."""
    from cartfhir.redact import redact, register

    secret = "s3cr3t-" + "".join(f"{i:02d}" for i in range(60))  # 127 characters
    register(secret)
    for resource in (patient(**{secret: 1}),
                     {"resourceType": "Bundle", "id": "b", "type": "collection",
                      "entry": [{"resource": {"resourceType": secret}}]}):
        problem = validation_problem(resource["resourceType"], resource)
        assert problem is not None
        assert secret[:20] not in redact(problem)
