"""Raw layer: one asset per FHIR resource type, landing every version losslessly in DuckDB.

Thin wrappers: the pull is `pipelines.extract.extract_resource_type`. Each asset reports
fetched = landed + rejected + duplicates as metadata and records the same in `raw.fetch_log`.
"""

import dagster as dg

from pipelines.extract import SourceSpec, extract_resource_type, resolve_referenced_questionnaires
from pipelines.resources.fhir_source import FhirSourceResource, WarehouseResource
from pipelines.settings import RESOURCE_TYPES
from pipelines.warehouse import table_for
from quality_checks.structural import StructuralValidator

# Transient source failures (network, 5xx after the client's own retries) retry the whole step.
RAW_RETRY = dg.RetryPolicy(
    max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


def _spec(fhir: FhirSourceResource) -> SourceSpec:
    return SourceSpec(
        name=fhir.name,
        kind=fhir.kind,
        folder=fhir.folder,
        incremental=fhir.incremental,
        overlap_minutes=fhir.overlap_minutes,
        landing_dir=fhir.landing_dir,
    )


def build_raw_asset(resource_type: str) -> dg.AssetsDefinition:
    """The raw asset for one resource type (`raw/<snake_case type>`)."""
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
        kinds={"duckdb", "fhir"},
        owners=["team:data-engineering"],
        tags={"layer": "raw"},
        retry_policy=RAW_RETRY,
        description=(
            f"One row per {resource_type} version fetched from the FHIR source, kept as received "
            f"(table raw.{table}); invalid resources go to raw.rejected with their reason and every "
            f"validation finding to raw.findings.{extra}"
        ),
    )
    def _raw_asset(
        context: dg.AssetExecutionContext, fhir: FhirSourceResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        spec = _spec(fhir)
        client = fhir.build_client() if fhir.kind in ("rest", "bulk") else None
        validator = StructuralValidator(mode=warehouse.validation)  # type: ignore[arg-type]
        with warehouse.connect() as con:
            result = extract_resource_type(con, spec, client, resource_type, context.run_id, validator)
            metadata = result.metadata()
            if resource_type == "Questionnaire":
                resolution = resolve_referenced_questionnaires(con, spec, client, context.run_id, validator)
                metadata.update({f"canonicals_{k}": v for k, v in resolution.items()})
            total = con.execute(f"SELECT count(*) FROM raw.{table}").fetchall()[0][0]  # noqa: S608
        context.log.info(
            f"{resource_type}: fetched {metadata['fetched']} = landed {metadata['landed']} + rejected "
            f"{metadata['rejected']} + duplicates {metadata['duplicates']} ({metadata['rate_per_s']}/s)"
        )
        metadata["table_rows"] = total
        metadata["dagster/row_count"] = total
        return dg.MaterializeResult(metadata=metadata)

    return _raw_asset


raw_assets: list[dg.AssetsDefinition] = [build_raw_asset(t) for t in RESOURCE_TYPES]
