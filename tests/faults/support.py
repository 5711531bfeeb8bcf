"""Helpers of the fault suite: the raw pipeline as Dagster runs it, warehouse snapshots to compare, and
the journal of everything logged during a test.

The raw assets are built by the production factory (`assets.raw.build_raw_asset`) with the
production step retry count, only with a short delay between step attempts (production waits 10 s
and more, which would make every recovered fault cost half a minute of sleeping here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

import assets.raw as raw_module
from pipelines.landing import landing_path
from pipelines.resources.fhir.auth import fingerprint
from pipelines.resources.fhir_source import FhirSourcesResource, WarehouseResource
from pipelines.settings import RESOURCE_TYPES
from pipelines.warehouse import table_for
from tests.faults.proxy import FaultProxy

#: Source name used by every run of the suite (rows are keyed by it).
SOURCE = "faults"
#: Small pages so that even a small clinic spans many pages per type.
PAGE_SIZE = 40
#: Delay between Dagster step attempts in the suite (production: RAW_RETRY, 10 s exponential).
STEP_RETRY_DELAY_S = 0.2


def fault_raw_assets() -> list[dg.AssetsDefinition]:
    """The raw assets from the production factory, with production's retry count and a short delay."""
    saved = raw_module.RAW_RETRY
    raw_module.RAW_RETRY = dg.RetryPolicy(max_retries=saved.max_retries, delay=STEP_RETRY_DELAY_S)
    try:
        return [raw_module.build_raw_asset(t) for t in RESOURCE_TYPES]
    finally:
        raw_module.RAW_RETRY = saved


_ASSETS: list[dg.AssetsDefinition] = []


def raw_assets() -> list[dg.AssetsDefinition]:
    """`fault_raw_assets()`, built once per process."""
    if not _ASSETS:
        _ASSETS.extend(fault_raw_assets())
    return _ASSETS


def source(base_url: str, **overrides: Any) -> FhirSourcesResource:
    """A REST source for the suite: small pages, short timeouts and a short total retry budget."""
    config: dict[str, Any] = {
        "name": SOURCE,
        "base_url": base_url,
        "page_size": PAGE_SIZE,
        "timeout_connect_s": 2.0,
        "timeout_read_s": 5.0,
        "retry_max_total_wait_s": 10.0,
    }
    config.update(overrides)
    return FhirSourcesResource.single(**config)


