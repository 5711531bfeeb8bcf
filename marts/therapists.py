"""`marts.therapist_alliance`: one row per therapist x period.

Unit of analysis: the patient. For each therapist and period, each patient's patient-rated WAI-SR
mean scores in the period's sessions are averaged; the therapist's mean alliance is the mean of those
patient means. Variance components (one-way random effects, patients nested in therapists) are
estimated per period over every therapist with data, then each therapist gets the empirical-Bayes
shrunken mean `grand + tau2 / (tau2 + sigma2 / n) * (mean - grand)` with its interval, and funnel
limits allowing for overdispersion, `grand -+ z * sqrt(sigma2 / n + funnel_tau2)` (Spiegelhalter 2005:
sigma2 = within-therapist variance of patient means, n = patients_with_alliance, the same n the
report's funnel chart draws; funnel_tau2 = the Winsorised between-therapist variance, so the limits
say where a therapist's mean falls if therapists differ as much as they usually do, and a point
outside them is unusual even allowing for that). The ICC carries a cluster-bootstrap interval
(therapists resampled).
Outcome rates count episodes that ended in the period, attributed to the episode's therapist.

Rows with a caseload of 1 to min_cell - 1 patients are suppressed whole; other counts of 1 to
min_cell - 1 are suppressed with their complements (marts.suppression), across a row's nested counts,
across periods (a therapist's 'all' row is the sum of its years, a year the sum of its quarters, a
quarter of its months, for the additive counts: sessions and episodes), and across the therapists of
a period (their sum is the practice total, which qi_monthly publishes: a fixed total, never blanked
here). The variance components, shrinkage and funnel limits are fitted after suppression, over the
therapists whose alliance patient count is shown only: a statistic of a hidden therapist (its weight,
its funnel limits, its share of the grand mean, of sigma2 or of patients_in_model) would give back
the hidden count and mean.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Hashable, Iterable
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from marts.frames import query_frame, write_table
from marts.settings import MartSettings
from marts.stats import (
    bootstrap_icc,
    eb_shrink,
    overdispersed_funnel_limits,
    variance_components,
    winsorised_tau2,
)
from marts.suppression import Relation, apply_rates, is_small, suppress

SQL_DIR = Path(__file__).resolve().parent / "sql"
SESSIONS_SQL = SQL_DIR / "therapist_alliance.sql"  # sessions with a therapist, from alliance_sessions
EPISODES_SQL = SQL_DIR / "therapist_alliance_episodes.sql"  # closed episodes, from episode_outcomes

COLUMNS: list[tuple[str, str]] = [
    ("period_type", "VARCHAR"),
    ("period_start", "DATE"),
    ("period_end", "DATE"),
    ("therapist_key", "VARCHAR"),
    ("clinic_key", "VARCHAR"),
    ("suppressed", "BOOLEAN"),
    ("caseload", "INTEGER"),
    ("patients_with_alliance", "INTEGER"),
    ("sessions_with_alliance", "INTEGER"),
    ("mean_alliance", "DOUBLE"),
    ("shrunken_alliance", "DOUBLE"),
    ("shrunken_ci_lower", "DOUBLE"),
    ("shrunken_ci_upper", "DOUBLE"),
    ("shrinkage_weight", "DOUBLE"),
    ("funnel_inner_lower", "DOUBLE"),
    ("funnel_inner_upper", "DOUBLE"),
    ("funnel_outer_lower", "DOUBLE"),
    ("funnel_outer_upper", "DOUBLE"),
    ("funnel_position", "VARCHAR"),
    ("mean_alliance_clinician", "DOUBLE"),
    ("episodes_ended", "INTEGER"),
    ("episodes_outcome_complete", "INTEGER"),
    ("episodes_case_complete", "INTEGER"),
    ("episodes_recovered", "INTEGER"),
    ("recovery_rate", "DOUBLE"),
    ("episodes_reliably_improved", "INTEGER"),
    ("reliable_improvement_rate", "DOUBLE"),
    ("episodes_dropout", "INTEGER"),
    ("dropout_rate", "DOUBLE"),
    ("grand_mean", "DOUBLE"),
    ("tau2", "DOUBLE"),
    ("sigma2", "DOUBLE"),
    ("icc", "DOUBLE"),
    ("therapists_in_model", "INTEGER"),
    ("patients_in_model", "INTEGER"),
    ("min_cell", "INTEGER"),
    ("funnel_z_inner", "DOUBLE"),
    ("funnel_z_outer", "DOUBLE"),
    ("ci_level", "DOUBLE"),
    # appended (a contract: add, don't reorder): the funnel's overdispersion and the ICC's interval
    ("funnel_tau2", "DOUBLE"),
    ("icc_ci_lower", "DOUBLE"),
    ("icc_ci_upper", "DOUBLE"),
]
# Spiegelhalter (2005) Winsorises the 10% most extreme z-scores each side before estimating the
# overdispersion, so that the outliers the funnel is looking for do not widen its own limits.
FUNNEL_WINSOR = 0.1

COUNT_COLUMNS = (
    "caseload",
    "patients_with_alliance",
    "sessions_with_alliance",
    "episodes_ended",
    "episodes_outcome_complete",
    "episodes_case_complete",
    "episodes_recovered",
    "episodes_reliably_improved",
    "episodes_dropout",
)
# (total, part): the part's complement (total - part) is not shown but follows from the row.
ROW_RELATIONS: tuple[tuple[str, str], ...] = (
    ("caseload", "patients_with_alliance"),
    ("episodes_ended", "episodes_outcome_complete"),
    ("episodes_ended", "episodes_dropout"),
    ("episodes_outcome_complete", "episodes_case_complete"),
    ("episodes_outcome_complete", "episodes_reliably_improved"),
    ("episodes_case_complete", "episodes_recovered"),
)
RATES: dict[str, tuple[str, str]] = {
    "recovery_rate": ("episodes_recovered", "episodes_case_complete"),
    "reliable_improvement_rate": ("episodes_reliably_improved", "episodes_outcome_complete"),
    "dropout_rate": ("episodes_dropout", "episodes_ended"),
}
# Alliance statistics shown only when patients_with_alliance is not a small count.
ALLIANCE_STATS = (
    "mean_alliance",
    "shrunken_alliance",
    "shrunken_ci_lower",
    "shrunken_ci_upper",
    "shrinkage_weight",
    "funnel_inner_lower",
    "funnel_inner_upper",
    "funnel_outer_lower",
    "funnel_outer_upper",
    "funnel_position",
    "mean_alliance_clinician",
)


def period_of(kind: str, d: date, span: tuple[date, date]) -> tuple[date, date]:
    """The period of type `kind` that contains day `d` ('all' is the whole data span)."""
    if kind == "all":
        return span
    if kind == "year":
        return date(d.year, 1, 1), date(d.year, 12, 31)
    if kind == "quarter":
        q0 = 3 * ((d.month - 1) // 3) + 1
        end = date(d.year + 1, 1, 1) if q0 == 10 else date(d.year, q0 + 3, 1)
        return date(d.year, q0, 1), date.fromordinal(end.toordinal() - 1)
    if kind == "month":
        end = date(d.year + 1, 1, 1) if d.month == 12 else date(d.year, d.month + 1, 1)
        return date(d.year, d.month, 1), date.fromordinal(end.toordinal() - 1)
    raise ValueError(f"unknown period type {kind!r}")


def funnel_position(mean: float, inner: tuple[float, float], outer: tuple[float, float]) -> str:
    """Where a mean falls against the funnel limits."""
    if mean > outer[1]:
        return "above_outer"
    if mean > inner[1]:
        return "above_inner"
    if mean < outer[0]:
        return "below_outer"
    if mean < inner[0]:
        return "below_inner"
    return "within"


def _period_rows(
    kind: str,
    period: tuple[date, date],
    sessions: pd.DataFrame,
    episodes: pd.DataFrame,
    settings: MartSettings,
) -> list[dict[str, Any]]:
    z_inner, z_outer = settings.funnel_z
    ses = sessions[(sessions.session_date >= period[0]) & (sessions.session_date <= period[1])]
    eps = episodes[(episodes.end_date >= period[0]) & (episodes.end_date <= period[1])]
    measured = ses[ses.wai_sr_mean.notna()]
    patient_means = measured.groupby(["therapist_key", "patient_key"]).wai_sr_mean.mean()
    groups: dict[str, list[float]] = defaultdict(list)
    for (therapist, _), value in patient_means.items():
        groups[str(therapist)].append(float(value))
    clin = (
        ses[ses.wai_clinician_mean.notna()]
        .groupby(["therapist_key", "patient_key"])
        .wai_clinician_mean.mean()
    )
    therapists = sorted(set(ses.therapist_key.dropna()) | set(eps.therapist_key.dropna()))
    rows: list[dict[str, Any]] = []
    for th in therapists:
        own = ses[ses.therapist_key == th]
        clinic = own.clinic_key.mode()
        row: dict[str, Any] = {
            "period_type": kind,
            "period_start": period[0],
            "period_end": period[1],
            "therapist_key": th,
            "clinic_key": clinic.iloc[0] if len(clinic) else None,
            "caseload": int(own.patient_key.nunique()),
            "patients_with_alliance": len(groups.get(th, [])),
            "sessions_with_alliance": int(own.wai_sr_mean.notna().sum()),
            "min_cell": settings.min_cell,
            "funnel_z_inner": z_inner,
            "funnel_z_outer": z_outer,
            "ci_level": settings.ci_level,
        }
        # the patient means stay with the row until the model is fitted over the shown therapists
        row["_patient_means"] = list(groups.get(th, []))
        if th in clin.index.get_level_values(0):
            row["mean_alliance_clinician"] = float(clin.loc[th].mean())
        own_eps = eps[eps.therapist_key == th]
        row.update(
            episodes_ended=len(own_eps),
            episodes_outcome_complete=int((own_eps.outcome_complete == True).sum()),  # noqa: E712
            episodes_case_complete=int(
                ((own_eps.outcome_complete == True) & (own_eps.case_at_start == True)).sum()  # noqa: E712
            ),
            episodes_recovered=int((own_eps.recovery == True).sum()),  # noqa: E712
            episodes_reliably_improved=int((own_eps.reliable_improvement == True).sum()),  # noqa: E712
            episodes_dropout=int((own_eps.dropout == True).sum()),  # noqa: E712
        )
        for rate, (num, den) in RATES.items():
            row[rate] = row[num] / row[den] if row[den] else None
        rows.append(row)
    return rows


# Counts that add up over periods and over therapists (patients do not: one patient spans periods).
ADDITIVE_COLUMNS = (
    "sessions_with_alliance",
    "episodes_ended",
    "episodes_outcome_complete",
    "episodes_case_complete",
    "episodes_recovered",
    "episodes_reliably_improved",
    "episodes_dropout",
)
PERIOD_ORDER: tuple[str, ...] = ("all", "year", "quarter", "month")
MODEL_COLUMNS = (
    "grand_mean",
    "tau2",
    "sigma2",
    "icc",
    "therapists_in_model",
    "patients_in_model",
    "funnel_tau2",
    "icc_ci_lower",
    "icc_ci_upper",
)


def _period_relations(rows: list[dict[str, Any]]) -> list[Relation]:
    """A therapist's row of one period type = the sum of its rows of the next finer type present."""
    kinds = [k for k in PERIOD_ORDER if any(r.get("period_type") == k for r in rows)]
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_kind[str(row.get("period_type"))].append(i)
    relations: list[Relation] = []
    for coarse, fine in itertools.pairwise(kinds):
        for i in by_kind[coarse]:
            outer = rows[i]
            parts = [
                j
                for j in by_kind[fine]
                if rows[j]["therapist_key"] == outer["therapist_key"]
                and outer["period_start"] <= rows[j]["period_start"] <= outer["period_end"]
            ]
            for col in ADDITIVE_COLUMNS:
                relations.append(Relation((i, col), tuple((j, col) for j in parts)))
    return relations


