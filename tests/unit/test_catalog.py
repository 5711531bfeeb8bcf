"""The catalog (pipelines/catalog.py): every table declared once, lineage read from the SQL itself."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fhir_mappings.clinical.tables import AS_OF_INPUTS
from pipelines.catalog import Catalog, StepSpec, TableSpec, load_catalog
from pipelines.warehouse import table_for

ROOT = Path(__file__).resolve().parents[2]
_REF = re.compile(r"\b(raw|staging|quality|marts)\.([a-z_][a-z0-9_]*)\b")
CATALOG = load_catalog()


def sql_references(path: Path) -> set[str]:
    """`schema.table` names a SQL file reads, comments left out; a ViewDefinition reads the raw table
    of its resource (the step compiles it over the current version of each resource)."""
    if path.suffix == ".json":
        return {f"raw.{table_for(json.loads(path.read_text())['resource'])}"}
    text = "\n".join(line.split("--", 1)[0] for line in path.read_text().splitlines())
    refs = {f"{m[1]}.{m[2]}" for m in _REF.finditer(text)}
    if "as_of_date" in text and "mart_params AS" not in text:
        refs |= set(AS_OF_INPUTS)  # mart_params.as_of_date is the latest date in these raw tables
    return refs


def step_reads(step: StepSpec) -> set[str]:
    refs: set[str] = set()
    for path in step.files:
        refs |= sql_references(path)
    return refs - set(step.table_names)


@pytest.mark.parametrize("step", CATALOG.steps, ids=lambda s: s.name)
def test_declared_inputs_are_what_the_sql_reads(step: StepSpec) -> None:
    assert step.files, f"{step.name} has no SQL file"
    assert set(step.all_inputs) == step_reads(step), (
        f"{step.name}: declared inputs differ from the SQL's references "
        f"(declared only: {sorted(set(step.all_inputs) - step_reads(step))}, "
        f"SQL only: {sorted(step_reads(step) - set(step.all_inputs))})"
    )


@pytest.mark.parametrize("step", CATALOG.steps, ids=lambda s: s.name)
def test_each_table_is_written_by_its_own_sql(step: StepSpec) -> None:
    """By name in a CREATE statement, or (tables whose rows Python computes) through a file that
    creates a declared `{{ table }}`."""
    generic = re.compile(r"CREATE (OR REPLACE )?(TABLE|VIEW) \{\{ *table *\}\}")
    texts = [p.read_text() for p in step.files]
    for table in step.tables:
        writes = re.compile(rf"CREATE (OR REPLACE )?(TABLE|VIEW) (IF NOT EXISTS )?{re.escape(table.name)}\b")
        assert any(writes.search(t) or generic.search(t) for t in texts), (
            f"no SQL of {step.name} writes {table.name}"
        )


def test_tables_are_declared_once_with_a_grain() -> None:
    names = [t.name for t in CATALOG.all_tables()]
    assert len(names) == len(set(names))
    assert all(t.grain.startswith("One row per") for t in CATALOG.all_tables())


def test_every_sql_file_belongs_to_a_step_or_a_known_loader() -> None:
    used = {p.resolve() for s in CATALOG.steps for p in s.files}
    for folder in ("fhir_mappings/sql/clinical", "marts/sql"):
        for path in (ROOT / folder).glob("*.sql"):
            if path.stem in {"params", "reference_date"}:
                continue  # installed by prepare_clinical for every step
            assert path.resolve() in used or path.stem.startswith("_"), f"{path} is run by no step"


def test_steps_order_inputs_first_and_refuse_cycles() -> None:
    order = [s.name for s in CATALOG.ordered_steps()]
    for step in CATALOG.steps:
        for i in step.all_inputs:
            up = CATALOG.step_of(i)
            if up is not None:
                assert order.index(up.name) < order.index(step.name)

    def build(con: object, ctx: object) -> dict[str, int]:
        return {}

    a = StepSpec("staging.a", "staging", (TableSpec("staging.a", "One row per a"),), ("staging.b",), build)
    b = StepSpec("staging.b", "staging", (TableSpec("staging.b", "One row per b"),), ("staging.a",), build)
    with pytest.raises(ValueError, match="cycle"):
        Catalog((), (a, b)).ordered_steps()


def test_declarations_refuse_unknown_inputs_duplicates_and_bad_names() -> None:
    def build(con: object, ctx: object) -> dict[str, int]:
        return {}

    with pytest.raises(ValueError, match="undeclared"):
        Catalog(
            (),
            (
                StepSpec(
                    "staging.a", "staging", (TableSpec("staging.a", "One row per a"),), ("raw.x",), build
                ),
            ),
        )
    with pytest.raises(ValueError, match="more than once"):
        Catalog((TableSpec("raw.x", "One row per x"), TableSpec("raw.x", "One row per x")), ())
    with pytest.raises(ValueError, match=r"schema\.table"):
        TableSpec("Raw.X; drop", "One row per x")
    with pytest.raises(ValueError, match="One row per"):
        TableSpec("raw.x", "rows of x")
