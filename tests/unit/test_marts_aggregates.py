"""Therapist and QI aggregates end to end on a tiny clinic, settings, idempotent rebuilds."""

from __future__ import annotations

import math
from datetime import date

import pytest

from fhir_mappings.clinical.contract import MissingInputError
from marts.build import MART_NAMES, build_marts
from marts.settings import MartSettingsError, load_mart_settings, thresholds_from_registry
from tests.support.marts_clinic import KEY, Clinic, key_of, two_therapists


def test_therapist_alliance_by_hand():
    c = two_therapists()
    c.build(min_cell=2, therapist_periods="all,quarter")
    rows = c.dicts("SELECT * FROM marts.therapist_alliance WHERE period_type = 'all' ORDER BY mean_alliance")
    t1, t2 = rows
    assert t1["therapist_key"] == key_of("practitioner", "t1")
    assert t1["clinic_key"] == key_of("organization", "c1")
    # patient means: t1 = [3, 4], t2 = [4, 5]; grand 4; MSB = 1, MSW = 0.5, n0 = 2 -> tau2 = 0.25, ICC 1/3
    assert (t1["caseload"], t1["patients_with_alliance"], t1["sessions_with_alliance"]) == (2, 2, 3)
    assert t1["mean_alliance"] == pytest.approx(3.5)
    assert (t1["grand_mean"], t1["tau2"], t1["sigma2"]) == (
        pytest.approx(4.0),
        pytest.approx(0.25),
        pytest.approx(0.5),
    )
    assert t1["icc"] == pytest.approx(1 / 3)
    # w = 0.25 / (0.25 + 0.5 / 2) = 0.5 -> 4 + 0.5 * (3.5 - 4) = 3.75
    assert t1["shrinkage_weight"] == pytest.approx(0.5)
    assert t1["shrunken_alliance"] == pytest.approx(3.75)
    half = 1.959964 * math.sqrt(0.5 * 0.5 / 2)
    assert t1["shrunken_ci_upper"] == pytest.approx(3.75 + half, abs=1e-5)
    # funnel (Spiegelhalter 2005): sigma2 / n = 0.5 / 2 = 0.25, z-scores (3.5 - 4) / 0.5 = -1 and +1,
    # Winsorised at their 10% / 90% quantiles to -0.8, 0.8: phi = 0.64; w = 2 / 0.5 = 4 each,
    # funnel_tau2 = (2 * 0.64 - 1) / (8 - 32 / 8) = 0.07; half-width z * sqrt(0.25 + 0.07)
    assert t1["funnel_tau2"] == pytest.approx(0.07)
    half = math.sqrt(0.32)
    assert (t1["funnel_inner_lower"], t1["funnel_inner_upper"]) == (
        pytest.approx(4 - 1.96 * half),
        pytest.approx(4 + 1.96 * half),
    )
    assert (t1["funnel_outer_lower"], t1["funnel_outer_upper"]) == (
        pytest.approx(4 - 3.09 * half),
        pytest.approx(4 + 3.09 * half),
    )
    # two therapists: too few clusters for the ICC's bootstrap interval
    assert (t1["icc_ci_lower"], t1["icc_ci_upper"]) == (None, None)
    assert t1["funnel_position"] == "within"
    assert t1["mean_alliance_clinician"] == pytest.approx(2.0)
    assert t2["shrunken_alliance"] == pytest.approx(4.25)
    assert (t1["min_cell"], t1["funnel_z_inner"], t1["funnel_z_outer"]) == (2, 1.96, 3.09)
    quarters = c.rows(
        "SELECT DISTINCT period_start, period_end FROM marts.therapist_alliance WHERE period_type = 'quarter'"
    )
    assert quarters == [(date(2026, 1, 1), date(2026, 3, 31))]


def test_therapist_alliance_suppresses_small_caseloads_by_default():
    c = two_therapists()
    c.build()
    rows = c.dicts("SELECT suppressed, caseload, mean_alliance, icc FROM marts.therapist_alliance")
    assert rows and all(
        r["suppressed"] and r["caseload"] is None and r["mean_alliance"] is None for r in rows
    )
    assert all(r["icc"] is None for r in rows)  # 4 patients in the model: too few to show


def test_qi_monthly_practice_row_is_the_sum_of_clinic_rows():
    c = two_therapists()
    c.build(min_cell=2)
    rows = c.dicts("SELECT * FROM marts.qi_monthly ORDER BY level, clinic_key")
    clinics = [r for r in rows if r["level"] == "clinic"]
    (practice,) = [r for r in rows if r["level"] == "practice"]
    assert {r["clinic_key"] for r in clinics} == {key_of("organization", "c1"), key_of("organization", "c2")}
    assert practice["month"] == date(2026, 3, 1) and practice["clinic_key"] is None
    assert practice["sessions_attended"] == 5 == sum(r["sessions_attended"] for r in clinics)
    assert practice["patients_seen"] == 4
    assert practice["sessions_low_alliance"] == 0 and practice["low_alliance_share"] == 0.0
    assert practice["mean_alliance"] == pytest.approx((3 + 3 + 4 + 4 + 5) / 5)
    assert practice["measurement_completion_rate"] == 1.0
    assert (
        practice["dq_responses"] == practice["dq_passed"] == 6
    )  # the scores' responses (no staging responses)
    assert practice["episodes_ended"] == 4
    assert (practice["low_alliance_threshold"], practice["pdc_threshold"], practice["min_cell"]) == (
        3.0,
        0.8,
        2,
    )


