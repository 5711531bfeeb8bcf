"""The QI report: one self-contained HTML file (inline CSS, inline SVG charts, no network) built from
the pseudonymised marts.

Sections: overview, monthly KPIs, alliance trajectories, early alliance vs PHQ-9 improvement, CBT
skill use and alliance vs endpoint PHQ-9 (a table of model estimates), the therapist funnel plot,
medication adherence by patient- vs clinician-rated alliance, and data quality. Each has a short
plain-language caption and the n behind it.

The report only reads marts: every aggregate it shows is a row of a mart built, suppressed and checked
with the others (`marts.report_*`, see marts/report_marts.py and docs/marts.md); the report selects
rows, formats them and draws them. It runs no SQL against any other schema and computes no aggregate
itself. Each query is a file of `marts/report/sql/` (run by `pipelines.sqlfiles.query_records`, the
schema rendered from `{{ schema }}`, values bound). A `min_cell` passed here (larger than the marts')
only withholds more: a value resting on fewer cases is not shown.

Rendering: Jinja2 templates in `marts/report/templates/` with autoescaping on and StrictUndefined, so
every value from a mart is escaped and a missing template variable is an error. The SVG charts are
drawn by `marts.report.charts`, which escapes every text they contain and returns `Markup`.
"""

from __future__ import annotations

import math
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from importlib import metadata
from pathlib import Path
from statistics import NormalDist
from typing import Any

import duckdb
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from pydantic_settings import SettingsConfigDict

from marts.report import charts
from marts.settings import MIN_CELL
from pipelines.settings import REPO_ROOT
from pipelines.settings_base import AreaSettings
from pipelines.sqlfiles import query_records

DEFAULT_MIN_CELL = MIN_CELL  # the one definition (marts/settings.py)
DASH = Markup("&ndash;")  # shown for a missing value in HTML
DASH_TEXT = "\u2013"  # the same in chart tooltips (plain text, escaped by the chart)
TITLE = "Therapeutic alliance: quality improvement report"
TEMPLATES = Path(__file__).resolve().parent / "templates"
SQL_DIR = Path(__file__).resolve().parent / "sql"  # the report's queries, one file each

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


@cache
def environment() -> Environment:
    """The Jinja2 environment: templates from marts/report/templates, autoescaped, strict."""
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(
            enabled_extensions=("html", "j2"), default_for_string=True, default=True
        ),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def _render(template: str, **context: Any) -> Markup:
    """A section template rendered (autoescaped) and marked safe for the page template."""
    # the text is the output of an autoescaping template: every value in it is already escaped
    return Markup(environment().get_template(template).render(**context))  # noqa: S704


class ReportSettings(AreaSettings):
    """The report's settings (`ALLIANCE_QI_REPORT_<FIELD>`). Its small-cell size is not one of them:
    the report uses the size the marts were built with (`report_overview.min_cell`), so the two never
    disagree."""

    model_config = SettingsConfigDict(env_prefix="ALLIANCE_QI_REPORT_")
    area = "report"

    path: Path | None = None  # `ALLIANCE_QI_REPORT_PATH`; None: `<repo>/reports/qi_report.html`


def report_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the report goes: `$ALLIANCE_QI_REPORT_PATH`, else `<repo>/reports/qi_report.html`."""
    configured = ReportSettings.load(env=env).path
    return configured.expanduser().resolve() if configured else REPO_ROOT / "reports" / "qi_report.html"


@dataclass(frozen=True)
class Section:
    """One section of the report: its anchor, heading and rendered body; `charts` are the chart ids."""

    section_id: str
    title: str
    body: Markup
    charts: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportResult:
    """What `build_report` wrote."""

    path: Path
    sections: tuple[str, ...]
    chart_marks: dict[str, int]
    bytes: int
    generated_at: datetime
    min_cell: int


@dataclass
class _Reader:
    """Selects rows of the marts in `<schema>` on one connection (nothing else)."""

    con: duckdb.DuckDBPyConnection
    schema: str
    min_cell: int = DEFAULT_MIN_CELL
    mart_min_cell: int = DEFAULT_MIN_CELL

    def rows(self, sql_file: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The rows of the query in `marts/report/sql/<sql_file>` as dicts, its `{{ schema }}` the marts
        schema (rendered as a quoted identifier) and its `$name` values bound from `params`."""
        return query_records(self.con, SQL_DIR / sql_file, params, {"schema": self.schema})

    def one(self, sql_file: str) -> dict[str, Any]:
        """The single row of a one-row mart (`report_overview`, ...) read by `sql_file`."""
        rows = self.rows(sql_file)
        if len(rows) != 1:
            raise ValueError(f"{sql_file}: expected one row, got {len(rows)}")
        return rows[0]

    def count(self, value: Any) -> Markup:
        """A count as HTML: small cells (1 .. min_cell-1) as '&lt;min_cell', missing as a dash."""
        return format_count(value, self.min_cell)

    def count_text(self, value: Any) -> str:
        """The same as plain text (for chart tooltips)."""
        return count_text(value, self.min_cell)

    def enough(self, n: Any) -> bool:
        """Does a value resting on `n` cases clear the report's min_cell? A count the marts withheld
        as a complement (NULL, but its value was shown) is at least the marts' min_cell."""
        if _missing(n):
            return self.min_cell <= self.mart_min_cell
        return int(n) >= self.min_cell


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def count_text(value: Any, min_cell: int = DEFAULT_MIN_CELL) -> str:
    """'1,234'; '0'; '<11' for a small cell (never the count itself); a dash when missing."""
    if _missing(value):
        return DASH_TEXT
    n = int(value)
    if 0 < n < min_cell:
        return f"<{min_cell}"
    return f"{n:,}"


