"""Mart settings and the thresholds that shape mart rows.

Two sources, both recorded in columns beside the rows they shaped:
- the instrument registry (`fhir_mappings/instruments/*.yaml`, site-overridable): caseness,
  reliable change, response, remission, SRS concern, low-alliance cut-offs;
- `MartSettings` (episode gap rule, rupture and repair rules, PDC, small-cell size, periods): a
  pydantic-settings model (`pipelines.settings_base`) read from, highest first, keyword arguments,
  environment variables `ALLIANCE_QI_MART_<FIELD>` (e.g. `ALLIANCE_QI_MART_PDC_THRESHOLD=0.9`; lists
  comma-separated), the YAML file named by `ALLIANCE_QI_MART_SETTINGS` (keys at the top level or under
  `marts:`), the defaults.

`MIN_CELL` is the one definition of the small-cell size: the marts' default, which the data-quality
checks and the report follow (`quality_checks.params`, `marts.report.render`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from fhir_mappings.registry import Instrument, load_registry
from pipelines.settings_base import (
    AreaSettings,
    LoadContext,
    SettingsError,
    YamlFileSource,
    read_yaml_mapping,
)

ENV_PREFIX = "ALLIANCE_QI_MART_"
SETTINGS_FILE_ENV = "ALLIANCE_QI_MART_SETTINGS"

#: Small cells: counts 1..MIN_CELL-1 are suppressed in aggregates (CMS: 1-10). The one definition.
MIN_CELL = 11

PeriodType = Literal["all", "year", "quarter", "month"]
DEFAULT_THERAPIST_PERIODS: tuple[PeriodType, ...] = ("all", "year")


class MartSettingsError(SettingsError):
    """A mart setting (file or environment) is invalid; the message names it."""


class MartSettings(AreaSettings):
    """Site-configurable rules of the marts (each default and its source: docs/marts.md)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)
    area = "mart"
    error = MartSettingsError

    # A new treatment episode after more than this many days without a session, for sessions
    # whose Encounter names no EpisodeOfCare.
    episode_gap_days: int = Field(default=90, ge=1)
    # Rupture: a reliable drop (the registry's `reliable_drop` per alliance instrument) from the
    # previous measured session, judged on the WAI-SR. The SRS is judged only at sessions without a
    # WAI-SR pair ('when_no_wai_sr'), so a session measured on both is not tested twice (which would
    # double the false alarms); 'off' never judges the SRS. An SRS below its cut-off is a concern flag.
    rupture_srs_rule: Literal["when_no_wai_sr", "off"] = "when_no_wai_sr"
    # Repair: back to the pre-rupture level within this many following sessions.
    repair_window_sessions: int = Field(default=2, ge=1)
    # Early alliance: sessions 1..early_sessions.
    early_sessions: int = Field(default=3, ge=1)
    # PDC (PQA): adherent when PDC >= pdc_threshold; needs pdc_min_fills fills on different dates.
    pdc_threshold: float = Field(default=0.80, gt=0, le=1)
    pdc_min_fills: int = Field(default=2, ge=1)
    # PQA: the index (first) fill at least this many days before the period end, else no PDC.
    pdc_index_min_days: int = Field(default=91, ge=0)
    # marts.adherence: one row per patient x period; 'year' is the PQA measurement year.
    adherence_period: Literal["year", "quarter", "all"] = "year"
    # qi_monthly: PDC over the trailing window ending on the month's last day.
    pdc_window_days: int = Field(default=180, ge=28)
    # List settings are comma-separated in the environment (NoDecode: not JSON), split by `_split`.
    dispense_statuses: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["completed"])
    # Appointment statuses counted as booked, attended and missed.
    appointment_attended: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["fulfilled", "arrived", "checked-in"]
    )
    appointment_missed: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["noshow", "cancelled"]
    )
    # Outcome baseline: the first score at sessions 1..baseline_window_sessions, or, when
    # baseline_window_days is set, within that many days of the episode start. Without one the
    # outcome is incomplete (never a baseline from a later session).
    baseline_window_sessions: int = Field(default=2, ge=1)
    baseline_window_days: int | None = Field(default=None, ge=0)
    # Small cells: counts 1..min_cell-1 are suppressed in aggregates (CMS: 1-10).
    min_cell: int = Field(default=MIN_CELL, ge=2)
    therapist_periods: Annotated[list[PeriodType], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_THERAPIST_PERIODS)
    )
    # Date the marts are "as of" (ages, open episodes, PDC of active episodes). None: the latest
    # session, appointment or dispense date in the data, so the marts depend on data only.
    reference_date: date | None = None
    # Lower bounds of the age bands (years); below the first is '<first'.
    age_bands: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [18, 25, 35, 45, 55, 65])
    funnel_z: Annotated[list[float], NoDecode] = Field(default_factory=lambda: [1.96, 3.09])
    ci_level: float = Field(default=0.95, gt=0, lt=1)
    bootstrap_samples: int = Field(default=500, ge=50)
    bootstrap_seed: int = 20260501
    # Prospective adherence (alliance_associations): the window after the early sessions in which PDC,
    # MARS and DAI-10 are measured, so the alliance is always measured before the adherence.
    prospective_adherence_days: int = Field(default=365, ge=91)
    pseudonym_key_file: str | None = None
    # Feedback (marts.not_on_track, docs/feedback.md). Expected-response curves: a baseline band x
    # session cell needs at least feedback_min_cell_n closed episodes, else the rule-based check
    # decides; sessions past feedback_max_session share its cell. Not on track: worse than the
    # not_on_track_quantile of the cell (0.75: worse than three in four similar closed episodes).
    # The rule-based check, and the validation's early flag, look at sessions up to
    # feedback_horizon_sessions (late responders exist: a later horizon flags fewer of them).
    feedback_min_cell_n: int = Field(default=20, ge=5)
    feedback_max_session: int = Field(default=12, ge=2)
    not_on_track_quantile: float = Field(default=0.75, ge=0.5, lt=1)
    feedback_horizon_sessions: int = Field(default=4, ge=2)

    @field_validator(
        "dispense_statuses",
        "appointment_attended",
        "appointment_missed",
        "therapist_periods",
        "age_bands",
        "funnel_z",
        mode="before",
    )
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @model_validator(mode="after")
    def _consistent(self) -> MartSettings:
        if self.age_bands != sorted(set(self.age_bands)) or not self.age_bands:
            raise ValueError("age_bands must be increasing lower bounds")
        if len(self.funnel_z) != 2 or not 0 < self.funnel_z[0] < self.funnel_z[1]:
            raise ValueError("funnel_z must be two increasing positive z values (inner, outer)")
        if not self.therapist_periods:
            raise ValueError("therapist_periods needs at least one period type")
        return self

    @classmethod
    def settings_file(cls, ctx: LoadContext) -> Path | None:
        """`path`, else the file named by `$ALLIANCE_QI_MART_SETTINGS`; none by default."""
        file = ctx.path or ctx.environ.get(SETTINGS_FILE_ENV)
        return Path(file) if file else None

    @classmethod
    def file_source(cls, ctx: LoadContext) -> YamlFileSource:
        """A named mart settings file must exist (unlike the optional sources file)."""
        file = cls.settings_file(ctx)
        if file is not None and not file.exists():
            raise MartSettingsError(f"{file}: cannot read mart settings: no such file")
        return super().file_source(ctx)

    @classmethod
    def read_settings_file(cls, file: Path) -> dict[str, Any]:
        """The file's `marts:` section, or the whole file when it has none."""
        data = read_yaml_mapping(file, MartSettingsError, "mart settings")
        section = data.get("marts", data)
        if not isinstance(section, dict):
            raise MartSettingsError(f"{file}: marts: must be a mapping of mart settings")
        return section


