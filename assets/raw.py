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
"""

from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg

from pipelines.automation import is_full_refresh
from pipelines.extract import SourceSpec, extract_resource_type, resolve_referenced_questionnaires
from pipelines.landing import landing_path, merge_into_warehouse
from pipelines.raw_tables import LEDGER_TABLES, RESOURCE_TABLES
from pipelines.resources.fhir import FhirClient, FhirError
from pipelines.resources.fhir.errors import is_fatal
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
        root = warehouse.landing_root()
        clients = source.client_factory() if source.kind in ("rest", "bulk") else None
        spec = _spec(source, root, is_full_refresh(context), clients)
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
