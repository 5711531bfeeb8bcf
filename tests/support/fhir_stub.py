"""A scripted FHIR server on 127.0.0.1 for unit tests: real sockets, real HTTP, canned answers.

    with FhirStub() as stub:
        stub.route("GET", "Patient", Reply(body=bundle([...], next_url=...)))
        client = FhirClient(stub.base_url)

Routes map (METHOD, path) to a list of replies served in order; the last one repeats. A reply
may be a `Reply` or a callable taking the `Recorded` request and returning a `Reply`, for answers
that depend on the query or headers. Every request is recorded in `stub.requests`. A
`Reply(reset=True)` drops the connection without answering (what a crashed proxy looks like);
`Reply(truncate=True)` hangs up halfway through the body.
Unrouted requests get a 404 OperationOutcome.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["FhirStub", "Recorded", "Reply", "bundle", "outcome"]


@dataclass
class Reply:
    """One canned response. `body` dicts/lists are sent as JSON; str/bytes as they are."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/fhir+json"
    reset: bool = False
    truncate: bool = False  # promise the full Content-Length, send half the body, hang up


@dataclass
class Recorded:
    """A request as the stub saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    raw_query: str
    headers: dict[str, str]
    body: bytes

    @property
    def target(self) -> str:
        """Path and query as sent."""
        return f"{self.path}?{self.raw_query}" if self.raw_query else self.path

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup."""
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    def form(self) -> dict[str, str]:
        """The body parsed as application/x-www-form-urlencoded (single values)."""
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


Responder = Reply | Callable[[Recorded], Reply]


def bundle(
    resources: list[dict[str, Any]],
    next_url: str | None = None,
    total: int | None = None,
    extra_entries: list[dict[str, Any]] | None = None,
    mode: str | None = "match",
) -> dict[str, Any]:
    """A searchset Bundle with `resources` as match entries, an optional next link and extra entries."""
    entries: list[dict[str, Any]] = []
    for r in resources:
        entry: dict[str, Any] = {"fullUrl": f"urn:test:{r.get('resourceType')}/{r.get('id')}", "resource": r}
        if mode:
            entry["search"] = {"mode": mode}
        entries.append(entry)
    entries.extend(extra_entries or [])
    b: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": [], "entry": entries}
    if next_url:
        b["link"].append({"relation": "next", "url": next_url})
    if total is not None:
        b["total"] = total
    return b


def outcome(text: str, severity: str = "error", code: str = "processing") -> dict[str, Any]:
    """An OperationOutcome with one issue."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}],
    }


class FhirStub:
    """A threaded HTTP server serving scripted replies under `/fhir` (see the module docstring)."""

    def __init__(self, prefix: str = "/fhir") -> None:
        self.prefix = prefix.rstrip("/")
        self.routes: dict[tuple[str, str], list[Responder]] = {}
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------- scripting ----------------

    def _path(self, path: str) -> str:
        if path.startswith("/"):
            return path
        return f"{self.prefix}/{path}" if path else self.prefix

    def route(self, method: str, path: str, *replies: Responder) -> FhirStub:
        """Serve `replies` in order to `METHOD path` (relative to the FHIR base, or absolute `/...`)."""
        if not replies:
            raise ValueError("route needs at least one reply")
        with self._lock:
            self.routes[(method.upper(), self._path(path))] = list(replies)
        return self

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Recorded requests, optionally filtered by method and path."""
        with self._lock:
            recorded = list(self.requests)
        return [
            r
            for r in recorded
            if (method is None or r.method == method.upper()) and (path is None or r.path == self._path(path))
        ]

    @property
    def port(self) -> int:
        assert self._server is not None, "stub not started"
        return int(self._server.server_address[1])

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}{self.prefix}"

    # ---------------- serving ----------------

    def _next_reply(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
            queue = self.routes.get((recorded.method, recorded.path))
            if queue is None:
                responder: Responder = Reply(
                    404, outcome(f"no route for {recorded.method} {recorded.path}", code="not-found")
                )
            else:
                responder = queue.pop(0) if len(queue) > 1 else queue[0]
        return responder(recorded) if callable(responder) else responder

    def __enter__(self) -> FhirStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so pooled connections are exercised

            def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
                return

            def setup(self) -> None:
                super().setup()
                # headers and body go out in two writes; without NODELAY, Nagle + delayed ACK add
                # ~40 ms to every request
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                recorded = Recorded(
                    self.command,
                    parts.path,
                    parse_qs(parts.query, keep_blank_values=True),
                    parts.query,
                    dict(self.headers.items()),
                    body,
                )
                reply = stub._next_reply(recorded)
                if reply.reset:
                    # RST instead of FIN: the client sees "connection reset by peer".
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                if isinstance(reply.body, (dict, list)):
                    payload = json.dumps(reply.body).encode()
                elif isinstance(reply.body, str):
                    payload = reply.body.encode()
                else:
                    payload = reply.body or b""
                self.send_response(reply.status)
                if payload:
                    self.send_header("Content-Type", reply.content_type)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if reply.truncate:
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if payload and self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fhir-stub", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