def format_count(value: Any, min_cell: int = DEFAULT_MIN_CELL) -> Markup:
    """`count_text` as HTML: '1,234'; '0'; '&lt;11' for a small cell; '&ndash;' when missing."""
    if _missing(value):
        return DASH
    return Markup.escape(count_text(value, min_cell))


def _pct(value: Any, digits: int = 1) -> Markup | str:
    return DASH if _missing(value) else f"{100 * float(value):.{digits}f}%"


def _num_text(value: Any, digits: int = 2) -> str:
    return DASH_TEXT if _missing(value) else f"{float(value):.{digits}f}"


def _float(value: Any) -> float | None:
    return None if _missing(value) else float(value)


Association = tuple[float, float, float, int]


def _association(r: _Reader, question_id: str, method: str = "pearson") -> Association | None:
    """(estimate, ci_lower, ci_upper, n) of one association row, None when absent or suppressed."""
    rows = r.rows("alliance_associations_estimate.sql", {"question_id": question_id, "method": method})
    if not rows:
        return None
    row = rows[0]
    est, lo, hi, n = row["estimate"], row["ci_lower"], row["ci_upper"], row["n"]
    # no interval (fewer than 3 therapists to resample): the estimate is not quoted alone
    if row["suppressed"] or est is None or lo is None or hi is None or n is None or int(n) < r.min_cell:
        return None
    return float(est), float(lo), float(hi), int(n)


def _r_text(a: Association | None, unit: str, ci_percent: str) -> str:
    if a is None:
        return "not shown (too few cases)"
    est, lo, hi, n = a
    return f"r = {est:.2f} ({ci_percent}% CI {lo:.2f} to {hi:.2f}), n = {n:,} {unit}"


def _percent(level: float) -> str:
    """0.95 -> '95', 0.998 -> '99.8'."""
    return f"{100 * level:.1f}".rstrip("0").rstrip(".")


# ---------------------------------------------------------------------------------------------------
# sections


def _overview(r: _Reader, overview: dict[str, Any]) -> Section:
    rate = overview["measurement_completion_rate"]
    measured = overview["sessions_alliance_measured"]
    cards = [
        (r.count(overview["patients"]), "patients with a session"),
        (r.count(overview["episodes"]), "treatment episodes with a session"),
        (r.count(overview["sessions"]), "attended sessions"),
        (
            _pct(rate) if not _missing(measured) and not 0 < int(measured) < r.min_cell else DASH,
            "sessions with alliance measured",
        ),
        (f"{int(overview['therapists_reportable'] or 0):,}", "therapists with a reportable caseload"),
    ]
    first, last = overview["first_session_date"], overview["last_session_date"]
    period = f"{first:%d %b %Y} to {last:%d %b %Y}" if first and last else ""
    body = _render("overview.html.j2", cards=cards, min_cell=r.min_cell, period=period)
    return Section("overview", "Overview", body)


_KPI_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("patients_seen", "Patients seen", "count"),
    ("sessions_attended", "Sessions", "count"),
    ("measurement_completion_rate", "Alliance measured", "pct"),
    ("mean_alliance", "Mean WAI-SR", "mean"),
    ("low_alliance_share", "Low alliance", "pct"),
    ("rupture_rate", "Rupture rate", "pct"),
    ("episodes_ended", "Episodes ended", "count"),
    # outcome rates per calendar quarter (on the quarter's last month): a month's few endings are noise
    ("quarter_recovery_rate", "Recovery (quarter)", "pct"),
    ("quarter_reliable_improvement_rate", "Reliable improvement (quarter)", "pct"),
    ("pdc_adherence_rate", "PDC adherent", "pct"),
    ("attendance_rate", "Attendance", "pct"),
    ("data_quality_pass_rate", "Data quality pass", "pct"),
)


