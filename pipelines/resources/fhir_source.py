"""Dagster resources: a FHIR source (REST, Bulk Data or a local folder) and the DuckDB warehouse.

Both are typed `ConfigurableResource`s. Secrets (bearer token, password, private key) are only
ever bound through `dg.EnvVar` by `from_settings`, never written in code or the sources file.
Tests construct them directly with a test server's URL and a temporary warehouse path.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

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
from pipelines.settings import REPO_ROOT, PipelineSettings, SourceSettings
from pipelines.warehouse import Warehouse


class FhirSourceResource(dg.ConfigurableResource):
    """One FHIR source: where it is, how to authenticate, how to page and pull incrementally."""

    name: str = "demo"
    kind: str = "rest"  # rest | bulk | folder
    base_url: str = ""
    folder: str = ""
    auth_mode: str = "none"  # none | bearer | basic | smart
    token: str | None = None
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    private_key_pem: str | None = None
    private_key_path: str | None = None
    alg: Literal["RS384", "ES384"] = "RS384"
    kid: str | None = None
    scope: str = "system/*.read"
    token_url: str | None = None
    page_size: int = 500
    max_pages: int = 100_000
    incremental: str = "auto"  # auto | last_updated | date_window | full
    overlap_minutes: float = 5.0
    timeout_connect_s: float = 10.0
    timeout_read_s: float = 120.0
    retry_max_total_wait_s: float = 120.0
    landing_dir: str = "data/landing"

    @classmethod
    def from_settings(cls, s: SourceSettings) -> FhirSourceResource:
        """Build from the sources file; secrets are bound by environment variable name."""
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
            "landing_dir": str(REPO_ROOT / "data" / "landing"),
        }
        if a.token_env:
            kwargs["token"] = dg.EnvVar(a.token_env)
        if a.password_env:
            kwargs["password"] = dg.EnvVar(a.password_env)
        if a.private_key_env:
            kwargs["private_key_pem"] = dg.EnvVar(a.private_key_env)
        return cls(**kwargs)

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

    def build_client(self) -> FhirClient:
        """A ready FHIR client for this source (REST and Bulk kinds)."""
        if not self.base_url:
            raise ValueError(f"source {self.name}: no base_url configured")
        return FhirClient(
            self.base_url.rstrip("/"),
            auth=self._auth(self.base_url.rstrip("/")),
            timeout=(self.timeout_connect_s, self.timeout_read_s),
            retry=RetryPolicy(max_total_wait=self.retry_max_total_wait_s),
            page_size=self.page_size,
            max_pages=self.max_pages,
        )


class WarehouseResource(dg.ConfigurableResource):
    """The pipeline's DuckDB file. Only Dagster runs write it."""

    path: str = "data/warehouse.duckdb"
    validation: str = "used_elements"  # used_elements | strict

    @classmethod
    def from_settings(cls, s: PipelineSettings) -> WarehouseResource:
        return cls(path=str(s.warehouse_path()), validation=s.validation)

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the warehouse (creating the raw schema on first write)."""
        path = Path(self.path)
        if not path.is_absolute():
            path = Path(os.getcwd()) / path
        with Warehouse(path).connect(read_only=read_only) as con:
            yield con
