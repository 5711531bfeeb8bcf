"""Dagster resources: a FHIR source (REST, Bulk Data or a local folder) and the DuckDB warehouse.

Both are typed `ConfigurableResource`s; `FhirSourcesResource` holds one `FhirSourceConfig` per
configured source (site or EHR), picked by the raw assets' partition key. Secrets (bearer token,
password, private key) are only ever bound through `dg.EnvVar` by `from_settings`, never written in
code or the sources file. Tests build `FhirSourcesResource.single(name=..., base_url=...)` with a
test server's URL and a temporary warehouse path.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from pipelines.resources.fhir import (
    BasicAuth,
    BearerAuth,
    FhirClient,
    NoAuth,
    RetryPolicy,
    SmartBackendAuth,
)
from pipelines.resources.fhir.ratelimit import RateLimitedSession, RateLimiter
from pipelines.settings import (
    AuthMode,
    BulkLevel,
    IncrementalMode,
    PipelineSettings,
    SearchScope,
    SigningAlg,
    SourceKind,
    SourceSettings,
    ValidationMode,
)
from pipelines.warehouse import Warehouse


@dataclass
class SourceClients:
    """A factory of clients to one source sharing one limiter; `limiter.count` is the requests sent."""

    config: FhirSourceConfig
    limiter: RateLimiter

    def __call__(self) -> FhirClient:
        """A new client (its own HTTP session) paced by the shared limiter."""
        return self.config.build_client(self.limiter)


class FhirSourceConfig(dg.Config):
    """One FHIR source: where it is, how to authenticate, how to page and pull incrementally."""

    name: str = "demo"
    kind: SourceKind = "rest"
    base_url: str = ""
    folder: str = ""
    auth_mode: AuthMode = "none"
    token: str | None = None
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    private_key_pem: str | None = None
    private_key_path: str | None = None
    alg: SigningAlg = "RS384"
    kid: str | None = None
    scope: str = "system/*.read"
    token_url: str | None = None
    page_size: int = 500
    max_pages: int = 100_000
    incremental: IncrementalMode = "auto"
    overlap_minutes: float = 5.0
    timeout_connect_s: float = 10.0
    timeout_read_s: float = 120.0
    retry_max_total_wait_s: float = 120.0
    landing_dir: str = ""  # where Bulk downloads go; default: the warehouse's landing folder /bulk
    trusted_origins: list[str] = []  # origins besides base_url's that may receive credentials
    max_page_bytes: int = 256 * 1024 * 1024
    max_download_bytes: int = 50 * 1024 * 1024 * 1024
    max_stale_pages: int = 5
    keep_bulk_files: bool = False  # keep downloaded Bulk NDJSON after landing
    bulk_poll_interval_s: float = 2.0
    bulk_level: BulkLevel = "system"
    bulk_group_id: str = ""
    search_scope: SearchScope = "system"
    patient_group: str = ""
    patient_concurrency: int = 4
    max_requests_per_second: float = 0.0  # 0: no cap
    # Write-back (pipelines/writeback.py): off unless the sources file turns it on with write scopes.
    writeback_enabled: bool = False
    writeback_scopes: list[str] = []
    writeback_namespace: str = "https://alliance-qi.example.org/fhir"
    writeback_batch_size: int = 50
    writeback_dry_run_file: str = ""
    writeback_instruments: list[str] = []

    @classmethod
    def from_settings(cls, s: SourceSettings) -> FhirSourceConfig:
        """Build from the sources file; secrets are bound by environment variable name."""
        return cls(**_source_kwargs(s))

    def _auth(self, client_base: str) -> Any:
        mode = self.auth_mode
        if mode == "none":
            return NoAuth()
        if mode == "bearer":
            if not self.token:
                raise ValueError(f"source {self.name}: auth mode bearer needs a token (token_env)")
            return BearerAuth(self.token)
        if mode == "basic":
            if not (self.username and self.password):
                raise ValueError(f"source {self.name}: auth mode basic needs username and password_env")
            return BasicAuth(self.username, self.password)
        if mode == "smart":
            pem = self.private_key_pem
            if not pem and self.private_key_path:
                pem = Path(self.private_key_path).read_text()
            if not (self.client_id and pem):
                raise ValueError(f"source {self.name}: SMART needs client_id and a private key")
            return SmartBackendAuth(
                client_id=self.client_id,
                private_key_pem=pem,
                alg=self.alg,
                scope=self.scope,
                token_url=self.token_url,
                kid=self.kid,
                base_url=client_base,
            )
        raise ValueError(f"source {self.name}: unknown auth mode {mode!r}")

    def client_factory(self) -> SourceClients:
        """Builds clients for this source that share one request-rate limiter (one client per
        thread: a client is not thread-safe)."""
        return SourceClients(self, RateLimiter(self.max_requests_per_second))

    def build_client(self, limiter: RateLimiter | None = None) -> FhirClient:
        """A ready FHIR client for this source (REST and Bulk kinds), paced by `limiter` (a new one
        from `max_requests_per_second` when not given)."""
        if not self.base_url:
            raise ValueError(f"source {self.name}: no base_url configured")
        return FhirClient(
            self.base_url.rstrip("/"),
            auth=self._auth(self.base_url.rstrip("/")),
            timeout=(self.timeout_connect_s, self.timeout_read_s),
            retry=RetryPolicy(max_total_wait=self.retry_max_total_wait_s),
            page_size=self.page_size,
            max_pages=self.max_pages,
            trusted_origins=self.trusted_origins,
            max_page_bytes=self.max_page_bytes,
            max_download_bytes=self.max_download_bytes,
            max_stale_pages=self.max_stale_pages,
            session=RateLimitedSession(limiter or RateLimiter(self.max_requests_per_second)),
        )

    def writeback_client(self) -> FhirClient:
        """A client for the write-back: as `build_client`, and a SMART client also asks for the
        write scopes (the pull's read scope alone cannot write)."""
        if self.auth_mode == "smart" and self.writeback_scopes:
            scope = " ".join([self.scope, *self.writeback_scopes])
            return self.model_copy(update={"scope": scope}).build_client()
        return self.build_client()


def _source_kwargs(s: SourceSettings) -> dict[str, Any]:
    """Resource/config fields for one source of the sources file (secrets as dg.EnvVar)."""
    a = s.auth
    kwargs: dict[str, Any] = {
        "name": s.name,
        "kind": s.kind,
        "base_url": s.base_url,
        "folder": s.folder or "",
        "auth_mode": a.mode,
        "username": a.username,
        "client_id": a.client_id,
        "private_key_path": a.private_key_path,
        "alg": a.alg,
        "kid": a.kid,
        "scope": a.scope,
        "token_url": a.token_url,
        "page_size": s.page_size,
        "max_pages": s.max_pages,
        "incremental": s.incremental,
        "overlap_minutes": s.overlap_minutes,
        "timeout_connect_s": s.timeout_connect_s,
        "timeout_read_s": s.timeout_read_s,
        "trusted_origins": list(s.trusted_origins),
        "max_page_bytes": s.max_page_bytes,
        "max_download_bytes": s.max_download_bytes,
        "max_stale_pages": s.max_stale_pages,
        "keep_bulk_files": s.keep_bulk_files,
        "bulk_poll_interval_s": s.bulk_poll_interval_s,
        "bulk_level": s.bulk.level,
        "bulk_group_id": s.bulk.group_id,
        "search_scope": s.search_scope,
        "patient_group": s.patient_group,
        "patient_concurrency": s.patient_concurrency,
        "max_requests_per_second": s.max_requests_per_second,
        "writeback_enabled": s.writeback.enabled,
        "writeback_scopes": list(s.writeback.scopes),
        "writeback_namespace": s.writeback.namespace,
        "writeback_batch_size": s.writeback.batch_size,
        "writeback_dry_run_file": s.writeback.dry_run_file,
        "writeback_instruments": list(s.writeback.instruments),
    }
    if a.token_env:
        kwargs["token"] = dg.EnvVar(a.token_env)
    if a.password_env:
        kwargs["password"] = dg.EnvVar(a.password_env)
    if a.private_key_env:
        kwargs["private_key_pem"] = dg.EnvVar(a.private_key_env)
    return kwargs


class FhirSourcesResource(dg.ConfigurableResource):
    """Every configured FHIR source by name; the raw assets' partition key picks one.

    Each source is a full `FhirSourceResource` configuration with its own auth and watermarks,
    so clinics on different EHRs (REST, Bulk Data or folders) are pulled side by side.
    """

    sources: dict[str, FhirSourceConfig]
    default_source: str = ""

    @classmethod
    def from_settings(cls, s: PipelineSettings) -> FhirSourcesResource:
        """All sources of the sources file; secrets bound by environment variable name."""
        return cls(
            sources={name: FhirSourceConfig(**_source_kwargs(src)) for name, src in s.sources.items()},
            default_source=s.default_source,
        )

    @classmethod
    def single(cls, **fields: Any) -> FhirSourcesResource:
        """A resource holding one source (tests, one-off runs): `single(name="x", base_url=...)`."""
        config = FhirSourceConfig(**fields)
        return cls(sources={config.name: config}, default_source=config.name)

    def source(self, name: str | None) -> FhirSourceConfig:
        """The named source (or the default one when the run has no partition key)."""
        key = name or self.default_source or (next(iter(self.sources)) if len(self.sources) == 1 else "")
        if key not in self.sources:
            known = ", ".join(sorted(self.sources)) or "none"
            raise ValueError(f"unknown FHIR source {key!r}; configured sources: {known}")
        return self.sources[key]


class WarehouseResource(dg.ConfigurableResource):
    """The pipeline's DuckDB file. Only Dagster runs write it.

    `landing_dir` holds the per-source landing files raw pulls write before merging (default:
    `<warehouse name>.landing/` beside the warehouse file). `lock_timeout_s` is how long a step
    waits for another writer to release the warehouse before it fails with a clear error.
    """

    path: str = "data/warehouse.duckdb"
    validation: ValidationMode = "used_elements"
    landing_dir: str = ""
    lock_timeout_s: float = 900.0

    @classmethod
    def from_settings(cls, s: PipelineSettings) -> WarehouseResource:
        """From the pipeline settings (including `ALLIANCE_QI_LANDING_DIR`, `ALLIANCE_QI_LOCK_TIMEOUT_S`)."""
        return cls(
            path=str(s.warehouse_path()),
            validation=s.validation,
            landing_dir=s.landing_dir,
            lock_timeout_s=s.lock_timeout_s,
        )

    def file(self) -> Path:
        path = Path(self.path)
        return path if path.is_absolute() else Path(os.getcwd()) / path

    def landing_root(self) -> Path:
        """Where per-source landing files live."""
        if self.landing_dir:
            root = Path(self.landing_dir)
            return root if root.is_absolute() else Path(os.getcwd()) / root
        # Named after the warehouse file, so two warehouses in one folder never share landing files.
        return self.file().parent / f"{self.file().stem}.landing"

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the warehouse (creating the raw schema on first write); waits for another writer."""
        with Warehouse(self.file(), lock_timeout_s=self.lock_timeout_s).connect(read_only=read_only) as con:
            yield con
