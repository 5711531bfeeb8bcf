"""The report marts (`marts.report_*`) on small hand-made input marts: the numbers the QI report shows
are computed and suppressed here, so small cells, complements and the thirds are tested at this level."""

from __future__ import annotations

from datetime import date
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest

from fhir_mappings.clinical.params import install_params
from marts.report_marts import (
    build_report_adherence_by_alliance_tertile,
    build_report_alliance_trajectory,
    build_report_overview,
    build_sql_mart,
    data_quality_rows,
)
from marts.settings import MartSettings, load_mart_settings, thresholds_from_registry
from marts.stats import z_for


def _con(settings: MartSettings, **tables: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    """A connection with `mart_params` and the given input marts as `marts.<name>`."""
    con = duckdb.connect()
    install_params(con, settings, thresholds_from_registry(), date(2026, 12, 31))
    con.execute("CREATE SCHEMA marts")
    for name, df in tables.items():
        con.register("_input", df)
        con.execute(f"CREATE TABLE marts.{name} AS SELECT * FROM _input")
        con.unregister("_input")
    return con


def _dicts(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _adherence(n: int) -> pd.DataFrame:
    """n patient-periods: alliance rises with the patient number, PDC and MARS rise with it."""
    return pd.DataFrame(
        {
            "patient_key": [f"p{i:03d}" for i in range(n)],
            "period_start": [date(2026, 1, 1)] * n,
            "mean_alliance_patient": [1 + 4 * i / n for i in range(n)],
            # ties: the clinician gives one of three ratings
            "mean_alliance_clinician": [3.0 + (i % 3) for i in range(n)],
            "pdc": [0.5 + 0.5 * i / n for i in range(n)],
            "mars_mean": [float(i % 11) for i in range(n)],
        }
    )


def test_adherence_thirds_are_equal_and_ordered():
    settings = load_mart_settings(env={})
    con = _con(settings, adherence=_adherence(60))
    assert build_report_adherence_by_alliance_tertile(con, settings) == 12
    rows = _dicts(
        con,
        "SELECT * FROM marts.report_adherence_by_alliance_tertile "
        "WHERE measure = 'pdc' AND rater = 'patient' ORDER BY tertile",
    )
    assert [r["n_patient_periods"] for r in rows] == [20, 20, 20]
    assert all(r["n_patient_periods_total"] == 60 and r["suppressed_columns"] is None for r in rows)
    # the lowest third of alliance has the lowest PDC: patients 0-19, 20-39, 40-59
    expected = [float(np.mean([0.5 + 0.5 * i / 60 for i in range(t * 20, t * 20 + 20)])) for t in range(3)]
    assert [r["mean_measure"] for r in rows] == pytest.approx(expected)
    assert rows[0]["period_type"] == "year" and rows[0]["pdc_threshold"] == 0.8


def test_adherence_thirds_cut_ranks_as_pandas_qcut_does():
    settings = load_mart_settings(env={}, min_cell=2)  # no third of 10+ is small
    for n in (31, 32, 33, 34):
        con = _con(settings, adherence=_adherence(n))
        build_report_adherence_by_alliance_tertile(con, settings)
        got = [
            r[0]
            for r in con.execute(
                "SELECT n_patient_periods FROM marts.report_adherence_by_alliance_tertile "
                "WHERE measure = 'mars' AND rater = 'patient' ORDER BY tertile"
            ).fetchall()
        ]
        ranks = pd.Series(range(1, n + 1), dtype=float)
        expected = pd.qcut(ranks, 3, labels=False).value_counts().sort_index().tolist()
        assert got == expected, n


def test_adherence_thirds_are_withheld_together_when_one_is_small():
    settings = load_mart_settings(env={})
    con = _con(settings, adherence=_adherence(32))  # thirds of 11, 10, 11: one small cell
    build_report_adherence_by_alliance_tertile(con, settings)
    rows = _dicts(con, "SELECT * FROM marts.report_adherence_by_alliance_tertile WHERE measure = 'pdc'")
    assert len(rows) == 6
    for r in rows:
        assert r["n_patient_periods"] is None and r["mean_measure"] is None
        assert r["n_patient_periods_total"] == 32  # the total is not small and reveals no third
        assert r["suppressed_columns"] == "mean_measure,n_patient_periods"


def test_adherence_thirds_exist_without_data():
    settings = load_mart_settings(env={})
    con = _con(settings, adherence=_adherence(0))
    assert build_report_adherence_by_alliance_tertile(con, settings) == 12
    assert con.execute(
        "SELECT sum(n_patient_periods), count(mean_measure) FROM marts.report_adherence_by_alliance_tertile"
    ).fetchall() == [(0, 0)]


def _sessions(counts: dict[int, int]) -> pd.DataFrame:
    """`counts[k]` patient-rated sessions at session number k (clinician-rated at every other), episode i
    rated at session k while i < counts[k]; each episode's patient rating rises 0.1 per session."""
    rows = []
    for k, n in counts.items():
        for i in range(n):
            rows.append(
                {
                    "episode_key": f"e{i}",
                    "session_number": k,
                    "wai_sr_mean": 3.0 + (i % 5) / 2 + 0.1 * (k - 1),
                    "wai_clinician_mean": 3.5 if i % 2 == 0 else None,
                }
            )
    return pd.DataFrame(rows)


def test_trajectory_suppresses_a_small_session_number_and_its_complement():
    settings = load_mart_settings(env={})
    con = _con(settings, alliance_sessions=_sessions({1: 40, 2: 30, 3: 20, 4: 5}))
    build_report_alliance_trajectory(con, settings)
    rows = {
        r["session_number"]: r
        for r in _dicts(con, "SELECT * FROM marts.report_alliance_trajectory WHERE level = 'session'")
    }
    (total,) = _dicts(con, "SELECT * FROM marts.report_alliance_trajectory WHERE level = 'all'")
    assert total["sessions_patient_rated"] == 95 and total["session_number"] is None
    # session 4 (5 ratings) is a small cell; alone it would be 95 - 40 - 30 - 20, so the smallest
    # other count (session 3) is withheld as well, while its mean (over 20) stays
    assert rows[4]["sessions_patient_rated"] is None and rows[4]["mean_alliance_patient"] is None
    assert rows[3]["sessions_patient_rated"] is None and rows[3]["mean_alliance_patient"] is not None
    assert rows[2]["sessions_patient_rated"] == 30
    assert rows[4]["suppressed_columns"] == (
        "ci_lower_change_patient,ci_lower_patient,ci_upper_change_patient,ci_upper_patient,"
        "mean_alliance_clinician,mean_alliance_patient,mean_change_clinician,mean_change_patient,"
        "sd_alliance_patient,sd_change_patient,sessions_change_clinician,sessions_change_patient,"
        "sessions_clinician_rated,sessions_patient_rated"
    )
    # within-episode change: each episode's rating minus its own session-1 rating, +0.1 per session,
    # whatever the mix of episodes still running (the cross-sectional mean mixes in who stays)
    assert rows[2]["sessions_change_patient"] == 30
    assert rows[2]["mean_change_patient"] == pytest.approx(0.1)
    assert rows[1]["mean_change_patient"] == pytest.approx(0.0)
    assert rows[2]["mean_change_clinician"] == pytest.approx(0.0)  # the clinician's rating is flat
    assert total["sessions_change_patient"] == 95
    # the interval uses z for ci_level, not a literal 1.96
    values = [3.0 + (i % 5) / 2 for i in range(40)]
    half = z_for(0.95) * float(np.std(values, ddof=1)) / np.sqrt(40)
    assert rows[1]["ci_upper_patient"] - rows[1]["mean_alliance_patient"] == pytest.approx(half)
    assert rows[1]["low_alliance_threshold"] == 3.0 and rows[1]["ci_level"] == 0.95


def test_early_alliance_fit_is_least_squares_and_suppressed_under_min_cell():
    rng = np.random.default_rng(3)
    x = rng.uniform(1, 5, 40)
    y = 2.5 * x + rng.normal(0, 1, 40)
    episodes = pd.DataFrame({"early_alliance": x, "phq9_baseline": y + 10, "phq9_last": np.full(40, 10.0)})
    settings = load_mart_settings(env={})
    con = _con(settings, episode_outcomes=episodes)
    assert build_sql_mart(con, "report_early_alliance_fit") == 1
    (fit,) = _dicts(con, "SELECT * FROM marts.report_early_alliance_fit")
    slope, intercept = np.polyfit(x, y, 1)
    assert (fit["slope"], fit["intercept"]) == (pytest.approx(slope), pytest.approx(intercept))
    assert fit["episodes"] == 40 and not fit["suppressed"] and fit["early_sessions"] == 3

    con = _con(settings, episode_outcomes=episodes.head(7))
    build_sql_mart(con, "report_early_alliance_fit")
    (fit,) = _dicts(con, "SELECT * FROM marts.report_early_alliance_fit")
    assert fit["suppressed"] and fit["episodes"] is None and fit["slope"] is None


def _therapists() -> pd.DataFrame:
    base = {
        "grand_mean": 3.8,
        "sigma2": 0.3,
        "icc": 0.2,
        "funnel_z_inner": 1.96,
        "funnel_z_outer": 3.09,
        "funnel_tau2": 0.05,
        "icc_ci_lower": 0.1,
        "icc_ci_upper": 0.35,
    }
    rows = [
        # the 'all' period: three shown, one suppressed
        ("all", date(2026, 1, 1), "t1", False, 20, 4.6, "above_outer"),
        ("all", date(2026, 1, 1), "t2", False, 30, 3.8, "within"),
        ("all", date(2026, 1, 1), "t3", False, 15, 3.0, "below_outer"),
        ("all", date(2026, 1, 1), "t4", True, None, None, None),
        # a year: not the period the funnel shows while an 'all' period exists
        ("year", date(2026, 1, 1), "t1", False, 20, 4.6, "above_outer"),
    ]
    return pd.DataFrame(
        [
            {
                "period_type": p,
                "period_start": s,
                "period_end": date(2026, 12, 31),
                "therapist_key": t,
                "suppressed": sup,
                "caseload": n,
                # fewer patients rated the alliance than were seen: the funnel's n is this one
                "patients_with_alliance": n - 2 if n is not None else None,
                "mean_alliance": m,
                "funnel_position": pos,
                **base,
            }
            for p, s, t, sup, n, m, pos in rows
        ]
    )


def test_therapist_funnel_summarises_the_period_it_shows():
    settings = load_mart_settings(env={})
    con = _con(settings, therapist_alliance=_therapists())
    build_sql_mart(con, "report_therapist_funnel")
    (f,) = _dicts(con, "SELECT * FROM marts.report_therapist_funnel")
    assert (f["period_type"], f["period_start"]) == ("all", date(2026, 1, 1))
    assert (f["therapists_drawn"], f["therapists_hidden"]) == (3, 1)
    assert (f["therapists_above_outer"], f["therapists_below_outer"]) == (1, 1)
    assert (f["caseload_min"], f["caseload_max"]) == (15, 30)
    assert (f["patients_min"], f["patients_max"]) == (13, 28)
    assert (f["funnel_z_inner"], f["funnel_z_outer"], f["icc"]) == (1.96, 3.09, 0.2)
    assert (f["funnel_tau2"], f["icc_ci_lower"], f["icc_ci_upper"]) == (0.05, 0.1, 0.35)


def test_therapist_funnel_has_its_row_without_therapists():
    settings = load_mart_settings(env={})
    con = _con(settings, therapist_alliance=_therapists().head(0))
    assert build_sql_mart(con, "report_therapist_funnel") == 1
    (f,) = _dicts(con, "SELECT * FROM marts.report_therapist_funnel")
    assert f["period_type"] is None and f["therapists_drawn"] == 0
    # the settings still give the limits' z values
    assert (f["funnel_z_inner"], f["funnel_z_outer"]) == (1.96, 3.09)


def _overview_inputs(month_sessions: list[int | None]) -> dict[str, pd.DataFrame]:
    sessions = pd.DataFrame(
        {
            "patient_key": [f"p{i % 30}" for i in range(200)],
            "episode_key": [f"e{i % 40}" for i in range(200)],
            "session_date": [date(2026, 1 + i % 3, 1) for i in range(200)],
            "alliance_measured": [i % 4 != 0 for i in range(200)],
        }
    )
    monthly = pd.DataFrame(
        {
            "level": ["practice"] * len(month_sessions) + ["clinic"],
            "clinic_key": [None] * len(month_sessions) + ["c1"],
            "sessions_attended": [*month_sessions, 100],
            "sessions_alliance_measured": [None, None, *([50] * (len(month_sessions) - 2)), 50],
        }
    )
    therapists = pd.DataFrame({"therapist_key": ["t1", "t2"], "suppressed": [False, True]})
    return {"alliance_sessions": sessions, "qi_monthly": monthly, "therapist_alliance": therapists}


def test_overview_counts_and_the_monthly_complement():
    settings = load_mart_settings(env={})
    con = _con(settings, **_overview_inputs([100, 60, 40]))
    build_report_overview(con, settings)
    (o,) = _dicts(con, "SELECT * FROM marts.report_overview")
    assert (o["patients"], o["episodes"], o["sessions"], o["sessions_alliance_measured"]) == (
        30,
        40,
        200,
        150,
    )
    assert o["measurement_completion_rate"] == pytest.approx(0.75)
    assert (o["months"], o["clinics"], o["therapists_reportable"]) == (3, 1, 1)
    assert o["first_session_date"] == date(2026, 1, 1) and o["suppressed_columns"] is None

    # one practice month's sessions suppressed in qi_monthly: the total would give it away
    con = _con(settings, **_overview_inputs([100, None, 40]))
    build_report_overview(con, settings)
    (o,) = _dicts(con, "SELECT * FROM marts.report_overview")
    assert o["sessions"] is None and o["measurement_completion_rate"] is None
    assert o["suppressed_columns"] == "measurement_completion_rate,sessions"


def test_data_quality_rows_total_the_tables_and_suppress_small_quarantines():
    summary = [
        {"run_id": "r", "table_name": "a", "severity": "ERROR", "checks_run": 3, "passed": 2, "failed": 1,
         "skipped": 0, "quarantined_rows": 40, "pass_rate": 0.6667},
        {"run_id": "r", "table_name": "b", "severity": "WARN", "checks_run": 2, "passed": 1, "failed": 0,
         "skipped": 1, "quarantined_rows": 3, "pass_rate": 1.0},
        {"run_id": "r", "table_name": "c", "severity": "ERROR", "checks_run": 1, "passed": 1, "failed": 0,
         "skipped": 0, "quarantined_rows": 0, "pass_rate": 1.0},
    ]  # fmt: skip
    rows = data_quality_rows(summary, 11)
    a, b, c, total = rows
    assert total["level"] == "all" and total["table_name"] is None
    assert (total["checks_run"], total["passed"], total["failed"], total["skipped"]) == (6, 4, 1, 1)
    assert total["pass_rate"] == pytest.approx(4 / 5)
    # b's 3 is a small cell; with the total shown, a's 40 would reveal it: a is withheld too (c is 0)
    assert b["quarantined_rows"] is None and a["quarantined_rows"] is None
    assert total["quarantined_rows"] == 43 and c["quarantined_rows"] == 0
    assert data_quality_rows([], 11) == [
        {
            "level": "all",
            "table_name": None,
            "severity": None,
            "run_id": None,
            "checks_run": 0,
            "passed": 0,
            "failed": 0,
            "skipped": 0,
            "quarantined_rows": 0,
            "pass_rate": None,
            "min_cell": 11,
            "suppressed_columns": None,
        }
    ]
