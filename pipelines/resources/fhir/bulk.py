"""FHIR Bulk Data `$export` (https://hl7.org/fhir/uv/bulkdata/export.html), resumable across runs.

Kick-off -> 202 + Content-Location (the status URL, persisted at once) -> poll (202 + Retry-After /
X-Progress while running, 200 + manifest when done) -> stream every output/error file to disk ->
DELETE the status URL -> clear the persisted state.

Why the status URL is persisted: an export of a large EHR takes hours, and several EHRs allow one
export per client at a time. If our run dies while the server is still working, the next run
resumes polling the same job instead of kicking off a second one (which would be refused, or
would double the server's work). Why DELETE: it releases that one-export slot and the files.
Output files can expire within hours of completion, so downloads follow the manifest at once.
"""

from __future__ import annotations

import copy
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urljoin

import orjson

from pipelines.filemodes import PRIVATE_DIR, make_dir

from .client import FhirClient, format_instant, parse_instant
from .errors import FatalNetworkError, FhirError, TemporaryNetworkError, outcome_diagnostics, redact_url
from .retry import parse_retry_after

__all__ = [
    "BulkExporter",
    "BulkResult",
    "BulkStateStore",
    "MemoryStateStore",
    "deleted_references",
    "error_outcomes",
]

log = logging.getLogger("alliance_qi.fhir")

# The manifest's `type` becomes part of a file name: allow resource type names only (no path tricks).
_TYPE_RE = re.compile(r"[A-Z][A-Za-z]{0,63}")
# `Type/id` (optionally `.../_history/vid`, ignored) in a deleted-file entry's request.url.
_DELETED_URL_RE = re.compile(
    r"(?:.*/)?(?P<type>[A-Z][A-Za-z]{0,63})/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/.*)?"
)


class BulkStateStore(Protocol):
    """Where an export in flight is remembered between runs (the warehouse implements this)."""

    def load(self, key: str) -> dict[str, Any] | None:
        """The state saved under `key`, or None."""
        ...

    def save(self, key: str, state: dict[str, Any]) -> None:
        """Persist `state` under `key` (replacing any previous state)."""
        ...

    def clear(self, key: str) -> None:
        """Forget `key` (no error when absent)."""
        ...


class MemoryStateStore:
    """A `BulkStateStore` in a dict, for tests and one-off scripts."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any]] = {}

    def load(self, key: str) -> dict[str, Any] | None:
        """A copy of the saved state, or None."""
        state = self.states.get(key)
        return copy.deepcopy(state) if state is not None else None

    def save(self, key: str, state: dict[str, Any]) -> None:
        """Store a copy of `state`."""
        self.states[key] = copy.deepcopy(state)

    def clear(self, key: str) -> None:
        """Drop `key`."""
        self.states.pop(key, None)


@dataclass
class BulkResult:
    """A finished export. `transaction_time` is the next export's `_since`."""

    transaction_time: datetime
    files: dict[str, list[Path]]
    error_files: list[Path]
    request: str
    deleted_files: list[Path] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # NDJSON lines downloaded per type
    urls: dict[Path, str] = field(default_factory=dict)  # the URL each downloaded file came from
    resumed: bool = False
    seconds: float = 0.0


