"""Pull one resource type from a source into the raw layer (REST search, Bulk $export or folder).

Called by the raw assets; free of Dagster so it can be tested and benchmarked on its own.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson

from pipelines.ndjson_landing import land_ndjson
from pipelines.raw_writer import LandingCounts, RawLander, collector_paused
from pipelines.resources.fhir import (
    AuthError,
    BulkExporter,
    FatalNetworkError,
    FhirClient,
    FhirError,
    TemporaryNetworkError,
    format_instant,
    parse_instant,
    redact_url,
)
from pipelines.resources.fhir.bulk import deleted_references, error_outcomes
from pipelines.resources.fhir.errors import UntrustedOriginError
from pipelines.resources.fhir.folder import folder_files, iter_json_file, typed_file_of
from pipelines.settings import (
    PATIENT_COMPARTMENT_TYPES,
    RESOURCE_TYPES,
    BulkLevel,
    IncrementalMode,
    SearchScope,
    SourceKind,
)
from pipelines.sqlfiles import query_sql, run_sql
from pipelines.warehouse import table_for
from quality_checks.structural import StructuralValidator

SQL_DIR = Path(__file__).resolve().parent / "sql" / "raw"

log = logging.getLogger("alliance_qi.extract")


@dataclass
class ExtractResult:
    """What one pull did; becomes asset metadata and a `raw.fetch_log` row."""

    source: str
    resource_type: str
    source_kind: str
    pull_mode: str
    since: datetime | None
    counts: LandingCounts
    pages: int = 0
    seconds: float = 0.0
    watermark_after: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        rate = self.counts.fetched / self.seconds if self.seconds > 0 else 0.0
        return {
            "source": self.source,
            "source_kind": self.source_kind,
            "pull_mode": self.pull_mode,
            "since": self.since.isoformat() if self.since else "full",
            **self.counts.as_dict(),
            "pages": self.pages,
            "seconds": round(self.seconds, 2),
            "rate_per_s": round(rate, 1),
            "watermark_after": self.watermark_after.isoformat() if self.watermark_after else "",
            "reconciles": self.counts.reconciles(),
            **self.extra,
        }


# --- watermarks and Bulk state, stored in the warehouse --------------------------------------------


def read_watermark(con: duckdb.DuckDBPyConnection, source: str, resource_type: str) -> datetime | None:
    rows = con.execute(
        "SELECT watermark FROM raw.watermarks WHERE source = ? AND resource_type = ?", [source, resource_type]
    ).fetchall()
    if not rows:
        return None
    wm = rows[0][0]
    return wm.astimezone(UTC) if wm.tzinfo else wm.replace(tzinfo=UTC)


def write_watermark(
    con: duckdb.DuckDBPyConnection, source: str, resource_type: str, watermark: datetime, run_id: str
) -> None:
    """Store the watermark; it only moves forward (an older value never replaces a newer one)."""
    con.execute(
        """INSERT INTO raw.watermarks VALUES (?, ?, ?, ?, now())
           ON CONFLICT (source, resource_type) DO UPDATE SET
             watermark = greatest(raw.watermarks.watermark, excluded.watermark),
             run_id = excluded.run_id, updated_at = excluded.updated_at""",
        [source, resource_type, watermark, run_id],
    )


class DuckDBBulkStateStore:
    """Bulk export state (the status URL) kept in `raw.bulk_jobs` so a killed run resumes."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def load(self, key: str) -> dict[str, Any] | None:
        rows = self.con.execute("SELECT state FROM raw.bulk_jobs WHERE key = ?", [key]).fetchall()
        return orjson.loads(rows[0][0]) if rows else None

    def save(self, key: str, state: dict[str, Any]) -> None:
        self.con.execute(
            """INSERT INTO raw.bulk_jobs VALUES (?, ?::JSON, now())
               ON CONFLICT (key) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at""",
            [key, orjson.dumps(state).decode()],
        )

    def clear(self, key: str) -> None:
        self.con.execute("DELETE FROM raw.bulk_jobs WHERE key = ?", [key])


