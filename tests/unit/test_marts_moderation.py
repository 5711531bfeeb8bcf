"""The skill use x alliance models (marts/moderation.py) against hand-built data with known coefficients."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from marts.associations import suppress_association_rows
from marts.moderation import MODELS, fit_ols, model_rows
from marts.settings import load_mart_settings

# Endpoint = 10 + 0.7 b + (-0.15) s + (-3.6) a + (-0.2) s*a, with b, s, a centred at their sample means.
TRUE = {"baseline_phq9": 0.7, "skill_use": -0.15, "alliance": -3.6, "skill_use_x_alliance": -0.2}


def _episodes(n_therapists: int = 12, per: int = 20, noise: float = 0.0, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_therapists * per
    frame = pd.DataFrame(
        {
            "therapist_key": np.repeat([f"t{i:02d}" for i in range(n_therapists)], per),
            "phq9_baseline": rng.integers(5, 27, n).astype(float),
            "skill_use": rng.normal(48, 9, n).round(),
            "early_alliance": rng.normal(3.8, 0.5, n).round(2),
        }
    )
    b = frame.phq9_baseline - frame.phq9_baseline.mean()
    s = frame.skill_use - frame.skill_use.mean()
    a = frame.early_alliance - frame.early_alliance.mean()
    frame["phq9_endpoint"] = (
        10
        + TRUE["baseline_phq9"] * b
        + TRUE["skill_use"] * s
        + TRUE["alliance"] * a
        + TRUE["skill_use_x_alliance"] * s * a
        + rng.normal(0, noise, n)
    )
    return frame


def test_exact_data_give_the_coefficients_they_were_built_with():
    frame = _episodes()
    moderation = fit_ols(frame, MODELS["skill_alliance_moderation"])
    assert moderation is not None
    for term, value in TRUE.items():
        assert moderation[term] == pytest.approx(value, abs=1e-9), term


def test_a_four_episode_fit_by_hand():
    # Two predictors are enough to work the additive fit out by hand: with baseline constant the
    # design is rank-deficient, so give baseline variation and let y = 2 + 1*b exactly (s, a irrelevant).
    frame = pd.DataFrame(
        {
            "therapist_key": ["t1", "t1", "t2", "t2", "t3"],
            "phq9_baseline": [10.0, 12.0, 14.0, 16.0, 18.0],
            "skill_use": [40.0, 50.0, 45.0, 60.0, 55.0],
            "early_alliance": [3.0, 4.0, 3.5, 4.5, 2.5],
        }
    )
    frame["phq9_endpoint"] = 2 + frame.phq9_baseline  # slope 1 on baseline, nothing else
    coefs = fit_ols(frame, MODELS["skill_alliance_additive"])
    assert coefs == pytest.approx({"baseline_phq9": 1.0, "skill_use": 0.0, "alliance": 0.0}, abs=1e-9)


def test_a_predictor_without_variation_gives_no_estimate():
    frame = _episodes()
    frame["early_alliance"] = 4.0
    assert fit_ols(frame, MODELS["skill_alliance_additive"]) is None


def test_rows_carry_estimates_clustered_intervals_n_and_therapists():
    settings = load_mart_settings(env={"ALLIANCE_QI_MART_BOOTSTRAP_SAMPLES": "200"})
    rows = {r["question_id"]: r for r in model_rows(_episodes(noise=2.0), settings)}
    assert set(rows) == {f"{m}:{t}" for m, terms in MODELS.items() for t in terms}
    for term, value in TRUE.items():
        row = rows[f"skill_alliance_moderation:{term}"]
        assert row["ci_lower"] < value < row["ci_upper"], (term, row)
        assert row["estimate"] == pytest.approx(value, abs=0.1 * abs(value) + 0.05), term
        assert row["n"] == 240 and "12 therapists" in row["detail"]
        assert "therapist-clustered bootstrap" in row["method"]
    # the additive model omits the interaction: its main effects are still near the truth here
    # (predictors independent), and it has no interaction row
    assert "skill_alliance_additive:skill_use_x_alliance" not in rows
    assert rows["skill_alliance_additive:skill_use"]["estimate"] == pytest.approx(-0.15, abs=0.03)


def test_open_or_incomplete_episodes_are_dropped_before_fitting():
    frame = _episodes()
    frame.loc[:9, "skill_use"] = None
    settings = load_mart_settings(env={"ALLIANCE_QI_MART_BOOTSTRAP_SAMPLES": "50"})
    rows = model_rows(frame, settings)
    assert {r["n"] for r in rows} == {230}


def test_a_model_under_min_cell_episodes_is_blanked_whole():
    frame = _episodes(n_therapists=5, per=2)  # 10 episodes < min_cell 11
    settings = load_mart_settings(env={"ALLIANCE_QI_MART_BOOTSTRAP_SAMPLES": "50"})
    rows = model_rows(frame, settings)
    suppress_association_rows(rows, settings.min_cell)
    assert rows and all(r["suppressed"] for r in rows)
    assert all(r["estimate"] is None and r["n"] is None and r["ci_lower"] is None for r in rows)
