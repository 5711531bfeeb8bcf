"""The attacks of tests/support/attacks.py against the BI target and the QI report: they find no
recoverable small count on the generated clinic or on the adversarial small clinic, and each finds the
leak on a deliberately leaky copy (primary suppression only, model fitted over every therapist), so
the attacks can fail."""

from __future__ import annotations

import pytest

from tests.support.attacks import TABLE_ATTACKS, Published, model_statistics, primary_only, report_text


def _describe(leaks: list) -> str:
    return "\n".join(f"{x.attack}: {x.cell} = {x.value} ({x.how})" for x in leaks[:10])


@pytest.mark.parametrize("attack", sorted(TABLE_ATTACKS))
def test_the_adversarial_clinic_leaks_nothing(adversarial, attack):
    leaks = TABLE_ATTACKS[attack](adversarial.published, adversarial.truth, adversarial.min_cell)
    assert not leaks, _describe(leaks)


@pytest.mark.parametrize("attack", sorted(TABLE_ATTACKS))
def test_each_attack_finds_the_leak_in_a_primary_only_copy(adversarial, attack):
    leaky = primary_only(adversarial.published, adversarial.truth, adversarial.min_cell)
    target = leaky if attack != "within_row" else adversarial.truth  # within a row: no suppression at all
    leaks = TABLE_ATTACKS[attack](target, adversarial.truth, adversarial.min_cell)
    assert leaks, f"{attack} found nothing to recover in a leaky copy"


def test_the_report_text_of_the_adversarial_clinic_leaks_nothing(adversarial):
    leaks = report_text(adversarial.report_html, adversarial.truth, adversarial.min_cell)
    assert not leaks, _describe(leaks)


def test_the_report_text_attack_finds_a_total_minus_parts_leak(adversarial):
    # over unsuppressed marts the report still hides small points, but prints the full total
    leaks = report_text(adversarial.truth_report_html, adversarial.truth, adversarial.min_cell)
    assert any(x.how == "total minus shown" for x in leaks), _describe(leaks)


def test_the_report_never_draws_single_episodes(adversarial):
    html = adversarial.report_html
    assert "one dot per treatment episode" not in html
    assert "episode_outcomes" not in html.replace("marts.episode_outcomes", "")


@pytest.mark.slow
@pytest.mark.parametrize("attack", sorted(TABLE_ATTACKS))
def test_the_generated_clinic_leaks_nothing(generated, attack):
    leaks = TABLE_ATTACKS[attack](generated.published, generated.truth, generated.min_cell)
    assert not leaks, _describe(leaks)


@pytest.mark.slow
def test_the_report_text_of_the_generated_clinic_leaks_nothing(generated):
    leaks = report_text(generated.report_html, generated.truth, generated.min_cell)
    assert not leaks, _describe(leaks)


def test_the_therapist_icc_n_would_give_a_hidden_therapist_away(adversarial):
    """The ICC of alliance_associations fitted over every therapist (as before) counts the lonely
    therapist's patient: n minus the shown therapists gives it; fitted over shown therapists it does not."""
    tables = {name: [dict(r) for r in rows] for name, rows in adversarial.published.tables.items()}
    true_n = next(
        r["n"] for r in adversarial.truth.rows("alliance_associations") if r["question_id"] == "therapist_icc"
    )
    shown_n = next(r["n"] for r in tables["alliance_associations"] if r["question_id"] == "therapist_icc")
    assert true_n > shown_n  # the published ICC leaves the hidden therapist out
    for row in tables["alliance_associations"]:
        if row["question_id"] == "therapist_icc":
            row["n"] = true_n
    leaks = model_statistics(Published(tables), adversarial.truth, adversarial.min_cell)
    assert [x.how for x in leaks] == ["therapist ICC n minus shown"]


def test_the_report_text_attack_finds_a_month_hidden_alone(adversarial):
    """The report's own overview and monthly templates, filled with one month hidden and nothing hidden
    beside it: the overview card's total (and the monthly caption's) minus the months shown gives the
    hidden month's 4 sessions back. The real report passes because the marts hide a complement."""
    from markupsafe import Markup

    from marts.report.render import _render, format_count

    cards = [(format_count(34), "attended sessions")]
    months = [
        ("Jan 2025", [format_count(12), format_count(30)]),
        ("Feb 2025", [format_count(3), format_count(4)]),
    ]
    html = _render("overview.html.j2", cards=cards, min_cell=11, period="") + _render(
        "monthly.html.j2",
        chart=Markup(""),
        sessions=format_count(34),
        months=2,
        clinics=1,
        headings=["Patients seen", "Sessions"],
        rows=months,
    )
    leaks = report_text(html, adversarial.truth, adversarial.min_cell)
    hidden = {x.cell[1][0]: x.value for x in leaks if x.cell[0] == "qi_monthly"}
    assert hidden == {"hidden months vs overview card": 4.0, "hidden months vs monthly caption": 4.0}
    assert not report_text(html.replace(">34<", ">44<").replace("n = 34", "n = 44"), adversarial.truth, 11)