def _log_fetch(con: duckdb.DuckDBPyConnection, run_id: str, r: ExtractResult, started: datetime) -> None:
    c = r.counts
    con.execute(
        "INSERT INTO raw.fetch_log VALUES (?, ?, ?, ?, ?, ?, ?, now(), ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            run_id,
            r.source,
            r.resource_type,
            r.source_kind,
            r.pull_mode,
            r.since,
            started,
            c.fetched,
            c.landed,
            c.new_versions,
            c.unchanged,
            c.rejected,
            c.duplicates,
            r.pages,
            r.watermark_after,
        ],
    )


# --- the pull ---------------------------------------------------------------------------------------


@dataclass
class SourceSpec:
    """The parts of a source's configuration a pull needs (kept Dagster-free)."""

    name: str
    kind: SourceKind = "rest"
    folder: str = ""
    incremental: IncrementalMode = "auto"
    overlap_minutes: float = 5.0
    landing_dir: str = "data/landing"
    keep_bulk_files: bool = False  # keep downloaded Bulk NDJSON after landing (default: removed)
    bulk_poll_interval_s: float = 2.0  # the floor between two polls of a Bulk export's status
    bulk_level: BulkLevel = "system"
    bulk_group_id: str = ""
    search_scope: SearchScope = "system"
    patient_group: str = ""  # the Group whose members a patient-scoped pull asks for ("": Patient search)
    patient_concurrency: int = 4
    # New clients for the per-patient worker threads (a client is not thread-safe); None: one thread
    # on the pull's own client.
    client_factory: Callable[[], FhirClient] | None = None


def extract_resource_type(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    client: FhirClient | None,
    resource_type: str,
    run_id: str,
    validator: StructuralValidator,
) -> ExtractResult:
    """Pull `resource_type` from the source into `raw.<type>`; update the watermark; log the fetch."""
    with collector_paused():
        return _extract_resource_type(con, spec, client, resource_type, run_id, validator)


