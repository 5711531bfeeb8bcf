"""Privacy: keyed pseudonyms, the key from the environment, the demo key file, age bands, and
small-cell suppression with complementary suppression (hand-computed tables)."""

from __future__ import annotations

import os
import stat
from typing import Any

import pytest

from marts.privacy import (
    KEY_ENV,
    KEY_FILE_ENV,
    PseudonymKeyError,
    age_band,
    ensure_demo_key,
    load_key,
    pseudonym,
)
from marts.qi import COUNT_COLUMNS as QI_COUNTS
from marts.qi import suppress_qi_rows
from marts.suppression import Relation, apply_rates, suppress
from marts.therapists import suppress_therapist_rows

# -- pseudonyms and keys


def test_pseudonyms_are_keyed_stable_and_distinct_by_kind_and_source():
    k1, k2 = b"k" * 32, b"j" * 32
    a = pseudonym(k1, "patient", "s", "p1")
    assert a == pseudonym(k1, "patient", "s", "p1")
    assert len(a or "") == 20 and "p1" not in (a or "")
    assert a != pseudonym(k2, "patient", "s", "p1")  # another key, another pseudonym
    assert a != pseudonym(k1, "encounter", "s", "p1")  # same id, other kind
    assert a != pseudonym(k1, "patient", "t", "p1")  # same id, other source
    assert pseudonym(k1, "patient", "s", None) is None


def test_key_comes_from_the_environment_then_the_key_file(tmp_path):
    f = tmp_path / "k"
    f.write_text("file-key-0123456789abcdef\n")
    assert load_key({KEY_ENV: "env-key-0123456789abcdef"}) == b"env-key-0123456789abcdef"
    assert load_key({KEY_FILE_ENV: str(f)}) == b"file-key-0123456789abcdef"
    assert load_key({}, key_file=f) == b"file-key-0123456789abcdef"
    with pytest.raises(PseudonymKeyError, match=KEY_ENV):
        load_key({})
    with pytest.raises(PseudonymKeyError, match="shorter"):
        load_key({KEY_ENV: "short"})
    with pytest.raises(PseudonymKeyError, match="cannot read"):
        load_key({KEY_FILE_ENV: str(tmp_path / "missing")})


def test_demo_key_file_is_private_random_and_kept_across_runs(tmp_path):
    path = tmp_path / "data" / "pseudonym.key"
    ensure_demo_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_bytes()
    assert len(first.strip()) == 64
    ensure_demo_key(path)
    assert path.read_bytes() == first  # not overwritten: pseudonyms stay stable
    os.chmod(path, 0o644)
    ensure_demo_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    other = tmp_path / "other.key"
    ensure_demo_key(other)
    assert other.read_bytes() != first
    assert load_key({KEY_FILE_ENV: str(path)}) == first.strip()


@pytest.mark.parametrize(
    ("age", "band"),
    [
        (None, None),
        (12, "<18"),
        (17, "<18"),
        (18, "18-24"),
        (24, "18-24"),
        (25, "25-34"),
        (64, "55-64"),
        (65, "65+"),
    ],
)
def test_age_bands(age, band):
    assert age_band(age, [18, 25, 35, 45, 55, 65]) == band


# -- suppression


def test_small_part_and_its_complement_are_suppressed():
    values = {(0, "a"): 5, (0, "b"): 20, (0, "t"): 25}
    r = suppress(values, [Relation((0, "t"), ((0, "a"), (0, "b")))])
    assert r.primary == {(0, "a")}
    assert r.complementary == {(0, "b")}


def test_complement_prefers_the_smallest_nonzero_part_then_the_total():
    values = {(0, "t"): 25, (0, "a"): 5, (0, "b"): 0, (0, "c"): 20}
    r = suppress(values, [Relation((0, "t"), ((0, "a"), (0, "b"), (0, "c")))])
    assert r.complementary == {(0, "c")}
    values = {(0, "t"): 30, (0, "a"): 5, (0, "b"): 0}
    r = suppress(values, [Relation((0, "t"), ((0, "a"), (0, "b")))])
    assert r.complementary == {(0, "t")}


@pytest.mark.parametrize(
    ("total", "part", "suppressed"),
    [
        (30, 25, {(0, "p")}),  # 5 not shown but derivable: protect it by hiding the part
        (25, 25, set()),  # remainder 0: nothing to protect
        (50, 5, {(0, "p")}),  # small part; its remainder (45) is large, so two unknowns: enough
        (40, 12, set()),
    ],
)
def test_hidden_remainder(total, part, suppressed):
    values = {(0, "t"): total, (0, "p"): part}
    r = suppress(values, [Relation((0, "t"), ((0, "p"),), hidden_remainder=True)])
    assert r.suppressed == suppressed


