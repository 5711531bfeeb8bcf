"""Checks of the mart test helpers (tests/support/marts_clinic.py) themselves."""

from __future__ import annotations

from fhir_mappings.clinical.contract import REQUIRED_SCORE_COLUMNS
from marts.build import make_context
from tests.support.marts_clinic import KEY, Clinic


def test_score_table_has_every_contract_column_the_marts_read():
    clinic = Clinic()
    cols = {r[0] for r in clinic.rows("DESCRIBE staging.measure_scores")}
    assert set(REQUIRED_SCORE_COLUMNS) <= cols


def test_empty_clinic_builds_every_mart_with_zero_rows():
    clinic = Clinic()
    counts = clinic.build()
    assert counts == {
        "alliance_sessions": 0,
        "episode_outcomes": 0,
        "adherence": 0,
        "therapist_alliance": 0,
        "qi_monthly": 0,
        "alliance_associations": counts["alliance_associations"],
        # the report marts keep their fixed rows (one per practice, the 'all' rows, the 8 bands of
        # early alliance, the 12 thirds)
        "report_overview": 1,
        "report_alliance_trajectory": 1,
        "report_early_alliance_fit": 1,
        "report_early_alliance_bins": 8,
        "report_therapist_funnel": 1,
        "report_adherence_by_alliance_tertile": 12,
        "report_data_quality": 1,
        "expected_response": 0,
        "not_on_track": 0,
        "report_not_on_track": 1,
    }
    assert clinic.rows(
        "SELECT patients, sessions, measurement_completion_rate FROM marts.report_overview"
    ) == [(0, 0, None)]
    assert clinic.rows(
        "SELECT sessions_patient_rated, mean_alliance_patient FROM marts.report_alliance_trajectory"
    ) == [(0, None)]
    assert clinic.rows("SELECT episodes, slope FROM marts.report_early_alliance_fit") == [(0, None)]
    # associations still answer every question, with n = 0 and no estimate
    assert clinic.rows("SELECT count(*) FROM marts.alliance_associations WHERE estimate IS NOT NULL") == [
        (0,)
    ]
    ctx = make_context(key=KEY)
    assert ctx.key == KEY and KEY.decode() not in repr(ctx)  # the key never shows in logs
