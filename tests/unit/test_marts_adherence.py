"""Hand-computed PDC (PQA): overlapping fills of one drug shift forward, a day counts once across
drugs, days after the period end do not count, two fills on different dates are needed."""

from __future__ import annotations

import pytest

from marts.adherence import compute_pdc
from tests.support.marts_clinic import Clinic, key_of


def _pdc(c: Clinic, periods: list[tuple[str, str, str, str]]) -> dict[str, tuple]:
    """PDC over hand-given periods (period_id, patient, start, end), after a build."""
    c.con.execute(
        "CREATE OR REPLACE TEMP TABLE _t_periods (source VARCHAR, patient_id VARCHAR, period_id VARCHAR, "
        "period_start DATE, period_end DATE)"
    )
    for pid, patient, start, end in periods:
        c.con.execute("INSERT INTO _t_periods VALUES ('s', ?, ?, ?, ?)", [patient, pid, start, end])
    compute_pdc(c.con, "_t_periods", "_t_pdc")
    return {
        r[0]: r[1:]
        for r in c.rows(
            "SELECT period_id, fills, fill_dates, drugs, days_in_period, days_covered, pdc, adherent "
            "FROM _t_pdc"
        )
    }


def test_overlapping_same_drug_fill_shifts_forward_and_other_drug_days_count_once():
    c = Clinic()
    c.patient("p1")
    c.dispense("d1", "p1", "2026-01-01", 30, code="A")  # Jan 1 - Jan 30
    c.dispense("d2", "p1", "2026-01-21", 30, code="A")  # early refill: shifted to Jan 31 - Mar 1
    c.dispense("d3", "p1", "2026-02-19", 10, code="B")  # Feb 19 - 28: already covered by A
    c.dispense("d4", "p1", "2026-03-05", 30, status="cancelled")  # not a completed fill
    # coverage arithmetic on periods shorter than 91 days: the 91-day index rule is tested apart
    c.build(reference_date="2026-03-31", adherence_period="all", pdc_index_min_days=0)
    got = _pdc(c, [("q1", "p1", "2026-01-01", "2026-03-31")])
    # 90 days from the index fill (Jan 1) to Mar 31; covered Jan 1 - Mar 1 = 60 days
    assert got["q1"] == (3, 3, 2, 90, 60, pytest.approx(60 / 90), False)
    row = c.dicts("SELECT * FROM marts.adherence")[0]
    assert row["patient_key"] == key_of("patient", "p1")
    assert (row["pdc_days_in_period"], row["pdc_days_covered"]) == (90, 60)
    assert row["pdc"] == pytest.approx(2 / 3) and row["pdc_adherent"] is False
    assert (row["pdc_threshold"], row["fills_in_period"], row["on_medication"]) == (0.8, 3, True)


def test_supply_beyond_the_period_end_is_not_counted_and_index_is_the_first_fill_in_the_period():
    c = Clinic()
    c.patient("p1")
    c.dispense("d0", "p1", "2025-12-01", 30)  # before the period: ignored (no carry-in)
    c.dispense("d1", "p1", "2026-01-10", 30)  # Jan 10 - Feb 8
    c.dispense("d2", "p1", "2026-01-25", 30)  # shifted to Feb 9: outside the period
    c.build(reference_date="2026-12-31", pdc_index_min_days=0)
    got = _pdc(c, [("jan", "p1", "2026-01-01", "2026-01-31")])
    assert got["jan"] == (2, 2, 1, 22, 22, 1.0, True)  # Jan 10..31


@pytest.mark.parametrize(
    ("fills", "expected_pdc"),
    [
        ([("2026-01-01", 4)], None),  # one fill: no PDC
        ([("2026-01-01", 4), ("2026-01-01", 4)], None),  # two fills, one date: no PDC
        ([("2026-01-01", 4), ("2026-01-05", 4)], 0.8),  # 8 of 10 days: exactly the threshold
        ([("2026-01-01", 4), ("2026-01-07", 3)], 0.7),
    ],
)
def test_pdc_needs_two_fill_dates_and_adherence_is_pdc_at_least_threshold(fills, expected_pdc):
    c = Clinic()
    c.patient("p1")
    for i, (day, days) in enumerate(fills):
        c.dispense(f"d{i}", "p1", day, days)
    c.build(reference_date="2026-12-31", pdc_index_min_days=0)
    got = _pdc(c, [("x", "p1", "2026-01-01", "2026-01-10")])["x"]
    if expected_pdc is None:
        assert got[3:] == (None, None, None, None)  # days in period, covered, pdc, adherent
    else:
        assert got[3] == 10
        assert got[5] == pytest.approx(expected_pdc)
        assert got[6] is (expected_pdc >= 0.8)


