"""marts.alliance_associations by hand: closed episodes only for outcomes, baseline-adjusted partial
correlations, therapist-clustered bootstrap intervals (n, clusters, no p-value), the prospective
adherence window (alliance at sessions 1-3, adherence only after it), rupture repair on closed episodes."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from marts.associations import association_rows, prospective_frame, suppress_association_rows
from marts.settings import load_mart_settings
from marts.stats import cluster_bootstrap_arrays, partial_correlation, pearson_r
from tests.support.marts_clinic import Clinic, key_of


def _episodes() -> pd.DataFrame:
    """24 closed episodes over 4 therapists and 6 open ones whose 'improvement' is interim (and
    contrary: an open episode with high alliance has not improved yet)."""
    rng = np.random.default_rng(7)
    rows = []
    for i in range(30):
        closed = i < 24
        alliance = 3.0 + (i % 6) * 0.3
        baseline = 10 + (i % 5) * 2
        improvement = (alliance - 3.0) * 4 + 0.3 * (baseline - 14) + rng.normal(0, 1) if closed else -5.0
        rows.append(
            {
                "episode_key": f"e{i}",
                "therapist_key": f"t{i % 4}",
                "episode_closed": closed,
                "mean_alliance_patient": alliance,
                "mean_alliance_clinician": 3.5 + (i % 3) * 0.2,
                "early_alliance": alliance,
                "early_alliance_clinician": 3.5 + (i % 3) * 0.2,
                "phq9_improvement": improvement,
                "phq9_baseline": baseline,
                "gad7_improvement": None,
                "gad7_baseline": None,
                "ors_change": None,
                "ors_baseline": None,
                "mean_rater_discrepancy": alliance - 3.5,
                "ruptures": 1 if i % 2 == 0 else 0,
                "ruptures_repaired": 1 if i % 4 == 0 else 0,
                "ruptures_not_repaired": 1 if i % 4 == 2 else 0,
                "ruptures_pending": 0,
            }
        )
    return pd.DataFrame(rows)


def _by_id(rows: list[dict], qid: str, method: str) -> dict:
    (row,) = [r for r in rows if r["question_id"] == qid and r["method"].startswith(method)]
    return row


def test_outcome_associations_use_closed_episodes_with_clustered_intervals():
    settings = load_mart_settings(env={}, min_cell=2, bootstrap_samples=200)
    eps = _episodes()
    rows = association_rows(eps, pd.DataFrame(), {}, settings)
    closed = eps[eps.episode_closed]
    raw = _by_id(rows, "early_alliance_vs_phq9_improvement", "pearson")
    # closed episodes only: the 6 open episodes (improvement -5 at high alliance) are left out
    assert raw["n"] == 24 and raw["population"] == "closed episodes"
    assert raw["estimate"] == pytest.approx(
        pearson_r(list(closed.early_alliance), list(closed.phq9_improvement))
    )
    # a therapist-clustered bootstrap: 4 therapists resampled, no Fisher-z p-value
    assert raw["clusters"] == 4 and raw.get("p_value") is None
    assert raw["ci_lower"] < raw["estimate"] < raw["ci_upper"]
    assert "200 resamples of 4 therapists" in raw["detail"]
    # the same estimate and interval as the array bootstrap by hand
    ci = cluster_bootstrap_arrays(
        {"x": closed.early_alliance.to_numpy(float), "y": closed.phq9_improvement.to_numpy(float)},
        closed.therapist_key.to_numpy(object),
        lambda a: pearson_r(list(a["x"]), list(a["y"])),
        200,
        settings.bootstrap_seed,
    )
    assert (raw["ci_lower"], raw["ci_upper"]) == (pytest.approx(ci.ci_lower), pytest.approx(ci.ci_upper))
    # adjusted for baseline: the partial correlation given phq9_baseline
    adj = _by_id(rows, "early_alliance_vs_phq9_improvement_baseline_adjusted", "partial pearson")
    assert adj["adjusted_for"] == "phq9_baseline" and adj["n"] == 24
    assert adj["estimate"] == pytest.approx(
        partial_correlation(
            list(closed.early_alliance), list(closed.phq9_improvement), list(closed.phq9_baseline)
        )
    )
    # improvement was planted to depend on baseline too: adjusting sharpens the alliance association
    assert adj["estimate"] > raw["estimate"]
    # rater agreement is not an outcome: every episode
    agree = _by_id(rows, "patient_vs_clinician_alliance", "pearson")
    assert agree["n"] == 30 and agree["population"] == "all episodes"
    # every question still answered (GAD-7 has no data: n = 0, no estimate)
    gad = _by_id(rows, "early_alliance_vs_gad7_improvement", "pearson")
    assert gad["n"] == 0 and gad["estimate"] is None


def test_rupture_repair_compares_closed_episodes_raw_and_adjusted():
    settings = load_mart_settings(env={}, min_cell=2, bootstrap_samples=200)
    eps = _episodes()
    rows = association_rows(eps, pd.DataFrame(), {}, settings)
    closed = eps[eps.episode_closed]
    rep = closed[closed.ruptures_repaired == 1].phq9_improvement
    unrep = closed[closed.ruptures_not_repaired == 1].phq9_improvement
    raw = _by_id(rows, "rupture_repair_vs_phq9_improvement", "difference in means")
    assert raw["n"] == len(rep) + len(unrep) == 12
    assert raw["estimate"] == pytest.approx(rep.mean() - unrep.mean())
    assert raw["detail"].startswith("groups: 6 repaired, 6 not repaired")
    adj = _by_id(rows, "rupture_repair_vs_phq9_improvement_baseline_adjusted", "difference adjusted")
    assert adj["adjusted_for"] == "phq9_baseline" and adj["n"] == 12
    suppress_association_rows(rows, 11)  # 6 per group: both suppressed
    assert raw["suppressed"] and raw["estimate"] is None and adj["suppressed"]


def test_prospective_window_measures_adherence_only_after_the_early_sessions():
    c = Clinic()
    c.patient("p1")
    c.episode("eoc1", "p1", "2026-01-01", "2026-06-30")
    for enc, day in (("e1", "2026-01-05"), ("e2", "2026-01-12"), ("e3", "2026-01-19"), ("e4", "2026-02-20")):
        c.encounter(enc, "p1", day, eoc="eoc1")
    c.wai("e1", "p1", 4.0)
    c.wai("e2", "p1", 5.0)
    c.wai("e4", "p1", 1.0)  # after the early sessions: not early alliance
    c.wai_clinician("e1", "p1", 3.0)
    c.total("mars", "e1", "p1", 2)  # during the early sessions: before the window
    c.total("mars", "e4", "p1", 7)
    c.dispense("d0", "p1", "2026-01-10", 30)  # before the window: not a fill of the window
    c.dispense("d1", "p1", "2026-01-21", 30)
    c.dispense("d2", "p1", "2026-03-01", 30)
    c.build(reference_date="2026-12-31", min_cell=2)
    settings = load_mart_settings(env={}, reference_date=date(2026, 12, 31), min_cell=2)
    (row,) = prospective_frame(c.con, settings).to_dict("records")
    assert row["episode_key"] == key_of("episode", "eoc1")
    assert row["therapist_key"] == key_of("practitioner", "t1")
    assert (row["early_alliance_patient"], row["early_alliance_clinician"]) == (4.5, 3.0)
    assert row["mars_mean"] == 7.0 and pd.isna(row["dai10_mean"])
    # window: 2026-01-20 (the day after session 3) to the reference date; index fill 2026-01-21:
    # 60 days covered of 2026-01-21..2026-12-31 = 345 days
    assert row["pdc"] == pytest.approx(60 / 345)
    (w,) = c.dicts("SELECT period_start, period_end FROM _prospective_windows")
    assert (w["period_start"], w["period_end"]) == (date(2026, 1, 20), date(2026, 12, 31))
    # a shorter window setting cuts the window: 91 days from the last early session
    short = load_mart_settings(env={}, reference_date=date(2026, 12, 31), prospective_adherence_days=91)
    prospective_frame(c.con, short)
    (w,) = c.dicts("SELECT period_start, period_end FROM _prospective_windows")
    assert w["period_end"] == date(2026, 4, 20)
