"""A small, strict FHIR R4 REST client: paging, de-duplication, incremental pulls, canonical resolution.

Pure Python over one `requests.Session` (no Dagster here: the Dagster resource in
`pipelines/resources` wraps this class). Every call has an explicit timeout and goes through the
one retry policy (`retry.py`); a 401 makes the client drop its token and re-authorise exactly once.

EHR quirks handled here, each recorded where it is handled:
- next links are followed verbatim (they may carry opaque cursors or a different path than the
  first query); relative ones are resolved against the page URL. Credentials go only to the base
  URL's origin or to `trusted_origins`, never over http when the base is https: a request with
  credentials anywhere else fails with `UntrustedOriginError` (hostile-server review, issue 12);
- a page is read up to `max_page_bytes`; an entry whose text is not valid UTF-8 (a Latin-1 byte, a
  lone `\ud800`) is set aside with orjson's message instead of failing the page (`rejects`);
- a cursor that changes on every page while serving the same resources is stopped after
  `max_stale_pages` pages that bring nothing new;
- some servers send a next link to an empty page, or a next link that loops back;
- some servers repeat resources across pages (offset paging while data changes), so pulls
  de-duplicate on (type, id, versionId);
- some servers lack `_lastUpdated` search, or silently ignore search parameters they do not know
  (sekmet ignores QuestionnaireResponse `questionnaire`/`status`/`subject`; many ignore `url`),
  so support is read from the CapabilityStatement or probed, and results are filtered client-side.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Literal
from urllib.parse import urljoin, urlsplit

import orjson
import requests

from pipelines.filemodes import PRIVATE_FILE
from pipelines.settings import IncrementalMode

from .auth import Auth, NoAuth, auth_secrets, mask_secrets, redacting_filter, same_origin
from .errors import (
    AuthError,
    FatalNetworkError,
    FhirError,
    LimitExceededError,
    UntrustedOriginError,
    origin_of,
    outcome_diagnostics,
    redact_url,
)
from .retry import NETWORK_ERRORS, RetryBudget, RetryPolicy, send_with_retry

__all__ = [
    "DEFAULT_DATE_PARAMS",
    "FHIR_JSON",
    "FhirClient",
    "Page",
    "PullMode",
    "PullStats",
    "RejectedEntry",
    "ResourceStream",
    "format_instant",
    "max_last_updated",
    "parse_instant",
]

log = logging.getLogger("alliance_qi.fhir")

FHIR_JSON = "application/fhir+json"
PullMode = IncrementalMode  # one definition of the modes: the sources file, the resources, the pulls
Params = Mapping[str, Any] | Sequence[tuple[str, Any]] | None

# The clinical date each type can be windowed on when a server cannot search `_lastUpdated`.
# Windows on these dates catch *new* records but not late edits of old ones (an amended response
# keeps its `authored`), which is why `_lastUpdated` is always preferred.
DEFAULT_DATE_PARAMS: dict[str, str] = {
    "QuestionnaireResponse": "authored",
    "Encounter": "date",
    "Appointment": "date",
    "MedicationDispense": "whenhandedover",
    "MedicationRequest": "authoredon",
    "EpisodeOfCare": "date",
}

_TYPE_RE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_ID_RE = r"[A-Za-z0-9\-.]{1,64}"
_RELATIVE_REF_RE = re.compile(rf"(?P<type>[A-Z][A-Za-z]+)/(?P<id>{_ID_RE})(?:/_history/(?P<vid>{_ID_RE}))?")
_MAX_CANONICAL_CACHE = 1024
# Reads of one incremental search when its result set keeps changing under offset paging (`_run`).
_MAX_SEARCH_PASSES = 3
# Error bodies are read for their OperationOutcome only; a gateway's error page can be huge.
_MAX_ERROR_BODY = 64 * 1024
DEFAULT_MAX_PAGE_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024 * 1024
DEFAULT_MAX_STALE_PAGES = 5


# ---------------------------------------------------------------- instants


def parse_instant(value: str) -> datetime:
    """Parse a FHIR instant/dateTime (`2024-05-01T10:00:00.123+02:00`, `...Z`, `2024-05-01`, `2024-05`,
    `2024`) to an aware UTC datetime. Partial dates mean the start of that period, in UTC.

    Raises ValueError on anything else.
    """
    text = value.strip()
    if re.fullmatch(r"\d{4}", text):
        return datetime(int(text), 1, 1, tzinfo=UTC)
    if re.fullmatch(r"\d{4}-\d{2}", text):
        return datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
    match = re.fullmatch(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?)(\.\d+)?(Z|[+-]\d{2}:\d{2})?", text)
    if not match:
        raise ValueError(f"not a FHIR instant: {value!r}")
    main, fraction, zone = match.groups()
    # Python before 3.11 rejected >6 fractional digits and some servers send 7 (.NET ticks).
    micro = (fraction or ".0")[1:7].ljust(6, "0")
    parsed = datetime.fromisoformat(f"{main}.{micro}{'+00:00' if zone in (None, 'Z') else zone}")
    return parsed.astimezone(UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _utc(dt: datetime) -> datetime:
    # Naive datetimes (DuckDB TIMESTAMP columns come back naive) are taken to be UTC.
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def format_instant(dt: datetime, *, milliseconds: bool = False) -> str:
    """ISO 8601 UTC with `Z`. Seconds precision by default: the most portable form for search
    parameters (truncation only widens a `ge` search); milliseconds for Bulk `_since`, an instant.
    """
    dt = _utc(dt)
    if milliseconds:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def max_last_updated(resources: Iterable[Mapping[str, Any]]) -> datetime | None:
    """The newest `meta.lastUpdated` among `resources` (the caller's next watermark), or None.

    Resources without a parseable `meta.lastUpdated` are ignored.
    """
    newest: datetime | None = None
    for resource in resources:
        stamp = (resource.get("meta") or {}).get("lastUpdated")
        if not isinstance(stamp, str):
            continue
        try:
            when = parse_instant(stamp)
        except ValueError:
            continue
        if newest is None or when > newest:
            newest = when
    return newest


# ---------------------------------------------------------------- pages and stats


@dataclass
class RejectedEntry:
    """A page entry that could not be taken as a resource: its text as received and why."""

    text: str
    reason: str
    origin: str


@dataclass
class Page:
    """One searchset Bundle. `resources` holds the match entries only; `rejects` the undecodable ones."""

    url: str
    number: int
    resources: list[dict[str, Any]]
    total: int | None = None
    entries: int = 0  # raw entry count, matches included
    skipped: int = 0  # include / outcome / resource-less entries
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    next_url: str | None = None
    bytes: int = 0
    rejects: list[RejectedEntry] = field(default_factory=list)


@dataclass
class PullStats:
    """Progress of one search or pull, updated while it is iterated."""

    pages: int = 0
    fetched: int = 0  # raw entries seen, whatever their mode
    yielded: int = 0
    duplicates: int = 0
    skipped: int = 0
    bytes: int = 0
    seconds: float = 0.0
    windows: int = 0  # date windows (date_window mode) or searches run
    started: float = field(default_factory=time.monotonic, repr=False)
    last_url: str = field(default="", repr=False)  # the page the latest resources came from

    @property
    def rate(self) -> float:
        """Resources yielded per second so far."""
        return self.yielded / self.seconds if self.seconds > 0 else 0.0

    def touch(self) -> None:
        """Refresh `seconds` from the monotonic clock."""
        self.seconds = time.monotonic() - self.started

    def as_dict(self) -> dict[str, float | int]:
        """Plain numbers for run metadata."""
        return {
            "pages": self.pages,
            "fetched": self.fetched,
            "yielded": self.yielded,
            "duplicates": self.duplicates,
            "skipped": self.skipped,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
            "windows": self.windows,
        }


class ResourceStream(Iterator[dict[str, Any]]):
    """An iterator of resources that exposes its `stats`, the pull `mode` used and the `queries` run.

    Entries set aside while paging (undecodable text) collect in `rejects`; `take_rejects()`
    hands them over to the caller (the lander puts them in `raw.rejected`).
    """

    def __init__(
        self,
        source: Iterator[dict[str, Any]],
        stats: PullStats,
        mode: str,
        queries: list[tuple[str, list[tuple[str, str]]]],
        rejects: list[RejectedEntry] | None = None,
    ) -> None:
        self._source = source
        self.stats = stats
        self.mode = mode
        self.queries = queries
        self.rejects: list[RejectedEntry] = rejects if rejects is not None else []

    def take_rejects(self) -> list[RejectedEntry]:
        """The entries set aside since the last call (and forget them)."""
        taken, self.rejects[:] = list(self.rejects), []
        return taken

    def __iter__(self) -> ResourceStream:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._source)


def _param_list(params: Params) -> list[tuple[str, str]]:
    """Normalise a mapping (values may be lists, for repeated parameters) or pairs to pairs."""
    if not params:
        return []
    items = params.items() if isinstance(params, Mapping) else params
    out: list[tuple[str, str]] = []
    for key, value in items:
        if isinstance(value, (list, tuple)):
            out.extend((key, str(v)) for v in value)
        else:
            out.append((key, str(value)))
    return out


def _dedupe_key(resource: Mapping[str, Any]) -> tuple[str, str, str | None] | None:
    rid = resource.get("id")
    if not rid:
        return None
    meta = resource.get("meta") or {}
    # Servers without versioning send no versionId; lastUpdated then tells versions apart.
    return (str(resource.get("resourceType")), str(rid), meta.get("versionId") or meta.get("lastUpdated"))


def _flags_param(page: Page, name: str) -> bool:
    """True when the page's OperationOutcome names search parameter `name` (sekmet, HAPI in lenient
    mode and others report an unknown parameter this way, then ignore it)."""
    quoted = (f"'{name}'", f'"{name}"', f" {name} ", f" {name};", f" {name}.", f"{name}=")
    for outcome in page.outcomes:
        for issue in outcome.get("issue") or []:
            text = f" {issue.get('diagnostics') or ''} "
            if issue.get("severity") in ("warning", "error", "fatal") and any(q in text for q in quoted):
                return True
    return False


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; orjson refuses them and so does the lenient parse.
    raise ValueError(f"{name} is not valid JSON")


def _text_as_received(resource: Any) -> bytes:
    """The bytes of a leniently parsed entry, as close to what the server sent as they can be.

    Undecodable bytes came in as surrogate escapes and go back out as the same bytes; a lone
    surrogate that arrived as a `\ud800` escape cannot be encoded, so it is written as that escape.
    """
    try:
        return json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "surrogateescape"
        )
    except UnicodeEncodeError:
        return json.dumps(resource, separators=(",", ":")).encode()


def _read_capped(response: requests.Response, cap: int) -> bytes:
    """At most `cap` bytes of the body (works for streamed and already-read responses)."""
    if not response.raw or getattr(response, "_content_consumed", False):
        return response.content[:cap]
    try:
        return response.raw.read(cap, decode_content=True) or b""
    except (requests.RequestException, OSError, ValueError):
        return b""


def _check_length(response: requests.Response, limit: int, what: str, setting: str) -> None:
    """Refuse before reading when `Content-Length` already announces more than `limit` bytes."""
    announced = response.headers.get("Content-Length")
    if announced and announced.isdigit() and int(announced) > limit:
        raise LimitExceededError(
            f"GET {redact_url(response.url or '')}: the server announces a {what} of {announced} bytes, "
            f"more than {setting}={limit}; not read"
        )


def _version_key(version: str | None) -> tuple[Any, ...]:
    """Semantic-ish ordering: numeric parts numerically, `2.0.0` > `2.0.0-beta`, any version > none."""
    if not version:
        return (0,)
    parts: list[tuple[Any, ...]] = []
    for token in re.findall(r"\d+|[A-Za-z]+", version):
        parts.append((2, int(token)) if token.isdigit() else (0, token.lower()))
    parts.append((1,))  # end marker: sorts above a pre-release tag, below a further number
    return (1, tuple(parts))


# ---------------------------------------------------------------- the client


def _http_date(value: str | None) -> datetime | None:
    """An HTTP `Date` header (RFC 9110 IMF-fixdate, second resolution) as an aware UTC datetime;
    None when absent or unparseable (a server's malformed header is not an error of the pull)."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else None


class FhirClient:
    """FHIR R4 REST client over one `requests.Session`. Not thread-safe: use one per thread."""

    def __init__(
        self,
        base_url: str,
        auth: Auth | None = None,
        timeout: tuple[float, float] = (10, 120),
        retry: RetryPolicy | None = None,
        page_size: int = 500,
        max_pages: int = 100_000,
        session: requests.Session | None = None,
        user_agent: str = "alliance-qi/0.1",
        logger: logging.Logger | None = None,
        *,
        log_every_pages: int = 20,
        clock: Callable[[], datetime] = _utcnow,
        trusted_origins: Iterable[str] = (),
        max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        max_stale_pages: int = DEFAULT_MAX_STALE_PAGES,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {redact_url(base_url)!r}")
        if page_size < 1 or max_pages < 1:
            raise ValueError("page_size and max_pages must be positive")
        if max_page_bytes < 1 or max_download_bytes < 1 or max_stale_pages < 1:
            raise ValueError("max_page_bytes, max_download_bytes and max_stale_pages must be positive")
        self.base_url = base_url.rstrip("/")
        self.auth: Auth = auth if auth is not None else NoAuth()
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.page_size = page_size
        self.max_pages = max_pages
        self.session = session or requests.Session()
        self.user_agent = user_agent
        self.log = logger or log
        self.log.addFilter(redacting_filter)
        self.log_every_pages = max(1, log_every_pages)
        self.clock = clock
        self.trusted_origins = frozenset(origin_of(o) for o in trusted_origins)
        self.max_page_bytes = max_page_bytes
        self.max_download_bytes = max_download_bytes
        self.max_stale_pages = max_stale_pages
        # The server's clock as its last response's `Date` header gave it (None before any response,
        # or when the server sends none): a patient-scoped pull's watermark is the server time at
        # its start, not the newest resource it saw (see pipelines.extract._pull_per_patient).
        self.server_date: datetime | None = None
        self._capability: dict[str, Any] | None = None
        self._param_support: dict[tuple[str, str], bool] = {}
        self._canonical_cache: dict[tuple[str, str], dict[str, Any] | None] = {}
        bind = getattr(self.auth, "bind", None)
        if callable(bind):  # SMART discovery needs the FHIR base and can reuse our session
            bind(self.base_url, self.session)

    def __repr__(self) -> str:
        return f"FhirClient({self.base_url!r}, auth={self.auth!r})"

    # ---------------- credentials ----------------

    def credential_refusal(self, url: str) -> str | None:
        """Why credentials must not go to `url` (None when they may).

        They may go to the base URL's origin and to the configured `trusted_origins`, and never over
        plain http when the base URL is https (a token sent in clear can be read on the way).
        """
        scheme = urlsplit(url).scheme.lower()
        if scheme != "https" and urlsplit(self.base_url).scheme.lower() == "https":
            return f"it is plain {scheme or 'non-https'} while the configured server uses https"
        target = origin_of(url)
        if target == origin_of(self.base_url) or target in self.trusted_origins:
            return None
        return "it is another origin than the configured server's and not in trusted_origins"

    def credentials_allowed(self, url: str) -> bool:
        """True when `request(..., authenticate=True)` may send credentials to `url`."""
        return self.credential_refusal(url) is None

    def mask(self, text: str) -> str:
        """Server-controlled `text` with the current credentials and credential patterns masked."""
        return mask_secrets(text, auth_secrets(self.auth))

    # ---------------- HTTP ----------------

    def url(self, url_or_path: str) -> str:
        """An absolute URL: absolute input unchanged, anything else relative to the base URL."""
        if url_or_path.startswith(("http://", "https://")):
            return url_or_path
        return f"{self.base_url}/{url_or_path.lstrip('/')}"

    def request(
        self,
        method: str,
        url_or_path: str,
        params: Params = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        stream: bool = False,
        *,
        data: bytes | Mapping[str, str] | None = None,
        accept_status: Iterable[int] = (),
        authenticate: bool = True,
    ) -> requests.Response:
        """Send one request with auth, the retry policy and the re-authorise-once rule.

        Returns the response when the status is below 400 or listed in `accept_status`; raises
        `TemporaryNetworkError` when retries run out, `AuthError` on 403 or a second 401, and
        `FatalNetworkError` for any other error status. `authenticate=False` sends no credentials
        (Bulk files with `requiresAccessToken: false`, often on another host).
        """
        method = method.upper()
        url = self.url(url_or_path)
        plist = _param_list(params)
        if plist:
            # Encode once, so retries and error messages see the URL actually sent (names kept).
            url = str(requests.Request(method, url, params=plist).prepare().url)
        if authenticate and not isinstance(self.auth, NoAuth):
            # Checked before the first attempt: a next link, a Bulk status URL or file URL comes
            # from the server, and a hostile or misconfigured one can name any host.
            refusal = self.credential_refusal(url)
            if refusal is not None:
                raise UntrustedOriginError(url, self.base_url, refusal)
        accepted = frozenset(accept_status)
        body = data
        base_headers = {"Accept": FHIR_JSON, "User-Agent": self.user_agent}
        if json is not None:
            body = orjson.dumps(json)
            base_headers["Content-Type"] = FHIR_JSON
        base_headers.update(headers or {})

        def build_headers() -> dict[str, str]:
            sent = dict(base_headers)
            if authenticate:
                self.auth.apply(sent)
            return sent

        budget = RetryBudget(self.retry, method, url)
        reauthorised = False
        started = time.monotonic()
        while True:
            response = send_with_retry(
                self.session,
                method,
                url,
                policy=self.retry,
                timeout=self.timeout,
                headers=build_headers,
                budget=budget,
                data=body,
                stream=stream,
            )
            status = response.status_code
            self.server_date = _http_date(response.headers.get("Date")) or self.server_date
            if self.log.isEnabledFor(logging.DEBUG):
                self.log.debug(
                    "%s %s -> %d in %.2fs",
                    method,
                    redact_url(response.url or url),
                    status,
                    time.monotonic() - started,
                )
            if status < 400 or status in accepted:
                return response
            failed_url = response.url or url
            # Server text is masked: an error page may echo our Authorization header.
            diagnostics = outcome_diagnostics(_read_capped(response, _MAX_ERROR_BODY))
            diagnostics = self.mask(diagnostics) if diagnostics else None
            reason_phrase = self.mask(response.reason) if response.reason else None
            response.close()
            if status == 401 and authenticate and not isinstance(self.auth, NoAuth):
                if not reauthorised:
                    # Tokens are revoked early, or a server restart forgets them: mint a new one, once.
                    reauthorised = True
                    self.log.info("%s %s: 401, re-authorising once", method, redact_url(failed_url))
                    self.auth.invalidate()
                    continue
                raise AuthError(
                    method,
                    failed_url,
                    401,
                    reason="still unauthorised after re-authorising",
                    diagnostics=diagnostics,
                )
            if status in (401, 403):
                raise AuthError(method, failed_url, status, reason=reason_phrase, diagnostics=diagnostics)
            raise FatalNetworkError(method, failed_url, status, reason=reason_phrase, diagnostics=diagnostics)

    def get_json(self, url_or_path: str, params: Params = None) -> dict[str, Any]:
        """GET and parse a JSON object; a non-JSON body (a proxy's HTML page) is a FatalNetworkError."""
        response = self.request("GET", url_or_path, params=params)
        return self.json_object(response, "GET")

    @staticmethod
    def json_object(response: requests.Response, method: str = "GET") -> dict[str, Any]:
        """The response body as a JSON object; anything else is a FatalNetworkError naming the URL."""
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise FatalNetworkError(
                method,
                response.url,
                response.status_code,
                reason=f"response is not JSON (Content-Type {response.headers.get('Content-Type')!r})",
            ) from None
        if not isinstance(body, dict):
            raise FatalNetworkError(
                method, response.url, response.status_code, reason="response is JSON but not an object"
            )
        return body

    def download(
        self, url: str, dest: Path, *, authenticate: bool = True, accept: str = "application/fhir+ndjson"
    ) -> tuple[int, int]:
        """Stream `url` to `dest` (via `dest.part`, then an atomic rename); return (bytes, lines).

        A connection dropped mid-body restarts the download under the retry policy; the partial
        file is overwritten, so a retried download never leaves half a file behind. The file is
        owner-only (0600) from its creation: it holds record-level data (`pipelines.filemodes`).
        """
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        budget = RetryBudget(self.retry, "GET", url)
        while True:
            budget.start_attempt()
            response = self.request(
                "GET", url, headers={"Accept": accept}, stream=True, authenticate=authenticate
            )
            size = lines = 0
            last = b"\n"
            try:
                _check_length(response, self.max_download_bytes, "download", "max_download_bytes")
                with _open_private(partial) as out:
                    for chunk in response.iter_content(chunk_size=1 << 20):
                        if not chunk:
                            continue
                        size += len(chunk)
                        if size > self.max_download_bytes:
                            raise LimitExceededError(
                                f"GET {redact_url(url)}: download larger than max_download_bytes="
                                f"{self.max_download_bytes}; stopped reading"
                            )
                        out.write(chunk)
                        lines += chunk.count(b"\n")
                        last = chunk[-1:]
            except NETWORK_ERRORS as exc:
                budget.wait_or_raise(cause=exc)
                continue
            except LimitExceededError:
                partial.unlink(missing_ok=True)
                raise
            finally:
                response.close()
            os.replace(partial, dest)
            return size, lines + (last != b"\n")  # a last line without its newline still counts

    # ---------------- capability ----------------

    def capability(self) -> dict[str, Any]:
        """The server's CapabilityStatement (`GET /metadata`), fetched once per client."""
        if self._capability is None:
            self._capability = self.get_json("metadata")
        return self._capability

    def supports_search_param(self, resource_type: str, name: str) -> bool | None:
        """Whether the CapabilityStatement lists search parameter `name` for `resource_type`.

        True/False from `rest[0].resource[type].searchParam` (or the all-types `rest[0].searchParam`);
        None when the type is absent from the statement, or the statement cannot be read.
        """
        try:
            cap = self.capability()
        except AuthError:
            raise
        except FatalNetworkError as exc:
            # Some gateways protect /metadata or do not serve it; fall back to probing.
            self.log.warning("no CapabilityStatement (%s); search support will be probed", exc)
            self._capability = {}
            return None
        rests = cap.get("rest") or []
        rest = next((r for r in rests if r.get("mode") == "server"), rests[0] if rests else None)
        if not isinstance(rest, dict):
            return None
        for resource in rest.get("resource") or []:
            if resource.get("type") == resource_type:
                names = {p.get("name") for p in resource.get("searchParam") or []}
                names |= {p.get("name") for p in rest.get("searchParam") or []}
                return name in names
        return None

    def param_supported(self, resource_type: str, name: str, scope: Params = None) -> bool:
        """Capability answer when there is one, else a cached probe (date parameters only).

        Probe: search `name=gt<tomorrow>` (`_lastUpdated`) or `name=lt1800-01-01` (clinical dates,
        where future appointments and open-ended periods exist) with `_count=1`. A server that
        honours the parameter finds nothing; one that ignores it returns entries; one that
        rejects it answers 400 or says so in an OperationOutcome. An empty server reads as
        "supported", which is harmless: an ignored filter only makes the pull wider. `scope` is sent
        with the probe: an EHR that refuses a search without `patient` needs one.
        """
        listed = self.supports_search_param(resource_type, name)
        if listed is not None:
            return listed
        key = (resource_type, name)
        if key not in self._param_support:
            self._param_support[key] = self._probe(resource_type, name, _param_list(scope))
        return self._param_support[key]

    def _probe(self, resource_type: str, name: str, scope: list[tuple[str, str]]) -> bool:
        if name == "_lastUpdated":
            value = "gt" + format_instant(self.clock() + timedelta(days=1))
        else:
            value = "lt1800-01-01"
        try:
            response = self.request("GET", resource_type, params=[*scope, (name, value), ("_count", "1")])
        except FatalNetworkError as exc:
            if isinstance(exc, AuthError) or exc.status not in (400, 422):
                raise
            self.log.info("probe %s?%s=…: HTTP %s, parameter not supported", resource_type, name, exc.status)
            return False
        page = self._page(self.json_object(response, "GET"), response.url, 1, len(response.content))
        flagged = _flags_param(page, name)
        supported = not page.resources and not flagged
        self.log.info(
            "probe %s?%s=…: %d entries%s -> %s",
            resource_type,
            name,
            len(page.resources),
            ", flagged in OperationOutcome" if flagged else "",
            "supported" if supported else "NOT supported (ignored by the server)",
        )
        return supported

    # ---------------- search ----------------

    def search_pages(self, resource_type: str, params: Params = None) -> Iterator[Page]:
        """Pages of `GET {base}/{type}?{params}&_count={page_size}`, following next links verbatim.

        Stops at the first page without a next link or without match entries. Raises FhirError
        when more than `max_pages` pages would be fetched (protection against next-link loops),
        when a next link repeats a URL already fetched, or after `max_stale_pages` consecutive
        pages that bring only resources already seen in this search (a cursor that changes while
        the server serves the same page). A next link to an origin that may not receive our
        credentials raises UntrustedOriginError (from `request`); a page over `max_page_bytes`
        raises LimitExceededError. Entries with undecodable text are in each page's `rejects`.
        """
        if not _TYPE_RE.fullmatch(resource_type):
            raise ValueError(f"not a FHIR resource type: {resource_type!r}")
        plist = _param_list(params)
        if not any(k == "_count" for k, _ in plist):
            plist.append(("_count", str(self.page_size)))
        url: str | None = requests.Request("GET", self.url(resource_type), params=plist).prepare().url
        fetched: set[str] = set()
        number = 0
        seen_keys: set[tuple[str, str, str | None]] = set()
        stale = 0
        while url is not None:
            if url in fetched:
                raise FhirError(
                    f"{resource_type} search: the next link after page {number} repeats a page already "
                    f"fetched ({redact_url(url)}); the server's paging loops, stopping"
                )
            if number >= self.max_pages:
                raise FhirError(
                    f"{resource_type} search: more than max_pages={self.max_pages} pages; stopping to "
                    f"protect against a next-link loop (raise max_pages if the data really is this big)"
                )
            number += 1
            fetched.add(url)
            body, content_type = self._get_page(url)
            bundle, decode_error = self._load_page(body, url, content_type)
            page = self._page(bundle, url, number, len(body))
            if decode_error is not None:
                self._set_aside_undecodable(page, decode_error)
            if number == 1:
                self._log_outcomes(resource_type, page)
            # A cursor that changes on every page while the server serves the same resources again
            # would otherwise run to max_pages (hours, times every step retry).
            keys = {k for k in map(_dedupe_key, page.resources) if k is not None}
            stale = stale + 1 if keys and keys <= seen_keys else 0
            seen_keys |= keys
            if stale >= self.max_stale_pages:
                raise FhirError(
                    f"{resource_type} search: {stale} consecutive pages (up to page {number}) brought "
                    f"only resources already seen in this search; the server's paging does not advance, "
                    f"stopping (max_stale_pages={self.max_stale_pages})"
                )
            yield page
            if not page.resources:
                # Some servers (seen on offset-paged facades) send a next link to an empty page,
                # and then another one after it.
                break
            url = page.next_url

    def _get_page(self, url: str) -> tuple[bytes, str | None]:
        """GET one search page, reading at most `max_page_bytes`; (body, Content-Type).

        The body is streamed so that an endless or huge answer is cut off at the limit instead of
        filling memory; a connection dropped mid-body is retried like any network failure.
        """
        budget = RetryBudget(self.retry, "GET", url)
        while True:
            budget.start_attempt()
            response = self.request("GET", url, stream=True)
            try:
                _check_length(response, self.max_page_bytes, "page", "max_page_bytes")
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_content(chunk_size=1 << 16):
                    size += len(chunk)
                    if size > self.max_page_bytes:
                        raise LimitExceededError(
                            f"GET {redact_url(url)}: page larger than max_page_bytes={self.max_page_bytes}; "
                            f"stopped reading (raise the source's max_page_bytes or lower page_size)"
                        )
                    chunks.append(chunk)
            except NETWORK_ERRORS as exc:
                budget.wait_or_raise(cause=exc)
                continue
            finally:
                response.close()
            return b"".join(chunks), response.headers.get("Content-Type")

    @staticmethod
    def _load_page(body: bytes, url: str, content_type: str | None) -> tuple[dict[str, Any], str | None]:
        """The page as a JSON object, and orjson's error when the strict parse failed on the text.

        orjson refuses the whole page for one byte that is not UTF-8 (a Latin-1 `é`) or one lone
        surrogate escape (`\ud800`). The lenient second parse keeps such text (as surrogates), so
        the entries around it can land; `_set_aside_undecodable` then rejects the entry that holds
        it. A body that is not JSON at all (cut off, an HTML error page) still fails the page.
        """
        try:
            data = orjson.loads(body)
            decode_error = None
        except orjson.JSONDecodeError as exc:
            decode_error = str(exc)
            try:
                data = json.loads(body.decode("utf-8", errors="surrogateescape"), parse_constant=_no_constant)
            except (ValueError, RecursionError):
                raise FatalNetworkError(
                    "GET", url, 200, reason=f"response is not JSON (Content-Type {content_type!r})"
                ) from None
        if not isinstance(data, dict):
            raise FatalNetworkError("GET", url, 200, reason="response is JSON but not an object")
        return data, decode_error

    def _set_aside_undecodable(self, page: Page, page_error: str) -> None:
        """Move entries that orjson cannot encode (they hold undecodable text) to `page.rejects`."""
        keep: list[dict[str, Any]] = []
        for resource in page.resources:
            try:
                orjson.dumps(resource)
            except orjson.JSONEncodeError as exc:
                raw = _text_as_received(resource)
                try:
                    orjson.loads(raw)
                    reason = f"cannot be encoded: {exc}"
                except orjson.JSONDecodeError as decode_exc:
                    reason = f"undecodable text in the entry: {decode_exc}"
                    try:
                        raw.decode("utf-8")
                    except UnicodeDecodeError as utf8:
                        # orjson checks UTF-8 before parsing and reports column 1; say where the byte is.
                        reason += f" (byte 0x{raw[utf8.start]:02x} at offset {utf8.start} of the entry)"
                page.rejects.append(
                    RejectedEntry(
                        raw.decode("utf-8", errors="backslashreplace"), reason, redact_url(page.url)
                    )
                )
                continue
            keep.append(resource)
        self.log.warning(
            "page %d of %s: not valid UTF-8 JSON (%s); %d entr%s set aside, %d kept",
            page.number,
            redact_url(page.url),
            page_error,
            len(page.rejects),
            "y" if len(page.rejects) == 1 else "ies",
            len(keep),
        )
        page.resources = keep

    @staticmethod
    def _page(bundle: dict[str, Any], url: str, number: int, size: int) -> Page:
        if bundle.get("resourceType") != "Bundle":
            got = bundle.get("resourceType")
            raise FatalNetworkError("GET", url, reason=f"expected a Bundle, got {got!r}")
        entries = bundle.get("entry") or []
        resources: list[dict[str, Any]] = []
        outcomes: list[dict[str, Any]] = []
        skipped = 0
        for entry in entries:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict):
                skipped += 1
                continue
            mode = (entry.get("search") or {}).get("mode")
            if mode == "outcome" or resource.get("resourceType") == "OperationOutcome":
                outcomes.append(resource)
                skipped += 1
            elif mode in (None, "match"):
                resources.append(resource)
            else:  # include
                skipped += 1
        next_url = None
        for link in bundle.get("link") or []:
            if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
                # Verbatim when absolute (spec); a few servers send relative links: resolve them.
                next_url = urljoin(url, str(link["url"]))
                break
        total = bundle.get("total")
        return Page(
            url=url,
            number=number,
            resources=resources,
            total=total if isinstance(total, int) else None,
            entries=len(entries),
            skipped=skipped,
            outcomes=outcomes,
            next_url=next_url,
            bytes=size,
        )

    def _log_outcomes(self, resource_type: str, page: Page) -> None:
        for outcome in page.outcomes:
            for issue in outcome.get("issue") or []:
                severity = issue.get("severity")
                if severity in ("warning", "error", "fatal"):
                    # Usually "unknown parameter ... ignored": the filter did not happen server-side.
                    # Every search whose parameters a server may ignore filters on the client as well
                    # (`_lastUpdated` is probed first; canonicals are matched by exact url and
                    # version), so an ignored parameter is news, not a fault: INFO. Errors stay WARNING.
                    ignored = severity == "warning" and issue.get("code") == "not-supported"
                    self.log.log(
                        logging.INFO if ignored else logging.WARNING,
                        "%s search: server says %s/%s: %s",
                        resource_type,
                        issue.get("severity"),
                        issue.get("code"),
                        self.mask(str(issue.get("diagnostics") or "")[:200]),
                    )

    def search(self, resource_type: str, params: Params = None) -> ResourceStream:
        """Resources matching a search, across all pages, each (type, id, versionId) once.

        The returned iterator's `stats` (`PullStats`) is updated as it is consumed.
        """
        stats = PullStats()
        queries = [(resource_type, _param_list(params))]
        rejects: list[RejectedEntry] = []
        return ResourceStream(self._run(queries, stats, rejects=rejects), stats, "search", queries, rejects)

    def _run(
        self,
        queries: list[tuple[str, list[tuple[str, str]]]],
        stats: PullStats,
        window_param: str | None = None,
        *,
        verify: bool = False,
        rejects: list[RejectedEntry] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Run searches in order with one de-duplication set and one stats object.

        With `window_param` (date_window pulls): if the first window's first page says the server
        ignored that parameter, the window already returned everything, so the remaining
        windows are skipped instead of fetching the whole set once per window.

        With `verify` (incremental pulls): a search whose result set visibly changed while it was
        paged is read again. Offset-paged servers (sekmet-fhir, simple facades) order live rows;
        a resource updated between two pages moves to the end and every row after its old place
        shifts one place up, so the row at the next page boundary is never served. That row is
        not new, so no later `_lastUpdated` pull finds it again: lost for good. The signs are a
        resource seen again with another version, or `Bundle.total` shrinking; a re-read pass
        yields only versions not yet seen (the rest count as duplicates), up to
        `_MAX_SEARCH_PASSES` passes.
        """
        seen: set[tuple[str, str, str | None]] = set()
        for index, (resource_type, params) in enumerate(queries):
            stats.windows += 1
            ignored = False
            for attempt in range(1, (_MAX_SEARCH_PASSES if verify else 1) + 1):
                changed = False
                versions: dict[str, str | None] = {}  # id -> version first seen in this pass
                last_total: int | None = None
                for page in self.search_pages(resource_type, params):
                    stats.pages += 1
                    stats.fetched += page.entries
                    stats.skipped += page.skipped
                    stats.bytes += page.bytes
                    stats.last_url = page.url
                    if rejects is not None:
                        rejects.extend(page.rejects)
                    stats.touch()
                    if index == 0 and page.number == 1 and window_param and attempt == 1:
                        ignored = _flags_param(page, window_param)
                    if page.total is not None:
                        changed |= last_total is not None and page.total < last_total
                        last_total = page.total
                    if stats.pages % self.log_every_pages == 0:
                        self.log.info(
                            "%s: %d pages, %d resources, %.0f/s",
                            resource_type,
                            stats.pages,
                            stats.yielded,
                            stats.rate,
                        )
                    for resource in page.resources:
                        key = _dedupe_key(resource)
                        if key is not None:
                            changed |= versions.setdefault(key[1], key[2]) != key[2]
                            if key in seen:
                                stats.duplicates += 1
                                continue
                            seen.add(key)
                        stats.yielded += 1
                        yield resource
                    stats.touch()
                if not (verify and changed):
                    break
                if attempt < _MAX_SEARCH_PASSES:
                    self.log.warning(
                        "%s: the result set changed while it was paged (a resource was updated or "
                        "deleted mid-pull); offset paging may have skipped resources, so the search "
                        "is read again (pass %d of %d)",
                        resource_type,
                        attempt + 1,
                        _MAX_SEARCH_PASSES,
                    )
                else:
                    self.log.warning(
                        "%s: the result set was still changing after %d passes; resources at page "
                        "boundaries may have been skipped until they next change",
                        resource_type,
                        _MAX_SEARCH_PASSES,
                    )
            if ignored and len(queries) > 1:
                self.log.warning(
                    "%s: the server ignored %s, so the first window was a full pull; "
                    "skipping the other %d window(s)",
                    resource_type,
                    window_param,
                    len(queries) - 1,
                )
                break
        stats.touch()
        self.log.info(
            "%s: done, %d pages, %d resources (%d duplicates dropped) in %.1fs, %.0f/s",
            ", ".join(sorted({t for t, _ in queries})),
            stats.pages,
            stats.yielded,
            stats.duplicates,
            stats.seconds,
            stats.rate,
        )

    # ---------------- incremental ----------------

    def resolve_mode(
        self, resource_type: str, mode: PullMode = "auto", date_param: str | None = None, scope: Params = None
    ) -> Literal["last_updated", "date_window", "full"]:
        """The concrete pull mode `pull(mode=...)` will use for `resource_type` on this server
        (`scope`: parameters every search of this pull carries, sent with any probe)."""
        if mode != "auto":
            return mode
        if self.param_supported(resource_type, "_lastUpdated", scope):
            return "last_updated"
        param = date_param or DEFAULT_DATE_PARAMS.get(resource_type)
        if param and self.param_supported(resource_type, param, scope):
            return "date_window"
        self.log.warning(
            "%s: server supports neither _lastUpdated nor %s search; pulling everything",
            resource_type,
            param or "a date parameter",
        )
        return "full"

    def pull(
        self,
        resource_type: str,
        since: datetime | None,
        overlap: timedelta = timedelta(minutes=5),
        mode: PullMode = "auto",
        date_param: str | None = None,
        window: timedelta = timedelta(days=30),
        until: datetime | None = None,
        *,
        params: Params = None,
        floor: datetime | None = None,
    ) -> ResourceStream:
        """Resources changed since the watermark `since` (minus `overlap`), each version once.

        Modes: `last_updated` searches `_lastUpdated=ge{since - overlap}` (and `lt{until}`);
        `date_window` runs consecutive `[start, start + window)` searches on the type's clinical
        date parameter from `since - overlap` (or `floor`) to `until`, the last window open-ended
        when `until` is None so future-dated records (appointments) are not lost; `full` pulls
        everything; `auto` picks `last_updated` when the server supports it, else `date_window`,
        else `full`. `since=None` means a full pull (or windows from `floor`). The overlap absorbs
        clock skew and transactions that commit after our previous pull read past them; the
        duplicates it brings back are the caller's idempotent merge to absorb. The caller computes
        the next watermark with `max_last_updated` over what it stored.
        """
        if overlap < timedelta(0) or window <= timedelta(0):
            raise ValueError("overlap must be >= 0 and window > 0")
        base = _param_list(params)
        chosen = self.resolve_mode(resource_type, mode, date_param, base)
        window_param: str | None = None
        start = _utc(since) - overlap if since is not None else None
        queries: list[tuple[str, list[tuple[str, str]]]]
        if chosen == "last_updated":
            extra = [("_lastUpdated", f"ge{format_instant(start)}")] if start is not None else []
            if until is not None:
                extra.append(("_lastUpdated", f"lt{format_instant(until)}"))
            queries = [(resource_type, base + extra)]
        elif chosen == "date_window":
            param = date_param or DEFAULT_DATE_PARAMS.get(resource_type)
            if not param:
                raise ValueError(f"date_window mode needs date_param for {resource_type}")
            first = start if start is not None else (_utc(floor) if floor is not None else None)
            if first is None:
                self.log.info(
                    "%s: no watermark and no floor date; date_window becomes a full pull", resource_type
                )
                queries = [(resource_type, base)]
                chosen = "full"
            else:
                queries = [(resource_type, base + w) for w in self._windows(param, first, until, window)]
                window_param = param
        else:
            queries = [(resource_type, base)]
        self.log.info(
            "%s: pull mode %s, %d search(es), since %s (overlap %s)",
            resource_type,
            chosen,
            len(queries),
            format_instant(since) if since else "the beginning",
            overlap,
        )
        stats = PullStats()
        rejects: list[RejectedEntry] = []
        return ResourceStream(
            self._run(queries, stats, window_param, verify=True, rejects=rejects),
            stats,
            chosen,
            queries,
            rejects,
        )

    def _windows(
        self, param: str, first: datetime, until: datetime | None, window: timedelta
    ) -> list[list[tuple[str, str]]]:
        # Whole seconds, so consecutive windows share exact boundaries however the server truncates.
        start = first.replace(microsecond=0)
        end = _utc(until) if until is not None else None
        horizon = end if end is not None else self.clock()
        windows: list[list[tuple[str, str]]] = []
        while True:
            stop = start + window
            if stop >= horizon:
                last = [(param, f"ge{format_instant(start)}")]
                if end is not None:
                    last.append((param, f"lt{format_instant(end)}"))
                windows.append(last)
                return windows
            windows.append([(param, f"ge{format_instant(start)}"), (param, f"lt{format_instant(stop)}")])
            start = stop

    # ---------------- read and canonical resolution ----------------

    def read(self, reference: str) -> dict[str, Any] | None:
        """Read `Type/id` (or `Type/id/_history/vid`, or an absolute URL on this server); None on 404/410.

        Absolute URLs on other servers are refused (ValueError): references come from data, and
        following them would send our credentials wherever a resource points.
        """
        if reference.startswith("#"):
            raise ValueError("contained reference: resolve it inside the containing resource")
        if reference.startswith(("http://", "https://")):
            path = self._server_path(reference)
            if path is None:
                raise ValueError(
                    f"reference is not on this server ({self.base_url}): {redact_url(reference)}"
                )
        else:
            path = reference.strip("/")
        if not _RELATIVE_REF_RE.fullmatch(path):
            raise ValueError(f"not a literal reference Type/id: {reference!r}")
        response = self.request("GET", path, accept_status=(404, 410))
        if response.status_code in (404, 410):
            response.close()
            return None
        return self.json_object(response, "GET")

    def _server_path(self, url: str) -> str | None:
        """`Type/id...` when `url` lies under this server's base URL, else None."""
        if not same_origin(url, self.base_url):
            return None
        base_path = urlsplit(self.base_url).path.rstrip("/")
        path = urlsplit(url).path
        if not path.startswith(base_path + "/"):
            return None
        return path[len(base_path) + 1 :]

    def resolve_canonical(self, resource_type: str, canonical: str) -> dict[str, Any] | None:
        """The resource a canonical (`url` or `url|version`) or server reference points to, or None.

        `Type/id` and absolute URLs on this server are read by id (some Questionnaires have no
        `url` and their responses point at the server copy). Otherwise search `?url=` (and
        `&version=`) and filter on the client by exact `url` and `version`, because many servers
        ignore `url`/`version` they do not index and return everything. Without a version the
        highest `version` wins, then the newest `meta.lastUpdated`. Contained references (`#id`)
        return None: they live in the referring resource. Results are cached per client.
        """
        canonical = canonical.strip()
        if not canonical or canonical.startswith("#"):
            return None
        key = (resource_type, canonical)
        if key in self._canonical_cache:
            return self._canonical_cache[key]
        result = self._resolve_canonical(resource_type, canonical)
        if len(self._canonical_cache) >= _MAX_CANONICAL_CACHE:
            self._canonical_cache.pop(next(iter(self._canonical_cache)))
        self._canonical_cache[key] = result
        return result

    def _resolve_canonical(self, resource_type: str, canonical: str) -> dict[str, Any] | None:
        url, _, version = canonical.partition("|")
        if re.fullmatch(rf"{resource_type}/{_ID_RE}", url):
            return self.read(url)
        server_path = self._server_path(url) if url.startswith(("http://", "https://")) else None
        if server_path and re.fullmatch(rf"{resource_type}/{_ID_RE}", server_path):
            found = self.read(server_path)
            if found is not None:
                return found  # else: a canonical that merely looks like a server URL; search it
        params: list[tuple[str, str]] = [("url", url)]
        if version:
            params.append(("version", version))
        candidates = [
            r
            for r in self.search(resource_type, params)
            if r.get("url") == url and (not version or r.get("version") == version)
        ]
        if not candidates:
            self.log.info("%s canonical %s not found on the server", resource_type, canonical)
            return None

        def newest(resource: dict[str, Any]) -> tuple[Any, ...]:
            stamp = (resource.get("meta") or {}).get("lastUpdated")
            try:
                when = parse_instant(stamp) if isinstance(stamp, str) else datetime.min.replace(tzinfo=UTC)
            except ValueError:
                when = datetime.min.replace(tzinfo=UTC)
            return (_version_key(resource.get("version")), when)

        return max(candidates, key=newest)

    def clear_caches(self) -> None:
        """Forget the CapabilityStatement, probe answers and resolved canonicals."""
        self._capability = None
        self._param_support.clear()
        self._canonical_cache.clear()


def _open_private(path: Path) -> BinaryIO:
    """`path` truncated for writing, owner-only (0600) from its first byte, also if it existed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    os.fchmod(fd, PRIVATE_FILE)  # an existing file keeps its old mode through O_CREAT
    return os.fdopen(fd, "wb")