def _kpi_cell(r: _Reader, value: Any, kind: str) -> Markup | str:
    if kind == "count":
        return r.count(value)
    if kind == "pct":
        return _pct(value)
    return DASH if _missing(value) else f"{float(value):.2f}"


def _suppressed_columns(row: Mapping[str, Any]) -> set[str]:
    return set(str(row["suppressed_columns"] or "").split(",")) - {""}


def _monthly(r: _Reader, overview: dict[str, Any]) -> Section:
    rows = r.rows("qi_monthly_practice.sql")
    months: list[date] = []
    table: list[tuple[str, list[Markup | str | None]]] = []
    for row in rows:
        suppressed = _suppressed_columns(row)
        month = pd.Timestamp(row["month"]).date()
        months.append(month)
        cells = [None if c in suppressed else _kpi_cell(r, row[c], kind) for c, _, kind in _KPI_COLUMNS]
        table.append((f"{month:%b %Y}", cells))

    def points(col: str) -> list[tuple[float, float | None]]:
        out: list[tuple[float, float | None]] = []
        for i, row in enumerate(rows):
            v = None if col in _suppressed_columns(row) else _float(row[col])
            out.append((float(i), None if v is None else 100 * v))
        return out

    lines = [
        charts.Series("Alliance measured", points("measurement_completion_rate"), charts.BLUE),
        charts.Series("Attendance", points("attendance_rate"), charts.GREEN),
        charts.Series("Data quality pass", points("data_quality_pass_rate"), charts.PURPLE, dashed=True),
        charts.Series("Low alliance share", points("low_alliance_share"), charts.VERMILLION),
    ]
    ticks = [(float(i), f"{m:%b %y}") for i, m in enumerate(months)]
    if len(ticks) > 12:
        step = math.ceil(len(ticks) / 12)
        ticks = ticks[::step]
    svg = charts.line_chart(
        "monthly_kpis",
        "Monthly KPIs (practice), % of sessions, appointments or responses",
        lines,
        x_label="month",
        y_label="percent",
        x_ticks=ticks,
        y_range=(0, 100),
        y_format=lambda v: f"{v:g}%",
        description="Line chart of monthly measurement completion, attendance, data-quality pass rate and "
        "low-alliance share for the whole practice.",
    )
    body = _render(
        "monthly.html.j2",
        chart=svg,
        sessions=r.count(overview["sessions"]),
        months=len(rows),
        clinics=int(overview["clinics"] or 0),
        headings=[h for _, h, _ in _KPI_COLUMNS],
        rows=table,
    )
    return Section("monthly", "Monthly KPIs", body, ("monthly_kpis",))


def _trajectories(r: _Reader, ci_percent: str) -> Section:
    """Within-episode change of the alliance by session number (each rated session minus the same
    episode's session-1 rating), not the cross-sectional mean: the episodes still running at a late
    session are not those that started, so a cross-sectional rise is partly who stays in treatment."""
    rows = r.rows("report_alliance_trajectory.sql")
    by_number = [row for row in rows if row["level"] == "session"]
    total = next((row for row in rows if row["level"] == "all"), None)
    patient: list[tuple[float, float | None]] = []
    clinician: list[tuple[float, float | None]] = []
    p_notes: list[str] = []
    c_notes: list[str] = []
    band: list[tuple[float, float, float]] = []
    for row in by_number:
        k = float(row["session_number"])
        n_p, n_c = row["sessions_change_patient"], row["sessions_change_clinician"]
        p = _float(row["mean_change_patient"]) if r.enough(n_p) else None
        c = _float(row["mean_change_clinician"]) if r.enough(n_c) else None
        patient.append((k, p))
        clinician.append((k, c))
        p_notes.append(
            f"session {int(k)}: patient-rated change since session 1 {_signed(p)} (n = {r.count_text(n_p)})"
        )
        c_notes.append(
            f"session {int(k)}: clinician-rated change since session 1 {_signed(c)} (n = {r.count_text(n_c)})"
        )
        lo, hi = _float(row["ci_lower_change_patient"]), _float(row["ci_upper_change_patient"])
        if p is not None and lo is not None and hi is not None:
            band.append((k, lo, hi))
    # keep the x axis to the session numbers with something to show
    keep = [
        i
        for i, (pt, ct) in enumerate(zip(patient, clinician, strict=True))
        if pt[1] is not None or ct[1] is not None
    ]
    last = (max(keep) + 1) if keep else 0
    series = [
        charts.Series("Patient-rated (WAI-SR)", patient[:last], charts.BLUE, notes=p_notes[:last], band=band),
        charts.Series(
            "Clinician-rated (WAI therapist form)",
            clinician[:last],
            charts.ORANGE,
            dashed=True,
            notes=c_notes[:last],
        ),
    ]
    svg = charts.line_chart(
        "alliance_trajectories",
        "Change in alliance since session 1 within the same episodes, by session number, patient- vs "
        "clinician-rated",
        series,
        x_label="session number in the treatment episode",
        y_label="change in mean WAI score since session 1",
        references=[(0.0, "no change since session 1")],
        y_format=lambda v: f"{v:+.2f}",
        description="Line chart of the mean within-episode change in patient-rated and clinician-rated "
        "alliance since session 1 at each session number, with a shaded "
        f"{ci_percent}% interval around the patient-rated change.",
    )
    drawn = [
        row
        for row in by_number
        if row["mean_change_patient"] is not None and r.enough(row["sessions_change_patient"])
    ]
    last_row = drawn[-1] if drawn else None
    body = _render(
        "trajectories.html.j2",
        chart=svg,
        ci_percent=ci_percent,
        total=r.count(total["sessions_change_patient"] if total else 0),
        first_n=r.count(drawn[0]["sessions_change_patient"]) if drawn else DASH,
        last=(
            {
                "n": r.count(last_row["sessions_change_patient"]),
                "session_number": int(last_row["session_number"]),
            }
            if last_row
            else None
        ),
        min_cell=r.min_cell,
    )
    return Section("trajectories", "Alliance over the course of treatment", body, ("alliance_trajectories",))


