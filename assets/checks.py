"""Dagster asset checks built from the expectation suites in `quality_checks/suites/`.

One `multi_asset_check` per suite, with one check per expectation id on the suite's asset
(`raw/questionnaire_response`, `staging/questionnaire_answers`, `staging/measure_scores`,
`marts/<name>`). ERROR checks are `blocking`: when one fails with ERROR severity the run does not
materialize anything downstream of the asset. A row-level ERROR check whose offending records were
all quarantined (and are at most `max_quarantine_percent` of the rows) reports its failure with WARN
severity instead, so downstream assets run without those records (the marts anti-join
`quality.current_quarantine`). WARN checks annotate only.

Every evaluation is appended to `quality.check_results` (and offending records of row-level ERROR
checks to `quality.quarantine`) through the `warehouse` resource, under the Dagster run id.
"""

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import dagster as dg

from pipelines.resources.fhir_source import WarehouseResource
from quality_checks.params import QualitySettings
from quality_checks.runner import CheckOutcome, run_suite
from quality_checks.suite import Suite, load_suites


def _key(path: Sequence[str]) -> dg.AssetKey:
    return dg.AssetKey(list(path))


def _metadata(o: CheckOutcome) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "outcome": o.outcome,
        "severity": o.check.severity,
        "table": o.check.table,
        "expectation": o.check.gx_types,
        "sample_keys": dg.MetadataValue.json(o.sample_keys),
        "quarantined": o.quarantined,
    }
    if o.element_count is not None:
        meta["element_count"] = o.element_count
    if o.unexpected_count is not None:
        meta["unexpected_count"] = o.unexpected_count
    if o.unexpected_percent is not None:
        meta["unexpected_percent"] = round(o.unexpected_percent, 3)
    if o.details.get("error"):
        meta["error"] = str(o.details["error"])
    if o.details.get("blocked_because"):
        meta["blocked_because"] = str(o.details["blocked_because"])
    if o.details.get("skipped"):
        meta["skipped"] = str(o.details["skipped"])
    return meta


def check_result(asset_key: dg.AssetKey, o: CheckOutcome) -> dg.AssetCheckResult:
    """The Dagster result for one outcome: ERROR severity only when it must block downstream."""
    severity = dg.AssetCheckSeverity.ERROR if o.blocks else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=o.check.id,
        passed=o.outcome == "passed",
        severity=severity,
        metadata=_metadata(o),
        description=o.summary(),
    )


def build_suite_checks(suite: Suite, present: set[dg.AssetKey] | None = None) -> dg.AssetChecksDefinition:
    """One multi-asset check running `suite`; additional deps limited to assets in `present`."""
    asset_key = _key(suite.asset)
    deps = [_key(d) for d in suite.additional_deps if present is None or _key(d) in present]
    specs = [
        dg.AssetCheckSpec(
            name=c.id,
            asset=asset_key,
            description=f"[{c.severity}{', quarantines' if c.quarantine else ''}] {c.description}",
            blocking=c.severity == "ERROR",
            additional_deps=deps,
            metadata={"severity": c.severity, "table": c.table, "suite": suite.name},
        )
        for c in suite.checks
    ]

    @dg.multi_asset_check(
        specs=specs,
        name=f"quality_{suite.name}",
        description=f"Great Expectations suite `{suite.name}` ({suite.file}): {suite.description}",
        can_subset=True,
        compute_kind="great_expectations",
    )
    def _suite_checks(
        context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
    ) -> Iterator[dg.AssetCheckResult]:
        selected = {k.name for k in context.selected_asset_check_keys}
        with warehouse.connect() as con:
            run = run_suite(
                con,
                suite,
                run_id=context.op_execution_context.run_id,
                settings=QualitySettings.from_env(),
                only=selected,
            )
        for o in run.outcomes:
            context.log.info(f"{suite.name}: {o.summary()}")
            yield check_result(asset_key, o)

    return _suite_checks


def build_quality_checks(
    assets: Iterable[dg.AssetsDefinition | dg.AssetSpec],
    suites: Iterable[Suite] | None = None,
) -> list[dg.AssetChecksDefinition]:
    """Asset checks for every suite whose asset is among `assets` (marts not built yet are left out)."""
    present: set[dg.AssetKey] = set()
    for a in assets:
        if isinstance(a, dg.AssetSpec):
            present.add(a.key)
        else:
            present.update(a.keys)
    return [
        build_suite_checks(s, present)
        for s in (load_suites() if suites is None else suites)
        if _key(s.asset) in present
    ]