def test_adherence_mart_has_one_row_per_patient_and_year_with_mars_dai_attendance_and_both_raters():
    c = Clinic()
    c.patient("p1")
    c.episode("a", "p1", "2026-02-01", "2026-04-30")
    for i, (mars, dai, wp, wc) in enumerate([(4, -2, 3.0, 4.0), (None, None, 3.5, 4.0), (7, 4, 4.0, 4.5)], 1):
        enc = f"a-{i}"
        c.encounter(enc, "p1", f"2026-02-0{i}", eoc="a")
        c.appointment(f"ap-{i}", "p1", f"2026-02-0{i}", "fulfilled")
        c.wai(enc, "p1", wp)
        c.wai_clinician(enc, "p1", wc)
        if mars is not None:
            c.total("mars", enc, "p1", mars)
            c.total("dai10", enc, "p1", dai)
    c.appointment("ap-x", "p1", "2026-02-10", "noshow")
    c.dispense("d1", "p1", "2026-02-01", 30)
    c.dispense("d2", "p1", "2026-03-01", 30)
    c.patient("p2")  # a patient with sessions in two years gets two rows
    c.encounter("x1", "p2", "2025-12-20")
    c.encounter("x2", "p2", "2026-01-10")
    c.build(reference_date="2026-03-31", pdc_index_min_days=0)
    rows = c.dicts("SELECT * FROM marts.adherence ORDER BY patient_key, period_start")
    p1 = next(r for r in rows if r["patient_key"] == key_of("patient", "p1"))
    assert (str(p1["period_start"]), str(p1["period_end"]), p1["period_type"]) == (
        "2026-01-01",
        "2026-03-31",
        "year",
    )
    assert (p1["mars_first"], p1["mars_last"], p1["mars_change"], p1["mars_n"]) == (4.0, 7.0, 3.0, 2)
    assert (p1["dai10_first"], p1["dai10_last"], p1["dai10_change"], p1["dai10_positive_last"]) == (
        -2.0,
        4.0,
        6.0,
        True,
    )
    assert (p1["appointments_booked"], p1["appointments_attended"], p1["attendance_rate"]) == (4, 3, 0.75)
    assert p1["mean_alliance_patient"] == pytest.approx(3.5)
    assert p1["mean_alliance_clinician"] == pytest.approx(12.5 / 3)
    assert p1["mean_rater_discrepancy"] == pytest.approx(3.5 - 12.5 / 3)
    # index Feb 1 to Mar 31 = 59 days; the first fill covers Feb 1 - Mar 2, the second (Mar 1) shifts
    # to Mar 3 - Apr 1 and is clipped at Mar 31: all 59 days covered
    assert (p1["pdc_days_in_period"], p1["pdc_days_covered"], p1["pdc_adherent"]) == (59, 59, True)
    p2 = [r for r in rows if r["patient_key"] == key_of("patient", "p2")]
    assert [str(r["period_start"]) for r in p2] == ["2025-01-01", "2026-01-01"]
    assert [r["on_medication"] for r in p2] == [False, False]


@pytest.mark.parametrize(
    ("index_date", "expected"),
    [
        # period end Mar 31: Dec 30 is 91 days before it (PQA: at least 91), Dec 31 only 90
        ("2025-12-30", (False, 92)),
        ("2025-12-31", (True, None)),
    ],
)
def test_pdc_needs_the_index_fill_at_least_91_days_before_the_period_end(index_date, expected):
    c = Clinic()
    c.patient("p1")
    c.dispense("d1", "p1", index_date, 30)
    c.dispense("d2", "p1", "2026-02-01", 30)
    c.build(reference_date="2026-12-31")
    c.con.execute(
        "CREATE OR REPLACE TEMP TABLE _t_periods (source VARCHAR, patient_id VARCHAR, period_id VARCHAR, "
        "period_start DATE, period_end DATE)"
    )
    c.con.execute("INSERT INTO _t_periods VALUES ('s', 'p1', 'q', '2025-12-01', '2026-03-31')")
    compute_pdc(c.con, "_t_periods", "_t_pdc")
    too_late, days, pdc = c.rows("SELECT index_too_late, days_in_period, pdc FROM _t_pdc")[0]
    assert (too_late, days) == expected
    assert (pdc is None) is too_late
    # the adherence mart records the setting used
    assert c.rows("SELECT DISTINCT pdc_index_min_days FROM marts.adherence") == [(91,)]


# --- same drug (ingredient) or class: the declared mapping marts/reference/medications.yaml ---

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"


