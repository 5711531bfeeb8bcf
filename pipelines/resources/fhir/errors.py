"""Errors raised by the FHIR client, and the URL redaction every error message goes through.

Two kinds of failure matter to the caller (the split follows smart-on-fhir/cumulus-etl):
- `TemporaryNetworkError`: the server or network was unwell and stayed unwell for the whole retry
  budget; running again later may well succeed.
- `FatalNetworkError`: the request itself is wrong (404, 400, 403 ...); retrying cannot help.

`is_fatal(exc)` tells the orchestrator which failures a step retry cannot cure (a refused
credential, an untrusted origin, a 4xx, a size limit): those fail the step at once instead of
costing three attempts (three failed logins against the EHR).

Messages name the method and URL so an operator can find the failing call, but query *values*
are replaced by `…`: search parameters such as `patient=`, `identifier=` or `name=` identify
patients and error messages end up in logs, Dagster event records and tickets.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import orjson

__all__ = [
    "AuthError",
    "FatalNetworkError",
    "FhirError",
    "LimitExceededError",
    "TemporaryNetworkError",
    "UntrustedOriginError",
    "is_fatal",
    "origin_of",
    "outcome_diagnostics",
    "redact_url",
]

# Error bodies are read for their OperationOutcome only; a proxy's HTML error page can be large.
_MAX_BODY_FOR_DIAGNOSTICS = 64 * 1024
_MAX_DIAGNOSTICS_CHARS = 500


def redact_url(url: str) -> str:
    """Return `url` with every query value replaced by `…` (names kept) and any user:password removed.

    `https://ehr/fhir/Patient?identifier=123&_count=50` -> `https://ehr/fhir/Patient?identifier=…&_count=…`
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc.rsplit("@", 1)[-1]  # never echo credentials embedded in a URL
    if parts.query:
        names = [name for name, _ in parse_qsl(parts.query, keep_blank_values=True)]
        query = "&".join(f"{name}=…" for name in names) if names else "…"
    else:
        query = ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def origin_of(url: str) -> str:
    """`scheme://host[:port]` of `url` (no path, no query, no user info); `<unparseable URL>` if bad."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    host = parts.hostname or ""
    scheme = parts.scheme.lower()
    if port == {"http": 80, "https": 443}.get(scheme):
        port = None  # `https://h` and `https://h:443` are one origin
    return f"{scheme}://{host}{f':{port}' if port is not None else ''}"


def _redact_credentials(text: str) -> str:
    # Imported here: auth imports this module. Masks bearer/basic values and JWTs a server echoes.
    from .auth import RedactingFilter

    return RedactingFilter.redact(text)


def outcome_diagnostics(body: bytes | str | dict[str, Any] | None) -> str | None:
    """The diagnostics (or details.text) of an OperationOutcome body, joined with `; `; None if absent."""
    if body is None:
        return None
    data: Any = body
    if isinstance(body, (bytes, str)):
        raw = body.encode() if isinstance(body, str) else body
        if not raw.strip():
            return None
        try:
            data = orjson.loads(raw[:_MAX_BODY_FOR_DIAGNOSTICS])
        except orjson.JSONDecodeError:
            return None
    if not isinstance(data, dict) or data.get("resourceType") != "OperationOutcome":
        return None
    texts: list[str] = []
    for issue in data.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text")
        if text:
            texts.append(str(text))
    if not texts:
        return None
    joined = _redact_credentials("; ".join(texts))
    if len(joined) > _MAX_DIAGNOSTICS_CHARS:
        joined = joined[:_MAX_DIAGNOSTICS_CHARS] + "…"
    return joined


class FhirError(Exception):
    """Base class of everything this package raises on purpose.

    `fatal` is True when retrying the same work later (a Dagster step retry) cannot succeed.
    """

    fatal: bool = False


def is_fatal(exc: BaseException) -> bool:
    """True for failures a retry cannot cure (see `FhirError.fatal`)."""
    return isinstance(exc, FhirError) and exc.fatal


class UntrustedOriginError(FhirError):
    """A request with credentials to an origin that is neither the server's nor a trusted one.

    The message names the origin only (never the path or query, which can carry identifiers).
    """

    fatal = True

    def __init__(self, url: str, base_url: str, why: str) -> None:
        self.origin = origin_of(url)
        super().__init__(
            f"refusing to send credentials to {self.origin}: {why} (the configured server is "
            f"{origin_of(base_url)}; list other origins in the source's trusted_origins)"
        )


class LimitExceededError(FhirError):
    """A page or a download larger than its configured byte limit (max_page_bytes, max_download_bytes)."""

    fatal = True


class TemporaryNetworkError(FhirError):
    """A retryable failure (408/429/5xx, connection reset, timeout) that outlasted the retry budget."""

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        url: str | None = None,
        status: int | None = None,
        attempts: int = 0,
        total_wait: float = 0.0,
    ) -> None:
        self.method = method
        self.url = redact_url(url) if url else None
        self.status = status
        self.attempts = attempts
        self.total_wait = total_wait
        super().__init__(message)


class FatalNetworkError(FhirError):
    """A non-retryable HTTP failure. `str()` names METHOD, redacted URL, status and OperationOutcome text."""

    def __init__(
        self,
        method: str,
        url: str,
        status: int | None = None,
        *,
        reason: str | None = None,
        diagnostics: str | None = None,
        fatal: bool | None = None,
    ) -> None:
        self.method = method.upper()
        self.url = redact_url(url)
        self.status = status
        self.reason = reason
        self.diagnostics = diagnostics
        # A 4xx answer will be the same next time (408 and 429 are retried by the client itself);
        # a 200 whose body does not parse may be a cut-off transfer, which a step retry can cure.
        self.fatal = fatal if fatal is not None else (status is not None and 400 <= status < 500)
        message = f"{self.method} {self.url} failed"
        if status is not None:
            message += f": HTTP {status}"
        if reason:
            message += f" ({reason})"
        if diagnostics:
            message += f": {diagnostics}"
        super().__init__(message)


class AuthError(FatalNetworkError):
    """Authentication or authorisation failed (token endpoint refused us, or 401 twice / 403)."""

    def __init__(
        self,
        method: str,
        url: str,
        status: int | None = None,
        *,
        reason: str | None = None,
        diagnostics: str | None = None,
    ) -> None:
        super().__init__(method, url, status, reason=reason, diagnostics=diagnostics, fatal=True)