def _signed(v: float | None) -> str:
    return DASH if v is None else f"{v:+.2f}"


def _early_alliance(r: _Reader, ci_percent: str) -> Section:
    fit = r.one("report_early_alliance_fit.sql")
    early = int(fit["early_sessions"])
    bands: list[dict[str, Any]] = []
    if not fit["suppressed"] and fit["episodes"] and r.enough(fit["episodes"]):
        # bands of early alliance with their mean improvement: never one dot per episode
        bands = [b for b in r.rows("report_early_alliance_bins.sql") if r.enough(b["episodes"])]
    points = [(float(b["x"]), float(b["y"])) for b in bands]
    # no line when early alliance does not vary: DuckDB's regr_slope is then NaN and regr_intercept NULL
    intercept, slope = _float(fit["intercept"]), _float(fit["slope"])
    line = (intercept, slope) if points and intercept is not None and slope is not None else None
    assoc = _association(r, "early_alliance_vs_phq9_improvement")
    svg = charts.scatter_chart(
        "early_alliance_phq9",
        "Early patient-rated alliance vs PHQ-9 improvement: mean improvement per half-point band of early "
        "alliance",
        points,
        x_label=f"early alliance: mean patient-rated WAI-SR over sessions 1-{early} (1-5)",
        y_label="PHQ-9 improvement (points)",
        fit=line,
        fit_label="least-squares line",
        description="Mean drop in PHQ-9 from the first to the last score in each band of early alliance "
        "(bands with fewer than min_cell episodes are not drawn), with the line fitted over all episodes.",
        point_label="band mean",
    )
    if assoc is None:
        finding = "There are too few episodes with both measures to estimate the association yet."
    else:
        _, lo, hi, _ = assoc
        if lo > 0:
            finding = "Episodes that started with a stronger alliance improved more on the PHQ-9."
        elif hi < 0:
            finding = "Episodes that started with a stronger alliance improved less on the PHQ-9."
        else:
            finding = "The data show no clear link between early alliance and PHQ-9 improvement."
    body = _render(
        "early_alliance.html.j2",
        chart=svg,
        early_sessions=early,
        finding=finding,
        association=_r_text(assoc, "episodes", ci_percent),
        drawn=len(bands),
        min_cell=r.min_cell,
    )
    return Section("early-alliance", "Early alliance and depression outcome", body, ("early_alliance_phq9",))


_SKILL_MODELS = (("skill_alliance_additive", "additive"), ("skill_alliance_moderation", "with interaction"))
_SKILL_TERMS = {
    "baseline_phq9": ("baseline PHQ-9", "per PHQ-9 point"),
    "skill_use": ("skill use", "per CBTSQ point"),
    "alliance": ("early alliance", "per WAI-SR point"),
    "skill_use_x_alliance": ("skill use x alliance", "per CBTSQ point x WAI-SR point"),
}


