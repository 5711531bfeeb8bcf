"""Publishing for BI and the QI report: thin Dagster assets over `marts.publish` and `marts.report`.

- `published/marts`: the aggregate marts (`marts.build.BI_MARTS`, declared `published_to="bi"`) copied
  to `<published>/marts.duckdb` (built aside, CHECKPOINTed, moved into place with `os.replace`) and
  `<published>/parquet/<mart>.parquet`, files 0640. BI tools read these, never the warehouse.
  `<published>` is `$ALLIANCE_QI_PUBLISH_DIR`, else `published/` beside the warehouse file
  (`data/published/` in the demo).
- `published/restricted`: the record-level marts (`marts.build.RESTRICTED_MARTS`) the same way to
  `<restricted>/marts.duckdb` and `<restricted>/parquet/`, files 0600 in 0700 folders, for analysts
  with record-level access (`$ALLIANCE_QI_PUBLISH_RESTRICTED_DIR`, else `restricted/` beside the
  warehouse).
- `reports/qi_report`: the self-contained HTML QI report (`$ALLIANCE_QI_REPORT_PATH`, else
  `reports/qi_report.html` in the repository).

A published copy whose marts were not rebuilt since it was written (the marts' build fingerprints,
the folder and the storage version are those `ops.build_state` recorded for it) and whose files are
still there is kept: the asset reports `skipped`. A full refresh always publishes.

All are group `published` (tag layer=published). The report reads only the aggregate (BI) marts, never
a record-level one (its data-quality section is `marts.report_data_quality`), and waits for them and
for `staging/measure_scores`.
"""

from pathlib import Path

import dagster as dg

from marts.build import BI_MARTS, RESTRICTED_MARTS
from marts.publish import (
    PARQUET_DIR,
    PUBLISHED_FILE,
    TARGET_MARTS,
    PublishResult,
    PublishTarget,
    publish_dir,
    publish_marts,
    restricted_dir,
    storage_version,
)
from marts.report import build_report, report_path
from pipelines import build_state
from pipelines.automation import is_full_refresh
from pipelines.catalog import load_catalog
from pipelines.resources.fhir_source import WarehouseResource
from pipelines.sqlfiles import count_rows

MART_KEYS = [dg.AssetKey(t.split(".")) for s in load_catalog().steps_in("marts") for t in s.table_names]
BI_MART_KEYS = [k for k in MART_KEYS if k.path[-1] in BI_MARTS]
RESTRICTED_MART_KEYS = [k for k in MART_KEYS if k.path[-1] in RESTRICTED_MARTS]
PUBLISHED_KEY = dg.AssetKey(["published", "marts"])
RESTRICTED_KEY = dg.AssetKey(["published", "restricted"])
REPORT_KEY = dg.AssetKey(["reports", "qi_report"])


