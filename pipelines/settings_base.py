"""The one settings mechanism every area uses: pydantic-settings models with an environment prefix each.

Areas: the sources file (`pipelines.settings`), the marts (`marts.settings`), the data-quality
thresholds (`quality_checks.params`), the report (`marts.report.render`) and publishing (`marts.publish`).
Each is an `AreaSettings` (a pydantic-settings `BaseSettings`) and is read from, highest first:

1. keyword arguments (`load(**overrides)`, or the model's own constructor);
2. environment variables (`env_prefix` + the field name in upper case, e.g. `ALLIANCE_QI_MART_MIN_CELL`;
   the sources area maps its documented variables instead, see `pipelines.settings`);
3. the area's YAML file, when it has one (`sources.yaml`, the file named by `ALLIANCE_QI_MART_SETTINGS`);
4. the field defaults.

`load(env=..., path=...)` reads a given mapping instead of `os.environ` and a given file (tests,
one-off runs). Empty variables count as unset, as they always have. A bad value fails with one message
that names where it came from: the variable (`min_cell (ALLIANCE_QI_MART_MIN_CELL): ... (got 'abc')`),
the file, or an argument.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import yaml
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

Loc = tuple[str | int, ...]


class SettingsError(ValueError):
    """A setting (argument, environment variable or settings file) is invalid; the message names it."""


@dataclass
class LoadContext:
    """What one `AreaSettings.load` reads: the environment mapping, an explicit file, and where each
    value came from (filled by the sources, read when a value is invalid)."""

    environ: Mapping[str, str]
    path: Path | None = None
    origins: dict[Loc, str] = field(default_factory=dict)

    def note(self, loc: Loc, origin: str) -> None:
        """Record where the value at `loc` came from; sources run highest priority first, so the
        first note for a location is the value that won."""
        self.origins.setdefault(loc, origin)

    def origin(self, loc: Loc) -> str | None:
        """Where the value at `loc` (or its nearest recorded parent) came from."""
        for n in range(len(loc), 0, -1):
            if loc[:n] in self.origins:
                return self.origins[loc[:n]]
        return None


# The load in progress; a ContextVar so concurrent loads in threads or tasks never see each other's.
_CURRENT: ContextVar[LoadContext | None] = ContextVar("alliance_qi_settings_load", default=None)


def current_load() -> LoadContext:
    """The load in progress, or one over `os.environ` when a model is constructed directly."""
    return _CURRENT.get() or LoadContext(os.environ)


@contextmanager
def _loading(ctx: LoadContext) -> Iterator[LoadContext]:
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


class MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over the load's mapping instead of `os.environ`.

    Only upper-case names are read, so the documented variable names match exactly. Fields named in
    the area's `env_excluded` are never read from the environment (run-time values such as a fixed
    clock for tests)."""

    def __init__(self, settings_cls: type[BaseSettings], ctx: LoadContext) -> None:
        self._ctx = ctx  # before super().__init__, which loads the variables
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            (k if self.case_sensitive else k.lower()): v
            for k, v in self._ctx.environ.items()
            if k == k.upper() and not (self.env_ignore_empty and v == "")
        }

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """The field's variable, recorded as the value's origin when set."""
        excluded: frozenset[str] = getattr(self.settings_cls, "env_excluded", frozenset())
        if field_name in excluded:
            return None, field_name, False
        value, key, is_complex = super().get_field_value(field, field_name)
        if value is not None:
            self._ctx.note((field_name,), f"{self.env_prefix}{field_name}".upper())
        return value, key, is_complex


