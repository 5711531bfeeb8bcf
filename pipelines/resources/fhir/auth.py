"""Credentials for FHIR servers, and the log filter that keeps them out of logs.

`SmartBackendAuth` implements SMART Backend Services (the `client_credentials` grant with a
`private_key_jwt` client assertion, http://hl7.org/fhir/smart-app-launch/backend-services.html).
There is no refresh token in that flow: when the access token is near expiry we simply sign a new
assertion and ask again, and on a 401 the client drops the cached token and re-authorises once.

Security rules (docs/configuration.md; tested as in docs/reliability.md): tokens, assertions,
passwords and Authorization headers are never logged; at most a short SHA-256 fingerprint of a
token, which lets an operator match log lines to one token without being able to use it.
`redacting_filter` is attached to the package's logger as a second line of defence and can be
attached to any handler. Nothing here turns on urllib3 or http.client debug output (which would
print headers).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

import jwt
import orjson
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from .errors import AuthError, FatalNetworkError, outcome_diagnostics
from .retry import (
    RetryBudget,
    RetryPolicy,
    describe_exception,
    is_transient,
    parse_retry_after,
    send_with_retry,
)

__all__ = [
    "ASSERTION_TYPE",
    "Auth",
    "BasicAuth",
    "BearerAuth",
    "NoAuth",
    "RedactingFilter",
    "SmartBackendAuth",
    "fingerprint",
    "mask_secrets",
    "redacting_filter",
]

log = logging.getLogger("alliance_qi.fhir")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# SMART Backend Services: "exp ... SHALL be no more than five minutes in the future". We sign for
# four so a client clock a little ahead of the authorisation server's is not refused.
_ASSERTION_LIFETIME = 240
# Re-mint when the token has less than this left, so a request never leaves with a token that
# expires in flight (and long pages can take a minute on a slow EHR).
_EXPIRY_MARGIN = 60.0
# expires_in is required by SMART, but if a server leaves it out assume the common 5 minutes.
_DEFAULT_EXPIRES_IN = 300.0


def fingerprint(secret: str) -> str:
    """A short, non-reversible label for a token: the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


class RedactingFilter(logging.Filter):
    """Masks bearer/basic credentials, client assertions, access tokens, passwords and JWTs in records.

    Attach it to handlers (`handler.addFilter(redacting_filter)`) to cover records from every
    logger, including libraries; it is attached to `alliance_qi.fhir` at import.
    """

    _PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
        (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]+=*"), r"\1***"),
        (re.compile(r"(?i)\b(basic\s+)[A-Za-z0-9+/]+=*"), r"\1***"),
        (re.compile(r"(?i)(client_assertion=)[^&\s'\"]+"), r"\1***"),
        (
            re.compile(
                r"(?i)([\"']?(?:access_token|client_assertion|password|client_secret)[\"']?\s*[:=]\s*[\"'])"
                r"[^\"']*([\"'])"
            ),
            r"\1***\2",
        ),
        (re.compile(r"(?i)\b((?:password|client_secret)=)[^&\s'\"]+"), r"\1***"),
        # any compact JWT (header.payload.signature), wherever it appears
        (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "eyJ***"),
    )

    @classmethod
    def redact(cls, text: str) -> str:
        """Return `text` with every credential pattern masked."""
        for pattern, replacement in cls._PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message in place (formatting its args first); never drops a record."""
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the logging module's problem, not ours
            return True
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


redacting_filter = RedactingFilter()
log.addFilter(redacting_filter)


def mask_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every value in `secrets` replaced by `***`, then the credential patterns masked.

    For server-controlled text (error bodies, reason phrases, OperationOutcome diagnostics): a
    server that echoes the request's `Authorization` header in its error page would otherwise put
    the token into exception messages, Dagster's event log and warehouse tables. The exact values
    catch a token echoed without its `Bearer ` prefix; the patterns catch other credential shapes.
    """
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return RedactingFilter.redact(text)