def _extract_resource_type(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    client: FhirClient | None,
    resource_type: str,
    run_id: str,
    validator: StructuralValidator,
) -> ExtractResult:
    started = datetime.now(UTC)
    t0 = time.monotonic()
    since = read_watermark(con, spec.name, resource_type)
    lander = RawLander(con, spec.name, resource_type, run_id, validator)
    result = ExtractResult(spec.name, resource_type, spec.kind, spec.incremental, since, lander.counts)
    new_watermark: datetime | None = None
    hold_watermark = False
    compartment = resource_type in PATIENT_COMPARTMENT_TYPES
    if spec.kind == "folder":
        _pull_folder(
            lander, Path(spec.folder), resource_type, spec, run_id, incremental=spec.incremental != "full"
        )
        result.pull_mode = "folder"
    elif spec.kind == "bulk" and (spec.bulk_level == "system" or compartment):
        # A Group or Patient export carries the patient compartment only: the other types take the
        # REST branch below (system searches), as EHRs with Group-level Bulk allow for them.
        if client is None:
            raise ValueError("bulk sources need a FHIR client")
        bulk = _pull_bulk(con, lander, client, spec, resource_type, since, run_id)
        result.pull_mode = "bulk_export"
        result.extra.update(
            bulk_errors=bulk.errors,
            bulk_deleted=bulk.deleted,
            bulk_files_removed=bulk.files_removed,
            bulk_level=spec.bulk_level,
            group_joined=bulk.joined,
        )
        # Resources the server failed to export are not in this export: moving the watermark to
        # its transactionTime would skip them for good. The next export starts from the old one.
        hold_watermark = bulk.errors > 0
        new_watermark = None if hold_watermark else bulk.transaction_time
    elif spec.search_scope == "patient" and compartment:
        if client is None:
            raise ValueError("rest sources need a FHIR client")
        per_patient = _pull_per_patient(con, lander, client, spec, resource_type, since, run_id)
        result.pull_mode = f"patient_{per_patient.mode}"
        result.pages = per_patient.pages
        result.extra.update(
            patients=per_patient.patients,
            patients_resumed=per_patient.resumed,
            patients_new=per_patient.new_patients,
        )
        new_watermark = per_patient.watermark
    else:
        if client is None:
            raise ValueError("rest sources need a FHIR client")
        overlap = timedelta(minutes=spec.overlap_minutes)
        resources = client.pull(resource_type, since=since, overlap=overlap, mode=spec.incremental)
        page_url, origin = "", ""
        for res in resources:
            if resources.stats.last_url != page_url:
                # The page each resource really came from (a next link may point elsewhere), query
                # values removed: they can identify patients.
                page_url = resources.stats.last_url
                origin = redact_url(page_url)
            lander.add(res, origin=origin)
            for rejected in resources.take_rejects():
                lander.add(None, origin=rejected.origin, parse_error=rejected.reason, text=rejected.text)
        for rejected in resources.take_rejects():  # entries set aside on a page without good ones
            lander.add(None, origin=rejected.origin, parse_error=rejected.reason, text=rejected.text)
        # The stream carries this pull's own stats and the branch auto mode chose.
        result.pages = resources.stats.pages
        result.pull_mode = str(resources.mode)
        lander.counts.duplicates += resources.stats.duplicates
        lander.counts.fetched += resources.stats.duplicates
    lander.close()
    if new_watermark is None and lander.max_last_updated and not hold_watermark:
        new_watermark = parse_instant(lander.max_last_updated)
    # The watermark only moves after every page was landed: a failed pull re-reads from the old one.
    if new_watermark is not None:
        write_watermark(con, spec.name, resource_type, new_watermark, run_id)
    if spec.search_scope == "patient" and compartment and spec.kind != "folder":
        # Every patient is done and the watermark moved: the per-patient progress is spent.
        run_sql(
            con,
            SQL_DIR / "patient_progress_clear.sql",
            params={"source": spec.name, "resource_type": resource_type},
        )
    result.watermark_after = new_watermark or since
    result.seconds = time.monotonic() - t0
    _log_fetch(con, run_id, result, started)
    log.info(
        "%s/%s: fetched %d, new %d, unchanged %d, rejected %d, duplicates %d in %.1fs",
        spec.name,
        resource_type,
        lander.counts.fetched,
        lander.counts.new_versions,
        lander.counts.unchanged,
        lander.counts.rejected,
        lander.counts.duplicates,
        result.seconds,
    )
    return result