def test_rebuilding_gives_identical_marts():
    c = two_therapists()
    c.build(min_cell=2)
    first = {m: c.rows(f"SELECT * FROM marts.{m} ORDER BY ALL") for m in MART_NAMES}
    c.build(min_cell=2)
    assert {m: c.rows(f"SELECT * FROM marts.{m} ORDER BY ALL") for m in MART_NAMES} == first
    # every mart has rows, but the feedback ones: expected-response curves need closed episodes with
    # PHQ-9, GAD-7 or ORS at later sessions, and not_on_track open episodes (tests/unit/test_feedback.py)
    assert all(first[m] for m in MART_NAMES if m not in ("expected_response", "not_on_track"))


def test_marts_need_the_scoring_table():
    c = Clinic()
    c.con.execute("DROP TABLE staging.measure_scores")
    with pytest.raises(MissingInputError, match=r"staging\.measure_scores"):
        build_marts(c.con, load_mart_settings(env={}), key=KEY)


def test_settings_from_environment_file_and_overrides(tmp_path):
    f = tmp_path / "marts.yaml"
    f.write_text("marts:\n  min_cell: 5\n  repair_window_sessions: 3\n")
    s = load_mart_settings(
        env={
            "ALLIANCE_QI_MART_SETTINGS": str(f),
            "ALLIANCE_QI_MART_PDC_THRESHOLD": "0.9",
            "ALLIANCE_QI_MART_THERAPIST_PERIODS": "all, quarter",
            "ALLIANCE_QI_MART_MIN_CELL": "7",
        },
        episode_gap_days=60,
    )
    assert (s.pdc_threshold, s.min_cell, s.repair_window_sessions, s.episode_gap_days) == (0.9, 7, 3, 60)
    assert s.therapist_periods == ["all", "quarter"]
    assert load_mart_settings(env={}).pdc_threshold == 0.8
    with pytest.raises(MartSettingsError, match="pdc_threshold"):
        load_mart_settings(env={"ALLIANCE_QI_MART_PDC_THRESHOLD": "1.5"})
    with pytest.raises(MartSettingsError, match="unknown"):
        load_mart_settings(env={}, gap=3)
    with pytest.raises(MartSettingsError, match="funnel_z"):
        load_mart_settings(env={}, funnel_z=[3.09, 1.96])


def test_registry_thresholds_default_and_site_override(tmp_path):
    t = thresholds_from_registry()
    assert (t.phq9_caseness, t.phq9_reliable_change, t.gad7_caseness, t.gad7_reliable_change) == (10, 6, 8, 4)
    assert (t.srs_concern_below, t.ors_clinical_cutoff, t.wai_sr_low_alliance_mean) == (36, 25, 3.0)
    (tmp_path / "srs.yaml").write_text("extends: srs\nthresholds: {concern_below: 37}\n")
    from fhir_mappings.registry import load_registry

    assert thresholds_from_registry(load_registry(tmp_path)).srs_concern_below == 37


def test_qi_quarter_outcome_counts_sum_their_months_and_are_suppressed_with_them():
    from marts.qi import add_quarters, suppress_qi_rows

    # (month, outcome complete, case complete, recovered, reliably improved)
    months = [(1, 20, 15, 12, 10), (2, 25, 20, 15, 12), (3, 30, 22, 15, 14), (4, 40, 30, 20, 18)]
    rows = [
        {
            "level": "practice",
            "clinic_key": None,
            "month": date(2026, m, 1),
            "episodes_outcome_complete": oc,
            "episodes_case_complete": cc,
            "episodes_recovered": rec,
            "episodes_reliably_improved": ri,
        }
        for m, oc, cc, rec, ri in months
    ]
    add_quarters(rows)
    jan, feb, mar, apr = rows
    # Q1 sits on March (its last month): 20 + 25 + 30, 15 + 20 + 22, 12 + 15 + 15, 10 + 12 + 14
    assert mar["quarter_start"] == date(2026, 1, 1)
    assert (
        mar["quarter_episodes_outcome_complete"],
        mar["quarter_episodes_case_complete"],
        mar["quarter_episodes_recovered"],
        mar["quarter_episodes_reliably_improved"],
    ) == (75, 57, 42, 36)
    assert mar["quarter_recovery_rate"] == pytest.approx(42 / 57)
    assert mar["quarter_reliable_improvement_rate"] == pytest.approx(36 / 75)
    assert jan["quarter_start"] is None and feb["quarter_episodes_recovered"] is None
    # Q2 has only April in the data so far
    assert (apr["quarter_start"], apr["quarter_episodes_recovered"]) == (date(2026, 4, 1), 20)
    suppress_qi_rows(rows, 11, linked_periods=())
    # January's 10 reliably improved is small; Q1 = Jan + Feb + Mar would give it back from the
    # others, so February's 12 goes too, and the quarter total stays (two unknown months in it)
    assert jan["episodes_reliably_improved"] is None and feb["episodes_reliably_improved"] is None
    assert mar["episodes_reliably_improved"] == 14 and mar["quarter_episodes_reliably_improved"] == 36
    assert "episodes_reliably_improved" in (jan["suppressed_columns"] or "")
    # Q1 cases not recovered = 57 - 42 = 15: not small, the quarter's recovery rate is shown
    assert mar["quarter_recovery_rate"] == pytest.approx(42 / 57)
