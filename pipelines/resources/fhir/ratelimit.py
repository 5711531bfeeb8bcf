"""A per-source request-rate cap shared by every client (and thread) that talks to one source.

EHR vendors publish request-rate limits per client application (and answer 429 beyond them); a
patient-scoped pull issues one search per patient and type, so it is the pull that must pace itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import requests

__all__ = ["RateLimitedSession", "RateLimiter"]


class RateLimiter:
    """At most `per_second` acquisitions per second across threads (evenly spaced; 0: no cap).

    It also counts the acquisitions, which is the number of HTTP requests sent to the source.
    """

    def __init__(
        self,
        per_second: float = 0.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_second < 0:
            raise ValueError("per_second must be >= 0")
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self.clock = clock
        self.sleep = sleep
        self.count = 0
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Wait for the next free slot (reserved under the lock, slept outside it)."""
        with self._lock:
            self.count += 1
            if self.interval == 0.0:
                return
            now = self.clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        wait = slot - now
        if wait > 0:
            self.sleep(wait)


class RateLimitedSession(requests.Session):
    """A `requests.Session` whose every request (retries and token requests included) waits for
    the shared limiter first."""

    def __init__(self, limiter: RateLimiter) -> None:
        super().__init__()
        self.limiter = limiter

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        """Wait for a slot, then send as `requests.Session.request` does."""
        self.limiter.acquire()
        return super().request(method, url, *args, **kwargs)