def _pull_folder(
    lander: RawLander, folder: Path, resource_type: str, spec: SourceSpec, run_id: str, *, incremental: bool
) -> None:
    """Land the folder's resources of one type. Incremental pulls skip files landed before with the
    same size and modification time (recorded in `raw.source_files` of the landing file)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"folder source {folder} does not exist")
    con = lander.con
    landed = {
        r[0]: (r[1], r[2])
        for r in con.execute(
            "SELECT path, size, mtime_ns FROM raw.source_files WHERE source = ? AND resource_type = ?",
            [spec.name, resource_type],
        ).fetchall()
    }
    read: dict[str, tuple[int, int]] = {}

    def skip(file: Path) -> bool:
        stat = file.stat()
        rel = file.relative_to(folder).as_posix()
        if incremental and landed.get(rel) == (stat.st_size, stat.st_mtime_ns):
            return True
        read[rel] = (stat.st_size, stat.st_mtime_ns)
        return False

    for file in folder_files(folder):
        if skip(file):
            continue
        rel = file.relative_to(folder).as_posix()
        # Unparseable lines are kept once, under the type whose file they came from.
        own_file = file.name.startswith(resource_type + ".")
        if file.suffix == ".ndjson":
            # Bulk-named files of other types are not parsed for this type (see iter_folder).
            declared = typed_file_of(file.name, RESOURCE_TYPES)
            if declared is None or declared == resource_type:
                land_ndjson(lander, file, rel, only_type=resource_type, keep_unparseable=own_file)
            continue
        for resource, origin, error in iter_json_file(file, rel):
            if resource is None:
                if own_file:
                    lander.add(None, origin=origin, parse_error=error, text=_line_text(folder, origin))
            elif resource.get("resourceType") == resource_type:
                lander.add(resource, origin=origin, text_as_received=_line_reader(folder, origin))
    lander.close()  # everything read is landed before the files are marked as done
    for rel, (size, mtime_ns) in read.items():
        con.execute(
            "INSERT OR REPLACE INTO raw.source_files VALUES (?, ?, ?, ?, ?, ?, now())",
            [spec.name, resource_type, rel, size, mtime_ns, run_id],
        )


def _line_reader(folder: Path, origin: str) -> Callable[[], str]:
    """Reads the text of `origin` only if called (a resource rejected for its shape needs it)."""
    if ":" not in origin:  # a Bundle entry (`file#entry[i]`): no line of its own
        return lambda: ""
    return lambda: _line_text(folder, origin)


def _line_text(folder: Path, origin: str) -> str:
    """The raw text of `file:line` (for rejected unparseable lines); `file` is relative to `folder`."""
    rel, _, line = origin.rpartition(":")
    path = folder / rel
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for n, text in enumerate(fh, start=1):
                if str(n) == line:
                    return text.rstrip("\n")
    except OSError:
        pass
    return ""


@dataclass
class BulkPull:
    """What one Bulk pull brought besides resources."""

    transaction_time: datetime
    errors: int = 0  # OperationOutcome lines in the manifest's error files
    deleted: int = 0  # tombstones landed from its deleted files
    files_removed: int = 0
    joined: int = 0  # Group members new since the last export (their type was exported in full)


def _pull_bulk(
    con: duckdb.DuckDBPyConnection,
    lander: RawLander,
    client: FhirClient,
    spec: SourceSpec,
    resource_type: str,
    since: datetime | None,
    run_id: str,
) -> BulkPull:
    out_dir = Path(spec.landing_dir) / spec.name / run_id / table_for(resource_type)
    exporter = BulkExporter(client, DuckDBBulkStateStore(con), poll_interval=spec.bulk_poll_interval_s)
    members: list[str] = []
    joined = 0
    if spec.bulk_level == "group":
        # `_since` on a Group export returns what changed since then, so a patient who joined the
        # Group after the last export would bring only their newest resources, never their history.
        # When the membership gained anyone, this type is exported in full (landing is idempotent:
        # versions already held count as unchanged).
        members = group_members(client, spec.bulk_group_id)
        known = exported_members(con, spec.name, resource_type, spec.bulk_group_id)
        joined = len(set(members) - known)
        if since is not None and joined:
            log.info(
                "bulk %s: %d patient(s) joined Group %s since the last export; exporting in full",
                resource_type,
                joined,
                spec.bulk_group_id,
            )
            since = None
    result = exporter.export(
        f"{spec.name}:{resource_type}",
        [resource_type],
        since,
        out_dir,
        level=spec.bulk_level,
        group_id=spec.bulk_group_id or None,
    )
    pulled = BulkPull(result.transaction_time, joined=joined)
    for path in result.files.get(resource_type, []):
        # Origin: the file's URL (query values removed: pre-signed URLs carry signatures), as the
        # local copy is removed after landing.
        _land_ndjson(lander, path, redact_url(result.urls[path]) if path in result.urls else None)
    exported_at = format_instant(result.transaction_time, milliseconds=True)
    for path in result.deleted_files:
        for _, rtype, rid, when in deleted_references(path):
            if rtype == resource_type:
                lander.add_deleted(rid, when or exported_at, origin=f"bulk-deleted:{path.name}")
                pulled.deleted += 1
    for path in result.error_files:
        for line, outcome in error_outcomes(path):
            text = client.mask(outcome)  # an error text may echo our credentials
            _record_export_error(
                con, spec.name, resource_type, exported_at, f"{path.name}:{line}", text, run_id
            )
            pulled.errors += 1
    if pulled.errors:
        log.warning(
            "bulk export of %s reported %d error(s) (raw.findings, error_type bulk_export_error); "
            "the watermark stays where it was so the next export asks again",
            resource_type,
            pulled.errors,
        )
    lander.close()  # landed and committed before the downloads go
    if spec.bulk_level == "group":
        # Only after landing: a failed pull leaves the newcomers new, so the next one exports in full.
        record_exported_members(con, spec.name, resource_type, spec.bulk_group_id, members, run_id)
    if not spec.keep_bulk_files:
        pulled.files_removed = _remove_downloads(out_dir)
    return pulled


# --- Group membership (Group-level Bulk) and patient-scoped REST pulls ------------------------------


def _patient_id(reference: str) -> str | None:
    """`abc` from `Patient/abc` (relative, absolute or versioned); None for anything else."""
    head, sep, tail = reference.partition("Patient/")
    if not sep or (head and not head.endswith("/")):
        return None
    pid = tail.split("/", 1)[0]
    return pid or None


def group_members(client: FhirClient, group_id: str) -> list[str]:
    """The Patient ids of a Group's `member.entity` references (sorted, each once).

    Members of other types (a Group may list Practitioners) are left out; so are references that
    are not literal `Patient/{id}` ones.
    """
    if not group_id:
        raise ValueError("a Group id is needed (bulk.group_id / patient_group)")
    group = client.read(f"Group/{group_id}")
    if group is None:
        raise FatalNetworkError("GET", client.url(f"Group/{group_id}"), 404, reason="the Group was not found")
    ids: set[str] = set()
    for member in group.get("member") or []:
        entity = member.get("entity") if isinstance(member, dict) else None
        ref = entity.get("reference") if isinstance(entity, dict) else None
        pid = _patient_id(ref) if isinstance(ref, str) else None
        if pid:
            ids.add(pid)
    return sorted(ids)


def exported_members(
    con: duckdb.DuckDBPyConnection, source: str, resource_type: str, group_id: str
) -> set[str]:
    """Members whose history earlier Group exports of `resource_type` brought."""
    rows = query_sql(
        con,
        SQL_DIR / "group_members_exported.sql",
        params={"source": source, "resource_type": resource_type, "group_id": group_id},
    )
    return {str(r[0]) for r in rows}


def record_exported_members(
    con: duckdb.DuckDBPyConnection,
    source: str,
    resource_type: str,
    group_id: str,
    members: list[str],
    run_id: str,
) -> None:
    """Remember that an export of `resource_type` covered `members` (existing rows are kept)."""
    if not members:
        return
    run_sql(
        con,
        SQL_DIR / "group_members_record.sql",
        params={
            "source": source,
            "resource_type": resource_type,
            "group_id": group_id,
            "patient_ids": list(members),
            "run_id": run_id,
        },
    )


def patient_ids(client: FhirClient, spec: SourceSpec) -> list[str]:
    """The patients a patient-scoped pull asks for: `patient_group`'s members, else every Patient
    a Patient search returns (sorted, each once)."""
    if spec.patient_group:
        return group_members(client, spec.patient_group)
    return sorted({str(p["id"]) for p in client.search("Patient") if p.get("id")})


#: Patients landed between two commits of a patient-scoped pull's progress.
PROGRESS_BATCH = 25


@dataclass
class PatientPull:
    """What a patient-scoped pull did."""

    mode: str
    patients: int = 0
    resumed: int = 0  # patients an interrupted earlier pull had already landed
    new_patients: int = 0  # patients pulled in full as they were not pulled before
    pages: int = 0
    watermark: datetime | None = None


@dataclass
class _PatientResult:
    patient_id: str
    resources: list[tuple[dict[str, Any], str]]  # resource, origin (its page URL, values redacted)
    rejects: list[Any]
    pages: int
    duplicates: int
    mode: str


def _pull_per_patient(
    con: duckdb.DuckDBPyConnection,
    lander: RawLander,
    client: FhirClient,
    spec: SourceSpec,
    resource_type: str,
    since: datetime | None,
    run_id: str,
) -> PatientPull:
    """One search per patient (`Type?patient=Patient/{id}&_lastUpdated=ge{since - overlap}`).

    Searches run on `patient_concurrency` threads, each with its own client from
    `spec.client_factory` (the source's rate limiter is shared by them); resources are landed here,
    on the pull's connection, and the landed patients are recorded in `raw.patient_pull_progress`
    (every `PROGRESS_BATCH` patients, after their resources are flushed, and on failure) so a killed
    pull resumes with the patients it had not reached. The watermark (returned, stored by the
    caller) moves only when every patient is done.
    """
    patients = patient_ids(client, spec)
    key = {
        "source": spec.name,
        "resource_type": resource_type,
        "since": format_instant(since) if since else "full",
    }
    run_sql(con, SQL_DIR / "patient_progress_drop_stale.sql", params=key)
    # The server's time now, before any patient is searched (the Group read or Patient search just
    # answered). Every change older than it is seen by the search of its patient, whichever comes
    # later; a change made during the pull to a patient already searched is newer than it. So it,
    # not the newest resource landed, is the watermark: a pull taking longer than the overlap would
    # otherwise skip such a change for good.
    started = client.server_date
    done_rows = query_sql(con, SQL_DIR / "patient_progress_done.sql", params=key)
    done = {str(r[0]): r[1] for r in done_rows}
    # A resumed pull keeps the first attempt's start (its patients were searched after that); progress
    # recorded before pull_started existed has none, and the pull falls back to resource times.
    if not done_rows:
        begin = started
    elif any(r[2] is None for r in done_rows):
        begin = None
    else:
        begin = min(parse_instant(str(r[2])) for r in done_rows)
    pull_started = format_instant(begin, milliseconds=True) if begin else None
    todo = [p for p in patients if p not in done]
    out = PatientPull(mode=spec.incremental, patients=len(patients), resumed=len(patients) - len(todo))
    newest = [parse_instant(str(v)) for v in done.values() if v]
    if out.resumed:
        log.info(
            "%s/%s: resuming a patient-scoped pull: %d of %d patients already landed",
            spec.name,
            resource_type,
            out.resumed,
            len(patients),
        )
    param, prefix = ("_id", "") if resource_type == "Patient" else ("patient", "Patient/")
    overlap = timedelta(minutes=spec.overlap_minutes)
    # Chosen once, here (a probe carries a patient: such EHRs refuse a search without one), so the
    # workers' own clients do not probe again.
    mode = (
        client.resolve_mode(resource_type, spec.incremental, scope=[(param, prefix + todo[0])])
        if todo
        else "full"
    )
    out.mode = mode
    local = threading.local()
    factory = spec.client_factory

    # A patient this type was never pulled for (new in the Group) gets their whole history: the
    # watermark is the other patients' and would bring only their recent changes.
    cohort = spec.patient_group or "(Patient search)"
    known = exported_members(con, spec.name, resource_type, cohort)

    def fetch(pid: str) -> _PatientResult:
        worker: FhirClient = client
        if factory is not None:
            worker = getattr(local, "client", None) or factory()
            local.client = worker
        stream = worker.pull(
            resource_type,
            since=since if pid in known else None,
            overlap=overlap,
            mode=mode,
            params=[(param, prefix + pid)],
        )
        got: list[tuple[dict[str, Any], str]] = []
        rejects: list[Any] = []
        page_url, origin = "", ""
        for res in stream:
            if stream.stats.last_url != page_url:
                page_url = stream.stats.last_url
                origin = redact_url(page_url)
            got.append((res, origin))
            rejects.extend(stream.take_rejects())
        rejects.extend(stream.take_rejects())
        return _PatientResult(
            pid, got, rejects, stream.stats.pages, stream.stats.duplicates, str(stream.mode)
        )

    landed: list[tuple[str, str | None]] = []  # patients landed, not yet marked done

    def mark_done() -> None:
        # Resources first, then the patients that brought them: a kill in between only re-asks them.
        lander.flush()
        if landed:
            run_sql(
                con,
                SQL_DIR / "patient_progress_mark.sql",
                params={
                    **key,
                    "patient_ids": [p for p, _ in landed],
                    "max_last_updated": [m for _, m in landed],
                    "run_id": run_id,
                    "pull_started": pull_started,
                },
            )
            landed.clear()

    def land(r: _PatientResult) -> None:
        for res, origin in r.resources:
            lander.add(res, origin=origin)
        for rejected in r.rejects:
            lander.add(None, origin=rejected.origin, parse_error=rejected.reason, text=rejected.text)
        lander.counts.duplicates += r.duplicates
        lander.counts.fetched += r.duplicates
        out.pages += r.pages
        stamps = [
            str(res["meta"]["lastUpdated"])
            for res, _ in r.resources
            if (res.get("meta") or {}).get("lastUpdated")
        ]
        mine = max((parse_instant(t) for t in stamps), default=None)
        if mine is not None:
            newest.append(mine)
        landed.append((r.patient_id, format_instant(mine, milliseconds=True) if mine else None))
        # Committed in batches (a commit per patient costs more than the search): a killed pull
        # re-asks at most this many patients.
        if len(landed) >= PROGRESS_BATCH:
            mark_done()

    workers = max(1, spec.patient_concurrency if factory is not None else 1)
    if workers == 1:
        try:
            for pid in todo:
                land(fetch(pid))
        finally:
            mark_done()
    else:
        # At most 2 x workers patients fetched ahead of the landing: memory stays bounded.
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="patient-pull") as pool:
            pending: deque[Future[_PatientResult]] = deque()
            queue = iter(todo)
            try:
                for pid in queue:
                    pending.append(pool.submit(fetch, pid))
                    if len(pending) >= 2 * workers:
                        land(pending.popleft().result())
                while pending:
                    land(pending.popleft().result())
            finally:
                for future in pending:
                    future.cancel()
                mark_done()  # what landed before a failure stays landed and marked
    mark_done()
    record_exported_members(con, spec.name, resource_type, cohort, patients, run_id)
    out.new_patients = len(set(patients) - known) if since is not None else 0
    if pull_started is not None:
        out.watermark = parse_instant(pull_started)
    else:
        # No server time (no `Date` header): the newest resource landed, as a system search does;
        # the source's overlap then has to cover the pull's duration.
        log.warning(
            "%s/%s: the server sent no Date header; the watermark is the newest resource landed",
            spec.name,
            resource_type,
        )
        out.watermark = max(newest) if newest else None
    return out


def _record_export_error(
    con: duckdb.DuckDBPyConnection,
    source: str,
    resource_type: str,
    exported_at: str,
    where: str,
    text: str,
    run_id: str,
) -> None:
    """One line of a Bulk error file as a finding (idempotent on source, export, file line, text)."""
    key = f"export:{exported_at}"
    con.execute(
        """INSERT INTO raw.findings
           SELECT ?, ?, NULL, ?, ?, ?, 'bulk_export_error', false, ?, now()
           WHERE NOT EXISTS (SELECT 1 FROM raw.findings WHERE source = ? AND id IS NULL
                             AND version_id = ? AND path = ? AND message = ?)""",
        [source, resource_type, key, where, text, run_id, source, key, where, text],
    )


def _remove_downloads(out_dir: Path) -> int:
    """Delete one pull's downloaded NDJSON (and its folder, and the run's folder when empty)."""
    if not out_dir.is_dir():
        return 0
    removed = sum(1 for p in out_dir.rglob("*") if p.is_file())
    shutil.rmtree(out_dir)
    try:
        out_dir.parent.rmdir()  # the run's folder, once no other type's downloads are in it
    except OSError:
        pass
    return removed


def _land_ndjson(lander: RawLander, path: Path, url: str | None = None) -> None:
    land_ndjson(lander, path, url or str(path), only_type=None, keep_unparseable=True)


# --- Questionnaires referenced by responses ---------------------------------------------------------


def _split_canonical(canonical: str) -> tuple[str, str | None]:
    url, _, version = canonical.partition("|")
    return url, (version or None)


def missing_canonicals(
    con: duckdb.DuckDBPyConnection, source: str, responses_table: str = "raw.questionnaire_response"
) -> list[str]:
    """Canonicals that responses of `source` reference but no landed Questionnaire matches.

    A canonical matches by `url` and `version` (`url|version`), by `url` alone (latest), or, for
    references like `Questionnaire/{id}` (forms without a url, e.g. NLM LHC-Forms), by id.
    `responses_table` is where the responses are (an attached landing file's table, in the assets).
    """
    if responses_table not in ("raw.questionnaire_response", "qrs.raw.questionnaire_response"):
        raise ValueError(f"unexpected responses table {responses_table!r}")
    refs = [
        str(r[0])
        for r in query_sql(
            con,
            SQL_DIR / "cited_canonicals.sql",
            params={"source": source},
            identifiers={"responses": responses_table},
        )
    ]
    forms = con.execute(
        """SELECT DISTINCT id, resource->>'url', resource->>'version' FROM raw.questionnaire
           WHERE source = ?""",
        [source],
    ).fetchall()
    ids = {f[0] for f in forms}
    urls = {f[1] for f in forms if f[1]}
    url_versions = {(f[1], f[2]) for f in forms if f[1]}
    missing = []
    for ref in refs:
        url, version = _split_canonical(ref)
        if (url, version) in url_versions or (version is None and url in urls):
            continue
        # A literal reference to the server's own form (`Questionnaire/{id}` or its absolute URL).
        if version is None and "Questionnaire/" in url and url.rsplit("Questionnaire/", 1)[-1] in ids:
            continue
        missing.append(ref)
    return sorted(missing)


def resolve_referenced_questionnaires(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    client: FhirClient | None,
    run_id: str,
    validator: StructuralValidator,
    responses_file: Path | None = None,
) -> dict[str, int]:
    """Fetch Questionnaires that responses reference but incremental pulls did not bring.

    A form can be older than the watermark (it was not updated recently) yet a new response points
    at it, so canonicals are resolved one by one. Each attempt is recorded in
    `raw.canonical_resolution`; unresolvable canonicals stay there for the scoring layer to report.
    `responses_file` is the source's QuestionnaireResponse landing file, when responses are not in
    `con` itself (attached read-only for the lookup).
    """
    if responses_file is not None:
        if not responses_file.exists():
            return {"referenced_missing": 0, "resolved": 0, "not_found": 0, "errors": 0}
        con.execute("ATTACH ? AS qrs (READ_ONLY)", [str(responses_file)])
        try:
            missing = missing_canonicals(con, spec.name, "qrs.raw.questionnaire_response")
        finally:
            con.execute("DETACH qrs")
    else:
        missing = missing_canonicals(con, spec.name)
    outcome = {"referenced_missing": len(missing), "resolved": 0, "not_found": 0, "errors": 0}
    if not missing or client is None:
        return outcome
    lander = RawLander(con, spec.name, "Questionnaire", run_id, validator)
    outage: TemporaryNetworkError | None = None
    for canonical in missing:
        status, found_id, detail = "not_found", None, None
        found: dict[str, Any] | None = None
        if outage is not None:
            # The server is down: trying each remaining canonical would spend a full retry budget
            # apiece. They stay missing, so the next run tries them again.
            status, detail = "error", client.mask(f"not tried after: {outage}")[:500]
        else:
            try:
                found = client.resolve_canonical("Questionnaire", canonical)
            except (AuthError, UntrustedOriginError):
                lander.close()
                raise  # fatal for the whole step (assets/raw.py): no retry can cure it
            except TemporaryNetworkError as exc:
                outage = exc
                status, detail = "error", client.mask(str(exc))[:500]
            except (FhirError, ValueError) as exc:  # this canonical only (a 404 search, a bad reference)
                status, detail = "error", client.mask(str(exc))[:500]
        if found is not None:
            lander.add(found, origin=f"resolve:{canonical}")
            status, found_id = "resolved", found.get("id")
        outcome[status if status != "error" else "errors"] += 1
        con.execute(
            "INSERT INTO raw.canonical_resolution VALUES (?, ?, ?, ?, ?, ?, now())",
            [spec.name, canonical, found_id, status, detail, run_id],
        )
    lander.close()
    return outcome