def load_mart_settings(
    path: str | Path | None = None, env: Mapping[str, str] | None = None, **overrides: Any
) -> MartSettings:
    """Defaults, then the YAML file (`path` or `$ALLIANCE_QI_MART_SETTINGS`), then the environment
    (`env`, default `os.environ`), then keyword overrides."""
    return MartSettings.load(env=env, path=path, **overrides)


@dataclass(frozen=True)
class Thresholds:
    """Instrument cut-offs from the registry (names match the columns that record them)."""

    phq9_caseness: float = 10
    phq9_reliable_change: float = 6
    phq9_response_drop_fraction: float = 0.5
    phq9_remission_below: float = 5
    gad7_caseness: float = 8
    gad7_reliable_change: float = 4
    ors_clinical_cutoff: float = 25
    ors_reliable_change: float = 5
    srs_concern_below: float = 36
    wai_sr_low_alliance_mean: float = 3.0
    wai_therapist_low_alliance_mean: float = 3.0
    wai_sr_reliable_drop: float = 0.75
    srs_reliable_drop: float = 5
    dai10_positive_above: float = 0

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


# (instrument id, registry threshold key) -> Thresholds field
_REGISTRY_KEYS: dict[tuple[str, str], str] = {
    ("phq9", "caseness"): "phq9_caseness",
    ("phq9", "reliable_change"): "phq9_reliable_change",
    ("phq9", "response_drop_fraction"): "phq9_response_drop_fraction",
    ("phq9", "remission_below"): "phq9_remission_below",
    ("gad7", "caseness"): "gad7_caseness",
    ("gad7", "reliable_change"): "gad7_reliable_change",
    ("ors", "clinical_cutoff"): "ors_clinical_cutoff",
    ("ors", "reliable_change"): "ors_reliable_change",
    ("srs", "concern_below"): "srs_concern_below",
    ("wai_sr", "low_alliance_mean"): "wai_sr_low_alliance_mean",
    ("wai_therapist", "low_alliance_mean"): "wai_therapist_low_alliance_mean",
    ("wai_sr", "reliable_drop"): "wai_sr_reliable_drop",
    ("srs", "reliable_drop"): "srs_reliable_drop",
    ("dai10", "positive_above"): "dai10_positive_above",
}


def thresholds_from_registry(registry: Mapping[str, Instrument] | None = None) -> Thresholds:
    """The registry's thresholds (site files included); a missing key keeps the `Thresholds` default."""
    reg = load_registry() if registry is None else registry
    values: dict[str, float] = {}
    for (instrument, key), field_name in _REGISTRY_KEYS.items():
        inst = reg.get(instrument)
        if inst is None or key not in inst.thresholds:
            continue
        try:
            values[field_name] = float(inst.thresholds[key])
        except (TypeError, ValueError) as exc:
            raise MartSettingsError(
                f"registry {inst.source_file}: threshold {key!r} must be a number, "
                f"got {inst.thresholds[key]!r}"
            ) from exc
    return Thresholds(**values)