def run_raw(
    fhir: FhirSourcesResource,
    warehouse: Path,
    types: tuple[str, ...] = RESOURCE_TYPES,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize the raw assets of `types` (default: all) into `warehouse`; failures are returned,
    not raised. `instance`: a Dagster instance with storage on disk (default: an ephemeral one)."""
    keys = [dg.AssetKey(["raw", table_for(t)]) for t in types]
    return dg.materialize(
        raw_assets(),
        resources={"fhir": fhir, "warehouse": WarehouseResource(path=str(warehouse))},
        selection=keys,
        raise_on_error=False,
        instance=instance,
    )


def step_errors(result: dg.ExecuteInProcessResult) -> dict[str, list[str]]:
    """Per step: the messages of the errors that failed an attempt (retried ones first)."""
    errors: dict[str, list[str]] = {}
    for event in result.all_events:
        if event.event_type_value not in ("STEP_UP_FOR_RETRY", "STEP_FAILURE"):
            continue
        error = getattr(event.event_specific_data, "error", None)
        cause = error.cause if error is not None and error.cause is not None else error
        if cause is not None and event.step_key:
            errors.setdefault(event.step_key, []).append(cause.message.strip())
    return errors


def event_text(result: dg.ExecuteInProcessResult) -> str:
    """Every message and error text in a run's event log (for the secret check)."""
    parts: list[str] = []
    for event in result.all_events:
        parts.append(event.message or "")
        error = getattr(event.event_specific_data, "error", None)
        while error is not None:
            parts.append(error.to_string())
            error = error.cause
    return "\n".join(parts)


@dataclass
class Snapshot:
    """What a warehouse holds, in the terms the suite compares: no run ids, no timestamps."""

    rows: dict[str, set[tuple[str, str, str]]]  # type -> {(id, version_id, content_sha256)}
    rejected: set[tuple[str | None, str | None, str]]
    duplicate_rows: dict[str, int]  # type -> rows beyond one per (source, id, version_id)
    unreconciled: list[tuple[Any, ...]]  # fetch_log rows where fetched != landed + rejected + duplicates
    watermarks: set[str]  # types that have a watermark
    fetch_log: list[tuple[Any, ...]] = field(default_factory=list)

    def versions(self, resource_type: str) -> set[tuple[str, str]]:
        """(id, version_id) pairs of one type."""
        return {(i, v) for i, v, _ in self.rows[resource_type]}

    def assert_sound(self) -> None:
        """No duplicate rows and every pull reconciles."""
        assert not any(self.duplicate_rows.values()), self.duplicate_rows
        assert not self.unreconciled, self.unreconciled

    def assert_equals(self, clean: Snapshot, types: tuple[str, ...] = RESOURCE_TYPES) -> None:
        """Same rows and rejections as `clean` in the raw tables of `types` (default: all), a
        watermark for each of them, no duplicate rows, and every pull reconciled."""
        self.assert_sound()
        for resource_type in types:
            missing = clean.rows[resource_type] - self.rows[resource_type]
            extra = self.rows[resource_type] - clean.rows[resource_type]
            assert not missing and not extra, (resource_type, sorted(missing)[:5], sorted(extra)[:5])
        assert {r for r in self.rejected if r[0] in types} == {r for r in clean.rejected if r[0] in types}
        assert self.watermarks == set(types) & clean.watermarks


def landing_file(warehouse: Path, resource_type: str) -> Path:
    """The suite source's landing file for one type, beside `warehouse` (pipelines/landing.py).

    Pulls land there first and are merged into the warehouse only when the pull has finished, so
    the state a killed pull leaves behind is in this file."""
    return landing_path(warehouse.parent / f"{warehouse.stem}.landing", SOURCE, resource_type)


def snapshot(path: Path) -> Snapshot:
    """Read a warehouse file (read-only) into a `Snapshot`."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows: dict[str, set[tuple[str, str, str]]] = {}
        duplicates: dict[str, int] = {}
        for resource_type in RESOURCE_TYPES:
            table = f"raw.{table_for(resource_type)}"
            rows[resource_type] = {
                (r[0], r[1], r[2])
                for r in con.execute(f"SELECT id, version_id, content_sha256 FROM {table}").fetchall()
            }
            duplicates[resource_type] = con.execute(
                f"SELECT count(*) - count(DISTINCT (source, id, version_id)) FROM {table}"
            ).fetchall()[0][0]
        rejected = {
            (r[0], r[1], r[2])
            for r in con.execute("SELECT resource_type, id, version_id FROM raw.rejected").fetchall()
        }
        fetch_log = con.execute(
            """SELECT run_id, resource_type, fetched, landed, new_versions, unchanged, rejected, duplicates,
                      pages
               FROM raw.fetch_log ORDER BY finished_at"""
        ).fetchall()
        unreconciled = [r for r in fetch_log if r[2] != r[3] + r[6] + r[7]]
        watermarks = {r[0] for r in con.execute("SELECT resource_type FROM raw.watermarks").fetchall()}
    finally:
        con.close()
    return Snapshot(rows, rejected, duplicates, unreconciled, watermarks, fetch_log)


def page_query(number: int, size: int = PAGE_SIZE) -> dict[str, str]:
    """The query values that identify search page `number` (2 or more) on sekmet-fhir's offset paging."""
    if number < 2:
        raise ValueError("page 1 has no _offset; match it with skip/times instead")
    return {"_offset": str((number - 1) * size)}


@dataclass
class LogJournal:
    """Everything logged while a test ran: log records (every logger, DEBUG and up), the test
    process's stdout/stderr, Dagster event logs and subprocess output; and every secret (bearer
    token, client assertion) that went over the wire in the test."""

    caplog: pytest.LogCaptureFixture
    capfd: pytest.CaptureFixture[str]
    proxies: list[FaultProxy] = field(default_factory=list)
    extra_secrets: set[str] = field(default_factory=set)
    captured: list[str] = field(default_factory=list)

    def add_text(self, text: str) -> None:
        """Add text captured elsewhere (a Dagster event log, a subprocess's output)."""
        self.captured.append(text)

    def text(self) -> str:
        """All captured log text so far."""
        out, err = self.capfd.readouterr()
        self.captured.extend([out, err])
        return self.caplog.text + "\n".join(self.captured)

    def secrets(self) -> set[str]:
        """Every credential seen on the wire (through a proxy) or registered by the test."""
        found = set(self.extra_secrets)
        for proxy in self.proxies:
            found |= proxy.secrets
        return {s for s in found if len(s) >= 8}

    def leaks(self) -> list[str]:
        """Secrets that appear in the captured text (shown by fingerprint only)."""
        text = self.text()
        return [fingerprint(s) for s in self.secrets() if s in text]
