"""Entry point: build the clinical staging layer and the six marts in the warehouse connection.

`build_marts(con, settings)` rebuilds everything whole (CREATE OR REPLACE), so a rerun on the same
warehouse gives the same tables. The marts are declared in `marts/tables.py` (`STEPS`); the Dagster
assets build one table each through `build_mart` and `build_staging` with the same context.
"""

from __future__ import annotations

import duckdb

from fhir_mappings.clinical.tables import CLINICAL_TABLES, ClinicalContext
from fhir_mappings.clinical.tables import STEPS as CLINICAL_STEPS
from marts.context import (
    MartBuild,
    MartContext,
    fingerprint_text,
    make_context,
    prepare_marts,
)
from marts.settings import MartSettings
from marts.tables import STEPS

__all__ = [
    "BI_MARTS",
    "MART_NAMES",
    "RESTRICTED_MARTS",
    "STAGING_BUILT",
    "MartContext",
    "build_mart",
    "build_marts",
    "build_staging",
    "fingerprint_text",
    "make_context",
    "prepare_marts",
]

# The marts in build order (inputs first), from their declarations.
MART_NAMES: tuple[str, ...] = tuple(s.tables[0].short_name for s in STEPS)


def _published_to(target: str) -> tuple[str, ...]:
    missing = [s.tables[0].name for s in STEPS if s.tables[0].published_to is None]
    if missing:  # a new mart must say where it goes: never to BI users by default
        raise ValueError(f"marts without a publish target (TableSpec.published_to): {missing}")
    return tuple(s.tables[0].short_name for s in STEPS if s.tables[0].published_to == target)


# Where each mart is published, from its declaration (`TableSpec.published_to`): aggregates to the BI
# target, record-level marts (patient, episode, session grain) to the restricted target only.
BI_MARTS: tuple[str, ...] = _published_to("bi")
RESTRICTED_MARTS: tuple[str, ...] = _published_to("restricted")
# Clinical staging tables built here, in order (fhir_mappings/clinical/tables.py).
STAGING_BUILT: tuple[str, ...] = CLINICAL_TABLES


def build_staging(
    con: duckdb.DuckDBPyConnection, name: str, ctx: MartContext, *, prepared: bool = False
) -> dict[str, int]:
    """Build one clinical staging table (`STAGING_BUILT`); returns its counts (`rows` plus linking stats).

    Each clinical step prepares its own connection (macros, parameters); `prepared` is accepted for
    callers that prepared already and changes nothing.
    """
    del prepared
    for step in CLINICAL_STEPS:
        if step.tables[0].short_name == name:
            return dict(step.build(con, ClinicalContext(ctx.settings, ctx.thresholds)))
    raise KeyError(f"unknown staging table {name!r}; known: {', '.join(STAGING_BUILT)}")


def _mart_build(name: str) -> MartBuild:
    for step in STEPS:
        if step.tables[0].short_name == name and isinstance(step.build, MartBuild):
            return step.build
    raise KeyError(f"unknown mart {name!r}; known: {', '.join(MART_NAMES)}")


def build_mart(con: duckdb.DuckDBPyConnection, name: str, ctx: MartContext, *, prepared: bool = False) -> int:
    """(Re)build one mart (its input marts must exist); returns its row count."""
    build = _mart_build(name)
    return build(con, ctx, prepared=prepared)[f"rows.{build.table}"]


def build_marts(
    con: duckdb.DuckDBPyConnection,
    settings: MartSettings | None = None,
    *,
    key: bytes | None = None,
    with_staging: bool = True,
) -> dict[str, int]:
    """Build the clinical staging tables (unless `with_staging=False`) and all six marts.

    Needs the raw layer and `staging.measure_scores`. Returns the row count of each mart. The key
    defaults to `$ALLIANCE_QI_PSEUDONYM_KEY` / `$ALLIANCE_QI_PSEUDONYM_KEY_FILE`.
    """
    ctx = make_context(settings, key)
    prepare_marts(con, ctx)  # once for every table built below
    if with_staging:
        for name in STAGING_BUILT:
            build_staging(con, name, ctx, prepared=True)
    return {name: build_mart(con, name, ctx, prepared=True) for name in MART_NAMES}
