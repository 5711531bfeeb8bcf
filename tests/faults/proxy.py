"""A fault-injecting HTTP proxy for the fault suite: a real threaded HTTP server on 127.0.0.1 that
forwards to a real FHIR server and breaks chosen exchanges according to a scripted plan.

Nothing here imports the pipeline: the pipeline talks to the proxy over TCP exactly as it would
talk to an EHR behind a flaky gateway. Every absolute URL the upstream sends (paging next links,
`Content-Location` of a Bulk kick-off, manifest output URLs, SMART discovery) is rewritten from
the upstream origin to the proxy's, so every later request comes back through the proxy too.

A plan is a list of `Rule`s. A rule matches requests by method, a path regular expression and
required query values; it lets the first `skip` matches through, then applies its `Action` to the
next `times` matches (None: to every later match). Actions:

- `Reply(status, headers, body)`: answer without asking the upstream (429 + Retry-After, 503 ...);
- `Delay(seconds)`: wait, then forward (past the client's read timeout);
- `Reset(mid_body)`: close the socket with a TCP RST before answering, or after half the body;
- `Truncate(keep)`: forward, but send only the first `keep` fraction of the body, well framed;
- `Replay()`: answer with the previous response seen on the same path (a page served twice);
- `RepeatEntries()`: prepend the previous page's entries to this page (offset paging overlap);
- `Hook(fn)`: call `fn()` (e.g. update a resource upstream), then forward;
- `Mutate(fn)`: forward, then replace the JSON body by `fn(body)` (a malformed Bulk manifest);
- `Rewrite(body, headers)`: forward, then replace the raw body bytes and/or headers (bytes that
  are not UTF-8, JSON too deep for a JSON library, a status URL on another host);
- `ExpireToken()`: answer 401 and treat the request's bearer token as expired from now on;
- `Hold(seconds)`: signal `proxy.held` (the test kills the pipeline now), then wait and forward.

Every exchange is recorded in `proxy.exchanges`; every bearer token that passed through is kept
in `proxy.secrets` so the suite can prove that none of them reached a log line.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

__all__ = [
    "Action",
    "Delay",
    "Exchange",
    "ExpireToken",
    "FaultProxy",
    "Hold",
    "Hook",
    "Mutate",
    "RepeatEntries",
    "Replay",
    "Reply",
    "Reset",
    "Rewrite",
    "Rule",
    "Truncate",
    "running_proxy",
]

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the proxy recomputes itself.
_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "accept-encoding",  # the upstream must answer uncompressed, so bodies can be rewritten
    "content-encoding",
}


@dataclass
class Upstream:
    """An upstream answer (or the proxy's own), as bytes plus headers."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)


@dataclass
class Exchange:
    """One request the proxy received and what it did with it."""

    method: str
    path: str
    query: list[tuple[str, str]]
    status: int | None = None  # what the client was sent; None when the socket was cut first
    fault: str = ""
    at: float = field(default_factory=time.monotonic)

    @property
    def params(self) -> dict[str, str]:
        """The query as a dict (last value wins)."""
        return dict(self.query)


class _Context:
    """What an action sees: the request, the proxy, and helpers to forward and answer."""

    def __init__(self, proxy: FaultProxy, handler: _Handler, exchange: Exchange, body: bytes) -> None:
        self.proxy = proxy
        self.handler = handler
        self.exchange = exchange
        self.body = body

    def forward(self) -> Upstream:
        """Send the request upstream and return its answer (URLs rewritten to the proxy)."""
        return self.proxy.forward(self.handler, self.body)


class Action:
    """Base class: what a rule does with a matching request. The default forwards unchanged."""

    label = "forward"

    def apply(self, ctx: _Context) -> Upstream | None:
        """The answer to send, or None when the action already dealt with the socket itself."""
        return ctx.forward()


@dataclass
class Reply(Action):
    """Answer at once with `status` (and headers/body); the upstream never sees the request.
    `headers` may be a callable, evaluated when the fault fires (an HTTP-date Retry-After)."""

    status: int
    headers: Mapping[str, str] | Callable[[], Mapping[str, str]] = field(default_factory=dict)
    body: bytes = b""

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"reply {self.status}"

    def apply(self, ctx: _Context) -> Upstream | None:
        """The canned answer."""
        body = self.body or orjson.dumps(
            {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "transient", "diagnostics": "injected fault"}],
            }
        )
        extra = self.headers() if callable(self.headers) else self.headers  # callable: computed when fired
        headers = [("Content-Type", "application/fhir+json"), *extra.items()]
        return Upstream(self.status, http.client.responses.get(self.status, ""), headers, body)