class BulkExporter:
    """Runs one `$export` to completion (or resumes one), writing NDJSON files into `out_dir`."""

    def __init__(
        self,
        client: FhirClient,
        state: BulkStateStore,
        poll_interval: float = 2.0,
        max_wait: float = 3600,
        sleep: Callable[[float], None] = time.sleep,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.state = state
        self.poll_interval = poll_interval
        self.max_wait = max_wait
        self.sleep = sleep
        self.clock = clock

    # ---------------- public ----------------

    def export(
        self,
        key: str,
        types: list[str],
        since: datetime | None,
        out_dir: Path,
        level: Literal["system", "patient", "group"] = "system",
        group_id: str | None = None,
    ) -> BulkResult:
        """Export `types` changed since `since`, resuming the job saved under `key` if there is one.

        Raises TemporaryNetworkError when the job is still running after `max_wait` seconds (the
        state is kept, so the next call resumes it) and FatalNetworkError for a refused kick-off,
        a failed job or a malformed manifest.
        """
        started = self.clock()
        for name in types:
            if not _TYPE_RE.fullmatch(name):
                raise ValueError(f"not a FHIR resource type: {name!r}")
        saved = self.state.load(key)
        if saved and saved.get("status_url") and not _covers(saved, types, since):
            # The job in flight does not cover this request (other types, or a later _since):
            # finishing it and then using its transactionTime as the watermark would lose data.
            log.warning(
                "bulk %s: the export in flight (types=%s, since=%s) does not cover this "
                "request; cancelling it and kicking off again",
                key,
                saved.get("types"),
                saved.get("since"),
            )
            self._delete(str(saved["status_url"]))
            self.state.clear(key)
            saved = None
        resumed = bool(saved and saved.get("status_url"))
        if saved and resumed:
            log.info(
                "bulk %s: resuming export kicked off at %s (no new kick-off)", key, saved.get("kicked_off_at")
            )
            state = saved
        else:
            state = self._kick_off(key, types, since, level, group_id)
        restart = (lambda: self._kick_off(key, types, since, level, group_id)) if resumed else None
        manifest = self._poll(key, state, restart)
        result = self._download(key, state, manifest, out_dir)
        result.resumed = resumed
        self._delete(state["status_url"])
        self.state.clear(key)
        result.seconds = self.clock() - started
        log.info(
            "bulk %s: done in %.1fs: %s; %d error file(s); transactionTime %s",
            key,
            result.seconds,
            ", ".join(f"{t}={n}" for t, n in sorted(result.counts.items())) or "no output",
            len(result.error_files),
            format_instant(result.transaction_time, milliseconds=True),
        )
        return result

    # ---------------- steps ----------------

    def _kick_off(
        self, key: str, types: list[str], since: datetime | None, level: str, group_id: str | None
    ) -> dict[str, Any]:
        if level == "system":
            path = "$export"
        elif level == "patient":
            path = "Patient/$export"
        elif level == "group":
            if not group_id:
                raise ValueError("level='group' needs group_id")
            path = f"Group/{group_id}/$export"
        else:
            raise ValueError(f"level must be system, patient or group, not {level!r}")
        params: list[tuple[str, str]] = []
        if types:
            params.append(("_type", ",".join(types)))
        if since is not None:
            # _since is an instant: keep milliseconds so it matches transactionTime exactly.
            params.append(("_since", format_instant(since, milliseconds=True)))
        response = self.client.request(
            "GET",
            path,
            params=params,
            headers={"Accept": "application/fhir+json", "Prefer": "respond-async"},
            accept_status=(202,),
        )
        response.close()
        if response.status_code != 202:
            raise FatalNetworkError(
                "GET", response.url, response.status_code, reason="bulk kick-off did not answer 202 Accepted"
            )
        location = response.headers.get("Content-Location")
        if not location:
            raise FatalNetworkError("GET", response.url, 202, reason="bulk kick-off sent no Content-Location")
        state = {
            "status_url": urljoin(response.url, location),
            "kicked_off_at": format_instant(datetime.now(UTC), milliseconds=True),
            "request": response.url,
            "types": list(types),
            "since": format_instant(since, milliseconds=True) if since else None,
            "level": level,
        }
        # Persist before anything else can fail: this is what lets the next run resume the job.
        self.state.save(key, state)
        log.info(
            "bulk %s: kicked off %s; status at %s",
            key,
            redact_url(response.url),
            redact_url(str(state["status_url"])),
        )
        return state

    def _poll(
        self, key: str, state: dict[str, Any], restart: Callable[[], dict[str, Any]] | None
    ) -> dict[str, Any]:
        """Poll until the manifest arrives. A resumed job the server no longer knows is restarted once."""
        waited = 0.0
        began = self.clock()
        polls = 0
        while True:
            polls += 1
            try:
                response = self.client.request(
                    "GET", state["status_url"], accept_status=(202,), headers={"Accept": "application/json"}
                )
            except FatalNetworkError as exc:
                if exc.status in (404, 410):
                    # Expired, or deleted by someone else: the saved job is gone.
                    self.state.clear(key)
                    if restart is None:
                        raise
                    log.warning(
                        "bulk %s: saved export is gone (HTTP %s); kicking off a new one", key, exc.status
                    )
                    fresh = restart()
                    state.clear()
                    state.update(fresh)
                    restart = None
                    continue
                if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (401, 403):
                    # The job failed for good (the spec's error response); a saved URL would only
                    # make every later run fail the same way.
                    self.state.clear(key)
                raise
            if response.status_code == 200:
                manifest = self.client.json_object(response, "GET")
                log.info("bulk %s: complete after %d poll(s), %.1fs", key, polls, self.clock() - began)
                return manifest
            progress = response.headers.get("X-Progress")
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            response.close()
            # poll_interval is a floor: `Retry-After: 0` or a date in the past would otherwise make
            # thousands of polls a second. The wait never runs past max_wait.
            elapsed = max(self.clock() - began, waited)
            remaining = self.max_wait - elapsed
            delay = min(max(retry_after or 0.0, self.poll_interval), max(remaining, 0.0))
            if remaining <= 0 or delay <= 0:
                raise TemporaryNetworkError(
                    f"bulk export {key} still running after {elapsed:.0f}s (max_wait "
                    f"{self.max_wait:.0f}s); the status URL is kept and the next run resumes it",
                    method="GET",
                    url=state["status_url"],
                    status=202,
                    attempts=polls,
                    total_wait=waited,
                )
            log.info(
                "bulk %s: in progress%s; next poll in %.1fs",
                key,
                f" ({progress[:80]})" if progress else "",
                delay,
            )
            self.sleep(delay)
            waited += delay

    def _download(
        self, key: str, state: dict[str, Any], manifest: dict[str, Any], out_dir: Path
    ) -> BulkResult:
        status_url = state["status_url"]
        transaction_time, outputs, errors, deleted, requires_token = _validate_manifest(manifest, status_url)
        make_dir(out_dir, PRIVATE_DIR)  # downloads hold record-level data: owner only
        files: dict[str, list[Path]] = {}
        counts: dict[str, int] = {}
        urls: dict[Path, str] = {}
        for item in outputs:
            paths = files.setdefault(item["type"], [])
            dest = out_dir / f"{item['type']}-{len(paths) + 1}.ndjson"
            lines = self._fetch(key, item["url"], dest, requires_token)
            counts[item["type"]] = counts.get(item["type"], 0) + lines
            paths.append(dest)
            urls[dest] = item["url"]
        error_files: list[Path] = []
        for n, item in enumerate(errors, start=1):
            dest = out_dir / f"errors-{n}.ndjson"
            lines = self._fetch(key, item["url"], dest, requires_token)
            log.warning("bulk %s: server reported %d OperationOutcome line(s) in %s", key, lines, dest.name)
            error_files.append(dest)
        deleted_files: list[Path] = []
        for n, item in enumerate(deleted, start=1):
            dest = out_dir / f"deleted-{n}.ndjson"
            self._fetch(key, item["url"], dest, requires_token)
            deleted_files.append(dest)
        request = str(manifest.get("request") or state.get("request") or "")
        return BulkResult(
            transaction_time=transaction_time,
            files=files,
            error_files=error_files,
            request=request,
            deleted_files=deleted_files,
            counts=counts,
            urls=urls,
        )

    def _fetch(self, key: str, url: str, dest: Path, requires_token: bool | None) -> int:
        # requiresAccessToken is required in the manifest; when a server omits it, send the token
        # only where the client may send it (files on a storage host must not receive it). When the
        # manifest says true, the client refuses an untrusted origin (UntrustedOriginError).
        if requires_token is None:
            authenticate = self.client.credentials_allowed(url)
        else:
            authenticate = requires_token
        try:
            size, lines = self.client.download(url, dest, authenticate=authenticate)
        except FatalNetworkError as exc:
            if exc.status in (404, 410):
                # Files expire (hours on some EHRs): the job is useless now, start afresh next run.
                self.state.clear(key)
                raise FatalNetworkError(
                    "GET",
                    url,
                    exc.status,
                    reason="bulk output file expired or gone; state cleared so the "
                    "next run kicks off a new export",
                    fatal=False,
                ) from None
            raise
        log.info("bulk %s: %s: %d lines, %d bytes", key, dest.name, lines, size)
        return lines

    def _delete(self, status_url: str) -> None:
        try:
            response = self.client.request("DELETE", status_url, accept_status=(404, 410))
            response.close()
        except FhirError as exc:
            # The data is safely on disk; a server that cannot DELETE (405, or down right now) only
            # keeps its files longer. Failing here would make the next run export everything again.
            log.warning("bulk: DELETE of the status URL failed (%s); continuing", exc)


def _covers(saved: dict[str, Any], types: list[str], since: datetime | None) -> bool:
    """Whether a saved export answers a request for `types` since `since` (states saved by older
    code, without `types`, are trusted)."""
    if "types" not in saved:
        return True
    if sorted(saved.get("types") or []) != sorted(types):
        return False
    saved_since = saved.get("since")
    if saved_since is None:
        return True  # everything: a superset of any _since
    if since is None:
        return False
    wanted = since.astimezone(UTC) if since.tzinfo else since.replace(tzinfo=UTC)
    try:
        return parse_instant(str(saved_since)) <= wanted
    except ValueError:
        return False


def _validate_manifest(
    manifest: dict[str, Any],
    status_url: str,
) -> tuple[datetime, list[dict[str, str]], list[dict[str, str]], list[dict[str, str]], bool | None]:
    """Check the manifest shape; a malformed one is a FatalNetworkError naming what is wrong."""

    def bad(why: str) -> FatalNetworkError:
        # The saved job answers the same manifest on every retry: a step retry cannot help.
        return FatalNetworkError("GET", status_url, 200, reason=f"malformed bulk manifest: {why}", fatal=True)

    stamp = manifest.get("transactionTime")
    if not isinstance(stamp, str):
        raise bad("no transactionTime")
    try:
        transaction_time = parse_instant(stamp)
    except ValueError:
        raise bad(f"transactionTime {stamp!r} is not an instant") from None

    def items(name: str, required: bool) -> list[dict[str, str]]:
        value = manifest.get(name)
        if value is None and not required:
            return []
        if not isinstance(value, list):
            raise bad(f"{name} is not a list")
        checked = []
        for i, item in enumerate(value):
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("type"), str)
                or not isinstance(item.get("url"), str)
            ):
                raise bad(f"{name}[{i}] lacks type or url")
            if not _TYPE_RE.fullmatch(item["type"]):
                raise bad(f"{name}[{i}].type {item['type'][:40]!r} is not a resource type")
            if not item["url"].startswith(("http://", "https://")):
                raise bad(f"{name}[{i}].url is not an absolute http(s) URL")
            checked.append({"type": item["type"], "url": item["url"]})
        return checked

    outputs = items("output", True)
    errors = items("error", False)
    deleted = items("deleted", False)
    requires = manifest.get("requiresAccessToken")
    if requires is not None and not isinstance(requires, bool):
        raise bad("requiresAccessToken is not a boolean")
    return transaction_time, outputs, errors, deleted, requires


