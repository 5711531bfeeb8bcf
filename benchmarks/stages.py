"""The pipeline's stages as benchmark steps, each run in its own process for a clean peak RSS.

`python -m benchmarks.stages --stage flatten --data DIR --warehouse FILE --out RESULT.json` runs one
stage against a warehouse file and writes wall seconds, rows, rows/s and the process's peak RSS
(VmHWM). The runner (`benchmarks.run`) calls it once per stage, in `STAGES` order.

Stages whose module is not in the tree yet are reported as `not built yet`, never with a number.
To add one when it lands, write a function `(StageContext) -> StageOutput` and list it in `STAGES`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from benchmarks.common import loadavg, peak_rss_mb, rate, read_json, write_json
from pipelines.sqlfiles import count_rows, query_sql, run_sql

SQL_DIR = Path(__file__).resolve().parent / "sql"


class NotBuiltYet(Exception):
    """The pipeline module a stage needs is not in the tree yet."""


@dataclass
class StageContext:
    """What a stage gets: the data folder, an open warehouse connection (None for the floor), a run id."""

    data: Path
    con: duckdb.DuckDBPyConnection | None
    run_id: str
    workdir: Path
    responses: int


@dataclass
class StageOutput:
    """What a stage measured besides its wall time: rows produced, and stage-specific detail."""

    rows: int
    rows_label: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """One benchmark step. `sql` marks stages that are DuckDB SQL (compared with the bare scan)."""

    name: str
    fn: Callable[[StageContext], StageOutput]
    sql: bool
    description: str
    needs_warehouse: bool = True
    imports: tuple[str, ...] = ()  # imported before the clock starts (interpreter start-up, not work)


def _optional(module: str, attr: str) -> Callable[..., Any]:
    """The function `module.attr`, or NotBuiltYet when the module or the function is missing."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise NotBuiltYet(f"{module} is not in the tree yet") from exc
        raise
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise NotBuiltYet(f"{module}.{attr} is not defined yet")
    return fn


class _BuildState:
    """The skip rule the Dagster assets apply (`pipelines.build_state`): a derived step whose inputs
    have not changed since it last ran is not rebuilt. Mirrors assets/staging.py and assets/scores.py
    (same step names and inputs) so the no-change rerun measures what the pipeline does; a no-op
    when the tree has no build_state module."""

    def __init__(
        self,
        ctx: StageContext,
        step: str,
        raw_tables: list[str],
        steps: tuple[str, ...] = (),
        extra: str = "",
        outputs: tuple[str, ...] = (),
    ) -> None:
        self.ctx, self.step, self.outputs = ctx, step, outputs
        try:
            from pipelines import build_state
        except ModuleNotFoundError:
            self.module: Any = None
            self.state: Any = None
            return
        assert ctx.con is not None  # noqa: S101 - derived steps run on the warehouse
        self.module = build_state
        self.state = build_state.input_state(ctx.con, raw_tables, steps, extra)

    def current(self) -> bool:
        """True when the step's outputs are already built from exactly these inputs."""
        return self.module is not None and bool(
            self.module.is_current(self.ctx.con, self.step, self.state, list(self.outputs))
        )

    def record(self) -> None:
        """Remember the inputs the step has just been built from."""
        if self.module is not None:
            self.module.record(self.ctx.con, self.step, self.state, self.ctx.run_id)


# Step names as the assets record them (assets/staging.py ANSWERS_STEP / ITEMS_STEP, assets/scores.py).
ANSWERS_STEP = "staging.questionnaire_answers"
ITEMS_STEP = "staging.questionnaire_items"
SCORES_STEP = "staging.measure_scores"


# ---------------------------------------------------------------- stages


