"""Run an expectation suite with Great Expectations 1.x over DataFrames fetched from DuckDB.

For each dataset of a suite: run its SQL in DuckDB (registry lookups registered beside it), hand
the result to an *ephemeral* GX context as a pandas DataFrame (GX's SQL datasource over duckdb
silently returns failures: docs/data-quality.md), validate every expectation of every check on it
in one pass, and turn GX's results into one `CheckOutcome` per check: success, unexpected rows (by a `_row`
index column GX reports back), up to 20 sample keys, and the records to quarantine.

Outcomes: `passed`; `warning` (a WARN check failed: annotate only); `contained` (a row-level ERROR
check failed, every offending record was quarantined and they are at most `max_quarantine_percent`
of the rows, so downstream assets may run without them); `blocking` (any other ERROR failure,
including a check that could not run); `skipped` (the table does not exist and the suite allows
that: recorded as skipped-not-present, never as a pass).

Great Expectations is imported lazily (about 6 s) on the first validation, never at import time.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pandas as pd
from duckdb import (
    CaseExpression,
    ColumnExpression,
    ConstantExpression,
    FunctionExpression,
    SQLExpression,
    StarExpression,
)

from fhir_mappings.registry import Instrument
from pipelines.sqlfiles import (
    SqlTemplateError,
    install_shared_macros,
    read_sql,
    render,
    run_sql,
)
from pipelines.warehouse import stage_memory_limit, table_exists
from quality_checks.params import QualitySettings, register_registry, registry_frames, unregister_registry
from quality_checks.store import (
    QuarantineRecord,
    ResultRow,
    append_quarantine,
    append_result,
    ensure_quality_schema,
)
from quality_checks.suite import Check, Dataset, ExpectationSpec, Suite, SuiteError

log = logging.getLogger(__name__)

SAMPLE_SIZE = 20
ROW = "_row"  # positional index column GX reports back for every unexpected row
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.\-]+$")  # registry ids/scales used inside GX row conditions


@dataclass
class CheckOutcome:
    """What one check found in one evaluation."""

    check: Check
    outcome: str  # passed | warning | contained | blocking | skipped
    success: bool | None
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    sample_keys: list[str] = field(default_factory=list)
    quarantine: list[QuarantineRecord] = field(default_factory=list)
    quarantined: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def blocks(self) -> bool:
        """True when downstream assets must not run."""
        return self.outcome == "blocking"

    def summary(self) -> str:
        """One line for logs and Dagster descriptions."""
        if self.outcome == "skipped":
            return f"{self.check.id}: skipped ({self.details.get('skipped', 'not present')})"
        if self.details.get("error"):
            return f"{self.check.id}: could not run: {self.details['error']}"
        counts = (
            f"{self.unexpected_count} of {self.element_count} rows"
            if self.unexpected_count is not None
            else "table-level"
        )
        extra = f", {self.quarantined} quarantined" if self.quarantined else ""
        return f"{self.check.id}: {self.outcome} ({counts}{extra})"


@dataclass
class SuiteRun:
    """Every outcome of one suite evaluation."""

    suite: Suite
    run_id: str
    checked_at: datetime
    outcomes: list[CheckOutcome]

    @property
    def blocking(self) -> list[CheckOutcome]:
        """Outcomes that stop downstream assets."""
        return [o for o in self.outcomes if o.blocks]

    def by_id(self) -> dict[str, CheckOutcome]:
        """Outcomes keyed by check id."""
        return {o.check.id: o for o in self.outcomes}


@dataclass(frozen=True)
class _Gx:
    gx: Any
    gxe: Any
    batch_definition: Any


@functools.cache
def _gx() -> _Gx:
    """One ephemeral GX context per process, created on first use (the import takes ~6 s)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("quality_checks").add_dataframe_asset("frame")
    return _Gx(gx, gxe, asset.add_batch_definition_whole_dataframe("whole_frame"))


# ---------------------------------------------------------------- parameters and expansions


def _resolve(value: Any, scope: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        name = value[1:]
        if name not in scope:
            raise SuiteError(f"{where}: unknown parameter ${name}")
        return scope[name]
    if isinstance(value, list):
        return [_resolve(v, scope, where) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, scope, where) for k, v in value.items()}
    return value


def _safe(value: Any, where: str) -> str:
    text = str(value)
    if not _SAFE_VALUE.match(text):
        raise SuiteError(f"{where}: {text!r} cannot be used in a row condition")
    return text


