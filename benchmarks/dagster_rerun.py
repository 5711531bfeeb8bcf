"""Reruns through Dagster: the assets' own skip logic and the quality suites' reuse, timed.

    python -m benchmarks.dagster_rerun --scale 100000 --out benchmarks/work/100000/dagster.json

Materialises every raw, staging and mart asset, the published copies and every quality suite's checks
with `dagster.materialize` (the code path `clinic_pipeline_job` runs, on the benchmark's folder of
NDJSON) three times on one fresh warehouse:

1. **first**: everything is built;
2. **no change**: the same files again; each raw asset finds its folder files unchanged (not read),
   each derived asset's `build_state` fingerprint is unchanged (nothing rebuilt), each suite reuses its
   previous verdicts and the published copies are kept (run twice: `no_change`, `no_change_again`);
3. **one new day**: 1% of the QuestionnaireResponses get a new version (status `amended`, a later
   `lastUpdated`), appended to a copy of the file; everything downstream of them runs again.

Wall seconds per run (Dagster's own overhead included), what each asset reported (skipped or built)
and the peak RSS of the process are written to `--out`; `benchmarks.run` adds them to the results.
The QI report asset is left out: it writes into the repository's `reports/` folder.

`dagster_floor_seconds` is the same graph (names, specs, checks, partitions) with bodies that do
nothing: what Dagster's own per-step work costs, the floor under any rerun.
"""

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Any

import dagster as dg
import orjson

from benchmarks.common import WORK_DIR, peak_rss_mb, write_json
from benchmarks.generate import ScaleConfig, ensure_dataset

SOURCE = "bench"
KEY = "dagster-rerun-bench-key-0123456789"
NEW_DAY_SHARE = 100  # every 100th response gets a new version: 1%


def new_day_folder(data: Path, out: Path) -> int:
    """`out`: the data set's files (linked) with 1% of the responses given a new version, appended.

    Returns how many new versions were written. Streams: memory does not grow with the file.
    """
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in data.iterdir():
        if f.is_file() and f.name != "QuestionnaireResponse.ndjson":
            (out / f.name).symlink_to(f.resolve())
    written = 0
    with (
        (data / "QuestionnaireResponse.ndjson").open("rb") as src,
        (out / "QuestionnaireResponse.ndjson").open("wb") as dst,
    ):
        amended: list[bytes] = []
        for n, line in enumerate(src):
            dst.write(line)
            if n % NEW_DAY_SHARE or not line.strip():
                continue
            try:
                resource = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # the planted truncated line
            meta = resource.get("meta") if isinstance(resource, dict) else None
            if not isinstance(meta, dict) or resource.get("status") not in ("completed", "amended"):
                continue
            meta["versionId"] = f"{meta.get('versionId', '1')}-day2"
            meta["lastUpdated"] = "2099-01-01T00:00:00Z"
            resource["status"] = "amended"
            amended.append(orjson.dumps(resource) + b"\n")
        if amended and not line.endswith(b"\n"):
            dst.write(b"\n")
        for row in amended:
            dst.write(row)
        written = len(amended)
    return written


def _graph() -> list[Any]:
    """The assets and checks the bench materialises (the QI report left out)."""
    from assets.checks import build_quality_checks
    from assets.marts import mart_assets
    from assets.publish import published_marts, published_restricted
    from assets.raw import build_intake_ledgers_asset, build_raw_assets
    from assets.staging import staging_assets

    partitions = dg.StaticPartitionsDefinition([SOURCE])
    assets = [
        *build_raw_assets(partitions),
        build_intake_ledgers_asset(partitions),
        *staging_assets,
        *mart_assets,
    ]
    return [*assets, published_marts, published_restricted, *build_quality_checks(assets)]


def _empty_twin(definition: Any) -> Any:
    """`definition` with the same name, specs, checks and partitions but a body that does nothing."""
    if isinstance(definition, dg.AssetChecksDefinition):

        @dg.multi_asset_check(
            specs=list(definition.check_specs), name=definition.node_def.name, can_subset=True
        )
        def _checks(context: dg.AssetCheckExecutionContext) -> Any:
            for key in sorted(context.selected_asset_check_keys, key=str):
                yield dg.AssetCheckResult(asset_key=key.asset_key, check_name=key.name, passed=True)

        return _checks
    specs = list(definition.specs)
    check_specs = list(definition.check_specs)

    @dg.multi_asset(
        specs=specs,
        check_specs=check_specs,
        name=definition.node_def.name,
        partitions_def=definition.partitions_def,
        can_subset=False,
    )
    def _assets() -> Any:
        for spec in specs:
            yield dg.MaterializeResult(asset_key=spec.key, metadata={"skipped": True})
        for check in check_specs:
            yield dg.AssetCheckResult(asset_key=check.asset_key, check_name=check.name, passed=True)

    return _assets


