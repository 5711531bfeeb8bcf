"""`marts.alliance_associations`: the clinic's answers to its questions about the alliance (docs/domain.md).

One row per question x method, each with estimate, confidence interval, n and method:
- does alliance (mean, and early = sessions 1-3) go with better outcomes (PHQ-9, GAD-7 improvement,
  ORS change)?
- does patient-rated alliance predict adherence attitudes (MARS, DAI-10) and refills (PDC), and does
  clinician-rated alliance not? (both correlations, and their difference with Zou's interval);
- how far do patient and clinician agree (correlation, mean discrepancy)?
- how much of the alliance lies with the therapist (ICC, cluster-bootstrap interval)?
- do episodes whose ruptures were all repaired improve more than episodes with an unrepaired one?

The unit is the treatment episode for outcomes, the patient x adherence period (marts.adherence) for
adherence, and the patient for the therapist ICC (fitted over therapists with at least min_cell
patients, as marts.therapist_alliance shows them). Rows resting on fewer than min_cell cases (either
group, for differences) are suppressed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from marts.frames import query_dicts, query_frame, write_table
from marts.moderation import skill_use_model_rows
from marts.settings import MartSettings
from marts.stats import (
    bootstrap_icc,
    correlate,
    mean_ci,
    mean_difference_ci,
    variance_components,
    zou_difference,
)
from marts.suppression import is_small

SQL_DIR = Path(__file__).resolve().parent / "sql"
EPISODES_SQL = SQL_DIR / "alliance_associations.sql"  # episodes, from episode_outcomes
ADHERENCE_SQL = SQL_DIR / "alliance_associations_adherence.sql"  # patient x period, from adherence
PATIENT_ALLIANCE_SQL = SQL_DIR / "alliance_associations_patient_alliance.sql"  # therapist x patient

COLUMNS: list[tuple[str, str]] = [
    ("question_id", "VARCHAR"),
    ("question", "VARCHAR"),
    ("x_measure", "VARCHAR"),
    ("y_measure", "VARCHAR"),
    ("unit", "VARCHAR"),
    ("method", "VARCHAR"),
    ("estimate", "DOUBLE"),
    ("ci_lower", "DOUBLE"),
    ("ci_upper", "DOUBLE"),
    ("ci_level", "DOUBLE"),
    ("n", "INTEGER"),
    ("p_value", "DOUBLE"),
    ("detail", "VARCHAR"),
    ("suppressed", "BOOLEAN"),
    ("min_cell", "INTEGER"),
]


@dataclass(frozen=True)
class Question:
    """A correlation question: x vs y over episodes where both are known."""

    id: str
    question: str
    x: str
    y: str


CORRELATIONS: tuple[Question, ...] = (
    Question(
        "alliance_vs_phq9_improvement",
        "Is higher patient-rated alliance (episode mean WAI-SR) associated with more PHQ-9 improvement?",
        "mean_alliance_patient",
        "phq9_improvement",
    ),
    Question(
        "early_alliance_vs_phq9_improvement",
        "Does early patient-rated alliance (WAI-SR mean, sessions 1-3) predict PHQ-9 improvement?",
        "early_alliance",
        "phq9_improvement",
    ),
    Question(
        "early_alliance_vs_gad7_improvement",
        "Does early patient-rated alliance predict GAD-7 improvement?",
        "early_alliance",
        "gad7_improvement",
    ),
    Question(
        "early_alliance_vs_ors_change",
        "Does early patient-rated alliance predict ORS improvement?",
        "early_alliance",
        "ors_change",
    ),
    Question(
        "early_clinician_alliance_vs_phq9_improvement",
        "Does early clinician-rated alliance predict PHQ-9 improvement?",
        "early_alliance_clinician",
        "phq9_improvement",
    ),
    Question(
        "patient_vs_clinician_alliance",
        "How closely do patient- and clinician-rated alliance agree (episode means)?",
        "mean_alliance_patient",
        "mean_alliance_clinician",
    ),
)

# (id stem, outcome column, outcome label): patient- vs clinician-rated alliance against adherence.
ADHERENCE_OUTCOMES: tuple[tuple[str, str, str], ...] = (
    ("mars", "mars_mean", "medication adherence behaviour (MARS, mean over the period)"),
    ("dai10", "dai10_mean", "drug attitudes (DAI-10, mean over the period)"),
    ("pdc", "pdc", "refill adherence (PDC, PQA method, over the period)"),
)

METHOD_LABEL = {
    "pearson": "pearson (Fisher-z CI)",
    "spearman": "spearman (Fisher-z CI, SE factor 1.06)",
}


def _pairs(df: pd.DataFrame, *cols: str) -> pd.DataFrame:
    return df[list(cols)].dropna().astype(float)


def _row(qid: str, question: str, x: str, y: str, method: str, **values: Any) -> dict[str, Any]:
    return {
        "question_id": qid,
        "question": question,
        "x_measure": x,
        "y_measure": y,
        "unit": values.pop("unit", "episode"),
        "method": method,
        **values,
    }


def association_rows(
    episodes: pd.DataFrame,
    adherence: pd.DataFrame,
    patient_alliance: dict[str, list[float]],
    settings: MartSettings,
) -> list[dict[str, Any]]:
    """Every association row, before suppression: `episodes` (episode_outcomes columns), `adherence`
    (patient x period rows) and `patient_alliance` (therapist -> patient mean WAI-SR)."""
    level = settings.ci_level
    rows: list[dict[str, Any]] = []

    def corr_rows(qid: str, question: str, x: str, y: str, frame: pd.DataFrame, unit: str) -> None:
        d = _pairs(frame, x, y)
        for method in ("pearson", "spearman"):
            c = correlate(list(d[x]), list(d[y]), method, level)
            rows.append(
                _row(
                    qid,
                    question,
                    x,
                    y,
                    METHOD_LABEL[method],
                    estimate=c.estimate,
                    ci_lower=c.ci_lower,
                    ci_upper=c.ci_upper,
                    n=c.n,
                    p_value=c.p_value,
                    unit=unit,
                )
            )

    for q in CORRELATIONS:
        corr_rows(q.id, q.question, q.x, q.y, episodes, "episode")

    period_unit = f"patient x {settings.adherence_period}"

    for stem, col, label in ADHERENCE_OUTCOMES:
        for rater, x in (("patient", "mean_alliance_patient"), ("clinician", "mean_alliance_clinician")):
            corr_rows(
                f"{rater}_alliance_vs_{stem}",
                f"Does {rater}-rated alliance (mean over the period) predict {label}?",
                x,
                col,
                adherence,
                period_unit,
            )
        d = _pairs(adherence, col, "mean_alliance_patient", "mean_alliance_clinician")
        n = len(d)
        r_p = correlate(list(d[col]), list(d.mean_alliance_patient), "pearson", level).estimate
        r_c = correlate(list(d[col]), list(d.mean_alliance_clinician), "pearson", level).estimate
        r_pc = correlate(
            list(d.mean_alliance_patient), list(d.mean_alliance_clinician), "pearson", level
        ).estimate
        diff = None
        if r_p is not None and r_c is not None and r_pc is not None:
            diff = zou_difference(r_p, r_c, r_pc, n, level)
        rows.append(
            _row(
                f"patient_minus_clinician_alliance_vs_{stem}",
                f"Does patient-rated alliance predict {label} better than clinician-rated alliance "
                "(difference of the two Pearson correlations)?",
                "mean_alliance_patient - mean_alliance_clinician",
                col,
                "difference of dependent correlations (Zou 2007 CI)",
                unit=period_unit,
                estimate=diff[0] if diff else None,
                ci_lower=diff[1] if diff else None,
                ci_upper=diff[2] if diff else None,
                n=n,
            )
        )

    disc = list(episodes.mean_rater_discrepancy.dropna().astype(float))
    m = mean_ci(disc, level)
    rows.append(
        _row(
            "rater_discrepancy",
            "On average, how much higher do patients rate the alliance than their clinicians (WAI mean, "
            "patient minus clinician)?",
            "mean_rater_discrepancy",
            "",
            "mean (normal CI)",
            estimate=m[0] if m else None,
            ci_lower=m[1] if m else None,
            ci_upper=m[2] if m else None,
            n=len(disc),
        )
    )

    # Over the therapists therapist_alliance can show (at least min_cell patients): with a hidden
    # therapist in it, n minus the patients_in_model of therapist_alliance would give its patient count.
    shown_therapists = {t: v for t, v in patient_alliance.items() if len(v) >= settings.min_cell}
    vc = variance_components(shown_therapists)
    ci = bootstrap_icc(shown_therapists, settings.bootstrap_samples, settings.bootstrap_seed, level)
    rows.append(
        _row(
            "therapist_icc",
            "How much of the variation in patient-rated alliance lies between therapists (ICC)?",
            "therapist",
            "patient mean WAI-SR",
            "one-way random-effects ICC (ANOVA, n0) with cluster-bootstrap percentile CI",
            unit="patient",
            estimate=vc.icc if vc else None,
            ci_lower=ci[0] if ci else None,
            ci_upper=ci[1] if ci else None,
            n=vc.observations if vc else 0,
            detail=(
                f"{vc.groups if vc else 0} therapists with at least {settings.min_cell} patients; "
                f"{settings.bootstrap_samples} bootstrap samples"
            ),
        )
    )

    repaired_eps, unrepaired_eps, pending_eps = rupture_repair_groups(episodes)
    repaired = repaired_eps.phq9_improvement.dropna()
    unrepaired = unrepaired_eps.phq9_improvement.dropna()
    md = mean_difference_ci(list(repaired.astype(float)), list(unrepaired.astype(float)), level)
    rows.append(
        _row(
            "rupture_repair_vs_phq9_improvement",
            "Among episodes with a rupture, do those whose ruptures were all repaired improve more on "
            "PHQ-9 than those with an unrepaired rupture?",
            "all ruptures repaired",
            "phq9_improvement",
            "difference in means (Welch normal CI)",
            estimate=md[0] if md else None,
            ci_lower=md[1] if md else None,
            ci_upper=md[2] if md else None,
            n=len(repaired) + len(unrepaired),
            detail=(
                f"groups: {len(repaired)} repaired, {len(unrepaired)} not repaired; "
                f"{len(pending_eps)} episodes with a pending rupture left out"
            ),
            _groups=(len(repaired), len(unrepaired)),
        )
    )
    for row in rows:
        row.setdefault("ci_level", level)
        row.setdefault("min_cell", settings.min_cell)
    return rows


def rupture_repair_groups(episodes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Episodes with a rupture split into (all repaired, any not repaired, left out as pending).

    A rupture whose repair window has not elapsed is pending and belongs to neither group
    (docs/domain.md), so an episode with a pending rupture and none unrepaired is left out rather than
    counted as repaired; one with an unrepaired rupture is unrepaired whatever its other ruptures."""
    ruptures = episodes.ruptures.fillna(0)
    not_repaired = episodes.ruptures_not_repaired.fillna(0)
    repaired = episodes.ruptures_repaired.fillna(0)
    with_rupture = ruptures > 0
    all_repaired = with_rupture & (repaired == ruptures)
    any_unrepaired = with_rupture & (not_repaired > 0)
    pending = with_rupture & ~all_repaired & ~any_unrepaired
    return episodes[all_repaired], episodes[any_unrepaired], episodes[pending]