def count_columns(frame: pd.DataFrame, extra: Mapping[str, Any]) -> list[str]:
    """Integer columns whose name matches the marts' count pattern (plus explicit, minus excluded)."""
    pattern = re.compile(str(extra.get("count_pattern") or r"^$"))
    not_pattern = str(extra.get("count_exclude_pattern") or "")
    excluded = re.compile(not_pattern) if not_pattern else None
    exclude = set(extra.get("count_exclude") or [])
    include = [c for c in extra.get("count_include") or [] if c in frame.columns]
    found = [
        str(c)
        for c in frame.columns
        if c != ROW
        and str(c) not in exclude
        and pd.api.types.is_integer_dtype(frame[c].dtype)
        and pattern.search(str(c))
        and not (excluded and excluded.search(str(c)))
    ]
    return list(dict.fromkeys([*found, *include]))


def _expand(
    spec: ExpectationSpec,
    frames: Mapping[str, pd.DataFrame],
    frame: pd.DataFrame,
    suite: Suite,
    where: str,
) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """(label, variables, row_condition) for each expectation the spec stands for."""
    if spec.for_each is None:
        yield "", {}, None
    elif spec.for_each in ("registry_scale", "registry_total"):
        scales = frames["qc_registry_scales"]
        if spec.for_each == "registry_total":
            scales = scales[scales["scale"] == "total"]
        for row in scales.to_dict("records"):
            i, s = _safe(row["instrument"], where), _safe(row["scale"], where)
            label = f"{i}/{s} [{row['scale_min']:g}, {row['scale_max']:g}]"
            yield label, dict(row), f'instrument=="{i}" & scale=="{s}"'
    elif spec.for_each == "registry_instrument":
        for row in frames["qc_registry_instruments"].to_dict("records"):
            i = _safe(row["instrument"], where)
            yield f"{i} items [{row['item_min']:g}, {row['item_max']:g}]", dict(row), f'instrument=="{i}"'
    elif spec.for_each == "count_column":
        for column in count_columns(frame, suite.extra):
            yield column, {"column": column}, None
    else:  # pragma: no cover - suite.py validates for_each
        raise SuiteError(f"{where}: unknown for_each {spec.for_each}")


# ---------------------------------------------------------------- the run


def _key(row: Mapping[str, Any], columns: tuple[str, ...]) -> str:
    parts = []
    for c in columns:
        v = row.get(c)
        parts.append("" if v is None or (isinstance(v, float) and v != v) or v is pd.NA else str(v))
    return "|".join(parts)


