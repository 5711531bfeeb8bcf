"""Checks of the mart test helpers (tests/support/marts_clinic.py) themselves."""

from __future__ import annotations

from marts.build import make_context
from fhir_mappings.clinical.contract import REQUIRED_SCORE_COLUMNS
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
    }
    # associations still answer every question, with n = 0 and no estimate
    assert clinic.rows("SELECT count(*) FROM marts.alliance_associations WHERE estimate IS NOT NULL") == [
        (0,)
    ]
    ctx = make_context(key=KEY)
    assert ctx.key == KEY and KEY.decode() not in repr(ctx)  # the key never shows in logs
