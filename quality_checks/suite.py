"""Declarative expectation suites: one YAML file per layer in `quality_checks/suites/`.

A suite names the Dagster asset its checks attach to, the *datasets* it validates (DuckDB SQL whose
result is handed to Great Expectations as a pandas DataFrame) and its *checks*. Each check has an id,
the table it is about, a severity (ERROR blocks downstream assets, WARN annotates), a description,
the key columns sampled into `quality.check_results` and written to `quality.quarantine`, and one or
more Great Expectations expectations (snake-case type plus keyword arguments).

Values written `$name` in expectation kwargs are filled at run time from `QualitySettings` or the
instrument registry (never typed twice); `for_each` expands one expectation over the registry's
instruments/scales or over a mart's count columns. The marts file is a template: one suite per mart.
This module only reads and validates the files: it imports neither Great Expectations nor Dagster.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipelines.sqlfiles import SqlTemplateError, read_sql, render

SUITES_DIR = Path(__file__).resolve().parent / "suites"
MART_ROWS_FILE = Path(__file__).resolve().parent / "sql" / "mart_rows.sql"
Severity = Literal["ERROR", "WARN"]
SEVERITIES: frozenset[str] = frozenset({"ERROR", "WARN"})
# Expansions the runner knows (see runner._expand).
FOR_EACH: frozenset[str] = frozenset(
    {"registry_scale", "registry_total", "registry_instrument", "count_column"}
)
_ID = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_TABLE = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")
_COLUMN_KWARGS = ("column", "column_A", "column_B")


class SuiteError(ValueError):
    """A suite file is invalid; the message names the file and the check."""


@dataclass(frozen=True)
class ExpectationSpec:
    """One Great Expectations expectation: `type` in snake case, kwargs possibly holding `$params`."""

    type: str
    kwargs: Mapping[str, Any]
    for_each: str | None = None

    @property
    def class_name(self) -> str:
        """The GX class: expect_column_values_to_be_between -> ExpectColumnValuesToBeBetween."""
        return "".join(part.capitalize() for part in self.type.split("_"))

    def columns(self) -> list[str]:
        """Columns the expectation reads (literal names only; `$column` is resolved later)."""
        out = [str(self.kwargs[k]) for k in _COLUMN_KWARGS if k in self.kwargs]
        out += [str(c) for c in self.kwargs.get("column_list", [])]
        return [c for c in out if not c.startswith("$")]


@dataclass(frozen=True)
class Check:
    """One quality check: what it is about, how bad a failure is, and what it expects."""

    id: str
    suite: str
    table: str
    dataset: str
    severity: Severity
    description: str
    key_columns: tuple[str, ...]
    expectations: tuple[ExpectationSpec, ...]
    quarantine: bool = False
    max_quarantine_percent: float | None = None

    @property
    def gx_types(self) -> str:
        """The GX expectation types this check runs, comma-separated, in order."""
        return ",".join(dict.fromkeys(e.type for e in self.expectations))


@dataclass(frozen=True)
class Dataset:
    """A DuckDB query validated as one DataFrame; `requires` lists the tables it reads.

    `sql` may name tables through `{{ placeholder }}`s; `identifiers` fills them (each a required
    table, from the suite file: a declaration, never data) when the runner renders the query.
    """

    name: str
    sql: str
    requires: tuple[str, ...]
    identifiers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Suite:
    """One expectation suite, attached to one Dagster asset."""

    name: str
    asset: tuple[str, ...]
    description: str
    datasets: Mapping[str, Dataset]
    checks: tuple[Check, ...]
    additional_deps: tuple[tuple[str, ...], ...] = ()
    # A required table that does not exist: `fail` (the asset should have built it) or `skip`
    # (recorded as skipped-not-present, never as a pass: marts being built by another issue).
    when_missing: Literal["fail", "skip"] = "fail"
    file: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


def _err(path: Path, where: str, msg: str) -> SuiteError:
    return SuiteError(f"{path.name}: {where}: {msg}")


def _expectations(path: Path, cid: str, raw: Any) -> tuple[ExpectationSpec, ...]:
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise _err(path, cid, "each expectation needs a `type`")
        etype = item["type"]
        if not etype.startswith("expect_"):
            raise _err(path, cid, f"{etype!r} is not a Great Expectations expectation type")
        for_each = item.get("for_each")
        if for_each is not None and for_each not in FOR_EACH:
            raise _err(path, cid, f"for_each {for_each!r} is not one of {sorted(FOR_EACH)}")
        kwargs = item.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise _err(path, cid, "kwargs must be a mapping")
        out.append(ExpectationSpec(type=etype, kwargs=kwargs, for_each=for_each))
    if not out:
        raise _err(path, cid, "no expectations")
    return tuple(out)


def _check(path: Path, suite: str, datasets: Mapping[str, Dataset], raw: dict[str, Any]) -> Check:
    cid = str(raw.get("id", ""))
    if not _ID.match(cid):
        raise _err(path, cid or "?", "check id must be snake_case (a Dagster check name)")
    severity = raw.get("severity")
    if severity not in SEVERITIES:
        raise _err(path, cid, f"severity must be ERROR or WARN, not {severity!r}")
    table = str(raw.get("table", ""))
    if not _TABLE.match(table):
        raise _err(path, cid, f"table {table!r} must be schema.table")
    dataset = str(raw.get("dataset", ""))
    if dataset not in datasets:
        raise _err(path, cid, f"unknown dataset {dataset!r}")
    keys = tuple(str(k) for k in raw.get("key_columns") or [])
    if not keys:
        raise _err(path, cid, "key_columns are required (what to sample and quarantine)")
    quarantine = bool(raw.get("quarantine", False))
    if quarantine and severity != "ERROR":
        raise _err(path, cid, "only ERROR checks quarantine (WARN annotates)")
    description = str(raw.get("description", "")).strip()
    if not description:
        raise _err(path, cid, "a description is required")
    limit = raw.get("max_quarantine_percent")
    return Check(
        id=cid,
        suite=suite,
        table=table,
        dataset=dataset,
        severity=severity,
        description=" ".join(description.split()),
        key_columns=keys,
        expectations=_expectations(path, cid, raw.get("expect")),
        quarantine=quarantine,
        max_quarantine_percent=float(limit) if limit is not None else None,
    )


def _datasets(path: Path, raw: Any) -> dict[str, Dataset]:
    if not isinstance(raw, dict) or not raw:
        raise _err(path, "datasets", "expected a mapping of name -> {sql, requires}")
    out = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("sql"), str):
            raise _err(path, f"dataset {name}", "needs `sql`")
        requires = tuple(str(t) for t in spec.get("requires") or [])
        for t in requires:
            if not _TABLE.match(t):
                raise _err(path, f"dataset {name}", f"requires {t!r}: expected schema.table")
        identifiers = {str(k): str(v) for k, v in (spec.get("identifiers") or {}).items()}
        undeclared = sorted(v for v in identifiers.values() if v not in requires)
        if undeclared:
            raise _err(path, f"dataset {name}", f"identifiers {undeclared} must be tables it requires")
        try:
            render(spec["sql"], identifiers)
        except SqlTemplateError as exc:
            raise _err(path, f"dataset {name}", str(exc)) from exc
        out[str(name)] = Dataset(name=str(name), sql=spec["sql"], requires=requires, identifiers=identifiers)
    return out


def _asset(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(value.split("/"))
    return tuple(str(v) for v in value)


def _suite_from(path: Path, data: dict[str, Any], extra: Mapping[str, Any] | None = None) -> Suite:
    name = str(data.get("suite", ""))
    if not _ID.match(name):
        raise _err(path, "suite", f"suite name {name!r} must be snake_case")
    datasets = _datasets(path, data.get("datasets"))
    checks = tuple(_check(path, name, datasets, c) for c in data.get("checks") or [])
    ids = [c.id for c in checks]
    if len(set(ids)) != len(ids):
        raise _err(path, "checks", "check ids must be unique within a suite")
    if not checks:
        raise _err(path, "checks", "a suite needs at least one check")
    when_missing = data.get("when_missing", "fail")
    if when_missing not in ("fail", "skip"):
        raise _err(path, "when_missing", "must be fail or skip")
    return Suite(
        name=name,
        asset=_asset(data["asset"]),
        description=" ".join(str(data.get("description", "")).split()),
        datasets=datasets,
        checks=checks,
        additional_deps=tuple(_asset(d) for d in data.get("additional_deps") or []),
        when_missing=when_missing,
        file=path.name,
        extra=dict(extra or {}),
    )


def _mart_suites(path: Path, data: dict[str, Any]) -> list[Suite]:
    """Expand the marts template: per mart, unique keys and (aggregates) small-cell suppression."""
    counts = data.get("count_columns") or {}
    pattern = str(counts.get("pattern", ""))
    try:
        re.compile(pattern)
    except re.error as exc:
        raise _err(path, "count_columns.pattern", str(exc)) from exc
    exclude = [str(c) for c in counts.get("exclude") or []]
    exclude_pattern = str(counts.get("exclude_pattern", "") or "")
    try:
        re.compile(exclude_pattern)
    except re.error as exc:
        raise _err(path, "count_columns.exclude_pattern", str(exc)) from exc
    suites = []
    for mart, spec in (data.get("marts") or {}).items():
        if not _ID.match(str(mart)):
            raise _err(path, f"mart {mart}", "mart names must be snake_case")
        keys = [str(k) for k in spec.get("key_columns") or []]
        if not keys:
            raise _err(path, f"mart {mart}", "key_columns are required")
        table = f"marts.{mart}"
        checks: list[dict[str, Any]] = [
            {
                "id": f"{mart}_unique_key",
                "table": table,
                "dataset": "mart",
                "severity": "ERROR",
                "description": f"One row per {spec.get('grain', ' x '.join(keys))}: the key "
                f"({', '.join(keys)}) is unique.",
                "key_columns": keys,
                "expect": (
                    {"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": keys}}
                    if len(keys) > 1
                    else {"type": "expect_column_values_to_be_unique", "kwargs": {"column": keys[0]}}
                ),
            },
        ]
        nullable = {str(k) for k in spec.get("nullable_keys") or []}
        required = [k for k in keys if k not in nullable]
        if required:
            checks.append(
                {
                    "id": f"{mart}_key_present",
                    "table": table,
                    "dataset": "mart",
                    "severity": "ERROR",
                    "description": f"Key columns ({', '.join(required)}) are never NULL.",
                    "key_columns": keys,
                    "expect": [
                        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": k}}
                        for k in required
                    ],
                }
            )
        if spec.get("aggregate"):
            checks.append(
                {
                    "id": f"{mart}_small_cells_suppressed",
                    "table": table,
                    "dataset": "mart",
                    "severity": "ERROR",
                    "description": "Published aggregate: every count column is NULL (suppressed), 0, or at "
                    "least the minimum cell size; counts 1 to min_cell-1 never appear.",
                    "key_columns": keys,
                    "expect": {
                        "type": "expect_column_values_to_not_be_in_set",
                        "for_each": "count_column",
                        "kwargs": {"column": "$column", "value_set": "$small_counts"},
                    },
                }
            )
        suites.append(
            _suite_from(
                path,
                {
                    "suite": f"mart_{mart}",
                    "asset": ["marts", mart],
                    "description": f"marts.{mart}: {spec.get('description', 'published mart')}",
                    "when_missing": "skip",
                    # The mart's table is an identifier declared by this file, rendered by the runner.
                    "datasets": {
                        "mart": {
                            "requires": [table],
                            "sql": read_sql(MART_ROWS_FILE),
                            "identifiers": {"mart": table},
                        }
                    },
                    "checks": checks,
                },
                extra={
                    "count_pattern": pattern,
                    "count_exclude_pattern": exclude_pattern,
                    "count_exclude": [*exclude, *(str(c) for c in spec.get("not_counts") or [])],
                    "count_include": [str(c) for c in spec.get("count_columns") or []],
                },
            )
        )
    return suites


def load_suites(directory: str | Path | None = None) -> list[Suite]:
    """Every suite in the folder (default `quality_checks/suites/`), in file order."""
    folder = Path(directory) if directory else SUITES_DIR
    suites: list[Suite] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise SuiteError(f"{path.name}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise SuiteError(f"{path.name}: expected a mapping")
        if data.get("template") == "marts":
            suites.extend(_mart_suites(path, data))
        else:
            suites.append(_suite_from(path, data))
    names = [s.name for s in suites]
    if len(set(names)) != len(names):
        raise SuiteError(f"duplicate suite names in {folder}: {names}")
    return suites


def suite_by_name(name: str, directory: str | Path | None = None) -> Suite:
    """One suite by name (raises KeyError naming the known suites)."""
    suites = {s.name: s for s in load_suites(directory)}
    if name not in suites:
        raise KeyError(f"no suite {name!r}; known: {sorted(suites)}")
    return suites[name]
