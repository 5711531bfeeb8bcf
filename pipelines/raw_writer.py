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

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pandas as pd

from pipelines.sqlfiles import query_sql, run_sql
from pipelines.warehouse import table_for
from quality_checks.structural import StructuralValidator

log = logging.getLogger("alliance_qi.landing")


def content_hash(resource: dict[str, Any]) -> str:
    """SHA-256 of the resource without `meta`, keys sorted: equal content gives an equal hash."""
    body = {k: v for k, v in resource.items() if k != "meta"}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def version_key(resource: dict[str, Any], sha: str) -> tuple[str, bool]:
    """(version key, from server). Servers without meta.versionId get the content hash instead."""
    meta = resource.get("meta")
    vid = meta.get("versionId") if isinstance(meta, dict) else None
    if isinstance(vid, str | int) and str(vid):
        return str(vid), True
    return f"sha:{sha[:32]}", False


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


@dataclass
class _Item:
    resource: dict[str, Any] | None
    text: str
    origin: str | None
    parse_error: str | None
    id: str | None = None
    version_id: str = ""
    from_server: bool = False
    sha: str = ""
    last_updated: str | None = None
    deleted: bool = False
    type_hint: str | None = None  # the type of a resource rejected before it could be kept as one
    unstorable: bool = False  # parsed, but too deep to serialise (not an unparseable line)


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
    _buffer: list[_Item] = field(default_factory=list)
    _seen: set[tuple[str | None, str]] = field(default_factory=set)
    _started: float = field(default_factory=time.monotonic)
    # True when the target held nothing of this source and type when the pull began: then the only
    # versions it can already hold are this pull's own, which `_seen` de-duplicates, so the per-batch
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
        hint: tuple[Any, Any] = (None, None)
        unstorable = False
        if resource is not None:
            try:
                serialised = text or orjson.dumps(resource).decode()
                sha = content_hash(resource)
            except orjson.JSONEncodeError as exc:
                # Landing it would fail the whole batch (and every retry): reject this one instead.
                parse_error = _unstorable_reason(resource, exc)
                text = text_as_received() if text_as_received is not None else _stdlib_text(resource)
                hint = (resource.get("resourceType"), resource.get("id"))
                resource, unstorable = None, True
        if resource is None:
            raw_text = text or ""
            item = _Item(None, raw_text, origin, parse_error or "unparseable")
            item.type_hint = hint[0] if isinstance(hint[0], str) else None
            item.unstorable = unstorable
            item.id = hint[1] if isinstance(hint[1], str) else None
            item.sha = hashlib.sha256(raw_text.encode(errors="backslashreplace")).hexdigest()
            item.version_id = f"sha:{item.sha[:32]}"
        else:
            item = _Item(resource, serialised, origin, None)
            rid = resource.get("id")
            item.id = rid if isinstance(rid, str) else None
            item.sha = sha
            item.version_id, item.from_server = version_key(resource, item.sha)
            meta = resource.get("meta")
            lu = meta.get("lastUpdated") if isinstance(meta, dict) else None
            item.last_updated = lu if isinstance(lu, str) else None
        self._queue(item)

    def add_deleted(self, resource_id: str, deleted_at: str, origin: str | None = None) -> None:
        """Queue a tombstone: the source reports `resource_id` deleted at `deleted_at` (an instant).

        Its version is `deleted:<instant>`, so the same deletion reported twice lands once.
        """
        self.counts.fetched += 1
        tombstone = {"resourceType": self.resource_type, "id": resource_id}
        text = orjson.dumps(tombstone).decode()
        item = _Item(tombstone, text, origin, None, id=resource_id, version_id=f"deleted:{deleted_at}")
        item.sha = content_hash(tombstone)
        item.last_updated = deleted_at
        item.deleted = True
        self._queue(item)

    def _queue(self, item: _Item) -> None:
        key = (item.id, item.version_id)
        if key in self._seen:
            self.counts.duplicates += 1
            return
        self._seen.add(key)
        self._buffer.append(item)
        if len(self._buffer) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Validate the buffered versions not yet in the warehouse and write them."""
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        known = self._known_versions(batch)
        now = datetime.now(UTC)
        accepted: list[dict[str, Any]] = []
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
            if it.resource is None:
                # A parsed resource that cannot be stored says so itself ("cannot be stored: ...").
                reason = it.parse_error if it.unstorable else f"unparseable: {it.parse_error}"
                outcome_findings: list[Any] = []
                is_rejected = True
            elif it.deleted:  # a tombstone has no content to validate
                reason, outcome_findings, is_rejected = "", [], False
            else:
                # Each version is validated once: versions already landed were skipped above.
                outcome = self.validator.validate(it.resource, expected_type=self.resource_type)
                is_rejected, reason = outcome.rejected, outcome.reason or ""
                outcome_findings = outcome.findings
            rtype = it.resource.get("resourceType") if it.resource else it.type_hint
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
            accepted.append(
                {
                    "source": self.source,
                    "resource_type": self.resource_type,
                    "id": it.id,
                    "version_id": it.version_id,
                    "version_from_server": it.from_server,
                    "last_updated": it.last_updated,
                    "content_sha256": it.sha,
                    "resource": it.text,
                    "origin": it.origin,
                    "run_id": self.run_id,
                    "fetched_at": now,
                    "deleted": it.deleted,
                }
            )
        self._write(accepted, rejected, findings)
        self.counts.new_versions += len(accepted)
        self.counts.rejected += len(rejected)
        self.counts.findings += len(findings)

    def close(self) -> LandingCounts:
        """Flush what is buffered and return the counts."""
        self.flush()
        return self.counts

    def _is_fresh(self) -> bool:
        if self._fresh is None:
            held = query_sql(
                self.con,
                SQL_DIR / "landing_holds_source.sql",
                params={"source": self.source, "resource_type": self.resource_type},
                identifiers={"table": self.table},
            )[0][0]
            self._fresh = not held
        return self._fresh

    def _known_versions(self, batch: list[_Item]) -> dict[tuple[str | None, str], str]:
        """Versions of this batch already in the warehouse: key -> 'raw' or 'rejected'."""
        if self._is_fresh():
            return {}
        keys = pd.DataFrame({"id": [i.id for i in batch], "version_id": [i.version_id for i in batch]})
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
        self, accepted: list[dict[str, Any]], rejected: list[dict[str, Any]], findings: list[dict[str, Any]]
    ) -> None:
        self.con.execute("BEGIN TRANSACTION")
        try:
            if accepted:
                self.con.register("landing_ok", pd.DataFrame(accepted))
                # Idempotent: a version (source, id, version_id) already present is never inserted
                # again, so re-running the same pull changes nothing (tests/integration prove it).
                # On a fresh target the only possible repeats are this pull's own, which `_seen`
                # already removed, so the anti-join against the growing table is left out.
                insert = "insert_resources_fresh.sql" if self._is_fresh() else "insert_resources.sql"
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


def _json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (iterative: the value may be too deep to recurse into)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in node)
    return deepest


def _unstorable_reason(resource: dict[str, Any], exc: Exception) -> str:
    if "recursion" not in str(exc).lower():
        return f"cannot be stored: {exc}"
    depth = _json_depth(resource)
    return f"cannot be stored: JSON nested {depth} levels deep (orjson: {exc}; the limit is 255)"


def _stdlib_text(resource: dict[str, Any]) -> str:
    """The resource as JSON text by the standard library (no 255-level limit), for `raw.rejected`."""
    try:
        return json.dumps(resource, ensure_ascii=False, separators=(",", ":"))
    except (RecursionError, ValueError, TypeError) as exc:
        return f"<not serialisable: {type(exc).__name__}>"
