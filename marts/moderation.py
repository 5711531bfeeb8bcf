"""CBT skill use, alliance and endpoint depression: the additive and moderation models of
`marts.alliance_associations` (docs/marts.md, "Skill use and alliance").

The question (docs/domain.md): do the alliance and CBT skill use each go with lower endpoint PHQ-9
(additive), and does the alliance change how strongly skill use goes with it (moderation)? Two
ordinary least-squares models over closed treatment episodes, fitted with `numpy.linalg.lstsq`:

- additive:   PHQ-9 endpoint ~ baseline PHQ-9 + skill use + alliance
- moderation: PHQ-9 endpoint ~ baseline PHQ-9 + skill use + alliance + skill use x alliance

Skill use is the episode's mean CBTSQ total (16-80) and alliance its early patient-rated WAI-SR mean
(sessions 1..early_sessions, 1-5), measured before most of the change it is set against. Every
predictor is centred at its sample mean (re-centred in every bootstrap resample), so each main effect
is the slope at the average of the other predictor and the interaction does not shift them. Episodes
are nested in therapists, so intervals come from a therapist-clustered percentile bootstrap
(`marts.stats.cluster_bootstrap`: whole therapists resampled), not from the OLS standard errors, which
would treat episodes of one therapist as independent.

One row per model x term in the mart's shape: `question_id` is `<model>:<term>`, `x_measure` the
term, `y_measure` the endpoint, `n` the episodes, `detail` the therapists (clusters) and bootstrap
samples. A model resting on fewer than `min_cell` episodes is blanked by the mart's suppression (every
row of a model carries the same n, so a model is blanked whole).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from marts.frames import query_frame
from marts.settings import MartSettings
from marts.stats import cluster_bootstrap

SQL_DIR = Path(__file__).resolve().parent / "sql"
SKILL_EPISODES_SQL = SQL_DIR / "alliance_associations_skill_use.sql"  # closed episodes with skill use

OUTCOME = "phq9_endpoint"
CLUSTER = "therapist_key"
# term -> (column or product of columns, plain label)
TERMS: dict[str, tuple[tuple[str, ...], str]] = {
    "baseline_phq9": (("phq9_baseline",), "baseline PHQ-9 (per point)"),
    "skill_use": (("skill_use",), "CBT skill use (CBTSQ total, per point)"),
    "alliance": (("early_alliance",), "early patient-rated alliance (WAI-SR mean, per point)"),
    "skill_use_x_alliance": (
        ("skill_use", "early_alliance"),
        "skill use x alliance (change in the skill-use slope per alliance point)",
    ),
}
MODELS: dict[str, tuple[str, ...]] = {
    "skill_alliance_additive": ("baseline_phq9", "skill_use", "alliance"),
    "skill_alliance_moderation": ("baseline_phq9", "skill_use", "alliance", "skill_use_x_alliance"),
}
MODEL_QUESTION = {
    "skill_alliance_additive": (
        "Holding baseline PHQ-9 and the other predictor at the clinic's average, how does endpoint "
        "PHQ-9 differ with CBT skill use and with early patient-rated alliance (additive model)?"
    ),
    "skill_alliance_moderation": (
        "Does the slope of endpoint PHQ-9 on CBT skill use differ with early patient-rated alliance "
        "(skill use x alliance, centred; moderation model)?"
    ),
}
METHOD = "OLS, centred predictors, therapist-clustered bootstrap percentile CI"
PREDICTORS = ("phq9_baseline", "skill_use", "early_alliance")


def design(frame: pd.DataFrame, terms: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The design matrix (intercept, then `terms` in order) and the outcome vector of `frame`.

    Predictors are centred at the frame's own means before products are formed."""
    centred = {c: frame[c].to_numpy(dtype=float) - float(frame[c].mean()) for c in PREDICTORS}
    columns = [np.ones(len(frame))]
    for term in terms:
        parts = TERMS[term][0]
        col = centred[parts[0]].copy()
        for other in parts[1:]:
            col = col * centred[other]
        columns.append(col)
    return np.column_stack(columns), frame[OUTCOME].to_numpy(dtype=float)


def fit_ols(frame: pd.DataFrame, terms: tuple[str, ...]) -> dict[str, float] | None:
    """Least-squares coefficients of `terms` (numpy lstsq); None when the design is rank-deficient
    (too few episodes, or a predictor without variation), where the coefficients are not identified."""
    if len(frame) <= len(terms) + 1:
        return None
    x, y = design(frame, terms)
    coef, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
    if rank < x.shape[1]:
        return None
    return {term: float(coef[i + 1]) for i, term in enumerate(terms)}


def _term_statistic(terms: tuple[str, ...], term: str) -> Callable[[pd.DataFrame], float | None]:
    def statistic(frame: pd.DataFrame) -> float | None:
        coefs = fit_ols(frame, terms)
        return None if coefs is None else coefs[term]

    return statistic


def model_rows(episodes: pd.DataFrame, settings: MartSettings) -> list[dict[str, Any]]:
    """Rows of both models, before suppression. `episodes`: one row per closed episode with
    therapist_key, phq9_baseline, phq9_endpoint, skill_use and early_alliance (rows missing any are
    dropped)."""
    data = episodes.dropna(subset=[CLUSTER, OUTCOME, *PREDICTORS]).reset_index(drop=True)
    clusters = int(data[CLUSTER].nunique())
    rows: list[dict[str, Any]] = []
    for model, terms in MODELS.items():
        for term in terms:
            ci = cluster_bootstrap(
                data,
                CLUSTER,
                _term_statistic(terms, term),
                settings.bootstrap_samples,
                settings.bootstrap_seed,
                settings.ci_level,
            )
            rows.append(
                {
                    "question_id": f"{model}:{term}",
                    "question": MODEL_QUESTION[model],
                    "x_measure": term,
                    "y_measure": OUTCOME,
                    "unit": "closed episode",
                    "method": METHOD,
                    "estimate": ci.estimate,
                    "ci_lower": ci.ci_lower,
                    "ci_upper": ci.ci_upper,
                    "ci_level": settings.ci_level,
                    "n": len(data),
                    "p_value": None,
                    "detail": (
                        f"{TERMS[term][1]}; {clusters} therapists; "
                        f"{ci.samples_used} of {settings.bootstrap_samples} bootstrap samples"
                    ),
                    "min_cell": settings.min_cell,
                }
            )
    return rows


def skill_use_model_rows(con: duckdb.DuckDBPyConnection, settings: MartSettings) -> list[dict[str, Any]]:
    """The additive and moderation model rows for marts.alliance_associations, from the warehouse
    (needs marts.episode_outcomes and staging.session_measures)."""
    return model_rows(query_frame(con, SKILL_EPISODES_SQL), settings)
