"""`marts.alliance_associations`: the clinic's answers to its questions about the alliance (docs/domain.md).

One row per question x method, each with estimate, confidence interval, n, method and population:
- does alliance (mean, and early = sessions 1-3) go with better outcomes (PHQ-9, GAD-7 improvement,
  ORS change)? Closed episodes only (an open episode's last score is interim), as raw improvement and
  adjusted for the baseline score (partial correlation given baseline: change from a high baseline
  has more room and regresses to the mean);
- does patient-rated alliance predict adherence (PDC, MARS, DAI-10), and does clinician-rated alliance
  not? Prospectively: the early alliance (sessions 1..early_sessions) against adherence in the
  `prospective_adherence_days` after it (both correlations, and their difference); and, as before, the
  concurrent association over the same adherence period (not a prediction);
- how far do patient and clinician agree (correlation, mean discrepancy)?
- how much of the alliance lies with the therapist (ICC, cluster-bootstrap interval)?
- among closed episodes with a rupture, do those whose ruptures were all repaired improve more than
  those with an unrepaired one (raw and adjusted for baseline)?

Intervals: episodes and patients are nested in therapists, so every interval except the ICC's own is a
therapist-clustered percentile bootstrap (`marts.stats.cluster_bootstrap`: whole therapists resampled,
`bootstrap_samples` times, seed `bootstrap_seed`), with the therapists resampled in `clusters` and no
p-value (the Fisher-z p-value assumes independent cases). Cases without a therapist form one cluster.
The unit is the treatment episode for outcomes and prospective adherence, the patient x adherence
period (marts.adherence) for concurrent adherence, and the patient for the therapist ICC (fitted over
therapists with at least min_cell patients, as marts.therapist_alliance shows them). Rows resting on
fewer than min_cell cases (either group, for differences) are suppressed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from marts.adherence import compute_pdc
from marts.frames import query_dicts, query_frame, write_table
from marts.moderation import skill_use_model_rows
from marts.settings import MartSettings
from marts.stats import (
    ClusterInterval,
    adjusted_difference,
    bootstrap_icc,
    cluster_bootstrap_arrays,
    column_ranks,
    fast_pearson,
    partial_correlation,
    variance_components,
)
from marts.suppression import is_small
from pipelines.sqlfiles import run_sql

SQL_DIR = Path(__file__).resolve().parent / "sql"
EPISODES_SQL = SQL_DIR / "alliance_associations.sql"  # episodes, from episode_outcomes
ADHERENCE_SQL = SQL_DIR / "alliance_associations_adherence.sql"  # patient x period, from adherence
PATIENT_ALLIANCE_SQL = SQL_DIR / "alliance_associations_patient_alliance.sql"  # therapist x patient
# episode x the adherence window after its early sessions (work table, then PDC, then the query)
PROSPECTIVE_WINDOWS_SQL = SQL_DIR / "alliance_associations_prospective_windows.sql"
PROSPECTIVE_SQL = SQL_DIR / "alliance_associations_prospective.sql"

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
    # appended (a contract: add, don't rename; NULL on rows that do not set them)
    ("clusters", "INTEGER"),  # therapists resampled by the clustered bootstrap
    ("population", "VARCHAR"),  # which cases: closed episodes, all episodes, patient x period, ...
    ("adjusted_for", "VARCHAR"),  # the covariate an adjusted estimate is adjusted for
]


@dataclass(frozen=True)
class Question:
    """A correlation question: x vs y over episodes where both are known. An outcome question (with a
    `baseline`) uses closed episodes only and gets a second, baseline-adjusted row."""

    id: str
    question: str
    x: str
    y: str
    baseline: str | None = None


CORRELATIONS: tuple[Question, ...] = (
    Question(
        "alliance_vs_phq9_improvement",
        "Is higher patient-rated alliance (episode mean WAI-SR) associated with more PHQ-9 improvement?",
        "mean_alliance_patient",
        "phq9_improvement",
        "phq9_baseline",
    ),
    Question(
        "early_alliance_vs_phq9_improvement",
        "Does early patient-rated alliance (WAI-SR mean, sessions 1-3) predict PHQ-9 improvement?",
        "early_alliance",
        "phq9_improvement",
        "phq9_baseline",
    ),
    Question(
        "early_alliance_vs_gad7_improvement",
        "Does early patient-rated alliance predict GAD-7 improvement?",
        "early_alliance",
        "gad7_improvement",
        "gad7_baseline",
    ),
    Question(
        "early_alliance_vs_ors_change",
        "Does early patient-rated alliance predict ORS improvement?",
        "early_alliance",
        "ors_change",
        "ors_baseline",
    ),
    Question(
        "early_clinician_alliance_vs_phq9_improvement",
        "Does early clinician-rated alliance predict PHQ-9 improvement?",
        "early_alliance_clinician",
        "phq9_improvement",
        "phq9_baseline",
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
    ("mars", "mars_mean", "medication adherence behaviour (MARS, mean)"),
    ("dai10", "dai10_mean", "drug attitudes (DAI-10, mean)"),
    ("pdc", "pdc", "refill adherence (PDC, PQA method)"),
)
# Early alliance by rater in the prospective frame (alliance_associations_prospective.sql).
PROSPECTIVE_RATERS: tuple[tuple[str, str], ...] = (
    ("patient", "early_alliance_patient"),
    ("clinician", "early_alliance_clinician"),
)
CONCURRENT_RATERS: tuple[tuple[str, str], ...] = (
    ("patient", "mean_alliance_patient"),
    ("clinician", "mean_alliance_clinician"),
)
PROSPECTIVE_COLUMNS = (
    "episode_key",
    "therapist_key",
    *(c for _, c in PROSPECTIVE_RATERS),
    "pdc",
    "mars_mean",
    "dai10_mean",
)

CLUSTER = "therapist_key"
NO_THERAPIST = "(no therapist)"  # cases without a therapist are resampled together, as one cluster

METHOD_LABEL = {
    "pearson": "pearson (therapist-clustered bootstrap CI)",
    "spearman": "spearman (therapist-clustered bootstrap CI)",
}
PARTIAL_LABEL = {
    "pearson": "partial pearson given baseline (therapist-clustered bootstrap CI)",
    "spearman": "partial spearman given baseline (therapist-clustered bootstrap CI)",
}
DIFFERENCE_LABEL = "difference of dependent correlations (pearson, therapist-clustered bootstrap CI)"


def _pairs(df: pd.DataFrame, *cols: str) -> pd.DataFrame:
    """The rows of `df` with every column in `cols` known, as floats, with their therapist (the
    bootstrap's cluster; NO_THERAPIST where unknown)."""
    if df.empty or not set(cols) <= set(df.columns):
        return pd.DataFrame({**{c: pd.Series(dtype=float) for c in cols}, CLUSTER: pd.Series(dtype=str)})
    clusters = df[CLUSTER] if CLUSTER in df.columns else pd.Series(NO_THERAPIST, index=df.index)
    frame = df[list(cols)].assign(**{CLUSTER: clusters.fillna(NO_THERAPIST).astype(str)})
    frame = frame.dropna(subset=list(cols))
    return frame.astype(dict.fromkeys(cols, float))


Arrays = Mapping[str, np.ndarray]


def _correlation_statistic(x: str, y: str, method: str) -> Callable[[Arrays], float | None]:
    """Pearson's r, or Spearman's rho (Pearson's r of average ranks), on a (re)sample's columns."""
    if method == "spearman":  # ranks by counting, not sorting, in the bootstrap (ResampledColumns)
        return lambda a: fast_pearson(column_ranks(a, x), column_ranks(a, y))
    return lambda a: fast_pearson(a[x], a[y])


def _partial_statistic(x: str, y: str, baseline: str, method: str) -> Callable[[Arrays], float | None]:
    if method == "spearman":  # partial_correlation's spearman is its pearson on the average ranks
        return lambda a: (
            partial_correlation(column_ranks(a, x), column_ranks(a, y), column_ranks(a, baseline), "pearson")
            if len(a[x]) >= 4
            else None
        )
    return lambda a: partial_correlation(a[x], a[y], a[baseline], method)


def _difference_statistic(y: str, x1: str, x2: str) -> Callable[[Arrays], float | None]:
    """r(y, x1) - r(y, x2) (Pearson): the two raters' correlations with the same outcome."""

    def stat(a: Arrays) -> float | None:
        r1, r2 = fast_pearson(a[y], a[x1]), fast_pearson(a[y], a[x2])
        return None if r1 is None or r2 is None else r1 - r2

    return stat


def _group_difference(y: str) -> Callable[[Arrays], float | None]:
    """mean(y | group) - mean(y | not group), None unless each group has 2 cases."""

    def stat(a: Arrays) -> float | None:
        g = a["group"] > 0
        if g.sum() < 2 or (~g).sum() < 2:
            return None
        return float(a[y][g].mean() - a[y][~g].mean())

    return stat


def _adjusted_group_difference(y: str, baseline: str) -> Callable[[Arrays], float | None]:
    return lambda a: adjusted_difference(a[y], a["group"] > 0, a[baseline])


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
    prospective: pd.DataFrame | None = None,
) -> list[dict[str, Any]]:
    """Every association row, before suppression: `episodes` (episode_outcomes columns), `adherence`
    (patient x period rows), `patient_alliance` (therapist -> patient mean WAI-SR) and `prospective`
    (episode rows of early alliance and the adherence after it; none: those questions get n = 0)."""
    level = settings.ci_level
    samples = settings.bootstrap_samples
    rows: list[dict[str, Any]] = []
    if prospective is None:
        prospective = pd.DataFrame(columns=list(PROSPECTIVE_COLUMNS))

    def add(
        qid: str,
        question: str,
        x: str,
        y: str,
        method: str,
        frame: pd.DataFrame,
        statistic: Callable[[Arrays], float | None],
        population: str,
        unit: str,
        **extra: Any,
    ) -> None:
        columns = {c: frame[c].to_numpy(dtype=float) for c in frame.columns if c != CLUSTER}
        ci: ClusterInterval = cluster_bootstrap_arrays(
            columns, frame[CLUSTER].to_numpy(dtype=object), statistic, samples, settings.bootstrap_seed, level
        )
        detail = extra.pop("detail", "")
        rows.append(
            _row(
                qid,
                question,
                x,
                y,
                method,
                estimate=ci.estimate,
                ci_lower=ci.ci_lower,
                ci_upper=ci.ci_upper,
                n=ci.n,
                clusters=ci.clusters,
                population=population,
                unit=unit,
                detail=f"{detail}{population}; percentile interval over {samples} resamples of "
                f"{ci.clusters} therapists",
                **extra,
            )
        )

    def corr_rows(
        qid: str, question: str, x: str, y: str, frame: pd.DataFrame, unit: str, population: str
    ) -> None:
        d = _pairs(frame, x, y)
        for method in ("pearson", "spearman"):
            add(
                qid,
                question,
                x,
                y,
                METHOD_LABEL[method],
                d,
                _correlation_statistic(x, y, method),
                population,
                unit,
            )

    closed = (
        episodes[episodes.episode_closed.fillna(False).astype(bool)]
        if "episode_closed" in episodes
        else episodes
    )
    for q in CORRELATIONS:
        if q.baseline is None:
            corr_rows(q.id, q.question, q.x, q.y, episodes, "episode", "all episodes")
            continue
        corr_rows(q.id, q.question, q.x, q.y, closed, "episode", "closed episodes")
        d = _pairs(closed, q.x, q.y, q.baseline)
        for method in ("pearson", "spearman"):
            add(
                f"{q.id}_baseline_adjusted",
                f"{q.question} Adjusted for the baseline score (partial correlation given {q.baseline}).",
                q.x,
                q.y,
                PARTIAL_LABEL[method],
                d,
                _partial_statistic(q.x, q.y, q.baseline, method),
                "closed episodes",
                "episode",
                adjusted_for=q.baseline,
            )

    period_unit = f"patient x {settings.adherence_period}"
    early, days = settings.early_sessions, settings.prospective_adherence_days
    prospective_population = (
        f"episodes: alliance at sessions 1-{early}, adherence in the {days} days after the last of them"
    )
    for stem, col, label in ADHERENCE_OUTCOMES:
        for rater, x in PROSPECTIVE_RATERS:
            corr_rows(
                f"early_{rater}_alliance_predicts_{stem}",
                f"Does early {rater}-rated alliance (sessions 1-{early}) predict {label} in the {days} days "
                "after it (prospective: the alliance is measured before the adherence)?",
                x,
                col,
                prospective,
                "episode",
                prospective_population,
            )
        d = _pairs(prospective, col, *(x for _, x in PROSPECTIVE_RATERS))
        add(
            f"early_patient_minus_clinician_alliance_predicts_{stem}",
            f"Does early patient-rated alliance predict {label} in the {days} days after it better than "
            "early clinician-rated alliance (difference of the two Pearson correlations)?",
            "early_alliance_patient - early_alliance_clinician",
            col,
            DIFFERENCE_LABEL,
            d,
            _difference_statistic(col, "early_alliance_patient", "early_alliance_clinician"),
            prospective_population,
            "episode",
        )
        for rater, x in CONCURRENT_RATERS:
            corr_rows(
                f"{rater}_alliance_vs_{stem}",
                f"Does {rater}-rated alliance (mean over the period) go with {label} over the same period "
                "(concurrent: an association, not a prediction)?",
                x,
                col,
                adherence,
                period_unit,
                f"patient x {settings.adherence_period} periods",
            )
        d = _pairs(adherence, col, *(x for _, x in CONCURRENT_RATERS))
        add(
            f"patient_minus_clinician_alliance_vs_{stem}",
            f"Does patient-rated alliance go with {label} more closely than clinician-rated alliance "
            "over the same period (difference of the two Pearson correlations)?",
            "mean_alliance_patient - mean_alliance_clinician",
            col,
            DIFFERENCE_LABEL,
            d,
            _difference_statistic(col, "mean_alliance_patient", "mean_alliance_clinician"),
            f"patient x {settings.adherence_period} periods",
            period_unit,
        )

    disc = _pairs(episodes, "mean_rater_discrepancy")
    add(
        "rater_discrepancy",
        "On average, how much higher do patients rate the alliance than their clinicians (WAI mean, "
        "patient minus clinician)?",
        "mean_rater_discrepancy",
        "",
        "mean (therapist-clustered bootstrap CI)",
        disc,
        lambda a: float(a["mean_rater_discrepancy"].mean()) if len(a["mean_rater_discrepancy"]) else None,
        "all episodes",
        "episode",
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
            clusters=vc.groups if vc else 0,
            population=f"patients of therapists with at least {settings.min_cell} patients",
            detail=(
                f"{vc.groups if vc else 0} therapists with at least {settings.min_cell} patients; "
                f"{settings.bootstrap_samples} bootstrap samples"
            ),
        )
    )

    # Closed episodes only: an open episode's improvement is interim, and its ruptures may be pending.
    repaired_eps, unrepaired_eps, pending_eps = rupture_repair_groups(closed)
    grouped = pd.concat([repaired_eps.assign(group=1), unrepaired_eps.assign(group=0)], ignore_index=True)
    for qid, cols, method, adjusted, statistic in (
        (
            "rupture_repair_vs_phq9_improvement",
            ("phq9_improvement", "group"),
            "difference in means (therapist-clustered bootstrap CI)",
            None,
            _group_difference("phq9_improvement"),
        ),
        (
            "rupture_repair_vs_phq9_improvement_baseline_adjusted",
            ("phq9_improvement", "group", "phq9_baseline"),
            "difference adjusted for baseline (ANCOVA, therapist-clustered bootstrap CI)",
            "phq9_baseline",
            _adjusted_group_difference("phq9_improvement", "phq9_baseline"),
        ),
    ):
        d = _pairs(grouped, *cols) if len(grouped) else _pairs(pd.DataFrame(), *cols)
        n_repaired, n_unrepaired = int((d.group > 0).sum()), int((d.group <= 0).sum())
        add(
            qid,
            "Among closed episodes with a rupture, do those whose ruptures were all repaired improve more on "
            "PHQ-9 than those with an unrepaired rupture?"
            + (" Adjusted for baseline PHQ-9." if adjusted else ""),
            "all ruptures repaired",
            "phq9_improvement",
            method,
            d,
            statistic,
            "closed episodes with a rupture",
            "episode",
            adjusted_for=adjusted,
            detail=(
                f"groups: {n_repaired} repaired, {n_unrepaired} not repaired; "
                f"{len(pending_eps)} episodes with a pending rupture left out; "
            ),
            _groups=(n_repaired, n_unrepaired),
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


def prospective_frame(con: duckdb.DuckDBPyConnection, settings: MartSettings) -> pd.DataFrame:
    """One row per episode: early alliance by rater, therapist, and PDC / MARS / DAI-10 in the window
    after the early sessions (alliance_associations_prospective*.sql, PDC by marts/sql/pdc.sql)."""
    run_sql(con, PROSPECTIVE_WINDOWS_SQL, params={"window_days": settings.prospective_adherence_days})
    compute_pdc(con, "_prospective_windows", "_prospective_pdc")
    return query_frame(con, PROSPECTIVE_SQL)


def build_alliance_associations(con: duckdb.DuckDBPyConnection, settings: MartSettings) -> int:
    """(Re)build marts.alliance_associations (needs episode_outcomes, adherence, alliance_sessions, and
    staging sessions, session measures and dispenses for the prospective adherence window)."""
    episodes = query_frame(con, EPISODES_SQL)
    adherence = query_frame(con, ADHERENCE_SQL)
    groups: dict[str, list[float]] = defaultdict(list)
    for row in query_dicts(con, PATIENT_ALLIANCE_SQL):
        groups[row["therapist_key"]].append(float(row["alliance"]))
    prospective = prospective_frame(con, settings)
    rows = association_rows(episodes, adherence, dict(groups), settings, prospective)
    rows += skill_use_model_rows(con, settings)  # skill use x alliance models (marts/moderation.py)
    suppress_association_rows(rows, settings.min_cell)
    return write_table(con, "marts.alliance_associations", COLUMNS, rows)