def stage_land(ctx: StageContext) -> StageOutput:
    """The folder source into raw, every type in pull order, validation included, as assets/raw.py.

    When the tree has per-source landing files (`pipelines/landing.py`), each type is pulled into its
    own landing file under `<workdir>/landing` and then merged into the warehouse, as the raw assets
    do; otherwise it is pulled straight into the warehouse.
    """
    from pipelines.extract import SourceSpec, extract_resource_type, resolve_referenced_questionnaires
    from pipelines.ndjson_landing import workers_for
    from pipelines.settings import RESOURCE_TYPES
    from pipelines.warehouse import Warehouse
    from quality_checks.structural import StructuralValidator, ValidationOutcome

    try:
        from pipelines.landing import landing_path, merge_into_warehouse
    except ModuleNotFoundError:
        landing_path = merge_into_warehouse = None  # type: ignore[assignment]

    class TimedValidator(StructuralValidator):
        """The pipeline's validator, unchanged, with the time spent in it added up."""

        seconds = 0.0
        calls = 0

        def validate(self, resource: Any, expected_type: str | None = None) -> ValidationOutcome:
            t0 = time.perf_counter()
            try:
                return super().validate(resource, expected_type)
            finally:
                TimedValidator.seconds += time.perf_counter() - t0
                TimedValidator.calls += 1

    assert ctx.con is not None  # noqa: S101 - needs_warehouse
    validator = TimedValidator(mode="used_elements")

    # Validation done in landing worker processes (pipelines.ndjson_landing) is CPU time there,
    # in parallel with the main process, not wall time of the stage.
    def validated_seconds() -> float:
        return TimedValidator.seconds + validator.elsewhere_seconds

    def validated_count() -> int:
        return TimedValidator.calls + validator.elsewhere_validations

    spec = SourceSpec(name="bench", kind="folder", folder=str(ctx.data))
    root = ctx.workdir / "landing"
    per_type: dict[str, Any] = {}
    fetched = 0
    resolution: dict[str, int] = {}
    for rtype in RESOURCE_TYPES:
        t0 = time.monotonic()
        before_s, before_n = validated_seconds(), validated_count()
        merge_s = 0.0
        if landing_path is not None and merge_into_warehouse is not None:
            land_file = landing_path(root, spec.name, rtype)
            with Warehouse(land_file).connect() as lcon:
                result = extract_resource_type(lcon, spec, None, rtype, ctx.run_id, validator)
                if rtype == "Questionnaire":
                    responses = landing_path(root, spec.name, "QuestionnaireResponse")
                    resolution = resolve_referenced_questionnaires(
                        lcon, spec, None, ctx.run_id, validator, responses_file=responses
                    )
            t1 = time.monotonic()
            merge_into_warehouse(ctx.con, land_file, rtype)
            merge_s = time.monotonic() - t1
        else:
            result = extract_resource_type(ctx.con, spec, None, rtype, ctx.run_id, validator)
            if rtype == "Questionnaire":
                resolution = resolve_referenced_questionnaires(ctx.con, spec, None, ctx.run_id, validator)
        counts = result.counts.as_dict()
        fetched += counts["fetched"]
        per_type[rtype] = {
            "seconds": round(time.monotonic() - t0, 3),
            "validate_seconds": round(validated_seconds() - before_s, 3),
            "merge_seconds": round(merge_s, 3),
            "validated": validated_count() - before_n,
            **counts,
            "reconciles": result.counts.reconciles(),
        }
    qr = per_type.get("QuestionnaireResponse", {})
    return StageOutput(
        rows=fetched,
        rows_label="resource versions fetched",
        detail={
            "mode": "landing files + merge" if landing_path is not None else "straight into the warehouse",
            "per_type": per_type,
            "validate_seconds": round(validated_seconds(), 2),
            "validated": validated_count(),
            "validate_per_s": rate(validated_count(), validated_seconds()),
            "validate_in_workers_seconds": round(validator.elsewhere_seconds, 2),
            "landing_workers": workers_for(ctx.data / "QuestionnaireResponse.ndjson"),
            "merge_seconds": round(sum(t["merge_seconds"] for t in per_type.values()), 2),
            "questionnaire_response_seconds": qr.get("seconds"),
            "new_versions": sum(t["new_versions"] for t in per_type.values()),
            "unchanged": sum(t["unchanged"] for t in per_type.values()),
            "rejected": sum(t["rejected"] for t in per_type.values()),
            "canonicals": resolution,
            "validator_stats": _plain(validator.stats.as_dict()) if hasattr(validator, "stats") else None,
        },
    )


def stage_flatten(ctx: StageContext) -> StageOutput:
    """raw.questionnaire_response -> staging.questionnaire_responses / questionnaire_answers."""
    from fhir_mappings.flatten import build_questionnaire_answers

    assert ctx.con is not None  # noqa: S101
    outputs = ("staging.questionnaire_responses", "staging.questionnaire_answers")
    state = _BuildState(ctx, ANSWERS_STEP, ["raw.questionnaire_response"], outputs=outputs)
    if state.current():
        counts = {"responses": count_rows(ctx.con, outputs[0]), "answers": count_rows(ctx.con, outputs[1])}
        return StageOutput(counts["answers"], "answers", {**counts, "skipped": True})
    counts = build_questionnaire_answers(ctx.con)
    state.record()
    return StageOutput(rows=counts["answers"], rows_label="answers", detail={**counts, "skipped": False})


