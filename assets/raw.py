"""Raw layer: one asset per FHIR resource type, partitioned by source (site or EHR).

Each materialization pulls one source's resources of one type into that source's own landing file
(`pipelines/landing.py`). That file is never shared, so sources and types can be pulled in
parallel. The new rows are then merged into the warehouse in one short transaction, and that merge
is the only moment a pull needs the warehouse's single writer. Metadata reports fetched = landed +
rejected + duplicates, which is also recorded in `raw.fetch_log`.

Failures no retry can cure (a refused credential, a credential refused for an untrusted origin, a
4xx, a malformed Bulk manifest, a size limit) fail the step at once with
`dg.Failure(allow_retries=False)`: retrying a static token that the EHR refuses only adds failed
logins. Network failures and cut-off pages keep the step retry (`RAW_RETRY`).

A folder source whose files for the type are unchanged since the last completed pull (same paths,
sizes and modification times, recorded in `ops.build_state` after the merge) is not read again: the
asset reports `skipped` without opening the landing file. A full refresh always pulls.
"""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from pipelines import build_state
from pipelines.automation import is_full_refresh
from pipelines.extract import SourceSpec, extract_resource_type, resolve_referenced_questionnaires
from pipelines.landing import landing_path, merge_into_warehouse
from pipelines.raw_tables import LEDGER_TABLES, RESOURCE_TABLES
from pipelines.resources.fhir import FhirClient, FhirError
from pipelines.resources.fhir.errors import is_fatal
from pipelines.resources.fhir.folder import folder_files, typed_file_of
from pipelines.resources.fhir_source import FhirSourceConfig, FhirSourcesResource, WarehouseResource
from pipelines.settings import RESOURCE_TYPES, load_settings
from pipelines.sqlfiles import count_rows
from pipelines.warehouse import Warehouse, source_rows, table_for
from quality_checks.structural import StructuralValidator

# Transient source failures (network, 5xx after the client's own retries) retry the whole step.
RAW_RETRY = dg.RetryPolicy(
    max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


#: The check on every raw asset that the source reported no export errors.
EXPORT_CHECK = "export_complete"


def source_partitions() -> dg.StaticPartitionsDefinition:
    """One partition per source configured in sources.yaml (plus environment overrides)."""
    return dg.StaticPartitionsDefinition(sorted(load_settings().sources))


def _spec(
    source: FhirSourceConfig, landing_root: Path, full: bool, clients: Callable[[], FhirClient] | None = None
) -> SourceSpec:
    return SourceSpec(
        name=source.name,
        kind=source.kind,
        folder=source.folder,
        # A full refresh ignores the watermark: everything the source holds, landed idempotently.
        incremental="full" if full else source.incremental,
        overlap_minutes=source.overlap_minutes,
        landing_dir=source.landing_dir or str(landing_root / "bulk"),
        keep_bulk_files=source.keep_bulk_files,
        bulk_poll_interval_s=source.bulk_poll_interval_s,
        bulk_level=source.bulk_level,
        bulk_group_id=source.bulk_group_id,
        search_scope=source.search_scope,
        patient_group=source.patient_group,
        patient_concurrency=source.patient_concurrency,
        client_factory=clients,
    )


def pull_step(source: str, resource_type: str) -> str:
    """The `ops.build_state` step under which a folder pull of one type records the files it read."""
    return f"raw.{table_for(resource_type)}@{source}"


def folder_files_state(
    source: FhirSourceConfig, resource_type: str, validation: str
) -> dict[str, object] | None:
    """What a folder pull of `resource_type` would read: each file's size and modification time.

    The same files the pull visits for the type (`*.ndjson` and `*.json`, subfolders included;
    NDJSON files whose Bulk-style name declares another type are left out). None for other source
    kinds (only a server knows what changed there) and for a missing folder (the pull reports it).
    """
    if source.kind != "folder" or not source.folder:
        return None
    path = Path(source.folder)
    if not path.exists():
        return None
    root = path.parent if path.is_file() else path
    files = folder_files(path)
    listing: dict[str, list[int]] = {}
    for file in files:
        if file.suffix == ".ndjson":
            declared = typed_file_of(file.name, RESOURCE_TYPES)
            if declared is not None and declared != resource_type:
                continue
        stat = file.stat()  # follows links, as the pull does
        listing[file.relative_to(root).as_posix()] = [stat.st_size, stat.st_mtime_ns]
    # Paths relative to the folder, as `raw.source_files` of the landing file keys them: a folder
    # moved (or linked) elsewhere with the same files is the same input.
    return {"validation": validation, "files": dict(sorted(listing.items()))}


def _unchanged_pull(source: FhirSourceConfig, table: str, rows: int) -> dg.MaterializeResult:
    """The result of a folder pull skipped because its files are unchanged: nothing fetched."""
    metadata: dict[str, Any] = {
        "source": source.name,
        "source_kind": source.kind,
        "skipped": True,
        "fetched": 0,
        "landed": 0,
        "new_versions": 0,
        "rejected": 0,
        "duplicates": 0,
        "merged_rows": 0,
        "table_rows": rows,
        "dagster/row_count": rows,
    }
    check = dg.AssetCheckResult(
        check_name=EXPORT_CHECK,
        passed=True,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"bulk_errors": 0, "source_kind": source.kind},
    )
    return dg.MaterializeResult(metadata=metadata, check_results=[check])