def _skill_finding(term: str, lo: float, hi: float) -> str:
    """One neutral sentence on what an interval says about a term of the moderation model."""
    if term == "skill_use":
        if hi < 0:
            return "At average alliance, episodes with more skill use ended with lower PHQ-9 scores."
        if lo > 0:
            return "At average alliance, episodes with more skill use ended with higher PHQ-9 scores."
        return "At average alliance, the data show no clear link between skill use and endpoint PHQ-9."
    if term == "alliance":
        if hi < 0:
            return (
                "At average skill use, episodes with a stronger early alliance ended with lower PHQ-9 scores."
            )
        if lo > 0:
            return (
                "At average skill use, episodes with a stronger early alliance ended with higher PHQ-9 "
                "scores."
            )
        return "At average skill use, the data show no clear link between early alliance and endpoint PHQ-9."
    if hi < 0:
        return (
            "The link between skill use and a lower endpoint was stronger in episodes with a stronger "
            "early alliance (the interaction is below zero)."
        )
    if lo > 0:
        return (
            "The link between skill use and a lower endpoint was weaker in episodes with a stronger "
            "early alliance (the interaction is above zero)."
        )
    return "The data do not show whether the alliance changes the link between skill use and endpoint PHQ-9."


def _skill_use(r: _Reader, ci_percent: str, early_sessions: int) -> Section:
    """CBT skill use, alliance and endpoint PHQ-9: the two models of marts/moderation.py as a table with
    plain-language findings from the moderation model's intervals."""
    found = {row["question_id"]: row for row in r.rows("alliance_associations_skill_use.sql")}
    rows: list[dict[str, str]] = []
    findings: list[str] = []
    n_shown: int | None = None
    therapists = ""
    for model, model_label in _SKILL_MODELS:
        for term, (term_label, unit) in _SKILL_TERMS.items():
            row = found.get(f"{model}:{term}")
            if row is None:
                continue
            est, lo, hi, n = row["estimate"], row["ci_lower"], row["ci_upper"], row["n"]
            shown = not row["suppressed"] and not _missing(est) and not _missing(n) and r.enough(n)
            interval = (
                f"{float(lo):.3f} to {float(hi):.3f}"
                if shown and not _missing(lo) and not _missing(hi)
                else DASH_TEXT
            )
            rows.append(
                {
                    "model": model_label,
                    "term": f"{term_label} ({unit})",
                    "estimate": f"{float(est):.3f}" if shown else "not shown (too few episodes)",
                    "interval": interval,
                }
            )
            if shown:
                n_shown = int(n)
                # the detail reads "<term>; <k> therapists; <used> of <samples> bootstrap samples"
                parts = str(row["detail"] or "").split("; ")
                therapists = next((p for p in parts if p.endswith(" therapists")), therapists)
                if model == "skill_alliance_moderation" and term != "baseline_phq9" and interval != DASH_TEXT:
                    findings.append(_skill_finding(term, float(lo), float(hi)))
                if model == "skill_alliance_moderation" and term == "skill_use_x_alliance":
                    findings.append(
                        f"Read the interaction of {float(est):.3f} this way: for each point of stronger "
                        f"early alliance, the endpoint difference that goes with one more CBTSQ point "
                        f"changes by {float(est):.3f} PHQ-9 points."
                    )
    if n_shown is None:
        n_line = "n = 0 closed episodes shown: too few with skill use, alliance and paired PHQ-9 to fit"
        findings = ["There are too few closed episodes with all measures to fit the models yet."]
    else:
        n_line = f"n = {n_shown:,} closed episodes" + (f", {therapists}" if therapists else "")
    body = _render(
        "skill_use.html.j2",
        rows=rows,
        findings=findings,
        n_line=n_line,
        ci_percent=ci_percent,
        early_sessions=early_sessions,
    )
    return Section("skill-use", "CBT skill use, alliance and depression outcome", body)


