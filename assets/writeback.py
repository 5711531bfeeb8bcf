"""The write-back asset `writeback/ehr`: scores, not-on-track and alliance-drop Flags and Tasks written
back to each source that turns it on (`writeback.enabled` with write scopes in sources.yaml).

Off by default: a source without it is listed in the metadata as not enabled and nothing is sent. The
write-back itself is `pipelines.writeback.write_back` through the source's own hardened client
(credentials only to its configured origin); every attempt lands in `ops.writeback_log`.
"""

from pathlib import Path
from typing import Any

import dagster as dg

from marts.context import make_context
from pipelines.resources.fhir_source import FhirSourcesResource, WarehouseResource
from pipelines.writeback import WritebackConfig, write_back

WRITEBACK_KEY = dg.AssetKey(["writeback", "ehr"])


@dg.asset(
    key=WRITEBACK_KEY,
    group_name="published",
    deps=[
        dg.AssetKey(["marts", "not_on_track"]),
        dg.AssetKey(["staging", "measure_scores"]),
        dg.AssetKey(["staging", "excluded_responses"]),
        dg.AssetKey(["staging", "practitioner_roles"]),
    ],
    kinds={"fhir", "duckdb"},
    owners=["team:data-engineering"],
    tags={"layer": "published"},  # like the BI copies: results leaving the warehouse
    description=(
        "Results written back to each source's FHIR server that enables it (off by default): a score "
        "Observation per scored response (LOINC 44261-6 / 70274-6, else a local code; conditional update on "
        "'<response id>|<instrument>'), Flags for patients not on track or with an unrepaired alliance drop "
        "(ifNoneExist, set inactive when back on track) and a Task on the treating practitioner's worklist "
        "per Flag. Idempotent; every attempt in ops.writeback_log, failures retried next run "
        "(docs/feedback.md)."
    ),
)
def writeback_ehr(
    context: dg.AssetExecutionContext, fhir: FhirSourcesResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Write back to every source with `writeback.enabled`; counts per source in the metadata."""
    per_source: dict[str, Any] = {}
    ctx = make_context()
    with warehouse.connect() as con:
        for name, source in sorted(fhir.sources.items()):
            if not source.writeback_enabled:
                per_source[name] = {"enabled": False}
                continue
            dry_run = Path(source.writeback_dry_run_file) if source.writeback_dry_run_file else None
            config = WritebackConfig(
                source=name,
                namespace=source.writeback_namespace,
                scopes=tuple(source.writeback_scopes),
                batch_size=source.writeback_batch_size,
                dry_run_file=dry_run,
                instruments=tuple(source.writeback_instruments) or None,
            )
            client = None if dry_run is not None else source.writeback_client()
            result = write_back(con, config, ctx, run_id=context.run_id, client=client)
            per_source[name] = {"enabled": True, **result.as_dict()}
            context.log.info(f"write-back of source {name}: {result.as_dict()['by_type']}")
    failed = sum(
        n
        for v in per_source.values()
        for t in v.get("by_type", {}).values()
        for o, n in t.items()
        if o == "failed"
    )
    written = sum(
        n
        for v in per_source.values()
        for t in v.get("by_type", {}).values()
        for o, n in t.items()
        if o in ("created", "updated")
    )
    return dg.MaterializeResult(
        metadata={
            "sources": dg.MetadataValue.json(per_source),
            "enabled_sources": sum(1 for v in per_source.values() if v["enabled"]),
            "written": written,
            "failed": failed,
        }
    )


writeback_assets: list[dg.AssetsDefinition] = [writeback_ehr]