def test_two_way_table_with_margins_cascades_until_no_relation_exposes_a_cell():
    cells = {"11": 3, "12": 20, "21": 15, "22": 30}
    values = {(0, k): v for k, v in cells.items()}
    values |= {(0, "R1"): 23, (0, "R2"): 45, (0, "C1"): 18, (0, "C2"): 50, (0, "G"): 68}
    c = {k: (0, k) for k in ("11", "12", "21", "22", "R1", "R2", "C1", "C2", "G")}
    relations = [
        Relation(c["R1"], (c["11"], c["12"])),
        Relation(c["R2"], (c["21"], c["22"])),
        Relation(c["C1"], (c["11"], c["21"])),
        Relation(c["C2"], (c["12"], c["22"])),
        Relation(c["G"], (c["R1"], c["R2"])),
        Relation(c["G"], (c["C1"], c["C2"])),
    ]
    r = suppress(values, relations)
    assert r.primary == {c["11"]}
    # row 1 -> 12, column 1 -> 21, then row 2 has 21 alone -> 22
    assert r.complementary == {c["12"], c["21"], c["22"]}
    for rel in relations:
        assert len([x for x in (rel.total, *rel.parts) if x in r.suppressed]) != 1


def test_rates_follow_their_counts():
    blanked = apply_rates({(0, "num")}, {"rate": ("num", "den"), "other": ("x", "y")}, [0, 1])
    assert blanked == {(0, "rate")}


def _qi_row(level: str, clinic: str | None, **counts: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "level": level,
        "clinic_key": clinic,
        "month": "2026-03-01",
        **dict.fromkeys(QI_COUNTS, 0),
    }
    row.update(counts)
    row["measurement_completion_rate"] = (
        row["sessions_alliance_measured"] / row["sessions_attended"] if row["sessions_attended"] else None
    )
    row["mean_alliance"] = 3.9
    return row


def test_qi_monthly_suppresses_a_small_clinic_and_a_complement_clinic_but_keeps_the_practice_total():
    rows = [
        _qi_row("clinic", "A", sessions_attended=8, sessions_alliance_measured=8, sessions_wai_measured=8),
        _qi_row("clinic", "B", sessions_attended=40, sessions_alliance_measured=40, sessions_wai_measured=40),
        _qi_row(
            "practice", None, sessions_attended=48, sessions_alliance_measured=48, sessions_wai_measured=48
        ),
    ]
    suppress_qi_rows(rows, 11)
    a, b, p = rows
    assert a["sessions_attended"] is None and b["sessions_attended"] is None  # B hides A's 8 = 48 - 40
    assert p["sessions_attended"] == 48 and p["measurement_completion_rate"] == 1.0
    assert a["measurement_completion_rate"] is None and b["measurement_completion_rate"] is None
    assert a["mean_alliance"] is None  # a mean over 8 sessions
    assert b["mean_alliance"] == 3.9
    assert "sessions_attended" in (b["suppressed_columns"] or "")
    assert a["episodes_ended"] == 0  # zeros are shown


def test_qi_monthly_hides_a_rate_that_would_reveal_a_small_remainder():
    rows = [_qi_row("practice", None, dq_responses=100, dq_passed=95)]  # 5 failed
    rows[0]["data_quality_pass_rate"] = 0.95
    suppress_qi_rows(rows, 11)
    assert rows[0]["dq_responses"] == 100
    assert rows[0]["dq_passed"] is None and rows[0]["data_quality_pass_rate"] is None


def test_therapist_rows_below_min_cell_are_suppressed_whole():
    rows = [
        {"caseload": 9, "patients_with_alliance": 9, "mean_alliance": 4.1, "shrunken_alliance": 4.0},
        {
            "caseload": 15,
            "patients_with_alliance": 15,
            "mean_alliance": 3.8,
            "episodes_ended": 12,
            "episodes_outcome_complete": 12,
            "episodes_case_complete": 12,
            "episodes_recovered": 6,
            "recovery_rate": 0.5,
        },
    ]
    suppress_therapist_rows(rows, 11)
    small, big = rows
    assert small["suppressed"] is True
    assert small["caseload"] is None and small["mean_alliance"] is None and small["shrunken_alliance"] is None
    assert big["suppressed"] is False and big["caseload"] == 15 and big["mean_alliance"] == 3.8
    assert big["episodes_recovered"] is None and big["recovery_rate"] is None  # 6 recovered, 6 not