def _funnel(r: _Reader, ci_percent: str) -> Section:
    funnel = r.one("report_therapist_funnel.sql")
    dots = r.rows(
        "therapist_alliance_funnel_dots.sql",
        {"period_type": funnel["period_type"], "period_start": funnel["period_start"]},
    )
    points = [
        charts.FunnelPoint(
            label=str(row["therapist_key"])[:8],
            n=float(row["patients_with_alliance"]),
            value=float(row["mean_alliance"]),
            shrunken=_float(row["shrunken_alliance"]),
            position=str(row["funnel_position"]),
        )
        for row in dots
    ]
    sigma2 = _float(funnel["sigma2"])
    tau2 = _float(funnel["funnel_tau2"]) or 0.0
    z_inner, z_outer = float(funnel["funnel_z_inner"]), float(funnel["funnel_z_outer"])
    svg = charts.funnel_chart(
        "therapist_funnel",
        "Therapists' mean patient-rated alliance against patients rated, with funnel limits allowing for "
        "the usual spread between therapists",
        points,
        grand=_float(funnel["grand_mean"]),
        sigma=math.sqrt(sigma2) if sigma2 is not None and sigma2 > 0 else None,
        tau2=tau2,
        z_inner=z_inner,
        z_outer=z_outer,
        x_label="patients with a patient-rated alliance score",
        y_label="mean patient-rated WAI-SR (1-5)",
        description="Funnel plot: one dot per therapist at the number of their patients who rated the "
        f"alliance and those patients' mean alliance, with {_z_percent(z_inner)}% and "
        f"{_z_percent(z_outer)}% limits around the practice mean that allow for chance and for the usual "
        "spread between therapists.",
    )
    icc = _float(funnel["icc"])
    icc_lo, icc_hi = _float(funnel["icc_ci_lower"]), _float(funnel["icc_ci_upper"])
    caseload_min, caseload_max = _float(funnel["patients_min"]), _float(funnel["patients_max"])
    body = _render(
        "therapists.html.j2",
        chart=svg,
        inner_percent=_z_percent(z_inner),
        outer_percent=_z_percent(z_outer),
        above=int(funnel["therapists_above_outer"]),
        below=int(funnel["therapists_below_outer"]),
        icc=f"{icc:.2f}" if icc is not None else None,
        icc_percent=f"{100 * icc:.0f}" if icc is not None else None,
        icc_ci=(
            f"{icc_lo:.2f} to {icc_hi:.2f}"
            if icc is not None and icc_lo is not None and icc_hi is not None
            else None
        ),
        ci_percent=ci_percent,
        drawn=int(funnel["therapists_drawn"]),
        caseload_min=f"{caseload_min:g}" if caseload_min is not None and points else None,
        caseload_max=f"{caseload_max:g}" if caseload_max is not None else None,
        period_type=str(funnel["period_type"] or "all"),
        hidden=int(funnel["therapists_hidden"]),
        min_cell=r.min_cell,
    )
    return Section("therapists", "Therapist funnel plot", body, ("therapist_funnel",))


def _z_percent(z: float) -> str:
    """The two-sided coverage of a normal z, as a percent (1.96 -> '95', 3.09 -> '99.8')."""
    return _percent(round(2 * NormalDist().cdf(z) - 1, 3))


_TERTILES = ("lowest third", "middle third", "highest third")
_ADHERENCE_CHARTS: tuple[tuple[str, str, str, str, tuple[float, float], Callable[[float], str]], ...] = (
    (
        "adherence_pdc",
        "pdc",
        "Mean PDC (proportion of days covered by refills)",
        "mean PDC",
        (0.0, 1.0),
        lambda v: f"{100 * v:.0f}%",
    ),
    (
        "adherence_mars",
        "mars",
        "Mean MARS adherence score (0-10)",
        "mean MARS (0-10)",
        (0.0, 10.0),
        lambda v: f"{v:.1f}",
    ),
)


