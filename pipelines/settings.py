"""Pipeline settings: the sources file (`sources.yaml`) with environment overrides.

Precedence, highest first: environment variables, the sources file, built-in defaults (the mechanism
is `pipelines.settings_base`). The variables are not one prefix but the documented names in
`SOURCE_ENV`, `AUTH_ENV` and `TOP_ENV` (`FHIR_BASE_URL`, `WAREHOUSE_PATH`, ...); the source ones apply
to the default source. Secrets are never read from the file itself; the file names the environment
variable that holds each one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pipelines.settings_base import (
    AreaSettings,
    LoadContext,
    SettingsError,
    YamlFileSource,
    current_load,
    read_yaml_mapping,
)

__all__ = [
    "DEFAULT_SOURCES_FILE",
    "DEFAULT_WAREHOUSE",
    "PATIENT_COMPARTMENT_TYPES",
    "REPO_ROOT",
    "RESOURCE_TYPES",
    "AuthMode",
    "AuthSettings",
    "BulkLevel",
    "BulkSettings",
    "IncrementalMode",
    "PipelineSettings",
    "SearchScope",
    "SettingsError",
    "SigningAlg",
    "SourceKind",
    "SourceSettings",
    "ValidationMode",
    "WritebackSettings",
    "load_settings",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCES_FILE = REPO_ROOT / "sources.yaml"
DEFAULT_WAREHOUSE = "data/warehouse.duckdb"
SOURCES_FILE_ENV = "ALLIANCE_QI_SOURCES"

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

# The enumerated settings, shared by these models, the Dagster resources and the code that acts on them.
SourceKind = Literal["rest", "bulk", "folder"]
AuthMode = Literal["none", "bearer", "basic", "smart"]
SigningAlg = Literal["RS384", "ES384"]
IncrementalMode = Literal["auto", "last_updated", "date_window", "full"]
ValidationMode = Literal["used_elements", "strict"]
BulkLevel = Literal["system", "patient", "group"]
SearchScope = Literal["system", "patient"]

#: The types whose resources live in a Patient's compartment: searched per patient when
#: `search_scope: patient`, exported through the Group when `bulk.level: group`. The others
#: (Practitioner, PractitionerRole, Questionnaire) keep system searches.
PATIENT_COMPARTMENT_TYPES: frozenset[str] = frozenset(
    {
        "Patient",
        "EpisodeOfCare",
        "Appointment",
        "Encounter",
        "MedicationRequest",
        "MedicationDispense",
        "QuestionnaireResponse",
    }
)


class AuthSettings(BaseModel):
    """How to authenticate to one FHIR source. Secrets are named by environment variable."""

    mode: AuthMode = "none"
    token_env: str | None = None
    username: str | None = None
    password_env: str | None = None
    client_id: str | None = None
    private_key_path: str | None = None
    private_key_env: str | None = None
    alg: SigningAlg = "RS384"
    kid: str | None = None
    scope: str = "system/*.read"
    token_url: str | None = None


class BulkSettings(BaseModel):
    """Which Bulk Data `$export` a `kind: bulk` source kicks off."""

    # system: `[base]/$export`; patient: `[base]/Patient/$export`; group: `[base]/Group/{group_id}/$export`
    # (the clinic's cohort: what most EHRs offer). Types outside the patient compartment are then
    # pulled with REST searches, as a Group export does not carry them.
    level: BulkLevel = "system"
    group_id: str = ""


class WritebackSettings(BaseModel):
    """Writing results back to this source's FHIR server (pipelines/writeback.py, docs/feedback.md).

    Off by default. On only with explicit write scopes for every type written (Device, Observation,
    Flag, Task): they are added to a SMART client's requested scope, and checked here for every mode.
    """

    enabled: bool = False
    scopes: list[str] = Field(default_factory=list)
    # The identifier system of everything written, and the base of the local CodeSystems: the site's own URL.
    namespace: str = "https://alliance-qi.example.org/fhir"
    batch_size: int = Field(default=50, ge=1, le=1000)  # entries per transaction Bundle
    dry_run_file: str = ""  # set: write the Bundle to this file instead of the server
    instruments: list[str] = Field(default_factory=list)  # totals written ([]: every scored instrument)

    @model_validator(mode="after")
    def _scopes_when_enabled(self) -> WritebackSettings:
        if self.enabled:
            from pipelines.writeback_scopes import check_scopes

            check_scopes(self.scopes)
        return self


class SourceSettings(BaseModel):
    """One FHIR source (a site or an EHR)."""

    name: str = "demo"
    description: str = ""
    kind: SourceKind = "rest"
    base_url: str = ""
    folder: str | None = None
    auth: AuthSettings = Field(default_factory=AuthSettings)
    page_size: int = Field(default=500, ge=1, le=10_000)
    max_pages: int = Field(default=100_000, ge=1)
    incremental: IncrementalMode = "auto"
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
    bulk: BulkSettings = Field(default_factory=BulkSettings)
    # system: one search per type; patient: patient-compartment types are searched per patient
    # (`QuestionnaireResponse?patient=...`), the patients taken from `patient_group` (a Group id)
    # or, when it is empty, from a Patient search.
    search_scope: SearchScope = "system"
    patient_group: str = ""
    # Per-patient searches in flight at once, and the source's request-rate cap (0: no cap).
    patient_concurrency: int = Field(default=4, ge=1, le=32)
    max_requests_per_second: float = Field(default=0.0, ge=0)
    writeback: WritebackSettings = Field(default_factory=WritebackSettings)

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


# Environment variable -> key of the default source.
SOURCE_ENV: dict[str, str] = {
    "FHIR_BASE_URL": "base_url",
    "FHIR_SOURCE_KIND": "kind",
    "FHIR_FOLDER": "folder",
    "FHIR_INCREMENTAL": "incremental",
    "FHIR_SEARCH_SCOPE": "search_scope",
    "FHIR_PATIENT_GROUP": "patient_group",
    "FHIR_MAX_REQUESTS_PER_SECOND": "max_requests_per_second",
}
# Environment variable -> key of the default source's `bulk`.
BULK_ENV: dict[str, str] = {
    "FHIR_BULK_LEVEL": "level",
    "FHIR_BULK_GROUP": "group_id",
}
# Environment variable -> key of the default source's `auth`.
AUTH_ENV: dict[str, str] = {
    "FHIR_AUTH_MODE": "mode",
    "FHIR_CLIENT_ID": "client_id",
    "FHIR_PRIVATE_KEY_PATH": "private_key_path",
    "FHIR_TOKEN_URL": "token_url",
    "FHIR_SCOPE": "scope",
    "FHIR_USERNAME": "username",
}
# Environment variable -> top-level key.
TOP_ENV: dict[str, str] = {
    "FHIR_SOURCE": "default_source",
    "WAREHOUSE_PATH": "warehouse",
    "ALLIANCE_QI_VALIDATION": "validation",
    "ALLIANCE_QI_LANDING_DIR": "landing_dir",
    "ALLIANCE_QI_LOCK_TIMEOUT_S": "lock_timeout_s",
    "ALLIANCE_QI_VIEWS_DIR": "views_dir",
}
# Auth key -> the environment variable that holds the secret when the file names none.
# These are variable *names*, not secrets.
SECRET_ENV_DEFAULTS: dict[str, str] = {
    "token_env": "FHIR_TOKEN",
    "password_env": "FHIR_PASSWORD",
    "private_key_env": "FHIR_PRIVATE_KEY",
}


class PipelineEnvSource(PydanticBaseSettingsSource):
    """The documented pipeline variables, applied to the default source (`FHIR_SOURCE`, else the
    file's `default_source`, else `demo`) and the top-level keys. Values stay strings; the models
    convert and check them."""

    def __init__(self, settings_cls: type[BaseSettings], ctx: LoadContext, file: YamlFileSource) -> None:
        super().__init__(settings_cls)
        self._ctx = ctx
        self._file = file

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: `__call__` builds the whole mapping."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        env = {k: v for k, v in self._ctx.environ.items() if v}  # an empty variable counts as unset
        out: dict[str, Any] = {}
        for var, key in TOP_ENV.items():
            if var in env:
                out[key] = env[var]
                self._ctx.note((key,), var)
        default = env.get("FHIR_SOURCE") or self._file.data.get("default_source") or "demo"
        src: dict[str, Any] = {}
        auth: dict[str, Any] = {}
        for var, key in SOURCE_ENV.items():
            if var in env:
                src[key] = env[var]
                self._ctx.note(("sources", str(default), key), var)
        for var, key in AUTH_ENV.items():
            if var in env:
                auth[key] = env[var]
                self._ctx.note(("sources", str(default), "auth", key), var)
        # Secrets from the environment are referenced by name only; FHIR_TOKEN etc. are the defaults.
        file_auth = _mapping(_mapping(_mapping(self._file.data.get("sources")).get(default)).get("auth"))
        for key, var in SECRET_ENV_DEFAULTS.items():
            if var in env and not file_auth.get(key):
                auth[key] = var
        bulk: dict[str, Any] = {}
        for var, key in BULK_ENV.items():
            if var in env:
                bulk[key] = env[var]
                self._ctx.note(("sources", str(default), "bulk", key), var)
        if bulk:
            src["bulk"] = bulk
        if "FHIR_BASE_URL" in env:
            # The default source now points at another server (an EHR): the file's write-back, set for
            # the server it named (the demo's), does not follow it there. FHIR_WRITEBACK=on asks for it.
            on = env.get("FHIR_WRITEBACK", "").strip().lower() in ("1", "true", "on", "yes")
            src["writeback"] = {"enabled": on}
            self._ctx.note(("sources", str(default), "writeback", "enabled"), "FHIR_BASE_URL/FHIR_WRITEBACK")
        if auth:
            src["auth"] = auth
        if src:
            out["sources"] = {default: src}
        return out


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class PipelineSettings(AreaSettings):
    """Everything the sources file configures, with the environment overrides applied."""

    # Unknown keys in the sources file are ignored, as they always were (comments-as-keys, newer files).
    model_config = SettingsConfigDict(extra="ignore")
    area = "pipeline"

    warehouse: str = DEFAULT_WAREHOUSE
    validation: ValidationMode = "used_elements"
    default_source: str = "demo"
    sources: dict[str, SourceSettings] = Field(default_factory=dict)
    # Where per-source landing files go ("": `<warehouse name>.landing/` beside the warehouse).
    landing_dir: str = ""
    # How long a step waits for the warehouse's single writer before failing.
    lock_timeout_s: float = Field(default=900.0, gt=0)
    # The site's SQL-on-FHIR ViewDefinition folder: each `*.json` becomes a staging table and an asset
    # (docs/views.md). "" means none; relative paths are taken from the repository root.
    views_dir: str = ""

    @classmethod
    def settings_file(cls, ctx: LoadContext) -> Path | None:
        """`path`, else `$ALLIANCE_QI_SOURCES`, else `sources.yaml` at the repository root."""
        return ctx.path or Path(ctx.environ.get(SOURCES_FILE_ENV) or DEFAULT_SOURCES_FILE)

    @classmethod
    def read_settings_file(cls, file: Path) -> dict[str, Any]:
        """The sources file as one mapping."""
        return read_yaml_mapping(file, cls.error, "sources file")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the documented variables (which need the file's default source), then the
        sources file."""
        ctx = current_load()
        file = cls.file_source(ctx)
        return (init_settings, PipelineEnvSource(settings_cls, ctx, file), file)

    @model_validator(mode="before")
    @classmethod
    def _name_sources(cls, data: Any) -> Any:
        # Every source is named after its key, and the default source always exists (the environment
        # alone can define it).
        if not isinstance(data, dict):
            return data
        default = data.get("default_source") or "demo"
        sources = data.get("sources") or {}
        if not isinstance(sources, dict):
            return data
        named = {}
        for name, src in sources.items():
            src = {} if src is None else src
            named[name] = {"name": name, **src} if isinstance(src, dict) else src
        named.setdefault(default, {"name": default})
        return {**data, "default_source": default, "sources": named}

    @model_validator(mode="after")
    def _complete(self) -> PipelineSettings:
        for s in self.sources.values():
            if s.kind in ("rest", "bulk") and not s.base_url:
                raise ValueError(f"source {s.name!r}: kind {s.kind} needs base_url (or FHIR_BASE_URL)")
            if s.kind == "folder" and not s.folder:
                raise ValueError(f"source {s.name!r}: kind folder needs folder (or FHIR_FOLDER)")
            if s.kind == "bulk" and s.bulk.level == "group" and not s.bulk.group_id:
                raise ValueError(
                    f"source {s.name!r}: bulk level group needs bulk.group_id (or FHIR_BULK_GROUP)"
                )
        return self

    def source(self, name: str | None = None) -> SourceSettings:
        """The named source (default: `default_source`), with a clear error for unknown names."""
        key = name or self.default_source
        if key not in self.sources:
            known = ", ".join(sorted(self.sources)) or "none"
            raise SettingsError(f"unknown FHIR source {key!r}; the sources file defines: {known}")
        return self.sources[key]

    def views_path(self) -> Path | None:
        """The site views folder as an absolute path, or None when no folder is set."""
        if not self.views_dir:
            return None
        p = Path(self.views_dir)
        return p if p.is_absolute() else REPO_ROOT / p

    def warehouse_path(self) -> Path:
        """Absolute warehouse path; relative paths are taken from the repository root."""
        p = Path(self.warehouse)
        return p if p.is_absolute() else REPO_ROOT / p


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None) -> PipelineSettings:
    """Read the sources file and apply environment overrides.

    `path` defaults to `$ALLIANCE_QI_SOURCES` or `sources.yaml` at the repository root; `env` to
    `os.environ`.
    """
    return PipelineSettings.load(env=env, path=path)