@dg.asset(
    key=PUBLISHED_KEY,
    group_name="published",
    deps=BI_MART_KEYS,
    kinds={"duckdb", "parquet"},
    owners=["team:data-engineering"],
    tags={"layer": "published"},
    description=(
        "The aggregate marts for BI tools (therapist_alliance, qi_monthly, alliance_associations and the "
        "QI report's report_* marts; small cells suppressed): data/published/marts.duckdb (tables in the "
        "default schema, plus a _published metadata table) and data/published/parquet/<mart>.parquet, "
        "files 0640. Built aside and moved into place atomically, so readers never see a half-written "
        "file; keyed pseudonyms only (docs/bi-connections.md)."
    ),
)
def published_marts(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Publish the aggregate marts next to the warehouse (or to `$ALLIANCE_QI_PUBLISH_DIR`)."""
    out = publish_dir(warehouse.file())
    return _publish_unless_current(context, warehouse, out, "bi")


@dg.asset(
    key=RESTRICTED_KEY,
    group_name="published",
    deps=RESTRICTED_MART_KEYS,
    kinds={"duckdb", "parquet"},
    owners=["team:data-engineering"],
    tags={"layer": "published"},
    description=(
        "The record-level marts (alliance_sessions, episode_outcomes, adherence) for analysts with "
        "record-level access only: data/restricted/marts.duckdb and data/restricted/parquet/<mart>.parquet, "
        "files 0600 in 0700 folders; never in the BI folder (docs/bi-connections.md, access model)."
    ),
)
def published_restricted(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Publish the record-level marts to the restricted folder (`$ALLIANCE_QI_PUBLISH_RESTRICTED_DIR`)."""
    out = restricted_dir(warehouse.file())
    return _publish_unless_current(context, warehouse, out, "restricted")


def mart_steps(marts: tuple[str, ...]) -> list[str]:
    """The catalog steps that build `marts.<name>` for each name."""
    return sorted(
        {s.name for s in load_catalog().steps_in("marts") for t in s.table_names if t.split(".")[-1] in marts}
    )


def _publish_unless_current(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, out: Path, target: PublishTarget
) -> dg.MaterializeResult:
    """Publish `target`'s marts to `out`, or keep the copy there when its marts did not change."""
    marts = TARGET_MARTS[target]
    step = f"published.{target}"
    with warehouse.connect() as con:
        state = build_state.input_state(
            con, [], mart_steps(marts), f"{out.resolve()}|{target}|{storage_version()}"
        )
        files = [out / PUBLISHED_FILE, *(out / PARQUET_DIR / f"{m}.parquet" for m in marts)]
        if (
            not is_full_refresh(context)
            and build_state.is_current(con, step, state, [])
            and all(f.is_file() for f in files)
        ):
            counts = {m: count_rows(con, f"marts.{m}") for m in marts}
            context.log.info(f"{target}: marts unchanged since the last publish: {out} kept")
            return dg.MaterializeResult(
                metadata={
                    "database": dg.MetadataValue.path(str(out / PUBLISHED_FILE)),
                    "parquet_dir": dg.MetadataValue.path(str(out / PARQUET_DIR)),
                    "row_counts": dg.MetadataValue.json(counts),
                    "skipped": True,
                    "dagster/row_count": sum(counts.values()),
                }
            )
        result = publish_marts(
            con, out, run_id=context.run_id, source_warehouse=warehouse.file(), target=target
        )
        build_state.record(con, step, state, context.run_id)
    context.log.info(f"published {len(result.row_counts)} {target} marts to {result.database}")
    return _materialized(result)


def _materialized(result: PublishResult) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={
            "database": dg.MetadataValue.path(str(result.database)),
            "parquet_dir": dg.MetadataValue.path(str(result.parquet_dir)),
            "row_counts": dg.MetadataValue.json(result.row_counts),
            "storage_version": result.storage_version,
            "database_bytes": result.database_bytes,
            "dagster/row_count": sum(result.row_counts.values()),
        }
    )


@dg.asset(
    key=REPORT_KEY,
    group_name="published",
    deps=[*BI_MART_KEYS, dg.AssetKey(["staging", "measure_scores"])],
    kinds={"html"},
    owners=["team:data-engineering"],
    tags={"layer": "published"},
    description=(
        "The QI report reports/qi_report.html: one self-contained file that works offline (inline SVG "
        "charts, no CDN) with monthly KPIs, alliance trajectories, early alliance vs PHQ-9 improvement, "
        "the therapist funnel plot, adherence by patient- vs clinician-rated alliance and the data-quality "
        "summary; small cells suppressed."
    ),
)
def qi_report(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Render the QI report from the marts (the newest data-quality results via report_data_quality)."""
    with warehouse.connect() as con:
        result = build_report(con, report_path(), source=warehouse.file().name)
    context.log.info(f"QI report written to {result.path} ({result.bytes} bytes)")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(result.path)),
            "bytes": result.bytes,
            "sections": dg.MetadataValue.json(list(result.sections)),
            "chart_marks": dg.MetadataValue.json(result.chart_marks),
            "min_cell": result.min_cell,
        }
    )


publish_assets: list[dg.AssetsDefinition] = [published_marts, published_restricted, qi_report]