def _grouping(c: Clinic) -> tuple:
    """(fills, fill dates, drugs, same drug-or-class fill dates, unmapped fills, unmapped codes,
    days in period, days covered) of the one period Jan 1 - Apr 30 2026 (120 days)."""
    _pdc(c, [("p", "p1", "2026-01-01", "2026-04-30")])
    return c.rows(
        "SELECT fills, fill_dates, drugs, same_drug_or_class_fill_dates, unmapped_fills, unmapped_codes, "
        "days_in_period, days_covered FROM _t_pdc"
    )[0]


def test_two_fills_of_drugs_in_different_classes_are_no_pdc():
    c = Clinic()
    c.patient("p1")
    c.dispense("d1", "p1", "2026-01-01", 30, code="312940", system=RXNORM)  # sertraline (SSRI, N06AB)
    c.dispense("d2", "p1", "2026-02-01", 30, code="15996", system=RXNORM)  # mirtazapine (N06AX)
    c.build(reference_date="2026-12-31")
    # two fill dates, but one of each ingredient and of each class: not a course of one drug
    assert _grouping(c) == (2, 2, 2, 1, 0, 0, None, None)
    row = c.dicts("SELECT * FROM marts.adherence")[0]
    assert (row["fill_dates_in_period"], row["same_drug_or_class_fill_dates"], row["pdc"]) == (2, 1, None)


def test_a_switch_within_one_class_counts_and_its_days_add_up():
    c = Clinic()
    c.patient("p1")
    c.dispense("d1", "p1", "2026-01-01", 30, code="312940", system=RXNORM)  # sertraline: Jan 1 - 30
    c.dispense("d2", "p1", "2026-01-31", 30, code="349332", system=RXNORM)  # escitalopram: Jan 31 - Mar 1
    c.build(reference_date="2026-12-31")
    # one fill of each ingredient, two of the SSRI class: measurable; 60 of 120 days covered
    assert _grouping(c) == (2, 2, 2, 2, 0, 0, 120, 60)


def test_one_ingredient_under_two_code_systems_is_one_drug_so_an_early_refill_shifts_forward():
    c = Clinic()
    c.patient("p1")
    c.dispense("d1", "p1", "2026-01-01", 30, code="312940", system=RXNORM)  # sertraline: Jan 1 - 30
    c.dispense("d2", "p1", "2026-01-21", 30, code="N06AB06", system=ATC)  # sertraline: shifted to Jan 31
    c.build(reference_date="2026-12-31")
    # as two drugs the supplies would overlap (Jan 1 - Feb 19: 50 days); as one, Jan 1 - Mar 1: 60
    assert _grouping(c) == (2, 2, 1, 2, 0, 0, 120, 60)


def test_a_code_the_mapping_does_not_know_is_its_own_drug_and_is_counted_as_unmapped():
    c = Clinic()
    c.patient("p1")
    local = "http://pharmacy.example.org/formulary"
    c.dispense("d1", "p1", "2026-01-01", 30, code="SERT50", system=local)
    c.dispense("d2", "p1", "2026-01-31", 30, code="SERT50", system=local)
    c.dispense("d3", "p1", "2026-03-02", 30, code="312940")  # RxNorm's code under the wrong system
    c.build(reference_date="2026-12-31")
    # SERT50 twice: measurable on its own; three unmapped fills of two codes; Jan 1 - Mar 31 covered
    assert _grouping(c) == (3, 3, 2, 2, 3, 2, 120, 90)
    row = c.dicts("SELECT * FROM marts.adherence")[0]
    assert (row["unmapped_fills_in_period"], row["unmapped_codes_in_period"]) == (3, 2)


def test_the_mapping_knows_the_demo_pharmacys_rxnorm_codes_and_not_its_local_one():
    from demo.generator import DRUGS, LOCAL_FORMULARY, LOCAL_FORMULARY_CODE
    from marts.adherence import medication_map

    mapped = {(system, code): (ingredient, cls) for system, code, ingredient, cls in medication_map()}
    assert [mapped[(RXNORM, code)] for code, *_ in DRUGS] == [
        ("sertraline", "N06AB"),
        ("escitalopram", "N06AB"),
        ("fluoxetine", "N06AB"),
    ]
    assert (LOCAL_FORMULARY, LOCAL_FORMULARY_CODE) not in mapped


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        ("- {system: s, code: '1', ingredient: a, class: X}\n" * 2, "s|1 is mapped twice"),
        ("- {system: s, code: '1', ingredient: a, class: Y}\n", "undeclared class 'Y'"),
        ("- {system: s, code: '1', class: X}\n", "needs system, code, ingredient and class"),
    ],
)
def test_a_malformed_mapping_file_is_refused_naming_the_entry(tmp_path, codes, message):
    from marts.adherence import MedicationMapError, medication_map

    path = tmp_path / "medications.yaml"
    path.write_text("classes: {X: x}\ncodes:\n" + codes)
    with pytest.raises(MedicationMapError, match=message):
        medication_map(path)
