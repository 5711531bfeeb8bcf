"""Pipeline settings: the sources file (`sources.yaml`) with environment overrides.

Precedence, highest first: environment variables, the sources file, built-in defaults. Secrets are
never read from the file itself; the file names the environment variable that holds each one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCES_FILE = REPO_ROOT / "sources.yaml"
DEFAULT_WAREHOUSE = "data/warehouse.duckdb"

#: The resource types the marts need, in the order they are pulled.
RESOURCE_TYPES: tuple[str, ...] = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "EpisodeOfCare",
    "Appointment",
    "Encounter",
    "MedicationRequest",
    "MedicationDispense",
    "QuestionnaireResponse",
    "Questionnaire",
)


class SettingsError(ValueError):
    """The sources file or the environment holds an invalid setting."""


class AuthSettings(BaseModel):
    """How to authenticate to one FHIR source. Secrets are named by environment variable."""

    mode: Literal["none", "bearer", "basic", "smart"] = "none"
    token_env: str | None = None
    username: str | None = None
    password_env: str | None = None
    client_id: str | None = None
    private_key_path: str | None = None
    private_key_env: str | None = None
    alg: Literal["RS384", "ES384"] = "RS384"
    kid: str | None = None
    scope: str = "system/*.read"
    token_url: str | None = None


class SourceSettings(BaseModel):
    """One FHIR source (a site or an EHR)."""

    name: str = "demo"
    description: str = ""
    kind: Literal["rest", "bulk", "folder"] = "rest"
    base_url: str = ""
    folder: str | None = None
    auth: AuthSettings = Field(default_factory=AuthSettings)
    page_size: int = Field(default=500, ge=1, le=10_000)
    max_pages: int = Field(default=100_000, ge=1)
    incremental: Literal["auto", "last_updated", "date_window", "full"] = "auto"
    overlap_minutes: float = Field(default=5.0, ge=0)
    timeout_connect_s: float = Field(default=10.0, gt=0)
    timeout_read_s: float = Field(default=120.0, gt=0)
    # Origins (scheme://host[:port]) besides base_url's that may receive credentials: e.g. the
    # host a Bulk server puts its status or file URLs on. Anything else is refused.
    trusted_origins: list[str] = Field(default_factory=list)
    max_page_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    max_download_bytes: int = Field(default=50 * 1024 * 1024 * 1024, ge=1)
    max_stale_pages: int = Field(default=5, ge=1)
    keep_bulk_files: bool = False
    bulk_poll_interval_s: float = Field(default=2.0, gt=0)

    @field_validator("trusted_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
                raise ValueError(f"trusted origin {origin!r} must be scheme://host[:port] (no path)")
        return v

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")


class PipelineSettings(BaseModel):
    """Everything the sources file configures."""

    warehouse: str = DEFAULT_WAREHOUSE
    validation: Literal["used_elements", "strict"] = "used_elements"
    default_source: str = "demo"
    sources: dict[str, SourceSettings] = Field(default_factory=dict)

    def source(self, name: str | None = None) -> SourceSettings:
        """The named source (default: `default_source`), with a clear error for unknown names."""
        key = name or self.default_source
        if key not in self.sources:
            known = ", ".join(sorted(self.sources)) or "none"
            raise SettingsError(f"unknown FHIR source {key!r}; the sources file defines: {known}")
        return self.sources[key]

    def warehouse_path(self) -> Path:
        """Absolute warehouse path; relative paths are taken from the repository root."""
        p = Path(self.warehouse)
        return p if p.is_absolute() else REPO_ROOT / p


# Environment variable -> (section, key) for the default source.
_SOURCE_ENV: dict[str, str] = {
    "FHIR_BASE_URL": "base_url",
    "FHIR_SOURCE_KIND": "kind",
    "FHIR_FOLDER": "folder",
    "FHIR_INCREMENTAL": "incremental",
}
_AUTH_ENV: dict[str, str] = {
    "FHIR_AUTH_MODE": "mode",
    "FHIR_CLIENT_ID": "client_id",
    "FHIR_PRIVATE_KEY_PATH": "private_key_path",
    "FHIR_TOKEN_URL": "token_url",
    "FHIR_SCOPE": "scope",
    "FHIR_USERNAME": "username",
}

# Settings key -> the environment variable that holds the secret when the file names none.
# These are variable *names*, not secrets.
_SECRET_ENV_DEFAULTS: dict[str, str] = {
    "token_env": "FHIR_TOKEN",
    "password_env": "FHIR_PASSWORD",
    "private_key_env": "FHIR_PRIVATE_KEY",
}


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None) -> PipelineSettings:
    """Read the sources file and apply environment overrides.

    `path` defaults to `$ALLIANCE_QI_SOURCES` or `sources.yaml` at the repository root.
    """
    environ = dict(os.environ if env is None else env)
    file = Path(path or environ.get("ALLIANCE_QI_SOURCES") or DEFAULT_SOURCES_FILE)
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SettingsError(f"{file}: not valid YAML: {exc}") from exc
    sources = data.setdefault("sources", {}) or {}
    data["sources"] = sources
    for name, src in sources.items():
        if src is None:
            sources[name] = src = {}
        src.setdefault("name", name)
    default = data.get("default_source") or environ.get("FHIR_SOURCE") or "demo"
    if environ.get("FHIR_SOURCE"):
        default = environ["FHIR_SOURCE"]
    data["default_source"] = default
    src = sources.setdefault(default, {"name": default})
    for var, key in _SOURCE_ENV.items():
        if environ.get(var):
            src[key] = environ[var]
    auth = src.setdefault("auth", {}) or {}
    src["auth"] = auth
    for var, key in _AUTH_ENV.items():
        if environ.get(var):
            auth[key] = environ[var]
    # Secrets from the environment are referenced by name only; FHIR_TOKEN etc. are the defaults.
    for key, var in _SECRET_ENV_DEFAULTS.items():
        if environ.get(var) and not auth.get(key):
            auth[key] = var
    if environ.get("WAREHOUSE_PATH"):
        data["warehouse"] = environ["WAREHOUSE_PATH"]
    if environ.get("ALLIANCE_QI_VALIDATION"):
        data["validation"] = environ["ALLIANCE_QI_VALIDATION"]
    try:
        settings = PipelineSettings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(f"{file}: {exc}") from exc
    for s in settings.sources.values():
        if s.kind in ("rest", "bulk") and not s.base_url:
            raise SettingsError(f"source {s.name!r}: kind {s.kind} needs base_url (or FHIR_BASE_URL)")
        if s.kind == "folder" and not s.folder:
            raise SettingsError(f"source {s.name!r}: kind folder needs folder (or FHIR_FOLDER)")
    return settings