def suppress_association_rows(rows: list[dict[str, Any]], min_cell: int) -> None:
    """Blank estimates resting on a small number of cases (either group of a difference). In place."""
    for row in rows:
        groups = row.pop("_groups", None)
        small = is_small(row.get("n"), min_cell) or any(is_small(g, min_cell) for g in groups or ())
        row["suppressed"] = small
        if small:
            for col in ("estimate", "ci_lower", "ci_upper", "p_value", "n", "detail"):
                row[col] = None


def build_alliance_associations(con: duckdb.DuckDBPyConnection, settings: MartSettings) -> int:
    """(Re)build marts.alliance_associations (needs episode_outcomes, adherence, alliance_sessions)."""
    episodes = query_frame(con, EPISODES_SQL)
    adherence = query_frame(con, ADHERENCE_SQL)
    groups: dict[str, list[float]] = defaultdict(list)
    for row in query_dicts(con, PATIENT_ALLIANCE_SQL):
        groups[row["therapist_key"]].append(float(row["alliance"]))
    rows = association_rows(episodes, adherence, dict(groups), settings)
    rows += skill_use_model_rows(con, settings)  # skill use x alliance models (marts/moderation.py)
    suppress_association_rows(rows, settings.min_cell)
    return write_table(con, "marts.alliance_associations", COLUMNS, rows)
