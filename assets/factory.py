"""Dagster assets generated from the table catalog (`pipelines/catalog.py`).

One `multi_asset` per build step, with one `AssetSpec` per table it writes, so every table is an asset
the UI shows. Group and `layer` tag are the step's layer; dependencies are the step's declared inputs
(which `tests/unit/test_catalog.py` checks against the SQL); each spec links its SQL file as a code
reference. The step runs through `build_state.run_step`: skipped when its inputs are unchanged, and
the input fingerprint is each asset's `DataVersion`.
"""

import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import dagster as dg

from pipelines import build_state
from pipelines.automation import is_full_refresh
from pipelines.catalog import Catalog, StepSpec, TableSpec
from pipelines.resources.fhir_source import WarehouseResource

OWNERS = ["team:data-engineering"]


def asset_key(table: str) -> dg.AssetKey:
    """`schema.table` -> AssetKey(["schema", "table"])."""
    return dg.AssetKey(table.split("."))


def asset_tables(catalog: Catalog) -> set[str]:
    """Tables that are assets: every declared table except those the quality checks write."""
    return {t.name for t in catalog.all_tables() if t.schema != "quality"}


def code_references(step: StepSpec, table: TableSpec, module_file: str) -> dg.CodeReferencesMetadataValue:
    """The table's SQL file(s) and the Python module that declares the step.

    Code references are a beta API in Dagster 1.13 (stable in what they show: file and line); its
    warning is silenced here so a normal run prints none.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _code_references(step, table, module_file)


def _code_references(step: StepSpec, table: TableSpec, module_file: str) -> dg.CodeReferencesMetadataValue:
    refs: list[dg.LocalFileCodeReference | dg.UrlCodeReference] = [
        dg.LocalFileCodeReference(file_path=str(p), line_number=1, label=p.name) for p in step.files
    ]
    if table.sql is not None and table.sql not in step.files:
        refs.insert(
            0, dg.LocalFileCodeReference(file_path=str(table.sql), line_number=1, label=table.sql.name)
        )
    refs.append(dg.LocalFileCodeReference(file_path=module_file, label="declaration"))
    return dg.CodeReferencesMetadataValue(code_references=refs)


def table_description(table: TableSpec, step: StepSpec) -> str:
    """What the UI shows: grain, description, table name and how it is built."""
    text = f"{table.grain}: {table.description}" if table.description else f"{table.grain}."
    others = [t for t in step.table_names if t != table.name]
    built = (
        f"built with {', '.join(others)} by step {step.name}" if others else "rebuilt whole from its inputs"
    )
    return f"{text} ({table.name}; {built})"


def declaring_file(step: StepSpec) -> str:
    """The Python file that declares the step (where its build function is defined)."""
    return str(sys.modules[step.build.__module__].__file__)


def step_assets(steps: Iterable[StepSpec], catalog: Catalog) -> list[dg.AssetsDefinition]:
    """One multi_asset per step."""
    return [step_asset(s, catalog) for s in steps]


def step_asset(step: StepSpec, catalog: Catalog) -> dg.AssetsDefinition:
    """The multi_asset that builds one step's tables."""
    module_file = declaring_file(step)
    assets = asset_tables(catalog)
    deps = [asset_key(i) for i in (*step.all_inputs, *step.after) if i in assets]
    specs = [
        dg.AssetSpec(
            key=asset_key(t.name),
            deps=deps,
            group_name=step.layer,
            tags={"layer": step.layer},
            kinds={"duckdb", "sql"},
            owners=OWNERS,
            description=table_description(t, step),
            metadata={
                "table": t.name,
                "grain": t.grain,
                "key": ", ".join(t.key),
                "dagster/code_references": code_references(step, t, module_file),
            },
        )
        for t in step.tables
    ]
    upstream = sorted({s.name for i in step.all_inputs if (s := catalog.step_of(i)) is not None})
    append_only = [i for i in step.all_inputs if catalog.step_of(i) is None]

    @dg.multi_asset(
        name=step.name.replace(".", "__"),
        specs=specs,
        can_subset=False,
        description=step.description or None,
    )
    def _build_step(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> Iterator[dg.MaterializeResult]:
        ctx = step.context()
        with warehouse.connect() as con:
            run = build_state.run_step(
                con,
                step.name,
                append_only_inputs=append_only,
                upstream_steps=upstream,
                outputs=step.table_names,
                build=lambda: step.build(con, ctx),
                extra=step.fingerprint_text(ctx),
                run_id=context.run_id,
                force=is_full_refresh(context),
            )
            report: dict[str, Any] = dict(step.report(con, ctx)) if step.report is not None else {}
        verb = "inputs unchanged since the last build: kept" if run.skipped else "built"
        context.log.info(f"{step.name}: {verb} {dict(run.counts)}")
        for t in step.tables:
            rows = int(run.counts[f"rows.{t.name}"])
            extra = {k: int(v) for k, v in run.counts.items() if not k.startswith("rows.")}
            yield dg.MaterializeResult(
                asset_key=asset_key(t.name),
                metadata={**extra, **report, "skipped": run.skipped, "dagster/row_count": rows},
                data_version=dg.DataVersion(run.fingerprint),
            )

    return _build_step