def _records(offending: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The offending rows as JSON-safe dicts (timestamps ISO 8601)."""
    if offending is None or offending.empty:
        return []
    subset = offending.drop(columns=[ROW])
    return list(orjson.loads(subset.to_json(orient="records", date_format="iso")))


def _exception_message(info: Any) -> str | None:
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "exception")
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message") or "exception")
    return None


def _plain(value: Any) -> Any:
    """numpy / pandas scalars to plain Python for JSON details."""
    if hasattr(value, "item") and not isinstance(value, list | dict | str):
        try:
            return value.item()
        except (ValueError, AttributeError):
            return str(value)
    return value


class _Planned:
    """The GX expectations planned for one check, or why it cannot run."""

    def __init__(self, check: Check) -> None:
        self.check = check
        self.parts: list[tuple[str, Any]] = []  # (label, GX expectation)
        self.error: str | None = None
        self.columns: set[str] = set()  # every column an expectation or row condition reads
        self.unique_keys: list[list[str]] = []  # column lists of uniqueness expectations
        self.types: set[str] = set()  # GX expectation types planned
        # Registry-conditioned range checks evaluated column-wise here instead of by GX (_Local).
        self.local: list[_Local] = []

    @property
    def planned_count(self) -> int:
        """Expectations planned so far (GX and column-wise): the next one's `seq`."""
        return len(self.parts) + len(self.local)


@dataclass(frozen=True)
class _Config:
    """What `_outcome` reads of an expectation's configuration (GX's own for GX results)."""

    type: str
    meta: dict[str, Any]


@dataclass(frozen=True)
class _Local:
    """`expect_column_values_to_be_between` on the rows where `condition` holds (column == value).

    GX evaluates such a row condition with `DataFrame.query` once per expectation over the whole
    batch; here the batch is grouped by the condition columns once and each range is a vectorised
    comparison on its group, with GX's semantics: NULLs are neither expected nor unexpected, bounds
    are inclusive, element_count is the rows the condition selects.
    """

    config: _Config
    column: str
    min_value: float | None
    max_value: float | None
    condition: tuple[tuple[str, Any], ...]


def _plan(
    check: Check,
    frame: pd.DataFrame,
    frames: Mapping[str, pd.DataFrame],
    suite: Suite,
    values: Mapping[str, Any],
    gx: _Gx,
    columnwise: bool = True,
) -> _Planned:
    planned = _Planned(check)
    missing_keys = [k for k in check.key_columns if k not in frame.columns]
    if missing_keys:
        planned.error = f"key column(s) {missing_keys} not in the data"
        return planned
    where = f"{suite.name}.{check.id}"
    for n, spec in enumerate(check.expectations):
        try:
            expansions = list(_expand(spec, frames, frame, suite, where))
            for label, variables, condition in expansions:
                kwargs = _resolve(dict(spec.kwargs), {**values, **variables}, where)
                columns = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
                columns += list(kwargs.get("column_list", []))
                absent = [c for c in columns if c not in frame.columns]
                if absent:
                    planned.error = f"column(s) {absent} not in the data"
                    return planned
                planned.columns.update(str(c) for c in columns)
                planned.types.add(spec.type)
                if spec.type in _UNIQUE:
                    planned.unique_keys.append([str(c) for c in columns])
                meta = {"check": check.id, "part": f"{n}:{label}", "seq": planned.planned_count}
                if condition:
                    condition_columns = _CONDITION_COLUMNS[spec.for_each or ""]
                    planned.columns.update(condition_columns)
                    if columnwise and _columnwise(spec.type, kwargs, frame):
                        planned.local.append(
                            _Local(
                                _Config(spec.type, meta),
                                str(kwargs["column"]),
                                kwargs.get("min_value"),
                                kwargs.get("max_value"),
                                tuple((c, variables[c]) for c in condition_columns),
                            )
                        )
                        continue
                    kwargs = {**kwargs, "row_condition": condition, "condition_parser": "pandas"}
                cls = getattr(gx.gxe, spec.class_name, None)
                if cls is None:
                    raise SuiteError(f"{where}: Great Expectations has no {spec.class_name}")
                planned.parts.append((label or spec.type, cls(**kwargs, meta=meta)))
        except (SuiteError, ValueError, TypeError) as exc:  # pydantic errors are ValueErrors
            planned.error = str(exc)
            return planned
    return planned


def _columnwise(kind: str, kwargs: Mapping[str, Any], frame: pd.DataFrame) -> bool:
    """Can this conditioned expectation be evaluated column-wise (`_Local`) with GX's result?

    Only a plain inclusive range (no `mostly`, no strict bounds) on a numeric column with numeric
    bounds; anything else stays with GX."""
    if kind != "expect_column_values_to_be_between" or set(kwargs) - {"column", "min_value", "max_value"}:
        return False
    column = kwargs.get("column")
    if column not in frame.columns:
        return False
    dtype = frame[column].dtype
    if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        return False
    bounds = [kwargs.get("min_value"), kwargs.get("max_value")]
    return all(b is None or (isinstance(b, int | float) and not isinstance(b, bool)) for b in bounds)


def _local_results(plans: list[_Planned], batch: pd.DataFrame) -> Iterator[_MergedResult]:
    """The column-wise expectations of `plans` on one batch, shaped like GX's results."""
    groups: dict[tuple[str, ...], dict[Any, Any]] = {}
    rows = batch[ROW].to_numpy()
    for p in plans:
        if p.error:
            continue
        for local in p.local:
            columns = tuple(c for c, _ in local.condition)
            if columns not in groups:
                # One pass per condition-column set: positions of the rows of each value (NULLs in no group).
                by = columns[0] if len(columns) == 1 else list(columns)  # a 1-list would key by 1-tuples
                groups[columns] = batch.groupby(by, sort=False, dropna=True).indices
            key = local.condition[0][1] if len(columns) == 1 else tuple(v for _, v in local.condition)
            at = groups[columns].get(key)
            picked = batch[local.column].iloc[at] if at is not None else batch[local.column].iloc[0:0]
            present = picked.notna().to_numpy(dtype=bool)
            values = picked[present]
            bad = pd.Series(False, index=values.index)
            if local.min_value is not None:
                bad |= (values < local.min_value).to_numpy(dtype=bool)
            if local.max_value is not None:
                bad |= (values > local.max_value).to_numpy(dtype=bool)
            positions = rows[at][present][bad.to_numpy(dtype=bool)] if at is not None else rows[0:0]
            unexpected = values[bad.to_numpy(dtype=bool)].tolist()
            result = {
                "element_count": len(picked),
                "unexpected_count": len(unexpected),
                "partial_unexpected_list": unexpected[:SAMPLE_SIZE],
                "unexpected_index_list": [{ROW: int(r)} for r in positions],
                "observed_value": None,
            }
            yield _MergedResult(local.config, not unexpected, result, None)


def _outcome(
    check: Check,
    planned: _Planned,
    results: list[Any],
    data: _Data | _Frame,
    settings: QualitySettings,
) -> CheckOutcome:
    if planned.error:
        return CheckOutcome(
            check=check,
            outcome="blocking" if check.severity == "ERROR" else "warning",
            success=False,
            details={"error": planned.error},
        )
    rows: set[int] = set()
    row_level = False
    success = True
    parts = []
    element_count: int | None = None
    for res in results:
        r = res.result or {}
        label = str(res.expectation_config.meta.get("part", "")).split(":", 1)[-1]
        error = _exception_message(res.exception_info)
        part_ok = bool(res.success) and error is None
        success = success and part_ok
        index = r.get("unexpected_index_list")
        if isinstance(index, list):
            row_level = True
            rows.update(int(i[ROW]) for i in index if isinstance(i, dict) and ROW in i)
        elif r.get("element_count") is not None:
            element_count = int(r["element_count"])
        if not part_ok or len(results) <= 3:
            parts.append(
                {
                    "expectation": res.expectation_config.type,
                    "part": label or None,
                    "success": part_ok,
                    "element_count": _plain(r.get("element_count")),
                    "unexpected_count": _plain(r.get("unexpected_count")),
                    "observed_value": _plain(r.get("observed_value")),
                    "partial_unexpected": [_plain(v) for v in (r.get("partial_unexpected_list") or [])[:5]],
                    "error": error,
                }
            )
    ordered = sorted(rows)
    details: dict[str, Any] = {"parts": parts, "expectations_run": len(results)}
    if not results:
        details["note"] = "nothing to check (no expansion applied)"
    if row_level:
        element_count = data.rows
        unexpected: int | None = len(ordered)
    else:
        unexpected = None
    pct: float | None = None
    if row_level:
        pct = 100.0 * len(ordered) / element_count if element_count else 0.0
    offending = data.rows_at(ordered) if ordered else None
    records = offending.to_dict("records") if offending is not None else []
    keys = list(dict.fromkeys(_key(rec, check.key_columns) for rec in records))
    outcome = "passed"
    quarantine: list[QuarantineRecord] = []
    if not success:
        if check.severity == "WARN":
            outcome = "warning"
        else:
            limit = (
                check.max_quarantine_percent
                if check.max_quarantine_percent is not None
                else settings.max_quarantine_percent
            )
            details["max_quarantine_percent"] = limit
            if check.quarantine and row_level and ordered and pct is not None and pct <= limit:
                outcome = "contained"
            else:
                outcome = "blocking"
                if check.quarantine and row_level and pct is not None and pct > limit:
                    details["blocked_because"] = f"{pct:.1f}% of rows failed, above the {limit:g}% limit"
                elif check.quarantine and not ordered:
                    details["blocked_because"] = "failed without identifying offending rows"
            if check.quarantine and ordered:
                reason = f"{check.id}: {check.description}"
                failing_labels = [p["part"] for p in parts if not p["success"] and p["part"]]
                if failing_labels:
                    reason += f" [{'; '.join(failing_labels[:5])}]"
                seen: set[tuple[str | None, str]] = set()
                for rec, json_rec in zip(records, _records(offending), strict=True):
                    source = rec.get("source") if isinstance(rec.get("source"), str) else None
                    key = _key(rec, check.key_columns)
                    if (source, key) in seen:
                        continue
                    seen.add((source, key))
                    quarantine.append(QuarantineRecord(source, key, reason, json_rec))
    return CheckOutcome(
        check=check,
        outcome=outcome,
        success=success,
        element_count=element_count,
        unexpected_count=unexpected,
        unexpected_percent=pct,
        sample_keys=keys[:SAMPLE_SIZE],
        quarantine=quarantine,
        details=details,
    )


SPOOL = "_qc_dataset"  # the temporary table a dataset is spooled into (quality_checks/sql/drop_spool.sql)
BATCH_SOURCE = "_qc_batch_source"  # view over the spool with each row's batch (spool_batches.sql)
BATCH_SPOOL = "_qc_batches"  # the spool's needed columns sorted by batch (spool_batches.sql)
BATCH = "_batch"
SQL_DIR = Path(__file__).resolve().parent / "sql"
# Rows per Great Expectations batch. A dataset up to this size is validated as one DataFrame, as it
# always was; a larger one in column-projected batches of about this many rows, so the stage's memory
# no longer grows with the data (at 1M responses the answers dataset alone is ~9M rows).
CHUNK_ROWS = 100_000
# DuckDB's memory cap while the suites run: the spooled dataset spills to disk beyond it.
DUCKDB_MEMORY_LIMIT = "256MB"
# Expectations decided row by row: any split of the rows gives the same unexpected rows.
_ROW_LOCAL: frozenset[str] = frozenset(
    {
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_not_be_in_set",
        "expect_column_values_to_be_null",
        "expect_column_values_to_not_be_null",
        "expect_column_pair_values_to_be_equal",
        "expect_column_pair_values_a_to_be_greater_than_b",
    }
)
# Expectations over groups of equal keys: exact when every group falls in one batch, which hash
# partitioning on (a subset of) the key guarantees.
_UNIQUE: frozenset[str] = frozenset(
    {"expect_compound_columns_to_be_unique", "expect_column_values_to_be_unique"}
)
# Columns the registry expansions' row conditions read (runner._expand).
_CONDITION_COLUMNS: dict[str, tuple[str, ...]] = {
    "registry_scale": ("instrument", "scale"),
    "registry_total": ("instrument", "scale"),
    "registry_instrument": ("instrument",),
    "count_column": (),
    "": (),
}


def _spool_head() -> str:
    """`CREATE ... AS` from quality_checks/sql/spool_dataset.sql, its comment lines dropped."""
    lines = read_sql(SQL_DIR / "spool_dataset.sql").splitlines()
    return "\n".join(line for line in lines if not line.startswith("--"))


def _statement(
    dataset: Dataset, values: Mapping[str, Any], con: duckdb.DuckDBPyConnection
) -> tuple[str, dict[str, Any]]:
    """The dataset's one query (declared tables rendered) and the values of the `$names` it binds.

    Declared tables are rendered into the query's `{{ placeholders }}` (`pipelines.sqlfiles.render`);
    each `$name` the query uses (as DuckDB parses it, so text inside string literals is not one) is
    bound from the suite's values, never written into the SQL.
    """
    try:
        statements = con.extract_statements(render(dataset.sql, dataset.identifiers))
    except SqlTemplateError as exc:
        raise SuiteError(f"dataset {dataset.name}: {exc}") from exc
    if len(statements) != 1:
        raise SuiteError(f"dataset {dataset.name}: expected one query, found {len(statements)} statements")
    names = set(statements[0].named_parameters)
    missing = names - set(values)
    if missing:
        raise SuiteError(f"unknown SQL parameter(s): {sorted(missing)}")
    return statements[0].query, {n: values[n] for n in sorted(names)}


class _Data:
    """One dataset's rows, spooled into a temporary DuckDB table in the query's order.

    `rowid` of the spool is the row's position in the query result (DuckDB preserves insertion order),
    so `_row` means the same whether the rows reach GX as one DataFrame or in batches. `prototype` is an
    empty frame with the dtypes the whole result would have as one DataFrame (pandas picks nullable
    dtypes only when a column holds NULLs, so each batch is cast to them): the count-column expansion
    and every batch see the dtypes a single whole frame would have.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, dataset: Dataset, values: Mapping[str, Any]) -> None:
        query, params = _statement(dataset, values, con)
        # The query text is the suite file's own (tables rendered from declarations); values stay bound.
        con.execute(_spool_head() + "\n" + query, params)
        self.con = con
        self.rel = con.table(SPOOL)
        columns = list(self.rel.columns)
        counts = self.rel.aggregate(
            [FunctionExpression("count_star").alias("_n"), FunctionExpression("min", SQLExpression("rowid"))]
            + [FunctionExpression("count", ColumnExpression(c)) for c in columns]
        ).fetchall()[0]
        self.rows = int(counts[0])
        # Row ids of a fresh table are consecutive in insertion order, but start at a large base when
        # the table is created inside an open transaction (its rows are transaction-local until then).
        self.position = SQLExpression("rowid") - ConstantExpression(int(counts[1] or 0))
        with_nulls = {c for c, n in zip(columns, counts[2:], strict=True) if n < self.rows}
        # One row of values and one with NULL in exactly the columns that hold NULLs: its DataFrame has
        # the dtypes of the whole result.
        values_row = self.rel.aggregate(
            [FunctionExpression("any_value", ColumnExpression(c)).alias(c) for c in columns]
        )
        nulls_row = self.rel.aggregate(
            [
                FunctionExpression(
                    "any_value",
                    CaseExpression(ConstantExpression(False), ColumnExpression(c))
                    if c in with_nulls
                    else ColumnExpression(c),
                ).alias(c)
                for c in columns
            ]
        )
        sample = values_row.union(nulls_row).df()
        self.prototype = sample.iloc[0:0].copy()
        self.prototype[ROW] = pd.Series(dtype="int64")
        self.dtypes = {c: sample[c].dtype for c in columns}

    def _cast(self, frame: pd.DataFrame) -> pd.DataFrame:
        for c, dtype in self.dtypes.items():
            if c in frame.columns and frame[c].dtype != dtype:
                frame[c] = frame[c].astype(dtype)
        return frame

    def _with_row(self) -> duckdb.DuckDBPyRelation:
        return self.rel.project(StarExpression(), self.position.alias(ROW))

    def whole(self) -> pd.DataFrame:
        """Every row and column, in the query's order, with `_row` (what GX saw before batching)."""
        return self._with_row().order(ROW).df()

    def partition(self, columns: list[str], key: list[str], parts: int) -> None:
        """Number every row's batch once (hash of `key` modulo `parts`, or its position when no key)
        into a second spool of only `columns`, sorted by batch: each batch then reads its own row
        groups instead of hashing and scanning the whole spool again."""
        if key:
            number = FunctionExpression(
                "mod",
                FunctionExpression("hash", *[ColumnExpression(c) for c in key]),
                ConstantExpression(parts),
            )
        else:
            number = FunctionExpression("mod", self.position, ConstantExpression(parts))
        source = self.rel.project(
            *[ColumnExpression(c) for c in columns], self.position.alias(ROW), number.alias(BATCH)
        )
        source.create_view(BATCH_SOURCE, replace=True)
        try:
            run_sql(self.con, SQL_DIR / "spool_batches.sql")
        finally:
            run_sql(self.con, SQL_DIR / "drop_batch_source.sql")
        self.batches = self.con.table(BATCH_SPOOL)

    def batch(self, columns: list[str], part: int) -> pd.DataFrame:
        """The rows of one batch of `partition`, only `columns` (and `_row`), in row order."""
        projected = self.batches.filter(ColumnExpression(BATCH) == ConstantExpression(part)).project(
            *[ColumnExpression(c) for c in columns], ColumnExpression(ROW)
        )
        return self._cast(projected.order(ROW).df())

    def rows_at(self, rows: list[int]) -> pd.DataFrame:
        """Every column of the rows at these positions, in order, with `_row`."""
        wanted = self.con.from_df(pd.DataFrame({ROW: pd.Series(rows, dtype="int64")}))
        frame = self._with_row().join(wanted, ROW).order(ROW).df()
        return self._cast(frame).reset_index(drop=True)

    def close(self) -> None:
        """Drop the spool."""
        run_sql(self.con, SQL_DIR / "drop_spool.sql")


def _fetch(con: duckdb.DuckDBPyConnection, dataset: Dataset, values: Mapping[str, Any]) -> pd.DataFrame:
    """A dataset's rows as one DataFrame with its `_row` column (through the spool, then dropped)."""
    data = _Data(con, dataset, values)
    try:
        return data.whole()
    finally:
        data.close()


class _Frame:
    """A dataset already in one DataFrame (every row): `rows_at` is positional."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.rows = len(frame)

    def rows_at(self, rows: list[int]) -> pd.DataFrame:
        """The rows at these positions."""
        return self.frame.iloc[rows]


@dataclass
class _MergedResult:
    """One expectation's results over every batch, shaped like GX's ExpectationValidationResult."""

    expectation_config: Any
    success: bool
    result: dict[str, Any]
    exception_info: dict[str, Any] | None


def _merge(parts: list[Any]) -> Any:
    """One expectation's batch results as one: counts add up, unexpected rows in row order.

    Only row-local and (hash-partitioned) uniqueness expectations without `mostly` are batched, so
    success is every batch's success and the unexpected rows are the union of the batches'.
    """
    if len(parts) == 1:
        return parts[0]
    rows: list[tuple[int, Any]] = []
    firsts: list[tuple[int, Any]] = []
    element_count = unexpected_count = 0
    success = True
    exception: dict[str, Any] | None = None
    for res in parts:
        r = res.result or {}
        success = success and bool(res.success)
        if exception is None and _exception_message(res.exception_info):
            exception = res.exception_info
        element_count += int(r.get("element_count") or 0)
        unexpected_count += int(r.get("unexpected_count") or 0)
        index = [(int(i[ROW]), i) for i in r.get("unexpected_index_list") or [] if ROW in i]
        rows.extend(index)
        # A batch's partial list is its first unexpected values in row order, so the whole dataset's
        # first SAMPLE_SIZE values are among the batches' partial lists.
        firsts.extend(
            (n, v) for (n, _), v in zip(index, r.get("partial_unexpected_list") or [], strict=False)
        )
    rows.sort(key=lambda p: p[0])
    firsts.sort(key=lambda p: p[0])
    result = {
        "element_count": element_count,
        "unexpected_count": unexpected_count,
        "partial_unexpected_list": [v for _, v in firsts[:SAMPLE_SIZE]],
        "unexpected_index_list": [i for _, i in rows],
        "observed_value": (parts[0].result or {}).get("observed_value"),
    }
    return _MergedResult(parts[0].expectation_config, success, result, exception or parts[0].exception_info)


def _batching(plans: list[_Planned], data: _Data, chunk_rows: int | None) -> tuple[int, list[str]]:
    """How many batches a dataset is validated in, and the key columns its rows are hashed on."""
    if chunk_rows is None or data.rows <= chunk_rows:
        return 1, []
    live = [p for p in plans if not p.error]
    types = {t for p in live for t in p.types}
    if types - _ROW_LOCAL - _UNIQUE:
        return 1, []  # an expectation over the whole table: one batch, as before
    if any("mostly" in spec.kwargs for p in live for spec in p.check.expectations):
        return 1, []  # the success of `mostly` is a share of all rows
    lists = [keys for p in live for keys in p.unique_keys]
    key = [c for c in lists[0] if all(c in other for other in lists[1:])] if lists else []
    if lists and not key:
        return 1, []  # uniqueness on unrelated keys: no one partition keeps every group together
    return -(-data.rows // chunk_rows), key


def _validate(gx: _Gx, gx_suite: Any, frame: pd.DataFrame) -> list[Any]:
    batch = gx.batch_definition.get_batch(batch_parameters={"dataframe": frame})
    validation = batch.validate(
        gx_suite,
        result_format={
            "result_format": "COMPLETE",
            "unexpected_index_column_names": [ROW],
            "partial_unexpected_count": SAMPLE_SIZE,
        },
    )
    return list(validation.results)


def evaluate_suite(
    con: duckdb.DuckDBPyConnection,
    suite: Suite,
    *,
    settings: QualitySettings | None = None,
    registry: Mapping[str, Instrument] | None = None,
    only: set[str] | None = None,
    chunk_rows: int | None = CHUNK_ROWS,
    columnwise: bool = True,
) -> list[CheckOutcome]:
    """Evaluate every check of `suite` (or those in `only`) without writing anything.

    Datasets above `chunk_rows` rows are validated in column-projected batches with the same outcomes
    (None: every dataset as one DataFrame). DuckDB runs with `DUCKDB_MEMORY_LIMIT` meanwhile.
    `columnwise`: registry-conditioned range checks evaluated column-wise (`_Local`) with GX's
    outcomes; False hands them to GX's row conditions (the tests compare the two).
    """
    settings = settings or QualitySettings.from_env()
    # Suites read the newest version of a resource and parse references through the same macros as
    # every layer (pipelines/sql/macros.sql): `current_version('raw.<type>')`, `ref_id`, ...
    install_shared_macros(con)
    if registry is None:
        from fhir_mappings.registry import load_registry

        registry = load_registry()
    frames = registry_frames(registry)
    values = settings.values(registry)
    checks = [c for c in suite.checks if only is None or c.id in only]
    outcomes: dict[str, CheckOutcome] = {}
    registered = register_registry(con, frames)
    # DuckDB's cap while the suites run (DUCKDB_MEMORY_LIMIT), then the connection's own again.
    with stage_memory_limit(con, DUCKDB_MEMORY_LIMIT):
        try:
            for name, dataset in suite.datasets.items():
                on_dataset = [c for c in checks if c.dataset == name]
                if not on_dataset:
                    continue
                missing = [t for t in dataset.requires if not table_exists(con, t)]
                if missing:
                    for c in on_dataset:
                        if suite.when_missing == "skip":
                            outcomes[c.id] = CheckOutcome(
                                c, "skipped", None, details={"skipped": f"not present: {', '.join(missing)}"}
                            )
                        else:
                            outcomes[c.id] = CheckOutcome(
                                c,
                                "blocking" if c.severity == "ERROR" else "warning",
                                False,
                                details={"error": f"table(s) not present: {', '.join(missing)}"},
                            )
                    continue
                try:
                    data = _Data(con, dataset, values)
                except (duckdb.Error, SuiteError) as exc:
                    for c in on_dataset:
                        outcomes[c.id] = CheckOutcome(
                            c,
                            "blocking" if c.severity == "ERROR" else "warning",
                            False,
                            details={"error": f"dataset {name}: {exc}"},
                        )
                    continue
                try:
                    _evaluate_dataset(
                        data,
                        suite,
                        name,
                        on_dataset,
                        frames,
                        values,
                        settings,
                        chunk_rows,
                        outcomes,
                        columnwise,
                    )
                finally:
                    data.close()
        finally:
            unregister_registry(con, registered)
    return [outcomes[c.id] for c in checks]


def _evaluate_dataset(
    data: _Data,
    suite: Suite,
    name: str,
    on_dataset: list[Check],
    frames: Mapping[str, pd.DataFrame],
    values: Mapping[str, Any],
    settings: QualitySettings,
    chunk_rows: int | None,
    outcomes: dict[str, CheckOutcome],
    columnwise: bool = True,
) -> None:
    """Validate one spooled dataset's checks with GX, as one DataFrame or in batches."""
    gx = _gx()
    plans = [_plan(c, data.prototype, frames, suite, values, gx, columnwise) for c in on_dataset]
    gx_suite = gx.gx.ExpectationSuite(name=f"{suite.name}.{name}")
    for p in plans:
        if not p.error:
            for _, expectation in p.parts:
                gx_suite.add_expectation(expectation)
    parts, key = _batching(plans, data, chunk_rows)
    log.info("%s.%s: %d rows, %d batch(es), keyed on %s", suite.name, name, data.rows, parts, key or "rowid")
    rows: _Data | _Frame = data
    by_seq: dict[tuple[str, int], list[Any]] = {}
    local = any(p.local for p in plans if not p.error)
    if not gx_suite.expectations and not local:
        batches: Iterator[pd.DataFrame] = iter([])
    elif parts == 1:
        frame = data.whole()
        rows = _Frame(frame)
        batches = iter([frame])
    else:
        needed = {c for p in plans if not p.error for c in p.columns}
        columns = [c for c in data.prototype.columns if c in needed]
        data.partition(columns, key, parts)
        batches = (data.batch(columns, i) for i in range(parts))
    for batch in batches:
        if batch.empty and parts > 1:
            continue  # a hash partition that drew no rows: nothing to add
        results = _validate(gx, gx_suite, batch) if gx_suite.expectations else []
        for res in [*results, *_local_results(plans, batch)]:
            meta = res.expectation_config.meta
            by_seq.setdefault((str(meta.get("check")), int(meta.get("seq", 0))), []).append(res)
    by_check: dict[str, list[Any]] = {c.id: [] for c in on_dataset}
    for (check_id, _), results in sorted(by_seq.items(), key=lambda kv: kv[0][1]):
        by_check[check_id].append(_merge(results))
    for p in plans:
        outcomes[p.check.id] = _outcome(p.check, p, by_check[p.check.id], rows, settings)


def run_suite(
    con: duckdb.DuckDBPyConnection,
    suite: Suite,
    *,
    run_id: str | None = None,
    settings: QualitySettings | None = None,
    registry: Mapping[str, Instrument] | None = None,
    only: set[str] | None = None,
) -> SuiteRun:
    """Evaluate `suite` and append every result to `quality.check_results` and every offending record
    of a failed row-level ERROR check to `quality.quarantine` (nothing is ever deleted)."""
    run_id = run_id or f"adhoc-{uuid.uuid4().hex[:12]}"
    outcomes = evaluate_suite(con, suite, settings=settings, registry=registry, only=only)
    checked_at = datetime.now(UTC)
    ensure_quality_schema(con)
    con.begin()  # one transaction: every result and quarantined record of the evaluation, or none
    try:
        for o in outcomes:
            # Idempotent per run: a retried step re-flags the same records without writing them twice.
            append_quarantine(
                con,
                run_id=run_id,
                at=checked_at,
                table_name=o.check.table,
                expectation_id=o.check.id,
                severity=o.check.severity,
                records=o.quarantine,
            )
            o.quarantined = len(o.quarantine)
            append_result(
                con,
                ResultRow(
                    run_id=run_id,
                    checked_at=checked_at,
                    suite=suite.name,
                    table_name=o.check.table,
                    expectation_id=o.check.id,
                    expectation=o.check.gx_types,
                    severity=o.check.severity,
                    success=o.success,
                    element_count=o.element_count,
                    unexpected_count=o.unexpected_count,
                    unexpected_percent=o.unexpected_percent,
                    sample_keys=o.sample_keys,
                    details={**o.details, "description": o.check.description},
                    outcome=o.outcome,
                    quarantined=o.quarantined,
                ),
            )
        con.commit()
    except BaseException:
        con.rollback()
        raise
    for o in outcomes:
        log.info("%s %s", suite.name, o.summary())
    return SuiteRun(suite=suite, run_id=run_id, checked_at=checked_at, outcomes=outcomes)


def run_all(
    con: duckdb.DuckDBPyConnection,
    suites: list[Suite],
    *,
    run_id: str | None = None,
    settings: QualitySettings | None = None,
    registry: Mapping[str, Instrument] | None = None,
) -> list[SuiteRun]:
    """Run several suites under one run id (e.g. outside Dagster, for a report)."""
    run_id = run_id or f"adhoc-{uuid.uuid4().hex[:12]}"
    return [run_suite(con, s, run_id=run_id, settings=settings, registry=registry) for s in suites]