def auth_secrets(auth: object) -> list[str]:
    """The credential values `auth` currently sends (empty for objects without `secrets()`)."""
    secrets = getattr(auth, "secrets", None)
    return list(secrets()) if callable(secrets) else []


@runtime_checkable
class Auth(Protocol):
    """Adds credentials to outgoing request headers; `invalidate()` forgets any cached credential."""

    def apply(self, request_headers: MutableMapping[str, str]) -> None:
        """Set the Authorization header (or nothing) on `request_headers`."""
        ...

    def invalidate(self) -> None:
        """Drop cached credentials so the next `apply` obtains fresh ones (called after a 401)."""
        ...


class NoAuth:
    """Open servers (the local demo server, a sandbox)."""

    def apply(self, request_headers: MutableMapping[str, str]) -> None:
        """Add nothing."""

    def invalidate(self) -> None:
        """Nothing cached."""

    def secrets(self) -> list[str]:
        """No credential."""
        return []

    def __repr__(self) -> str:
        return "NoAuth()"


class BearerAuth:
    """A static bearer token (issued out of band). A 401 cannot be cured by re-applying it."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("BearerAuth needs a non-empty token")
        self._token = token

    def apply(self, request_headers: MutableMapping[str, str]) -> None:
        """Set `Authorization: Bearer <token>`."""
        request_headers["Authorization"] = f"Bearer {self._token}"

    def invalidate(self) -> None:
        """A static token cannot be refreshed; the client's second 401 becomes an AuthError."""

    def secrets(self) -> list[str]:
        """The token (masked wherever server text is stored or logged)."""
        return [self._token]

    def __repr__(self) -> str:  # never show the token, even in a debugger or a Dagster config dump
        return f"BearerAuth(fingerprint={fingerprint(self._token)})"


class BasicAuth:
    """HTTP Basic credentials (some on-premise FHIR facades still use them)."""

    def __init__(self, user: str, password: str) -> None:
        self._header = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self._user = user
        self._password = password

    def apply(self, request_headers: MutableMapping[str, str]) -> None:
        """Set `Authorization: Basic <base64(user:password)>`."""
        request_headers["Authorization"] = self._header

    def invalidate(self) -> None:
        """Nothing cached."""

    def secrets(self) -> list[str]:
        """The password and the encoded header value."""
        return [self._password, self._header.removeprefix("Basic ")]

    def __repr__(self) -> str:
        return f"BasicAuth(user={self._user!r}, password=***)"