def error_outcomes(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, diagnostics) for each OperationOutcome line of a Bulk `error` file.

    A line that is not an OperationOutcome with text still counts: its problem is the message.
    """
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield number, f"unreadable error line: {exc}"
                continue
            text = outcome_diagnostics(data if isinstance(data, dict) else None)
            if text is None and isinstance(data, dict):
                issues = data.get("issue") or []
                codes = [str(i.get("code")) for i in issues if isinstance(i, dict) and i.get("code")]
                text = "OperationOutcome" + (f" ({', '.join(codes)})" if codes else " without diagnostics")
            yield number, text or "not an OperationOutcome"


def deleted_references(path: Path) -> Iterator[tuple[int, str, str, str | None]]:
    """(line number, type, id, when) for each deletion a Bulk `deleted` file lists.

    Each line is a Bundle whose entries carry `request: {method: DELETE, url: "Type/id"}` and, when
    the server knows it, `response.lastModified` (the time of deletion).
    """
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                bundle = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            entries = bundle.get("entry") if isinstance(bundle, dict) else None
            for entry in entries if isinstance(entries, list) else []:
                request = entry.get("request") if isinstance(entry, dict) else None
                if not isinstance(request, dict) or str(request.get("method", "")).upper() != "DELETE":
                    continue
                match = _DELETED_URL_RE.fullmatch(str(request.get("url") or "").strip("/"))
                if not match:
                    continue
                response = entry.get("response")
                when = response.get("lastModified") if isinstance(response, dict) else None
                yield number, match["type"], match["id"], when if isinstance(when, str) else None


def ndjson_lines(path: Path) -> int:
    """Non-blank lines in an NDJSON file (for reconciling counts)."""
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    """All objects in an NDJSON file (small files and tests; use `folder.iter_folder` for big ones)."""
    with path.open("rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]