def stage_questionnaires(ctx: StageContext) -> StageOutput:
    """raw.questionnaire -> staging.questionnaire_items / questionnaire_answer_scores."""
    from fhir_mappings.questionnaires import build_questionnaire_tables

    assert ctx.con is not None  # noqa: S101
    outputs = ("staging.questionnaire_items", "staging.questionnaire_answer_scores")
    state = _BuildState(ctx, ITEMS_STEP, ["raw.questionnaire"], outputs=outputs)
    if state.current():
        items = count_rows(ctx.con, outputs[0])
        return StageOutput(items, "questionnaire items", {"items": items, "skipped": True})
    counts = build_questionnaire_tables(ctx.con)
    state.record()
    return StageOutput(
        rows=counts["items"], rows_label="questionnaire items", detail={**counts, "skipped": False}
    )


SCORE_TABLES = ("staging.measure_scores", "staging.unmapped_responses", "staging.excluded_responses")


def stage_score(ctx: StageContext) -> StageOutput:
    """staging answers + registry -> staging.measure_scores (+ unmapped, excluded)."""
    fn = _optional("fhir_mappings.scoring", "build_measure_scores")
    from fhir_mappings.registry import load_registry

    assert ctx.con is not None  # noqa: S101
    registry = load_registry()
    fingerprint = getattr(importlib.import_module("fhir_mappings.registry"), "registry_fingerprint", None)
    extra = fingerprint(registry) if fingerprint else ""
    state = _BuildState(
        ctx, SCORES_STEP, ["raw.questionnaire_response"], (ANSWERS_STEP, ITEMS_STEP), extra, SCORE_TABLES
    )
    skipped = state.current()
    detail: dict[str, Any] = {"skipped": skipped}
    if not skipped:
        result = fn(ctx.con, registry)
        state.record()
        detail.update(result if isinstance(result, dict) else {})
    for table in SCORE_TABLES:
        try:
            detail[f"{table}_rows"] = count_rows(ctx.con, table)
        except duckdb.Error:
            detail[f"{table}_rows"] = None
    rows = detail.get("staging.measure_scores_rows") or 0
    return StageOutput(rows=int(rows), rows_label="score rows", detail=_plain(detail))


def stage_marts(ctx: StageContext) -> StageOutput:
    """Clinical staging tables and every mart (`marts.build.build_marts`), with a bench key."""
    fn = _optional("marts.build", "build_marts")
    from marts.privacy import ensure_demo_key, load_key

    assert ctx.con is not None  # noqa: S101
    key = load_key(env={}, key_file=ensure_demo_key(ctx.workdir / "pseudonym.key"))
    counts = fn(ctx.con, key=key)
    return StageOutput(rows=int(sum(counts.values())), rows_label="mart rows", detail=_plain(counts))


def stage_quality(ctx: StageContext) -> StageOutput:
    """Every expectation suite (`quality_checks.runner.run_suite` over `quality_checks.suite.load_suites`),
    with the reuse rule of the suites' Dagster checks (assets/checks.py): a suite whose inputs are
    unchanged since it last ran keeps its verdicts and runs no Great Expectations work."""
    run_suite = _optional("quality_checks.runner", "run_suite")
    load_suites = _optional("quality_checks.suite", "load_suites")
    from assets.checks import _suite_inputs
    from pipelines import build_state
    from quality_checks.params import QualitySettings

    assert ctx.con is not None  # noqa: S101
    settings = QualitySettings.from_env()
    outcomes: list[Any] = []
    reused: list[str] = []
    suites = load_suites()
    for suite in suites:
        step = f"quality.{suite.name}"
        state = _suite_inputs(ctx.con, suite, settings)
        if build_state.is_current(ctx.con, step, state, ["quality.check_results"]):
            reused.append(suite.name)
            continue
        run = run_suite(ctx.con, suite, run_id=ctx.run_id, settings=settings)
        build_state.record(ctx.con, step, state, ctx.run_id)
        outcomes.extend(run.outcomes)
    failed = Counter(o.check.severity for o in outcomes if not o.success)
    return StageOutput(
        rows=len(outcomes),
        rows_label="checks evaluated",
        detail={
            "suites": len(suites),
            "suites_reused": len(reused),
            "reused": reused,
            "failed_by_severity": dict(failed),
        },
    )


