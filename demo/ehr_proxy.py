"""A restrictive EHR in front of the embedded sekmet-fhir server: Group-level Bulk only, and
patient-compartment searches only with `patient`.

What it emulates (production EHRs commonly behave this way):

- `GET [base]/$export` and `GET [base]/Patient/$export` answer **501** (OperationOutcome): only a
  Group can be exported.
- `GET [base]/Group/{id}/$export?_type=&_since=` runs a Bulk export of the Group's members'
  patient compartments, served by this proxy (kick-off 202 + Content-Location, status 200 +
  manifest, NDJSON files, DELETE). sekmet-fhir 0.1.1's own Group export leaves
  QuestionnaireResponse out entirely, so the proxy builds the files itself from sekmet searches
  (`_lastUpdated=ge{_since}`), filtered to resources that reference a member.
- A search of a patient-compartment type other than Patient (QuestionnaireResponse, Encounter,
  MedicationDispense, ...) without `patient` answers **400** (OperationOutcome). With
  `patient=Patient/{id}` it is answered from sekmet's search (whose QuestionnaireResponse search
  ignores `patient`/`subject`) filtered to that patient's resources, in one searchset page.
  `Patient?_id=` is filtered the same way.
- Everything else (metadata, Group and Patient reads, Questionnaire / Practitioner searches) is
  forwarded unchanged, the upstream origin rewritten to the proxy's.

Loopback only; every upstream paging loop is bounded. Counters (`requests`) let the demo and the
benchmarks report requests per mode.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
import requests

__all__ = ["COMPARTMENT_REFS", "RestrictiveEhrProxy", "running_ehr_proxy"]

#: Where each patient-compartment type names its patient (FHIR R4 CompartmentDefinition, the
#: elements the demo clinic fills).
COMPARTMENT_REFS: dict[str, tuple[str, ...]] = {
    "QuestionnaireResponse": ("subject",),
    "Encounter": ("subject",),
    "EpisodeOfCare": ("patient",),
    "Appointment": ("participant.actor",),
    "MedicationRequest": ("subject",),
    "MedicationDispense": ("subject",),
}
_MAX_UPSTREAM_PAGES = 10_000  # bounds every paging loop over the upstream
_UPSTREAM_COUNT = 1000


def _outcome(code: str, text: str) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": text}],
        }
    )


def _refs(resource: dict[str, Any], path: str) -> Iterator[str]:
    """Reference strings at a dotted path (lists are walked)."""
    values: list[Any] = [resource]
    for part in path.split("."):
        nxt: list[Any] = []
        for v in values:
            item = v.get(part) if isinstance(v, dict) else None
            nxt.extend(item if isinstance(item, list) else [item] if item is not None else [])
        values = nxt
    for v in values:
        if isinstance(v, dict) and isinstance(v.get("reference"), str):
            yield v["reference"]


def patient_of(resource: dict[str, Any]) -> set[str]:
    """The Patient ids a resource's compartment references name."""
    rtype = str(resource.get("resourceType"))
    if rtype == "Patient":
        return {str(resource.get("id"))}
    out = set()
    for path in COMPARTMENT_REFS.get(rtype, ()):
        for ref in _refs(resource, path):
            head, sep, tail = ref.rpartition("Patient/")
            if sep and (not head or head.endswith("/")) and tail:
                out.add(tail.split("/", 1)[0])
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        """Serve a GET."""
        self.server.proxy.handle(self, "GET")

    def do_DELETE(self) -> None:
        """Serve a DELETE (Bulk status URLs)."""
        self.server.proxy.handle(self, "DELETE")

    def do_POST(self) -> None:
        """Forward a POST (transactions while the demo loads)."""
        self.server.proxy.handle(self, "POST")

    def do_PUT(self) -> None:
        """Forward a PUT (an update, e.g. a Group's new membership)."""
        self.server.proxy.handle(self, "PUT")

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: query strings name patients."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: RestrictiveEhrProxy