def dagster_floor() -> float:
    """Seconds Dagster alone takes for the same graph: every asset and check an empty body.

    The fixed per-step cost (events, logs, the run's bookkeeping) that no skip logic can remove;
    timed on the second materialisation so that, like the reruns, it runs warm."""
    graph = [_empty_twin(d) for d in _graph()]
    seconds = 0.0
    for _ in range(2):
        t0 = time.monotonic()
        result = dg.materialize(graph, partition_key=SOURCE, raise_on_error=True)
        seconds = time.monotonic() - t0
        if not result.success:
            raise RuntimeError("the empty twin graph failed to materialise")
    return round(seconds, 3)


def _materialize(folder: Path, warehouse: Path) -> dict[str, Any]:
    from pipelines.resources.fhir_source import FhirSourcesResource, WarehouseResource

    t0 = time.monotonic()
    result = dg.materialize(
        _graph(),
        partition_key=SOURCE,
        resources={
            "fhir": FhirSourcesResource.single(name=SOURCE, kind="folder", folder=str(folder)),
            "warehouse": WarehouseResource(path=str(warehouse)),
        },
        raise_on_error=False,
    )
    seconds = time.monotonic() - t0
    skipped: list[str] = []
    built: list[str] = []
    new_versions = 0
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization  # type: ignore[union-attr]
        meta: dict[str, Any] = {k: v.value for k, v in mat.metadata.items()}
        key = mat.asset_key.to_user_string()
        (skipped if meta.get("skipped") else built).append(key)
        if key.startswith("raw/") and isinstance(meta.get("new_versions"), int):
            new_versions += int(meta["new_versions"])
    checks = list(result.get_asset_check_evaluations())
    reused = sum(1 for c in checks if "reused_from_run" in c.metadata)
    return {
        "success": result.success,
        "seconds": round(seconds, 3),
        "new_versions": new_versions,
        "assets_skipped": len(skipped),
        "assets_built": sorted(built),
        "checks": len(checks),
        "checks_reused": reused,
    }


def run(scale: int, seed: int, out: Path) -> dict[str, Any]:
    """The three materialisations at one scale; the result is also written to `out`."""
    data, _, _ = ensure_dataset(ScaleConfig(responses=scale, seed=seed))
    workdir = WORK_DIR / str(scale) / "dagster"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    os.environ["ALLIANCE_QI_PSEUDONYM_KEY"] = KEY
    warehouse = workdir / "warehouse.duckdb"
    result: dict[str, Any] = {"scale": scale, "status": "ok"}
    result["first"] = _materialize(data, warehouse)
    result["no_change"] = _materialize(data, warehouse)
    # The first run builds marts.report_data_quality before some marts' WARN suites have appended
    # their verdicts, so the first quiet run still catches that up; the second shows the steady state.
    result["no_change_again"] = _materialize(data, warehouse)
    day2 = workdir / "day2"
    result["new_day_versions"] = new_day_folder(data, day2)
    result["new_day"] = _materialize(day2, warehouse)
    result["peak_rss_mb"] = peak_rss_mb()
    result["dagster_floor_seconds"] = dagster_floor()
    write_json(out, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time a no-change and a one-new-day rerun through Dagster")
    parser.add_argument("--scale", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = run(args.scale, args.seed, args.out)
    for name in ("first", "no_change", "no_change_again", "new_day"):
        r = result[name]
        print(
            f"  {name:<10} {r['seconds']:>8.2f}s  success={r['success']}  new versions {r['new_versions']}  "
            f"skipped {r['assets_skipped']}  built {len(r['assets_built'])}  checks reused "
            f"{r['checks_reused']}/{r['checks']}"
        )
    print(f"  dagster floor (same graph, empty bodies) {result['dagster_floor_seconds']:.2f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