def test_a_relation_may_prefer_its_total_as_the_complement():
    values = {(0, "t"): 30, (0, "p"): 25}
    plain = suppress(values, [Relation((0, "t"), ((0, "p"),), hidden_remainder=True)])
    assert plain.suppressed == {(0, "p")}
    prefer = suppress(values, [Relation((0, "t"), ((0, "p"),), hidden_remainder=True, prefer_total=True)])
    assert prefer.suppressed == {(0, "t")}  # the 5 not shown stay hidden, the part stays shown


def test_a_therapist_with_a_few_patients_never_rated_keeps_the_funnels_n():
    """caseload 23 with 22 rated: the 1 never rated is protected by hiding the caseload, not the n the
    funnel and the shrunken mean rest on."""
    rows = [
        {"caseload": 23, "patients_with_alliance": 22, "mean_alliance": 3.9},
        {"caseload": 30, "patients_with_alliance": 30, "mean_alliance": 3.5},
    ]
    suppress_therapist_rows(rows, 11)
    first, second = rows
    assert first["caseload"] is None and first["patients_with_alliance"] == 22
    assert second["caseload"] == 30 and second["patients_with_alliance"] == 30


def test_a_fixed_total_is_never_the_complement_and_a_forced_cell_counts_as_hidden():
    values = {("t", "total"): 60, (1, "n"): 30, (2, "n"): 25, (3, "n"): 5}
    rel = Relation(("t", "total"), ((1, "n"), (2, "n"), (3, "n")))
    result = suppress(values, [rel], 11, fixed=[("t", "total")])
    assert result.suppressed == {(3, "n"), (2, "n")}  # the smallest shown part, not the known total
    forced = suppress(values | {(3, "n"): 40, ("t", "total"): 95}, [rel], 11, force=[(1, "n")])
    assert forced.primary == {(1, "n")} and len(forced.complementary) == 1


def _qi_months(*ended: int) -> list[dict[str, Any]]:
    import datetime as dt

    rows = []
    for month, n in enumerate(ended, start=1):
        row = _qi_row("practice", None, episodes_ended=n)
        row["month"] = dt.date(2026, month, 1)
        rows.append(row)
    return rows


def test_qi_monthly_hides_a_second_month_when_one_month_of_a_year_is_small():
    rows = _qi_months(30, 4, 25)
    suppress_qi_rows(rows, 11)
    # the year's total follows from therapist_alliance: February alone hidden would be that minus the rest
    assert [r["episodes_ended"] for r in rows] == [30, None, None]
    unlinked = _qi_months(30, 4, 25)
    suppress_qi_rows(unlinked, 11, linked_periods=())
    assert [r["episodes_ended"] for r in unlinked] == [30, None, 25]  # no linked periods: no complement


def _therapist_row(
    th: str, kind: str, start: str, end: str, ended: int, caseload: int = 15
) -> dict[str, Any]:
    import datetime as dt

    return {
        "therapist_key": th,
        "period_type": kind,
        "period_start": dt.date.fromisoformat(start),
        "period_end": dt.date.fromisoformat(end),
        "caseload": caseload,
        "patients_with_alliance": caseload,
        "episodes_ended": ended,
    }


def test_therapist_years_are_linked_to_the_all_row_and_to_the_other_therapists():
    rows = [
        _therapist_row("a", "all", "2025-01-01", "2026-12-31", 40),
        _therapist_row("a", "year", "2025-01-01", "2025-12-31", 36),
        _therapist_row("a", "year", "2026-01-01", "2026-12-31", 4),
        _therapist_row("b", "all", "2025-01-01", "2026-12-31", 30),
        _therapist_row("b", "year", "2025-01-01", "2025-12-31", 15),
        _therapist_row("b", "year", "2026-01-01", "2026-12-31", 15),
    ]
    suppress_therapist_rows(rows, 11)
    ended = {
        (r["therapist_key"], r["period_type"], r["period_start"].year): r["episodes_ended"] for r in rows
    }
    assert ended[("a", "year", 2026)] is None  # small
    # a's all minus its 2025 would give 2026, and b's 2026 plus a's 2026 is the practice's 2026 total
    assert ended[("a", "all", 2025)] is None or ended[("a", "year", 2025)] is None
    assert ended[("b", "year", 2026)] is None