def _adherence(r: _Reader, ci_percent: str) -> Section:
    rows = r.rows("report_adherence_by_alliance_tertile.sql")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["measure"], row["rater"]), []).append(row)
    pdc_threshold = _float(rows[0]["pdc_threshold"]) if rows else None
    period = str(rows[0]["period_type"]) if rows and rows[0]["period_type"] else "year"
    svgs: list[Markup] = []
    ns: list[str] = []
    for chart_id, measure, title, y_label, y_range, fmt in _ADHERENCE_CHARTS:
        series = []
        for rater, name, color in (
            ("patient", "Patient-rated alliance", charts.BLUE),
            ("clinician", "Clinician-rated alliance", charts.ORANGE),
        ):
            thirds = groups.get((measure, rater), [])
            counts = [t["n_patient_periods"] for t in thirds]
            shown = len(thirds) == 3 and all(
                t["mean_measure"] is not None and r.enough(t["n_patient_periods"]) for t in thirds
            )
            means = [_float(t["mean_measure"]) if shown else None for t in thirds] or [None] * 3
            notes = [
                f"{name}, {label}: {('mean ' + fmt(m)) if m is not None else 'suppressed or no data'} "
                f"(n = {r.count_text(c) if m is not None else 'withheld'})"
                for label, m, c in zip(_TERTILES, means, counts or [None] * 3, strict=True)
            ]
            series.append(charts.BarSeries(name, color, means, notes))
            total = thirds[0]["n_patient_periods_total"] if thirds else 0
            ns.append(
                f"{measure.upper()} by {rater}-rated alliance: "
                + (
                    f"n = {count_text(total, r.min_cell)} patient-{period}s"
                    if r.enough(total) and total
                    else "too few to show"
                )
                + (
                    " (" + " / ".join(count_text(c, r.min_cell) for c in counts) + " per third)"
                    if shown
                    else ""
                )
            )
        svgs.append(
            charts.bar_chart(
                chart_id,
                f"{title} by third of alliance, per rater",
                _TERTILES,
                series,
                x_label="patients grouped by their alliance score (thirds, per rater)",
                y_label=y_label,
                y_range=y_range,
                y_format=fmt,
                value_format=fmt,
                description=f"Grouped bar chart of {title.lower()} for the lowest, middle and highest "
                "third of patient-rated and of clinician-rated alliance.",
            )
        )

    def diff_text(d: Association | None) -> str:
        if d is None:
            return "difference not shown"
        return f"difference {d[0]:.2f} ({ci_percent}% CI {d[1]:.2f} to {d[2]:.2f})"

    def by_rater(stem: str) -> dict[str, str]:
        return {
            "patient": _r_text(_association(r, f"patient_alliance_vs_{stem}"), "patient-periods", ci_percent),
            "clinician": _r_text(
                _association(r, f"clinician_alliance_vs_{stem}"), "patient-periods", ci_percent
            ),
            "difference": diff_text(
                _association(r, f"patient_minus_clinician_alliance_vs_{stem}", "difference")
            ),
        }

    def prospective(stem: str) -> dict[str, str]:
        """Early alliance (sessions 1-3) against adherence in the year after it: the alliance is
        measured before the adherence, unlike the bars."""
        return {
            "patient": _r_text(
                _association(r, f"early_patient_alliance_predicts_{stem}"), "episodes", ci_percent
            ),
            "clinician": _r_text(
                _association(r, f"early_clinician_alliance_predicts_{stem}"), "episodes", ci_percent
            ),
            "difference": diff_text(
                _association(r, f"early_patient_minus_clinician_alliance_predicts_{stem}", "difference")
            ),
        }

    body = _render(
        "adherence.html.j2",
        charts=svgs,
        pdc_threshold=f"{100 * pdc_threshold:.0f}" if pdc_threshold is not None else None,
        ci_percent=ci_percent,
        group_ns=ns,
        pdc=by_rater("pdc"),
        mars=by_rater("mars"),
        pdc_prospective=prospective("pdc"),
        mars_prospective=prospective("mars"),
    )
    ids = tuple(c[0] for c in _ADHERENCE_CHARTS)
    return Section("adherence", "Medication adherence by patient- vs clinician-rated alliance", body, ids)


def _data_quality(r: _Reader, with_quality: bool) -> Section:
    rows = r.rows("report_data_quality.sql") if with_quality else []
    tables = [row for row in rows if row["level"] == "table"]
    total = next((row for row in rows if row["level"] == "all"), None)
    if not tables or total is None:
        svg = charts.stacked_bar_chart(
            "data_quality",
            "Data-quality checks of the newest run",
            [],
            (("passed", charts.GREEN),),
            x_label="checks",
        )
        return Section(
            "data-quality",
            "Data quality",
            _render("data_quality.html.j2", chart=svg, rows=[], total=None),
            ("data_quality",),
        )
    svg = charts.stacked_bar_chart(
        "data_quality",
        "Data-quality checks of the newest run, per table and severity",
        [
            (f"{t['table_name']} ({t['severity']})", [int(t["passed"]), int(t["failed"]), int(t["skipped"])])
            for t in tables
        ],
        (("passed", charts.GREEN), ("failed", charts.VERMILLION), ("skipped (table absent)", charts.LIGHT)),
        x_label="number of checks",
        description="Stacked bar chart of passed, failed and skipped data-quality checks per table.",
    )
    table_rows = [
        {
            "table_name": t["table_name"],
            "severity": t["severity"],
            "checks_run": int(t["checks_run"]),
            "passed": int(t["passed"]),
            "failed": int(t["failed"]),
            "skipped": int(t["skipped"]),
            "quarantined": None if _missing(t["quarantined_rows"]) else r.count(t["quarantined_rows"]),
            "pass_rate": _pct(t["pass_rate"]),
        }
        for t in tables
    ]
    quarantined = total["quarantined_rows"]
    body = _render(
        "data_quality.html.j2",
        chart=svg,
        rows=table_rows,
        total={
            "checks_run": int(total["checks_run"]),
            "pass_rate": _pct(total["pass_rate"]),
            "quarantined": "a suppressed number of" if _missing(quarantined) else r.count(quarantined),
            "run_id": str(total["run_id"]),
        },
    )
    return Section("data-quality", "Data quality", body, ("data_quality",))


def _not_on_track(r: _Reader) -> Section:
    """Aggregate, suppressed counts of open episodes not on track and alliance alerts (feedback marts)."""
    rows = r.rows("report_not_on_track.sql")
    row = rows[0] if rows else {}
    cards = [
        (r.count(row.get("open_episodes")), "open treatment episodes"),
        (r.count(row.get("not_on_track")), "patients not on track"),
        (r.count(row.get("on_track")), "on track"),
        (r.count(row.get("insufficient_data")), "not enough scores yet"),
        (r.count(row.get("alliance_drop_alerts")), "unrepaired alliance drops"),
        (r.count(row.get("low_early_alliance_alerts")), "low early alliance"),
    ]
    quantile = row.get("not_on_track_quantile")
    body = _render(
        "not_on_track.html.j2",
        cards=cards,
        quantile=f"{float(quantile):.0%}" if quantile is not None else "most",
        horizon=row.get("feedback_horizon_sessions") or "-",
        n=r.count(row.get("open_episodes")),
        empirical=r.count(row.get("flagged_empirical")),
        rule_based=r.count(row.get("flagged_rule_based")),
    )
    return Section("not-on-track", "Patients not on track", body)


# ---------------------------------------------------------------------------------------------------


def _version() -> str:
    try:
        return metadata.version("alliance-qi")
    except metadata.PackageNotFoundError:
        return "unknown"


def render_report(
    con: duckdb.DuckDBPyConnection,
    *,
    schema: str = "marts",
    min_cell: int | None = None,
    with_quality: bool = True,
    generated_at: datetime | None = None,
    source: str = "",
) -> tuple[str, list[Section], int]:
    """The report's HTML, its sections and the min_cell used, from the marts in `<schema>` of `con`.
    `with_quality=False` leaves out the data-quality results (marts.report_data_quality)."""
    if not _IDENT.match(schema):
        raise ValueError(f"not a schema name: {schema!r}")
    reader = _Reader(con, schema)
    overview = reader.one("report_overview.sql")
    reader.mart_min_cell = int(overview["min_cell"])
    reader.min_cell = min_cell or reader.mart_min_cell
    traj_level = reader.rows("report_alliance_trajectory_ci_level.sql")
    ci_percent = _percent(float(traj_level[0]["ci_level"])) if traj_level else "95"
    builders: list[Callable[[], Section]] = [
        lambda: _overview(reader, overview),
        lambda: _monthly(reader, overview),
        lambda: _trajectories(reader, ci_percent),
        lambda: _early_alliance(reader, ci_percent),
        lambda: _skill_use(
            reader, ci_percent, int(reader.one("report_early_alliance_fit.sql")["early_sessions"])
        ),
        lambda: _funnel(reader, ci_percent),
        lambda: _adherence(reader, ci_percent),
        lambda: _not_on_track(reader),
        lambda: _data_quality(reader, with_quality),
    ]
    sections = [b() for b in builders]
    when = generated_at or datetime.now(UTC)
    page = (
        environment()
        .get_template("page.html.j2")
        .render(
            title=TITLE,
            version=_version(),
            generated_at=f"{when:%Y-%m-%d %H:%M}",
            source=source,
            min_cell=reader.min_cell,
            ci_percent=ci_percent,
            sections=sections,
        )
    )
    return page, sections, reader.min_cell


def build_report(
    con: duckdb.DuckDBPyConnection,
    path: str | Path | None = None,
    *,
    schema: str = "marts",
    min_cell: int | None = None,
    with_quality: bool = True,
    generated_at: datetime | None = None,
    source: str = "",
) -> ReportResult:
    """Render the report from the marts in `<schema>` of `con` and write it atomically to `path`
    (default `report_path()`)."""
    when = generated_at or datetime.now(UTC)
    page, sections, used_min_cell = render_report(
        con, schema=schema, min_cell=min_cell, with_quality=with_quality, generated_at=when, source=source
    )
    out = Path(path) if path is not None else report_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)  # a browser reloading the report never sees half a file
    finally:
        tmp.unlink(missing_ok=True)
    marks = {
        m.group(1): int(m.group(2)) for m in re.finditer(r'data-chart="([^"]+)" data-marks="(\d+)"', page)
    }
    return ReportResult(
        path=out,
        sections=tuple(s.section_id for s in sections),
        chart_marks=marks,
        bytes=len(page.encode()),
        generated_at=when,
        min_cell=used_min_cell,
    )
