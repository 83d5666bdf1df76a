"""The catalog as text: the data dictionary (Markdown), rows for tables and CSV, JSON."""

from __future__ import annotations

from cartfhir.catalog.tables import Table

LAYER_NOTES = {
    "raw": "Resources as landed, with what was rejected. Raw ids stay in this schema.",
    "flat": "One table per ViewDefinition in `cartfhir/transform/views/` (SQL-on-FHIR v2), "
            "each with a leading `site` column.",
    "harmonized": "Records mapped to study concepts, values in canonical units.",
    "cohort": "Episodes, windows, daily labs, adverse events and endpoints per CAR-T infusion.",
    "qa": "What is not used and why, what is not mapped, and the validation results.",
    "analysis": "CART1 against CART2, event-free survival after CART2, count dynamics, and "
                "in a pooled database the heterogeneity between sites.",
    "meta": "Runs, extraction state, the reference files each transform used and the "
            "packages a pooled database holds.",
    "ref": "Clinical knowledge as data, rebuilt by every transform from "
           "`cartfhir/transform/terminology/`, `study_defaults.yaml` and the config.",
}


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def render_markdown(tables: list[Table]) -> str:
    """The data dictionary: one section per schema in layer order, one table per table."""
    out = ["# Data dictionary", "",
           "Every table cartfhir writes to its DuckDB database, with its grain and columns.",
           "Generated from the tables' sidecars (the `.yml` beside each SQL, ViewDefinition",
           "or DDL file, listed in `cartfhir/build.yaml`) by",
           "`cartfhir schema --format markdown > docs/data-dictionary.md`;",
           "`tests/catalog/test_render.py` fails when this file or the sidecars drift apart.", ""]
    schemas = list(dict.fromkeys(t.schema for t in tables))
    out += ["Schemas: " + ", ".join(f"[`{s}`](#{s})" for s in schemas) + ".", ""]
    for schema in schemas:
        out += [f"## {schema}", ""]
        if schema in LAYER_NOTES:
            out += [LAYER_NOTES[schema], ""]
        for table in (t for t in tables if t.schema == schema):
            out += [f"### {table.full_name}", ""]
            if table.description:
                out += [table.description, ""]
            facts = []
            if table.grain:
                facts.append(f"Grain: {table.grain}.")
            if table.source:
                facts.append(f"Made by `{table.source}`, described in `{table.doc}`.")
            if table.depends:
                facts.append("Reads " + ", ".join(f"`{d}`" for d in table.depends) + ".")
            if table.optional:
                facts.append(f"Optional: {table.optional}.")
            if table.withheld:
                facts.append("Not exported when `analysis.small_cell_k` is set.")
            if facts:
                out += [" ".join(facts), ""]
            out += ["| column | type | description |", "|---|---|---|"]
            out += [f"| `{c.name}` | {_cell(c.type)} | {_cell(c.description)} |"
                    for c in table.columns]
            out.append("")
    return "\n".join(out)


def column_rows(tables: list[Table]) -> list[list[str]]:
    """One row per column: table, column, type, description (for table/CSV output)."""
    return [[t.full_name, c.name, c.type or "", c.description] for t in tables
            for c in t.columns]


def as_json(tables: list[Table]) -> list[dict]:
    return [{"table": t.full_name, "grain": t.grain, "description": t.description,
             "source": t.source, "doc": t.doc, "depends": list(t.depends),
             "optional": t.optional,
             "columns": [{"name": c.name, "type": c.type, "description": c.description}
                         for c in t.columns]} for t in tables]


__all__ = ["LAYER_NOTES", "as_json", "column_rows", "render_markdown"]