# The publish step (marts/publish.py): the marts into a file aside, CHECKPOINT, atomic replace, Parquet.
PUBLISH_ENTRY = ("marts.publish", "publish_marts")


def stage_publish(ctx: StageContext) -> StageOutput:
    """The published copies (temp file, CHECKPOINT, atomic replace) and the Parquet files: the BI
    target (aggregates) and the restricted target (record-level marts)."""
    fn = _optional(*PUBLISH_ENTRY)
    results = [
        fn(ctx.con, ctx.workdir / "published", run_id=ctx.run_id),
        fn(ctx.con, ctx.workdir / "restricted", run_id=ctx.run_id, target="restricted"),
    ]
    row_counts = {m: n for r in results for m, n in r.row_counts.items()}
    detail = {
        "marts": len(row_counts),
        "row_counts": row_counts,
        "database_bytes": sum(int(r.database_bytes) for r in results),
        "parquet_files": sum(len(r.parquet_files) for r in results),
    }
    return StageOutput(rows=sum(row_counts.values()), rows_label="published rows", detail=detail)


FLOOR_REPEATS = 3  # the floor is the least time: best of a few runs, so a busy moment does not lift it


def _floor_count(con: duckdb.DuckDBPyConnection, file: str, path: str) -> int:
    """The one count a floor query returns over the NDJSON file at `path` (bound, never in the SQL)."""
    value = query_sql(con, SQL_DIR / file, {"path": path})[0][0]
    if not isinstance(value, int):
        raise TypeError(f"{file}: expected a count, got {value!r}")
    return value


def stage_floor(ctx: StageContext) -> StageOutput:
    """The floor: bare DuckDB `read_json` over QuestionnaireResponse.ndjson, counting rows, then items.

    No warehouse, no validation, no versions: the least any NDJSON-to-DuckDB job must spend reading
    the same file. `ignore_errors` keeps the planted truncated line as an all-NULL row. Each query
    runs FLOOR_REPEATS times and the fastest counts.
    """
    path = str(ctx.data / "QuestionnaireResponse.ndjson")
    scans: list[float] = []
    unnests: list[float] = []
    con = duckdb.connect()
    try:
        for _ in range(FLOOR_REPEATS):
            t0 = time.monotonic()
            rows = _floor_count(con, "floor_scan.sql", path)
            scans.append(time.monotonic() - t0)
            t0 = time.monotonic()
            answers = _floor_count(con, "floor_unnest.sql", path)
            unnests.append(time.monotonic() - t0)
    finally:
        con.close()
    scan_s, unnest_s = min(scans), min(unnests)
    return StageOutput(
        rows=rows,
        rows_label="responses scanned",
        detail={
            "repeats": FLOOR_REPEATS,
            "scan_seconds": round(scan_s, 3),
            "scan_rows_per_s": rate(rows, scan_s),
            "unnest_seconds": round(unnest_s, 3),
            "unnest_answers": answers,
            "unnest_responses_per_s": rate(rows, unnest_s),
            "best_seconds": round(scan_s + unnest_s, 3),
            "all_runs_seconds": [round(a + b, 3) for a, b in zip(scans, unnests, strict=True)],
        },
    )