class YamlFileSource(PydanticBaseSettingsSource):
    """The area's YAML settings file (already read into `data`); every key is recorded as coming from
    the file."""

    def __init__(self, settings_cls: type[BaseSettings], ctx: LoadContext, file: Path | None, data: Any):
        super().__init__(settings_cls)
        self.file = file
        self.data: dict[str, Any] = data if isinstance(data, dict) else {}
        self._ctx = ctx

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: the whole mapping is returned by `__call__`."""
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        # Noted here, not at construction: sources are called highest priority first, so a value the
        # environment overrides keeps the variable as its origin.
        if self.file is not None:
            _note_tree(self._ctx, (), self.data, str(self.file))
        return self.data


def _note_tree(ctx: LoadContext, loc: Loc, value: Any, origin: str) -> None:
    if loc:
        ctx.note(loc, origin)
    if isinstance(value, dict):
        for k, v in value.items():
            _note_tree(ctx, (*loc, str(k)), v, origin)


def read_yaml_mapping(file: Path, error: type[SettingsError], what: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping (an empty file is an empty mapping)."""
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except OSError as exc:
        raise error(f"{file}: cannot read {what}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise error(f"{file}: {what} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{file}: {what} must be a mapping of settings, got {type(data).__name__}")
    return data


class AreaSettings(BaseSettings):
    """Base of every settings area: arguments > environment > the area's YAML file > defaults.

    Subclasses set `env_prefix` in `model_config`, and override `settings_file` / `read_settings_file`
    when the area has a file, `error` for their own error type, and `area` for messages."""

    model_config = SettingsConfigDict(extra="forbid", env_ignore_empty=True, case_sensitive=False)

    area: ClassVar[str] = ""  # the area's name in messages ("mart" -> "invalid mart settings")
    error: ClassVar[type[SettingsError]] = SettingsError
    #: fields never read from the environment
    env_excluded: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def settings_file(cls, ctx: LoadContext) -> Path | None:
        """The area's settings file for this load (None: the area has no file, or none is configured)."""
        return None

    @classmethod
    def read_settings_file(cls, file: Path) -> dict[str, Any]:
        """The settings in `file` (the default: the whole file is one mapping of this area's fields)."""
        return read_yaml_mapping(file, cls.error, f"{cls.area} settings")

    @classmethod
    def file_source(cls, ctx: LoadContext) -> YamlFileSource:
        """The area's file as a settings source (empty when there is no file)."""
        file = cls.settings_file(ctx)
        data = cls.read_settings_file(file) if file is not None and file.exists() else {}
        return YamlFileSource(cls, ctx, file, data)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the load's environment mapping, then the area's YAML file. No dotenv and no
        secrets directory: neither was ever a way to configure the pipeline."""
        ctx = current_load()
        return (init_settings, MappingEnvSource(settings_cls, ctx), cls.file_source(ctx))

    @classmethod
    def load(
        cls, *, env: Mapping[str, str] | None = None, path: str | Path | None = None, **overrides: Any
    ) -> Self:
        """The area's settings from `env` (default `os.environ`), its file (`path`, or the area's own
        rule) and keyword `overrides`; raises the area's `error` naming each bad value's origin."""
        ctx = LoadContext(os.environ if env is None else env, Path(path) if path else None)
        for name in overrides:
            ctx.note((name,), "argument")
        with _loading(ctx):
            try:
                return cls(**overrides)
            except ValidationError as exc:
                heading = f"invalid {cls.area} settings" if cls.area else "invalid settings"
                raise cls.error(describe_errors(exc, ctx, heading)) from exc


def describe_errors(exc: ValidationError, ctx: LoadContext, heading: str) -> str:
    """One line per error: the setting, where its value came from, the problem and the value given."""
    parts = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc)
        origin = ctx.origin(loc)
        label = f"{where} ({origin})" if where and origin else where
        if err["type"] == "extra_forbidden":
            parts.append(f"{label}: unknown setting")
            continue
        msg = str(err["msg"]).removeprefix("Value error, ")
        # Model-level rules (no location) describe themselves; field errors show the value given.
        parts.append(f"{label}: {msg} (got {_short(err['input'])})" if loc else msg)
    return f"{heading}: " + "; ".join(parts)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