class SmartBackendAuth:
    """SMART Backend Services: `client_credentials` grant authenticated by a signed JWT assertion.

    The token URL is given or discovered from `{fhir_base}/.well-known/smart-configuration`
    (`token_endpoint`); the FHIR base comes from `base_url` or from the `FhirClient` that binds
    this object. The access token is cached until it is within 60 s of `expires_in`.
    """

    def __init__(
        self,
        client_id: str,
        private_key_pem: str,
        alg: Literal["RS384", "ES384"] = "RS384",
        scope: str = "system/*.read",
        token_url: str | None = None,
        kid: str | None = None,
        session: requests.Session | None = None,
        timeout: float | tuple[float, float] = (10.0, 30.0),
        clock: Callable[[], float] = time.time,
        *,
        base_url: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if alg not in ("RS384", "ES384"):
            raise ValueError(f"alg must be RS384 or ES384 (SMART Backend Services), not {alg!r}")
        try:
            key = load_pem_private_key(private_key_pem.encode(), password=None)
        except (ValueError, TypeError) as exc:
            # the message must not contain the key; cryptography's does not, but say it plainly
            raise ValueError(
                f"private_key_pem for SMART client {client_id!r} is not an unencrypted PEM "
                f"private key: {type(exc).__name__}"
            ) from None
        signing_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        if alg == "RS384":
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ValueError("alg RS384 needs an RSA private key")
            signing_key = key
        else:
            if not (isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"):
                raise ValueError("alg ES384 needs an EC P-384 private key")
            signing_key = key
        self.client_id = client_id
        self.alg = alg
        self.scope = scope
        self.token_url = token_url
        self.kid = kid
        self.base_url = base_url.rstrip("/") if base_url else None
        self.timeout = timeout
        self.clock = clock
        self.retry = retry or RetryPolicy()
        self._key = signing_key
        self._session = session
        self._token: str | None = None
        self._previous: list[str] = []
        self._expires_at = 0.0
        self._lock = threading.Lock()
        self.tokens_minted = 0  # for tests and run metadata: how often we went to the token endpoint

    def __repr__(self) -> str:
        return f"SmartBackendAuth(client_id={self.client_id!r}, alg={self.alg}, token_url={self.token_url!r})"

    def bind(self, base_url: str, session: requests.Session) -> None:
        """Called by `FhirClient`: supplies the FHIR base for discovery and a session to reuse."""
        if self.base_url is None:
            self.base_url = base_url.rstrip("/")
        if self._session is None:
            self._session = session

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = requests.Session()
        return self._session

    # ---------------- the Auth protocol ----------------

    def apply(self, request_headers: MutableMapping[str, str]) -> None:
        """Set `Authorization: Bearer <token>`, minting a token first when none is fresh enough."""
        request_headers["Authorization"] = f"Bearer {self.access_token()}"

    def invalidate(self) -> None:
        """Forget the cached token (after a 401: it may have been revoked or the server restarted).

        The forgotten token is still masked in server text for the life of this object.
        """
        with self._lock:
            if self._token is not None:
                self._previous.append(self._token)
            self._token = None
            self._expires_at = 0.0

    def secrets(self) -> list[str]:
        """The current access token and those forgotten since (a 401 body may echo the old one)."""
        with self._lock:
            return [*self._previous[-8:], *([self._token] if self._token else [])]

    # ---------------- token handling ----------------

    def access_token(self) -> str:
        """The cached access token, or a new one when absent or within the expiry margin."""
        with self._lock:
            if self._token is None or self.clock() >= self._expires_at:
                self._token, self._expires_at = self._mint()
            return self._token

    def discover_token_url(self) -> str:
        """Read `token_endpoint` from `{base}/.well-known/smart-configuration` (cached on `token_url`).

        Falls back to the CapabilityStatement's `oauth-uris` extension: servers that predate the
        well-known document (or hide it behind a gateway) still publish the token URL there.
        """
        if self.token_url:
            return self.token_url
        if not self.base_url:
            raise AuthError(
                "GET",
                ".well-known/smart-configuration",
                reason="no token_url given and no FHIR base URL to discover it from",
            )
        url = f"{self.base_url}/.well-known/smart-configuration"
        response = send_with_retry(
            self.session,
            "GET",
            url,
            policy=self.retry,
            timeout=self.timeout,
            headers={"Accept": "application/json"},
        )
        token_url = None
        if response.status_code == 200:
            try:
                token_url = orjson.loads(response.content).get("token_endpoint")
            except (orjson.JSONDecodeError, AttributeError):
                token_url = None
        if not token_url:
            token_url = self._token_url_from_capability()
        if not token_url:
            raise AuthError(
                "GET",
                url,
                response.status_code,
                reason="no token_endpoint in smart-configuration or CapabilityStatement",
            )
        self.token_url = str(token_url)
        log.info("SMART token endpoint for %s: %s", self.client_id, self.token_url)
        return self.token_url

    def _token_url_from_capability(self) -> str | None:
        url = f"{self.base_url}/metadata"
        response = send_with_retry(
            self.session,
            "GET",
            url,
            policy=self.retry,
            timeout=self.timeout,
            headers={"Accept": "application/fhir+json"},
        )
        if response.status_code != 200:
            return None
        try:
            cap = orjson.loads(response.content)
            for rest in cap.get("rest") or []:
                for ext in (rest.get("security") or {}).get("extension") or []:
                    if ext.get("url", "").endswith("oauth-uris"):
                        for sub in ext.get("extension") or []:
                            if sub.get("url") == "token" and sub.get("valueUri"):
                                return str(sub["valueUri"])
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            return None
        return None

    def client_assertion(self, token_url: str, now: float | None = None) -> str:
        """A freshly signed private_key_jwt assertion for `token_url` (unique `jti` every call)."""
        issued = int(self.clock() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": token_url,
            "iat": issued,
            "exp": issued + _ASSERTION_LIFETIME,
            "jti": uuid.uuid4().hex,  # servers refuse a replayed jti, so never reuse one (even on retry)
        }
        headers: dict[str, Any] = {"typ": "JWT"}
        if self.kid:
            headers["kid"] = self.kid  # lets the server pick the key from our JWKS during key rotation
        return jwt.encode(claims, self._key, algorithm=self.alg, headers=headers)

    def _mint(self) -> tuple[str, float]:
        token_url = self.discover_token_url()

        # A new assertion per attempt: a retried POST with the same jti would be refused as a replay.
        def form() -> dict[str, str]:
            return {
                "grant_type": "client_credentials",
                "scope": self.scope,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.client_assertion(token_url),
            }

        response = self._post_token(token_url, form)
        if response.status_code != 200:
            raise AuthError(
                "POST",
                token_url,
                response.status_code,
                reason="token request refused",
                diagnostics=_oauth_error_text(response),
            )
        try:
            body = orjson.loads(response.content)
            token = body["access_token"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise AuthError("POST", token_url, 200, reason="token response has no access_token") from None
        if not isinstance(token, str) or not token:
            raise AuthError("POST", token_url, 200, reason="token response has an empty access_token")
        token_type = str(body.get("token_type", "bearer"))
        if token_type.lower() != "bearer":
            raise AuthError("POST", token_url, 200, reason=f"unsupported token_type {token_type!r}")
        try:
            expires_in = float(body.get("expires_in", _DEFAULT_EXPIRES_IN))
        except (TypeError, ValueError):
            expires_in = _DEFAULT_EXPIRES_IN
        # With very short-lived tokens a fixed 60 s margin would mean minting on every request.
        margin = min(_EXPIRY_MARGIN, expires_in / 2)
        self.tokens_minted += 1
        log.info(
            "SMART access token obtained for %s (fp=%s, expires_in=%ds, scope=%s)",
            self.client_id,
            fingerprint(token),
            int(expires_in),
            body.get("scope", self.scope),
        )
        return token, self.clock() + expires_in - margin

    def _post_token(self, token_url: str, form: Callable[[], dict[str, str]]) -> requests.Response:
        """POST the token request under the retry policy, signing a new assertion for every attempt.

        `send_with_retry` re-sends identical kwargs, which would replay the assertion's `jti`, so
        the loop is driven here with the same `RetryBudget` rules.
        """
        budget = RetryBudget(self.retry, "POST", token_url)
        while True:
            budget.start_attempt()
            try:
                response = self.session.post(
                    token_url, data=form(), timeout=self.timeout, headers={"Accept": "application/json"}
                )
            except requests.RequestException as exc:
                if not is_transient(exc):
                    raise FatalNetworkError("POST", token_url, reason=describe_exception(exc)) from None
                budget.wait_or_raise(cause=exc)
                continue
            if response.status_code in self.retry.retry_statuses:
                status = response.status_code
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                response.close()
                budget.wait_or_raise(status=status, retry_after=retry_after)
                continue
            return response


def _oauth_error_text(response: requests.Response) -> str | None:
    """`error: error_description` from an OAuth error body (RFC 6749 5.2); never the raw body."""
    try:
        body = orjson.loads(response.content[:16384])
    except orjson.JSONDecodeError:
        return None
    if isinstance(body, dict) and "error" in body:
        text = str(body["error"])
        if body.get("error_description"):
            text += f": {str(body['error_description'])[:300]}"
        return RedactingFilter.redact(text)
    return outcome_diagnostics(body if isinstance(body, dict) else None)


def same_origin(url_a: str, url_b: str) -> bool:
    """True when both URLs share scheme, host and port (used before sending credentials)."""
    a, b = urlsplit(url_a), urlsplit(url_b)
    return (a.scheme.lower(), a.hostname, a.port) == (b.scheme.lower(), b.hostname, b.port)
