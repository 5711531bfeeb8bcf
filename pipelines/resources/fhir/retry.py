"""The one retry policy every FHIR call goes through.

Retry 408/429/500/502/503/504 and network failures (connection refused/reset, timeouts, a body
cut off mid-stream) with exponential backoff and full jitter, honour `Retry-After` in both its
forms up to a cap, and bound the *total* waiting: some EHRs answer 500/504 for errors that will
never go away (a malformed query, a server-side bug on one record), and without a bound a nightly
run would sit in backoff for hours. Anything else (400, 403, 404 ...) is fatal at once.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from .errors import FatalNetworkError, TemporaryNetworkError, redact_url

__all__ = [
    "NETWORK_ERRORS",
    "RetryBudget",
    "RetryPolicy",
    "describe_exception",
    "is_transient",
    "parse_retry_after",
    "send_with_retry",
]

log = logging.getLogger("alliance_qi.fhir")

# Failures of the transport that are worth another attempt. SSLError subclasses ConnectionError
# but a bad certificate does not heal itself, so it is excluded in `is_transient`.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


def is_transient(exc: BaseException) -> bool:
    """True for transport failures worth another attempt (not TLS verification failures)."""
    return isinstance(exc, NETWORK_ERRORS) and not isinstance(exc, requests.exceptions.SSLError)


_QUERY_IN_TEXT = re.compile(r"\?[^\s'\")]+")


def describe_exception(exc: BaseException) -> str:
    """`ConnectionError: ... Connection refused` with any query string in the text replaced by `?…`.

    urllib3 puts the request path *and query* into its messages ("Max retries exceeded with url:
    /fhir/Patient?identifier=..."), so errors raised here carry this scrubbed text and are raised
    `from None`: a chained traceback would print the raw message into Dagster's event log.
    """
    text = _QUERY_IN_TEXT.sub("?…", str(exc))
    if len(text) > 300:
        text = text[:300] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class RetryPolicy:
    """How many times and how long to retry. `sleep` and `random` are injectable for tests."""

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_total_wait: float = 120.0
    retry_statuses: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})
    jitter: bool = True
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def backoff(self, attempt: int) -> float:
        """Delay before retry number `attempt` (1-based) when the server gave no Retry-After.

        Exponential, capped at `max_delay`, with "full jitter" (uniform in [0, cap]) so that many
        workers hitting the same overloaded EHR do not retry in lockstep.
        """
        cap = min(self.max_delay, self.base_delay * (2 ** max(0, attempt - 1)))
        return cap * self.random() if self.jitter else cap

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """The wait before retry `attempt`: Retry-After (capped at `max_delay`) when given, else backoff."""
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_delay))
        return self.backoff(attempt)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds (`120`) or an HTTP-date.

    Returns None for a missing or unparseable value (the caller then uses its own backoff) and
    0 for a date in the past.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds == seconds else None  # rejects negatives and NaN
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:  # pragma: no cover - older Pythons returned None instead of raising
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; `-0000` parses naive
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


class RetryBudget:
    """Attempts and waiting spent on one logical request; raises once either bound is reached."""

    def __init__(self, policy: RetryPolicy, method: str, url: str) -> None:
        self.policy = policy
        self.method = method.upper()
        self.url = url
        self.attempts = 0
        self.total_wait = 0.0

    def start_attempt(self) -> None:
        """Count one attempt (call before each send)."""
        self.attempts += 1

    def wait_or_raise(
        self,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        cause: BaseException | None = None,
    ) -> None:
        """Sleep before the next attempt, or raise TemporaryNetworkError if the budget is spent."""
        what = f"HTTP {status}" if status is not None else describe_exception(cause) if cause else "failure"
        where = f"{self.method} {redact_url(self.url)}"
        if self.attempts >= self.policy.max_attempts:
            raise TemporaryNetworkError(
                f"{where} still failing ({what}) after {self.attempts} attempts "
                f"and {self.total_wait:.1f}s of waiting",
                method=self.method,
                url=self.url,
                status=status,
                attempts=self.attempts,
                total_wait=self.total_wait,
            ) from None
        wait = self.policy.delay(self.attempts, retry_after)
        if self.total_wait + wait > self.policy.max_total_wait:
            raise TemporaryNetworkError(
                f"{where} still failing ({what}) after {self.attempts} attempts; the next wait of "
                f"{wait:.1f}s would exceed the total retry budget of {self.policy.max_total_wait:.0f}s "
                f"({self.total_wait:.1f}s spent)",
                method=self.method,
                url=self.url,
                status=status,
                attempts=self.attempts,
                total_wait=self.total_wait,
            ) from None
        log.warning(
            "%s: %s on attempt %d; retrying in %.2fs%s",
            where,
            what,
            self.attempts,
            wait,
            " (Retry-After)" if retry_after is not None else "",
        )
        self.policy.sleep(wait)
        self.total_wait += wait


def send_with_retry(
    session: requests.Session,
    method: str,
    url: str,
    *,
    policy: RetryPolicy,
    timeout: float | tuple[float, float],
    headers: Callable[[], Mapping[str, str]] | Mapping[str, str] | None = None,
    budget: RetryBudget | None = None,
    **kwargs: Any,
) -> requests.Response:
    """Send one request with the retry policy; return the first non-retryable response.

    `headers` may be a callable so that credentials are recomputed for every attempt (a token can
    expire during a long backoff). Non-retryable error statuses are returned, not raised: the
    caller knows whether a 404 or 401 is an answer or a failure. Transport errors that are not
    transient (bad URL, TLS verification) become FatalNetworkError at once.
    """
    budget = budget or RetryBudget(policy, method, url)
    while True:
        budget.start_attempt()
        sent_headers = dict(headers() if callable(headers) else headers or {})
        try:
            response = session.request(method, url, headers=sent_headers, timeout=timeout, **kwargs)
        except requests.RequestException as exc:
            if not is_transient(exc):
                raise FatalNetworkError(method, url, reason=describe_exception(exc)) from None
            budget.wait_or_raise(cause=exc)
            continue
        if response.status_code in policy.retry_statuses:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            status = response.status_code
            response.close()  # give the connection back to the pool before sleeping
            budget.wait_or_raise(status=status, retry_after=retry_after)
            continue
        return response