def suppress_therapist_rows(rows: list[dict[str, Any]], min_cell: int) -> None:
    """Blank small counts (whole rows when the caseload is small), their complements within rows,
    across periods and across a period's therapists, and the rates over them; sets `suppressed`.
    In place; alliance statistics are left to `fit_models` (shown therapists only)."""
    values: dict[tuple[Hashable, str], int | None] = {}
    relations: list[Relation] = []
    force: list[tuple[Hashable, str]] = []
    fixed: list[tuple[Hashable, str]] = []
    periods: dict[tuple[Any, Any], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        for col in COUNT_COLUMNS:
            values[(i, col)] = row.get(col)
        for total, part in ROW_RELATIONS:
            # caseload - patients_with_alliance (patients never rated) is usually a few: hide the
            # caseload rather than the funnel's n, else most therapists leave the funnel
            relations.append(
                Relation((i, total), ((i, part),), hidden_remainder=True, prefer_total=total == "caseload")
            )
        if is_small(row.get("caseload"), min_cell):
            force += [(i, col) for col in COUNT_COLUMNS]
        periods[(row.get("period_type"), row.get("period_start"))].append(i)
    if all("therapist_key" in r and "period_end" in r for r in rows):
        relations += _period_relations(rows)
    for period, members in periods.items():
        for col in ADDITIVE_COLUMNS:
            # the practice total of the period follows from qi_monthly: known, never blanked here
            practice: tuple[Hashable, str] = (("practice", *period), col)
            values[practice] = sum(int(rows[i].get(col) or 0) for i in members)
            fixed.append(practice)
            relations.append(Relation(practice, tuple((i, col) for i in members)))
    result = suppress(values, relations, min_cell, force=force, fixed=fixed)
    blanked = result.suppressed | apply_rates(result.suppressed, RATES, range(len(rows)))
    for i, row in enumerate(rows):
        row_small = is_small(row.get("caseload"), min_cell)
        row["suppressed"] = row_small
        if row_small:
            for col in (*COUNT_COLUMNS, *RATES, *ALLIANCE_STATS):
                row[col] = None
            continue
        for col in (*COUNT_COLUMNS, *RATES):
            if (i, col) in blanked:
                row[col] = None


def fit_models(rows: list[dict[str, Any]], settings: MartSettings) -> None:
    """Fit each period's variance components over its shown therapists and fill their alliance
    statistics; blank them on every other row. In place, after `suppress_therapist_rows`.

    Shown: not suppressed, with `patients_with_alliance` displayed and at least min_cell. The model
    columns (grand mean, tau2, sigma2, ICC, therapists and patients in the model) then describe the
    shown therapists only, so they add nothing about a hidden one.
    """
    z_inner, z_outer = settings.funnel_z
    periods: dict[tuple[Any, Any], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        periods[(row.get("period_type"), row.get("period_start"))].append(row)
    for members in periods.values():
        shown = [
            r
            for r in members
            if not r.get("suppressed")
            and r.get("patients_with_alliance") is not None
            and r["patients_with_alliance"] >= settings.min_cell
            and r.get("_patient_means")
        ]
        shown_ids = {id(r) for r in shown}
        groups = {str(r["therapist_key"]): list(r["_patient_means"]) for r in shown}
        vc = variance_components(groups)
        if vc is not None and vc.observations < settings.min_cell:
            vc = None
        funnel_tau2 = 0.0
        icc_ci: tuple[float, float] | None = None
        if vc is not None:
            funnel_tau2 = winsorised_tau2(
                [sum(v) / len(v) for v in groups.values()],
                [len(v) for v in groups.values()],
                vc.grand_mean,
                vc.sigma2,
                FUNNEL_WINSOR,
            )
            icc_ci = bootstrap_icc(
                groups, settings.bootstrap_samples, settings.bootstrap_seed, settings.ci_level
            )
        for row in members:
            if id(row) not in shown_ids or vc is None:
                for col in ALLIANCE_STATS:
                    row[col] = None
            if vc is None:
                for col in MODEL_COLUMNS:
                    row[col] = None
                continue
            row.update(
                grand_mean=vc.grand_mean,
                tau2=vc.tau2,
                sigma2=vc.sigma2,
                icc=vc.icc,
                therapists_in_model=vc.groups,
                patients_in_model=vc.observations,
                funnel_tau2=funnel_tau2,
                icc_ci_lower=icc_ci[0] if icc_ci else None,
                icc_ci_upper=icc_ci[1] if icc_ci else None,
            )
            if id(row) not in shown_ids:
                continue
            values = row["_patient_means"]
            n = len(values)
            mean = sum(values) / n
            shr = eb_shrink(mean, n, vc.grand_mean, vc.tau2, vc.sigma2, settings.ci_level)
            inner = overdispersed_funnel_limits(vc.grand_mean, vc.sigma2, n, funnel_tau2, z_inner)
            outer = overdispersed_funnel_limits(vc.grand_mean, vc.sigma2, n, funnel_tau2, z_outer)
            row.update(
                mean_alliance=mean,
                shrunken_alliance=shr.estimate,
                shrunken_ci_lower=shr.ci_lower,
                shrunken_ci_upper=shr.ci_upper,
                shrinkage_weight=shr.weight,
                funnel_inner_lower=inner[0],
                funnel_inner_upper=inner[1],
                funnel_outer_lower=outer[0],
                funnel_outer_upper=outer[1],
                funnel_position=funnel_position(mean, inner, outer),
            )


def _frames(con: duckdb.DuckDBPyConnection) -> tuple[pd.DataFrame, pd.DataFrame]:
    sessions = query_frame(con, SESSIONS_SQL)
    episodes = query_frame(con, EPISODES_SQL)
    for df, col in ((sessions, "session_date"), (episodes, "end_date")):
        df[col] = pd.to_datetime(df[col]).dt.date
    return sessions, episodes


def therapist_rows(
    sessions: pd.DataFrame, episodes: pd.DataFrame, settings: MartSettings
) -> list[dict[str, Any]]:
    """Every therapist x period row, before suppression."""
    dates: list[date] = [*sessions.session_date.dropna(), *episodes.end_date.dropna()]
    if not dates:
        return []
    span = (min(dates), max(dates))
    rows: list[dict[str, Any]] = []
    for kind in settings.therapist_periods:
        periods: Iterable[tuple[date, date]] = sorted({period_of(kind, d, span) for d in dates})
        for period in periods:
            rows.extend(_period_rows(kind, period, sessions, episodes, settings))
    return rows


def build_therapist_alliance(con: duckdb.DuckDBPyConnection, settings: MartSettings) -> int:
    """(Re)build marts.therapist_alliance (needs alliance_sessions and episode_outcomes)."""
    sessions, episodes = _frames(con)
    rows = therapist_rows(sessions, episodes, settings)
    suppress_therapist_rows(rows, settings.min_cell)
    fit_models(rows, settings)
    return write_table(con, "marts.therapist_alliance", COLUMNS, rows)
