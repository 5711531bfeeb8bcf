"""FHIR R4 client package: REST search and incremental pulls, Bulk Data export, NDJSON folders.

Pure Python over `requests`; it does not import Dagster (the Dagster resource wraps it).
"""

from .auth import (
    Auth,
    BasicAuth,
    BearerAuth,
    NoAuth,
    RedactingFilter,
    SmartBackendAuth,
    fingerprint,
    redacting_filter,
)
from .bulk import BulkExporter, BulkResult, BulkStateStore, MemoryStateStore
from .client import (
    DEFAULT_DATE_PARAMS,
    FhirClient,
    Page,
    PullMode,
    PullStats,
    ResourceStream,
    format_instant,
    max_last_updated,
    parse_instant,
)
from .errors import AuthError, FatalNetworkError, FhirError, TemporaryNetworkError, redact_url
from .folder import iter_folder
from .retry import RetryPolicy, parse_retry_after

__all__ = [
    "DEFAULT_DATE_PARAMS",
    "Auth",
    "AuthError",
    "BasicAuth",
    "BearerAuth",
    "BulkExporter",
    "BulkResult",
    "BulkStateStore",
    "FatalNetworkError",
    "FhirClient",
    "FhirError",
    "MemoryStateStore",
    "NoAuth",
    "Page",
    "PullMode",
    "PullStats",
    "RedactingFilter",
    "ResourceStream",
    "RetryPolicy",
    "SmartBackendAuth",
    "TemporaryNetworkError",
    "fingerprint",
    "format_instant",
    "iter_folder",
    "max_last_updated",
    "parse_instant",
    "parse_retry_after",
    "redact_url",
    "redacting_filter",
]