@dataclass
class Delay(Action):
    """Wait `seconds` before forwarding (a slow gateway; longer than the client's read timeout)."""

    seconds: float
    label = "delay"

    def apply(self, ctx: _Context) -> Upstream | None:
        """Sleep, then forward."""
        time.sleep(self.seconds)
        return ctx.forward()


@dataclass
class Reset(Action):
    """Cut the connection: before any answer, or (`mid_body`) after the headers and half the body."""

    mid_body: bool = False

    @property
    def label(self) -> str:  # type: ignore[override]
        return "reset mid-body" if self.mid_body else "reset"

    def apply(self, ctx: _Context) -> Upstream | None:
        """Optionally send half an answer, then close the socket with a TCP RST."""
        if self.mid_body:
            answer = ctx.forward()
            ctx.proxy.send(ctx.handler, answer, cut_at=len(answer.body) // 2)
        ctx.handler.abort()
        return None


@dataclass
class Truncate(Action):
    """Forward, but send only the first `keep` fraction of the body with a matching Content-Length:
    the HTTP framing is fine, the JSON is not (what a broken gateway or a full disk produces)."""

    keep: float = 0.5
    label = "truncate"

    def apply(self, ctx: _Context) -> Upstream | None:
        """The upstream answer cut short."""
        answer = ctx.forward()
        answer.body = answer.body[: int(len(answer.body) * self.keep)]
        return answer


@dataclass
class Replay(Action):
    """Answer with the previous response the proxy sent on the same path (the page before, with its
    own next link): a caching gateway serving a stale page."""

    label = "replay previous page"

    def apply(self, ctx: _Context) -> Upstream | None:
        """The last answer on this path, or a normal forward when there is none yet."""
        previous = ctx.proxy.last_answer.get(ctx.exchange.path)
        if previous is None:
            return ctx.forward()
        return Upstream(previous.status, previous.reason, list(previous.headers), previous.body)


@dataclass
class RepeatEntries(Action):
    """Forward, then put the previous page's entries in front of this page's: what offset paging
    returns when rows are inserted before the cursor while a client pages."""

    label = "repeat previous entries"

    def apply(self, ctx: _Context) -> Upstream | None:
        """This page with the previous page's entries prepended."""
        previous = ctx.proxy.last_answer.get(ctx.exchange.path)
        answer = ctx.forward()
        if previous is None or answer.status != 200:
            return answer
        bundle = answer.json()
        bundle["entry"] = (previous.json().get("entry") or []) + (bundle.get("entry") or [])
        answer.body = orjson.dumps(bundle)
        return answer


@dataclass
class Hook(Action):
    """Call `fn()` (for example: update a resource on the upstream server), then forward."""

    fn: Callable[[], None]
    label = "hook"

    def apply(self, ctx: _Context) -> Upstream | None:
        """Run the hook, then forward."""
        self.fn()
        return ctx.forward()


@dataclass
class Mutate(Action):
    """Forward, then replace a 200 JSON body by `fn(body)` (return the body unchanged to pass)."""

    fn: Callable[[Any], Any]
    label = "mutate"

    def apply(self, ctx: _Context) -> Upstream | None:
        """The upstream answer with its JSON rewritten."""
        answer = ctx.forward()
        if answer.status == 200 and answer.body:
            answer.body = orjson.dumps(self.fn(answer.json()))
        return answer


@dataclass
class Rewrite(Action):
    """Forward, then pass a 2xx answer's raw body through `body(bytes) -> bytes` and its headers
    through `headers(list) -> list` (either may be None: unchanged)."""

    body: Callable[[bytes], bytes] | None = None
    headers: Callable[[list[tuple[str, str]]], list[tuple[str, str]]] | None = None
    label = "rewrite"

    def apply(self, ctx: _Context) -> Upstream | None:
        """The upstream answer rewritten."""
        answer = ctx.forward()
        if 200 <= answer.status < 300:
            if self.body is not None:
                answer.body = self.body(answer.body)
            if self.headers is not None:
                answer.headers = self.headers(list(answer.headers))
        return answer


@dataclass
class ExpireToken(Action):
    """Answer 401 `invalid_token` and treat this request's bearer token as expired from now on."""

    label = "expire token"

    def apply(self, ctx: _Context) -> Upstream | None:
        """Remember the token as expired and refuse the request."""
        token = ctx.proxy.bearer(ctx.handler)
        if token:
            ctx.proxy.expired.add(token)
        return ctx.proxy.unauthorized()


@dataclass
class Hold(Action):
    """Set `proxy.held` (the test reacts: kills the pipeline), wait up to `seconds`, then forward."""

    seconds: float = 30.0
    label = "hold"

    def apply(self, ctx: _Context) -> Upstream | None:
        """Signal, wait for `proxy.release` or the timeout, then forward."""
        ctx.proxy.held.set()
        ctx.proxy.release.wait(self.seconds)
        return ctx.forward()


@dataclass
class Rule:
    """Which requests a fault applies to. `path` is a regular expression searched in the URL path;
    `query` holds parameters the request must carry with exactly these values."""

    action: Action
    path: str = ""
    method: str | None = "GET"
    query: Mapping[str, str] = field(default_factory=dict)
    skip: int = 0
    times: int | None = 1
    matched: int = 0
    fired: int = 0

    def take(self, method: str, path: str, params: Mapping[str, str]) -> bool:
        """Count a match and say whether the fault fires for it."""
        if self.method is not None and method != self.method:
            return False
        if self.path and not re.search(self.path, path):
            return False
        if any(params.get(k) != v for k, v in self.query.items()):
            return False
        self.matched += 1
        if self.matched <= self.skip or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real gateways do
    server: _ProxyServer

    def _handle(self) -> None:
        self.server.proxy.handle(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: request lines carry query strings, and the suite checks logs for secrets."""

    def abort(self) -> None:
        """Close the client socket with an RST (SO_LINGER 0), as a crashed gateway does."""
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.connection.close()
        self.close_connection = True


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy


class FaultProxy:
    """The proxy in front of one FHIR base URL. Use `running_proxy(base_url)`, or `start()`/`stop()`."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be an http://host:port/... URL, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port
        self.upstream_origin = f"http://{parts.hostname}:{parts.port}"
        self.upstream_url = upstream.rstrip("/")
        self.rules: list[Rule] = []
        self.exchanges: list[Exchange] = []
        self.secrets: set[str] = set()
        self.expired: set[str] = set()
        self.last_answer: dict[str, Upstream] = {}
        self.held = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server = _ProxyServer(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        """`http://127.0.0.1:<port>` of the proxy."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        """The upstream URL the proxy was made for (a FHIR base), as seen through the proxy."""
        return self.url(self.upstream_url)

    def url(self, upstream_url: str) -> str:
        """Any upstream URL as seen through the proxy."""
        return upstream_url.replace(self.upstream_origin, self.origin)

    # ---------------- the plan ----------------

    def add(self, action: Action, path: str = "", **kwargs: Any) -> Rule:
        """Append a rule to the plan and return it (its `fired` count tells whether it was used)."""
        rule = Rule(action, path, **kwargs)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Drop every rule (the fault is over); expired tokens stay expired."""
        with self._lock:
            self.rules.clear()

    def seen(self, path: str = "", *, status: int | None = None, fault: str | None = None) -> list[Exchange]:
        """Recorded exchanges whose path matches `path`, optionally with this status / fault label."""
        return [
            e
            for e in list(self.exchanges)
            if re.search(path, e.path)
            and (status is None or e.status == status)
            and (fault is None or e.fault == fault)
        ]

    # ---------------- serving ----------------

    def start(self) -> FaultProxy:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release held requests."""
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def bearer(self, handler: BaseHTTPRequestHandler) -> str | None:
        """The bearer token of a request, if any."""
        value = handler.headers.get("Authorization") or ""
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    def unauthorized(self) -> Upstream:
        """A 401 as an OAuth-protected FHIR server sends it for an expired token."""
        body = orjson.dumps(
            {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "expired", "diagnostics": "Access token expired"}],
            }
        )
        headers = [
            ("Content-Type", "application/fhir+json"),
            ("WWW-Authenticate", 'Bearer error="invalid_token", error_description="token expired"'),
        ]
        return Upstream(401, "Unauthorized", headers, body)

    def handle(self, handler: _Handler) -> None:
        """Serve one request: record it, apply the first firing rule (or forward), answer."""
        split = urlsplit(handler.path)
        query = parse_qsl(split.query, keep_blank_values=True)
        exchange = Exchange(handler.command, split.path, query)
        with self._lock:
            self.exchanges.append(exchange)
            action: Action = Action()
            for rule in self.rules:
                if rule.take(handler.command, split.path, dict(query)):
                    action = rule.action
                    break
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        token = self.bearer(handler)
        if token:
            self.secrets.add(token)
        if b"client_assertion=" in body:  # a SMART token request routed through the proxy
            self.secrets.update(
                v for k, v in parse_qsl(body.decode(errors="replace")) if k == "client_assertion"
            )
        exchange.fault = "" if type(action) is Action else str(action.label)
        try:
            if token and token in self.expired and type(action) is Action:
                answer: Upstream | None = self.unauthorized()
                exchange.fault = "expired token"
            else:
                answer = action.apply(_Context(self, handler, exchange, body))
            if answer is None:
                return
            if answer.status == 200 and handler.command == "GET":
                self.last_answer[split.path] = answer
            exchange.status = answer.status
            self.send(handler, answer)
        except OSError:
            # The client gave up first (its read timeout, or it was killed): nothing to answer.
            handler.close_connection = True

    def forward(self, handler: BaseHTTPRequestHandler, body: bytes) -> Upstream:
        """Send the request to the upstream; return its answer with upstream URLs rewritten."""
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP}
        if body:
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            conn.request(handler.command, handler.path, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            out_headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP]
            answer = Upstream(response.status, response.reason, out_headers, data)
        finally:
            conn.close()
        old, new = self.upstream_origin, self.origin
        answer.body = answer.body.replace(old.encode(), new.encode())
        answer.headers = [(k, v.replace(old, new)) for k, v in answer.headers]
        if answer.status == 200 and answer.body.startswith(b"{") and b"access_token" in answer.body:
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                token = orjson.loads(answer.body).get("access_token")
                if isinstance(token, str):
                    self.secrets.add(token)
        return answer

    def send(self, handler: BaseHTTPRequestHandler, answer: Upstream, cut_at: int | None = None) -> None:
        """Write `answer` to the client; with `cut_at`, announce the full length but stop there."""
        handler.send_response(answer.status, answer.reason or None)
        for key, value in answer.headers:
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(answer.body)))
        handler.end_headers()
        handler.wfile.write(answer.body if cut_at is None else answer.body[:cut_at])
        handler.wfile.flush()


@contextlib.contextmanager
def running_proxy(upstream: str) -> Iterator[FaultProxy]:
    """A started proxy in front of `upstream` (a FHIR base URL), stopped on exit."""
    proxy = FaultProxy(upstream).start()
    try:
        yield proxy
    finally:
        proxy.stop()