class RestrictiveEhrProxy:
    """The proxy for one sekmet base URL (`http://127.0.0.1:port/fhir`)."""

    def __init__(self, upstream: str, cache_seconds: float = 30.0) -> None:
        parts = urlsplit(upstream)
        if parts.hostname not in ("127.0.0.1", "localhost") or not parts.port:
            raise ValueError("the upstream must be a loopback http://127.0.0.1:port/... URL")
        self.upstream = upstream.rstrip("/")
        self.upstream_origin = f"{parts.scheme}://{parts.hostname}:{parts.port}"
        self.prefix = parts.path.rstrip("/")
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self.requests = 0
        self.refused: list[tuple[int, str]] = []  # (status, path) of every refusal
        # Tests: refuse (400) every patient search after this many were served (a pull cut short).
        self.fail_patient_searches_after: int | None = None
        # Tests: hold every patient search after this many (signal `held`, wait for `release`, at
        # most 60 s): the moment to kill the pulling process.
        self.hold_patient_searches_after: int | None = None
        self.held = threading.Event()
        self.release = threading.Event()
        self.patient_searches = 0
        self.searched: list[tuple[str, str]] = []  # (type, patient id) of every compartment search
        self._thread: threading.Thread | None = None
        # sekmet has no compartment index: each per-patient answer would re-read the whole type.
        # One read per (type, _lastUpdated) is kept this long and split by patient (a real EHR
        # answers from its index); any write through the proxy drops it.
        self.cache_seconds = cache_seconds
        self._cache: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, dict[str, list[Any]]]] = {}
        self._cache_locks: dict[tuple[str, tuple[tuple[str, str], ...]], threading.Lock] = {}

    @property
    def origin(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        """The FHIR base as seen through the proxy."""
        return self.origin + self.prefix

    def start(self) -> RestrictiveEhrProxy:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="ehr-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (held requests are released)."""
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    # ---------------- serving ----------------

    def handle(self, h: _Handler, method: str) -> None:
        """Route one request."""
        with self._lock:
            self.requests += 1
        split = urlsplit(h.path)
        query = parse_qsl(split.query, keep_blank_values=True)
        path = split.path[len(self.prefix) :] if split.path.startswith(self.prefix) else split.path
        parts = [p for p in path.split("/") if p]
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        try:
            if parts and parts[0] == "_bulk":
                self._bulk(h, method, parts[1:])
            elif method != "GET":
                with self._lock:
                    self._cache.clear()
                self._forward(h, method, body)
            elif parts in (["$export"], ["Patient", "$export"]):
                self._refuse(h, 501, "not-supported", "only Group-level $export is available", path)
            elif len(parts) == 3 and parts[0] == "Group" and parts[2] == "$export":
                self._kick_off(h, parts[1], dict(query))
            elif len(parts) == 1 and parts[0] in COMPARTMENT_REFS:
                self._compartment_search(h, parts[0], query)
            elif parts == ["Patient"] and any(k == "_id" for k, _ in query):
                self._compartment_search(h, "Patient", query)
            else:
                self._forward(h, method, body)
        except (OSError, requests.RequestException):
            h.close_connection = True

    def _send(self, h: _Handler, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        sent = {"Content-Type": "application/fhir+json", **(headers or {})}
        h.send_response(status)
        for k, v in sent.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _refuse(self, h: _Handler, status: int, code: str, text: str, path: str) -> None:
        with self._lock:
            self.refused.append((status, path))
        self._send(h, status, _outcome(code, text))

    def _forward(self, h: _Handler, method: str, body: bytes) -> None:
        headers = {k: v for k, v in h.headers.items() if k.lower() in ("accept", "content-type", "prefer")}
        r = requests.request(
            method, self.upstream_origin + h.path, data=body or None, headers=headers, timeout=120
        )
        data = r.content.replace(self.upstream_origin.encode(), self.origin.encode())
        extra = {
            k: v.replace(self.upstream_origin, self.origin)
            for k, v in r.headers.items()
            if k.lower() in ("content-location", "location", "etag", "last-modified")
        }
        h.send_response(r.status_code)
        h.send_header("Content-Type", r.headers.get("Content-Type", "application/fhir+json"))
        for k, v in extra.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _search_all(self, rtype: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Every resource sekmet's search returns (its paging followed, at most _MAX_UPSTREAM_PAGES)."""
        url: str | None = f"{self.upstream}/{rtype}?" + urlencode([*params, ("_count", str(_UPSTREAM_COUNT))])
        out: list[dict[str, Any]] = []
        for _ in range(_MAX_UPSTREAM_PAGES):
            if url is None:
                return out
            r = requests.get(url, headers={"Accept": "application/fhir+json"}, timeout=120)
            r.raise_for_status()
            bundle = orjson.loads(r.content)
            out.extend(
                e["resource"] for e in bundle.get("entry") or [] if isinstance(e.get("resource"), dict)
            )
            url = next(
                (lk.get("url") for lk in bundle.get("link") or [] if lk.get("relation") == "next"), None
            )
        raise RuntimeError(f"{rtype}: more than {_MAX_UPSTREAM_PAGES} upstream pages")

    def _by_patient(self, rtype: str, params: list[tuple[str, str]]) -> dict[str, list[Any]]:
        """sekmet's answer to `rtype?params`, split by the patient each resource belongs to (cached)."""
        key = (rtype, tuple(sorted(params)))
        with self._lock:
            lock = self._cache_locks.setdefault(key, threading.Lock())
        with lock:  # one upstream read per key at a time: concurrent patients wait for it
            hit = self._cache.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.cache_seconds:
                return hit[1]
            index: dict[str, list[Any]] = {}
            for res in self._search_all(rtype, params):
                for pid in patient_of(res):
                    index.setdefault(pid, []).append(res)
            with self._lock:
                # Stamped when read, not when asked: a read longer than the cache time still counts.
                self._cache[key] = (time.monotonic(), index)
            return index

    def _compartment_search(self, h: _Handler, rtype: str, query: list[tuple[str, str]]) -> None:
        want = "_id" if rtype == "Patient" else "patient"
        values = [v for k, v in query if k == want]
        if not values:
            self._refuse(h, 400, "required", f"{rtype} searches require the {want} parameter", rtype)
            return
        pid = values[0].rsplit("/", 1)[-1]
        with self._lock:
            self.patient_searches += 1
            self.searched.append((rtype, pid))
            failing = (
                self.fail_patient_searches_after is not None
                and self.patient_searches > self.fail_patient_searches_after
            )
        if failing:
            self._refuse(h, 400, "processing", "search refused (test fault)", rtype)
            return
        hold = self.hold_patient_searches_after
        if hold is not None and self.patient_searches > hold:
            self.held.set()
            self.release.wait(60)
        passed = [(k, v) for k, v in query if k == "_lastUpdated"]
        found = self._by_patient(rtype, passed).get(pid, [])
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "link": [{"relation": "self", "url": self.origin + h.path}],
            "entry": [
                {
                    "fullUrl": f"{self.base_url}/{rtype}/{r.get('id')}",
                    "resource": r,
                    "search": {"mode": "match"},
                }
                for r in found
            ],
        }
        self._send(h, 200, orjson.dumps(bundle))

    # ---------------- Group-level Bulk ----------------

    def _kick_off(self, h: _Handler, group_id: str, query: dict[str, str]) -> None:
        r = requests.get(f"{self.upstream}/Group/{group_id}", timeout=60)
        if r.status_code != 200:
            self._refuse(h, 404, "not-found", "no such Group", "Group")
            return
        members = set()
        for m in orjson.loads(r.content).get("member") or []:
            ref = (m.get("entity") or {}).get("reference") or ""
            if ref.startswith("Patient/"):
                members.add(ref.split("/", 1)[1])
        types = [t for t in (query.get("_type") or "").split(",") if t] or ["Patient", *COMPARTMENT_REFS]
        # The export's transactionTime is taken before reading: anything changed later is in the
        # next export (its _since), never lost between the two.
        began = datetime.now(UTC)
        params = [("_lastUpdated", "ge" + query["_since"])] if query.get("_since") else []
        job = str(next(self._ids))
        state: dict[str, Any] = {"files": {}, "time": began, "request": self.origin + h.path, "done": False}
        with self._lock:
            self._jobs[job] = state
        # Built in the background, as a real export runs: status answers 202 until it is done.
        worker = threading.Thread(
            target=self._build_export, args=(state, types, params, members), name=f"export-{job}", daemon=True
        )
        worker.start()
        self._send(h, 202, b"", {"Content-Location": f"{self.origin}/_bulk/status/{job}"})

    def _build_export(
        self, state: dict[str, Any], types: list[str], params: list[tuple[str, str]], members: set[str]
    ) -> None:
        files: dict[str, bytes] = {}
        try:
            for rtype in types:
                if rtype != "Patient" and rtype not in COMPARTMENT_REFS:
                    continue
                rows = [res for res in self._search_all(rtype, params) if patient_of(res) & members]
                if rows:
                    files[rtype] = b"".join(orjson.dumps(res) + b"\n" for res in rows)
        except (requests.RequestException, RuntimeError, ValueError) as exc:
            state["error"] = str(exc)
        state["files"] = files
        state["done"] = True

    def _bulk(self, h: _Handler, method: str, parts: list[str]) -> None:
        job = self._jobs.get(parts[1]) if len(parts) >= 2 else None
        if job is None:
            self._refuse(h, 404, "not-found", "no such export", "_bulk")
            return
        if parts[0] == "status" and method == "DELETE":
            with self._lock:
                self._jobs.pop(parts[1], None)
            self._send(h, 202, b"")
        elif parts[0] == "status" and not job["done"]:
            self._send(h, 202, b"", {"Retry-After": "1", "X-Progress": "exporting"})
        elif parts[0] == "status" and job.get("error"):
            self._send(h, 500, _outcome("exception", "the export failed"))
        elif parts[0] == "status":
            stamp = job["time"].isoformat(timespec="milliseconds").replace("+00:00", "Z")
            manifest = {
                "transactionTime": stamp,
                "request": job["request"],
                "requiresAccessToken": True,
                "output": [
                    {"type": t, "url": f"{self.origin}/_bulk/file/{parts[1]}/{t}.ndjson"}
                    for t in job["files"]
                ],
                "error": [],
            }
            self._send(h, 200, orjson.dumps(manifest), {"Content-Type": "application/json"})
        elif parts[0] == "file" and len(parts) == 3:
            data = job["files"].get(parts[2].removesuffix(".ndjson"), b"")
            self._send(h, 200, data, {"Content-Type": "application/fhir+ndjson"})
        else:
            self._refuse(h, 404, "not-found", "unknown Bulk path", "_bulk")


@contextlib.contextmanager
def running_ehr_proxy(upstream: str, cache_seconds: float = 30.0) -> Iterator[RestrictiveEhrProxy]:
    """A started restrictive proxy in front of `upstream` (a sekmet FHIR base URL), stopped on exit."""
    proxy = RestrictiveEhrProxy(upstream, cache_seconds).start()
    try:
        yield proxy
    finally:
        proxy.stop()