def build_raw_asset(
    resource_type: str, partitions_def: dg.PartitionsDefinition | None = None
) -> dg.AssetsDefinition:
    """The raw asset for one resource type (`raw/<snake_case type>`), partitioned by source."""
    table = table_for(resource_type)
    deps = [dg.AssetKey(["raw", "questionnaire_response"])] if resource_type == "Questionnaire" else []
    extra = (
        " After the pull, Questionnaires that responses reference by canonical (url|version) or "
        "by `Questionnaire/{id}` but that were not updated recently are fetched one by one."
        if resource_type == "Questionnaire"
        else ""
    )

    @dg.asset(
        key=dg.AssetKey(["raw", table]),
        group_name="raw",
        deps=deps,
        partitions_def=partitions_def,
        kinds={"duckdb", "fhir"},
        owners=["team:data-engineering"],
        tags={"layer": "raw"},
        retry_policy=RAW_RETRY,
        check_specs=[
            dg.AssetCheckSpec(
                EXPORT_CHECK,
                asset=dg.AssetKey(["raw", table]),
                description="The source exported every resource it was asked for: no Bulk `error` "
                "file lines (OperationOutcomes, kept in raw.findings as bulk_export_error). While it "
                "fails, the type's watermark does not move.",
            )
        ],
        description=(
            f"One row per {resource_type} version fetched from each FHIR source (partition = source), "
            f"kept as received (table raw.{table}); invalid resources go to raw.rejected with their "
            f"reason and every validation finding to raw.findings.{extra}"
        ),
    )
    def _raw_asset(
        context: dg.AssetExecutionContext, fhir: FhirSourcesResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        source = fhir.source(context.partition_key if context.has_partition_key else None)
        full = is_full_refresh(context)
        # Listed before the pull: a file that changes while it is read is read again next time.
        files = folder_files_state(source, resource_type, warehouse.validation)
        step = pull_step(source.name, resource_type)
        if files is not None and not full:
            with warehouse.connect() as con:
                if build_state.is_current(con, step, files, [f"raw.{table}"]):
                    total = source_rows(con, f"raw.{table}", source.name)
                    context.log.info(f"{source.name}/{resource_type}: folder files unchanged: not read")
                    return _unchanged_pull(source, table, total)
        root = warehouse.landing_root()
        clients = source.client_factory() if source.kind in ("rest", "bulk") else None
        spec = _spec(source, root, full, clients)
        client = clients() if clients is not None else None
        validator = StructuralValidator(mode=warehouse.validation)
        land_file = landing_path(root, source.name, resource_type)
        # 1. Pull into this source's own landing file (no warehouse lock held while on the network).
        try:
            with Warehouse(land_file).connect() as lcon:
                result = extract_resource_type(lcon, spec, client, resource_type, context.run_id, validator)
                metadata = result.metadata()
                if resource_type == "Questionnaire":
                    responses = landing_path(root, source.name, "QuestionnaireResponse")
                    resolution = resolve_referenced_questionnaires(
                        lcon, spec, client, context.run_id, validator, responses_file=responses
                    )
                    metadata.update({f"canonicals_{k}": v for k, v in resolution.items()})
        except FhirError as exc:
            if is_fatal(exc):
                # The message is already redacted (query values, credentials); no traceback chain.
                raise dg.Failure(description=str(exc), allow_retries=False) from None
            raise
        metadata.update({f"validation_{k}": v for k, v in validator.stats.as_dict().items()})
        # 2. Merge what the warehouse lacks (waits while another writer holds the warehouse).
        with warehouse.connect() as con:
            merged = merge_into_warehouse(con, land_file, resource_type)
            total = source_rows(con, f"raw.{table}", source.name)
            if files is not None:
                # After the merge: only a pull whose rows are all in the warehouse lets the next skip.
                build_state.record(con, step, files, context.run_id)
        context.log.info(
            f"{source.name}/{resource_type}: fetched {metadata['fetched']} = landed {metadata['landed']} + "
            f"rejected {metadata['rejected']} + duplicates {metadata['duplicates']} "
            f"({metadata['rate_per_s']}/s); merged {merged.get(table, 0)} new rows into the warehouse"
        )
        metadata["merged_rows"] = int(merged.get(table, 0))
        metadata["merge_seconds"] = float(merged.get("merge_seconds", 0.0))
        metadata["table_rows"] = total
        metadata["dagster/row_count"] = total
        errors = int(metadata.get("bulk_errors", 0))
        check = dg.AssetCheckResult(
            check_name=EXPORT_CHECK,
            passed=errors == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"bulk_errors": errors, "source_kind": source.kind},
        )
        return dg.MaterializeResult(metadata=metadata, check_results=[check])

    return _raw_asset


