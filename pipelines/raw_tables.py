"""Raw layer tables: one declaration each (`pipelines/catalog.py`); the DDL is `pipelines/warehouse.py`.

Resource tables are written by the raw assets (one per resource type, partitioned by source); the
intake ledgers (rejected, findings, fetch log, watermarks, ...) by the same pulls, and shown in the UI
as the `raw/<ledger>` assets that record their state after each source's pulls.
"""

from __future__ import annotations

from pipelines.catalog import TableSpec
from pipelines.settings import RESOURCE_TYPES
from pipelines.warehouse import table_for

RESOURCE_TABLES: tuple[TableSpec, ...] = tuple(
    TableSpec(
        f"raw.{table_for(t)}",
        f"One row per {t} version fetched from each source",
        ("source", "id", "version_id"),
        f"Kept exactly as received (column `resource`), with its origin, content hash and the run that "
        f"landed it. Invalid {t} resources go to raw.rejected instead.",
    )
    for t in RESOURCE_TYPES
)

LEDGER_TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        "raw.rejected",
        "One row per resource (or unparseable line) that could not be landed",
        (),
        "The reason, every validation finding, and the text exactly as received.",
    ),
    TableSpec(
        "raw.findings",
        "One row per structural-validation finding on a landed or rejected resource",
        (),
        "Path, message, error type and whether it caused the rejection.",
    ),
    TableSpec(
        "raw.fetch_log",
        "One row per pull of one resource type from one source",
        ("run_id", "source", "resource_type"),
        "fetched = landed + rejected + duplicates, pages, the window and the watermark after it.",
    ),
    TableSpec(
        "raw.watermarks",
        "One row per source x resource type",
        ("source", "resource_type"),
        "The newest lastUpdated (or Bulk transactionTime) the next incremental pull starts from.",
    ),
    TableSpec(
        "raw.source_files",
        "One row per folder-source file landed for a resource type",
        ("source", "resource_type", "path"),
        "Size and mtime, so an unchanged file is not read again.",
    ),
    TableSpec(
        "raw.bulk_jobs",
        "One row per source x resource type with a Bulk export in progress",
        ("key",),
        "The status URL and kick-off request, so a killed run resumes its export.",
    ),
    TableSpec(
        "raw.patient_pull_progress",
        "One row per source x resource type x patient already landed by a patient-scoped pull in progress",
        ("source", "resource_type", "patient_id"),
        "The watermark the pull started from and the patient's newest lastUpdated, so a killed pull "
        "resumes with the remaining patients; emptied when the pull completes.",
    ),
    TableSpec(
        "raw.group_members",
        "One row per source x resource type x cohort member whose whole history has been pulled",
        ("source", "resource_type", "group_id", "patient_id"),
        "Written by Group-level exports and patient-scoped pulls (group_id: the Group, or "
        "'(Patient search)'). A member missing here joined later: their whole history is pulled once.",
    ),
    TableSpec(
        "raw.canonical_resolution",
        "One row per Questionnaire canonical checked against a source",
        (),
        "Resolved id, or not_found / error with its detail.",
    ),
)

TABLES: tuple[TableSpec, ...] = (*RESOURCE_TABLES, *LEDGER_TABLES)
WRITERS: dict[str, str] = {
    **{t.name: "the raw asset of its resource type (assets/raw.py)" for t in RESOURCE_TABLES},
    **{t.name: "every raw asset's pull (assets/raw.py)" for t in LEDGER_TABLES},
}
