"""Expectation suites as data: each table's sidecar (``expectations:``), plus the config's
changes.

A suite is named after its table and read as a GX 1.x ExpectationSuite (``name``,
``expectations`` with ``type``, ``kwargs``, ``meta.severity``) whose ``meta`` also says
which rows it checks: ``query`` (a DuckDB SELECT, often joining what a rule needs, such as
the episode's window; default every row of the table) and ``chunk_by`` (the columns
uniqueness is judged on, so a batch never splits a duplicate). Studies and sites add
rules or change a rule's severity in the config (``expectations.add`` /
``expectations.override``).
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable
from typing import Any

from cartfhir.catalog.sidecars import load_sidecars
from cartfhir.config import Config, ExpectationRule, Expectations
from cartfhir.errors import ConfigError
from cartfhir.expectations.gx import SuiteSpec, expectation_column
from cartfhir.graph import STAGES


def package_suites() -> list[dict[str, Any]]:
    """The built-in suites, one per table whose sidecar has ``expectations``, by the
    table's build stage (cartfhir/build.yaml) and name, in GX's suite shape."""
    found = sorted(((STAGES.index(node.stage), table, sidecar.expectations, doc)
                    for table, (node, sidecar, doc) in load_sidecars().items()
                    if sidecar.expectations is not None))
    return [{"name": table,
             "meta": {"query": suite.query or f"SELECT * FROM {table}",
                      "chunk_by": list(suite.chunk_by), "description": suite.description},
             "expectations": [{"type": r.type, "kwargs": copy.deepcopy(r.kwargs),
                               "meta": {"severity": r.severity}
                               | ({"why": r.why} if r.why else {})} for r in suite.rules],
             "_source": f"package:{doc}"}
            for _, table, suite, doc in found]


def _scoped(kwargs: dict[str, Any], site: str | None) -> dict[str, Any]:
    """Restrict a rule to one site's rows (GX pandas row_condition)."""
    if site is None:
        return dict(kwargs)
    if "row_condition" in kwargs:
        raise ConfigError(f"expectations: a rule for site {site!r} cannot also carry its own "
                          "row_condition; drop one of them")
    return {**kwargs, "row_condition": {"type": "comparison", "column": {"name": "site"},
                                         "operator": "==", "parameter": site}}


def _apply_override(suite: dict[str, Any], rule: ExpectationRule, where: str) -> None:
    matched = False
    for expectation in suite["expectations"]:
        if expectation["type"] != rule.type:
            continue
        if rule.column is not None and expectation_column(expectation["kwargs"]) != rule.column:
            continue
        expectation.setdefault("meta", {})["severity"] = rule.severity
        if rule.kwargs:
            expectation["kwargs"].update(rule.kwargs)
        matched = True
    if not matched:
        listed = "; ".join(f"{e['type']}"
                           + (f" on {column}" if (column := expectation_column(e["kwargs"]))
                              else "")
                           for e in suite["expectations"])
        raise ConfigError(f"{where}: suite {rule.suite} has no {rule.type}"
                          + (f" on column {rule.column}" if rule.column else "")
                          + f"; its rules: {listed or 'none'} (renamed rules are listed "
                          "in the README, section Validation)")


def _settings(settings: Expectations) -> dict[str, float]:
    """The values a rule's kwargs may name as ``{setting: <name>}``: the ceilings."""
    return {name: getattr(settings, name) for name, field in Expectations.model_fields.items()
            if field.annotation is float}


def _resolved(value: Any, settings: dict[str, float], where: str) -> Any:
    """``value`` with every ``{setting: <name>}`` replaced by that setting's value."""
    if isinstance(value, dict) and set(value) == {"setting"}:
        name = value["setting"]
        if not isinstance(name, str) or name not in settings:
            raise ConfigError(f"{where}: {{setting: {name!r}}} names no setting; give one of "
                              f"(expectations section of the config): {', '.join(settings)}")
        return settings[name]
    if isinstance(value, dict):
        return {key: _resolved(item, settings, where) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolved(item, settings, where) for item in value]
    return value


def load_suites(config: Config) -> list[SuiteSpec]:
    """The suites a site's config asks for: ``expectation_suites`` with its expectations
    section and its site ids."""
    return expectation_suites(config.expectations, sites=[s.id for s in config.sites])


def expectation_suites(settings: Expectations, *, sites: Iterable[str] = (),
                       names: Collection[str] | None = None) -> list[SuiteSpec]:
    """Built-in suites (only ``names`` when given) with ``settings``' additions and overrides
    applied ('off' removes) and the ``{setting: <name>}`` kwargs filled from ``settings``;
    ``sites`` are the site ids a rule may be restricted to."""
    suites = {s["name"]: copy.deepcopy(s) for s in package_suites()}
    if unknown := sorted(set(names or ()) - set(suites)):
        raise ConfigError(f"unknown suite(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(suites))}")
    known_sites = set(sites)
    rules = [("override", i, r) for i, r in enumerate(settings.override)]
    rules += [("add", i, r) for i, r in enumerate(settings.add)]
    for kind, i, rule in rules:
        where = f"expectations.{kind}[{i}]"
        if rule.suite not in suites:
            raise ConfigError(f"{where}.suite: unknown suite {rule.suite!r}; "
                              f"known: {', '.join(sorted(suites))}")
        if rule.site is not None and rule.site not in known_sites:
            raise ConfigError(f"{where}.site: {rule.site!r} is not a configured site")
        if kind == "override":
            _apply_override(suites[rule.suite], rule, where)
        else:
            suites[rule.suite]["expectations"].append({
                "type": rule.type, "kwargs": _scoped(rule.kwargs, rule.site),
                "meta": {"severity": rule.severity, "added_by": where}})
    values = _settings(settings)
    for suite in suites.values():
        suite["expectations"] = [e for e in suite["expectations"]
                                 if e.get("meta", {}).get("severity") != "off"]
        for number, expectation in enumerate(suite["expectations"], start=1):
            if added_by := expectation.get("meta", {}).get("added_by"):
                where = f"{added_by} (suite {suite['name']}, {expectation['type']})"
            else:
                where = (f"suite {suite['name']} ({suite.get('_source', '')}), expectation "
                         f"#{number} ({expectation['type']})")
            expectation["kwargs"] = _resolved(expectation["kwargs"], values, where)
    return [suite_spec(suite) for name, suite in suites.items()
            if names is None or name in names]


def suite_spec(suite: dict[str, Any]) -> SuiteSpec:
    """The runnable form of a suite file: its rows (``meta.query``) and its expectations."""
    meta = suite.get("meta", {})
    return SuiteSpec(name=suite["name"], query=meta["query"],
                     chunk_by=tuple(meta.get("chunk_by", ())),
                     expectations=suite["expectations"], source=suite.get("_source", ""))
