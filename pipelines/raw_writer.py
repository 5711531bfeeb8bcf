"""Land fetched FHIR resources in the raw layer: validate, keep every version, lose nothing.

Every resource received ends in exactly one of: the raw table for its type (a new version, or one
already landed by an earlier run), `raw.rejected` (with its reason and the text as received), or
the duplicate count (the same id and version received twice in one pull). Every validation finding
is recorded in `raw.findings`, including those that did not cause a rejection.

A resource nested too deeply to be stored (orjson, and the warehouse's JSON, stop at 255 levels:
a hostile or broken server can send a QuestionnaireResponse with hundreds of nested items) is
rejected with that reason and its text, so one resource never blocks its whole type.

Deletions (a Bulk export's `deleted` file) land as tombstones: a version row with `deleted = true`,
versioned after everything the export saw (`last_updated` = the deletion time or the export's
transactionTime). The current-version SQL of the later layers skips a resource whose newest
version is a tombstone.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pandas as pd

from pipelines.landing_items import (
    LandingItem,
    collector_paused,
    content_hash,
    prepare_item,
    version_key,
)
from pipelines.sqlfiles import query_sql, run_sql
from pipelines.warehouse import table_for
from quality_checks.structural import StructuralValidator

__all__ = [
    "LandingCounts",
    "LandingItem",
    "RawLander",
    "collector_paused",
    "content_hash",
    "prepare_item",
    "version_key",
]

log = logging.getLogger("alliance_qi.landing")


@dataclass
class LandingCounts:
    """Counts for one pull of one resource type; fetched = landed + rejected + duplicates."""

    fetched: int = 0
    new_versions: int = 0
    unchanged: int = 0
    rejected: int = 0
    duplicates: int = 0
    findings: int = 0

    @property
    def landed(self) -> int:
        return self.new_versions + self.unchanged

    def reconciles(self) -> bool:
        return self.fetched == self.landed + self.rejected + self.duplicates

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "landed": self.landed}


SQL_DIR = Path(__file__).resolve().parent / "sql" / "raw"


@dataclass
class RawLander:
    """Buffer resources of one type and write them in batches. Call `close()` at the end."""

    con: duckdb.DuckDBPyConnection
    source: str
    resource_type: str
    run_id: str
    validator: StructuralValidator
    batch_size: int = 10_000
    counts: LandingCounts = field(default_factory=LandingCounts)
    max_last_updated: str | None = None
    _buffer: list[LandingItem] = field(default_factory=list)
    # Versions this pull queued. The unflushed batch by exact key; earlier batches as a sorted array
    # of 64-bit hashes of (id, version): 8 bytes a version, where a set of key tuples held ~200 bytes
    # and grew the landing's memory with the data (1.16 GB at 3M responses against 0.92 GB at 1M). A
    # hash found there is confirmed on the exact key in the tables the earlier copy went to before it
    # counts as a duplicate, so a hash collision can never drop a version.
    _flushed: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    _buffer_keys: set[tuple[str | None, str]] = field(default_factory=set)
    _started: float = field(default_factory=time.monotonic)
    # True when the target held nothing of this source and type when the pull began: then the only
    # versions it can already hold are this pull's own, which `_flushed` de-duplicates, so the per-batch
    # look-ups against the (growing) table are skipped. A first load of a million resources would
    # otherwise scan the table once per batch.
    _fresh: bool | None = None

    @property
    def table(self) -> str:
        return f"raw.{table_for(self.resource_type)}"

    def add(
        self,
        resource: dict[str, Any] | None,
        origin: str | None = None,
        parse_error: str | None = None,
        text: str | None = None,
        *,
        text_as_received: Callable[[], str] | None = None,
    ) -> None:
        """Queue one received resource (or an unparseable line, with `parse_error` and `text`).

        `text_as_received` gives the resource's text as the source sent it (a file line), read
        only when the resource must be rejected without its own serialisation (too deeply nested).
        """
        self.counts.fetched += 1
        self._queue(prepare_item(resource, origin, parse_error, text, text_as_received))

    def add_prepared(self, item: LandingItem) -> None:
        """Queue an item prepared elsewhere (`prepare_item`, in a worker process)."""
        self.counts.fetched += 1
        self._queue(item)

    def add_deleted(self, resource_id: str, deleted_at: str, origin: str | None = None) -> None:
        """Queue a tombstone: the source reports `resource_id` deleted at `deleted_at` (an instant).

        Its version is `deleted:<instant>`, so the same deletion reported twice lands once.
        """
        self.counts.fetched += 1
        tombstone = {"resourceType": self.resource_type, "id": resource_id}
        text = orjson.dumps(tombstone).decode()
        item = LandingItem(tombstone, text, origin, None, id=resource_id, version_id=f"deleted:{deleted_at}")
        item.rtype = self.resource_type
        item.sha = content_hash(tombstone)
        item.last_updated = deleted_at
        item.deleted = True
        self._queue(item)

    def _queue(self, item: LandingItem) -> None:
        key = (item.id, item.version_id)
        if key in self._buffer_keys:  # twice in this batch; repeats of earlier batches: flush()
            self.counts.duplicates += 1
            return
        self._buffer_keys.add(key)
        self._buffer.append(item)
        if len(self._buffer) >= self.batch_size:
            self.flush()

    def _drop_repeats_of_earlier_batches(self, batch: list[LandingItem]) -> list[LandingItem]:
        """`batch` without the versions an earlier batch of this pull queued (counted as duplicates);
        then remembers the batch's versions."""
        hashes = np.fromiter((hash((it.id, it.version_id)) for it in batch), dtype=np.int64, count=len(batch))
        if len(self._flushed):
            at = np.minimum(np.searchsorted(self._flushed, hashes), len(self._flushed) - 1)
            maybe = np.flatnonzero(self._flushed[at] == hashes)
            if len(maybe):
                # Earlier batches went to the resource table or raw.rejected (or were found there).
                keys = pd.DataFrame(
                    {"id": [batch[i].id for i in maybe], "version_id": [batch[i].version_id for i in maybe]}
                )
                held = self._lookup_versions(keys)
                repeats = {int(i) for i in maybe if (batch[i].id, batch[i].version_id) in held}
                if repeats:
                    self.counts.duplicates += len(repeats)
                    batch = [it for i, it in enumerate(batch) if i not in repeats]
                    hashes = np.delete(hashes, sorted(repeats))
        hashes.sort()
        self._flushed = np.insert(self._flushed, np.searchsorted(self._flushed, hashes), hashes)
        return batch

    def flush(self) -> None:
        """Validate the buffered versions not yet in the warehouse and write them."""
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        self._buffer_keys = set()
        batch = self._drop_repeats_of_earlier_batches(batch)
        known = self._known_versions(batch)
        now = datetime.now(UTC)
        accepted: list[LandingItem] = []
        rejected: list[dict[str, Any]] = []
        findings: list[dict[str, Any]] = []
        for it in batch:
            where = known.get((it.id, it.version_id))
            if where == "raw":
                self.counts.unchanged += 1
                continue
            if where == "rejected":  # rejected by an earlier run: still accounted as rejected
                self.counts.rejected += 1
                continue
            if not it.parsed:
                # A parsed resource that cannot be stored says so itself ("cannot be stored: ...").
                reason = it.parse_error if it.unstorable else f"unparseable: {it.parse_error}"
                outcome_findings: list[Any] = []
                is_rejected = True
            elif it.deleted:  # a tombstone has no content to validate
                reason, outcome_findings, is_rejected = "", [], False
            else:
                # Each version is validated once: versions already landed were skipped above. A
                # worker validated it already when the target was fresh (nothing to skip).
                outcome = it.outcome
                if outcome is None:
                    resource = it.resource if it.resource is not None else orjson.loads(it.text)
                    outcome = self.validator.validate(resource, expected_type=self.resource_type)
                is_rejected, reason = outcome.rejected, outcome.reason or ""
                outcome_findings = outcome.findings
            rtype = it.rtype if it.parsed else it.type_hint
            for f in outcome_findings:
                findings.append(
                    {
                        "source": self.source,
                        "resource_type": rtype or self.resource_type,
                        "id": it.id,
                        "version_id": it.version_id,
                        "path": f.path,
                        "message": f.message,
                        "error_type": f.error_type,
                        "blocking": f.blocking,
                        "run_id": self.run_id,
                        "found_at": now,
                    }
                )
            if is_rejected:
                rejected.append(
                    {
                        "source": self.source,
                        "resource_type": rtype if isinstance(rtype, str) else None,
                        "id": it.id,
                        "version_id": it.version_id,
                        "reason": reason,
                        "findings": orjson.dumps([asdict(f) for f in outcome_findings]).decode(),
                        "resource_text": it.text,
                        "origin": it.origin,
                        "run_id": self.run_id,
                        "rejected_at": now,
                    }
                )
                continue
            if it.last_updated and (self.max_last_updated is None or it.last_updated > self.max_last_updated):
                self.max_last_updated = it.last_updated
            accepted.append(it)
        self._write(accepted, now, rejected, findings)
        if not gc.isenabled():
            gc.collect(0)  # collector_paused: free this batch's reference cycles (if any) now
        self.counts.new_versions += len(accepted)
        self.counts.rejected += len(rejected)
        self.counts.findings += len(findings)

    def close(self) -> LandingCounts:
        """Flush what is buffered and return the counts."""
        self.flush()
        return self.counts

    def is_fresh(self) -> bool:
        """Whether the target held nothing of this source and type when the pull began."""
        if self._fresh is None:
            held = query_sql(
                self.con,
                SQL_DIR / "landing_holds_source.sql",
                params={"source": self.source, "resource_type": self.resource_type},
                identifiers={"table": self.table},
            )[0][0]
            self._fresh = not held
        return self._fresh

    def _known_versions(self, batch: list[LandingItem]) -> dict[tuple[str | None, str], str]:
        """Versions of this batch already in the warehouse: key -> 'raw' or 'rejected'."""
        if self.is_fresh():
            return {}
        return self._lookup_versions(
            pd.DataFrame({"id": [i.id for i in batch], "version_id": [i.version_id for i in batch]})
        )

    def _lookup_versions(self, keys: pd.DataFrame) -> dict[tuple[str | None, str], str]:
        """Which of `keys` (id, version_id) the warehouse holds: key -> 'raw' or 'rejected'."""
        self.con.register("landing_keys", keys)
        try:
            rows = query_sql(
                self.con,
                SQL_DIR / "known_versions.sql",
                params={"source": self.source},
                identifiers={"table": self.table},
            )
        finally:
            self.con.unregister("landing_keys")
        return {(None if r[0] is None else str(r[0]), str(r[1])): str(r[2]) for r in rows}

    def _write(
        self,
        accepted: list[LandingItem],
        now: datetime,
        rejected: list[dict[str, Any]],
        findings: list[dict[str, Any]],
    ) -> None:
        self.con.execute("BEGIN TRANSACTION")
        try:
            if accepted:
                # Built column by column: a frame from a list of row dicts costs several times more.
                batch = pd.DataFrame(
                    {
                        "source": self.source,
                        "resource_type": self.resource_type,
                        "id": [it.id for it in accepted],
                        "version_id": [it.version_id for it in accepted],
                        "version_from_server": [it.from_server for it in accepted],
                        "last_updated": [it.last_updated for it in accepted],
                        "content_sha256": [it.sha for it in accepted],
                        "resource": [it.text for it in accepted],
                        "origin": [it.origin for it in accepted],
                        "run_id": self.run_id,
                        "fetched_at": now,
                        "deleted": [it.deleted for it in accepted],
                    }
                )
                self.con.register("landing_ok", batch)
                # Idempotent: a version (source, id, version_id) already present is never inserted
                # again, so re-running the same pull changes nothing (tests/integration prove it).
                # On a fresh target the only possible repeats are this pull's own, which `_flushed`
                # already removed, so the anti-join against the growing table is left out.
                insert = "insert_resources_fresh.sql" if self.is_fresh() else "insert_resources.sql"
                run_sql(self.con, SQL_DIR / insert, identifiers={"table": self.table})
                self.con.unregister("landing_ok")
            if rejected:
                self.con.register("_landing_rej", pd.DataFrame(rejected))
                # Idempotent in the same way: one row per rejected (source, id, version).
                self.con.execute(
                    """INSERT INTO raw.rejected
                       SELECT source, resource_type, id, version_id, reason, findings::JSON, resource_text,
                              origin, run_id, rejected_at
                       FROM _landing_rej b
                       WHERE NOT EXISTS (SELECT 1 FROM raw.rejected r WHERE r.source = b.source
                                         AND r.id IS NOT DISTINCT FROM b.id
                                         AND r.version_id = b.version_id)"""
                )
                self.con.unregister("_landing_rej")
            if findings:
                self.con.register("_landing_find", pd.DataFrame(findings))
                self.con.execute(
                    """INSERT INTO raw.findings
                       SELECT source, resource_type, id, version_id, path, message, error_type, blocking,
                              run_id, found_at
                       FROM _landing_find b
                       WHERE NOT EXISTS (SELECT 1 FROM raw.findings f WHERE f.source = b.source
                                         AND f.id IS NOT DISTINCT FROM b.id AND f.version_id = b.version_id
                                         AND f.path = b.path AND f.message = b.message)"""
                )
                self.con.unregister("_landing_find")
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise
