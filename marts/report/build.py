"""The QI report: one self-contained HTML file (inline CSS, inline SVG charts, no network) built from
the pseudonymised marts and the data-quality summary.

Sections: overview, monthly KPIs, alliance trajectories, early alliance vs PHQ-9 improvement, the
therapist funnel plot, medication adherence by patient- vs clinician-rated alliance, and data quality.
Each has a short plain-language caption and the n behind it.

Privacy: only the marts are read (keyed pseudonyms, no FHIR ids) plus `quality.check_results`
through `quality_checks.summary`. Counts of people or records from 1 to `min_cell - 1` are never
shown: the aggregates the marts already suppressed stay blank, and every count or mean computed here
is withheld when it rests on fewer than `min_cell` cases (a group whose complement could reveal a
small group is withheld with it).
"""

from __future__ import annotations

import math
import os
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from html import escape
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from pydantic_settings import SettingsConfigDict

from marts.report import charts
from marts.report.template import render_page
from marts.settings import MIN_CELL, load_mart_settings
from pipelines.settings import REPO_ROOT
from pipelines.settings_base import AreaSettings

DASH = "&ndash;"  # shown for a missing value
TITLE = "Therapeutic alliance: quality improvement report"

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


class ReportSettings(AreaSettings):
    """The report's settings (`ALLIANCE_QI_REPORT_<FIELD>`). Its small-cell size is not one of them:
    the report uses the size the marts recorded (`min_cell` column), so the two never disagree."""

    model_config = SettingsConfigDict(env_prefix="ALLIANCE_QI_REPORT_")
    area = "report"

    path: Path | None = None  # `ALLIANCE_QI_REPORT_PATH`; None: `<repo>/reports/qi_report.html`


def report_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the report goes: `$ALLIANCE_QI_REPORT_PATH`, else `<repo>/reports/qi_report.html`."""
    configured = ReportSettings.load(env=env).path
    return configured.expanduser().resolve() if configured else REPO_ROOT / "reports" / "qi_report.html"


@dataclass(frozen=True)
class Section:
    """One section of the report: its anchor, heading and HTML body; `charts` are the chart ids."""

    section_id: str
    title: str
    body: str
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
    """Reads the marts from `<schema>.<mart>` on one connection."""

    con: duckdb.DuckDBPyConnection
    schema: str
    min_cell: int = MIN_CELL
    notes: list[str] = field(default_factory=list)

    def df(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """`sql` with `{s}` standing for the marts schema (a validated identifier)."""
        return self.con.execute(sql.replace("{s}", self.schema), list(params)).df()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.con.execute(sql.replace("{s}", self.schema), list(params)).fetchall()

    def count(self, value: Any) -> str:
        """A count as shown: small cells (1 .. min_cell-1) as '<min_cell', missing as a dash."""
        return format_count(value, self.min_cell)

    def small(self, value: Any) -> bool:
        return value is not None and not _missing(value) and 0 < int(value) < self.min_cell


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def format_count(value: Any, min_cell: int = MIN_CELL) -> str:
    """'1,234'; '0'; '<11' for a small cell (never the count itself); a dash when missing."""
    if _missing(value):
        return DASH
    n = int(value)
    if 0 < n < min_cell:
        return f"&lt;{min_cell}"
    return f"{n:,}"


def _pct(value: Any, digits: int = 1) -> str:
    return DASH if _missing(value) else f"{100 * float(value):.{digits}f}%"


def _num(value: Any, digits: int = 2) -> str:
    return DASH if _missing(value) else f"{float(value):.{digits}f}"


def _float(value: Any) -> float | None:
    return None if _missing(value) else float(value)


def _caption(text: str, n: str) -> str:
    return f'<p class="caption">{text}</p>\n<p class="n">{n}</p>'


def _figure(svg: str) -> str:
    return f"<figure>{svg}</figure>"


def _association(
    r: _Reader, question_id: str, method: str = "pearson"
) -> tuple[float, float, float, int] | None:
    """(estimate, ci_lower, ci_upper, n) of one association row, None when absent or suppressed."""
    rows = r.rows(
        """SELECT estimate, ci_lower, ci_upper, n, suppressed FROM {s}.alliance_associations
           WHERE question_id = ? AND method LIKE ? ORDER BY method LIMIT 1""",
        [question_id, f"{method}%"],
    )
    if not rows:
        return None
    est, lo, hi, n, suppressed = rows[0]
    if suppressed or est is None or n is None or int(n) < r.min_cell:
        return None
    return float(est), float(lo), float(hi), int(n)


def _r_text(a: tuple[float, float, float, int] | None, unit: str) -> str:
    if a is None:
        return "not shown (too few cases)"
    est, lo, hi, n = a
    return f"r = {est:.2f} (95% CI {lo:.2f} to {hi:.2f}), n = {n:,} {unit}"


# ---------------------------------------------------------------------------------------------------
# sections


def _overview(r: _Reader) -> Section:
    (patients, episodes, sessions, first, last) = r.rows(
        """SELECT count(DISTINCT patient_key), count(DISTINCT episode_key), count(*),
                  min(session_date), max(session_date) FROM {s}.alliance_sessions"""
    )[0]
    (therapists,) = r.rows(
        "SELECT count(DISTINCT therapist_key) FROM {s}.therapist_alliance WHERE NOT suppressed"
    )[0]
    (measured,) = r.rows("SELECT count(*) FILTER (WHERE alliance_measured) FROM {s}.alliance_sessions")[0]
    cards = [
        (r.count(patients), "patients with a session"),
        (r.count(episodes), "treatment episodes with a session"),
        (r.count(sessions), "attended sessions"),
        (
            _pct(measured / sessions) if sessions and not r.small(measured) else DASH,
            "sessions with alliance measured",
        ),
        (f"{int(therapists):,}", "therapists with a reportable caseload"),
    ]
    period = f"{first:%d %b %Y} to {last:%d %b %Y}" if first and last else "no sessions yet"
    body = (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="value">{v}</div><div class="label">{escape(label)}</div></div>'
            for v, label in cards
        )
        + "</div>"
    )
    body += _caption(
        "What this report covers. Every figure below comes from the pseudonymised marts: no names, "
        "no record numbers, and no count of patients, sessions or records from 1 to "
        f"{r.min_cell - 1} (those are shown as &lt;{r.min_cell} or left blank).",
        f"Sessions from {period}.",
    )
    return Section("overview", "Overview", body)


_KPI_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("patients_seen", "Patients seen", "count"),
    ("sessions_attended", "Sessions", "count"),
    ("measurement_completion_rate", "Alliance measured", "pct"),
    ("mean_alliance", "Mean WAI-SR", "mean"),
    ("low_alliance_share", "Low alliance", "pct"),
    ("rupture_rate", "Rupture rate", "pct"),
    ("episodes_ended", "Episodes ended", "count"),
    ("recovery_rate", "Recovery", "pct"),
    ("reliable_improvement_rate", "Reliable improvement", "pct"),
    ("pdc_adherence_rate", "PDC adherent", "pct"),
    ("attendance_rate", "Attendance", "pct"),
    ("data_quality_pass_rate", "Data quality pass", "pct"),
)


def _kpi_cell(r: _Reader, value: Any, kind: str, suppressed: bool) -> str:
    if suppressed:
        return '<td class="sup" title="suppressed: small cell">s</td>'
    if kind == "count":
        return f"<td>{r.count(value)}</td>"
    if kind == "pct":
        return f"<td>{_pct(value)}</td>"
    return f"<td>{_num(value)}</td>"


def _monthly(r: _Reader) -> Section:
    df = r.df("SELECT * FROM {s}.qi_monthly WHERE level = 'practice' ORDER BY month")
    (clinics,) = r.rows(
        "SELECT count(DISTINCT clinic_key) FROM {s}.qi_monthly "
        "WHERE level = 'clinic' AND clinic_key IS NOT NULL"
    )[0]
    head = "<tr><th>Month</th>" + "".join(f"<th>{escape(h)}</th>" for _, h, _ in _KPI_COLUMNS) + "</tr>"
    body_rows = []
    months: list[date] = []
    for row in df.to_dict("records"):
        suppressed = set(str(row.get("suppressed_columns") or "").split(",")) - {""}
        month = pd.Timestamp(row["month"]).date()
        months.append(month)
        cells = "".join(_kpi_cell(r, row.get(c), kind, c in suppressed) for c, _, kind in _KPI_COLUMNS)
        body_rows.append(f"<tr><td>{month:%b %Y}</td>{cells}</tr>")
    table = (
        f'<div class="scroll"><table><thead>{head}</thead><tbody>{"".join(body_rows)}</tbody></table></div>'
    )

    def points(col: str) -> list[tuple[float, float | None]]:
        out: list[tuple[float, float | None]] = []
        for i, row in enumerate(df.to_dict("records")):
            suppressed = set(str(row.get("suppressed_columns") or "").split(","))
            v = None if col in suppressed else _float(row.get(col))
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
    sessions = int(df["sessions_attended"].fillna(0).sum()) if len(df) else 0
    body = (
        _figure(svg)
        + _caption(
            "How the practice is doing month by month: how often alliance was measured at a session, "
            "how many booked appointments were attended, how many questionnaire responses passed the data "
            "checks, and the share of measured sessions with low patient-rated alliance. An <b>s</b> marks "
            "a cell suppressed because it rests on a small number; gaps in a line are such cells.",
            f"n = {r.count(sessions)} attended sessions over {len(df)} months, {int(clinics)} clinics "
            "(the table shows the whole practice; marts.qi_monthly has a row per clinic too).",
        )
        + table
    )
    return Section("monthly", "Monthly KPIs", body, ("monthly_kpis",))


def _trajectories(r: _Reader) -> Section:
    df = r.df(
        """SELECT session_number,
                  count(wai_sr_mean) AS n_patient, avg(wai_sr_mean) AS patient,
                  stddev_samp(wai_sr_mean) AS sd_patient,
                  count(wai_clinician_mean) AS n_clinician, avg(wai_clinician_mean) AS clinician,
                  count(DISTINCT episode_key) FILTER (WHERE wai_sr_mean IS NOT NULL) AS episodes
           FROM {s}.alliance_sessions GROUP BY session_number ORDER BY session_number"""
    )
    threshold_rows = r.rows("SELECT max(low_alliance_threshold) FROM {s}.alliance_sessions")
    threshold = _float(threshold_rows[0][0]) if threshold_rows else None
    patient: list[tuple[float, float | None]] = []
    clinician: list[tuple[float, float | None]] = []
    p_notes: list[str] = []
    c_notes: list[str] = []
    band: list[tuple[float, float, float]] = []
    shown_max = 0
    for row in df.to_dict("records"):
        k = float(row["session_number"])
        n_p, n_c = int(row["n_patient"]), int(row["n_clinician"])
        p = _float(row["patient"]) if n_p >= r.min_cell else None
        c = _float(row["clinician"]) if n_c >= r.min_cell else None
        patient.append((k, p))
        clinician.append((k, c))
        p_notes.append(f"session {int(k)}: patient-rated mean {_num(p)} (n = {r.count(n_p)})")
        c_notes.append(f"session {int(k)}: clinician-rated mean {_num(c)} (n = {r.count(n_c)})")
        if p is not None and c is not None:
            shown_max = int(k)
        elif p is not None:
            shown_max = max(shown_max, int(k))
        sd = _float(row["sd_patient"])
        if p is not None and sd is not None:
            half = 1.96 * sd / math.sqrt(n_p)
            band.append((k, p - half, p + half))
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
    refs = [(threshold, f"low alliance below {threshold:g}")] if threshold is not None else []
    svg = charts.line_chart(
        "alliance_trajectories",
        "Mean alliance (1-5) by session number, patient- vs clinician-rated",
        series,
        x_label="session number in the treatment episode",
        y_label="mean WAI score (1-5)",
        references=refs,
        y_format=lambda v: f"{v:.1f}",
        description="Line chart of the mean patient-rated and clinician-rated alliance at each session "
        "number, with a shaded 95% interval around the patient-rated mean.",
    )
    rows = [row for row in df.to_dict("records") if int(row["n_patient"]) >= r.min_cell]
    first_n = r.count(rows[0]["n_patient"]) if rows else DASH
    last_row = rows[-1] if rows else None
    total = int(df["n_patient"].sum()) if len(df) else 0
    n_text = (
        f"n = {r.count(total)} patient-rated sessions; {first_n} at session 1"
        + (
            f", {r.count(last_row['n_patient'])} at session {int(last_row['session_number'])}"
            if last_row
            else ""
        )
        + f". Session numbers with fewer than {r.min_cell} ratings are not drawn."
    )
    body = _figure(svg) + _caption(
        "How alliance develops over treatment. Each point is the average alliance score of all sessions "
        "with that number (1 = first session of an episode); the blue band is the 95% interval of the "
        "patient-rated average. Patients and clinicians rate the same relationship, but not always alike: "
        "a gap between the lines is a rating difference, not an error.",
        n_text,
    )
    return Section("trajectories", "Alliance over the course of treatment", body, ("alliance_trajectories",))


def _early_alliance(r: _Reader) -> Section:
    df = r.df(
        """SELECT early_alliance AS x, phq9_baseline - phq9_last AS y FROM {s}.episode_outcomes
           WHERE early_alliance IS NOT NULL AND phq9_baseline IS NOT NULL AND phq9_last IS NOT NULL
           ORDER BY episode_key"""
    )
    early_rows = r.rows("SELECT max(early_sessions) FROM {s}.episode_outcomes")
    early = int(early_rows[0][0]) if early_rows and early_rows[0][0] is not None else 3
    points = [(float(x), float(y)) for x, y in zip(df["x"], df["y"], strict=True)]
    assoc = _association(r, "early_alliance_vs_phq9_improvement")
    fit: tuple[float, float] | None = None
    if len(points) < r.min_cell:
        points = []
    elif len(points) >= 3:
        fit = _least_squares(points)
    svg = charts.scatter_chart(
        "early_alliance_phq9",
        "Early patient-rated alliance vs PHQ-9 improvement, one dot per treatment episode",
        points,
        x_label=f"early alliance: mean patient-rated WAI-SR over sessions 1-{early} (1-5)",
        y_label="PHQ-9 improvement (points)",
        fit=fit,
        fit_label="least-squares line",
        description="Scatter plot of early alliance against the drop in PHQ-9 from the first to the last "
        "score, with a fitted line.",
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
    body = _figure(svg) + _caption(
        f"Does a good start predict a good outcome? Each dot is a treatment episode: across, its average "
        f"patient-rated alliance in the first {early} sessions; up, how many points its PHQ-9 depression "
        f"score fell between the first and the last measurement (higher is better). {finding}",
        f"Pearson {_r_text(assoc, 'episodes')} (marts.alliance_associations, "
        f"early_alliance_vs_phq9_improvement); {r.count(len(points)) if points else 'no'} episodes drawn.",
    )
    return Section("early-alliance", "Early alliance and depression outcome", body, ("early_alliance_phq9",))


def _least_squares(points: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """(intercept, slope) of the ordinary least-squares line, None when x does not vary."""
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return None
    slope = sum((p[0] - mx) * (p[1] - my) for p in points) / sxx
    return my - slope * mx, slope


def _funnel(r: _Reader) -> Section:
    periods = r.rows(
        """SELECT period_type, max(period_start) FROM {s}.therapist_alliance GROUP BY period_type
           ORDER BY CASE period_type WHEN 'all' THEN 0 WHEN 'year' THEN 1 WHEN 'quarter' THEN 2 ELSE 3 END"""
    )
    if periods:
        period_type, period_start = periods[0]
        df = r.df(
            "SELECT * FROM {s}.therapist_alliance WHERE period_type = ? AND period_start = ? ORDER BY "
            "therapist_key",
            [period_type, period_start],
        )
    else:
        period_type, df = "all", pd.DataFrame()
    shown = df[(~df["suppressed"].astype(bool)) & df["mean_alliance"].notna()] if len(df) else df
    hidden = len(df) - len(shown)
    points = [
        charts.FunnelPoint(
            label=str(row["therapist_key"])[:8],
            n=float(row["caseload"]),
            value=float(row["mean_alliance"]),
            shrunken=_float(row["shrunken_alliance"]),
            position=str(row["funnel_position"]),
        )
        for row in shown.to_dict("records")
        if not _missing(row["caseload"])
    ]
    first = df.iloc[0] if len(df) else None
    grand = _float(first["grand_mean"]) if first is not None else None
    sigma2 = _float(first["sigma2"]) if first is not None else None
    sigma = math.sqrt(sigma2) if sigma2 is not None and sigma2 > 0 else None
    z_inner = _float(first["funnel_z_inner"]) if first is not None else None
    z_outer = _float(first["funnel_z_outer"]) if first is not None else None
    icc = _float(first["icc"]) if first is not None else None
    svg = charts.funnel_chart(
        "therapist_funnel",
        "Therapists' mean patient-rated alliance against caseload, with funnel limits",
        points,
        grand=grand,
        sigma=sigma,
        z_inner=z_inner or 1.96,
        z_outer=z_outer or 3.09,
        x_label="caseload (patients)",
        y_label="mean patient-rated WAI-SR (1-5)",
        description="Funnel plot: one dot per therapist at their caseload and mean patient-rated alliance, "
        "with 95% and 99.8% control limits around the practice mean.",
    )
    above = sum(1 for p in points if p.position == "above_outer")
    below = sum(1 for p in points if p.position == "below_outer")
    icc_text = (
        f" About {100 * icc:.0f}% of the differences between patients' alliance scores lie between "
        f"therapists (ICC {icc:.2f})."
        if icc is not None
        else ""
    )
    body = _figure(svg) + _caption(
        "Which therapists form notably strong or weak alliances? Each filled dot is a therapist (shown by "
        "pseudonym in the tooltip): across, the number of patients they saw; up, the average alliance their "
        "patients reported. The dashed funnels are the range expected by chance around the practice average "
        "(inner 95%, outer 99.8%): small caseloads scatter more, so their limits are wider. Hollow dots "
        "are the averages pulled towards the practice mean in proportion to how little data there is (a "
        f"fairer comparison). {above} therapist(s) are above and {below} below the outer limit.{icc_text} "
        "Use this to start a supportive conversation, not to rank people.",
        f"n = {len(points)} therapists"
        + (
            f" with caseloads of {min(p.n for p in points):g} to {max(p.n for p in points):g} patients"
            if points
            else ""
        )
        + f" (period: {escape(str(period_type))}); {hidden} with a caseload under {r.min_cell} patients "
        "(or no alliance ratings) are not shown. Colours follow the mart's own classification "
        "(marts.therapist_alliance.funnel_position).",
    )
    return Section("therapists", "Therapist funnel plot", body, ("therapist_funnel",))


_TERTILES = ("lowest third", "middle third", "highest third")


def _tertile_means(
    df: pd.DataFrame, rater_col: str, outcome: str, min_cell: int
) -> tuple[list[float | None], list[int], list[float | None]]:
    """Mean outcome (and share adherent for PDC) per tertile of `rater_col`; all None when any tertile
    has fewer than `min_cell` cases (so no small group can be worked out from the total)."""
    data = df[[rater_col, outcome]].dropna()
    if len(data) < 3:
        return [None] * 3, [0] * 3, [None] * 3
    # rank first, so ties split evenly and every tertile has a third of the cases
    tertile = pd.qcut(data[rater_col].rank(method="first"), 3, labels=False)
    means: list[float | None] = []
    counts: list[int] = []
    for t in range(3):
        part = data[outcome][tertile == t]
        counts.append(len(part))
        means.append(float(part.mean()) if len(part) else None)
    if min(counts) < min_cell:
        return [None] * 3, counts, [None] * 3
    return means, counts, means


def _adherence(r: _Reader) -> Section:
    df = r.df(
        """SELECT mean_alliance_patient AS patient, mean_alliance_clinician AS clinician, pdc, mars_mean
           FROM {s}.adherence"""
    )
    thr_rows = r.rows("SELECT max(pdc_threshold), max(period_type) FROM {s}.adherence")
    pdc_threshold = _float(thr_rows[0][0]) if thr_rows else None
    period = str(thr_rows[0][1]) if thr_rows and thr_rows[0][1] else "year"
    svgs: list[str] = []
    ns: list[str] = []
    ids = ("adherence_pdc", "adherence_mars")
    specs = (
        (
            "pdc",
            "Mean PDC (proportion of days covered by refills)",
            "mean PDC",
            (0.0, 1.0),
            lambda v: f"{100 * v:.0f}%",
        ),
        (
            "mars_mean",
            "Mean MARS adherence score (0-10)",
            "mean MARS (0-10)",
            (0.0, 10.0),
            lambda v: f"{v:.1f}",
        ),
    )
    for chart_id, (outcome, title, y_label, y_range, fmt) in zip(ids, specs, strict=True):
        series = []
        for rater, name, color in (
            ("patient", "Patient-rated alliance", charts.BLUE),
            ("clinician", "Clinician-rated alliance", charts.ORANGE),
        ):
            means, counts, _ = _tertile_means(df, rater, outcome, r.min_cell)
            notes = [
                f"{name}, {t}: {('mean ' + fmt(m)) if m is not None else 'suppressed or no data'} "
                f"(n = {r.count(c) if m is not None else 'withheld'})"
                for t, m, c in zip(_TERTILES, means, counts, strict=True)
            ]
            series.append(charts.BarSeries(name, color, means, notes))
            total = sum(counts)
            ns.append(
                f"{escape(outcome.replace('_mean', '').upper())} by {rater}-rated alliance: "
                + (f"n = {r.count(total)} patient-{period}s" if total >= r.min_cell else "too few to show")
                + (
                    f" ({r.count(counts[0])} / {r.count(counts[1])} / {r.count(counts[2])} per third)"
                    if all(m is not None for m in means)
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
    pdc_p = _association(r, "patient_alliance_vs_pdc")
    pdc_c = _association(r, "clinician_alliance_vs_pdc")
    pdc_d = _association(r, "patient_minus_clinician_alliance_vs_pdc", "difference")
    mars_p = _association(r, "patient_alliance_vs_mars")
    mars_c = _association(r, "clinician_alliance_vs_mars")
    mars_d = _association(r, "patient_minus_clinician_alliance_vs_mars", "difference")

    def diff_text(d: tuple[float, float, float, int] | None) -> str:
        if d is None:
            return "difference not shown"
        return f"difference {d[0]:.2f} (95% CI {d[1]:.2f} to {d[2]:.2f})"

    threshold_text = (
        f" (adherent: PDC at least {100 * pdc_threshold:.0f}%)" if pdc_threshold is not None else ""
    )
    body = (
        '<div class="two">'
        + "".join(_figure(s) for s in svgs)
        + "</div>"
        + _caption(
            "Does the alliance go with taking medication as prescribed? Patients are split into thirds by "
            "how strong their alliance was, once by their own rating and once by their clinician's. The "
            f"bars show how well those thirds kept up with refills{threshold_text} and how they described "
            "their own adherence (MARS). Research finds that the patient's view of the alliance predicts "
            "adherence and the clinician's does not: compare the blue and the orange steps. 'n/s' marks "
            "groups too small to show.",
            "; ".join(ns) + f". PDC: patient-rated {_r_text(pdc_p, 'patient-periods')}; clinician-rated "
            f"{_r_text(pdc_c, 'patient-periods')}; {diff_text(pdc_d)}. MARS: patient-rated "
            f"{_r_text(mars_p, 'patient-periods')}; clinician-rated {_r_text(mars_c, 'patient-periods')}; "
            f"{diff_text(mars_d)}.",
        )
    )
    return Section("adherence", "Medication adherence by patient- vs clinician-rated alliance", body, ids)


def _data_quality(r: _Reader, frame: pd.DataFrame | None) -> Section:
    if frame is None or frame.empty:
        svg = charts.stacked_bar_chart(
            "data_quality",
            "Data-quality checks of the newest run",
            [],
            (("passed", charts.GREEN),),
            x_label="checks",
        )
        body = _figure(svg) + _caption(
            "No data-quality checks have run on this warehouse yet.", "n = 0 checks."
        )
        return Section("data-quality", "Data quality", body, ("data_quality",))
    frame = frame.sort_values(["table_name", "severity"])
    rows = [
        (f"{t} ({sev})", [int(p), int(f), int(s)])
        for t, sev, p, f, s in zip(
            frame["table_name"],
            frame["severity"],
            frame["passed"],
            frame["failed"],
            frame["skipped"],
            strict=True,
        )
    ]
    svg = charts.stacked_bar_chart(
        "data_quality",
        "Data-quality checks of the newest run, per table and severity",
        rows,
        (("passed", charts.GREEN), ("failed", charts.VERMILLION), ("skipped (table absent)", charts.LIGHT)),
        x_label="number of checks",
        description="Stacked bar chart of passed, failed and skipped data-quality checks per table.",
    )
    head = (
        "<tr><th>Table</th><th>Severity</th><th>Checks</th><th>Passed</th><th>Failed</th><th>Skipped</th>"
        "<th>Quarantined records</th><th>Pass rate</th></tr>"
    )
    trs = "".join(
        f"<tr><td>{escape(str(row['table_name']))}</td><td>{escape(str(row['severity']))}</td>"
        f"<td>{int(row['checks_run'])}</td><td>{int(row['passed'])}</td><td>{int(row['failed'])}</td>"
        f"<td>{int(row['skipped'])}</td><td>{r.count(row['quarantined_rows'])}</td>"
        f"<td>{_pct(row['pass_rate'])}</td></tr>"
        for row in frame.to_dict("records")
    )
    passed, failed = int(frame["passed"].sum()), int(frame["failed"].sum())
    rate = passed / (passed + failed) if passed + failed else None
    quarantined = int(frame["quarantined_rows"].sum())
    run = str(frame["run_id"].iloc[0])
    body = (
        _figure(svg)
        + _caption(
            "Can the numbers above be trusted? Every load is checked: ERROR checks stop the pipeline unless "
            "the offending records can be set aside (quarantined, and then left out of every figure above); "
            "WARN checks only flag. Failed WARN checks usually point at messy source records worth fixing in "
            "the EHR. (The check counts here count checks, not patients.)",
            f"n = {len(frame)} table/severity groups, {passed + failed + int(frame['skipped'].sum())} "
            f"checks, {_pct(rate)} passed; {r.count(quarantined)} records quarantined. Run {escape(run)} "
            "(quality.check_results).",
        )
        + f'<div class="scroll"><table><thead>{head}</thead><tbody>{trs}</tbody></table></div>'
    )
    return Section("data-quality", "Data quality", body, ("data_quality",))


# ---------------------------------------------------------------------------------------------------


def _min_cell(r: _Reader) -> int:
    """The size the marts suppressed with; with no mart rows to say, the mart settings' size."""
    rows = r.rows("SELECT max(min_cell) FROM {s}.therapist_alliance")
    return int(rows[0][0]) if rows and rows[0][0] is not None else load_mart_settings().min_cell


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
    quality: pd.DataFrame | None = None,
    generated_at: datetime | None = None,
    source: str = "",
) -> tuple[str, list[Section], int]:
    """The report's HTML, its sections and the min_cell used. `quality` is the data-quality summary
    (`quality_checks.summary.summary_frame`), None when not available."""
    if not _IDENT.match(schema):
        raise ValueError(f"not a schema name: {schema!r}")
    reader = _Reader(con, schema)
    reader.min_cell = min_cell or _min_cell(reader)
    builders: list[Callable[[], Section]] = [
        lambda: _overview(reader),
        lambda: _monthly(reader),
        lambda: _trajectories(reader),
        lambda: _early_alliance(reader),
        lambda: _funnel(reader),
        lambda: _adherence(reader),
        lambda: _data_quality(reader, quality),
    ]
    sections = [b() for b in builders]
    when = generated_at or datetime.now(UTC)
    nav = "".join(f'<li><a href="#{s.section_id}">{escape(s.title)}</a></li>' for s in sections)
    html_sections = "\n".join(
        f'<section id="{s.section_id}"><h2>{escape(s.title)}</h2>\n{s.body}\n</section>' for s in sections
    )
    meta = (
        f"Generated {when:%Y-%m-%d %H:%M} UTC"
        + (f" from {escape(source)}" if source else "")
        + f". Keyed pseudonyms only; counts from 1 to {reader.min_cell - 1} suppressed."
    )
    footer = (
        "Built by the alliance-qi pipeline from the marts (docs/marts.md defines every measure and "
        "threshold) and the data-quality results (docs/data-quality.md). Alliance: WAI-SR (patient) and the "
        "therapist form of the WAI (clinician), 1-5; PHQ-9 improvement = first minus last score; PDC = "
        "proportion of days covered by refills (PQA method); MARS = Medication Adherence Rating Scale. "
        "Intervals are 95%. This file works offline and contains no names or record numbers."
    )
    page = render_page(
        title=TITLE, meta=meta, nav=nav, sections=html_sections, footer=footer, version=_version()
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
    (default `report_path()`); the data-quality section reads `quality.check_results` of `con`."""
    quality = None
    if with_quality:
        from quality_checks.summary import summary_frame

        quality = summary_frame(con)
    when = generated_at or datetime.now(UTC)
    page, sections, used_min_cell = render_report(
        con, schema=schema, min_cell=min_cell, quality=quality, generated_at=when, source=source
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
