"""Thresholds the suites use, and the instrument registry as lookup tables.

Every threshold has a default here and an environment override `ALLIANCE_QI_QUALITY_<NAME>`
(e.g. `ALLIANCE_QI_QUALITY_FRESHNESS_MAX_DAYS=2`); `QualitySettings` is a pydantic-settings model
(`pipelines.settings_base`). `min_cell` follows the marts' setting unless its own variable is set, so the
suppression check tests the size the marts used. Instrument ranges are never typed in a suite:
they come from `fhir_mappings.registry.load_registry()` and are registered in DuckDB as
`qc_registry_scales`, `qc_registry_items` and `qc_registry_instruments` for the suite SQL, and
handed to `$params` / `for_each` expansions for the expectations.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from fhir_mappings.registry import Instrument, load_registry
from marts.settings import MIN_CELL, load_mart_settings
from pipelines.settings_base import AreaSettings, LoadContext, MappingEnvSource, SettingsError, current_load
from pipelines.sqlfiles import run_sql
from quality_checks.structural import REQUIRED_CODES

ENV_PREFIX = "ALLIANCE_QI_QUALITY_"


class QualitySettingsError(SettingsError):
    """A data-quality threshold (environment variable or argument) is invalid; the message names it."""


class MartMinCellSource(PydanticBaseSettingsSource):
    """`min_cell` from the mart settings (`ALLIANCE_QI_MART_MIN_CELL`, the mart settings file), used
    when neither an argument nor `ALLIANCE_QI_QUALITY_MIN_CELL` sets it: the check of published small
    cells must use the size the marts suppressed with."""

    def __init__(self, settings_cls: type[BaseSettings], ctx: LoadContext) -> None:
        super().__init__(settings_cls)
        self._ctx = ctx

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: `__call__` returns the one value."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if "min_cell" in self.current_state:  # set by a higher-priority source: the marts are not read
            return {}
        self._ctx.note(("min_cell",), "mart settings")
        return {"min_cell": load_mart_settings(env=self._ctx.environ).min_cell}


class QualitySettings(AreaSettings):
    """Thresholds for the suites (defaults documented in docs/data-quality.md)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True)
    area = "data-quality"
    error = QualitySettingsError
    env_excluded = frozenset({"now", "extra"})

    authored_floor: date = date(2000, 1, 1)  # no WAI-SR/SRS/ORS response predates this
    future_skew_hours: float = 24.0  # clock skew and time zones allowed before `authored` is "future"
    session_before_hours: float = 24.0  # a response may be authored this long before its session starts
    session_after_hours: float = 168.0  # ... or this long after it ends (amendments within a week)
    freshness_max_days: float = 7.0  # newest QuestionnaireResponse/Encounter lastUpdated per source
    pull_max_days: float = 2.0  # newest completed pull per source
    min_cell: int = Field(default=MIN_CELL, ge=2)  # published counts 1..min_cell-1 must be suppressed
    max_quarantine_percent: float = 20.0  # above this share a row-level ERROR blocks instead
    now: datetime | None = None  # fixed "now" for tests; None = the clock at run time
    extra: Mapping[str, Any] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then `ALLIANCE_QI_QUALITY_*`, then (for `min_cell` only) the mart settings."""
        ctx = current_load()
        return (init_settings, MappingEnvSource(settings_cls, ctx), MartMinCellSource(settings_cls, ctx))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> QualitySettings:
        """Defaults overridden by `ALLIANCE_QI_QUALITY_<FIELD>` environment variables (`environ`,
        default `os.environ`)."""
        return cls.load(env=environ)

    def clock(self) -> datetime:
        """The instant checks compare against."""
        return self.now or datetime.now(UTC)

    def values(self, registry: Mapping[str, Instrument]) -> dict[str, Any]:
        """Everything a `$name` in a suite (SQL or expectation kwargs) may refer to."""
        now = self.clock()
        floor = datetime.combine(self.authored_floor, datetime.min.time(), tzinfo=UTC)
        return {
            "now": now,
            "authored_floor": floor,
            "authored_ceiling": now + timedelta(hours=self.future_skew_hours),
            "future_skew_hours": self.future_skew_hours,
            "session_before_hours": self.session_before_hours,
            "session_after_hours": self.session_after_hours,
            "session_before_hours_negative": -self.session_before_hours,
            "freshness_max_days": self.freshness_max_days,
            "pull_max_days": self.pull_max_days,
            "min_cell": self.min_cell,
            "small_counts": list(range(1, self.min_cell)),
            "qr_statuses": sorted(REQUIRED_CODES["QuestionnaireResponse"]["status"]),
            "scored_statuses": ["amended", "completed"],
            "excluded_statuses": ["entered-in-error", "in-progress", "stopped"],
            "unmapped_reasons": [
                "unknown questionnaire",
                "unresolvable canonical",
                "unmapped items",
                "unscoreable answer",
            ],
            "raters": ["clinician", "other", "patient"],
            "instrument_ids": sorted(registry),
            **self.extra,
        }


INSTRUMENT_COLUMNS = [
    "instrument",
    "domain",
    "default_rater",
    "item_min",
    "item_max",
    "total_min",
    "total_max",
    "n_items",
    "registry_version",
    "registry_file",
]
SCALE_COLUMNS = ["instrument", "scale", "scale_min", "scale_max", "items_expected", "rule"]
ITEM_COLUMNS = ["instrument", "item_number", "link_ids", "codes", "item_min", "item_max"]


def registry_frames(registry: Mapping[str, Instrument]) -> dict[str, pd.DataFrame]:
    """The registry as three small tables (ranges, items, instruments) for suite SQL and expansions."""
    scales, items, instruments = [], [], []
    for inst in registry.values():
        lo, hi = inst.item_range
        total = inst.scales["total"].range
        instruments.append(
            {
                "instrument": inst.id,
                "domain": inst.domain,
                "default_rater": inst.default_rater,
                "item_min": float(lo),
                "item_max": float(hi),
                "total_min": float(total[0]),
                "total_max": float(total[1]),
                "n_items": len(inst.items),
                "registry_version": inst.registry_version,
                "registry_file": inst.source_file,
            }
        )
        for name, scale in inst.scales.items():
            scales.append(
                {
                    "instrument": inst.id,
                    "scale": name,
                    "scale_min": float(scale.range[0]),
                    "scale_max": float(scale.range[1]),
                    "items_expected": len(scale.items),
                    "rule": scale.rule,
                }
            )
        for item in inst.items:
            items.append(
                {
                    "instrument": inst.id,
                    "item_number": item.number,
                    "link_ids": list(item.link_ids),
                    "codes": list(item.codes),
                    "item_min": float(lo),
                    "item_max": float(hi),
                }
            )
    return {
        "qc_registry_instruments": pd.DataFrame(instruments, columns=INSTRUMENT_COLUMNS),
        "qc_registry_scales": pd.DataFrame(scales, columns=SCALE_COLUMNS),
        "qc_registry_items": pd.DataFrame(items, columns=ITEM_COLUMNS),
    }


REGISTRY_VIEWS_FILE = Path(__file__).resolve().parent / "sql" / "registry_views.sql"
DROP_REGISTRY_VIEWS_FILE = Path(__file__).resolve().parent / "sql" / "drop_registry_views.sql"
REGISTRY_VIEWS = ("qc_registry_instruments", "qc_registry_scales", "qc_registry_items")


def register_registry(con: duckdb.DuckDBPyConnection, frames: Mapping[str, pd.DataFrame]) -> list[str]:
    """Register the registry frames (`registry_frames`) as temporary views on `con`; returns their names.

    The views are `quality_checks/sql/registry_views.sql`, so `frames` must hold exactly the three
    registry tables under their own names.
    """
    if sorted(frames) != sorted(REGISTRY_VIEWS):
        raise ValueError(f"registry frames must be {sorted(REGISTRY_VIEWS)}, got {sorted(frames)}")
    for name, frame in frames.items():
        con.register(f"_{name}_df", frame)
    run_sql(con, REGISTRY_VIEWS_FILE)
    return list(frames)


def unregister_registry(con: duckdb.DuckDBPyConnection, names: list[str]) -> None:
    """Drop what `register_registry` created."""
    run_sql(con, DROP_REGISTRY_VIEWS_FILE)
    for name in names:
        con.unregister(f"_{name}_df")


def load_default_registry() -> dict[str, Instrument]:
    """The registry as configured (shipped files plus the site folder)."""
    return load_registry()