def build_intake_ledgers_asset(partitions_def: dg.PartitionsDefinition | None) -> dg.AssetsDefinition:
    """`raw/rejected`, `raw/findings`, `raw/fetch_log` and the other intake ledgers, one asset each.

    The pulls append to these tables as they land resources (every raw asset writes them, so no single
    pull can own them); this step runs after one source's pulls and records each ledger's state for that
    source, so the UI shows the tables, their lineage and their row counts.
    """
    specs = [
        dg.AssetSpec(
            key=dg.AssetKey(t.name.split(".")),
            deps=[dg.AssetKey(r.name.split(".")) for r in RESOURCE_TABLES],
            group_name="raw",
            tags={"layer": "raw"},
            kinds={"duckdb"},
            owners=["team:data-engineering"],
            description=f"{t.grain}: {t.description} ({t.name}; appended by the raw pulls of each source)",
            metadata={"table": t.name, "grain": t.grain, "key": ", ".join(t.key)},
        )
        for t in LEDGER_TABLES
    ]

    @dg.multi_asset(name="raw__intake_ledgers", specs=specs, partitions_def=partitions_def, can_subset=False)
    def _ledgers(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> Iterator[dg.MaterializeResult]:
        source = context.partition_key if context.has_partition_key else None
        with warehouse.connect() as con:
            for t in LEDGER_TABLES:
                total = count_rows(con, t.name)
                # raw.bulk_jobs is keyed "source:Type" and has no source column: its total stands
                rows = (
                    source_rows(con, t.name, source)
                    if source is not None and t.name != "raw.bulk_jobs"
                    else total
                )
                yield dg.MaterializeResult(
                    asset_key=dg.AssetKey(t.name.split(".")),
                    metadata={"source_rows": rows, "dagster/row_count": total},
                )

    return _ledgers


def build_raw_assets(partitions_def: dg.PartitionsDefinition | None) -> list[dg.AssetsDefinition]:
    """One raw asset per resource type."""
    return [build_raw_asset(t, partitions_def) for t in RESOURCE_TYPES]


raw_assets: list[dg.AssetsDefinition] = build_raw_assets(source_partitions())
# The intake ledgers (raw/rejected, raw/findings, ...): one multi_asset after the pulls of a source.
raw_ledger_assets: list[dg.AssetsDefinition] = [build_intake_ledgers_asset(source_partitions())]
