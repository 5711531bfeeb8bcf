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
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import duckdb
import orjson

from pipelines import build_state
from pipelines.automation import REFRESH_TAG
from pipelines.resources.fhir_source import WarehouseResource
from pipelines.settings import RESOURCE_TYPES
from pipelines.warehouse import table_for
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
        run_id = context.op_execution_context.run_id
        full = context.op_execution_context.run.tags.get(REFRESH_TAG) == "full"
        settings = QualitySettings.from_env()
        step = f"quality.{suite.name}"
        with warehouse.connect() as con:
            state = _suite_inputs(con, suite, settings)
            reused = None if full else _reuse(con, suite, step, state, selected)
            if reused is None:
                run = run_suite(con, suite, run_id=run_id, settings=settings, only=selected)
                if selected >= {c.id for c in suite.checks}:
                    build_state.record(con, step, state, run_id)
        if reused is not None:
            context.log.info(f"{suite.name}: inputs unchanged since run {reused[0]}: its results stand")
            yield from reused[1]
            return
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


def _suite_inputs(
    con: duckdb.DuckDBPyConnection, suite: Suite, settings: QualitySettings
) -> dict[str, object]:
    """What a suite's verdicts depend on: the raw tables (a raw suite's own datasets' tables; every raw
    table past the raw layer, where referential checks read them), the build fingerprint of the
    suite's own asset (which covers everything upstream of it), the suite definition, the thresholds,
    and the date (freshness checks age even when nothing lands)."""
    layer = suite.asset[0]
    steps = [] if layer == "raw" else [".".join(suite.asset)]
    if layer == "raw":
        # A raw suite runs as soon as its own asset lands, before the other raw assets of a first pull:
        # its inputs are the raw tables its datasets read, so the state it records is the one it saw.
        # raw_intake reads raw.fetch_log, so it reconciles every pull; raw_responses re-runs only when
        # raw.questionnaire_response changed.
        raw = sorted({t for d in suite.datasets.values() for t in d.requires if t.startswith("raw.")})
    else:
        raw = [f"raw.{table_for(t)}" for t in RESOURCE_TYPES]
    extra = f"{suite!r}|{settings!r}|{datetime.now(UTC).date().isoformat()}"
    return build_state.input_state(con, raw, steps, extra)


def _reuse(
    con: duckdb.DuckDBPyConnection,
    suite: Suite,
    step: str,
    state: dict[str, object],
    selected: set[str],
) -> tuple[str, list[dg.AssetCheckResult]] | None:
    """The previous evaluation's results when the suite's inputs are unchanged (a quiet run does no
    Great Expectations work); None when the suite must run. Nothing is appended: the previous run's
    rows in quality.check_results and quality.quarantine stay the current ones."""
    if not build_state.is_current(con, step, state, ["quality.check_results"]):
        return None
    last = con.execute("SELECT run_id FROM ops.build_state WHERE step = ?", [step]).fetchall()[0][0]
    rows = con.execute(
        """SELECT expectation_id, severity, success, outcome, element_count, unexpected_count,
                  unexpected_percent, sample_keys::VARCHAR, quarantined, table_name
           FROM quality.check_results WHERE run_id = ? AND suite = ?""",
        [last, suite.name],
    ).fetchall()
    by_id = {r[0]: r for r in rows}
    if not selected <= set(by_id):
        return None
    asset_key = _key(suite.asset)
    results = []
    for check_id in sorted(selected):
        (_, severity, _success, outcome, elements, unexpected, percent, samples, quarantined, table) = by_id[
            check_id
        ]
        meta: dict[str, Any] = {
            "outcome": outcome,
            "severity": severity,
            "table": table,
            "sample_keys": dg.MetadataValue.json(orjson.loads(samples) if samples else []),
            "quarantined": int(quarantined),
            "reused_from_run": last,
        }
        for name, value in (("element_count", elements), ("unexpected_count", unexpected)):
            if value is not None:
                meta[name] = int(value)
        if percent is not None:
            meta["unexpected_percent"] = round(float(percent), 3)
        results.append(
            dg.AssetCheckResult(
                asset_key=asset_key,
                check_name=check_id,
                passed=outcome == "passed",
                severity=dg.AssetCheckSeverity.ERROR if outcome == "blocking" else dg.AssetCheckSeverity.WARN,
                metadata=meta,
                description=f"{check_id}: {outcome} (inputs unchanged since run {last})",
            )
        )
    return last, results