STAGES: list[Stage] = [
    Stage(
        "land",
        stage_land,
        False,
        "folder source -> raw (parse, hash, validate, write), every type, as assets/raw.py",
        imports=("pipelines.extract", "pipelines.settings", "pipelines.landing", "quality_checks.structural"),
    ),
    Stage(
        "flatten",
        stage_flatten,
        True,
        "raw responses -> staging.questionnaire_answers (recursive SQL)",
        imports=("fhir_mappings.flatten",),
    ),
    Stage(
        "questionnaires",
        stage_questionnaires,
        False,
        "raw forms -> item codes and answer scores",
        imports=("fhir_mappings.questionnaires", "pandas"),
    ),
    Stage(
        "score",
        stage_score,
        True,
        "answers + registry -> staging.measure_scores",
        imports=("fhir_mappings.scoring", "fhir_mappings.registry"),
    ),
    Stage(
        "marts",
        stage_marts,
        True,
        "clinical staging tables and the six marts",
        imports=("marts.build", "marts.privacy"),
    ),
    Stage(
        "quality",
        stage_quality,
        False,
        "every expectation suite (Great Expectations)",
        imports=("quality_checks.runner", "quality_checks.suite", "great_expectations", "assets.checks"),
    ),
    Stage("publish", stage_publish, False, "marts -> published copy", imports=(PUBLISH_ENTRY[0],)),
]
FLOOR = Stage("floor", stage_floor, True, "bare DuckDB read_json scan + unnest", needs_warehouse=False)
BY_NAME: dict[str, Stage] = {s.name: s for s in [*STAGES, FLOOR]}


def _plain(value: Any) -> Any:
    """JSON-safe copy of stage detail (numbers, strings, lists and dicts only)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


_MEMORY_LIMIT = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", re.IGNORECASE)


def run_stage(
    stage: Stage,
    data: Path,
    warehouse: Path | None,
    run_id: str,
    workdir: Path,
    memory_limit: str | None = None,
) -> dict[str, Any]:
    """Run one stage in this process and return its measurements (status ok / not built yet / error).

    `memory_limit` (e.g. '1GB') forces DuckDB's memory_limit on the warehouse connection: an experiment
    knob (without it each stage keeps the pipeline's own cap, docs/benchmarks.md), recorded with the
    result.
    """
    if memory_limit is not None and not _MEMORY_LIMIT.match(memory_limit):
        raise ValueError(f"not a DuckDB memory size: {memory_limit!r}")
    manifest = read_json(data / "manifest.json")
    responses = int(manifest["responses"])
    out: dict[str, Any] = {"stage": stage.name, "sql": stage.sql, "description": stage.description}
    t0 = time.monotonic()
    for module in stage.imports:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            pass  # the stage itself says "not built yet" when it needs the module
    out["import_seconds"] = round(time.monotonic() - t0, 3)
    t0 = time.monotonic()
    try:
        if stage.needs_warehouse:
            from pipelines.warehouse import Warehouse

            assert warehouse is not None  # noqa: S101
            with Warehouse(warehouse).connect() as con:
                if memory_limit:
                    run_sql(con, SQL_DIR / "memory_limit.sql", {"memory_limit": memory_limit})
                    out["duckdb_memory_limit"] = memory_limit
                result = stage.fn(StageContext(data, con, run_id, workdir, responses))
        else:
            result = stage.fn(StageContext(data, None, run_id, workdir, responses))
    except NotBuiltYet as exc:
        out.update(status="not built yet", detail={"reason": str(exc)})
        return out
    except Exception as exc:
        out.update(
            status="error", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-3000:]
        )
        out["seconds"] = round(time.monotonic() - t0, 3)
        return out
    seconds = time.monotonic() - t0
    if "best_seconds" in result.detail:  # repeated measurements (the floor): report the best run
        seconds = float(result.detail["best_seconds"])
    out.update(
        status="ok",
        seconds=round(seconds, 3),
        rows=result.rows,
        rows_label=result.rows_label,
        rows_per_s=rate(result.rows, seconds),
        responses=responses,
        responses_per_s=rate(responses, seconds),
        detail=_plain(result.detail),
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one benchmark stage in this process")
    parser.add_argument("--stage", required=True, choices=sorted(BY_NAME))
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--warehouse", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--run-id", default=f"bench-{os.getpid()}")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--duckdb-memory-limit", default=None, help="e.g. 1GB (default: DuckDB's own)")
    args = parser.parse_args(argv)
    workdir = args.workdir or (args.warehouse.parent if args.warehouse else Path.cwd())
    load_before = loadavg()
    result = run_stage(
        BY_NAME[args.stage], args.data, args.warehouse, args.run_id, workdir, args.duckdb_memory_limit
    )
    result["loadavg_1m_before"] = load_before
    result["peak_rss_mb"] = peak_rss_mb()
    result["loadavg_1m_after"] = loadavg()
    write_json(args.out, result)
    print(f"{args.stage}: {result['status']} {result.get('seconds', '')}s", file=sys.stderr)
    return 0 if result["status"] != "error" else 1


if __name__ == "__main__":
    raise SystemExit(main())
